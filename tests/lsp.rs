//! `pipe lsp` over real JSON-RPC on stdio: every request and notification of
//! the features editors use, against the real binary. Every read is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::pipe_bin;

const WAIT: Duration = Duration::from_secs(20);

const DOC: &str = r#"import "std/docker"

pipeline p {
  param version: string = "1.0"

  stage build {
    step image = docker.build {
      dockerfile = "Dockerfile"
      estimate   = 3m
    }
    step test {
      needs = [image]
      run   = "echo ${version} ${steps.image.outputs.image_id}"
    }
  }
  stage ship {
    needs = [build]
    step push { run = "true" }
  }
}
"#;

struct Server {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    next_id: i64,
    dir: tempfile::TempDir,
    uri: String,
}

impl Server {
    /// Starts `pipe lsp` in a fresh project and initializes it.
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
        let mut child = Command::new(pipe_bin())
            .arg("lsp")
            .current_dir(dir.path())
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pipe lsp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut len = None;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        len = v.parse::<usize>().ok();
                    }
                }
                let mut body = vec![0; len.expect("Content-Length header")];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                let v: Value = serde_json::from_slice(&body).expect("JSON body");
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let path = dir
            .path()
            .canonicalize()
            .expect("canonical tempdir")
            .join("pipelines/p.pipe");
        let uri = format!("file://{}", path.display());
        let mut s = Server {
            child,
            stdin,
            rx,
            next_id: 0,
            dir,
            uri,
        };
        let init = s.request(
            "initialize",
            json!({"processId": null, "rootUri": null, "capabilities": {}}),
        );
        assert_eq!(
            init["capabilities"]["renameProvider"],
            json!(true),
            "{init}"
        );
        s.notify("initialized", json!({}));
        s
    }

    fn send(&mut self, v: &Value) {
        let body = v.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write");
        self.stdin.flush().expect("flush");
    }

    fn notify(&mut self, method: &str, params: Value) {
        let mut m = json!({"jsonrpc": "2.0", "method": method});
        if !params.is_null() {
            m["params"] = params;
        }
        self.send(&m);
    }

    /// Sends a request and returns its result (panics on an error reply).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let reply = self.call(method, params);
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// Sends a request and returns the whole reply.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut m = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            m["params"] = params;
        }
        self.send(&m);
        self.wait_for(|m| m["id"] == json!(id))
    }

    /// The first message matching `f` within [`WAIT`]; others are dropped.
    fn wait_for(&mut self, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .rx
                .recv_timeout(left)
                .expect("the server answered in time");
            if f(&m) {
                return m;
            }
        }
    }

    fn open(&mut self, text: &str) -> Value {
        let uri = self.uri.clone();
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "pipe", "version": 1, "text": text}}),
        );
        self.diagnostics()
    }

    /// The URI of a file of the project, as the server names it.
    fn file_uri(&self, rel: &str) -> String {
        let root = self.dir.path().canonicalize().expect("canonical tempdir");
        format!("file://{}", root.join(rel).display())
    }

    /// Writes a file of the project to the disk (not opened in the editor).
    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.dir.path().join(rel), text).expect("write project file");
    }

    /// Opens another document and returns its diagnostics.
    fn open_uri(&mut self, uri: &str, text: &str) -> Value {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "pipe", "version": 1, "text": text}}),
        );
        self.diagnostics_of(uri)
    }

    /// The next diagnostics published for `uri`.
    fn diagnostics_of(&mut self, uri: &str) -> Value {
        self.wait_for(|m| {
            m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == json!(uri)
        })["params"]
            .clone()
    }

    fn diagnostics(&mut self) -> Value {
        self.wait_for(|m| m["method"] == "textDocument/publishDiagnostics")["params"].clone()
    }

    /// `{textDocument, position}` at the `nth` occurrence of `needle` plus `delta` chars.
    fn at(&self, text: &str, needle: &str, nth: usize, delta: usize) -> Value {
        let (line, col) = pos(text, needle, nth, delta);
        json!({"textDocument": {"uri": self.uri}, "position": {"line": line, "character": col}})
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pos(text: &str, needle: &str, nth: usize, delta: usize) -> (usize, usize) {
    let off = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} #{nth} not in text"))
        .0
        + delta;
    let before = &text[..off];
    let line = before.matches('\n').count();
    let col = before
        .rsplit('\n')
        .next()
        .map_or(0, |l| l.encode_utf16().count());
    (line, col)
}

