//! AVX2 kernels for Q4_0 weights packed eight rows at a time ([`super::q4_0x8`] has the
//! layout and the scalar reference).
//!
//! Per block column: four 32-byte loads hold 256 nibbles (32 of each of the eight rows); a
//! mask and a shift give two vectors of unsigned quants each, with row `j` in 32-bit lane
//! `j`; each is multiplied (`maddubs`, unsigned × signed) with a 4-byte broadcast of the
//! activation quants it pairs with, and the eight products are summed in 16-bit lanes (at
//! most 8 · 2 · 15 · 128 = 30,720 in magnitude, so no saturation), widened once (`madd`),
//! corrected by `8 · Σ q` of the activation block, converted and scaled by the eight row
//! scales (one `vcvtph2ps`) times the activation scale. The eight results stay in the lanes
//! of one accumulator: no horizontal sum per row.

use super::avx2::{f16_at, load16, load32};
use super::avx2_transpose::{self as transpose, store32};
use super::q4_0x8::{GROUP_BLOCK_BYTES, ROWS, TILE_TOKENS};
use super::scalar::{Q4_0_BYTES, Q8_0_BYTES};
use super::{prefetch_ahead, CACHE_PREFETCH_AHEAD};
use std::arch::x86_64::*;

/// The four activation bytes at `q[off..off + 4]` in every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn broadcast4(q: &[u8], off: usize) -> __m256i {
    let b: [u8; 4] = q[off..off + 4].try_into().expect("4 bytes");
    _mm256_set1_epi32(i32::from_le_bytes(b))
}

/// The 16-bit partial sums of one block column: row `j`'s 32 products in lane pair `j`.
#[inline]
#[target_feature(enable = "avx2")]
fn block_products(col: &[u8], q: &[u8]) -> __m256i {
    let low = _mm256_set1_epi8(0x0f);
    let (mut s0, mut s1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for m in 0..4 {
        let v = load32(&col[2 * ROWS + 32 * m..]);
        let lo = _mm256_and_si256(v, low);
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(lo, broadcast4(q, 4 * m)));
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(hi, broadcast4(q, 16 + 4 * m)));
    }
    _mm256_add_epi16(s0, s1)
}

/// `acc + d_rows · d_y · (madd(s16) - 8 · sum)`: one block's contribution to the 8 rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn accumulate(s16: __m256i, sum: i32, d_rows: __m256, by: &[u8], acc: __m256) -> __m256 {
    let isum = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
    let isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(8 * sum));
    let d = _mm256_mul_ps(d_rows, _mm256_set1_ps(f16_at(by, 0)));
    _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum), acc)
}

/// The eight lanes of `v`.
#[inline]
#[target_feature(enable = "avx")]
pub(super) fn lanes(v: __m256) -> [f32; ROWS] {
    let mut out = [0f32; ROWS];
    // SAFETY: `out` holds 8 f32; unaligned store.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// The eight rows of `group` · one Q8_0 activation row `act` with block sums `sums`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. (Lengths are checked by the caller; a short
/// slice would panic, never read out of bounds.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv(group: &[u8], act: &[u8], sums: &[i32]) -> [f32; ROWS] {
    lanes(group_products(group, act, sums))
}

/// [`gemv`] of every group of `group_bytes` in `groups`, the eight results of group `g` at
/// `out[8 · g..]`: one call for a run of groups (the attention's keys, four blocks a group at
/// head size 128, where a call per group cost as much as the products). The two halves of
/// the run go through [`gemv2`] side by side (two streams from memory), each group's lines
/// asked for [`CACHE_PREFETCH_AHEAD`] bytes early.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. (Lengths are checked by the caller; a short
/// slice would panic, never read out of bounds.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv_groups(
    groups: &[u8],
    group_bytes: usize,
    act: &[u8],
    sums: &[i32],
    out: &mut [f32],
) {
    // two streams: group i of the first half with group i of the second (each group's
    // products as `gemv`'s, bit for bit), then the odd one out
    let n = groups.len() / group_bytes;
    let half = n / 2;
    let (first, second) = groups.split_at(half * group_bytes);
    let (out_first, out_second) = out.split_at_mut(half * ROWS);
    for (((a, b), oa), ob) in first
        .chunks_exact(group_bytes)
        .zip(second.chunks_exact(group_bytes))
        .zip(out_first.chunks_exact_mut(ROWS))
        .zip(out_second.chunks_exact_mut(ROWS))
    {
        prefetch_ahead(a.as_ptr(), CACHE_PREFETCH_AHEAD, group_bytes);
        prefetch_ahead(b.as_ptr(), CACHE_PREFETCH_AHEAD, group_bytes);
        // SAFETY: the caller's contract (AVX2, FMA, F16C); `a` and `b` have the same length.
        let [x, y] = unsafe { gemv2(a, b, act, sums) };
        oa.copy_from_slice(&x);
        ob.copy_from_slice(&y);
    }
    if n % 2 == 1 {
        let last = &second[(n - half - 1) * group_bytes..][..group_bytes];
        let o: &mut [f32; ROWS] = (&mut out_second[(n - half - 1) * ROWS..][..ROWS])
            .try_into()
            .expect("8 outputs");
        *o = lanes(group_products(last, act, sums));
    }
}

