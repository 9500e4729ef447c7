//! Q3_K: super-blocks of 256 weights in 16 sub-blocks of 16, each with a 6-bit scale `s_j`
//! (stored biased by 32, packed into 12 bytes, see [`unpack_scales`]); weight =
//! `d * (s_j - 32) * (q - 4)` with 3-bit quants `q` in 0..=7. The low 2 bits are laid out as in
//! Q2_K; the high bit of element `l` (0..32) of quarter `k` (0..8, 32 weights each) is bit `k`
//! of `hmask[l]`.
//!
//! Read-only here: like ggml's `dequantize_row_q3_K` (b2757, `QK_K == 256`), no quantizer.

use crate::types::QK_K;
use half::f16;

/// ggml's `block_q3_K` (`QK_K == 256`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3K {
    /// High bits of the quants: bit `k` of `hmask[l]` for element `l` of quarter `k`.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits of the quants, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Sub-block scales, 6 bits each, packed.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}

const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 2 + QK_K / 4 + QK_K / 8 + 12);
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

/// The block type of this format.
pub type Block = BlockQ3K;

/// The 16 scales of a block, unbiased (`-32..=31`). Scale `j` has its low 4 bits in the low
/// (`j < 8`) or high (`j >= 8`) nibble of byte `j % 8`, and its top 2 bits in bits
/// `2*(j/4)..2*(j/4)+2` of byte `8 + j % 4`.
fn unpack_scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

/// Expands `x` into `y` (`y.len() == 256 * x.len()`).
pub fn dequantize_row(x: &[Block], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d_all = b.d.to_f32();
        let scales = unpack_scales(&b.scales);
        for (half, ((qs, scales), out)) in
            b.qs.chunks_exact(32)
                .zip(scales.chunks_exact(8))
                .zip(out.chunks_exact_mut(128))
                .enumerate()
        {
            for (k, (&sc, out)) in scales.iter().zip(out.chunks_exact_mut(16)).enumerate() {
                let shift = 2 * (k / 2);
                let m = 1u8 << (4 * half + k / 2);
                let bytes = 16 * (k % 2)..16 * (k % 2) + 16;
                let dl = d_all * f32::from(sc);
                for ((o, &q), &h) in out.iter_mut().zip(&qs[bytes.clone()]).zip(&b.hmask[bytes]) {
                    let v = ((q >> shift) & 3) as i8 - if h & m != 0 { 0 } else { 4 };
                    *o = dl * f32::from(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    /// Packs 16 unbiased scales (`-32..=31`) the way [`unpack_scales`] reads them.
    fn pack_scales(sc: &[i8; 16]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for (j, &v) in sc.iter().enumerate() {
            let u = (i16::from(v) + 32) as u8;
            if j < 8 {
                s[j] |= u & 0x0f;
            } else {
                s[j - 8] |= (u & 0x0f) << 4;
            }
            s[8 + j % 4] |= (u >> 4) << (2 * (j / 4));
        }
        s
    }

    #[test]
    fn scales_unpack_like_ggml_aux_trick() {
        // ggml unpacks through four little-endian u32 words and masks; compare on random bytes.
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..1000 {
            let mut s = [0u8; 12];
            for b in s.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            let w =
                |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
            let (a0, a1, tmp) = (w(0), w(1), w(2));
            let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
            let aux = [
                (a0 & k2) | ((tmp & k1) << 4),
                (a1 & k2) | (((tmp >> 2) & k1) << 4),
                ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
                ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
            ];
            let bytes: Vec<i8> = aux
                .iter()
                .flat_map(|a| a.to_le_bytes())
                .map(|b| b as i8 - 32)
                .collect();
            assert_eq!(unpack_scales(&s).to_vec(), bytes);
            let sc = unpack_scales(&s);
            assert_eq!(unpack_scales(&pack_scales(&sc)), sc);
        }
    }

    #[test]
    fn dequantize_hand_built_block() {
        let mut b = Block::zeroed();
        b.d = f16::from_f32(0.25);
        let mut sc = [0i8; 16];
        for (j, s) in sc.iter_mut().enumerate() {
            *s = j as i8 * 4 - 32; // -32 ..= 28
        }
        b.scales = pack_scales(&sc);
        // Element i gets quant (5 * i) % 8, i.e. value q - 4.
        let want_q = |i: usize| ((5 * i) % 8) as u8;
        for half in 0..2 {
            for l in 0..32 {
                for k in 0..4 {
                    let q = want_q(128 * half + 32 * k + l);
                    b.qs[32 * half + l] |= (q & 3) << (2 * k);
                    b.hmask[l] |= (q >> 2) << (4 * half + k);
                }
            }
        }
        let mut y = [0.0f32; 256];
        dequantize_row(&[b], &mut y);
        for (i, &v) in y.iter().enumerate() {
            let want = 0.25 * f32::from(sc[i / 16]) * (f32::from(want_q(i)) - 4.0);
            assert_eq!(v, want, "element {i}");
        }
        assert_eq!(y[0], 0.25 * -32.0 * -4.0);
    }

    #[test]
    fn zero_block_is_zero() {
        let b = Block::zeroed();
        let mut y = [1.0f32; 256];
        dequantize_row(&[b], &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
    }
}
