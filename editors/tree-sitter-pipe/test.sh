#!/usr/bin/env bash
# Generates the pipe parser, runs the corpus and highlight tests with the
# tree-sitter CLI, and parses every shipped .pipe file, failing on any ERROR
# or MISSING node. Usage: editors/tree-sitter-pipe/test.sh
#
# The CLI is the npm package tree-sitter-cli (pinned in package.json). Its
# install script downloads a prebuilt binary from GitHub releases; where that
# is not reachable, the same version is built from crates.io with cargo once
# and kept in ~/.cache/pipe/. Set TREE_SITTER=/path/to/tree-sitter to use
# another binary.
set -euo pipefail
cd "$(dirname "$0")"
root=../..

if ! command -v npm >/dev/null; then
  echo "npm not found: skipping the tree-sitter grammar tests"
  exit 0
fi

version=$(node -p 'require("./package.json").devDependencies["tree-sitter-cli"]')
npm ci --ignore-scripts --no-audit --no-fund

works() { [ -x "$1" ] && "$1" --version 2>/dev/null | grep -q " $version\b"; }

cli=node_modules/tree-sitter-cli/tree-sitter
cache=${XDG_CACHE_HOME:-$HOME/.cache}/pipe/tree-sitter-cli-$version
if [ -n "${TREE_SITTER:-}" ]; then
  cli=$TREE_SITTER
elif ! works "$cli"; then
  (cd node_modules/tree-sitter-cli && timeout 120 node install.js) >/dev/null 2>&1 || rm -f "$cli"
  if ! works "$cli"; then
    if works "$(command -v tree-sitter || true)"; then
      cli=$(command -v tree-sitter)
    else
      cli=$cache/bin/tree-sitter
      if ! works "$cli"; then
        echo "tree-sitter-cli $version: no prebuilt binary reachable; building it with cargo into $cache"
        cargo install tree-sitter-cli --version "$version" --locked --root "$cache" -j "${TREE_SITTER_BUILD_JOBS:-1}"
      fi
    fi
  fi
fi
echo "using $("$cli" --version) at $cli"

# Regenerate the parser and Helix's copy of the queries. Both are committed;
# in CI a difference from the committed files fails the run.
"$cli" generate
../helix/sync-queries.sh
if [ "${CI:-}" = true ] && ! git diff --quiet -- src ../helix/queries; then
  echo "generated files are stale: run editors/tree-sitter-pipe/test.sh and commit src/ and editors/helix/queries/"
  git diff --stat -- src ../helix/queries
  exit 1
fi

"$cli" test

# The queries must compile against the grammar (highlights are also checked
# by the assertions in test/highlight).
for query in queries/*.scm ../helix/queries/pipe/*.scm; do
  [ -f "$query" ] || continue
  "$cli" query "$query" "$root/pipelines/release.pipe" >/dev/null
done

shopt -s nullglob globstar
files=("$root"/pipelines/*.pipe "$root"/stdlib/*.pipe "$root"/examples/**/*.pipe)
passed=0
failed=0
for f in "${files[@]}"; do
  tree=$("$cli" parse "$f" 2>&1 || true)
  if ! grep -q '^(source_file' <<<"$tree" || grep -qE '\((ERROR|MISSING)' <<<"$tree"; then
    failed=$((failed + 1))
    echo "FAIL $f:"
    grep -nE '\((ERROR|MISSING)' <<<"$tree" | head -20
  else
    passed=$((passed + 1))
  fi
done
# The pest grammar must agree: every corpus input this grammar accepts has no
# syntax error for `pipe check`, and every `:error` input fails `pipe check`.
# Needs a built pipe binary (PIPE=..., or target/{debug,release}/pipe).
pipe=${PIPE:-}
for candidate in "$root/target/debug/pipe" "$root/target/release/pipe"; do
  [ -z "$pipe" ] && [ -x "$candidate" ] && pipe=$candidate
done
if [ -n "$pipe" ]; then
  inputs=$(mktemp -d)
  trap 'rm -rf "$inputs"' EXIT
  while IFS=$'\t' read -r file expect title; do
    if out=$("$pipe" check "$file" 2>&1); then status=0; else status=$?; fi
    if [ "$expect" = ok ] && grep -q 'pipe::syntax' <<<"$out"; then
      failed=$((failed + 1)); echo "FAIL pest rejects corpus input '$title':"; echo "$out" | head -20
    elif [ "$expect" = error ] && [ "$status" -eq 0 ]; then
      failed=$((failed + 1)); echo "FAIL pipe check accepts corpus :error input '$title'"
    else
      passed=$((passed + 1))
    fi
  done < <(node test/extract-corpus.js "$inputs")
else
  echo "no pipe binary (build it, or set PIPE=...): skipping the check of the corpus against pest"
fi

echo "tree-sitter: shipped files and corpus against pest: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
