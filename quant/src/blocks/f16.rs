//! F16: IEEE-754 half precision (ggml's `ggml_fp16_t`), one element per "block".
//!
//! f32 -> f16 rounds to nearest, ties to even, overflows to infinity and keeps NaN a (quiet)
//! NaN with its sign and top payload bits: what ggml's `GGML_FP32_TO_FP16` computes with F16C
//! (`_cvtss_sh(x, 0)`). f16 -> f32 is exact.

use half::f16;

/// One F16 element.
pub type Block = f16;

const _: () = assert!(std::mem::size_of::<Block>() == 2);

/// Widens every element of `x` into `y` (`y.len() == x.len()`).
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (dst, src) in y.iter_mut().zip(x) {
        *dst = src.to_f32();
    }
}

/// Rounds every element of `x` to half precision into `y` (`y.len() == x.len()`).
#[inline(always)]
pub fn quantize_row(x: &[f32], y: &mut [Block]) {
    for (dst, src) in y.iter_mut().zip(x) {
        *dst = f16::from_f32(*src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(x: f32) -> u16 {
        let mut out = [f16::ZERO];
        quantize_row(&[x], &mut out);
        out[0].to_bits()
    }

    #[test]
    fn hand_picked_roundings() {
        assert_eq!(q(0.0), 0x0000);
        assert_eq!(q(-0.0), 0x8000);
        assert_eq!(q(1.0), 0x3c00);
        assert_eq!(q(-2.0), 0xc000);
        assert_eq!(q(65504.0), 0x7bff);
        // halfway between 65504 and 65536 (the next step) rounds to even = infinity
        assert_eq!(q(65520.0), 0x7c00);
        assert_eq!(q(65519.996), 0x7bff);
        assert_eq!(q(f32::INFINITY), 0x7c00);
        assert_eq!(q(f32::NEG_INFINITY), 0xfc00);
        // ties to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10
        assert_eq!(q(1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(q(1.0 + 3.0 / 2048.0), 0x3c02);
        // smallest subnormal 2^-24, and half of it (a tie, rounds to even = 0)
        assert_eq!(q(2f32.powi(-24)), 0x0001);
        assert_eq!(q(2f32.powi(-25)), 0x0000);
        assert_eq!(q(1.5 * 2f32.powi(-25)), 0x0001);
        assert_eq!(q(-3.0 * 2f32.powi(-25)), 0x8002);
        // f32 subnormals underflow to a signed zero
        assert_eq!(q(f32::from_bits(1)), 0x0000);
        assert_eq!(q(-f32::from_bits(0x007f_ffff)), 0x8000);
        // NaN stays NaN, quiet, sign kept
        assert_eq!(q(f32::NAN) & 0x7e00, 0x7e00);
        assert_eq!(q(f32::from_bits(0xff80_0001)) & 0xfe00, 0xfe00);
    }

    #[test]
    fn round_trip_of_every_f16_is_exact() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let mut y = [0f32];
            dequantize_row(&[h], &mut y);
            if h.is_nan() {
                assert!(y[0].is_nan());
                continue;
            }
            assert_eq!(q(y[0]), bits, "{bits:#06x}");
        }
    }

    #[test]
    fn error_within_half_an_ulp() {
        let mut x = Vec::new();
        let mut v = 1.0e-4f32;
        while v < 6.0e4 {
            x.push(v);
            x.push(-v * 1.37);
            v *= 1.0123;
        }
        let mut h = vec![f16::ZERO; x.len()];
        quantize_row(&x, &mut h);
        let mut y = vec![0f32; x.len()];
        dequantize_row(&h, &mut y);
        for (&a, &b) in x.iter().zip(&y) {
            // normal range: relative error at most 2^-11
            if a.abs() >= 6.2e-5 && a.abs() <= 65504.0 {
                assert!((a - b).abs() <= a.abs() * 2f32.powi(-11), "{a} -> {b}");
            }
        }
    }
}
