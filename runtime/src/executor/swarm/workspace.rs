//! How files travel between the project and a swarm job: two volumes per
//! attempt, one for the workspace (mounted at `/workspace`) and one for the
//! `$PIPE_OUTPUT` file (`/pipe/output`). pipe creates them on the engine it
//! talks to and fills them through a helper container that is created but
//! never started, using the Engine API archive endpoints (`PUT` and `GET
//! /containers/{id}/archive`): the project root goes in (minus `.git`, the
//! state directory and what `.dockerignore` excludes), the output file and
//! the step's `artifacts` come back. With the default `local` driver the
//! volumes live on that node, so the job is pinned to it; a shared driver
//! (`PIPE_SWARM_VOLUME_DRIVER`, `PIPE_SWARM_VOLUME_OPTS`, e.g. NFS) lets the
//! swarm place it anywhere. See docs/swarm.md.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Component, Path};

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use bollard::Docker;
use futures_util::StreamExt;

use super::{Driver, Owned};
use crate::docker::context::Ignore;
use crate::docker::{self, describe};

/// Where the output volume is mounted in the job (the file is `output` in it).
pub const OUTPUT_DIR: &str = "/pipe";

/// The two volumes of an attempt and the helper container that reaches them.
pub struct Volumes {
    pub workspace: String,
    pub output: String,
    helper: String,
}

/// What went into the workspace volume.
pub struct Sent {
    pub files: usize,
    pub bytes: usize,
}

