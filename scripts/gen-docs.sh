#!/usr/bin/env bash
# Regenerates the generated parts of docs/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -- opt --list-passes --markdown > docs/passes.md
echo "wrote docs/passes.md"
