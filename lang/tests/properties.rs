//! Property tests: no input makes `parse` + `check` panic (garbage, token
//! soup, and mutations of a valid pipeline), and generated valid pipelines
//! lower without a diagnostic into the plan their shape implies. Case counts
//! are kept small so the suite stays fast in a debug build; `fuzz/` runs the
//! same no-panic property for as long as one likes.

use proptest::prelude::*;

use crate::common::check;
use pipe_lang::critical::schedule_from_estimates;
use pipe_lang::{Context, FileId};

/// A valid pipeline using most of the language, for mutation.
const SAMPLE: &str = r#"import "std/docker"
import "std/http"

## Says hello.
template hello(who: string = "world", times: int = 1) {
  run = "echo hello ${who} ${times}"
}

pipeline sample {
  param services: list<string> = ["api", "worker"]
  param version: string = git.tag ?? "0.0.0"
  param limits: map<int> = { cpu = 2, mem = 512 }

  env prod {
    require = ["URL"]
    secrets = ["TOKEN"]
    allow_if = git.tag =~ "^v"
  }

  stage build {
    for svc in services {
      step "image-${svc}" = docker.build {
        dockerfile = "${svc}.Dockerfile"
        tags = ["v${version}", 'raw ${x}']
        estimate = 2m
      }
    }
    step greet = hello { who = "ci", times = len(services) * 2 + 1 }
  }

  stage ship {
    needs = [build]
    env = prod
    when = !(version == "") && true || false
    gate ok = approval { timeout = 1h, message = "ship ${version}?" }
    for k, v in limits {
      step "check-${k}" { run = "check ${k} ${v}", needs = [ok], timeout = 30s }
    }
    step push {
      run = "push"
      needs = [ok]
      env = { URL = env.URL, T = secrets.TOKEN }
      retry { attempts = 3, backoff = exponential(1s, 10s) }
      estimate = 45s
    }
    step probe = http.check { url = "${env.URL}/health", needs = [push] }
  }

  stage chaos {
    needs = [build]
    chaos upstream {
      upstream = "http://127.0.0.1:1"
      fault latency { delay = 1s, rate = 0.5 }
    }
    step t { run = "test", env = { U = chaos.upstream.url } }
  }

  on failure {
    step alert { run = "alert ${run.failed_step}" }
  }
}
"#;

const TOKENS: &[&str] = &[
    "pipeline",
    "stage",
    "step",
    "gate",
    "chaos",
    "fault",
    "for",
    "in",
    "on",
    "failure",
    "import",
    "template",
    "param",
    "env",
    "needs",
    "run",
    "when",
    "estimate",
    "retry",
    "approval",
    "docker.build",
    "x",
    "y",
    "svc",
    "a1",
    "_",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "=",
    ",",
    ":",
    ".",
    "\"",
    "\"${",
    "'",
    "#",
    "##",
    "\n",
    " ",
    "1",
    "-1",
    "1.5",
    "5m",
    "500ms",
    "24h",
    "true",
    "null",
    "==",
    "!=",
    "<",
    "=~",
    "!~",
    "&&",
    "||",
    "!",
    "-",
    "+",
    "*",
    "/",
    "%",
    "??",
    "int",
    "string",
    "list<",
    "map<",
    ">",
    "any",
    "duration",
    "\\",
    "\\n",
    "${",
    "range(",
    "len(",
    "now()",
    "steps.",
    "secrets.",
    "git.tag",
    "é",
    "\u{0}",
];

/// Parses and checks; the property is that this returns at all.
fn parse_and_check(src: &str) {
    let _ = pipe_lang::parser::parse(FileId(0), src);
    let _ = pipe_lang::parser::parse_expr(FileId(0), src);
    let (ws, diags) = check(src);
    // Every diagnostic points inside its file.
    for d in &diags {
        let len = ws.sources.get(d.span.file).text.len();
        assert!(
            d.span.start <= d.span.end && d.span.end as usize <= len,
            "{d:?}"
        );
    }
}

