; Scopes, definitions and references for pipe.

(source_file) @local.scope
(pipeline) @local.scope
(template) @local.scope
(for_loop) @local.scope

(param name: (identifier) @local.definition)
(template_parameter name: (identifier) @local.definition)
(for_loop variable: (identifier) @local.definition)
(stage name: (identifier) @local.definition)
(env_declaration name: (identifier) @local.definition)
(step name: (identifier) @local.definition)
(gate name: (identifier) @local.definition)
(import alias: (identifier) @local.definition)

(identifier) @local.reference