fn range(text: &str, needle: &str, nth: usize, delta: usize, len: usize) -> Value {
    let (l, c) = pos(text, needle, nth, delta);
    json!({"start": {"line": l, "character": c}, "end": {"line": l, "character": c + len}})
}

#[test]
fn diagnostics_point_at_the_error_with_code_and_severity() {
    let mut s = Server::start();
    let bad = DOC.replace("needs = [image]", "needs = [imag]");
    let d = s.open(&bad);
    assert_eq!(d["uri"], json!(s.uri));
    let list = d["diagnostics"].as_array().expect("list");
    assert_eq!(list.len(), 1, "{d}");
    assert_eq!(list[0]["range"], range(&bad, "[imag]", 0, 1, 4));
    assert_eq!(list[0]["code"], "pipe::unknown-step");
    assert_eq!(list[0]["severity"], 1);
    assert_eq!(list[0]["source"], "pipe");
    assert!(
        list[0]["message"]
            .as_str()
            .expect("message")
            .contains("did you mean `image`?"),
        "{d}"
    );
    // Fixing the text clears them.
    let uri = s.uri.clone();
    s.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": DOC}]}),
    );
    assert_eq!(s.diagnostics()["diagnostics"], json!([]));
}

#[test]
fn hover_shows_step_template_and_param() {
    let mut s = Server::start();
    assert_eq!(s.open(DOC)["diagnostics"], json!([]));
    let h = s.request("textDocument/hover", s.at(DOC, "[image]", 0, 2));
    let v = h["contents"]["value"].as_str().expect("markdown");
    assert!(v.contains("step image = docker.build"), "{v}");
    assert!(v.contains("in stage `build`"), "{v}");
    assert!(
        v.contains("estimate: 3m · slack: 0s (on the critical path)"),
        "{v}"
    );
    assert!(v.contains("outputs: image_id, size, tags"), "{v}");
    assert_eq!(h["range"], range(DOC, "[image]", 0, 1, 5));

    let h = s.request("textDocument/hover", s.at(DOC, "docker.build", 0, 8));
    let v = h["contents"]["value"].as_str().expect("markdown");
    assert!(v.contains("template build(\n  dockerfile: string,"), "{v}");
    assert!(v.contains("Builds an image from a Dockerfile."), "{v}");

    let h = s.request("textDocument/hover", s.at(DOC, "${version}", 0, 3));
    let v = h["contents"]["value"].as_str().expect("markdown");
    assert_eq!(v, "```pipe\nparam version: string = \"1.0\"\n```");

    let h = s.request("textDocument/hover", s.at(DOC, "step push", 0, 6));
    let v = h["contents"]["value"].as_str().expect("markdown");
    // A stage need becomes a need of the steps that finish it.
    assert!(v.contains("needs: `test`"), "{v}");
    assert!(v.contains("estimate: 30s (default) · slack: 0s"), "{v}");
}

