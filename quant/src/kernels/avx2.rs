//! AVX2 + FMA + F16C kernels (x86-64). Same integer sums as [`super::scalar`], only the float
//! accumulation order differs (8 lanes, one horizontal sum at the end).
//!
//! Each kernel walks its blocks with `chunks_exact`, so every load reads inside a chunk of
//! known length; the only precondition of the `unsafe` entry [`vec_dot`] is that the CPU has
//! AVX2, FMA and F16C.

use super::scalar::{
    Q2_K_BYTES, Q3_K_BYTES, Q4_0_BYTES, Q4_1_BYTES, Q4_K_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q5_K_BYTES,
    Q6_K_BYTES, Q8_0_BYTES, Q8_1_BYTES, Q8_K_BYTES,
};
use crate::types::GgmlType;
use std::arch::x86_64::*;

/// Dispatches on the weight type; `None` where there is no AVX2 kernel.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
pub unsafe fn vec_dot(w: GgmlType, x: &[u8], y: &[u8]) -> Option<f32> {
    // SAFETY: the caller guarantees AVX2, FMA and F16C, all these functions need.
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

/// The f16 at `b[off..off + 2]` as f32, converted by F16C (exact; subnormal scales, common
/// in K-quant blocks of small weights, cost nothing extra).
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn f16_at(b: &[u8], off: usize) -> f32 {
    let h = u16::from_le_bytes([b[off], b[off + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))))
}

/// Loads 32 bytes from the start of `b`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load32(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: `b` holds at least 32 bytes (checked above); unaligned load.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Loads 16 bytes from the start of `b`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load16(b: &[u8]) -> __m128i {
    assert!(b.len() >= 16);
    // SAFETY: `b` holds at least 16 bytes (checked above); unaligned load.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Pairwise i8·i8 products summed to 8 i32 (`y` must not hold -128 where `x` is negative).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn mul_sum_i8_pairs(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

/// Pairwise u8·i8 products summed to 8 i32.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn mul_sum_us8_pairs(x: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
}

/// 16 packed bytes of nibbles -> 32 bytes: low nibbles first, then high nibbles.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn nibbles32(b: &[u8]) -> __m256i {
    let t = load16(b);
    let v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    _mm256_and_si256(v, _mm256_set1_epi8(0x0f))
}

/// 32 bits (little-endian u32) -> 32 bytes, 0xff where the bit is set.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn bits32(qh: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuf);
    let mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1))
}

/// f32 · f32.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f32_f32(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let xs = x.chunks_exact(128);
    let ys = y.chunks_exact(128);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        for (k, acc) in acc.iter_mut().enumerate() {
            let va = _mm256_castsi256_ps(load32(&a[32 * k..]));
            let vb = _mm256_castsi256_ps(load32(&b[32 * k..]));
            *acc = _mm256_fmadd_ps(va, vb, *acc);
        }
    }
    let xs = xr.chunks_exact(32);
    let ys = yr.chunks_exact(32);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        let va = _mm256_castsi256_ps(load32(a));
        let vb = _mm256_castsi256_ps(load32(b));
        acc[0] = _mm256_fmadd_ps(va, vb, acc[0]);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum(s) + super::scalar::f32_f32(xr, yr)
}

/// f16 · f16 with f32 accumulation.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16_f16(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let xs = x.chunks_exact(64);
    let ys = y.chunks_exact(64);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        for (k, acc) in acc.iter_mut().enumerate() {
            let va = _mm256_cvtph_ps(load16(&a[16 * k..]));
            let vb = _mm256_cvtph_ps(load16(&b[16 * k..]));
            *acc = _mm256_fmadd_ps(va, vb, *acc);
        }
    }
    let xs = xr.chunks_exact(16);
    let ys = yr.chunks_exact(16);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        let va = _mm256_cvtph_ps(load16(a));
        let vb = _mm256_cvtph_ps(load16(b));
        acc[0] = _mm256_fmadd_ps(va, vb, acc[0]);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum(s) + super::scalar::f16_f16(xr, yr)
}

/// 8 bf16 -> 8 f32.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn bf16x8(b: &[u8]) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load16(b)), 16))
}

/// bf16 · bf16 with f32 accumulation.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bf16_bf16(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let xs = x.chunks_exact(64);
    let ys = y.chunks_exact(64);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(bf16x8(&a[16 * k..]), bf16x8(&b[16 * k..]), *acc);
        }
    }
    let xs = xr.chunks_exact(16);
    let ys = yr.chunks_exact(16);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        acc[0] = _mm256_fmadd_ps(bf16x8(a), bf16x8(b), acc[0]);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum(s) + super::scalar::bf16_bf16(xr, yr)
}

