//! NEON + dotprod + fp16 kernels (aarch64). Same integer sums as [`super::scalar`]; only the
//! float accumulation order may differ (the Q8_0/Q8_1 kernels and the float kernels sum in
//! 4-lane vectors; the K-quant kernels do the per-block float terms exactly as the scalar code).
//!
//! The int8 products use `sdot` (four i8·i8 products summed into each i32 lane), so unlike the
//! x86 sign trick there is no restriction on -128. f16 is widened by `fcvtl`/`fcvtl2`. Both are
//! written as inline assembly (one instruction each, no memory access): `vdotq_s32` is still
//! unstable in Rust and `vcvt_f32_f16` needs a newer compiler than the workspace's MSRV.
//!
//! Each kernel walks its blocks with `chunks_exact`, and every vector load goes through a helper
//! that first takes a checked sub-slice of exactly the bytes it reads, so nothing is read out of
//! bounds; the only precondition of the `unsafe` entries is that the CPU has NEON, dotprod and
//! fp16.

use super::scalar::{f16_at, f32_at};
use super::scalar::{
    Q2_K_BYTES, Q3_K_BYTES, Q4_0_BYTES, Q4_1_BYTES, Q4_K_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q5_K_BYTES,
    Q6_K_BYTES, Q8_0_BYTES, Q8_1_BYTES, Q8_K_BYTES,
};
use super::{TILE_COLS, TILE_ROWS};
use crate::types::GgmlType;
use std::arch::aarch64::*;
use std::arch::asm;

/// Dispatches on the weight type; `None` where there is no NEON kernel.
///
/// # Safety
/// The CPU must support NEON, dotprod and fp16.
pub unsafe fn vec_dot(w: GgmlType, x: &[u8], y: &[u8]) -> Option<f32> {
    // SAFETY: the caller guarantees NEON, dotprod and fp16, all these functions need.
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
    // SAFETY: the caller guarantees NEON, dotprod and fp16, all these functions need.
    unsafe {
        Some(match w {
            GgmlType::F32 => f32_f32_act(x, y),
            GgmlType::F16 => f16_f32_act(x, y),
            GgmlType::BF16 => bf16_f32_act(x, y),
            _ => return None,
        })
    }
}

/// A tile of `rows.len()` × `acts.len()` dot products (lengths checked by the caller, at
/// most [`TILE_ROWS`] × [`TILE_COLS`]): `out[r * acts.len() + t]`. Each weight block is
/// unpacked to i8 once and dotted with every activation row; `false` where there is no NEON
/// tile kernel for `w` (the caller then runs [`vec_dot`] per pair).
///
/// # Safety
/// As [`vec_dot`].
pub unsafe fn tile(w: GgmlType, rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) -> bool {
    if rows.len() > TILE_ROWS || acts.len() > TILE_COLS || out.len() != rows.len() * acts.len() {
        return false;
    }
    // SAFETY: the caller guarantees NEON, dotprod and fp16, all these functions need.
    unsafe {
        match w {
            GgmlType::Q8_0 => tile_q8_0(rows, acts, out),
            GgmlType::Q4_0 => tile_q4_0(rows, acts, out),
            GgmlType::Q4_1 => tile_q4_1(rows, acts, out),
            GgmlType::Q5_0 => tile_q5_0(rows, acts, out),
            GgmlType::Q5_1 => tile_q5_1(rows, acts, out),
            GgmlType::Q2K => tile_k(w, Q2_K_BYTES, rows, acts, out, |b| unpack_q2_k(b)),
            GgmlType::Q3K => tile_k(w, Q3_K_BYTES, rows, acts, out, |b| unpack_q3_k(b)),
            GgmlType::Q4K => tile_k(w, Q4_K_BYTES, rows, acts, out, |b| unpack_q4_k(b)),
            GgmlType::Q5K => tile_k(w, Q5_K_BYTES, rows, acts, out, |b| unpack_q5_k(b)),
            GgmlType::Q6K => tile_k(w, Q6_K_BYTES, rows, acts, out, |b| unpack_q6_k(b)),
            _ => return false,
        }
    }
    true
}

