//! The q/k row permutation between Hugging Face's "rotate_half" layout and llama.cpp's
//! adjacent-pair layout.
//!
//! Within one head of `head_dim` rows, Hugging Face rotates row `j` together with row
//! `j + head_dim/2`; llama.cpp (rope type NORM) rotates rows `2j` and `2j + 1`. The converter
//! moves HF row `s·head_dim/2 + j` of each head to row `2j + s` (`s` ∈ {0, 1}), exactly what
//! llama.cpp's `_reverse_hf_permute` / `permute` does. q has `num_attention_heads` heads; k has
//! `num_key_value_heads` heads (llama.cpp b2757's xverse converter divides the head count by the
//! kv head count instead, which is wrong when they differ; here the kv head count is used).

use crate::convert_err;
use crate::source::ConvertError;

/// The HF row that lands in row `row` of a permuted head (`row < head_dim`, `head_dim` even).
pub fn source_row(row: usize, head_dim: usize) -> usize {
    let half = head_dim / 2;
    (row % 2) * half + row / 2
}

fn check(len: usize, heads: usize, cols: usize) -> Result<usize, ConvertError> {
    let rows = len.checked_div(cols).unwrap_or(0);
    if heads == 0 || cols == 0 || rows * cols != len || !rows.is_multiple_of(heads) {
        return Err(convert_err!(
            "cannot permute {len} values as {heads} heads of rows of {cols}"
        ));
    }
    let head_dim = rows / heads;
    if !head_dim.is_multiple_of(2) {
        return Err(convert_err!(
            "cannot permute heads of {head_dim} rows: rotary pairs need an even head size"
        ));
    }
    Ok(head_dim)
}

fn apply(data: &mut [f32], heads: usize, cols: usize, inverse: bool) -> Result<(), ConvertError> {
    let head_dim = check(data.len(), heads, cols)?;
    let mut scratch = vec![0f32; head_dim * cols];
    for head in data.chunks_exact_mut(head_dim * cols) {
        scratch.copy_from_slice(head);
        let from_rows: Vec<&[f32]> = scratch.chunks_exact(cols).collect();
        let mut to_rows: Vec<&mut [f32]> = head.chunks_exact_mut(cols).collect();
        for row in 0..head_dim {
            let hf = source_row(row, head_dim);
            // forward: row `row` takes HF row `hf`; inverse: HF row `hf` takes row `row`
            let (to, from) = if inverse { (hf, row) } else { (row, hf) };
            if let (Some(dst), Some(src)) = (to_rows.get_mut(to), from_rows.get(from)) {
                dst.copy_from_slice(src);
            }
        }
    }
    Ok(())
}

/// Permutes a q or k weight (`heads · head_dim` rows of `cols`, row-major) from the Hugging Face
/// rotate_half layout into llama.cpp's adjacent pairs, in place.
pub fn permute_rows(data: &mut [f32], heads: usize, cols: usize) -> Result<(), ConvertError> {
    apply(data, heads, cols, false)
}

/// Undoes [`permute_rows`]: llama.cpp's layout back to Hugging Face's.
pub fn unpermute_rows(data: &mut [f32], heads: usize, cols: usize) -> Result<(), ConvertError> {
    apply(data, heads, cols, true)
}
