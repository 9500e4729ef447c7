//! Q4_K weights repacked eight rows at a time ("Q4_K×8"), the K-quant counterpart of
//! [`super::q4_0x8`]: each Q8_K activation quad is broadcast once for eight rows, the eight
//! rows' scales are applied with one multiply per sub-block, and the results stay in the
//! lanes of one register.
//!
//! A Q4_K row is a run of 144-byte super-blocks of 256 weights: f16 `d`, f16 `dmin`, 12 bytes
//! of 6-bit sub-block scales and mins (8 each), then 128 quant bytes: bytes `32c..32c+32` hold
//! sub-block `2c` in their low nibbles and sub-block `2c+1` in their high nibbles
//! (`w = d · sc · u − dmin · m`). A packed *group* of eight rows stores, per super-block column,
//! [`GROUP_BLOCK_BYTES`] = 1184 bytes (2.8 % more than the eight rows' 1152: the scales are
//! stored unpacked, one byte each):
//!
//! * 0..16 the rows' `d`, 16..32 their `dmin` (f16, row 0 first);
//! * 32..96 scales: byte `32 + 8·s + j` = sub-block `s`'s scale of row `j`;
//! * 96..160 mins in pairs: byte `96 + 16·p + 2·j + k` = sub-block `2p + k`'s min of row `j`;
//! * 160..1184 quants: byte `160 + 256·c + 32·m + 4·j + t` = row `j`'s quant byte
//!   `32·c + 4·m + t` (c in 0..4, m in 0..8, t in 0..4).
//!
//! The `dmin · m` term needs the activations' sums over each 32-quant sub-block, from the
//! Q8_K `bsums`: [`min_pairs`] packs them two sub-blocks to a 32-bit word once per activation
//! row.

use super::packed;
use super::scalar::{f16_at, f32_at, k4_scales, Q4_K_BYTES, Q8_K_BYTES};
use crate::types::QK_K;

/// Rows in one packed group.
pub const ROWS: usize = 8;
/// Bytes of one super-block column of a group.
pub const GROUP_BLOCK_BYTES: usize = 32 + 64 + 64 + ROWS * 128;
/// Most activation rows one [`gemm`] kernel call takes at once.
pub const TILE_TOKENS: usize = 4;

/// Bytes of one packed group of eight rows of `n` weights (`None`: `n` is not whole
/// super-blocks).
pub fn group_bytes(n: usize) -> Option<usize> {
    n.is_multiple_of(QK_K)
        .then_some(n / QK_K * GROUP_BLOCK_BYTES)
}

/// Packs eight Q4_K rows of `n` weights (`rows`: one after another) into one group (`out`:
/// [`group_bytes`]`(n)` bytes). `false` (and `out` left untouched) when a length is wrong.
pub fn pack(n: usize, rows: &[u8], out: &mut [u8]) -> bool {
    pack_with(super::simd_level(), n, rows, out)
}

