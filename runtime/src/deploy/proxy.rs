//! The traffic switch of blue-green deployments: a `pipe-proxy` container
//! (see `runtime/proxy/pipe-proxy.rs`) named after the service, publishing the
//! stable port. Its image holds one static executable that pipe embeds and
//! imports through the Engine API, so nothing is pulled. Switching is
//! uploading a new upstream file into the running proxy
//! (`PUT /containers/{id}/archive`); the file names the upstream address and
//! the container behind it, which is also how `pipe gc` tells the active
//! colour from a leftover.

use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use bollard::Docker;
use futures_util::StreamExt;

use crate::docker::{describe, is_not_found};

/// The proxy executable, linked statically by `runtime/build.rs`.
static BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pipe-proxy"));

/// Where the upstream file lives in the proxy container.
pub const DIR: &str = "/etc/pipe-proxy";

/// `pipe-proxy:<hash of the executable>`: a new pipe brings a new image.
pub fn image() -> String {
    let h = crate::state::source_hash(&[("pipe-proxy".into(), hex_len(BINARY))]);
    format!("pipe-proxy:{}", &h[..12])
}

fn hex_len(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(b))
}

/// Imports the proxy image unless it is there.
pub async fn ensure_image(docker: &Docker) -> Result<String, String> {
    let image = image();
    if docker.inspect_image(&image).await.is_ok() {
        return Ok(image);
    }
    if BINARY.is_empty() {
        return Err("this build of pipe has no traffic proxy (`runtime/build.rs` could not link it statically: install the static C library, e.g. Debian's libc6-dev, and rebuild); use strategy = \"recreate\"".into());
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        b.append_data(&mut h, path, data)
            .map_err(|e| format!("cannot build the proxy image: {e}"))
    };
    add("pipe-proxy", BINARY, 0o755)?;
    add("etc/pipe-proxy/upstream", b"", 0o644)?;
    let tar = b
        .into_inner()
        .map_err(|e| format!("cannot build the proxy image: {e}"))?;
    crate::docker::import_rootfs(docker, tar, &image, vec![]).await?;
    Ok(image)
}

/// The upstream file: `IP:PORT` of the container that takes the traffic, then its id.
pub fn upstream_file(addr: &str, container_id: &str) -> String {
    format!("{addr}\n{container_id}\n")
}

/// Points the proxy at `addr` (the container `container_id`).
pub async fn switch(
    docker: &Docker,
    proxy: &str,
    addr: &str,
    container_id: &str,
) -> Result<(), String> {
    let text = upstream_file(addr, container_id);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "upstream", text.as_bytes())
        .map_err(|e| format!("cannot switch traffic: {e}"))?;
    let tar = b
        .into_inner()
        .map_err(|e| format!("cannot switch traffic: {e}"))?;
    docker
        .upload_to_container(
            proxy,
            Some(UploadToContainerOptions {
                path: DIR.to_string(),
                ..Default::default()
            }),
            bollard::body_full(bytes::Bytes::from(tar)),
        )
        .await
        .map_err(|e| format!("cannot switch traffic on proxy `{proxy}`: {}", describe(&e)))
}

/// The id of the container the proxy sends traffic to (`None`: no proxy, or
/// it points nowhere yet).
pub async fn target(docker: &Docker, proxy: &str) -> Result<Option<String>, String> {
    let mut s = docker.download_from_container(
        proxy,
        Some(DownloadFromContainerOptions {
            path: format!("{DIR}/upstream"),
        }),
    );
    let mut tar = Vec::new();
    while let Some(chunk) = s.next().await {
        match chunk {
            Ok(c) => tar.extend_from_slice(&c),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "cannot read the upstream of `{proxy}`: {}",
                    describe(&e)
                ))
            }
        }
    }
    let mut archive = tar::Archive::new(tar.as_slice());
    let Ok(mut entries) = archive.entries() else {
        return Ok(None);
    };
    let Some(Ok(mut entry)) = entries.next() else {
        return Ok(None);
    };
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut entry, &mut text);
    Ok(text
        .lines()
        .nth(1)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string))
}

/// The proxy's source, compiled here too so that its parser is unit-tested.
#[cfg(test)]
#[expect(
    dead_code,
    reason = "main() of the proxy executable is not called here"
)]
#[path = "../../proxy/pipe-proxy.rs"]
mod source;

#[cfg(test)]
mod tests {
    use super::source;

    #[test]
    fn upstream_file_round_trips_and_half_files_are_ignored() {
        let f = super::upstream_file("172.18.0.5:8080", "abc123");
        assert_eq!(
            source::parse_upstream(&f),
            Some("172.18.0.5:8080".parse().unwrap())
        );
        assert_eq!(
            source::parse_upstream("172.18.0.5:80"),
            None,
            "no newline: half written"
        );
        assert_eq!(source::parse_upstream(""), None);
        assert_eq!(source::parse_upstream("nonsense\n"), None);
    }

    #[test]
    fn the_proxy_is_embedded() {
        assert!(super::BINARY.len() > 10_000, "pipe-proxy was not built");
        assert!(super::image().starts_with("pipe-proxy:"));
    }
}
