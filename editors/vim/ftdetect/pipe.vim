" Filetype detection for pipe pipeline files.
autocmd BufNewFile,BufRead *.pipe setfiletype pipe
