//! AVX2 kernels for Q6_K weights packed eight rows at a time ([`super::q6_kx8`] has the layout
//! and the scalar reference).
//!
//! Per super-block column and 16-quant sub-block: three 32-byte loads give the sub-block's 16
//! quants of each row as four vectors of unsigned bytes 0..=63 (4 quants per vector, row `j`
//! in 32-bit lane `j`; three by a mask, the fourth gathered from the top bit pairs). Each is
//! multiplied (`maddubs`) with a 4-byte broadcast of the activation quants; two products are
//! summed in 16-bit lanes (at most 2 · 2 · 63 · 128 = 32,256 in magnitude, so no
//! saturation), and one `madd` per pair with the eight rows' scales (row `j`'s in both 16-bit
//! halves of lane `j`, a byte shuffle of the sign-extended scale pairs) widens and scales
//! them. The `−32` offset is eight more `madd`s per column of the same sign-extended scale
//! pairs with the activation's sub-block sum pairs, and one fused multiply-add per
//! super-block applies `d · d_y` for the eight rows at once.

use super::avx2::{load16, load32};
use super::avx2_q4_0x8::{broadcast4, lanes};
use super::avx2_q8_0x8::{row_sums, rows_by_counts, store_rows};
use super::avx2_transpose::{self as transpose, store16, store32};
use super::prefetch_ahead;
use super::q6_kx8::{GROUP_BLOCK_BYTES, ROWS, TILE_TOKENS};
use super::scalar::{f32_at, Q6_K_BYTES, Q8_K_BYTES};
use std::arch::x86_64::*;

/// Offset of the scale pairs in a column.
const SCALES: usize = 2 * ROWS;
/// Offset of the quant planes in a column.
const QUANTS: usize = SCALES + ROWS * 16;

/// Scale pair `p` of the eight rows (bytes `16 + 16p ..`) as i16: lane `j` = row `j`'s scales
/// of sub-blocks `2p` (low half) and `2p + 1` (high half).
#[inline]
#[target_feature(enable = "avx2")]
fn scale_pair(col: &[u8], p: usize) -> __m256i {
    _mm256_cvtepi8_epi16(load16(&col[SCALES + 16 * p..]))
}

/// From a [`scale_pair`], the even (`K = 0`) or odd (`K = 1`) sub-block's scale of row `j` in
/// both 16-bit halves of lane `j`.
#[inline]
#[target_feature(enable = "avx2")]
fn spread<const K: usize>(pair: __m256i) -> __m256i {
    let (a, b) = (2 * K as i8, 2 * K as i8 + 1);
    let idx = _mm256_setr_epi8(
        a,
        b,
        a,
        b,
        a + 4,
        b + 4,
        a + 4,
        b + 4,
        a + 8,
        b + 8,
        a + 8,
        b + 8,
        a + 12,
        b + 12,
        a + 12,
        b + 12,
        a,
        b,
        a,
        b,
        a + 4,
        b + 4,
        a + 4,
        b + 4,
        a + 8,
        b + 8,
        a + 8,
        b + 8,
        a + 12,
        b + 12,
        a + 12,
        b + 12,
    );
    _mm256_shuffle_epi8(pair, idx)
}

/// The four quant vectors of sub-block `s`: vector `k` holds quants `16s + 4k .. + 4` of row
/// `j` in lane `j`, as bytes 0..=63.
#[inline]
#[target_feature(enable = "avx2")]
fn quants(col: &[u8], s: usize) -> [__m256i; 4] {
    let low6 = _mm256_set1_epi8(0x3f);
    let top2 = _mm256_set1_epi8(0xc0u8 as i8);
    let base = QUANTS + 96 * s;
    let v0 = load32(&col[base..]);
    let v1 = load32(&col[base + 32..]);
    let v2 = load32(&col[base + 64..]);
    // the top bit pairs moved to bits 0-1, 2-3, 4-5: each masked first, so no bit crosses
    // into the byte below in the 16-bit shifts
    let h0 = _mm256_srli_epi16(_mm256_and_si256(v0, top2), 6);
    let h1 = _mm256_srli_epi16(_mm256_and_si256(v1, top2), 4);
    let h2 = _mm256_srli_epi16(_mm256_and_si256(v2, top2), 2);
    [
        _mm256_and_si256(v0, low6),
        _mm256_and_si256(v1, low6),
        _mm256_and_si256(v2, low6),
        _mm256_or_si256(_mm256_or_si256(h0, h1), h2),
    ]
}

