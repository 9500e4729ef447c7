//! AVX2 tile kernels: up to 4 weight rows × 4 activation rows per call, for prompts.
//!
//! A per-pair dot product ([`super::avx2`]) unpacks a weight block and loads an activation
//! block for every (row, token) pair. Here one step over block `b` loads the `C` activation
//! blocks once, then unpacks each of the `R` weight blocks once and multiplies it with all
//! `C` of them, accumulating `R × C` partial sums in registers: the weight unpacking is paid
//! once per `C` tokens and the activation loads once per `R` rows. The integer sums per block
//! are those of [`super::scalar`]; only the order of the float sums differs from
//! [`super::avx2`] (one 8-lane accumulator per pair, one horizontal sum at the end).
//!
//! Block-format types: Q8_0, Q4_0, Q5_0 (× Q8_0) and Q4_1, Q5_1 (× Q8_1). The K-quants are in
//! [`super::avx2_tile_k`]. Float weights (F32, F16, BF16) × f32 activations: [`f32_act_tile`].

use super::avx2::{bf16x8, bits32, hsum, load16, load32, load8, nibbles32};
use super::scalar::{Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES, Q8_1_BYTES};
use crate::types::GgmlType;
use std::arch::x86_64::*;

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
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q4_1 | GgmlType::Q5_1 => {
            // SAFETY: the caller guarantees AVX2, FMA and F16C.
            unsafe {
                by_shape(rows, acts, out, |rs, ts, o| {
                    block_tile_dispatch(w, rs, ts, o)
                })
            }
        }
        _ => false,
    }
}

/// A tile of F32/F16/BF16 weight rows × f32 activation rows; `false` where there is none.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
pub unsafe fn f32_act_tile(w: GgmlType, rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) -> bool {
    match w {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            // SAFETY: the caller guarantees AVX2, FMA and F16C.
            unsafe { by_shape(rows, xs, out, |rs, ts, o| float_tile_dispatch(w, rs, ts, o)) }
        }
        _ => false,
    }
}

/// Calls `f` with the tile shape as const generics (`R`, `C` in 1..=4); `false` for a shape
/// outside that range.
#[inline(always)]
fn by_shape<T>(
    rows: &[&[u8]],
    acts: &[T],
    out: &mut [f32],
    f: impl FnOnce(&[&[u8]], &[T], &mut [f32]) -> Shape,
) -> bool {
    if rows.is_empty() || rows.len() > 4 || acts.is_empty() || acts.len() > 4 {
        return false;
    }
    if out.len() != rows.len() * acts.len() {
        return false;
    }
    f(rows, acts, out) == Shape::Done
}

#[derive(PartialEq, Eq)]
enum Shape {
    Done,
    Unsupported,
}

/// Expands `$call::<R, C>` over the 16 shapes of a tile.
macro_rules! shapes {
    ($rows:expr, $acts:expr, $call:ident $(, $arg:expr)*) => {
        match ($rows.len(), $acts.len()) {
            (1, 1) => $call::<1, 1>($($arg),*),
            (1, 2) => $call::<1, 2>($($arg),*),
            (1, 3) => $call::<1, 3>($($arg),*),
            (1, 4) => $call::<1, 4>($($arg),*),
            (2, 1) => $call::<2, 1>($($arg),*),
            (2, 2) => $call::<2, 2>($($arg),*),
            (2, 3) => $call::<2, 3>($($arg),*),
            (2, 4) => $call::<2, 4>($($arg),*),
            (3, 1) => $call::<3, 1>($($arg),*),
            (3, 2) => $call::<3, 2>($($arg),*),
            (3, 3) => $call::<3, 3>($($arg),*),
            (3, 4) => $call::<3, 4>($($arg),*),
            (4, 1) => $call::<4, 1>($($arg),*),
            (4, 2) => $call::<4, 2>($($arg),*),
            (4, 3) => $call::<4, 3>($($arg),*),
            (4, 4) => $call::<4, 4>($($arg),*),
            _ => return Shape::Unsupported,
        }
    };
}

/// The block-format tile for `w` at the shape of `rows` × `acts`.
#[target_feature(enable = "avx2,fma,f16c")]
fn block_tile_dispatch(w: GgmlType, rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) -> Shape {
    match w {
        GgmlType::Q8_0 => shapes!(rows, acts, q8_0_tile, rows, acts, out),
        GgmlType::Q4_0 => shapes!(rows, acts, q4_0_tile, rows, acts, out),
        GgmlType::Q5_0 => shapes!(rows, acts, q5_0_tile, rows, acts, out),
        GgmlType::Q4_1 => shapes!(rows, acts, q4_1_tile, rows, acts, out),
        GgmlType::Q5_1 => shapes!(rows, acts, q5_1_tile, rows, acts, out),
        _ => return Shape::Unsupported,
    }
    Shape::Done
}

