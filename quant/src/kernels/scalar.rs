//! Scalar reference kernels: the integer sums exactly as ggml's scalar `ggml_vec_dot_*`
//! code computes them (i32 inner sums, one float multiply-add per block or sub-block term).
//!
//! Every function takes whole blocks as raw little-endian bytes and walks them with
//! `chunks_exact`, so it never reads out of bounds; the caller ([`super::vec_dot`]) has
//! already checked that both slices hold the same number of blocks.

use crate::blocks::q4_k::get_scale_min_k4;
use crate::types::{GgmlType, K_SCALE_SIZE, QK_K};

/// Block sizes in bytes of the formats these kernels read.
pub(crate) const Q8_0_BYTES: usize = 34;
pub(crate) const Q8_1_BYTES: usize = 36;
pub(crate) const Q4_0_BYTES: usize = 18;
pub(crate) const Q4_1_BYTES: usize = 20;
pub(crate) const Q5_0_BYTES: usize = 22;
pub(crate) const Q5_1_BYTES: usize = 24;
pub(crate) const Q8_K_BYTES: usize = 4 + QK_K + 2 * (QK_K / 16);
pub(crate) const Q2_K_BYTES: usize = 84;
pub(crate) const Q3_K_BYTES: usize = 110;
pub(crate) const Q4_K_BYTES: usize = 144;
pub(crate) const Q5_K_BYTES: usize = 176;
pub(crate) const Q6_K_BYTES: usize = 210;

/// f16 bits to f32, exactly (`half`'s conversion for infinities and NaN), with no table, no
/// runtime feature check and no arithmetic on a subnormal f32: a normal f16 is rebiased by
/// integer addition; a subnormal one (the scales of small weights often are: below 2^-14) is
/// its integer mantissa times 2^-24, whose operands and result are normal floats. Both are
/// computed and one is selected by a mask, so a mix of normal and subnormal scales costs no
/// branch mispredictions. (A multiply with a subnormal operand takes a microcode assist of
/// ~100 cycles on many x86 cores; an earlier version did one per subnormal scale.)
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    if h & 0x7c00 == 0x7c00 {
        return half::f16::from_bits(h).to_f32();
    }
    let em = u32::from(h & 0x7fff);
    let normal = (em << 13) + (112 << 23);
    let subnormal = (em as f32 * f32::from_bits(0x3380_0000)).to_bits();
    // all ones when the exponent field is non-zero
    let is_normal = 0u32.wrapping_sub(u32::from(em >= 0x0400));
    f32::from_bits((normal & is_normal) | (subnormal & !is_normal) | (u32::from(h & 0x8000) << 16))
}

/// The f16 at `b[off..off + 2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// The f32 at `b[off..off + 4]`.
#[inline(always)]
pub(crate) fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The i16 at `b[off..off + 2]`.
#[inline(always)]
fn i16_at(b: &[u8], off: usize) -> i16 {
    i16::from_le_bytes([b[off], b[off + 1]])
}

