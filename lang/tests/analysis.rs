//! Analysis tests: one per kind of error `check` reports, each comparing
//! every diagnostic in full (code, offset, line, column, the text its
//! primary span covers, message, help).

use crate::common::{assert_diagnostics, check, found, load, lower_ok};
use pipe_lang::workspace::NoLoader;
use pipe_lang::{Context, Severity, Workspace};

macro_rules! analysis {
    ($name:ident, $src:expr, [$($row:expr),* $(,)?]) => {
        #[test]
        fn $name() {
            assert_diagnostics($src, &[$($row),*]);
        }
    };
}

analysis!(
    duplicate_param,
    "pipeline p {\n  param a: int = 1\n  param a: int = 2\n  stage s { step x { run = \"x\" } }\n}",
    [(
        "pipe::duplicate",
        40,
        3,
        9,
        "a",
        "param `a` is defined twice",
        None
    ),]
);

analysis!(
    duplicate_env,
    "pipeline p {\n  env prod { }\n  env prod { }\n  stage s { step x { run = \"x\" } }\n}",
    [(
        "pipe::duplicate",
        34,
        3,
        7,
        "prod",
        "env `prod` is defined twice",
        None
    ),]
);

analysis!(
    duplicate_stage,
    "pipeline p {\n  stage s { step x { run = \"x\" } }\n  stage s { step x { run = \"x\" } }\n}",
    [(
        "pipe::duplicate",
        56,
        3,
        9,
        "s",
        "stage `s` is defined twice",
        None
    ),]
);

analysis!(
    duplicate_step_in_stage,
    "pipeline p {\n  stage s {\n    step x { run = \"a\" }\n    step x { run = \"b\" }\n  }\n}",
    [(
        "pipe::duplicate",
        59,
        4,
        10,
        "x",
        "step `x` is defined twice in stage `s`",
        None
    ),]
);

analysis!(
    same_step_name_in_two_stages_is_allowed,
    "pipeline p {\n  stage s { step x { run = \"a\" } }\n  stage t { step x { run = \"b\" } }\n}",
    []
);

analysis!(
    duplicate_step_from_loop,
    "pipeline p {\n  stage s {\n    for v in [\"a\", \"a\"] {\n      step \"x-${v}\" { run = \"a\" }\n    }\n  }\n}",
    [
        ("pipe::duplicate", 62, 4, 12, "\"x-${v}\"", "step `x-a` is defined twice in stage `s`", Some("inside a `for`, interpolate the loop variable into the name: `step \"build-${svc}\"`")),
    ]
);

analysis!(
    duplicate_template,
    "template t(a: string) { run = \"a\" }\ntemplate t(b: string) { run = \"b\" }\npipeline p { stage s { step x { run = \"x\" } } }",
    [
        ("pipe::duplicate", 45, 2, 10, "t", "template `t` is defined twice", None),
    ]
);

analysis!(
    duplicate_template_param,
    "template t(a: string, a: int) { run = \"a\" }\npipeline p { stage s { step x { run = \"x\" } } }",
    [
        ("pipe::duplicate", 22, 1, 23, "a", "parameter `a` is declared twice", None),
    ]
);

analysis!(
    duplicate_pipeline,
    "pipeline p { stage s { step x { run = \"x\" } } }\npipeline p { stage s { step x { run = \"x\" } } }",
    [
        ("pipe::duplicate", 57, 2, 10, "p", "pipeline `p` is defined twice", None),
    ]
);

analysis!(
    duplicate_import,
    "import \"std/docker\"\nimport \"std/docker\"\npipeline p { stage s { step x { run = \"x\" } } }",
    [
        ("pipe::duplicate", 20, 2, 1, "import \"std/docker\"", "`docker` is imported twice", Some("give one of them another name: `import \"...\" as other`")),
    ]
);

analysis!(
    unknown_step_did_you_mean,
    "pipeline p {\n  stage s {\n    step build { run = \"b\" }\n    step test { run = \"t\", needs = [biuld] }\n  }\n}",
    [
        ("pipe::unknown-step", 90, 4, 37, "biuld", "unknown step `biuld`", Some("did you mean `build`?")),
    ]
);

