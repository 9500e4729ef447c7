//! Q4_K: super-blocks of 256 weights in 8 sub-blocks of 32. Each sub-block `j` has a 6-bit
//! scale `sc_j` and a 6-bit min `m_j` (packed into 12 bytes, see [`get_scale_min_k4`]);
//! weight = `d * sc_j * q - dmin * m_j` with 4-bit quants `q` in 0..=15. Element `l` of the
//! 64-weight pair of sub-blocks `(2k, 2k+1)` sits in the low nibble of `qs[32k + l]` for
//! `l < 32` and in the high nibble of `qs[32k + l - 32]` otherwise.
//!
//! The quantizer is ggml's `quantize_row_q4_K_reference` (b2757, `QK_K == 256`), which is what
//! `ggml_quantize_chunk(GGML_TYPE_Q4_K, .., imatrix = NULL)` runs. This module also holds the
//! helpers the other K-quant modules share: ggml's `nearest_int`, `make_qkx2_quants`, the
//! 6-bit scale packing and the super-block fit common to Q4_K and Q5_K.
//!
//! # Fused multiply-add
//!
//! ggml is built with `-march=native` and GNU C's default `-ffp-contract=fast`, so gcc fuses
//! some `a*b + c` into one FMA. Which ones was read off the disassembly of ggml b2757's
//! `ggml-quants.c` as built by `ggml-sys-bleedingedge` (gcc 12, `-O2 -march=native`, an
//! AMD EPYC, i.e. `znver3` tuning) and is reproduced here with [`f32::mul_add`] at exactly
//! those spots and plain arithmetic everywhere else:
//!
//! * every `nearest_int(a * b)`: the product and the `+ 12582912.0f` inside `nearest_int` are
//!   one FMA ([`nearest_int_mul`]), so the product is never rounded on its own;
//! * in `make_qkx2_quants`: `scale * L[i] + min`, `rdelta * is + rmin`, the sums
//!   `sum_l2 += (w*l)*l` and `sum_xl += (w*l)*x`, and the three 2×2 determinants;
//! * not fused: sums whose only multiply-add is a single loop-carried chain (`sum_x2 += x*x`,
//!   `sum_x += w*x`, `mad += w*diff`): `znver3` tuning (`avoid-fma-max-bits=256`) keeps those
//!   as separate multiply and add.
//!
//! A gcc tuned for another CPU may contract differently (an Intel `-march=native` build would
//! likely also fuse the loop-carried sums); then a few blocks would differ in the last bits of
//! a scale, and through it in some quants.

use crate::types::{K_SCALE_SIZE, QK_K};
use half::f16;

/// ggml's `block_q4_K` (`QK_K == 256`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale of the 6-bit sub-block scales.
    pub d: f16,
    /// Super-block scale of the 6-bit sub-block mins.
    pub dmin: f16,
    /// Sub-block scales and mins, 6 bits each, packed (see [`get_scale_min_k4`]).
    pub scales: [u8; K_SCALE_SIZE],
    /// 4-bit quants, two per byte.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 2 * 2 + K_SCALE_SIZE + QK_K / 2);
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// The block type of this format.
pub type Block = BlockQ4K;

/// `1.5 * 2^23`: adding it to a float of magnitude below `2^22` leaves the rounded integer in
/// the low mantissa bits.
const MAGIC: f32 = 12_582_912.0;

/// Reads the integer back out of `v + MAGIC`.
#[inline(always)]
fn magic_to_int(t: f32) -> i32 {
    // Reinterpreting the bits is the point: the mantissa holds `0x40_0000 + round(v)`.
    (t.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// ggml's `nearest_int`: `v` rounded to the nearest integer, ties to even, valid for
/// `|v| <= 4194303` (outside that range, and for NaN, it returns the same bits-derived value
/// ggml does, not a meaningful one).
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    magic_to_int(v + MAGIC)
}

/// `nearest_int(a * b)` as ggml's build computes it: one fused multiply-add `a*b + MAGIC`, so
/// the exact product is rounded (ties to even) straight to an integer.
#[inline(always)]
pub(crate) fn nearest_int_mul(a: f32, b: f32) -> i32 {
    magic_to_int(a.mul_add(b, MAGIC))
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) out of the 12
/// packed bytes. Sub-blocks 0..4 keep theirs in the low 6 bits of bytes `j` (scale) and `j + 4`
/// (min); sub-blocks 4..8 keep the low 4 bits in the nibbles of byte `j + 4` and the top 2 bits
/// in the top bits of bytes `j - 4` (scale) and `j` (min).
#[inline]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The inverse of [`get_scale_min_k4`] for all 8 sub-blocks (`ls`, `lm` must be below 64).
pub(crate) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut q = [0u8; K_SCALE_SIZE];
    q[..4].copy_from_slice(&ls[..4]);
    q[4..8].copy_from_slice(&lm[..4]);
    for j in 4..8 {
        q[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
        q[j - 4] |= (ls[j] >> 4) << 6;
        q[j] |= (lm[j] >> 4) << 6;
    }
    q
}

/// Search parameters of ggml's `make_qkx2_quants` (`rdelta` is 0.1 for every caller here).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Qkx2 {
    /// Largest quant.
    pub nmax: i32,
    /// Offset of the first trial inverse scale.
    pub rmin: f32,
    /// Number of trial steps after the first (`nstep + 1` trials).
    pub nstep: i32,
}