#[test]
fn definition_and_references_of_a_step_and_into_the_stdlib() {
    let mut s = Server::start();
    s.open(DOC);
    let uri = s.uri.clone();
    let def = s.request("textDocument/definition", s.at(DOC, "steps.image", 0, 7));
    assert_eq!(
        def,
        json!({"uri": uri, "range": range(DOC, "step image", 0, 5, 5)})
    );

    let def = s.request("textDocument/definition", s.at(DOC, "[build]", 0, 2));
    assert_eq!(def["range"], range(DOC, "stage build", 0, 6, 5));

    let def = s.request("textDocument/definition", s.at(DOC, "docker.build", 0, 9));
    let target = def["uri"].as_str().expect("uri");
    assert!(
        target.ends_with("/cache/pipe/stdlib-0.1.0/docker.pipe"),
        "{def}"
    );
    let path = target.strip_prefix("file://").expect("file uri");
    let text = std::fs::read_to_string(path).expect("stdlib file written");
    assert!(std::fs::metadata(path)
        .expect("meta")
        .permissions()
        .readonly());
    assert_eq!(def["range"], range(&text, "template build", 0, 9, 5));

    let mut params = s.at(DOC, "[image]", 0, 1);
    params["context"] = json!({"includeDeclaration": true});
    let refs = s.request("textDocument/references", params);
    let want = json!([
        {"uri": uri, "range": range(DOC, "step image", 0, 5, 5)},
        {"uri": uri, "range": range(DOC, "[image]", 0, 1, 5)},
        {"uri": uri, "range": range(DOC, "steps.image", 0, 6, 5)},
    ]);
    let mut got = refs.as_array().expect("list").clone();
    got.sort_by_key(|l| {
        (
            l["range"]["start"]["line"].as_u64(),
            l["range"]["start"]["character"].as_u64(),
        )
    });
    assert_eq!(json!(got), want);
}

#[test]
fn completion_of_outputs_templates_needs_and_parameters() {
    let mut s = Server::start();
    s.open(DOC);
    let labels = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("items")
            .iter()
            .map(|i| i["label"].as_str().expect("label").to_string())
            .collect()
    };
    // Typing `steps.image.outputs.` leaves the file unparsable until a name follows.
    let typing = DOC.replace("run = \"true\"", "run = steps.image.outputs.");
    let uri = s.uri.clone();
    s.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": typing}]}),
    );
    s.diagnostics();
    let got = labels(&s.request("textDocument/completion", s.at(&typing, "outputs.", 1, 8)));
    assert_eq!(got, ["image_id", "size", "tags"]);

    let got = labels(&s.request(
        "textDocument/completion",
        s.at(&typing, "docker.build", 0, 7),
    ));
    assert!(
        got.contains(&"build".to_string()) && got.contains(&"push".to_string()),
        "{got:?}"
    );

    let got = labels(&s.request(
        "textDocument/completion",
        s.at(DOC, "needs = [build]", 0, 9),
    ));
    for n in ["image", "test", "push", "build", "ship"] {
        assert!(got.contains(&n.to_string()), "{n} missing from {got:?}");
    }

    let got = labels(&s.request("textDocument/completion", s.at(DOC, "      estimate", 0, 0)));
    assert!(
        got.contains(&"context".to_string()) && got.contains(&"tags".to_string()),
        "{got:?}"
    );
    assert!(
        !got.contains(&"dockerfile".to_string()),
        "already set: {got:?}"
    );
    assert!(got.contains(&"stage".to_string()), "keywords: {got:?}");
}

#[test]
fn document_symbols_outline_pipelines_stages_and_steps() {
    let mut s = Server::start();
    s.open(DOC);
    let syms = s.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": s.uri}}),
    );
    let outline: Vec<String> = syms[0]["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|c| {
            let kids: Vec<&str> = c["children"]
                .as_array()
                .map(|k| {
                    k.iter()
                        .map(|k| k["name"].as_str().expect("name"))
                        .collect()
                })
                .unwrap_or_default();
            format!("{}[{}]", c["name"].as_str().expect("name"), kids.join(","))
        })
        .collect();
    assert_eq!(syms[0]["name"], "p");
    assert_eq!(outline, ["version[]", "build[image,test]", "ship[push]"]);
    assert_eq!(
        syms[0]["children"][1]["children"][0]["detail"],
        "docker.build"
    );
}

#[test]
fn formatting_returns_the_formatted_file() {
    let mut s = Server::start();
    let messy = "pipeline p { stage s { step a { run = \"x\"  timeout = 5s } } }\n";
    s.open(messy);
    let edits = s.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": s.uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(
        edits,
        json!([{
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}},
            "newText": "pipeline p {\n  stage s {\n    step a {\n      run     = \"x\"\n      timeout = 5s\n    }\n  }\n}\n"
        }])
    );
}

