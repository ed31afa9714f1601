#!/usr/bin/env bash
# The README's demo: brings up what release.pipe needs on this machine, then
# runs it. Idempotent; run it as root on a fresh Debian machine.
#
#   bash examples/audit-service/scripts/demo.sh            # build, scan, staging
#   git tag v0.1.0
#   bash examples/audit-service/scripts/demo.sh --env prod --git-ref v0.1.0 -p approvers=alice --approve-as alice
#
# Arguments go to `pipe run release` (default: --env staging).
#  1. .ci/docker-up.sh: dockerd, busybox-static, a registry on 127.0.0.1:5000
#     (the base image itself is made by release.pipe's build stage, offline);
#     .ci/example-deps.sh: static libc, readelf and Trivy (PyPI wheel);
#  2. builds pipe (cargo, debug profile) into $CARGO_TARGET_DIR or target/;
#  3. the secrets, made once in .pipe/secrets (one file each, mode 600):
#     API_TOKEN, SMOKE_TOKEN (the same value) and SLACK_WEBHOOK, which points
#     at scripts/webhook-sink.py on 127.0.0.1:8099, started here when nothing
#     listens there: notifications land in var/notifications.jsonl;
#  4. pipe run release "$@".
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"

bash .ci/docker-up.sh
bash .ci/example-deps.sh

echo "== demo: building pipe"
cargo build --locked --bin pipe
pipe="${CARGO_TARGET_DIR:-$root/target}/debug/pipe"

secrets=.pipe/secrets
if ! [ -f "$secrets/API_TOKEN" ]; then
  echo "== demo: making the secrets in $secrets"
  mkdir -p "$secrets"
  chmod 700 "$secrets"
  token="demo-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  (umask 077
   printf '%s\n' "$token" >"$secrets/API_TOKEN"
   printf '%s\n' "$token" >"$secrets/SMOKE_TOKEN"
   printf '%s\n' "http://127.0.0.1:8099/hook" >"$secrets/SLACK_WEBHOOK")
fi

if ! (exec 3<>/dev/tcp/127.0.0.1/8099) 2>/dev/null; then
  echo "== demo: webhook sink on 127.0.0.1:8099 -> var/notifications.jsonl"
  mkdir -p var
  nohup python3 examples/audit-service/scripts/webhook-sink.py 127.0.0.1:8099 var/notifications.jsonl \
    >/dev/null 2>&1 &
  sleep 0.5
fi

[ $# -gt 0 ] || set -- --env staging
echo "== demo: $pipe run release $*"
exec "$pipe" run release "$@"