/// The eight rows of `group` · `act`, row `j` in lane `j`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group_products(group: &[u8], act: &[u8], sums: &[i32]) -> __m256 {
    let mut acc = _mm256_setzero_ps();
    for ((col, by), &s) in group
        .chunks_exact(GROUP_BLOCK_BYTES)
        .zip(act.chunks_exact(Q8_0_BYTES))
        .zip(sums)
    {
        acc = step(col, by, s, acc);
    }
    acc
}

/// One block column `col` of a group with the activation block `by` (quant sum `s`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn step(col: &[u8], by: &[u8], s: i32, acc: __m256) -> __m256 {
    let s16 = block_products(col, &by[2..]);
    let d_rows = _mm256_cvtph_ps(load16(col));
    accumulate(s16, s, d_rows, by, acc)
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
pub unsafe fn gemv2(a: &[u8], b: &[u8], act: &[u8], sums: &[i32]) -> [[f32; ROWS]; 2] {
    let (mut x, mut y) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (((ca, cb), by), &s) in a
        .chunks_exact(GROUP_BLOCK_BYTES)
        .zip(b.chunks_exact(GROUP_BLOCK_BYTES))
        .zip(act.chunks_exact(Q8_0_BYTES))
        .zip(sums)
    {
        x = step(ca, by, s, x);
        y = step(cb, by, s, y);
    }
    [lanes(x), lanes(y)]
}

/// [`gemm`] of two groups `a` and `b` (the same length) with the same two activation rows:
/// `out_a[2j + t]` = row `j` of `a` · `acts[t]`, `out_b` likewise, bit for bit `gemm`'s. The
/// two groups are two streams in flight at once, as in [`gemv2`] (the attention's weighted
/// sum over q4_0 values: eight dimensions to a group, each group its own run of memory), each
/// block column's lines asked for [`CACHE_PREFETCH_AHEAD`] bytes early.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. (Lengths are checked by the caller; a short
/// slice would panic, never read out of bounds.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm2x2(
    a: &[u8],
    b: &[u8],
    acts: [&[u8]; 2],
    sums: [&[i32]; 2],
    out_a: &mut [f32; 2 * ROWS],
    out_b: &mut [f32; 2 * ROWS],
) {
    let low = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm256_setzero_ps(); 4];
    for (i, (ca, cb)) in a
        .chunks_exact(GROUP_BLOCK_BYTES)
        .zip(b.chunks_exact(GROUP_BLOCK_BYTES))
        .enumerate()
    {
        let at = i * Q8_0_BYTES;
        prefetch_ahead(ca.as_ptr(), CACHE_PREFETCH_AHEAD, GROUP_BLOCK_BYTES);
        prefetch_ahead(cb.as_ptr(), CACHE_PREFETCH_AHEAD, GROUP_BLOCK_BYTES);
        let q = [
            &acts[0][at + 2..at + Q8_0_BYTES],
            &acts[1][at + 2..at + Q8_0_BYTES],
        ];
        // 16-bit sums per (group, row): the same exact integers as `gemm`'s (added in
        // another order, without overflow: at most 8 · 2 · 15 · 128 in magnitude)
        let mut s = [_mm256_setzero_si256(); 4];
        for m in 0..4 {
            let (va, vb) = (
                load32(&ca[2 * ROWS + 32 * m..]),
                load32(&cb[2 * ROWS + 32 * m..]),
            );
            let (alo, ahi) = (
                _mm256_and_si256(va, low),
                _mm256_and_si256(_mm256_srli_epi16(va, 4), low),
            );
            let (blo, bhi) = (
                _mm256_and_si256(vb, low),
                _mm256_and_si256(_mm256_srli_epi16(vb, 4), low),
            );
            for t in 0..2 {
                let (ql, qh) = (broadcast4(q[t], 4 * m), broadcast4(q[t], 16 + 4 * m));
                let pa =
                    _mm256_add_epi16(_mm256_maddubs_epi16(alo, ql), _mm256_maddubs_epi16(ahi, qh));
                let pb =
                    _mm256_add_epi16(_mm256_maddubs_epi16(blo, ql), _mm256_maddubs_epi16(bhi, qh));
                s[t] = _mm256_add_epi16(s[t], pa);
                s[2 + t] = _mm256_add_epi16(s[2 + t], pb);
            }
        }
        let (da, db) = (_mm256_cvtph_ps(load16(ca)), _mm256_cvtph_ps(load16(cb)));
        for t in 0..2 {
            let by = &acts[t][at..at + Q8_0_BYTES];
            acc[t] = accumulate(s[t], sums[t][i], da, by, acc[t]);
            acc[2 + t] = accumulate(s[2 + t], sums[t][i], db, by, acc[2 + t]);
        }
    }
    for t in 0..2 {
        for (j, (x, y)) in lanes(acc[t]).into_iter().zip(lanes(acc[2 + t])).enumerate() {
            out_a[2 * j + t] = x;
            out_b[2 * j + t] = y;
        }
    }
}

