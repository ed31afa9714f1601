; Highlights for pipe. Capture names follow the common tree-sitter set
; (Neovim, Helix and the tree-sitter CLI all understand them). No two
; patterns capture the same node, so the result does not depend on whether
; an editor lets the first or the last match win.

; Keywords
[
  "import"
  "as"
  "pipeline"
  "template"
  "param"
  "env"
  "stage"
  "on"
  "step"
  "gate"
  "chaos"
  "assert"
] @keyword

[
  "for"
  "in"
] @keyword.repeat

(handler_kind) @keyword

; Types
(primitive_type) @type.builtin
[
  "list"
  "map"
] @type.builtin

; Definitions
(pipeline name: (identifier) @module)
(template name: (identifier) @function)
(stage name: (identifier) @label)
(env_declaration name: (identifier) @label)
(step name: (identifier) @label)
(gate name: (identifier) @label)
(chaos name: (identifier) @label)
(assert name: (identifier) @label)
(param name: (identifier) @variable.parameter)
(template_parameter name: (identifier) @variable.parameter)
(for_loop variable: (identifier) @variable)

; The template a step or gate uses, and functions called in expressions
(path (identifier) @function)
(call_expression function: (identifier) @function.call)
(import alias: (identifier) @module)

; Attributes and blocks
(attribute key: (identifier) @property)
(map_entry key: (identifier) @property)
(block kind: (identifier) @type)
(field_expression field: (field_identifier) @property)

; Literals
(string) @string
(raw_string) @string
(escape_sequence) @string.escape
(interpolation "${" @punctuation.special)
(duration) @number
(number) @number
(boolean) @constant.builtin.boolean
(null) @constant.builtin

; Comments: `##` above a template is its documentation
(comment) @comment
(doc_comment) @comment.documentation

; Operators and punctuation
[
  "??" "||" "&&"
  "==" "!=" "<" "<=" ">" ">=" "=~" "!~"
  "+" "-" "*" "/" "%" "!"
  "="
] @operator

[
  "(" ")"
  "[" "]"
  "{" "}"
] @punctuation.bracket

[
  "," "." ":"
] @punctuation.delimiter

