//! Dot-product kernels for matrix × vector and matrix × matrix products.
//!
//! Activations are quantized once per row to the block format ggml pairs with the weight
//! type ([`vec_dot_type`]), then each weight row is dotted with them by an integer kernel.
//! Every kernel exists as a scalar reference ([`scalar`], integer sums exactly as ggml's
//! scalar `ggml_vec_dot_*` code) and as SIMD kernels: AVX2+FMA(+F16C) ([`avx2`]), AVX-512
//! with VNNI ([`avx512`]) on x86-64, NEON with the dot-product extension ([`neon`]) on
//! aarch64. The level is detected once at run time ([`simd_level`]), so one binary runs on
//! any x86-64; the environment variable `XVERSE_SIMD=scalar|neon|avx2|avx512` caps it (never
//! raises it), so every lower path can be tested on a CPU that has the higher ones.
//!
//! Prompts multiply a weight matrix with many activation rows: [`vec_dot_tile`] computes a
//! tile of up to [`TILE_ROWS`] weight rows × [`TILE_COLS`] activation rows at once, so each
//! weight block is unpacked once per tile and the partial sums stay in registers.
//!
//! Lengths are checked once at the public entry: [`vec_dot`] returns `0.0` when `n` is not a
//! whole number of blocks or a byte slice does not hold exactly the blocks `n` needs, so no
//! kernel ever reads out of bounds.

use crate::types::GgmlType;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx2_q4_0x8;
#[cfg(target_arch = "x86_64")]
pub mod avx2_q4_kx8;
#[cfg(target_arch = "x86_64")]
pub mod avx2_q6_kx8;
#[cfg(target_arch = "x86_64")]
pub mod avx2_q8_0x8;
#[cfg(target_arch = "x86_64")]
pub mod avx2_tile;
#[cfg(target_arch = "x86_64")]
pub mod avx2_tile_k;
#[cfg(target_arch = "x86_64")]
mod avx2_transpose;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod avx512_bf16;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod packed;
pub mod q4_0x8;
pub mod q4_kx8;
pub mod q6_kx8;
pub mod q8_0x8;
pub mod scalar;

/// A SIMD instruction-set level, ordered from least to most capable. A CPU has only the
/// levels of its own architecture (x86-64: scalar, AVX2, AVX-512; aarch64: scalar, NEON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Portable Rust, no explicit SIMD.
    Scalar,
    /// aarch64 NEON with the dot-product extension (`sdot`).
    Neon,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F, BW, VL and VNNI (`vpdpbusd`), on top of [`SimdLevel::Avx2`].
    Avx512,
}

impl SimdLevel {
    /// Every level, lowest first.
    pub const ALL: [SimdLevel; 4] = [
        SimdLevel::Scalar,
        SimdLevel::Neon,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
    ];

    /// Parses `scalar`, `neon`, `avx2` or `avx512` (case-insensitive).
    pub fn from_name(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(SimdLevel::Scalar),
            "neon" => Some(SimdLevel::Neon),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    /// The lower-case name (`scalar`, `neon`, `avx2`, `avx512`).
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Neon => "neon",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// Whether this CPU runs the kernels of this level.
    pub fn available(self) -> bool {
        available_on_this_cpu(self, hardware_level())
    }
}

/// Whether `level` is usable on a CPU whose best level is `hw` (same architecture, not above).
fn available_on_this_cpu(level: SimdLevel, hw: SimdLevel) -> bool {
    match level {
        SimdLevel::Scalar => true,
        SimdLevel::Neon => hw == SimdLevel::Neon,
        SimdLevel::Avx2 | SimdLevel::Avx512 => hw >= level,
    }
}

/// How far ahead of the data in hand the attention's kernels ask for the KV cache's lines
/// (this crate's [`q4_0x8::gemv_groups_with`] and [`q4_0x8::gemm2x2_with`] over q4_0 keys and
/// values, and the runtime's row kernels over f32, f16 and q8_0 caches). The cache lies in
/// 4 KiB pages, at whose ends the hardware prefetchers stop, and its runs are short (one kv
/// head's keys; one group of eight dimensions' values). Measured at depth 4096 with one
/// thread, switching the distance between tokens in one process (README "Attention over the
/// KV cache", session 13), median ms per token: q4_0 cache 26.6 with none, 22.8 / 22.3 / 23.1
/// at 1 / 2 / 4 KiB; f16 cache 72.4 → 59.4 at 2 KiB; q8_0 52.8 → 47.7.
pub const CACHE_PREFETCH_AHEAD: usize = 2048;

/// Asks the CPU for the 64-byte lines of `bytes` bytes starting `ahead` bytes past `p`. A
/// prefetch is a hint: it reads nothing architecturally and never faults, whatever the
/// address, so `p + ahead` may lie past the end of the data. No-op off x86-64.
#[inline]
pub fn prefetch_ahead(p: *const u8, ahead: usize, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = p.wrapping_add(ahead);
        for l in (0..bytes).step_by(64) {
            // SAFETY: `_mm_prefetch` needs only SSE, which every x86-64 CPU has; a prefetch
            // hint never faults and reads nothing architecturally.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    p.wrapping_add(l).cast(),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, ahead, bytes);
}

/// The levels this CPU runs, lowest first (the tests run every kernel at each of them).
pub fn available_levels() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| l.available())
        .collect()
}

