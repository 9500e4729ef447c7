//! Matrix × vector for decode: `y_i = W_i x` for one token and one or more weights that read
//! the same activations (the attention's q, k and v; the feed-forward's gate and up).
//!
//! The rows of all the weights are cut into tasks of about equal bytes, about four per thread
//! in all, and the threads take them in ONE parallel pass: one fork-join for q, k and v
//! instead of three, and the activations quantized once per activation type instead of once
//! per matrix. A decode step is bound by memory bandwidth, and at each join the thread that
//! finishes first waits for the other, which streams alone at about 60 % of what two threads
//! pull together; fewer joins, less of that tail.
//!
//! Per task, the kernels are those of [`super::matmul`]: packed groups of eight rows
//! ([`packed`]) where the weight was repacked, else the row kernels on the file's rows with a
//! prefetch some rows ahead, f32 activations for F32/F16/BF16 weights, and the reference path
//! (dequantized rows) for a weight type without a kernel.

use rayon::prelude::*;
use xverse_quant::kernels as fast;
use xverse_quant::kernels::packed;
use xverse_quant::GgmlType;

use super::matmul::{check_act, matmul_reference, prefetch, prefetch_rows, rows_for_tasks, Kernel};
use crate::error::RuntimeError;
use crate::model::Weight;

/// How one weight's rows meet the token.
#[derive(Clone, Copy)]
enum Plan<'w> {
    /// F32, F16 or BF16 weights × the f32 activations.
    F32Act,
    /// Row kernels, the activations quantized as `acts[act]`.
    Rows { k: Kernel, act: usize },
    /// Whole groups of eight rows in the packed layout `format` (`gb` bytes a group, `bytes`
    /// in all), block sums `sums[sum]` of `acts[act]`; the last `n_rows % 8` rows by `k`.
    Packed {
        k: Kernel,
        act: usize,
        sum: usize,
        bytes: &'w [u8],
        format: packed::Format,
        gb: usize,
    },
    /// No kernel for the type: [`matmul_reference`], outside the parallel pass.
    Reference,
}

