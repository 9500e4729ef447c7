//! Dot-product kernels for matrix × vector and matrix × matrix products.
//!
//! Activations are quantized once per row to the block format ggml pairs with the weight
//! type ([`vec_dot_type`]), then each weight row is dotted with them by an integer kernel.
//! Every kernel exists as a scalar reference ([`scalar`], integer sums exactly as ggml's
//! scalar `ggml_vec_dot_*` code) and, on x86-64, as an AVX2+FMA(+F16C) kernel ([`avx2`]).
//! The level is detected once at run time ([`simd_level`]), so one binary runs on any
//! x86-64; the environment variable `XVERSE_SIMD=scalar|avx2|avx512` caps it (never raises it).
//!
//! Lengths are checked once at the public entry: [`vec_dot`] returns `0.0` when `n` is not a
//! whole number of blocks or a byte slice does not hold exactly the blocks `n` needs, so no
//! kernel ever reads out of bounds.

use crate::types::GgmlType;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
pub mod scalar;

/// A SIMD instruction-set level, ordered from least to most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Portable Rust, no explicit SIMD.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL). No kernel uses it yet: it falls back to AVX2.
    Avx512,
}

impl SimdLevel {
    /// Parses `scalar`, `avx2` or `avx512` (case-insensitive).
    pub fn from_name(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(SimdLevel::Scalar),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    /// The lower-case name (`scalar`, `avx2`, `avx512`).
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }
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
    {
        SimdLevel::Avx512
    } else {
        SimdLevel::Avx2
    }
}

#[cfg(not(target_arch = "x86_64"))]
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
            Some(cap) => hw.min(cap),
            None => hw,
        }
    })
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
    let level = level.min(hardware_level());
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        // SAFETY: `level` is capped by `hardware_level()`, which is `Avx2` or above only when
        // the CPU has AVX2, FMA and F16C.
        if let Some(v) = unsafe { avx2::vec_dot(w, w_row, act) } {
            return v;
        }
    }
    let _ = level;
    scalar::vec_dot(w, w_row, act).unwrap_or(0.0)
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
    let level = level.min(hardware_level());
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        // SAFETY: `level` is capped by `hardware_level()`, which is `Avx2` or above only when
        // the CPU has AVX2, FMA and F16C.
        if let Some(v) = unsafe { avx2::f32_act(w, w_row, x) } {
            return v;
        }
    }
    let _ = level;
    scalar::f32_act(w, w_row, x).unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