analysis!(
    unknown_step_no_suggestion,
    "pipeline p {\n  stage s {\n    step build { run = \"b\" }\n    step test { run = \"t\", needs = [zzzzzz] }\n  }\n}",
    [
        ("pipe::unknown-step", 90, 4, 37, "zzzzzz", "unknown step `zzzzzz`", None),
    ]
);

analysis!(
    unknown_stage_did_you_mean,
    "pipeline p {\n  stage build { step b { run = \"b\" } }\n  stage test {\n    needs = [biuld]\n    step t { run = \"t\" }\n  }\n}",
    [
        ("pipe::unknown-stage", 80, 4, 14, "biuld", "unknown stage `biuld`", Some("did you mean `build`?")),
    ]
);

analysis!(
    unknown_param_reference,
    "pipeline p {\n  param version: string = \"1\"\n  stage s { step x { run = \"echo ${versoin}\" } }\n}",
    [
        ("pipe::eval", 78, 3, 36, "versoin", "unknown name `versoin`", Some("did you mean `version`?")),
    ]
);

analysis!(
    unknown_env,
    "pipeline p {\n  env prod { }\n  stage s {\n    env = prdo\n    step x { run = \"x\" }\n  }\n}",
    [(
        "pipe::unknown-env",
        50,
        4,
        11,
        "prdo",
        "unknown env `prdo`",
        Some("did you mean `prod`?")
    ),]
);

analysis!(
    unknown_template,
    "template build(f: string) { run = \"make ${f}\" }\npipeline p {\n  stage s { step x = biuld { f = \"a\" } }\n}",
    [
        ("pipe::unknown-template", 82, 3, 22, "biuld", "unknown template `biuld`", Some("did you mean `build`?")),
    ]
);

analysis!(
    unknown_template_in_import,
    "import \"std/docker\"\npipeline p {\n  stage s { step x = docker.biuld { dockerfile = \"D\" } }\n}",
    [
        ("pipe::unknown-template", 54, 3, 22, "docker.biuld", "unknown template `docker.biuld`", Some("did you mean `docker.build`?")),
    ]
);

analysis!(
    unknown_import_namespace,
    "import \"std/docker\"\npipeline p {\n  stage s { step x = dokcer.build { dockerfile = \"D\" } }\n}",
    [
        ("pipe::unknown-import", 54, 3, 22, "dokcer", "`dokcer` is not imported", Some("did you mean `docker`?")),
    ]
);

analysis!(
    unknown_std_module,
    "import \"std/dokcer\"\npipeline p { stage s { step x { run = \"x\" } } }",
    [(
        "pipe::import",
        7,
        1,
        8,
        "\"std/dokcer\"",
        "no standard module `std/dokcer`",
        Some("did you mean `std/docker`?")
    ),]
);

analysis!(
    unknown_output,
    "import \"std/docker\"\npipeline p {\n  stage s {\n    step img = docker.build { dockerfile = \"D\" }\n    step use { run = \"echo ${steps.img.outputs.imag_id}\" }\n  }\n}",
    [
        ("pipe::unknown-output", 123, 5, 30, "steps.img.outputs.imag_id", "step `img` has no output `imag_id`", Some("did you mean `image_id`?")),
    ]
);

analysis!(
    type_error_param_default,
    "pipeline p {\n  param n: int = \"three\"\n  param l: list<string> = [1]\n  stage s { step x { run = \"x\" } }\n}",
    [
        ("pipe::type", 30, 2, 18, "\"three\"", "param `n` expects int, found string", None),
        ("pipe::type", 64, 3, 27, "[1]", "param `l` expects list<string>, found list<int>", None),
    ]
);

analysis!(
    type_error_template_argument,
    "import \"std/docker\"\npipeline p {\n  stage s { step x = docker.build { dockerfile = 5, no_cache = \"yes\" } }\n}",
    [
        ("pipe::type", 82, 3, 50, "5", "`dockerfile` of `docker.build` expects string, found int", None),
        ("pipe::type", 96, 3, 64, "\"yes\"", "`no_cache` of `docker.build` expects bool, found string", None),
    ]
);

analysis!(
    missing_template_argument,
    "import \"std/docker\"\npipeline p {\n  stage s { step x = docker.build { context = \".\" } }\n}",
    [
        ("pipe::missing-argument", 50, 3, 18, "x", "missing argument `dockerfile` for `docker.build`", Some("add `dockerfile = <string>` to the step")),
    ]
);