/// The best level this CPU supports, ignoring the environment.
pub fn hardware_level() -> SimdLevel {
    static HW: OnceLock<SimdLevel> = OnceLock::new();
    *HW.get_or_init(detect_hardware)
}

#[cfg(target_arch = "x86_64")]
fn detect_hardware() -> SimdLevel {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    if !avx2 {
        return SimdLevel::Scalar;
    }
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
    {
        SimdLevel::Avx512
    } else {
        SimdLevel::Avx2
    }
}

#[cfg(target_arch = "aarch64")]
fn detect_hardware() -> SimdLevel {
    if std::arch::is_aarch64_feature_detected!("neon")
        && std::arch::is_aarch64_feature_detected!("dotprod")
        && std::arch::is_aarch64_feature_detected!("fp16")
    {
        SimdLevel::Neon
    } else {
        SimdLevel::Scalar
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect_hardware() -> SimdLevel {
    SimdLevel::Scalar
}

/// The level the kernels use: [`hardware_level`] capped by `XVERSE_SIMD` (an unknown value
/// is ignored). Detected once.
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let hw = hardware_level();
        match std::env::var("XVERSE_SIMD")
            .ok()
            .and_then(|v| SimdLevel::from_name(&v))
        {
            Some(cap) => effective(cap, hw),
            None => hw,
        }
    })
}

/// The best level `<= want` this CPU runs.
fn effective(want: SimdLevel, hw: SimdLevel) -> SimdLevel {
    SimdLevel::ALL
        .into_iter()
        .rev()
        .find(|&l| l <= want && available_on_this_cpu(l, hw))
        .unwrap_or(SimdLevel::Scalar)
}

/// The activation format ggml pairs with weight type `w`.
pub fn vec_dot_type(w: GgmlType) -> GgmlType {
    match w {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => GgmlType::Q8_1,
        GgmlType::Q2K
        | GgmlType::Q3K
        | GgmlType::Q4K
        | GgmlType::Q5K
        | GgmlType::Q6K
        | GgmlType::Q8K => GgmlType::Q8K,
        GgmlType::F16 => GgmlType::F16,
        GgmlType::BF16 => GgmlType::BF16,
        GgmlType::F32 => GgmlType::F32,
    }
}

/// Whether [`vec_dot`] has a kernel for weight type `w`.
pub fn supported(w: GgmlType) -> bool {
    matches!(
        w,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q8_0
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
    )
}

/// Quantizes one activation row `x` to [`vec_dot_type`]`(w)` blocks in `out` (resized to
/// exactly the bytes needed). If `x.len()` is not a whole number of blocks, `out` is left
/// empty (and [`vec_dot`] with it returns 0).
pub fn quantize_activations(w: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    let t = vec_dot_type(w);
    out.clear();
    let Some(bytes) = t.bytes_for(x.len() as u64) else {
        return;
    };
    out.resize(bytes as usize, 0);
    if crate::blocks::quantize_row(t, x, out).is_err() {
        out.clear();
    }
}

/// Checks the lengths: `n` whole blocks of `w` in `w_row` and of [`vec_dot_type`]`(w)` in `act`.
fn lengths_ok(w: GgmlType, n: usize, w_row: &[u8], act: &[u8]) -> bool {
    let n = n as u64;
    w.bytes_for(n) == Some(w_row.len() as u64)
        && vec_dot_type(w).bytes_for(n) == Some(act.len() as u64)
}