/// Dispatches on the weight type; `None` where there is no scalar kernel.
pub fn vec_dot(w: GgmlType, x: &[u8], y: &[u8]) -> Option<f32> {
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

/// Weights of type `w` (F32, F16 or BF16) · f32 activations; `None` for other types.
pub fn f32_act(w: GgmlType, x: &[u8], y: &[f32]) -> Option<f32> {
    Some(match w {
        GgmlType::F32 => f32_f32_act(x, y),
        GgmlType::F16 => f16_f32_act(x, y),
        GgmlType::BF16 => bf16_f32_act(x, y),
        _ => return None,
    })
}

/// `Σ wv(i)·y[i]` in f32: 8 independent lanes (element `i` in lane `i % 8`), summed pairwise
/// at the end, plus a running sum over the last `y.len() % 8` elements.
#[inline(always)]
fn lanes_dot(y: &[f32], wv: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut ys = y.chunks_exact(8);
    for (j, c) in (&mut ys).enumerate() {
        for (l, (a, &v)) in acc.iter_mut().zip(c).enumerate() {
            *a += wv(8 * j + l) * v;
        }
    }
    let base = y.len() - ys.remainder().len();
    let mut tail = 0f32;
    for (i, &v) in ys.remainder().iter().enumerate() {
        tail += wv(base + i) * v;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// f32 weights · f32 activations, f32 accumulation in 8 lanes.
pub fn f32_f32_act(x: &[u8], y: &[f32]) -> f32 {
    lanes_dot(y, |i| f32_at(x, 4 * i))
}

/// f16 weights · f32 activations (weights converted exactly), f32 accumulation in 8 lanes.
pub fn f16_f32_act(x: &[u8], y: &[f32]) -> f32 {
    lanes_dot(y, |i| f16_at(x, 2 * i))
}

/// bf16 weights · f32 activations, f32 accumulation in 8 lanes.
pub fn bf16_f32_act(x: &[u8], y: &[f32]) -> f32 {
    lanes_dot(y, |i| {
        f32::from_bits(u32::from(u16::from_le_bytes([x[2 * i], x[2 * i + 1]])) << 16)
    })
}

/// f32 · f32, accumulated in f64 like ggml's `ggml_vec_dot_f32`.
pub fn f32_f32(x: &[u8], y: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (a, b) in x.chunks_exact(4).zip(y.chunks_exact(4)) {
        sum += f64::from(f32_at(a, 0) * f32_at(b, 0));
    }
    sum as f32
}

/// f16 · f16: f32 products accumulated in f64, like ggml's `ggml_vec_dot_f16`.
pub fn f16_f16(x: &[u8], y: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        sum += f64::from(f16_at(a, 0) * f16_at(b, 0));
    }
    sum as f32
}

/// bf16 · bf16: f32 products accumulated in f64, like ggml's `ggml_vec_dot_bf16`.
pub fn bf16_bf16(x: &[u8], y: &[u8]) -> f32 {
    let bf = |b: &[u8]| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
    let mut sum = 0f64;
    for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        sum += f64::from(bf(a) * bf(b));
    }
    sum as f32
}

/// Q8_0 · Q8_0: `Σ d_x·d_y·Σ q_x·q_y`.
pub fn q8_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q8_0_BYTES).zip(y.chunks_exact(Q8_0_BYTES)) {
        let sumi: i32 = bx[2..]
            .iter()
            .zip(&by[2..])
            .map(|(&a, &b)| i32::from(a as i8) * i32::from(b as i8))
            .sum();
        sumf += sumi as f32 * (f16_at(bx, 0) * f16_at(by, 0));
    }
    sumf
}

/// Q4_0 · Q8_0: `Σ d_x·d_y·Σ (q_x − 8)·q_y`.
pub fn q4_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q4_0_BYTES).zip(y.chunks_exact(Q8_0_BYTES)) {
        let qy = &by[2..];
        let mut sumi = 0i32;
        for (j, &q) in bx[2..].iter().enumerate() {
            let v0 = i32::from(q & 0x0f) - 8;
            let v1 = i32::from(q >> 4) - 8;
            sumi += v0 * i32::from(qy[j] as i8) + v1 * i32::from(qy[j + 16] as i8);
        }
        sumf += sumi as f32 * f16_at(bx, 0) * f16_at(by, 0);
    }
    sumf
}

/// Q4_1 · Q8_1: `Σ d_x·d_y·Σ q_x·q_y + m_x·s_y`.
pub fn q4_1_q8_1(x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q4_1_BYTES).zip(y.chunks_exact(Q8_1_BYTES)) {
        let qy = &by[4..];
        let mut sumi = 0i32;
        for (j, &q) in bx[4..].iter().enumerate() {
            sumi += i32::from(q & 0x0f) * i32::from(qy[j] as i8)
                + i32::from(q >> 4) * i32::from(qy[j + 16] as i8);
        }
        sumf += (f16_at(bx, 0) * f16_at(by, 0)) * sumi as f32 + f16_at(bx, 2) * f16_at(by, 2);
    }
    sumf
}

/// Q5_0 · Q8_0: `Σ d_x·d_y·Σ (q_x − 16)·q_y` with the fifth bits from `qh`.
pub fn q5_0_q8_0(x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q5_0_BYTES).zip(y.chunks_exact(Q8_0_BYTES)) {
        let qh = u32::from_le_bytes([bx[2], bx[3], bx[4], bx[5]]);
        let qy = &by[2..];
        let mut sumi = 0i32;
        for (j, &q) in bx[6..].iter().enumerate() {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            let v0 = i32::from((q & 0x0f) | h0) - 16;
            let v1 = i32::from((q >> 4) | h1) - 16;
            sumi += v0 * i32::from(qy[j] as i8) + v1 * i32::from(qy[j + 16] as i8);
        }
        sumf += (f16_at(bx, 0) * f16_at(by, 0)) * sumi as f32;
    }
    sumf
}

