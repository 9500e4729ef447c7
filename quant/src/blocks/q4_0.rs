//! Q4_0: blocks of 32 weights, one f16 scale `d` and 4-bit quants `q` in 0..=15;
//! weight = (q - 8) * d. Element `j` of a block sits in the low nibble of `qs[j]` for
//! `j < 16` and in the high nibble of `qs[j - 16]` otherwise.
//!
//! The quantizer is ggml's `quantize_row_q4_0_reference` (b2757) as ggml's own x86-64 build
//! computes it, see `c_float_to_i8` and the note on fused multiply-add in [`quantize_row`].

use half::f16;

const QK: usize = 32;

/// ggml's `block_q4_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles: element `j` low, element `j + 16` high.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 2 + QK / 2);

/// The block type of this format.
pub type Block = BlockQ4_0;

/// C's float to `int8_t`/`uint8_t` conversion as ggml's x86-64 build performs it:
/// `cvttss2si`/`cvttps2dq` truncate toward zero to 32 bits, giving `i32::MIN` for NaN and for
/// values outside the `i32` range, and the low byte is kept.
///
/// On finite input with a normal block scale every value is already in range and this is a
/// plain truncation; the other cases (a subnormal scale whose reciprocal is infinite, NaN or
/// infinite input) are undefined behaviour in C, and this reproduces what ggml writes on the
/// machines it is checked on, instead of Rust's saturating `as`.
pub(crate) fn c_float_to_i8(x: f32) -> i8 {
    let wide = if (-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        x as i32
    } else {
        i32::MIN
    };
    wide as i8
}

/// Expands `x` into `y` (`y.len() == 32 * x.len()`).
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let (lo, hi) = out.split_at_mut(QK / 2);
        for ((&q, l), h) in b.qs.iter().zip(lo).zip(hi) {
            *l = (i32::from(q & 0x0f) - 8) as f32 * d;
            *h = (i32::from(q >> 4) - 8) as f32 * d;
        }
    }
}

/// Quantizes `x` into `y` (`x.len() == 32 * y.len()`), byte for byte ggml's reference:
/// `max` is the element of largest magnitude (the first one on ties, NaN never chosen),
/// `d = max / -8`, `id = 1/d` (0 when `d == 0`), `q = min(15, trunc(x*id + 8.5))`.
///
/// `x*id + 8.5` is one fused multiply-add: gcc contracts it (GNU C defaults to
/// `-ffp-contract=fast`) in ggml's `-march=native` build on any x86-64 with FMA, as on
/// aarch64, and a separate multiply and add would differ at rounding boundaries.
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

        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);

        let q = |v: f32| c_float_to_i8(v.mul_add(id, 8.5)).min(15) as u8;
        let (lo, hi) = xb.split_at(QK / 2);
        for ((qs, &x0), &x1) in b.qs.iter_mut().zip(lo).zip(hi) {
            *qs = q(x0) | (q(x1) << 4);
        }
    }
}