#[test]
fn rename_a_step_everywhere_it_is_named() {
    let mut s = Server::start();
    s.open(DOC);
    let mut params = s.at(DOC, "step image", 0, 6);
    params["newName"] = json!("img");
    let edit = s.request("textDocument/rename", params);
    let mut edits = edit["changes"][s.uri.as_str()]
        .as_array()
        .expect("edits")
        .clone();
    edits.sort_by_key(|e| {
        (
            e["range"]["start"]["line"].as_u64(),
            e["range"]["start"]["character"].as_u64(),
        )
    });
    assert_eq!(
        json!(edits),
        json!([
            {"range": range(DOC, "step image", 0, 5, 5), "newText": "img"},
            {"range": range(DOC, "[image]", 0, 1, 5), "newText": "img"},
            {"range": range(DOC, "steps.image", 0, 6, 5), "newText": "img"},
        ])
    );
    let mut bad = s.at(DOC, "step image", 0, 6);
    bad["newName"] = json!("not valid");
    assert!(s.call("textDocument/rename", bad).get("error").is_some());
}

#[test]
fn shutdown_then_exit_ends_the_process() {
    let mut s = Server::start();
    assert_eq!(s.request("shutdown", json!(null)), json!(null));
    s.notify("exit", json!(null));
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = s.child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "pipe lsp did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = &s.dir;
}

/// An assert's selectors are references: renaming a gate renames it in
/// `through`, and the outline lists the assert.
#[test]
fn asserts_reference_their_steps_and_stages_and_show_in_the_outline() {
    const GATED: &str = r#"pipeline p {
  stage build { step image { run = "b" } }
  stage prod {
    needs = [build]
    gate approve = approval { timeout = 1h }
    step deploy { run = "d"  needs = [approve] }
  }
  assert gated {
    from    = stage.build
    to      = "deploy"
    through = [approve]
  }
}
"#;
    let mut s = Server::start();
    s.open(GATED);
    let mut params = s.at(GATED, "gate approve", 0, 6);
    params["context"] = json!({"includeDeclaration": true});
    let refs = s.request("textDocument/references", params);
    let mut got: Vec<Value> = refs
        .as_array()
        .expect("list")
        .iter()
        .map(|l| l["range"].clone())
        .collect();
    got.sort_by_key(|r| {
        (
            r["start"]["line"].as_u64(),
            r["start"]["character"].as_u64(),
        )
    });
    assert_eq!(
        json!(got),
        json!([
            range(GATED, "gate approve", 0, 5, 7),
            range(GATED, "[approve]", 0, 1, 7),
            range(GATED, "[approve]", 1, 1, 7),
        ])
    );
    let def = s.request("textDocument/definition", s.at(GATED, "stage.build", 0, 7));
    assert_eq!(def["range"], range(GATED, "stage build", 0, 6, 5));
    let def = s.request("textDocument/definition", s.at(GATED, "\"deploy\"", 0, 2));
    assert_eq!(def["range"], range(GATED, "step deploy", 0, 5, 6));

    let syms = s.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": s.uri}}),
    );
    let names: Vec<(&str, &str)> = syms[0]["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name"),
                c["detail"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("build", "stage"), ("prod", "stage"), ("gated", "assert")]
    );
}

const LIB: &str = r#"## Says hello.
template greet(who: string) {
  run = "echo hello ${who}"
}

template wave(who: string) {
  run = "echo wave ${who}"
}
"#;

const USES_LIB: &str = r#"import "std/docker"
import "lib.pipe"

pipeline p {
  stage s {
    step a = lib.greet { who = "a" }
    step b = lib.greet { who = "b" }
    step img = docker.build { dockerfile = "Dockerfile" }
  }
}
"#;

/// `{textDocument, position}` in another document.
fn at_in(uri: &str, text: &str, needle: &str, nth: usize, delta: usize) -> Value {
    let (line, col) = pos(text, needle, nth, delta);
    json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": col}})
}

fn sorted(v: &Value) -> Vec<Value> {
    let mut out = v.as_array().expect("list").clone();
    out.sort_by_key(|e| {
        (
            e["range"]["start"]["line"].as_u64(),
            e["range"]["start"]["character"].as_u64(),
        )
    });
    out
}

