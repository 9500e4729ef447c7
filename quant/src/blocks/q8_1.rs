//! Q8_1: blocks of 32 activations, f16 scale `d`, f16 `s = d * sum(q)` and signed 8-bit
//! quants; value = q * d. The dot-product kernels use `s` to fold in Q4_1/Q5_1 minimums.
//!
//! The quantizer is ggml's `quantize_row_q8_1_reference` (b2757: `d` and `s` stored as f16),
//! with C's float to `int8_t` conversion as ggml's x86-64 build performs it (see
//! `q4_0::c_float_to_i8`). ggml b2757 has no `dequantize_row_q8_1`; ours is `q * d`.

use super::q4_0::c_float_to_i8;
use super::q8_0::c_max;
use half::f16;

const QK: usize = 32;

/// ggml's `block_q8_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d * sum(qs)`.
    pub s: f16,
    /// Quants.
    pub qs: [i8; QK],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 2 * 2 + QK);

/// The block type of this format.
pub type Block = BlockQ8_1;

/// Expands `x` into `y` (`y.len() == 32 * x.len()`); `s` is not used.
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = f32::from(q) * d;
        }
    }
}

/// Quantizes `x` into `y` (`x.len() == 32 * y.len()`), byte for byte ggml's reference:
/// the quants as Q8_0 (`d = amax / 127`, `q = (int8_t)roundf(x/d)`), then
/// `s = (float)sum(q) * d` (the f32 `d`, before rounding to f16).
#[inline(always)]
pub fn quantize_row(x: &[f32], y: &mut [Block]) {
    for (xb, b) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |m, v| c_max(m, v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = c_float_to_i8((v * id).round());
            sum += i32::from(*q);
        }
        b.s = f16::from_f32(sum as f32 * d);
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
        assert_eq!(std::mem::size_of::<Block>(), 36);
        assert_eq!(std::mem::align_of::<Block>(), 2);
        assert_eq!(std::mem::offset_of!(BlockQ8_1, d), 0);
        assert_eq!(std::mem::offset_of!(BlockQ8_1, s), 2);
        assert_eq!(std::mem::offset_of!(BlockQ8_1, qs), 4);
    }

    #[test]
    fn hand_computed_block() {
        // amax = 254: d = 2, id = 0.5; sum of quants = -127 + 1 - 1 + 2 + 0 = -125, s = -250
        let mut x = [0f32; 32];
        x[0] = -254.0;
        x[1] = 1.0; // 0.5 rounds away from zero
        x[2] = -1.0;
        x[3] = 3.0; // 1.5 -> 2
        x[4] = 0.99; // 0.495 -> 0
        let b = quantize(&x);
        assert_eq!(b[0].d.to_bits(), 0x4000);
        assert_eq!(b[0].qs[..5], [-127, 1, -1, 2, 0]);
        assert_eq!(b[0].s.to_f32(), -250.0);
        let y = dequantize(&b);
        assert_eq!(y[..5], [-254.0, 2.0, -2.0, 4.0, 0.0]);
    }

    #[test]
    fn s_is_d_times_sum_before_f16_rounding() {
        // amax 1 -> d = 1/127 (not an f16): s is computed from the f32 d
        let x: Vec<f32> = (0..32).map(|i| if i == 0 { 1.0 } else { 0.25 }).collect();
        let b = quantize(&x);
        let sum: i32 = b[0].qs.iter().map(|&q| i32::from(q)).sum();
        assert_eq!(sum, 127 + 31 * 32); // 0.25 * 127 = 31.75 -> 32
        assert_eq!(b[0].s, f16::from_f32(sum as f32 * (1.0 / 127.0)));
        // 1119 / 127 = 8.81102 -> nearest f16 (steps of 2^-7 in [8, 16)) is 8.8125
        assert_eq!(b[0].s.to_bits(), 0x4868);
    }

    #[test]
    fn zeros_give_zero_scale_and_zero_values() {
        let b = quantize(&[0.0; 64]);
        for blk in &b {
            assert_eq!(bytemuck::bytes_of(blk), &[0u8; 36]);
        }
        assert!(dequantize(&b).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn edge_rows_match_ggml() {
        // bytes written by ggml b2757's quantize_row_q8_1_reference for each edge row
        let expected: [&str; 29] = [
            // zeros
            "000000000000000000000000000000000000000000000000000000000000000000000000",
            // negative zeros
            "000000000000000000000000000000000000000000000000000000000000000000000000",
            // one huge
            "007c007c00000000007f0000000000000000000000000000000000000000000000000000",
            // subnormals
            "000000000000000000000000000000000000000000000000000000000000000000000000",
            // subnormals and tiny normals
            "000000000000000000000000000000000000000000000000000000000000000000000000",
            // all equal
            "a7269a567f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f",
            // all equal negative
            "a51d9acd8181818181818181818181818181818181818181818181818181818181818181",
            // alternating signs
            "db2200007f817f817f817f817f817f817f817f817f817f817f817f817f817f817f817f81",
            // alternating signs, negative first
            "0a250000817f817f817f817f817f817f817f817f817f817f817f817f817f817f817f817f",
            // halves, max -8
            "082c00c881899199a1a9b1b9c0c8d0d8e0e8f0f8000810182028303840474f575f676f77",
            // halves, max -16
            "0830e0cf81858d959da5adb5bdc4ccd4dce4ecf4fc040c141c242c343c434b535b636b73",
            // halves in [0, 15]
            "8f2f445b007f0004080d1115191e22262a2f33373b3f44484c5055595d61666a6e72777b",
            // halves in [0, 31]
            "d033845f007f02060a0e12171b1f23272b2f33373b4044484c5054585c6064686d717579",
            // halves, amax 127
            "003c70d78190979fa6aeb5bdc4ccd3dbe2eaf1f900080f171e262d353c444b535a626971",
            // near boundaries, third
            "0a29e03b198189929aa3abb4bcc5cdd6dee7eff800081119222a333b444c555d666e777f",
            // near boundaries, tenth
            "402627be81c5c9cdd1d5d9dde1e5e9eef2f6fafe02060a0e12171b1f23272b2f33373b40",
            // near boundaries, sevenths
            "5622a4b981899199a1a9b1bac2cad2dae2eaf2fa020a121b232b333b434b535b636b737c",
            // ramp
            "083000cc81899199a1a9b1b9c0c8d0d8e0e8f0f8000810182028303840474f575f676f77",
            // tiny normals
            "0000008081899199a1a9b1b9c0c8d0d8e0e8f0f8000810182028303840474f575f676f77",
            // beyond f16 range
            "007c007ca4abb2b9c1c8cfd6dde4ebf2f900070e151c232a31383f474e555c636a71787f",
            // max finite, both signs
            "007c00fc817f817f817f8100817f817f817f817f817f817f817f817f817f817f817f817f",
            // with +inf
            "007c00fe0000000000000000000000000000000000000000000000000000000000000000",
            // with -inf
            "007c00fe0000000000000000000000000000000000000000000000000000000000000000",
            // with NaN
            "4b31fb5900cad0d6dc00e8eef4fa00060c12181e242a30363c43494f555b61676d73797f",
            // all NaN
            "007e007e0000000000000000000000000000000000000000000000000000000000000000",
            // fused multiply-add matters for q4_0
            "6718853dfcba07b6b044e73c256919ff5f7fd6575b327557b5e6fab0e932d82863e7d272",
            // fused multiply-add matters for q4_1
            "da1bdec3a08138c1b5c007f4f389d3d65fc269b2eff5b47c2fe599f8ab9113e225898dee",
            // fused multiply-add matters for q5_0
            "1b0554a8c31c1afd84421f283df70aba1331fa261efdce81b3b811f4b793c01b410d1c86",
            // fused multiply-add matters for q5_1
            "4b275445007f020202020202020202020202020202020202020202020202020202020202",
        ];
        let rows = edge_rows();
        assert_eq!(rows.len(), expected.len());
        for ((name, row), want) in rows.iter().zip(expected) {
            let b = quantize(row);
            assert_eq!(bytemuck::bytes_of(&b[0]), &hex(want)[..], "{name}");
        }
    }

    #[test]
    fn random_rows_within_error_bound_and_same_quants_as_q8_0() {
        let mut rng = Rng(6);
        for _ in 0..200 {
            let x = rng.row(256);
            let b = quantize(&x);
            let mut b0 = vec![<super::super::q8_0::Block as bytemuck::Zeroable>::zeroed(); 8];
            super::super::q8_0::quantize_row(&x, &mut b0);
            let y = dequantize(&b);
            for (((xb, yb), blk), blk0) in
                x.chunks_exact(QK).zip(y.chunks_exact(QK)).zip(&b).zip(&b0)
            {
                assert_eq!(blk.d, blk0.d);
                assert_eq!(blk.qs, blk0.qs);
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let d16 = blk.d.to_f32();
                for ((&a, &r), &q) in xb.iter().zip(yb).zip(&blk.qs) {
                    let bound = 0.5 * d * (1.0 + 1e-5)
                        + f32::from(q).abs() * (d - d16).abs()
                        + f32::EPSILON * a.abs();
                    assert!((a - r).abs() <= bound, "{a} -> {r}, d {d}");
                }
                let sum: i32 = blk.qs.iter().map(|&q| i32::from(q)).sum();
                assert_eq!(blk.s, f16::from_f32(sum as f32 * d));
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
