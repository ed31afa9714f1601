//! Parser tests: one per construct, each comparing the whole span table
//! (offset, line, column, kind, covered text) of the AST; then syntax errors
//! with their exact position and message.

use crate::common::{assert_expr_spans, assert_spans, line_col};
use pipe_lang::FileId;

macro_rules! spans {
    ($name:ident, $src:expr, [$($row:expr),* $(,)?]) => {
        #[test]
        fn $name() {
            assert_spans($src, &[$($row),*]);
        }
    };
}

macro_rules! expr_spans {
    ($name:ident, $src:expr, [$($row:expr),* $(,)?]) => {
        #[test]
        fn $name() {
            assert_expr_spans($src, &[$($row),*]);
        }
    };
}

/// A syntax error: where it is (offset, line, column, width) and its message.
macro_rules! error {
    (
        name: $name:ident,
        input: $input:expr,
        offset: $offset:expr,
        line: $line:expr,
        column: $column:expr,
        width: $width:expr,
        message: $message:expr $(,)?
    ) => {
        #[test]
        fn $name() {
            let src: &str = $input;
            let diags = match pipe_lang::parser::parse(FileId(0), src) {
                Ok(m) => panic!("expected a syntax error in {src:?}, parsed {m:#?}"),
                Err(d) => d,
            };
            assert_eq!(diags.len(), 1, "{diags:#?}");
            let d = &diags[0];
            let (line, column) = line_col(src, d.span.start as usize);
            assert_eq!(
                (
                    d.span.start as usize,
                    line,
                    column,
                    d.span.len(),
                    d.message.as_str()
                ),
                ($offset, $line, $column, $width, $message),
                "{d:#?}"
            );
        }
    };
}

// ------------------------------------------------------------------ items

