//! Environments, secrets and the release context, through the real binary:
//! env validation before a run (every violation at once, with spans into the
//! `.pipe` file and the env file), secret sources and their refusals, masking
//! of a planted secret everywhere it could surface (terminal, log files, JSON
//! events, every text column of state.db, a notification received by a real
//! HTTP server on 127.0.0.1), and `git.*` from a real repository.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{pipe_bin, run_bounded};

struct Proj {
    dir: tempfile::TempDir,
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

impl Proj {
    fn new() -> Proj {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
        Proj { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
        self
    }

    /// A secret file: owner-only, as the docs ask.
    fn secret(&self, rel: &str, text: &str) -> &Self {
        self.write(rel, text);
        chmod(&self.root().join(rel), 0o600);
        self
    }

    fn pipe(&self, args: &[&str]) -> Ran {
        self.pipe_env(args, &[])
    }

    fn pipe_env(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let mut c = Command::new(pipe_bin());
        c.args(args)
            .current_dir(self.root())
            .env_remove("PIPE_STATE_DIR")
            .env_remove("PIPE_SECRETS_FILE")
            .env_remove("PIPE_SECRETS_DIR");
        // What the tests set must not come from the machine running them.
        for k in [
            "DATABASE_URL",
            "API_URL",
            "CORS_ORIGINS",
            "DEBUG",
            "APP_ENV",
            "API_TOKEN",
            "DB_PASSWORD",
            "TLS_KEY",
            "SLACK_WEBHOOK",
            "REGION",
        ] {
            c.env_remove(k);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let out: Output = run_bounded(&mut c, Duration::from_mins(1));
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=pipe tests",
                "-c",
                "user.email=tests@example.com",
                "-c",
                "commit.gpgSign=false",
                "-c",
                "tag.gpgSign=false",
            ])
            .args(args)
            .current_dir(self.root())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.root())
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn git_init(&self) {
        self.git(&["init", "-q", "-b", "main"]);
        self.write(".gitignore", ".pipe/\n");
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", "first"]);
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

const RELEASE: &str = r#"pipeline release {
  env staging {
    file    = "envs/staging.env"
    require = ["DATABASE_URL", "API_URL"]
  }
  env prod {
    file     = "envs/production.env"
    require  = ["DATABASE_URL", "API_URL", "CORS_ORIGINS"]
    forbid   = { DEBUG = "true" }
    allow_if = git.tag =~ "^v"
  }

  stage build {
    step compile { run = "echo compiled > built.txt" }
  }
  stage staging {
    needs = [build]
    env   = staging
    step deploy { run = "echo staging $API_URL" }
  }
  stage production {
    needs = [staging]
    env   = prod
    step deploy { run = "echo production $API_URL" }
  }
}
"#;

const GOOD_PROD: &str = "DATABASE_URL=postgres://app@db.prod:5432/app\nAPI_URL=https://api.example.com\nCORS_ORIGINS=https://app.example.com\nDEBUG=false\n";

fn release_project() -> Proj {
    let p = Proj::new();
    p.write("pipelines/release.pipe", RELEASE);
    p.write(
        "envs/staging.env",
        "DATABASE_URL=postgres://app@db.staging:5432/app\nAPI_URL=https://staging.example.com\n",
    );
    p
}

#[test]
fn every_env_violation_is_reported_at_once_with_both_spans() {
    let p = release_project();
    // Missing CORS_ORIGINS, empty API_URL, forbidden DEBUG=true; untagged HEAD.
    p.write(
        "envs/production.env",
        "# production\nDATABASE_URL=postgres://app@db.prod:5432/app\nAPI_URL=\nDEBUG=true\n",
    );
    p.git_init();
    for args in [
        &["run", "release", "--env", "prod", "--output", "plain"][..],
        // No --env: the production stage would run, so its env is checked.
        &["run", "release", "--output", "plain"][..],
        &["env", "check", "release", "--env", "prod"][..],
    ] {
        let r = p.pipe(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        let e = &r.stderr;
        for want in [
            // Missing: the rule in the .pipe file, and the env file.
            "× env `prod` requires `CORS_ORIGINS`, which is not set",
            "╭─[pipelines/release.pipe:8:44]",
            " 8 │     require  = [\"DATABASE_URL\", \"API_URL\", \"CORS_ORIGINS\"]",
            "╰── required here",
            "`CORS_ORIGINS` is not set in envs/production.env",
            "help: add `CORS_ORIGINS=...` to envs/production.env",
            // Empty: both places, the env file at its line.
            "× env `prod` requires `API_URL`, which is empty",
            "╭─[pipelines/release.pipe:8:33]",
            "╭─[envs/production.env:3:1]",
            " 3 │ API_URL=",
            "╰── `API_URL` is empty here",
            // Forbidden.
            "× env `prod` forbids `DEBUG=true`, and it is set",
            "╭─[pipelines/release.pipe:9:18]",
            "  9 │     forbid   = { DEBUG = \"true\" }",
            "╰── forbidden here",
            "╭─[envs/production.env:4:1]",
            " 4 │ DEBUG=true",
            "╰── `DEBUG` is set to `true` here",
            // allow_if, with what would make it true.
            "× env `prod` is not allowed here: `allow_if = git.tag =~ \"^v\"` is false",
            "╭─[pipelines/release.pipe:10:16]",
            "╰── false for this commit",
            "help: `git.tag =~ \"^v\"` must be true: git.tag is not set; tag the commit (git tag",
            "error: 4 problems in the environment; nothing was run",
        ] {
            if args[0] == "env" && want.starts_with("error: 4") {
                continue;
            }
            assert!(e.contains(want), "{args:?}: stderr lacks {want:?}:\n{e}");
        }
        // The staging env is fine: nothing is said about it.
        assert!(!e.contains("env `staging`"), "{e}");
    }
    // Nothing ran: no step output, no run recorded.
    assert!(!p.root().join("built.txt").exists());
    assert!(!p.root().join(".pipe/state.db").exists());
    let r = p.pipe(&["env", "check", "release", "--env", "prod"]);
    assert_eq!(
        r.stdout,
        "✓ env `staging` of `release`: 2 variables, 0 secrets\n✗ env `prod` of `release`: 3 variables, 0 secrets (4 problems)\n"
    );
}

#[test]
fn a_parse_error_in_an_env_file_points_at_its_line() {
    let p = release_project();
    p.write(
        "envs/staging.env",
        "DATABASE_URL=postgres://db\nAPI URL=https://x\n",
    );
    let r = p.pipe(&["env", "check", "release", "--env", "staging"]);
    assert_eq!(r.code, 2, "{}", r.all());
    for want in [
        "× env `staging`: envs/staging.env:2 is not dotenv syntax",
        "╭─[pipelines/release.pipe:3:15]",
        "╰── env file declared here",
        "╭─[envs/staging.env:2:1]",
        "╰── cannot parse this line",
    ] {
        assert!(r.stderr.contains(want), "lacks {want:?}:\n{}", r.stderr);
    }
}

#[test]
fn production_is_refused_on_an_untagged_commit_and_allowed_on_a_tag() {
    let p = release_project();
    p.write("envs/production.env", GOOD_PROD);
    p.git_init();
    let r = p.pipe(&["run", "release", "--env", "prod", "--output", "plain"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("× env `prod` is not allowed here: `allow_if = git.tag =~ \"^v\"` is false"),
        "{}",
        r.all()
    );
    assert!(r
        .stderr
        .contains("git.tag is not set; tag the commit (git tag v1.2.3) or"));
    assert!(
        r.stderr.contains("pass --git-ref with a tag"),
        "{}",
        r.stderr
    );
    assert!(!p.root().join("built.txt").exists());
    // A misspelt env is refused, not run as "the stages without an env".
    let r = p.pipe(&["run", "release", "--env", "prd", "--output", "plain"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert_eq!(
        r.stderr,
        "error: pipeline `release` has no `env prd`\n  help: did you mean `prod`?\n"
    );
    assert!(!p.root().join("built.txt").exists());
    // A tag that does not match says what it is.
    p.git(&["tag", "nightly-1"]);
    let r = p.pipe(&["env", "check", "--env", "prod"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("git.tag = \"nightly-1\""), "{}", r.stderr);
    // --git-ref names a tagged commit.
    p.git(&["commit", "-q", "--allow-empty", "-m", "second"]);
    p.git(&["tag", "v1.2.3"]);
    p.git(&["commit", "-q", "--allow-empty", "-m", "after the tag"]);
    let r = p.pipe(&[
        "run",
        "release",
        "--env",
        "prod",
        "--git-ref",
        "v1.2.3",
        "--output",
        "plain",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("production https://api.example.com"),
        "{}",
        r.all()
    );
    // HEAD itself tagged.
    p.git(&["tag", "v1.2.4"]);
    let r = p.pipe(&["run", "release", "--env", "prod", "--output", "plain"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // `pipe resume` validates too: the env file broke since the run failed.
    p.write(
        "pipelines/release.pipe",
        &RELEASE.replace("echo production $API_URL", "exit 3"),
    );
    let r = p.pipe(&["run", "release", "--env", "prod", "--output", "plain"]);
    assert_eq!(r.code, 1, "{}", r.all());
    p.write(
        "envs/production.env",
        &GOOD_PROD.replace("DEBUG=false", "DEBUG=true"),
    );
    let r = p.pipe(&["resume", "--output", "plain"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("forbids `DEBUG=true`"), "{}", r.all());
}

#[test]
fn git_context_comes_from_a_real_repository() {
    let p = Proj::new();
    p.write(
        "pipelines/ctx.pipe",
        r#"pipeline ctx {
  stage s {
    step show { run = "echo sha=${git.sha} short=${git.short_sha} branch=${git.branch ?? "none"} tag=${git.tag ?? "none"} dirty=${git.dirty} time=${git.commit_time}" }
  }
}
"#,
    );
    p.write("README", "one\n");
    p.git_init();
    p.git(&["tag", "v1.2.0"]);
    let tagged = p.git(&["rev-parse", "HEAD"]);
    p.git(&["switch", "-q", "-c", "release/1.2"]);
    p.write("README", "two\n");
    p.git(&["commit", "-q", "-am", "second"]);
    let head = p.git(&["rev-parse", "HEAD"]);
    // Dirty: a tracked file changed.
    p.write("README", "three\n");
    let line = |r: &Ran| -> String {
        r.stdout
            .lines()
            .find_map(|l| {
                l.split_once("| sha=")
                    .map(|(_, rest)| format!("sha={rest}"))
            })
            .unwrap_or_else(|| panic!("no output line: {}", r.all()))
    };
    let time = |sha: &str| p.git(&["show", "-s", "--format=%cI", sha]);
    let r = p.pipe(&["run", "ctx", "--output", "plain"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        line(&r),
        format!(
            "sha={head} short={} branch=release/1.2 tag=none dirty=true time={}",
            &head[..7],
            time(&head)
        )
    );
    // --git-ref: a tag (no branch, never dirty), then a branch.
    let r = p.pipe(&["run", "ctx", "--git-ref", "v1.2.0", "--output", "plain"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        line(&r),
        format!(
            "sha={tagged} short={} branch=none tag=v1.2.0 dirty=false time={}",
            &tagged[..7],
            time(&tagged)
        )
    );
    let r = p.pipe(&["run", "ctx", "--git-ref", "main", "--output", "plain"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        line(&r).contains("branch=main tag=v1.2.0 dirty=false"),
        "{}",
        r.all()
    );
}

/// Standard base64, padded.
fn b64(v: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in v.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The part of the base64 of `secret` behind `k` other bytes that depends on
/// the secret alone: what an encoded leak would always contain.
fn b64_inner(secret: &str, k: usize) -> String {
    let mut bytes = vec![b'x'; k];
    bytes.extend_from_slice(secret.as_bytes());
    let enc = b64(&bytes);
    let enc = enc.trim_end_matches('=');
    let skip = [0, 2, 3][k];
    let drop_end = usize::from(!bytes.len().is_multiple_of(3));
    enc[skip..enc.len() - drop_end].to_string()
}

fn hex(s: &str) -> String {
    use std::fmt::Write as _;
    s.bytes().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A webhook receiver on 127.0.0.1: records every request body.
struct Hook {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Hook {
    fn start() -> Hook {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b = bodies.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let Ok(n) = s.read(&mut chunk) else {
                        break None;
                    };
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len = text[..i]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + len {
                            break Some(
                                String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).into_owned(),
                            );
                        }
                    }
                };
                if let Some(body) = body {
                    b.lock().expect("lock").push(body);
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        });
        Hook { port, bodies }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Every text (and blob) value of every table of a SQLite database.
fn db_texts(path: &Path) -> Vec<(String, String)> {
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open state.db");
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("tables")
        .map(|t| t.expect("name"))
        .collect();
    let mut out = Vec::new();
    for t in &tables {
        let mut st = db
            .prepare(&format!("SELECT * FROM \"{t}\""))
            .expect("select");
        let cols: Vec<String> = st.column_names().iter().map(|c| (*c).to_string()).collect();
        let mut rows = st.query([]).expect("query");
        while let Some(row) = rows.next().expect("row") {
            for (i, c) in cols.iter().enumerate() {
                let text = match row.get_ref(i).expect("value") {
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                        String::from_utf8_lossy(b).into_owned()
                    }
                    _ => continue,
                };
                out.push((format!("{t}.{c}"), text));
            }
        }
    }
    assert!(tables.iter().any(|t| t == "steps"), "{tables:?}");
    out
}

const TOKEN: &str = "tok-7Fq9#zX!pL2@wQ/secret";
const DB_PASSWORD: &str = "dir-Secret-88xx";
const TLS_KEY: &str = "-----BEGIN TEST KEY-----\nMIIBmultiLINEsecret01\nMIIBmultiLINEsecret02\n-----END TEST KEY-----";

/// One byte per write with a pause between writes, every encoding, a
/// multi-line value and an output.
const SHOW: &str = r#"
printf '%s\n' "raw: $TOKEN"
printf %s "$TOKEN" | base64
printf %s "x$TOKEN" | base64
printf %s "xy$TOKEN" | base64
printf %s "$TOKEN" | od -An -tx1 | tr -d ' \n'; echo
printf %s "$TOKEN" | od -An -tx1 | tr -d ' \n' | tr a-f A-F; echo
s=$TOKEN; enc=
while [ -n "$s" ]; do
  c=${s%"${s#?}"}; s=${s#?}
  case $c in
    [A-Za-z0-9._~-]) enc="$enc$c" ;;
    *) enc="$enc$(printf '%%%02X' "'$c")" ;;
  esac
done
echo "url: $enc"
s=$TOKEN
while [ -n "$s" ]; do
  printf %s "${s%"${s#?}"}"; s=${s#?}; sleep 0.01
done
echo
printf '%s\n' "$KEY"
printf 'db: %s\n' "$DB" >&2
echo "token=$TOKEN" >> "$PIPE_OUTPUT"
"#;

#[test]
fn a_planted_secret_never_leaks_anywhere() {
    let hook = Hook::start();
    let p = Proj::new();
    p.write(
        "pipelines/leak.pipe",
        &format!(
            r#"import "std/notify"

pipeline leak {{
  param note: string = "none"
  env prod {{
    file    = "envs/prod.env"
    require = ["API_URL"]
    secrets = ["API_TOKEN", "DB_PASSWORD", "TLS_KEY"]
  }}
  stage s {{
    env = prod
    step show {{
      env = {{ TOKEN = secrets.API_TOKEN, DB = secrets.DB_PASSWORD, KEY = secrets.TLS_KEY }}
      run = "sh show.sh"
    }}
    step parse {{
      needs = [show]
      env   = {{ N = int(secrets.DB_PASSWORD), NOTE = note }}
      run   = "true"
    }}
    step tell = notify.webhook {{
      needs   = [show]
      url     = "http://127.0.0.1:{port}/hook"
      payload = {{ text = "token ${{secrets.API_TOKEN}} db ${{secrets.DB_PASSWORD}}", output = steps.show.outputs.token }}
    }}
  }}
}}
"#,
            port = hook.port
        ),
    );
    p.write("show.sh", SHOW);
    p.write("envs/prod.env", "API_URL=https://api.example.com\n");
    // One secret from the secrets file, two from the secrets directory.
    p.secret(".secrets.env", &format!("API_TOKEN='{TOKEN}'\n"));
    p.secret("secrets/DB_PASSWORD", &format!("{DB_PASSWORD}\n"));
    p.secret("secrets/TLS_KEY", &format!("{TLS_KEY}\n"));
    let mut forms = vec![
        TOKEN.to_string(),
        DB_PASSWORD.to_string(),
        "MIIBmultiLINEsecret01".to_string(),
        "MIIBmultiLINEsecret02".to_string(),
        hex(TOKEN),
        hex(TOKEN).to_uppercase(),
        url_encode(TOKEN),
        url_encode(TOKEN).to_lowercase(),
    ];
    for k in 0..3 {
        forms.push(b64_inner(TOKEN, k));
    }
    let leaks = |what: &str, text: &str| {
        for f in &forms {
            assert!(!text.contains(f.as_str()), "{what} leaks `{f}`:\n{text}");
        }
    };
    let args = |output: &'static str| {
        vec![
            "run",
            "leak",
            "--keep-going",
            "--secrets-file",
            ".secrets.env",
            "--secrets-dir",
            "secrets",
            "--output",
            output,
        ]
    };
    let plain = p.pipe(&args("plain"));
    // `parse` fails (its error quotes the value), the others succeed.
    assert_eq!(plain.code, 1, "{}", plain.all());
    let json = p.pipe(&args("json"));
    assert_eq!(json.code, 1, "{}", json.all());
    // The events of the JSON run, as a file a CI job would keep.
    std::fs::write(p.root().join(".pipe/events.jsonl"), &json.stdout).expect("write");
    for (what, r) in [("plain", &plain), ("json", &json)] {
        leaks(&format!("{what} stdout"), &r.stdout);
        leaks(&format!("{what} stderr"), &r.stderr);
    }
    // The step did print every form, masked.
    for want in [
        "| raw: ***",
        "| url: ***",
        "| db: ***",
        "`***` is not an integer",
    ] {
        assert!(
            plain.stdout.contains(want) || plain.stderr.contains(want),
            "{want}: {}",
            plain.all()
        );
    }
    assert!(
        json.stdout.contains(r#""line":"raw: ***""#),
        "{}",
        json.stdout
    );
    let log = std::fs::read_to_string(p.root().join(".pipe/logs/1/s.show.1.log")).expect("log");
    // raw, 3 × base64, 2 × hex, url, byte-by-byte, 4 key lines, db.
    assert_eq!(log.matches("***").count(), 13, "{log}");
    let files = files_under(&p.root().join(".pipe"));
    assert!(files.iter().any(|f| f.ends_with("state.db")), "{files:?}");
    for f in &files {
        // The outputs file is the step's own writing, read back and masked.
        if f.extension().is_some_and(|e| e == "outputs") {
            continue;
        }
        let bytes = std::fs::read(f).expect("read");
        leaks(&f.display().to_string(), &String::from_utf8_lossy(&bytes));
    }
    let texts = db_texts(&p.root().join(".pipe/state.db"));
    assert!(
        texts
            .iter()
            .any(|(c, t)| c == "steps.outputs" && t.contains("\"token\":\"***\"")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|(c, t)| c == "steps.error" && t.contains("`***` is not an integer")),
        "{texts:?}"
    );
    for (col, text) in &texts {
        leaks(&format!("state.db {col}"), text);
    }
    let bodies = hook.bodies.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    for b in &bodies {
        leaks("notification payload", b);
        let v: serde_json::Value = serde_json::from_str(b).expect("json");
        assert_eq!(v["text"], "token *** db ***", "{b}");
        assert_eq!(v["output"], "***", "{b}");
    }
    // `pipe env show` names the sources, never the values.
    let r = p.pipe(&[
        "env",
        "show",
        "leak",
        "--env",
        "prod",
        "--secrets-file",
        ".secrets.env",
        "--secrets-dir",
        "secrets",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    leaks("env show", &r.all());
    let root = p.root().canonicalize().expect("canon");
    let show = r.stdout.replace(&root.display().to_string(), "ROOT");
    let show = show.replace(&p.root().display().to_string(), "ROOT");
    assert_eq!(
        show,
        "env `prod` of pipeline `leak`\nvariables:\n  API_URL     = https://api.example.com  # envs/prod.env:1\nsecrets:\n  API_TOKEN   = ***                      # ROOT/.secrets.env:1\n  DB_PASSWORD = ***                      # ROOT/secrets/DB_PASSWORD\n  TLS_KEY     = ***                      # ROOT/secrets/TLS_KEY\n",
        "{}",
        r.all()
    );
    // `pipe graph` output: a param that happens to hold the secret.
    for format in ["ascii", "json", "dot"] {
        let r = p.pipe(&[
            "graph",
            "leak",
            "-p",
            &format!("note={TOKEN}"),
            "--format",
            format,
            "--secrets-file",
            ".secrets.env",
            "--secrets-dir",
            "secrets",
        ]);
        assert_eq!(r.code, 0, "{}", r.all());
        leaks(&format!("graph {format}"), &r.all());
        if format == "json" {
            // The params are part of the JSON graph: there, masked.
            assert!(r.stdout.contains(r#""note": "***""#), "{}", r.stdout);
        }
    }
}

#[test]
fn unsafe_secret_sources_are_refused_before_anything_runs() {
    let p = Proj::new();
    p.write(
        "pipelines/p.pipe",
        "pipeline p {\n  stage s {\n    step a {\n      env = { T = secrets.API_TOKEN }\n      run = \"echo ran > ran.txt\"\n    }\n  }\n}\n",
    );
    // World-readable.
    p.write(".secrets.env", "API_TOKEN=abcdef123456\n");
    chmod(&p.root().join(".secrets.env"), 0o644);
    let r = p.pipe(&[
        "run",
        "p",
        "--secrets-file",
        ".secrets.env",
        "--output",
        "plain",
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains(".secrets.env is readable by every user (mode 644)"),
        "{}",
        r.all()
    );
    assert!(
        r.stderr.contains("help: restrict it: chmod 600"),
        "{}",
        r.all()
    );
    assert!(!p.root().join("ran.txt").exists());
    // A `../` path.
    let r = p.pipe(&[
        "run",
        "p",
        "--secrets-file",
        "../elsewhere.env",
        "--output",
        "plain",
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("error: --secrets-file ../elsewhere.env: a path with `..` is refused"),
        "{}",
        r.all()
    );
    // A symlink in the secrets directory that leads out of the project.
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("token"), "outside-value-1").expect("write");
    chmod(&outside.path().join("token"), 0o600);
    std::fs::create_dir_all(p.root().join("secrets")).expect("mkdir");
    std::os::unix::fs::symlink(
        outside.path().join("token"),
        p.root().join("secrets/API_TOKEN"),
    )
    .expect("symlink");
    let r = p.pipe(&["run", "p", "--secrets-dir", "secrets", "--output", "plain"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("secrets/API_TOKEN is a symlink to"),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("outside the project"), "{}", r.all());
    // Too short to mask, from the environment.
    let r = p.pipe_env(&["run", "p", "--output", "plain"], &[("API_TOKEN", "abc")]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("secret `API_TOKEN` is refused: a secret shorter than 4 characters cannot be masked (from process environment)"),
        "{}",
        r.all()
    );
    assert!(!p.root().join("ran.txt").exists());
    // A sound file is used.
    std::fs::remove_file(p.root().join("secrets/API_TOKEN")).expect("rm");
    chmod(&p.root().join(".secrets.env"), 0o600);
    let r = p.pipe(&[
        "run",
        "p",
        "--secrets-file",
        ".secrets.env",
        "--output",
        "plain",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn a_declared_secret_that_no_source_sets_is_reported_with_the_env() {
    let p = Proj::new();
    p.write(
        "pipelines/p.pipe",
        "pipeline p {\n  env staging {\n    secrets = [\"SLACK_WEBHOOK\"]\n  }\n  stage s {\n    env = staging\n    step a { run = \"true\" }\n  }\n}\n",
    );
    let r = p.pipe(&["env", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    for want in [
        "× env `staging` needs secret `SLACK_WEBHOOK`, which no source sets",
        "╭─[pipelines/p.pipe:3:16]",
        "╰── declared here",
        "help: export SLACK_WEBHOOK=..., put a file named SLACK_WEBHOOK (mode 600) in the",
    ] {
        assert!(r.stderr.contains(want), "lacks {want:?}: {}", r.all());
    }
    assert_eq!(
        r.stdout,
        "✗ env `staging` of `p`: 0 variables, 1 secret (1 problem)\n"
    );
    // The default secrets directory, .pipe/secrets.
    p.secret(
        ".pipe/secrets/SLACK_WEBHOOK",
        "https://hooks.example/T0/B0/abcdef",
    );
    let r = p.pipe(&["env", "check"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout, "✓ env `staging` of `p`: 0 variables, 1 secret\n");
}

#[test]
fn a_secret_interpolated_into_run_is_rejected_by_check() {
    let p = Proj::new();
    p.write(
        "pipelines/p.pipe",
        "pipeline p {\n  stage s {\n    step leak { run = \"deploy --token ${secrets.DEPLOY_TOKEN}\" }\n  }\n}\n",
    );
    let r = p.pipe(&["check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    for want in [
        "× a secret cannot be interpolated into a command",
        "╭─[pipelines/p.pipe:3:41]",
        "╰── secret interpolated here",
        "help: pass it through the environment: `env = { DEPLOY_TOKEN = secrets.DEPLOY_TOKEN }` and write",
        "`\"$DEPLOY_TOKEN\"` in the shell command",
    ] {
        assert!(r.stderr.contains(want), "lacks {want:?}: {}", r.all());
    }
}

/// The rules docs/environments.md gives for the two environments.
const EXAMPLE_RULES: &str = r#"pipeline service {
  env staging {
    file    = "envs/staging.env"
    require = ["APP_ENV", "DATABASE_URL", "API_URL", "CORS_ORIGINS"]
    forbid  = { APP_ENV = "production" }
  }
  env prod {
    file     = "envs/production.env"
    require  = ["APP_ENV", "DATABASE_URL", "API_URL", "CORS_ORIGINS", "DB_POOL_SIZE", "RATE_LIMIT_DEFAULT"]
    forbid   = { DEBUG = ["true", "1"], CORS_ORIGINS = "*", APP_ENV = "staging" }
    allow_if = git.tag =~ "^v"
  }
  stage s {
    step a { run = "true" }
  }
}
"#;

#[test]
fn the_shipped_example_env_files_pass_the_documented_rules() {
    let p = Proj::new();
    p.write("pipelines/service.pipe", EXAMPLE_RULES);
    let root = crate::common::repo_root();
    let staging =
        std::fs::read_to_string(root.join("examples/staging.env.example")).expect("staging");
    let prod = std::fs::read_to_string(root.join("examples/production.env.example")).expect("prod");
    p.write("envs/staging.env", &staging);
    p.write("envs/production.env", &prod);
    let r = p.pipe(&["env", "check", "--git-ref", "HEAD"]);
    // Not a repository: allow_if is false, and says why; the files are fine.
    assert_eq!(r.code, 2, "{}", r.all());
    assert_eq!(
        r.stdout,
        "✓ env `staging` of `service`: 16 variables, 0 secrets\n✗ env `prod` of `service`: 27 variables, 0 secrets (1 problem)\n",
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("git.tag is not set"), "{}", r.all());
    p.git_init();
    p.git(&["tag", "v1.0.0"]);
    let r = p.pipe(&["env", "check"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // Debug switched on, or CORS opened to everyone, is refused.
    p.write(
        "envs/production.env",
        &prod
            .replace("DEBUG=false", "DEBUG=1")
            .replace("CORS_ORIGINS=https://app.example.com", "CORS_ORIGINS=*"),
    );
    let r = p.pipe(&["env", "check", "--env", "prod"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("forbids `DEBUG=1`"), "{}", r.all());
    assert!(r.stderr.contains("forbids `CORS_ORIGINS=*`"), "{}", r.all());
    let r = p.pipe(&["env", "show", "--env", "prod"]);
    assert!(
        r.stdout.contains(
            "SECURITY_HSTS                 = max-age=63072000; includeSubDomains; preload"
        ),
        "{}",
        r.all()
    );
}

#[test]
fn an_error_message_quoting_a_secret_is_masked() {
    const SECRET: &str = "pw-Quoted-In-Error-77";
    let p = Proj::new();
    p.write(
        "pipelines/p.pipe",
        "pipeline p {\n  env prod {\n    file    = \"envs/prod.env\"\n    secrets = [\"DB_PASSWORD\"]\n  }\n  stage s {\n    env = prod\n    step a { run = \"echo ran > ran.txt\" }\n  }\n}\n",
    );
    // A broken line that holds the secret: the diagnostic shows the line.
    p.write(
        "envs/prod.env",
        &format!("API_URL=https://api.example.com\nDB PASSWORD={SECRET}\n"),
    );
    p.secret("vault/DB_PASSWORD", SECRET);
    let r = p.pipe(&["run", "p", "--secrets-dir", "vault", "--output", "plain"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(!r.all().contains(SECRET), "{}", r.all());
    assert!(r.stderr.contains(" 2 │ DB PASSWORD=***"), "{}", r.all());
    assert!(
        r.stderr.contains("╰── cannot parse this line"),
        "{}",
        r.all()
    );
    assert!(!p.root().join("ran.txt").exists());
    // An explicit secrets directory that does not exist is an error.
    let r = p.pipe(&["env", "check", "--secrets-dir", "nowhere"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("nowhere does not exist") && r.stderr.contains("help: create it"),
        "{}",
        r.all()
    );
}

#[test]
fn run_context_is_visible_to_every_step() {
    let p = Proj::new();
    p.write(
        "pipelines/p.pipe",
        "pipeline p {\n  env staging { }\n  stage s {\n    env = staging\n    step show { run = \"echo id=${run.id} pipeline=${run.pipeline} env=${run.env} started=${run.started} now=${now()}\" }\n  }\n}\n",
    );
    let r = p.pipe(&["run", "p", "--env", "staging", "--output", "plain"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let line = r
        .stdout
        .lines()
        .find_map(|l| l.split_once("| id=").map(|(_, rest)| rest.to_string()))
        .unwrap_or_else(|| panic!("{}", r.all()));
    let (head, times) = line.split_once(" started=").expect("started");
    assert_eq!(head, "1 pipeline=p env=staging");
    let (started, now) = times.split_once(" now=").expect("now");
    for t in [started, now] {
        // RFC 3339 in UTC: 2026-11-27T10:00:00.123Z or without the fraction.
        assert!(
            t.len() >= 20 && t.ends_with('Z') && &t[4..5] == "-" && &t[10..11] == "T",
            "{t}"
        );
    }
    assert!(started <= now, "{started} {now}");
}

#[test]
fn env_show_says_where_each_variable_comes_from() {
    let p = Proj::new();
    p.write(
        "pipelines/p.pipe",
        "pipeline p {\n  env staging {\n    file    = \"envs/staging.env\"\n    vars    = { LOG_LEVEL = \"debug\", API_URL = \"https://override.example.com\" }\n    require = [\"API_URL\", \"REGION\"]\n    secrets = [\"SLACK_WEBHOOK\"]\n  }\n  stage s {\n    env = staging\n    step a { run = \"true\" }\n  }\n}\n",
    );
    p.write(
        "envs/staging.env",
        "# staging\nAPI_URL=https://staging.example.com\nDATABASE_URL=postgresql://app@db:5432/app\n",
    );
    let r = p.pipe_env(
        &["env", "show", "--env", "staging"],
        &[
            ("REGION", "eu-west-1"),
            ("SLACK_WEBHOOK", "https://hooks.example/T0/B0/xyzzy"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        r.stdout,
        "env `staging` of pipeline `p`
variables:
  API_URL       = https://override.example.com  # vars at pipelines/p.pipe:4:15
  DATABASE_URL  = postgresql://app@db:5432/app  # envs/staging.env:3
  LOG_LEVEL     = debug                         # vars at pipelines/p.pipe:4:15
  REGION        = eu-west-1                     # process environment
secrets:
  SLACK_WEBHOOK = ***                           # process environment
"
    );
    assert!(!r.all().contains("xyzzy"), "{}", r.all());
}

/// `printf %s VALUE | sha256sum`: how the test compares a secret a step saw
/// without the value reaching any output (the run masks it).
fn sha256_hex(v: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", "printf %s \"$V\" | sha256sum | cut -c1-64"])
        .env("V", v)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn each_environment_reads_its_own_secrets_and_never_another_s() {
    let p = Proj::new();
    let (staging_token, prod_token) = ("staging-token-5f1c9a", "prod-token-0b7e44d2");
    p.secret(
        ".pipe/secrets/staging/API_TOKEN",
        &format!("{staging_token}\n"),
    )
    .secret(".pipe/secrets/prod/API_TOKEN", &format!("{prod_token}\n"))
    .secret(
        ".pipe/secrets/prod/PROD_DB_PASSWORD",
        "prod-db-password-77\n",
    )
    .secret(
        ".pipe/secrets/SLACK_WEBHOOK",
        "https://hooks.example/shared/0123\n",
    );
    // Each step writes the hash of the token it was given.
    let step = |name: &str| {
        format!(
            "    step {name} {{\n      env = {{ T = secrets.API_TOKEN, W = secrets.SLACK_WEBHOOK }}\n      run = \"printf %s \\\"$T\\\" | sha256sum | cut -c1-64 > {name}.sha; test -n \\\"$W\\\"\"\n    }}\n"
        )
    };
    let pipeline = |extra: &str| {
        format!(
            "pipeline p {{\n  env staging {{\n    secrets = [\"API_TOKEN\"]\n  }}\n  env prod {{\n    secrets = [\"API_TOKEN\"]\n  }}\n  stage build {{\n{}  }}\n  stage staging {{\n    needs = [build]\n    env = staging\n{}{extra}  }}\n  stage production {{\n    needs = [staging]\n    env = prod\n{}  }}\n}}\n",
            step("built"),
            step("on_staging"),
            step("on_prod"),
        )
    };
    p.write("pipelines/p.pipe", &pipeline(""));
    let sha = |f: &str| {
        std::fs::read_to_string(p.root().join(f))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };

    // A staging run: staging's token in staging, and in the stage without an
    // env (the run's `--env`); production's is not even loaded into a step.
    let r = p.pipe(&["run", "p", "--env", "staging", "--output", "plain"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(sha("on_staging.sha"), sha256_hex(staging_token));
    assert_eq!(sha("built.sha"), sha256_hex(staging_token));
    assert!(!p.root().join("on_prod.sha").exists());
    assert!(!r.all().contains(prod_token) && !r.all().contains(staging_token));

    // A production run: each stage its own environment's token.
    for f in ["built.sha", "on_staging.sha"] {
        std::fs::remove_file(p.root().join(f)).expect("rm");
    }
    let r = p.pipe(&["run", "p", "--env", "prod", "--output", "plain"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(sha("on_staging.sha"), sha256_hex(staging_token));
    assert_eq!(sha("on_prod.sha"), sha256_hex(prod_token));
    assert_eq!(sha("built.sha"), sha256_hex(prod_token));

    // A staging step that reads a secret only production has is refused
    // before anything runs, saying where the secret is, never its value.
    p.write(
        "pipelines/p.pipe",
        &pipeline("    step peek {\n      env = { P = secrets.PROD_DB_PASSWORD }\n      run = \"echo $P > peek.txt\"\n    }\n"),
    );
    let r = p.pipe(&["run", "p", "--env", "staging", "--output", "plain"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.all().contains("step `staging.peek` (env `staging`) reads `secrets.PROD_DB_PASSWORD`, which is set only for env `prod`"),
        "{}",
        r.all()
    );
    assert!(
        r.all().contains(".pipe/secrets/prod/PROD_DB_PASSWORD"),
        "{}",
        r.all()
    );
    assert!(!r.all().contains("prod-db-password-77"), "{}", r.all());
    assert!(!p.root().join("peek.txt").exists());

    // Declared by staging but set only for prod: refused, naming prod.
    p.write(
        "pipelines/p.pipe",
        "pipeline p {\n  env staging {\n    secrets = [\"PROD_DB_PASSWORD\"]\n  }\n  stage s {\n    env = staging\n    step a { run = \"true\" }\n  }\n}\n",
    );
    let r = p.pipe(&["env", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.all()
            .contains("env `staging` needs secret `PROD_DB_PASSWORD`, which no source sets"),
        "{}",
        r.all()
    );
    assert!(r.all().contains("set only for env `prod`"), "{}", r.all());
}
