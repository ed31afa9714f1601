//! `docker.build` and `docker.import`. Build: tars the context (honouring
//! `.dockerignore`), posts it to the Engine with the Dockerfile, target, build
//! args, labels and `no_cache`, streams the build output into the step log and
//! tags the image; a failure names the failing Dockerfile instruction and its
//! line. A build that fails because a cached image was deleted under it (a
//! concurrent `docker rmi` or prune) is built again. Outputs `image_id`,
//! `size` (bytes) and `tags`. Import: makes a base
//! image from a root filesystem (a directory or a tarball) — how images are
//! made where nothing can be pulled. See docs/docker.md.

use std::collections::HashMap;
use std::path::Path;

use bollard::query_parameters::{BuildImageOptions, TagImageOptions};
use futures_util::StreamExt;
use indexmap::IndexMap;

use super::{BoxFuture, Ending, Executor, Io, Job, Outcome, Stop};
use crate::docker::log::LogSink;
use crate::docker::{self, describe, input_bool, input_list, input_map, input_str};

/// Builds images.
pub struct Build;

impl Executor for Build {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(build(job, io))
    }
}

/// Imports root filesystems as images.
pub struct Import;

impl Executor for Import {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(import(job, io))
    }
}

/// The references to tag: `image:tag` for each tag, or each tag as a full
/// reference when there is no `image` (or the tag has its own repository).
fn references(image: Option<&str>, tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = tags
        .iter()
        .map(|t| match image {
            Some(i) if !t.contains(':') && !t.contains('/') => format!("{i}:{t}"),
            _ => t.clone(),
        })
        .collect();
    if out.is_empty() {
        if let Some(i) = image {
            out.push(i.to_string());
        }
    }
    out
}

async fn build(job: Job, mut io: Io) -> Outcome {
    let sink = match LogSink::create(&job, io.logs.clone()) {
        Ok(s) => s,
        Err(e) => return Outcome::error(e),
    };
    let Some(dockerfile) = input_str(&job.inputs, "dockerfile") else {
        return Outcome::error("docker.build needs `dockerfile`");
    };
    let context = job
        .cwd
        .join(input_str(&job.inputs, "context").unwrap_or_else(|| ".".into()));
    let df_path = job.cwd.join(&dockerfile);
    let df_text = match std::fs::read_to_string(&df_path) {
        Ok(t) => t,
        Err(e) => {
            return Outcome::error(format!("cannot read Dockerfile {}: {e}", df_path.display()))
        }
    };
    // A Dockerfile inside the context is named by its path there; one outside travels along.
    let (df_name, extra) = match relative_inside(&df_path, &context) {
        Some(rel) => (rel, Vec::new()),
        None => (
            ".pipe.Dockerfile".to_string(),
            vec![(".pipe.Dockerfile".to_string(), df_text.clone().into_bytes())],
        ),
    };
    let (tar, files) = match docker::context::tar_context(&context, &extra) {
        Ok(t) => t,
        Err(e) => return Outcome::error(e),
    };
    let refs = references(
        input_str(&job.inputs, "image").as_deref(),
        &input_list(&job.inputs, "tags"),
    );
    let docker = match docker::connect().await {
        Ok(d) => d,
        Err(e) => return Outcome::error(e),
    };
    sink.line(
        false,
        &format!(
            "build context {}: {files} files, {} KiB (after .dockerignore)",
            context.display(),
            tar.len() / 1024
        ),
    );
    let args: HashMap<String, String> = input_map(&job.inputs, "args").into_iter().collect();
    let labels: HashMap<String, String> = input_map(&job.inputs, "labels").into_iter().collect();
    let opts = BuildImageOptions {
        dockerfile: df_name,
        t: refs.first().cloned(),
        nocache: input_bool(&job.inputs, "no_cache"),
        rm: true,
        forcerm: true,
        buildargs: Some(args),
        labels: Some(labels),
        target: input_str(&job.inputs, "target").unwrap_or_default(),
        ..Default::default()
    };
    let long = docker::long(&docker);
    let body = bytes::Bytes::from(tar);
    let deadline = job.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut attempt = 1;
    let image_id = loop {
        let (ending, last_step) = stream_build(
            &long,
            opts.clone(),
            body.clone(),
            &sink,
            deadline,
            &mut io.stop,
        )
        .await;
        sink.flush();
        let at = at_step(last_step.as_deref(), &df_text, &dockerfile);
        match ending {
            Streamed::Built(id) => break id,
            // What the build names itself (Dockerfile, build args) is no cache layer.
            Streamed::Failed(m)
                if attempt < BUILD_ATTEMPTS
                    && vanished_layer(
                        &m,
                        std::iter::once(df_text.as_str()).chain(
                            opts.buildargs
                                .iter()
                                .flat_map(|a| a.values().map(String::as_str)),
                        ),
                    ) =>
            {
                sink.line(
                    true,
                    &format!(
                        "{}: an image the build cache chose was removed while the build \
                         used it (a `docker rmi` or prune running beside this build); \
                         building again (attempt {} of {BUILD_ATTEMPTS})",
                        m.trim(),
                        attempt + 1
                    ),
                );
                attempt += 1;
            }
            Streamed::Failed(m) => {
                sink.line(true, m.trim_end());
                return docker::outcome(
                    Ending::Failed,
                    None,
                    IndexMap::new(),
                    Some(format!("the build failed{at}: {}", m.trim())),
                );
            }
            Streamed::TimedOut => {
                return docker::outcome(
                    Ending::TimedOut,
                    None,
                    IndexMap::new(),
                    Some(format!("the build timed out{at}")),
                )
            }
            Streamed::Cancelled => {
                return docker::outcome(
                    Ending::Cancelled,
                    None,
                    IndexMap::new(),
                    Some("cancelled during the build".into()),
                )
            }
        }
    };
    let Some(first) = refs.first().cloned().or(image_id) else {
        return Outcome::error("the build finished without an image id");
    };
    for r in refs.iter().skip(1) {
        let (repo, tag) = docker::split_reference(r);
        if let Err(e) = docker
            .tag_image(
                &first,
                Some(TagImageOptions {
                    repo: Some(repo),
                    tag: Some(tag),
                }),
            )
            .await
        {
            return Outcome::error(format!("cannot tag {r}: {}", describe(&e)));
        }
    }
    let img = match docker.inspect_image(&first).await {
        Ok(i) => i,
        Err(e) => {
            return Outcome::error(format!("cannot inspect the built image: {}", describe(&e)))
        }
    };
    let id = img.id.unwrap_or_default();
    sink.line(false, &format!("built {id} as {}", refs.join(", ")));
    let mut outputs = IndexMap::new();
    outputs.insert("image_id".to_string(), id);
    outputs.insert("size".to_string(), img.size.unwrap_or(0).to_string());
    outputs.insert("tags".to_string(), refs.join(" "));
    docker::outcome(Ending::Succeeded, Some(0), outputs, None)
}

