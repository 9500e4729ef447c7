#!/usr/bin/env bash
# The AVX-512 kernels (quant/src/kernels/avx512.rs) under Miri, which emulates AVX-512 F, BW,
# VL and VNNI on any CPU: the crate is built with those target features enabled, so the kernels'
# own tests (kernels::avx512::tests, each kernel against the scalar reference) reach them even
# where the CPU has no AVX-512. XVERSE_REQUIRE_AVX512=1 makes those tests fail, never skip, if
# the AVX-512 level is not detected. Miri also checks every load for out-of-bounds and
# uninitialized reads. Runs in a few minutes (most of it building the Miri sysroot and crate).
set -euo pipefail

cd "$(dirname "$0")/.."
TOOLCHAIN=${MIRI_TOOLCHAIN:-nightly}
TARGET=x86_64-unknown-linux-gnu

if ! cargo +"$TOOLCHAIN" miri --version >/dev/null 2>&1; then
    if rustup toolchain list | grep -q "^$TOOLCHAIN"; then
        rustup component add --toolchain "$TOOLCHAIN" miri rust-src
    else
        rustup toolchain install "$TOOLCHAIN" --profile minimal --component miri,rust-src
    fi
fi
cargo +"$TOOLCHAIN" miri --version

# A target dir of its own: these flags must not mix with the regular builds' artifacts.
export CARGO_TARGET_DIR=${AVX512_MIRI_TARGET_DIR:-$PWD/target/miri-avx512}
# With an explicit --target, RUSTFLAGS reach only the interpreted crates, never the build
# scripts cargo runs natively (which must not contain AVX-512 instructions).
export RUSTFLAGS="-C target-feature=+avx512f,+avx512bw,+avx512vl,+avx512vnni,+avx2,+fma,+f16c"
export XVERSE_REQUIRE_AVX512=1
# Miri hides the host environment from the program unless a variable is forwarded.
export MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-env-forward=XVERSE_REQUIRE_AVX512"

start=$(date +%s)
cargo +"$TOOLCHAIN" miri setup --target "$TARGET"
cargo +"$TOOLCHAIN" miri test -p xverse-quant --lib --target "$TARGET" kernels::avx512
echo "AVX-512 kernels under Miri: passed in $(($(date +%s) - start)) s"