/// `ys[i] = ws[i] · x` for one token: `x` holds `row_len` values (the same for every weight)
/// and `ys[i]` `ws[i].n_rows`. The rows of all the weights are split over the threads of the
/// current pool in one pass.
pub fn matvec_many(
    ws: &[&Weight<'_>],
    x: &[f32],
    ys: &mut [&mut [f32]],
) -> Result<(), RuntimeError> {
    if ws.len() != ys.len() {
        return Err(RuntimeError::new(format!(
            "matvec: {} weights and {} outputs",
            ws.len(),
            ys.len()
        )));
    }
    for (w, y) in ws.iter().zip(ys.iter()) {
        check_shapes(w, x.len(), y.len())?;
    }

    // the activations, quantized once per activation type; the packed layouts' block sums
    // once per weight type
    let mut acts: Vec<(GgmlType, Vec<u8>)> = Vec::new();
    let mut sums: Vec<(GgmlType, Vec<i32>)> = Vec::new();
    let mut plans = Vec::with_capacity(ws.len());
    for w in ws {
        plans.push(plan(w, x, &mut acts, &mut sums)?);
    }

    // tasks of about equal bytes, about four per thread in all
    let threads = rayon::current_num_threads().max(1);
    let total: usize = ws.iter().map(|w| w.n_rows * w.row_bytes).sum();
    let mut tasks: Vec<(usize, usize, &mut [f32])> = Vec::new();
    for (i, (w, y)) in ws.iter().zip(ys.iter_mut()).enumerate() {
        if matches!(plans[i], Plan::Reference) || y.is_empty() {
            continue;
        }
        let per = rows_per_task(w, 4 * threads, total);
        for (c, out) in y.chunks_mut(per).enumerate() {
            tasks.push((i, c * per, out));
        }
    }
    let (acts, sums) = (&acts, &sums);
    tasks.into_par_iter().for_each(|(i, first, out)| {
        rows(ws[i], plans[i], x, acts, sums, first, out);
    });

    for ((w, y), p) in ws.iter().zip(ys.iter_mut()).zip(&plans) {
        if matches!(p, Plan::Reference) {
            matmul_reference(w, x, 1, y)?;
        }
    }
    Ok(())
}

/// `y = w · x` for one token ([`matvec_many`] with one weight).
pub fn matvec(w: &Weight<'_>, x: &[f32], y: &mut [f32]) -> Result<(), RuntimeError> {
    matvec_many(&[w], x, &mut [y])
}

fn check_shapes(w: &Weight<'_>, n_x: usize, n_y: usize) -> Result<(), RuntimeError> {
    if n_x != w.row_len || n_y != w.n_rows {
        return Err(RuntimeError::new(format!(
            "matmul {}: {n_x} inputs and {n_y} outputs for one token of a [{}, {}] matrix",
            w.name, w.row_len, w.n_rows
        )));
    }
    if w.data.len() < w.n_rows * w.row_bytes {
        return Err(RuntimeError::new(format!(
            "matmul {}: {} bytes for {} rows of {}",
            w.name,
            w.data.len(),
            w.n_rows,
            w.row_bytes
        )));
    }
    Ok(())
}

/// The plan for `w`, quantizing `x` into `acts` (and the block sums into `sums`) when no
/// earlier weight needed the same.
fn plan<'w>(
    w: &Weight<'w>,
    x: &[f32],
    acts: &mut Vec<(GgmlType, Vec<u8>)>,
    sums: &mut Vec<(GgmlType, Vec<i32>)>,
) -> Result<Plan<'w>, RuntimeError> {
    let n_in = w.row_len;
    if fast::supported_f32_act(w.ty) && w.ty.bytes_for(n_in as u64) == Some(w.row_bytes as u64) {
        return Ok(Plan::F32Act);
    }
    let Some(k) = Kernel::for_type(w.ty, n_in, w.repacked) else {
        return Ok(Plan::Reference);
    };
    let act_ty = fast::vec_dot_type(w.ty);
    let act = match acts.iter().position(|(t, _)| *t == act_ty) {
        Some(a) => a,
        None => {
            let mut q = Vec::new();
            k.quantize(x, &mut q);
            check_act(w, &q, k.act_row_bytes)?;
            acts.push((act_ty, q));
            acts.len() - 1
        }
    };
    let (Some(bytes), Some(format)) = (w.packed, packed::format(w.ty)) else {
        return Ok(Plan::Rows { k, act });
    };
    let gb = (format.group_bytes)(n_in).unwrap_or(0);
    let groups = w.n_rows / packed::ROWS;
    if gb == 0 || bytes.len() != groups * gb {
        return Err(RuntimeError::new(format!(
            "matmul {}: {} packed bytes for {groups} groups of 8 rows of {n_in}",
            w.name,
            bytes.len()
        )));
    }
    let sum = match sums.iter().position(|(t, _)| *t == w.ty) {
        Some(s) => s,
        None => {
            let mut s = Vec::new();
            (format.prep)(&acts[act].1, &mut s);
            sums.push((w.ty, s));
            sums.len() - 1
        }
    };
    Ok(Plan::Packed {
        k,
        act,
        sum,
        bytes,
        format,
        gb,
    })
}

/// Rows of `w` per task: its share (by bytes) of `tasks` tasks over `total` bytes, at least
/// ~64k multiply-adds a task so the fork-join stays small against the work, and whole groups
/// of eight rows (so a task of a packed weight starts at a group).
fn rows_per_task(w: &Weight<'_>, tasks: usize, total: usize) -> usize {
    let share = (tasks * w.n_rows * w.row_bytes).div_ceil(total.max(1));
    rows_for_tasks(w.n_rows, w.row_len, 1, share).div_ceil(packed::ROWS) * packed::ROWS
}

