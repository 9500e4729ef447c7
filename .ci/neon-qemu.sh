#!/usr/bin/env bash
# aarch64 NEON kernels under emulation: cross-builds xverse-quant for aarch64-unknown-linux-gnu,
# runs clippy on it, then runs the kernel tests under qemu-user with `-cpu max` (NEON, dotprod,
# fp16), so every kernel test also runs the NEON level against the scalar reference.
# Runs as root (or with sudo) on a fresh Debian 12 machine with rustup's cargo.
set -euo pipefail

cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu

section() {
    printf '\n==================== %s ====================\n' "$*"
}

section "neon: system packages (qemu-user, aarch64 cross gcc and libc)"
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v qemu-aarch64 >/dev/null 2>&1 \
    || ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 \
    || [ ! -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ]; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends \
        qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
fi
qemu-aarch64 --version | head -n 1
aarch64-linux-gnu-gcc --version | head -n 1

section "neon: rust target $TARGET"
if command -v rustup >/dev/null 2>&1; then
    rustup target add "$TARGET"
    rustup component add clippy
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $SYSROOT -cpu max"

section "neon: cargo clippy -p xverse-quant --target $TARGET --all-targets -- -D warnings"
cargo clippy -p xverse-quant --target "$TARGET" --all-targets -- -D warnings

section "neon: cargo test -p xverse-quant --target $TARGET --lib kernels (qemu-aarch64 -cpu max)"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
cargo test -p xverse-quant --target "$TARGET" --lib kernels 2>&1 | tee "$LOG"
# The NEON path must really have run (neon_level_detected asserts the detected level), not
# been skipped by a filter that matched nothing.
grep -q 'kernels::neon::tests::neon_level_detected \.\.\. ok' "$LOG" || {
    echo "NEON level test did not run" >&2
    exit 1
}
echo "neon: all checks passed"