spans!(
    import_std,
    r#"import "std/docker""#,
    [
        (0, 1, 1, "import", "import \"std/docker\""),
        (7, 1, 8, "path std/docker", "\"std/docker\""),
    ]
);
spans!(
    import_alias,
    "import \"lib/x.pipe\" as x\n",
    [
        (0, 1, 1, "import", "import \"lib/x.pipe\" as x"),
        (7, 1, 8, "path lib/x.pipe", "\"lib/x.pipe\""),
        (23, 1, 24, "alias x", "x"),
    ]
);
spans!(
    pipeline_attr,
    "pipeline p {\n  description = \"x\"\n}",
    [
        (
            0,
            1,
            1,
            "pipeline p",
            "pipeline p {\n  description = \"x\"\n}"
        ),
        (9, 1, 10, "name", "p"),
        (15, 2, 3, "attr description", "description = \"x\""),
        (29, 2, 17, "str [\"x\"]", "\"x\""),
    ]
);
spans!(
    param_scalar_types,
    "pipeline p {\n  param s: string = \"a\"\n  param i: int = 1\n  param f: float = 1.5\n  param b: bool = true\n  param d: duration = 30s\n  param c: command\n  param x: any = null\n}",
    [
    (0, 1, 1, "pipeline p", "pipeline p {\n  param s: string = \"a\"\n  param i: int = 1\n  param f: float = 1.5\n  param b: bool = true\n  param d: duration = 30s\n  param c: command\n  param x: any = null\n}"),
    (9, 1, 10, "name", "p"),
    (15, 2, 3, "param s", "param s: string = \"a\""),
    (24, 2, 12, "type string", "string"),
    (33, 2, 21, "str [\"a\"]", "\"a\""),
    (39, 3, 3, "param i", "param i: int = 1"),
    (48, 3, 12, "type int", "int"),
    (54, 3, 18, "int 1", "1"),
    (58, 4, 3, "param f", "param f: float = 1.5"),
    (67, 4, 12, "type float", "float"),
    (75, 4, 20, "float 1.5", "1.5"),
    (81, 5, 3, "param b", "param b: bool = true"),
    (90, 5, 12, "type bool", "bool"),
    (97, 5, 19, "bool true", "true"),
    (104, 6, 3, "param d", "param d: duration = 30s"),
    (113, 6, 12, "type duration", "duration"),
    (124, 6, 23, "duration 30000ms", "30s"),
    (130, 7, 3, "param c", "param c: command"),
    (139, 7, 12, "type command", "command"),
    (149, 8, 3, "param x", "param x: any = null"),
    (158, 8, 12, "type any", "any"),
    (164, 8, 18, "null", "null"),
    ]
);
spans!(
    param_collection_types,
    "pipeline p {\n  param l: list<string> = [\"a\"]\n  param m: map<int> = {a = 1}\n  param n: list<map<list<int>>>\n}",
    [
    (0, 1, 1, "pipeline p", "pipeline p {\n  param l: list<string> = [\"a\"]\n  param m: map<int> = {a = 1}\n  param n: list<map<list<int>>>\n}"),
    (9, 1, 10, "name", "p"),
    (15, 2, 3, "param l", "param l: list<string> = [\"a\"]"),
    (24, 2, 12, "type list<string>", "list<string>"),
    (39, 2, 27, "list of 1", "[\"a\"]"),
    (40, 2, 28, "str [\"a\"]", "\"a\""),
    (47, 3, 3, "param m", "param m: map<int> = {a = 1}"),
    (56, 3, 12, "type map<int>", "map<int>"),
    (67, 3, 23, "map {a}", "{a = 1}"),
    (68, 3, 24, "key a", "a"),
    (72, 3, 28, "int 1", "1"),
    (77, 4, 3, "param n", "param n: list<map<list<int>>>"),
    (86, 4, 12, "type list<map<list<int>>>", "list<map<list<int>>>"),
    ]
);
spans!(
    env_block,
    "pipeline p {\n  env prod {\n    file = \"p.env\"\n    vars { A = \"1\" }\n  }\n}",
    [
        (
            0,
            1,
            1,
            "pipeline p",
            "pipeline p {\n  env prod {\n    file = \"p.env\"\n    vars { A = \"1\" }\n  }\n}"
        ),
        (9, 1, 10, "name", "p"),
        (
            15,
            2,
            3,
            "env prod",
            "env prod {\n    file = \"p.env\"\n    vars { A = \"1\" }\n  }"
        ),
        (
            24,
            2,
            12,
            "body",
            "{\n    file = \"p.env\"\n    vars { A = \"1\" }\n  }"
        ),
        (30, 3, 5, "attr file", "file = \"p.env\""),
        (37, 3, 12, "str [\"p.env\"]", "\"p.env\""),
        (49, 4, 5, "block vars", "vars { A = \"1\" }"),
        (54, 4, 10, "body", "{ A = \"1\" }"),
        (56, 4, 12, "attr A", "A = \"1\""),
        (60, 4, 16, "str [\"1\"]", "\"1\""),
    ]
);
spans!(
    stage_attrs,
    "pipeline p {\n  stage s {\n    needs = [b]\n    env = prod\n    when = true\n    required = false\n  }\n}",
    [
    (0, 1, 1, "pipeline p", "pipeline p {\n  stage s {\n    needs = [b]\n    env = prod\n    when = true\n    required = false\n  }\n}"),
    (9, 1, 10, "name", "p"),
    (15, 2, 3, "stage s", "stage s {\n    needs = [b]\n    env = prod\n    when = true\n    required = false\n  }"),
    (21, 2, 9, "name", "s"),
    (29, 3, 5, "attr needs", "needs = [b]"),
    (37, 3, 13, "list of 1", "[b]"),
    (38, 3, 14, "ident b", "b"),
    (45, 4, 5, "attr env", "env = prod"),
    (51, 4, 11, "ident prod", "prod"),
    (60, 5, 5, "attr when", "when = true"),
    (67, 5, 12, "bool true", "true"),
    (76, 6, 5, "attr required", "required = false"),
    (87, 6, 16, "bool false", "false"),
    ]
);
spans!(
    step_plain,
    "pipeline p {\n  stage s {\n    step a {\n      run = \"make\"\n      timeout = 5m\n      retry { attempts = 3 }\n    }\n  }\n}",
    [
    (0, 1, 1, "pipeline p", "pipeline p {\n  stage s {\n    step a {\n      run = \"make\"\n      timeout = 5m\n      retry { attempts = 3 }\n    }\n  }\n}"),
    (9, 1, 10, "name", "p"),
    (15, 2, 3, "stage s", "stage s {\n    step a {\n      run = \"make\"\n      timeout = 5m\n      retry { attempts = 3 }\n    }\n  }"),
    (21, 2, 9, "name", "s"),
    (29, 3, 5, "step", "step a {\n      run = \"make\"\n      timeout = 5m\n      retry { attempts = 3 }\n    }"),
    (34, 3, 10, "name", "a"),
    (36, 3, 12, "body", "{\n      run = \"make\"\n      timeout = 5m\n      retry { attempts = 3 }\n    }"),
    (44, 4, 7, "attr run", "run = \"make\""),
    (50, 4, 13, "str [\"make\"]", "\"make\""),
    (63, 5, 7, "attr timeout", "timeout = 5m"),
    (73, 5, 17, "duration 300000ms", "5m"),
    (82, 6, 7, "block retry", "retry { attempts = 3 }"),
    (88, 6, 13, "body", "{ attempts = 3 }"),
    (90, 6, 15, "attr attempts", "attempts = 3"),
    (101, 6, 26, "int 3", "3"),
    ]
);
spans!(
    step_template_call,
    "pipeline p {\n  stage s {\n    step b = docker.build { dockerfile = \"D\" }\n  }\n}",
    [
        (
            0,
            1,
            1,
            "pipeline p",
            "pipeline p {\n  stage s {\n    step b = docker.build { dockerfile = \"D\" }\n  }\n}"
        ),
        (9, 1, 10, "name", "p"),
        (
            15,
            2,
            3,
            "stage s",
            "stage s {\n    step b = docker.build { dockerfile = \"D\" }\n  }"
        ),
        (21, 2, 9, "name", "s"),
        (
            29,
            3,
            5,
            "step = docker.build",
            "step b = docker.build { dockerfile = \"D\" }"
        ),
        (34, 3, 10, "name", "b"),
        (38, 3, 14, "uses docker.build", "docker.build"),
        (51, 3, 27, "body", "{ dockerfile = \"D\" }"),
        (53, 3, 29, "attr dockerfile", "dockerfile = \"D\""),
        (66, 3, 42, "str [\"D\"]", "\"D\""),
    ]
);
spans!(
    step_string_names,
    "pipeline p {\n  stage s {\n    step \"img-${x}\" { run = 'r' }\n    step 'raw' { run = \"r\" }\n  }\n}",
    [
    (0, 1, 1, "pipeline p", "pipeline p {\n  stage s {\n    step \"img-${x}\" { run = 'r' }\n    step 'raw' { run = \"r\" }\n  }\n}"),
    (9, 1, 10, "name", "p"),
    (15, 2, 3, "stage s", "stage s {\n    step \"img-${x}\" { run = 'r' }\n    step 'raw' { run = \"r\" }\n  }"),
    (21, 2, 9, "name", "s"),
    (29, 3, 5, "step", "step \"img-${x}\" { run = 'r' }"),
    (34, 3, 10, "name", "\"img-${x}\""),
    (45, 3, 21, "body", "{ run = 'r' }"),
    (47, 3, 23, "attr run", "run = 'r'"),
    (53, 3, 29, "str [\"r\"]", "'r'"),
    (63, 4, 5, "step", "step 'raw' { run = \"r\" }"),
    (68, 4, 10, "name", "'raw'"),
    (74, 4, 16, "body", "{ run = \"r\" }"),
    (76, 4, 18, "attr run", "run = \"r\""),
    (82, 4, 24, "str [\"r\"]", "\"r\""),
    ]
);
spans!(
    gate_approval,
    "pipeline p {\n  stage s {\n    gate ok = approval { timeout = 24h }\n  }\n}",
    [
        (
            0,
            1,
            1,
            "pipeline p",
            "pipeline p {\n  stage s {\n    gate ok = approval { timeout = 24h }\n  }\n}"
        ),
        (9, 1, 10, "name", "p"),
        (
            15,
            2,
            3,
            "stage s",
            "stage s {\n    gate ok = approval { timeout = 24h }\n  }"
        ),
        (21, 2, 9, "name", "s"),
        (
            29,
            3,
            5,
            "gate = approval",
            "gate ok = approval { timeout = 24h }"
        ),
        (34, 3, 10, "name", "ok"),
        (48, 3, 24, "body", "{ timeout = 24h }"),
        (50, 3, 26, "attr timeout", "timeout = 24h"),
        (60, 3, 36, "duration 86400000ms", "24h"),
    ]
);
spans!(
    chaos_with_faults,
    "pipeline p {\n  stage s {\n    chaos api {\n      upstream = \"http://x\"\n      fault latency { delay = 3s }\n      fault http_status { status = 429 }\n    }\n  }\n}",
    [
    (0, 1, 1, "pipeline p", "pipeline p {\n  stage s {\n    chaos api {\n      upstream = \"http://x\"\n      fault latency { delay = 3s }\n      fault http_status { status = 429 }\n    }\n  }\n}"),
    (9, 1, 10, "name", "p"),
    (15, 2, 3, "stage s", "stage s {\n    chaos api {\n      upstream = \"http://x\"\n      fault latency { delay = 3s }\n      fault http_status { status = 429 }\n    }\n  }"),
    (21, 2, 9, "name", "s"),
    (29, 3, 5, "chaos", "chaos api {\n      upstream = \"http://x\"\n      fault latency { delay = 3s }\n      fault http_status { status = 429 }\n    }"),
    (35, 3, 11, "name", "api"),
    (39, 3, 15, "body", "{\n      upstream = \"http://x\"\n      fault latency { delay = 3s }\n      fault http_status { status = 429 }\n    }"),
    (47, 4, 7, "attr upstream", "upstream = \"http://x\""),
    (58, 4, 18, "str [\"http://x\"]", "\"http://x\""),
    (75, 5, 7, "block fault", "fault latency { delay = 3s }"),
    (81, 5, 13, "name", "latency"),
    (89, 5, 21, "body", "{ delay = 3s }"),
    (91, 5, 23, "attr delay", "delay = 3s"),
    (99, 5, 31, "duration 3000ms", "3s"),
    (110, 6, 7, "block fault", "fault http_status { status = 429 }"),
    (116, 6, 13, "name", "http_status"),
    (128, 6, 25, "body", "{ status = 429 }"),
    (130, 6, 27, "attr status", "status = 429"),
    (139, 6, 36, "int 429", "429"),
    ]
);
spans!(
    for_one_var,
    "pipeline p {\n  stage s {\n    for x in [1, 2] {\n      step \"a${x}\" { run = \"r\" }\n    }\n  }\n}",
    [
    (0, 1, 1, "pipeline p", "pipeline p {\n  stage s {\n    for x in [1, 2] {\n      step \"a${x}\" { run = \"r\" }\n    }\n  }\n}"),
    (9, 1, 10, "name", "p"),
    (15, 2, 3, "stage s", "stage s {\n    for x in [1, 2] {\n      step \"a${x}\" { run = \"r\" }\n    }\n  }"),
    (21, 2, 9, "name", "s"),
    (29, 3, 5, "for x", "for x in [1, 2] {\n      step \"a${x}\" { run = \"r\" }\n    }"),
    (33, 3, 9, "var x", "x"),
    (38, 3, 14, "list of 2", "[1, 2]"),
    (39, 3, 15, "int 1", "1"),
    (42, 3, 18, "int 2", "2"),
    (53, 4, 7, "step", "step \"a${x}\" { run = \"r\" }"),
    (58, 4, 12, "name", "\"a${x}\""),
    (66, 4, 20, "body", "{ run = \"r\" }"),
    (68, 4, 22, "attr run", "run = \"r\""),
    (74, 4, 28, "str [\"r\"]", "\"r\""),
    ]
);
spans!(
    for_two_vars,
    "pipeline p {\n  stage s {\n    for k, v in {a = 1} {\n      step \"a${k}\" { run = \"r\" }\n    }\n  }\n}",
    [
    (0, 1, 1, "pipeline p", "pipeline p {\n  stage s {\n    for k, v in {a = 1} {\n      step \"a${k}\" { run = \"r\" }\n    }\n  }\n}"),
    (9, 1, 10, "name", "p"),
    (15, 2, 3, "stage s", "stage s {\n    for k, v in {a = 1} {\n      step \"a${k}\" { run = \"r\" }\n    }\n  }"),
    (21, 2, 9, "name", "s"),
    (29, 3, 5, "for k, v", "for k, v in {a = 1} {\n      step \"a${k}\" { run = \"r\" }\n    }"),
    (33, 3, 9, "var k", "k"),
    (36, 3, 12, "var v", "v"),
    (41, 3, 17, "map {a}", "{a = 1}"),
    (42, 3, 18, "key a", "a"),
    (46, 3, 22, "int 1", "1"),
    (57, 4, 7, "step", "step \"a${k}\" { run = \"r\" }"),
    (62, 4, 12, "name", "\"a${k}\""),
    (70, 4, 20, "body", "{ run = \"r\" }"),
    (72, 4, 22, "attr run", "run = \"r\""),
    (78, 4, 28, "str [\"r\"]", "\"r\""),
    ]
);
spans!(
    for_nested,
    "pipeline p {\n  stage s {\n    for a in xs {\n      for b in ys {\n        step \"${a}${b}\" { run = \"r\" }\n      }\n    }\n  }\n}",
    [
    (0, 1, 1, "pipeline p", "pipeline p {\n  stage s {\n    for a in xs {\n      for b in ys {\n        step \"${a}${b}\" { run = \"r\" }\n      }\n    }\n  }\n}"),
    (9, 1, 10, "name", "p"),
    (15, 2, 3, "stage s", "stage s {\n    for a in xs {\n      for b in ys {\n        step \"${a}${b}\" { run = \"r\" }\n      }\n    }\n  }"),
    (21, 2, 9, "name", "s"),
    (29, 3, 5, "for a", "for a in xs {\n      for b in ys {\n        step \"${a}${b}\" { run = \"r\" }\n      }\n    }"),
    (33, 3, 9, "var a", "a"),
    (38, 3, 14, "ident xs", "xs"),
    (49, 4, 7, "for b", "for b in ys {\n        step \"${a}${b}\" { run = \"r\" }\n      }"),
    (53, 4, 11, "var b", "b"),
    (58, 4, 16, "ident ys", "ys"),
    (71, 5, 9, "step", "step \"${a}${b}\" { run = \"r\" }"),
    (76, 5, 14, "name", "\"${a}${b}\""),
    (87, 5, 25, "body", "{ run = \"r\" }"),
    (89, 5, 27, "attr run", "run = \"r\""),
    (95, 5, 33, "str [\"r\"]", "\"r\""),
    ]
);
spans!(
    handlers,
    "pipeline p {\n  on failure { step f { run = \"f\" } }\n  on success { step s { run = \"s\" } }\n  on always { step a { run = \"a\" } }\n}",
    [
    (0, 1, 1, "pipeline p", "pipeline p {\n  on failure { step f { run = \"f\" } }\n  on success { step s { run = \"s\" } }\n  on always { step a { run = \"a\" } }\n}"),
    (9, 1, 10, "name", "p"),
    (15, 2, 3, "on failure", "on failure { step f { run = \"f\" } }"),
    (18, 2, 6, "kind", "failure"),
    (28, 2, 16, "step", "step f { run = \"f\" }"),
    (33, 2, 21, "name", "f"),
    (35, 2, 23, "body", "{ run = \"f\" }"),
    (37, 2, 25, "attr run", "run = \"f\""),
    (43, 2, 31, "str [\"f\"]", "\"f\""),
    (53, 3, 3, "on success", "on success { step s { run = \"s\" } }"),
    (56, 3, 6, "kind", "success"),
    (66, 3, 16, "step", "step s { run = \"s\" }"),
    (71, 3, 21, "name", "s"),
    (73, 3, 23, "body", "{ run = \"s\" }"),
    (75, 3, 25, "attr run", "run = \"s\""),
    (81, 3, 31, "str [\"s\"]", "\"s\""),
    (91, 4, 3, "on always", "on always { step a { run = \"a\" } }"),
    (94, 4, 6, "kind", "always"),
    (103, 4, 15, "step", "step a { run = \"a\" }"),
    (108, 4, 20, "name", "a"),
    (110, 4, 22, "body", "{ run = \"a\" }"),
    (112, 4, 24, "attr run", "run = \"a\""),
    (118, 4, 30, "str [\"a\"]", "\"a\""),
    ]
);
spans!(
    template_typed_params,
    "## Builds it.\n## Twice.\ntemplate build(file: string, n: int = 2, tags: list<string> = [],) {\n  uses = \"docker.build\"\n}",
    [
    (24, 3, 1, "template build doc=\"Builds it.\\nTwice.\"", "template build(file: string, n: int = 2, tags: list<string> = [],) {\n  uses = \"docker.build\"\n}"),
    (39, 3, 16, "param file", "file: string"),
    (45, 3, 22, "type string", "string"),
    (53, 3, 30, "param n", "n: int = 2"),
    (56, 3, 33, "type int", "int"),
    (62, 3, 39, "int 2", "2"),
    (65, 3, 42, "param tags", "tags: list<string> = []"),
    (71, 3, 48, "type list<string>", "list<string>"),
    (86, 3, 63, "list of 0", "[]"),
    (91, 3, 68, "body", "{\n  uses = \"docker.build\"\n}"),
    (95, 4, 3, "attr uses", "uses = \"docker.build\""),
    (102, 4, 10, "str [\"docker.build\"]", "\"docker.build\""),
    ]
);
spans!(
    comments_are_skipped,
    "# leading\npipeline p { # after brace\n  # own line\n  stage s { step a { run = \"x # not a comment\" } } # trailing\n}\n# end",
    [
    (10, 2, 1, "pipeline p", "pipeline p { # after brace\n  # own line\n  stage s { step a { run = \"x # not a comment\" } } # trailing\n}"),
    (19, 2, 10, "name", "p"),
    (52, 4, 3, "stage s", "stage s { step a { run = \"x # not a comment\" } }"),
    (58, 4, 9, "name", "s"),
    (62, 4, 13, "step", "step a { run = \"x # not a comment\" }"),
    (67, 4, 18, "name", "a"),
    (69, 4, 20, "body", "{ run = \"x # not a comment\" }"),
    (71, 4, 22, "attr run", "run = \"x # not a comment\""),
    (77, 4, 28, "str [\"x # not a comment\"]", "\"x # not a comment\""),
    ]
);

