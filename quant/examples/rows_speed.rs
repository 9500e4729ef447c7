//! How fast weight rows in the file's layout stream from memory through the two kernels the
//! runtime's decode can take for them: the per-row kernel of `kernels::vec_dot`, with the
//! rows 4 KiB on prefetched as `runtime::cpu::matvec` does, against the row kernel in the
//! packed order (`packed::Format::rows`), four rows a call. Over a buffer much larger than the
//! caches, in 4 KiB pages like a file's map, on 1 and 2 threads; GB/s of weights, best of the
//! rounds, the two alternating. This decides `packed::Format::rows_for_plain`.
//!
//! ```text
//! cargo run --release -p xverse-quant --example rows_speed [-- MIB [ROUNDS [COLUMNS]]]
//! ```
//!
//! Each thread takes every other task of 64 rows. Columns: 2048 by default (bench-1b's hidden
//! size; its feed-forward width is 5632).

use std::time::Instant;

#[path = "support/stream.rs"]
mod stream;
use stream::stream;

use xverse_quant::kernels::{self, packed};
use xverse_quant::{blocks, GgmlType};

const ROWS_PER_TASK: usize = 64;
/// Bytes ahead the per-row loop prefetches (the runtime's default).
const PREFETCH_BYTES: usize = 4096;

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let cols: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2048);
    println!(
        "{mib} MiB of rows of {cols} in 4 KiB pages, tasks of {ROWS_PER_TASK} rows, at {:?}; GB/s, best of {rounds}",
        kernels::simd_level()
    );
    println!("| type | threads | per row (vec_dot) | packed order, 4 rows | ratio |");
    println!("|---|---|---|---|---|");
    for ty in [GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K] {
        let Some(rows_fn) = packed::format(ty).and_then(|f| f.rows) else {
            continue;
        };
        let Some(rb) = ty.bytes_for(cols as u64).map(|b| b as usize) else {
            println!("{cols} columns are not whole {ty} blocks");
            return;
        };
        // eight real rows, copied over the whole buffer (valid scales everywhere)
        let w: Vec<f32> = (0..8 * cols)
            .map(|i| ((i as f32) * 0.618).sin() * 0.1)
            .collect();
        let mut rows = vec![0u8; 8 * rb];
        blocks::quantize_row(ty, &w, &mut rows).expect("quantize");
        let n_rows = ((mib << 20) / rb / ROWS_PER_TASK).max(2) * ROWS_PER_TASK;
        let mut map = memmap2::MmapMut::map_anon(n_rows * rb).expect("map");
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::NoHugePage);
        for (i, r) in map.chunks_exact_mut(rb).enumerate() {
            r.copy_from_slice(&rows[(i % 8) * rb..(i % 8 + 1) * rb]);
        }
        let x: Vec<f32> = (0..cols).map(|i| ((i as f32) * 0.37).cos()).collect();
        let mut act = Vec::new();
        kernels::quantize_activations(ty, &x, &mut act);
        let ahead = (PREFETCH_BYTES / rb).max(1);
        for threads in [1, 2] {
            let mut best = [f64::INFINITY; 2];
            for _ in 0..rounds {
                for (v, b) in best.iter_mut().enumerate() {
                    let t = Instant::now();
                    let sum = stream(&map, rb * ROWS_PER_TASK, threads, |task| {
                        let rs: Vec<&[u8]> = task.chunks_exact(rb).collect();
                        let mut s = 0f32;
                        if v == 0 {
                            for (j, r) in rs.iter().enumerate() {
                                if let Some(next) = rs.get(j + ahead) {
                                    kernels::prefetch_ahead(next.as_ptr(), 0, rb);
                                }
                                s += kernels::vec_dot(ty, cols, r, &act);
                            }
                        } else {
                            let mut o = [0f32; 4];
                            for c in rs.chunks(4) {
                                rows_fn(cols, c, &[&act], &mut o[..c.len()]);
                                s += o[0];
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
