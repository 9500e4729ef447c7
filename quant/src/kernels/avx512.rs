//! AVX-512 (F, BW, VL) + VNNI kernels (x86-64). Same integer sums as [`super::scalar`], only
//! the float accumulation order differs (16 lanes, one horizontal sum at the end).
//!
//! The integer products use `vpdpbusd` (u8 × i8, four products summed into each i32 lane,
//! no saturation). Weights that are signed are fed as unsigned bytes `u = w + off` and the
//! offset is taken back with a second `vpdpbusd` of the constant `off` with the activations:
//! `Σ w·y = Σ u·y − Σ off·y`. Unlike the sign trick of the AVX2 kernels this is exact for
//! every input byte, so these kernels give the scalar integer sums even for activation
//! quants of -128. Q8_0/Q4_0/Q5_0/Q4_1/Q5_1 take two blocks per 512-bit vector; the K-quants
//! take 64 weights per vector and weight the sub-block sums with their scales by an i32
//! multiply. F32/F16/BF16 rows use 512-bit FMA (f16 widened by F16C, bf16 by a shift).
//!
//! Only instructions that Miri emulates are used (so `.ci/avx512-miri.sh` can check every
//! kernel on a CPU without AVX-512): no `vcvtph2ps` on 512 bits, no `vpdpwssd`, no
//! AVX-512 BF16 or VBMI.
//!
//! Each kernel walks its blocks with `chunks_exact`, so every load reads inside a chunk of
//! known length; the only precondition of the `unsafe` entries is the CPU features.

use super::scalar::{f16_at, f32_at};
use super::scalar::{
    Q2_K_BYTES, Q3_K_BYTES, Q4_0_BYTES, Q4_1_BYTES, Q4_K_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q5_K_BYTES,
    Q6_K_BYTES, Q8_0_BYTES, Q8_1_BYTES, Q8_K_BYTES,
};
use crate::types::{GgmlType, QK_K};
use std::arch::x86_64::*;

/// Dispatches on the weight type; `None` where there is no AVX-512 kernel.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
pub unsafe fn vec_dot(w: GgmlType, x: &[u8], y: &[u8]) -> Option<f32> {
    // SAFETY: the caller guarantees AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C, all these
    // functions need.
    unsafe {
        Some(match w {
            GgmlType::F32 => f32_f32(x, y),
            GgmlType::F16 => f16_f16(x, y),
            GgmlType::BF16 => bf16_bf16(x, y),
            GgmlType::Q8_0 => q8_0_q8_0(x, y),
            GgmlType::Q4_0 => q4_0_q8_0(x, y),
            GgmlType::Q4_1 => q4_1_q8_1(x, y),
            GgmlType::Q5_0 => q5_0_q8_0(x, y),
            GgmlType::Q5_1 => q5_1_q8_1(x, y),
            GgmlType::Q2K => q2_k_q8_k(x, y),
            GgmlType::Q3K => q3_k_q8_k(x, y),
            GgmlType::Q4K => q4_k_q8_k(x, y),
            GgmlType::Q5K => q5_k_q8_k(x, y),
            GgmlType::Q6K => q6_k_q8_k(x, y),
            _ => return None,
        })
    }
}

/// F32/F16/BF16 weights · f32 activations; `None` for other types.
///
/// # Safety
/// As [`vec_dot`].
pub unsafe fn f32_act(w: GgmlType, x: &[u8], y: &[f32]) -> Option<f32> {
    // SAFETY: the caller guarantees AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C, all these
    // functions need.
    unsafe {
        Some(match w {
            GgmlType::F32 => f32_f32_act(x, y),
            GgmlType::F16 => f16_f32_act(x, y),
            GgmlType::BF16 => bf16_f32_act(x, y),
            _ => return None,
        })
    }
}

/// A tile of `rows.len()` × `acts.len()` dot products (lengths checked by the caller: every
/// row holds the same whole blocks, every activation row the matching blocks);
/// `false` where there is no AVX-512 tile kernel for `w` (Q8_0, Q4_0 and Q5_0 have one; for
/// the others the caller falls back to the AVX2 tiles, then to [`vec_dot`] per pair).
///
/// # Safety
/// As [`vec_dot`].
pub unsafe fn tile(w: GgmlType, rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) -> bool {
    if !tile_shape_ok(rows.len(), acts.len(), out.len()) {
        return false;
    }
    // SAFETY: the caller guarantees AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C, all these
    // functions need.
    unsafe {
        match w {
            GgmlType::Q8_0 => q8_0_tile(rows, acts, out),
            GgmlType::Q4_0 => q4_0_tile(rows, acts, out),
            GgmlType::Q5_0 => q5_0_tile(rows, acts, out),
            _ => return false,
        }
    }
    true
}

/// A tile of F32/F16/BF16 weight rows × f32 activation rows (lengths checked by the caller);
/// `false` for other types.
///
/// # Safety
/// As [`vec_dot`].
pub unsafe fn f32_act_tile(w: GgmlType, rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) -> bool {
    if !tile_shape_ok(rows.len(), xs.len(), out.len()) {
        return false;
    }
    // SAFETY: the caller guarantees AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C, all these
    // functions need.
    unsafe {
        match w {
            GgmlType::F32 => f32_act_tile_f32(rows, xs, out),
            GgmlType::F16 => f32_act_tile_f16(rows, xs, out),
            GgmlType::BF16 => f32_act_tile_bf16(rows, xs, out),
            _ => return false,
        }
    }
    true
}

/// 1..=4 rows, 1..=4 activation rows, `out` one value per pair.
fn tile_shape_ok(r: usize, c: usize, out: usize) -> bool {
    (1..=TILE).contains(&r) && (1..=TILE).contains(&c) && out == r * c
}

/// Most rows / activation rows of a tile (as [`super::TILE_ROWS`], [`super::TILE_COLS`]).
const TILE: usize = 4;

// ---------------------------------------------------------------------------------------
// loads and small helpers

/// Loads 64 bytes from the start of `b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load64(b: &[u8]) -> __m512i {
    assert!(b.len() >= 64);
    // SAFETY: `b` holds at least 64 bytes (checked above); unaligned load.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

/// Loads 32 bytes from the start of `b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load32(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: `b` holds at least 32 bytes (checked above); unaligned load.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Loads 16 bytes from the start of `b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load16(b: &[u8]) -> __m128i {
    assert!(b.len() >= 16);
    // SAFETY: `b` holds at least 16 bytes (checked above); unaligned load.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// The little-endian u16 at the start of `b`, widened.
