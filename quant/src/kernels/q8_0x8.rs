//! Q8_0 weights repacked eight rows at a time ("Q8_0×8"), the 8-bit counterpart of
//! [`super::q4_0x8`]: each activation quad is broadcast once for eight rows, one scale
//! conversion serves eight rows and the eight results stay in the lanes of one register.
//!
//! A Q8_0 row is a run of 34-byte blocks: an f16 scale `d`, then 32 signed quants
//! (`w = d · q`). A packed *group* holds eight rows; for each block column `b` it stores
//! [`GROUP_BLOCK_BYTES`] = 272 bytes (exactly the eight rows' bytes, nothing added):
//!
//! * bytes 0..16: the eight rows' f16 scales of block `b`, row 0 first;
//! * bytes 16..272: `P[32·m + 4·j + t] = row j's quant 4·m + t`, for m in 0..8, t in 0..4
//!   and row j in 0..8, i.e. each of the eight 32-byte loads of a column holds four
//!   consecutive quants of each of the eight rows, row `j` in 32-bit lane `j`; the quants are
//!   stored as they are (signed).
//!
//! Both operands are signed, and AVX2's byte multiply (`maddubs`) wants one unsigned. Storing
//! the weights biased by +128 would overflow its 16-bit pair sums (255 · 127 · 2 = 64,770 >
//! 32,767). The AVX2 kernel uses the sign trick of the per-row kernel, `maddubs(|w|, sign(a,
//! w))` (at most 128 · 127 · 2 = 32,512, so exact, −128 weights included) and widens each
//! product at once; it needs nothing from the activation row beforehand, so the prep
//! ([`no_prep`]) is empty. Like the per-row kernels and ggml, it assumes no activation quant
//! is −128 ([`super::quantize_activations`] never writes one). Multiplying in 16 bits instead
//! (odd and even quants isolated by a mask and a shift, `madd` with the activation quants
//! prepared as 16-bit pairs) is exact for every input but measured slower on the 2-core AMD
//! EPYC this was written on (4096 columns, 1 thread, in L2): gemv 25-28 against 34-35 GB/s,
//! a 4-token gemm tile 7 against 9.5 GB/s of weights; from memory both ran at 7-9 GB/s.
//!
//! Every entry checks its lengths and writes zeros (or returns `false`) when one is wrong. The
//! scalar kernels here are the reference the SIMD ones are tested against; they compute
//! exactly [`super::scalar::q8_0_q8_0`] of each unpacked row (bit for bit: the same exact
//! integer sums, then `sumf += sumi · (d_x · d_y)` in block order), and so does the AVX2
//! kernel for activations without −128.

use super::packed;
use super::scalar::{f16_at, Q8_0_BYTES};

/// Rows in one packed group.
pub const ROWS: usize = 8;
/// Bytes of one block column of a group: eight f16 scales and eight rows × 32 quants.
pub const GROUP_BLOCK_BYTES: usize = ROWS * Q8_0_BYTES;
/// Most activation rows one [`gemm`] kernel call takes at once.
pub const TILE_TOKENS: usize = 4;

/// Elements per Q8_0 block.
const QK: usize = 32;

/// Bytes of one packed group of eight rows of `n` weights (`None`: `n` is not whole blocks).
pub fn group_bytes(n: usize) -> Option<usize> {
    n.is_multiple_of(QK).then_some(n / QK * GROUP_BLOCK_BYTES)
}

/// Packs eight Q8_0 rows of `n` weights (`rows`: the rows one after another, `8 · n / 32 ·
/// 34` bytes) into one group (`out`: [`group_bytes`]`(n)` bytes). `false` (and `out` left
/// untouched) when a length is wrong.
pub fn pack(n: usize, rows: &[u8], out: &mut [u8]) -> bool {
    pack_with(super::simd_level(), n, rows, out)
}

