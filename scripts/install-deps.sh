#!/usr/bin/env bash
# Installs what building and testing strata needs beyond the Rust toolchain.
# Idempotent; safe to run on every CI run. By default (no flags, as .ci/run
# calls it) it installs the aarch64 cross toolchain and user-mode emulator
# (Debian: qemu-user, gcc-aarch64-linux-gnu, libc6-dev-arm64-cross) when
# `qemu-aarch64` or `aarch64-linux-gnu-gcc` is missing: strata-codegen's tests
# link Cranelift-emitted aarch64 objects into a static C harness and run it
# under qemu-aarch64. With --dev, also the developer tools
# (cargo-insta for reviewing snapshots, cargo-fuzz for fuzzing). With --with-lp,
# also the CBC solver library that the off-by-default cargo feature
# `strata-passes/lp` (ILP extraction in eqsat) links against; the default path
# (what .ci/run calls, no flags) never installs it. Flags combine.
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

sudo_cmd=""
[ "$(id -u)" = 0 ] || sudo_cmd="sudo"

# aarch64 cross toolchain + emulator for the codegen tests (default path).
if ! need_cmd qemu-aarch64 || ! need_cmd aarch64-linux-gnu-gcc; then
    if ! need_cmd apt-get; then
        echo "the aarch64 tests need qemu-aarch64 and aarch64-linux-gnu-gcc" \
            "(Debian: qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross); install them by hand" >&2
        exit 1
    fi
    $sudo_cmd apt-get update
    $sudo_cmd apt-get install -y qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
fi

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
        $sudo_cmd apt-get update
        $sudo_cmd apt-get install -y coinor-libcbc-dev
    fi
fi
echo "dependencies: ok"
