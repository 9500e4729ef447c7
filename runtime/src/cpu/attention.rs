//! Causal multi-head attention over the KV cache, with SIMD kernels.
//!
//! For every query head `h` (kv head `h / (heads / kv_heads)`) and every query token at
//! position `pos`:
//!
//! ```text
//! s_j = q·k_j / sqrt(head_dim)        j = 0..=pos       scores()        one pass over K
//! p   = softmax(s)                                      softmax()
//! a   = Σ_j p_j v_j                                     weighted_sum()  one pass over V
//! ```
//!
//! * The cache stores each kv head's rows contiguously ([`crate::kv_cache`]), so both passes
//!   read memory sequentially, in the cache's own type: f16 rows are widened in registers
//!   (F16C), q8_0 and q4_0 keys are multiplied in integers block by block like ggml's
//!   `vec_dot_q8_0_q8_0` / `vec_dot_q4_0_q8_0` (the query quantized to Q8_0 once per token;
//!   q4_0 keys are stored eight positions to a group and scored by the repacked weights'
//!   Q4_0×8 matrix × vector kernel), q8_0 values are widened in registers, and q4_0 values,
//!   stored by dimension (32 positions of one dimension to a block), are summed by the same
//!   Q4_0×8 kernel with the weights quantized to two Q8_0 rows (16 bits, [`Weights`]), two
//!   groups of eight dimensions at a time; nothing is converted to an f32 copy first. Keys and
//!   values may have different types. The q4_0 kernels read two runs of the cache at once, and
//!   every AVX2 kernel asks for the cache's lines 2 KiB ahead of the row or block column in
//!   hand (the cache is in 4 KiB pages, where the hardware prefetchers stop).
//! * Kernels: AVX2 + FMA + F16C, chosen at run time (with `xverse_quant::kernels`' level), and a
//!   portable scalar version of each, which the unit tests compare them with.
//! * Threads: one rayon task per (query head, block of query tokens): a generated token gives
//!   one task per head, a prompt more.
//! * Numerics as before (and as ggml): with an f16 cache the query is rounded to f16 before
//!   its products with the keys; the softmax subtracts the maximum and sums in f64; the
//!   weights stay f32 in the weighted sum (over q4_0 values: 16 bits, see above). The vector
//!   `exp` is a Cephes-style polynomial (≈1 ulp), the scalar one `f32::exp`.
//!
//! `XVERSE_ATTENTION=reference` in the environment selects [`attention_reference`] instead
//! (the previous, scalar implementation: it copies each head's rows to f32 first), for
//! comparisons; `XVERSE_ATTENTION=scalar` the scalar kernels.

use std::sync::OnceLock;

use rayon::prelude::*;
use xverse_quant::blocks::q8_0::{self, BlockQ8_0};
use xverse_quant::kernels::{self, q4_0x8, SimdLevel};
use xverse_quant::GgmlType;

use super::matmul::round_activations;
use super::ops::{dot, round_f16, softmax};
use crate::error::RuntimeError;
use crate::hparams::Hparams;
use crate::kv_cache::{CacheType, Columns, HeadRows, KvTypes, LayerCache, PackedRows};

/// Elements per Q8_0 / Q4_0 block.
const QK: usize = 32;

/// Query tokens per task of a prompt.
const TOKENS_PER_TASK: usize = 16;

/// Cached positions per kernel call in the passes over K and V (the weighted-sum kernels of
/// the block types add a block column of all the call's rows at a time, which then stay in
/// L1 across the columns).
const ROWS_PER_CALL: usize = 64;

/// Which kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The previous implementation ([`attention_reference`]).
    Reference,
    /// Portable scalar kernels.
    Scalar,
    /// AVX2 + FMA + F16C kernels.
    Avx2,
}

impl Level {
    /// The best level this CPU supports: AVX2 where the matrix kernels' detection
    /// ([`kernels::hardware_level`]) found AVX2, FMA and F16C (AVX-512 implies them).
    pub fn detect() -> Level {
        Self::from_simd(kernels::hardware_level())
    }

    /// The level attention uses: the matrix kernels' level ([`kernels::simd_level`], so
    /// `XVERSE_SIMD` caps both), unless `XVERSE_ATTENTION` says `reference` or `scalar`
    /// (read once).
    pub fn current() -> Level {
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| match std::env::var("XVERSE_ATTENTION").as_deref() {
            Ok("reference") => Level::Reference,
            Ok("scalar") => Level::Scalar,
            _ => Self::from_simd(kernels::simd_level()),
        })
    }

    fn from_simd(l: SimdLevel) -> Level {
        if l >= SimdLevel::Avx2 {
            Level::Avx2
        } else {
            Level::Scalar
        }
    }
}

/// Causal multi-head attention of the queries `q` (`n_tokens × hidden`, already rotated) of
/// tokens at positions `pos0..` over the cached keys and values of positions `0..=pos`.
/// Returns `n_tokens × hidden`.
pub fn attention(
    hp: &Hparams,
    cache: &LayerCache,
    cache_type: KvTypes,
    q: &[f32],
    pos0: usize,
    n_tokens: usize,
) -> Result<Vec<f32>, RuntimeError> {
    attention_with(Level::current(), hp, cache, cache_type, q, pos0, n_tokens)
}

/// The query of one token, prepared for the products with the cache's keys.
enum Query<'a> {
    /// f32 values (rounded to f16 for an f16 cache).
    F32(&'a [f32]),
    /// Q8_0 blocks (for q8_0 and q4_0 keys) and, for q4_0 keys (stored eight positions to a
    /// group), the sum of each block's quants ([`q4_0x8::block_sums`]; empty otherwise).
    Q8(&'a [BlockQ8_0], &'a [i32]),
}

/// [`attention`] with the kernels of `level`.
pub fn attention_with(
    level: Level,
    hp: &Hparams,
    cache: &LayerCache,
    cache_type: KvTypes,
    q: &[f32],
    pos0: usize,
    n_tokens: usize,
) -> Result<Vec<f32>, RuntimeError> {
    if level == Level::Reference {
        return attention_reference(hp, cache, cache_type, q, pos0, n_tokens);
    }
    let dim = hp.hidden as usize;
    let hd = hp.head_dim as usize;
    let heads = hp.heads as usize;
    let group = (hp.heads / hp.kv_heads) as usize;
    let n_kv = pos0 + n_tokens;
    let scale = 1.0 / (hd as f32).sqrt();
    if q.len() != n_tokens * dim || cache.len() < n_kv {
        return Err(RuntimeError::new(format!(
            "attention: {} query values for {n_tokens} tokens of {dim}, {} cached positions for {n_kv}",
            q.len(),
            cache.len()
        )));
    }
    for ty in [cache_type.k, cache_type.v] {
        if !hd.is_multiple_of(ty.block_elems()) {
            return Err(RuntimeError::new(format!(
                "attention: {ty} cache with a head size of {hd}"
            )));
        }
    }

    // tasks: (head, first token) in blocks of TOKENS_PER_TASK tokens
    let blocks = n_tokens.div_ceil(TOKENS_PER_TASK);
    let results: Vec<Vec<f32>> = (0..heads * blocks)
        .into_par_iter()
        .map(|task| {
            let (h, b) = (task / blocks, task % blocks);
            let t0 = b * TOKENS_PER_TASK;
            let t1 = (t0 + TOKENS_PER_TASK).min(n_tokens);
            let kvh = h / group;
            let keys = cache.k_rows(kvh, n_kv);
            let values = cache.v_rows(kvh, n_kv);
            let mut out = vec![0f32; (t1 - t0) * hd];
            let mut scores = vec![0f32; n_kv];
            let mut qf = vec![0f32; hd];
            let mut qb = Vec::new();
            let mut sums = Vec::new();
            for (t, out_t) in (t0..t1).zip(out.chunks_exact_mut(hd)) {
                let pos = pos0 + t;
                let qh = &q[t * dim + h * hd..t * dim + (h + 1) * hd];
                let query = match cache_type.k {
                    CacheType::F32 => Query::F32(qh),
                    CacheType::F16 => {
                        qf.copy_from_slice(qh);
                        round_f16(&mut qf);
                        Query::F32(&qf)
                    }
                    CacheType::Q8_0 | CacheType::Q4_0 => {
                        qb.resize(hd / QK, bytemuck::Zeroable::zeroed());
                        q8_0::quantize_row(qh, &mut qb);
                        if cache_type.k == CacheType::Q4_0 {
                            q4_0x8::block_sums(bytemuck::cast_slice(&qb), &mut sums);
                        }
                        Query::Q8(&qb, &sums)
                    }
                };
                // the positions up to this token's own (causal mask)
                let s = &mut scores[..=pos];
                for_chunks(s.len(), &keys, |r| {
                    scores_with(
                        level,
                        &query,
                        keys.rows(r.clone(), hd),
                        hd,
                        scale,
                        &mut s[r],
                    )
                });
                softmax_with(level, s);
                out_t.fill(0.0);
                for_chunks(s.len(), &values, |r| {
                    weighted_sum_add(level, &s[r.clone()], values.rows(r, hd), hd, out_t)
                });
            }
            out
        })
        .collect();

    let mut att = vec![0f32; n_tokens * dim];
    for (task, out) in results.iter().enumerate() {
        let (h, b) = (task / blocks, task % blocks);
        for (i, out_t) in out.chunks_exact(hd).enumerate() {
            let t = b * TOKENS_PER_TASK + i;
            att[t * dim + h * hd..t * dim + (h + 1) * hd].copy_from_slice(out_t);
        }
    }
    Ok(att)
}