analysis!(
    unknown_template_argument,
    "import \"std/docker\"\npipeline p {\n  stage s { step x = docker.build { dockerfile = \"D\", dockerfil = \"E\" } }\n}",
    [
        ("pipe::unknown-argument", 87, 3, 55, "dockerfil", "`docker.build` has no parameter `dockerfil`", Some("did you mean `dockerfile`?")),
    ]
);

analysis!(
    cycle_stages,
    "pipeline p {\n  stage a {\n    needs = [b]\n    step x { run = \"x\" }\n  }\n  stage b {\n    needs = [a]\n    step y { run = \"y\" }\n  }\n}",
    [
        ("pipe::cycle", 38, 3, 14, "b", "dependency cycle: stage `a` → stage `b` → stage `a`", Some("remove one of these `needs` to break the cycle")),
    ]
);

analysis!(
    cycle_steps,
    "pipeline p {\n  stage s {\n    step x { run = \"x\", needs = [z] }\n    step y { run = \"y\", needs = [x] }\n    step z { run = \"z\", needs = [y] }\n  }\n}",
    [
        ("pipe::cycle", 58, 3, 34, "z", "dependency cycle: `s.x` → `s.z` → `s.y` → `s.x`", Some("remove one of these `needs` to break the cycle")),
    ]
);

analysis!(
    cycle_self,
    "pipeline p {\n  stage s { step x { run = \"x\", needs = [x] } }\n}",
    [("pipe::cycle", 54, 2, 42, "x", "step `x` needs itself", None),]
);

analysis!(
    empty_stage,
    "pipeline p {\n  stage s { }\n  stage t { step x { run = \"x\" } }\n}",
    [(
        "pipe::empty-stage",
        21,
        2,
        9,
        "s",
        "stage `s` has no steps",
        Some("add a `step`, or remove the stage")
    ),]
);

analysis!(
    when_constant_false,
    "pipeline p {\n  stage s {\n    step x { run = \"x\", when = 1 > 2 }\n    step y { run = \"y\" }\n  }\n}",
    [
        ("pipe::never-runs", 56, 3, 32, "1 > 2", "step `x` never runs: its `when` is always false", Some("remove the step, or make the condition depend on params, git or step outputs")),
    ]
);

analysis!(
    secret_in_run,
    "pipeline p {\n  stage s { step x { run = \"curl -H ${secrets.TOKEN} x\" } }\n}",
    [
        ("pipe::secret-in-command", 51, 2, 39, "secrets.TOKEN", "a secret cannot be interpolated into a command", Some("pass it through the environment: `env = { TOKEN = secrets.TOKEN }` and write `\"$TOKEN\"` in the shell command")),
    ]
);

analysis!(
    unknown_attribute_step,
    "pipeline p {\n  stage s { step x { run = \"x\", colour = \"red\" } }\n}",
    [
        ("pipe::unknown-attribute", 45, 2, 33, "colour", "unknown attribute `colour` in a step", Some("a plain step takes: run, shell, needs, when, timeout, estimate, env, outputs, on_failure, cache, idempotent, concurrency, description; to pass `colour` to a template, write `step x = module.template { ... }`")),
    ]
);

analysis!(
    unknown_attribute_stage,
    "pipeline p {\n  stage s {\n    neds = [t]\n    step x { run = \"x\" }\n  }\n}",
    [(
        "pipe::unknown-attribute",
        29,
        3,
        5,
        "neds",
        "unknown attribute `neds` in a stage",
        Some("did you mean `needs`?")
    ),]
);

analysis!(
    unknown_handler_kind,
    "pipeline p {\n  on error { step x { run = \"x\" } }\n  stage s { step x { run = \"x\" } }\n}",
    [(
        "pipe::handler-kind",
        18,
        2,
        6,
        "error",
        "`error` is not a handler kind",
        Some("expected one of failure, success, always")
    ),]
);

analysis!(
    misspelt_handler_kind,
    "pipeline p {\n  on falure { }\n  stage s { step x { run = \"x\" } }\n}",
    [(
        "pipe::handler-kind",
        18,
        2,
        6,
        "falure",
        "`falure` is not a handler kind",
        Some("did you mean `failure`? expected one of failure, success, always")
    ),]
);

