//! Q4_0 weights repacked eight rows at a time ("Q4_0×8"), for matrix × vector and matrix ×
//! matrix products that read each activation block once for eight rows.
//!
//! A Q4_0 row is a run of 18-byte blocks: an f16 scale `d`, then 16 bytes whose low nibbles
//! are the quants 0..16 and whose high nibbles are the quants 16..32 (`w = d · (u - 8)`,
//! `u` the unsigned nibble). A packed *group* holds eight rows; for each block column `b` it
//! stores [`GROUP_BLOCK_BYTES`] = 144 bytes:
//!
//! * bytes 0..16: the eight rows' f16 scales of block `b`, row 0 first;
//! * bytes 16..144: `P[32·m + 4·j + t] = row j's quant byte 4·m + t`, for m, t in 0..4 and
//!   row j in 0..8, i.e. each 32-byte quarter holds four consecutive quant bytes of each of
//!   the eight rows.
//!
//! So one 32-byte load, masked, gives 4 low-nibble quants of every row in its own 32-bit lane
//! (quants `4m..4m+4`) and, shifted, the 4 high-nibble quants (`16+4m..`); the activation
//! bytes they pair with are the same for all eight lanes, a 4-byte broadcast. The unsigned
//! nibbles multiply the signed Q8_0 activations directly (`maddubs`), and the `-8` offset is
//! taken off once per block as `8 · Σ q` (the activation block's sum, [`block_sums`]), so no
//! sign trick is needed and one scale conversion serves eight rows. This is the idea of
//! current llama.cpp's repacked Q4_0 (its own layout and code differ).
//!
//! Every entry checks its lengths and writes zeros (or returns `false`) when one is wrong; the
//! scalar kernels here are the reference the SIMD ones are tested against, and they compute
//! exactly [`super::scalar::q4_0_q8_0`] of each unpacked row.

use super::scalar::{f16_at, Q4_0_BYTES, Q8_0_BYTES};
use super::{packed, SimdLevel};

/// Rows in one packed group.
pub const ROWS: usize = 8;
/// Bytes of one block column of a group: eight f16 scales and eight rows × 16 quant bytes.
pub const GROUP_BLOCK_BYTES: usize = ROWS * Q4_0_BYTES;
/// Most activation rows one [`gemm`] kernel call takes at once.
pub const TILE_TOKENS: usize = 4;

/// Elements per Q4_0 / Q8_0 block.
const QK: usize = 32;

/// Bytes of one packed group of eight rows of `n` weights (`None`: `n` is not whole blocks).
pub fn group_bytes(n: usize) -> Option<usize> {
    n.is_multiple_of(QK).then_some(n / QK * GROUP_BLOCK_BYTES)
}

/// Packs eight Q4_0 rows of `n` weights (`rows`: the rows one after another, `8 · n / 32 ·
/// 18` bytes) into one group (`out`: [`group_bytes`]`(n)` bytes). `false` (and `out` left
/// untouched) when a length is wrong.
pub fn pack(n: usize, rows: &[u8], out: &mut [u8]) -> bool {
    pack_with(super::simd_level(), n, rows, out)
}