/// `isum + sc_s · Σ u · q` of sub-block `s` for the eight rows (`u`: its [`quants`], `sc`:
/// its [`spread`] scales, `q`: the activation quants of the super-block).
#[inline]
#[target_feature(enable = "avx2")]
fn sub_products(u: &[__m256i; 4], sc: __m256i, q: &[u8], s: usize, isum: __m256i) -> __m256i {
    let m = |i: usize| _mm256_maddubs_epi16(u[i], broadcast4(q, 16 * s + 4 * i));
    let lo = _mm256_add_epi16(m(0), m(1));
    let hi = _mm256_add_epi16(m(2), m(3));
    let isum = _mm256_add_epi32(isum, _mm256_madd_epi16(lo, sc));
    _mm256_add_epi32(isum, _mm256_madd_epi16(hi, sc))
}

/// `Σ_s sc_s · bsum_s` for the eight rows of one column (`pw`: the column's eight
/// [`super::q6_kx8::bsum_pairs`] words).
#[inline]
#[target_feature(enable = "avx2")]
fn corrections(col: &[u8], pw: &[i32]) -> __m256i {
    let mut corr = _mm256_setzero_si256();
    for (p, &w) in pw.iter().enumerate().take(8) {
        corr = _mm256_add_epi32(
            corr,
            _mm256_madd_epi16(scale_pair(col, p), _mm256_set1_epi32(w)),
        );
    }
    corr
}

/// `acc + d·d_y·(isum − 32·corr)` for the eight rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn accumulate(col: &[u8], dy: f32, isum: __m256i, corr: __m256i, acc: __m256) -> __m256 {
    let d = _mm256_mul_ps(_mm256_cvtph_ps(load16(col)), _mm256_set1_ps(dy));
    let isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(corr, 5));
    _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum), acc)
}

/// The eight rows of `group` · one Q8_K activation row `act` with sub-block sum pairs `pairs`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. (Lengths are checked by the caller; a short
/// slice would panic, never read out of bounds.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv(group: &[u8], act: &[u8], pairs: &[i32]) -> [f32; ROWS] {
    let mut acc = _mm256_setzero_ps();
    for ((col, by), pw) in group
        .chunks_exact(GROUP_BLOCK_BYTES)
        .zip(act.chunks_exact(Q8_K_BYTES))
        .zip(pairs.chunks_exact(8))
    {
        acc = step(col, by, pw, acc);
    }
    lanes(acc)
}

/// One block column `col` of a group with the activation block `by` (sum pairs `pw`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn step(col: &[u8], by: &[u8], pw: &[i32], acc: __m256) -> __m256 {
    let q = &by[4..];
    let mut isum = _mm256_setzero_si256();
    for p in 0..8 {
        let pair = scale_pair(col, p);
        isum = sub_products(&quants(col, 2 * p), spread::<0>(pair), q, 2 * p, isum);
        isum = sub_products(
            &quants(col, 2 * p + 1),
            spread::<1>(pair),
            q,
            2 * p + 1,
            isum,
        );
    }
    let corr = corrections(col, pw);
    accumulate(col, f32_at(by, 0), isum, corr, acc)
}

/// [`gemv`] of two groups at once, `a` and `b` (the same length), block column by block
/// column: the results are [`gemv`]'s, bit for bit. Two groups far apart in memory are two
/// streams in flight at once, and one stream through this kernel left the memory idle
/// between its loads (on the Zen 3 machine a run of Q4_0 groups streamed at 65-80 % of a pure
/// read with one group at a time, 85-95 % with two; README "Two streams").
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. (Lengths are checked by the caller; a short
/// slice would panic, never read out of bounds.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv2(a: &[u8], b: &[u8], act: &[u8], pairs: &[i32]) -> [[f32; ROWS]; 2] {
    let (mut x, mut y) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (((ca, cb), by), pw) in a
        .chunks_exact(GROUP_BLOCK_BYTES)
        .zip(b.chunks_exact(GROUP_BLOCK_BYTES))
        .zip(act.chunks_exact(Q8_K_BYTES))
        .zip(pairs.chunks_exact(8))
    {
        x = step(ca, by, pw, x);
        y = step(cb, by, pw, y);
    }
    [lanes(x), lanes(y)]
}