analysis!(
    handler_without_kind,
    "pipeline p {\n  on { }\n  stage s { step x { run = \"x\" } }\n}",
    [(
        "pipe::handler-kind",
        15,
        2,
        3,
        "on",
        "`on` needs a handler kind",
        Some("expected one of failure, success, always: `on failure { ... }`")
    ),]
);

analysis!(
    handler_in_a_stage,
    "pipeline p {\n  stage s {\n    step x { run = \"x\" }\n    on failure { }\n  }\n}",
    [(
        "pipe::misplaced",
        54,
        4,
        5,
        "on",
        "a handler cannot be declared in a stage",
        Some("declare `on failure|success|always { ... }` at the top of the pipeline")
    ),]
);

analysis!(
    gate_without_kind,
    "pipeline p {\n  stage s { gate g { } }\n}",
    [
        (
            "pipe::empty-stage",
            21,
            2,
            9,
            "s",
            "stage `s` has no steps",
            Some("add a `step`, or remove the stage")
        ),
        (
            "pipe::gate-kind",
            30,
            2,
            18,
            "g",
            "gate `g` needs a kind",
            Some("expected one of approval, policy: `gate g = approval { ... }`")
        ),
    ]
);

analysis!(
    gate_without_kind_in_a_loop_and_a_handler,
    "pipeline p {\n  stage s {\n    step x { run = \"x\" }\n    for i in [1] { gate g { } }\n  }\n  on failure { gate h { } }\n}",
    [
        (
            "pipe::gate-kind",
            74,
            4,
            25,
            "g",
            "gate `g` needs a kind",
            Some("expected one of approval, policy: `gate g = approval { ... }`")
        ),
        (
            "pipe::gate-kind",
            106,
            6,
            21,
            "h",
            "gate `h` needs a kind",
            Some("expected one of approval, policy: `gate h = approval { ... }`")
        ),
    ]
);

analysis!(
    gate_in_a_pipeline,
    "pipeline p {\n  gate g { }\n  stage s { step x { run = \"x\" } }\n}",
    [(
        "pipe::misplaced",
        15,
        2,
        3,
        "gate",
        "a gate cannot be declared in a pipeline",
        Some("a gate is a step of a stage: `stage release { gate g = approval { ... } }`")
    ),]
);

analysis!(
    gate_in_a_step,
    "pipeline p {\n  stage s {\n    step x {\n      run = \"x\"\n      gate g { }\n    }\n  }\n}",
    [(
        "pipe::misplaced",
        60,
        5,
        7,
        "gate",
        "a gate cannot be declared in a step",
        Some("a gate is a step of a stage: `stage release { gate g = approval { ... } }`")
    ),]
);

analysis!(
    empty_step,
    "pipeline p {\n  stage s { step x { timeout = 5s } }\n}",
    [
        ("pipe::empty-step", 30, 2, 18, "x", "step `x` has nothing to run", Some("give it `run = \"...\"`, or instantiate a template: `step build = docker.build { ... }`")),
    ]
);

analysis!(
    fan_out_over_cap,
    "pipeline p {\n  stage s {\n    for a in range(1000) {\n      for b in range(100) {\n        step \"x-${a}-${b}\" { run = \"x\" }\n      }\n    }\n  }\n}",
    [
        ("pipe::fan-out", 29, 3, 5, "for a in range(1000)", "this loop expands to 100000 steps; a pipeline may have at most 50000", Some("shrink the lists, or split the work across pipelines")),
    ]
);

analysis!(
    errors_are_sorted_and_all_reported,
    "pipeline p {\n  param n: int = \"x\"\n  stage s {\n    step a { run = \"a\", needs = [q] }\n    step b { run = \"b\", colour = 1 }\n  }\n  stage t { }\n}",
    [
        ("pipe::type", 30, 2, 18, "\"x\"", "param `n` expects int, found string", None),
        ("pipe::unknown-step", 79, 4, 34, "q", "unknown step `q`", None),
        ("pipe::unknown-attribute", 108, 5, 25, "colour", "unknown attribute `colour` in a step", Some("a plain step takes: run, shell, needs, when, timeout, estimate, env, outputs, on_failure, cache, idempotent, concurrency, description; to pass `colour` to a template, write `step b = module.template { ... }`")),
        ("pipe::empty-stage", 133, 7, 9, "t", "stage `t` has no steps", Some("add a `step`, or remove the stage")),
    ]
);

