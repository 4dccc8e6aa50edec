#!/usr/bin/env bash
# Installs what building and testing strata needs beyond the Rust toolchain.
# Idempotent; safe to run on every CI run. With --dev, also the developer tools
# (cargo-insta for reviewing snapshots, cargo-fuzz for fuzzing). With --with-lp,
# also the CBC solver library that the off-by-default cargo feature
# `strata-passes/lp` (ILP extraction in eqsat) links against; the default path
# (what .ci/run calls, no flags) never installs it. Flags combine.
#
# Today the build and the tests need nothing else. Later stages add Debian
# packages here (qemu-user and gcc-aarch64-linux-gnu for the aarch64 tests).
set -euo pipefail

need_cmd() { command -v "$1" >/dev/null 2>&1; }

if ! need_cmd cargo; then
    echo "cargo is missing: install the Rust toolchain (rustup) first" >&2
    exit 1
fi

dev=0
with_lp=0
for arg in "$@"; do
    case "$arg" in
        --dev) dev=1 ;;
        --with-lp) with_lp=1 ;;
        *)
            echo "unknown option: $arg (known: --dev, --with-lp)" >&2
            exit 2
            ;;
    esac
done

if [ "$dev" = 1 ]; then
    need_cmd cargo-insta || cargo install --locked cargo-insta
    need_cmd cargo-fuzz || cargo install --locked cargo-fuzz
fi

if [ "$with_lp" = 1 ]; then
    # Debian/Ubuntu package name; only installed when missing.
    if ! dpkg-query -W -f='${Status}' coinor-libcbc-dev 2>/dev/null | grep -q "install ok installed"; then
        if ! need_cmd apt-get; then
            echo "--with-lp needs the CBC library (Debian: coinor-libcbc-dev); install it by hand" >&2
            exit 1
        fi
        sudo_cmd=""
        [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
        $sudo_cmd apt-get update
        $sudo_cmd apt-get install -y coinor-libcbc-dev
    fi
fi
echo "dependencies: ok"
