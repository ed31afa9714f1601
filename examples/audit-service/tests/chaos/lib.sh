# Shared by the chaos scripts: the upstream site the fault proxy fronts, and
# running audits through the proxy with the worker's one-shot mode.
#
# The upstream is busybox httpd (Debian's busybox-static) serving a small site
# on 127.0.0.1:8081 — release.pipe's `chaos pagespeed` upstream — with a
# robots.txt that disallows /private and a page linking to allowed and
# disallowed pages. PAGESPEED_URL (set by the chaos stage) is the proxy's URL.

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
worker="${AUDIT_WORKER_BIN:-$here/dist/audit-worker}"
upstream_port="${UPSTREAM_PORT:-8081}"
: "${PAGESPEED_URL:?PAGESPEED_URL is not set: run this from the chaos stage (or point it at a proxy or http://127.0.0.1:$upstream_port)}"

if [ ! -x "$worker" ]; then
  echo "error: $worker not found: build it with examples/audit-service/scripts/build.sh" >&2
  exit 2
fi

site="$(mktemp -d)"
httpd_pid=""
cleanup() {
  [ -n "$httpd_pid" ] && kill "$httpd_pid" 2>/dev/null
  rm -rf "$site"
}
trap cleanup EXIT

start_upstream() {
  mkdir -p "$site/private"
  printf 'User-agent: *\nDisallow: /private\n' >"$site/robots.txt"
  printf '<html><head><title>Upstream</title><meta name="description" content="chaos upstream"></head><body><a href="/a.html">a</a> <a href="/b.html">b</a></body></html>\n' >"$site/index.html"
  for p in a b private/x; do printf '<html><title>%s</title></html>\n' "$p" >"$site/$p.html"; done
  if (exec 3<>"/dev/tcp/127.0.0.1/$upstream_port") 2>/dev/null; then
    echo "upstream: something already listens on 127.0.0.1:$upstream_port; using it"
    return
  fi
  busybox httpd -f -p "127.0.0.1:$upstream_port" -h "$site" &
  httpd_pid=$!
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$upstream_port") 2>/dev/null && return
    sleep 0.1
  done
  echo "error: the upstream did not start on 127.0.0.1:$upstream_port" >&2
  exit 2
}

# run_audits NAME N BOUND_SECONDS CHECK: N audits of PAGESPEED_URL, each
# killed after BOUND_SECONDS (a hang is a failure); CHECK STATUS JSON says
# whether a result is acceptable. Prints one line per audit and a summary.
run_audits() {
  local name="$1" n="$2" bound="$3" check="$4"
  local completed=0 partial=0 blocked=0 failed=0 hung=0 bad=0
  for i in $(seq 1 "$n"); do
    local t0 out code status
    t0=$(date +%s%N)
    out="$(timeout "$bound" "$worker" audit "$PAGESPEED_URL/")"
    code=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    if [ $code -eq 124 ]; then
      hung=$((hung + 1))
      echo "audit $i: HUNG (killed after ${bound}s)"
      continue
    fi
    # The worker prints {"url":...,"status":...,"http_status":...,"error":...,...}.
    status="$(sed -n 's/^{"url":"[^"]*","status":"\([a-z]*\)".*/\1/p' <<<"$out")"
    case "$status" in
      completed) completed=$((completed + 1)) ;;
      partial) partial=$((partial + 1)) ;;
      blocked) blocked=$((blocked + 1)) ;;
      *) failed=$((failed + 1)) ;;
    esac
    local err
    err="$(sed -n 's/^{"url":"[^"]*","status":"[a-z]*","http_status":[^,]*,"error":"\([^"]*\)".*/\1/p' <<<"$out")"
    if "$check" "$status" "$out"; then
      echo "audit $i: $status in ${ms} ms${err:+: $err}"
    else
      bad=$((bad + 1))
      echo "audit $i: UNEXPECTED $status in ${ms} ms: $out"
    fi
  done
  echo "chaos $name: $n audits: $completed completed, $partial partial, $blocked blocked, $failed failed, $hung hung; $bad unexpected"
  [ $hung -eq 0 ] && [ $bad -eq 0 ]
}
