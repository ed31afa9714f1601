//! Rendered diagnostics, as `pipe check` prints them (miette's graphical
//! handler, unicode without colour, 100 columns), snapshot-tested with insta.
//! Review a changed snapshot by reading it: it is what a user sees.

use miette::{GraphicalReportHandler, GraphicalTheme};
use pipe_lang::workspace::NoLoader;
use pipe_lang::{Context, Workspace};

/// Checks the given files and renders every diagnostic, in order.
fn render_files(files: &[(&str, &str)]) -> String {
    let ws = Workspace::load(
        files
            .iter()
            .map(|(n, t)| ((*n).to_string(), (*t).to_string()))
            .collect(),
        &mut NoLoader,
    );
    let diags = pipe_lang::check(&ws, &Context::offline());
    assert!(!diags.is_empty(), "expected diagnostics");
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for d in &diags {
        handler
            .render_report(&mut out, &d.with_sources(&ws.sources))
            .expect("render");
        out.push('\n');
    }
    out
}

fn render(src: &str) -> String {
    render_files(&[("release.pipe", src)])
}

macro_rules! snapshot {
    ($name:ident, $src:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(stringify!($name), render($src), $src);
        }
    };
}

snapshot!(
    syntax_colon_instead_of_equals,
    "pipeline release {\n  stage build {\n    step api {\n      run: \"make api\"\n    }\n  }\n}\n"
);

snapshot!(
    syntax_unclosed_brace,
    "pipeline release {\n  stage build {\n    step api { run = \"make api\" }\n"
);

snapshot!(
    unknown_step_did_you_mean,
    "pipeline release {\n  stage build {\n    step compile { run = \"make\" }\n    step test { run = \"make test\", needs = [compiel] }\n  }\n}\n"
);

snapshot!(
    duplicate_step,
    "pipeline release {\n  stage build {\n    step api { run = \"make api\" }\n    step api { run = \"make worker\" }\n  }\n}\n"
);

snapshot!(
    step_cycle,
    "pipeline release {\n  stage build {\n    step a { run = \"a\", needs = [c] }\n    step b { run = \"b\", needs = [a] }\n    step c { run = \"c\", needs = [b] }\n  }\n}\n"
);

snapshot!(
    stage_cycle,
    "pipeline release {\n  stage build {\n    needs = [deploy]\n    step a { run = \"a\" }\n  }\n  stage deploy {\n    needs = [build]\n    step b { run = \"b\" }\n  }\n}\n"
);

snapshot!(
    template_argument_errors,
    "import \"std/docker\"\n\npipeline release {\n  stage build {\n    step api = docker.build {\n      dockerfile = 5\n      no_cahce = true\n    }\n    step worker = docker.build { context = \".\" }\n  }\n}\n"
);

snapshot!(
    unknown_output,
    "import \"std/docker\"\n\npipeline release {\n  stage build {\n    step api = docker.build { dockerfile = \"Dockerfile\" }\n    step show { run = \"echo ${steps.api.outputs.imageid}\" }\n  }\n}\n"
);

snapshot!(
    secret_in_command,
    "pipeline release {\n  stage deploy {\n    step push { run = \"curl -H 'Authorization: ${secrets.TOKEN}' https://x\" }\n  }\n}\n"
);

snapshot!(
    param_type_error,
    "pipeline release {\n  param replicas: int = \"three\"\n  param timeout: duration = 30\n  stage s { step a { run = \"a\" } }\n}\n"
);

snapshot!(
    fan_out_over_cap,
    "pipeline release {\n  stage test {\n    for a in range(1000) {\n      for b in range(100) {\n        step \"t-${a}-${b}\" { run = \"test ${a} ${b}\" }\n      }\n    }\n  }\n}\n"
);

snapshot!(
    empty_stage_and_never_runs,
    "pipeline release {\n  stage build { }\n  stage test {\n    step unit { run = \"make test\", when = 1 > 2 }\n    step lint { run = \"make lint\" }\n  }\n}\n"
);

snapshot!(
    unknown_attribute_and_env,
    "pipeline release {\n  env prod { }\n  stage deploy {\n    env = prdo\n    step up { run = \"deploy\", timout = 5m }\n  }\n}\n"
);

#[test]
fn nesting_too_deep() {
    let src = format!(
        "pipeline release {{\n  param x: any = {}\n}}\n",
        "[".repeat(70)
    );
    insta::assert_snapshot!("nesting_too_deep", render(&src));
}

#[test]
fn errors_in_two_files() {
    let a = "pipeline a {\n  stage s { step x { run = \"x\"; } }\n}\n";
    let b = "pipeline b {\n  stage s { step x { run = \"x\", needs = [y] } }\n}\n";
    insta::assert_snapshot!(
        "errors_in_two_files",
        render_files(&[("a.pipe", a), ("b.pipe", b)])
    );
}

snapshot!(
    unknown_handler_kind,
    "pipeline release {\n  stage build {\n    step api { run = \"make api\" }\n  }\n  on error {\n    step page { run = \"notify oncall\" }\n  }\n}\n"
);

snapshot!(
    gate_without_kind,
    "pipeline release {\n  stage prod {\n    gate sign_off { approvers = [\"alice\"] }\n    step deploy { run = \"make deploy\" }\n  }\n}\n"
);