impl Volumes {
    /// Creates the volumes and the (never started) helper container.
    pub async fn create(
        docker: &Docker,
        base: &str,
        image: &str,
        labels: &HashMap<String, String>,
        driver: &Driver,
        owned: &mut Owned,
    ) -> Result<Volumes, String> {
        let v = Volumes {
            workspace: format!("{base}-ws"),
            output: format!("{base}-out"),
            helper: format!("{base}-io"),
        };
        for name in [&v.workspace, &v.output] {
            // A leftover of a crashed attempt with the same name is emptied by
            // removing it first.
            let _ = super::remove_volume_once(docker, name).await;
            docker
                .create_volume(VolumeCreateRequest {
                    name: Some(name.clone()),
                    driver: Some(driver.name.clone()),
                    driver_opts: (!driver.options.is_empty()).then(|| driver.options.clone()),
                    labels: Some(labels.clone()),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create volume `{name}`: {}", describe(&e)))?;
            owned.volumes.push(name.clone());
        }
        let mount = |source: &str, target: &str| Mount {
            target: Some(target.into()),
            source: Some(source.into()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        };
        let mut helper_labels = labels.clone();
        helper_labels.insert(docker::LABEL_KIND.into(), "swarm-io".into());
        let config = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec!["true".into()]),
            labels: Some(helper_labels),
            host_config: Some(HostConfig {
                mounts: Some(vec![
                    mount(&v.workspace, docker::WORKSPACE),
                    mount(&v.output, OUTPUT_DIR),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = crate::executor::container::create(docker, &v.helper, config).await?;
        owned.containers.push(id);
        Ok(v)
    }

    /// Copies the project into the workspace volume and an empty, writable
    /// output file into the output volume.
    pub async fn fill(&self, docker: &Docker, job: &crate::executor::Job) -> Result<Sent, String> {
        let root = job.cwd.clone();
        let state_dir = job
            .log_path
            .strip_prefix(&root)
            .ok()
            .and_then(|p| p.components().next())
            .map(|c| c.as_os_str().to_string_lossy().to_string());
        let (tar, files) =
            tokio::task::spawn_blocking(move || workspace_tar(&root, state_dir.as_deref()))
                .await
                .map_err(|e| format!("archiving the workspace panicked: {e}"))??;
        let bytes = tar.len();
        self.upload(docker, docker::WORKSPACE, tar).await?;
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o666);
        h.set_cksum();
        b.append_data(&mut h, "output", std::io::empty())
            .map_err(|e| format!("cannot make the output archive: {e}"))?;
        let out = b
            .into_inner()
            .map_err(|e| format!("cannot make the output archive: {e}"))?;
        self.upload(docker, OUTPUT_DIR, out).await?;
        Ok(Sent { files, bytes })
    }

    async fn upload(&self, docker: &Docker, path: &str, tar: Vec<u8>) -> Result<(), String> {
        docker
            .upload_to_container(
                &self.helper,
                Some(UploadToContainerOptions {
                    path: path.to_string(),
                    ..Default::default()
                }),
                bollard::body_full(bytes::Bytes::from(tar)),
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot copy into {path} of the job's volume: {}",
                    describe(&e)
                )
            })
    }

    async fn download(&self, docker: &Docker, path: &str) -> Result<Vec<u8>, String> {
        let mut s = docker.download_from_container(
            &self.helper,
            Some(DownloadFromContainerOptions {
                path: path.to_string(),
            }),
        );
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(|e| {
                if docker::is_not_found(&e) {
                    "not found in the job's workspace".to_string()
                } else {
                    format!(
                        "cannot copy {path} out of the job's volume: {}",
                        describe(&e)
                    )
                }
            })?;
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The text the job wrote to `$PIPE_OUTPUT`.
    pub async fn read_output(&self, docker: &Docker) -> Result<String, String> {
        let tar = self
            .download(docker, &format!("{OUTPUT_DIR}/output"))
            .await
            .map_err(|e| format!("$PIPE_OUTPUT: {e}"))?;
        let mut ar = tar::Archive::new(tar.as_slice());
        let mut entries = ar
            .entries()
            .map_err(|e| format!("$PIPE_OUTPUT: unreadable archive: {e}"))?;
        let Some(entry) = entries.next() else {
            return Ok(String::new());
        };
        let mut entry = entry.map_err(|e| format!("$PIPE_OUTPUT: unreadable archive: {e}"))?;
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .map_err(|e| format!("$PIPE_OUTPUT is not UTF-8 text: {e}"))?;
        Ok(text)
    }

    /// Copies `path` (a file or directory relative to the workspace) from the
    /// job's workspace into the project at the same place. Returns how many
    /// entries it wrote.
    pub async fn copy_back(
        &self,
        docker: &Docker,
        path: &str,
        root: &Path,
    ) -> Result<usize, String> {
        let rel = checked_relative(path)?;
        let tar = self
            .download(docker, &format!("{}/{}", docker::WORKSPACE, rel.display()))
            .await?;
        let dest = root.join(rel.parent().unwrap_or(Path::new("")));
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dest)
                .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
            let mut ar = tar::Archive::new(tar.as_slice());
            let mut n = 0;
            for entry in ar
                .entries()
                .map_err(|e| format!("unreadable archive: {e}"))?
            {
                let mut entry = entry.map_err(|e| format!("unreadable archive: {e}"))?;
                // unpack_in refuses entries that would land outside `dest`.
                if entry
                    .unpack_in(&dest)
                    .map_err(|e| format!("cannot write into {}: {e}", dest.display()))?
                {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
        .map_err(|e| format!("copying back panicked: {e}"))?
    }
}

/// An artifact path must stay inside the workspace.
fn checked_relative(path: &str) -> Result<&Path, String> {
    let p = Path::new(path.trim_end_matches('/'));
    if path.is_empty()
        || p.as_os_str().is_empty()
        || !p
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "`{path}` is not a relative path inside the workspace (no `/...`, no `..`)"
        ));
    }
    Ok(p)
}

/// The project as a tar archive: everything but `.git`, the state directory
/// and what the root `.dockerignore` excludes. Returns the archive and its
/// file count.
fn workspace_tar(root: &Path, state_dir: Option<&str>) -> Result<(Vec<u8>, usize), String> {
    let ignore = match std::fs::read_to_string(root.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::parse("")?,
        Err(e) => return Err(format!("cannot read {}/.dockerignore: {e}", root.display())),
    };
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut count = 0;
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            if rel.is_empty() && (name == ".git" || Some(name.as_str()) == state_dir) {
                continue;
            }
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if ignore.excluded(&r) {
                continue;
            }
            let path = e.path();
            let ft = e
                .file_type()
                .map_err(|err| format!("cannot stat {}: {err}", path.display()))?;
            if ft.is_dir() {
                b.append_dir(&r, &path)
                    .map_err(|err| format!("cannot add {}: {err}", path.display()))?;
                stack.push((path, r));
            } else {
                b.append_path_with_name(&path, &r)
                    .map_err(|err| format!("cannot add {}: {err}", path.display()))?;
                count += 1;
            }
        }
    }
    let out = b
        .into_inner()
        .map_err(|e| format!("cannot finish the workspace archive: {e}"))?;
    Ok((out, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_stay_inside() {
        assert!(checked_relative("dist").is_ok());
        assert!(checked_relative("reports/a.sarif").is_ok());
        assert!(checked_relative("dist/").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../b"] {
            assert!(checked_relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_workspace_leaves_out_git_state_and_ignored_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".dockerignore"), "*.log\n").unwrap();
        std::fs::create_dir_all(d.path().join(".git")).unwrap();
        std::fs::write(d.path().join(".git/HEAD"), "x").unwrap();
        std::fs::create_dir_all(d.path().join(".pipe/logs")).unwrap();
        std::fs::write(d.path().join(".pipe/state.db"), "x").unwrap();
        std::fs::create_dir_all(d.path().join("src")).unwrap();
        std::fs::write(d.path().join("src/a.txt"), "a").unwrap();
        std::fs::write(d.path().join("build.log"), "l").unwrap();
        let (tar, n) = workspace_tar(d.path(), Some(".pipe")).unwrap();
        let mut ar = tar::Archive::new(tar.as_slice());
        let mut names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "src", "src/a.txt"]);
        assert_eq!(n, 2);
    }
}
