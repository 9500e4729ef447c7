//! Q5_0: blocks of 32 weights, one f16 scale `d` and 5-bit quants `q` in 0..=31;
//! weight = (q - 16) * d. The low 4 bits of element `j` sit in `qs` like Q4_0 (low nibble of
//! `qs[j]` for `j < 16`, high nibble of `qs[j - 16]` otherwise); the fifth bit of element `j`
//! is bit `j` of the little-endian u32 `qh`.
//!
//! The quantizer is ggml's `quantize_row_q5_0_reference` (b2757) as ggml's x86-64 build
//! computes it (see `q4_0::c_float_to_i8` and the fused multiply-add noted below).

use super::q4_0::c_float_to_i8;
use half::f16;

const QK: usize = 32;

/// ggml's `block_q5_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, a little-endian u32: bit `j` belongs to element `j`.
    pub qh: [u8; 4],
    /// Low nibbles: element `j` low, element `j + 16` high.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 2 + 4 + QK / 2);

/// The block type of this format.
pub type Block = BlockQ5_0;

/// Expands `x` into `y` (`y.len() == 32 * x.len()`).
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        let (lo, hi) = out.split_at_mut(QK / 2);
        for (j, ((&q, l), h)) in b.qs.iter().zip(lo).zip(hi).enumerate() {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let q0 = (u32::from(q & 0x0f) | h0) as i32 - 16;
            let q1 = (u32::from(q >> 4) | h1) as i32 - 16;
            *l = q0 as f32 * d;
            *h = q1 as f32 * d;
        }
    }
}

