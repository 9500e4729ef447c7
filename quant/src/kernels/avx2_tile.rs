//! AVX2 tile kernels: up to 4 weight rows × 4 activation rows per call, for prompts.

use crate::types::GgmlType;

/// A tile of `rows.len()` × `acts.len()` dot products (lengths checked by the caller);
/// `false` where there is no tile kernel for `w`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
pub unsafe fn tile(w: GgmlType, rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) -> bool {
    match w {
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            // SAFETY: the caller guarantees AVX2, FMA and F16C.
            unsafe { super::avx2_tile_k::tile(w, rows, acts, out) }
        }
        _ => false,
    }
}

/// A tile of F32/F16/BF16 weight rows × f32 activation rows; `false` where there is none.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
pub unsafe fn f32_act_tile(w: GgmlType, rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) -> bool {
    let _ = (w, rows, xs, out);
    false
}