/// Calls `f` on consecutive ranges of `0..n` positions of `rows`: at most [`ROWS_PER_CALL`]
/// for rows stored one position after another, all of them at once for the packed layouts
/// (q4_0 keys eight positions to a group, q4_0 values by dimension), whose kernels take a
/// run of groups or columns in one call. (Prefetching a range's rows 4 KiB ahead before the
/// range was measured slower: q8_0 cache at depth 16384, 1 thread, 3.2–3.4 against 3.7–3.9
/// tokens/s. The kernels now prefetch 2 KiB ahead of each row instead, which is faster.)
fn for_chunks(n: usize, rows: &HeadRows<'_>, mut f: impl FnMut(std::ops::Range<usize>)) {
    let per = match rows {
        HeadRows::Q4_0x8(_) | HeadRows::Q4_0Columns(_) => n.max(1),
        HeadRows::F32(_) | HeadRows::F16(_) | HeadRows::Q8_0(_) => ROWS_PER_CALL,
    };
    let mut a = 0;
    while a < n {
        let b = (a + per).min(n);
        f(a..b);
        a = b;
    }
}

// ---------------------------------------------------------------------------------------------
// scores: s_j = q·k_j * scale for j < s.len()

fn scores_with(
    level: Level,
    q: &Query<'_>,
    keys: HeadRows<'_>,
    hd: usize,
    scale: f32,
    s: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx2 {
        // SAFETY: `Level::Avx2` is only chosen (by `Level::detect`, or by tests after checking)
        // on a CPU with AVX2, FMA and F16C, what the kernels need.
        unsafe {
            match (q, keys) {
                (Query::F32(q), HeadRows::F32(k)) => avx2::scores_f32(q, k, hd, scale, s),
                (Query::F32(q), HeadRows::F16(k)) => avx2::scores_f16(q, k, hd, scale, s),
                (Query::Q8(q, _), HeadRows::Q8_0(k)) => avx2::scores_q8_0(q, k, scale, s),
                (Query::Q8(q, sums), HeadRows::Q4_0x8(k)) => {
                    scores_q4_0x8(SimdLevel::Avx2, q, sums, k, hd, scale, s)
                }
                _ => scores_scalar(q, keys, hd, scale, s),
            }
        }
        return;
    }
    let _ = level;
    scores_scalar(q, keys, hd, scale, s)
}

/// Portable [`scores_with`].
fn scores_scalar(q: &Query<'_>, keys: HeadRows<'_>, hd: usize, scale: f32, s: &mut [f32]) {
    match (q, keys) {
        (Query::F32(q), HeadRows::F32(k)) => {
            for (sj, kj) in s.iter_mut().zip(k.chunks_exact(hd)) {
                *sj = dot(q, kj) * scale;
            }
        }
        (Query::F32(q), HeadRows::F16(k)) => {
            let mut row = vec![0f32; hd];
            for (sj, kj) in s.iter_mut().zip(k.chunks_exact(hd)) {
                for (r, x) in row.iter_mut().zip(kj) {
                    *r = x.to_f32();
                }
                *sj = dot(q, &row) * scale;
            }
        }
        (Query::Q8(q, sums), HeadRows::Q4_0x8(k)) => {
            scores_q4_0x8(SimdLevel::Scalar, q, sums, k, hd, scale, s)
        }
        (Query::Q8(q, _), HeadRows::Q8_0(k)) => {
            for (sj, kj) in s.iter_mut().zip(k.chunks_exact(q.len())) {
                let mut acc = 0f32;
                for (a, b) in q.iter().zip(kj) {
                    let isum: i32 =
                        a.qs.iter()
                            .zip(&b.qs)
                            .map(|(&x, &y)| i32::from(x) * i32::from(y))
                            .sum();
                    acc += a.d.to_f32() * b.d.to_f32() * isum as f32;
                }
                *sj = acc * scale;
            }
        }
        // a query prepared for another cache type: dequantize (not reached from attention)
        (q, keys) => {
            let qv = match q {
                Query::F32(q) => q.to_vec(),
                Query::Q8(q, _) => {
                    let mut v = vec![0f32; q.len() * QK];
                    q8_0::dequantize_row(q, &mut v);
                    v
                }
            };
            let mut row = vec![0f32; hd];
            for (j, sj) in s.iter_mut().enumerate() {
                read_row(keys, j, hd, &mut row);
                *sj = dot(&qv, &row) * scale;
            }
        }
    }
}

/// Row `j` of `rows` as f32.
fn read_row(rows: HeadRows<'_>, j: usize, hd: usize, out: &mut [f32]) {
    match rows {
        HeadRows::F32(r) => out.copy_from_slice(&r[j * hd..(j + 1) * hd]),
        HeadRows::F16(r) => {
            for (o, x) in out.iter_mut().zip(&r[j * hd..(j + 1) * hd]) {
                *o = x.to_f32();
            }
        }
        HeadRows::Q8_0(r) => {
            let nb = hd / QK;
            q8_0::dequantize_row(&r[j * nb..(j + 1) * nb], out);
        }
        HeadRows::Q4_0x8(r) => r.read(j, hd, out),
        HeadRows::Q4_0Columns(c) => c.read(j, out),
    }
}

/// `s[j] = q·k_j * scale` for Q4_0 keys stored eight to a group: [`q4_0x8`]'s matrix × vector
/// kernel at `level` (the exact integer products of `vec_dot_q4_0_q8_0` per block, one scale
/// conversion and no horizontal sum per eight keys), one group at a time; a group's slots
/// before the first position (`skip`) or past the last are computed and dropped. `sums`: the
/// query's [`q4_0x8::block_sums`] (a wrong length gives zeros, as the kernel does).
fn scores_q4_0x8(
    level: SimdLevel,
    q: &[BlockQ8_0],
    sums: &[i32],
    k: PackedRows<'_>,
    hd: usize,
    scale: f32,
    s: &mut [f32],
) {
    /// Groups per kernel call: their scores go to a buffer on the stack first (the first
    /// group's may start before the view).
    const GROUPS_PER_CALL: usize = 64;
    let act: &[u8] = bytemuck::cast_slice(q);
    let gb = hd / QK * q4_0x8::GROUP_BLOCK_BYTES;
    let n_out = k.rows.min(s.len());
    let mut buf = [0f32; GROUPS_PER_CALL * q4_0x8::ROWS];
    // output j is row k.skip + j of the groups
    let (mut j, mut g0) = (0, 0);
    while j < n_out {
        let ng = (k.skip + n_out - g0 * q4_0x8::ROWS)
            .div_ceil(q4_0x8::ROWS)
            .min(GROUPS_PER_CALL);
        let Some(groups) = k.groups.get(g0 * gb..(g0 + ng) * gb) else {
            break;
        };
        let out = &mut buf[..ng * q4_0x8::ROWS];
        q4_0x8::gemv_groups_with(level, hd, groups, act, sums, out);
        let from = if g0 == 0 { k.skip } else { 0 };
        let n = (out.len() - from).min(n_out - j);
        for (sj, &x) in s[j..j + n].iter_mut().zip(&out[from..]) {
            *sj = x * scale;
        }
        j += n;
        g0 += ng;
    }
}

// ---------------------------------------------------------------------------------------------
// softmax in place

fn softmax_with(level: Level, s: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx2 {
        // SAFETY: as in `scores_with`: `Level::Avx2` implies AVX2, FMA and F16C.
        unsafe { avx2::softmax(s) };
        return;
    }
    let _ = level;
    softmax(s)
}

// ---------------------------------------------------------------------------------------------
// weighted sum: out = Σ_j p[j] v_j (out is overwritten)

#[cfg(test)]
fn weighted_sum_with(level: Level, p: &[f32], values: HeadRows<'_>, hd: usize, out: &mut [f32]) {
    out.fill(0.0);
    weighted_sum_add(level, p, values, hd, out)
}

/// `out += Σ_j p[j] v_j`.
fn weighted_sum_add(level: Level, p: &[f32], values: HeadRows<'_>, hd: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx2 {
        // SAFETY: as in `scores_with`: `Level::Avx2` implies AVX2, FMA and F16C.
        unsafe {
            match values {
                HeadRows::F32(v) => avx2::weighted_sum_f32(p, v, hd, out),
                HeadRows::F16(v) => avx2::weighted_sum_f16(p, v, hd, out),
                HeadRows::Q8_0(v) => avx2::weighted_sum_q8_0(p, v, hd, out),
                HeadRows::Q4_0Columns(v) => weighted_sum_columns(level, p, v, hd, out),
                // values are never stored eight to a group
                HeadRows::Q4_0x8(_) => weighted_sum_scalar(p, values, hd, out),
            }
        }
        return;
    }
    let _ = level;
    weighted_sum_scalar(p, values, hd, out)
}

