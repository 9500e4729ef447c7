//! Q6_K: super-blocks of 256 weights in 16 sub-blocks of 16, each with a signed 8-bit scale;
//! weight = `d * scales[j] * (q - 32)` with 6-bit quants `q` in 0..=63. In each half of 128
//! weights, element `l` (0..32) of the four quarters `0, 32, 64, 96` has its low 4 bits in
//! the low nibble of `ql[l]`, of `ql[l + 32]`, the high nibble of `ql[l]`, of `ql[l + 32]`, and
//! its top 2 bits in bits `0-1, 2-3, 4-5, 6-7` of `qh[l]` (`ql`, `qh` advancing by 64 and 32
//! bytes per half).
//!
//! The quantizer is ggml's `quantize_row_q6_K_reference` (b2757, `QK_K == 256`), which is what
//! `ggml_quantize_chunk(GGML_TYPE_Q6_K, .., imatrix = NULL)` runs. As in ggml's x86-64 build,
//! every `nearest_int(a*b)` and the `sum += w*x*l`, `sum += w*l*l` of `make_qx_quants` are fused
//! multiply-adds (see [`super::q4_k`] for how this was established).

use super::q4_k::{nearest_int, nearest_int_mul};
use crate::types::QK_K;
use half::f16;

/// ggml's `block_q6_K` (`QK_K == 256`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits of the quants.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits of the quants.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}

const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 2 + QK_K / 16 + 3 * QK_K / 4);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

/// The block type of this format.
pub type Block = BlockQ6K;

