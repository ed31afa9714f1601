#!/usr/bin/env bash
# Builds the VS Code extension into editors/vscode/pipe-lang-<version>.vsix
# with vsce (from npm). Usage: editors/vscode/package.sh
set -euo pipefail
cd "$(dirname "$0")"

# --ignore-scripts: no dependency needs an install script to package.
npm ci --ignore-scripts --no-audit --no-fund
node --test test/
version=$(node -p 'require("./package.json").version')
npx --no-install vsce package --no-yarn --skip-license --allow-missing-repository \
  --out "pipe-lang-$version.vsix"
echo "built $(pwd)/pipe-lang-$version.vsix"
