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
use super::avx2_transpose::{self as transpose, store32};
use super::prefetch_ahead;
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
        acc = step(col, by, acc);
    }
    lanes(acc)
}

/// One block column `col` of a group with the activation block `by`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn step(col: &[u8], by: &[u8], acc: __m256) -> __m256 {
    let q = &by[2..];
    let mut isum = _mm256_setzero_si256();
    for m in 0..8 {
        let w = weights(col, m);
        let p = products(_mm256_abs_epi8(w), w, broadcast4(q, 4 * m));
        isum = _mm256_add_epi32(isum, p);
    }
    let d_rows = _mm256_cvtph_ps(load16(col));
    accumulate(isum, d_rows, by, acc)
}

/// [`gemv`] of two groups at once, `a` and `b` (the same length), block column by block
/// column: the results are [`gemv`]'s, bit for bit. Two groups far apart in memory are two
/// streams in flight at once, and one stream through this kernel left the memory idle
/// between its loads (on the Zen 3 machine a run of Q4_0 groups streamed at 65-80 % of a pure
/// read with one group at a time, 85-95 % with two; README "Two streams").
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. (Lengths are checked by the caller; a short
/// slice would panic, never read out of bounds.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv2(a: &[u8], b: &[u8], act: &[u8]) -> [[f32; ROWS]; 2] {
    let (mut x, mut y) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for ((ca, cb), by) in a
        .chunks_exact(GROUP_BLOCK_BYTES)
        .zip(b.chunks_exact(GROUP_BLOCK_BYTES))
        .zip(act.chunks_exact(Q8_0_BYTES))
    {
        x = step(ca, by, x);
        y = step(cb, by, y);
    }
    [lanes(x), lanes(y)]
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
        let mut by: [&[u8]; NT] = [&[]; NT];
        for t in 0..NT {
            by[t] = &acts[t][b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
        }
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

/// `$f::<NR, NT>(rows, acts, out)` for the counts of `rows` (1..=4) and `acts` (1..=4);
/// zeros for other counts.
macro_rules! rows_by_counts {
    ($f:ident, $rows:expr, $acts:expr, $out:expr) => {{
        macro_rules! by_tokens {
            ($nr:literal) => {
                match $acts.len() {
                    1 => $f::<$nr, 1>($rows, $acts, $out),
                    2 => $f::<$nr, 2>($rows, $acts, $out),
                    3 => $f::<$nr, 3>($rows, $acts, $out),
                    4 => $f::<$nr, 4>($rows, $acts, $out),
                    _ => $out.fill(0.0),
                }
            };
        }
        match $rows.len() {
            1 => by_tokens!(1),
            2 => by_tokens!(2),
            3 => by_tokens!(3),
            4 => by_tokens!(4),
            _ => $out.fill(0.0),
        }
    }};
}
pub(super) use rows_by_counts;

/// Up to four Q8_0 rows in the file's layout (`rows`, whole blocks) × up to
/// [`TILE_TOKENS`] activation rows (no quant −128), `out[r · acts.len() + t]`, by the sums of
/// [`gemv`]: per block, the exact integer sum of each row and token (the four rows' sums
/// reduced by two `hadd` levels into one vector, row `r` in lane `r`), then `acc + isum ·
/// (d_row · d_y)`, mul then add, in four f32 lanes. Bit for bit [`gemv`]'s results for the
/// same rows packed, and [`super::scalar::q8_0_q8_0`]'s. With each block of each row it asks
/// for the same block of the row `rows.len()` rows on, which is the next call's where the
/// rows follow each other, as a weight's do: on the Zen 3 machine four rows of 4096 streamed
/// from a buffer in 4 KiB pages at 10–13 GB/s so (one thread), against 6.6–8.0 with each
/// row's lines asked for 1 KiB ahead and 6.5–8.4 for the per-row kernel of
/// [`super::vec_dot`] with the next row asked for (the runtime's decode loop).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. (Lengths are checked by the caller: every row and
/// activation row the same whole number of blocks; other counts write zeros.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_tile(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    rows_by_counts!(rows_tile_n, rows, acts, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn rows_tile_n<const NR: usize, const NT: usize>(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    const { assert!(NR <= 4 && NT <= TILE_TOKENS) };
    let nb = acts[0].len() / Q8_0_BYTES;
    // the same block of the rows one tile further on (the next rows, where they follow)
    let ahead = NR * rows[0].len();
    let mut acc = [_mm_setzero_ps(); NT];
    for b in 0..nb {
        let at = b * Q8_0_BYTES;
        let mut w = [_mm256_setzero_si256(); 4];
        let mut aw = [_mm256_setzero_si256(); 4];
        let mut scales = [0i16; 4];
        for r in 0..NR {
            let blk = &rows[r][at..at + Q8_0_BYTES];
            prefetch_ahead(blk.as_ptr(), ahead, 1);
            scales[r] = i16::from_le_bytes([blk[0], blk[1]]);
            w[r] = load32(&blk[2..]);
            aw[r] = _mm256_abs_epi8(w[r]);
        }
        let [s0, s1, s2, s3] = scales;
        let d_rows = _mm_cvtph_ps(_mm_setr_epi16(s0, s1, s2, s3, 0, 0, 0, 0));
        for t in 0..NT {
            let by = &acts[t][at..at + Q8_0_BYTES];
            let a = load32(&by[2..]);
            let mut s = [_mm256_setzero_si256(); 4];
            for r in 0..NR {
                s[r] = products(aw[r], w[r], a);
            }
            let isum = row_sums(&s);
            let d = _mm_mul_ps(d_rows, _mm_set1_ps(f16_at(by, 0)));
            acc[t] = _mm_add_ps(acc[t], _mm_mul_ps(_mm_cvtepi32_ps(isum), d));
        }
    }
    store_rows::<NR, NT>(&acc, out);
}

/// The sums of all eight lanes of each of four vectors, vector `r` in lane `r` (two `hadd`
/// levels, then the halves added): exact, whatever the order.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn row_sums(s: &[__m256i; 4]) -> __m128i {
    // lane r of the low half: vector r's first four lanes summed; of the high half, its last
    // four
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// `out[r · NT + t]` = lane `r` of `acc[t]`, for the first `NR` lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn store_rows<const NR: usize, const NT: usize>(acc: &[__m128; NT], out: &mut [f32]) {
    for (t, a) in acc.iter().enumerate() {
        let mut v = [0f32; 4];
        // SAFETY: `v` holds four f32, the 16 bytes stored (unaligned store).
        unsafe { _mm_storeu_ps(v.as_mut_ptr(), *a) };
        for (r, x) in v.into_iter().take(NR).enumerate() {
            out[r * NT + t] = x;
        }
    }
}