/// How many times a build runs when an image its cache chose vanishes under
/// it. Each further attempt looks the cache up afresh, so it cannot pick the
/// removed image again.
const BUILD_ATTEMPTS: u32 = 3;

/// How one build request ended.
enum Streamed {
    Built(Option<String>),
    Failed(String),
    TimedOut,
    Cancelled,
}

/// Posts one build and streams its output into the log. Returns how it
/// ended and the builder's last `Step N/M : ...` line.
async fn stream_build(
    docker: &bollard::Docker,
    opts: BuildImageOptions,
    body: bytes::Bytes,
    sink: &LogSink,
    deadline: Option<tokio::time::Instant>,
    stop: &mut tokio::sync::watch::Receiver<Stop>,
) -> (Streamed, Option<String>) {
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(body)));
    let mut image_id = None;
    let mut last_step: Option<String> = None;
    let mut failure: Option<String> = None;
    let timeout = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    loop {
        tokio::select! {
            item = stream.next() => match item {
                None => break,
                Some(Ok(info)) => {
                    if let Some(s) = &info.stream {
                        for l in s.lines() {
                            if l.starts_with("Step ") && l.contains(" : ") {
                                last_step = Some(l.to_string());
                            }
                        }
                        sink.chunk(false, s.as_bytes());
                    }
                    if let Some(s) = &info.status {
                        sink.text(false, s);
                    }
                    if let Some(img) = &info.aux {
                        image_id.clone_from(&img.id);
                    }
                    if let Some(m) = info.error_detail.and_then(|d| d.message) {
                        failure = Some(m);
                    }
                }
                Some(Err(e)) => {
                    failure = Some(describe(&e));
                    break;
                }
            },
            () = &mut timeout => return (Streamed::TimedOut, last_step),
            r = stop.changed() => {
                if r.is_ok() && *stop.borrow() != Stop::Run {
                    return (Streamed::Cancelled, last_step);
                }
            }
        }
    }
    let ending = match failure {
        Some(m) => Streamed::Failed(m),
        None => Streamed::Built(image_id),
    };
    (ending, last_step)
}