/// Weights of type `w` (F32, F16 or BF16) · f32 activations; `None` for other types.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
pub unsafe fn f32_act(w: GgmlType, x: &[u8], y: &[f32]) -> Option<f32> {
    // SAFETY: the caller guarantees AVX2, FMA and F16C, all these functions need.
    unsafe {
        Some(match w {
            GgmlType::F32 => f32_f32_act(x, y),
            GgmlType::F16 => f16_f32_act(x, y),
            GgmlType::BF16 => bf16_f32_act(x, y),
            _ => return None,
        })
    }
}

/// Loads 8 f32 from the start of `y`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load8(y: &[f32]) -> __m256 {
    assert!(y.len() >= 8);
    // SAFETY: `y` holds at least 8 floats (checked above); unaligned load.
    unsafe { _mm256_loadu_ps(y.as_ptr()) }
}

/// f32 weights · f32 activations: 4 independent 8-lane FMA accumulators over 32 elements per
/// step, then 8 per step, then the scalar tail (< 8 elements).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f32_f32_act(x: &[u8], y: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let xs = x.chunks_exact(128);
    let ys = y.chunks_exact(32);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        for (k, acc) in acc.iter_mut().enumerate() {
            let va = _mm256_castsi256_ps(load32(&a[32 * k..]));
            *acc = _mm256_fmadd_ps(va, load8(&b[8 * k..]), *acc);
        }
    }
    let xs = xr.chunks_exact(32);
    let ys = yr.chunks_exact(8);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        let va = _mm256_castsi256_ps(load32(a));
        acc[0] = _mm256_fmadd_ps(va, load8(b), acc[0]);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum(s) + super::scalar::f32_f32_act(xr, yr)
}

/// f16 weights (converted by F16C) · f32 activations, accumulated like [`f32_f32_act`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16_f32_act(x: &[u8], y: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let xs = x.chunks_exact(64);
    let ys = y.chunks_exact(32);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        for (k, acc) in acc.iter_mut().enumerate() {
            let va = _mm256_cvtph_ps(load16(&a[16 * k..]));
            *acc = _mm256_fmadd_ps(va, load8(&b[8 * k..]), *acc);
        }
    }
    let xs = xr.chunks_exact(16);
    let ys = yr.chunks_exact(8);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        acc[0] = _mm256_fmadd_ps(_mm256_cvtph_ps(load16(a)), load8(b), acc[0]);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum(s) + super::scalar::f16_f32_act(xr, yr)
}

/// bf16 weights (widened by a 16-bit shift) · f32 activations, accumulated like
/// [`f32_f32_act`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bf16_f32_act(x: &[u8], y: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let xs = x.chunks_exact(64);
    let ys = y.chunks_exact(32);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(bf16x8(&a[16 * k..]), load8(&b[8 * k..]), *acc);
        }
    }
    let xs = xr.chunks_exact(16);
    let ys = yr.chunks_exact(8);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        acc[0] = _mm256_fmadd_ps(bf16x8(a), load8(b), acc[0]);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum(s) + super::scalar::bf16_f32_act(xr, yr)
}

/// Q8_0 · Q8_0 (two blocks per step, two accumulators).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q8_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    let block = |bx: &[u8], by: &[u8], d: __m256, acc: __m256| -> __m256 {
        let q = mul_sum_i8_pairs(load32(&bx[2..]), load32(&by[2..]));
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc)
    };
    pairs(x, y, Q8_0_BYTES, Q8_0_BYTES, block)
}

/// The little-endian u16 at the start of `b`, widened.
#[inline(always)]
fn u16_at(b: &[u8]) -> u64 {
    u64::from(u16::from_le_bytes([b[0], b[1]]))
}

/// Runs `block(x_block, y_block, d_x·d_y broadcast, acc)` over the blocks of `x` and `y`
/// (both with an f16 scale in their first two bytes), two blocks per step into two
/// accumulators; the four scales of a step are converted by one F16C instruction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pairs(
    x: &[u8],
    y: &[u8],
    bx: usize,
    by: usize,
    block: impl Fn(&[u8], &[u8], __m256, __m256) -> __m256,
) -> f32 {
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let xs = x.chunks_exact(2 * bx);
    let ys = y.chunks_exact(2 * by);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        let (a1, b1) = (&a[bx..], &b[by..]);
        let bits = u16_at(a) | u16_at(b) << 16 | u16_at(a1) << 32 | u16_at(b1) << 48;
        let f = _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64));
        let p = _mm_mul_ps(f, _mm_movehdup_ps(f));
        let d0 = _mm256_broadcastss_ps(p);
        let d1 = _mm256_broadcastss_ps(_mm_movehl_ps(p, p));
        acc0 = block(&a[..bx], &b[..by], d0, acc0);
        acc1 = block(a1, b1, d1, acc1);
    }
    if xr.len() == bx && yr.len() == by {
        let d = _mm256_set1_ps(f16_at(xr, 0) * f16_at(yr, 0));
        acc0 = block(xr, yr, d, acc0);
    }
    hsum(_mm256_add_ps(acc0, acc1))
}