/// [`pack`] by the best code `<= level` this CPU runs: AVX2 transposes each block column's
/// 4 × 8 words of quants in registers ([`super::avx2_q4_0x8::pack`]), the same bytes as the
/// scalar loop (`pack_speed` example, README "Start-up").
pub fn pack_with(level: SimdLevel, n: usize, rows: &[u8], out: &mut [u8]) -> bool {
    let Some(gb) = group_bytes(n) else {
        return false;
    };
    let row_bytes = n / QK * Q4_0_BYTES;
    if rows.len() != ROWS * row_bytes || out.len() != gb {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if super::effective(level, super::hardware_level()) >= SimdLevel::Avx2 {
        // SAFETY: `effective` gives `Avx2` or above only when the CPU has AVX2; the lengths
        // were checked above.
        unsafe { super::avx2_q4_0x8::pack(row_bytes, rows, out) };
        return true;
    }
    let _ = level;
    // row by row: each source row is read once, front to back
    rows.chunks_exact(row_bytes)
        .enumerate()
        .all(|(j, row)| pack_row(n, j, row, out))
}

/// Writes one Q4_0 row of `n` weights (`row`: `n / 32 · 18` bytes) as row `j` (< 8) of a
/// group (`group`: [`group_bytes`]`(n)` bytes), leaving its other rows as they are: a group
/// filled one row at a time (the keys of a KV cache, one position per token). `false` (and
/// `group` left untouched) when a length or `j` is wrong.
pub fn pack_row(n: usize, j: usize, row: &[u8], group: &mut [u8]) -> bool {
    if group_bytes(n) != Some(group.len()) || row.len() != n / QK * Q4_0_BYTES || j >= ROWS {
        return false;
    }
    packed::scatter_row(Q4_0_BYTES, j, row, group);
    true
}

/// The inverse of [`pack`]: the eight Q4_0 rows of a group (`out`: `8 · n / 32 · 18` bytes).
pub fn unpack(n: usize, group: &[u8], out: &mut [u8]) -> bool {
    let row_bytes = n / QK * Q4_0_BYTES;
    if group_bytes(n) != Some(group.len()) || out.len() != ROWS * row_bytes {
        return false;
    }
    out.chunks_exact_mut(row_bytes)
        .enumerate()
        .all(|(j, row)| unpack_row(n, j, group, row))
}

/// The inverse of [`pack_row`]: row `j` (< 8) of a group as a Q4_0 row (`out`: `n / 32 · 18`
/// bytes).
pub fn unpack_row(n: usize, j: usize, group: &[u8], out: &mut [u8]) -> bool {
    if group_bytes(n) != Some(group.len()) || out.len() != n / QK * Q4_0_BYTES || j >= ROWS {
        return false;
    }
    packed::gather_row(Q4_0_BYTES, j, group, out);
    true
}

/// The sum of the 32 quants of each block of a Q8_0 activation row, into `out` (one per
/// block; `out` cleared first, left empty when `act` is not whole blocks).
pub fn block_sums(act: &[u8], out: &mut Vec<i32>) {
    out.clear();
    if !act.len().is_multiple_of(Q8_0_BYTES) {
        return;
    }
    out.extend(
        act.chunks_exact(Q8_0_BYTES)
            .map(|b| b[2..].iter().map(|&q| i32::from(q as i8)).sum::<i32>()),
    );
}

/// Checks a group and one activation row (with its block sums) for `n` weights.
fn lengths_ok(n: usize, group: &[u8], act: &[u8], sums: &[i32]) -> bool {
    group_bytes(n) == Some(group.len()) && act.len() == n / QK * Q8_0_BYTES && sums.len() == n / QK
}

packed::entry_points!(Q4_0x8);

/// `out[8 · g + j]` = row `j` of group `g` of `groups` (consecutive groups of `n` weights) ·
/// the activation row `act` (block sums `sums`), for every group, with the best kernel `<=
/// level` this CPU runs: [`gemv_with`] over a run of groups with one check and one dispatch
/// (the attention scores eight cached keys to a group, four blocks each at head size 128,
/// where the per-call cost showed). Zeros where a length is wrong.
pub fn gemv_groups_with(
    level: SimdLevel,
    n: usize,
    groups: &[u8],
    act: &[u8],
    sums: &[i32],
    out: &mut [f32],
) {
    let Some(gb) = group_bytes(n).filter(|&gb| {
        gb > 0
            && groups.len().is_multiple_of(gb)
            && out.len() == groups.len() / gb * ROWS
            && act.len() == n / QK * Q8_0_BYTES
            && sums.len() == n / QK
    }) else {
        out.fill(0.0);
        return;
    };
    #[cfg(target_arch = "x86_64")]
    if super::effective(level, super::hardware_level()) >= SimdLevel::Avx2 {
        // SAFETY: `effective` returns `Avx2` or above only when the CPU has AVX2, FMA and
        // F16C; the lengths were checked above.
        unsafe { super::avx2_q4_0x8::gemv_groups(groups, gb, act, sums, out) };
        return;
    }
    let _ = level;
    for (g, o) in groups.chunks_exact(gb).zip(out.chunks_exact_mut(ROWS)) {
        o.copy_from_slice(&gemv_scalar(g, act, sums));
    }
}

/// `gemm_with` of two groups `a` and `b` of `n` weights with the same two activation rows, in
/// one pass over both (two streams from memory at once: the attention's weighted sum over
/// q4_0 values, whose groups of eight dimensions lie apart): `out_a[2j + t]` = row `j` of `a`
/// · `acts[t]`, `out_b` likewise, the bits of `gemm_with` on each group. Zeros where a length
/// is wrong.
pub fn gemm2x2_with(
    level: SimdLevel,
    n: usize,
    (a, b): (&[u8], &[u8]),
    acts: [&[u8]; 2],
    sums: [&[i32]; 2],
    out_a: &mut [f32; 2 * ROWS],
    out_b: &mut [f32; 2 * ROWS],
) {
    if !(0..2).all(|t| lengths_ok(n, a, acts[t], sums[t]) && lengths_ok(n, b, acts[t], sums[t])) {
        out_a.fill(0.0);
        out_b.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::effective(level, super::hardware_level()) >= SimdLevel::Avx2 {
        // SAFETY: `effective` returns `Avx2` or above only when the CPU has AVX2, FMA and
        // F16C; the lengths of both groups and both rows were checked above.
        unsafe { super::avx2_q4_0x8::gemm2x2(a, b, acts, sums, out_a, out_b) };
        return;
    }
    gemm_with(level, n, a, &acts, &sums, out_a);
    gemm_with(level, n, b, &acts, &sums, out_b);
}

/// This layout's parts of the shared entry points.
struct Q4_0x8;

impl packed::Layout for Q4_0x8 {
    fn lengths_ok(n: usize, group: &[u8], act: &[u8], prep: &[i32]) -> bool {
        lengths_ok(n, group, act, prep)
    }

    fn gemv_scalar(group: &[u8], act: &[u8], prep: &[i32]) -> [f32; ROWS] {
        gemv_scalar(group, act, prep)
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemv(group: &[u8], act: &[u8], prep: &[i32]) -> [f32; ROWS] {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths checked.
        unsafe { super::avx2_q4_0x8::gemv(group, act, prep) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemv2(a: &[u8], b: &[u8], act: &[u8], prep: &[i32]) -> [[f32; ROWS]; 2] {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths of both groups checked.
        unsafe { super::avx2_q4_0x8::gemv2(a, b, act, prep) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemm(group: &[u8], acts: &[&[u8]], preps: &[&[i32]], out: &mut [f32]) {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths checked, at most
        // TILE_TOKENS rows.
        unsafe { super::avx2_q4_0x8::gemm(group, acts, preps, out) }
    }
}

/// The scalar reference: for each row, the integer sum of each block, then `Σ sumi · d_x ·
/// d_y` in block order, exactly as [`super::scalar::q4_0_q8_0`] computes it on the row.
fn gemv_scalar(group: &[u8], act: &[u8], sums: &[i32]) -> [f32; ROWS] {
    let mut sumf = [0f32; ROWS];
    for ((col, by), &s) in group
        .chunks_exact(GROUP_BLOCK_BYTES)
        .zip(act.chunks_exact(Q8_0_BYTES))
        .zip(sums)
    {
        let q = &by[2..];
        let quants = &col[2 * ROWS..];
        for (j, f) in sumf.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for m in 0..4 {
                for t in 0..4 {
                    let u = quants[32 * m + 4 * j + t];
                    sumi += i32::from(u & 0x0f) * i32::from(q[4 * m + t] as i8)
                        + i32::from(u >> 4) * i32::from(q[16 + 4 * m + t] as i8);
                }
            }
            let sumi = sumi - 8 * s;
            *f += sumi as f32 * f16_at(col, 2 * j) * f16_at(by, 0);
        }
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_pack_levels, Rng};
    use super::*;
    use crate::kernels::{available_levels, scalar, SimdLevel};

    /// Eight random Q4_0 rows of `n` (scales in [-1, 1), some subnormal) and a random Q8_0
    /// activation row with quants in [-127, 127] (and -128 where `extreme`).
    fn case(rng: &mut Rng, n: usize, extreme: bool) -> (Vec<u8>, Vec<u8>) {
        let nb = n / QK;
        let mut rows = vec![0u8; ROWS * nb * Q4_0_BYTES];
        for blk in rows.chunks_exact_mut(Q4_0_BYTES) {
            for b in blk.iter_mut() {
                *b = rng.byte();
            }
            let d = if rng.byte().is_multiple_of(8) {
                1e-6
            } else {
                rng.f()
            };
            blk[..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        }
        let mut act = vec![0u8; nb * Q8_0_BYTES];
        for blk in act.chunks_exact_mut(Q8_0_BYTES) {
            for b in blk[2..].iter_mut() {
                let v = if extreme { -128 } else { rng.int(-127, 127) };
                *b = v as i8 as u8;
            }
            blk[..2].copy_from_slice(&half::f16::from_f32(rng.f() * 0.1).to_bits().to_le_bytes());
        }
        (rows, act)
    }

    #[test]
    fn pack_then_unpack_is_the_identity() {
        let mut rng = Rng(7);
        for n in [32, 64, 4096] {
            let (rows, _) = case(&mut rng, n, false);
            // every level this CPU has packs the same bytes, and unpacking gives the rows
            let g = check_pack_levels(pack_with, n, &rows, group_bytes(n).unwrap());
            let mut back = vec![0u8; rows.len()];
            assert!(unpack(n, &g, &mut back));
            assert_eq!(back, rows, "n = {n}");
        }
        // wrong lengths are refused at every level, nothing written
        let mut g = vec![0xAAu8; group_bytes(64).unwrap()];
        for level in available_levels() {
            assert!(!pack_with(level, 64, &[0u8; 8 * 18], &mut g));
            assert!(!pack_with(level, 48, &[0u8; 8 * 18], &mut g));
            assert!(!pack_with(level, 64, &[0u8; 16 * 18], &mut g[1..]));
            assert!(g.iter().all(|&b| b == 0xAA), "{level:?}");
        }
    }

    /// A group written one row at a time, in any order, is the group [`pack`] makes; each
    /// row reads back by [`unpack_row`]; a row index of 8 or a wrong length is refused.
    #[test]
    fn rows_pack_and_unpack_one_at_a_time() {
        let mut rng = Rng(9);
        for n in [32, 128, 4096] {
            let (rows, _) = case(&mut rng, n, false);
            let row_bytes = n / QK * Q4_0_BYTES;
            let mut whole = vec![0u8; group_bytes(n).unwrap()];
            assert!(pack(n, &rows, &mut whole));
            let mut g = vec![0x55u8; whole.len()];
            for j in [5, 0, 7, 2, 1, 6, 3, 4] {
                assert!(pack_row(n, j, &rows[j * row_bytes..][..row_bytes], &mut g));
            }
            assert_eq!(g, whole, "n = {n}");
            for j in 0..ROWS {
                let mut back = vec![0u8; row_bytes];
                assert!(unpack_row(n, j, &g, &mut back));
                assert_eq!(back, rows[j * row_bytes..][..row_bytes], "n = {n}, row {j}");
            }
            let before = g.clone();
            assert!(!pack_row(n, ROWS, &rows[..row_bytes], &mut g));
            assert!(!pack_row(n, 0, &rows[..row_bytes - 1], &mut g));
            assert!(!pack_row(n + 32, 0, &rows[..row_bytes], &mut g));
            assert_eq!(g, before, "refused writes leave the group as it was");
            let mut back = vec![0u8; row_bytes];
            assert!(!unpack_row(n, ROWS, &g, &mut back));
        }
    }

    /// The scalar packed kernel gives exactly the per-row scalar reference; every SIMD level
    /// agrees with it to float rounding; gemm agrees with gemv for any token count.
    #[test]
    fn packed_kernels_match_the_row_reference_at_every_level() {
        let mut rng = Rng(11);
        for (n, extreme) in [
            (32, false),
            (256, false),
            (4096, false),
            (5632, false),
            (256, true),
        ] {
            let (rows, act) = case(&mut rng, n, extreme);
            let row_bytes = n / QK * Q4_0_BYTES;
            let mut g = vec![0u8; group_bytes(n).unwrap()];
            assert!(pack(n, &rows, &mut g));
            let mut sums = Vec::new();
            block_sums(&act, &mut sums);
            assert_eq!(sums.len(), n / QK);
            let want: Vec<f32> = rows
                .chunks_exact(row_bytes)
                .map(|r| scalar::q4_0_q8_0(r, &act))
                .collect();
            let scale: f32 = rows
                .chunks_exact(row_bytes)
                .map(|r| {
                    let mut w = vec![0f32; n];
                    crate::blocks::dequantize_row(crate::GgmlType::Q4_0, r, &mut w).unwrap();
                    w.iter().map(|v| v.abs()).sum::<f32>()
                })
                .fold(0.0, f32::max)
                * 12.8;
            for level in available_levels() {
                let mut got = [0f32; ROWS];
                gemv_with(level, n, &g, &act, &sums, &mut got);
                for (j, (&a, &b)) in got.iter().zip(&want).enumerate() {
                    if level == SimdLevel::Scalar {
                        assert_eq!(a.to_bits(), b.to_bits(), "{level:?} n {n} row {j}");
                    } else {
                        let tol = 1e-5 * scale.max(1.0);
                        assert!((a - b).abs() <= tol, "{level:?} n {n} row {j}: {a} vs {b}");
                    }
                }
                // gemm over 1..=9 copies of the activation row: every column equals gemv
                for nt in [1, 3, 4, 9] {
                    let acts: Vec<&[u8]> = vec![&act; nt];
                    let ss: Vec<&[i32]> = vec![&sums; nt];
                    let mut out = vec![f32::NAN; ROWS * nt];
                    gemm_with(level, n, &g, &acts, &ss, &mut out);
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
    fn gemv_groups_equals_gemv_of_each_group() {
        let mut rng = Rng(11);
        for n in [32, 128, 4096] {
            let gb = group_bytes(n).unwrap();
            let (_, act) = case(&mut rng, n, false);
            let mut sums = Vec::new();
            block_sums(&act, &mut sums);
            let mut groups = vec![0u8; 5 * gb];
            for g in groups.chunks_exact_mut(gb) {
                assert!(pack(n, &case(&mut rng, n, false).0, g));
            }
            for level in available_levels() {
                for k in [0, 1, 2, 4, 5] {
                    let mut got = vec![f32::NAN; k * ROWS];
                    gemv_groups_with(level, n, &groups[..k * gb], &act, &sums, &mut got);
                    for (g, o) in groups[..k * gb]
                        .chunks_exact(gb)
                        .zip(got.chunks_exact(ROWS))
                    {
                        let mut one = [0f32; ROWS];
                        gemv_with(level, n, g, &act, &sums, &mut one);
                        let (a, b): (Vec<u32>, Vec<u32>) = o
                            .iter()
                            .zip(&one)
                            .map(|(x, y)| (x.to_bits(), y.to_bits()))
                            .unzip();
                        assert_eq!(a, b, "{level:?} n {n} {k} groups");
                    }
                }
                // a wrong length anywhere: zeros, no panic
                let mut out = vec![f32::NAN; 2 * ROWS];
                gemv_groups_with(level, n, &groups[..2 * gb - 1], &act, &sums, &mut out);
                assert!(out.iter().all(|&x| x == 0.0), "{level:?} short groups");
                let mut out = vec![f32::NAN; 3 * ROWS];
                gemv_groups_with(level, n, &groups[..2 * gb], &act, &sums, &mut out);
                assert!(out.iter().all(|&x| x == 0.0), "{level:?} long out");
                let mut out = vec![f32::NAN; 2 * ROWS];
                gemv_groups_with(level, n, &groups[..2 * gb], &act[1..], &sums, &mut out);
                assert!(out.iter().all(|&x| x == 0.0), "{level:?} short activations");
            }
        }
    }

    /// Two groups with two activation rows in one pass: `gemm_with`'s bits on each group, at
    /// every level, also with quants at their extremes; zeros for a wrong length.
    #[test]
    fn gemm2x2_equals_gemm_of_each_group() {
        let mut rng = Rng(23);
        for (n, extreme) in [(32, false), (128, true), (4096, false), (4096, true)] {
            let gb = group_bytes(n).unwrap();
            let mut groups = vec![0u8; 2 * gb];
            for g in groups.chunks_exact_mut(gb) {
                assert!(pack(n, &case(&mut rng, n, extreme).0, g));
            }
            let (a, b) = groups.split_at(gb);
            let acts = [case(&mut rng, n, extreme).1, case(&mut rng, n, extreme).1];
            let sums = sums_of(&acts);
            let ar = [&acts[0][..], &acts[1][..]];
            let sr = [&sums[0][..], &sums[1][..]];
            for level in available_levels() {
                let (mut oa, mut ob) = ([f32::NAN; 2 * ROWS], [f32::NAN; 2 * ROWS]);
                gemm2x2_with(level, n, (a, b), ar, sr, &mut oa, &mut ob);
                for (group, got) in [(a, oa), (b, ob)] {
                    let mut want = [0f32; 2 * ROWS];
                    gemm_with(level, n, group, &ar, &sr, &mut want);
                    assert_eq!(
                        got.map(f32::to_bits),
                        want.map(f32::to_bits),
                        "{level:?} n {n}"
                    );
                }
                let (mut oa, mut ob) = ([f32::NAN; 2 * ROWS], [f32::NAN; 2 * ROWS]);
                gemm2x2_with(level, n, (a, &b[1..]), ar, sr, &mut oa, &mut ob);
                assert!(oa.iter().chain(&ob).all(|&x| x == 0.0), "{level:?} short b");
                let short = [&acts[0][..], &acts[1][..acts[1].len() - 1]];
                gemm2x2_with(level, n, (a, b), short, sr, &mut oa, &mut ob);
                assert!(
                    oa.iter().chain(&ob).all(|&x| x == 0.0),
                    "{level:?} short row"
                );
            }
        }
    }

    /// [`block_sums`] of each activation row.
    fn sums_of(acts: &[Vec<u8>]) -> Vec<Vec<i32>> {
        acts.iter()
            .map(|a| {
                let mut s = Vec::new();
                block_sums(a, &mut s);
                s
            })
            .collect()
    }

    #[test]
    fn gemm_tokens_are_independent() {
        let mut rng = Rng(5);
        let n = 512;
        let (rows, _) = case(&mut rng, n, false);
        let mut g = vec![0u8; group_bytes(n).unwrap()];
        assert!(pack(n, &rows, &mut g));
        let acts: Vec<Vec<u8>> = (0..6).map(|_| case(&mut rng, n, false).1).collect();
        let sums = sums_of(&acts);
        let ar: Vec<&[u8]> = acts.iter().map(|a| &a[..]).collect();
        let sr: Vec<&[i32]> = sums.iter().map(|s| &s[..]).collect();
        for level in available_levels() {
            let mut out = vec![0f32; ROWS * 6];
            gemm_with(level, n, &g, &ar, &sr, &mut out);
            for t in 0..6 {
                let mut one = [0f32; ROWS];
                gemv_with(level, n, &g, &acts[t], &sums[t], &mut one);
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

    #[test]
    fn wrong_lengths_give_zeros() {
        let n = 64;
        let g = vec![1u8; group_bytes(n).unwrap()];
        let act = vec![1u8; 2 * Q8_0_BYTES];
        let mut out = [f32::NAN; ROWS];
        gemv(n, &g, &act, &[0], &mut out);
        assert_eq!(out, [0.0; ROWS]);
        gemv(n, &g[1..], &act, &[0, 0], &mut out);
        assert_eq!(out, [0.0; ROWS]);
        gemv(n, &g, &act[1..], &[0, 0], &mut out);
        assert_eq!(out, [0.0; ROWS]);
        gemv(48, &g, &act, &[0, 0], &mut out);
        assert_eq!(out, [0.0; ROWS]);
        let mut o = vec![f32::NAN; ROWS * 2];
        gemm(n, &g, &[&act, &act[1..]], &[&[0, 0], &[0, 0]], &mut o);
        assert!(o.iter().all(|&v| v == 0.0));
        let mut o = vec![f32::NAN; ROWS];
        gemm(n, &g, &[&act, &act], &[&[0, 0], &[0, 0]], &mut o);
        assert!(o.iter().all(|&v| v == 0.0));
        let mut s = vec![9];
        block_sums(&act[1..], &mut s);
        assert!(s.is_empty());
    }
}
