//! AVX2 tile kernels for the K-quants (Q2_K … Q6_K weights × Q8_K activations): up to 4
//! weight rows × 4 activation rows per call, for prompts.
//!
//! Every super-block of 256 weights is unpacked once per tile into 8 vectors of 32 unsigned
//! quants (`q_c`, elements `32c..32c + 32`) and 8 vectors of 16 i16 sub-block scales (`s_c`,
//! one per `vpmaddubsw` output lane), then reused for every activation row:
//! `acc_t += vpmaddwd(s_c, vpmaddubsw(q_c, y_t[c]))`. What the unsigned quants leave out (the
//! mins of Q2_K/Q4_K/Q5_K, the `-32`/`-4` offsets of Q6_K/Q3_K) is one `vpmaddwd` of the
//! unpacked scales or mins with the activation block's 16 `bsums`. Each row keeps one i32
//! vector per activation row; at the end of a super-block the four are reduced at once to the
//! four exact integer sums, scaled by `d_x·d_y` and accumulated in f32, four activation rows
//! per vector. So the integer sums are exactly [`super::scalar`]'s; only the order of the
//! float sums differs.
//!
//! Every load reads inside a slice whose length is checked (see [`load32`], [`load16`]).

use super::scalar::f32_at;
use super::scalar::{Q2_K_BYTES, Q3_K_BYTES, Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8_K_BYTES};
use crate::types::GgmlType;
use std::arch::x86_64::*;

/// A tile of `rows.len()` × `acts.len()` dot products (lengths checked by the caller);
/// `false` where there is no tile kernel for `w`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
pub unsafe fn tile(w: GgmlType, rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) -> bool {
    let k = match w {
        GgmlType::Q2K => Q2K,
        GgmlType::Q3K => Q3K,
        GgmlType::Q4K => Q4K,
        GgmlType::Q5K => Q5K,
        GgmlType::Q6K => Q6K,
        _ => return false,
    };
    if rows.is_empty()
        || rows.len() > 4
        || acts.is_empty()
        || acts.len() > 4
        || out.len() != rows.len() * acts.len()
    {
        return false;
    }
    // SAFETY: the caller guarantees AVX2, FMA and F16C, all these functions need.
    unsafe {
        match k {
            Q2K => by_cols::<Q2K>(rows, acts, out),
            Q3K => by_cols::<Q3K>(rows, acts, out),
            Q4K => by_cols::<Q4K>(rows, acts, out),
            Q5K => by_cols::<Q5K>(rows, acts, out),
            _ => by_cols::<Q6K>(rows, acts, out),
        }
    }
}

/// Kernel ids (a const generic parameter, so each kernel is compiled on its own).
const Q2K: u8 = 2;
const Q3K: u8 = 3;
const Q4K: u8 = 4;
const Q5K: u8 = 5;
const Q6K: u8 = 6;

/// Block bytes of kernel `K`.
const fn block_bytes(k: u8) -> usize {
    match k {
        Q2K => Q2_K_BYTES,
        Q3K => Q3_K_BYTES,
        Q4K => Q4_K_BYTES,
        Q5K => Q5_K_BYTES,
        _ => Q6_K_BYTES,
    }
}

/// Whether kernel `K` has a separate min term (`− dmin·Σ m_j·bsum_j`).
const fn has_mins(k: u8) -> bool {
    matches!(k, Q2K | Q4K | Q5K)
}

/// The left shift of the offset term `Σ sc_j·bsum_j` subtracted by kernels without mins
/// (Q6_K: `q − 32`; Q3_K: `q − 4`).
const fn offset_shift(k: u8) -> i32 {
    if k == Q6K {
        5
    } else {
        2
    }
}

/// Dispatches on the number of activation rows (1..=4).
#[target_feature(enable = "avx2,fma,f16c")]
fn by_cols<const K: u8>(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) -> bool {
    match acts.len() {
        1 => run::<K, 1>(rows, acts, out),
        2 => run::<K, 2>(rows, acts, out),
        3 => run::<K, 3>(rows, acts, out),
        _ => run::<K, 4>(rows, acts, out),
    }
    true
}