#[inline(always)]
fn u16_at(b: &[u8]) -> u64 {
    u64::from(u16::from_le_bytes([b[0], b[1]]))
}

/// The little-endian u32 at the start of `b`.
#[inline(always)]
fn u32_at(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// `lo` in bytes 0..32, `hi` in bytes 32..64.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `lo` in lanes 0..8, `hi` in lanes 8..16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join_ps(lo: __m256, hi: __m256) -> __m512 {
    let lo = _mm512_castpd256_pd512(_mm256_castps_pd(lo));
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, _mm256_castps_pd(hi)))
}

/// 32 bytes repeated in both 256-bit halves, then shifted right by 2 (16-bit lanes) in the
/// upper half: `[q, q >> 2]`. Only bits that stay inside their byte are read afterwards.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dup_shift2(b: &[u8]) -> __m512i {
    let q = _mm512_broadcast_i64x4(load32(b));
    _mm512_mask_blend_epi64(0xf0, q, _mm512_srli_epi16::<2>(q))
}

/// Σ (u − off)·y over each group of 4 bytes, as 16 i32: `vpdpbusd(u, y) − vpdpbusd(off, y)`,
/// exact for every u8 `u` and i8 `y`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_off(u: __m512i, y: __m512i, off: __m512i) -> __m512i {
    let z = _mm512_setzero_si512();
    _mm512_sub_epi32(_mm512_dpbusd_epi32(z, u, y), _mm512_dpbusd_epi32(z, off, y))
}

/// Σ u·y over each group of 4 bytes (u8 `u`, i8 `y`), as 16 i32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_u(u: __m512i, y: __m512i) -> __m512i {
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, y)
}

/// 16 packed bytes of nibbles -> 32 bytes: low nibbles first, then high nibbles.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles32(b: &[u8]) -> __m256i {
    let t = load16(b);
    let v = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(t), _mm_srli_epi16::<4>(t));
    _mm256_and_si256(v, _mm256_set1_epi8(0x0f))
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// i32 lane `k` of the result = lane `k / group + first` of `s` (`group` 4 or 8).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn spread(s: __m512i, group: u32, first: usize) -> __m512i {
    let iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    let base = if group == 4 {
        _mm512_srli_epi32::<2>(iota)
    } else {
        _mm512_srli_epi32::<3>(iota)
    };
    _mm512_permutexvar_epi32(_mm512_add_epi32(base, _mm512_set1_epi32(first as i32)), s)
}

// ---------------------------------------------------------------------------------------
// F32 / F16 / BF16

/// 16 f32 from 64 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f32x16(b: &[u8]) -> __m512 {
    _mm512_castsi512_ps(load64(b))
}

/// 16 f16 (32 bytes) -> 16 f32, by two F16C conversions (exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f16x16(b: &[u8]) -> __m512 {
    let v = load32(b);
    let lo = _mm256_cvtph_ps(_mm256_castsi256_si128(v));
    let hi = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(v));
    join_ps(lo, hi)
}

/// 16 bf16 (32 bytes) -> 16 f32, by widening and a 16-bit shift (exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn bf16x16(b: &[u8]) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(load32(b))))
}

/// `Σ x_i·y_i` by 512-bit FMA: 4 independent 16-lane accumulators over 64 elements per
/// step, then 16 per step, then `tail` on what is left (< 16 elements). `ex`/`ey` are the
/// bytes per element, `lx`/`ly` load 16 elements.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fma_dot(
    x: &[u8],
    y: &[u8],
    (ex, ey): (usize, usize),
    lx: impl Fn(&[u8]) -> __m512,
    ly: impl Fn(&[u8]) -> __m512,
    tail: impl FnOnce(&[u8], &[u8]) -> f32,
) -> f32 {
    let mut acc = [_mm512_setzero_ps(); 4];
    let xs = x.chunks_exact(64 * ex);
    let ys = y.chunks_exact(64 * ey);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm512_fmadd_ps(lx(&a[16 * ex * k..]), ly(&b[16 * ey * k..]), *acc);
        }
    }
    let xs = xr.chunks_exact(16 * ex);
    let ys = yr.chunks_exact(16 * ey);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        acc[0] = _mm512_fmadd_ps(lx(a), ly(b), acc[0]);
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s) + tail(xr, yr)
}

/// f32 · f32 (f32 accumulation).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn f32_f32(x: &[u8], y: &[u8]) -> f32 {
    fma_dot(
        x,
        y,
        (4, 4),
        |b| f32x16(b),
        |b| f32x16(b),
        super::scalar::f32_f32,
    )
}

/// f16 · f16 (f32 accumulation).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn f16_f16(x: &[u8], y: &[u8]) -> f32 {
    fma_dot(
        x,
        y,
        (2, 2),
        |b| f16x16(b),
        |b| f16x16(b),
        super::scalar::f16_f16,
    )
}

/// bf16 · bf16 (f32 accumulation).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn bf16_bf16(x: &[u8], y: &[u8]) -> f32 {
    fma_dot(
        x,
        y,
        (2, 2),
        |b| bf16x16(b),
        |b| bf16x16(b),
        super::scalar::bf16_bf16,
    )
}

/// Weights `x` (`ex` bytes each, loaded 16 at a time by `lx`) · f32 activations `y`, by
/// [`fma_dot`]; `tail(x_rest, y_rest)` takes the last `y.len() % 16` elements.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fma_act(
    x: &[u8],
    y: &[f32],
    ex: usize,
    lx: impl Fn(&[u8]) -> __m512,
    tail: impl FnOnce(&[u8], &[f32]) -> f32,
) -> f32 {
    let rest = y.len() % 16;
    let yb: &[u8] = bytemuck::cast_slice(y);
    let ly = |b: &[u8]| _mm512_castsi512_ps(load64(b));
    fma_dot(x, yb, (ex, 4), lx, ly, |xr, _| {
        tail(xr, &y[y.len() - rest..])
    })
}

/// f32 weights · f32 activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn f32_f32_act(x: &[u8], y: &[f32]) -> f32 {
    fma_act(x, y, 4, |b| f32x16(b), super::scalar::f32_f32_act)
}

/// f16 weights (widened by F16C) · f32 activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn f16_f32_act(x: &[u8], y: &[f32]) -> f32 {
    fma_act(x, y, 2, |b| f16x16(b), super::scalar::f16_f32_act)
}

