//! The XVERSE forward pass on the CPU, top to bottom (in the spirit of llama2.c's `run.c`).
//!
//! ```text
//! hidden = token_embd[tokens]                                  embed()
//! for each layer:                                              layer()
//!     x = rmsnorm(hidden) * attn_norm
//!     q, k, v = Wq x, Wk x, Wv x
//!     q, k = rope(q, pos), rope(k, pos)        adjacent pairs (2i, 2i+1)
//!     cache[pos] = k, v
//!     a = softmax(q·K^T / sqrt(head_dim), causal) · V           attention()
//!     hidden += Wo a
//!     x = rmsnorm(hidden) * ffn_norm
//!     hidden += Wdown (silu(Wgate x) * Wup x)
//! logits = Woutput (rmsnorm(hidden) * output_norm)             logits()
//! ```
//!
//! All activations are row-major `n_tokens × width` f32 buffers. A prompt is one batch (every
//! matrix product is matrix × matrix, see [`super::matmul`]); generation is a batch of one.
//! Layers may be split between stages, so [`embed`], [`layer`] and [`logits`] are separate
//! entry points; a stage calls [`layer`] for each of its layers.
//!
//! Rotary embedding: GGUF files store q and k rows permuted (by the converter, like
//! llama.cpp's) so that the rotated pairs are adjacent: pair `(2i, 2i+1)` of each head turns by
//! `theta_i = pos · base^(-2i/rope_dims)`. Attention with grouped kv heads: query head `h` reads
//! kv head `h / (heads / kv_heads)`.

use rayon::prelude::*;
use xverse_quant::GgmlType;

use super::matmul::{matmul, round_activations};
use super::ops::{add, dot, rmsnorm, rope_angles, rope_pairs, round_f16, softmax, swiglu};
use crate::error::RuntimeError;
use crate::hparams::Hparams;
use crate::kv_cache::{CacheType, LayerCache};
use crate::model::{LayerWeights, Weight};

/// Writes the embedding rows of `tokens` into `hidden` (`n_tokens × hidden`); any weight type
/// (each row is dequantized).
pub fn embed(
    token_embd: &Weight<'_>,
    tokens: &[u32],
    hidden: &mut [f32],
) -> Result<(), RuntimeError> {
    let dim = token_embd.row_len;
    if hidden.len() != tokens.len() * dim {
        return Err(RuntimeError::new(format!(
            "embed: {} values for {} tokens of {dim}",
            hidden.len(),
            tokens.len()
        )));
    }
    for (&tok, row) in tokens.iter().zip(hidden.chunks_exact_mut(dim)) {
        if tok as usize >= token_embd.n_rows {
            return Err(RuntimeError::new(format!(
                "token id {tok} is outside the vocabulary of {}",
                token_embd.n_rows
            )));
        }
        token_embd.dequantize_row(tok as usize, row)?;
    }
    Ok(())
}

/// A 1-D weight (a norm) as f32.
fn vector(w: &Weight<'_>) -> Result<Vec<f32>, RuntimeError> {
    let mut v = vec![0f32; w.row_len];
    w.dequantize_row(0, &mut v)?;
    Ok(v)
}

/// `out[t] = rmsnorm(x[t]) * w` for every token row.
fn rmsnorm_rows(out: &mut [f32], x: &[f32], w: &Weight<'_>, eps: f32) -> Result<(), RuntimeError> {
    let g = vector(w)?;
    let dim = g.len();
    for (o, xt) in out.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
        rmsnorm(o, xt, &g, eps);
    }
    Ok(())
}

/// One decoder layer on `hidden` (`n_tokens × hidden`, updated in place) for tokens at
/// positions `pos0..pos0 + n_tokens`; their keys and values go into `cache` (which must hold
/// exactly the positions `0..pos0`, or more that are then overwritten).
pub fn layer(
    hp: &Hparams,
    w: &LayerWeights<'_>,
    cache: &mut LayerCache,
    cache_type: CacheType,
    hidden: &mut [f32],
    pos0: usize,
    n_tokens: usize,
) -> Result<(), RuntimeError> {
    let dim = hp.hidden as usize;
    let hd = hp.head_dim as usize;
    let kv_dim = hp.kv_heads as usize * hd;
    let ffn = hp.ffn as usize;
    let n = n_tokens;
    let eps = hp.rms_norm_eps;

    // ---- attention block ----
    let mut x = vec![0f32; n * dim];
    rmsnorm_rows(&mut x, hidden, &w.attn_norm, eps)?;

    let mut q = vec![0f32; n * dim];
    let mut k = vec![0f32; n * kv_dim];
    let mut v = vec![0f32; n * kv_dim];
    matmul(&w.attn_q, &x, n, &mut q)?;
    matmul(&w.attn_k, &x, n, &mut k)?;
    matmul(&w.attn_v, &x, n, &mut v)?;

    // rotary embedding of q and k, every head of every token at its own position
    let half = hp.rope_dims as usize / 2;
    let (mut cos, mut sin) = (vec![0f32; half], vec![0f32; half]);
    for t in 0..n {
        rope_angles(
            pos0 + t,
            hp.rope_dims as usize,
            hp.rope_freq_base,
            &mut cos,
            &mut sin,
        );
        for head in q[t * dim..(t + 1) * dim].chunks_exact_mut(hd) {
            rope_pairs(head, &cos, &sin);
        }
        for head in k[t * kv_dim..(t + 1) * kv_dim].chunks_exact_mut(hd) {
            rope_pairs(head, &cos, &sin);
        }
    }

    cache.store(pos0, &k, &v)?;
    let att = attention(hp, cache, cache_type, &q, pos0, n)?;

    let mut o = vec![0f32; n * dim];
    matmul(&w.attn_output, &att, n, &mut o)?;
    add(hidden, &o);

    // ---- feed-forward block (SwiGLU) ----
    rmsnorm_rows(&mut x, hidden, &w.ffn_norm, eps)?;
    let mut gate = vec![0f32; n * ffn];
    let mut up = vec![0f32; n * ffn];
    matmul(&w.ffn_gate, &x, n, &mut gate)?;
    matmul(&w.ffn_up, &x, n, &mut up)?;
    swiglu(&mut gate, &up);
    matmul(&w.ffn_down, &gate, n, &mut o)?;
    add(hidden, &o);
    Ok(())
}

