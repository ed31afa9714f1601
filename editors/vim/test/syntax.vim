" Checks the syntax groups that syntax/pipe.vim gives to sample.pipe and the
" options ftplugin/pipe.vim sets. Run by ../test.sh.
let s:passed = 0
let s:failed = 0
let s:log = []

function! s:Expect(what, got, want) abort
  if a:got ==# a:want
    let s:passed += 1
  else
    let s:failed += 1
    call add(s:log, 'FAIL ' . a:what . ': got "' . a:got . '", want "' . a:want . '"')
  endif
endfunction

" The syntax group at the start of the first match of `text` (searched from
" line `from`), plus `offset` columns.
function! s:Group(text, offset, from) abort
  call cursor(a:from, 1)
  let pos = searchpos('\V' . escape(a:text, '\'), 'cW')
  if pos == [0, 0]
    return '<not found: ' . a:text . '>'
  endif
  return synIDattr(synID(pos[0], pos[1] + a:offset, 1), 'name')
endfunction

function! s:Check(text, offset, want, ...) abort
  let from = a:0 ? a:1 : 1
  call s:Expect(a:text . '+' . a:offset, s:Group(a:text, a:offset, from), a:want)
endfunction

call s:Expect('filetype', &filetype, 'pipe')
call s:Expect('commentstring', &commentstring, '# %s')
call s:Expect('shiftwidth', string(&shiftwidth), '2')
call s:Expect('indentexpr', &indentexpr, 'GetPipeIndent(v:lnum)')

call s:Check('## Documents', 0, 'pipeDocComment')
call s:Check('# a plain', 0, 'pipeComment')
call s:Check('template t', 0, 'pipeStructure')
call s:Check('template t', 9, 'pipeTemplateName')
call s:Check('list<string>', 0, 'pipeType')
call s:Check('list<string>', 5, 'pipeType')
call s:Check('duration', 0, 'pipeType')
call s:Check('5m', 0, 'pipeDuration')
call s:Check('uses', 0, 'pipeKey')
call s:Check('"x"', 1, 'pipeString')
call s:Check('import', 0, 'pipeInclude')
call s:Check('"std/http"', 1, 'pipeString')
call s:Check('as web', 0, 'pipeInclude')
call s:Check('pipeline p', 0, 'pipeStructure')
call s:Check('pipeline p', 9, 'pipeDeclName')
call s:Check('param v', 0, 'pipeStatement')
call s:Check('"v${', 1, 'pipeString')
call s:Check('${version', 0, 'pipeInterpDelim')
call s:Check('"dev"', 1, 'pipeString')
call s:Check('??', 0, 'pipeOperator')
call s:Check('\n"', 0, 'pipeEscape')
call s:Check('env staging', 0, 'pipeStructure')
call s:Check('env staging', 4, 'pipeDeclName')
call s:Check("'raw ${x}'", 5, 'pipeRawString')
call s:Check('stage chaos', 0, 'pipeStructure')
" `env` used as a key is not the `env` declaration keyword.
call s:Check('env = staging', 0, 'pipeKey')
call s:Check('for svc', 0, 'pipeRepeat')
call s:Check('in services', 0, 'pipeRepeat')
call s:Check('step "img', 0, 'pipeStructure')
call s:Check('${svc}', 2, 'pipeInterp')
call s:Check('1.5', 0, 'pipeNumber')
call s:Check('true', 0, 'pipeBoolean')
call s:Check('1h30m', 0, 'pipeDuration')
call s:Check('null', 0, 'pipeNull')
call s:Check('chaos proxy', 0, 'pipeStructure')
call s:Check('0.3', 0, 'pipeNumber')
call s:Check('assert gated', 0, 'pipeStructure')
call s:Check('assert gated', 7, 'pipeDeclName')
call s:Check('through', 0, 'pipeKey')
call s:Check('on failure', 0, 'pipeHandler')
call s:Check('failure', 0, 'pipeHandlerKind')
call s:Check('f(1)', 0, 'pipeFunction')
call s:Check('&&', 0, 'pipeOperator')
call s:Check('=~', 0, 'pipeOperator')

call writefile(s:log + [printf('vim syntax: %d passed, %d failed', s:passed, s:failed)], $PIPE_VIM_RESULT)
qa!