/// Whether a build failed because an image it was using vanished: the
/// classic builder picks a cached image and then reads it, and a concurrent
/// `docker rmi` of another image whose untagged parents included it can
/// delete it in between. The Engine words this several ways; every one
/// names the image by its digest. A digest that the build's own inputs name
/// (`FROM sha256:…`, a build arg) is missing for good, not vanished.
fn vanished_layer<'a>(message: &str, inputs: impl IntoIterator<Item = &'a str>) -> bool {
    let m = message.to_ascii_lowercase();
    let Some(at) = m.find("sha256:") else {
        return false;
    };
    let digest: String = m[at + 7..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    let named = digest.len() >= 12
        && inputs
            .into_iter()
            .any(|i| i.to_ascii_lowercase().contains(&digest[..12]));
    !named
        && [
            "unable to find image",
            "failed to get digest",
            "no such image",
        ]
        .iter()
        .any(|p| m.contains(p))
}

fn relative_inside(file: &Path, dir: &Path) -> Option<String> {
    let f = file.canonicalize().ok()?;
    let d = dir.canonicalize().ok()?;
    f.strip_prefix(&d).ok().map(|p| p.display().to_string())
}

/// ` at Dockerfile step 3/5 `RUN make` (app.Dockerfile line 7)` from the
/// builder's last `Step N/M : INSTRUCTION` line.
fn at_step(step: Option<&str>, dockerfile: &str, name: &str) -> String {
    let Some(step) = step else {
        return String::new();
    };
    let Some((head, instr)) = step.split_once(" : ") else {
        return String::new();
    };
    let n: Option<usize> = head
        .trim_start_matches("Step ")
        .split('/')
        .next()
        .and_then(|s| s.trim().parse().ok());
    let line = n.and_then(|n| instruction_line(dockerfile, n));
    match line {
        Some(l) => format!(
            " at Dockerfile step {} `{instr}` ({name} line {l})",
            head.trim_start_matches("Step ")
        ),
        None => format!(
            " at Dockerfile step {} `{instr}`",
            head.trim_start_matches("Step ")
        ),
    }
}

/// The 1-based line where the `n`th instruction of a Dockerfile starts.
fn instruction_line(text: &str, n: usize) -> Option<usize> {
    let mut count = 0;
    let mut continued = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        let starts = !continued && !t.is_empty() && !t.starts_with('#');
        continued = (continued || starts) && t.ends_with('\\');
        if starts {
            count += 1;
            if count == n {
                return Some(i + 1);
            }
        }
    }
    None
}

async fn import(job: Job, io: Io) -> Outcome {
    let sink = match LogSink::create(&job, io.logs.clone()) {
        Ok(s) => s,
        Err(e) => return Outcome::error(e),
    };
    let (Some(rootfs), Some(image)) = (
        input_str(&job.inputs, "rootfs"),
        input_str(&job.inputs, "image"),
    ) else {
        return Outcome::error("docker.import needs `rootfs` (a directory or tarball) and `image`");
    };
    let tar = match docker::context::rootfs_tar(&job.cwd.join(&rootfs)) {
        Ok(t) => t,
        Err(e) => return Outcome::error(e),
    };
    let docker = match docker::connect().await {
        Ok(d) => d,
        Err(e) => return Outcome::error(e),
    };
    let changes = input_list(&job.inputs, "changes");
    match docker::import_rootfs(&docker, tar, &image, changes).await {
        Ok(id) => {
            sink.line(false, &format!("imported {rootfs} as {image} ({id})"));
            let mut outputs = IndexMap::new();
            outputs.insert("image_id".to_string(), id);
            docker::outcome(Ending::Succeeded, Some(0), outputs, None)
        }
        Err(e) => Outcome::error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_steps_are_located() {
        let df = "# base\nFROM a AS one\nARG X\nRUN make \\\n  all\n\nRUN false\n";
        assert_eq!(instruction_line(df, 1), Some(2));
        assert_eq!(instruction_line(df, 3), Some(4));
        assert_eq!(instruction_line(df, 4), Some(7));
        assert_eq!(
            at_step(Some("Step 4/4 : RUN false"), df, "Dockerfile"),
            " at Dockerfile step 4/4 `RUN false` (Dockerfile line 7)"
        );
    }

    #[test]
    fn a_cached_image_removed_mid_build_is_told_from_a_real_failure() {
        // The three wordings the Engine (28.x) gave when a concurrent
        // `docker rmi` removed an image the build cache had chosen.
        for m in [
            "Docker stream error: unable to find image \"sha256:8c2162c3d04cc607\"",
            "failed to get digest sha256:98bf4793: open /var/lib/docker/image/overlay2/\
             imagedb/content/sha256/98bf4793: no such file or directory",
            "No such image: sha256:5a6ff0968956",
        ] {
            assert!(vanished_layer(m, ["FROM base\nRUN make\n"]), "{m}");
        }
        for m in [
            "The command '/bin/sh -c false' returned a non-zero code: 1",
            "pull access denied for nosuch, repository does not exist",
            "No such image: app:v1",
            "COPY failed: file not found in build context: sha256sums",
        ] {
            assert!(!vanished_layer(m, ["FROM base\nRUN make\n"]), "{m}");
        }
        // An image the Dockerfile or a build arg names by digest is missing
        // for good: building again cannot find it.
        let missing = "No such image: sha256:5a6ff0968956aa";
        assert!(vanished_layer(missing, ["FROM base\n"]));
        assert!(!vanished_layer(missing, ["FROM sha256:5A6FF0968956AA\n"]));
        assert!(!vanished_layer(
            missing,
            ["FROM ${BASE}\n", "sha256:5a6ff0968956aa"]
        ));
    }

    #[test]
    fn tags_become_references() {
        assert_eq!(
            references(
                Some("app"),
                &["latest".into(), "v1".into(), "reg:5000/x:y".into()]
            ),
            ["app:latest", "app:v1", "reg:5000/x:y"]
        );
        assert_eq!(references(None, &["a:b".into()]), ["a:b"]);
    }
}