/// Shared by the tests of the 32-element block formats.
#[cfg(test)]
pub(crate) mod test_support {
    /// Decodes a hex string (whitespace ignored).
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(|c| !c.is_ascii_whitespace())
            .map(|c| match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("bad hex digit {c}"),
            })
            .collect();
        assert_eq!(digits.len() % 2, 0, "odd hex length");
        digits.chunks_exact(2).map(|p| (p[0] << 4) | p[1]).collect()
    }

    /// Edge rows of 32 values each, by name. The same rows were fed to ggml b2757's
    /// `quantize_row_*_reference` (built by the ggml-sys crate on x86-64 with AVX2/FMA/F16C);
    /// each format's tests hold the bytes ggml wrote.
    pub(crate) fn edge_rows() -> Vec<(&'static str, [f32; 32])> {
        let mut rows = Vec::new();
        let f = |g: &dyn Fn(usize) -> f32| -> [f32; 32] { std::array::from_fn(g) };
        rows.push(("zeros", [0.0; 32]));
        rows.push(("negative zeros", [-0.0; 32]));
        rows.push((
            "one huge",
            f(&|i| if i == 5 { 1.0e30 } else { i as f32 * 0.01 }),
        ));
        rows.push((
            "subnormals",
            f(&|i| {
                let sign = if i % 2 == 1 { 1 << 31 } else { 0 };
                f32::from_bits((0x0000_1000u32 * (i as u32 + 1)) | sign)
            }),
        ));
        rows.push((
            "subnormals and tiny normals",
            f(&|i| match i % 3 {
                0 => f32::from_bits(0x0080_0000 + 0x1234 * i as u32),
                _ => -f32::from_bits(0x0000_0101 * i as u32),
            }),
        ));
        rows.push(("all equal", [3.3; 32]));
        rows.push(("all equal negative", [-0.7; 32]));
        rows.push((
            "alternating signs",
            f(&|i| match i % 2 {
                0 => 1.7,
                _ => -1.7,
            }),
        ));
        rows.push((
            "alternating signs, negative first",
            f(&|i| match i % 2 {
                0 => -2.5,
                _ => 2.5,
            }),
        ));
        // rounding boundaries with an exact scale: d = 1 (q4_0), halves in between
        rows.push((
            "halves, max -8",
            f(&|i| {
                if i == 0 {
                    -8.0
                } else {
                    (i as f32 - 16.0) / 2.0
                }
            }),
        ));
        // d = 1 for q5_0
        rows.push((
            "halves, max -16",
            f(&|i| if i == 0 { -16.0 } else { i as f32 - 16.5 }),
        ));
        // min 0, max 15 (q4_1 d = 1) and halves
        rows.push((
            "halves in [0, 15]",
            f(&|i| match i {
                0 => 0.0,
                1 => 15.0,
                _ => (i as f32 - 2.0) / 2.0,
            }),
        ));
        // min 0, max 31 (q5_1 d = 1) and halves
        rows.push((
            "halves in [0, 31]",
            f(&|i| match i {
                0 => 0.0,
                1 => 31.0,
                _ => i as f32 - 1.5,
            }),
        ));
        // amax 127 (q8 d = 1) and halves, both signs
        rows.push((
            "halves, amax 127",
            f(&|i| match i {
                0 => -127.0,
                _ => (i as f32 - 16.0) * 7.5 + 0.5 * (i % 2) as f32,
            }),
        ));
        // scales that are not exact: products land next to the .5 boundaries, where a fused
        // multiply-add and a separate multiply and add can disagree
        rows.push((
            "near boundaries, third",
            f(&|i| if i == 0 { 1.0 } else { (i as f32 - 16.0) / 3.0 }),
        ));
        rows.push((
            "near boundaries, tenth",
            f(&|i| {
                if i == 0 {
                    -3.1
                } else {
                    (i as f32 - 15.5) * 0.1
                }
            }),
        ));
        rows.push((
            "near boundaries, sevenths",
            f(&|i| (i as f32 * 0.7 - 11.0) / 7.0),
        ));
        rows.push(("ramp", f(&|i| i as f32 - 16.0)));
        rows.push(("tiny normals", f(&|i| 1.0e-30 * (i as f32 - 16.0))));
        rows.push(("beyond f16 range", f(&|i| 1.0e7 * (i as f32 - 13.0))));
        rows.push((
            "max finite, both signs",
            f(&|i| match i {
                7 => 1.0,
                _ if i % 2 == 1 => 3.0e38,
                _ => -3.0e38,
            }),
        ));
        rows.push((
            "with +inf",
            f(&|i| {
                if i == 3 {
                    f32::INFINITY
                } else {
                    i as f32 - 10.0
                }
            }),
        ));
        rows.push((
            "with -inf",
            f(&|i| {
                if i == 9 {
                    f32::NEG_INFINITY
                } else {
                    i as f32 * 0.5
                }
            }),
        ));
        rows.push((
            "with NaN",
            f(&|i| {
                if i == 0 || i == 5 {
                    f32::NAN
                } else {
                    i as f32 - 10.0
                }
            }),
        ));
        rows.push(("all NaN", [f32::NAN; 32]));
        // rows where `x*id + c` fused and unfused truncate differently (found by search)
        let seeded = |seed: u64| -> [f32; 32] {
            let v = Rng(seed).row(32);
            std::array::from_fn(|i| v[i])
        };
        rows.push(("fused multiply-add matters for q4_0", seeded(77_307)));
        rows.push(("fused multiply-add matters for q4_1", seeded(98_869)));
        rows.push(("fused multiply-add matters for q5_0", seeded(730)));
        rows.push((
            "fused multiply-add matters for q5_1",
            f(&|i| match i {
                0 => 0.0,
                1 => f32::from_bits(0x4067_957e),
                _ => f32::from_bits(0x3d6f_0deb),
            }),
        ));
        rows
    }

    /// A deterministic pseudo-random generator (splitmix64) for test rows.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in [-1, 1).
        pub(crate) fn uniform(&mut self) -> f32 {
            (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }

        /// Rows with a block-wise random scale over many magnitudes (f16-normal scales).
        pub(crate) fn row(&mut self, n: usize) -> Vec<f32> {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n / 32 {
                let scale = 2f32.powi((self.next_u64() % 24) as i32 - 8);
                let offset = if self.next_u64() & 3 == 0 {
                    self.uniform() * scale * 2.0
                } else {
                    0.0
                };
                for _ in 0..32 {
                    v.push(self.uniform() * scale + offset);
                }
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{edge_rows, hex, Rng};
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
        assert_eq!(std::mem::size_of::<Block>(), 18);
        assert_eq!(std::mem::align_of::<Block>(), 2);
        assert_eq!(std::mem::offset_of!(BlockQ4_0, d), 0);
        assert_eq!(std::mem::offset_of!(BlockQ4_0, qs), 2);
    }

    #[test]
    fn c_cast_truncates_and_wraps_like_x86() {
        assert_eq!(c_float_to_i8(8.99), 8);
        assert_eq!(c_float_to_i8(-0.99), 0);
        assert_eq!(c_float_to_i8(-7.5), -7);
        assert_eq!(c_float_to_i8(200.7), -56);
        assert_eq!(c_float_to_i8(f32::NAN), 0);
        assert_eq!(c_float_to_i8(f32::INFINITY), 0);
        assert_eq!(c_float_to_i8(f32::NEG_INFINITY), 0);
        assert_eq!(c_float_to_i8(3.0e9), 0);
        assert_eq!(c_float_to_i8(-2_147_483_648.0), 0);
        assert_eq!(c_float_to_i8(2_147_483_520.0), -128);
    }

    #[test]
    fn hand_computed_block() {
        // max = -16 (first of largest magnitude), d = 2, id = 0.5; q = trunc(x/2 + 8.5)
        let x: Vec<f32> = (0..32).map(|j| j as f32 - 16.0).collect();
        let b = quantize(&x);
        assert_eq!(b[0].d.to_bits(), 0x4000);
        assert_eq!(
            b[0].qs,
            [
                0x80, 0x91, 0x91, 0xa2, 0xa2, 0xb3, 0xb3, 0xc4, 0xc4, 0xd5, 0xd5, 0xe6, 0xe6, 0xf7,
                0xf7, 0xf8
            ]
        );
        let y = dequantize(&b);
        assert_eq!(y[0], -16.0);
        assert_eq!(y[1], -14.0); // -15 * 0.5 + 8.5 = 1.0 exactly -> q 1 -> -7 * 2
        assert_eq!(y[31], 14.0); // clamped to q = 15
    }

    #[test]
    fn zeros_give_zero_scale_and_zero_values() {
        let b = quantize(&[0.0; 64]);
        for blk in &b {
            // max = 0: d = 0 / -N is -0.0, as in ggml
            assert_eq!(blk.d.to_bits(), 0x8000);
            assert_eq!(blk.qs, [0x88; 16]);
        }
        assert!(dequantize(&b).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn all_equal_and_alternating() {
        let y = dequantize(&quantize(&[-3.0; 32]));
        assert!(y.iter().all(|&v| v == -3.0));
        // +a first: d = -a/8; -a lands on q = 16 and is clamped to 15: error exactly |d|
        let x: Vec<f32> = (0..32)
            .map(|i| match i % 2 {
                0 => 4.0,
                _ => -4.0,
            })
            .collect();
        let y = dequantize(&quantize(&x));
        for (a, b) in x.iter().zip(&y) {
            if *a > 0.0 {
                assert_eq!(*b, 4.0);
            } else {
                assert_eq!(*b, -3.5);
            }
        }
    }

    #[test]
    fn edge_rows_match_ggml() {
        // bytes written by ggml b2757's quantize_row_q4_0_reference for each edge row
        let expected: [&str; 29] = [
            // zeros
            "008088888888888888888888888888888888",
            // negative zeros
            "008088888888888888888888888888888888",
            // one huge
            "00fc88888888888088888888888888888888",
            // subnormals
            "000000000000000000000000000000000000",
            // subnormals and tiny normals
            "008000000000000000000000000000000000",
            // all equal
            "9ab600000000000000000000000000000000",
            // all equal negative
            "9a2d00000000000000000000000000000000",
            // alternating signs
            "cdb200ff00ff00ff00ff00ff00ff00ff00ff",
            // alternating signs, negative first
            "003500ff00ff00ff00ff00ff00ff00ff00ff",
            // halves, max -8
            "003c809191a2a2b3b3c4c4d5d5e6e6f7f7f8",
            // halves, max -16
            "004080809191a2a2b3b3c4c4d5d5e6e6f7f7",
            // halves in [0, 15]
            "80bf48404838373737272626261615151505",
            // halves in [0, 31]
            "c0c348404838373737272626261615151505",
            // halves, amax 127
            "f04b80919192a2a3b3b4c4c5d5d6e6e7f7f8",
            // near boundaries, third
            "00398a9091a1a2b2b3c3c4d4d5e5e6f6f7f7",
            // near boundaries, tenth
            "3336808495959595a6a6a6a6b7b7b7b7c8c8",
            // near boundaries, sevenths
            "4932809191a2a2b3b3c4c4d5d5e6e6f7f7f8",
            // ramp
            "0040809191a2a2b3b3c4c4d5d5e6e6f7f7f8",
            // tiny normals
            "0000809091a1a2b3b3c4c4d5d5e6e6f7f7f8",
            // beyond f16 range
            "00fc7e6d6d5c5c4c4b4b3a3a292918180807",
            // max finite, both signs
            "007c00ff00ff00ff00f800ff00ff00ff00ff",
            // with +inf
            "00fc88888880888888888888888888888888",
            // with -inf
            "007c88888888888888888880888888888888",
            // with NaN
            "40c1605b5b5b4a403a393928282817170606",
            // all NaN
            "008000000000000000000000000000000000",
            // fused multiply-add matters for q4_0
            "5ea8285c183ddda48ad49651a65822a0bb13",
            // fused multiply-add matters for q4_1
            "cb2b72703cf4b364287737119565ae041f73",
            // fused multiply-add matters for q5_0
            "1015a48a5a08303c9a7b3c1749a4c99ba80a",
            // fused multiply-add matters for q5_1
            "3db788808888888888888888888888888888",
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
        let mut rng = Rng(1);
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
                let d = max / -8.0;
                let d16 = blk.d.to_f32();
                // error of the rounding step plus the effect of storing d as f16
                let scale_err = 8.0 * (d - d16).abs();
                for (&a, &r) in xb.iter().zip(yb) {
                    let err = (a - r).abs();
                    let clamped = a * (-8.0 / max) >= 7.49;
                    let bound = if clamped { d.abs() } else { 0.5 * d.abs() };
                    assert!(
                        err <= bound * (1.0 + 1e-5) + scale_err + f32::EPSILON * a.abs(),
                        "{a} -> {r}, d {d}"
                    );
                }
                // the element of largest magnitude is exact up to the f16 scale
                let i = xb.iter().position(|&v| v == max).unwrap_or(0);
                assert!((yb[i] - max).abs() <= scale_err + f32::EPSILON * max.abs());
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