/// ggml's `make_qx_quants` with `rmse_type == 1` and no importance weights (weights `x²`):
/// fits `x ≈ scale * l`, `l` in `-nmax..nmax`, trying 19 inverse scales around
/// `-nmax / max` (`max` the element of largest magnitude) and keeping the best weighted least
/// squares fit. Writes `l + nmax` into `out` and returns the scale (0, with `out` all 0, for
/// a sub-block with no element above 1e-30 in magnitude).
#[inline(always)]
fn make_qx_quants(x: &[f32], nmax: i32, out: &mut [u8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let av = v.abs();
        if av > amax {
            amax = av;
            max = v;
        }
    }
    if amax < 1e-30 {
        out.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let quant = |iscale: f32, v: f32| nearest_int_mul(iscale, v).clamp(-nmax, nmax - 1);
    // One pass: the weighted sums `Σ w·x·l` and `Σ w·l²` (w = x²) of the quants of `iscale`.
    let sums = |iscale: f32| {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for &v in x {
            let l = quant(iscale, v) as f32;
            let w = v * v;
            sumlx = (w * v).mul_add(l, sumlx);
            suml2 = (w * l).mul_add(l, suml2);
        }
        (sumlx, suml2)
    };
    let store = |iscale: f32, out: &mut [u8]| {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (quant(iscale, v) + nmax) as u8;
        }
    };

    let iscale = -nmax_f / max;
    store(iscale, out);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = sumlx / suml2;
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(0.1f32.mul_add(is as f32, nmax_f)) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            store(iscale, out);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Expands `x` into `y` (`y.len() == 256 * x.len()`).
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (((ql, qh), sc), out) in
            b.ql.chunks_exact(64)
                .zip(b.qh.chunks_exact(32))
                .zip(b.scales.chunks_exact(8))
                .zip(out.chunks_exact_mut(128))
        {
            for (l, (&h, (&a, &c))) in qh.iter().zip(ql.iter().zip(&ql[32..])).enumerate() {
                let is = l / 16;
                let q1 = ((a & 0x0f) | ((h & 3) << 4)) as i8 - 32;
                let q2 = ((c & 0x0f) | (((h >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((a >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((c >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
                out[l] = d * f32::from(sc[is]) * f32::from(q1);
                out[l + 32] = d * f32::from(sc[is + 2]) * f32::from(q2);
                out[l + 64] = d * f32::from(sc[is + 4]) * f32::from(q3);
                out[l + 96] = d * f32::from(sc[is + 6]) * f32::from(q4);
            }
        }
    }
}

/// Quantizes `x` into `y` (`x.len() == 256 * y.len()`), byte for byte ggml's
/// `quantize_row_q6_K_reference`: `make_qx_quants` with `nmax = 32` per sub-block, the
/// sub-block scales quantized to `i8` against `d = max_scale / -128` (f16), then every weight
/// re-quantized against its final scale (sub-blocks whose final scale is 0 keep the quants of
/// the fit). A super-block whose scales are all 0 is written as all zeros.
#[inline(always)]
pub fn quantize_row(x: &[f32], y: &mut [Block]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    for (xb, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ((xs, ls), s) in xb
            .chunks_exact(16)
            .zip(l.chunks_exact_mut(16))
            .zip(scales.iter_mut())
        {
            *s = make_qx_quants(xs, 32, ls);
            let abs_scale = s.abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = *s;
            }
        }
        if max_abs_scale == 0.0 {
            *b = bytemuck::Zeroable::zeroed();
            continue;
        }

        let iscale = -128.0 / max_scale;
        b.d = f16::from_f32(1.0 / iscale);
        for (bs, &s) in b.scales.iter_mut().zip(&scales) {
            // C assigns the int to an `int8_t`, keeping the low byte.
            *bs = nearest_int_mul(iscale, s).min(127) as i8;
        }
        for ((xs, ls), &sc) in xb
            .chunks_exact(16)
            .zip(l.chunks_exact_mut(16))
            .zip(&b.scales)
        {
            let d = b.d.to_f32() * f32::from(sc);
            if d == 0.0 {
                continue;
            }
            for (li, &v) in ls.iter_mut().zip(xs) {
                *li = (nearest_int(v / d).clamp(-32, 31) + 32) as u8;
            }
        }

        for ((ql, qh), ls) in
            b.ql.chunks_exact_mut(64)
                .zip(b.qh.chunks_exact_mut(32))
                .zip(l.chunks_exact(128))
        {
            let (ql_lo, ql_hi) = ql.split_at_mut(32);
            for (i, ((h, a), c)) in qh.iter_mut().zip(ql_lo).zip(ql_hi).enumerate() {
                let [q1, q2, q3, q4] = [ls[i], ls[i + 32], ls[i + 64], ls[i + 96]];
                *a = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                *c = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                *h = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::q4_k::testutil::{edge_rows, rms, rmse, Rng};
    use super::super::{q4_k, q5_k};
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn dequantize_hand_built_block() {
        let mut b = Block::zeroed();
        b.d = f16::from_f32(0.5);
        for (j, s) in b.scales.iter_mut().enumerate() {
            *s = (j as i32 * 9 - 70) as i8; // -70 ..= 65
        }
        // Element i gets quant (7 * i) % 64.
        let want_q = |i: usize| ((7 * i) % 64) as u8;
        for half in 0..2 {
            for l in 0..32 {
                let q = |k: usize| want_q(128 * half + 32 * k + l);
                b.ql[64 * half + l] = (q(0) & 0xf) | ((q(2) & 0xf) << 4);
                b.ql[64 * half + l + 32] = (q(1) & 0xf) | ((q(3) & 0xf) << 4);
                b.qh[32 * half + l] =
                    (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
        let mut y = [0.0f32; 256];
        dequantize_row(&[b], &mut y);
        for (i, &v) in y.iter().enumerate() {
            let want = 0.5 * f32::from(b.scales[i / 16]) * (f32::from(want_q(i)) - 32.0);
            assert_eq!(v, want, "element {i}");
        }
        assert_eq!(y[0], 0.5 * -70.0 * -32.0);
        assert_eq!(y[255], 0.5 * 65.0 * (f32::from(want_q(255)) - 32.0));
    }

    #[test]
    fn round_trip_rmse_on_random_rows_beats_q5_k_and_q4_k() {
        let mut rng = Rng(44);
        let (mut e4, mut e5, mut e6) = (0.0f64, 0.0f64, 0.0f64);
        let mut worst = 0.0f32;
        for _ in 0..200 {
            let sigma = 10f32.powf(rng.uniform() * 6.0 - 3.0);
            let x = rng.normal_row(512, sigma);
            let mut y = vec![0.0; 512];
            let mut q = [Block::zeroed(); 2];
            quantize_row(&x, &mut q);
            dequantize_row(&q, &mut y);
            let r6 = rmse(&x, &y) / rms(&x);
            let mut q5 = [q5_k::Block::zeroed(); 2];
            q5_k::quantize_row(&x, &mut q5);
            q5_k::dequantize_row(&q5, &mut y);
            let r5 = rmse(&x, &y) / rms(&x);
            let mut q4 = [q4_k::Block::zeroed(); 2];
            q4_k::quantize_row(&x, &mut q4);
            q4_k::dequantize_row(&q4, &mut y);
            let r4 = rmse(&x, &y) / rms(&x);
            worst = worst.max(r6);
            e4 += f64::from(r4);
            e5 += f64::from(r5);
            e6 += f64::from(r6);
        }
        assert!(worst < 0.03, "relative RMSE {worst}");
        assert!(e6 < 0.6 * e5, "q6_K {e6} vs q5_K {e5}");
        assert!(e6 < 0.3 * e4, "q6_K {e6} vs q4_K {e4}");
    }

    #[test]
    fn make_qx_quants_fits_exact_multiples() {
        // x = 0.25 * k for k in -32..32 spread over 16 values: the fit must be exact.
        let x: Vec<f32> = (0..16).map(|i: i32| 0.25 * (2 * i - 32) as f32).collect();
        let mut l = [0u8; 16];
        let scale = make_qx_quants(&x, 32, &mut l);
        for (&v, &q) in x.iter().zip(&l) {
            assert_eq!(scale * (f32::from(q) - 32.0), v);
        }
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
                "zeros" | "subnormals" => {
                    // Every sub-block is below ggml's 1e-30 threshold: an all-zero block.
                    assert_eq!(q[0], Block::zeroed(), "{name}");
                    assert!(y.iter().all(|&v| v == 0.0));
                }
                "one huge value" => {
                    let rel = (y[77] - x[77]).abs() / x[77];
                    assert!(rel < 0.002, "{name}: {} vs {}", y[77], x[77]);
                }
                "one huge negative value among normals" => {
                    let rel = (y[200] - x[200]).abs() / x[200].abs();
                    assert!(rel < 0.002, "{name}: {} vs {}", y[200], x[200]);
                }
                _ => assert!(err <= 0.02 * amax, "{name}: rmse {err}, amax {amax}"),
            }
        }
    }
}
