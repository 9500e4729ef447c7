//! ggml's quantizers and dequantizers (b2757), behind safe functions that check every length.
//!
//! `quantize_row_*_reference` and `dequantize_row_*` are not in the generated bindings (they are
//! declared in `ggml-quants.h`, not `ggml.h`), so they are declared here by hand; they link from
//! the ggml-sys crate's `libggml_static.a`.
//!
//! Block structs in C hold `ggml_fp16_t`, `float` and `int16_t` fields, so the buffers handed to C
//! are 4-byte aligned (`Vec<u32>` storage), whatever the alignment of the caller's bytes.

use super::{err, ggml_row_size, init, Result};
use ggml_sys_bleedingedge as sys;
use std::ffi::c_void;
use xverse_quant::GgmlType;

mod ffi {
    use std::ffi::c_void;

    extern "C" {
        pub fn quantize_row_q4_0_reference(x: *const f32, y: *mut c_void, k: i64);
        pub fn quantize_row_q4_1_reference(x: *const f32, y: *mut c_void, k: i64);
        pub fn quantize_row_q5_0_reference(x: *const f32, y: *mut c_void, k: i64);
        pub fn quantize_row_q5_1_reference(x: *const f32, y: *mut c_void, k: i64);
        pub fn quantize_row_q8_0_reference(x: *const f32, y: *mut c_void, k: i64);
        pub fn quantize_row_q8_1_reference(x: *const f32, y: *mut c_void, k: i64);
        pub fn quantize_row_q2_K_reference(x: *const f32, y: *mut c_void, k: i64);
        pub fn quantize_row_q3_K_reference(x: *const f32, y: *mut c_void, k: i64);
        pub fn quantize_row_q4_K_reference(x: *const f32, y: *mut c_void, k: i64);
        pub fn quantize_row_q5_K_reference(x: *const f32, y: *mut c_void, k: i64);
        pub fn quantize_row_q6_K_reference(x: *const f32, y: *mut c_void, k: i64);
        pub fn quantize_row_q8_K_reference(x: *const f32, y: *mut c_void, k: i64);

        pub fn dequantize_row_q4_0(x: *const c_void, y: *mut f32, k: i64);
        pub fn dequantize_row_q4_1(x: *const c_void, y: *mut f32, k: i64);
        pub fn dequantize_row_q5_0(x: *const c_void, y: *mut f32, k: i64);
        pub fn dequantize_row_q5_1(x: *const c_void, y: *mut f32, k: i64);
        pub fn dequantize_row_q8_0(x: *const c_void, y: *mut f32, k: i64);
        pub fn dequantize_row_q2_K(x: *const c_void, y: *mut f32, k: i64);
        pub fn dequantize_row_q3_K(x: *const c_void, y: *mut f32, k: i64);
        pub fn dequantize_row_q4_K(x: *const c_void, y: *mut f32, k: i64);
        pub fn dequantize_row_q5_K(x: *const c_void, y: *mut f32, k: i64);
        pub fn dequantize_row_q6_K(x: *const c_void, y: *mut f32, k: i64);
        pub fn dequantize_row_q8_K(x: *const c_void, y: *mut f32, k: i64);
    }
}

type QuantizeFn = unsafe extern "C" fn(*const f32, *mut c_void, i64);
type DequantizeFn = unsafe extern "C" fn(*const c_void, *mut f32, i64);

/// ggml's `quantize_row_<ty>_reference`, where b2757 has one.
fn reference_quantizer(ty: GgmlType) -> Option<QuantizeFn> {
    Some(match ty {
        GgmlType::Q4_0 => ffi::quantize_row_q4_0_reference,
        GgmlType::Q4_1 => ffi::quantize_row_q4_1_reference,
        GgmlType::Q5_0 => ffi::quantize_row_q5_0_reference,
        GgmlType::Q5_1 => ffi::quantize_row_q5_1_reference,
        GgmlType::Q8_0 => ffi::quantize_row_q8_0_reference,
        GgmlType::Q8_1 => ffi::quantize_row_q8_1_reference,
        GgmlType::Q2K => ffi::quantize_row_q2_K_reference,
        GgmlType::Q3K => ffi::quantize_row_q3_K_reference,
        GgmlType::Q4K => ffi::quantize_row_q4_K_reference,
        GgmlType::Q5K => ffi::quantize_row_q5_K_reference,
        GgmlType::Q6K => ffi::quantize_row_q6_K_reference,
        GgmlType::Q8K => ffi::quantize_row_q8_K_reference,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => return None,
    })
}