/// ggml's `make_qkx2_quants` with `use_mad == false`: fits `x ≈ scale * L - the_min` with
/// `L` in `0..=nmax` minimising the `weights`-weighted squared error over a small set of
/// trial scales, each refined by weighted least squares. Writes `L` into `l` (using `laux` as
/// scratch) and returns `(scale, the_min)`. All slices have the same length (32 here).
#[inline(always)]
pub(crate) fn make_qkx2_quants(
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    p: Qkx2,
) -> (f32, f32) {
    let (Some((&x0, x_rest)), Some((&w0, w_rest))) = (x.split_first(), weights.split_first())
    else {
        return (0.0, 0.0);
    };
    let mut min = x0;
    let mut max = x0;
    let mut sum_w = w0;
    let mut sum_x = sum_w * x0;
    for (&xi, &wi) in x_rest.iter().zip(w_rest) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        sum_w += wi;
        sum_x += wi * xi;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }

    let nmax = p.nmax;
    let nmax_f = nmax as f32;
    let iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_mad = 0.0f32;
    for ((li, &xi), &wi) in l.iter_mut().zip(x).zip(weights) {
        *li = nearest_int_mul(iscale, xi - min).clamp(0, nmax) as u8;
        let diff = f32::from(*li).mul_add(scale, min) - xi;
        best_mad += wi * (diff * diff);
    }

    for is in 0..=p.nstep {
        let iscale = (0.1f32.mul_add(is as f32, p.rmin) + nmax_f) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for ((la, &xi), &wi) in laux.iter_mut().zip(x).zip(weights) {
            let q = nearest_int_mul(iscale, xi - min).clamp(0, nmax);
            *la = q as u8;
            let lf = q as f32;
            let wl = wi * lf;
            sum_l += wl;
            sum_l2 = wl.mul_add(lf, sum_l2);
            sum_xl = wl.mul_add(xi, sum_xl);
        }
        let det = sum_w.mul_add(sum_l2, -(sum_l * sum_l));
        if det > 0.0 {
            let mut this_scale = (-sum_l).mul_add(sum_x, sum_w * sum_xl) / det;
            let mut this_min = sum_l2.mul_add(sum_x, -(sum_l * sum_xl)) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0.0f32;
            for ((&la, &xi), &wi) in laux.iter().zip(x).zip(weights) {
                let diff = f32::from(la).mul_add(this_scale, this_min) - xi;
                mad += wi * (diff * diff);
            }
            if mad < best_mad {
                for (li, &la) in l.iter_mut().zip(laux.iter()) {
                    *li = la;
                }
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The part of ggml's Q4_K and Q5_K reference quantizers before bit packing: fits each
/// 32-weight sub-block of the super-block `x` (256 values) with [`make_qkx2_quants`] (weights
/// `sqrt(mean(x²)) + |x|`), quantizes the sub-block scales and mins to 6 bits against the
/// super-block scales `d = max_scale/63` and `dmin = max_min/63` (stored as f16), then
/// re-quantizes every weight against its final scale and min into `l` (`0..=p.nmax`).
/// Sub-blocks whose final scale is 0 keep the quants of the fit. Returns `(d, dmin, scales)`.
#[inline(always)]
pub(crate) fn quantize_super_block(
    x: &[f32],
    p: Qkx2,
    l: &mut [u8; QK_K],
) -> (f16, f16, [u8; K_SCALE_SIZE]) {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    let mut laux = [0u8; 32];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for (((xs, ls), scale), min) in x
        .chunks_exact(32)
        .zip(l.chunks_exact_mut(32))
        .zip(scales.iter_mut())
        .zip(mins.iter_mut())
    {
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (*scale, *min) = make_qkx2_quants(xs, &weights, ls, &mut laux, p);
        if *scale > max_scale {
            max_scale = *scale;
        }
        if *min > max_min {
            max_min = *min;
        }
    }

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for (((s, m), &scale), &min) in ls.iter_mut().zip(lm.iter_mut()).zip(&scales).zip(&mins) {
        // C stores the int in a `uint8_t` (keeping the low byte) before clamping to 63.
        *s = (nearest_int_mul(inv_scale, scale) as u8).min(63);
        *m = (nearest_int_mul(inv_min, min) as u8).min(63);
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);

    for (j, (xs, ls)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dl = d.to_f32() * f32::from(sc);
        if dl == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * f32::from(m);
        for (li, &v) in ls.iter_mut().zip(xs) {
            *li = nearest_int((v + dm) / dl).clamp(0, p.nmax) as u8;
        }
    }
    (d, dmin, packed)
}

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
            let (lo, hi) = out.split_at_mut(32);
            for ((&q, lo), hi) in qs.iter().zip(lo).zip(hi) {
                *lo = d1 * f32::from(q & 0x0f) - m1;
                *hi = d2 * f32::from(q >> 4) - m2;
            }
        }
    }
}

