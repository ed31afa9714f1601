/**
 * Tree-sitter grammar for pipe, the declarative pipeline language.
 *
 * It mirrors lang/pipe.pest, which is the source of truth; keep the two (and
 * docs/GRAMMAR.md) in step. Where the pest grammar uses ordered choice to let
 * a keyword fall back to a plain identifier (`env = staging` inside a stage),
 * this grammar aliases the keyword to an identifier in attribute keys.
 *
 * String text is produced by the external scanner in src/scanner.c, so that
 * `#`, whitespace and a lone `$` inside "..." stay string text while `${`
 * starts an interpolation.
 */

const PREC = {
  coalesce: 1,
  or: 2,
  and: 3,
  compare: 4,
  add: 5,
  multiply: 6,
  unary: 7,
  postfix: 8,
};

// Words the pest grammar spells as keywords but does not reserve: they may
// still be used as attribute keys (and block kinds inside generic bodies).
const CONTEXTUAL_KEYWORDS = [
  'import', 'as', 'pipeline', 'template', 'param', 'env', 'stage', 'on',
  'step', 'gate', 'chaos', 'for', 'in', 'assert',
];

/** Entries separated by optional commas, as `(entry ~ ","?)*` in pest. */
function entries(rule) {
  return repeat(seq(rule, optional(',')));
}

/** One or more comma-separated items with an optional trailing comma. */
function commaSep1(rule) {
  return seq(rule, repeat(seq(',', rule)), optional(','));
}