analysis!(
    import_not_available,
    "import \"lib/common.pipe\"\npipeline p {\n  stage s { step x { run = \"x\" } }\n}",
    [
        ("pipe::import", 7, 1, 8, "\"lib/common.pipe\"", "cannot import `lib/common.pipe`: only the standard library (`std/...`) can be imported here", None),
    ]
);

analysis!(
    ambiguous_step,
    "pipeline p {\n  stage a { step x { run = \"x\" } }\n  stage b { step x { run = \"x\" } }\n  stage c { step y { run = \"y\", needs = [x] } }\n}",
    [
        ("pipe::ambiguous-step", 124, 4, 42, "x", "step name `x` is ambiguous: `a.x` or `b.x`", Some("qualify it with its stage: `stage.step`, or `steps[\"stage.step\"]`")),
    ]
);

analysis!(
    main_step_needs_handler_step,
    "pipeline p {\n  stage s { step x { run = \"x\", needs = [alert] } }\n  on failure { step alert { run = \"a\" } }\n}",
    [
        ("pipe::needs", 54, 2, 42, "alert", "`alert` is a handler step; only other handler steps can need it", None),
    ]
);

analysis!(
    duplicate_handler,
    "pipeline p {\n  stage s { step x { run = \"x\" } }\n  on failure { step a { run = \"a\" } }\n  on failure { step b { run = \"b\" } }\n}",
    [
        ("pipe::duplicate", 91, 4, 6, "failure", "`on failure` is declared twice", None),
    ]
);

/// The secondary labels of the first diagnostic: (covered text, label).
fn labels(src: &str) -> Vec<(String, String)> {
    let (_, diags) = check(src);
    diags[0]
        .secondary
        .iter()
        .map(|(s, l)| (src[s.range()].to_string(), l.clone()))
        .collect()
}

#[test]
fn cycle_labels_every_edge() {
    let src = "pipeline p {\n  stage s {\n    step x { run = \"x\", needs = [z] }\n    step y { run = \"y\", needs = [x] }\n    step z { run = \"z\", needs = [y] }\n  }\n}";
    let (_, diags) = check(src);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let d = &diags[0];
    // The primary label is the first edge; the others follow the cycle.
    assert_eq!(
        (&src[d.span.range()], d.label.as_str()),
        ("z", "`s.x` needs `s.z`")
    );
    let offsets: Vec<usize> = d.secondary.iter().map(|(s, _)| s.start as usize).collect();
    assert_eq!(offsets, [134, 96]);
    assert_eq!(
        labels(src),
        [
            ("y".to_string(), "`s.z` needs `s.y`".to_string()),
            ("x".to_string(), "`s.y` needs `s.x`".to_string()),
        ]
    );
}

#[test]
fn stage_cycle_labels_every_edge() {
    let src = "pipeline p {\n  stage a { needs = [c], step x { run = \"x\" } }\n  stage b { needs = [a], step y { run = \"y\" } }\n  stage c { needs = [b], step z { run = \"z\" } }\n}";
    let (_, diags) = check(src);
    let found = found(src, &diags);
    assert_eq!(found.len(), 1, "{diags:#?}");
    assert_eq!(
        found[0].message,
        "dependency cycle: stage `a` → stage `c` → stage `b` → stage `a`"
    );
    assert_eq!((found[0].offset, found[0].text.as_str()), (34, "c"));
    assert_eq!(
        labels(src),
        [
            ("b".to_string(), "stage `c` needs stage `b`".to_string()),
            ("a".to_string(), "stage `b` needs stage `a`".to_string()),
        ]
    );
}

#[test]
fn duplicate_points_at_first_definition() {
    let src = "pipeline p {\n  param a: int = 1\n  param a: int = 2\n  stage s { step x { run = \"x\" } }\n}";
    let (_, diags) = check(src);
    let d = &diags[0];
    assert_eq!(d.label, "second definition");
    let first = d.secondary[0].0;
    assert_eq!((first.start, &src[first.range()]), (21, "a"));
    assert_eq!(d.secondary[0].1, "first defined here");
}

