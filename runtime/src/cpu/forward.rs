//! The XVERSE forward pass on the CPU, top to bottom (in the spirit of llama2.c's `run.c`).
//!
//! ```text
//! hidden = token_embd[tokens]                                  embed()
//! for each layer:                                              layer()
//!     x = rmsnorm(hidden) * attn_norm
//!     q, k, v = Wq x, Wk x, Wv x
//!     q, k = rope(q, pos), rope(k, pos)        adjacent pairs (2i, 2i+1)
//!     cache[pos] = k, v
//!     a = softmax(q·K^T / sqrt(head_dim), causal) · V           attention::attention()
//!     hidden += Wo a
//!     x = rmsnorm(hidden) * ffn_norm
//!     hidden += Wdown (silu(Wgate x) * Wup x)
//! logits = Woutput (rmsnorm(hidden) * output_norm)             logits()
//! ```
//!
//! All activations are row-major `n_tokens × width` f32 buffers. A prompt is one batch (every
//! matrix product is matrix × matrix, see [`super::matmul`]); generation is a batch of one
//! (matrix × vector, [`super::matvec`]: q, k and v in one parallel pass, gate and up in one).
//! Layers may be split between stages, so [`embed`], [`layer`] and [`logits`] are separate
//! entry points; a stage calls [`layer`] for each of its layers.
//!
//! Rotary embedding: GGUF files store q and k rows permuted (by the converter, like
//! llama.cpp's) so that the rotated pairs are adjacent: pair `(2i, 2i+1)` of each head turns by
//! `theta_i = pos · base^(-2i/rope_dims)`. Attention with grouped kv heads: query head `h` reads
//! kv head `h / (heads / kv_heads)`.

use super::attention::attention;
use super::matmul::{matmul, matmul_many};
use super::ops::{add, rmsnorm, rope_angles, rope_pairs, swiglu};
use crate::error::RuntimeError;
use crate::hparams::Hparams;
use crate::kv_cache::{KvTypes, LayerCache};
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
    cache_type: KvTypes,
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
    matmul_many(
        &[&w.attn_q, &w.attn_k, &w.attn_v],
        &x,
        n,
        &mut [&mut q, &mut k, &mut v],
    )?;

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
    matmul_many(&[&w.ffn_gate, &w.ffn_up], &x, n, &mut [&mut gate, &mut up])?;
    swiglu(&mut gate, &up);
    matmul(&w.ffn_down, &gate, n, &mut o)?;
    add(hidden, &o);
    Ok(())
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
