//! Single-threaded matrix × matrix speed of the tile kernels against per-pair dot products: a
//! ROWS × COLS weight matrix per type times ACTS activation rows, once as `vec_dot` for every
//! (weight row, activation row) pair and once as `vec_dot_tile` over 4 × 4 tiles, both walking
//! the matrix in the same tile order. Prints GFLOP/s-equivalent (2·ROWS·COLS·ACTS per run, per
//! CPU-second where `/proc/thread-self/schedstat` is readable, else per wall-second) and the
//! speed-up, and checks that both give the same values (up to float summation order).
//!
//! `cargo run --release -p xverse-quant --example tile_speed [ROWS COLS ACTS]`

use std::hint::black_box;
use xverse_quant::blocks;
use xverse_quant::kernels::{self, TILE_COLS, TILE_ROWS};
use xverse_quant::GgmlType;

#[path = "support/timing.rs"]
mod timing;
use timing::*;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let nrows = args.first().copied().unwrap_or(2048);
    let cols = args.get(1).copied().unwrap_or(2048);
    let nacts = args.get(2).copied().unwrap_or(128);
    let types = [
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::Q5K,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
    ];
    println!(
        "{nrows} x {cols} weights x {nacts} activation rows, 1 thread, level {:?}",
        kernels::simd_level()
    );
    println!(
        "{:<6} {:>16} {:>16} {:>9} {:>12}",
        "type", "pairs GFLOP/s", "tile GFLOP/s", "speed-up", "max rel diff"
    );
    let mut seed = 0x1234_5678_u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    for ty in types {
        if !kernels::supported(ty) || cols % ty.block_size() != 0 {
            continue;
        }
        let row_bytes = ty.bytes_for(cols as u64).unwrap() as usize;
        // 32 distinct quantized rows tiled over the whole matrix (the matrix itself is full
        // size, so the weights stream from cache/memory as they would in a real product).
        let mut distinct = Vec::new();
        for _ in 0..32 {
            let src: Vec<f32> = (0..cols).map(|_| rnd()).collect();
            let mut r = vec![0u8; row_bytes];
            if blocks::can_quantize(ty) {
                blocks::quantize_row(ty, &src, &mut r).unwrap();
            } else {
                // Q2_K/Q3_K (no quantizer): random bytes with a small finite f16 scale (2^-7)
                for b in r.iter_mut() {
                    *b = (rnd() * 127.0) as i8 as u8;
                }
                let bs = ty.type_size();
                let offs: &[usize] = if ty == GgmlType::Q2K {
                    &[80, 82]
                } else {
                    &[108]
                };
                for blk in r.chunks_exact_mut(bs) {
                    for &o in offs {
                        blk[o..o + 2].copy_from_slice(&0x2000u16.to_le_bytes());
                    }
                }
            }
            distinct.push(r);
        }
        let w: Vec<u8> = (0..nrows)
            .flat_map(|i| distinct[i % distinct.len()].iter().copied())
            .collect();
        let rows: Vec<&[u8]> = w.chunks_exact(row_bytes).collect();
        let mut act_bufs = Vec::new();
        for _ in 0..nacts {
            let x: Vec<f32> = (0..cols).map(|_| rnd()).collect();
            let mut a = Vec::new();
            kernels::quantize_activations(ty, &x, &mut a);
            act_bufs.push(a);
        }
        let acts: Vec<&[u8]> = act_bufs.iter().map(|a| &a[..]).collect();
        // out[r * nacts + t]
        let mut out_pairs = vec![0f32; nrows * nacts];
        let mut out_tile = vec![0f32; nrows * nacts];
        let pairs = |out: &mut [f32]| {
            for (rc, rs) in rows.chunks(TILE_ROWS).enumerate() {
                for (tc, ts) in acts.chunks(TILE_COLS).enumerate() {
                    for (r, row) in rs.iter().enumerate() {
                        for (t, act) in ts.iter().enumerate() {
                            let i = (rc * TILE_ROWS + r) * nacts + tc * TILE_COLS + t;
                            out[i] = kernels::vec_dot(ty, cols, row, act);
                        }
                    }
                }
            }
        };
        let tiled = |out: &mut [f32]| {
            let mut buf = [0f32; TILE_ROWS * TILE_COLS];
            for (rc, rs) in rows.chunks(TILE_ROWS).enumerate() {
                for (tc, ts) in acts.chunks(TILE_COLS).enumerate() {
                    let tile = &mut buf[..rs.len() * ts.len()];
                    kernels::vec_dot_tile(ty, cols, rs, ts, tile);
                    for r in 0..rs.len() {
                        let o = (rc * TILE_ROWS + r) * nacts + tc * TILE_COLS;
                        out[o..o + ts.len()]
                            .copy_from_slice(&tile[r * ts.len()..(r + 1) * ts.len()]);
                    }
                }
            }
        };
        let reps = 5;
        let tp = best_of(reps, || {
            pairs(&mut out_pairs);
            black_box(&out_pairs);
        });
        let tt = best_of(reps, || {
            tiled(&mut out_tile);
            black_box(&out_tile);
        });
        let scale = out_pairs
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(1e-30);
        let diff = out_pairs
            .iter()
            .zip(&out_tile)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let flops = 2.0 * nrows as f64 * cols as f64 * nacts as f64;
        println!(
            "{:<6} {:>16.2} {:>16.2} {:>8.2}x {:>12.2e}",
            ty.name(),
            flops / tp / 1e9,
            flops / tt / 1e9,
            tp / tt,
            diff / scale
        );
    }
}