// ------------------------------------------------------------ expressions

expr_spans!(
    expr_durations,
    "[500ms, 30s, 5m, 24h, 1h30m, 2d]",
    [
        (0, 1, 1, "list of 6", "[500ms, 30s, 5m, 24h, 1h30m, 2d]"),
        (1, 1, 2, "duration 500ms", "500ms"),
        (8, 1, 9, "duration 30000ms", "30s"),
        (13, 1, 14, "duration 300000ms", "5m"),
        (17, 1, 18, "duration 86400000ms", "24h"),
        (22, 1, 23, "duration 5400000ms", "1h30m"),
        (29, 1, 30, "duration 172800000ms", "2d"),
    ]
);
expr_spans!(
    expr_numbers,
    "[0, -7, 1.5, 2e3, -1.5e-2]",
    [
        (0, 1, 1, "list of 5", "[0, -7, 1.5, 2e3, -1.5e-2]"),
        (1, 1, 2, "int 0", "0"),
        (4, 1, 5, "int -7", "-7"),
        (8, 1, 9, "float 1.5", "1.5"),
        (13, 1, 14, "float 2000", "2e3"),
        (18, 1, 19, "float -0.015", "-1.5e-2"),
    ]
);
expr_spans!(
    expr_literals,
    "[true, false, null]",
    [
        (0, 1, 1, "list of 3", "[true, false, null]"),
        (1, 1, 2, "bool true", "true"),
        (7, 1, 8, "bool false", "false"),
        (14, 1, 15, "null", "null"),
    ]
);
expr_spans!(
    expr_string_interp,
    r#""a ${b} c${d.e}""#,
    [
        (
            0,
            1,
            1,
            "str [\"a \", ${}, \" c\", ${}]",
            "\"a ${b} c${d.e}\""
        ),
        (5, 1, 6, "ident b", "b"),
        (11, 1, 12, "field .e", "d.e"),
        (11, 1, 12, "ident d", "d"),
    ]
);
expr_spans!(
    expr_string_escapes,
    r#""\n\t\r\0\\\"\$${x}""#,
    [
        (
            0,
            1,
            1,
            "str [\"\\n\\t\\r\\0\\\\\\\"$\", ${}]",
            "\"\\n\\t\\r\\0\\\\\\\"\\$${x}\""
        ),
        (17, 1, 18, "ident x", "x"),
    ]
);
expr_spans!(
    expr_string_multiline,
    "\"a\nb\"",
    [(0, 1, 1, "str [\"a\\nb\"]", "\"a\nb\""),]
);
expr_spans!(
    expr_raw_string,
    r"'no ${interp} \n here'",
    [(
        0,
        1,
        1,
        "str [\"no ${interp} \\\\n here\"]",
        "'no ${interp} \\n here'"
    ),]
);
expr_spans!(
    expr_list_trailing_comma,
    "[1, [2], ]",
    [
        (0, 1, 1, "list of 2", "[1, [2], ]"),
        (1, 1, 2, "int 1", "1"),
        (4, 1, 5, "list of 1", "[2]"),
        (5, 1, 6, "int 2", "2"),
    ]
);
expr_spans!(
    expr_map,
    r#"{a = 1, "b c": 2, 'd' = [3]}"#,
    [
        (0, 1, 1, "map {a, b c, d}", "{a = 1, \"b c\": 2, 'd' = [3]}"),
        (1, 1, 2, "key a", "a"),
        (5, 1, 6, "int 1", "1"),
        (8, 1, 9, "key b c", "\"b c\""),
        (15, 1, 16, "int 2", "2"),
        (18, 1, 19, "key d", "'d'"),
        (24, 1, 25, "list of 1", "[3]"),
        (25, 1, 26, "int 3", "3"),
    ]
);
expr_spans!(
    expr_empty_collections,
    "[[], {}]",
    [
        (0, 1, 1, "list of 2", "[[], {}]"),
        (1, 1, 2, "list of 0", "[]"),
        (5, 1, 6, "map {}", "{}"),
    ]
);
expr_spans!(
    expr_field_index,
    r#"steps["a"].outputs.id[0]"#,
    [
        (0, 1, 1, "index", "steps[\"a\"].outputs.id[0]"),
        (0, 1, 1, "field .id", "steps[\"a\"].outputs.id"),
        (0, 1, 1, "field .outputs", "steps[\"a\"].outputs"),
        (0, 1, 1, "index", "steps[\"a\"]"),
        (0, 1, 1, "ident steps", "steps"),
        (6, 1, 7, "str [\"a\"]", "\"a\""),
        (22, 1, 23, "int 0", "0"),
    ]
);
expr_spans!(
    expr_coalesce,
    "a ?? b ?? \"c\"",
    [
        (0, 1, 1, "binary ??", "a ?? b ?? \"c\""),
        (0, 1, 1, "binary ??", "a ?? b"),
        (0, 1, 1, "ident a", "a"),
        (5, 1, 6, "ident b", "b"),
        (10, 1, 11, "str [\"c\"]", "\"c\""),
    ]
);
expr_spans!(
    expr_arithmetic_precedence,
    "1 + 2 * 3 - 4 / 5 % 6",
    [
        (0, 1, 1, "binary -", "1 + 2 * 3 - 4 / 5 % 6"),
        (0, 1, 1, "binary +", "1 + 2 * 3"),
        (0, 1, 1, "int 1", "1"),
        (4, 1, 5, "binary *", "2 * 3"),
        (4, 1, 5, "int 2", "2"),
        (8, 1, 9, "int 3", "3"),
        (12, 1, 13, "binary %", "4 / 5 % 6"),
        (12, 1, 13, "binary /", "4 / 5"),
        (12, 1, 13, "int 4", "4"),
        (16, 1, 17, "int 5", "5"),
        (20, 1, 21, "int 6", "6"),
    ]
);
expr_spans!(
    expr_parens,
    "(1 + 2) * 3",
    [
        (0, 1, 1, "binary *", "(1 + 2) * 3"),
        (0, 1, 1, "binary +", "(1 + 2)"),
        (1, 1, 2, "int 1", "1"),
        (5, 1, 6, "int 2", "2"),
        (10, 1, 11, "int 3", "3"),
    ]
);
expr_spans!(
    expr_comparisons,
    "[a == b, a != b, a < b, a <= b, a > b, a >= b]",
    [
        (
            0,
            1,
            1,
            "list of 6",
            "[a == b, a != b, a < b, a <= b, a > b, a >= b]"
        ),
        (1, 1, 2, "binary ==", "a == b"),
        (1, 1, 2, "ident a", "a"),
        (6, 1, 7, "ident b", "b"),
        (9, 1, 10, "binary !=", "a != b"),
        (9, 1, 10, "ident a", "a"),
        (14, 1, 15, "ident b", "b"),
        (17, 1, 18, "binary <", "a < b"),
        (17, 1, 18, "ident a", "a"),
        (21, 1, 22, "ident b", "b"),
        (24, 1, 25, "binary <=", "a <= b"),
        (24, 1, 25, "ident a", "a"),
        (29, 1, 30, "ident b", "b"),
        (32, 1, 33, "binary >", "a > b"),
        (32, 1, 33, "ident a", "a"),
        (36, 1, 37, "ident b", "b"),
        (39, 1, 40, "binary >=", "a >= b"),
        (39, 1, 40, "ident a", "a"),
        (44, 1, 45, "ident b", "b"),
    ]
);
expr_spans!(
    expr_regex,
    r#"git.tag =~ "^v" && b !~ 'x'"#,
    [
        (0, 1, 1, "binary &&", "git.tag =~ \"^v\" && b !~ 'x'"),
        (0, 1, 1, "binary =~", "git.tag =~ \"^v\""),
        (0, 1, 1, "field .tag", "git.tag"),
        (0, 1, 1, "ident git", "git"),
        (11, 1, 12, "str [\"^v\"]", "\"^v\""),
        (19, 1, 20, "binary !~", "b !~ 'x'"),
        (19, 1, 20, "ident b", "b"),
        (24, 1, 25, "str [\"x\"]", "'x'"),
    ]
);
expr_spans!(
    expr_logic_precedence,
    "a || b && !c",
    [
        (0, 1, 1, "binary ||", "a || b && !c"),
        (0, 1, 1, "ident a", "a"),
        (5, 1, 6, "binary &&", "b && !c"),
        (5, 1, 6, "ident b", "b"),
        (10, 1, 11, "unary Not", "!c"),
        (11, 1, 12, "ident c", "c"),
    ]
);
expr_spans!(
    expr_unary_chain,
    "!!-x",
    [
        (0, 1, 1, "unary Not", "!!-x"),
        (1, 1, 2, "unary Not", "!-x"),
        (2, 1, 3, "unary Neg", "-x"),
        (3, 1, 4, "ident x", "x"),
    ]
);
expr_spans!(
    expr_calls,
    r#"[now(), env("HOME"), contains(xs, 1,), default(a, b)]"#,
    [
        (
            0,
            1,
            1,
            "list of 4",
            "[now(), env(\"HOME\"), contains(xs, 1,), default(a, b)]"
        ),
        (1, 1, 2, "call now/0", "now()"),
        (8, 1, 9, "call env/1", "env(\"HOME\")"),
        (12, 1, 13, "str [\"HOME\"]", "\"HOME\""),
        (21, 1, 22, "call contains/2", "contains(xs, 1,)"),
        (30, 1, 31, "ident xs", "xs"),
        (34, 1, 35, "int 1", "1"),
        (39, 1, 40, "call default/2", "default(a, b)"),
        (47, 1, 48, "ident a", "a"),
        (50, 1, 51, "ident b", "b"),
    ]
);
spans!(
    trailing_comment_not_in_span,
    "pipeline p {\n  description = \"x\" # note\n  stage s { needs = [a] } # after\n}",
    [
        (
            0,
            1,
            1,
            "pipeline p",
            "pipeline p {\n  description = \"x\" # note\n  stage s { needs = [a] } # after\n}"
        ),
        (9, 1, 10, "name", "p"),
        (15, 2, 3, "attr description", "description = \"x\""),
        (29, 2, 17, "str [\"x\"]", "\"x\""),
        (42, 3, 3, "stage s", "stage s { needs = [a] }"),
        (48, 3, 9, "name", "s"),
        (52, 3, 13, "attr needs", "needs = [a]"),
        (60, 3, 21, "list of 1", "[a]"),
        (61, 3, 22, "ident a", "a"),
    ]
);

