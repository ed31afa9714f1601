" Indent rules for pipe: one shiftwidth per open `{`, `[` or `(`.
" Brackets inside strings, raw strings, interpolations and comments do not
" count; lines inside a multi-line string keep the indent they have.
if exists('b:did_indent')
  finish
endif
let b:did_indent = 1

setlocal autoindent
setlocal indentexpr=GetPipeIndent(v:lnum)
setlocal indentkeys=0{,0},0),0],!^F,o,O,e

let b:undo_indent = 'setlocal autoindent< indentexpr< indentkeys<'

if exists('*GetPipeIndent')
  finish
endif

" Returns [opened, closed_leading, closed_after] for the brackets of one line
" that sit in code: closers before any other text are counted apart, since
" they dedent the line itself rather than the lines after it.
function! s:Brackets(line) abort
  let opened = 0
  let leading = 0
  let closed = 0
  let seen_text = 0
  " Stack of contexts: 'c' code, 's' double-quoted string, 'i' interpolation.
  let stack = ['c']
  let depth = [0]
  let i = 0
  let n = strlen(a:line)
  while i < n
    let ch = a:line[i]
    let top = stack[-1]
    if top ==# 's'
      if ch ==# '\'
        let i += 1
      elseif ch ==# '"'
        call remove(stack, -1)
        call remove(depth, -1)
      elseif ch ==# '$' && a:line[i + 1] ==# '{'
        call add(stack, 'i')
        call add(depth, 0)
        let i += 1
      endif
    else
      if ch ==# '#'
        break
      elseif ch ==# '"'
        call add(stack, 's')
        call add(depth, 0)
        let seen_text = 1
      elseif ch ==# "'"
        let close = stridx(a:line, "'", i + 1)
        let i = close < 0 ? n : close
        let seen_text = 1
      elseif top ==# 'i'
        if ch =~# '[{[(]'
          let depth[-1] += 1
        elseif ch =~# '[}\])]'
          if depth[-1] == 0
            call remove(stack, -1)
            call remove(depth, -1)
          else
            let depth[-1] -= 1
          endif
        endif
      elseif ch =~# '[{[(]'
        let opened += 1
        let seen_text = 1
      elseif ch =~# '[}\])]'
        if seen_text
          let closed += 1
        else
          let leading += 1
        endif
      elseif ch !~# '\s'
        let seen_text = 1
      endif
    endif
    let i += 1
  endwhile
  return [opened, leading, closed]
endfunction

function! s:HasSyntax() abort
  return exists('g:syntax_on') && get(b:, 'current_syntax', '') ==# 'pipe'
endfunction

let s:string_items = '^pipe\%(String\|Escape\|Quote\|Interp\)'

" Whether line lnum starts inside a multi-line string. A line that begins
" with `"` opens a new string (a list item, say) unless the line before it
" ends inside a string.
function! s:InString(lnum) abort
  if !s:HasSyntax() || synIDattr(synID(a:lnum, 1, 1), 'name') !~# s:string_items
    return 0
  endif
  if getline(a:lnum)[0] !=# '"'
    return 1
  endif
  let p = prevnonblank(a:lnum - 1)
  if p == 0
    return 0
  endif
  let line = getline(p)
  let c = strlen(line)
  return synIDattr(synID(p, c, 1), 'name') =~# s:string_items && line[c - 1] !=# '"'
endfunction

" Like s:Brackets, but asks the syntax items which brackets are code, so that
" it is right on lines that start inside a multi-line string.
function! s:SyntaxBrackets(lnum) abort
  let line = getline(a:lnum)
  let opened = 0
  let leading = 0
  let closed = 0
  let seen_text = 0
  for col in range(1, strlen(line))
    let ch = line[col - 1]
    if ch =~# '\s'
      continue
    endif
    let name = synIDattr(synID(a:lnum, col, 0), 'name')
    if name =~# '^pipe\%(String\|RawString\|Comment\|DocComment\|Todo\|Interp\|Quote\|Escape\)'
      let seen_text = 1
    elseif ch =~# '[{[(]'
      let opened += 1
      let seen_text = 1
    elseif ch =~# '[}\])]'
      if seen_text
        let closed += 1
      else
        let leading += 1
      endif
    else
      let seen_text = 1
    endif
  endfor
  return [opened, leading, closed]
endfunction

function! s:LineBrackets(lnum) abort
  return s:HasSyntax() ? s:SyntaxBrackets(a:lnum) : s:Brackets(getline(a:lnum))
endfunction

function! GetPipeIndent(lnum) abort
  if s:InString(a:lnum)
    return indent(a:lnum)
  endif
  let prev = prevnonblank(a:lnum - 1)
  if prev == 0
    return 0
  endif
  " When the previous line ends a multi-line string, indent from the line
  " where that string began and count the brackets of every line in between.
  let start = prev
  while start > 1 && s:InString(start)
    let start = prevnonblank(start - 1)
  endwhile
  let ind = indent(start)
  let net = 0
  for lnum in range(start, prev)
    let [opened, leading, closed] = s:LineBrackets(lnum)
    let net += opened - closed - (lnum == start ? 0 : leading)
  endfor
  let ind += shiftwidth() * (net > 0 ? 1 : net < 0 ? -1 : 0)
  let [_, leading, _] = s:LineBrackets(a:lnum)
  let ind -= shiftwidth() * (leading > 0 ? 1 : 0)
  return ind < 0 ? 0 : ind
endfunction
