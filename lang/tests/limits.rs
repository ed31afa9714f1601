//! Hostile input: deep nesting, long operator chains, huge fan-out and
//! oversize files end in a diagnostic, never a panic or a stack overflow.
//! Nothing here asserts timing; the fan-out check's speed is measured by hand.

use crate::common::check;
use pipe_lang::parser::{parse, MAX_EXPR_DEPTH, MAX_FILE_BYTES, MAX_NESTING};
use pipe_lang::FileId;

const N: usize = 100_000;

/// The codes and messages `check` reports for `src`.
fn codes(src: &str) -> Vec<(&'static str, String)> {
    let (_, diags) = check(src);
    diags.into_iter().map(|d| (d.code, d.message)).collect()
}

fn nesting_error() -> (&'static str, String) {
    (
        "pipe::nesting-too-deep",
        format!(
            "nesting too deep: more than {MAX_NESTING} levels of brackets, braces or interpolations"
        ),
    )
}

fn expression_error() -> (&'static str, String) {
    (
        "pipe::nesting-too-deep",
        format!("expression too deep: more than {MAX_EXPR_DEPTH} nested operations"),
    )
}

#[test]
fn hundred_thousand_brackets() {
    for open in ["[", "(", "{"] {
        let src = format!("pipeline p {{ x = {} }}", open.repeat(N));
        assert_eq!(codes(&src), [nesting_error()], "{open}");
        // The error points at the first bracket one level too deep.
        let d = parse(FileId(0), &src).expect_err("too deep");
        let first = "pipeline p { x = ".len();
        assert_eq!(d[0].span.start as usize, first + MAX_NESTING - 2);
    }
}

#[test]
fn hundred_thousand_balanced_brackets() {
    let src = format!("pipeline p {{ x = {}{} }}", "[".repeat(N), "]".repeat(N));
    assert_eq!(codes(&src), [nesting_error()]);
}

#[test]
fn nested_interpolations() {
    let src = format!(
        "pipeline p {{ x = {}1{} }}",
        "\"${".repeat(N),
        "}\"".repeat(N)
    );
    assert_eq!(codes(&src), [nesting_error()]);
}

#[test]
fn nesting_below_the_limit_parses() {
    // The pipeline and the stage take two levels; the list fills the rest.
    let depth = MAX_NESTING - 2;
    let src = format!(
        "pipeline p {{ param x: any = {}{}\n stage s {{ step a {{ run = \"a\" }} }} }}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert_eq!(codes(&src), []);
}

#[test]
fn brackets_in_strings_and_comments_do_not_count() {
    let src = format!(
        "# {}\npipeline p {{ stage s {{ step a {{ run = \"{}\", description = '{}' }} }} }}",
        "[".repeat(N),
        "(".repeat(N),
        "{".repeat(N)
    );
    assert_eq!(codes(&src), []);
}

#[test]
fn hundred_thousand_term_sum() {
    let src = format!("pipeline p {{ x = a{} }}", " + a".repeat(N - 1));
    assert_eq!(codes(&src), [expression_error()]);
}

#[test]
fn sum_at_the_depth_limit_parses() {
    let src = format!(
        "pipeline p {{ param x: int = 1{}\n stage s {{ step a {{ run = \"a\" }} }} }}",
        " + 1".repeat(MAX_EXPR_DEPTH - 1)
    );
    assert_eq!(codes(&src), []);
}

#[test]
fn hundred_thousand_prefix_operators() {
    for op in ["!", "-"] {
        let src = format!("pipeline p {{ x = {}a }}", op.repeat(N));
        assert_eq!(codes(&src), [expression_error()], "{op}");
    }
}

#[test]
fn ten_thousand_fields_and_indexes() {
    let src = format!("pipeline p {{ x = a{} }}", ".b[0]".repeat(10_000));
    assert_eq!(codes(&src), [expression_error()]);
}

#[test]
fn ten_thousand_list_items_are_fine() {
    // Wide is not deep: only depth is limited. (A debug build parses about
    // 20,000 items a second, so the test stays at 10,000.)
    let src = format!(
        "pipeline p {{ param x: list<int> = [{}]\n stage s {{ step a {{ run = \"a\" }} }} }}",
        "1, ".repeat(10_000)
    );
    assert_eq!(codes(&src), []);
}

#[test]
fn fan_out_over_the_cap_names_the_loop() {
    let src = "pipeline p {\n  stage s {\n    for a in range(1000) {\n      for b in range(100) {\n        step \"x-${a}-${b}\" { run = \"x\" }\n      }\n    }\n  }\n}";
    let start = std::time::Instant::now();
    let (_, diags) = check(src);
    eprintln!("fan-out check of 100,000 steps: {:?}", start.elapsed());
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let d = &diags[0];
    assert_eq!(d.code, "pipe::fan-out");
    assert_eq!(&src[d.span.range()], "for a in range(1000)");
    assert_eq!(d.label, "`for a`: 1000 × 100 steps");
}

#[test]
fn fan_out_over_the_cap_in_a_later_item() {
    // The first item's inner list is short; the second one is what overflows.
    let src = "pipeline p {\n  stage s {\n    for xs in [[1], range(100000)] {\n      for x in xs {\n        step \"x-${x}\" { run = \"x\" }\n      }\n    }\n  }\n}";
    let (_, diags) = check(src);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].code, "pipe::fan-out");
    assert_eq!(&src[diags[0].span.range()], "for x in xs");
}

#[test]
fn oversize_file_is_refused() {
    let src = format!(
        "pipeline p {{ stage s {{ step a {{ run = \"a\" }} }} }}\n#{}",
        "x".repeat(MAX_FILE_BYTES)
    );
    let (_, diags) = check(&src);
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].code, "pipe::file-too-large");
    assert_eq!(
        diags[0].message,
        format!("file is {} bytes; the limit is {MAX_FILE_BYTES}", src.len())
    );
}

#[test]
fn interpolations_count_towards_expression_depth() {
    // 25 nested interpolations, each a string around six `!`: 175 levels,
    // within the bracket limit but over the expression limit.
    let src = format!(
        "pipeline p {{ x = {}1{} }}",
        "\"${!!!!!!".repeat(25),
        "}\"".repeat(25)
    );
    assert_eq!(codes(&src), [expression_error()]);
}

#[test]
fn deepest_allowed_expression_checks_on_a_small_stack() {
    // Folding recurses once per level: the deepest expression the parser
    // accepts must check on a 2 MiB thread (a test thread, a tokio worker)
    // even in a debug build.
    let src = format!(
        "pipeline p {{ param x: int = 1{}\n stage s {{ step a {{ run = \"a ${{x}}\" }} }} }}",
        " + 1".repeat(MAX_EXPR_DEPTH - 1)
    );
    let diags = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || check(&src).1)
        .expect("spawn")
        .join()
        .expect("no stack overflow");
    assert_eq!(diags, []);
}
