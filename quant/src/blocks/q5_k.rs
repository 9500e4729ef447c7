//! Q5_K: super-blocks of 256 weights in 8 sub-blocks of 32, laid out like Q4_K (6-bit scales
//! and mins packed into 12 bytes, see [`get_scale_min_k4`]) with a fifth quant bit:
//! weight = `d * sc_j * q - dmin * m_j`, `q` in 0..=31. The low 4 bits are stored as in Q4_K;
//! the high bit of element `l` (0..32) of sub-block `j` is bit `j` of `qh[l]`.
//!
//! The quantizer is ggml's `quantize_row_q5_K_reference` (b2757, `QK_K == 256`), which is what
//! `ggml_quantize_chunk(GGML_TYPE_Q5_K, .., imatrix = NULL)` runs; it shares its arithmetic
//! (and the fused multiply-adds described in [`super::q4_k`]) with Q4_K.

use super::q4_k::{get_scale_min_k4, quantize_super_block, Qkx2};
use crate::types::{K_SCALE_SIZE, QK_K};
use half::f16;

/// ggml's `block_q5_K` (`QK_K == 256`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale of the 6-bit sub-block scales.
    pub d: f16,
    /// Super-block scale of the 6-bit sub-block mins.
    pub dmin: f16,
    /// Sub-block scales and mins, 6 bits each, packed as in Q4_K.
    pub scales: [u8; K_SCALE_SIZE],
    /// High (fifth) bits: bit `j` of `qh[l]` belongs to element `l` of sub-block `j`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits of the quants, two per byte as in Q4_K.
    pub qs: [u8; QK_K / 2],
}

const _: () =
    assert!(std::mem::size_of::<BlockQ5K>() == 2 * 2 + K_SCALE_SIZE + QK_K / 2 + QK_K / 8);
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

/// The block type of this format.
pub type Block = BlockQ5K;

/// Expands `x` into `y` (`y.len() == 256 * x.len()`).
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for (k, (qs, out)) in
            b.qs.chunks_exact(32)
                .zip(out.chunks_exact_mut(64))
                .enumerate()
        {
            let (sc, m) = get_scale_min_k4(2 * k, &b.scales);
            let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
            let (sc, m) = get_scale_min_k4(2 * k + 1, &b.scales);
            let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
            let u1 = 1u8 << (2 * k);
            let u2 = 2u8 << (2 * k);
            let (lo, hi) = out.split_at_mut(32);
            for (((&q, &h), lo), hi) in qs.iter().zip(&b.qh).zip(lo).zip(hi) {
                let q1 = (q & 0x0f) + if h & u1 != 0 { 16 } else { 0 };
                let q2 = (q >> 4) + if h & u2 != 0 { 16 } else { 0 };
                *lo = d1 * f32::from(q1) - m1;
                *hi = d2 * f32::from(q2) - m2;
            }
        }
    }
}