/// [`pack`] by the best code `<= level` this CPU runs: AVX2 transposes each super-block
/// column in registers ([`super::avx2_q4_kx8::pack`]), the same bytes as the scalar loop
/// (`pack_speed` example, README "Start-up").
pub fn pack_with(level: super::SimdLevel, n: usize, rows: &[u8], out: &mut [u8]) -> bool {
    let Some(gb) = group_bytes(n) else {
        return false;
    };
    let row_bytes = n / QK_K * Q4_K_BYTES;
    if rows.len() != ROWS * row_bytes || out.len() != gb {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if super::effective(level, super::hardware_level()) >= super::SimdLevel::Avx2 {
        // SAFETY: `effective` gives `Avx2` or above only when the CPU has AVX2; the lengths
        // were checked above.
        unsafe { super::avx2_q4_kx8::pack(row_bytes, rows, out) };
        return true;
    }
    let _ = level;
    for (j, row) in rows.chunks_exact(row_bytes).enumerate() {
        for (blk, col) in row
            .chunks_exact(Q4_K_BYTES)
            .zip(out.chunks_exact_mut(GROUP_BLOCK_BYTES))
        {
            col[2 * j..2 * j + 2].copy_from_slice(&blk[0..2]);
            col[16 + 2 * j..16 + 2 * j + 2].copy_from_slice(&blk[2..4]);
            let (sc, m) = k4_scales(blk);
            for s in 0..8 {
                col[32 + 8 * s + j] = sc[s] as u8;
                col[96 + 16 * (s / 2) + 2 * j + s % 2] = m[s] as u8;
            }
            for c in 0..4 {
                for m in 0..8 {
                    let at = 160 + 256 * c + 32 * m + 4 * j;
                    col[at..at + 4].copy_from_slice(&blk[16 + 32 * c + 4 * m..][..4]);
                }
            }
        }
    }
    true
}

/// For each super-block of a Q8_K activation row, four words: word `p` holds the sums of the
/// 32 quants of sub-blocks `2p` (low 16 bits) and `2p + 1` (high 16 bits). `out` is cleared
/// first and left empty when `act` is not whole blocks.
pub fn min_pairs(act: &[u8], out: &mut Vec<i32>) {
    out.clear();
    if !act.len().is_multiple_of(Q8_K_BYTES) {
        return;
    }
    for by in act.chunks_exact(Q8_K_BYTES) {
        let bsum = |i: usize| i32::from(i16::from_le_bytes([by[260 + 2 * i], by[261 + 2 * i]]));
        for p in 0..4 {
            let lo = bsum(4 * p) + bsum(4 * p + 1);
            let hi = bsum(4 * p + 2) + bsum(4 * p + 3);
            out.push((lo & 0xffff) | (hi << 16));
        }
    }
}

/// The sub-block sums of word `w` of [`min_pairs`].
fn unpair(w: i32) -> (i32, i32) {
    (i32::from(w as i16), w >> 16)
}

/// Checks a group and one activation row (with its [`min_pairs`]) for `n` weights.
fn lengths_ok(n: usize, group: &[u8], act: &[u8], pairs: &[i32]) -> bool {
    group_bytes(n) == Some(group.len())
        && act.len() == n / QK_K * Q8_K_BYTES
        && pairs.len() == n / QK_K * 4
}

packed::entry_points!(Q4Kx8);

/// This layout's parts of the shared entry points.
struct Q4Kx8;

impl packed::Layout for Q4Kx8 {
    fn lengths_ok(n: usize, group: &[u8], act: &[u8], prep: &[i32]) -> bool {
        lengths_ok(n, group, act, prep)
    }

    fn gemv_scalar(group: &[u8], act: &[u8], prep: &[i32]) -> [f32; ROWS] {
        gemv_scalar(group, act, prep)
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemv(group: &[u8], act: &[u8], prep: &[i32]) -> [f32; ROWS] {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths checked.
        unsafe { super::avx2_q4_kx8::gemv(group, act, prep) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemv2(a: &[u8], b: &[u8], act: &[u8], prep: &[i32]) -> [[f32; ROWS]; 2] {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths of both groups checked.
        unsafe { super::avx2_q4_kx8::gemv2(a, b, act, prep) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemm(group: &[u8], acts: &[&[u8]], preps: &[&[i32]], out: &mut [f32]) {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths checked, at most
        // TILE_TOKENS rows.
        unsafe { super::avx2_q4_kx8::gemm(group, acts, preps, out) }
    }
}

/// The scalar reference, exactly as [`super::scalar::q4_k_q8_k`] computes each unpacked row.
fn gemv_scalar(group: &[u8], act: &[u8], pairs: &[i32]) -> [f32; ROWS] {
    let mut sumf = [0f32; ROWS];
    for ((col, by), pw) in group
        .chunks_exact(GROUP_BLOCK_BYTES)
        .zip(act.chunks_exact(Q8_K_BYTES))
        .zip(pairs.chunks_exact(4))
    {
        let dy = f32_at(by, 0);
        let qy = &by[4..4 + QK_K];
        for (j, f) in sumf.iter_mut().enumerate() {
            let mut isum = 0i32;
            for c in 0..4 {
                let (mut lo, mut hi) = (0i32, 0i32);
                for m in 0..8 {
                    for t in 0..4 {
                        let b = col[160 + 256 * c + 32 * m + 4 * j + t];
                        let l = 4 * m + t;
                        lo += i32::from(b & 0x0f) * i32::from(qy[64 * c + l] as i8);
                        hi += i32::from(b >> 4) * i32::from(qy[64 * c + 32 + l] as i8);
                    }
                }
                let sc = |s: usize| i32::from(col[32 + 8 * s + j]);
                isum += sc(2 * c) * lo + sc(2 * c + 1) * hi;
            }
            let mut imin = 0i32;
            for (p, &w) in pw.iter().enumerate() {
                let (s0, s1) = unpair(w);
                let m = |k: usize| i32::from(col[96 + 16 * p + 2 * j + k]);
                imin += m(0) * s0 + m(1) * s1;
            }
            *f += (f16_at(col, 2 * j) * dy) * isum as f32
                - (f16_at(col, 16 + 2 * j) * dy) * imin as f32;
        }
    }
    sumf
}

packed::row_kernel!(
    Q4Kx8,
    QK_K,
    Q4_K_BYTES,
    Q8_K_BYTES,
    super::scalar::q4_k_q8_k,
    super::avx2_q4_kx8::rows_tile
);

#[cfg(test)]
mod tests {
    use super::super::tests::{check_pack_levels, check_rows_give, Rng};
    use super::*;
    use crate::kernels::{available_levels, quantize_activations, scalar, SimdLevel};
    use crate::GgmlType;

    /// Eight Q4_K rows quantized from random weights (some rows tiny, so subnormal scales) and
    /// a Q8_K activation row quantized from random values (or all at the extreme).
    fn case(rng: &mut Rng, n: usize, extreme: bool) -> (Vec<u8>, Vec<u8>) {
        let row_bytes = n / QK_K * Q4_K_BYTES;
        let mut rows = vec![0u8; ROWS * row_bytes];
        for (j, r) in rows.chunks_exact_mut(row_bytes).enumerate() {
            let amp = if j == 3 { 1e-6 } else { 1.0 };
            let w: Vec<f32> = (0..n).map(|_| rng.f() * amp).collect();
            crate::blocks::quantize_row(GgmlType::Q4K, &w, r).unwrap();
        }
        let x: Vec<f32> = (0..n)
            .map(|i| {
                if extreme {
                    -1.0 + (i % 2) as f32 * 1e-3
                } else {
                    rng.f()
                }
            })
            .collect();
        let mut act = Vec::new();
        quantize_activations(GgmlType::Q4K, &x, &mut act);
        (rows, act)
    }

    #[test]
    fn packed_kernels_match_the_row_reference_at_every_level() {
        let mut rng = Rng(13);
        for (n, extreme) in [(256, false), (2048, false), (5632, false), (512, true)] {
            let (rows, act) = case(&mut rng, n, extreme);
            let row_bytes = n / QK_K * Q4_K_BYTES;
            let mut g = vec![0u8; group_bytes(n).unwrap()];
            assert!(pack(n, &rows, &mut g));
            let mut pairs = Vec::new();
            min_pairs(&act, &mut pairs);
            assert_eq!(pairs.len(), n / QK_K * 4);
            let want: Vec<f32> = rows
                .chunks_exact(row_bytes)
                .map(|r| scalar::q4_k_q8_k(r, &act))
                .collect();
            for level in available_levels() {
                let mut got = [0f32; ROWS];
                gemv_with(level, n, &g, &act, &pairs, &mut got);
                for (j, (&a, &b)) in got.iter().zip(&want).enumerate() {
                    if level == SimdLevel::Scalar {
                        assert_eq!(a.to_bits(), b.to_bits(), "{level:?} n {n} row {j}");
                    } else {
                        let tol = 1e-5 * (1.0 + b.abs()) * (n as f32 / 256.0);
                        assert!((a - b).abs() <= tol, "{level:?} n {n} row {j}: {a} vs {b}");
                    }
                }
                // the same rows in the file's layout: the same bits
                check_rows_give(rows_gemm_with, level, n, &rows, &act, &got[..], "");
                for nt in [1, 2, 4, 7] {
                    let acts: Vec<&[u8]> = vec![&act; nt];
                    let ps: Vec<&[i32]> = vec![&pairs; nt];
                    let mut out = vec![f32::NAN; ROWS * nt];
                    gemm_with(level, n, &g, &acts, &ps, &mut out);
                    for j in 0..ROWS {
                        for t in 0..nt {
                            assert_eq!(
                                out[j * nt + t].to_bits(),
                                got[j].to_bits(),
                                "{level:?} n {n} nt {nt} row {j} token {t}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gemm_tokens_are_independent() {
        let mut rng = Rng(17);
        let n = 512;
        let (rows, _) = case(&mut rng, n, false);
        let mut g = vec![0u8; group_bytes(n).unwrap()];
        assert!(pack(n, &rows, &mut g));
        let acts: Vec<Vec<u8>> = (0..5).map(|_| case(&mut rng, n, false).1).collect();
        let pairs: Vec<Vec<i32>> = acts
            .iter()
            .map(|a| {
                let mut p = Vec::new();
                min_pairs(a, &mut p);
                p
            })
            .collect();
        let ar: Vec<&[u8]> = acts.iter().map(|a| &a[..]).collect();
        let pr: Vec<&[i32]> = pairs.iter().map(|p| &p[..]).collect();
        for level in available_levels() {
            let mut out = vec![0f32; ROWS * 5];
            gemm_with(level, n, &g, &ar, &pr, &mut out);
            for t in 0..5 {
                let mut one = [0f32; ROWS];
                gemv_with(level, n, &g, &acts[t], &pairs[t], &mut one);
                for j in 0..ROWS {
                    assert_eq!(
                        out[j * 5 + t].to_bits(),
                        one[j].to_bits(),
                        "{level:?} {t} {j}"
                    );
                }
            }
        }
    }

    /// Rows in the file's layout through [`rows_gemm_with`] against different activation rows
    /// give, row by row and token by token, the packed group's [`gemm_with`], bit for bit, at
    /// every level, and the table's entry is this function.
    #[test]
    fn rows_gemm_is_gemm_of_the_packed_rows() {
        let mut rng = Rng(19);
        for (n, extreme) in [(256, false), (1024, true), (4096, false)] {
            let (rows, _) = case(&mut rng, n, false);
            let acts: Vec<Vec<u8>> = (0..6)
                .map(|t| case(&mut rng, n, extreme && t % 2 == 0).1)
                .collect();
            let (gw, rw) = (gemm_with, rows_gemm_with);
            super::super::tests::check_rows_gemm(GgmlType::Q4K, n, &rows, &acts, gw, rw);
        }
    }

    #[test]
    fn every_level_packs_the_documented_bytes() {
        let mut rng = Rng(29);
        for n in [256, 512, 2048] {
            let row_bytes = n / QK_K * Q4_K_BYTES;
            // any bytes are rows to the packer; quantized rows too
            let random: Vec<u8> = (0..ROWS * row_bytes).map(|_| rng.byte()).collect();
            let (quantized, _) = case(&mut rng, n, false);
            for rows in [random, quantized] {
                let reference = check_pack_levels(pack_with, n, &rows, group_bytes(n).unwrap());
                // the layout of the module's docs
                for (j, row) in rows.chunks_exact(row_bytes).enumerate() {
                    for (blk, col) in row
                        .chunks_exact(Q4_K_BYTES)
                        .zip(reference.chunks_exact(GROUP_BLOCK_BYTES))
                    {
                        assert_eq!(col[2 * j..2 * j + 2], blk[0..2]);
                        assert_eq!(col[16 + 2 * j..16 + 2 * j + 2], blk[2..4]);
                        let (sc, m) = k4_scales(blk);
                        for s in 0..8 {
                            assert_eq!(i32::from(col[32 + 8 * s + j]), sc[s]);
                            assert_eq!(i32::from(col[96 + 16 * (s / 2) + 2 * j + s % 2]), m[s]);
                        }
                        for (i, &q) in blk[16..].iter().enumerate() {
                            let (c, m, t) = (i / 32, i % 32 / 4, i % 4);
                            assert_eq!(col[160 + 256 * c + 32 * m + 4 * j + t], q);
                        }
                    }
                }
            }
        }
        // wrong lengths: refused at every level, nothing written
        for level in available_levels() {
            let mut g = vec![0xAAu8; GROUP_BLOCK_BYTES];
            assert!(!pack_with(level, 256, &[0u8; 8 * Q4_K_BYTES - 1], &mut g));
            assert!(!pack_with(level, 256, &[0u8; 8 * Q4_K_BYTES], &mut g[1..]));
            assert!(!pack_with(level, 255, &[0u8; 8 * Q4_K_BYTES], &mut g));
            assert!(g.iter().all(|&b| b == 0xAA), "{level:?}");
        }
    }

    #[test]
    fn wrong_lengths_give_zeros() {
        let n = 256;
        let g = vec![1u8; group_bytes(n).unwrap()];
        let act = vec![1u8; Q8_K_BYTES];
        let mut out = [f32::NAN; ROWS];
        gemv(n, &g, &act, &[0; 4], &mut out);
        assert!(out.iter().all(|v| v.is_finite()), "right lengths compute");
        for (g2, a2, p2) in [
            (&g[1..], &act[..], &[0; 4][..]),
            (&g[..], &act[1..], &[0; 4][..]),
            (&g[..], &act[..], &[0; 3][..]),
        ] {
            let mut out = [f32::NAN; ROWS];
            gemv(n, g2, a2, p2, &mut out);
            assert_eq!(out, [0.0; ROWS]);
        }
        let mut o = vec![f32::NAN; ROWS];
        gemm(n, &g, &[&act, &act], &[&[0; 4], &[0; 4]], &mut o);
        assert!(o.iter().all(|&v| v == 0.0));
        assert!(!pack(255, &[0u8; 8 * 144], &mut vec![0u8; 1184]));
        // rows in the file's layout
        let row = vec![1u8; Q4_K_BYTES];
        super::super::tests::check_rows_wrong_lengths(n, &row, &act, rows_gemm_with);
        let mut p = vec![9];
        min_pairs(&act[1..], &mut p);
        assert!(p.is_empty());
    }
}
