//! F32: plain IEEE-754 single precision, one element per "block".
//!
//! ggml's F32 rows are the values themselves; both directions are copies.

/// One F32 element (ggml's `float`).
pub type Block = f32;

const _: () = assert!(std::mem::size_of::<Block>() == 4);

/// Copies `x` into `y` (`y.len() == x.len()`; a shorter side leaves the rest untouched).
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (dst, src) in y.iter_mut().zip(x) {
        *dst = *src;
    }
}

/// Copies `x` into `y` (`y.len() == x.len()`; a shorter side leaves the rest untouched).
#[inline(always)]
pub fn quantize_row(x: &[f32], y: &mut [Block]) {
    for (dst, src) in y.iter_mut().zip(x) {
        *dst = *src;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_bit_pattern_kind() {
        let x = [
            0.0,
            -0.0,
            1.5,
            -3.25e-41,
            f32::MAX,
            f32::NEG_INFINITY,
            f32::from_bits(0x7fa0_0001),
            f32::from_bits(0xffc0_1234),
        ];
        let mut q = [0f32; 8];
        quantize_row(&x, &mut q);
        let mut y = [1f32; 8];
        dequantize_row(&q, &mut y);
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn wrong_lengths_do_not_panic() {
        let mut y = [7f32; 3];
        dequantize_row(&[1.0, 2.0], &mut y);
        assert_eq!(y, [1.0, 2.0, 7.0]);
        let mut q = [0f32; 1];
        quantize_row(&[4.0, 5.0], &mut q);
        assert_eq!(q, [4.0]);
    }
}
