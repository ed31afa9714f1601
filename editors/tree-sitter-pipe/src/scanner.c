// External scanner for tree-sitter-pipe: the text of a "double-quoted" string.
//
// A run of string text ends before `"`, before a `\` escape and before `${`,
// the start of an interpolation; a `$` not followed by `{` is plain text.
// Doing this here rather than with a regex keeps `#` and whitespace inside a
// string from being taken as a comment or skipped as extras.

#include "tree_sitter/parser.h"

enum TokenType {
    STRING_CONTENT,
    ERROR_SENTINEL,
};

void *tree_sitter_pipe_external_scanner_create(void) { return NULL; }

void tree_sitter_pipe_external_scanner_destroy(void *payload) { (void)payload; }

unsigned tree_sitter_pipe_external_scanner_serialize(void *payload, char *buffer) {
    (void)payload;
    (void)buffer;
    return 0;
}

void tree_sitter_pipe_external_scanner_deserialize(void *payload, const char *buffer,
                                                   unsigned length) {
    (void)payload;
    (void)buffer;
    (void)length;
}

bool tree_sitter_pipe_external_scanner_scan(void *payload, TSLexer *lexer,
                                            const bool *valid_symbols) {
    (void)payload;
    // During error recovery every symbol is valid; do not claim text then.
    if (valid_symbols[ERROR_SENTINEL] || !valid_symbols[STRING_CONTENT]) {
        return false;
    }
    lexer->result_symbol = STRING_CONTENT;
    bool has_content = false;
    for (;;) {
        lexer->mark_end(lexer);
        if (lexer->eof(lexer)) {
            return has_content;
        }
        int32_t c = lexer->lookahead;
        if (c == '"' || c == '\\') {
            return has_content;
        }
        lexer->advance(lexer, false);
        if (c == '$' && lexer->lookahead == '{') {
            // The end stays marked before the `$`.
            return has_content;
        }
        has_content = true;
    }
}