/// Quantizes `x` into `y` (`x.len() == 256 * y.len()`), byte for byte ggml's
/// `quantize_row_q5_K_reference`: `make_qkx2_quants` with `nmax = 31`, `rmin = -0.5`, 16
/// trial scales per sub-block, then the super-block fit shared with Q4_K.
#[inline(always)]
pub fn quantize_row(x: &[f32], y: &mut [Block]) {
    let p = Qkx2 {
        nmax: 31,
        rmin: -0.5,
        nstep: 15,
    };
    let mut l = [0u8; QK_K];
    for (xb, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (d, dmin, scales) = quantize_super_block(xb, p, &mut l);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        b.qh = [0; QK_K / 8];
        for (k, (qs, ls)) in
            b.qs.chunks_exact_mut(32)
                .zip(l.chunks_exact(64))
                .enumerate()
        {
            let m1 = 1u8 << (2 * k);
            let m2 = 2u8 << (2 * k);
            let (lo, hi) = ls.split_at(32);
            for (((q, h), &l1), &l2) in qs.iter_mut().zip(b.qh.iter_mut()).zip(lo).zip(hi) {
                let l1 = if l1 > 15 {
                    *h |= m1;
                    l1 - 16
                } else {
                    l1
                };
                let l2 = if l2 > 15 {
                    *h |= m2;
                    l2 - 16
                } else {
                    l2
                };
                *q = l1 | (l2 << 4);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::q4_k::testutil::{edge_rows, rms, rmse, Rng};
    use super::super::q4_k::{self, pack_scale_min_k4};
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn dequantize_hand_built_block() {
        let ls = [1u8, 2, 3, 4, 60, 61, 62, 63];
        let lm = [0u8, 10, 20, 30, 40, 50, 60, 63];
        let mut b = Block {
            d: f16::from_f32(0.125),
            dmin: f16::from_f32(2.0),
            scales: pack_scale_min_k4(&ls, &lm),
            qh: [0; 32],
            qs: [0; 128],
        };
        // Element e of sub-block j gets quant (e + j) % 32.
        let want_q = |j: usize, e: usize| ((e + j) % 32) as u8;
        for k in 0..4 {
            for l in 0..32 {
                let q1 = want_q(2 * k, l);
                let q2 = want_q(2 * k + 1, l);
                b.qs[32 * k + l] = (q1 & 0xf) | ((q2 & 0xf) << 4);
                b.qh[l] |= ((q1 >> 4) << (2 * k)) | ((q2 >> 4) << (2 * k + 1));
            }
        }
        let mut y = [0.0f32; 256];
        dequantize_row(&[b], &mut y);
        for (i, &v) in y.iter().enumerate() {
            let (j, e) = (i / 32, i % 32);
            let want = 0.125 * f32::from(ls[j]) * f32::from(want_q(j, e)) - 2.0 * f32::from(lm[j]);
            assert_eq!(v, want, "element {i}");
        }
        // Sub-block 7, element 31: quant (31 + 7) % 32 = 6.
        assert_eq!(y[255], 0.125 * 63.0 * 6.0 - 2.0 * 63.0);
    }

    #[test]
    fn round_trip_rmse_on_random_rows_beats_q4_k() {
        let mut rng = Rng(43);
        let (mut e4, mut e5) = (0.0f64, 0.0f64);
        let mut worst = 0.0f32;
        for _ in 0..200 {
            let sigma = 10f32.powf(rng.uniform() * 6.0 - 3.0);
            let x = rng.normal_row(512, sigma);
            let mut q = [Block::zeroed(); 2];
            quantize_row(&x, &mut q);
            let mut y = vec![0.0; 512];
            dequantize_row(&q, &mut y);
            let r5 = rmse(&x, &y) / rms(&x);
            let mut q4 = [q4_k::Block::zeroed(); 2];
            q4_k::quantize_row(&x, &mut q4);
            q4_k::dequantize_row(&q4, &mut y);
            let r4 = rmse(&x, &y) / rms(&x);
            worst = worst.max(r5);
            e4 += f64::from(r4);
            e5 += f64::from(r5);
        }
        assert!(worst < 0.05, "relative RMSE {worst}");
        assert!(e5 < 0.6 * e4, "q5_K {e5} vs q4_K {e4}");
    }

    #[test]
    fn high_bits_are_used() {
        let mut rng = Rng(8);
        let x = rng.normal_row(256, 1.0);
        let mut q = [Block::zeroed()];
        quantize_row(&x, &mut q);
        assert!(q[0].qh.iter().any(|&h| h != 0));
        assert!(q[0].qh.iter().any(|&h| h != 0xff));
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
            match name {
                "zeros" => {
                    assert_eq!(q[0], Block::zeroed(), "{name}");
                    assert!(y.iter().all(|&v| v == 0.0));
                }
                "subnormals" => assert!(err <= amax, "{name}: {err}"),
                "one huge value" => {
                    let rel = (y[77] - x[77]).abs() / x[77];
                    assert!(rel < 0.005, "{name}: {} vs {}", y[77], x[77]);
                }
                "one huge negative value among normals" => {
                    let rel = (y[200] - x[200]).abs() / x[200].abs();
                    assert!(rel < 0.005, "{name}: {} vs {}", y[200], x[200]);
                }
                _ => assert!(err <= 0.04 * amax, "{name}: rmse {err}, amax {amax}"),
            }
        }
    }
}
