//! Q6_K weights repacked eight rows at a time ("Q6_K×8"), the Q6_K counterpart of
//! [`super::q4_kx8`]: each Q8_K activation quad is broadcast once for eight rows, the eight
//! rows' sub-block scales are applied with one multiply per sub-block and 16-bit sum, and the
//! results stay in the lanes of one register.
//!
//! A Q6_K row is a run of 210-byte super-blocks of 256 weights: 128 bytes `ql` (low 4 bits of
//! the quants), 64 bytes `qh` (top 2 bits), 16 signed 8-bit scales of sub-blocks of 16, f16
//! `d` (`w = d · sc · (u − 32)`, `u` the unsigned 6-bit quant; see [`crate::blocks::q6_k`]
//! for where each quant's bits lie). A packed *group* of eight rows stores, per super-block
//! column, [`GROUP_BLOCK_BYTES`] = 1680 bytes, exactly the eight rows' 8 · 210 (the quant bits
//! are only moved, three bytes for four quants as in the rows):
//!
//! * 0..16 the rows' `d` (f16, row 0 first);
//! * 16..144 scales in pairs: byte `16 + 16·p + 2·j + k` = sub-block `2p + k`'s scale of row
//!   `j` (p in 0..8, k in 0..2);
//! * 144..1680 quants, 96 bytes per sub-block `s` (0..16) in three 32-byte planes: byte
//!   `144 + 96·s + 32·v + 4·j + t` (v in 0..3, t in 0..4) holds, with `u_k` row `j`'s quant
//!   of element `16·s + 4·k + t`,
//!   - v = 0: `u_0 | (u_3 & 3) << 6`,
//!   - v = 1: `u_1 | (u_3 >> 2 & 3) << 6`,
//!   - v = 2: `u_2 | (u_3 >> 4) << 6`.
//!
//! So the three loads of a sub-block give its 16 quants of every row, four per 32-bit lane
//! (row `j` in lane `j`): three of them by one mask each, the fourth from the three top bit
//! pairs (three masks, three shifts, two ors). That is 11 bit operations per 16 × 8 quants,
//! against 17 for the rows' own `ql`/`qh` planes repacked as they are. Storing the quants as
//! whole bytes would need none, but makes a group 2192 bytes (1.30× the rows), and decode
//! reads weights from memory at a bandwidth ([`super::packed`] measured ~9 GB/s per thread
//! for every layout here) the per-row kernel already reaches, so 30 % more bytes would make
//! decode 30 % slower; this layout costs no extra memory.
//!
//! The `−32` offset is taken off per super-block as `32 · Σ_s sc_s · bsum_s`, with the Q8_K
//! activation's sums over each 16-quant sub-block (its `bsums`): [`bsum_pairs`] copies them
//! two sub-blocks to a 32-bit word once per activation row.
//!
//! Every entry checks its lengths and writes zeros (or returns `false`) when one is wrong; the
//! scalar kernels here are the reference the SIMD ones are tested against, and they compute
//! bit for bit [`super::scalar::q6_k_q8_k`] of each unpacked row (the integer sums are the
//! same integers, the float operations the same in the same order).

use super::packed;
use super::scalar::{f16_at, f32_at, Q6_K_BYTES, Q8_K_BYTES};
use crate::types::QK_K;

/// Rows in one packed group.
pub const ROWS: usize = 8;
/// Bytes of one super-block column of a group: eight f16 `d`, 8 · 16 scales, 16 sub-blocks ×
/// three 32-byte quant planes.
pub const GROUP_BLOCK_BYTES: usize = 2 * ROWS + ROWS * 16 + 16 * 96;
/// Most activation rows one [`gemm`] kernel call takes at once.
pub const TILE_TOKENS: usize = 4;

/// Offset of the quant planes in a column.
const QUANTS: usize = 2 * ROWS + ROWS * 16;

const _: () = assert!(GROUP_BLOCK_BYTES == ROWS * Q6_K_BYTES);