/// bf16 weights (widened by a shift) · f32 activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn bf16_f32_act(x: &[u8], y: &[f32]) -> f32 {
    fma_act(x, y, 2, |b| bf16x16(b), super::scalar::bf16_f32_act)
}

/// The tile version of [`fma_act`]: 16 elements per step, each weight vector widened once
/// per row and each activation vector loaded once per step, one 16-lane accumulator per pair;
/// the last `n % 16` elements by `tail` per pair.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fma_act_tile(
    rows: &[&[u8]],
    xs: &[&[f32]],
    out: &mut [f32],
    ex: usize,
    lx: impl Fn(&[u8]) -> __m512,
    tail: impl Fn(&[u8], &[f32]) -> f32,
) {
    let (r, c) = (rows.len(), xs.len());
    let n = xs[0].len();
    let full = n - n % 16;
    let mut acc = [[_mm512_setzero_ps(); TILE]; TILE];
    let mut v = [_mm512_setzero_ps(); TILE];
    for e in (0..full).step_by(16) {
        for t in 0..c {
            let x: &[u8] = bytemuck::cast_slice(&xs[t][e..e + 16]);
            v[t] = _mm512_castsi512_ps(load64(x));
        }
        for i in 0..r {
            let wv = lx(&rows[i][e * ex..(e + 16) * ex]);
            for t in 0..c {
                acc[i][t] = _mm512_fmadd_ps(wv, v[t], acc[i][t]);
            }
        }
    }
    for i in 0..r {
        for t in 0..c {
            let rest = tail(&rows[i][full * ex..], &xs[t][full..]);
            out[i * c + t] = _mm512_reduce_add_ps(acc[i][t]) + rest;
        }
    }
}

/// F32 × f32 tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f32_act_tile_f32(rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) {
    fma_act_tile(rows, xs, out, 4, |b| f32x16(b), super::scalar::f32_f32_act)
}

/// F16 × f32 tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f32_act_tile_f16(rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) {
    fma_act_tile(rows, xs, out, 2, |b| f16x16(b), super::scalar::f16_f32_act)
}

/// BF16 × f32 tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f32_act_tile_bf16(rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) {
    fma_act_tile(
        rows,
        xs,
        out,
        2,
        |b| bf16x16(b),
        super::scalar::bf16_f32_act,
    )
}

// ---------------------------------------------------------------------------------------
// Q8_0 / Q4_0 / Q5_0 × Q8_0

/// `Σ d_x·d_y·Σ (u − off)·q_y` over the blocks of `x` (`bx` bytes, f16 scale first) and Q8_0
/// `y`, where `unpack(block)` gives the 32 weights of a block as unsigned bytes `u` (weight
/// = `u − off`). Two blocks per step share one 512-bit vector; their four f16 scales are
/// converted by one F16C instruction. An odd last block takes the lower half alone.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0_pairs(x: &[u8], y: &[u8], bx: usize, off: u8, unpack: impl Fn(&[u8]) -> __m256i) -> f32 {
    let offv = _mm512_set1_epi8(off as i8);
    let mut acc = _mm512_setzero_ps();
    let xs = x.chunks_exact(2 * bx);
    let ys = y.chunks_exact(2 * Q8_0_BYTES);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        let (a1, b1) = (&a[bx..], &b[Q8_0_BYTES..]);
        let u = join(unpack(a), unpack(a1));
        let q = join(load32(&b[2..]), load32(&b1[2..]));
        let sumi = dot_off(u, q, offv);
        let bits = u16_at(a) | u16_at(b) << 16 | u16_at(a1) << 32 | u16_at(b1) << 48;
        let f = _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64));
        // [d_x0·d_y0, _, d_x1·d_y1, _]
        let p = _mm_mul_ps(f, _mm_movehdup_ps(f));
        let d = _mm512_mask_blend_ps(
            0xff00,
            _mm512_broadcastss_ps(p),
            _mm512_broadcastss_ps(_mm_movehl_ps(p, p)),
        );
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc);
    }
    if xr.len() == bx && yr.len() == Q8_0_BYTES {
        let u = _mm512_zextsi256_si512(unpack(xr));
        let q = _mm512_zextsi256_si512(load32(&yr[2..]));
        let d = _mm512_set1_ps(f16_at(xr, 0) * f16_at(yr, 0));
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot_off(u, q, offv)), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// Q8_0 · Q8_0 (weights offset by 128: `x ^ 0x80`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q8_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    q8_0_pairs(x, y, Q8_0_BYTES, 0x80, |b| {
        _mm256_xor_si256(load32(&b[2..]), flip)
    })
}

/// Q4_0 · Q8_0 (weights `q − 8`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q4_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    q8_0_pairs(x, y, Q4_0_BYTES, 8, |b| nibbles32(&b[2..]))
}

/// Q5_0 · Q8_0 (weights `q − 16`; bit `i` of `qh` is the fifth bit of weight `i`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q5_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    let b16 = _mm256_set1_epi8(0x10);
    q8_0_pairs(x, y, Q5_0_BYTES, 16, |b| {
        let hi = _mm256_maskz_mov_epi8(u32_at(&b[2..]), b16);
        _mm256_or_si256(nibbles32(&b[6..]), hi)
    })
}

