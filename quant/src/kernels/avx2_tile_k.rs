//! AVX2 tile kernels for the K-quants (Q2_K … Q6_K weights × Q8_K activations). Not written
//! yet: [`tile`] returns `false`, so the tile is computed by [`super::avx2`]'s `vec_dot`.

use crate::types::GgmlType;

/// A tile of `rows.len()` × `acts.len()` dot products (lengths checked by the caller);
/// `false` where there is no tile kernel for `w`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
pub unsafe fn tile(w: GgmlType, rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) -> bool {
    let _ = (w, rows, acts, out);
    false
}