/// The dot product of `n` weights (`w_row`, type `w`) with `n` activations (`act`, type
/// [`vec_dot_type`]`(w)`, from [`quantize_activations`]) at [`simd_level`].
///
/// The SIMD kernels for Q8_0 activations use the sign trick of ggml (`|x|·sign(y, x)`), so like
/// ggml they assume no activation quant is -128 ([`quantize_activations`] never writes one);
/// Q8_K activations may hold -128.
///
/// Returns `0.0` when `w` is not [`supported`] or a length is wrong (`n` not a whole number of
/// blocks, or a slice not exactly the bytes `n` elements need).
pub fn vec_dot(w: GgmlType, n: usize, w_row: &[u8], act: &[u8]) -> f32 {
    vec_dot_with(simd_level(), w, n, w_row, act)
}

/// [`vec_dot`] at the best level `<= level` that both this CPU and a kernel for `w` have.
pub fn vec_dot_with(level: SimdLevel, w: GgmlType, n: usize, w_row: &[u8], act: &[u8]) -> f32 {
    if !supported(w) || !lengths_ok(w, n, w_row, act) {
        return 0.0;
    }
    let level = effective(level, hardware_level());
    #[cfg(target_arch = "x86_64")]
    {
        if level >= SimdLevel::Avx512 && w == GgmlType::BF16 && avx512_bf16::available() {
            // SAFETY: `available()` checked AVX-512 F, BW and BF16.
            return unsafe { avx512_bf16::bf16_bf16(w_row, act) };
        }
        if level >= SimdLevel::Avx512 && avx512_row_kernel(w) {
            // SAFETY: `effective` returns `Avx512` only when the CPU has AVX-512 F, BW, VL and
            // VNNI besides AVX2, FMA and F16C.
            if let Some(v) = unsafe { avx512::vec_dot(w, w_row, act) } {
                return v;
            }
        }
        if level >= SimdLevel::Avx2 {
            // SAFETY: `effective` returns `Avx2` or above only when the CPU has AVX2, FMA and
            // F16C.
            if let Some(v) = unsafe { avx2::vec_dot(w, w_row, act) } {
                return v;
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    if level == SimdLevel::Neon {
        // SAFETY: `effective` returns `Neon` only when the CPU has NEON, dotprod and fp16.
        if let Some(v) = unsafe { neon::vec_dot(w, w_row, act) } {
            return v;
        }
    }
    let _ = level;
    scalar::vec_dot(w, w_row, act).unwrap_or(0.0)
}

/// Whether [`vec_dot`] at the AVX-512 level takes `w`'s AVX-512 kernel. The one AVX-512
/// machine measured (Intel Sapphire Rapids, 16 cores, `vec_dot_speed` 4096 × 4096, 1 thread)
/// ran the AVX2 kernels faster for Q4_K (9.1 against 7.2 GB/s) and Q5_K (9.6 against 8.3),
/// and equally for Q3_K, so these keep AVX2; every other type is faster with AVX-512
/// (Q4_0 7.2 against 5.7, Q8_0 14.2 against 12.1, BF16 22.5 against 14.2 GB/s).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_row_kernel(w: GgmlType) -> bool {
    !matches!(w, GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K)
}

/// Most weight rows one [`vec_dot_tile`] kernel call takes.
pub const TILE_ROWS: usize = 4;
/// Most activation rows one [`vec_dot_tile`] kernel call takes.
pub const TILE_COLS: usize = 4;

/// `out[r * acts.len() + t] = vec_dot(w, n, rows[r], acts[t])` for every weight row `r` and
/// activation row `t` (any counts; `out` must hold `rows.len() * acts.len()` values), at
/// [`simd_level`]. The SIMD levels compute tiles of up to [`TILE_ROWS`] × [`TILE_COLS`] at
/// once (each weight block unpacked once per tile); a value may differ from [`vec_dot`]'s
/// only by the order of the float sums.
///
/// Where a length is wrong (a row or activation not exactly the bytes of `n` elements, `n`
/// not whole blocks, `out` of the wrong size) or `w` is not [`supported`], `out` is zeroed.
pub fn vec_dot_tile(w: GgmlType, n: usize, rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    vec_dot_tile_with(simd_level(), w, n, rows, acts, out)
}

/// [`vec_dot_tile`] at the best level `<= level` this CPU runs.
pub fn vec_dot_tile_with(
    level: SimdLevel,
    w: GgmlType,
    n: usize,
    rows: &[&[u8]],
    acts: &[&[u8]],
    out: &mut [f32],
) {
    let wb = w.bytes_for(n as u64);
    let ab = vec_dot_type(w).bytes_for(n as u64);
    let ok = supported(w)
        && out.len() == rows.len() * acts.len()
        && rows.iter().all(|r| wb == Some(r.len() as u64))
        && acts.iter().all(|a| ab == Some(a.len() as u64));
    if !ok {
        out.fill(0.0);
        return;
    }
    let level = effective(level, hardware_level());
    let cols = acts.len();
    let mut buf = [0f32; TILE_ROWS * TILE_COLS];
    for (rc, rs) in rows.chunks(TILE_ROWS).enumerate() {
        for (tc, ts) in acts.chunks(TILE_COLS).enumerate() {
            let tile = &mut buf[..rs.len() * ts.len()];
            if !tile_kernel(level, w, rs, ts, tile) {
                for (r, row) in rs.iter().enumerate() {
                    for (t, act) in ts.iter().enumerate() {
                        tile[r * ts.len() + t] = vec_dot_with(level, w, n, row, act);
                    }
                }
            }
            for r in 0..rs.len() {
                let o = (rc * TILE_ROWS + r) * cols + tc * TILE_COLS;
                out[o..o + ts.len()].copy_from_slice(&tile[r * ts.len()..(r + 1) * ts.len()]);
            }
        }
    }
}

/// One tile (at most [`TILE_ROWS`] × [`TILE_COLS`], lengths checked) by the SIMD kernel of
/// `level`; `false` where that level has none for `w`.
fn tile_kernel(
    level: SimdLevel,
    w: GgmlType,
    rows: &[&[u8]],
    acts: &[&[u8]],
    out: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // The AVX-512 quantized tiles ([`avx512::tile`]) are not selected: on Sapphire Rapids
        // they measured 20-25 % slower than the AVX2 tiles (see [`avx512_row_kernel`]).
        // SAFETY: `level` comes from `effective`, so `Avx2` or above means AVX2, FMA and F16C.
        if level >= SimdLevel::Avx2 && unsafe { avx2_tile::tile(w, rows, acts, out) } {
            return true;
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `Neon` from `effective` means the CPU has NEON, dotprod and fp16.
    if level == SimdLevel::Neon && unsafe { neon::tile(w, rows, acts, out) } {
        return true;
    }
    let _ = (level, w, rows, acts, out);
    false
}

/// Whether [`vec_dot_f32_act`] has a kernel for weight type `w` (F32, F16 and BF16).
pub fn supported_f32_act(w: GgmlType) -> bool {
    matches!(w, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// The dot product of `n` weights (`w_row`, type `w` as stored: F32, F16 or BF16) with `n`
/// f32 activations `x`, at [`simd_level`]: the weights are widened to f32 exactly and the
/// products accumulated in f32 over several independent lanes (so the result differs from an
/// exact dot product only by rounding and the order of the sums). This is the product
/// llama.cpp b2757 computes on x86 for f16/bf16/f32 weights with f32 activations.
///
/// Returns `0.0` when `w` is not [`supported_f32_act`] or a length is wrong (`w_row` not
/// exactly the bytes of `n` elements of `w`, or `x.len() != n`).
pub fn vec_dot_f32_act(w: GgmlType, n: usize, w_row: &[u8], x: &[f32]) -> f32 {
    vec_dot_f32_act_with(simd_level(), w, n, w_row, x)
}

/// [`vec_dot_f32_act`] at the best level `<= level` that both this CPU and a kernel have.
pub fn vec_dot_f32_act_with(
    level: SimdLevel,
    w: GgmlType,
    n: usize,
    w_row: &[u8],
    x: &[f32],
) -> f32 {
    if !supported_f32_act(w) || x.len() != n || w.bytes_for(n as u64) != Some(w_row.len() as u64) {
        return 0.0;
    }
    let level = effective(level, hardware_level());
    #[cfg(target_arch = "x86_64")]
    {
        if level >= SimdLevel::Avx512 {
            // SAFETY: `effective` returns `Avx512` only when the CPU has AVX-512 F, BW, VL and
            // VNNI besides AVX2, FMA and F16C.
            if let Some(v) = unsafe { avx512::f32_act(w, w_row, x) } {
                return v;
            }
        }
        if level >= SimdLevel::Avx2 {
            // SAFETY: `effective` returns `Avx2` or above only when the CPU has AVX2, FMA and
            // F16C.
            if let Some(v) = unsafe { avx2::f32_act(w, w_row, x) } {
                return v;
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    if level == SimdLevel::Neon {
        // SAFETY: `effective` returns `Neon` only when the CPU has NEON, dotprod and fp16.
        if let Some(v) = unsafe { neon::f32_act(w, w_row, x) } {
            return v;
        }
    }
    let _ = level;
    scalar::f32_act(w, w_row, x).unwrap_or(0.0)
}

/// `out[r * xs.len() + t] = vec_dot_f32_act(w, n, rows[r], xs[t])` for every weight row and
/// activation row, at [`simd_level`], by tiles of up to [`TILE_ROWS`] × [`TILE_COLS`] (the
/// weights widened once per tile). Zeroes `out` where a length or the type is wrong.
pub fn vec_dot_f32_act_tile(w: GgmlType, n: usize, rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) {
    vec_dot_f32_act_tile_with(simd_level(), w, n, rows, xs, out)
}

/// [`vec_dot_f32_act_tile`] at the best level `<= level` this CPU runs.
pub fn vec_dot_f32_act_tile_with(
    level: SimdLevel,
    w: GgmlType,
    n: usize,
    rows: &[&[u8]],
    xs: &[&[f32]],
    out: &mut [f32],
) {
    let wb = w.bytes_for(n as u64);
    let ok = supported_f32_act(w)
        && out.len() == rows.len() * xs.len()
        && rows.iter().all(|r| wb == Some(r.len() as u64))
        && xs.iter().all(|x| x.len() == n);
    if !ok {
        out.fill(0.0);
        return;
    }
    let level = effective(level, hardware_level());
    let cols = xs.len();
    let mut buf = [0f32; TILE_ROWS * TILE_COLS];
    for (rc, rs) in rows.chunks(TILE_ROWS).enumerate() {
        for (tc, ts) in xs.chunks(TILE_COLS).enumerate() {
            let tile = &mut buf[..rs.len() * ts.len()];
            if !f32_act_tile_kernel(level, w, rs, ts, tile) {
                for (r, row) in rs.iter().enumerate() {
                    for (t, x) in ts.iter().enumerate() {
                        tile[r * ts.len() + t] = vec_dot_f32_act_with(level, w, n, row, x);
                    }
                }
            }
            for r in 0..rs.len() {
                let o = (rc * TILE_ROWS + r) * cols + tc * TILE_COLS;
                out[o..o + ts.len()].copy_from_slice(&tile[r * ts.len()..(r + 1) * ts.len()]);
            }
        }
    }
}

/// One f32-activation tile by the SIMD kernel of `level`; `false` where it has none.
fn f32_act_tile_kernel(
    level: SimdLevel,
    w: GgmlType,
    rows: &[&[u8]],
    xs: &[&[f32]],
    out: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if level >= SimdLevel::Avx512 && w == GgmlType::BF16 && avx512_bf16::available() {
            // SAFETY: `available()` checked AVX-512 F, BW and BF16.
            if unsafe { avx512_bf16::f32_act_tile(rows, xs, out) } {
                return true;
            }
        }
        // SAFETY: `level` comes from `effective`, so `Avx512` means the CPU has AVX-512 F, BW,
        // VL, VNNI (and AVX2, FMA, F16C), and `Avx2` means AVX2, FMA and F16C.
        if level >= SimdLevel::Avx512 && unsafe { avx512::f32_act_tile(w, rows, xs, out) } {
            return true;
        }
        // SAFETY: as above.
        if level >= SimdLevel::Avx2 && unsafe { avx2_tile::f32_act_tile(w, rows, xs, out) } {
            return true;
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `Neon` from `effective` means the CPU has NEON, dotprod and fp16.
    if level == SimdLevel::Neon && unsafe { neon::f32_act_tile(w, rows, xs, out) } {
        return true;
    }
    let _ = (level, w, rows, xs, out);
    false
}

#[cfg(test)]
mod tests;