/// `out[j · acts.len() + t]` = row `j` of `group` · `acts[t]` for up to [`TILE_TOKENS`]
/// activation rows (each weight vector loaded and unpacked once for all of them).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `acts.len() <= TILE_TOKENS`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm(group: &[u8], acts: &[&[u8]], pairs: &[&[i32]], out: &mut [f32]) {
    match acts.len() {
        1 => gemm_n::<1>(group, acts, pairs, out),
        2 => gemm_n::<2>(group, acts, pairs, out),
        3 => gemm_n::<3>(group, acts, pairs, out),
        4 => gemm_n::<4>(group, acts, pairs, out),
        _ => out.fill(0.0),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_n<const NT: usize>(group: &[u8], acts: &[&[u8]], pairs: &[&[i32]], out: &mut [f32]) {
    const { assert!(NT <= TILE_TOKENS) };
    let mut acc = [_mm256_setzero_ps(); NT];
    for (b, col) in group.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
        let mut by: [&[u8]; NT] = [&[]; NT];
        for t in 0..NT {
            by[t] = &acts[t][b * Q8_K_BYTES..(b + 1) * Q8_K_BYTES];
        }
        let mut isum = [_mm256_setzero_si256(); NT];
        for p in 0..8 {
            let pair = scale_pair(col, p);
            let sc = [spread::<0>(pair), spread::<1>(pair)];
            for (k, &sc) in sc.iter().enumerate() {
                let s = 2 * p + k;
                let u = quants(col, s);
                for t in 0..NT {
                    isum[t] = sub_products(&u, sc, &by[t][4..], s, isum[t]);
                }
            }
        }
        for t in 0..NT {
            let corr = corrections(col, &pairs[t][8 * b..8 * b + 8]);
            acc[t] = accumulate(col, f32_at(by[t], 0), isum[t], corr, acc[t]);
        }
    }
    for (t, a) in acc.iter().enumerate() {
        for (j, v) in lanes(*a).into_iter().enumerate() {
            out[j * NT + t] = v;
        }
    }
}

/// Up to four Q6_K rows in the file's layout (`rows`, whole super-blocks) × up to
/// [`TILE_TOKENS`] Q8_K activation rows, `out[r · acts.len() + t]`, by the sums of [`gemv`]:
/// per super-block, the exact integer `Σ_s sc_s · Σ u · q − 32 · Σ_s sc_s · bsum_s` of each
/// row and token (the four rows reduced into lanes by [`super::avx2_q8_0x8::row_sums`]), then
/// [`gemv`]'s fused multiply-add in four lanes: bit for bit [`gemv`]'s results for the same
/// rows packed. With each super-block of each row it asks for the same super-block of the row
/// `rows.len()` rows on (the next call's, where the rows follow each other, as a weight's do).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. (Lengths are checked by the caller: every row and
/// activation row the same whole number of super-blocks; other counts write zeros.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_tile(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    rows_by_counts!(rows_tile_n, rows, acts, out)
}