/// Bytes of one packed group of eight rows of `n` weights (`None`: `n` is not whole
/// super-blocks).
pub fn group_bytes(n: usize) -> Option<usize> {
    n.is_multiple_of(QK_K)
        .then_some(n / QK_K * GROUP_BLOCK_BYTES)
}

/// The 256 unsigned 6-bit quants of one Q6_K block, in element order.
fn quants_of(blk: &[u8]) -> [u8; QK_K] {
    const LO: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    const TWO: u64 = 0x0303_0303_0303_0303;
    let word = |at: usize| u64::from_le_bytes(std::array::from_fn(|i| blk[at + i]));
    let mut u = [0u8; QK_K];
    // eight quants at a time in a u64: the nibbles and bit pairs never cross a byte
    for half in 0..2 {
        for l in (0..32).step_by(8) {
            let (a, c, h) = (
                word(64 * half + l),
                word(64 * half + 32 + l),
                word(128 + 32 * half + l),
            );
            let at = 128 * half + l;
            let quads = [
                a & LO | (h & TWO) << 4,
                c & LO | (h >> 2 & TWO) << 4,
                a >> 4 & LO | (h >> 4 & TWO) << 4,
                c >> 4 & LO | (h >> 6 & TWO) << 4,
            ];
            for (k, q) in quads.into_iter().enumerate() {
                u[at + 32 * k..at + 32 * k + 8].copy_from_slice(&q.to_le_bytes());
            }
        }
    }
    u
}

/// The inverse of [`quants_of`]: writes `ql` and `qh` of a block (bytes 0..192).
fn set_quants(u: &[u8; QK_K], blk: &mut [u8]) {
    for half in 0..2 {
        let u = &u[128 * half..128 * half + 128];
        for l in 0..32 {
            let (q0, q1, q2, q3) = (u[l], u[l + 32], u[l + 64], u[l + 96]);
            blk[64 * half + l] = (q0 & 0x0f) | (q2 & 0x0f) << 4;
            blk[64 * half + 32 + l] = (q1 & 0x0f) | (q3 & 0x0f) << 4;
            blk[128 + 32 * half + l] = (q0 >> 4) | (q1 >> 4) << 2 | (q2 >> 4) << 4 | (q3 >> 4) << 6;
        }
    }
}

/// Packs eight Q6_K rows of `n` weights (`rows`: one after another) into one group (`out`:
/// [`group_bytes`]`(n)` bytes). `false` (and `out` left untouched) when a length is wrong.
pub fn pack(n: usize, rows: &[u8], out: &mut [u8]) -> bool {
    pack_with(super::simd_level(), n, rows, out)
}