// ---------------------------------------------------------- syntax errors
error! {
    name: error_colon_attribute,
    input: "pipeline p {\n  stage s {\n    step a { run: \"x\" }\n  }\n}",
    offset: 41,
    line: 3,
    column: 17,
    width: 1,
    message: "expected `{` or a name, found `:`",
}

error! {
    name: error_semicolon,
    input: "pipeline p {\n  stage s { step a { run = \"x\"; } }\n}",
    offset: 43,
    line: 2,
    column: 31,
    width: 1,
    message: "expected `.` or `[`, an operator or a name, found `;`",
}

error! {
    name: error_literal_as_name,
    input: "pipeline true {}",
    offset: 9,
    line: 1,
    column: 10,
    width: 4,
    message: "expected a name, found `true`",
}

error! {
    name: error_garbage_at_top,
    input: "pipeline p {}\nstage s {}",
    offset: 14,
    line: 2,
    column: 1,
    width: 5,
    message: "expected end of file, `import`, `pipeline` or `template`, found `stage`",
}

error! {
    name: error_missing_value,
    input: "pipeline p {\n  param x: int =\n}",
    offset: 30,
    line: 3,
    column: 1,
    width: 1,
    message: "expected an expression, found `}`",
}

error! {
    name: error_unknown_type,
    input: "pipeline p { param x: integer }",
    offset: 22,
    line: 1,
    column: 23,
    width: 7,
    message: "expected a type, found `integer`",
}