/// The tile version of [`q8_0_pairs`]: for each step of two blocks the activation vectors
/// (and their offset sums `Σ off·y`) are loaded once per activation row, each weight pair is
/// unpacked once per row, and the `R × C` 16-lane partial sums stay in accumulators.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0_pairs_tile(
    rows: &[&[u8]],
    acts: &[&[u8]],
    out: &mut [f32],
    bx: usize,
    off: u8,
    unpack: impl Fn(&[u8]) -> __m256i,
) {
    let (r, c) = (rows.len(), acts.len());
    let offv = _mm512_set1_epi8(off as i8);
    let nb = rows[0].len() / bx;
    let mut acc = [[_mm512_setzero_ps(); TILE]; TILE];
    let mut ys = [_mm512_setzero_si512(); TILE];
    let mut corr = [_mm512_setzero_si512(); TILE];
    let mut dy = [_mm512_setzero_ps(); TILE];
    let mut b = 0;
    while b < nb {
        // two blocks, or the last one alone in the lower half
        let two = b + 1 < nb;
        let k = if two { 2 } else { 1 };
        for t in 0..c {
            let by = &acts[t][b * Q8_0_BYTES..(b + k) * Q8_0_BYTES];
            let (q, d) = if two {
                let q = join(load32(&by[2..]), load32(&by[Q8_0_BYTES + 2..]));
                let d = _mm512_mask_blend_ps(
                    0xff00,
                    _mm512_set1_ps(f16_at(by, 0)),
                    _mm512_set1_ps(f16_at(by, Q8_0_BYTES)),
                );
                (q, d)
            } else {
                let q = _mm512_zextsi256_si512(load32(&by[2..]));
                (q, _mm512_set1_ps(f16_at(by, 0)))
            };
            ys[t] = q;
            corr[t] = dot_u(offv, q);
            dy[t] = d;
        }
        for i in 0..r {
            let a = &rows[i][b * bx..(b + k) * bx];
            let (u, dx) = if two {
                let u = join(unpack(a), unpack(&a[bx..]));
                let dx = _mm512_mask_blend_ps(
                    0xff00,
                    _mm512_set1_ps(f16_at(a, 0)),
                    _mm512_set1_ps(f16_at(a, bx)),
                );
                (u, dx)
            } else {
                (
                    _mm512_zextsi256_si512(unpack(a)),
                    _mm512_set1_ps(f16_at(a, 0)),
                )
            };
            for t in 0..c {
                let sumi = _mm512_sub_epi32(dot_u(u, ys[t]), corr[t]);
                let d = _mm512_mul_ps(dx, dy[t]);
                acc[i][t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc[i][t]);
            }
        }
        b += k;
    }
    for i in 0..r {
        for t in 0..c {
            out[i * c + t] = _mm512_reduce_add_ps(acc[i][t]);
        }
    }
}

/// Q8_0 tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0_tile(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    q8_0_pairs_tile(rows, acts, out, Q8_0_BYTES, 0x80, |b| {
        _mm256_xor_si256(load32(&b[2..]), flip)
    })
}

/// Q4_0 tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_0_tile(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    q8_0_pairs_tile(rows, acts, out, Q4_0_BYTES, 8, |b| nibbles32(&b[2..]))
}

/// Q5_0 tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q5_0_tile(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    let b16 = _mm256_set1_epi8(0x10);
    q8_0_pairs_tile(rows, acts, out, Q5_0_BYTES, 16, |b| {
        let hi = _mm256_maskz_mov_epi8(u32_at(&b[2..]), b16);
        _mm256_or_si256(nibbles32(&b[6..]), hi)
    })
}

// ---------------------------------------------------------------------------------------
// Q4_1 / Q5_1 × Q8_1

/// `Σ d_x·d_y·Σ u·q_y + m_x·s_y` over the blocks of `x` (`bx` bytes: f16 `d`, f16 `m`, then
/// the quants) and Q8_1 `y`; `unpack(block)` gives the 32 unsigned weights. Two blocks per
/// step; their eight f16 are converted by one F16C instruction.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_1_pairs(x: &[u8], y: &[u8], bx: usize, unpack: impl Fn(&[u8]) -> __m256i) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    let xs = x.chunks_exact(2 * bx);
    let ys = y.chunks_exact(2 * Q8_1_BYTES);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    // [d_x, d_y, m_x, s_y] of a block pair as 4 f16
    let halves = |a: &[u8], b: &[u8]| -> i64 {
        (u16_at(a) | u16_at(b) << 16 | u16_at(&a[2..]) << 32 | u16_at(&b[2..]) << 48) as i64
    };
    for (a, b) in xs.zip(ys) {
        let (a1, b1) = (&a[bx..], &b[Q8_1_BYTES..]);
        let u = join(unpack(a), unpack(a1));
        let q = join(load32(&b[4..]), load32(&b1[4..]));
        let sumi = dot_u(u, q);
        let f = _mm256_cvtph_ps(_mm_set_epi64x(halves(a1, b1), halves(a, b)));
        // [d_x0·d_y0, _, m_x0·s_y0, _, d_x1·d_y1, _, m_x1·s_y1, _]
        let p = _mm256_mul_ps(f, _mm256_movehdup_ps(f));
        acc_m = _mm256_add_ps(acc_m, p);
        let d = _mm512_mask_blend_ps(
            0xff00,
            _mm512_broadcastss_ps(_mm256_castps256_ps128(p)),
            _mm512_broadcastss_ps(_mm256_extractf128_ps::<1>(p)),
        );
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc);
    }
    let mut tail = 0f32;
    if xr.len() == bx && yr.len() == Q8_1_BYTES {
        let u = _mm512_zextsi256_si512(unpack(xr));
        let q = _mm512_zextsi256_si512(load32(&yr[4..]));
        let d = _mm512_set1_ps(f16_at(xr, 0) * f16_at(yr, 0));
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot_u(u, q)), acc);
        tail = f16_at(xr, 2) * f16_at(yr, 2);
    }
    // lanes 2 and 6 hold the min terms
    let m = _mm_add_ps(
        _mm256_castps256_ps128(acc_m),
        _mm256_extractf128_ps::<1>(acc_m),
    );
    _mm512_reduce_add_ps(acc) + (_mm_cvtss_f32(_mm_movehl_ps(m, m)) + tail)
}

/// Q4_1 · Q8_1.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q4_1_q8_1(x: &[u8], y: &[u8]) -> f32 {
    q8_1_pairs(x, y, Q4_1_BYTES, |b| nibbles32(&b[4..]))
}

/// Q5_1 · Q8_1 (bit `i` of `qh` is the fifth bit of weight `i`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q5_1_q8_1(x: &[u8], y: &[u8]) -> f32 {
    let b16 = _mm256_set1_epi8(0x10);
    q8_1_pairs(x, y, Q5_1_BYTES, |b| {
        let hi = _mm256_maskz_mov_epi8(u32_at(&b[4..]), b16);
        _mm256_or_si256(nibbles32(&b[8..]), hi)
    })
}

// ---------------------------------------------------------------------------------------
// K-quants × Q8_K