/// `out[j] = row first + j of w · x` by the kernels of `plan`.
fn rows(
    w: &Weight<'_>,
    plan: Plan<'_>,
    x: &[f32],
    acts: &[(GgmlType, Vec<u8>)],
    sums: &[(GgmlType, Vec<i32>)],
    first: usize,
    out: &mut [f32],
) {
    let n_in = w.row_len;
    match plan {
        Plan::F32Act => each_row(w, first, out, |r| fast::vec_dot_f32_act(w.ty, n_in, r, x)),
        Plan::Rows { k, act } if k.exact.is_some() => {
            // four rows at a time, in the packed kernels' order (the kernel prefetches them)
            let a = &acts[act].1;
            for (c, o) in out.chunks_mut(ROWS_AT_ONCE).enumerate() {
                let r0 = first + c * ROWS_AT_ONCE;
                let mut rs: [&[u8]; ROWS_AT_ONCE] = [&[]; ROWS_AT_ONCE];
                for (j, r) in rs[..o.len()].iter_mut().enumerate() {
                    *r = w.row(r0 + j);
                }
                k.tile(n_in, &rs[..o.len()], &[a], o);
            }
        }
        Plan::Rows { k, act } => {
            let a = &acts[act].1;
            each_row(w, first, out, |r| k.dot(n_in, r, a));
        }
        Plan::Packed {
            k,
            act,
            sum,
            bytes,
            format,
            gb,
        } => {
            const G: usize = packed::ROWS;
            let (a, s) = (&acts[act].1, &sums[sum].1);
            // `first` is a whole number of groups (rows_per_task); rows past the last whole
            // group are the tail
            let groups = w.n_rows / G;
            let in_groups = (groups * G).saturating_sub(first).min(out.len()) / G * G;
            let (head, tail) = out.split_at_mut(in_groups);
            // the task's groups in two halves taken side by side (group i with group h + i):
            // two streams from memory at once, which a core pulls faster than one
            let group = |j: usize| {
                let g = first / G + j;
                &bytes[g * gb..(g + 1) * gb]
            };
            let h = head.len() / G / 2;
            let (lo, hi) = head.split_at_mut(h * G);
            let mut o2 = [[0f32; G]; 2];
            for (j, (oa, ob)) in lo
                .chunks_exact_mut(G)
                .zip(hi.chunks_exact_mut(G))
                .enumerate()
            {
                (format.gemv2)(n_in, group(j), group(h + j), a, s, &mut o2);
                oa.copy_from_slice(&o2[0]);
                ob.copy_from_slice(&o2[1]);
            }
            // an odd group out
            if let Some(o) = hi.chunks_exact_mut(G).nth(h) {
                let mut o8 = [0f32; G];
                (format.gemv)(n_in, group(2 * h), a, s, &mut o8);
                o.copy_from_slice(&o8);
            }
            for (j, o) in tail.iter_mut().enumerate() {
                *o = k.dot(n_in, w.row(first + in_groups + j), a);
            }
        }
        Plan::Reference => {}
    }
}

/// Rows of the file's layout one call of an exact row kernel ([`Kernel::exact`]) takes in
/// decode: four streams at once, as the packed kernels' two groups are two.
const ROWS_AT_ONCE: usize = 4;

