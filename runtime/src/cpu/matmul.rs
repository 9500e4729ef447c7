//! `y = W x` for a batch of tokens, on weights of any type: the correct (not yet fast) kernel.
//!
//! Each weight row is dequantized once per batch and multiplied with every token of the batch
//! (a tile of rows × all tokens), f32 accumulation. Rows are split over the threads of the
//! current rayon pool.
//!
//! Like ggml, the activations of a product with quantized weights are first quantized to the
//! type ggml's dot product for that weight type works in (its `vec_dot_type`): Q8_0 for
//! Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants. F32, F16 and BF16 weights see
//! the f32 activations unchanged (for F16 that is what llama.cpp b2757 does on x86 through
//! llamafile's tinyBLAS, f16 weights times f32 activations). The results then agree closely
//! with llama.cpp's, and the fast integer kernels of the next step compute the same function.

use rayon::prelude::*;
use xverse_quant::blocks;
use xverse_quant::GgmlType;

use super::ops::dot;
use crate::error::RuntimeError;
use crate::model::Weight;

/// The type the activations of a matrix product with `ty` weights are rounded to (`None`:
/// kept in f32).
pub fn activation_type(ty: GgmlType) -> Option<GgmlType> {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => None,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => Some(GgmlType::Q8_0),
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => Some(GgmlType::Q8_1),
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            Some(GgmlType::Q8K)
        }
        GgmlType::Q8K => Some(GgmlType::Q8K),
    }
}

/// Rounds the rows of `x` (each `row_len` long) to `ty` and back to f32.
pub fn round_activations(ty: GgmlType, x: &mut [f32], row_len: usize) -> Result<(), RuntimeError> {
    let bytes = ty
        .bytes_for(row_len as u64)
        .ok_or_else(|| RuntimeError::new(format!("rows of {row_len} are not whole {ty} blocks")))?
        as usize;
    let mut buf = vec![0u8; bytes];
    for row in x.chunks_exact_mut(row_len) {
        blocks::quantize_row(ty, row, &mut buf)?;
        blocks::dequantize_row(ty, &buf, row)?;
    }
    Ok(())
}

/// Rows of the weight handled by one task: enough work per task, several tasks per thread.
fn rows_per_task(n_rows: usize, n_tokens: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_threads = n_rows.div_ceil(4 * threads);
    // at least ~64k multiply-adds per task
    let by_work = 65_536usize.div_ceil(n_tokens.max(1) * 64).max(1);
    by_threads.max(by_work.min(n_rows)).max(1)
}

/// `y[t] = W · x[t]` for each of the `n_tokens` rows of `x` (`x`: `n_tokens × w.row_len`,
/// `y`: `n_tokens × w.n_rows`, both row-major).
pub fn matmul(
    w: &Weight<'_>,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
) -> Result<(), RuntimeError> {
    let (n_in, n_out) = (w.row_len, w.n_rows);
    if x.len() != n_tokens * n_in || y.len() != n_tokens * n_out {
        return Err(RuntimeError::new(format!(
            "matmul {}: {} inputs and {} outputs for {n_tokens} tokens of a [{n_in}, {n_out}] matrix",
            w.name,
            x.len(),
            y.len()
        )));
    }
    if n_tokens == 0 || n_out == 0 {
        return Ok(());
    }

    // the activations as ggml's dot product sees them
    let rounded;
    let x = match activation_type(w.ty) {
        Some(t) => {
            let mut r = x.to_vec();
            round_activations(t, &mut r, n_in)?;
            rounded = r;
            &rounded[..]
        }
        None => x,
    };

    // one tile: rows r0.. of W against every token; out is rows × tokens (transposed)
    let tile = |r0: usize, out: &mut [f32]| -> Result<(), RuntimeError> {
        let mut row = vec![0f32; n_in];
        for (j, out_r) in out.chunks_exact_mut(n_tokens).enumerate() {
            w.dequantize_row(r0 + j, &mut row)?;
            for (o, xt) in out_r.iter_mut().zip(x.chunks_exact(n_in)) {
                *o = dot(&row, xt);
            }
        }
        Ok(())
    };

    let per = rows_per_task(n_out, n_tokens);
    if n_tokens == 1 {
        // y is already rows × 1
        return y
            .par_chunks_mut(per)
            .enumerate()
            .try_for_each(|(c, out)| tile(c * per, out));
    }
    let mut yt = vec![0f32; n_out * n_tokens];
    yt.par_chunks_mut(per * n_tokens)
        .enumerate()
        .try_for_each(|(c, out)| tile(c * per, out))?;
    for (r, col) in yt.chunks_exact(n_tokens).enumerate() {
        for (t, &v) in col.iter().enumerate() {
            y[t * n_out + r] = v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight<'a>(
        name: &'a str,
        ty: GgmlType,
        row_len: usize,
        n_rows: usize,
        data: &'a [u8],
    ) -> Weight<'a> {
        Weight {
            name,
            ty,
            row_len,
            n_rows,
            row_bytes: ty.bytes_for(row_len as u64).unwrap() as usize,
            data,
        }
    }

    fn naive(wf: &[f32], x: &[f32], n_in: usize, n_out: usize, n_tok: usize) -> Vec<f64> {
        let mut y = vec![0f64; n_tok * n_out];
        for t in 0..n_tok {
            for r in 0..n_out {
                y[t * n_out + r] = (0..n_in)
                    .map(|i| wf[r * n_in + i] as f64 * x[t * n_in + i] as f64)
                    .sum();
            }
        }
        y
    }

    #[test]
    fn f32_matches_naive_for_several_batch_sizes() {
        let (n_in, n_out) = (40, 77);
        let wf: Vec<f32> = (0..n_in * n_out)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let bytes: Vec<u8> = wf.iter().flat_map(|v| v.to_le_bytes()).collect();
        let w = weight("w", GgmlType::F32, n_in, n_out, &bytes);
        for n_tok in [1, 2, 5] {
            let x: Vec<f32> = (0..n_tok * n_in).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut y = vec![0f32; n_tok * n_out];
            matmul(&w, &x, n_tok, &mut y).unwrap();
            let want = naive(&wf, &x, n_in, n_out, n_tok);
            for (a, b) in y.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
        let mut y = vec![0f32; 3];
        assert!(matmul(&w, &[0.0; 40], 1, &mut y).is_err());
    }

    #[test]
    fn quantized_weights_are_close() {
        let (n_in, n_out, n_tok) = (256, 8, 3);
        let wf: Vec<f32> = (0..n_in * n_out)
            .map(|i| ((i as f32) * 0.61).sin())
            .collect();
        let x: Vec<f32> = (0..n_tok * n_in)
            .map(|i| ((i as f32) * 0.13).cos())
            .collect();
        let want = naive(&wf, &x, n_in, n_out, n_tok);
        for ty in [
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_1,
            GgmlType::Q4K,
            GgmlType::Q6K,
        ] {
            let mut bytes = vec![0u8; ty.bytes_for((n_in * n_out) as u64).unwrap() as usize];
            blocks::quantize_row(ty, &wf, &mut bytes).unwrap();
            let w = weight("w", ty, n_in, n_out, &bytes);
            let mut y = vec![0f32; n_tok * n_out];
            matmul(&w, &x, n_tok, &mut y).unwrap();
            let tol = if ty.is_quantized() { 2.0 } else { 0.2 };
            for (a, b) in y.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < tol, "{ty}: {a} vs {b}");
            }
        }
    }
}