/// `out += Σ_j p[j] v_j` over Q4_0 values stored by dimension ([`Columns`]): the weights of
/// the quantized columns as two Q8_0 rows ([`Weights`]), then for each eight dimensions
/// [`q4_0x8`]'s kernel at `level` over those columns with both rows at once (each quant
/// unpacked once; a column's slots outside the view have weight 0); the positions not yet
/// quantized (the last < 32) are f32 rows with the f32 weights.
fn weighted_sum_columns(level: Level, p: &[f32], v: Columns<'_>, hd: usize, out: &mut [f32]) {
    let simd = match level {
        Level::Avx2 => SimdLevel::Avx2,
        _ => SimdLevel::Scalar,
    };
    if let Some((first, end, c0, c1)) = v.quantized() {
        let w = Weights::new(
            level,
            &p[first - v.start..end - v.start],
            first % QK,
            c1 - c0,
        );
        let acts: [&[u8]; 2] = [bytemuck::cast_slice(&w.hi), bytemuck::cast_slice(&w.lo)];
        let sums: [&[i32]; 2] = [&w.hi_sums, &w.lo_sums];
        let n = (c1 - c0) * QK;
        let add = |out8: &mut [f32], o: &[f32; 2 * q4_0x8::ROWS]| {
            for (j, x) in out8.iter_mut().enumerate() {
                *x += (o[2 * j] + o[2 * j + 1]) * w.unscale;
            }
        };
        // two groups of eight dimensions at a time: two runs of memory streamed at once
        let (mut oa, mut ob) = ([0f32; 2 * q4_0x8::ROWS], [0f32; 2 * q4_0x8::ROWS]);
        let mut pairs = out.chunks_exact_mut(2 * q4_0x8::ROWS);
        for (i, out16) in (&mut pairs).enumerate() {
            let groups = (v.group(2 * i, c0, c1), v.group(2 * i + 1, c0, c1));
            q4_0x8::gemm2x2_with(simd, n, groups, acts, sums, &mut oa, &mut ob);
            let (a, b) = out16.split_at_mut(q4_0x8::ROWS);
            add(a, &oa);
            add(b, &ob);
        }
        let rest = pairs.into_remainder();
        if !rest.is_empty() {
            let g = hd / q4_0x8::ROWS - 1;
            q4_0x8::gemm_with(simd, n, v.group(g, c0, c1), &acts, &sums, &mut oa);
            add(rest, &oa);
        }
    }
    let (first, tail) = v.tail();
    if !tail.is_empty() {
        weighted_sum_add(level, &p[first - v.start..], HeadRows::F32(tail), hd, out);
    }
}

/// The weights of a weighted sum over values stored by dimension, as the Q4_0×8 kernel takes
/// them: Q8_0 blocks of 32 positions, twice. `hi` is the weights quantized (ggml's scale `max
/// / 127`, quants rounded to nearest, ties to even), `lo` what `hi` misses (`p - hi`,
/// quantized the same way), so `hi + lo` is within `max / 254²` or so of each weight (16 bits
/// where one Q8_0 row alone would keep 8: that alone put errors of ~1 % in attention's output
/// where one position's weight dominates its block). With each block's sum of quants
/// (`*_sums`, for the kernel's `-8` offset).
///
/// The weights are first multiplied by a power of two that brings the largest to `2^15..2^16`
/// (and the products by `unscale` after), so the f16 scales of both rows stay normal numbers:
/// softmax weights are as small as `1 / n` over `n` positions, whose scales would otherwise
/// be f16 subnormals with few bits.
struct Weights {
    hi: Vec<BlockQ8_0>,
    lo: Vec<BlockQ8_0>,
    hi_sums: Vec<i32>,
    lo_sums: Vec<i32>,
    /// The inverse of the power of two the weights were multiplied by.
    unscale: f32,
}