/// `out[j] = dot(row first + j)` for rows of the file's layout, with the rows some way ahead
/// prefetched. (The packed groups are not: a task's groups are one contiguous run, which the
/// hardware prefetchers follow on their own, and hints made decode 20-40 % slower there.)
fn each_row(w: &Weight<'_>, first: usize, out: &mut [f32], dot: impl Fn(&[u8]) -> f32) {
    let ahead = prefetch_rows(w.row_bytes);
    let n = out.len();
    for (j, o) in out.iter_mut().enumerate() {
        if ahead > 0 && j + ahead < n {
            prefetch(w.row(first + j + ahead));
        }
        *o = dot(w.row(first + j));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::matmul::matmul;
    use crate::cpu::matmul::tests::weight;
    use xverse_quant::blocks;

    fn quantized(ty: GgmlType, n_in: usize, n_out: usize, seed: f32) -> Vec<u8> {
        let wf: Vec<f32> = (0..n_in * n_out)
            .map(|i| ((i as f32) * seed).sin() * 0.05)
            .collect();
        let mut bytes = vec![0u8; ty.bytes_for((n_in * n_out) as u64).unwrap() as usize];
        blocks::quantize_row(ty, &wf, &mut bytes).unwrap();
        bytes
    }

    fn packed_copy(ty: GgmlType, n_in: usize, n_out: usize, bytes: &[u8]) -> Vec<u8> {
        let format = packed::format(ty).unwrap();
        let gb = (format.group_bytes)(n_in).unwrap();
        let rb = ty.bytes_for(n_in as u64).unwrap() as usize;
        let mut out = vec![0u8; n_out / 8 * gb];
        for (g, rows) in out.chunks_exact_mut(gb).zip(bytes.chunks_exact(8 * rb)) {
            assert!((format.pack)(n_in, rows, g));
        }
        out
    }

    /// Several weights of different types, packed and not, with tails of rows outside the
    /// groups, in one pass: each output equals the batch path's product of that weight alone
    /// (the same functions, up to the kernels' float rounding), on one, two and three threads.
    /// At 4096 columns a task may be as short as 16 rows, so every weight is cut into
    /// several tasks.
    #[test]
    fn many_weights_in_one_pass_equal_each_alone() {
        let n_in = 4096;
        assert_eq!(
            rows_per_task(&weight("w", GgmlType::F32, n_in, 1000, &[]), 1000, 1000),
            16
        );
        let specs = [
            (GgmlType::Q4_0, 8 * 7 + 3, true),
            (GgmlType::Q4K, 8 * 3, true),
            (GgmlType::Q6K, 8 * 2 + 5, true),
            (GgmlType::Q8_0, 8 * 4 + 1, false),
            (GgmlType::Q4_1, 13, false),
            (GgmlType::F16, 17, false),
            (GgmlType::Q8_0, 8 * 5, true),
        ];
        let data: Vec<(Vec<u8>, Option<Vec<u8>>)> = specs
            .iter()
            .enumerate()
            .map(|(i, &(ty, n_out, pack))| {
                let b = quantized(ty, n_in, n_out, 0.37 + i as f32 * 0.1);
                let p = pack.then(|| packed_copy(ty, n_in, n_out, &b));
                (b, p)
            })
            .collect();
        let ws: Vec<Weight<'_>> = specs
            .iter()
            .zip(&data)
            .map(|(&(ty, n_out, _), (b, p))| Weight {
                packed: p.as_deref(),
                repacked: p.is_some(),
                ..weight("w", ty, n_in, n_out, b)
            })
            .collect();
        let x: Vec<f32> = (0..n_in).map(|i| ((i as f32) * 0.11).cos()).collect();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut got: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; w.n_rows]).collect();
            let mut want: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; w.n_rows]).collect();
            pool.install(|| {
                let refs: Vec<&Weight<'_>> = ws.iter().collect();
                let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|v| &mut v[..]).collect();
                matvec_many(&refs, &x, &mut outs).unwrap();
                for (w, y) in ws.iter().zip(&mut want) {
                    // two identical tokens through the tiled batch path: the same kernels
                    let x2 = [x.clone(), x.clone()].concat();
                    let mut y2 = vec![0f32; 2 * w.n_rows];
                    matmul(w, &x2, 2, &mut y2).unwrap();
                    y.copy_from_slice(&y2[..w.n_rows]);
                }
            });
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                for (r, (a, b)) in g.iter().zip(w).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{threads} threads, weight {i} ({}), row {r}: {a} vs {b}",
                        specs[i].0
                    );
                }
            }
        }
    }

    #[test]
    fn shapes_are_checked() {
        let b = quantized(GgmlType::Q8_0, 64, 8, 0.3);
        let w = weight("blk.0.attn_k.weight", GgmlType::Q8_0, 64, 8, &b);
        let x = vec![0.5f32; 64];
        let mut y = vec![0f32; 8];
        let mut short = vec![0f32; 7];
        let e = matvec_many(&[&w, &w], &x, &mut [&mut y, &mut short]).unwrap_err();
        assert!(e.to_string().contains("blk.0.attn_k.weight"), "{e}");
        assert!(matvec_many(&[&w], &x, &mut []).is_err());
        assert!(matvec(&w, &x[..32], &mut y).is_err());
        let cut = Weight {
            data: &b[..b.len() - 1],
            ..w
        };
        assert!(matvec(&cut, &x, &mut y).is_err());
        assert!(matvec(&w, &x, &mut y).is_ok());
    }
}
