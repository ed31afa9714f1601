//! `docker.push`: pushes every tag of an image to its registry, with
//! credentials from `username`/`password` (pass secrets), streams progress
//! into the step log and outputs the pushed manifest's `digest`. See docs/docker.md.

use bollard::auth::DockerCredentials;
use bollard::query_parameters::PushImageOptions;
use futures_util::StreamExt;
use indexmap::IndexMap;

use super::{BoxFuture, Ending, Executor, Io, Job, Outcome};
use crate::docker::log::LogSink;
use crate::docker::{self, describe, input_list, input_str};

/// Pushes images.
pub struct Push;

impl Executor for Push {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(push(job, io))
    }
}

async fn push(job: Job, io: Io) -> Outcome {
    let sink = match LogSink::create(&job, io.logs.clone()) {
        Ok(s) => s,
        Err(e) => return Outcome::error(e),
    };
    let Some(image) = input_str(&job.inputs, "image") else {
        return Outcome::error("docker.push needs `image`");
    };
    let (repo, own_tag) = docker::split_reference(&image);
    let mut tags = input_list(&job.inputs, "tags");
    if image
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
    {
        tags = vec![own_tag];
    }
    if tags.is_empty() {
        tags.push("latest".into());
    }
    let credentials = input_str(&job.inputs, "username").map(|u| DockerCredentials {
        username: Some(u),
        password: input_str(&job.inputs, "password"),
        serveraddress: docker::registry_of(&repo),
        ..Default::default()
    });
    let docker = match docker::connect().await {
        Ok(d) => d,
        Err(e) => return Outcome::error(e),
    };
    let long = docker::long(&docker);
    let digest_re = regex::Regex::new(r"digest: (sha256:[0-9a-f]{64})").expect("static regex");
    let mut digest = None;
    for tag in &tags {
        sink.line(false, &format!("pushing {repo}:{tag}"));
        let mut s = long.push_image(
            &repo,
            Some(PushImageOptions {
                tag: Some(tag.clone()),
                ..Default::default()
            }),
            credentials.clone(),
        );
        let run = async {
            while let Some(item) = s.next().await {
                let info = item.map_err(|e| describe(&e))?;
                if let Some(m) = info.error_detail.and_then(|d| d.message) {
                    return Err(m);
                }
                if let Some(st) = &info.status {
                    if let Some(c) = digest_re.captures(st) {
                        digest = Some(c[1].to_string());
                    }
                    // Per-layer progress is noise in a log; keep the layer results.
                    if info.progress_detail.is_none() || !st.starts_with("Pushing") {
                        sink.line(false, st);
                    }
                }
            }
            Ok(())
        };
        let r = match job.timeout {
            Some(t) => tokio::time::timeout(t, run)
                .await
                .unwrap_or_else(|_| Err("timed out".into())),
            None => run.await,
        };
        if let Err(e) = r {
            let hint = if e.contains("unauthorized") || e.contains("authentication required") {
                " (check `username` and `password`)"
            } else {
                ""
            };
            return docker::outcome(
                if e == "timed out" {
                    Ending::TimedOut
                } else {
                    Ending::Failed
                },
                None,
                IndexMap::new(),
                Some(format!("pushing {repo}:{tag} failed: {e}{hint}")),
            );
        }
    }
    let Some(digest) = digest else {
        return Outcome::error(format!("pushed {repo} but the registry reported no digest"));
    };
    let mut outputs = IndexMap::new();
    outputs.insert("digest".to_string(), digest);
    docker::outcome(Ending::Succeeded, Some(0), outputs, None)
}