/// [`super::q8_0x8::pack`] of eight rows of `row_bytes` bytes each (`rows`) into `out`, one
/// block column at a time: the eight rows' 32 quants are loaded as eight registers and
/// transposed as 8 × 8 32-bit words (unpack 32, unpack 64, swap 128-bit halves), so load `m`
/// of the column gets word `m` of every row, row `j` in lane `j`.
///
/// # Safety
/// The CPU must have AVX2; `rows` must hold 8 rows of `row_bytes` (whole Q8_0 blocks) and
/// `out` one column of [`GROUP_BLOCK_BYTES`] per block.
#[target_feature(enable = "avx2")]
pub unsafe fn pack(row_bytes: usize, rows: &[u8], out: &mut [u8]) {
    for (b, col) in out.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
        let mut r = [_mm256_setzero_si256(); ROWS];
        for (j, rj) in r.iter_mut().enumerate() {
            let blk = &rows[j * row_bytes + b * Q8_0_BYTES..][..Q8_0_BYTES];
            // the same place in the next group's rows, as the K-quant packers do: ~1.08x the
            // speed from memory at 2048 columns (`pack_speed`)
            prefetch_ahead(blk.as_ptr(), ROWS * row_bytes, Q8_0_BYTES);
            col[2 * j..2 * j + 2].copy_from_slice(&blk[..2]);
            *rj = load32(&blk[2..]);
        }
        for (m, w) in transpose::words(r).into_iter().enumerate() {
            store32(&mut col[2 * ROWS + 32 * m..], w);
        }
    }
}