/// Q5_1 · Q8_1: `Σ d_x·d_y·Σ q_x·q_y + m_x·s_y` with the fifth bits from `qh`.
pub fn q5_1_q8_1(x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q5_1_BYTES).zip(y.chunks_exact(Q8_1_BYTES)) {
        let qh = u32::from_le_bytes([bx[4], bx[5], bx[6], bx[7]]);
        let qy = &by[4..];
        let mut sumi = 0i32;
        for (j, &q) in bx[8..].iter().enumerate() {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            sumi += i32::from((q & 0x0f) | h0) * i32::from(qy[j] as i8)
                + i32::from((q >> 4) | h1) * i32::from(qy[j + 16] as i8);
        }
        sumf += (f16_at(bx, 0) * f16_at(by, 0)) * sumi as f32 + f16_at(bx, 2) * f16_at(by, 2);
    }
    sumf
}

/// The Q8_K parts of a block: `(d, qs, bsums)`.
#[inline(always)]
fn q8k_parts(by: &[u8]) -> (f32, &[u8], [i32; QK_K / 16]) {
    let mut bsums = [0i32; QK_K / 16];
    for (i, s) in bsums.iter_mut().enumerate() {
        *s = i32::from(i16_at(by, 4 + QK_K + 2 * i));
    }
    (f32_at(by, 0), &by[4..4 + QK_K], bsums)
}

/// Q2_K · Q8_K: `Σ d_y·(d_x·Σ_j sc_j·Σ q_x·q_y − dmin_x·Σ_j m_j·bsum_j)`.
pub fn q2_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q2_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let (dy, qy, bsums) = q8k_parts(by);
        let sc = &bx[..16];
        let qs = &bx[16..80];
        let summs: i32 = sc
            .iter()
            .zip(&bsums)
            .map(|(&s, &b)| i32::from(s >> 4) * b)
            .sum();
        let mut isum = 0i32;
        let mut is = 0;
        for (k, q) in qs.chunks_exact(32).enumerate() {
            for j in 0..4 {
                let shift = 2 * j;
                let q8 = &qy[128 * k + 32 * j..128 * k + 32 * j + 32];
                for half in 0..2 {
                    let d = i32::from(sc[is] & 0x0f);
                    is += 1;
                    let mut s = 0i32;
                    for l in 16 * half..16 * half + 16 {
                        s += i32::from(q8[l] as i8) * i32::from((q[l] >> shift) & 3);
                    }
                    isum += d * s;
                }
            }
        }
        let dall = dy * f16_at(bx, 80);
        let dmin = dy * f16_at(bx, 82);
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Q3_K · Q8_K: `Σ d_x·d_y·Σ_j (sc_j − 32)·Σ q_x·q_y` over sub-blocks of 16, where
/// `q_x = (2 low bits) − (high bit clear ? 4 : 0)`.
pub fn q3_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q3_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let (dy, qy, _) = q8k_parts(by);
        let hmask = &bx[..32];
        let qs = &bx[32..96];
        let s = &bx[96..108];
        let mut isum = 0i32;
        for j in 0..16 {
            let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
            let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            let sc = i32::from(low | (high << 4)) - 32;
            // sub-block j: elements 16j..16j+16 = half j/8, quarter (j%8)/2, bytes 16·(j%2)..
            let (half, quarter) = (j / 8, (j % 8) / 2);
            let m = 1u8 << (4 * half + quarter);
            let mut sub = 0i32;
            for l in 16 * (j % 2)..16 * (j % 2) + 16 {
                let q = (qs[32 * half + l] >> (2 * quarter)) & 3;
                let v = i32::from(q) - if hmask[l] & m != 0 { 0 } else { 4 };
                sub += v * i32::from(qy[128 * half + 32 * quarter + l] as i8);
            }
            isum += sc * sub;
        }
        sumf += (f16_at(bx, 108) * dy) * isum as f32;
    }
    sumf
}

/// The 8 sub-block `(scales, mins)` of a Q4_K/Q5_K block.
#[inline(always)]
pub(crate) fn k4_scales(bx: &[u8]) -> ([i32; 8], [i32; 8]) {
    let mut packed = [0u8; K_SCALE_SIZE];
    packed.copy_from_slice(&bx[4..4 + K_SCALE_SIZE]);
    let mut sc = [0i32; 8];
    let mut m = [0i32; 8];
    for j in 0..8 {
        let (a, b) = get_scale_min_k4(j, &packed);
        sc[j] = i32::from(a);
        m[j] = i32::from(b);
    }
    (sc, m)
}

