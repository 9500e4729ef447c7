//! AVX-512 (F, BW, VL) + VNNI kernels (x86-64). Not written yet: every entry returns
//! `None`/`false`, so the AVX2 kernels run.

use crate::types::GgmlType;

/// Dispatches on the weight type; `None` where there is no AVX-512 kernel.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
pub unsafe fn vec_dot(w: GgmlType, x: &[u8], y: &[u8]) -> Option<f32> {
    let _ = (w, x, y);
    None
}

/// F32/F16/BF16 weights · f32 activations; `None` where there is no AVX-512 kernel.
///
/// # Safety
/// As [`vec_dot`].
pub unsafe fn f32_act(w: GgmlType, x: &[u8], y: &[f32]) -> Option<f32> {
    let _ = (w, x, y);
    None
}

/// A tile of `rows.len()` × `acts.len()` dot products (lengths checked by the caller);
/// `false` where there is no AVX-512 tile kernel for `w`.
///
/// # Safety
/// As [`vec_dot`].
pub unsafe fn tile(w: GgmlType, rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) -> bool {
    let _ = (w, rows, acts, out);
    false
}

/// A tile of F32/F16/BF16 weight rows × f32 activation rows; `false` where there is none.
///
/// # Safety
/// As [`vec_dot`].
pub unsafe fn f32_act_tile(w: GgmlType, rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) -> bool {
    let _ = (w, rows, xs, out);
    false
}
