//! AVX2 kernels for Q8_0 weights packed eight rows at a time ([`super::q8_0x8`] has the
//! layout, the choice of products and the scalar reference).
//!
//! Per block column: eight 32-byte loads hold 256 quants (32 of each of the eight rows, 4 per
//! load, row `j` in 32-bit lane `j`). Each load is multiplied with a 4-byte broadcast of the
//! activation quants it pairs with by the sign trick of the per-row kernel: `maddubs(|w|,
//! sign(a, w))` (at most 2 · 128 · 127 = 32,512 in magnitude per 16-bit pair, so no
//! saturation, −128 weights included), widened at once (`madd` with ones) and summed in 32-bit
//! lanes. Once per block the sums are converted and multiplied by the eight rows' scales (one
//! `vcvtph2ps`) times the activation scale. The scales are applied with a multiply and an add
//! rather than a fused multiply-add, in the scalar reference's order, so the results are bit
//! for bit those of [`super::scalar::q8_0_q8_0`] on each row.
//!
//! Like that kernel (and ggml's), this assumes no activation quant is −128
//! ([`super::quantize_activations`] never writes one): `sign(−128, w)` is −128 again for a
//! negative `w`.

use super::avx2::{f16_at, load16, load32};
use super::avx2_q4_0x8::{broadcast4, lanes};
use super::q8_0x8::{GROUP_BLOCK_BYTES, ROWS, TILE_TOKENS};
use super::scalar::Q8_0_BYTES;
use std::arch::x86_64::*;

/// Weight load `m` (quants `4m..4m+4` of each row) of a block column.
#[inline]
#[target_feature(enable = "avx2")]
fn weights(col: &[u8], m: usize) -> __m256i {
    load32(&col[2 * ROWS + 32 * m..])
}

/// The 32-bit sums of `w · a` over one load: `|w|` (`aw`) times the broadcast activation
/// quants `a` with the signs of `w`, pairs widened at once.
#[inline]
#[target_feature(enable = "avx2")]
fn products(aw: __m256i, w: __m256i, a: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(a, w));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// `acc + isum · (d_rows · d_y)`: one block's contribution to the eight rows, rounded as the
/// scalar reference rounds it.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn accumulate(isum: __m256i, d_rows: __m256, by: &[u8], acc: __m256) -> __m256 {
    let d = _mm256_mul_ps(d_rows, _mm256_set1_ps(f16_at(by, 0)));
    _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(isum), d))
}

/// The eight rows of `group` · one Q8_0 activation row `act` (no quant −128).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. (Lengths are checked by the caller; a short
/// slice would panic, never read out of bounds.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv(group: &[u8], act: &[u8]) -> [f32; ROWS] {
    let mut acc = _mm256_setzero_ps();
    for (col, by) in group
        .chunks_exact(GROUP_BLOCK_BYTES)
        .zip(act.chunks_exact(Q8_0_BYTES))
    {
        let q = &by[2..];
        let mut isum = _mm256_setzero_si256();
        for m in 0..8 {
            let w = weights(col, m);
            let p = products(_mm256_abs_epi8(w), w, broadcast4(q, 4 * m));
            isum = _mm256_add_epi32(isum, p);
        }
        let d_rows = _mm256_cvtph_ps(load16(col));
        acc = accumulate(isum, d_rows, by, acc);
    }
    lanes(acc)
}

/// `out[j · acts.len() + t]` = row `j` of `group` · `acts[t]` for up to [`TILE_TOKENS`]
/// activation rows: each weight vector is loaded (and its absolute value taken) once for all
/// of them.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `acts.len() <= TILE_TOKENS`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm(group: &[u8], acts: &[&[u8]], out: &mut [f32]) {
    match acts.len() {
        1 => gemm_n::<1>(group, acts, out),
        2 => gemm_n::<2>(group, acts, out),
        3 => gemm_n::<3>(group, acts, out),
        4 => gemm_n::<4>(group, acts, out),
        _ => out.fill(0.0),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_n<const NT: usize>(group: &[u8], acts: &[&[u8]], out: &mut [f32]) {
    const { assert!(NT <= TILE_TOKENS) };
    let mut acc = [_mm256_setzero_ps(); NT];
    for (b, col) in group.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
        let by: [&[u8]; NT] = std::array::from_fn(|t| &acts[t][b * Q8_0_BYTES..][..Q8_0_BYTES]);
        let mut isum = [_mm256_setzero_si256(); NT];
        for m in 0..8 {
            let w = weights(col, m);
            let aw = _mm256_abs_epi8(w);
            for t in 0..NT {
                let p = products(aw, w, broadcast4(&by[t][2..], 4 * m));
                isum[t] = _mm256_add_epi32(isum[t], p);
            }
        }
        let d_rows = _mm256_cvtph_ps(load16(col));
        for t in 0..NT {
            acc[t] = accumulate(isum[t], d_rows, by[t], acc[t]);
        }
    }
    for (t, a) in acc.iter().enumerate() {
        for (j, v) in lanes(*a).into_iter().enumerate() {
            out[j * NT + t] = v;
        }
    }
}