/// Q4_0 · Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    let off = _mm256_set1_epi8(8);
    let block = |bx: &[u8], by: &[u8], d: __m256, acc: __m256| -> __m256 {
        let qx = _mm256_sub_epi8(nibbles32(&bx[2..]), off);
        let q = mul_sum_i8_pairs(qx, load32(&by[2..]));
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc)
    };
    pairs(x, y, Q4_0_BYTES, Q8_0_BYTES, block)
}

/// Runs `block(x_block, y_block, d_x·d_y broadcast, acc)` over the blocks of Q4_1/Q5_1 `x`
/// and Q8_1 `y` and adds `Σ m_x·s_y`; the four f16 of a block pair are converted at once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn with_mins(
    x: &[u8],
    y: &[u8],
    bx: usize,
    block: impl Fn(&[u8], &[u8], __m256, __m256) -> __m256,
) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (a, b) in x.chunks_exact(bx).zip(y.chunks_exact(Q8_1_BYTES)) {
        // [d_x, d_y, m_x, s_y]
        let bits = u16_at(a) | u16_at(b) << 16 | u16_at(&a[2..]) << 32 | u16_at(&b[2..]) << 48;
        let f = _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64));
        let p = _mm_mul_ps(f, _mm_movehdup_ps(f));
        acc_m = _mm_add_ps(acc_m, p);
        acc = block(a, b, _mm256_broadcastss_ps(p), acc);
    }
    hsum(acc) + _mm_cvtss_f32(_mm_movehl_ps(acc_m, acc_m))
}

/// Q4_1 · Q8_1.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_1_q8_1(x: &[u8], y: &[u8]) -> f32 {
    let block = |bx: &[u8], by: &[u8], d: __m256, acc: __m256| -> __m256 {
        let q = mul_sum_us8_pairs(nibbles32(&bx[4..]), load32(&by[4..]));
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc)
    };
    with_mins(x, y, Q4_1_BYTES, block)
}

/// Q5_0 · Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    let block = |bx: &[u8], by: &[u8], d: __m256, acc: __m256| -> __m256 {
        let qh = u32::from_le_bytes([bx[2], bx[3], bx[4], bx[5]]);
        // (q | bit << 4) - 16 == q | (bit ? 0 : 0xf0) as i8
        let hi = _mm256_andnot_si256(bits32(qh), _mm256_set1_epi8(0xf0u8 as i8));
        let qx = _mm256_or_si256(nibbles32(&bx[6..]), hi);
        let q = mul_sum_i8_pairs(qx, load32(&by[2..]));
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc)
    };
    pairs(x, y, Q5_0_BYTES, Q8_0_BYTES, block)
}

/// Q5_1 · Q8_1.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_1_q8_1(x: &[u8], y: &[u8]) -> f32 {
    let block = |bx: &[u8], by: &[u8], d: __m256, acc: __m256| -> __m256 {
        let qh = u32::from_le_bytes([bx[4], bx[5], bx[6], bx[7]]);
        let hi = _mm256_and_si256(bits32(qh), _mm256_set1_epi8(0x10));
        let qx = _mm256_or_si256(nibbles32(&bx[8..]), hi);
        let q = mul_sum_us8_pairs(qx, load32(&by[4..]));
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc)
    };
    with_mins(x, y, Q5_1_BYTES, block)
}

/// The Q4_K/Q5_K scales and mins unpacked: bytes 0..8 scales, 8..16 mins.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn k4_scales_mins(s: &[u8]) -> __m128i {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let u = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let m_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let m_lo = u1 & KMASK1;
    let s_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let s_lo = u0 & KMASK1;
    _mm_set_epi32(m_hi as i32, m_lo as i32, s_hi as i32, s_lo as i32)
}

/// A shuffle that broadcasts i16 lane `i` of a 128-bit half to all 16 lanes of a 256-bit vector.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn bcast16(v: __m256i, i: usize) -> __m256i {
    // bytes 2i, 2i + 1 repeated: one broadcast, no per-byte construction
    let m = _mm256_set1_epi16((((2 * i + 1) << 8) | (2 * i)) as i16);
    _mm256_shuffle_epi8(v, m)
}

