//! AVX2 register transposes that the packers of the eight-row layouts share
//! ([`super::avx2_q4_0x8::pack`], [`super::avx2_q8_0x8::pack`], [`super::avx2_q4_kx8::pack`],
//! [`super::avx2_q6_kx8::pack`]):
//! eight rows go in as eight registers, and each register that comes out holds one word of
//! every row, row `j` in lane `j`.

use std::arch::x86_64::*;

/// The 8 × 8 32-bit words of `r` transposed: lane `j` of result `w` is lane `w` of `r[j]`
/// (unpack 32, unpack 64, swap 128-bit halves).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn words(r: [__m256i; 8]) -> [__m256i; 8] {
    // pairs of rows: words 0,1 | 4,5 (lo) and 2,3 | 6,7 (hi) interleaved
    let t = [
        _mm256_unpacklo_epi32(r[0], r[1]),
        _mm256_unpackhi_epi32(r[0], r[1]),
        _mm256_unpacklo_epi32(r[2], r[3]),
        _mm256_unpackhi_epi32(r[2], r[3]),
        _mm256_unpacklo_epi32(r[4], r[5]),
        _mm256_unpackhi_epi32(r[4], r[5]),
        _mm256_unpacklo_epi32(r[6], r[7]),
        _mm256_unpackhi_epi32(r[6], r[7]),
    ];
    // four rows: word w of rows 0..4 in the low half, word w + 4 in the high half
    let u = [
        _mm256_unpacklo_epi64(t[0], t[2]), // word 0 | 4, rows 0..4
        _mm256_unpackhi_epi64(t[0], t[2]), // word 1 | 5
        _mm256_unpacklo_epi64(t[1], t[3]), // word 2 | 6
        _mm256_unpackhi_epi64(t[1], t[3]), // word 3 | 7
        _mm256_unpacklo_epi64(t[4], t[6]), // the same, rows 4..8
        _mm256_unpackhi_epi64(t[4], t[6]),
        _mm256_unpacklo_epi64(t[5], t[7]),
        _mm256_unpackhi_epi64(t[5], t[7]),
    ];
    [
        _mm256_permute2x128_si256(u[0], u[4], 0x20),
        _mm256_permute2x128_si256(u[1], u[5], 0x20),
        _mm256_permute2x128_si256(u[2], u[6], 0x20),
        _mm256_permute2x128_si256(u[3], u[7], 0x20),
        _mm256_permute2x128_si256(u[0], u[4], 0x31),
        _mm256_permute2x128_si256(u[1], u[5], 0x31),
        _mm256_permute2x128_si256(u[2], u[6], 0x31),
        _mm256_permute2x128_si256(u[3], u[7], 0x31),
    ]
}

/// The 4 × 8 32-bit words of eight 16-byte rows transposed: lane `j` of result `m` is word
/// `m` of `r[j]` (unpack 32 and 64 within each four rows, then the two halves joined).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn words4x8(r: [__m128i; 8]) -> [__m256i; 4] {
    let four = |a: __m128i, b: __m128i, c: __m128i, d: __m128i| {
        // words 0, 1 (lo) and 2, 3 (hi) of a, b and of c, d
        let (x0, x1) = (_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b));
        let (y0, y1) = (_mm_unpacklo_epi32(c, d), _mm_unpackhi_epi32(c, d));
        [
            _mm_unpacklo_epi64(x0, y0),
            _mm_unpackhi_epi64(x0, y0),
            _mm_unpacklo_epi64(x1, y1),
            _mm_unpackhi_epi64(x1, y1),
        ]
    };
    let lo = four(r[0], r[1], r[2], r[3]);
    let hi = four(r[4], r[5], r[6], r[7]);
    std::array::from_fn(|m| _mm256_set_m128i(hi[m], lo[m]))
}

/// Four 16-bit words of eight rows transposed, from the rows interleaved in pairs: `e[i]`
/// holds in its 32-bit lane `p` word `p` of row `2i` (low half) and of row `2i + 1` (high
/// half), as `_mm_unpack{lo,hi}_epi16` of the two rows give it. Lane `j` (16-bit) of result
/// `p` is word `p` of row `j`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn halfwords(e: [__m128i; 4]) -> [__m128i; 4] {
    // words 0, 1 (lo) and 2, 3 (hi) of rows 0..4 and of rows 4..8
    let f0 = _mm_unpacklo_epi32(e[0], e[1]);
    let f1 = _mm_unpackhi_epi32(e[0], e[1]);
    let g0 = _mm_unpacklo_epi32(e[2], e[3]);
    let g1 = _mm_unpackhi_epi32(e[2], e[3]);
    [
        _mm_unpacklo_epi64(f0, g0),
        _mm_unpackhi_epi64(f0, g0),
        _mm_unpacklo_epi64(f1, g1),
        _mm_unpackhi_epi64(f1, g1),
    ]
}

/// The 16-bit words of eight rows of eight words (`r`) transposed: lane `j` of result `p` is
/// lane `p` of `r[j]`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn halfwords8(r: [__m128i; 8]) -> [__m128i; 8] {
    let lo = halfwords(std::array::from_fn(|i| {
        _mm_unpacklo_epi16(r[2 * i], r[2 * i + 1])
    }));
    let hi = halfwords(std::array::from_fn(|i| {
        _mm_unpackhi_epi16(r[2 * i], r[2 * i + 1])
    }));
    [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
}

/// The eight 16-bit words of four registers transposed, two words to a result: result `k`
/// holds word `2k` of `p[0..4]` in its low 64 bits and word `2k + 1` in its high 64 bits.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn halfwords4x8(p: [__m128i; 4]) -> [__m128i; 4] {
    // 32-bit lane w: word w of p[0], p[1] (x) and of p[2], p[3] (y); words 0..4 lo, 4..8 hi
    let x0 = _mm_unpacklo_epi16(p[0], p[1]);
    let x1 = _mm_unpackhi_epi16(p[0], p[1]);
    let y0 = _mm_unpacklo_epi16(p[2], p[3]);
    let y1 = _mm_unpackhi_epi16(p[2], p[3]);
    [
        _mm_unpacklo_epi32(x0, y0),
        _mm_unpackhi_epi32(x0, y0),
        _mm_unpacklo_epi32(x1, y1),
        _mm_unpackhi_epi32(x1, y1),
    ]
}

/// Stores 32 bytes at the start of `b`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn store32(b: &mut [u8], v: __m256i) {
    assert!(b.len() >= 32);
    // SAFETY: `b` holds at least 32 bytes (checked above); unaligned store.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

/// Stores 16 bytes at the start of `b`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn store16(b: &mut [u8], v: __m128i) {
    assert!(b.len() >= 16);
    // SAFETY: `b` holds at least 16 bytes (checked above); unaligned store.
    unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) }
}
