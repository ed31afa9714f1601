#!/usr/bin/env bash
# Makes the root filesystem of the local base image `pipe-base/busybox`: Debian's
# busybox-static with its applets, a passwd/group with an unprivileged `app`
# user, and /tmp. Nothing is pulled: the release pipeline imports this
# directory through the Engine API (a `docker.import` step).
#
#   scripts/base-image.sh [DIR]     # default: dist/base-rootfs; prints DIR
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$here/dist/base-rootfs}"
busybox="${BUSYBOX:-/bin/busybox}"

if ! [ -x "$busybox" ] || ! "$busybox" --list >/dev/null 2>&1; then
  echo "error: $busybox is missing: install Debian's busybox-static (apt-get install busybox-static)" >&2
  exit 1
fi
if LC_ALL=C readelf -d "$busybox" 2>/dev/null | grep -q NEEDED; then
  echo "error: $busybox is dynamically linked: the base image needs busybox-static" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out/bin" "$out/etc" "$out/tmp" "$out/data"
chmod 1777 "$out/tmp"
install -m 0755 "$busybox" "$out/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$out/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:10001:10001:audit service:/data:/bin/false\n' >"$out/etc/passwd"
printf 'root:x:0:\napp:x:10001:\n' >"$out/etc/group"
printf 'hosts: files dns\n' >"$out/etc/nsswitch.conf"
echo "$out"