/// Loads 32 bytes from the start of `b`.
#[inline]
#[target_feature(enable = "avx2")]
fn load32(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: `b` holds at least 32 bytes (checked above); unaligned load.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Loads 16 bytes from the start of `b`.
#[inline]
#[target_feature(enable = "avx2")]
fn load16(b: &[u8]) -> __m128i {
    assert!(b.len() >= 16);
    // SAFETY: `b` holds at least 16 bytes (checked above); unaligned load.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// The little-endian u32 at `b[off..off + 4]`.
#[inline(always)]
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// One weight super-block, unpacked.
struct Unpacked {
    /// Unsigned quants of elements `32c..32c + 32`.
    q: [__m256i; 8],
    /// The i16 scale of each `vpmaddubsw(q[c], ..)` output lane (lane `i` covers elements
    /// `32c + 2i`, `32c + 2i + 1`).
    s: [__m256i; 8],
    /// 16 i16 multiplied lane by lane with the activation's 16 `bsums`: the mins (Q2_K,
    /// Q4_K/Q5_K: each min twice) or the sub-block scales (Q3_K, Q6_K).
    m: __m256i,
    /// `[d, dmin, 0, 0]` of the block (`dmin` 0 where there is none).
    dm: __m128,
}

/// i16 lane `i` of each 128-bit half of `v` broadcast to all lanes of that half.
#[inline]
#[target_feature(enable = "avx2")]
fn bcast16(v: __m256i, i: usize) -> __m256i {
    let m = _mm256_set1_epi16((((2 * i + 1) << 8) | (2 * i)) as i16);
    _mm256_shuffle_epi8(v, m)
}

/// From 8 i16 `v` (lanes 0..8, repeated in both halves): lanes 0..8 = `v[2i]`, lanes
/// 8..16 = `v[2i + 1]` (the scales of two sub-blocks of 16 in one vector of 32 quants).
#[inline]
#[target_feature(enable = "avx2")]
fn pair16(v: __m256i, i: usize) -> __m256i {
    let lo = ((4 * i + 1) << 8) | (4 * i);
    let hi = ((4 * i + 3) << 8) | (4 * i + 2);
    let m = _mm256_set_m128i(_mm_set1_epi16(hi as i16), _mm_set1_epi16(lo as i16));
    _mm256_shuffle_epi8(v, m)
}

/// The f16 at `b[off..off + 2]` and the one after it (or 0 where `pair` is false) as
/// `[lo, hi, 0, 0]` (F16C: exact, including infinities and NaN).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16s(b: &[u8], off: usize, pair: bool) -> __m128 {
    let lo = u32::from(u16::from_le_bytes([b[off], b[off + 1]]));
    let bits = if pair {
        lo | u32::from(u16::from_le_bytes([b[off + 2], b[off + 3]])) << 16
    } else {
        lo
    };
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// Byte `i` of every 16-bit lane of `v` shifted right by `n` (a variable count).
#[inline]
#[target_feature(enable = "avx2")]
fn srl16(v: __m256i, n: i32) -> __m256i {
    _mm256_srl_epi16(v, _mm_cvtsi32_si128(n))
}

/// Every 16-bit lane of `v` shifted left by `n` (a variable count).
#[inline]
#[target_feature(enable = "avx2")]
fn sll16(v: __m256i, n: i32) -> __m256i {
    _mm256_sll_epi16(v, _mm_cvtsi32_si128(n))
}

/// Bit `c` of every byte of `h`, moved to bit `to` (every other bit cleared).
#[inline]
#[target_feature(enable = "avx2")]
fn bit_to(h: __m256i, c: i32, to: i32) -> __m256i {
    // a 16-bit shift by at most 7 moves no set bit across a byte boundary into bit `to`
    let v = if c >= to {
        srl16(h, c - to)
    } else {
        sll16(h, to - c)
    };
    _mm256_and_si256(v, _mm256_set1_epi8(1 << to))
}

/// The Q4_K/Q5_K 6-bit scales and mins: bytes 0..8 scales, 8..16 mins.
#[inline]
#[target_feature(enable = "avx2")]
fn k4_scales_mins(s: &[u8]) -> __m128i {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let (u0, u1, u2) = (u32_at(s, 0), u32_at(s, 4), u32_at(s, 8));
    let sc_lo = u0 & LOW6;
    let sc_hi = (u2 & LOW4) | (((u0 >> 6) & LOW2) << 4);
    let m_lo = u1 & LOW6;
    let m_hi = ((u2 >> 4) & LOW4) | (((u1 >> 6) & LOW2) << 4);
    _mm_set_epi32(m_hi as i32, m_lo as i32, sc_hi as i32, sc_lo as i32)
}

/// The scales of a Q4_K/Q5_K block (`s`), and its mins each twice (`m`), from the packed
/// 12 bytes.
#[inline]
#[target_feature(enable = "avx2")]
fn k4_parts(packed: &[u8]) -> ([__m256i; 8], __m256i) {
    let sm = k4_scales_mins(packed);
    let sc = _mm256_cvtepu8_epi16(sm);
    let sc = _mm256_permute2x128_si256(sc, sc, 0x00);
    let s = std::array::from_fn(|c| bcast16(sc, c));
    let dup = _mm_set_epi8(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
    let m = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, dup));
    (s, m)
}

/// Q4_K: `d`@0, `dmin`@2, scales@4..16, nibbles@16..144.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q4_k(bx: &[u8]) -> Unpacked {
    let bx = &bx[..Q4_K_BYTES];
    let m4 = _mm256_set1_epi8(0x0f);
    let (s, m) = k4_parts(&bx[4..16]);
    let mut q = [_mm256_setzero_si256(); 8];
    for k in 0..4 {
        let v = load32(&bx[16 + 32 * k..]);
        q[2 * k] = _mm256_and_si256(v, m4);
        q[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    Unpacked {
        q,
        s,
        m,
        dm: f16s(bx, 0, true),
    }
}

/// Q5_K: `d`@0, `dmin`@2, scales@4..16, fifth bits@16..48, nibbles@48..176.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q5_k(bx: &[u8]) -> Unpacked {
    let bx = &bx[..Q5_K_BYTES];
    let m4 = _mm256_set1_epi8(0x0f);
    let (s, m) = k4_parts(&bx[4..16]);
    let hb = load32(&bx[16..]);
    let mut q = [_mm256_setzero_si256(); 8];
    for k in 0..4 {
        let v = load32(&bx[48 + 32 * k..]);
        let c = 2 * k as i32;
        q[2 * k] = _mm256_or_si256(_mm256_and_si256(v, m4), bit_to(hb, c, 4));
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        q[2 * k + 1] = _mm256_or_si256(hi, bit_to(hb, c + 1, 4));
    }
    Unpacked {
        q,
        s,
        m,
        dm: f16s(bx, 0, true),
    }
}

/// Q6_K: low nibbles@0..128, high 2 bits@128..192, i8 scales@192..208, `d`@208. The quants
/// are unsigned (0..64); the `−32` is the offset term.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q6_k(bx: &[u8]) -> Unpacked {
    let bx = &bx[..Q6_K_BYTES];
    let m4 = _mm256_set1_epi8(0x0f);
    let m3 = _mm256_set1_epi8(0x30);
    let sc = _mm256_cvtepi8_epi16(load16(&bx[192..]));
    let halves = [
        _mm256_permute2x128_si256(sc, sc, 0x00),
        _mm256_permute2x128_si256(sc, sc, 0x11),
    ];
    let mut q = [_mm256_setzero_si256(); 8];
    let mut s = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        let l0 = load32(&bx[64 * h..]);
        let l1 = load32(&bx[64 * h + 32..]);
        let qh = load32(&bx[128 + 32 * h..]);
        // high bits 2i, 2i + 1 of each byte to bits 4, 5
        let h0 = _mm256_and_si256(_mm256_slli_epi16(qh, 4), m3);
        let h1 = _mm256_and_si256(_mm256_slli_epi16(qh, 2), m3);
        let h2 = _mm256_and_si256(qh, m3);
        let h3 = _mm256_and_si256(_mm256_srli_epi16(qh, 2), m3);
        q[4 * h] = _mm256_or_si256(_mm256_and_si256(l0, m4), h0);
        q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), h1);
        q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), h2);
        q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), h3);
        for i in 0..4 {
            s[4 * h + i] = pair16(halves[h], i);
        }
    }
    Unpacked {
        q,
        s,
        m: sc,
        dm: f16s(bx, 208, false),
    }
}