/// [`pack`] by the best code `<= level` this CPU runs: AVX2 rebuilds each row's quant planes
/// 32 quants at a time and transposes the column in registers ([`super::avx2_q6_kx8::pack`]),
/// the same bytes as the scalar loop (`pack_speed` example, README "Start-up").
pub fn pack_with(level: super::SimdLevel, n: usize, rows: &[u8], out: &mut [u8]) -> bool {
    let Some(gb) = group_bytes(n) else {
        return false;
    };
    let row_bytes = n / QK_K * Q6_K_BYTES;
    if rows.len() != ROWS * row_bytes || out.len() != gb {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if super::effective(level, super::hardware_level()) >= super::SimdLevel::Avx2 {
        // SAFETY: `effective` gives `Avx2` or above only when the CPU has AVX2; the lengths
        // were checked above.
        unsafe { super::avx2_q6_kx8::pack(row_bytes, rows, out) };
        return true;
    }
    let _ = level;
    // row by row: each source row is read once, front to back
    for (j, row) in rows.chunks_exact(row_bytes).enumerate() {
        for (blk, col) in row
            .chunks_exact(Q6_K_BYTES)
            .zip(out.chunks_exact_mut(GROUP_BLOCK_BYTES))
        {
            col[2 * j..2 * j + 2].copy_from_slice(&blk[208..210]);
            for p in 0..8 {
                let at = 2 * ROWS + 16 * p + 2 * j;
                col[at..at + 2].copy_from_slice(&blk[192 + 2 * p..194 + 2 * p]);
            }
            let u = quants_of(blk);
            let quad = |at: usize| u32::from_le_bytes(std::array::from_fn(|i| u[at + i]));
            for s in 0..16 {
                // four quants at a time: plane v holds u_v | (u_3 >> 2v & 3) << 6 per byte
                let top = quad(16 * s + 12);
                for v in 0..3 {
                    let w = quad(16 * s + 4 * v) | (top >> (2 * v) & 0x0303_0303) << 6;
                    let at = QUANTS + 96 * s + 32 * v + 4 * j;
                    col[at..at + 4].copy_from_slice(&w.to_le_bytes());
                }
            }
        }
    }
    true
}

/// The inverse of [`pack`]: the eight Q6_K rows of a group (`out`: `8 · n / 256 · 210` bytes).
pub fn unpack(n: usize, group: &[u8], out: &mut [u8]) -> bool {
    let Some(gb) = group_bytes(n) else {
        return false;
    };
    let row_bytes = n / QK_K * Q6_K_BYTES;
    if group.len() != gb || out.len() != ROWS * row_bytes {
        return false;
    }
    for (b, col) in group.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
        for j in 0..ROWS {
            let blk = &mut out[j * row_bytes + b * Q6_K_BYTES..][..Q6_K_BYTES];
            let mut u = [0u8; QK_K];
            for s in 0..16 {
                for t in 0..4 {
                    let e = 16 * s + t;
                    let at = QUANTS + 96 * s + 4 * j + t;
                    let (v0, v1, v2) = (col[at], col[at + 32], col[at + 64]);
                    u[e] = v0 & 0x3f;
                    u[e + 4] = v1 & 0x3f;
                    u[e + 8] = v2 & 0x3f;
                    u[e + 12] = v0 >> 6 | (v1 >> 6) << 2 | (v2 >> 6) << 4;
                }
            }
            set_quants(&u, blk);
            for s in 0..16 {
                blk[192 + s] = col[2 * ROWS + 16 * (s / 2) + 2 * j + s % 2];
            }
            blk[208..210].copy_from_slice(&col[2 * j..2 * j + 2]);
        }
    }
    true
}

/// For each super-block of a Q8_K activation row, eight words: word `p` holds the sums of the
/// 16 quants of sub-blocks `2p` (low 16 bits) and `2p + 1` (high 16 bits), i.e. the block's
/// `bsums` two at a time. `out` is cleared first and left empty when `act` is not whole
/// blocks.
pub fn bsum_pairs(act: &[u8], out: &mut Vec<i32>) {
    out.clear();
    if !act.len().is_multiple_of(Q8_K_BYTES) {
        return;
    }
    for by in act.chunks_exact(Q8_K_BYTES) {
        out.extend(
            by[4 + QK_K..]
                .chunks_exact(4)
                .map(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]])),
        );
    }
}

/// The sub-block sums of word `w` of [`bsum_pairs`].
fn unpair(w: i32) -> (i32, i32) {
    (i32::from(w as i16), w >> 16)
}

/// Checks a group and one activation row (with its [`bsum_pairs`]) for `n` weights.
fn lengths_ok(n: usize, group: &[u8], act: &[u8], pairs: &[i32]) -> bool {
    group_bytes(n) == Some(group.len())
        && act.len() == n / QK_K * Q8_K_BYTES
        && pairs.len() == n / QK_K * 8
}

packed::entry_points!(Q6Kx8);

/// This layout's parts of the shared entry points.
struct Q6Kx8;

impl packed::Layout for Q6Kx8 {
    fn lengths_ok(n: usize, group: &[u8], act: &[u8], prep: &[i32]) -> bool {
        lengths_ok(n, group, act, prep)
    }