/// The sub-block scales of one row's super-block (16 signed bytes) for its quant vector `p`
/// (elements `32p .. 32p + 32`): sub-block `2p`'s scale in i16 lanes 0..8, `2p + 1`'s in
/// lanes 8..16.
#[inline]
#[target_feature(enable = "avx2")]
fn row_scales(sc: __m128i, p: usize) -> __m256i {
    let (a, b) = (2 * p as i64, 2 * p as i64 + 1);
    let idx = _mm_set_epi64x(b * 0x0101_0101_0101_0101, a * 0x0101_0101_0101_0101);
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, idx))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn rows_tile_n<const NR: usize, const NT: usize>(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    const { assert!(NR <= 4 && NT <= TILE_TOKENS) };
    let nb = acts[0].len() / Q8_K_BYTES;
    // the same super-block of the rows one tile further on
    let ahead = NR * rows[0].len();
    let (m4, m3) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(3));
    let mut acc = [_mm_setzero_ps(); NT];
    for b in 0..nb {
        let at = b * Q6_K_BYTES;
        let mut blks: [&[u8]; 4] = [&[]; 4];
        let mut d = [0i16; 4];
        for r in 0..NR {
            let blk = &rows[r][at..at + Q6_K_BYTES];
            prefetch_ahead(blk.as_ptr(), ahead, Q6_K_BYTES);
            d[r] = i16::from_le_bytes([blk[208], blk[209]]);
            blks[r] = blk;
        }
        let d_rows = _mm_cvtph_ps(_mm_setr_epi16(d[0], d[1], d[2], d[3], 0, 0, 0, 0));
        for t in 0..NT {
            let by = &acts[t][b * Q8_K_BYTES..(b + 1) * Q8_K_BYTES];
            let qy = &by[4..];
            let bsums = load32(&by[4 + 256..]);
            let mut s = [_mm256_setzero_si256(); 4];
            for r in 0..NR {
                let blk = blks[r];
                let sc8 = load16(&blk[192..]);
                let mut sumi = _mm256_setzero_si256();
                for half in 0..2 {
                    let ql0 = load32(&blk[64 * half..]);
                    let ql1 = load32(&blk[64 * half + 32..]);
                    let qh = load32(&blk[128 + 32 * half..]);
                    let top = |h: __m256i| _mm256_slli_epi16(_mm256_and_si256(h, m3), 4);
                    let u = [
                        _mm256_or_si256(_mm256_and_si256(ql0, m4), top(qh)),
                        _mm256_or_si256(_mm256_and_si256(ql1, m4), top(_mm256_srli_epi16(qh, 2))),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                            top(_mm256_srli_epi16(qh, 4)),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                            top(_mm256_srli_epi16(qh, 6)),
                        ),
                    ];
                    for (i, &ui) in u.iter().enumerate() {
                        let p = _mm256_maddubs_epi16(ui, load32(&qy[128 * half + 32 * i..]));
                        let p = _mm256_madd_epi16(row_scales(sc8, 4 * half + i), p);
                        sumi = _mm256_add_epi32(sumi, p);
                    }
                }
                // the −32 offset: 32 · Σ_s sc_s · bsum_s
                let corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), bsums);
                s[r] = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
            }
            let isum = row_sums(&s);
            // gemv's `accumulate`, lane for lane
            let dd = _mm_mul_ps(d_rows, _mm_set1_ps(f32_at(by, 0)));
            acc[t] = _mm_fmadd_ps(dd, _mm_cvtepi32_ps(isum), acc[t]);
        }
    }
    store_rows::<NR, NT>(&acc, out);
}

/// The three quant planes of the two 16-quant sub-blocks in `u` (one per 128-bit half, the
/// quants as bytes 0..=63 in element order), as [`super::q6_kx8`] stores them: 32-bit words
/// 0, 1, 2 of each half are planes 0, 1, 2 of its sub-block (word 3 is left over). Plane
/// byte `4v + t` = quant `4v + t` with bits `2v, 2v + 1` of quant `12 + t` above it.
#[inline]
#[target_feature(enable = "avx2")]
fn planes(u: __m256i) -> __m256i {
    const X: i8 = -128; // shuffle: a zero byte
    let tops = _mm256_shuffle_epi8(
        u,
        _mm256_setr_epi8(
            12, 13, 14, 15, 12, 13, 14, 15, 12, 13, 14, 15, X, X, X, X, //
            12, 13, 14, 15, 12, 13, 14, 15, 12, 13, 14, 15, X, X, X, X,
        ),
    );
    // plane v's 32-bit word keeps bits 2v, 2v + 1 of each byte and shifts them to bits 6, 7
    // (no bit crosses into the next byte)
    let m = |v: i32| 0x0303_0303 << (2 * v);
    let pairs = _mm256_and_si256(
        tops,
        _mm256_setr_epi32(m(0), m(1), m(2), 0, m(0), m(1), m(2), 0),
    );
    let top = _mm256_sllv_epi32(pairs, _mm256_setr_epi32(6, 4, 2, 0, 6, 4, 2, 0));
    _mm256_or_si256(u, top)
}