/// Causal multi-head attention of the queries `q` (`n_tokens × hidden`, already rotated) of
/// tokens at positions `pos0..` over the cached keys and values of positions `0..=pos`.
/// Returns `n_tokens × hidden`. One task per query head.
///
/// As in ggml, the query's product with an f16 cache is taken on the query rounded to f16
/// (with a q8_0 cache: quantized to Q8_0); the attention weights stay f32 (b2757's CPU path
/// multiplies them with the f16 values without rounding them).
fn attention(
    hp: &Hparams,
    cache: &LayerCache,
    cache_type: CacheType,
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
                match cache_type {
                    CacheType::F32 => {}
                    CacheType::F16 => round_f16(&mut qh),
                    CacheType::Q8_0 => round_activations(GgmlType::Q8_0, &mut qh, hd)?,
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

/// The output head: final RMSNorm and the output matrix, for each row of `hidden`
/// (`n_tokens × hidden`). Returns `n_tokens × vocab` logits.
pub fn logits(
    hp: &Hparams,
    output_norm: &Weight<'_>,
    output: &Weight<'_>,
    hidden: &[f32],
    n_tokens: usize,
) -> Result<Vec<f32>, RuntimeError> {
    let dim = hp.hidden as usize;
    let mut x = vec![0f32; n_tokens * dim];
    rmsnorm_rows(&mut x, hidden, output_norm, hp.rms_norm_eps)?;
    let mut out = vec![0f32; n_tokens * output.n_rows];
    matmul(output, &x, n_tokens, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::KvCache;

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

    #[test]
    fn attention_on_a_hand_example() {
        // one head of 2 dims, two cached positions: k0 = (1, 0), k1 = (0, 1), v0 = (1, 2),
        // v1 = (3, 4). Query (2, 0) at position 1: scores (2, 0)/sqrt(2), softmax, mix.
        let p = hp(1, 1, 2);
        let mut c = KvCache::new(CacheType::F32, 1, 4, 1, 2).unwrap();
        c.layer_mut(0)
            .store(0, &[1.0, 0.0, 0.0, 1.0], &[1.0, 2.0, 3.0, 4.0])
            .unwrap();
        let out = attention(&p, c.layer(0), CacheType::F32, &[2.0, 0.0], 1, 1).unwrap();
        let s0 = 2.0 / 2f32.sqrt();
        let p0 = s0.exp() / (s0.exp() + 1.0);
        let want = [p0 * 1.0 + (1.0 - p0) * 3.0, p0 * 2.0 + (1.0 - p0) * 4.0];
        assert!((out[0] - want[0]).abs() < 1e-6 && (out[1] - want[1]).abs() < 1e-6);
        // causal: the same query at position 0 sees only v0
        let out = attention(&p, c.layer(0), CacheType::F32, &[2.0, 0.0], 0, 1).unwrap();
        assert_eq!(out, vec![1.0, 2.0]);
        // a batch of both positions gives both rows at once
        let out = attention(&p, c.layer(0), CacheType::F32, &[2.0, 0.0, 2.0, 0.0], 0, 2).unwrap();
        assert_eq!(&out[..2], &[1.0, 2.0]);
        assert!((out[2] - want[0]).abs() < 1e-6 && (out[3] - want[1]).abs() < 1e-6);
    }

    #[test]
    fn grouped_query_heads_share_kv_heads() {
        // 4 query heads, 2 kv heads: heads 0, 1 read kv head 0; heads 2, 3 read kv head 1
        let p = hp(4, 2, 2);
        let mut c = KvCache::new(CacheType::F32, 1, 4, 2, 2).unwrap();
        // one position: kv head 0 values (1, 1), kv head 1 values (5, 5)
        c.layer_mut(0)
            .store(0, &[0.0, 0.0, 0.0, 0.0], &[1.0, 1.0, 5.0, 5.0])
            .unwrap();
        let out = attention(&p, c.layer(0), CacheType::F32, &[0.3; 8], 0, 1).unwrap();
        assert_eq!(out, vec![1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0]);
    }
}
