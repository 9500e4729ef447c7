//! Q2_K: super-blocks of 256 weights in 16 sub-blocks of 16. Byte `scales[j]` holds the 4-bit
//! scale (low nibble) and 4-bit min (high nibble) of sub-block `j`; weight =
//! `d * sc_j * q - dmin * m_j` with 2-bit quants `q` in 0..=3. In each half of 128 weights,
//! element `l` (0..32) of the four quarters `0, 32, 64, 96` sits in bits `0-1, 2-3, 4-5, 6-7`
//! of `qs[l]` (`qs` advancing by 32 bytes per half).
//!
//! Read-only here: like ggml's `dequantize_row_q2_K` (b2757, `QK_K == 256`), no quantizer.

use crate::types::QK_K;
use half::f16;

/// ggml's `block_q2_K` (`QK_K == 256`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2K {
    /// Sub-block scales (low nibble) and mins (high nibble).
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block mins.
    pub dmin: f16,
}

const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 2 * 2 + QK_K / 16 + QK_K / 4);
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

/// The block type of this format.
pub type Block = BlockQ2K;

/// Expands `x` into `y` (`y.len() == 256 * x.len()`).
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        // Sub-block j = 8*half + 2*shift_index + {0, 1}: quarter `shift_index` of the half,
        // first or second 16 bytes of its 32 `qs`.
        for ((qs, scales), out) in
            b.qs.chunks_exact(32)
                .zip(b.scales.chunks_exact(8))
                .zip(out.chunks_exact_mut(128))
        {
            for (k, (sc, out)) in scales.iter().zip(out.chunks_exact_mut(16)).enumerate() {
                let shift = 2 * (k / 2);
                let q = &qs[16 * (k % 2)..16 * (k % 2) + 16];
                let dl = d * f32::from(sc & 0x0f);
                let ml = min * f32::from(sc >> 4);
                for (o, &q) in out.iter_mut().zip(q) {
                    *o = dl * f32::from((q >> shift) & 3) - ml;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn dequantize_hand_built_block() {
        let mut b = Block::zeroed();
        b.d = f16::from_f32(0.5);
        b.dmin = f16::from_f32(0.25);
        for (j, s) in b.scales.iter_mut().enumerate() {
            *s = (j as u8) | ((15 - j as u8) << 4);
        }
        // Element i gets quant (i / 3) % 4.
        let want_q = |i: usize| ((i / 3) % 4) as u8;
        for half in 0..2 {
            for l in 0..32 {
                let q = |k: usize| want_q(128 * half + 32 * k + l);
                b.qs[32 * half + l] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
            }
        }
        let mut y = [0.0f32; 256];
        dequantize_row(&[b], &mut y);
        for (i, &v) in y.iter().enumerate() {
            let j = i / 16;
            let want = 0.5 * j as f32 * f32::from(want_q(i)) - 0.25 * (15 - j) as f32;
            assert_eq!(v, want, "element {i}");
        }
        assert_eq!(y[0], -0.25 * 15.0);
        assert_eq!(y[255], 0.5 * 15.0 * f32::from(want_q(255)));
    }

    #[test]
    fn zero_block_is_zero_and_short_output_is_safe() {
        let b = Block::zeroed();
        let mut y = [1.0f32; 256];
        dequantize_row(&[b], &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
        let mut short = [1.0f32; 100];
        dequantize_row(&[b], &mut short);
        assert!(short.iter().all(|&v| v == 1.0));
    }
}