/// ggml's `dequantize_row_<ty>`, where b2757 has one (Q8_1 has none).
fn dequantizer(ty: GgmlType) -> Option<DequantizeFn> {
    Some(match ty {
        GgmlType::Q4_0 => ffi::dequantize_row_q4_0,
        GgmlType::Q4_1 => ffi::dequantize_row_q4_1,
        GgmlType::Q5_0 => ffi::dequantize_row_q5_0,
        GgmlType::Q5_1 => ffi::dequantize_row_q5_1,
        GgmlType::Q8_0 => ffi::dequantize_row_q8_0,
        GgmlType::Q2K => ffi::dequantize_row_q2_K,
        GgmlType::Q3K => ffi::dequantize_row_q3_K,
        GgmlType::Q4K => ffi::dequantize_row_q4_K,
        GgmlType::Q5K => ffi::dequantize_row_q5_K,
        GgmlType::Q6K => ffi::dequantize_row_q6_K,
        GgmlType::Q8K => ffi::dequantize_row_q8_K,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_1 => return None,
    })
}

/// Whether ggml has `quantize_row_<ty>_reference`.
pub fn has_reference_quantizer(ty: GgmlType) -> bool {
    reference_quantizer(ty).is_some()
}

/// Whether ggml has `dequantize_row_<ty>` (or, for F16, `ggml_fp16_to_fp32_row`).
pub fn has_dequantizer(ty: GgmlType) -> bool {
    ty == GgmlType::F16 || dequantizer(ty).is_some()
}

/// Whether `ggml_quantize_chunk` handles `ty` in b2757 (Q8_1 and Q8_K hit `assert(false)`).
pub fn chunk_supports(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
    )
}

/// ggml's byte size of `n` elements of `ty`, refusing types b2757 lacks and partial blocks.
fn byte_len(ty: GgmlType, n: usize) -> Result<usize> {
    if ty == GgmlType::BF16 {
        return err("ggml b2757 has no BF16");
    }
    match ggml_row_size(ty.id(), n) {
        Some(b) => Ok(b),
        None => err(format!(
            "{n} elements are not whole blocks of {}",
            ty.name()
        )),
    }
}

fn i64_len(n: usize) -> Result<i64> {
    match i64::try_from(n) {
        Ok(v) => Ok(v),
        Err(_) => err(format!("{n} elements do not fit in an int64_t")),
    }
}

/// A zeroed 4-byte-aligned buffer holding at least `n` bytes.
fn aligned(n: usize) -> Vec<u32> {
    vec![0u32; n.div_ceil(4)]
}

/// The first `n` bytes of `words`, in memory order.
fn bytes_of(words: &[u32], n: usize) -> Vec<u8> {
    let mut out: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    out.truncate(n);
    out
}

/// `bytes` copied into 4-byte-aligned storage (zero padded to a multiple of 4).
fn words_of(bytes: &[u8]) -> Vec<u32> {
    let mut words = aligned(bytes.len());
    for (w, c) in words.iter_mut().zip(bytes.chunks(4)) {
        let mut b = [0u8; 4];
        b[..c.len()].copy_from_slice(c);
        *w = u32::from_ne_bytes(b);
    }
    words
}

/// `quantize_row_<ty>_reference(x, y, x.len())`: the bytes of ggml's reference quantizer.
/// The destination starts zeroed (Q8_K leaves `bsums` untouched for an all-zero block).
pub fn quantize_reference(ty: GgmlType, x: &[f32]) -> Result<Vec<u8>> {
    init();
    let Some(f) = reference_quantizer(ty) else {
        return err(format!("ggml has no reference quantizer for {}", ty.name()));
    };
    let n_bytes = byte_len(ty, x.len())?;
    let k = i64_len(x.len())?;
    let mut out = aligned(n_bytes);
    // SAFETY: `x` holds k floats; `out` is 4-byte aligned and holds at least `n_bytes`, which is
    // ggml's own row size for k elements of `ty` (k is whole blocks, checked by byte_len). The
    // reference quantizers read exactly k floats and write exactly k / block_size blocks.
    unsafe { f(x.as_ptr(), out.as_mut_ptr().cast::<c_void>(), k) };
    Ok(bytes_of(&out, n_bytes))
}

/// `ggml_quantize_chunk(ty, x, dst, 0, nrows, n_per_row, NULL)`: what llama.cpp's quantize tool
/// writes without an importance matrix. `x.len()` must be a multiple of `n_per_row`.
pub fn quantize_chunk(ty: GgmlType, x: &[f32], n_per_row: usize) -> Result<Vec<u8>> {
    init();
    if !chunk_supports(ty) {
        return err(format!("ggml_quantize_chunk does not handle {}", ty.name()));
    }
    if n_per_row == 0 || !x.len().is_multiple_of(n_per_row) {
        return err(format!(
            "{} elements are not whole rows of {n_per_row}",
            x.len()
        ));
    }
    let row_bytes = byte_len(ty, n_per_row)?;
    let nrows = x.len() / n_per_row;
    let n_bytes = row_bytes * nrows;
    let mut out = aligned(n_bytes);
    let (nr, npr) = (i64_len(nrows)?, i64_len(n_per_row)?);
    // SAFETY: `ty` is one of the types ggml_quantize_chunk's switch handles (checked), there is
    // no importance matrix (null; none of these types requires one), start is 0, and n_per_row
    // is whole blocks (byte_len). It reads nrows * n_per_row floats from `x` (its length) and
    // writes nrows * ggml_row_size(ty, n_per_row) bytes into `out`, which is that large and
    // 4-byte aligned.
    let written = unsafe {
        sys::ggml_quantize_chunk(
            ty.id(),
            x.as_ptr(),
            out.as_mut_ptr().cast::<c_void>(),
            0,
            nr,
            npr,
            std::ptr::null(),
        )
    };
    if written != n_bytes {
        return err(format!(
            "ggml_quantize_chunk wrote {written} bytes, expected {n_bytes}"
        ));
    }
    Ok(bytes_of(&out, n_bytes))
}

