#!/usr/bin/env bash
# Database migrations for the audit service, for people and for pipelines
# (std/db's `db.migrate` calls it with --status, --backup, --up, --rollback).
#
#   DATABASE_URL=sqlite:///var/lib/audit/audit.db scripts/run_migrations.sh --status
#   scripts/run_migrations.sh --backup          # copy to backups/ beside the database
#   scripts/run_migrations.sh --up [N]          # back up, apply all (or up to N)
#   scripts/run_migrations.sh --down N          # back up, revert to version N
#   scripts/run_migrations.sh --rollback [FILE] # restore the newest backup (or FILE)
#
# Exit codes: 0 done; 1 a migration failed and the database was restored from
# the backup; 2 usage; 3 database, migrations or backup unreadable; 4 the
# restore failed too (restore by hand: the message names the files).
# With $PIPE_OUTPUT set (inside pipe), `version=N` is written there.
#
# The work is done by the service's own binary (`audit-api migrate`), so the
# script, the image and the tests apply the same migrations the same way.
# AUDIT_API_BIN overrides the binary (default: dist/audit-api from
# scripts/build.sh); MIGRATIONS_DIR the SQL files (default: migrations/).
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${AUDIT_API_BIN:-$here/dist/audit-api}"
dir="${MIGRATIONS_DIR:-$here/migrations}"

usage() { sed -n '4,9p' "$0" | sed 's/^# *//' >&2; exit 2; }

if [ ! -x "$bin" ]; then
  echo "error: $bin not found: build it with examples/audit-service/scripts/build.sh (or set AUDIT_API_BIN)" >&2
  exit 3
fi
if [ -z "${DATABASE_URL:-}" ]; then
  echo "error: DATABASE_URL is not set (e.g. sqlite:///var/lib/audit/audit.db)" >&2
  exit 3
fi

migrate() { "$bin" migrate --dir "$dir" "$@"; }

[ $# -ge 1 ] || usage
cmd="$1"; shift
case "$cmd" in
  --status)   [ $# -eq 0 ] || usage; migrate status ;;
  --backup)   [ $# -eq 0 ] || usage; migrate backup ;;
  # `migrate up` takes its own backup first and restores it if a migration fails.
  --up)       if [ $# -eq 1 ]; then migrate up --to "$1"; else [ $# -eq 0 ] || usage; migrate up; fi ;;
  --down)     [ $# -eq 1 ] || usage; migrate down --to "$1" ;;
  --rollback) [ $# -le 1 ] || usage; migrate restore "$@" ;;
  -h|--help)  usage ;;
  *)          echo "error: unknown option $cmd" >&2; usage ;;
esac
code=$?
[ $code -eq 0 ] || exit $code
if [ -n "${PIPE_OUTPUT:-}" ]; then
  echo "version=$(migrate version)" >>"$PIPE_OUTPUT"
fi
exit 0
