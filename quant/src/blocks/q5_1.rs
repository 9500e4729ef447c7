//! Q5_1: blocks of 32 weights, f16 scale `d` and minimum `m`, 5-bit quants `q` in 0..=31;
//! weight = q * d + m. The low 4 bits of element `j` sit in `qs` like Q4_1 (low nibble of
//! `qs[j]` for `j < 16`, high nibble of `qs[j - 16]` otherwise); the fifth bit of element `j`
//! is bit `j` of the little-endian u32 `qh`.
//!
//! The quantizer is ggml's `quantize_row_q5_1_reference` (b2757) as ggml's x86-64 build
//! computes it (see `q4_0::c_float_to_i8` and the fused multiply-adds noted below).

use super::q4_0::c_float_to_i8;
use half::f16;

const QK: usize = 32;

/// ggml's `block_q5_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Fifth bits, a little-endian u32: bit `j` belongs to element `j`.
    pub qh: [u8; 4],
    /// Low nibbles: element `j` low, element `j + 16` high.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 2 * 2 + 4 + QK / 2);

/// The block type of this format.
pub type Block = BlockQ5_1;

/// Expands `x` into `y` (`y.len() == 32 * x.len()`): `q*d + m` as one fused multiply-add,
/// as ggml's build computes `dequantize_row_q5_1`.
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        let (lo, hi) = out.split_at_mut(QK / 2);
        for (j, ((&q, l), h)) in b.qs.iter().zip(lo).zip(hi).enumerate() {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let q0 = u32::from(q & 0x0f) | h0;
            let q1 = u32::from(q >> 4) | h1;
            *l = (q0 as f32).mul_add(d, m);
            *h = (q1 as f32).mul_add(d, m);
        }
    }
}