/// Q4_K · Q8_K: `Σ d_y·(d_x·Σ_j sc_j·Σ q_x·q_y − dmin_x·Σ_j m_j·(bsum_2j + bsum_2j+1))`.
pub fn q4_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q4_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let (dy, qy, bsums) = q8k_parts(by);
        let (sc, m) = k4_scales(bx);
        let qs = &bx[16..16 + QK_K / 2];
        let mut isum = 0i32;
        for (k, q) in qs.chunks_exact(32).enumerate() {
            let (mut lo, mut hi) = (0i32, 0i32);
            for (l, &b) in q.iter().enumerate() {
                lo += i32::from(b & 0x0f) * i32::from(qy[64 * k + l] as i8);
                hi += i32::from(b >> 4) * i32::from(qy[64 * k + 32 + l] as i8);
            }
            isum += sc[2 * k] * lo + sc[2 * k + 1] * hi;
        }
        let imin: i32 = (0..8)
            .map(|j| m[j] * (bsums[2 * j] + bsums[2 * j + 1]))
            .sum();
        sumf += (f16_at(bx, 0) * dy) * isum as f32 - (f16_at(bx, 2) * dy) * imin as f32;
    }
    sumf
}

/// Q5_K · Q8_K: as Q4_K with the fifth bits from `qh`.
pub fn q5_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q5_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let (dy, qy, bsums) = q8k_parts(by);
        let (sc, m) = k4_scales(bx);
        let qh = &bx[16..48];
        let qs = &bx[48..48 + QK_K / 2];
        let mut isum = 0i32;
        for (k, q) in qs.chunks_exact(32).enumerate() {
            let (u1, u2) = (1u8 << (2 * k), 2u8 << (2 * k));
            let (mut lo, mut hi) = (0i32, 0i32);
            for (l, (&b, &h)) in q.iter().zip(qh).enumerate() {
                let v0 = (b & 0x0f) + if h & u1 != 0 { 16 } else { 0 };
                let v1 = (b >> 4) + if h & u2 != 0 { 16 } else { 0 };
                lo += i32::from(v0) * i32::from(qy[64 * k + l] as i8);
                hi += i32::from(v1) * i32::from(qy[64 * k + 32 + l] as i8);
            }
            isum += sc[2 * k] * lo + sc[2 * k + 1] * hi;
        }
        let imin: i32 = (0..8)
            .map(|j| m[j] * (bsums[2 * j] + bsums[2 * j + 1]))
            .sum();
        sumf += (f16_at(bx, 0) * dy) * isum as f32 - (f16_at(bx, 2) * dy) * imin as f32;
    }
    sumf
}

/// Q6_K · Q8_K: `Σ d_x·d_y·Σ_j sc_j·Σ (q_x − 32)·q_y` over sub-blocks of 16.
pub fn q6_k_q8_k(x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (bx, by) in x.chunks_exact(Q6_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let (dy, qy, _) = q8k_parts(by);
        let ql = &bx[..128];
        let qh = &bx[128..192];
        let sc = &bx[192..208];
        let mut isum = 0i32;
        for half in 0..2 {
            let ql = &ql[64 * half..64 * half + 64];
            let qh = &qh[32 * half..32 * half + 32];
            let sc = &sc[8 * half..8 * half + 8];
            let q8 = &qy[128 * half..128 * half + 128];
            // sums[quarter][sub-block of 16]
            let mut sums = [[0i32; 2]; 4];
            for l in 0..32 {
                let (a, c, h) = (ql[l], ql[l + 32], qh[l]);
                let q = [
                    i32::from((a & 0x0f) | ((h & 3) << 4)) - 32,
                    i32::from((c & 0x0f) | (((h >> 2) & 3) << 4)) - 32,
                    i32::from((a >> 4) | (((h >> 4) & 3) << 4)) - 32,
                    i32::from((c >> 4) | (((h >> 6) & 3) << 4)) - 32,
                ];
                for (i, &v) in q.iter().enumerate() {
                    sums[i][l / 16] += v * i32::from(q8[32 * i + l] as i8);
                }
            }
            for (i, s) in sums.iter().enumerate() {
                isum += i32::from(sc[2 * i] as i8) * s[0] + i32::from(sc[2 * i + 1] as i8) * s[1];
            }
        }
        sumf += (f16_at(bx, 208) * dy) * isum as f32;
    }
    sumf
}
