//! Q4_1: blocks of 32 weights, f16 scale `d` and minimum `m`, 4-bit quants `q` in 0..=15;
//! weight = q * d + m. Element `j` of a block sits in the low nibble of `qs[j]` for `j < 16`
//! and in the high nibble of `qs[j - 16]` otherwise.
//!
//! The quantizer is ggml's `quantize_row_q4_1_reference` (b2757) as ggml's x86-64 build
//! computes it (see `q4_0::c_float_to_i8` and the fused multiply-adds noted below).

use super::q4_0::c_float_to_i8;
use half::f16;

const QK: usize = 32;

/// ggml's `block_q4_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Nibbles: element `j` low, element `j + 16` high.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 2 * 2 + QK / 2);

/// The block type of this format.
pub type Block = BlockQ4_1;

/// Expands `x` into `y` (`y.len() == 32 * x.len()`): `q*d + m` as one fused multiply-add,
/// as ggml's build computes `dequantize_row_q4_1`.
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        let (lo, hi) = out.split_at_mut(QK / 2);
        for ((&q, l), h) in b.qs.iter().zip(lo).zip(hi) {
            *l = f32::from(q & 0x0f).mul_add(d, m);
            *h = f32::from(q >> 4).mul_add(d, m);
        }
    }
}

/// Quantizes `x` into `y` (`x.len() == 32 * y.len()`), byte for byte ggml's reference:
/// `min`/`max` over the block (starting from ±`f32::MAX`, NaN never taken),
/// `d = (max - min) / 15`, `id = 1/d` (0 when `d == 0`), `m = min`,
/// `q = min(15, trunc((x - min)*id + 0.5))` with the multiply-add fused (gcc contracts it in
/// ggml's `-march=native` build).
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

        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);

        let q = |v: f32| c_float_to_i8((v - min).mul_add(id, 0.5)).min(15) as u8;
        let (lo, hi) = xb.split_at(QK / 2);
        for ((qs, &x0), &x1) in b.qs.iter_mut().zip(lo).zip(hi) {
            *qs = q(x0) | (q(x1) << 4);
        }
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
        assert_eq!(std::mem::size_of::<Block>(), 20);
        assert_eq!(std::mem::align_of::<Block>(), 2);
        assert_eq!(std::mem::offset_of!(BlockQ4_1, d), 0);
        assert_eq!(std::mem::offset_of!(BlockQ4_1, m), 2);
        assert_eq!(std::mem::offset_of!(BlockQ4_1, qs), 4);
    }

    #[test]
    fn hand_computed_block() {
        // min = -1, max = 14: d = 1, id = 1; q = trunc(x + 1 + 0.5)
        let x: Vec<f32> = (0..32)
            .map(|j| match j {
                0 => -1.0,
                1 => 14.0,
                _ => (j as f32 - 2.0) / 2.0 - 1.0, // -1, -0.5, 0, ... 13
            })
            .collect();
        let b = quantize(&x);
        assert_eq!(b[0].d.to_bits(), 0x3c00);
        assert_eq!(b[0].m.to_bits(), 0xbc00);
        // element j >= 2 has x + 1.5 = (j - 2)/2 + 0.5 -> q = (j - 1) / 2
        let mut want = [0u8; 16];
        for (j, w) in want.iter_mut().enumerate() {
            let lo: u8 = match j {
                0 => 0,
                1 => 15,
                _ => (j as u8 - 1) / 2,
            };
            let hi = (j as u8 + 15) / 2;
            *w = lo | hi << 4;
        }
        assert_eq!(want[..4], [0x70, 0x8f, 0x80, 0x91]);
        assert_eq!(b[0].qs, want);
        let y = dequantize(&b);
        assert_eq!(y[0], -1.0);
        assert_eq!(y[1], 14.0);
        assert_eq!(y[3], 0.0); // -0.5 -> q = trunc(1.0) = 1 -> 1*1 - 1
    }

    #[test]
    fn zeros_and_equal_values() {
        let b = quantize(&[0.0; 64]);
        for blk in &b {
            assert_eq!(blk.d.to_bits(), 0);
            assert_eq!(blk.m.to_bits(), 0);
            assert_eq!(blk.qs, [0; 16]);
        }
        assert!(dequantize(&b).iter().all(|&v| v == 0.0));
        let b = quantize(&[-2.5; 32]);
        assert_eq!(b[0].d.to_bits(), 0);
        assert!(dequantize(&b).iter().all(|&v| v == -2.5));
    }

    #[test]
    fn edge_rows_match_ggml() {
        // bytes written by ggml b2757's quantize_row_q4_1_reference for each edge row
        let expected: [&str; 29] = [
            // zeros
            "0000000000000000000000000000000000000000",
            // negative zeros
            "0000008000000000000000000000000000000000",
            // one huge
            "007c000000000000000f00000000000000000000",
            // subnormals
            "0000008000000000000000000000000000000000",
            // subnormals and tiny normals
            "0000008000000000000000000000000000000000",
            // all equal
            "00009a4200000000000000000000000000000000",
            // all equal negative
            "00009ab900000000000000000000000000000000",
            // alternating signs
            "4133cdbeff00ff00ff00ff00ff00ff00ff00ff00",
            // alternating signs, negative first
            "553500c100ff00ff00ff00ff00ff00ff00ff00ff",
            // halves, max -8
            "223c00c880809191a2a2b3b3c4c4d5d5e6e6f7f7",
            // halves, max -16
            "114000cc80809191a2a2b3b3c4c4d5d5e6e6f7f7",
            // halves in [0, 15]
            "003c0000708f809191a2a2b3b3c4c4d5d5e6e6f7",
            // halves in [0, 31]
            "22400000708f80819192a2a3b3b4c4c5d5d6e6e7",
            // halves, amax 127
            "004cf0d780819192a2a3b3b4c4c5d5d6e6e7f7f8",
            // near boundaries, third
            "553900c589809191a2a2b3b3c4c4d5d5e6e6e7f7",
            // near boundaries, tenth
            "f63433c2a0a5b6b6b6c7c7c7d8d8d8e9e9e9fafa",
            // near boundaries, sevenths
            "9d3249be80809191a2a2b3b3c4c4d5d5e6e6f7f7",
            // ramp
            "224000cc80809191a2a2b3b3c4c4d5d5e6e6f7f7",
            // tiny normals
            "0000008080809191a2a2b3b3c4c4d5d5e6e6f7f7",
            // beyond f16 range
            "007c00fc80809191a2a2b3b3c4c4d5d5e6e6f7f7",
            // max finite, both signs
            "007c00fc00000000000000000000000000000000",
            // with +inf
            "007c00c900000000000000000000000000000000",
            // with -inf
            "007c00fc00000000000000000000000000000000",
            // with NaN
            "004080c880809191a2a0b3b3c4c4d5d5e6e6f7f7",
            // all NaN
            "00fc007c00000000000000000000000000000000",
            // fused multiply-add matters for q4_0
            "97277eb1c591e6c0004b540a489d3896dd4f23ec",
            // fused multiply-add matters for q4_1
            "1a2ccbb772703bf4a364187737109565ad041e73",
            // fused multiply-add matters for q5_0
            "1b1410a1c5ac6c0a404fbc9d4f195bc4fbbec90d",
            // fused multiply-add matters for q5_1
            "b8330000000f0000000000000000000000000000",
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
        let mut rng = Rng(2);
        for _ in 0..200 {
            let x = rng.row(256);
            let b = quantize(&x);
            let y = dequantize(&b);
            for ((xb, yb), blk) in x.chunks_exact(QK).zip(y.chunks_exact(QK)).zip(&b) {
                let min = xb.iter().copied().fold(f32::MAX, f32::min);
                let max = xb.iter().copied().fold(-f32::MAX, f32::max);
                let d = (max - min) / 15.0;
                let d16 = blk.d.to_f32();
                let m16 = blk.m.to_f32();
                let stored_err = 15.0 * (d - d16).abs() + (min - m16).abs();
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
