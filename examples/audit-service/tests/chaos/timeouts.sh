#!/usr/bin/env bash
# Chaos 7.4.1: the upstream is slow (the stage's latency fault). Every audit
# must end within its deadline — no hang, no deadlock — and a timeout must
# give a partial result (or, when robots.txt itself timed out, a clear
# "blocked" saying so), never an unexplained failure.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

export FETCH_TIMEOUT_MS="${FETCH_TIMEOUT_MS:-2000}"
export AUDIT_DEADLINE_MS="${AUDIT_DEADLINE_MS:-15000}"
export FETCH_ATTEMPTS="${FETCH_ATTEMPTS:-2}" BACKOFF_MS="${BACKOFF_MS:-200}"

acceptable() {
  case "$1" in
    completed) return 0 ;;
    partial) grep -q 'timed out\|could not be checked' <<<"$2" ;;
    blocked) grep -q 'robots.txt unreachable (timed out' <<<"$2" ;;
    *) return 1 ;;
  esac
}

start_upstream
run_audits timeouts "${CHAOS_AUDITS:-8}" $(( AUDIT_DEADLINE_MS / 1000 + 10 )) acceptable
