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
//!
//! Fast path: where `xverse_quant::kernels` has a dot product for the weight type (and it
//! pairs the weights with the activation type above), each activation row is quantized ONCE
//! per product and the outputs are dot products of the raw weight rows of the map with those
//! blocks (no dequantized copy). Threads take chunks of rows; within a chunk, blocks of a few
//! rows are multiplied with tiles of tokens, so each weight row is read from memory once per
//! product and the activations of a tile stay in cache.
//!
//! F32, F16 and BF16 weights take the same tiled driver with the f32 activations as they are:
//! `kernels::vec_dot_f32_act` widens the stored weights in registers (no dequantized row) and
//! accumulates in f32 lanes, as llama.cpp b2757's x86 path does. [`matmul_reference`] remains
//! for weight types without a kernel (and as the tests' reference).
//!
//! One token (decode) goes to [`super::matvec`], which runs the same kernels row by row (or
//! group by group) and can take several weights in one parallel pass.

use rayon::prelude::*;
use xverse_quant::blocks;
use xverse_quant::kernels as fast;
use xverse_quant::kernels::packed;
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

/// A dot-product kernel for one weight type: activations quantized once per row into
/// `act_row_bytes`, dot products of raw weight rows with those blocks.
///
/// For a type whose packed layout has a row kernel in its own order
/// ([`packed::exact_rows`]: Q8_0, Q4_K and Q6_K where weights are repacked), the rows in the
/// file's layout of a weight that is repacked, or will be, go through that kernel, so the
/// weight gives the same numbers whether it has been repacked yet or not, and the repacking
/// may finish while the first tokens are computed; a weight left in the file's layout takes
/// the faster of that kernel and the per-row ones ([`packed::rows_for`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Kernel {
    ty: GgmlType,
    pub(super) act_row_bytes: usize,
    pub(super) exact: Option<packed::RowsFn>,
}

impl Kernel {
    /// The kernel for `ty` weights with rows of `n_in`, when quant has one that computes the
    /// function of the reference path (same activation type: so not for F32/F16/BF16, whose
    /// activations stay f32 as in llama.cpp b2757's x86 path, while quant pairs them with
    /// f16/bf16 activations).
    ///
    /// `repacked`: whether the weight is repacked or will be ([`Weight::repacked`]), which
    /// chooses the kernel for its rows in the file's layout ([`packed::rows_for`]).
    pub(super) fn for_type(ty: GgmlType, n_in: usize, repacked: bool) -> Option<Kernel> {
        let act = activation_type(ty)?;
        if !fast::supported(ty) || fast::vec_dot_type(ty) != act {
            return None;
        }
        let act_row_bytes = act.bytes_for(n_in as u64)? as usize;
        Some(Kernel {
            ty,
            act_row_bytes,
            exact: packed::rows_for(ty, repacked),
        })
    }

    pub(super) fn quantize(&self, x: &[f32], out: &mut Vec<u8>) {
        fast::quantize_activations(self.ty, x, out);
    }

    pub(super) fn dot(&self, n: usize, w_row: &[u8], act: &[u8]) -> f32 {
        match self.exact {
            Some(rows) => {
                let mut out = [0f32];
                rows(n, &[w_row], &[act], &mut out);
                out[0]
            }
            None => fast::vec_dot(self.ty, n, w_row, act),
        }
    }

    pub(super) fn tile(&self, n: usize, rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
        match self.exact {
            Some(f) => f(n, rows, acts, out),
            None => fast::vec_dot_tile(self.ty, n, rows, acts, out),
        }
    }
}

/// Rows of the weight handled by one task: about four tasks per thread (so a thread slowed by
/// the rest of the machine is balanced by the others), but at least ~64k multiply-adds per
/// task (`n_in × n_tokens` per row) so the fork-join stays small against the work, and a
/// whole number of [`ROW_BLOCK`]s.
fn rows_per_task(n_rows: usize, n_in: usize, n_tokens: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    rows_for_tasks(n_rows, n_in, n_tokens, 4 * threads).div_ceil(ROW_BLOCK) * ROW_BLOCK
}

/// Rows per task when `n_rows` rows of `n_in` are cut into `tasks` tasks, but at least ~64k
/// multiply-adds per task (`n_in × n_tokens` per row) so the fork-join stays small against the
/// work; between 1 and `n_rows`.
pub(super) fn rows_for_tasks(n_rows: usize, n_in: usize, n_tokens: usize, tasks: usize) -> usize {
    let by_tasks = n_rows.div_ceil(tasks.max(1));
    let by_work = 65_536usize.div_ceil((n_in * n_tokens).max(1));
    by_tasks.max(by_work).clamp(1, n_rows.max(1))
}