/// The 8 six-bit scales and the 8 mins of a Q4_K/Q5_K block from its 12 packed bytes `s`,
/// as 8 bytes each (little-endian u64, sub-block `j` in byte `j`). Sub-blocks 0..4 are the low
/// 6 bits of bytes 0..4 (scales) and 4..8 (mins); sub-blocks 4..8 take their low 4 bits from
/// the nibbles of bytes 8..12 and their top 2 bits from the top bits of bytes 0..4 / 4..8.
#[inline(always)]
fn k4_scales(s: &[u8]) -> (u64, u64) {
    let (a, b, c) = (u32_at(s), u32_at(&s[4..]), u32_at(&s[8..]));
    let sc_lo = a & 0x3f3f_3f3f;
    let mn_lo = b & 0x3f3f_3f3f;
    let sc_hi = (c & 0x0f0f_0f0f) | ((a >> 2) & 0x3030_3030);
    let mn_hi = ((c >> 4) & 0x0f0f_0f0f) | ((b >> 2) & 0x3030_3030);
    (
        u64::from(sc_lo) | u64::from(sc_hi) << 32,
        u64::from(mn_lo) | u64::from(mn_hi) << 32,
    )
}

/// The mins term of a Q4_K/Q5_K block: 8 i32 `m_j·(bsum_2j + bsum_2j+1)` (`mins` as from
/// [`k4_scales`], `by` the Q8_K block).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k4_mins(mins: u64, by: &[u8]) -> __m256i {
    let m = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(mins as i64));
    // each i32 lane as the i16 pair (m_j, m_j)
    let m = _mm256_or_si256(m, _mm256_slli_epi32::<16>(m));
    _mm256_madd_epi16(m, load32(&by[4 + QK_K..]))
}

/// Q4_K (`five` false) or Q5_K (`five`: fifth bits from the 32 `qh` bytes) · Q8_K, blocks of
/// `bx_len` bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q45_k(x: &[u8], y: &[u8], bx_len: usize, five: bool) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    let m4 = _mm512_set1_epi8(0x0f);
    let b16 = _mm512_set1_epi8(0x10);
    // bit 0 of each byte for the low nibbles (bytes 0..32), bit 1 for the high nibbles
    let sel = _mm512_mask_blend_epi64(0xf0, _mm512_set1_epi8(1), _mm512_set1_epi8(2));
    for (bx, by) in x.chunks_exact(bx_len).zip(y.chunks_exact(Q8_K_BYTES)) {
        let dy = f32_at(by, 0);
        let d = dy * f16_at(bx, 0);
        let dmin = dy * f16_at(bx, 2);
        let (sc, mn) = k4_scales(&bx[4..16]);
        let prod = k4_mins(mn, by);
        acc_m = _mm256_fmadd_ps(_mm256_set1_ps(-dmin), _mm256_cvtepi32_ps(prod), acc_m);
        let scales = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128(sc as i64));
        let (qs, mut hb) = if five {
            (&bx[48..], _mm512_broadcast_i64x4(load32(&bx[16..])))
        } else {
            (&bx[16..], _mm512_setzero_si512())
        };
        let qy = &by[4..];
        let mut sumi = _mm512_setzero_si512();
        for j in 0..4 {
            // 64 weights: the low nibbles of 32 bytes (sub-block 2j), then the high ones
            let q = _mm512_broadcast_i64x4(load32(&qs[32 * j..]));
            let mut u = _mm512_and_si512(
                _mm512_mask_blend_epi64(0xf0, q, _mm512_srli_epi16::<4>(q)),
                m4,
            );
            if five {
                // bits 2j and 2j + 1 of qh, moved to bits 0 and 1
                let set = _mm512_test_epi8_mask(hb, sel);
                u = _mm512_mask_add_epi8(u, set, u, b16);
                hb = _mm512_srli_epi16::<2>(hb);
            }
            let p = dot_u(u, load64(&qy[64 * j..]));
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p, spread(scales, 8, 2 * j)));
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc) + hsum256(acc_m)
}

/// Q4_K · Q8_K.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q4_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    q45_k(x, y, Q4_K_BYTES, false)
}

/// Q5_K · Q8_K.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q5_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    q45_k(x, y, Q5_K_BYTES, true)
}

/// Q6_K · Q8_K (weights `q − 32`, 6 bits: 4 from `ql`, 2 from `qh`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q6_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let m4 = _mm512_set1_epi8(0x0f);
    let m30 = _mm512_set1_epi8(0x30);
    let m32 = _mm512_set1_epi8(32);
    for (bx, by) in x.chunks_exact(Q6_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d = f32_at(by, 0) * f16_at(bx, 208);
        // the 16 i8 sub-block scales as 16 i32
        let scales = _mm512_cvtepi8_epi32(load16(&bx[192..]));
        let qy = &by[4..];
        let mut sumi = _mm512_setzero_si512();
        for h in 0..2 {
            let ql = load64(&bx[64 * h..]);
            // [qh, qh >> 2]: the top bits of quarters 0, 1 at bits 0..2 (shifted up by 4
            // below), those of quarters 2, 3 at bits 4..6
            let qh = dup_shift2(&bx[128 + 32 * h..]);
            let u01 = _mm512_or_si512(
                _mm512_and_si512(ql, m4),
                _mm512_and_si512(_mm512_slli_epi16::<4>(qh), m30),
            );
            let u23 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                _mm512_and_si512(qh, m30),
            );
            for (c, u) in [(2 * h, u01), (2 * h + 1, u23)] {
                let p = dot_off(u, load64(&qy[64 * c..]), m32);
                sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p, spread(scales, 4, 4 * c)));
            }
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// Q2_K · Q8_K.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q2_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    let m3 = _mm512_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    for (bx, by) in x.chunks_exact(Q2_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let dy = f32_at(by, 0);
        let dall = dy * f16_at(bx, 80);
        let dmin = dy * f16_at(bx, 82);
        let sm = load16(bx);
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sm), m4));
        let prod = _mm256_madd_epi16(mins, load32(&by[4 + QK_K..]));
        acc_m = _mm256_fmadd_ps(_mm256_set1_ps(-dmin), _mm256_cvtepi32_ps(prod), acc_m);
        let scales = _mm512_cvtepu8_epi32(_mm_and_si128(sm, m4));
        let qy = &by[4..];
        let mut sumi = _mm512_setzero_si512();
        for k in 0..2 {
            // [q, q >> 2]: bit pairs 0 and 1, then (after >> 4) 2 and 3
            let q = dup_shift2(&bx[16 + 32 * k..]);
            let u01 = _mm512_and_si512(q, m3);
            let u23 = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m3);
            for (c, u) in [(2 * k, u01), (2 * k + 1, u23)] {
                let p = dot_u(u, load64(&qy[64 * c..]));
                sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p, spread(scales, 4, 4 * c)));
            }
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(dall), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc) + hsum256(acc_m)
}