/// `out[j · acts.len() + t]` = row `j` of `group` · `acts[t]` for up to [`TILE_TOKENS`]
/// activation rows: each weight vector is loaded and unpacked once for all of them.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `acts.len() <= TILE_TOKENS`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm(group: &[u8], acts: &[&[u8]], sums: &[&[i32]], out: &mut [f32]) {
    match acts.len() {
        1 => gemm_n::<1>(group, acts, sums, out),
        2 => gemm_n::<2>(group, acts, sums, out),
        3 => gemm_n::<3>(group, acts, sums, out),
        4 => gemm_n::<4>(group, acts, sums, out),
        _ => out.fill(0.0),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_n<const NT: usize>(group: &[u8], acts: &[&[u8]], sums: &[&[i32]], out: &mut [f32]) {
    const { assert!(NT <= TILE_TOKENS) };
    let low = _mm256_set1_epi8(0x0f);
    // the rows as a fixed-size array (not `array::from_fn` per block: its closure does not
    // inherit the target features and was left out of line for some NT, called per block)
    let mut a: [&[u8]; NT] = [&[]; NT];
    let mut sm: [&[i32]; NT] = [&[]; NT];
    a.copy_from_slice(&acts[..NT]);
    sm.copy_from_slice(&sums[..NT]);
    let mut acc = [_mm256_setzero_ps(); NT];
    for (b, col) in group.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
        let at = b * Q8_0_BYTES;
        let (mut s0, mut s1) = ([_mm256_setzero_si256(); NT], [_mm256_setzero_si256(); NT]);
        for m in 0..4 {
            let v = load32(&col[2 * ROWS + 32 * m..]);
            let lo = _mm256_and_si256(v, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
            for t in 0..NT {
                let q = &a[t][at + 2..at + Q8_0_BYTES];
                s0[t] = _mm256_add_epi16(s0[t], _mm256_maddubs_epi16(lo, broadcast4(q, 4 * m)));
                s1[t] =
                    _mm256_add_epi16(s1[t], _mm256_maddubs_epi16(hi, broadcast4(q, 16 + 4 * m)));
            }
        }
        let d_rows = _mm256_cvtph_ps(load16(col));
        for t in 0..NT {
            let s16 = _mm256_add_epi16(s0[t], s1[t]);
            acc[t] = accumulate(s16, sm[t][b], d_rows, &a[t][at..at + Q8_0_BYTES], acc[t]);
        }
    }
    for (t, a) in acc.iter().enumerate() {
        for (j, v) in lanes(*a).into_iter().enumerate() {
            out[j * NT + t] = v;
        }
    }
}

/// [`super::q4_0x8::pack`] of eight rows of `row_bytes` bytes each (`rows`) into `out`, one
/// block column at a time: the eight rows' 16 quant bytes are loaded as eight 16-byte
/// registers and transposed as 4 × 8 32-bit words, so store `m` of the column gets word `m`
/// of every row, row `j` in lane `j`.
///
/// # Safety
/// The CPU must have AVX2; `rows` must hold 8 rows of `row_bytes` (whole Q4_0 blocks) and
/// `out` one column of [`GROUP_BLOCK_BYTES`] per block.
#[target_feature(enable = "avx2")]
pub unsafe fn pack(row_bytes: usize, rows: &[u8], out: &mut [u8]) {
    for (b, col) in out.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
        let mut r = [_mm_setzero_si128(); ROWS];
        for (j, rj) in r.iter_mut().enumerate() {
            let blk = &rows[j * row_bytes + b * Q4_0_BYTES..][..Q4_0_BYTES];
            // the same place in the next group's rows, as the other packers do
            prefetch_ahead(blk.as_ptr(), ROWS * row_bytes, Q4_0_BYTES);
            col[2 * j..2 * j + 2].copy_from_slice(&blk[..2]);
            *rj = load16(&blk[2..]);
        }
        for (m, w) in transpose::words4x8(r).into_iter().enumerate() {
            store32(&mut col[2 * ROWS + 32 * m..], w);
        }
    }
}