impl Weights {
    /// `p` in `n_blocks` blocks: the first `lead` positions of the first block and those past
    /// `p` have weight 0. The same bits at every level.
    fn new(level: Level, p: &[f32], lead: usize, n_blocks: usize) -> Weights {
        // 2^(15 - e) for the largest weight m · 2^e (m in [1, 2)); 1 for zeros, infinities
        // or NaN
        let max = max_abs(p);
        let e = ((max.to_bits() >> 23) & 0xff) as i32 - 127;
        let (scale, unscale) = if max.is_normal() {
            let k = (15 - e).clamp(-126, 126);
            let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
            (pow2(k), pow2(-k))
        } else {
            (1.0, 1.0)
        };
        let mut w = Weights {
            hi: Vec::with_capacity(n_blocks),
            lo: Vec::with_capacity(n_blocks),
            hi_sums: Vec::with_capacity(n_blocks),
            lo_sums: Vec::with_capacity(n_blocks),
            unscale,
        };
        let mut x = [0f32; QK];
        for b in 0..n_blocks {
            // positions b·32 - lead .. of p, times the scale (exact: a power of two)
            x.fill(0.0);
            let lo = (b * QK).checked_sub(lead);
            let (from, skip) = match lo {
                Some(lo) => (lo, 0),
                None => (0, lead - b * QK),
            };
            let take = p.len().saturating_sub(from).min(QK - skip);
            for (x, &p) in x[skip..skip + take].iter_mut().zip(&p[from..]) {
                *x = p * scale;
            }
            let block = &x;
            #[cfg(target_arch = "x86_64")]
            let [(hi, hs), (lo, ls)] = if level == Level::Avx2 {
                // SAFETY: `Level::Avx2` implies AVX2, FMA and F16C (see `scores_with`).
                unsafe { avx2::quantize_weight_block(block) }
            } else {
                quantize_weight_block(block)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let [(hi, hs), (lo, ls)] = {
                let _ = level;
                quantize_weight_block(block)
            };
            w.hi.push(hi);
            w.lo.push(lo);
            w.hi_sums.push(hs);
            w.lo_sums.push(ls);
        }
        w
    }
}

/// The largest `|x|` of `p` (0 for none; NaNs ignored, as `f32::max` does), in eight lanes
/// that the compiler keeps in one vector register (`f32::max` folded one at a time is not
/// vectorized: per head and token this scan showed next to the kernels at small depths).
fn max_abs(p: &[f32]) -> f32 {
    let larger = |m: f32, a: f32| if a > m { a } else { m };
    let mut m = [0f32; 8];
    let mut chunks = p.chunks_exact(8);
    for c in &mut chunks {
        for (m, &x) in m.iter_mut().zip(c) {
            *m = larger(*m, x.abs());
        }
    }
    for &x in chunks.remainder() {
        m[0] = larger(m[0], x.abs());
    }
    m.into_iter().fold(0.0, larger)
}

/// One block of [`Weights`]: `[hi, lo]`, each a Q8_0 block and the sum of its quants.
/// Portable [`avx2::quantize_weight_block`].
fn quantize_weight_block(x: &[f32; QK]) -> [(BlockQ8_0, i32); 2] {
    /// A Q8_0 block of `x` and its sum, with the quants as f32 times the stored scale.
    fn q8(x: &[f32; QK]) -> ((BlockQ8_0, i32), [f32; QK]) {
        let amax = x.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d >= f32::MIN_POSITIVE { 1.0 / d } else { 0.0 };
        let mut b = BlockQ8_0 {
            d: half::f16::from_f32(d),
            qs: [0; QK],
        };
        let d16 = b.d.to_f32();
        let mut sum = 0;
        let mut back = [0f32; QK];
        for ((q, &v), y) in b.qs.iter_mut().zip(x).zip(&mut back) {
            let i = ((v * id).round_ties_even() as i32).clamp(-127, 127);
            *q = i as i8;
            sum += i;
            *y = d16 * i as f32;
        }
        ((b, sum), back)
    }
    let (hi, back) = q8(x);
    let residual: [f32; QK] = std::array::from_fn(|i| x[i] - back[i]);
    let (lo, _) = q8(&residual);
    [hi, lo]
}

/// Portable [`weighted_sum_add`].
fn weighted_sum_scalar(p: &[f32], values: HeadRows<'_>, hd: usize, out: &mut [f32]) {
    match values {
        HeadRows::Q4_0Columns(v) => weighted_sum_columns(Level::Scalar, p, v, hd, out),
        HeadRows::F32(v) => {
            for (&pj, vj) in p.iter().zip(v.chunks_exact(hd)) {
                for (o, &x) in out.iter_mut().zip(vj) {
                    *o += pj * x;
                }
            }
        }
        HeadRows::F16(v) => {
            for (&pj, vj) in p.iter().zip(v.chunks_exact(hd)) {
                for (o, x) in out.iter_mut().zip(vj) {
                    *o += pj * x.to_f32();
                }
            }
        }
        HeadRows::Q8_0(v) => {
            for (&pj, vj) in p.iter().zip(v.chunks_exact(hd / QK)) {
                for (ob, b) in out.chunks_exact_mut(QK).zip(vj) {
                    let w = pj * b.d.to_f32();
                    for (o, &x) in ob.iter_mut().zip(&b.qs) {
                        *o += w * f32::from(x);
                    }
                }
            }
        }
        HeadRows::Q4_0x8(v) => {
            let mut row = vec![0f32; hd];
            let mut blocks = vec![bytemuck::Zeroable::zeroed(); hd / QK];
            for (j, &pj) in p.iter().enumerate().take(v.rows) {
                v.read_with(j, &mut blocks, &mut row);
                for (o, &x) in out.iter_mut().zip(&row) {
                    *o += pj * x;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The AVX2 + FMA + F16C kernels. Every function requires those features.

    use std::arch::x86_64::*;

    use half::f16;
    use xverse_quant::blocks::q8_0::BlockQ8_0;

    /// Asks for the cache's lines of `bytes` bytes from `p` +
    /// [`kernels::CACHE_PREFETCH_AHEAD`](xverse_quant::kernels::CACHE_PREFETCH_AHEAD) (the
    /// cache is in 4 KiB pages, where the hardware prefetchers stop).
    #[inline]
    fn ahead<T>(p: *const T, bytes: usize) {
        use xverse_quant::kernels::{prefetch_ahead, CACHE_PREFETCH_AHEAD};
        prefetch_ahead(p.cast(), CACHE_PREFETCH_AHEAD, bytes);
    }

    /// Sum of the 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// 8 f16 at `p` widened to f32.
    ///
    /// # Safety
    /// `p..p + 8` must be readable; the CPU must have F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f16(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f16 (16 bytes) at `p`; the load is unaligned.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
    }

    /// 8 f32 at `p`.
    ///
    /// # Safety
    /// `p..p + 8` must be readable.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f32(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f32 at `p`; the load is unaligned.
        unsafe { _mm256_loadu_ps(p) }
    }

    /// Generates `scores_*`: `s[j] = q·row_j * scale` for the rows of `k` (elements of type
    /// `$t`, loaded 8 at a time by `$load`, widened one by one by `$wide`), four rows at a time.
    macro_rules! scores_kernel {
        ($name:ident, $t:ty, $load:ident, $wide:expr) => {
            /// # Safety
            /// The CPU must have AVX2, FMA and F16C.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $name(q: &[f32], k: &[$t], hd: usize, scale: f32, s: &mut [f32]) {
                let n = s.len().min(k.len() / hd);
                let q = &q[..hd];
                let v8 = hd / 8 * 8;
                let tail = |row: &[$t]| -> f32 {
                    q[v8..]
                        .iter()
                        .zip(&row[v8..])
                        .map(|(&a, b)| a * $wide(b))
                        .sum()
                };
                let qp = q.as_ptr();
                let mut j = 0;
                while j + 4 <= n {
                    let r = &k[j * hd..(j + 4) * hd];
                    let rp = r.as_ptr();
                    ahead(rp, std::mem::size_of_val(r));
                    let mut acc = [_mm256_setzero_ps(); 4];
                    let mut c = 0;
                    while c < v8 {
                        // SAFETY: c + 8 <= v8 <= hd: within q and within each of the 4 rows
                        // of r (row i starts at i * hd).
                        unsafe {
                            let qv = load_f32(qp.add(c));
                            for (i, a) in acc.iter_mut().enumerate() {
                                *a = _mm256_fmadd_ps(qv, $load(rp.add(i * hd + c)), *a);
                            }
                        }
                        c += 8;
                    }
                    for (i, a) in acc.iter().enumerate() {
                        // SAFETY: the CPU has the features (the caller's contract).
                        let d = unsafe { hsum(*a) } + tail(&r[i * hd..(i + 1) * hd]);
                        s[j + i] = d * scale;
                    }
                    j += 4;
                }
                while j < n {
                    let r = &k[j * hd..(j + 1) * hd];
                    let rp = r.as_ptr();
                    let mut acc = _mm256_setzero_ps();
                    let mut c = 0;
                    while c < v8 {
                        // SAFETY: c + 8 <= hd: within q and r.
                        unsafe {
                            acc = _mm256_fmadd_ps(load_f32(qp.add(c)), $load(rp.add(c)), acc);
                        }
                        c += 8;
                    }
                    // SAFETY: the CPU has the features (the caller's contract).
                    s[j] = (unsafe { hsum(acc) } + tail(r)) * scale;
                    j += 1;
                }
            }
        };
    }

    scores_kernel!(scores_f32, f32, load_f32, |x: &f32| *x);
    scores_kernel!(scores_f16, f16, load_f16, |x: &f16| x.to_f32());

    /// Generates `weighted_sum_*`: `out += Σ_j p[j] row_j` over the rows of `v`, four rows at
    /// a time.
    macro_rules! weighted_sum_kernel {
        ($name:ident, $t:ty, $load:ident, $wide:expr) => {
            /// # Safety
            /// The CPU must have AVX2, FMA and F16C.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $name(p: &[f32], v: &[$t], hd: usize, out: &mut [f32]) {
                let n = p.len().min(v.len() / hd);
                let out = &mut out[..hd];
                let v8 = hd / 8 * 8;
                let op = out.as_mut_ptr();
                let mut j = 0;
                while j + 4 <= n {
                    let r = &v[j * hd..(j + 4) * hd];
                    let rp = r.as_ptr();
                    ahead(rp, std::mem::size_of_val(r));
                    let w = [
                        _mm256_set1_ps(p[j]),
                        _mm256_set1_ps(p[j + 1]),
                        _mm256_set1_ps(p[j + 2]),
                        _mm256_set1_ps(p[j + 3]),
                    ];
                    let mut c = 0;
                    while c < v8 {
                        // SAFETY: c + 8 <= hd: within out and within each of the 4 rows of r.
                        unsafe {
                            let mut o = load_f32(op.add(c));
                            for (i, wi) in w.iter().enumerate() {
                                o = _mm256_fmadd_ps(*wi, $load(rp.add(i * hd + c)), o);
                            }
                            _mm256_storeu_ps(op.add(c), o);
                        }
                        c += 8;
                    }
                    for i in 0..4 {
                        for d in v8..hd {
                            out[d] += p[j + i] * $wide(&r[i * hd + d]);
                        }
                    }
                    j += 4;
                }
                while j < n {
                    let r = &v[j * hd..(j + 1) * hd];
                    let rp = r.as_ptr();
                    let w = _mm256_set1_ps(p[j]);
                    let mut c = 0;
                    while c < v8 {
                        // SAFETY: c + 8 <= hd: within out and r.
                        unsafe {
                            let o = _mm256_fmadd_ps(w, $load(rp.add(c)), load_f32(op.add(c)));
                            _mm256_storeu_ps(op.add(c), o);
                        }
                        c += 8;
                    }
                    for d in v8..hd {
                        out[d] += p[j] * $wide(&r[d]);
                    }
                    j += 1;
                }
            }
        };
    }

    weighted_sum_kernel!(weighted_sum_f32, f32, load_f32, |x: &f32| *x);
    weighted_sum_kernel!(weighted_sum_f16, f16, load_f16, |x: &f16| x.to_f32());

    /// An f16 widened by F16C (inline, unlike `half`'s conversion, which checks the CPU on
    /// every call).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_to_f32(h: f16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits()))))
    }

    /// One query block prepared for the Q8_0 score kernel: its 32 quants' magnitudes (`y`),
    /// the quants themselves (`c`, whose signs each key block takes) and its scale as f32.
    #[derive(Clone, Copy)]
    struct QueryBlock {
        y: __m256i,
        c: __m256i,
        d: f32,
    }

    /// Query blocks kept on the stack (head sizes up to 256); longer heads use the heap.
    const STACK_BLOCKS: usize = 8;