/// The float tile for `w` at the shape of `rows` × `xs`.
#[target_feature(enable = "avx2,fma,f16c")]
fn float_tile_dispatch(w: GgmlType, rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) -> Shape {
    match w {
        GgmlType::F32 => shapes!(rows, xs, f32_tile, rows, xs, out),
        GgmlType::F16 => shapes!(rows, xs, f16_tile, rows, xs, out),
        GgmlType::BF16 => shapes!(rows, xs, bf16_tile, rows, xs, out),
        _ => return Shape::Unsupported,
    }
    Shape::Done
}

/// How a 32-element weight block's quants are read and paired with the activations.
#[derive(Clone, Copy)]
struct Block32 {
    /// Bytes of one weight block.
    bx: usize,
    /// Bytes of one activation block (Q8_0: 34, Q8_1: 36); its 32 quants are the last bytes.
    by: usize,
    /// Signed weight quants (× Q8_0, by the sign trick) or unsigned ones with a min (× Q8_1:
    /// `+ m_x · s_y` per block, `m_x` the f16 at byte 2 of the weight block).
    signed: bool,
}

/// The generic block-format tile: `R` weight rows × `C` activation rows; `quants` returns the
/// 32 quants of one weight block as bytes (signed i8 or unsigned u8 per `fmt.signed`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile32<const R: usize, const C: usize>(
    rows: &[&[u8]],
    acts: &[&[u8]],
    out: &mut [f32],
    fmt: Block32,
    quants: impl Fn(&[u8]) -> __m256i,
) {
    let (rows, acts): (&[&[u8]; R], &[&[u8]; C]) = match (rows.try_into(), acts.try_into()) {
        (Ok(r), Ok(a)) => (r, a),
        _ => return,
    };
    let nb = rows[0].len() / fmt.bx;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut acc_m = [_mm_setzero_ps(); R];
    let qy = fmt.by - 32;
    for b in 0..nb {
        let mut ya = [_mm256_setzero_si256(); C];
        let (mut dy, mut sy) = (0u64, 0u64);
        for t in 0..C {
            let blk = &acts[t][b * fmt.by..(b + 1) * fmt.by];
            dy |= u16_at(blk, 0) << (16 * t);
            sy |= u16_at(blk, 2) << (16 * t);
            ya[t] = load32(&blk[qy..]);
        }
        let mut wb: [&[u8]; R] = [&[]; R];
        let (mut dx, mut mx) = (0u64, 0u64);
        for r in 0..R {
            wb[r] = &rows[r][b * fmt.bx..(b + 1) * fmt.bx];
            dx |= u16_at(wb[r], 0) << (16 * r);
            mx |= u16_at(wb[r], 2) << (16 * r);
        }
        // the R × C products d_x · d_y, converted by F16C and laid out for broadcast loads
        let dyv = _mm_cvtph_ps(_mm_cvtsi64_si128(dy as i64));
        let dxv = _mm_cvtph_ps(_mm_cvtsi64_si128(dx as i64));
        let mut dxy = [[0f32; 4]; R];
        let mut dxa = [0f32; 4];
        // SAFETY: `dxa` holds 4 f32, the width of the unaligned store.
        unsafe { _mm_storeu_ps(dxa.as_mut_ptr(), dxv) };
        for r in 0..R {
            let p = _mm_mul_ps(_mm_set1_ps(dxa[r]), dyv);
            // SAFETY: `dxy[r]` holds 4 f32, the width of the unaligned store.
            unsafe { _mm_storeu_ps(dxy[r].as_mut_ptr(), p) };
        }
        if !fmt.signed {
            // Σ m_x · s_y, one 4-lane vector (lane t) per row
            let syv = _mm_cvtph_ps(_mm_cvtsi64_si128(sy as i64));
            let mxv = _mm_cvtph_ps(_mm_cvtsi64_si128(mx as i64));
            let mut mxa = [0f32; 4];
            // SAFETY: `mxa` holds 4 f32, the width of the unaligned store.
            unsafe { _mm_storeu_ps(mxa.as_mut_ptr(), mxv) };
            for r in 0..R {
                acc_m[r] = _mm_add_ps(acc_m[r], _mm_mul_ps(_mm_set1_ps(mxa[r]), syv));
            }
        }
        for r in 0..R {
            let qx = quants(wb[r]);
            if fmt.signed {
                let ax = _mm256_sign_epi8(qx, qx);
                for t in 0..C {
                    let sy = _mm256_sign_epi8(ya[t], qx);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
                    let d = _mm256_set1_ps(dxy[r][t]);
                    acc[r][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[r][t]);
                }
            } else {
                for t in 0..C {
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qx, ya[t]), ones);
                    let d = _mm256_set1_ps(dxy[r][t]);
                    acc[r][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[r][t]);
                }
            }
        }
    }
    for r in 0..R {
        let mut m = [0f32; 4];
        // SAFETY: `m` holds 4 f32, the width of the unaligned store.
        unsafe { _mm_storeu_ps(m.as_mut_ptr(), acc_m[r]) };
        for t in 0..C {
            out[r * C + t] = hsum(acc[r][t]) + m[t];
        }
    }
}