error! {
    name: error_unclosed_brace,
    input: "pipeline p {\n  stage s {\n",
    offset: 23,
    line: 2,
    column: 11,
    width: 1,
    message: "unclosed `{` at end of file",
}

error! {
    name: error_unterminated_string,
    input: "pipeline p { description = \"abc }",
    offset: 27,
    line: 1,
    column: 28,
    width: 1,
    message: "unterminated string at end of file",
}

error! {
    name: error_unknown_escape,
    input: "pipeline p { description = \"a\\qb\" }",
    offset: 29,
    line: 1,
    column: 30,
    width: 2,
    message: "unknown escape `\\q`",
}

error! {
    name: error_int_out_of_range,
    input: "pipeline p { n = 99999999999999999999 }",
    offset: 17,
    line: 1,
    column: 18,
    width: 20,
    message: "number `99999999999999999999` is out of range",
}

error! {
    name: error_interpolated_import,
    input: "import \"std/${x}\"",
    offset: 7,
    line: 1,
    column: 8,
    width: 10,
    message: "an import path cannot interpolate",
}

error! {
    name: error_interpolated_map_key,
    input: "pipeline p { m = { \"${k}\" = 1 } }",
    offset: 19,
    line: 1,
    column: 20,
    width: 6,
    message: "a map key cannot interpolate",
}

error! {
    name: error_two_comparisons,
    input: "pipeline p { w = a < b < c }",
    offset: 23,
    line: 1,
    column: 24,
    width: 1,
    message: "expected `.` or `[`, an operator, a name, `param`, `env`, `stage`, `on` or `assert`, found `<`",
}

error! {
    name: error_lone_keyword,
    input: "import",
    offset: 6,
    line: 1,
    column: 7,
    width: 0,
    message: "expected a string, found end of file",
}

#[test]
fn syntax_help_for_colon_and_semicolon() {
    for (src, help) in [
        (
            "pipeline p { stage s { step a { run: \"x\" } } }",
            "attributes are written `key = value`",
        ),
        (
            "pipeline p { stage s { step a { run = \"x\"; } } }",
            "pipe needs no semicolons: separate entries with newlines or commas",
        ),
        (
            "pipeline null {}",
            "`null` is a literal and cannot be used as a name",
        ),
    ] {
        let d = pipe_lang::parser::parse(FileId(0), src).expect_err(src);
        assert_eq!(d[0].help.as_deref(), Some(help), "{src}");
    }
}
