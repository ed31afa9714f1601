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
#  3. the secrets, made once, each environment its own (one file each, mode
#     600): .pipe/secrets/staging/{API_TOKEN,SMOKE_TOKEN,SLACK_WEBHOOK} and
#     .pipe/secrets/prod/{API_TOKEN,SLACK_WEBHOOK}. The tokens are random and
#     differ per environment (SMOKE_TOKEN is staging's API_TOKEN); the
#     webhooks point at scripts/webhook-sink.py on 127.0.0.1:8099
#     (/hook/staging, /hook/prod), started here when nothing listens there:
#     notifications land in var/notifications.jsonl;
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
random_token() { echo "demo-$1-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"; }
for env in staging prod; do
  dir="$secrets/$env"
  [ -f "$dir/API_TOKEN" ] && continue
  echo "== demo: making the $env secrets in $dir"
  mkdir -p "$dir"
  chmod 700 "$secrets" "$dir"
  token="$(random_token "$env")"
  (umask 077
   printf '%s\n' "$token" >"$dir/API_TOKEN"
   [ "$env" = staging ] && printf '%s\n' "$token" >"$dir/SMOKE_TOKEN"
   printf '%s\n' "http://127.0.0.1:8099/hook/$env" >"$dir/SLACK_WEBHOOK")
done

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
