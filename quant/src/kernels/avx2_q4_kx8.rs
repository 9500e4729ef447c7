//! AVX2 kernels for Q4_K weights packed eight rows at a time ([`super::q4_kx8`] has the layout
//! and the scalar reference).
//!
//! Per super-block column and sub-block: eight 32-byte loads give the sub-block's 32 quants of
//! each row (4 per load, row `j` in 32-bit lane `j`; low nibbles for even sub-blocks, high for
//! odd); each is multiplied (`maddubs`) with a 4-byte broadcast of the activation quants and
//! the eight products are summed in 16-bit lanes (at most 16 · 15 · 128 = 30,720 in
//! magnitude). One `madd` with the eight rows' scales (each repeated in both 16-bit halves of
//! its lane by a byte shuffle) widens and scales them; the mins term is four `madd`s of the
//! rows' mins with the activation's sub-block sums. Two fused multiply-adds per super-block
//! apply `d · d_y` and `dmin · d_y` for the eight rows at once.

use super::avx2::{bcast16, k4_scales_mins, load16, load32};
use super::avx2_q4_0x8::{broadcast4, lanes};
use super::avx2_q8_0x8::{row_sums, rows_by_counts, store_rows};
use super::avx2_transpose::{self as transpose, store16, store32};
use super::prefetch_ahead;
use super::q4_kx8::{GROUP_BLOCK_BYTES, ROWS, TILE_TOKENS};
use super::scalar::{Q4_K_BYTES, Q8_K_BYTES};
use std::arch::x86_64::*;

/// The f32 at `b[0..4]`.
#[inline(always)]
fn f32_le(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Sub-block `s`'s eight scales (bytes `32 + 8s ..`), row `j`'s in both 16-bit halves of lane `j`.
#[inline]
#[target_feature(enable = "avx2")]
fn scales(col: &[u8], s: usize) -> __m256i {
    let b: [u8; 8] = col[32 + 8 * s..40 + 8 * s].try_into().expect("8 bytes");
    let v = _mm256_set1_epi64x(i64::from_le_bytes(b));
    // lane j (bytes 4j..4j+4 of the whole vector; j - 4 within the high half) = [j, 0, j, 0]
    let z = -128i8; // shuffle index with the top bit set: a zero byte
    let idx = _mm256_setr_epi8(
        0, z, 0, z, 1, z, 1, z, 2, z, 2, z, 3, z, 3, z, //
        4, z, 4, z, 5, z, 5, z, 6, z, 6, z, 7, z, 7, z,
    );
    _mm256_shuffle_epi8(v, idx)
}

/// The integer sums of one column for the eight rows: `(Σ_s sc_s · Σ q·u, Σ_s m_s · bsum_s)`.
#[inline]
#[target_feature(enable = "avx2")]
fn column(col: &[u8], q: &[u8], pairs: &[i32]) -> (__m256i, __m256i) {
    let low = _mm256_set1_epi8(0x0f);
    let mut isum = _mm256_setzero_si256();
    for c in 0..4 {
        let (mut slo, mut shi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for m in 0..8 {
            let v = load32(&col[160 + 256 * c + 32 * m..]);
            let lo = _mm256_and_si256(v, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
            slo = _mm256_add_epi16(slo, _mm256_maddubs_epi16(lo, broadcast4(q, 64 * c + 4 * m)));
            shi = _mm256_add_epi16(
                shi,
                _mm256_maddubs_epi16(hi, broadcast4(q, 64 * c + 32 + 4 * m)),
            );
        }
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(slo, scales(col, 2 * c)));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(shi, scales(col, 2 * c + 1)));
    }
    (isum, mins(col, pairs))
}

/// `Σ_s m_s · bsum_s` for the eight rows of one column.
#[inline]
#[target_feature(enable = "avx2")]
fn mins(col: &[u8], pairs: &[i32]) -> __m256i {
    let mut msum = _mm256_setzero_si256();
    for (p, &w) in pairs.iter().enumerate().take(4) {
        let m = _mm256_cvtepu8_epi16(load16(&col[96 + 16 * p..]));
        msum = _mm256_add_epi32(msum, _mm256_madd_epi16(m, _mm256_set1_epi32(w)));
    }
    msum
}

/// `acc + d·d_y·isum − dmin·d_y·msum` for the eight rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn accumulate(col: &[u8], dy: f32, isum: __m256i, msum: __m256i, acc: __m256) -> __m256 {
    let dy = _mm256_set1_ps(dy);
    let d = _mm256_mul_ps(_mm256_cvtph_ps(load16(col)), dy);
    let dmin = _mm256_mul_ps(_mm256_cvtph_ps(load16(&col[16..])), dy);
    let acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum), acc);
    _mm256_fnmadd_ps(dmin, _mm256_cvtepi32_ps(msum), acc)
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
        .zip(pairs.chunks_exact(4))
    {
        acc = step(col, by, pw, acc);
    }
    lanes(acc)
}

