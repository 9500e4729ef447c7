//! Q8_K: the activation format of the K-quant dot products. Super-blocks of 256 weights with
//! an f32 scale: weight = `d * qs[i]`; `bsums[j]` is the sum of `qs[16j..16j + 16]`.
//!
//! The quantizer is ggml's `quantize_row_q8_K_reference` (b2757, `QK_K == 256`; `Q8_K` is not
//! one of `ggml_quantize_chunk`'s types): `d = max / -127` for `max` the element of largest
//! magnitude, `qs = min(127, nearest_int(x * -127/max))`, the product and rounding fused into
//! one FMA as in ggml's x86-64 build (see [`super::q4_k`]).

use super::q4_k::nearest_int_mul;
use crate::types::QK_K;

/// ggml's `block_q8_K` (`QK_K == 256`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8K {
    /// Scale.
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sums of the quants in groups of 16.
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 4 + QK_K + QK_K / 16 * 2);
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

/// The block type of this format.
pub type Block = BlockQ8K;

/// Expands `x` into `y` (`y.len() == 256 * x.len()`).
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = b.d * f32::from(q);
        }
    }
}

/// Quantizes `x` into `y` (`x.len() == 256 * y.len()`), byte for byte ggml's
/// `quantize_row_q8_K_reference`. A super-block without a nonzero element gets `d = 0` and
/// zero quants, and here also zero `bsums` (ggml leaves `bsums` as they were in that case).
#[inline(always)]
pub fn quantize_row(x: &[f32], y: &mut [Block]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            let av = v.abs();
            if av > amax {
                amax = av;
                max = v;
            }
        }
        if amax == 0.0 {
            *b = bytemuck::Zeroable::zeroed();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            // C assigns the int to an `int8_t`, keeping the low byte.
            *q = nearest_int_mul(iscale, v).min(127) as i8;
        }
        for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| i16::from(q)).sum();
        }
        b.d = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use super::super::q4_k::testutil::{edge_rows, rms, rmse, Rng};
    use super::super::q6_k;
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn dequantize_hand_built_block() {
        let mut b = Block::zeroed();
        b.d = 0.03125;
        for (i, q) in b.qs.iter_mut().enumerate() {
            *q = (i as i32 - 128) as i8;
        }
        let mut y = [0.0f32; 256];
        dequantize_row(&[b], &mut y);
        for (i, &v) in y.iter().enumerate() {
            assert_eq!(v, (i as f32 - 128.0) * 0.03125, "element {i}");
        }
    }

    #[test]
    fn quantize_known_row() {
        // max = -127 so iscale = -127/max = 1: the quants are the values rounded, ties to even.
        let mut x: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) * 0.5).collect();
        x[0] = -127.0;
        let mut q = [Block::zeroed()];
        quantize_row(&x, &mut q);
        assert_eq!(q[0].d, 1.0);
        assert_eq!(q[0].qs[0], -127);
        for i in 1..256 {
            let want = ((i as f32 - 128.0) * 0.5).round_ties_even() as i32;
            assert_eq!(i32::from(q[0].qs[i]), want, "element {i}");
        }
        assert_eq!(q[0].qs[129], 0); // 0.5 -> 0
        assert_eq!(q[0].qs[131], 2); // 1.5 -> 2
        assert_eq!(q[0].qs[133], 2); // 2.5 -> 2
    }

    #[test]
    fn bsums_are_the_sums_of_the_quants() {
        let mut rng = Rng(45);
        for _ in 0..50 {
            let x = rng.normal_row(1024, 3.0);
            let mut q = [Block::zeroed(); 4];
            quantize_row(&x, &mut q);
            for b in &q {
                for (j, &s) in b.bsums.iter().enumerate() {
                    let want: i32 = b.qs[16 * j..16 * j + 16]
                        .iter()
                        .map(|&v| i32::from(v))
                        .sum();
                    assert_eq!(i32::from(s), want);
                }
                assert!(b.qs.iter().any(|&v| v == 127 || v == -127));
            }
        }
    }

    #[test]
    fn round_trip_rmse_on_random_rows_beats_q6_k() {
        let mut rng = Rng(46);
        let (mut e6, mut e8) = (0.0f64, 0.0f64);
        let mut worst = 0.0f32;
        for _ in 0..200 {
            let sigma = 10f32.powf(rng.uniform() * 6.0 - 3.0);
            let x = rng.normal_row(512, sigma);
            let mut y = vec![0.0; 512];
            let mut q = [Block::zeroed(); 2];
            quantize_row(&x, &mut q);
            dequantize_row(&q, &mut y);
            let r8 = rmse(&x, &y) / rms(&x);
            let mut q6 = [q6_k::Block::zeroed(); 2];
            q6_k::quantize_row(&x, &mut q6);
            q6_k::dequantize_row(&q6, &mut y);
            let r6 = rmse(&x, &y) / rms(&x);
            worst = worst.max(r8);
            e6 += f64::from(r6);
            e8 += f64::from(r8);
        }
        assert!(worst < 0.012, "relative RMSE {worst}");
        assert!(e8 < 0.5 * e6, "q8_K {e8} vs q6_K {e6}");
    }

    #[test]
    fn edge_rows_behave() {
        for (name, x) in edge_rows() {
            let mut q = [Block::zeroed()];
            quantize_row(&x, &mut q);
            let mut y = vec![0.0f32; 256];
            dequantize_row(&q, &mut y);
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(y.iter().all(|v| v.is_finite()), "{name}");
            let err = rmse(&x, &y);
            for (j, &s) in q[0].bsums.iter().enumerate() {
                let want: i32 = q[0].qs[16 * j..16 * j + 16]
                    .iter()
                    .map(|&v| i32::from(v))
                    .sum();
                assert_eq!(i32::from(s), want, "{name}");
            }
            match name {
                "zeros" => assert_eq!(q[0], Block::zeroed()),
                // -127/max overflows to infinity: ggml writes d = 0 and zero quants.
                "subnormals" => {
                    assert_eq!(q[0].d, 0.0);
                    assert!(q[0].qs.iter().all(|&v| v == 0));
                    assert!(err <= amax);
                }
                _ => assert!(err <= 0.005 * amax, "{name}: rmse {err}, amax {amax}"),
            }
        }
    }
}