/// The little-endian u16 at `b[off..off + 2]`, widened.
#[inline(always)]
fn u16_at(b: &[u8], off: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// Q8_0 × Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_tile<const R: usize, const C: usize>(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    let fmt = Block32 {
        bx: Q8_0_BYTES,
        by: Q8_0_BYTES,
        signed: true,
    };
    tile32::<R, C>(rows, acts, out, fmt, |b| load32(&b[2..]));
}

/// Q4_0 × Q8_0: nibbles minus 8.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_tile<const R: usize, const C: usize>(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    let fmt = Block32 {
        bx: Q4_0_BYTES,
        by: Q8_0_BYTES,
        signed: true,
    };
    let off = _mm256_set1_epi8(8);
    tile32::<R, C>(rows, acts, out, fmt, |b| {
        _mm256_sub_epi8(nibbles32(&b[2..]), off)
    });
}

/// Q5_0 × Q8_0: `(nibble | bit << 4) - 16`.
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_tile<const R: usize, const C: usize>(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    let fmt = Block32 {
        bx: Q5_0_BYTES,
        by: Q8_0_BYTES,
        signed: true,
    };
    let f0 = _mm256_set1_epi8(0xf0u8 as i8);
    tile32::<R, C>(rows, acts, out, fmt, |b| {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        // (q | bit << 4) - 16 == q | (bit ? 0 : 0xf0) as i8
        _mm256_or_si256(nibbles32(&b[6..]), _mm256_andnot_si256(bits32(qh), f0))
    });
}

/// Q4_1 × Q8_1: unsigned nibbles, plus `m_x · s_y`.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_tile<const R: usize, const C: usize>(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    let fmt = Block32 {
        bx: Q4_1_BYTES,
        by: Q8_1_BYTES,
        signed: false,
    };
    tile32::<R, C>(rows, acts, out, fmt, |b| nibbles32(&b[4..]));
}

/// Q5_1 × Q8_1: unsigned `nibble | bit << 4`, plus `m_x · s_y`.
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_1_tile<const R: usize, const C: usize>(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    let fmt = Block32 {
        bx: Q5_1_BYTES,
        by: Q8_1_BYTES,
        signed: false,
    };
    let x10 = _mm256_set1_epi8(0x10);
    tile32::<R, C>(rows, acts, out, fmt, |b| {
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        _mm256_or_si256(nibbles32(&b[8..]), _mm256_and_si256(bits32(qh), x10))
    });
}

/// The generic float tile: `R` weight rows (`ew` bytes per element, widened 8 at a time by
/// `widen`) × `C` f32 activation rows; `tail` is the scalar dot product of the last
/// `n % 8` elements.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_f<const R: usize, const C: usize>(
    rows: &[&[u8]],
    xs: &[&[f32]],
    out: &mut [f32],
    ew: usize,
    widen: impl Fn(&[u8]) -> __m256,
    tail: impl Fn(&[u8], &[f32]) -> f32,
) {
    let (rows, xs): (&[&[u8]; R], &[&[f32]; C]) = match (rows.try_into(), xs.try_into()) {
        (Ok(r), Ok(a)) => (r, a),
        _ => return,
    };
    let n = xs[0].len();
    let steps = n / 8;
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    for s in 0..steps {
        let mut xv = [_mm256_setzero_ps(); C];
        for t in 0..C {
            xv[t] = load8(&xs[t][8 * s..8 * s + 8]);
        }
        for r in 0..R {
            let wv = widen(&rows[r][8 * ew * s..8 * ew * (s + 1)]);
            for t in 0..C {
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
    }
    for r in 0..R {
        for t in 0..C {
            out[r * C + t] =
                hsum(acc[r][t]) + tail(&rows[r][8 * ew * steps..], &xs[t][8 * steps..]);
        }
    }
}

/// F32 weights × f32.
#[target_feature(enable = "avx2,fma,f16c")]
fn f32_tile<const R: usize, const C: usize>(rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) {
    tile_f::<R, C>(
        rows,
        xs,
        out,
        4,
        |b| _mm256_castsi256_ps(load32(b)),
        super::scalar::f32_f32_act,
    );
}

/// F16 weights (F16C) × f32.
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_tile<const R: usize, const C: usize>(rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) {
    tile_f::<R, C>(
        rows,
        xs,
        out,
        2,
        |b| _mm256_cvtph_ps(load16(b)),
        super::scalar::f16_f32_act,
    );
}

/// BF16 weights (16-bit shift) × f32.
#[target_feature(enable = "avx2,fma,f16c")]
fn bf16_tile<const R: usize, const C: usize>(rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) {
    tile_f::<R, C>(rows, xs, out, 2, |b| bf16x8(b), super::scalar::bf16_f32_act);
}
