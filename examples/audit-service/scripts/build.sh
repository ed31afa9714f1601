#!/usr/bin/env bash
# Builds the service's binaries statically linked (glibc, +crt-static) and
# copies them to dist/, the part of the Docker build context the Dockerfiles
# use. No Rust image can be pulled on these machines, so the compiler runs
# here and the images' build stage only assembles and checks the result.
#
#   scripts/build.sh            # release build into dist/
#   AUDIT_TARGET_DIR=... scripts/build.sh   # another target directory
#   AUDIT_DIST=/some/dir scripts/build.sh   # copy the binaries there instead
#
# The build has its own target directory (the flags differ from the
# workspace's, and a nested cargo must not wait on the outer one's lock).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# AUDIT_WORKSPACE: the cargo workspace holding the crate, when this copy of the
# example is not inside it (tests run release.pipe in a scratch project).
root="${AUDIT_WORKSPACE:-$(cd "$here/../.." && pwd)}"
target_dir="${AUDIT_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}/audit-static}"
triple="x86_64-unknown-linux-gnu"
dist="${AUDIT_DIST:-$here/dist}"

cd "$root"
# No debug info: smaller binaries, and a faster build than the workspace's release profile.
CARGO_PROFILE_RELEASE_DEBUG=0 RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" \
  cargo build --release --locked -p audit-service --target "$triple" \
  --target-dir "$target_dir" --bins

mkdir -p "$dist"
for bin in audit-api audit-worker; do
  src="$target_dir/$triple/release/$bin"
  if ! file_out="$(LC_ALL=C readelf -d "$src" 2>/dev/null)" || grep -q NEEDED <<<"$file_out"; then
    echo "error: $src is not statically linked" >&2
    exit 1
  fi
  install -m 0755 "$src" "$dist/$bin"
  echo "$dist/$bin: $(du -k "$dist/$bin" | cut -f1) KiB"
done