/// One block column `col` of a group with the activation block `by` (sum pairs `pw`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn step(col: &[u8], by: &[u8], pw: &[i32], acc: __m256) -> __m256 {
    let (isum, msum) = column(col, &by[4..], pw);
    accumulate(col, f32_le(by), isum, msum, acc)
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
        .zip(pairs.chunks_exact(4))
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
    let low = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm256_setzero_ps(); NT];
    for (b, col) in group.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
        let mut by: [&[u8]; NT] = [&[]; NT];
        for t in 0..NT {
            by[t] = &acts[t][b * Q8_K_BYTES..(b + 1) * Q8_K_BYTES];
        }
        let mut isum = [_mm256_setzero_si256(); NT];
        for c in 0..4 {
            let (mut slo, mut shi) = ([_mm256_setzero_si256(); NT], [_mm256_setzero_si256(); NT]);
            for m in 0..8 {
                let v = load32(&col[160 + 256 * c + 32 * m..]);
                let lo = _mm256_and_si256(v, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                for t in 0..NT {
                    let q = &by[t][4..];
                    slo[t] = _mm256_add_epi16(
                        slo[t],
                        _mm256_maddubs_epi16(lo, broadcast4(q, 64 * c + 4 * m)),
                    );
                    shi[t] = _mm256_add_epi16(
                        shi[t],
                        _mm256_maddubs_epi16(hi, broadcast4(q, 64 * c + 32 + 4 * m)),
                    );
                }
            }
            let (s0, s1) = (scales(col, 2 * c), scales(col, 2 * c + 1));
            for t in 0..NT {
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(slo[t], s0));
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(shi[t], s1));
            }
        }
        for t in 0..NT {
            let msum = mins(col, &pairs[t][4 * b..4 * b + 4]);
            acc[t] = accumulate(col, f32_le(by[t]), isum[t], msum, acc[t]);
        }
    }
    for (t, a) in acc.iter().enumerate() {
        for (j, v) in lanes(*a).into_iter().enumerate() {
            out[j * NT + t] = v;
        }
    }
}

/// Up to four Q4_K rows in the file's layout (`rows`, whole super-blocks) × up to
/// [`TILE_TOKENS`] Q8_K activation rows, `out[r · acts.len() + t]`, by the sums of [`gemv`]:
/// per super-block, the exact integer `Σ_s sc_s · Σ u · q` of each row and token (the
/// per-row kernel's products, the four rows reduced into lanes by
/// [`super::avx2_q8_0x8::row_sums`]) and `Σ_s m_s · (bsum_2s + bsum_2s+1)`, then the same
/// two fused multiply-adds as [`gemv`]'s `accumulate` in four lanes: bit for bit [`gemv`]'s
/// results for the same rows packed. With each super-block of each row it asks for the same
/// super-block of the row `rows.len()` rows on (the next call's, where the rows follow each
/// other, as a weight's do).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. (Lengths are checked by the caller: every row and
/// activation row the same whole number of super-blocks; other counts write zeros.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_tile(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    rows_by_counts!(rows_tile_n, rows, acts, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn rows_tile_n<const NR: usize, const NT: usize>(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    const { assert!(NR <= 4 && NT <= TILE_TOKENS) };
    let nb = acts[0].len() / Q8_K_BYTES;
    // the same super-block of the rows one tile further on
    let ahead = NR * rows[0].len();
    let low = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm_setzero_ps(); NT];
    for b in 0..nb {
        let at = b * Q4_K_BYTES;
        let mut blks: [&[u8]; 4] = [&[]; 4];
        let (mut d, mut dmin) = ([0i16; 4], [0i16; 4]);
        // per row: the eight scales as i16 in both halves, the eight mins as i16
        let mut scales = [_mm256_setzero_si256(); 4];
        let mut mins = [_mm_setzero_si128(); 4];
        for r in 0..NR {
            let blk = &rows[r][at..at + Q4_K_BYTES];
            prefetch_ahead(blk.as_ptr(), ahead, Q4_K_BYTES);
            d[r] = i16::from_le_bytes([blk[0], blk[1]]);
            dmin[r] = i16::from_le_bytes([blk[2], blk[3]]);
            let ms = _mm256_cvtepu8_epi16(k4_scales_mins(&blk[4..16]));
            let sc = _mm256_castsi256_si128(ms);
            scales[r] = _mm256_set_m128i(sc, sc);
            mins[r] = _mm256_extracti128_si256::<1>(ms);
            blks[r] = blk;
        }
        let d_rows = _mm_cvtph_ps(_mm_setr_epi16(d[0], d[1], d[2], d[3], 0, 0, 0, 0));
        let dmin_rows = _mm_cvtph_ps(_mm_setr_epi16(
            dmin[0], dmin[1], dmin[2], dmin[3], 0, 0, 0, 0,
        ));
        for t in 0..NT {
            let by = &acts[t][b * Q8_K_BYTES..(b + 1) * Q8_K_BYTES];
            let qy = &by[4..];
            // the sums over each sub-block of 32: the sixteen bsums added in pairs
            let bs = load32(&by[4 + 256..]);
            let pairs = _mm_hadd_epi16(
                _mm256_castsi256_si128(bs),
                _mm256_extracti128_si256::<1>(bs),
            );
            let mut s = [_mm256_setzero_si256(); 4];
            let mut m = [_mm_setzero_si128(); 4];
            for r in 0..NR {
                let qs = &blks[r][16..];
                let mut sumi = _mm256_setzero_si256();
                for j in 0..4 {
                    let q4 = load32(&qs[32 * j..]);
                    let lo = _mm256_and_si256(q4, low);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low);
                    let pl = _mm256_maddubs_epi16(lo, load32(&qy[64 * j..]));
                    let ph = _mm256_maddubs_epi16(hi, load32(&qy[64 * j + 32..]));
                    let pl = _mm256_madd_epi16(bcast16(scales[r], 2 * j), pl);
                    let ph = _mm256_madd_epi16(bcast16(scales[r], 2 * j + 1), ph);
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
                }
                s[r] = sumi;
                m[r] = _mm_madd_epi16(mins[r], pairs);
            }
            let isum = row_sums(&s);
            let imin = _mm_hadd_epi32(_mm_hadd_epi32(m[0], m[1]), _mm_hadd_epi32(m[2], m[3]));
            // gemv's `accumulate`, lane for lane
            let dy = _mm_set1_ps(f32_le(by));
            let dd = _mm_mul_ps(d_rows, dy);
            let dm = _mm_mul_ps(dmin_rows, dy);
            acc[t] = _mm_fmadd_ps(dd, _mm_cvtepi32_ps(isum), acc[t]);
            acc[t] = _mm_fnmadd_ps(dm, _mm_cvtepi32_ps(imin), acc[t]);
        }
    }
    store_rows::<NR, NT>(&acc, out);
}

