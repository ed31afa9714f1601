#!/usr/bin/env bash
# Installs the extension's npm dependencies and runs its tests: the TextMate
# grammar through vscode-textmate + vscode-oniguruma, the manifest, and the
# LSP client's command line. Usage: editors/vscode/test.sh
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null; then
  echo "npm not found: skipping the VS Code extension tests"
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund
node --test test/