#[test]
fn sample_is_valid() {
    let (_, diags) = check(SAMPLE);
    assert_eq!(diags, []);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PIPE_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256), ..ProptestConfig::default() })]

    #[test]
    fn garbage_never_panics(src in "\\PC{0,200}") {
        parse_and_check(&src);
    }

    #[test]
    fn token_soup_never_panics(tokens in proptest::collection::vec(proptest::sample::select(TOKENS), 0..80)) {
        parse_and_check(&tokens.concat());
    }

    #[test]
    fn mutated_sample_never_panics(
        edits in proptest::collection::vec(
            (0..SAMPLE.len(), 0..8usize, proptest::sample::select(TOKENS)),
            1..4,
        )
    ) {
        // Each edit deletes up to 7 bytes at a position and inserts a token.
        let mut src = SAMPLE.to_string();
        for (at, del, token) in edits {
            let mut at = at.min(src.len());
            while !src.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + del).min(src.len());
            while !src.is_char_boundary(end) {
                end += 1;
            }
            src.replace_range(at..end, token);
        }
        parse_and_check(&src);
    }
}

/// The shape of a generated pipeline: stages of steps, each step needing
/// some earlier steps of its stage, each stage maybe needing the one before,
/// and maybe a loop over services.
#[derive(Clone, Debug)]
struct Shape {
    stages: Vec<StageShape>,
}

#[derive(Clone, Debug)]
struct StageShape {
    needs_previous: bool,
    /// Per step: its estimate in seconds and which earlier steps it needs.
    steps: Vec<(u64, Vec<prop::sample::Index>)>,
    loop_over: usize,
}

fn shape() -> impl Strategy<Value = Shape> {
    let step = (
        1..600u64,
        proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
    );
    let stage = (
        any::<bool>(),
        proptest::collection::vec(step, 1..6),
        0..4usize,
    )
        .prop_map(|(needs_previous, steps, loop_over)| StageShape {
            needs_previous,
            steps,
            loop_over,
        });
    proptest::collection::vec(stage, 1..5).prop_map(|stages| Shape { stages })
}

/// Writes the source of a shape and returns it with the number of steps it
/// should lower to.
fn source(shape: &Shape) -> (String, usize) {
    let mut src = String::from("pipeline gen {\n  param count: int = 3\n");
    let mut total = 0;
    for (si, st) in shape.stages.iter().enumerate() {
        src.push_str(&format!("  stage s{si} {{\n"));
        if st.needs_previous && si > 0 {
            src.push_str(&format!("    needs = [s{}]\n", si - 1));
        }
        for (i, (secs, needs)) in st.steps.iter().enumerate() {
            let mut names: Vec<String> = needs
                .iter()
                .filter(|_| i > 0)
                .map(|n| format!("t{}", n.index(i)))
                .collect();
            names.sort();
            names.dedup();
            src.push_str(&format!(
                "    step t{i} {{ run = \"echo ${{count}} {i}\", estimate = {secs}s, needs = [{}] }}\n",
                names.join(", ")
            ));
        }
        total += st.steps.len();
        if st.loop_over > 0 {
            let items: Vec<String> = (0..st.loop_over).map(|k| format!("\"v{k}\"")).collect();
            src.push_str(&format!(
                "    for v in [{}] {{\n      step \"l-${{v}}\" {{ run = \"echo ${{v}}\", needs = [t0] }}\n    }}\n",
                items.join(", ")
            ));
            total += st.loop_over;
        }
        src.push_str("  }\n");
    }
    src.push_str("}\n");
    (src, total)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn generated_pipelines_lower_cleanly(shape in shape()) {
        let (src, total) = source(&shape);
        let (ws, diags) = check(&src);
        prop_assert!(diags.is_empty(), "{src}\n{diags:#?}");
        let (m, pl) = ws.pipelines().next().expect("pipeline");
        let (plan, diags) = pipe_lang::lower(&ws, m, pl, &Context::offline());
        prop_assert!(diags.is_empty(), "{diags:#?}");
        let plan = plan.expect("plan");
        prop_assert_eq!(plan.steps().len(), total);
        // The schedule is consistent: nobody starts before what it needs ends,
        // and the run is at least as long as its longest step.
        let s = schedule_from_estimates(&plan);
        for (i, step) in plan.steps().iter().enumerate() {
            for &j in &step.needs {
                prop_assert!(s.steps[i].earliest_start_ms >= s.steps[j].earliest_finish_ms);
            }
            prop_assert!(s.steps[i].latest_finish_ms <= s.length_ms);
        }
        let longest = s.steps.iter().map(|t| t.duration_ms).max().unwrap_or(0);
        prop_assert!(s.length_ms >= longest);
        prop_assert!(!s.path.is_empty());
    }
}
