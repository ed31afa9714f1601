#!/usr/bin/env bash
# The language benchmark in one command (docs/benchmarks.md):
#
#   bash lang/benches/run.sh [STEPS]        # default 10000
#
# 1. parse / check / lower / total in process (lang/benches/lower.rs);
# 2. the whole `pipe graph big --format json` process with hyperfine (median,
#    min, max, stddev) and its peak RSS with /usr/bin/time -v;
# 3. the reference: `just --summary` on a justfile of as many recipes, the same way.
# The load average is printed first and last: on a shared machine the figures
# are only comparable with it. RUNS (default 20) sets hyperfine's run count,
# BENCH_RUNS (default 15) the in-process one.
set -euo pipefail

steps=${1:-10000}
runs=${RUNS:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
pipe=$target/release/pipe
just=$(command -v just || true)
if [ -z "$just" ] && [ -x /work/tools/bin/just ]; then just=/work/tools/bin/just; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/pipelines"

echo "== machine: $(nproc) cores; load before: $(uptime | sed 's/.*load average: //')"
cargo build --release --bin pipe --quiet
cargo bench -p pipe-lang --bench lower --quiet -- "$steps" "$work/pipelines/big.pipe" "$work/justfile"

# A project as a user has one: a git repository, so `pipe` reads the git
# context (sha, branch, tag, dirty) as it would for real.
git -C "$work" init -q
git -C "$work" add -A
git -C "$work" -c user.name=bench -c user.email=bench@localhost commit -q -m bench

echo
echo "== whole process ($runs runs, output discarded)"
cmds=(-n "pipe graph --format json" "$pipe -C $work graph big --format json")
if [ -n "$just" ]; then
    cmds+=(-n "just --summary" "$just --justfile $work/justfile --working-directory $work --summary")
else
    echo "(just not found: no reference)"
fi
hyperfine -N --style basic --warmup 3 --runs "$runs" --export-json "$work/times.json" "${cmds[@]}" >/dev/null
jq -r '.results[] | "\(.command | .[0:26] | . + " " * (26 - length)) median \(.median * 1000 | floor) ms  min \(.min * 1000 | floor) ms  max \(.max * 1000 | floor) ms  stddev \(.stddev * 1000 | floor) ms  cpu: user \(.user * 1000 | floor) ms sys \(.system * 1000 | floor) ms"' "$work/times.json"

echo
echo "== peak memory (maximum resident set size)"
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | sed -n 's/.*Maximum resident set size (kbytes): //p'; }
echo "pipe graph --format json   $(( $(rss "$pipe" -C "$work" graph big --format json) / 1024 )) MB"
if [ -n "$just" ]; then
    echo "just --summary             $(( $(rss "$just" --justfile "$work/justfile" --working-directory "$work" --summary) / 1024 )) MB"
fi
echo "== output: $("$pipe" -C "$work" graph big --format json | wc -c) bytes of JSON"
echo "== load after: $(uptime | sed 's/.*load average: //')"