/// Weight rows multiplied together with one tile of tokens (their bytes stay in L1/L2): the
/// rows of one kernel tile.
const ROW_BLOCK: usize = fast::TILE_ROWS;
/// Bytes of quantized activations in one tile of tokens (kept in L2 while a block of rows
/// passes over it).
const TILE_BYTES: usize = 128 << 10;

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
    if n_tokens == 1 {
        return super::matvec::matvec(w, x, y);
    }
    if w.data.len() < n_out * w.row_bytes {
        return Err(RuntimeError::new(format!(
            "matmul {}: {} bytes for {n_out} rows of {}",
            w.name,
            w.data.len(),
            w.row_bytes
        )));
    }
    if fast::supported_f32_act(w.ty) && w.ty.bytes_for(n_in as u64) == Some(w.row_bytes as u64) {
        let ty = w.ty;
        products(w, x, n_in, n_tokens, y, |rs, ts, o| {
            fast::vec_dot_f32_act_tile(ty, n_in, rs, ts, o)
        });
        return Ok(());
    }
    match Kernel::for_type(w.ty, n_in, w.repacked) {
        Some(k) => {
            let act = quantize_rows(x, n_in, |row, out| k.quantize(row, out));
            check_act(w, &act, k.act_row_bytes * n_tokens)?;
            if let (Some(bytes), Some(format)) = (w.packed, packed::format(w.ty)) {
                return products_packed(w, bytes, format, k, &act, n_tokens, y);
            }
            products(w, &act, k.act_row_bytes, n_tokens, y, |rs, ts, o| {
                k.tile(n_in, rs, ts, o)
            });
            Ok(())
        }
        None => matmul_reference(w, x, n_tokens, y),
    }
}