/// Quantizes `x` into `y` (`x.len() == 32 * y.len()`), byte for byte ggml's reference:
/// `min`/`max` over the block (starting from ±`f32::MAX`, NaN never taken),
/// `d = (max - min) / 31`, `id = 1/d` (0 when `d == 0`), `m = min`,
/// `q = trunc((x - min)*id + 0.5)` (no clamp in ggml: it cannot exceed 31 for finite input)
/// with the multiply-add fused (gcc contracts it in ggml's `-march=native` build).
#[inline(always)]
pub fn quantize_row(x: &[f32], y: &mut [Block]) {
    for (xb, b) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in xb {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }

        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);

        let q = |v: f32| c_float_to_i8((v - min).mul_add(id, 0.5)) as u8;
        let mut qh = 0u32;
        let (lo, hi) = xb.split_at(QK / 2);
        for (j, ((qs, &x0), &x1)) in b.qs.iter_mut().zip(lo).zip(hi).enumerate() {
            let (q0, q1) = (q(x0), q(x1));
            *qs = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= u32::from((q0 & 0x10) >> 4) << j;
            qh |= u32::from((q1 & 0x10) >> 4) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::super::q4_0::test_support::{edge_rows, hex, Rng};
    use super::*;

    fn quantize(x: &[f32]) -> Vec<Block> {
        let mut y = vec![<Block as bytemuck::Zeroable>::zeroed(); x.len() / QK];
        quantize_row(x, &mut y);
        y
    }

    fn dequantize(b: &[Block]) -> Vec<f32> {
        let mut y = vec![0f32; b.len() * QK];
        dequantize_row(b, &mut y);
        y
    }

    #[test]
    fn layout_matches_ggml() {
        assert_eq!(std::mem::size_of::<Block>(), 24);
        assert_eq!(std::mem::align_of::<Block>(), 2);
        assert_eq!(std::mem::offset_of!(BlockQ5_1, d), 0);
        assert_eq!(std::mem::offset_of!(BlockQ5_1, m), 2);
        assert_eq!(std::mem::offset_of!(BlockQ5_1, qh), 4);
        assert_eq!(std::mem::offset_of!(BlockQ5_1, qs), 8);
    }

    #[test]
    fn hand_computed_block() {
        // x = j/2 + 3: min 3, max 18.5, d = 15.5 / 31 = 0.5, id = 2: q = trunc(j + 0.5) = j
        let x: Vec<f32> = (0..32).map(|j| j as f32 / 2.0 + 3.0).collect();
        let b = quantize(&x);
        assert_eq!(b[0].d.to_bits(), 0x3800);
        assert_eq!(b[0].m.to_bits(), 0x4200);
        assert_eq!(b[0].qh, [0x00, 0x00, 0xff, 0xff]);
        let want: [u8; 16] = std::array::from_fn(|j| (j as u8) | ((j as u8) << 4));
        assert_eq!(b[0].qs, want);
        assert_eq!(dequantize(&b), x);
    }

    #[test]
    fn zeros_and_equal_values() {
        let b = quantize(&[0.0; 64]);
        for blk in &b {
            assert_eq!(bytemuck::bytes_of(blk), &[0u8; 24]);
        }
        assert!(dequantize(&b).iter().all(|&v| v == 0.0));
        let b = quantize(&[7.25; 32]);
        assert_eq!(b[0].d.to_bits(), 0);
        assert!(dequantize(&b).iter().all(|&v| v == 7.25));
    }

    #[test]
    fn edge_rows_match_ggml() {
        // bytes written by ggml b2757's quantize_row_q5_1_reference for each edge row
        let expected: [&str; 29] = [
            // zeros
            "000000000000000000000000000000000000000000000000",
            // negative zeros
            "000000800000000000000000000000000000000000000000",
            // one huge
            "007c00002000000000000000000f00000000000000000000",
            // subnormals
            "000000800000000000000000000000000000000000000000",
            // subnormals and tiny normals
            "000000800000000000000000000000000000000000000000",
            // all equal
            "00009a420000000000000000000000000000000000000000",
            // all equal negative
            "00009ab90000000000000000000000000000000000000000",
            // alternating signs
            "052fcdbe55555555ff00ff00ff00ff00ff00ff00ff00ff00",
            // alternating signs, negative first
            "293100c1aaaaaaaa00ff00ff00ff00ff00ff00ff00ff00ff",
            // halves, max -8
            "003800c80000ffff00112233445566778899aabbccddeeff",
            // halves, max -16
            "df3b00cc0000ffff00112233445566778899aabbccddeeff",
            // halves in [0, 15]
            "be3700000200feffe00f102132435465768798a9bacbdced",
            // halves in [0, 31]
            "003c00000200fefff00f112233445566778899aabbccddee",
            // halves, amax 127
            "be47f0d70080ffff0012233445566778899aabbccddeeef0",
            // near boundaries, third
            "293500c50100ffff03102132435465768798a9bacbdcedfe",
            // near boundaries, tenth
            "cd3033c200ffffff506b6c7c8d8e9eafa0b0c1c2d2e3e4f4",
            // near boundaries, sevenths
            "662e49be0000ffff00112233445566778899aabbccddeeff",
            // ramp
            "003c00cc0000ffff00112233445566778899aabbccddeeff",
            // tiny normals
            "000000800000ffff00112233445566778899aabbccddeeff",
            // beyond f16 range
            "007c00fc0000ffff00112233445566778899aabbccddeeff",
            // max finite, both signs
            "007c00fc0000000000000000000000000000000000000000",
            // with +inf
            "007c00c90000000000000000000000000000000000000000",
            // with -inf
            "007c00fc0000000000000000000000000000000000000000",
            // with NaN
            "be3b80c80000ffff00102132435065768798a9bacbdcedfe",
            // all NaN
            "00fc007c0000000000000000000000000000000000000000",
            // fused multiply-add matters for q4_0
            "58237eb1a0b70f9aab31ed911086b805923c602cba8f56d9",
            // fused multiply-add matters for q4_1
            "f127cbb744501814e4e067f866c831fe5e212acb4b181dd6",
            // fused multiply-add matters for q5_0
            "f20f10a1eef7c3789b49c904819f793b9e33a699f87c931a",
            // fused multiply-add matters for q5_1
            "782f000002000000000f0000000000000000000000000000",
        ];
        let rows = edge_rows();
        assert_eq!(rows.len(), expected.len());
        for ((name, row), want) in rows.iter().zip(expected) {
            let b = quantize(row);
            assert_eq!(bytemuck::bytes_of(&b[0]), &hex(want)[..], "{name}");
        }
    }

    #[test]
    fn random_rows_within_error_bound() {
        let mut rng = Rng(4);
        for _ in 0..200 {
            let x = rng.row(256);
            let b = quantize(&x);
            let y = dequantize(&b);
            for ((xb, yb), blk) in x.chunks_exact(QK).zip(y.chunks_exact(QK)).zip(&b) {
                let min = xb.iter().copied().fold(f32::MAX, f32::min);
                let max = xb.iter().copied().fold(-f32::MAX, f32::max);
                let d = (max - min) / 31.0;
                let d16 = blk.d.to_f32();
                let m16 = blk.m.to_f32();
                let stored_err = 31.0 * (d - d16).abs() + (min - m16).abs();
                for (&a, &r) in xb.iter().zip(yb) {
                    let err = (a - r).abs();
                    let rounding = f32::EPSILON * (a.abs() + min.abs() + r.abs());
                    let bound = 0.5 * d * (1.0 + 1e-5) + stored_err + rounding;
                    assert!(err <= bound, "{a} -> {r}, d {d}, min {min}");
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_do_not_panic() {
        let mut y = vec![<Block as bytemuck::Zeroable>::zeroed(); 1];
        quantize_row(&[1.0; 40], &mut y);
        quantize_row(&[1.0; 20], &mut y);
        let mut out = [0f32; 40];
        dequantize_row(&y, &mut out);
        dequantize_row(&[y[0], y[0]], &mut out[..20]);
    }
}
