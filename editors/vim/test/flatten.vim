" Strips the indentation of every line that does not start inside a string
" (there, leading spaces are part of the string), then re-indents the buffer.
for s:lnum in range(1, line('$'))
  if synIDattr(synID(s:lnum, 1, 1), 'name') !~# '^pipe\%(String\|Escape\|Quote\|Interp\)'
    call setline(s:lnum, substitute(getline(s:lnum), '^\s*', '', ''))
  endif
endfor
normal! gg=G
