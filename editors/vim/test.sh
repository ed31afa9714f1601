#!/usr/bin/env bash
# Tests the Vim runtime files headless: syntax groups and options on
# test/sample.pipe, and indent on every shipped .pipe file (gg=G leaves it
# unchanged, and re-indenting a copy with its indentation stripped gives the
# file back). Needs vim with +syntax (apt-get install vim-nox).
set -euo pipefail
cd "$(dirname "$0")"
root=../..

if ! command -v vim >/dev/null; then
  echo "vim not found: skipping the Vim runtime tests (apt-get install vim-nox)"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run_vim() { # file, then extra commands
  local file=$1; shift
  vim -N -Es -u NONE -i NONE -c 'set rtp^=.' -c 'filetype plugin indent on' \
    -c 'syntax on' -c "edit $file" "$@" -c 'qa!' </dev/null
}

PIPE_VIM_RESULT=$tmp/syntax.txt run_vim test/sample.pipe -c 'source test/syntax.vim'
cat "$tmp/syntax.txt"
passed=$(sed -n 's/^vim syntax: \([0-9]*\) passed.*/\1/p' "$tmp/syntax.txt")
failed=$(sed -n 's/.* \([0-9]*\) failed$/\1/p' "$tmp/syntax.txt")

shopt -s nullglob globstar
files=("$root"/pipelines/*.pipe "$root"/stdlib/*.pipe "$root"/examples/**/*.pipe test/sample.pipe)
for f in "${files[@]}"; do
  run_vim "$f" -c 'normal! gg=G' -c "write! $tmp/same.pipe"
  if diff -u "$f" "$tmp/same.pipe" >"$tmp/diff"; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL indent changes $f:"; cat "$tmp/diff"; fi
  cp "$f" "$tmp/flat.pipe"
  run_vim "$tmp/flat.pipe" -c 'source test/flatten.vim' -c "write! $tmp/reindented.pipe"
  if diff -u "$f" "$tmp/reindented.pipe" >"$tmp/diff"; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL re-indenting flattened $f:"; cat "$tmp/diff"; fi
done

# Without syntax highlighting, indent falls back to its own scan of each line.
for f in "${files[@]}"; do
  [ "$f" = test/sample.pipe ] && continue # its multi-line string needs syntax
  vim -N -Es -u NONE -i NONE -c 'set rtp^=.' -c 'filetype plugin indent on' \
    -c "edit $f" -c 'normal! gg=G' -c "write! $tmp/nosyntax.pipe" -c 'qa!' </dev/null
  if diff -u "$f" "$tmp/nosyntax.pipe" >"$tmp/diff"; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL indent without syntax changes $f:"; cat "$tmp/diff"; fi
done

echo "vim: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
