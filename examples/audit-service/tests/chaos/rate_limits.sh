#!/usr/bin/env bash
# Chaos 7.4.2: the upstream answers 429 with Retry-After (the stage's
# http_status fault). Audits must retry with backoff, honour Retry-After, and
# end completed or partial (retries exhausted) — never failed, never hung.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

export FETCH_TIMEOUT_MS="${FETCH_TIMEOUT_MS:-5000}"
export AUDIT_DEADLINE_MS="${AUDIT_DEADLINE_MS:-30000}"
export FETCH_ATTEMPTS="${FETCH_ATTEMPTS:-4}" BACKOFF_MS="${BACKOFF_MS:-200}"
export MAX_RETRY_AFTER_MS="${MAX_RETRY_AFTER_MS:-5000}"

honoured=0
acceptable() {
  grep -q '"retry_after":true' <<<"$2" && honoured=$((honoured + 1))
  case "$1" in
    completed) return 0 ;;
    partial) grep -q '429\|could not be checked' <<<"$2" ;;
    blocked) grep -q 'robots.txt unavailable (429)' <<<"$2" ;;
    *) return 1 ;;
  esac
}

start_upstream
run_audits rate_limits "${CHAOS_AUDITS:-8}" $(( AUDIT_DEADLINE_MS / 1000 + 10 )) acceptable
rc=$?
echo "audits that waited as Retry-After said: $honoured"
exit $rc
