//! Builds `proxy/pipe-proxy.rs`, the TCP proxy of blue-green deployments, as a
//! static executable that `pipe` embeds and ships in an image of one file
//! (see `src/deploy/proxy.rs`). When static linking is not possible here (no
//! static C library), an empty file is embedded and blue-green deploys say so.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "proxy/pipe-proxy.rs";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let dest = out.join("pipe-proxy");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let target = std::env::var("TARGET").expect("TARGET");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-name",
            "pipe_proxy",
            "--crate-type",
            "bin",
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-C",
            "target-feature=+crt-static",
            "--target",
            &target,
            "-o",
        ])
        .arg(&dest)
        .arg(src)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        println!(
            "cargo:warning=pipe-proxy could not be linked statically ({status:?}); blue-green deploys will be unavailable"
        );
        std::fs::write(&dest, b"").expect("write placeholder");
    }
}