/// The mins term of a Q4_K/Q5_K block: 4 i32 partial sums of `m_j·(bsum_2j + bsum_2j+1)`.
#[inline]
#[target_feature(enable = "avx2")]
fn k4_mins(mins_scales: __m256i, by: &[u8]) -> __m128i {
    let bs = load32(&by[4 + 256..]);
    let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    _mm_madd_epi16(_mm256_extracti128_si256(mins_scales, 1), q8s)
}

/// Horizontal sum of 4 f32.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Q4_K · Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    let m4 = _mm256_set1_epi8(0x0f);
    for (bx, by) in x.chunks_exact(Q4_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let dy = super::scalar::f32_at(by, 0);
        let d = dy * f16_at(bx, 0);
        let dmin = -dy * f16_at(bx, 2);
        let ms = _mm256_cvtepu8_epi16(k4_scales_mins(&bx[4..16]));
        let prod = k4_mins(ms, by);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        let sc128 = _mm256_castsi256_si128(ms);
        let scales = _mm256_set_m128i(sc128, sc128);
        let qs = &bx[16..];
        let qy = &by[4..];
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let q4 = load32(&qs[32 * j..]);
            let q4l = _mm256_and_si256(q4, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
            let pl = _mm256_maddubs_epi16(q4l, load32(&qy[64 * j..]));
            let ph = _mm256_maddubs_epi16(q4h, load32(&qy[64 * j + 32..]));
            let pl = _mm256_madd_epi16(bcast16(scales, 2 * j), pl);
            let ph = _mm256_madd_epi16(bcast16(scales, 2 * j + 1), ph);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc) + hsum128(acc_m)
}

/// Q5_K · Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    let m4 = _mm256_set1_epi8(0x0f);
    let b16 = _mm256_set1_epi8(0x10);
    for (bx, by) in x.chunks_exact(Q5_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let dy = super::scalar::f32_at(by, 0);
        let d = dy * f16_at(bx, 0);
        let dmin = -dy * f16_at(bx, 2);
        let ms = _mm256_cvtepu8_epi16(k4_scales_mins(&bx[4..16]));
        let prod = k4_mins(ms, by);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        let sc128 = _mm256_castsi256_si128(ms);
        let scales = _mm256_set_m128i(sc128, sc128);
        let hbits = load32(&bx[16..]);
        let qs = &bx[48..];
        let qy = &by[4..];
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let u1 = _mm256_set1_epi8((1u8 << (2 * j)) as i8);
            let u2 = _mm256_set1_epi8((2u8 << (2 * j)) as i8);
            let h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, u1), u1), b16);
            let h2 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, u2), u2), b16);
            let q4 = load32(&qs[32 * j..]);
            let q5l = _mm256_or_si256(_mm256_and_si256(q4, m4), h1);
            let q5h = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4, 4), m4), h2);
            let pl = _mm256_maddubs_epi16(q5l, load32(&qy[64 * j..]));
            let ph = _mm256_maddubs_epi16(q5h, load32(&qy[64 * j + 32..]));
            let pl = _mm256_madd_epi16(bcast16(scales, 2 * j), pl);
            let ph = _mm256_madd_epi16(bcast16(scales, 2 * j + 1), ph);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc) + hsum128(acc_m)
}

/// Q6_K · Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let m4 = _mm256_set1_epi8(0x0f);
    let m3 = _mm256_set1_epi8(3);
    let m32 = _mm256_set1_epi8(32);
    for (bx, by) in x.chunks_exact(Q6_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d = super::scalar::f32_at(by, 0) * f16_at(bx, 208);
        // the 16 i8 sub-block scales as 16 i16
        let sc = _mm256_cvtepi8_epi16(load16(&bx[192..]));
        let qy = &by[4..];
        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            let ql0 = load32(&bx[64 * half..]);
            let ql1 = load32(&bx[64 * half + 32..]);
            let qh = load32(&bx[128 + 32 * half..]);
            let hb = |s: i32| -> __m256i {
                let h = match s {
                    0 => qh,
                    2 => _mm256_srli_epi16(qh, 2),
                    4 => _mm256_srli_epi16(qh, 4),
                    _ => _mm256_srli_epi16(qh, 6),
                };
                _mm256_slli_epi16(_mm256_and_si256(h, m3), 4)
            };
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), hb(0)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), hb(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), hb(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), hb(6)),
            ];
            // scales 8·half + 2i (lanes 0..8) and 8·half + 2i + 1 (lanes 8..16)
            let sc_half = if half == 0 {
                _mm256_permute2x128_si256(sc, sc, 0x00)
            } else {
                _mm256_permute2x128_si256(sc, sc, 0x11)
            };
            for (i, &qi) in q.iter().enumerate() {
                let q8 = load32(&qy[128 * half + 32 * i..]);
                let p =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(qi, q8), _mm256_maddubs_epi16(m32, q8));
                let s_lo = bcast16(sc_half, 2 * i);
                let s_hi = bcast16(sc_half, 2 * i + 1);
                let s = _mm256_permute2x128_si256(s_lo, s_hi, 0x20);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s, p));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}