    /// Runs `f` on `q` prepared block by block by `prep`, in a stack buffer when it fits.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn with_query<R>(
        q: &[BlockQ8_0],
        prep: impl Fn(&BlockQ8_0) -> QueryBlock,
        f: impl FnOnce(&[QueryBlock]) -> R,
    ) -> R {
        let zero = QueryBlock {
            y: _mm256_setzero_si256(),
            c: _mm256_setzero_si256(),
            d: 0.0,
        };
        let mut stack = [zero; STACK_BLOCKS];
        let mut heap = Vec::new();
        let buf: &mut [QueryBlock] = if q.len() <= STACK_BLOCKS {
            &mut stack[..q.len()]
        } else {
            heap.resize(q.len(), zero);
            &mut heap
        };
        for (b, a) in buf.iter_mut().zip(q) {
            *b = prep(a);
        }
        f(buf)
    }

    /// 32 bytes at `p`.
    ///
    /// # Safety
    /// `p..p + 32` must be readable.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load32(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 32 readable bytes; the load is unaligned.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }

    /// `s[j] = q·row_j * scale` for Q8_0 rows of `q.len()` blocks: per block an exact integer
    /// product scaled by both blocks' scales (ggml's `vec_dot_q8_0_q8_0`). The query's
    /// magnitudes and scales are prepared once; each key block takes the query's signs
    /// (ggml's `mul_sum_i8_pairs`: the query's quants are at most 127 in magnitude, as Q8_0
    /// makes them, so the 16-bit pair sums cannot saturate).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores_q8_0(q: &[BlockQ8_0], k: &[BlockQ8_0], scale: f32, s: &mut [f32]) {
        let nb = q.len();
        if nb == 0 {
            s.fill(0.0);
            return;
        }
        let prep = |a: &BlockQ8_0| {
            // SAFETY: `qs` is 32 readable bytes.
            let x = unsafe { load32(a.qs.as_ptr().cast()) };
            QueryBlock {
                y: _mm256_sign_epi8(x, x),
                c: x,
                d: f16_to_f32(a.d),
            }
        };
        with_query(q, prep, |qb| {
            let ones = _mm256_set1_epi16(1);
            for (sj, row) in s.iter_mut().zip(k.chunks_exact(nb)) {
                ahead(row.as_ptr(), std::mem::size_of_val(row));
                let mut acc = _mm256_setzero_ps();
                for (a, b) in qb.iter().zip(row) {
                    // SAFETY: `qs` is 32 readable bytes.
                    let y = unsafe { load32(b.qs.as_ptr().cast()) };
                    // |q| · (k with q's signs): ggml's `mul_sum_i8_pairs`
                    let dot = _mm256_maddubs_epi16(a.y, _mm256_sign_epi8(y, a.c));
                    let isum = _mm256_cvtepi32_ps(_mm256_madd_epi16(dot, ones));
                    let d = _mm256_set1_ps(a.d * f16_to_f32(b.d));
                    acc = _mm256_fmadd_ps(d, isum, acc);
                }
                // SAFETY: the CPU has the features (the caller's contract).
                *sj = unsafe { hsum(acc) } * scale;
            }
        })
    }

    /// `out += Σ_j p[j] row_j` for rows of `nb` 32-element blocks, block column by block
    /// column: the 32 outputs of a block stay in four registers while every row's block is
    /// added (the caller passes a few dozen rows at a time, which stay in L1 across the
    /// columns). `widen(block, c)` gives elements `8c..8c + 8` of a block as f32, `scale` its
    /// scale. The order of the additions per output is the rows' order, as in the scalar
    /// kernel.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `out` must hold `nb * 32` elements.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weighted_sum_blocks<B>(
        p: &[f32],
        v: &[B],
        nb: usize,
        out: &mut [f32],
        scale: impl Fn(&B) -> f32,
        widen: impl Fn(&B) -> [__m256; 4],
    ) {
        if nb == 0 {
            return;
        }
        let out = &mut out[..nb * 32];
        for (bi, ob) in out.chunks_exact_mut(32).enumerate() {
            let op = ob.as_mut_ptr();
            // SAFETY: `ob` is 32 f32; the loads are unaligned.
            let mut acc = unsafe { [0, 8, 16, 24].map(|c| _mm256_loadu_ps(op.add(c))) };
            for (&pj, row) in p.iter().zip(v.chunks_exact(nb)) {
                if bi == 0 {
                    ahead(row.as_ptr(), std::mem::size_of_val(row));
                }
                let b = &row[bi];
                let w = _mm256_set1_ps(pj * scale(b));
                let x = widen(b);
                for c in 0..4 {
                    acc[c] = _mm256_fmadd_ps(w, x[c], acc[c]);
                }
            }
            for (c, a) in acc.into_iter().enumerate() {
                // SAFETY: as above, stores.
                unsafe { _mm256_storeu_ps(op.add(8 * c), a) };
            }
        }
    }

    /// `out += Σ_j p[j] row_j` for Q8_0 rows of `hd / 32` blocks.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_sum_q8_0(p: &[f32], v: &[BlockQ8_0], hd: usize, out: &mut [f32]) {
        let widen = |b: &BlockQ8_0| {
            let qp = b.qs.as_ptr();
            // SAFETY: 8 bytes at qs[8c..] are within the block's 32.
            [0, 8, 16, 24].map(|c| unsafe {
                let q8 = _mm_loadl_epi64(qp.add(c).cast());
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8))
            })
        };
        // SAFETY: the features are the caller's contract; `out` holds `hd` ≥ nb * 32.
        unsafe { weighted_sum_blocks(p, v, hd / 32, out, |b| f16_to_f32(b.d), widen) }
    }

    /// [`super::quantize_weight_block`], bit for bit: the same operations (products and
    /// differences rounded as the scalar ones, rounding to nearest even).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_weight_block(x: &[f32; 32]) -> [(BlockQ8_0, i32); 2] {
        /// A Q8_0 block of `v`, its sum, and its quants times the stored scale.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn q8(v: [__m256; 4]) -> ((BlockQ8_0, i32), [__m256; 4]) {
            // (loops, not closures: a closure would not inherit the target features, and its
            // intrinsics would be calls)
            let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
            let mut a = v;
            for x in &mut a {
                *x = _mm256_and_ps(*x, abs);
            }
            let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_movehdup_ps(m));
            let d = _mm_cvtss_f32(m) / 127.0;
            let id = _mm256_set1_ps(if d >= f32::MIN_POSITIVE { 1.0 / d } else { 0.0 });
            let h = _mm_cvtps_ph(_mm_set_ss(d), _MM_FROUND_TO_NEAREST_INT);
            let d16 = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(h)));
            // rounding to nearest even (the default MXCSR mode), then ±127 at most
            let (lim, neg) = (_mm256_set1_epi32(127), _mm256_set1_epi32(-127));
            let mut q = [_mm256_setzero_si256(); 4];
            let mut back = [_mm256_setzero_ps(); 4];
            for c in 0..4 {
                let i = _mm256_cvtps_epi32(_mm256_mul_ps(v[c], id));
                q[c] = _mm256_max_epi32(_mm256_min_epi32(i, lim), neg);
                back[c] = _mm256_mul_ps(d16, _mm256_cvtepi32_ps(q[c]));
            }
            // 32 × i32 → 32 × i8; the packs interleave 128-bit lanes, the permutation puts
            // them back in order
            let w = _mm256_packs_epi32(q[0], q[1]);
            let z = _mm256_packs_epi32(q[2], q[3]);
            let bytes = _mm256_packs_epi16(w, z);
            let bytes =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            let mut b = BlockQ8_0 {
                d: f16::from_bits(_mm_extract_epi16(h, 0) as u16),
                qs: [0; 32],
            };
            // SAFETY: qs is 32 bytes.
            unsafe { _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), bytes) };
            let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            ((b, _mm_cvtsi128_si32(s)), back)
        }
        let p = x.as_ptr();
        let mut v = [_mm256_setzero_ps(); 4];
        for (c, v) in v.iter_mut().enumerate() {
            // SAFETY: x holds 32 f32, four loads of 8.
            *v = unsafe { _mm256_loadu_ps(p.add(8 * c)) };
        }
        let (hi, back) = q8(v);
        for (v, b) in v.iter_mut().zip(back) {
            *v = _mm256_sub_ps(*v, b);
        }
        let (lo, _) = q8(v);
        [hi, lo]
    }

    /// `e^x` of 8 lanes (Cephes' `expf`: ≈1 ulp on the range of a softmax, x ≤ 0); 0 below
    /// -87.3 (where `f32::exp` turns subnormal).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        let lo = _mm256_set1_ps(-87.33);
        let keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
        let x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.37));
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut y = _mm256_set1_ps(1.987_569_1e-4);
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.398_199_9e-3));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.333_452e-3));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.166_579_6e-2));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.666_666_5e-1));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(0.5));
        let r2 = _mm256_mul_ps(r, r);
        y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        // 2^n: n + 127 in the exponent field (n in -126..=127 after the clamp)
        let e = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        let y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
        _mm256_and_ps(y, keep)
    }

    /// Softmax in place, as [`crate::cpu::ops::softmax`]: the maximum subtracted, the sum in
    /// f64 (four lanes), the exponentials by [`exp8`].
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn softmax(s: &mut [f32]) {
        let n8 = s.len() / 8 * 8;
        let p = s.as_mut_ptr();
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < n8 {
            // SAFETY: i + 8 <= s.len().
            m = _mm256_max_ps(m, unsafe { _mm256_loadu_ps(p.add(i)) });
            i += 8;
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` has room for 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
        let max = lanes
            .iter()
            .chain(&s[n8..])
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return;
        }
        let mv = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_pd();
        let mut i = 0;
        while i < n8 {
            // SAFETY: i + 8 <= s.len(); the CPU has the features (the caller's contract).
            unsafe {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv));
                _mm256_storeu_ps(p.add(i), e);
                sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
                sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
            }
            i += 8;
        }
        let mut sl = [0f64; 4];
        // SAFETY: `sl` has room for 4 f64.
        unsafe { _mm256_storeu_pd(sl.as_mut_ptr(), sum) };
        let mut total = (sl[0] + sl[2]) + (sl[1] + sl[3]);
        for v in &mut s[n8..] {
            *v = (*v - max).exp();
            total += f64::from(*v);
        }
        let inv = (1.0 / total) as f32;
        let iv = _mm256_set1_ps(inv);
        let mut i = 0;
        while i < n8 {
            // SAFETY: i + 8 <= s.len().
            unsafe { _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), iv)) };
            i += 8;
        }
        for v in &mut s[n8..] {
            *v *= inv;
        }
    }
}

/// The previous implementation (scalar; each head's rows copied to f32 first), kept as the
/// tests' reference and for `XVERSE_ATTENTION=reference`.
///
/// As in ggml, the query's product with an f16 cache is taken on the query rounded to f16
/// (with q8_0 or q4_0 keys: quantized to Q8_0); the attention weights stay f32 (b2757's CPU path
/// multiplies them with the f16 values without rounding them).
pub fn attention_reference(
    hp: &Hparams,
    cache: &LayerCache,
    cache_type: KvTypes,
    q: &[f32],
    pos0: usize,
    n_tokens: usize,
) -> Result<Vec<f32>, RuntimeError> {
    let dim = hp.hidden as usize;
    let hd = hp.head_dim as usize;
    let group = (hp.heads / hp.kv_heads) as usize;
    let n_kv = pos0 + n_tokens;
    let scale = 1.0 / (hd as f32).sqrt();

    let heads: Vec<Vec<f32>> = (0..hp.heads as usize)
        .into_par_iter()
        .map(|h| -> Result<Vec<f32>, RuntimeError> {
            let kvh = h / group;
            let mut keys = vec![0f32; n_kv * hd];
            let mut values = vec![0f32; n_kv * hd];
            cache.read_k(kvh, n_kv, &mut keys);
            cache.read_v(kvh, n_kv, &mut values);

            let mut out = vec![0f32; n_tokens * hd];
            let mut scores = vec![0f32; n_kv];
            for (t, out_t) in out.chunks_exact_mut(hd).enumerate() {
                let pos = pos0 + t;
                let mut qh = q[t * dim + h * hd..t * dim + (h + 1) * hd].to_vec();
                match cache_type.k {
                    CacheType::F32 => {}
                    CacheType::F16 => round_f16(&mut qh),
                    CacheType::Q8_0 | CacheType::Q4_0 => {
                        round_activations(GgmlType::Q8_0, &mut qh, hd)?
                    }
                }
                // scores of the positions up to this token's own (causal mask)
                let s = &mut scores[..=pos];
                for (sj, kj) in s.iter_mut().zip(keys.chunks_exact(hd)) {
                    *sj = dot(&qh, kj) * scale;
                }
                softmax(s);
                // weighted sum of the values
                for (&p, vj) in s.iter().zip(values.chunks_exact(hd)) {
                    for (o, &vv) in out_t.iter_mut().zip(vj) {
                        *o += p * vv;
                    }
                }
            }
            Ok(out)
        })
        .collect::<Result<_, _>>()?;

    let mut att = vec![0f32; n_tokens * dim];
    for (h, out) in heads.iter().enumerate() {
        for (t, out_t) in out.chunks_exact(hd).enumerate() {
            att[t * dim + h * hd..t * dim + (h + 1) * hd].copy_from_slice(out_t);
        }
    }
    Ok(att)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::KvCache;
    use half::f16;
    use xverse_quant::blocks::q4_0;

    /// `q·k_j · scale` of Q4_0 rows `k` (`hd / 32` blocks each) by quant's scalar
    /// `vec_dot_q4_0_q8_0` (the exact integer products per block).
    fn q4_0_scores_reference(q: &[BlockQ8_0], k: &[q4_0::BlockQ4_0], scale: f32) -> Vec<f32> {
        k.chunks_exact(q.len())
            .map(|row| {
                let hd = q.len() * QK;
                let (w, a) = (bytemuck::cast_slice(row), bytemuck::cast_slice(q));
                kernels::vec_dot_with(SimdLevel::Scalar, GgmlType::Q4_0, hd, w, a) * scale
            })
            .collect()
    }

    /// `n` positions of one head's values `v` (`n × hd`) in a q4_0 cache (stored by dimension):
    /// the cache and, as f32, the values it holds.
    fn q4_0_values(v: &[f32], hd: usize) -> (KvCache, Vec<f32>) {
        let n = v.len() / hd;
        let ty = KvTypes {
            k: CacheType::F32,
            v: CacheType::Q4_0,
        };
        let mut c = KvCache::new(ty, 1, n.max(1), 1, hd).unwrap();
        c.layer_mut(0).store(0, v, v).unwrap();
        let mut held = vec![0f32; n * hd];
        c.layer(0).read_v(0, n, &mut held);
        (c, held)
    }

    fn hp(heads: u32, kv_heads: u32, head_dim: u32) -> Hparams {
        Hparams {
            context_length: 16,
            hidden: heads * head_dim,
            layers: 1,
            ffn: 8,
            heads,
            kv_heads,
            head_dim,
            rope_dims: head_dim,
            rope_freq_base: 10000.0,
            rms_norm_eps: 1e-6,
            vocab: 4,
        }
    }

    /// Deterministic values in ±amp.
    fn values(n: usize, seed: u64, amp: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * amp
            })
            .collect()
    }

    /// Q4_0 rows (`hd / 32` blocks each) stored eight to a group, as the cache stores keys.
    fn packed_keys(rows: &[q4_0::BlockQ4_0], hd: usize) -> Vec<u8> {
        let nb = hd / QK;
        let gb = nb * q4_0x8::GROUP_BLOCK_BYTES;
        let mut groups = vec![0u8; (rows.len() / nb).div_ceil(8) * gb];
        for (r, row) in rows.chunks_exact(nb).enumerate() {
            let g = &mut groups[r / 8 * gb..][..gb];
            assert!(q4_0x8::pack_row(hd, r % 8, bytemuck::cast_slice(row), g));
        }
        groups
    }

    /// The `n` rows of groups made by [`packed_keys`].
    fn all_rows(groups: &[u8], n: usize) -> HeadRows<'_> {
        HeadRows::Q4_0x8(PackedRows {
            groups,
            skip: 0,
            rows: n,
        })
    }

    /// A Q8_0 query's block sums, for keys stored eight to a group.
    fn query_sums(q: &[BlockQ8_0]) -> Vec<i32> {
        let mut sums = Vec::new();
        q4_0x8::block_sums(bytemuck::cast_slice(q), &mut sums);
        sums
    }

    fn levels() -> Vec<Level> {
        let mut l = vec![Level::Reference, Level::Scalar];
        if Level::detect() == Level::Avx2 {
            l.push(Level::Avx2);
        }
        l
    }

    #[test]
    fn attention_on_a_hand_example() {
        // one head of 2 dims, two cached positions: k0 = (1, 0), k1 = (0, 1), v0 = (1, 2),
        // v1 = (3, 4). Query (2, 0) at position 1: scores (2, 0)/sqrt(2), softmax, mix.
        let p = hp(1, 1, 2);
        let mut c = KvCache::new(CacheType::F32.into(), 1, 4, 1, 2).unwrap();
        c.layer_mut(0)
            .store(0, &[1.0, 0.0, 0.0, 1.0], &[1.0, 2.0, 3.0, 4.0])
            .unwrap();
        for level in levels() {
            let att = |q: &[f32], pos0, n| {
                attention_with(level, &p, c.layer(0), CacheType::F32.into(), q, pos0, n).unwrap()
            };
            let out = att(&[2.0, 0.0], 1, 1);
            let s0 = 2.0 / 2f32.sqrt();
            let p0 = s0.exp() / (s0.exp() + 1.0);
            let want = [p0 * 1.0 + (1.0 - p0) * 3.0, p0 * 2.0 + (1.0 - p0) * 4.0];
            assert!((out[0] - want[0]).abs() < 1e-6 && (out[1] - want[1]).abs() < 1e-6);
            // causal: the same query at position 0 sees only v0
            let out = att(&[2.0, 0.0], 0, 1);
            assert_eq!(out, vec![1.0, 2.0], "{level:?}");
            // a batch of both positions gives both rows at once
            let out = att(&[2.0, 0.0, 2.0, 0.0], 0, 2);
            assert_eq!(&out[..2], &[1.0, 2.0]);
            assert!((out[2] - want[0]).abs() < 1e-6 && (out[3] - want[1]).abs() < 1e-6);
        }
    }

    #[test]
    fn grouped_query_heads_share_kv_heads() {
        // 4 query heads, 2 kv heads: heads 0, 1 read kv head 0; heads 2, 3 read kv head 1
        let p = hp(4, 2, 2);
        let mut c = KvCache::new(CacheType::F32.into(), 1, 4, 2, 2).unwrap();
        // one position: kv head 0 values (1, 1), kv head 1 values (5, 5)
        c.layer_mut(0)
            .store(0, &[0.0, 0.0, 0.0, 0.0], &[1.0, 1.0, 5.0, 5.0])
            .unwrap();
        for level in levels() {
            let out = attention_with(
                level,
                &p,
                c.layer(0),
                CacheType::F32.into(),
                &[0.3; 8],
                0,
                1,
            )
            .unwrap();
            assert_eq!(
                out,
                vec![1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0],
                "{level:?}"
            );
        }
    }

    /// Every level on the same random cache and queries, every cache type (and keys and
    /// values of different types), head sizes with and without a tail of the 8-lane vectors,
    /// decode and prompts: close to the reference.
    #[test]
    fn levels_agree_with_the_reference() {
        let mut types: Vec<KvTypes> = CacheType::ALL.into_iter().map(KvTypes::from).collect();
        for (k, v) in [
            (CacheType::Q8_0, CacheType::Q4_0),
            (CacheType::Q4_0, CacheType::F16),
            (CacheType::F16, CacheType::Q8_0),
            (CacheType::F32, CacheType::Q4_0),
        ] {
            types.push(KvTypes { k, v });
        }
        for (heads, kv_heads, hd) in [(4, 2, 32), (2, 2, 64), (3, 1, 20), (2, 1, 128)] {
            for &ty in &types {
                if hd % ty.k.block_elems() as u32 != 0 || hd % ty.v.block_elems() as u32 != 0 {
                    continue;
                }
                let p = hp(heads, kv_heads, hd);
                let n_ctx = 70;
                let kv = (kv_heads * hd) as usize;
                let mut c = KvCache::new(ty, 1, n_ctx, kv_heads as usize, hd as usize).unwrap();
                let k = values(n_ctx * kv, 1, 2.0);
                let v = values(n_ctx * kv, 2, 1.0);
                c.layer_mut(0).store(0, &k, &v).unwrap();
                let dim = (heads * hd) as usize;
                for (pos0, n) in [(0, 1), (40, 1), (69, 1), (0, 37), (13, 57)] {
                    let q = values(n * dim, 3 + pos0 as u64, 3.0);
                    let want =
                        attention_with(Level::Reference, &p, c.layer(0), ty, &q, pos0, n).unwrap();
                    for level in levels() {
                        let got = attention_with(level, &p, c.layer(0), ty, &q, pos0, n).unwrap();
                        let quantized_query = matches!(ty.k, CacheType::Q8_0 | CacheType::Q4_0);
                        // q4_0 values: the weights are quantized to 16 bits per 32 positions
                        // (within the bound `weighted_sum_over_values_by_dimension` checks)
                        let tol = if quantized_query {
                            2e-3
                        } else if ty.v == CacheType::Q4_0 {
                            1e-4
                        } else {
                            2e-5
                        };
                        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (a - b).abs() <= tol,
                                "{level:?} {ty} hd {hd} pos0 {pos0} n {n} [{i}]: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The AVX2 kernels against the scalar ones on the same inputs, one kernel at a time.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_match_scalar() {
        if Level::detect() != Level::Avx2 {
            return;
        }
        for hd in [8usize, 16, 20, 32, 64, 128] {
            // 600 positions: 75 groups of q4_0 keys, more than one call of the packed kernel
            for n in [0usize, 1, 3, 4, 5, 8, 16, 17, 100, 600] {
                let scale = 1.0 / (hd as f32).sqrt();
                let qf = values(hd, 7, 3.0);
                let kf = values(n * hd, 8, 2.0);
                let kh: Vec<f16> = kf.iter().map(|&x| f16::from_f32(x)).collect();
                let close = |a: &[f32], b: &[f32], tol: f32, what: &str| {
                    for (i, (x, y)) in a.iter().zip(b).enumerate() {
                        assert!(
                            (x - y).abs() <= tol * (1.0 + y.abs()),
                            "{what} hd {hd} n {n} [{i}]: {x} vs {y}"
                        );
                    }
                };
                for keys in [HeadRows::F32(&kf), HeadRows::F16(&kh)] {
                    let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                    scores_with(Level::Avx2, &Query::F32(&qf), keys, hd, scale, &mut a);
                    scores_scalar(&Query::F32(&qf), keys, hd, scale, &mut b);
                    close(&a, &b, 1e-5, "scores");

                    let p = values(n, 9, 1.0);
                    let (mut a, mut b) = (vec![0f32; hd], vec![0f32; hd]);
                    weighted_sum_with(Level::Avx2, &p, keys, hd, &mut a);
                    weighted_sum_scalar(&p, keys, hd, &mut b);
                    close(&a, &b, 1e-5, "weighted sum");
                }
                if hd % QK == 0 {
                    let nb = hd / QK;
                    let mut qb = vec![bytemuck::Zeroable::zeroed(); nb];
                    q8_0::quantize_row(&qf, &mut qb);
                    let mut kb = vec![bytemuck::Zeroable::zeroed(); n * nb];
                    for (row, blocks) in kf.chunks_exact(hd).zip(kb.chunks_exact_mut(nb)) {
                        q8_0::quantize_row(row, blocks);
                    }
                    let keys = HeadRows::Q8_0(&kb);
                    let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                    scores_with(Level::Avx2, &Query::Q8(&qb, &[]), keys, hd, scale, &mut a);
                    scores_scalar(&Query::Q8(&qb, &[]), keys, hd, scale, &mut b);
                    close(&a, &b, 1e-5, "q8_0 scores");
                    let p = values(n, 9, 1.0);
                    let (mut a, mut b) = (vec![0f32; hd], vec![0f32; hd]);
                    weighted_sum_with(Level::Avx2, &p, keys, hd, &mut a);
                    weighted_sum_scalar(&p, keys, hd, &mut b);
                    close(&a, &b, 1e-5, "q8_0 weighted sum");

                    // q4_0 keys (stored eight to a group), the same Q8_0 query, against the
                    // scalar kernel of q4_0 rows (exact integer products per block); also from
                    // positions that start within a group (`rows(3..)`, and `rows(515..)`:
                    // in the 65th group, past the first call's 64)
                    let mut kb = vec![bytemuck::Zeroable::zeroed(); n * nb];
                    for (row, blocks) in kf.chunks_exact(hd).zip(kb.chunks_exact_mut(nb)) {
                        q4_0::quantize_row(row, blocks);
                    }
                    let (groups, sums) = (packed_keys(&kb, hd), query_sums(&qb));
                    let packed = all_rows(&groups, n);
                    let query = Query::Q8(&qb, &sums);
                    for from in [0, 3.min(n), 515.min(n)] {
                        let m = n - from;
                        let mut a = vec![0f32; m];
                        let keys = packed.rows(from..n, hd);
                        scores_with(Level::Avx2, &query, keys, hd, scale, &mut a);
                        let b = q4_0_scores_reference(&qb, &kb[from * nb..], scale);
                        close(&a, &b, 1e-5, "q4_0 scores");
                        scores_with(Level::Scalar, &query, keys, hd, scale, &mut a);
                        close(&a, &b, 1e-5, "q4_0 scores, scalar packed kernel");
                    }
                    let mut a = vec![0f32; n];
                    scores_with(Level::Avx2, &query, packed, hd, scale, &mut a);
                    // against the dequantized rows too (the integer kernel is not just
                    // consistent with itself)
                    let (mut kd, mut qd) = (vec![0f32; n * hd], vec![0f32; hd]);
                    q4_0::dequantize_row(&kb, &mut kd);
                    q8_0::dequantize_row(&qb, &mut qd);
                    let mut c = vec![0f32; n];
                    scores_scalar(&Query::F32(&qd), HeadRows::F32(&kd), hd, scale, &mut c);
                    close(&a, &c, 1e-4, "q4_0 scores vs f32");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    /// The Q4_0 score kernel at the ends of its integer ranges: nibbles all 15 or all 0
    /// against query quants of ±127 (keys stored eight to a group take the −8 off as `8 · Σ q`
    /// per block), 19 rows (two groups and part of a third), exact integers against quant's
    /// scalar kernel of rows.
    #[test]
    fn avx2_q4_0_kernels_at_the_integer_limits() {
        if Level::detect() != Level::Avx2 {
            return;
        }
        let (hd, n) = (128usize, 19usize);
        let nb = hd / QK;
        for (nib, qv) in [
            (0xffu8, 127i8),
            (0xff, -127),
            (0x00, 127),
            (0x00, -127),
            (0xf0, 127),
        ] {
            let q = vec![
                BlockQ8_0 {
                    d: f16::from_f32(0.5),
                    qs: [qv; QK],
                };
                nb
            ];
            let k: Vec<q4_0::BlockQ4_0> = (0..n * nb)
                .map(|i| q4_0::BlockQ4_0 {
                    d: f16::from_f32(0.25 + (i % 5) as f32 * 0.125),
                    qs: [nib; QK / 2],
                })
                .collect();
            let (groups, sums) = (packed_keys(&k, hd), query_sums(&q));
            let packed = all_rows(&groups, n);
            let mut a = vec![0f32; n];
            scores_with(Level::Avx2, &Query::Q8(&q, &sums), packed, hd, 1.0, &mut a);
            let b = q4_0_scores_reference(&q, &k, 1.0);
            for (j, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-6 * y.abs().max(1.0),
                    "nibbles {nib:#x}, query {qv}, row {j}: {x} vs {y}"
                );
                assert!(y.abs() > 1000.0, "{y}: the test should reach large sums");
            }
        }
    }

    /// The weighted sum over q4_0 values stored by dimension, at every level, from the first
    /// position and from positions inside a column, with and without unquantized last
    /// positions: (1) exactly `Σ p̂_j v_j` of the values held and the weights as quantized
    /// (`p̂`: two Q8_0 rows per 32 positions, [`Weights`], the tail's f32); (2) within the quantization's bound of
    /// the f32 weights, `Σ_j |p_j - p̂_j| · |v_j|`, each `|p_j - p̂_j|` at most half a step
    /// (`max / 254` of its block, and the scale's f16 rounding); (3) the AVX2 kernels equal the scalar ones.
    #[test]
    fn weighted_sum_over_values_by_dimension() {
        let mut levels = vec![Level::Scalar];
        if Level::detect() == Level::Avx2 {
            levels.push(Level::Avx2);
        }
        for hd in [32usize, 64, 128] {
            for n in [1usize, 31, 32, 33, 70, 100] {
                let v = values(n * hd, 5, 1.0);
                let (cache, held) = q4_0_values(&v, hd);
                let all = cache.layer(0).v_rows(0, n);
                assert!(matches!(all, HeadRows::Q4_0Columns(_)));
                let quantized_end = n / QK * QK;
                for from in [0usize, 3, 33].into_iter().filter(|&f| f < n) {
                    let m = n - from;
                    // softmax-like weights with one large one
                    let mut p: Vec<f32> = values(m, 9 + from as u64, 0.05)
                        .iter()
                        .map(|x| x.abs())
                        .collect();
                    p[m / 2] = 0.6;
                    // the weights as the kernel quantizes them
                    let mut pq = p.clone();
                    if from < quantized_end {
                        let nq = quantized_end - from;
                        let n_blocks = quantized_end.div_ceil(QK) - from / QK;
                        let w = Weights::new(Level::Scalar, &p[..nq], from % QK, n_blocks);
                        let (mut hi, mut lo) =
                            (vec![0f32; n_blocks * QK], vec![0f32; n_blocks * QK]);
                        q8_0::dequantize_row(&w.hi, &mut hi);
                        q8_0::dequantize_row(&w.lo, &mut lo);
                        for (j, x) in pq[..nq].iter_mut().enumerate() {
                            *x = (hi[from % QK + j] + lo[from % QK + j]) * w.unscale;
                        }
                        for (blocks, sums) in [(&w.hi, &w.hi_sums), (&w.lo, &w.lo_sums)] {
                            for (b, &sum) in blocks.iter().zip(sums) {
                                let want: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
                                assert_eq!(sum, want);
                            }
                        }
                    }
                    let rows = &held[from * hd..];
                    let mut exact = vec![0f32; hd];
                    weighted_sum_scalar(&pq, HeadRows::F32(rows), hd, &mut exact);
                    let mut ideal = vec![0f32; hd];
                    weighted_sum_scalar(&p, HeadRows::F32(rows), hd, &mut ideal);
                    let mut first = None;
                    for &level in &levels {
                        let mut a = vec![0f32; hd];
                        weighted_sum_with(level, &p, all.rows(from..n, hd), hd, &mut a);
                        for d in 0..hd {
                            let what = format!("{level:?} hd {hd} n {n} from {from} [{d}]");
                            let (x, y) = (a[d], exact[d]);
                            assert!(
                                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                                "{what}: {x} vs {y}"
                            );
                            let bound: f32 = (0..m)
                                .map(|j| (p[j] - pq[j]).abs() * rows[j * hd + d].abs())
                                .sum();
                            assert!(
                                (x - ideal[d]).abs() <= bound * 1.01 + 1e-5,
                                "{what}: {x} vs {} beyond {bound}",
                                ideal[d]
                            );
                        }
                        // each weight within half a step of the second row's block (≤ half a
                        // step of the first, max / 254, plus its scale's rounding to f16),
                        // so within max / 254² and the roundings of f16 and f32
                        let block_max = |j: usize| {
                            let b0 = (from + j) / QK * QK;
                            let (lo, hi) = (b0.max(from) - from, (b0 + QK).min(n) - from);
                            p[lo..hi].iter().fold(0f32, |a, &b| a.max(b))
                        };
                        for j in 0..m {
                            let half_step = block_max(j) * 2e-5 + 1e-9;
                            assert!(
                                (p[j] - pq[j]).abs() <= half_step,
                                "weight {j}: {} as {}",
                                p[j],
                                pq[j]
                            );
                        }
                        match first {
                            None => first = Some(a),
                            Some(ref f) => {
                                for (x, y) in a.iter().zip(f) {
                                    assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "levels");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The AVX2 quantizer of the weights equals the scalar one bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_weight_quantizer_matches_scalar() {
        if Level::detect() != Level::Avx2 {
            return;
        }
        let mut cases: Vec<[f32; QK]> = vec![[0.0; QK], [1.0; QK], [1e-40; QK]];
        let mut one = [0f32; QK];
        one[17] = 0.3;
        cases.push(one);
        cases.push(std::array::from_fn(
            |i| if i % 2 == 0 { 40000.0 } else { -3.5 },
        ));
        for seed in 0..200 {
            let v = values(QK, seed, 1.0);
            let scale = [1.0, 1e-3, 1e-7, 30.0][seed as usize % 4];
            cases.push(std::array::from_fn(|i| v[i].abs() * scale));
        }
        for x in &cases {
            let a = quantize_weight_block(x);
            // SAFETY: AVX2, FMA and F16C checked above.
            let b = unsafe { avx2::quantize_weight_block(x) };
            for ((a, sa), (b, sb)) in a.into_iter().zip(b) {
                let bits = |b: BlockQ8_0| (b.d.to_bits(), b.qs);
                assert_eq!((bits(a), sa), (bits(b), sb), "{x:?}");
            }
            // weights ≥ 0: the first row's quants too
            if x.iter().all(|&x| x >= 0.0) {
                assert!(a[0].0.qs.iter().all(|&q| q >= 0));
            }
        }
        // 20000: the first row's scale is 157.5 in f16 (20002.5 for 127), the second row
        // takes the -2.5 back
        one[17] = 20000.0;
        let [(hi, _), (lo, _)] = quantize_weight_block(&one);
        assert_eq!((hi.qs[17], lo.qs[17]), (127, -127));
        let kept = hi.d.to_f32() * 127.0 - lo.d.to_f32() * 127.0;
        assert!((kept - 20000.0).abs() < 1e-2, "{kept}");
    }

    #[test]
    fn max_abs_is_the_largest_magnitude() {
        let fold = |p: &[f32]| p.iter().fold(0f32, |m, &x| m.max(x.abs()));
        for n in 0..40 {
            let mut p = values(n, n as u64 + 1, 3.0);
            assert_eq!(max_abs(&p).to_bits(), fold(&p).to_bits(), "n {n}");
            if n > 0 {
                // the largest at each place, then NaN (ignored) and infinity (kept)
                for i in 0..n {
                    let mut q = p.clone();
                    q[i] = -7.5;
                    assert_eq!(max_abs(&q), 7.5, "n {n} at {i}");
                }
                p[n / 2] = f32::NAN;
                assert_eq!(max_abs(&p).to_bits(), fold(&p).to_bits(), "n {n} NaN");
                p[n - 1] = f32::NEG_INFINITY;
                assert_eq!(max_abs(&p), f32::INFINITY, "n {n} infinity");
            }
        }
    }

    #[test]
    fn avx2_softmax_and_exp_match_scalar() {
        if Level::detect() != Level::Avx2 {
            return;
        }
        // exp over the softmax range, bit patterns near the edges included
        let xs: Vec<f32> = (0..=20000)
            .map(|i| -100.0 + i as f32 * 0.005)
            .chain([0.0, -0.0, -87.3, -87.34, -1e-30, 1.0, 10.0])
            .collect();
        for c in xs.chunks(8) {
            let mut lane = [0f32; 8];
            lane[..c.len()].copy_from_slice(c);
            let mut out = [0f32; 8];
            // SAFETY: AVX2, FMA and F16C are present (checked above); `lane` and `out` hold 8.
            unsafe {
                use std::arch::x86_64::*;
                let e = avx2::exp8(_mm256_loadu_ps(lane.as_ptr()));
                _mm256_storeu_ps(out.as_mut_ptr(), e);
            }
            for (x, e) in lane.iter().zip(out) {
                let want = x.exp();
                if *x < -87.33 {
                    assert!(e == 0.0 && want < 1.2e-38, "exp({x}) = {e}");
                } else {
                    assert!(
                        (e - want).abs() <= 3e-7 * want,
                        "exp({x}) = {e}, want {want}"
                    );
                }
            }
        }
        for n in [1usize, 7, 8, 9, 64, 1000, 4097] {
            let s = values(n, 11, 20.0);
            let (mut a, mut b) = (s.clone(), s);
            softmax_with(Level::Avx2, &mut a);
            softmax(&mut b);
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-6 * (y.abs() + 1e-30) + 1e-12,
                    "{n}: {x} vs {y}"
                );
            }
        }
        // all -inf: unchanged, as the scalar softmax
        let mut s = vec![f32::NEG_INFINITY; 9];
        softmax_with(Level::Avx2, &mut s);
        assert!(s.iter().all(|x| *x == f32::NEG_INFINITY));
    }
}
