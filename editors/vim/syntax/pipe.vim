" Vim syntax file for pipe, the declarative pipeline language.
" The grammar is lang/pipe.pest; keywords there are not reserved, so the
" structural ones are highlighted only where they start a declaration.
if exists('b:current_syntax')
  finish
endif

let s:cpo_save = &cpo
set cpo&vim

syn case match
syn sync fromstart

" Comments: `##` documents the template below it.
syn keyword pipeTodo contained TODO FIXME XXX NOTE
syn match pipeComment '#.*$' contains=pipeTodo,@Spell
syn match pipeDocComment '##.*$' contains=pipeTodo,@Spell

" Declarations: a keyword followed by the name it declares.
syn match pipeInclude ;\<import\>\ze\s*["'];
syn match pipeInclude ;\%(\<import\s\+\%("\%([^"\\]\|\\.\)*"\|'[^']*'\)\s\+\)\@<=as\>;
syn match pipeStructure '\<\%(pipeline\|template\|stage\|env\|chaos\|assert\)\>\ze\s\+\h'
syn match pipeStructure ;\<\%(step\|gate\|chaos\)\>\ze\s\+["'];
syn match pipeStructure '\<\%(step\|gate\)\>\ze\s\+\h'
syn match pipeStatement '\<param\>\ze\s\+\h'
syn match pipeHandler '\<on\>\ze\s\+\%(failure\|success\|always\)\>'
syn match pipeHandlerKind '\%(\<on\s\+\)\@<=\%(failure\|success\|always\)\>'
syn match pipeRepeat '\<for\>\ze\s\+\h'
syn match pipeRepeat '\%(\<for\s\+\h\w*\%(\s*,\s*\h\w*\)\=\s\+\)\@<=in\>'


" Attribute keys and calls.
syn match pipeKey '\<\h\w*\ze\s*\%(=[=~]\)\@!='
syn match pipeFunction '\<\h\w*\ze('

" Types (after the keys, so `b: duration = 5m` is a type) follow `:` (parameters) or `<` (element types).
syn match pipeType '\%([:<]\s*\)\@<=\<\%(string\|int\|float\|bool\|duration\|command\|any\|list\|map\)\>'

" Names being declared (after the keys and calls, so these win).
syn match pipeTemplateName '\%(\<template\s\+\)\@<=\h\w*'
syn match pipeDeclName '\%(\<\%(pipeline\|stage\|env\|step\|gate\|chaos\|assert\)\s\+\)\@<=\h\w*\ze\s*[{=]'

" Literals.
syn keyword pipeBoolean true false
syn keyword pipeNull null
syn match pipeDuration '\<\%(\d\+\%(ms\|s\|m\|h\|d\)\)\+\>'
syn match pipeNumber '\<\d\+\%(\.\d\+\)\=\%([eE][+-]\=\d\+\)\=\>'

syn region pipeString matchgroup=pipeQuote start=+"+ skip=+\\.+ end=+"+ contains=pipeEscape,pipeInterp,@Spell
syn match pipeEscape '\\.' contained
syn region pipeInterp matchgroup=pipeInterpDelim start='\${' end='}' contained contains=@pipeExpr
syn region pipeRawString start=+'+ end=+'+

" Braces nested inside an interpolation (a map literal) must not end it.
syn region pipeInterpBraces start='{' end='}' contained transparent contains=@pipeExpr
syn cluster pipeExpr contains=pipeString,pipeRawString,pipeNumber,pipeDuration,pipeBoolean,pipeNull,pipeFunction,pipeOperator,pipeInterpBraces

syn match pipeOperator '??\|||\|&&\|==\|!=\|<=\|>=\|=\~\|!\~\|[-+*/%!<>]'

hi def link pipeComment      Comment
hi def link pipeDocComment   SpecialComment
hi def link pipeTodo         Todo
hi def link pipeInclude      Include
hi def link pipeStructure    Keyword
hi def link pipeStatement    Keyword
hi def link pipeHandler      Keyword
hi def link pipeHandlerKind  Constant
hi def link pipeRepeat       Repeat
hi def link pipeTemplateName Function
hi def link pipeDeclName     Label
hi def link pipeType         Type
hi def link pipeKey          Identifier
hi def link pipeFunction     Function
hi def link pipeBoolean      Boolean
hi def link pipeNull         Constant
hi def link pipeDuration     Number
hi def link pipeNumber       Number
hi def link pipeString       String
hi def link pipeQuote        String
hi def link pipeRawString    String
hi def link pipeEscape       SpecialChar
hi def link pipeInterpDelim  Delimiter
hi def link pipeOperator     Operator

let b:current_syntax = 'pipe'

let &cpo = s:cpo_save
unlet s:cpo_save