/// `ys[i] = ws[i] · x` for weights that read the same activations `x` (`n_tokens` rows): one
/// parallel pass over the rows of all of them for one token ([`super::matvec::matvec_many`]),
/// each product in turn for a batch (where one product is long against its fork-join).
pub fn matmul_many(
    ws: &[&Weight<'_>],
    x: &[f32],
    n_tokens: usize,
    ys: &mut [&mut [f32]],
) -> Result<(), RuntimeError> {
    if n_tokens == 1 {
        return super::matvec::matvec_many(ws, x, ys);
    }
    if ws.len() != ys.len() {
        return Err(RuntimeError::new(format!(
            "matmul: {} weights and {} outputs",
            ws.len(),
            ys.len()
        )));
    }
    for (w, y) in ws.iter().zip(ys.iter_mut()) {
        matmul(w, x, n_tokens, y)?;
    }
    Ok(())
}

pub(super) fn check_act(w: &Weight<'_>, act: &[u8], want: usize) -> Result<(), RuntimeError> {
    if act.len() == want {
        Ok(())
    } else {
        Err(RuntimeError::new(format!(
            "matmul {}: {} bytes of quantized activations, {want} expected",
            w.name,
            act.len()
        )))
    }
}

/// The rows of `x` (`row_len` each) quantized by `quantize`, concatenated; rows in parallel
/// for a batch.
fn quantize_rows(
    x: &[f32],
    row_len: usize,
    quantize: impl Fn(&[f32], &mut Vec<u8>) + Sync,
) -> Vec<u8> {
    let n = x.len() / row_len.max(1);
    if n <= 1 {
        let mut out = Vec::new();
        quantize(x, &mut out);
        return out;
    }
    let rows: Vec<Vec<u8>> = x
        .par_chunks(row_len)
        .map(|row| {
            let mut out = Vec::new();
            quantize(row, &mut out);
            out
        })
        .collect();
    rows.concat()
}

/// `y[t][r] = dot(W row r, act[t])` for every token `t` and row `r`, rows split over the
/// threads of the current pool. `act` holds `n_tokens` rows of `act_stride` elements (bytes of
/// quantized blocks, or f32 values), taken by `tile` on blocks of [`ROW_BLOCK`] rows ×
/// [`fast::TILE_COLS`] tokens (`tile(rows, acts, out)` writes `out[r * acts.len() + t]`).
/// (One token takes [`super::matvec`] instead.)
fn products<T: Sync>(
    w: &Weight<'_>,
    act: &[T],
    act_stride: usize,
    n_tokens: usize,
    y: &mut [f32],
    tile: impl Fn(&[&[u8]], &[&[T]], &mut [f32]) + Sync,
) {
    let n_out = w.n_rows;
    let per = rows_per_task(n_out, w.row_len, n_tokens);
    let row = |r: usize| &w.data[r * w.row_bytes..(r + 1) * w.row_bytes];
    // tiles: ROW_BLOCK rows × `tile` tokens; out is rows × tokens (transposed)
    let row_bytes = (act_stride * std::mem::size_of::<T>()).max(1);
    let span = (TILE_BYTES / row_bytes).clamp(1, n_tokens);
    let token = |t: usize| &act[t * act_stride..(t + 1) * act_stride];
    let mut yt = vec![0f32; n_out * n_tokens];
    yt.par_chunks_mut(per * n_tokens)
        .enumerate()
        .for_each(|(c, out)| {
            let r0 = c * per;
            let mut buf = [0f32; ROW_BLOCK * fast::TILE_COLS];
            for (b, out_b) in out.chunks_mut(ROW_BLOCK * n_tokens).enumerate() {
                let rb = r0 + b * ROW_BLOCK;
                let nr = out_b.len() / n_tokens;
                let mut rows: [&[u8]; ROW_BLOCK] = [&[]; ROW_BLOCK];
                for (j, r) in rows[..nr].iter_mut().enumerate() {
                    *r = row(rb + j);
                }
                for t0 in (0..n_tokens).step_by(span) {
                    let t1 = (t0 + span).min(n_tokens);
                    for ts in (t0..t1).step_by(fast::TILE_COLS) {
                        let te = (ts + fast::TILE_COLS).min(t1);
                        let nc = te - ts;
                        let mut acts: [&[T]; fast::TILE_COLS] = [&[]; fast::TILE_COLS];
                        for (j, a) in acts[..nc].iter_mut().enumerate() {
                            *a = token(ts + j);
                        }
                        let o = &mut buf[..nr * nc];
                        tile(&rows[..nr], &acts[..nc], o);
                        for (r, vals) in o.chunks_exact(nc).enumerate() {
                            out_b[r * n_tokens + ts..r * n_tokens + te].copy_from_slice(vals);
                        }
                    }
                }
            }
        });
    transpose_into(&yt, n_out, n_tokens, y);
}

/// `y = W x` for a weight whose first `n_rows / 8 * 8` rows are `bytes` in the eight-row
/// packed layout `format` ([`packed`]: Q4_0, Q4_K, Q6_K, Q8_0), the activations `act` already
/// quantized (one row per token, two or more tokens; one token takes [`super::matvec`]): the
/// groups of eight rows split over the threads like [`products`]' rows, each group multiplied
/// with tiles of tokens (`gemm`); the last `n_rows % 8` rows by the row kernels of `k`.
fn products_packed(
    w: &Weight<'_>,
    bytes: &[u8],
    format: packed::Format,
    k: Kernel,
    act: &[u8],
    n_tokens: usize,
    y: &mut [f32],
) -> Result<(), RuntimeError> {
    const G: usize = packed::ROWS;
    let (n_in, n_out) = (w.row_len, w.n_rows);
    let gb = (format.group_bytes)(n_in).unwrap_or(0);
    let groups = n_out / G;
    if gb == 0 || bytes.len() != groups * gb {
        return Err(RuntimeError::new(format!(
            "matmul {}: {} packed bytes for {groups} groups of 8 rows of {n_in}",
            w.name,
            bytes.len()
        )));
    }
    let stride = k.act_row_bytes;
    let token = |t: usize| &act[t * stride..(t + 1) * stride];
    let sums: Vec<Vec<i32>> = (0..n_tokens)
        .map(|t| {
            let mut s = Vec::new();
            (format.prep)(token(t), &mut s);
            s
        })
        .collect();
    let group = |g: usize| &bytes[g * gb..(g + 1) * gb];
    // whole groups per task, as `products` splits rows
    let per = (rows_per_task(n_out, n_in, n_tokens) / G).max(1);
    let tail = groups * G..n_out;
    // groups × tiles of tokens; out is rows × tokens (transposed), like `products`
    let span = (TILE_BYTES / stride.max(1)).clamp(1, n_tokens);
    let mut yt = vec![0f32; n_out * n_tokens];
    let (head, rest) = yt.split_at_mut(groups * G * n_tokens);
    head.par_chunks_mut(per * G * n_tokens)
        .enumerate()
        .for_each(|(c, out)| {
            let g0 = c * per;
            let mut buf = [0f32; G * packed::TILE_TOKENS];
            for t0 in (0..n_tokens).step_by(span) {
                let t1 = (t0 + span).min(n_tokens);
                for (j, out_g) in out.chunks_exact_mut(G * n_tokens).enumerate() {
                    for ts in (t0..t1).step_by(packed::TILE_TOKENS) {
                        let te = (ts + packed::TILE_TOKENS).min(t1);
                        let nc = te - ts;
                        let mut acts: [&[u8]; packed::TILE_TOKENS] = [&[]; packed::TILE_TOKENS];
                        let mut ss: [&[i32]; packed::TILE_TOKENS] = [&[]; packed::TILE_TOKENS];
                        for t in 0..nc {
                            acts[t] = token(ts + t);
                            ss[t] = &sums[ts + t];
                        }
                        let o = &mut buf[..G * nc];
                        (format.gemm)(n_in, group(g0 + j), &acts[..nc], &ss[..nc], o);
                        for (r, vals) in o.chunks_exact(nc).enumerate() {
                            out_g[r * n_tokens + ts..r * n_tokens + te].copy_from_slice(vals);
                        }
                    }
                }
            }
        });
    for (out_r, r) in rest.chunks_exact_mut(n_tokens).zip(tail) {
        for (t, o) in out_r.iter_mut().enumerate() {
            *o = k.dot(n_in, w.row(r), token(t));
        }
    }
    transpose_into(&yt, n_out, n_tokens, y);
    Ok(())
}

/// How many rows ahead the decode loop prefetches: [`PREFETCH_BYTES`] ahead, or what
/// `XVERSE_PREFETCH=BYTES` says (0: no prefetch).
///
/// A single core streams weights at ~7 GB/s on the measured Zen 3 machine when the hardware
/// prefetchers alone fetch them (they stop at each 4 KiB page); asking for the rows 4 KiB
/// ahead raised one-thread decode of Q4_K_M by ~20 % and Q8_0 by ~15 % against llama.cpp in
/// the same run (`bench_vs_llama`, README "Speed").
pub(super) fn prefetch_rows(row_bytes: usize) -> usize {
    let bytes = prefetch_distance();
    if bytes == 0 {
        0
    } else {
        (bytes / row_bytes.max(1)).max(1)
    }
}

/// How far ahead, in bytes of weights, the per-row decode loop prefetches (the packed one does
/// not): [`PREFETCH_BYTES`], or
/// what `XVERSE_PREFETCH=BYTES` says (0: no prefetch; an unparsable value is ignored).
fn prefetch_distance() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("XVERSE_PREFETCH")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(PREFETCH_BYTES)
    })
}