module.exports = grammar({
  name: 'pipe',

  extras: $ => [/\s/, $.doc_comment, $.comment],

  externals: $ => [$.string_content, $._error_sentinel],

  word: $ => $.identifier,

  // As in pest's `reserved`, these never lex as an identifier.
  reserved: {
    global: _ => ['true', 'false', 'null'],
  },

  supertypes: $ => [$._expression],

  rules: {
    source_file: $ => repeat(choice($.import, $.pipeline, $.template)),

    // ------------------------------------------------------------ items
    import: $ => seq(
      'import',
      field('source', $.string),
      optional(seq('as', field('alias', $.identifier))),
    ),

    pipeline: $ => seq(
      'pipeline',
      field('name', $.identifier),
      field('body', $.pipeline_body),
    ),

    pipeline_body: $ => seq(
      '{',
      entries(choice(
        $.param, $.env_declaration, $.stage, $.handler, $.assert, $.attribute, $.block,
      )),
      '}',
    ),

    template: $ => seq(
      'template',
      field('name', $.identifier),
      field('parameters', $.template_parameters),
      field('body', $.body),
    ),

    template_parameters: $ => seq('(', optional(commaSep1($.template_parameter)), ')'),

    template_parameter: $ => seq(
      field('name', $.identifier),
      ':',
      field('type', $._type),
      optional(seq('=', field('default', $._expression))),
    ),

    param: $ => seq(
      'param',
      field('name', $.identifier),
      ':',
      field('type', $._type),
      optional(seq('=', field('default', $._expression))),
    ),

    env_declaration: $ => seq('env', field('name', $.identifier), field('body', $.body)),

    stage: $ => seq('stage', field('name', $.identifier), field('body', $.stage_body)),

    handler: $ => seq(
      'on',
      field('kind', $.handler_kind),
      field('body', $.stage_body),
    ),

    handler_kind: _ => choice('failure', 'success', 'always'),

    // `assert NAME { from = ...  to = ...  through = [...] }`: a property of
    // the DAG that `pipe check` proves; its attributes are step selectors.
    assert: $ => seq('assert', field('name', $.identifier), field('body', $.body)),

    stage_body: $ => seq(
      '{',
      entries(choice($.step, $.gate, $.chaos, $.for_loop, $.attribute, $.block)),
      '}',
    ),

    step: $ => seq(
      'step',
      field('name', $._name),
      optional(seq('=', field('template', $.path))),
      field('body', $.body),
    ),

    gate: $ => seq(
      'gate',
      field('name', $._name),
      '=',
      field('template', $.path),
      field('body', $.body),
    ),

    chaos: $ => seq('chaos', field('name', $._name), field('body', $.body)),

    for_loop: $ => seq(
      'for',
      field('variable', $.identifier),
      optional(seq(',', field('variable', $.identifier))),
      'in',
      field('iterable', $._expression),
      field('body', $.stage_body),
    ),

    // A generic body: `retry { ... }`, a step's settings, a template's body.
    body: $ => seq('{', entries(choice($.attribute, alias($._generic_block, $.block))), '}'),

    attribute: $ => seq(field('key', $._key), '=', field('value', $._expression)),

    // A block among pipeline or stage entries: its kind is a plain identifier,
    // since there the structural keywords mean what they say.
    block: $ => seq(
      field('kind', $.identifier),
      optional(field('label', $._name)),
      field('body', $.body),
    ),

    _generic_block: $ => seq(
      field('kind', $._key),
      optional(field('label', $._name)),
      field('body', $.body),
    ),

    _key: $ => choice(
      $.identifier,
      alias(choice(...CONTEXTUAL_KEYWORDS), $.identifier),
    ),

    _name: $ => choice($.identifier, $.string, $.raw_string),

    path: $ => seq($.identifier, repeat(seq(token.immediate('.'), $.identifier))),

    // ------------------------------------------------------------ types
    _type: $ => choice($.list_type, $.map_type, $.primitive_type),

    list_type: $ => seq('list', '<', field('element', $._type), '>'),

    map_type: $ => seq('map', '<', field('value', $._type), '>'),

    primitive_type: _ => choice(
      'string', 'int', 'float', 'bool', 'duration', 'command', 'any',
    ),

    // ------------------------------------------------------------ expressions
    _expression: $ => choice(
      $.binary_expression,
      $.unary_expression,
      $.field_expression,
      $.index_expression,
      $.call_expression,
      $.parenthesized_expression,
      $.list,
      $.map,
      $.string,
      $.raw_string,
      $.duration,
      $.number,
      $.boolean,
      $.null,
      $.identifier,
    ),

    binary_expression: $ => {
      const table = [
        [PREC.coalesce, '??'],
        [PREC.or, '||'],
        [PREC.and, '&&'],
        [PREC.compare, choice('==', '!=', '<=', '>=', '=~', '!~', '<', '>')],
        [PREC.add, choice('+', '-')],
        [PREC.multiply, choice('*', '/', '%')],
      ];
      return choice(...table.map(([precedence, operator]) => prec.left(precedence, seq(
        field('left', $._expression),
        field('operator', operator),
        field('right', $._expression),
      ))));
    },

    unary_expression: $ => prec(PREC.unary, seq(
      field('operator', choice('!', '-')),
      field('operand', $._expression),
    )),

    field_expression: $ => prec(PREC.postfix, seq(
      field('object', $._expression),
      '.',
      field('field', alias($.identifier, $.field_identifier)),
    )),

    index_expression: $ => prec(PREC.postfix, seq(
      field('object', $._expression),
      '[',
      field('index', $._expression),
      ']',
    )),

    call_expression: $ => prec(PREC.postfix, seq(
      field('function', $.identifier),
      field('arguments', $.arguments),
    )),

    arguments: $ => seq('(', optional(commaSep1($._expression)), ')'),

    parenthesized_expression: $ => seq('(', $._expression, ')'),

    list: $ => seq('[', optional(commaSep1($._expression)), ']'),

    map: $ => seq('{', entries($.map_entry), '}'),

    map_entry: $ => seq(
      field('key', choice($._key, $.string, $.raw_string)),
      choice('=', ':'),
      field('value', $._expression),
    ),

    // ------------------------------------------------------------ literals
    string: $ => seq(
      '"',
      repeat(choice($.string_content, $.escape_sequence, $.interpolation)),
      token.immediate('"'),
    ),

    escape_sequence: _ => token.immediate(seq('\\', /(.|\r?\n)/)),

    interpolation: $ => seq(token.immediate('${'), $._expression, '}'),

    raw_string: _ => token(seq("'", /[^']*/, "'")),

    duration: _ => token(/([0-9]+(ms|s|m|h|d))+/),

    number: _ => token(/[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?/),

    boolean: _ => choice('true', 'false'),

    null: _ => 'null',

    identifier: _ => /[A-Za-z_][A-Za-z0-9_]*/,

    comment: _ => token(seq('#', /.*/)),

    // `##` lines above a template document it.
    doc_comment: _ => token(prec(1, seq('##', /.*/))),
  },
});