/// Q2_K: scales (low nibble) and mins (high nibble)@0..16, 2-bit quants@16..80, `d`@80,
/// `dmin`@82.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q2_k(bx: &[u8]) -> Unpacked {
    let bx = &bx[..Q2_K_BYTES];
    let m3 = _mm256_set1_epi8(3);
    let ms = load16(bx);
    let low4 = _mm_set1_epi8(0x0f);
    let sc = _mm256_cvtepu8_epi16(_mm_and_si128(ms, low4));
    let m = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(ms, 4), low4));
    let halves = [
        _mm256_permute2x128_si256(sc, sc, 0x00),
        _mm256_permute2x128_si256(sc, sc, 0x11),
    ];
    let mut q = [_mm256_setzero_si256(); 8];
    let mut s = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        let v = load32(&bx[16 + 32 * h..]);
        q[4 * h] = _mm256_and_si256(v, m3);
        q[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 2), m3);
        q[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m3);
        q[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16(v, 6), m3);
        for i in 0..4 {
            s[4 * h + i] = pair16(halves[h], i);
        }
    }
    Unpacked {
        q,
        s,
        m,
        dm: f16s(bx, 80, true),
    }
}

/// Q3_K: high-bit mask@0..32, 2-bit quants@32..96, 6-bit scales@96..108, `d`@108. The quants
/// are unsigned (`low | high << 2`, 0..8); the `−4` is the offset term.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q3_k(bx: &[u8]) -> Unpacked {
    let bx = &bx[..Q3_K_BYTES];
    let m3 = _mm256_set1_epi8(3);
    const K1: u32 = 0x0303_0303;
    const K2: u32 = 0x0f0f_0f0f;
    let (a0, a1, t) = (u32_at(bx, 96), u32_at(bx, 100), u32_at(bx, 104));
    let sc8 = _mm_sub_epi8(
        _mm_set_epi32(
            (((a1 >> 4) & K2) | (((t >> 6) & K1) << 4)) as i32,
            (((a0 >> 4) & K2) | (((t >> 4) & K1) << 4)) as i32,
            ((a1 & K2) | (((t >> 2) & K1) << 4)) as i32,
            ((a0 & K2) | ((t & K1) << 4)) as i32,
        ),
        _mm_set1_epi8(32),
    );
    let sc = _mm256_cvtepi8_epi16(sc8);
    let halves = [
        _mm256_permute2x128_si256(sc, sc, 0x00),
        _mm256_permute2x128_si256(sc, sc, 0x11),
    ];
    let hm = load32(bx);
    let mut q = [_mm256_setzero_si256(); 8];
    let mut s = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        let v = load32(&bx[32 + 32 * h..]);
        let lo = [
            _mm256_and_si256(v, m3),
            _mm256_and_si256(_mm256_srli_epi16(v, 2), m3),
            _mm256_and_si256(_mm256_srli_epi16(v, 4), m3),
            _mm256_and_si256(_mm256_srli_epi16(v, 6), m3),
        ];
        for (i, &l) in lo.iter().enumerate() {
            let c = 4 * h + i;
            q[c] = _mm256_or_si256(l, bit_to(hm, c as i32, 2));
            s[c] = pair16(halves[h], i);
        }
    }
    Unpacked {
        q,
        s,
        m: sc,
        dm: f16s(bx, 108, false),
    }
}