/// The 16 Q3_K sub-block scales (6 bits, minus 32) from the 12 packed bytes `s`: the low 4
/// bits are the nibbles of bytes 0..8 (low nibbles for sub-blocks 0..8, high for 8..16), the
/// top 2 bits come from bytes 8..12 (bit pair `j / 4` of byte `8 + j % 4`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q3_k_scales(s: &[u8]) -> __m128i {
    const LOW: u32 = 0x0f0f_0f0f;
    const TOP: u32 = 0x3030_3030;
    let (a0, a1, t) = (u32_at(s), u32_at(&s[4..]), u32_at(&s[8..]));
    let v = _mm_set_epi32(
        (((a1 >> 4) & LOW) | ((t >> 2) & TOP)) as i32,
        (((a0 >> 4) & LOW) | (t & TOP)) as i32,
        ((a1 & LOW) | ((t << 2) & TOP)) as i32,
        ((a0 & LOW) | ((t << 4) & TOP)) as i32,
    );
    _mm_sub_epi8(v, _mm_set1_epi8(32))
}

/// Q3_K · Q8_K (weights `q − 4·(1 − hbit)`, fed as `q + 4·hbit` with offset 4).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q3_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let m3 = _mm512_set1_epi8(3);
    let four = _mm512_set1_epi8(4);
    for (bx, by) in x.chunks_exact(Q3_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d = f32_at(by, 0) * f16_at(bx, 108);
        let scales = _mm512_cvtepi8_epi32(q3_k_scales(&bx[96..108]));
        let hm = _mm512_broadcast_i64x4(load32(bx));
        let qy = &by[4..];
        let mut sumi = _mm512_setzero_si512();
        for h in 0..2 {
            let q = dup_shift2(&bx[32 + 32 * h..]);
            let lows = [
                _mm512_and_si512(q, m3),
                _mm512_and_si512(_mm512_srli_epi16::<4>(q), m3),
            ];
            for (i, &low) in lows.iter().enumerate() {
                let c = 2 * h + i;
                // weights 64c..64c + 64 take bit 2c (first 32) and 2c + 1 of the hmask bytes
                let sel = _mm512_mask_blend_epi64(
                    0xf0,
                    _mm512_set1_epi8((1u8 << (2 * c)) as i8),
                    _mm512_set1_epi8((2u8 << (2 * c)) as i8),
                );
                let set = _mm512_test_epi8_mask(hm, sel);
                let u = _mm512_mask_add_epi8(low, set, low, four);
                let p = dot_off(u, load64(&qy[64 * c..]), four);
                sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p, spread(scales, 4, 4 * c)));
            }
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// Every kernel against [`super::scalar`]: small inputs (a few blocks) so that Miri, which
/// emulates AVX-512 on any x86-64 host, runs them in seconds (`.ci/avx512-miri.sh`). On a CPU
/// without AVX-512 F/BW/VL/VNNI they print a skip line and pass, unless the environment
/// variable `XVERSE_REQUIRE_AVX512` is set (to anything but `0`): then they fail, so a CI job
/// meant to reach these kernels cannot pass without running them.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks;
    use crate::kernels::{hardware_level, scalar, vec_dot_type};
    use crate::kernels::{vec_dot_f32_act_with, vec_dot_with, SimdLevel};
    use half::{bf16, f16};

    /// Whether the AVX-512 kernels can run here (panics instead of skipping when
    /// `XVERSE_REQUIRE_AVX512` is set).
    fn avx512_here(test: &str) -> bool {
        if hardware_level() == SimdLevel::Avx512 {
            return true;
        }
        let required =
            std::env::var("XVERSE_REQUIRE_AVX512").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "{test}: XVERSE_REQUIRE_AVX512 is set but the CPU level is {:?}, not Avx512 \
             (under Miri, pass -C target-feature=+avx512f,+avx512bw,+avx512vl,+avx512vnni)",
            hardware_level()
        );
        eprintln!("{test}: skipped, this CPU lacks AVX-512 F/BW/VL/VNNI");
        false
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        /// Uniform in [-1, 1).
        fn f(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
        fn int(&mut self, lo: i32, hi: i32) -> i32 {
            lo + (self.next() % (hi - lo + 1) as u64) as i32
        }
    }

    /// `v` as f16 bits, by `half`'s software conversion (Miri does not emulate F16C's
    /// `vcvtps2ph`, which `f16::from_f32` uses when F16C is enabled at compile time).
    fn f16_bits(v: f32) -> [u8; 2] {
        f16::from_f32_const(v).to_bits().to_le_bytes()
    }

    /// Random f16 scale bits (or 1.0 when `unit`): magnitudes 2^-11 ..= 2^-8·(2 − 2^-10), any sign.
    fn scale_bits(rng: &mut Rng, unit: bool) -> [u8; 2] {
        if unit {
            return f16_bits(1.0);
        }
        let r = rng.next();
        (0x1000 | (r & 0x0fff) as u16 | ((r >> 12) & 0x8000) as u16).to_le_bytes()
    }

    /// Offsets of the f16 scale fields of a weight block.
    fn scale_offsets(w: GgmlType) -> &'static [usize] {
        match w {
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
            GgmlType::Q2K => &[80, 82],
            GgmlType::Q6K => &[208],
            GgmlType::Q3K => &[108],
            _ => &[],
        }
    }

    /// `nb` random weight blocks, every f16 scale from [`scale_bits`] (Q6_K's i8 sub-block
    /// scales kept small, so the integer sums stay exact in f32 whatever the summation order).
    fn weights(rng: &mut Rng, w: GgmlType, nb: usize, unit: bool) -> Vec<u8> {
        let mut v: Vec<u8> = (0..nb * w.type_size()).map(|_| rng.next() as u8).collect();
        for b in v.chunks_exact_mut(w.type_size()) {
            for &off in scale_offsets(w) {
                b[off..off + 2].copy_from_slice(&scale_bits(rng, unit));
            }
            if w == GgmlType::Q6K {
                for s in &mut b[192..208] {
                    *s = rng.int(-8, 8) as i8 as u8;
                }
            }
        }
        v
    }

    /// `nb` activation blocks of the type paired with `w`, random quants (-128 included: the
    /// offset trick makes these kernels exact for it) and unit or random scales; Q8_1's `s` and
    /// Q8_K's `bsums` consistent with the quants, as the quantizers write them.
    fn acts(rng: &mut Rng, w: GgmlType, nb: usize, unit: bool) -> Vec<u8> {
        let t = vec_dot_type(w);
        let mut v = vec![0u8; nb * t.type_size()];
        for b in v.chunks_exact_mut(t.type_size()) {
            match t {
                GgmlType::Q8_0 => {
                    b[..2].copy_from_slice(&scale_bits(rng, unit));
                    for q in &mut b[2..] {
                        *q = rng.int(-128, 127) as i8 as u8;
                    }
                }
                GgmlType::Q8_1 => {
                    let d = scale_bits(rng, unit);
                    b[..2].copy_from_slice(&d);
                    let mut s = 0i32;
                    for q in &mut b[4..] {
                        let x = rng.int(-128, 127);
                        s += x;
                        *q = x as i8 as u8;
                    }
                    let d = f16::from_bits(u16::from_le_bytes(d)).to_f32();
                    b[2..4].copy_from_slice(&f16_bits(d * s as f32));
                }
                _ => {
                    let d: f32 = if unit { 1.0 } else { rng.f() * 0.05 };
                    b[..4].copy_from_slice(&d.to_le_bytes());
                    let qs: Vec<i8> = (0..QK_K).map(|_| rng.int(-128, 127) as i8).collect();
                    for (d, &q) in b[4..4 + QK_K].iter_mut().zip(&qs) {
                        *d = q as u8;
                    }
                    for (g, s) in qs.chunks_exact(16).enumerate() {
                        let sum: i16 = s.iter().map(|&q| i16::from(q)).sum();
                        let o = 4 + QK_K + 2 * g;
                        b[o..o + 2].copy_from_slice(&sum.to_le_bytes());
                    }
                }
            }
        }
        v
    }

    fn avx(w: GgmlType, x: &[u8], y: &[u8]) -> f32 {
        assert_eq!(hardware_level(), SimdLevel::Avx512);
        // SAFETY: the CPU level is Avx512 (asserted above): AVX-512 F/BW/VL/VNNI, AVX2, FMA
        // and F16C.
        unsafe { vec_dot(w, x, y) }.expect("an AVX-512 kernel for every supported type")
    }

    fn avx_act(w: GgmlType, x: &[u8], y: &[f32]) -> f32 {
        assert_eq!(hardware_level(), SimdLevel::Avx512);
        // SAFETY: as in `avx`.
        unsafe { f32_act(w, x, y) }.expect("an AVX-512 kernel for F32/F16/BF16")
    }

    fn deq(t: GgmlType, b: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        blocks::dequantize_row(t, b, &mut out).unwrap();
        out
    }

    /// Σ (|w_i| + max|w| of its block)·|a_i|: a bound on every float term the kernels add.
    fn bound(w: GgmlType, wd: &[f32], ad: &[f32]) -> f64 {
        let bs = w.block_size();
        let mut s = 0f64;
        for (wb, ab) in wd.chunks(bs).zip(ad.chunks(bs)) {
            let m = wb.iter().fold(0f32, |m, &v| m.max(v.abs()));
            for (&a, &b) in wb.iter().zip(ab) {
                s += f64::from(a.abs() + m) * f64::from(b.abs());
            }
        }
        s
    }

    /// Integer inputs (unit scales): the kernel must equal the scalar reference exactly;
    /// random scales: equal up to the float summation order. `counts`: block counts to try (odd ones reach the single-block tails).
    fn check_quant(w: GgmlType, counts: &[usize]) {
        if !avx512_here(&format!("{w}")) {
            return;
        }
        let mut rng = Rng(w.type_size() as u64);
        for &nb in counts {
            let x = weights(&mut rng, w, nb, true);
            let y = acts(&mut rng, w, nb, true);
            let s = scalar::vec_dot(w, &x, &y).unwrap();
            assert_eq!(avx(w, &x, &y), s, "{w} integer inputs, {nb} blocks");

            let n = nb * w.block_size();
            let x = weights(&mut rng, w, nb, false);
            let y = acts(&mut rng, w, nb, false);
            let s = scalar::vec_dot(w, &x, &y).unwrap();
            let v = avx(w, &x, &y);
            let bnd = bound(w, &deq(w, &x, n), &deq(vec_dot_type(w), &y, n));
            assert!(
                f64::from((v - s).abs()) <= 4e-5 * bnd + 1e-30,
                "{w} real scales, {nb} blocks: {v} vs {s} (bound {bnd})"
            );
            // the public entry dispatches to this kernel, or to AVX2's where that was faster
            let want = if crate::kernels::avx512_row_kernel(w) {
                v
            } else {
                vec_dot_with(SimdLevel::Avx2, w, n, &x, &y)
            };
            assert_eq!(
                vec_dot_with(SimdLevel::Avx512, w, n, &x, &y),
                want,
                "{w} dispatch"
            );
        }
    }

    #[test]
    fn avx512_q8_0() {
        check_quant(GgmlType::Q8_0, &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn avx512_q4_0() {
        check_quant(GgmlType::Q4_0, &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn avx512_q4_1() {
        check_quant(GgmlType::Q4_1, &[1, 2, 3, 5]);
    }

    #[test]
    fn avx512_q5_0() {
        check_quant(GgmlType::Q5_0, &[1, 2, 3, 5]);
    }

    #[test]
    fn avx512_q5_1() {
        check_quant(GgmlType::Q5_1, &[1, 2, 3, 5]);
    }

    #[test]
    fn avx512_q2_k() {
        check_quant(GgmlType::Q2K, &[1, 2]);
    }

    #[test]
    fn avx512_q3_k() {
        check_quant(GgmlType::Q3K, &[1, 2]);
    }

    #[test]
    fn avx512_q4_k() {
        check_quant(GgmlType::Q4K, &[1, 2]);
    }

    #[test]
    fn avx512_q5_k() {
        check_quant(GgmlType::Q5K, &[1, 2]);
    }

    #[test]
    fn avx512_q6_k() {
        check_quant(GgmlType::Q6K, &[1, 2]);
    }

    /// `n` floats of type `t` (F32, F16 or BF16): small integers (`int`) or in [-1, 1).
    fn float_row(rng: &mut Rng, t: GgmlType, n: usize, int: bool) -> (Vec<u8>, Vec<f32>) {
        let (mut b, mut v) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let x = if int {
                rng.int(-16, 16) as f32
            } else {
                rng.f()
            };
            let x = match t {
                GgmlType::F32 => {
                    b.extend_from_slice(&x.to_le_bytes());
                    x
                }
                GgmlType::F16 => {
                    let h = f16::from_f32_const(x);
                    b.extend_from_slice(&h.to_bits().to_le_bytes());
                    h.to_f32()
                }
                _ => {
                    let h = bf16::from_f32_const(x);
                    b.extend_from_slice(&h.to_bits().to_le_bytes());
                    h.to_f32()
                }
            };
            v.push(x);
        }
        (b, v)
    }

    const FLOAT_LENGTHS: [usize; 9] = [0, 1, 15, 16, 17, 64, 65, 97, 130];

    /// F32/F16/BF16 · the same type, and · f32 activations: exact on small integers, within
    /// the reassociation error on random rows.
    #[test]
    fn avx512_float_rows() {
        if !avx512_here("float rows") {
            return;
        }
        let mut rng = Rng(99);
        for w in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            for n in FLOAT_LENGTHS {
                for int in [true, false] {
                    let (xb, xv) = float_row(&mut rng, w, n, int);
                    let (yb, yv) = float_row(&mut rng, w, n, int);
                    let mag: f64 = xv
                        .iter()
                        .zip(&yv)
                        .map(|(&a, &b)| f64::from((a * b).abs()))
                        .sum();
                    let tol = 4.0 * (n as f64 + 16.0) * f64::from(f32::EPSILON) * mag + 1e-30;
                    let close = |v: f32, s: f32| {
                        if int {
                            v == s
                        } else {
                            f64::from((v - s).abs()) <= tol
                        }
                    };
                    let s = scalar::vec_dot(w, &xb, &yb).unwrap();
                    let v = avx(w, &xb, &yb);
                    assert!(close(v, s), "{w}·{w} n={n} int={int}: {v} vs {s}");
                    let s = scalar::f32_act(w, &xb, &yv).unwrap();
                    let v = avx_act(w, &xb, &yv);
                    assert!(close(v, s), "{w}·f32 n={n} int={int}: {v} vs {s}");
                    assert_eq!(vec_dot_f32_act_with(SimdLevel::Avx512, w, n, &xb, &yv), v);
                }
            }
        }
    }

    /// The tiles against the per-pair kernels: exact on integer inputs, close on random
    /// scales; every tile shape up to 4 × 4 that the caller passes.
    #[test]
    fn avx512_tiles() {
        if !avx512_here("tiles") {
            return;
        }
        let mut rng = Rng(7);
        let shapes = [(1, 1), (4, 4), (3, 2)];
        for w in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_0] {
            for nb in [1, 3] {
                for unit in [true, false] {
                    let rows: Vec<Vec<u8>> =
                        (0..4).map(|_| weights(&mut rng, w, nb, unit)).collect();
                    let ys: Vec<Vec<u8>> = (0..4).map(|_| acts(&mut rng, w, nb, unit)).collect();
                    for (r, c) in shapes {
                        let rs: Vec<&[u8]> = rows[..r].iter().map(|v| &v[..]).collect();
                        let ts: Vec<&[u8]> = ys[..c].iter().map(|v| &v[..]).collect();
                        let mut out = vec![f32::NAN; r * c];
                        // SAFETY: `avx512_here` checked the CPU level.
                        let done = unsafe { tile(w, &rs, &ts, &mut out) };
                        assert!(done, "{w} has a tile");
                        let n = nb * w.block_size();
                        for i in 0..r {
                            for t in 0..c {
                                let want = avx(w, rs[i], ts[t]);
                                let got = out[i * c + t];
                                let bnd =
                                    bound(w, &deq(w, rs[i], n), &deq(vec_dot_type(w), ts[t], n));
                                assert!(
                                    got == want
                                        || (!unit && f64::from((got - want).abs()) <= 4e-5 * bnd),
                                    "{w} {r}x{c} [{i},{t}] nb={nb}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
        for w in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            for n in [0, 17, 70] {
                let rows: Vec<Vec<u8>> =
                    (0..4).map(|_| float_row(&mut rng, w, n, false).0).collect();
                let xs: Vec<Vec<f32>> = (0..4)
                    .map(|_| float_row(&mut rng, GgmlType::F32, n, false).1)
                    .collect();
                for (r, c) in shapes {
                    let rs: Vec<&[u8]> = rows[..r].iter().map(|v| &v[..]).collect();
                    let ts: Vec<&[f32]> = xs[..c].iter().map(|v| &v[..]).collect();
                    let mut out = vec![f32::NAN; r * c];
                    // SAFETY: `avx512_here` checked the CPU level.
                    let done = unsafe { f32_act_tile(w, &rs, &ts, &mut out) };
                    assert!(done, "{w} has a tile");
                    for i in 0..r {
                        for t in 0..c {
                            let want = avx_act(w, rs[i], ts[t]);
                            let got = out[i * c + t];
                            let tol =
                                8.0 * (n as f64 + 16.0) * f64::from(f32::EPSILON) * (n as f64)
                                    + 1e-30;
                            assert!(
                                f64::from((got - want).abs()) <= tol,
                                "{w} {r}x{c} [{i},{t}] n={n}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        // the public entry runs these tiles at the AVX-512 level
        let w = GgmlType::Q4_0;
        let rows: Vec<Vec<u8>> = (0..5).map(|_| weights(&mut rng, w, 2, true)).collect();
        let ys: Vec<Vec<u8>> = (0..3).map(|_| acts(&mut rng, w, 2, true)).collect();
        let rs: Vec<&[u8]> = rows.iter().map(|v| &v[..]).collect();
        let ts: Vec<&[u8]> = ys.iter().map(|v| &v[..]).collect();
        let mut out = vec![f32::NAN; 15];
        crate::kernels::vec_dot_tile_with(SimdLevel::Avx512, w, 64, &rs, &ts, &mut out);
        for i in 0..5 {
            for t in 0..3 {
                assert_eq!(out[i * 3 + t], avx(w, rs[i], ts[t]), "dispatch [{i},{t}]");
            }
        }
    }

    /// The Q4_K/Q5_K scale unpacking against the block format's own accessor (no SIMD).
    #[test]
    fn avx512_k4_scales_match_format() {
        let mut rng = Rng(5);
        for _ in 0..64 {
            let packed: [u8; 12] = std::array::from_fn(|_| rng.next() as u8);
            let (sc, mn) = k4_scales(&packed);
            for j in 0..8 {
                let (a, b) = blocks::q4_k::get_scale_min_k4(j, &packed);
                assert_eq!(((sc >> (8 * j)) as u8, (mn >> (8 * j)) as u8), (a, b));
            }
        }
    }
}
