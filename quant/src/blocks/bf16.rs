//! BF16: the top 16 bits of an IEEE-754 single (ggml's `ggml_bf16_t`), one element per "block".
//!
//! ggml b2757 predates BF16; the rounding here is current ggml's `ggml_compute_fp32_to_bf16`
//! (also PyTorch's): round to nearest, ties to even, no flush of subnormals, and a NaN stays a
//! quiet NaN with its sign and top payload bits. bf16 -> f32 is a shift, exact.

use half::bf16;

/// One BF16 element.
pub type Block = bf16;

const _: () = assert!(std::mem::size_of::<Block>() == 2);

/// Rounds `x` to bfloat16: nearest, ties to even; NaN -> quiet NaN keeping sign and payload top.
pub fn f32_to_bf16(x: f32) -> bf16 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        // NaN: keep the sign and the top 7 payload bits, force the quiet bit
        return bf16::from_bits(((bits >> 16) | 0x40) as u16);
    }
    // adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even; cannot overflow:
    // the largest non-NaN pattern is 0xff80_0000 (-inf)
    let rounded = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
    bf16::from_bits(rounded as u16)
}

/// Widens a bfloat16 to f32 (exact: the bits become the top half of the single).
fn bf16_to_f32(x: bf16) -> f32 {
    f32::from_bits(u32::from(x.to_bits()) << 16)
}

/// Widens every element of `x` into `y` (`y.len() == x.len()`).
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (dst, src) in y.iter_mut().zip(x) {
        *dst = bf16_to_f32(*src);
    }
}

/// Rounds every element of `x` to bfloat16 into `y` (`y.len() == x.len()`).
#[inline(always)]
pub fn quantize_row(x: &[f32], y: &mut [Block]) {
    for (dst, src) in y.iter_mut().zip(x) {
        *dst = f32_to_bf16(*src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(bits: u32) -> u16 {
        f32_to_bf16(f32::from_bits(bits)).to_bits()
    }

    #[test]
    fn hand_picked_edge_values() {
        assert_eq!(q(0x0000_0000), 0x0000); // +0
        assert_eq!(q(0x8000_0000), 0x8000); // -0
        assert_eq!(q(0x7f80_0000), 0x7f80); // +inf
        assert_eq!(q(0xff80_0000), 0xff80); // -inf
        assert_eq!(q(0x3f80_0000), 0x3f80); // 1.0

        // f32::MAX is above the halfway point to 2^128: rounds to infinity
        assert_eq!(q(0x7f7f_ffff), 0x7f80);
        assert_eq!(q(0xff7f_ffff), 0xff80);

        // the largest value that still rounds down to bf16::MAX, and the tie above it (odd
        // mantissa 0x7f: ties to even goes up to infinity)
        assert_eq!(q(0x7f7f_7fff), 0x7f7f);
        assert_eq!(q(0x7f7f_8000), 0x7f80);

        // smallest f32 subnormal rounds to +0 (no tie: below half of bf16's smallest step)
        assert_eq!(q(0x0000_0001), 0x0000);
        assert_eq!(q(0x8000_0001), 0x8000);

        // bf16's smallest subnormal, and subnormals rounding both ways (no flush to zero)
        assert_eq!(q(0x0001_0000), 0x0001);
        assert_eq!(q(0x0000_8000), 0x0000); // tie, to even
        assert_eq!(q(0x0000_8001), 0x0001);
        assert_eq!(q(0x0001_8000), 0x0002); // tie, to even
        assert_eq!(q(0x007f_ffff), 0x0080); // largest subnormal rounds up to the smallest normal

        // ties to even in the normal range
        assert_eq!(q(0x3f80_8000), 0x3f80);
        assert_eq!(q(0x3f81_8000), 0x3f82);
        assert_eq!(q(0x3f80_8001), 0x3f81);
        assert_eq!(q(0x3f80_7fff), 0x3f80);
        assert_eq!(q(0xbf81_8000), 0xbf82);

        // NaN: quiet, sign and top payload bits kept
        assert_eq!(q(0x7f80_0001), 0x7fc0); // signaling NaN -> quiet
        assert_eq!(q(0x7fc0_0000), 0x7fc0);
        assert_eq!(q(0xffc0_0000), 0xffc0); // negative NaN keeps its sign
        assert_eq!(q(0xff80_0001), 0xffc0);
        assert_eq!(q(0x7fa5_0000), 0x7fe5); // payload top kept, quiet bit forced
        assert_eq!(q(0x7fff_ffff), 0x7fff); // must not round into a carry
        assert_eq!(q(0xffff_ffff), 0xffff);
        assert!(bf16_to_f32(f32_to_bf16(f32::from_bits(0x7f80_0001))).is_nan());
    }

    #[test]
    fn matches_half_crate_over_a_stride_sweep() {
        // 2^24 + 1 patterns over the whole u32 range, with an odd stride so every low-bit
        // combination (ties, just above and below) is hit, plus the neighbourhood of every
        // rounding boundary near the start of each 2^16 window.
        let stride: u32 = 255;
        let mut bits: u32 = 0;
        let mut n = 0u64;
        loop {
            let x = f32::from_bits(bits);
            let ours = f32_to_bf16(x);
            let theirs = bf16::from_f32(x);
            if x.is_nan() {
                // half keeps NaNs quiet too; both must be NaN with the same sign
                assert!(ours.is_nan() && theirs.is_nan(), "{bits:#010x}");
                assert_eq!(ours.to_bits() & 0x8000, theirs.to_bits() & 0x8000);
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{bits:#010x}");
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{bits:#010x}");
            }
            n += 1;
            match bits.checked_add(stride) {
                Some(b) => bits = b,
                None => break,
            }
        }
        assert!(n >= 1 << 24, "{n}");
        for hi in (0..=0xffffu32).step_by(7) {
            for lo in [0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff] {
                let b = (hi << 16) | lo;
                let x = f32::from_bits(b);
                assert_eq!(
                    f32_to_bf16(x).to_bits(),
                    bf16::from_f32(x).to_bits(),
                    "{b:#010x}"
                );
            }
        }
    }

    #[test]
    fn round_trip_of_every_bf16_is_exact() {
        for bits in 0..=u16::MAX {
            let h = bf16::from_bits(bits);
            let mut y = [0f32];
            dequantize_row(&[h], &mut y);
            assert_eq!(y[0].to_bits(), u32::from(bits) << 16);
            if !h.is_nan() {
                // (half's own widening quiets signaling NaNs; ours is a plain shift)
                assert_eq!(y[0].to_bits(), h.to_f32().to_bits());
            }
            let mut back = [bf16::ZERO];
            quantize_row(&y, &mut back);
            if h.is_nan() {
                // quantizing a NaN forces the quiet bit
                assert_eq!(back[0].to_bits(), bits | 0x40);
            } else {
                assert_eq!(back[0].to_bits(), bits);
            }
        }
    }

    #[test]
    fn error_within_half_an_ulp() {
        let mut x = Vec::new();
        let mut v = 1.0e-37f32;
        while v < 1.0e37 {
            x.push(v);
            x.push(-v * 1.37);
            v *= 1.0071;
        }
        let mut h = vec![bf16::ZERO; x.len()];
        quantize_row(&x, &mut h);
        let mut y = vec![0f32; x.len()];
        dequantize_row(&h, &mut y);
        for (&a, &b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= a.abs() * 2f32.powi(-8), "{a} -> {b}");
            assert_eq!(a.is_sign_negative(), b.is_sign_negative());
        }
    }
}
