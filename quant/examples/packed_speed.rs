//! Single-threaded speed of the packed (eight-row) kernels in cache: per packed type, eight
//! groups of eight rows of COLS weights (~150–270 KiB, held in L2) times one activation row
//! (`gemv`, what decode and attention's scores run) and times 1–4 activation rows (`gemm`,
//! what prompt tiles and attention's two-row weighted sum run). Prints GB/s of weight bytes
//! times activation rows (so equal numbers mean equal work per byte), best of ROUNDS, per
//! CPU-second where `/proc/thread-self/schedstat` is readable, and checks every `gemm` row
//! against `gemv` of that row.
//!
//! `cargo run --release -p xverse-quant --example packed_speed [COLS ROUNDS]`

use std::hint::black_box;
use xverse_quant::kernels::{self, packed};
use xverse_quant::{blocks, GgmlType};

#[path = "support/timing.rs"]
mod timing;
use timing::*;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let n = args.first().copied().unwrap_or(4096);
    let rounds = args.get(1).copied().unwrap_or(15);
    const GROUPS: usize = 8;
    const REPS: usize = 200;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    println!(
        "{n} columns, {GROUPS} groups of 8 rows, one thread at {:?}; GB/s of weights × activation rows, best of {rounds}",
        kernels::simd_level()
    );
    println!("| type | gemv | gemm 1 | gemm 2 | gemm 3 | gemm 4 |");
    println!("|---|---|---|---|---|---|");
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K] {
        let f = packed::format(ty).expect("a packed layout");
        let (Some(gb), true) = ((f.group_bytes)(n), n.is_multiple_of(ty.block_size())) else {
            println!("| {ty} | {n} columns are not whole blocks |");
            continue;
        };
        let rb = n / ty.block_size() * ty.type_size();
        let mut groups = vec![0u8; GROUPS * gb];
        for g in groups.chunks_exact_mut(gb) {
            let mut rows = vec![0u8; packed::ROWS * rb];
            for r in rows.chunks_exact_mut(rb) {
                let x: Vec<f32> = (0..n).map(|_| rnd()).collect();
                blocks::quantize_row(ty, &x, r).expect("quantize");
            }
            assert!((f.pack)(n, &rows, g), "{ty}: pack");
        }
        let acts: Vec<Vec<u8>> = (0..packed::TILE_TOKENS)
            .map(|_| {
                let x: Vec<f32> = (0..n).map(|_| rnd()).collect();
                let mut a = Vec::new();
                kernels::quantize_activations(ty, &x, &mut a);
                a
            })
            .collect();
        let preps: Vec<Vec<i32>> = acts
            .iter()
            .map(|a| {
                let mut p = Vec::new();
                (f.prep)(a, &mut p);
                p
            })
            .collect();
        let bytes = (GROUPS * gb * REPS) as f64;
        let mut o8 = [0f32; packed::ROWS];
        let gemv = best_of(rounds, || {
            for _ in 0..REPS {
                for g in groups.chunks_exact(gb) {
                    (f.gemv)(n, black_box(g), &acts[0], &preps[0], &mut o8);
                    black_box(&o8);
                }
            }
        });
        let mut line = format!("| {ty} | {:.1} |", bytes / gemv / 1e9);
        for nt in 1..=packed::TILE_TOKENS {
            let a: Vec<&[u8]> = acts[..nt].iter().map(Vec::as_slice).collect();
            let p: Vec<&[i32]> = preps[..nt].iter().map(Vec::as_slice).collect();
            let mut out = vec![0f32; packed::ROWS * nt];
            // every row of the tile equals gemv of that row (same integer sums, same order)
            for g in groups.chunks_exact(gb) {
                (f.gemm)(n, g, &a, &p, &mut out);
                for t in 0..nt {
                    (f.gemv)(n, g, a[t], p[t], &mut o8);
                    for (j, &x) in o8.iter().enumerate() {
                        let y = out[j * nt + t];
                        assert!(
                            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                            "{ty}: gemm {nt} row {t} lane {j}: {y} against gemv {x}"
                        );
                    }
                }
            }
            let s = best_of(rounds, || {
                for _ in 0..REPS {
                    for g in groups.chunks_exact(gb) {
                        (f.gemm)(n, black_box(g), &a, &p, &mut out);
                        black_box(&out);
                    }
                }
            });
            line += &format!(" {:.1} |", nt as f64 * bytes / s / 1e9);
        }
        println!("{line}");
    }
}