/// A tile of F32/F16/BF16 weight rows × f32 activation rows (lengths checked by the caller,
/// at most [`TILE_ROWS`] × [`TILE_COLS`]): each 8 weights are widened once and multiplied
/// with every activation row; `false` for other types.
///
/// # Safety
/// As [`vec_dot`].
pub unsafe fn f32_act_tile(w: GgmlType, rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) -> bool {
    if rows.len() > TILE_ROWS || xs.len() > TILE_COLS || out.len() != rows.len() * xs.len() {
        return false;
    }
    // SAFETY: the caller guarantees NEON, dotprod and fp16, all these functions need.
    unsafe {
        match w {
            GgmlType::F32 => tile_f32_act_f32(rows, xs, out),
            GgmlType::F16 => tile_f32_act_f16(rows, xs, out),
            GgmlType::BF16 => tile_f32_act_bf16(rows, xs, out),
            _ => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Loads and small helpers
// ---------------------------------------------------------------------------------------------

/// Loads the first 16 bytes of `b` (panics if shorter).
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn ld_u8(b: &[u8]) -> uint8x16_t {
    let b = &b[..16];
    // SAFETY: `b` is exactly 16 bytes long (checked by the slice above); unaligned load.
    unsafe { vld1q_u8(b.as_ptr()) }
}

/// Loads the first 16 bytes of `b` as i8.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn ld_s8(b: &[u8]) -> int8x16_t {
    vreinterpretq_s8_u8(ld_u8(b))
}

/// Loads the first 8 little-endian i16 of `b` (16 bytes).
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn ld_s16(b: &[u8]) -> int16x8_t {
    vreinterpretq_s16_u8(ld_u8(b))
}

/// Loads the first 4 little-endian f32 of `b` (16 bytes).
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn ld_f32_bytes(b: &[u8]) -> float32x4_t {
    vreinterpretq_f32_u8(ld_u8(b))
}

/// Loads the first 4 floats of `y` (panics if shorter).
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn ld_f32(y: &[f32]) -> float32x4_t {
    let y = &y[..4];
    // SAFETY: `y` is exactly 4 floats long (checked by the slice above); unaligned load.
    unsafe { vld1q_f32(y.as_ptr()) }
}

/// `acc + Σ` of 4 i8·i8 products per i32 lane (`sdot`, the dot-product extension).
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` only reads and writes the three vector registers named here (no memory,
    // stack or flags); the dot-product extension it needs is enabled on this function, whose
    // callers guarantee it.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `Σ a_i·b_i` of two 16-lane i8 vectors, as 4 i32 partial sums.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn dot16(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    sdot(vdupq_n_s32(0), a, b)
}

/// The first 8 f16 of `b` (16 bytes) widened exactly to f32 (`fcvtl`, `fcvtl2`).
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn f16x8(b: &[u8]) -> (float32x4_t, float32x4_t) {
    let h = ld_u8(b);
    let lo: float32x4_t;
    let hi: float32x4_t;
    // SAFETY: `fcvtl`/`fcvtl2` only read `h` and write `lo`, `hi` (registers; no memory,
    // stack or flags); they are base Armv8 AdvSIMD instructions, enabled here.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            h = in(vreg) h,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    (lo, hi)
}

/// The first 8 bf16 of `b` (16 bytes) widened to f32 (each placed in the upper 16 bits).
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn bf16x8(b: &[u8]) -> (float32x4_t, float32x4_t) {
    let h = vreinterpretq_u16_u8(ld_u8(b));
    let z = vdupq_n_u16(0);
    (
        vreinterpretq_f32_u16(vzip1q_u16(z, h)),
        vreinterpretq_f32_u16(vzip2q_u16(z, h)),
    )
}

/// The first 8 f32 of `b` (32 bytes).
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn f32x8_bytes(b: &[u8]) -> (float32x4_t, float32x4_t) {
    (ld_f32_bytes(b), ld_f32_bytes(&b[16..]))
}

/// The first 8 floats of `y`.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn f32x8(y: &[f32]) -> (float32x4_t, float32x4_t) {
    (ld_f32(y), ld_f32(&y[4..]))
}

/// The sums of the lanes of `a`, `b`, `c`, `d`, as the 4 lanes of one vector.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn sum4(a: int32x4_t, b: int32x4_t, c: int32x4_t, d: int32x4_t) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(a, b), vpaddq_s32(c, d))
}

/// 16 u8 widened to 4 × 4 i32, in order.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn widen_u8(v: uint8x16_t) -> [int32x4_t; 4] {
    let lo = vmovl_u8(vget_low_u8(v));
    let hi = vmovl_high_u8(v);
    [
        vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(lo))),
        vreinterpretq_s32_u32(vmovl_high_u16(lo)),
        vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(hi))),
        vreinterpretq_s32_u32(vmovl_high_u16(hi)),
    ]
}

/// 16 i8 widened to 4 × 4 i32, in order.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn widen_s8(v: int8x16_t) -> [int32x4_t; 4] {
    let lo = vmovl_s8(vget_low_s8(v));
    let hi = vmovl_high_s8(v);
    [
        vmovl_s16(vget_low_s16(lo)),
        vmovl_high_s16(lo),
        vmovl_s16(vget_low_s16(hi)),
        vmovl_high_s16(hi),
    ]
}

/// `Σ_j sc_j · Σ lanes(p_j)` over sub-blocks `j` (4 per scale vector).
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn scaled_sum<const N: usize>(p: &[int32x4_t], sc: &[int32x4_t; N]) -> i32 {
    let mut acc = vdupq_n_s32(0);
    for (g, s) in p.chunks_exact(4).zip(sc) {
        acc = vmlaq_s32(acc, sum4(g[0], g[1], g[2], g[3]), *s);
    }
    vaddvq_s32(acc)
}

// ---------------------------------------------------------------------------------------------
// Float kernels
// ---------------------------------------------------------------------------------------------

/// `Σ x_i·y_i` over the first `16·k + 8·m` elements that fit whole 8-element units of both
/// rows (`xw` items of `x` and `yw` items of `y` per 8 elements, widened by `lx`, `ly`), in
/// 4 f32 accumulators of 4 lanes. Returns the sum and the number of 8-element units done.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn float_dot<T>(
    x: &[u8],
    xw: usize,
    y: &[T],
    yw: usize,
    lx: impl Fn(&[u8]) -> (float32x4_t, float32x4_t),
    ly: impl Fn(&[T]) -> (float32x4_t, float32x4_t),
) -> (f32, usize) {
    let mut acc = [vdupq_n_f32(0.0); 4];
    let units = (x.len() / xw).min(y.len() / yw);
    let (x, y) = (&x[..units * xw], &y[..units * yw]);
    let xs = x.chunks_exact(2 * xw);
    let ys = y.chunks_exact(2 * yw);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        let (a0, a1) = lx(a);
        let (a2, a3) = lx(&a[xw..]);
        let (b0, b1) = ly(b);
        let (b2, b3) = ly(&b[yw..]);
        acc[0] = vfmaq_f32(acc[0], a0, b0);
        acc[1] = vfmaq_f32(acc[1], a1, b1);
        acc[2] = vfmaq_f32(acc[2], a2, b2);
        acc[3] = vfmaq_f32(acc[3], a3, b3);
    }
    if !xr.is_empty() && !yr.is_empty() {
        let (a0, a1) = lx(xr);
        let (b0, b1) = ly(yr);
        acc[0] = vfmaq_f32(acc[0], a0, b0);
        acc[1] = vfmaq_f32(acc[1], a1, b1);
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[2]), vaddq_f32(acc[1], acc[3]));
    (vaddvq_f32(s), units)
}

/// f32 · f32.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn f32_f32(x: &[u8], y: &[u8]) -> f32 {
    let (s, u) = float_dot(x, 32, y, 32, |a| f32x8_bytes(a), |b| f32x8_bytes(b));
    s + super::scalar::f32_f32(&x[32 * u..], &y[32 * u..])
}

/// f16 · f16 with f32 accumulation.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn f16_f16(x: &[u8], y: &[u8]) -> f32 {
    let (s, u) = float_dot(x, 16, y, 16, |a| f16x8(a), |b| f16x8(b));
    s + super::scalar::f16_f16(&x[16 * u..], &y[16 * u..])
}

/// bf16 · bf16 with f32 accumulation.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn bf16_bf16(x: &[u8], y: &[u8]) -> f32 {
    let (s, u) = float_dot(x, 16, y, 16, |a| bf16x8(a), |b| bf16x8(b));
    s + super::scalar::bf16_bf16(&x[16 * u..], &y[16 * u..])
}

/// f32 weights · f32 activations.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn f32_f32_act(x: &[u8], y: &[f32]) -> f32 {
    let (s, u) = float_dot(x, 32, y, 8, |a| f32x8_bytes(a), |b| f32x8(b));
    s + super::scalar::f32_f32_act(&x[32 * u..], &y[8 * u..])
}

/// f16 weights (widened exactly) · f32 activations.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn f16_f32_act(x: &[u8], y: &[f32]) -> f32 {
    let (s, u) = float_dot(x, 16, y, 8, |a| f16x8(a), |b| f32x8(b));
    s + super::scalar::f16_f32_act(&x[16 * u..], &y[8 * u..])
}

/// bf16 weights · f32 activations.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn bf16_f32_act(x: &[u8], y: &[f32]) -> f32 {
    let (s, u) = float_dot(x, 16, y, 8, |a| bf16x8(a), |b| f32x8(b));
    s + super::scalar::bf16_f32_act(&x[16 * u..], &y[8 * u..])
}

// ---------------------------------------------------------------------------------------------
// 32-element block kernels (Q8_0 / Q8_1 activations)
// ---------------------------------------------------------------------------------------------

/// Runs `block(x_block, y_block) -> (4 i32 partial sums, scale, extra)` over the blocks of `x`
/// (`bx` bytes each) and `y` (`by` bytes each), two blocks per step into two f32
/// accumulators: `Σ scale·Σ partials + Σ extra`.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn blocks32(
    x: &[u8],
    y: &[u8],
    bx: usize,
    by: usize,
    block: impl Fn(&[u8], &[u8]) -> (int32x4_t, f32, f32),
) -> f32 {
    let mut acc0 = vdupq_n_f32(0.0);
    let mut acc1 = vdupq_n_f32(0.0);
    let mut extra = 0f32;
    let xs = x.chunks_exact(2 * bx);
    let ys = y.chunks_exact(2 * by);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        let (p0, d0, e0) = block(&a[..bx], &b[..by]);
        let (p1, d1, e1) = block(&a[bx..], &b[by..]);
        acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(p0), d0);
        acc1 = vfmaq_n_f32(acc1, vcvtq_f32_s32(p1), d1);
        extra += e0 + e1;
    }
    if xr.len() == bx && yr.len() == by {
        let (p, d, e) = block(xr, yr);
        acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(p), d);
        extra += e;
    }
    vaddvq_f32(vaddq_f32(acc0, acc1)) + extra
}

/// 16 packed bytes of nibbles: (low nibbles, high nibbles), each 0..15.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn nibbles(b: &[u8]) -> (uint8x16_t, uint8x16_t) {
    let q = ld_u8(b);
    (vandq_u8(q, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(q))
}

/// A little-endian u32 of fifth bits -> (bytes 0xff where bits 0..16 are set, same for
/// bits 16..32).
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn bits32(qh: u32) -> (uint8x16_t, uint8x16_t) {
    const IDX_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const IDX_HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let v = vreinterpretq_u8_u32(vdupq_n_u32(qh));
    let bit = ld_u8(&BIT);
    (
        vtstq_u8(vqtbl1q_u8(v, ld_u8(&IDX_LO)), bit),
        vtstq_u8(vqtbl1q_u8(v, ld_u8(&IDX_HI)), bit),
    )
}

/// The little-endian u32 at `b[off..off + 4]`.
#[inline(always)]
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Q8_0 · Q8_0.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn q8_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    blocks32(x, y, Q8_0_BYTES, Q8_0_BYTES, |bx, by| {
        let p = sdot(
            dot16(ld_s8(&bx[2..]), ld_s8(&by[2..])),
            ld_s8(&bx[18..]),
            ld_s8(&by[18..]),
        );
        (p, f16_at(bx, 0) * f16_at(by, 0), 0.0)
    })
}

/// Q4_0 · Q8_0.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn q4_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    blocks32(x, y, Q4_0_BYTES, Q8_0_BYTES, |bx, by| {
        let (lo, hi) = nibbles(&bx[2..]);
        let eight = vdupq_n_s8(8);
        let lo = vsubq_s8(vreinterpretq_s8_u8(lo), eight);
        let hi = vsubq_s8(vreinterpretq_s8_u8(hi), eight);
        let p = sdot(dot16(lo, ld_s8(&by[2..])), hi, ld_s8(&by[18..]));
        (p, f16_at(bx, 0) * f16_at(by, 0), 0.0)
    })
}

/// Q4_1 · Q8_1.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn q4_1_q8_1(x: &[u8], y: &[u8]) -> f32 {
    blocks32(x, y, Q4_1_BYTES, Q8_1_BYTES, |bx, by| {
        let (lo, hi) = nibbles(&bx[4..]);
        let lo = vreinterpretq_s8_u8(lo);
        let hi = vreinterpretq_s8_u8(hi);
        let p = sdot(dot16(lo, ld_s8(&by[4..])), hi, ld_s8(&by[20..]));
        let d = f16_at(bx, 0) * f16_at(by, 0);
        (p, d, f16_at(bx, 2) * f16_at(by, 2))
    })
}

/// Q5_0 · Q8_0.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn q5_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    blocks32(x, y, Q5_0_BYTES, Q8_0_BYTES, |bx, by| {
        let (m_lo, m_hi) = bits32(u32_at(bx, 2));
        let (lo, hi) = nibbles(&bx[6..]);
        // (q | bit << 4) - 16 == q | (bit ? 0 : 0xf0) as i8
        let f0 = vdupq_n_u8(0xf0);
        let lo = vreinterpretq_s8_u8(vorrq_u8(lo, vbicq_u8(f0, m_lo)));
        let hi = vreinterpretq_s8_u8(vorrq_u8(hi, vbicq_u8(f0, m_hi)));
        let p = sdot(dot16(lo, ld_s8(&by[2..])), hi, ld_s8(&by[18..]));
        (p, f16_at(bx, 0) * f16_at(by, 0), 0.0)
    })
}

/// Q5_1 · Q8_1.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn q5_1_q8_1(x: &[u8], y: &[u8]) -> f32 {
    blocks32(x, y, Q5_1_BYTES, Q8_1_BYTES, |bx, by| {
        let (m_lo, m_hi) = bits32(u32_at(bx, 4));
        let (lo, hi) = nibbles(&bx[8..]);
        let b16 = vdupq_n_u8(0x10);
        let lo = vreinterpretq_s8_u8(vorrq_u8(lo, vandq_u8(m_lo, b16)));
        let hi = vreinterpretq_s8_u8(vorrq_u8(hi, vandq_u8(m_hi, b16)));
        let p = sdot(dot16(lo, ld_s8(&by[4..])), hi, ld_s8(&by[20..]));
        let d = f16_at(bx, 0) * f16_at(by, 0);
        (p, d, f16_at(bx, 2) * f16_at(by, 2))
    })
}

// ---------------------------------------------------------------------------------------------
// K-quant kernels (Q8_K activations: f32 d, 256 i8, 16 i16 bsums)
// ---------------------------------------------------------------------------------------------

/// Offset of the 256 quants in a Q8_K block.
const Q8K_QS: usize = 4;
/// Offset of the 16 i16 sums of 16 quants in a Q8_K block.
const Q8K_BSUMS: usize = 4 + 256;

/// Q2_K · Q8_K.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn q2_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let m3 = vdupq_n_u8(3);
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q2_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let dy = f32_at(by, 0);
        let sc = ld_u8(bx);
        let scales = widen_u8(vandq_u8(sc, vdupq_n_u8(0x0f)));
        // Σ m_j · bsum_j
        let mins = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(vshrq_n_u8::<4>(sc))));
        let mins_hi = vreinterpretq_s16_u16(vmovl_high_u8(vshrq_n_u8::<4>(sc)));
        let b0 = ld_s16(&by[Q8K_BSUMS..]);
        let b1 = ld_s16(&by[Q8K_BSUMS + 16..]);
        let m = vmull_s16(vget_low_s16(mins), vget_low_s16(b0));
        let m = vmlal_high_s16(m, mins, b0);
        let m = vmlal_s16(m, vget_low_s16(mins_hi), vget_low_s16(b1));
        let m = vmlal_high_s16(m, mins_hi, b1);
        let summs = vaddvq_s32(m);
        // sub-block s (elements 16s..16s + 16): 2-bit field (s / 2) % 4 of bytes
        // 32·(s / 8) + 16·(s % 2) ..
        let qy = &by[Q8K_QS..Q8K_QS + 256];
        let mut p = [vdupq_n_s32(0); 16];
        for k in 0..2 {
            let mut q0 = ld_u8(&bx[16 + 32 * k..]);
            let mut q1 = ld_u8(&bx[16 + 32 * k + 16..]);
            for j in 0..4 {
                let y0 = ld_s8(&qy[128 * k + 32 * j..]);
                let y1 = ld_s8(&qy[128 * k + 32 * j + 16..]);
                p[8 * k + 2 * j] = dot16(vreinterpretq_s8_u8(vandq_u8(q0, m3)), y0);
                p[8 * k + 2 * j + 1] = dot16(vreinterpretq_s8_u8(vandq_u8(q1, m3)), y1);
                q0 = vshrq_n_u8::<2>(q0);
                q1 = vshrq_n_u8::<2>(q1);
            }
        }
        let isum = scaled_sum(&p, &scales);
        let dall = dy * f16_at(bx, 80);
        let dmin = dy * f16_at(bx, 82);
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Q3_K · Q8_K.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn q3_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    const K1: u32 = 0x0303_0303;
    const K2: u32 = 0x0f0f_0f0f;
    let m3 = vdupq_n_u8(3);
    let four = vdupq_n_u8(4);
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q3_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let dy = f32_at(by, 0);
        // the 16 6-bit scales: low 4 bits from bytes 96..104 (low then high nibbles), high 2
        // bits from bytes 104..108 (2 bits per sub-block group of 4)
        let (a0, a1, t) = (u32_at(bx, 96), u32_at(bx, 100), u32_at(bx, 104));
        let words = [
            (a0 & K2) | ((t & K1) << 4),
            (a1 & K2) | (((t >> 2) & K1) << 4),
            ((a0 >> 4) & K2) | (((t >> 4) & K1) << 4),
            ((a1 >> 4) & K2) | (((t >> 6) & K1) << 4),
        ];
        let mut sb = [0u8; 16];
        for (d, w) in sb.chunks_exact_mut(4).zip(words) {
            d.copy_from_slice(&w.to_le_bytes());
        }
        let sc = vsubq_s8(ld_s8(&sb), vdupq_n_s8(32));
        let scales = widen_s8(sc);
        let hm = [ld_u8(bx), ld_u8(&bx[16..])];
        let qy = &by[Q8K_QS..Q8K_QS + 256];
        let mut p = [vdupq_n_s32(0); 16];
        for half in 0..2 {
            let mut q0 = ld_u8(&bx[32 + 32 * half..]);
            let mut q1 = ld_u8(&bx[32 + 32 * half + 16..]);
            for quarter in 0..4 {
                let bit = vdupq_n_u8(1 << (4 * half + quarter));
                // q - (high bit clear ? 4 : 0)
                let v0 = vsubq_u8(vandq_u8(q0, m3), vbicq_u8(four, vtstq_u8(hm[0], bit)));
                let v1 = vsubq_u8(vandq_u8(q1, m3), vbicq_u8(four, vtstq_u8(hm[1], bit)));
                let y0 = ld_s8(&qy[128 * half + 32 * quarter..]);
                let y1 = ld_s8(&qy[128 * half + 32 * quarter + 16..]);
                p[8 * half + 2 * quarter] = dot16(vreinterpretq_s8_u8(v0), y0);
                p[8 * half + 2 * quarter + 1] = dot16(vreinterpretq_s8_u8(v1), y1);
                q0 = vshrq_n_u8::<2>(q0);
                q1 = vshrq_n_u8::<2>(q1);
            }
        }
        let isum = scaled_sum(&p, &scales);
        sumf += (f16_at(bx, 108) * dy) * isum as f32;
    }
    sumf
}

/// The Q4_K/Q5_K 6-bit scales and mins of the 12 bytes at `s`: (8 scales, 8 mins) as i32.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn k4_scales_mins(s: &[u8]) -> ([int32x4_t; 2], int16x8_t) {
    const K1: u32 = 0x3f3f_3f3f;
    const K2: u32 = 0x0f0f_0f0f;
    const K3: u32 = 0x0303_0303;
    let (u0, u1, u2) = (u32_at(s, 0), u32_at(s, 4), u32_at(s, 8));
    let words = [
        u0 & K1,
        (u2 & K2) | (((u0 >> 6) & K3) << 4),
        u1 & K1,
        ((u2 >> 4) & K2) | (((u1 >> 6) & K3) << 4),
    ];
    let mut b = [0u8; 16];
    for (d, w) in b.chunks_exact_mut(4).zip(words) {
        d.copy_from_slice(&w.to_le_bytes());
    }
    let v = ld_u8(&b);
    let w = widen_u8(v);
    let mins = vreinterpretq_s16_u16(vmovl_high_u8(v));
    ([w[0], w[1]], mins)
}

/// `Σ_j m_j · (bsum_2j + bsum_2j+1)` of a Q8_K block `by`.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn k4_mins(mins: int16x8_t, by: &[u8]) -> i32 {
    // each pair sum of two 16-quant sums fits i16 (|·| <= 4096)
    let pairs = vpaddq_s16(ld_s16(&by[Q8K_BSUMS..]), ld_s16(&by[Q8K_BSUMS + 16..]));
    let m = vmull_s16(vget_low_s16(mins), vget_low_s16(pairs));
    vaddvq_s32(vmlal_high_s16(m, mins, pairs))
}

/// Q4_K · Q8_K.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn q4_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let m4 = vdupq_n_u8(0x0f);
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q4_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let dy = f32_at(by, 0);
        let (scales, mins) = k4_scales_mins(&bx[4..16]);
        let imin = k4_mins(mins, by);
        let qs = &bx[16..16 + 128];
        let qy = &by[Q8K_QS..Q8K_QS + 256];
        let mut p = [vdupq_n_s32(0); 8];
        for k in 0..4 {
            let q0 = ld_u8(&qs[32 * k..]);
            let q1 = ld_u8(&qs[32 * k + 16..]);
            let l0 = vreinterpretq_s8_u8(vandq_u8(q0, m4));
            let l1 = vreinterpretq_s8_u8(vandq_u8(q1, m4));
            let h0 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q0));
            let h1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q1));
            let y = &qy[64 * k..64 * k + 64];
            p[2 * k] = sdot(dot16(l0, ld_s8(y)), l1, ld_s8(&y[16..]));
            p[2 * k + 1] = sdot(dot16(h0, ld_s8(&y[32..])), h1, ld_s8(&y[48..]));
        }
        let isum = scaled_sum(&p, &scales);
        sumf += (f16_at(bx, 0) * dy) * isum as f32 - (f16_at(bx, 2) * dy) * imin as f32;
    }
    sumf
}

/// Q5_K · Q8_K.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn q5_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let m4 = vdupq_n_u8(0x0f);
    let b16 = vdupq_n_u8(0x10);
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q5_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let dy = f32_at(by, 0);
        let (scales, mins) = k4_scales_mins(&bx[4..16]);
        let imin = k4_mins(mins, by);
        let qh = [ld_u8(&bx[16..]), ld_u8(&bx[32..])];
        let qs = &bx[48..48 + 128];
        let qy = &by[Q8K_QS..Q8K_QS + 256];
        let mut p = [vdupq_n_s32(0); 8];
        for k in 0..4 {
            let u1 = vdupq_n_u8(1 << (2 * k));
            let u2 = vdupq_n_u8(2 << (2 * k));
            let q0 = ld_u8(&qs[32 * k..]);
            let q1 = ld_u8(&qs[32 * k + 16..]);
            let fifth = |h: uint8x16_t, u: uint8x16_t| vandq_u8(vtstq_u8(h, u), b16);
            let l0 = vorrq_u8(vandq_u8(q0, m4), fifth(qh[0], u1));
            let l1 = vorrq_u8(vandq_u8(q1, m4), fifth(qh[1], u1));
            let h0 = vorrq_u8(vshrq_n_u8::<4>(q0), fifth(qh[0], u2));
            let h1 = vorrq_u8(vshrq_n_u8::<4>(q1), fifth(qh[1], u2));
            let y = &qy[64 * k..64 * k + 64];
            let s8 = |v: uint8x16_t| vreinterpretq_s8_u8(v);
            p[2 * k] = sdot(dot16(s8(l0), ld_s8(y)), s8(l1), ld_s8(&y[16..]));
            p[2 * k + 1] = sdot(dot16(s8(h0), ld_s8(&y[32..])), s8(h1), ld_s8(&y[48..]));
        }
        let isum = scaled_sum(&p, &scales);
        sumf += (f16_at(bx, 0) * dy) * isum as f32 - (f16_at(bx, 2) * dy) * imin as f32;
    }
    sumf
}

/// Q6_K · Q8_K.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(super) fn q6_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let m4 = vdupq_n_u8(0x0f);
    let m30 = vdupq_n_u8(0x30);
    let m32 = vdupq_n_s8(32);
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q6_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let dy = f32_at(by, 0);
        let scales = widen_s8(ld_s8(&bx[192..]));
        let qy = &by[Q8K_QS..Q8K_QS + 256];
        let mut p = [vdupq_n_s32(0); 16];
        for half in 0..2 {
            let ql = &bx[64 * half..64 * half + 64];
            let qh = &bx[128 + 32 * half..128 + 32 * half + 32];
            let q8 = &qy[128 * half..128 * half + 128];
            // t: elements l = 16t..16t + 16 of the 32 of each quarter
            for t in 0..2 {
                let a = ld_u8(&ql[16 * t..]);
                let c = ld_u8(&ql[32 + 16 * t..]);
                let h = ld_u8(&qh[16 * t..]);
                let q = [
                    vorrq_u8(vandq_u8(a, m4), vandq_u8(vshlq_n_u8::<4>(h), m30)),
                    vorrq_u8(vandq_u8(c, m4), vandq_u8(vshlq_n_u8::<2>(h), m30)),
                    vorrq_u8(vshrq_n_u8::<4>(a), vandq_u8(h, m30)),
                    vorrq_u8(vshrq_n_u8::<4>(c), vandq_u8(vshrq_n_u8::<2>(h), m30)),
                ];
                for (i, &qi) in q.iter().enumerate() {
                    let v = vsubq_s8(vreinterpretq_s8_u8(qi), m32);
                    p[8 * half + 2 * i + t] = dot16(v, ld_s8(&q8[32 * i + 16 * t..]));
                }
            }
        }
        let isum = scaled_sum(&p, &scales);
        sumf += (f16_at(bx, 208) * dy) * isum as f32;
    }
    sumf
}

// ---------------------------------------------------------------------------------------------
// Tile kernels
// ---------------------------------------------------------------------------------------------

/// f32-activation tile: for each weight row, `xw` bytes of weights per 8 elements are widened
/// by `lx` once and multiplied with the 8 matching floats of every activation row (one
/// accumulator per pair); the last `n % 8` elements by the scalar `tail`.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn f32_act_tile_with(
    rows: &[&[u8]],
    xs: &[&[f32]],
    out: &mut [f32],
    xw: usize,
    lx: impl Fn(&[u8]) -> (float32x4_t, float32x4_t),
    tail: impl Fn(&[u8], &[f32]) -> f32,
) {
    let nt = xs.len();
    for (r, row) in rows.iter().enumerate() {
        let mut acc = [vdupq_n_f32(0.0); TILE_COLS];
        let units = row.chunks_exact(xw);
        let done = row.len() - units.remainder().len();
        for (i, a) in units.enumerate() {
            let (w0, w1) = lx(a);
            for (acc, x) in acc.iter_mut().zip(xs) {
                let (x0, x1) = f32x8(&x[8 * i..]);
                *acc = vfmaq_f32(vfmaq_f32(*acc, w0, x0), w1, x1);
            }
        }
        let n = done / xw * 8;
        for (t, x) in xs.iter().enumerate() {
            out[r * nt + t] = vaddvq_f32(acc[t]) + tail(&row[done..], &x[n..]);
        }
    }
}

/// f32 weight rows × f32 activation rows.
#[target_feature(enable = "neon,dotprod,fp16")]
fn tile_f32_act_f32(rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) {
    f32_act_tile_with(
        rows,
        xs,
        out,
        32,
        |a| f32x8_bytes(a),
        super::scalar::f32_f32_act,
    );
}

/// f16 weight rows × f32 activation rows.
#[target_feature(enable = "neon,dotprod,fp16")]
fn tile_f32_act_f16(rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) {
    f32_act_tile_with(rows, xs, out, 16, |a| f16x8(a), super::scalar::f16_f32_act);
}

/// bf16 weight rows × f32 activation rows.
#[target_feature(enable = "neon,dotprod,fp16")]
fn tile_f32_act_bf16(rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) {
    f32_act_tile_with(
        rows,
        xs,
        out,
        16,
        |a| bf16x8(a),
        super::scalar::bf16_f32_act,
    );
}

/// A 32-element weight block unpacked: (i8 elements 0..16, 16..32, d, m or 0).
type Block32 = (int8x16_t, int8x16_t, f32, f32);

/// Tile over 32-element blocks: each weight block (`bx` bytes) is unpacked by `unpack` once
/// and dotted with the matching block (`by` bytes: f16 d, [f16 s,] 32 i8 at the end) of every
/// activation row; `with_mins` adds `m_x·s_y` per block (Q8_1 activations).
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn tile32(
    rows: &[&[u8]],
    acts: &[&[u8]],
    out: &mut [f32],
    bx: usize,
    by: usize,
    with_mins: bool,
    unpack: impl Fn(&[u8]) -> Block32,
) {
    let nt = acts.len();
    for (r, row) in rows.iter().enumerate() {
        let mut acc = [vdupq_n_f32(0.0); TILE_COLS];
        let mut extra = [0f32; TILE_COLS];
        for (i, b) in row.chunks_exact(bx).enumerate() {
            let (lo, hi, dx, mx) = unpack(b);
            for (t, a) in acts.iter().enumerate() {
                let yb = &a[i * by..(i + 1) * by];
                let p = sdot(dot16(lo, ld_s8(&yb[by - 32..])), hi, ld_s8(&yb[by - 16..]));
                acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(p), dx * f16_at(yb, 0));
                if with_mins {
                    extra[t] += mx * f16_at(yb, 2);
                }
            }
        }
        for t in 0..nt {
            out[r * nt + t] = vaddvq_f32(acc[t]) + extra[t];
        }
    }
}

/// Q8_0 tile.
#[target_feature(enable = "neon,dotprod,fp16")]
fn tile_q8_0(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    tile32(rows, acts, out, Q8_0_BYTES, Q8_0_BYTES, false, |b| {
        (ld_s8(&b[2..]), ld_s8(&b[18..]), f16_at(b, 0), 0.0)
    });
}

/// Q4_0 tile.
#[target_feature(enable = "neon,dotprod,fp16")]
fn tile_q4_0(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    tile32(rows, acts, out, Q4_0_BYTES, Q8_0_BYTES, false, |b| {
        let (lo, hi) = nibbles(&b[2..]);
        let eight = vdupq_n_s8(8);
        let lo = vsubq_s8(vreinterpretq_s8_u8(lo), eight);
        let hi = vsubq_s8(vreinterpretq_s8_u8(hi), eight);
        (lo, hi, f16_at(b, 0), 0.0)
    });
}

/// Q4_1 tile.
#[target_feature(enable = "neon,dotprod,fp16")]
fn tile_q4_1(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    tile32(rows, acts, out, Q4_1_BYTES, Q8_1_BYTES, true, |b| {
        let (lo, hi) = nibbles(&b[4..]);
        let (lo, hi) = (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi));
        (lo, hi, f16_at(b, 0), f16_at(b, 2))
    });
}

/// Q5_0 tile.
#[target_feature(enable = "neon,dotprod,fp16")]
fn tile_q5_0(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    tile32(rows, acts, out, Q5_0_BYTES, Q8_0_BYTES, false, |b| {
        let (m_lo, m_hi) = bits32(u32_at(b, 2));
        let (lo, hi) = nibbles(&b[6..]);
        let f0 = vdupq_n_u8(0xf0);
        let lo = vreinterpretq_s8_u8(vorrq_u8(lo, vbicq_u8(f0, m_lo)));
        let hi = vreinterpretq_s8_u8(vorrq_u8(hi, vbicq_u8(f0, m_hi)));
        (lo, hi, f16_at(b, 0), 0.0)
    });
}

/// Q5_1 tile.
#[target_feature(enable = "neon,dotprod,fp16")]
fn tile_q5_1(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    tile32(rows, acts, out, Q5_1_BYTES, Q8_1_BYTES, true, |b| {
        let (m_lo, m_hi) = bits32(u32_at(b, 4));
        let (lo, hi) = nibbles(&b[8..]);
        let b16 = vdupq_n_u8(0x10);
        let lo = vreinterpretq_s8_u8(vorrq_u8(lo, vandq_u8(m_lo, b16)));
        let hi = vreinterpretq_s8_u8(vorrq_u8(hi, vandq_u8(m_hi, b16)));
        (lo, hi, f16_at(b, 0), f16_at(b, 2))
    });
}

/// A K-quant weight block unpacked: the 256 quants as i8 (vector `s` = elements
/// `16s..16s + 16`), the sub-block scales as i32 (16 scales, or 8 for Q4_K/Q5_K in the first
/// two vectors), the mins as i16 (Q2_K: 16, Q4_K/Q5_K: 8 in the first vector), d and dmin.
struct KBlock {
    q: [int8x16_t; 16],
    sc: [int32x4_t; 4],
    mins: [int16x8_t; 2],
    d: f32,
    dmin: f32,
}

/// Unpacks a Q2_K block.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn unpack_q2_k(bx: &[u8]) -> KBlock {
    let m3 = vdupq_n_u8(3);
    let sc = ld_u8(bx);
    let m = vshrq_n_u8::<4>(sc);
    let mut q = [vdupq_n_s8(0); 16];
    for k in 0..2 {
        let mut q0 = ld_u8(&bx[16 + 32 * k..]);
        let mut q1 = ld_u8(&bx[16 + 32 * k + 16..]);
        for j in 0..4 {
            q[8 * k + 2 * j] = vreinterpretq_s8_u8(vandq_u8(q0, m3));
            q[8 * k + 2 * j + 1] = vreinterpretq_s8_u8(vandq_u8(q1, m3));
            q0 = vshrq_n_u8::<2>(q0);
            q1 = vshrq_n_u8::<2>(q1);
        }
    }
    KBlock {
        q,
        sc: widen_u8(vandq_u8(sc, vdupq_n_u8(0x0f))),
        mins: [
            vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m))),
            vreinterpretq_s16_u16(vmovl_high_u8(m)),
        ],
        d: f16_at(bx, 80),
        dmin: f16_at(bx, 82),
    }
}

/// Unpacks a Q3_K block.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn unpack_q3_k(bx: &[u8]) -> KBlock {
    const K1: u32 = 0x0303_0303;
    const K2: u32 = 0x0f0f_0f0f;
    let m3 = vdupq_n_u8(3);
    let four = vdupq_n_u8(4);
    let (a0, a1, t) = (u32_at(bx, 96), u32_at(bx, 100), u32_at(bx, 104));
    let words = [
        (a0 & K2) | ((t & K1) << 4),
        (a1 & K2) | (((t >> 2) & K1) << 4),
        ((a0 >> 4) & K2) | (((t >> 4) & K1) << 4),
        ((a1 >> 4) & K2) | (((t >> 6) & K1) << 4),
    ];
    let mut sb = [0u8; 16];
    for (d, w) in sb.chunks_exact_mut(4).zip(words) {
        d.copy_from_slice(&w.to_le_bytes());
    }
    let hm = [ld_u8(bx), ld_u8(&bx[16..])];
    let mut q = [vdupq_n_s8(0); 16];
    for half in 0..2 {
        let mut q0 = ld_u8(&bx[32 + 32 * half..]);
        let mut q1 = ld_u8(&bx[32 + 32 * half + 16..]);
        for quarter in 0..4 {
            let bit = vdupq_n_u8(1 << (4 * half + quarter));
            let v0 = vsubq_u8(vandq_u8(q0, m3), vbicq_u8(four, vtstq_u8(hm[0], bit)));
            let v1 = vsubq_u8(vandq_u8(q1, m3), vbicq_u8(four, vtstq_u8(hm[1], bit)));
            q[8 * half + 2 * quarter] = vreinterpretq_s8_u8(v0);
            q[8 * half + 2 * quarter + 1] = vreinterpretq_s8_u8(v1);
            q0 = vshrq_n_u8::<2>(q0);
            q1 = vshrq_n_u8::<2>(q1);
        }
    }
    KBlock {
        q,
        sc: widen_s8(vsubq_s8(ld_s8(&sb), vdupq_n_s8(32))),
        mins: [vdupq_n_s16(0); 2],
        d: f16_at(bx, 108),
        dmin: 0.0,
    }
}

/// Unpacks a Q4_K block.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn unpack_q4_k(bx: &[u8]) -> KBlock {
    let m4 = vdupq_n_u8(0x0f);
    let (scales, mins) = k4_scales_mins(&bx[4..16]);
    let mut q = [vdupq_n_s8(0); 16];
    for k in 0..4 {
        let q0 = ld_u8(&bx[16 + 32 * k..]);
        let q1 = ld_u8(&bx[16 + 32 * k + 16..]);
        q[4 * k] = vreinterpretq_s8_u8(vandq_u8(q0, m4));
        q[4 * k + 1] = vreinterpretq_s8_u8(vandq_u8(q1, m4));
        q[4 * k + 2] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q0));
        q[4 * k + 3] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q1));
    }
    let z = vdupq_n_s32(0);
    KBlock {
        q,
        sc: [scales[0], scales[1], z, z],
        mins: [mins, vdupq_n_s16(0)],
        d: f16_at(bx, 0),
        dmin: f16_at(bx, 2),
    }
}

/// Unpacks a Q5_K block.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn unpack_q5_k(bx: &[u8]) -> KBlock {
    let m4 = vdupq_n_u8(0x0f);
    let b16 = vdupq_n_u8(0x10);
    let (scales, mins) = k4_scales_mins(&bx[4..16]);
    let qh = [ld_u8(&bx[16..]), ld_u8(&bx[32..])];
    let mut q = [vdupq_n_s8(0); 16];
    for k in 0..4 {
        let u1 = vdupq_n_u8(1 << (2 * k));
        let u2 = vdupq_n_u8(2 << (2 * k));
        let q0 = ld_u8(&bx[48 + 32 * k..]);
        let q1 = ld_u8(&bx[48 + 32 * k + 16..]);
        let fifth = |h: uint8x16_t, u: uint8x16_t| vandq_u8(vtstq_u8(h, u), b16);
        let s8 = |v: uint8x16_t| vreinterpretq_s8_u8(v);
        q[4 * k] = s8(vorrq_u8(vandq_u8(q0, m4), fifth(qh[0], u1)));
        q[4 * k + 1] = s8(vorrq_u8(vandq_u8(q1, m4), fifth(qh[1], u1)));
        q[4 * k + 2] = s8(vorrq_u8(vshrq_n_u8::<4>(q0), fifth(qh[0], u2)));
        q[4 * k + 3] = s8(vorrq_u8(vshrq_n_u8::<4>(q1), fifth(qh[1], u2)));
    }
    let z = vdupq_n_s32(0);
    KBlock {
        q,
        sc: [scales[0], scales[1], z, z],
        mins: [mins, vdupq_n_s16(0)],
        d: f16_at(bx, 0),
        dmin: f16_at(bx, 2),
    }
}

/// Unpacks a Q6_K block.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn unpack_q6_k(bx: &[u8]) -> KBlock {
    let m4 = vdupq_n_u8(0x0f);
    let m30 = vdupq_n_u8(0x30);
    let m32 = vdupq_n_s8(32);
    let mut q = [vdupq_n_s8(0); 16];
    for half in 0..2 {
        let ql = &bx[64 * half..64 * half + 64];
        let qh = &bx[128 + 32 * half..128 + 32 * half + 32];
        for t in 0..2 {
            let a = ld_u8(&ql[16 * t..]);
            let c = ld_u8(&ql[32 + 16 * t..]);
            let h = ld_u8(&qh[16 * t..]);
            let v = [
                vorrq_u8(vandq_u8(a, m4), vandq_u8(vshlq_n_u8::<4>(h), m30)),
                vorrq_u8(vandq_u8(c, m4), vandq_u8(vshlq_n_u8::<2>(h), m30)),
                vorrq_u8(vshrq_n_u8::<4>(a), vandq_u8(h, m30)),
                vorrq_u8(vshrq_n_u8::<4>(c), vandq_u8(vshrq_n_u8::<2>(h), m30)),
            ];
            for (i, &vi) in v.iter().enumerate() {
                q[8 * half + 2 * i + t] = vsubq_s8(vreinterpretq_s8_u8(vi), m32);
            }
        }
    }
    KBlock {
        q,
        sc: widen_s8(ld_s8(&bx[192..])),
        mins: [vdupq_n_s16(0); 2],
        d: f16_at(bx, 208),
        dmin: 0.0,
    }
}

/// K-quant tile: each weight block (`bx` bytes) is unpacked by `unpack` once and dotted with
/// the matching Q8_K block of every activation row; the per-block float terms are those of
/// the single-pair kernels, so each value equals [`vec_dot`]'s exactly.
#[inline]
#[target_feature(enable = "neon,dotprod,fp16")]
fn tile_k(
    w: GgmlType,
    bx: usize,
    rows: &[&[u8]],
    acts: &[&[u8]],
    out: &mut [f32],
    unpack: impl Fn(&[u8]) -> KBlock,
) {
    let nt = acts.len();
    let sub32 = matches!(w, GgmlType::Q4K | GgmlType::Q5K);
    for (r, row) in rows.iter().enumerate() {
        let mut sums = [0f32; TILE_COLS];
        for (i, b) in row.chunks_exact(bx).enumerate() {
            let kb = unpack(b);
            for (t, a) in acts.iter().enumerate() {
                let by = &a[i * Q8_K_BYTES..(i + 1) * Q8_K_BYTES];
                let dy = f32_at(by, 0);
                let qy = &by[Q8K_QS..Q8K_QS + 256];
                let isum = if sub32 {
                    let mut p = [vdupq_n_s32(0); 8];
                    for (j, p) in p.iter_mut().enumerate() {
                        let y = &qy[32 * j..32 * j + 32];
                        *p = sdot(
                            dot16(kb.q[2 * j], ld_s8(y)),
                            kb.q[2 * j + 1],
                            ld_s8(&y[16..]),
                        );
                    }
                    scaled_sum(&p, &[kb.sc[0], kb.sc[1]])
                } else {
                    let mut p = [vdupq_n_s32(0); 16];
                    for (s, p) in p.iter_mut().enumerate() {
                        *p = dot16(kb.q[s], ld_s8(&qy[16 * s..]));
                    }
                    scaled_sum(&p, &kb.sc)
                };
                sums[t] += match w {
                    GgmlType::Q2K => {
                        let b0 = ld_s16(&by[Q8K_BSUMS..]);
                        let b1 = ld_s16(&by[Q8K_BSUMS + 16..]);
                        let [m0, m1] = kb.mins;
                        let m = vmull_s16(vget_low_s16(m0), vget_low_s16(b0));
                        let m = vmlal_high_s16(m, m0, b0);
                        let m = vmlal_s16(m, vget_low_s16(m1), vget_low_s16(b1));
                        let summs = vaddvq_s32(vmlal_high_s16(m, m1, b1));
                        (dy * kb.d) * isum as f32 - (dy * kb.dmin) * summs as f32
                    }
                    GgmlType::Q4K | GgmlType::Q5K => {
                        let imin = k4_mins(kb.mins[0], by);
                        (kb.d * dy) * isum as f32 - (kb.dmin * dy) * imin as f32
                    }
                    _ => (kb.d * dy) * isum as f32,
                };
            }
        }
        out[r * nt..(r + 1) * nt].copy_from_slice(&sums[..nt]);
    }
}

#[cfg(all(test, target_arch = "aarch64"))]
mod tests {
    //! Direct NEON-vs-scalar checks (the shared kernel tests also run the NEON level through
    //! the public entries); these fail, rather than skip, where NEON is not detected.

    use super::super::{hardware_level, scalar, vec_dot_type, SimdLevel};
    use super::*;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    fn put_f16(b: &mut [u8], off: usize, v: f32) {
        b[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
    }

    #[test]
    fn neon_level_detected() {
        assert_eq!(hardware_level(), SimdLevel::Neon);
        assert!(SimdLevel::Neon.available());
        assert!(std::arch::is_aarch64_feature_detected!("dotprod"));
    }

    const QUANT_TYPES: [(GgmlType, &[usize]); 10] = [
        (GgmlType::Q8_0, &[0]),
        (GgmlType::Q4_0, &[0]),
        (GgmlType::Q4_1, &[0, 2]),
        (GgmlType::Q5_0, &[0]),
        (GgmlType::Q5_1, &[0, 2]),
        (GgmlType::Q2K, &[80, 82]),
        (GgmlType::Q3K, &[108]),
        (GgmlType::Q4K, &[0, 2]),
        (GgmlType::Q5K, &[0, 2]),
        (GgmlType::Q6K, &[208]),
    ];

    /// `nb` random weight blocks of `w` (all bytes random, the f16 scales at `offs` set to
    /// 0, 0.5, 1 or 1.5).
    fn weights(rng: &mut Rng, w: GgmlType, offs: &[usize], nb: usize) -> Vec<u8> {
        let mut x: Vec<u8> = (0..nb * w.type_size()).map(|_| rng.next() as u8).collect();
        for b in x.chunks_exact_mut(w.type_size()) {
            for &o in offs {
                put_f16(b, o, (rng.next() % 4) as f32 * 0.5);
            }
        }
        x
    }

    /// `nb` random activation blocks for `w` (quants include -128; consistent Q8_K sums).
    fn activations(rng: &mut Rng, w: GgmlType, nb: usize) -> Vec<u8> {
        let t = vec_dot_type(w);
        let mut y: Vec<u8> = (0..nb * t.type_size()).map(|_| rng.next() as u8).collect();
        for b in y.chunks_exact_mut(t.type_size()) {
            match t {
                GgmlType::Q8_0 => put_f16(b, 0, 1.0),
                GgmlType::Q8_1 => {
                    put_f16(b, 0, 1.0);
                    put_f16(b, 2, (rng.next() % 64) as f32);
                }
                _ => {
                    b[..4].copy_from_slice(&0.25f32.to_le_bytes());
                    let sums: Vec<i16> = b[4..260]
                        .chunks_exact(16)
                        .map(|g| g.iter().map(|&q| i16::from(q as i8)).sum())
                        .collect();
                    for (g, s) in sums.iter().enumerate() {
                        b[260 + 2 * g..262 + 2 * g].copy_from_slice(&s.to_le_bytes());
                    }
                }
            }
        }
        y
    }

    /// Random weight and activation blocks: NEON must give exactly the scalar value (the
    /// integer sums are exact and small enough that every float sum is exact too).
    #[test]
    fn neon_quant_kernels_exact() {
        assert_eq!(hardware_level(), SimdLevel::Neon);
        let mut rng = Rng(21);
        for (w, offs) in QUANT_TYPES {
            for nb in [1usize, 2, 3, 5] {
                for _ in 0..20 {
                    let x = weights(&mut rng, w, offs, nb);
                    let y = activations(&mut rng, w, nb);
                    let want = scalar::vec_dot(w, &x, &y).unwrap();
                    // SAFETY: NEON, dotprod and fp16 are present (asserted above).
                    let got = unsafe { vec_dot(w, &x, &y) }.unwrap();
                    assert_eq!(got, want, "{w} nb={nb}");
                }
            }
        }
    }

    /// The tile kernels give exactly the per-pair values on the same exact-sum inputs, for
    /// every tile shape up to 4 × 4.
    #[test]
    fn neon_tiles_exact() {
        assert_eq!(hardware_level(), SimdLevel::Neon);
        let mut rng = Rng(23);
        for (w, offs) in QUANT_TYPES {
            for nb in [1usize, 3] {
                let xs: Vec<Vec<u8>> = (0..4).map(|_| weights(&mut rng, w, offs, nb)).collect();
                let ys: Vec<Vec<u8>> = (0..4).map(|_| activations(&mut rng, w, nb)).collect();
                for (nr, nc) in [(1, 1), (4, 4), (3, 2), (2, 4), (4, 1)] {
                    let rows: Vec<&[u8]> = xs[..nr].iter().map(|v| &v[..]).collect();
                    let acts: Vec<&[u8]> = ys[..nc].iter().map(|v| &v[..]).collect();
                    let mut out = vec![f32::NAN; nr * nc];
                    // SAFETY: NEON, dotprod and fp16 are present (asserted above).
                    assert!(unsafe { tile(w, &rows, &acts, &mut out) });
                    for r in 0..nr {
                        for t in 0..nc {
                            let want = scalar::vec_dot(w, rows[r], acts[t]).unwrap();
                            assert_eq!(out[r * nc + t], want, "{w} {nr}x{nc} [{r},{t}]");
                        }
                    }
                }
            }
        }
        for t in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            for n in [1usize, 8, 15, 16, 33, 70] {
                let ints = |rng: &mut Rng| -> Vec<f32> {
                    (0..n).map(|_| (rng.next() % 33) as f32 - 16.0).collect()
                };
                let rows: Vec<Vec<u8>> = (0..4)
                    .map(|_| {
                        ints(&mut rng)
                            .iter()
                            .flat_map(|&f| match t {
                                GgmlType::F32 => f.to_le_bytes().to_vec(),
                                GgmlType::F16 => {
                                    half::f16::from_f32(f).to_bits().to_le_bytes().to_vec()
                                }
                                _ => half::bf16::from_f32(f).to_bits().to_le_bytes().to_vec(),
                            })
                            .collect()
                    })
                    .collect();
                let xs: Vec<Vec<f32>> = (0..3).map(|_| ints(&mut rng)).collect();
                let rs: Vec<&[u8]> = rows.iter().map(|v| &v[..]).collect();
                let ts: Vec<&[f32]> = xs.iter().map(|v| &v[..]).collect();
                let mut out = vec![f32::NAN; 12];
                // SAFETY: NEON, dotprod and fp16 are present (asserted above).
                assert!(unsafe { f32_act_tile(t, &rs, &ts, &mut out) });
                for r in 0..4 {
                    for c in 0..3 {
                        let want = scalar::f32_act(t, rs[r], ts[c]).unwrap();
                        assert_eq!(out[r * 3 + c], want, "{t} n={n} [{r},{c}]");
                    }
                }
            }
        }
    }

    /// Every f16 value widened by `fcvtl` equals the scalar conversion (NaN stays NaN).
    #[test]
    fn neon_f16_widening_exact() {
        assert_eq!(hardware_level(), SimdLevel::Neon);
        let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        for (c, chunk) in bytes.chunks_exact(16).enumerate() {
            let mut out = [0f32; 8];
            // SAFETY: NEON and fp16 are present (asserted above); `out` holds 8 floats, the
            // two stores write 4 each.
            unsafe {
                let (lo, hi) = f16x8(chunk);
                vst1q_f32(out.as_mut_ptr(), lo);
                vst1q_f32(out[4..].as_mut_ptr(), hi);
            }
            for (i, &v) in out.iter().enumerate() {
                let h = (8 * c + i) as u16;
                let want = scalar::f16_to_f32(h);
                assert!(
                    v.to_bits() == want.to_bits() || (v.is_nan() && want.is_nan()),
                    "{h:#x}: {v} vs {want}"
                );
            }
        }
    }

    /// Float kernels on every length 0..80 (all tails) with small integers: exact.
    #[test]
    fn neon_float_kernels_exact_all_tails() {
        assert_eq!(hardware_level(), SimdLevel::Neon);
        let mut rng = Rng(22);
        for n in 0..80usize {
            let xs: Vec<f32> = (0..n).map(|_| (rng.next() % 33) as f32 - 16.0).collect();
            let ys: Vec<f32> = (0..n).map(|_| (rng.next() % 33) as f32 - 16.0).collect();
            let enc = |v: &[f32], t: GgmlType| -> Vec<u8> {
                v.iter()
                    .flat_map(|&f| match t {
                        GgmlType::F32 => f.to_le_bytes().to_vec(),
                        GgmlType::F16 => half::f16::from_f32(f).to_bits().to_le_bytes().to_vec(),
                        _ => half::bf16::from_f32(f).to_bits().to_le_bytes().to_vec(),
                    })
                    .collect()
            };
            for t in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
                let (xb, yb) = (enc(&xs, t), enc(&ys, t));
                let want = scalar::vec_dot(t, &xb, &yb).unwrap();
                // SAFETY: NEON, dotprod and fp16 are present (asserted above).
                let got = unsafe { vec_dot(t, &xb, &yb) }.unwrap();
                assert_eq!(got, want, "{t} n={n}");
                let want = scalar::f32_act(t, &xb, &ys).unwrap();
                // SAFETY: as above.
                let got = unsafe { f32_act(t, &xb, &ys) }.unwrap();
                assert_eq!(got, want, "{t} act n={n}");
            }
        }
    }
}