    fn gemv_scalar(group: &[u8], act: &[u8], prep: &[i32]) -> [f32; ROWS] {
        gemv_scalar(group, act, prep)
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemv(group: &[u8], act: &[u8], prep: &[i32]) -> [f32; ROWS] {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths checked.
        unsafe { super::avx2_q6_kx8::gemv(group, act, prep) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemv2(a: &[u8], b: &[u8], act: &[u8], prep: &[i32]) -> [[f32; ROWS]; 2] {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths of both groups checked.
        unsafe { super::avx2_q6_kx8::gemv2(a, b, act, prep) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemm(group: &[u8], acts: &[&[u8]], preps: &[&[i32]], out: &mut [f32]) {
        // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths checked, at most
        // TILE_TOKENS rows.
        unsafe { super::avx2_q6_kx8::gemm(group, acts, preps, out) }
    }
}

/// The scalar reference: per row and super-block the integer `Σ_s sc_s · Σ u · q − 32 ·
/// Σ_s sc_s · bsum_s` (the same integer as [`super::scalar::q6_k_q8_k`]'s `Σ_s sc_s ·
/// Σ (u − 32) · q`), then `sumf += (d · d_y) · isum` as there.
fn gemv_scalar(group: &[u8], act: &[u8], pairs: &[i32]) -> [f32; ROWS] {
    let mut sumf = [0f32; ROWS];
    for ((col, by), pw) in group
        .chunks_exact(GROUP_BLOCK_BYTES)
        .zip(act.chunks_exact(Q8_K_BYTES))
        .zip(pairs.chunks_exact(8))
    {
        let dy = f32_at(by, 0);
        let qy = &by[4..4 + QK_K];
        for (j, f) in sumf.iter_mut().enumerate() {
            let sc = |s: usize| i32::from(col[2 * ROWS + 16 * (s / 2) + 2 * j + s % 2] as i8);
            let mut isum = 0i32;
            for s in 0..16 {
                let mut dot = 0i32;
                for t in 0..4 {
                    let at = QUANTS + 96 * s + 4 * j + t;
                    let (v0, v1, v2) = (col[at], col[at + 32], col[at + 64]);
                    let u = [
                        v0 & 0x3f,
                        v1 & 0x3f,
                        v2 & 0x3f,
                        v0 >> 6 | (v1 >> 6) << 2 | (v2 >> 6) << 4,
                    ];
                    for (k, &u) in u.iter().enumerate() {
                        dot += i32::from(u) * i32::from(qy[16 * s + 4 * k + t] as i8);
                    }
                }
                isum += sc(s) * dot;
            }
            let mut corr = 0i32;
            for (p, &w) in pw.iter().enumerate() {
                let (s0, s1) = unpair(w);
                corr += sc(2 * p) * s0 + sc(2 * p + 1) * s1;
            }
            *f += (f16_at(col, 2 * j) * dy) * (isum - 32 * corr) as f32;
        }
    }
    sumf
}

packed::row_kernel!(
    Q6Kx8,
    QK_K,
    Q6_K_BYTES,
    Q8_K_BYTES,
    super::scalar::q6_k_q8_k,
    super::avx2_q6_kx8::rows_tile
);

#[cfg(test)]
mod tests {
    use super::super::tests::{check_pack_levels, check_rows_give, Rng};
    use super::*;
    use crate::kernels::{available_levels, quantize_activations, scalar, SimdLevel};
    use crate::GgmlType;

    /// A Q8_K activation block with quants from `q` and its `bsums` computed from them.
    fn q8k_block(d: f32, q: impl Fn(usize) -> i8) -> Vec<u8> {
        let mut b = vec![0u8; Q8_K_BYTES];
        b[..4].copy_from_slice(&d.to_le_bytes());
        for i in 0..QK_K {
            b[4 + i] = q(i) as u8;
        }
        for s in 0..16 {
            let sum: i32 = (0..16).map(|i| i32::from(q(16 * s + i))).sum();
            b[4 + QK_K + 2 * s..][..2].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        b
    }

    /// Eight Q6_K rows of `n`: quantized from random weights (some rows tiny, so subnormal
    /// `d`) where `raw` is false, else random bytes (every quant 0..=63 and scale -128..=127)
    /// with random `d` (some subnormal). Activations: random values quantized, or (`raw`)
    /// random quants in -128..=127.
    fn case(rng: &mut Rng, n: usize, raw: bool) -> (Vec<u8>, Vec<u8>) {
        let row_bytes = n / QK_K * Q6_K_BYTES;
        let mut rows = vec![0u8; ROWS * row_bytes];
        for (j, r) in rows.chunks_exact_mut(row_bytes).enumerate() {
            if raw {
                for blk in r.chunks_exact_mut(Q6_K_BYTES) {
                    blk.iter_mut().for_each(|b| *b = rng.byte());
                    let d = if rng.byte().is_multiple_of(4) {
                        3e-6 * rng.f()
                    } else {
                        rng.f() * 1e-2
                    };
                    blk[208..].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
                }
            } else {
                let amp = if j == 3 { 1e-6 } else { 1.0 };
                let w: Vec<f32> = (0..n).map(|_| rng.f() * amp).collect();
                crate::blocks::quantize_row(GgmlType::Q6K, &w, r).unwrap();
            }
        }
        let act = if raw {
            let mut act = Vec::new();
            for _ in 0..n / QK_K {
                let q: Vec<i8> = (0..QK_K).map(|_| rng.int(-128, 127) as i8).collect();
                act.extend(q8k_block(rng.f() * 0.01, |i| q[i]));
            }
            act
        } else {
            let x: Vec<f32> = (0..n).map(|_| rng.f()).collect();
            let mut act = Vec::new();
            quantize_activations(GgmlType::Q6K, &x, &mut act);
            act
        };
        (rows, act)
    }

    /// A bound on the rounding of row `r` · `act`: `Σ |d · d_y · sc · (u − 32) · q|`.
    fn magnitude(r: &[u8], act: &[u8]) -> f32 {
        let mut m = 0f64;
        for (bx, by) in r.chunks_exact(Q6_K_BYTES).zip(act.chunks_exact(Q8_K_BYTES)) {
            let u = quants_of(bx);
            let d = f64::from(f16_at(bx, 208) * f32_at(by, 0)).abs();
            for (e, &u) in u.iter().enumerate() {
                let sc = f64::from(bx[192 + e / 16] as i8).abs();
                let q = f64::from(by[4 + e] as i8).abs();
                m += d * sc * (f64::from(u) - 32.0).abs() * q;
            }
        }
        m as f32
    }

    fn check_against_rows(n: usize, rows: &[u8], act: &[u8], what: &str) {
        let row_bytes = n / QK_K * Q6_K_BYTES;
        let mut g = vec![0u8; group_bytes(n).unwrap()];
        assert!(pack(n, rows, &mut g));
        let mut pairs = Vec::new();
        bsum_pairs(act, &mut pairs);
        assert_eq!(pairs.len(), n / QK_K * 8);
        let want: Vec<f32> = rows
            .chunks_exact(row_bytes)
            .map(|r| scalar::q6_k_q8_k(r, act))
            .collect();
        let mags: Vec<f32> = rows
            .chunks_exact(row_bytes)
            .map(|r| magnitude(r, act))
            .collect();
        for level in available_levels() {
            let mut got = [0f32; ROWS];
            gemv_with(level, n, &g, act, &pairs, &mut got);
            for (j, (&a, &b)) in got.iter().zip(&want).enumerate() {
                if level == SimdLevel::Scalar {
                    assert_eq!(a.to_bits(), b.to_bits(), "{what} {level:?} n {n} row {j}");
                } else {
                    let tol = 1e-6 * mags[j] + f32::MIN_POSITIVE;
                    assert!(
                        (a - b).abs() <= tol,
                        "{what} {level:?} n {n} row {j}: {a} vs {b}"
                    );
                }
            }
            // the same rows in the file's layout: the same bits
            check_rows_give(rows_gemm_with, level, n, rows, act, &got[..], what);
            // gemm over 1..=9 copies of the activation row: every column equals gemv
            for nt in [1, 2, 3, 4, 5, 7, 9] {
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

    #[test]
    fn pack_then_unpack_is_the_identity() {
        let mut rng = Rng(3);
        for (n, raw) in [(256, true), (512, false), (4096, true)] {
            let (rows, _) = case(&mut rng, n, raw);
            // every level this CPU has packs the same bytes, and unpacking gives the rows
            let g = check_pack_levels(pack_with, n, &rows, group_bytes(n).unwrap());
            let mut back = vec![0u8; rows.len()];
            assert!(unpack(n, &g, &mut back));
            assert_eq!(back, rows, "n = {n}");
        }
        // the quant bits of one block round-trip through the element order
        let mut blk = [0u8; Q6_K_BYTES];
        blk.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i * 37 + 11) as u8);
        let mut again = blk;
        set_quants(&quants_of(&blk), &mut again);
        assert_eq!(again, blk);
        // wrong lengths are refused, nothing written
        let mut g = vec![0xAAu8; group_bytes(256).unwrap()];
        for level in available_levels() {
            assert!(!pack_with(level, 256, &[0u8; 8 * 210 - 1], &mut g));
            assert!(!pack_with(level, 128, &[0u8; 8 * 210], &mut g));
            assert!(!pack_with(level, 256, &[0u8; 8 * 210], &mut g[1..]));
            assert!(g.iter().all(|&b| b == 0xAA), "{level:?}");
        }
        let mut out = vec![0xAAu8; 8 * 210];
        assert!(!unpack(256, &g[1..], &mut out));
        assert!(!unpack(256, &g, &mut out[1..]));
        assert!(out.iter().all(|&b| b == 0xAA));
    }

    /// The scalar packed kernel gives exactly the per-row scalar reference; every SIMD level
    /// agrees with it to float rounding; gemm agrees with gemv for any token count.
    #[test]
    fn packed_kernels_match_the_row_reference_at_every_level() {
        let mut rng = Rng(13);
        for (n, raw) in [
            (256, false),
            (2048, false),
            (5120, false),
            (256, true),
            (4096, true),
        ] {
            let (rows, act) = case(&mut rng, n, raw);
            check_against_rows(n, &rows, &act, if raw { "raw" } else { "quantized" });
        }
    }

    /// Every extreme at once: scales -128 and 127, quants 0 and 63, activations -128 and
    /// 127 (the largest 16-bit partial sums and 32-bit block sums the kernels can meet), and
    /// `d` subnormal, tiny, large.
    #[test]
    fn extreme_values() {
        let n = 1024;
        let row_bytes = n / QK_K * Q6_K_BYTES;
        let ds = [1.0f32, 65504.0, 6e-8, 1e-5, -2.0, 0.5, 3e-7, -1.0];
        let mut rows = vec![0u8; ROWS * row_bytes];
        for (j, r) in rows.chunks_exact_mut(row_bytes).enumerate() {
            for (b, blk) in r.chunks_exact_mut(Q6_K_BYTES).enumerate() {
                // all quants 63, all 0, alternating, or 63/0 by sub-block
                let u: [u8; QK_K] = std::array::from_fn(|e| match (b + j) % 4 {
                    0 => 63,
                    1 => 0,
                    2 => 63 * (e % 2) as u8,
                    _ => 63 * (e / 16 % 2) as u8,
                });
                set_quants(&u, blk);
                for s in 0..16 {
                    let sc: i8 = if (s + j) % 3 == 0 { 127 } else { -128 };
                    blk[192 + s] = sc as u8;
                }
                blk[208..].copy_from_slice(&half::f16::from_f32(ds[j]).to_bits().to_le_bytes());
            }
        }
        let acts: [Vec<u8>; 4] = [
            (0..n / QK_K)
                .flat_map(|_| q8k_block(1.0, |_| -128))
                .collect(),
            (0..n / QK_K)
                .flat_map(|_| q8k_block(1e-3, |_| 127))
                .collect(),
            (0..n / QK_K)
                .flat_map(|_| q8k_block(0.25, |i| if i % 2 == 0 { -128 } else { 127 }))
                .collect(),
            (0..n / QK_K)
                .flat_map(|_| q8k_block(2.0, |i| if i / 16 % 2 == 0 { -128 } else { 127 }))
                .collect(),
        ];
        for act in &acts {
            check_against_rows(n, &rows, act, "extreme");
        }
    }

    #[test]
    fn gemm_tokens_are_independent() {
        let mut rng = Rng(17);
        let n = 512;
        let (rows, _) = case(&mut rng, n, false);
        let mut g = vec![0u8; group_bytes(n).unwrap()];
        assert!(pack(n, &rows, &mut g));
        let acts: Vec<Vec<u8>> = (0..6).map(|t| case(&mut rng, n, t % 2 == 1).1).collect();
        let pairs: Vec<Vec<i32>> = acts
            .iter()
            .map(|a| {
                let mut p = Vec::new();
                bsum_pairs(a, &mut p);
                p
            })
            .collect();
        let ar: Vec<&[u8]> = acts.iter().map(|a| &a[..]).collect();
        let pr: Vec<&[i32]> = pairs.iter().map(|p| &p[..]).collect();
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
        let mut rng = Rng(19);
        for (n, raw) in [(256, false), (1024, true), (4096, false)] {
            let (rows, _) = case(&mut rng, n, raw);
            let acts: Vec<Vec<u8>> = (0..6)
                .map(|t| case(&mut rng, n, raw && t % 2 == 0).1)
                .collect();
            let (gw, rw) = (gemm_with, rows_gemm_with);
            super::super::tests::check_rows_gemm(GgmlType::Q6K, n, &rows, &acts, gw, rw);
        }
    }

    #[test]
    fn wrong_lengths_give_zeros() {
        let n = 256;
        let g = vec![1u8; group_bytes(n).unwrap()];
        let act = vec![1u8; Q8_K_BYTES];
        let mut out = [f32::NAN; ROWS];
        gemv(n, &g, &act, &[0; 8], &mut out);
        assert!(out.iter().all(|v| v.is_finite()), "right lengths compute");
        for (g2, a2, p2, n2) in [
            (&g[1..], &act[..], &[0; 8][..], n),
            (&g[..], &act[1..], &[0; 8][..], n),
            (&g[..], &act[..], &[0; 7][..], n),
            (&g[..], &act[..], &[0; 4][..], n),
            (&g[..], &act[..], &[0; 8][..], 512),
            (&g[..], &act[..], &[0; 8][..], 128),
        ] {
            for level in available_levels() {
                let mut out = [f32::NAN; ROWS];
                gemv_with(level, n2, g2, a2, p2, &mut out);
                assert_eq!(out, [0.0; ROWS], "{level:?}");
            }
        }
        let p8 = [0i32; 8];
        for level in available_levels() {
            // one bad activation row, a pairs list of another length, an `out` too short
            let mut o = vec![f32::NAN; ROWS * 2];
            gemm_with(level, n, &g, &[&act, &act[1..]], &[&p8, &p8], &mut o);
            assert!(o.iter().all(|&v| v == 0.0));
            let mut o = vec![f32::NAN; ROWS * 2];
            gemm_with(level, n, &g, &[&act, &act], &[&p8], &mut o);
            assert!(o.iter().all(|&v| v == 0.0));
            let mut o = vec![f32::NAN; ROWS];
            gemm_with(level, n, &g, &[&act, &act], &[&p8, &p8], &mut o);
            assert!(o.iter().all(|&v| v == 0.0));
        }
        // rows in the file's layout
        let row = vec![1u8; Q6_K_BYTES];
        super::super::tests::check_rows_wrong_lengths(n, &row, &act, rows_gemm_with);
        let mut p = vec![9];
        bsum_pairs(&act[1..], &mut p);
        assert!(p.is_empty());
        bsum_pairs(&act, &mut p);
        assert_eq!(p.len(), 8);
    }
}