/// Quantizes `x` into `y` (`x.len() == 32 * y.len()`), byte for byte ggml's reference:
/// `max` is the element of largest magnitude (the first one on ties, NaN never chosen),
/// `d = max / -16`, `id = 1/d` (0 when `d == 0`), `q = min(31, trunc(x*id + 16.5))` with the
/// multiply-add fused (gcc contracts it in ggml's `-march=native` build).
#[inline(always)]
pub fn quantize_row(x: &[f32], y: &mut [Block]) {
    for (xb, b) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }

        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);

        let q = |v: f32| c_float_to_i8(v.mul_add(id, 16.5)).min(31) as u8;
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
        assert_eq!(std::mem::size_of::<Block>(), 22);
        assert_eq!(std::mem::align_of::<Block>(), 2);
        assert_eq!(std::mem::offset_of!(BlockQ5_0, d), 0);
        assert_eq!(std::mem::offset_of!(BlockQ5_0, qh), 2);
        assert_eq!(std::mem::offset_of!(BlockQ5_0, qs), 6);
    }

    #[test]
    fn hand_computed_block() {
        // max = -32 (first), d = -32 / -16 = 2, id = 0.5;
        // x = 2j - 32: q = trunc(j - 16 + 16.5) = j for every element
        let x: Vec<f32> = (0..32).map(|j| 2.0 * j as f32 - 32.0).collect();
        let b = quantize(&x);
        assert_eq!(b[0].d.to_bits(), 0x4000);
        // elements 16..=31 have the fifth bit
        assert_eq!(b[0].qh, [0x00, 0x00, 0xff, 0xff]);
        let want: [u8; 16] = std::array::from_fn(|j| (j as u8) | ((j as u8) << 4));
        assert_eq!(b[0].qs, want);
        assert_eq!(dequantize(&b), x);
    }

    #[test]
    fn fifth_bit_positions() {
        // max = -16: d = 1. One element at a time on q = 31 (fifth bit set), one on q = 0,
        // the rest on q = 15
        for k in 0..32 {
            let x: Vec<f32> = (0..32)
                .map(|j| match j {
                    _ if j == k => 15.0,
                    _ if j == (k + 1) % 32 => -16.0,
                    _ => -1.0,
                })
                .collect();
            let b = quantize(&x);
            let qh = u32::from_le_bytes(b[0].qh);
            assert_eq!(qh, 1 << k, "k = {k}");
            let y = dequantize(&b);
            assert_eq!(y[k], 15.0);
        }
    }

    #[test]
    fn zeros_give_zero_scale_and_zero_values() {
        let b = quantize(&[0.0; 64]);
        for blk in &b {
            // max = 0: d = 0 / -N is -0.0, as in ggml
            assert_eq!(blk.d.to_bits(), 0x8000);
            // q = 16: only the fifth bits are set
            assert_eq!(blk.qh, [0xff; 4]);
            assert_eq!(blk.qs, [0; 16]);
        }
        assert!(dequantize(&b).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn edge_rows_match_ggml() {
        // bytes written by ggml b2757's quantize_row_q5_0_reference for each edge row
        let expected: [&str; 29] = [
            // zeros
            "0080ffffffff00000000000000000000000000000000",
            // negative zeros
            "0080ffffffff00000000000000000000000000000000",
            // one huge
            "00fcdfffffff00000000000000000000000000000000",
            // subnormals
            "00000000000000000000000000000000000000000000",
            // subnormals and tiny normals
            "00800000000000000000000000000000000000000000",
            // all equal
            "9ab20000000000000000000000000000000000000000",
            // all equal negative
            "9a290000000000000000000000000000000000000000",
            // alternating signs
            "cdaeaaaaaaaa00ff00ff00ff00ff00ff00ff00ff00ff",
            // alternating signs, negative first
            "0031aaaaaaaa00ff00ff00ff00ff00ff00ff00ff00ff",
            // halves, max -8
            "00380000ffff00112233445566778899aabbccddeeff",
            // halves, max -16
            "003c0000ffff00112233445566778899aabbccddeeff",
            // halves in [0, 15]
            "80bb050000009080707f6f6e5e5d4d4c3c3b2b2a1a19",
            // halves in [0, 31]
            "c0bf050000009080707f6f6e5e5d4d4c3c3b2b2a1a19",
            // halves, amax 127
            "f0470000ffff001223344556677888999aabbccddeef",
            // near boundaries, third
            "00350100ffff031021324354657697a9bacbdcedfeff",
            // near boundaries, tenth
            "33320080ffff0019192a2a3b3b4c4c5d5d6e6e7f7f80",
            // near boundaries, sevenths
            "492e0000ffff00112233445566778899aabbdcedfeff",
            // ramp
            "003c0000ffff00112233445566778899aabbccddeeff",
            // tiny normals
            "00000000ffff00112233445566778899aabbccddeeff",
            // beyond f16 range
            "00fcff3f0000dccbcab9a89786756454434231201f0e",
            // max finite, both signs
            "007caaaaaaaa00ff00ff00ff00f000ff00ff00ff00ff",
            // with +inf
            "00fcf7ffffff00000000000000000000000000000000",
            // with -inf
            "007cfffdffff00000000000000000000000000000000",
            // with NaN
            "40bdde070000b0b7a695858073625251403f2e2e1d0c",
            // all NaN
            "00800000000000000000000000000000000000000000",
            // fused multiply-add matters for q4_0
            "5ea45b48f06551a91f599a3713a83ba35db034306525",
            // fused multiply-add matters for q4_1
            "cb2744501814e4f067f866d831fe5e212acb5c182de6",
            // fused multiply-add matters for q5_0
            "1011eeb543784803a300607824f5782f813782264f15",
            // fused multiply-add matters for q5_1
            "3db3fdffffff00000000000000000000000000000000",
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
        let mut rng = Rng(3);
        for _ in 0..200 {
            let x = rng.row(256);
            let b = quantize(&x);
            let y = dequantize(&b);
            for ((xb, yb), blk) in x.chunks_exact(QK).zip(y.chunks_exact(QK)).zip(&b) {
                let mut max = 0.0f32;
                for &v in xb {
                    if max.abs() < v.abs() {
                        max = v;
                    }
                }
                let d = max / -16.0;
                let scale_err = 16.0 * (d - blk.d.to_f32()).abs();
                for (&a, &r) in xb.iter().zip(yb) {
                    let err = (a - r).abs();
                    let clamped = a * (-16.0 / max) >= 15.49;
                    let bound = if clamped { d.abs() } else { 0.5 * d.abs() };
                    assert!(
                        err <= bound * (1.0 + 1e-5) + scale_err + f32::EPSILON * a.abs(),
                        "{a} -> {r}, d {d}"
                    );
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