/// [`pack`] by the best code `<= level` this CPU runs: AVX2 transposes each block column's
/// 8 × 8 words of quants in registers (the same bytes as the scalar loop, which moves them
/// four at a time): ~3× the scalar speed in cache, 1.3× from memory (`pack_speed` example;
/// repacking a whole model at load is bound by memory and page faults, README).
pub fn pack_with(level: super::SimdLevel, n: usize, rows: &[u8], out: &mut [u8]) -> bool {
    let Some(gb) = group_bytes(n) else {
        return false;
    };
    let row_bytes = n / QK * Q8_0_BYTES;
    if rows.len() != ROWS * row_bytes || out.len() != gb {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if super::effective(level, super::hardware_level()) >= super::SimdLevel::Avx2 {
        // SAFETY: `effective` gives `Avx2` or above only when the CPU has AVX2; the lengths
        // were checked above.
        unsafe { super::avx2_q8_0x8::pack(row_bytes, rows, out) };
        return true;
    }
    let _ = level;
    // row by row: each source row is read once, front to back
    for (j, row) in rows.chunks_exact(row_bytes).enumerate() {
        packed::scatter_row(Q8_0_BYTES, j, row, out);
    }
    true
}

/// The inverse of [`pack`]: the eight Q8_0 rows of a group (`out`: `8 · n / 32 · 34` bytes).
pub fn unpack(n: usize, group: &[u8], out: &mut [u8]) -> bool {
    let Some(gb) = group_bytes(n) else {
        return false;
    };
    let row_bytes = n / QK * Q8_0_BYTES;
    if group.len() != gb || out.len() != ROWS * row_bytes {
        return false;
    }
    for (j, row) in out.chunks_exact_mut(row_bytes).enumerate() {
        packed::gather_row(Q8_0_BYTES, j, group, row);
    }
    true
}

/// The prep of the table ([`super::packed::Format::prep`]): the kernels need nothing from an
/// activation row beforehand, so `out` is only cleared (and the kernels take the empty slice).
pub fn no_prep(_act: &[u8], out: &mut Vec<i32>) {
    out.clear();
}

/// Checks a group and one activation row (with its empty [`no_prep`]) for `n` weights.
fn lengths_ok(n: usize, group: &[u8], act: &[u8], prep: &[i32]) -> bool {
    group_bytes(n) == Some(group.len()) && act.len() == n / QK * Q8_0_BYTES && prep.is_empty()
}

packed::entry_points!(Q8_0x8);

/// This layout's parts of the shared entry points.
struct Q8_0x8;

impl packed::Layout for Q8_0x8 {
    fn lengths_ok(n: usize, group: &[u8], act: &[u8], prep: &[i32]) -> bool {
        lengths_ok(n, group, act, prep)
    }

    fn gemv_scalar(group: &[u8], act: &[u8], _prep: &[i32]) -> [f32; ROWS] {
        gemv_scalar(group, act)
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemv(group: &[u8], act: &[u8], _prep: &[i32]) -> [f32; ROWS] {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths checked.
        unsafe { super::avx2_q8_0x8::gemv(group, act) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemv2(a: &[u8], b: &[u8], act: &[u8], _prep: &[i32]) -> [[f32; ROWS]; 2] {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths of both groups checked.
        unsafe { super::avx2_q8_0x8::gemv2(a, b, act) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemm(group: &[u8], acts: &[&[u8]], _preps: &[&[i32]], out: &mut [f32]) {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths checked, at most
        // TILE_TOKENS rows.
        unsafe { super::avx2_q8_0x8::gemm(group, acts, out) }
    }
}

/// The scalar reference: for each row, the exact integer sum of each block, then `Σ sumi ·
/// (d_x · d_y)` in block order, exactly as [`super::scalar::q8_0_q8_0`] computes it on the
/// row, for any activation quants (−128 included).
fn gemv_scalar(group: &[u8], act: &[u8]) -> [f32; ROWS] {
    let mut sumf = [0f32; ROWS];
    for (col, by) in group
        .chunks_exact(GROUP_BLOCK_BYTES)
        .zip(act.chunks_exact(Q8_0_BYTES))
    {
        let q = &by[2..];
        let quants = &col[2 * ROWS..];
        for (j, f) in sumf.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for m in 0..8 {
                for t in 0..4 {
                    let w = quants[32 * m + 4 * j + t] as i8;
                    sumi += i32::from(w) * i32::from(q[4 * m + t] as i8);
                }
            }
            *f += sumi as f32 * (f16_at(col, 2 * j) * f16_at(by, 0));
        }
    }
    sumf
}

// The row kernels assume activations without a −128 quant, as
// `quantize_activations` writes them (as the packed kernels do).
// `vec_dot`'s SIMD kernels keep eight partial sums per row and add them at the end,
// which rounds otherwise; in cache they are twice as fast as this one row at a time, so the
// attention's q8_0 cache keeps them. Four rows at a time, this one streams from memory at
// the packed kernel's rate (README "Start-up").
packed::row_kernel!(
    Q8_0x8,
    QK,
    Q8_0_BYTES,
    Q8_0_BYTES,
    super::scalar::q8_0_q8_0,
    super::avx2_q8_0x8::rows_tile
);

#[cfg(test)]
mod tests {
    use super::super::tests::{check_pack_levels, check_rows_give, Rng};
    use super::*;
    use crate::kernels::{available_levels, scalar, SimdLevel};

    /// Eight random Q8_0 rows of `n` (quants anywhere in [-128, 127], scales in [-1, 1), some
    /// tiny or subnormal) and a random Q8_0 activation row with quants in [-127, 127].
    fn case(rng: &mut Rng, n: usize) -> (Vec<u8>, Vec<u8>) {
        let nb = n / QK;
        let mut rows = vec![0u8; ROWS * nb * Q8_0_BYTES];
        for blk in rows.chunks_exact_mut(Q8_0_BYTES) {
            for b in blk.iter_mut() {
                *b = rng.byte();
            }
            let d = match rng.byte() % 8 {
                0 => 1e-6,              // an f16 subnormal
                1 => f32::MIN_POSITIVE, // rounds to 0 in f16
                _ => rng.f(),
            };
            blk[..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        }
        let mut act = vec![0u8; nb * Q8_0_BYTES];
        for blk in act.chunks_exact_mut(Q8_0_BYTES) {
            for b in blk[2..].iter_mut() {
                *b = rng.int(-127, 127) as i8 as u8;
            }
            blk[..2].copy_from_slice(&half::f16::from_f32(rng.f() * 0.1).to_bits().to_le_bytes());
        }
        (rows, act)
    }

    /// Sets every quant of `rows` (Q8_0 blocks) and of `act` to one of `values`, in turn.
    fn fill_quants(buf: &mut [u8], values: &[i8], phase: usize) {
        for (i, blk) in buf.chunks_exact_mut(Q8_0_BYTES).enumerate() {
            for (k, b) in blk[2..].iter_mut().enumerate() {
                *b = values[(i + k + phase) % values.len()] as u8;
            }
        }
    }

    fn prep(act: &[u8]) -> Vec<i32> {
        let mut p = vec![1, 2, 3];
        no_prep(act, &mut p);
        assert!(p.is_empty());
        p
    }

    #[test]
    fn pack_then_unpack_is_the_identity() {
        let mut rng = Rng(7);
        for n in [32, 64, 4096] {
            let (rows, _) = case(&mut rng, n);
            // every level this CPU has packs the same bytes, and unpacking gives the rows
            let reference = check_pack_levels(pack_with, n, &rows, group_bytes(n).unwrap());
            let mut back = vec![0u8; rows.len()];
            assert!(unpack(n, &reference, &mut back));
            assert_eq!(back, rows, "n = {n}");
        }
        // wrong lengths are refused, nothing written
        let mut g = vec![0xAAu8; group_bytes(64).unwrap()];
        assert!(!pack(64, &[0u8; 8 * 34], &mut g));
        assert!(!pack(48, &[0u8; 8 * 34], &mut g));
        assert!(g.iter().all(|&b| b == 0xAA));
        let mut back = vec![0xAAu8; 8 * 34];
        assert!(!unpack(64, &g, &mut back));
        assert!(back.iter().all(|&b| b == 0xAA));
    }

    /// Checks gemv at each of `levels` against the per-row scalar reference (bit for bit:
    /// every kernel sums exactly and applies the scales in the reference's order) and gemm
    /// against gemv for several token counts.
    fn check(levels: &[SimdLevel], n: usize, rows: &[u8], act: &[u8], what: &str) {
        let row_bytes = n / QK * Q8_0_BYTES;
        let mut g = vec![0u8; group_bytes(n).unwrap()];
        assert!(pack(n, rows, &mut g));
        let pairs = prep(act);
        let want: Vec<f32> = rows
            .chunks_exact(row_bytes)
            .map(|r| scalar::q8_0_q8_0(r, act))
            .collect();
        for &level in levels {
            let mut got = [0f32; ROWS];
            gemv_with(level, n, &g, act, &pairs, &mut got);
            for (j, (&a, &b)) in got.iter().zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{what} {level:?} n {n} row {j}");
            }
            // the same rows in the file's layout: the same bits
            check_rows_give(rows_gemm_with, level, n, rows, act, &want[..], what);
            // gemm over 1..=9 copies of the activation row: every column equals gemv
            for nt in [1, 2, 3, 4, 5, 8, 9] {
                let acts: Vec<&[u8]> = vec![act; nt];
                let ps: Vec<&[i32]> = vec![&pairs; nt];
                let mut out = vec![f32::NAN; ROWS * nt];
                gemm_with(level, n, &g, &acts, &ps, &mut out);
                for j in 0..ROWS {
                    for t in 0..nt {
                        assert_eq!(
                            out[j * nt + t].to_bits(),
                            got[j].to_bits(),
                            "{what} {level:?} n {n} nt {nt} row {j} token {t}"
                        );
                    }
                }
            }
        }
    }

    /// The scalar packed kernel and every SIMD level give exactly the per-row scalar
    /// reference; gemm agrees with gemv for any token count.
    #[test]
    fn packed_kernels_match_the_row_reference_at_every_level() {
        let mut rng = Rng(11);
        for n in [32, 256, 4096, 5632] {
            let (rows, act) = case(&mut rng, n);
            check(&available_levels(), n, &rows, &act, "random");
        }
    }

    /// Quants at the ends of the range, where a 16-bit saturation or a sign error would
    /// show: weights all −128, 127, −127 or mixed, against activations all 127, −127 or mixed,
    /// at every level; activations of −128 (outside the SIMD kernel's contract, never written
    /// by [`super::super::quantize_activations`]) at the scalar level.
    #[test]
    fn extreme_quants_are_exact() {
        let mut rng = Rng(13);
        let n = 256;
        let weights: [&[i8]; 6] = [
            &[-128],
            &[127],
            &[-127],
            &[-128, 127],
            &[127, -128, -127, 127],
            &[-128, -128, 127, 127, -127],
        ];
        let acts: [&[i8]; 4] = [&[127], &[-127], &[-127, 127], &[127, 127, -127]];
        let all = available_levels();
        for (wi, ws) in weights.iter().enumerate() {
            for (ai, qs) in acts.iter().chain(&weights).enumerate() {
                let (mut rows, mut act) = case(&mut rng, n);
                fill_quants(&mut rows, ws, wi);
                fill_quants(&mut act, qs, ai);
                let levels = if qs.contains(&-128) {
                    &[SimdLevel::Scalar][..]
                } else {
                    &all[..]
                };
                check(
                    levels,
                    n,
                    &rows,
                    &act,
                    &format!("weights {ws:?} acts {qs:?}"),
                );
            }
        }
        // the exact values of the largest products: 32 · (−128) · (∓127) per block
        let (mut rows, mut act) = case(&mut rng, 32);
        fill_quants(&mut rows, &[-128], 0);
        let one = half::f16::from_f32(1.0).to_bits().to_le_bytes();
        for blk in rows.chunks_exact_mut(Q8_0_BYTES).chain([&mut act[..]]) {
            blk[..2].copy_from_slice(&one);
        }
        let mut g = vec![0u8; group_bytes(32).unwrap()];
        assert!(pack(32, &rows, &mut g));
        for q in [-127i8, 127] {
            fill_quants(&mut act, &[q], 0);
            for level in available_levels() {
                let mut got = [0f32; ROWS];
                gemv_with(level, 32, &g, &act, &prep(&act), &mut got);
                let want = 32.0 * -128.0 * f32::from(q);
                assert_eq!(got, [want; ROWS], "{level:?} {q}");
            }
        }
    }

    /// Eight random rows of `n`, the group they pack into, and six random activation rows with
    /// their (empty) preps.
    #[allow(clippy::type_complexity)]
    fn group_and_tokens(
        rng: &mut Rng,
        n: usize,
    ) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>, Vec<Vec<i32>>) {
        let (rows, _) = case(rng, n);
        let mut g = vec![0u8; group_bytes(n).unwrap()];
        assert!(pack(n, &rows, &mut g));
        let acts: Vec<Vec<u8>> = (0..6).map(|_| case(rng, n).1).collect();
        let pairs = acts.iter().map(|a| prep(a)).collect();
        (rows, g, acts, pairs)
    }

    #[test]
    fn gemm_tokens_are_independent() {
        let n = 512;
        let (_, g, acts, pairs) = group_and_tokens(&mut Rng(5), n);
        let ar: Vec<&[u8]> = acts.iter().map(|a| &a[..]).collect();
        let pr: Vec<&[i32]> = pairs.iter().map(|s| &s[..]).collect();
        for level in available_levels() {
            let mut out = vec![0f32; ROWS * 6];
            gemm_with(level, n, &g, &ar, &pr, &mut out);
            for t in 0..6 {
                let mut one = [0f32; ROWS];
                gemv_with(level, n, &g, &acts[t], &pairs[t], &mut one);
                for j in 0..ROWS {
                    assert_eq!(
                        out[j * 6 + t].to_bits(),
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
        let mut rng = Rng(17);
        for n in [64, 4096] {
            let (rows, _, acts, _) = group_and_tokens(&mut rng, n);
            super::super::tests::check_rows_gemm(
                crate::GgmlType::Q8_0,
                n,
                &rows,
                &acts,
                gemm_with,
                rows_gemm_with,
            );
        }
    }

    #[test]
    fn wrong_lengths_give_zeros() {
        let n = 64;
        let g = vec![1u8; group_bytes(n).unwrap()];
        let act = vec![1u8; 2 * Q8_0_BYTES];
        let p = prep(&act);
        let mut out = [f32::NAN; ROWS];
        gemv(n, &g, &act, &[0], &mut out);
        assert_eq!(out, [0.0; ROWS]);
        gemv(n, &g[1..], &act, &p, &mut out);
        assert_eq!(out, [0.0; ROWS]);
        gemv(n, &g, &act[1..], &p, &mut out);
        assert_eq!(out, [0.0; ROWS]);
        gemv(48, &g, &act, &p, &mut out);
        assert_eq!(out, [0.0; ROWS]);
        let mut o = vec![f32::NAN; ROWS * 2];
        gemm(n, &g, &[&act, &act[1..]], &[&p, &p], &mut o);
        assert!(o.iter().all(|&v| v == 0.0));
        let mut o = vec![f32::NAN; ROWS];
        gemm(n, &g, &[&act, &act], &[&p, &p], &mut o);
        assert!(o.iter().all(|&v| v == 0.0));
        let mut o = vec![f32::NAN; ROWS * 2];
        gemm(n, &g, &[&act, &act], &[&p], &mut o);
        assert!(o.iter().all(|&v| v == 0.0));
        let mut o = vec![f32::NAN; ROWS * 2];
        gemm(n, &g, &[&act, &act], &[&p, &[0]], &mut o);
        assert!(o.iter().all(|&v| v == 0.0));
        // rows in the file's layout
        let row = vec![1u8; 2 * Q8_0_BYTES];
        super::super::tests::check_rows_wrong_lengths(n, &row, &act, rows_gemm_with);
        let mut o = [f32::NAN; 1];
        rows_gemm(n, &[&row], &[&act], &mut o);
        assert_ne!(o, [0.0]);
        // and the right lengths give something else
        gemv(n, &g, &act, &p, &mut out);
        assert_ne!(out, [0.0; ROWS]);
    }
}