/// `dequantize_row_<ty>(bytes, y, n)` (F16: `ggml_fp16_to_fp32_row`; F32: a copy): ggml's
/// dequantized values of `n` elements stored in `bytes`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    init();
    let n_bytes = byte_len(ty, n)?;
    if bytes.len() != n_bytes {
        return err(format!(
            "{n} {} elements need {n_bytes} bytes, got {}",
            ty.name(),
            bytes.len()
        ));
    }
    match ty {
        GgmlType::F32 => {
            return Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        }
        GgmlType::F16 => {
            let h: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            return Ok(fp16_to_fp32_row(&h));
        }
        _ => {}
    }
    let Some(f) = dequantizer(ty) else {
        return err(format!(
            "ggml b2757 has no dequantize_row for {}",
            ty.name()
        ));
    };
    let k = i64_len(n)?;
    let src = words_of(bytes);
    let mut out = vec![0f32; n];
    // SAFETY: `src` is 4-byte aligned and holds ggml's row size for k elements of `ty` (k is
    // whole blocks); `out` holds k floats. dequantize_row_* reads k / block_size blocks and
    // writes k floats.
    unsafe { f(src.as_ptr().cast::<c_void>(), out.as_mut_ptr(), k) };
    Ok(out)
}

/// `ggml_fp32_to_fp16_row`: ggml's f32 -> f16 conversion (F16C `vcvtps2ph` with round to
/// nearest even on x86 where available), as raw bits.
pub fn fp32_to_fp16_row(x: &[f32]) -> Vec<u16> {
    init();
    let mut out = vec![0u16; x.len()];
    let Ok(n) = i64::try_from(x.len()) else {
        return Vec::new();
    };
    // SAFETY: both buffers hold n elements; the function reads n floats and writes n u16.
    unsafe { sys::ggml_fp32_to_fp16_row(x.as_ptr(), out.as_mut_ptr(), n) };
    out
}

/// `ggml_fp16_to_fp32_row`: ggml's f16 -> f32 conversion of raw f16 bits.
pub fn fp16_to_fp32_row(x: &[u16]) -> Vec<f32> {
    init();
    let mut out = vec![0f32; x.len()];
    let Ok(n) = i64::try_from(x.len()) else {
        return Vec::new();
    };
    // SAFETY: both buffers hold n elements; the function reads n u16 and writes n floats.
    unsafe { sys::ggml_fp16_to_fp32_row(x.as_ptr(), out.as_mut_ptr(), n) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_of_a_ramp_dequantizes_close() {
        let x: Vec<f32> = (0..64).map(|i| i as f32 * 0.25 - 8.0).collect();
        let q = quantize_reference(GgmlType::Q8_0, &x).unwrap();
        assert_eq!(q.len(), 2 * 34);
        let y = dequantize(GgmlType::Q8_0, &q, 64).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 0.05, "{a} {b}");
        }
        // the fp16 table is initialised: non-zero output
        assert!(y.iter().any(|&v| v != 0.0));
    }

    #[test]
    fn chunk_equals_reference_without_imatrix() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        for ty in [GgmlType::Q4_0, GgmlType::Q2K, GgmlType::Q4K, GgmlType::Q6K] {
            assert_eq!(
                quantize_chunk(ty, &x, 256).unwrap(),
                quantize_reference(ty, &x).unwrap(),
                "{ty:?}"
            );
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(quantize_reference(GgmlType::Q4_0, &[0.0; 31]).is_err());
        assert!(quantize_reference(GgmlType::BF16, &[0.0; 32]).is_err());
        assert!(quantize_chunk(GgmlType::Q8K, &[0.0; 256], 256).is_err());
        assert!(quantize_chunk(GgmlType::Q4_0, &[0.0; 64], 48).is_err());
        assert!(dequantize(GgmlType::Q4_0, &[0u8; 17], 32).is_err());
        assert!(dequantize(GgmlType::Q8_1, &[0u8; 36], 32).is_err());
    }

    #[test]
    fn fp16_rows() {
        let h = fp32_to_fp16_row(&[1.0, -2.0, 65504.0, 1e9, 0.0, 5.9604645e-8]);
        assert_eq!(h, vec![0x3C00, 0xC000, 0x7BFF, 0x7C00, 0, 1]);
        assert_eq!(
            fp16_to_fp32_row(&h),
            vec![1.0, -2.0, 65504.0, f32::INFINITY, 0.0, 5.9604645e-8]
        );
    }
}
