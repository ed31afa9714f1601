; Scopes, definitions and references for pipe.

(source_file) @local.scope
(pipeline) @local.scope
(template) @local.scope
(for_loop) @local.scope

(template name: (identifier) @local.definition.function)
(import alias: (identifier) @local.definition.import)
(param name: (identifier) @local.definition.parameter)
(template_parameter name: (identifier) @local.definition.parameter)
(for_loop variable: (identifier) @local.definition.var)
(env_declaration name: (identifier) @local.definition.var)
(stage name: (identifier) @local.definition.var)
(step name: (identifier) @local.definition.var)
(gate name: (identifier) @local.definition.var)
(chaos name: (identifier) @local.definition.var)

; References: identifiers used as values (not keys, block kinds or paths).
(attribute value: (identifier) @local.reference)
(map_entry value: (identifier) @local.reference)
(param default: (identifier) @local.reference)
(template_parameter default: (identifier) @local.reference)
(for_loop iterable: (identifier) @local.reference)
(binary_expression left: (identifier) @local.reference)
(binary_expression right: (identifier) @local.reference)
(unary_expression operand: (identifier) @local.reference)
(field_expression object: (identifier) @local.reference)
(index_expression object: (identifier) @local.reference)
(index_expression index: (identifier) @local.reference)
(parenthesized_expression (identifier) @local.reference)
(list (identifier) @local.reference)
(arguments (identifier) @local.reference)
(interpolation (identifier) @local.reference)
