#!/usr/bin/env bash
# Benchmark (not a test) of issue 3's performance targets: N no-op shell steps
# (`true`), wide and chain shapes, `pipe run --jobs 2` against `ninja -j2`
# running the same N commands, in the same session, interleaved round by round
# so that both see the same machine load. See runtime/bench/README.md.
#
# Usage: runtime/bench/run-vs-ninja.sh PIPE_BINARY [N...]   (default N: 1000 5000)
#   ROUNDS=5   rounds per size and shape (median and min-max are reported)
# Needs ninja and GNU time at /usr/bin/time.
set -euo pipefail
pipe=$(realpath "$1")
shift
sizes=("$@")
[ $# -eq 0 ] && sizes=(1000 5000)
rounds=${ROUNDS:-5}
command -v ninja >/dev/null || { echo "ninja is not installed" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "GNU time (/usr/bin/time) is not installed" >&2; exit 2; }
work=$(mktemp -d)
# A tmpfs for the state store, to separate disk IO from the store's CPU cost.
shm=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$work" "$shm"' EXIT

# `measure OUT command...`: runs it, appends "seconds peak_rss_kb" to OUT, and
# fails the benchmark if the command fails (a failed run is not a figure).
measure() {
  local out=$1
  shift
  if ! /usr/bin/time -o "$work/time" -f '%e %M' "$@" >"$work/out" 2>"$work/err"; then
    echo "benchmark command failed: $*" >&2
    tail -5 "$work/out" "$work/err" >&2
    exit 1
  fi
  tail -1 "$work/time" >>"$out"
}

# `stats FILE COLUMN`: "median min max" of a column.
stats() {
  awk -v c="$2" '{print $c}' "$1" | sort -g | awk '{v[NR] = $1}
    END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}

gen() { # gen DIR SHAPE N
  local d=$1 shape=$2 n=$3 i
  mkdir -p "$d/pipelines"
  {
    echo "pipeline bench {"
    echo "  stage s {"
    for ((i = 0; i < n; i++)); do
      if [ "$shape" = chain ] && [ $i -gt 0 ]; then
        echo "    step n$i { needs = [n$((i - 1))]  run = \"true\" }"
      else
        echo "    step n$i { run = \"true\" }"
      fi
    done
    echo "  }"
    echo "}"
  } >"$d/pipelines/bench.pipe"
  {
    echo "rule r"
    echo "  command = true"
    for ((i = 0; i < n; i++)); do
      if [ "$shape" = chain ] && [ $i -gt 0 ]; then
        echo "build o$i: r | o$((i - 1))"
      else
        echo "build o$i: r"
      fi
    done
    printf 'default'
    for ((i = 0; i < n; i++)); do printf ' o%d' $i; done
    echo
  } >"$d/build.ninja"
}

echo "pipe: $pipe ($("$pipe" --version 2>/dev/null || echo '?'))"
echo "ninja: $(ninja --version); $(nproc) CPUs; $rounds rounds per row; load before: $(uptime | sed 's/.*load average: //')"
echo
rows="$work/rows"
: >"$rows"
for n in "${sizes[@]}"; do
  for shape in wide chain; do
    d="$work/$shape-$n"
    gen "$d" "$shape" "$n"
    f="$work/$shape-$n"
    : >"$f.ninja"; : >"$f.pipe"; : >"$f.shm"; : >"$f.plan"; : >"$f.store"; : >"$f.ratio"
    for ((r = 0; r < rounds; r++)); do
      (cd "$d" && measure "$f.plan" "$pipe" run bench --dry-run)
      rm -rf "$d/.ninja_log" "$d/.ninja_deps"
      (cd "$d" && measure "$f.ninja" ninja -j2 -C "$d")
      # The store's own time is the instrumented figure PIPE_BENCH_STATS
      # prints on stderr (see README.md).
      (cd "$d" && PIPE_BENCH_STATS=1 measure "$f.pipe" "$pipe" run bench --jobs 2 --output plain --state-dir "$d/state-$r")
      { grep -o 'store_us=[0-9]*' "$work/err" || echo =0; } | cut -d= -f2 >>"$f.store"
      # The same run with the store on tmpfs, to show what disk IO adds.
      (cd "$d" && measure "$f.shm" "$pipe" run bench --jobs 2 --output plain --state-dir "$shm/$shape-$n-$r")
      rm -rf "$d/state-$r" "$shm/$shape-$n-$r"
      paste -d' ' <(tail -1 "$f.pipe") <(tail -1 "$f.ninja") | awk '{print ($3 > 0 ? $1 / $3 : 0)}' >>"$f.ratio"
    done
    read -r nj_m nj_lo nj_hi < <(stats "$f.ninja" 1)
    read -r p_m p_lo p_hi < <(stats "$f.pipe" 1)
    read -r s_m _ _ < <(stats "$f.shm" 1)
    read -r pl_m _ _ < <(stats "$f.plan" 1)
    read -r rss_m _ rss_hi < <(stats "$f.pipe" 2)
    read -r st_m st_lo st_hi < <(stats "$f.store" 1)
    read -r ra_m ra_lo ra_hi < <(stats "$f.ratio" 1)
    echo "$shape $n $nj_m $nj_lo $nj_hi $p_m $p_lo $p_hi $ra_m $ra_lo $ra_hi $pl_m $s_m $st_m $st_lo $st_hi $rss_hi $(uptime | sed 's/.*load average: //; s/,.*//')" >>"$rows"
  done
done
awk 'BEGIN {
  printf "%-5s %5s | %-20s | %-20s | %-17s | %7s %7s | %6s | %7s | %-17s | %7s | %5s\n",
    "shape", "steps", "ninja s med [min-max]", "pipe s med [min-max]", "pipe/ninja [range]",
    "ms/step", "ninja", "lower s", "tmpfs s", "store ms/step", "RSS MB", "load"
}
{
  n = $2
  printf "%-5s %5d | %6.2f [%5.2f-%5.2f] | %6.2f [%5.2f-%5.2f] | %4.2f [%4.2f-%4.2f] | %7.3f %7.3f | %6.2f | %7.2f | %5.3f [%.3f-%.3f] | %7.1f | %5s\n",
    $1, n, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1000 * $6 / n, 1000 * $3 / n, $12, $13,
    $14 / 1000 / n, $15 / 1000 / n, $16 / 1000 / n, $17 / 1024, $18
}' "$rows"
echo
echo "pipe/ninja: the median of each round's ratio of wall times (pipe includes parsing and"
echo "lowering the pipeline, shown as 'lower s'). ms/step: median wall time / steps."
echo "tmpfs s: pipe with --state-dir on tmpfs. store ms/step: time spent in state store writes"
echo "(PIPE_BENCH_STATS: SQLite writes and commits, state dir on disk). RSS MB: highest peak RSS of pipe over the rounds."
echo "load after: $(uptime | sed 's/.*load average: //')"
