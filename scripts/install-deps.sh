#!/usr/bin/env bash
# Installs what building and testing strata needs beyond the Rust toolchain.
# Idempotent; safe to run on every CI run. With --dev, also the developer tools
# (cargo-insta for reviewing snapshots, cargo-fuzz for fuzzing).
#
# Today the build and the tests need nothing else. Later stages add Debian
# packages here (qemu-user and gcc-aarch64-linux-gnu for the aarch64 tests).
set -euo pipefail

need_cmd() { command -v "$1" >/dev/null 2>&1; }

if ! need_cmd cargo; then
    echo "cargo is missing: install the Rust toolchain (rustup) first" >&2
    exit 1
fi

if [ "${1:-}" = "--dev" ]; then
    need_cmd cargo-insta || cargo install --locked cargo-insta
    need_cmd cargo-fuzz || cargo install --locked cargo-fuzz
fi
echo "dependencies: ok"