/// Quantizes `x` into `y` (`x.len() == 256 * y.len()`), byte for byte ggml's
/// `quantize_row_q4_K_reference`: [`make_qkx2_quants`] with `nmax = 15`, `rmin = -1`, 21
/// trial scales per sub-block, then [`quantize_super_block`].
#[inline(always)]
pub fn quantize_row(x: &[f32], y: &mut [Block]) {
    let p = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        nstep: 20,
    };
    let mut l = [0u8; QK_K];
    for (xb, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (d, dmin, scales) = quantize_super_block(xb, p, &mut l);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        for (qs, ls) in b.qs.chunks_exact_mut(32).zip(l.chunks_exact(64)) {
            let (lo, hi) = ls.split_at(32);
            for ((q, &a), &h) in qs.iter_mut().zip(lo).zip(hi) {
                *q = a | (h << 4);
            }
        }
    }
}

/// Helpers for the K-quant tests: a seeded generator and error measures.
#[cfg(test)]
pub(crate) mod testutil {
    /// splitmix64: small, seeded, good enough for test data.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        pub fn uniform(&mut self) -> f32 {
            (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
        }

        /// Approximately standard normal (sum of 12 uniforms).
        pub fn normal(&mut self) -> f32 {
            (0..12).map(|_| self.uniform()).sum::<f32>() - 6.0
        }