/// [`super::q4_kx8::pack`] of eight rows of `row_bytes` bytes each (`rows`) into `out`, one
/// super-block column at a time: the rows' 6-bit scales and mins are unpacked as the kernels
/// unpack them ([`k4_scales_mins`]) and transposed in registers (scales as bytes, mins as
/// byte pairs), and each of the four 32-byte runs of quants is transposed as 8 × 8 32-bit
/// words, as [`super::avx2_q8_0x8::pack`] does.
///
/// # Safety
/// The CPU must have AVX2; `rows` must hold 8 rows of `row_bytes` (whole Q4_K blocks) and
/// `out` one column of [`GROUP_BLOCK_BYTES`] per super-block.
#[target_feature(enable = "avx2")]
pub unsafe fn pack(row_bytes: usize, rows: &[u8], out: &mut [u8]) {
    for (b, col) in out.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
        let blk = |j: usize| &rows[j * row_bytes + b * Q4_K_BYTES..][..Q4_K_BYTES];
        // row j: bytes 0..8 its scales, 8..16 its mins
        let mut sm = [_mm_setzero_si128(); ROWS];
        for (j, smj) in sm.iter_mut().enumerate() {
            let x = blk(j);
            // the same place in the next group's rows (the rows that follow): ~1.25x the speed
            // from memory at 2048 columns (`pack_speed`)
            prefetch_ahead(x.as_ptr(), ROWS * row_bytes, Q4_K_BYTES);
            col[2 * j..2 * j + 2].copy_from_slice(&x[0..2]);
            col[16 + 2 * j..16 + 2 * j + 2].copy_from_slice(&x[2..4]);
            *smj = k4_scales_mins(&x[4..16]);
        }
        // scales: rows 2i, 2i + 1 byte by byte (16-bit word s = their scale s), then words:
        // store k holds scale 2k of rows 0..8, then scale 2k + 1
        let pairs: [__m128i; 4] =
            std::array::from_fn(|i| _mm_unpacklo_epi8(sm[2 * i], sm[2 * i + 1]));
        let sc = transpose::halfwords4x8(pairs);
        for (k, v) in sc.into_iter().enumerate() {
            store16(&mut col[32 + 16 * k..], v);
        }
        // mins: 16-bit word 4 + p of a row is its min pair p
        let mins = transpose::halfwords(std::array::from_fn(|i| {
            _mm_unpackhi_epi16(sm[2 * i], sm[2 * i + 1])
        }));
        for (p, v) in mins.into_iter().enumerate() {
            store16(&mut col[96 + 16 * p..], v);
        }
        for c in 0..4 {
            let r = std::array::from_fn(|j| load32(&blk(j)[16 + 32 * c..]));
            for (m, w) in transpose::words(r).into_iter().enumerate() {
                store32(&mut col[160 + 256 * c + 32 * m..], w);
            }
        }
    }
}
