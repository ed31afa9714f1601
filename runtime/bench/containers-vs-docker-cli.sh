#!/usr/bin/env bash
# Benchmark (not a test): the overhead of a container step (create, start,
# wait, remove through the Engine API) against `docker run --rm` with the same
# image and command, in the same session. N no-op steps (`sh -c true`) in one
# stage, run sequentially (--jobs 1) and in parallel (--jobs 2); the docker CLI
# runs the same N containers one after another, and two at a time (xargs -P2).
# Each shape is repeated R times, interleaved with the CLI, so machine load
# hits both alike; prints the median and min..max per container, and the load.
# Usage: runtime/bench/containers-vs-docker-cli.sh PIPE_BINARY [N] [R]   (default 20 5)
# Needs a running Engine and the docker CLI (the CLI is the baseline only).
set -euo pipefail
pipe=$(realpath "$1")
n=${2:-20}
reps=${3:-5}
work=$(mktemp -d)
tag="pipebench-$$-$(date +%s):1"
cleanup() {
  docker rmi -f "$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The busybox-static base image, imported offline (nothing can be pulled).
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do
  [ "$a" = busybox ] || ln -s busybox "$work/rootfs/bin/$a"
done
tar -C "$work/rootfs" -c . | docker import - "$tag" >/dev/null

d="$work/proj"
mkdir -p "$d/pipelines"
{
  echo "pipeline bench {"
  echo "  stage s {"
  for ((i = 0; i < n; i++)); do
    echo "    step c$i { image = \"$tag\"  run = \"true\" }"
  done
  echo "  }"
  echo "}"
} >"$d/pipelines/bench.pipe"

secs() { # command... -> wall seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
pipe_run() { (cd "$d" && rm -rf .pipe && "$pipe" run bench --jobs "$1" --output plain); }
cli_seq() { for ((i = 0; i < n; i++)); do docker run --rm "$tag" sh -c true; done; }
cli_par() { seq "$n" | xargs -P2 -I{} docker run --rm "$tag" sh -c true; }

# One warm-up of each, not counted (page cache, the Engine's first container).
pipe_run 1 >/dev/null 2>&1
docker run --rm "$tag" sh -c true >/dev/null

declare -A t
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
for ((r = 0; r < reps; r++)); do
  t[pipe1]+="$(secs pipe_run 1) "
  t[cli1]+="$(secs cli_seq) "
  t[pipe2]+="$(secs pipe_run 2) "
  t[cli2]+="$(secs cli_par) "
done
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"

stats() { # seconds... -> "median min max" in ms per container
  printf '%s\n' "$@" | sort -n | awk -v n="$n" '{ a[NR] = $1 * 1000 / n }
    END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
          printf "%.1f %.1f %.1f\n", m, a[1], a[NR] }'
}
for shape in 1 2; do
  read -r pm pmin pmax < <(stats ${t[pipe$shape]})
  read -r cm cmin cmax < <(stats ${t[cli$shape]})
  label=$([ $shape = 1 ] && echo "sequential" || echo "parallel (--jobs 2 / xargs -P2)")
  awk -v l="$label" -v n="$n" -v r="$reps" -v pm="$pm" -v pmin="$pmin" -v pmax="$pmax" \
      -v cm="$cm" -v cmin="$cmin" -v cmax="$cmax" 'BEGIN {
    printf "%-32s %d containers x %d: pipe %6.1f ms/container (%.1f..%.1f) | docker run --rm %6.1f ms/container (%.1f..%.1f) | pipe/cli %.2f\n",
      l, n, r, pm, pmin, pmax, cm, cmin, cmax, pm / cm }'
done
