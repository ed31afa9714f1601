//! `pipe list` and `pipe completions`.

use crate::common::Test;

#[test]
fn lists_pipelines_and_one_pipeline() {
    let t = Test::new()
        .pipeline("a", "pipeline alpha {\n  param v: string = \"1\"\n  stage s { step x { run = \"true\" } }\n}\n")
        .pipeline("b", "pipeline beta { stage one { step y { run = \"true\" } } stage two { needs = [one]  step z { run = \"true\" } } }\n");
    let t = t
        .args(&["list"])
        .stdout("alpha  pipelines/a.pipe  1 stage, params: v\nbeta   pipelines/b.pipe  2 stages\n");
    t.run();
    Test::new()
        .pipeline("b", "pipeline beta { stage one { step y { run = \"true\" } } stage two { needs = [one]  step z { run = \"true\" } } }\n")
        .args(&["list", "beta"])
        .stdout("pipeline beta\nstages:\n  one\n    y (shell)\n  two\n    z (shell)  needs y\n")
        .run();
}

#[test]
fn completions_are_generated() {
    Test::new()
        .args(&["completions", "bash"])
        .stdout_contains("_pipe()")
        .run();
    Test::new()
        .args(&["completions", "nope"])
        .status(2)
        .stderr_contains("invalid value 'nope'")
        .run();
}
