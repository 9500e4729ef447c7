//! How fast the packed decode kernels stream weights from memory: one group of eight rows at
//! a time (`gemv`) against two groups from two places at once (`gemv2`), over a buffer much
//! larger than the caches, in 2 MiB pages like the runtime's repacked copy, on 1 and 2
//! threads. GB/s of weights, best of the rounds, the two variants alternating.
//!
//! ```text
//! cargo run --release -p xverse-quant --example stream_speed [-- MIB [ROUNDS]]
//! ```
//!
//! Each thread takes every other task of 32 groups (as the decode's tasks are about this
//! long); `gemv2` pairs group `i` of a task with group `16 + i`, as `runtime::cpu::matvec`
//! does. Columns: 4096 (bench-1b's feed-forward width is 5632, its hidden size 2048).

use std::time::Instant;

#[path = "support/stream.rs"]
mod stream;
use stream::stream;

use xverse_quant::kernels::{self, packed};
use xverse_quant::{blocks, GgmlType};

const COLS: usize = 4096;
const GROUPS_PER_TASK: usize = 32;

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    println!(
        "{mib} MiB of groups of {COLS} columns, tasks of {GROUPS_PER_TASK} groups, at {:?}; GB/s, best of {rounds}",
        kernels::simd_level()
    );
    println!("| type | threads | gemv (one stream) | gemv2 (two streams) | gemv2 / gemv |");
    println!("|---|---|---|---|---|");
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K] {
        let f = packed::format(ty).expect("a packed layout");
        let gb = (f.group_bytes)(COLS).expect("whole blocks");
        // one real group, copied over the whole buffer (valid scales everywhere)
        let w: Vec<f32> = (0..8 * COLS)
            .map(|i| ((i as f32) * 0.618).sin() * 0.1)
            .collect();
        let mut rows = vec![0u8; 8 * ty.bytes_for(COLS as u64).unwrap() as usize];
        blocks::quantize_row(ty, &w, &mut rows).expect("quantize");
        let mut group = vec![0u8; gb];
        assert!((f.pack)(COLS, &rows, &mut group));
        let tasks = ((mib << 20) / gb / GROUPS_PER_TASK).max(2);
        let mut map = memmap2::MmapMut::map_anon(tasks * GROUPS_PER_TASK * gb).expect("map");
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        for g in map.chunks_exact_mut(gb) {
            g.copy_from_slice(&group);
        }
        let x: Vec<f32> = (0..COLS).map(|i| ((i as f32) * 0.37).cos()).collect();
        let mut act = Vec::new();
        kernels::quantize_activations(ty, &x, &mut act);
        let mut prep = Vec::new();
        (f.prep)(&act, &mut prep);

        for threads in [1, 2] {
            let mut best = [f64::INFINITY; 2];
            for _ in 0..rounds {
                for (v, b) in best.iter_mut().enumerate() {
                    let t = Instant::now();
                    let sum = stream(&map, gb * GROUPS_PER_TASK, threads, |task| {
                        let mut s = 0f32;
                        if v == 0 {
                            let mut o = [0f32; 8];
                            for g in task.chunks_exact(gb) {
                                (f.gemv)(COLS, g, &act, &prep, &mut o);
                                s += o[0];
                            }
                        } else {
                            let (lo, hi) = task.split_at(task.len() / 2);
                            let mut o = [[0f32; 8]; 2];
                            for (a, b) in lo.chunks_exact(gb).zip(hi.chunks_exact(gb)) {
                                (f.gemv2)(COLS, a, b, &act, &prep, &mut o);
                                s += o[0][0] + o[1][0];
                            }
                        }
                        s
                    });
                    std::hint::black_box(sum);
                    *b = b.min(t.elapsed().as_secs_f64());
                }
            }
            let gbs = best.map(|s| map.len() as f64 / s / 1e9);
            println!(
                "| {ty} | {threads} | {:.1} | {:.1} | {:.2} |",
                gbs[0],
                gbs[1],
                gbs[1] / gbs[0]
            );
        }
    }
}