/// i16 lanes 0..8 = lane `2i` of `s`'s 128-bit halves, lanes 8..16 = lane `2i + 1`.
#[inline]
#[target_feature(enable = "avx2")]
fn pair_scales(s: __m256i, i: usize) -> __m256i {
    _mm256_permute2x128_si256(bcast16(s, 2 * i), bcast16(s, 2 * i + 1), 0x20)
}

/// Q2_K · Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q2_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    for (bx, by) in x.chunks_exact(Q2_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let dy = super::scalar::f32_at(by, 0);
        let dall = dy * f16_at(bx, 80);
        let dmin = -dy * f16_at(bx, 82);
        let ms = load16(bx);
        let scales8 = _mm_and_si128(ms, m4);
        let mins8 = _mm_and_si128(_mm_srli_epi16(ms, 4), m4);
        let prod = _mm256_madd_epi16(_mm256_cvtepi8_epi16(mins8), load32(&by[4 + 256..]));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
        let all = _mm256_cvtepi8_epi16(scales8);
        let halves = [
            _mm256_permute2x128_si256(all, all, 0x00),
            _mm256_permute2x128_si256(all, all, 0x11),
        ];
        let qy = &by[4..];
        let mut sumi = _mm256_setzero_si256();
        for (j, &sc) in halves.iter().enumerate() {
            let q2 = load32(&bx[16 + 32 * j..]);
            let q = [
                _mm256_and_si256(q2, m3),
                _mm256_and_si256(_mm256_srli_epi16(q2, 2), m3),
                _mm256_and_si256(_mm256_srli_epi16(q2, 4), m3),
                _mm256_and_si256(_mm256_srli_epi16(q2, 6), m3),
            ];
            for (i, &qi) in q.iter().enumerate() {
                let p = _mm256_maddubs_epi16(qi, load32(&qy[128 * j + 32 * i..]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(pair_scales(sc, i), p));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dall), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}

/// Q3_K · Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q3_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let m3 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    for (bx, by) in x.chunks_exact(Q3_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d = super::scalar::f32_at(by, 0) * f16_at(bx, 108);
        // the 16 6-bit scales, unpacked with 32-bit masks, minus 32
        let s = &bx[96..108];
        let u = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
        let (a0, a1, t) = (u(0), u(1), u(2));
        const K1: u32 = 0x0303_0303;
        const K2: u32 = 0x0f0f_0f0f;
        let sc = _mm_sub_epi8(
            _mm_set_epi32(
                (((a1 >> 4) & K2) | (((t >> 6) & K1) << 4)) as i32,
                (((a0 >> 4) & K2) | (((t >> 4) & K1) << 4)) as i32,
                ((a1 & K2) | (((t >> 2) & K1) << 4)) as i32,
                ((a0 & K2) | ((t & K1) << 4)) as i32,
            ),
            _mm_set1_epi8(32),
        );
        let all = _mm256_cvtepi8_epi16(sc);
        let halves = [
            _mm256_permute2x128_si256(all, all, 0x00),
            _mm256_permute2x128_si256(all, all, 0x11),
        ];
        let hbits = load32(bx);
        let qy = &by[4..];
        let mut sumi = _mm256_setzero_si256();
        for (j, &scj) in halves.iter().enumerate() {
            let q3 = load32(&bx[32 + 32 * j..]);
            let ql = [
                _mm256_and_si256(q3, m3),
                _mm256_and_si256(_mm256_srli_epi16(q3, 2), m3),
                _mm256_and_si256(_mm256_srli_epi16(q3, 4), m3),
                _mm256_and_si256(_mm256_srli_epi16(q3, 6), m3),
            ];
            for (i, &qi) in ql.iter().enumerate() {
                let m = _mm256_set1_epi8((1u8 << (4 * j + i)) as i8);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, m), m);
                let qh = _mm256_andnot_si256(set, four);
                let q8 = load32(&qy[128 * j + 32 * i..]);
                let p =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(qi, q8), _mm256_maddubs_epi16(qh, q8));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(pair_scales(scj, i), p));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}
