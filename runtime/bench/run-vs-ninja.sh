#!/usr/bin/env bash
# Benchmark (not a test): N no-op shell steps (`true`), wide and chain shapes,
# at --jobs 2, against ninja -j2 running the same N commands.
# Usage: runtime/bench/run-vs-ninja.sh PIPE_BINARY [N...]   (default N: 1000 5000)
# Prints wall time, per-step overhead and peak RSS (needs GNU time at /usr/bin/time).
set -euo pipefail
pipe=$(realpath "$1"); shift
sizes=("${@:-1000 5000}")
[ $# -eq 0 ] && sizes=(1000 5000)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

measure() { # command... -> "seconds peak_rss_kb"
  /usr/bin/time -o "$work/time" -f '%e %M' "$@" >/dev/null 2>&1 || true
  tail -1 "$work/time"
}

for n in "${sizes[@]}"; do
  for shape in wide chain; do
    d="$work/$shape-$n"; mkdir -p "$d/pipelines"
    {
      echo "pipeline bench {"; echo "  stage s {"
      for ((i = 0; i < n; i++)); do
        if [ "$shape" = chain ] && [ $i -gt 0 ]; then
          echo "    step n$i { needs = [n$((i - 1))]  run = \"true\" }"
        else
          echo "    step n$i { run = \"true\" }"
        fi
      done
      echo "  }"; echo "}"
    } > "$d/pipelines/bench.pipe"
    {
      echo "rule r"; echo "  command = true"
      for ((i = 0; i < n; i++)); do
        if [ "$shape" = chain ] && [ $i -gt 0 ]; then
          echo "build o$i: r | o$((i - 1))"
        else
          echo "build o$i: r"
        fi
      done
      printf 'default'; for ((i = 0; i < n; i++)); do printf ' o%d' $i; done; echo
    } > "$d/build.ninja"
    read -r plan_s _ < <(cd "$d" && measure "$pipe" run bench --dry-run)
    read -r pipe_s pipe_kb < <(cd "$d" && measure "$pipe" run bench --jobs 2 --output plain --state-dir "$d/.pipe")
    read -r ninja_s _ < <(cd "$d" && rm -f .ninja_log && measure ninja -j2 -C "$d")
    awk -v n="$n" -v s="$shape" -v p="$pipe_s" -v pl="$plan_s" -v k="$pipe_kb" -v nj="$ninja_s" 'BEGIN {
      printf "%-5s %5d steps: pipe %6.2fs (%.2fms/step; parse+lower %.2fs, so %.2fms/step executing), peak RSS %.0f MB | ninja %6.2fs (%.2fms/step) | ratio %.2f (%.2f without lowering)\n",
        s, n, p, 1000*p/n, pl, 1000*(p-pl)/n, k/1024, nj, 1000*nj/n, p/nj, (p-pl)/nj }'
  done
done