#[test]
fn definition_of_an_import_path_opens_the_imported_file() {
    let mut s = Server::start();
    s.write("pipelines/lib.pipe", LIB);
    assert_eq!(s.open(USES_LIB)["diagnostics"], json!([]));
    let start = json!({"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}});

    let def = s.request(
        "textDocument/definition",
        s.at(USES_LIB, "\"lib.pipe\"", 0, 3),
    );
    assert_eq!(
        def,
        json!({"uri": s.file_uri("pipelines/lib.pipe"), "range": start})
    );

    // The embedded standard library opens from the cache it is written to.
    let def = s.request(
        "textDocument/definition",
        s.at(USES_LIB, "std/docker", 0, 5),
    );
    let target = def["uri"].as_str().expect("uri");
    assert!(
        target.ends_with("/cache/pipe/stdlib-0.1.0/docker.pipe"),
        "{def}"
    );
    assert_eq!(def["range"], start);
    let path = target.strip_prefix("file://").expect("file uri");
    let text = std::fs::read_to_string(path).expect("stdlib file written");
    assert!(text.contains("template build("), "{text}");

    // Outside the quotes there is nothing to go to.
    let def = s.request(
        "textDocument/definition",
        s.at(USES_LIB, "import \"lib", 0, 2),
    );
    assert_eq!(def, json!(null));
}

#[test]
fn errors_inside_an_imported_file_show_on_its_import() {
    let mut s = Server::start();
    let broken = LIB.replace("run = \"echo wave ${who}\"", "run = ");
    s.write("pipelines/lib.pipe", &broken);
    let doc =
        "import \"lib.pipe\"\n\npipeline p {\n  stage s {\n    step a { run = \"true\" }\n  }\n}\n";
    let d = s.open(doc);
    let list = d["diagnostics"].as_array().expect("list");
    assert_eq!(list.len(), 1, "{d}");
    assert_eq!(list[0]["range"], range(doc, "lib.pipe", 0, 0, 8));
    assert_eq!(list[0]["code"], "pipe::syntax");
    assert_eq!(list[0]["severity"], 1);
    // The parser stops at the `}` where an expression should be.
    let (line, col) = pos(&broken, "run = \n}", 0, 7);
    let message = list[0]["message"].as_str().expect("message");
    assert!(
        message.starts_with(&format!("in pipelines/lib.pipe:{}:{}: ", line + 1, col + 1)),
        "{d}"
    );
    let rel = &list[0]["relatedInformation"][0];
    let lib_uri = s.file_uri("pipelines/lib.pipe");
    assert_eq!(rel["location"]["uri"], json!(lib_uri));
    assert_eq!(
        rel["location"]["range"],
        range(&broken, "run = \n}", 0, 7, 1)
    );
    assert_eq!(rel["message"], "expected an expression");

    // Fixing the imported file in the editor clears the importer's diagnostic.
    assert_eq!(s.open_uri(&lib_uri, LIB)["diagnostics"], json!([]));
    let uri = s.uri.clone();
    assert_eq!(s.diagnostics_of(&uri)["diagnostics"], json!([]));

    // Breaking it again as it is typed brings it back.
    s.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": lib_uri, "version": 2}, "contentChanges": [{"text": broken}]}),
    );
    assert_eq!(
        s.diagnostics_of(&lib_uri)["diagnostics"]
            .as_array()
            .expect("list")
            .len(),
        1
    );
    let again = s.diagnostics_of(&uri);
    assert_eq!(
        again["diagnostics"][0]["range"],
        range(doc, "lib.pipe", 0, 0, 8),
        "{again}"
    );

    // Closing it falls back to the (still broken) file on the disk.
    s.notify(
        "textDocument/didClose",
        json!({"textDocument": {"uri": lib_uri}}),
    );
    let closed = s.diagnostics_of(&uri);
    assert_eq!(
        closed["diagnostics"].as_array().expect("list").len(),
        1,
        "{closed}"
    );
}

#[test]
fn rename_a_template_at_its_definition_and_every_use_in_open_files() {
    let mut s = Server::start();
    s.write("pipelines/lib.pipe", LIB);
    assert_eq!(s.open(USES_LIB)["diagnostics"], json!([]));
    let q_uri = s.file_uri("pipelines/q.pipe");
    let q = "import \"lib.pipe\" as l\n\npipeline q {\n  stage s {\n    step c = l.greet { who = \"c\" }\n  }\n}\n";
    assert_eq!(s.open_uri(&q_uri, q)["diagnostics"], json!([]));
    let lib_uri = s.file_uri("pipelines/lib.pipe");
    let p_uri = s.uri.clone();

    let want = |new: &str| {
        json!({
            p_uri.clone(): [
                {"range": range(USES_LIB, "lib.greet", 0, 4, 5), "newText": new},
                {"range": range(USES_LIB, "lib.greet", 1, 4, 5), "newText": new},
            ],
            q_uri.clone(): [{"range": range(q, "l.greet", 0, 2, 5), "newText": new}],
            lib_uri.clone(): [{"range": range(LIB, "template greet", 0, 9, 5), "newText": new}],
        })
    };
    let sort_changes = |edit: &Value| -> Value {
        let mut out = serde_json::Map::new();
        for (k, v) in edit["changes"].as_object().expect("changes") {
            out.insert(k.clone(), json!(sorted(v)));
        }
        Value::Object(out)
    };

    // From a use, with the defining file closed.
    let mut params = s.at(USES_LIB, "lib.greet", 0, 6);
    params["newName"] = json!("hello");
    let edit = s.request("textDocument/rename", params);
    assert_eq!(sort_changes(&edit), want("hello"));

    // References from another file, without the declaration.
    let mut params = at_in(&q_uri, q, "l.greet", 0, 3);
    params["context"] = json!({"includeDeclaration": false});
    let refs = s.request("textDocument/references", params);
    assert_eq!(refs.as_array().expect("list").len(), 3, "{refs}");
    assert!(
        refs.as_array()
            .expect("list")
            .iter()
            .all(|l| l["uri"] != json!(lib_uri)),
        "{refs}"
    );

    // From the definition, with the defining file open.
    assert_eq!(s.open_uri(&lib_uri, LIB)["diagnostics"], json!([]));
    let mut params = at_in(&lib_uri, LIB, "template greet", 0, 10);
    params["newName"] = json!("salute");
    let edit = s.request("textDocument/rename", params);
    assert_eq!(sort_changes(&edit), want("salute"));

    // A name another template has, a bad name, and the standard library are refused.
    for (needle, delta, new) in [
        ("lib.greet", 6, "wave"),
        ("lib.greet", 6, "not a name"),
        ("docker.build", 8, "make"),
    ] {
        let mut params = s.at(USES_LIB, needle, 0, delta);
        params["newName"] = json!(new);
        let reply = s.call("textDocument/rename", params);
        assert!(reply.get("error").is_some(), "{new}: {reply}");
    }
}

#[test]
fn rename_a_param_and_find_references_of_an_env() {
    let mut s = Server::start();
    let doc = "pipeline p {\n  param tag: string = \"v1\"\n  env staging { vars = { A = \"1\" } }\n  stage s {\n    env = staging\n    step a { run = \"echo ${tag}\" }\n    step b { run = \"echo \" + tag }\n  }\n}\n";
    assert_eq!(s.open(doc)["diagnostics"], json!([]));
    let mut params = s.at(doc, "+ tag", 0, 3);
    params["newName"] = json!("version");
    let edit = s.request("textDocument/rename", params);
    assert_eq!(
        json!(sorted(&edit["changes"][s.uri.as_str()])),
        json!([
            {"range": range(doc, "param tag", 0, 6, 3), "newText": "version"},
            {"range": range(doc, "${tag}", 0, 2, 3), "newText": "version"},
            {"range": range(doc, "+ tag", 0, 2, 3), "newText": "version"},
        ])
    );

    let mut params = s.at(doc, "= staging", 0, 3);
    params["context"] = json!({"includeDeclaration": true});
    let refs = s.request("textDocument/references", params);
    let uri = s.uri.clone();
    assert_eq!(
        json!(sorted(&refs)),
        json!([
            {"uri": uri, "range": range(doc, "env staging", 0, 4, 7)},
            {"uri": uri, "range": range(doc, "= staging", 0, 2, 7)},
        ])
    );
}