/// Default prefetch distance of the decode loop, in bytes of weight rows.
const PREFETCH_BYTES: usize = 4096;

/// Asks the CPU to start loading `bytes` into the cache (one hint per 64-byte line).
#[inline]
pub(super) fn prefetch(bytes: &[u8]) {
    xverse_quant::kernels::prefetch_ahead(bytes.as_ptr(), 0, bytes.len());
}

/// `y[t * n_out + r] = yt[r * n_tokens + t]`.
fn transpose_into(yt: &[f32], n_out: usize, n_tokens: usize, y: &mut [f32]) {
    for (r, col) in yt.chunks_exact(n_tokens).enumerate().take(n_out) {
        for (t, &v) in col.iter().enumerate() {
            y[t * n_out + r] = v;
        }
    }
}

/// The reference path: each weight row dequantized once per batch, f32 dot products with the
/// activations rounded to [`activation_type`].
pub(super) fn matmul_reference(
    w: &Weight<'_>,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
) -> Result<(), RuntimeError> {
    let (n_in, n_out) = (w.row_len, w.n_rows);
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

    let per = rows_per_task(n_out, w.row_len, n_tokens);
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
    transpose_into(&yt, n_out, n_tokens, y);
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A weight over `data` in the file's layout (not repacked).
    pub(in crate::cpu) fn weight<'a>(
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
            packed: None,
            repacked: false,
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

    /// The tiled fast-path driver with a dot product built from the blocks (dequantize both,
    /// f32 dot) gives exactly the reference path's numbers, for any batch and thread split.
    #[test]
    fn tiled_products_match_the_reference_path() {
        let (n_in, n_out) = (64, 37);
        let wf: Vec<f32> = (0..n_in * n_out)
            .map(|i| ((i as f32) * 0.77).sin())
            .collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::F16] {
            let mut bytes = vec![0u8; ty.bytes_for((n_in * n_out) as u64).unwrap() as usize];
            blocks::quantize_row(ty, &wf, &mut bytes).unwrap();
            let w = weight("w", ty, n_in, n_out, &bytes);
            let act_ty = activation_type(ty).unwrap_or(GgmlType::F32);
            let stride = act_ty.bytes_for(n_in as u64).unwrap() as usize;
            for n_tok in [1, 2, 9] {
                let x: Vec<f32> = (0..n_tok * n_in)
                    .map(|i| ((i as f32) * 0.29).cos())
                    .collect();
                let mut want = vec![0f32; n_tok * n_out];
                matmul_reference(&w, &x, n_tok, &mut want).unwrap();
                let act = quantize_rows(&x, n_in, |row, out| {
                    out.resize(stride, 0);
                    blocks::quantize_row(act_ty, row, out).unwrap();
                });
                assert_eq!(act.len(), stride * n_tok);
                let dot_blocks = |wr: &[u8], a: &[u8]| {
                    let (mut wv, mut av) = (vec![0f32; n_in], vec![0f32; n_in]);
                    blocks::dequantize_row(ty, wr, &mut wv).unwrap();
                    blocks::dequantize_row(act_ty, a, &mut av).unwrap();
                    dot(&wv, &av)
                };
                let tile_blocks = |rs: &[&[u8]], ts: &[&[u8]], o: &mut [f32]| {
                    for (r, wr) in rs.iter().enumerate() {
                        for (t, a) in ts.iter().enumerate() {
                            o[r * ts.len() + t] = dot_blocks(wr, a);
                        }
                    }
                };
                for threads in [1, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut y = vec![0f32; n_tok * n_out];
                    pool.install(|| products(&w, &act, stride, n_tok, &mut y, tile_blocks));
                    assert_eq!(y, want, "{ty} {n_tok} tokens {threads} threads");
                }
            }
        }
    }

    /// A Q4_0, Q4_K, Q6_K or Q8_0 weight with its whole groups of eight rows repacked gives the row
    /// kernels' numbers (to float rounding: the packed kernels use fused multiply-adds) for
    /// decode and prompts, with a tail of rows outside the groups, on one and three threads.
    #[test]
    fn packed_weights_match_the_row_kernels() {
        let (n_in, n_out) = (512, 8 * 5 + 3);
        let wf: Vec<f32> = (0..n_in * n_out)
            .map(|i| ((i as f32) * 0.37).sin() * 0.05)
            .collect();
        // a byte of row 0's quants in each layout
        for (ty, row0_quant) in [
            (GgmlType::Q4_0, 16),
            (GgmlType::Q4K, 160),
            (GgmlType::Q6K, 144),
            (GgmlType::Q8_0, 16),
        ] {
            let format = packed::format(ty).unwrap();
            let mut bytes = vec![0u8; ty.bytes_for((n_in * n_out) as u64).unwrap() as usize];
            blocks::quantize_row(ty, &wf, &mut bytes).unwrap();
            let plain = weight("w", ty, n_in, n_out, &bytes);
            let rb = plain.row_bytes;
            let gb = (format.group_bytes)(n_in).unwrap();
            let mut packed_bytes = vec![0u8; n_out / 8 * gb];
            for (g, rows) in packed_bytes
                .chunks_exact_mut(gb)
                .zip(bytes.chunks_exact(8 * rb))
            {
                assert!((format.pack)(n_in, rows, g));
            }
            let packed_w = Weight {
                packed: Some(&packed_bytes),
                repacked: true,
                ..plain
            };
            for n_tok in [1, 2, 9] {
                let x: Vec<f32> = (0..n_tok * n_in)
                    .map(|i| ((i as f32) * 0.11).cos())
                    .collect();
                for threads in [1, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let (mut want, mut got) =
                        (vec![0f32; n_tok * n_out], vec![0f32; n_tok * n_out]);
                    pool.install(|| {
                        matmul(&plain, &x, n_tok, &mut want).unwrap();
                        matmul(&packed_w, &x, n_tok, &mut got).unwrap();
                    });
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{ty} {n_tok} tokens {threads} threads, output {i}: {a} vs {b}"
                        );
                    }
                    // the packed path ran (not the row kernels on the map): a corrupted
                    // packed copy changes row 0's result
                    let mut bad = packed_bytes.clone();
                    bad[row0_quant] ^= 0xff;
                    let bad_w = Weight {
                        packed: Some(&bad),
                        repacked: true,
                        ..plain
                    };
                    let mut y = vec![0f32; n_tok * n_out];
                    pool.install(|| matmul(&bad_w, &x, n_tok, &mut y).unwrap());
                    assert_ne!(y[0], want[0], "{ty}: packed path not taken");
                }
            }
            // a packed copy of the wrong size is an error naming the tensor
            let short = Weight {
                packed: Some(&packed_bytes[1..]),
                repacked: true,
                ..plain
            };
            let mut y = vec![0f32; n_out];
            let e = matmul(&short, &vec![0.5; n_in], 1, &mut y).unwrap_err();
            assert!(e.to_string().contains("matmul w"), "{e}");
        }
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