#[test]
fn unknown_param_override() {
    let src = "pipeline p {\n  param version: string = \"1\"\n  stage s { step x { run = \"echo ${version}\" } }\n}";
    let ws = load(src);
    let (m, pl) = ws.pipelines().next().expect("pipeline");
    let mut ctx = Context::offline();
    ctx.params.insert("versoin".into(), "2".into());
    ctx.params.insert("version".into(), "2".into());
    let (plan, diags) = pipe_lang::lower(&ws, m, pl, &ctx);
    assert!(plan.is_none());
    let d: Vec<(&str, &str, Option<&str>)> = diags
        .iter()
        .map(|d| (d.code, d.message.as_str(), d.help.as_deref()))
        .collect();
    assert_eq!(
        d,
        [(
            "pipe::unknown-param",
            "pipeline `p` has no param `versoin`",
            Some("did you mean `version`?")
        )]
    );
}

#[test]
fn param_override_of_wrong_type() {
    let src = "pipeline p {\n  param n: int = 1\n  stage s { step x { run = \"echo ${n}\" } }\n}";
    let ws = load(src);
    let (m, pl) = ws.pipelines().next().expect("pipeline");
    let mut ctx = Context::offline();
    ctx.params.insert("n".into(), "many".into());
    let (plan, diags) = pipe_lang::lower(&ws, m, pl, &ctx);
    assert!(plan.is_none());
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].code, "pipe::type");
}

#[test]
fn warning_does_not_stop_lowering() {
    let src = "pipeline p {\n  stage s {\n    step x { run = \"x\", when = false }\n    step y { run = \"y\" }\n  }\n}";
    let ws = load(src);
    let (m, pl) = ws.pipelines().next().expect("pipeline");
    let (plan, diags) = pipe_lang::lower(&ws, m, pl, &Context::offline());
    assert!(plan.is_some());
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].severity, Severity::Warning);
    assert_eq!(diags[0].code, "pipe::never-runs");
}

#[test]
fn syntax_error_in_one_file_does_not_hide_another() {
    let broken = "pipeline a {\n  stage s { step x { run: \"x\" } }\n}";
    let wrong = "pipeline b {\n  stage s { step x { run = \"x\", needs = [y] } }\n  stage t { }\n}";
    let ws = Workspace::load(
        vec![
            ("a.pipe".to_string(), broken.to_string()),
            ("b.pipe".to_string(), wrong.to_string()),
        ],
        &mut NoLoader,
    );
    let diags = pipe_lang::check(&ws, &Context::offline());
    let got: Vec<(String, &str, &str)> = diags
        .iter()
        .map(|d| (ws.sources.location(d.span), d.code, d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "a.pipe:2:25".to_string(),
                "pipe::syntax",
                "expected `{` or a name, found `:`"
            ),
            (
                "b.pipe:2:42".to_string(),
                "pipe::unknown-step",
                "unknown step `y`"
            ),
            (
                "b.pipe:3:9".to_string(),
                "pipe::empty-stage",
                "stage `t` has no steps"
            ),
        ]
    );
}

#[test]
fn valid_pipeline_has_no_diagnostics() {
    let src = "import \"std/docker\"\npipeline p {\n  param svcs: list<string> = [\"api\", \"worker\"]\n  env prod { require = [\"URL\"] }\n  stage build {\n    for svc in svcs {\n      step \"img-${svc}\" = docker.build { dockerfile = \"${svc}.Dockerfile\" }\n    }\n  }\n  stage ship {\n    needs = [build]\n    env = prod\n    gate ok = approval { timeout = 1h }\n    step push { run = \"push\", needs = [ok], env = { URL = env.URL } }\n  }\n  on failure { step alert { run = \"alert\" } }\n}";
    let (_, diags) = check(src);
    assert_eq!(diags, []);
    let plan = lower_ok(src);
    let ids: Vec<&str> = plan.steps().iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["build.img-api", "build.img-worker", "ship.ok", "ship.push"]
    );
    assert_eq!(plan.handlers().len(), 1);
}

analysis!(
    unknown_fault_parameter,
    "pipeline p {\n  stage s {\n    chaos api {\n      upstream = \"http://x\"\n      fault latency { dealy = 3s }\n    }\n  }\n}",
    [(
        "pipe::unknown-attribute",
        91,
        5,
        23,
        "dealy",
        "unknown attribute `dealy` in fault `latency`",
        Some("did you mean `delay`?")
    ),]
);