/// Unpacks one block of kernel `K`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack<const K: u8>(bx: &[u8]) -> Unpacked {
    match K {
        Q2K => unpack_q2_k(bx),
        Q3K => unpack_q3_k(bx),
        Q4K => unpack_q4_k(bx),
        Q5K => unpack_q5_k(bx),
        _ => unpack_q6_k(bx),
    }
}

/// The 8 i32 of each `v[t]` (`t < T`) summed in pairs of lanes: lane `t` of each 128-bit half
/// holds half of the sum of `v[t]` (lanes `>= T` zero).
#[inline]
#[target_feature(enable = "avx2")]
fn reduce_halves<const T: usize>(v: &[__m256i; T]) -> __m256i {
    let z = _mm256_setzero_si256();
    let g = |t: usize| if t < T { v[t] } else { z };
    let h01 = _mm256_hadd_epi32(g(0), g(1));
    let h23 = _mm256_hadd_epi32(g(2), g(3));
    _mm256_hadd_epi32(h01, h23)
}

/// The tile kernel: `rows.len()` (1..=4) rows of kernel `K` × `T` activation rows.
#[target_feature(enable = "avx2,fma,f16c")]
fn run<const K: u8, const T: usize>(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    let wb = block_bytes(K);
    let nr = rows.len();
    assert!(nr <= 4 && acts.len() == T && out.len() == nr * T);
    let nb = acts[0].len() / Q8_K_BYTES;
    assert!(acts.iter().all(|a| a.len() == nb * Q8_K_BYTES));
    assert!(rows.iter().all(|r| r.len() == nb * wb));
    // per row: lanes 0..4 Σ d·dy·isum, lanes 4..8 Σ dmin·dy·imin (per activation row)
    let mut f = [_mm256_setzero_ps(); 4];
    for b in 0..nb {
        let by: [&[u8]; T] =
            std::array::from_fn(|t| &acts[t][b * Q8_K_BYTES..(b + 1) * Q8_K_BYTES]);
        let mut dyv = [0f32; 4];
        for t in 0..T {
            dyv[t] = f32_at(by[t], 0);
        }
        let dy = _mm_setr_ps(dyv[0], dyv[1], dyv[2], dyv[3]);
        let dy = _mm256_set_m128(dy, dy);
        for (r, row) in rows.iter().enumerate() {
            let u = unpack::<K>(&row[b * wb..(b + 1) * wb]);
            let mut acc = [_mm256_setzero_si256(); T];
            for c in 0..8 {
                for t in 0..T {
                    let y = load32(&by[t][4 + 32 * c..]);
                    let p = _mm256_maddubs_epi16(u.q[c], y);
                    acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(u.s[c], p));
                }
            }
            let mut mins = [_mm256_setzero_si256(); T];
            for t in 0..T {
                let p = _mm256_madd_epi16(u.m, load32(&by[t][4 + 256..]));
                if has_mins(K) {
                    mins[t] = p;
                } else {
                    let o = _mm256_sll_epi32(p, _mm_cvtsi32_si128(offset_shift(K)));
                    acc[t] = _mm256_sub_epi32(acc[t], o);
                }
            }
            // [isum_t | imin_t] (t = 0..4): exact integer sums, then one 8-lane multiply-add
            // by [d·dy_t | dmin·dy_t]
            let ha = reduce_halves(&acc);
            let sums = if has_mins(K) {
                let hm = reduce_halves(&mins);
                _mm256_add_epi32(
                    _mm256_permute2x128_si256(ha, hm, 0x20),
                    _mm256_permute2x128_si256(ha, hm, 0x31),
                )
            } else {
                let s = _mm_add_epi32(_mm256_castsi256_si128(ha), _mm256_extracti128_si256(ha, 1));
                _mm256_zextsi128_si256(s)
            };
            let d = _mm_permute_ps(u.dm, 0x00);
            let dmin = _mm_permute_ps(u.dm, 0x55);
            let fac = _mm256_mul_ps(_mm256_set_m128(dmin, d), dy);
            f[r] = _mm256_fmadd_ps(fac, _mm256_cvtepi32_ps(sums), f[r]);
        }
    }
    for (r, o) in out.chunks_exact_mut(T).enumerate() {
        let mut v = [0f32; 4];
        let fr = _mm_sub_ps(_mm256_castps256_ps128(f[r]), _mm256_extractf128_ps(f[r], 1));
        // SAFETY: `v` holds 4 floats; unaligned store.
        unsafe { _mm_storeu_ps(v.as_mut_ptr(), fr) };
        o.copy_from_slice(&v[..T]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{random_weights, unit_activations, Rng};
    use super::super::{scalar, vec_dot_tile_with, SimdLevel};
    use super::*;

    /// Every tile shape (1..=4 × 1..=4) of every K-quant on integer inputs (unit f16/f32
    /// scales, so every product and sum is exact) equals the scalar reference exactly.
    #[test]
    fn kernels_tile_k_exact_on_integer_inputs() {
        if !SimdLevel::Avx2.available() {
            return;
        }
        let mut rng = Rng(21);
        for w in [
            GgmlType::Q2K,
            GgmlType::Q3K,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
        ] {
            for nb in [1usize, 2, 3, 8] {
                let n = nb * 256;
                let rows: Vec<Vec<u8>> = (0..4)
                    .map(|_| random_weights(&mut rng, w, n, |_| 1.0))
                    .collect();
                let acts: Vec<Vec<u8>> = (0..4).map(|_| unit_activations(&mut rng, w, n)).collect();
                for nr in 1..=4 {
                    for nc in 1..=4 {
                        let rs: Vec<&[u8]> = rows[..nr].iter().map(|r| &r[..]).collect();
                        let ts: Vec<&[u8]> = acts[..nc].iter().map(|a| &a[..]).collect();
                        let mut out = vec![f32::NAN; nr * nc];
                        // SAFETY: AVX2 (with FMA and F16C) is available (checked above).
                        assert!(unsafe { tile(w, &rs, &ts, &mut out) }, "{w}");
                        let mut via_api = vec![f32::NAN; nr * nc];
                        vec_dot_tile_with(SimdLevel::Avx2, w, n, &rs, &ts, &mut via_api);
                        for r in 0..nr {
                            for t in 0..nc {
                                let want = scalar::vec_dot(w, rs[r], ts[t]).unwrap();
                                let got = out[r * nc + t];
                                assert_eq!(got, want, "{w} {nr}x{nc} [{r},{t}] n={n}");
                                assert_eq!(via_api[r * nc + t], want, "{w} api");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn kernels_tile_k_rejects_bad_shapes() {
        if !SimdLevel::Avx2.available() {
            return;
        }
        let row = vec![0u8; Q4_K_BYTES];
        let act = vec![0u8; Q8_K_BYTES];
        let mut out = vec![0f32; 5];
        let rows: Vec<&[u8]> = vec![&row; 5];
        // SAFETY: AVX2 (with FMA and F16C) is available (checked above).
        unsafe {
            assert!(!tile(GgmlType::Q4K, &rows, &[&act], &mut out));
            assert!(!tile(GgmlType::Q8_0, &rows[..1], &[&act], &mut out[..1]));
            assert!(!tile(GgmlType::Q4K, &rows[..1], &[&act], &mut out[..2]));
        }
    }
}