/// One row's 16 sub-blocks × three planes of a super-block (`x`, 210 bytes) as the 48 32-bit
/// words of a column in order (word `3s + v` = plane `v` of sub-block `s`), eight to a
/// register: the quants are rebuilt from `ql`/`qh` as bytes, 32 at a time, turned into planes
/// ([`planes`]) and the six words of each register's two sub-blocks moved together.
#[inline]
#[target_feature(enable = "avx2")]
fn row_planes(x: &[u8]) -> [__m256i; 6] {
    let nibbles = _mm256_set1_epi8(0x0f);
    let bits45 = _mm256_set1_epi8(0x30);
    let mut p = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        let a = load32(&x[64 * h..]);
        let c = load32(&x[64 * h + 32..]);
        let q = load32(&x[128 + 32 * h..]);
        // quants 128h + 32k .. + 32: a nibble and a bit pair of `q` above it
        let u = [
            _mm256_or_si256(
                _mm256_and_si256(a, nibbles),
                _mm256_and_si256(_mm256_slli_epi16::<4>(q), bits45),
            ),
            _mm256_or_si256(
                _mm256_and_si256(c, nibbles),
                _mm256_and_si256(_mm256_slli_epi16::<2>(q), bits45),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(a), nibbles),
                _mm256_and_si256(q, bits45),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(c), nibbles),
                _mm256_and_si256(_mm256_srli_epi16::<2>(q), bits45),
            ),
        ];
        for (k, uk) in u.into_iter().enumerate() {
            p[4 * h + k] = planes(uk);
        }
    }
    // words 0, 1, 2, 4, 5, 6 of each `p` are the next six of the column's words
    let perm = |v: __m256i, i: [i32; 8]| {
        _mm256_permutevar8x32_epi32(
            v,
            _mm256_setr_epi32(i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7]),
        )
    };
    let mut out = [_mm256_setzero_si256(); 6];
    for (o, p) in out.chunks_exact_mut(3).zip(p.chunks_exact(4)) {
        o[0] = _mm256_blend_epi32::<0b1100_0000>(
            perm(p[0], [0, 1, 2, 4, 5, 6, 0, 0]),
            perm(p[1], [0, 0, 0, 0, 0, 0, 0, 1]),
        );
        o[1] = _mm256_blend_epi32::<0b1111_0000>(
            perm(p[1], [2, 4, 5, 6, 0, 0, 0, 0]),
            perm(p[2], [0, 0, 0, 0, 0, 1, 2, 4]),
        );
        o[2] = _mm256_blend_epi32::<0b1111_1100>(
            perm(p[2], [5, 6, 0, 0, 0, 0, 0, 0]),
            perm(p[3], [0, 0, 0, 1, 2, 4, 5, 6]),
        );
    }
    out
}

/// [`super::q6_kx8::pack`] of eight rows of `row_bytes` bytes each (`rows`) into `out`, one
/// super-block column at a time: each row's quant words ([`row_planes`]) are transposed as
/// 8 × 8 32-bit words six times, and the rows' scales as 8 × 8 16-bit words.
///
/// # Safety
/// The CPU must have AVX2; `rows` must hold 8 rows of `row_bytes` (whole Q6_K blocks) and
/// `out` one column of [`GROUP_BLOCK_BYTES`] per super-block.
#[target_feature(enable = "avx2")]
pub unsafe fn pack(row_bytes: usize, rows: &[u8], out: &mut [u8]) {
    for (b, col) in out.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
        let blk = |j: usize| &rows[j * row_bytes + b * Q6_K_BYTES..][..Q6_K_BYTES];
        let mut words = [[_mm256_setzero_si256(); 6]; ROWS];
        let mut scales = [_mm_setzero_si128(); ROWS];
        for j in 0..ROWS {
            let x = blk(j);
            // the same place in the next group's rows (the rows that follow): ~1.4x the speed
            // from memory at 2048 columns (`pack_speed`)
            prefetch_ahead(x.as_ptr(), ROWS * row_bytes, Q6_K_BYTES);
            col[2 * j..2 * j + 2].copy_from_slice(&x[208..210]);
            scales[j] = load16(&x[192..]);
            words[j] = row_planes(x);
        }
        for (p, v) in transpose::halfwords8(scales).into_iter().enumerate() {
            store16(&mut col[SCALES + 16 * p..], v);
        }
        for i in 0..6 {
            let r = std::array::from_fn(|j| words[j][i]);
            for (w, v) in transpose::words(r).into_iter().enumerate() {
                store32(&mut col[QUANTS + 32 * (8 * i + w)..], v);
            }
        }
    }
}