        pub fn normal_row(&mut self, n: usize, sigma: f32) -> Vec<f32> {
            (0..n).map(|_| self.normal() * sigma).collect()
        }
    }

    /// Root mean square of `a - b`.
    pub fn rmse(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let s: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x - y).powi(2))
            .sum();
        (s / a.len() as f64).sqrt() as f32
    }

    /// Root mean square of `a`.
    pub fn rms(a: &[f32]) -> f32 {
        let s: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum();
        (s / a.len() as f64).sqrt() as f32
    }

    /// The edge rows of the issue, 256 values each (one super-block).
    pub fn edge_rows() -> Vec<(&'static str, Vec<f32>)> {
        let mut huge = vec![0.01f32; 256];
        huge[77] = 1.0e4;
        let mut huge_neg = Rng(3).normal_row(256, 1.0);
        huge_neg[200] = -3.0e5;
        vec![
            ("zeros", vec![0.0; 256]),
            ("one huge value", huge),
            ("one huge negative value among normals", huge_neg),
            (
                "subnormals",
                (0..256).map(|i| (i as f32 - 128.0) * 1e-42).collect(),
            ),
            ("all equal positive", vec![0.3; 256]),
            ("all equal negative", vec![-2.5; 256]),
            (
                "alternating signs",
                (0..256)
                    .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                    .collect(),
            ),
            ("ramp", (0..256).map(|i| i as f32 / 255.0 - 0.5).collect()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{edge_rows, rms, rmse, Rng};
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let cases = [
            (0.0, 0),
            (0.49999997, 0),
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (3.5, 4),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (-2.6, -3),
            (4194303.0, 4194303),
            (-4194303.0, -4194303),
            (1e-30, 0),
        ];
        for (v, want) in cases {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }

    #[test]
    fn nearest_int_mul_rounds_the_exact_product() {
        // 3 * f32(1/6) = 0.50000001490116... exactly: as a rounded f32 product it is 0.5,
        // a tie that goes to 0; fused (as in ggml's build) it is above the tie.
        let sixth = 1.0f32 / 6.0;
        assert_eq!(nearest_int(3.0 * sixth), 0);
        assert_eq!(nearest_int_mul(3.0, sixth), 1);
        assert_eq!(nearest_int_mul(-3.0, sixth), -1);
        assert_eq!(nearest_int_mul(2.0, 1.25), 2);
        assert_eq!(nearest_int_mul(2.0, 1.75), 4);
    }

    #[test]
    fn scale_min_packing_round_trips() {
        let ls = [0, 1, 17, 63, 32, 63, 5, 48];
        let lm = [63, 2, 0, 31, 63, 16, 47, 1];
        let q = pack_scale_min_k4(&ls, &lm);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &q), (ls[j], lm[j]), "sub-block {j}");
        }
        // Layout check against the bit description of ggml-common.h.
        assert_eq!(q[0], (32 >> 4) << 6); // ls[0] = 0, top bits of ls[4] = 32
        assert_eq!(q[8], 0xf0); // low nibbles of ls[4] = 32 and lm[4] = 63
    }

    #[test]
    fn dequantize_hand_built_block() {
        let mut ls = [0u8; 8];
        let mut lm = [0u8; 8];
        for j in 0..8 {
            ls[j] = (j as u8) * 9; // 0, 9, ..., 63
            lm[j] = 63 - (j as u8) * 7;
        }
        let mut b = Block {
            d: f16::from_f32(0.5),
            dmin: f16::from_f32(0.25),
            scales: pack_scale_min_k4(&ls, &lm),
            qs: [0; 128],
        };
        for (i, q) in b.qs.iter_mut().enumerate() {
            *q = (i % 16) as u8 | ((15 - i % 16) as u8) << 4;
        }
        let mut y = [0.0f32; 256];
        dequantize_row(&[b], &mut y);
        for (i, &v) in y.iter().enumerate() {
            let j = i / 32;
            let l = i % 32;
            let byte = b.qs[(i / 64) * 32 + l];
            let q = if j & 1 == 0 { byte & 0xf } else { byte >> 4 };
            let want = 0.5 * f32::from(ls[j]) * f32::from(q) - 0.25 * f32::from(lm[j]);
            assert_eq!(v, want, "element {i}");
        }
        assert_eq!(y[0], -0.25 * 63.0);
        assert_eq!(y[32 + 1], 0.5 * 9.0 * 14.0 - 0.25 * 56.0);
    }

    #[test]
    fn round_trip_rmse_on_random_rows() {
        let mut rng = Rng(42);
        let mut worst = 0.0f32;
        for _ in 0..200 {
            let sigma = 10f32.powf(rng.uniform() * 6.0 - 3.0);
            let x = rng.normal_row(512, sigma);
            let mut q = [Block::zeroed(); 2];
            quantize_row(&x, &mut q);
            let mut y = vec![0.0; 512];
            dequantize_row(&q, &mut y);
            worst = worst.max(rmse(&x, &y) / rms(&x));
        }
        assert!(worst < 0.09, "relative RMSE {worst}");
    }

    #[test]
    fn quants_stay_in_range_and_deterministic() {
        let mut rng = Rng(7);
        let x = rng.normal_row(1024, 1.0);
        let mut a = [Block::zeroed(); 4];
        let mut b = [Block::zeroed(); 4];
        quantize_row(&x, &mut a);
        quantize_row(&x, &mut b);
        assert_eq!(a, b);
        for blk in &a {
            assert!(blk.d.to_f32() > 0.0 && blk.dmin.to_f32() >= 0.0);
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
                "zeros" => {
                    assert_eq!(q[0], Block::zeroed(), "{name}");
                    assert!(y.iter().all(|&v| v == 0.0));
                }
                "subnormals" => assert!(err <= amax, "{name}: {err}"),
                "one huge value" => {
                    let rel = (y[77] - x[77]).abs() / x[77];
                    assert!(rel < 0.01, "{name}: {} vs {}", y[77], x[77]);
                }
                "one huge negative value among normals" => {
                    let rel = (y[200] - x[200]).abs() / x[200].abs();
                    assert!(rel < 0.01, "{name}: {} vs {}", y[200], x[200]);
                }
                _ => assert!(err <= 0.08 * amax, "{name}: rmse {err}, amax {amax}"),
            }
        }
    }

    #[test]
    fn short_output_is_left_alone() {
        let x = vec![1.0f32; 256 * 2];
        let mut q = [Block::zeroed(); 1];
        quantize_row(&x, &mut q);
        let mut y = vec![7.0f32; 300];
        dequantize_row(&q, &mut y);
        assert!(y[256..].iter().all(|&v| v == 7.0));
    }
}
