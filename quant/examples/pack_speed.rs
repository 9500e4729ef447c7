//! Speed of repacking rows into the eight-row layouts of `kernels::packed` (the start-up cost
//! of `Model::repack`), one thread, GB/s of source rows, from memory (256 MiB of rows into a
//! buffer already written once, so page faults are not counted) and in cache (one 8-row group
//! packed over and over):
//!
//! `cargo run --release -p xverse-quant --example pack_speed [-- COLUMNS]`

use std::hint::black_box;
use std::time::Instant;
use xverse_quant::kernels::packed;
use xverse_quant::GgmlType;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4096);
    println!("{n} columns, one thread, GB/s of source rows");
    println!("| type | from memory | in cache |");
    println!("|---|---|---|");
    {
        // the bound: a plain copy of the same bytes
        let src: Vec<u8> = (0..256usize << 20).map(|i| i as u8).collect();
        let mut out = vec![0u8; src.len()];
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            out.copy_from_slice(black_box(&src));
            best = best.min(t.elapsed().as_secs_f64());
            black_box(&out);
        }
        println!("| (copy) | {:.2} | - |", src.len() as f64 / best / 1e9);
    }
    for ty in [GgmlType::Q4_0, GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q8_0] {
        let format = packed::format(ty).expect("a packed type");
        let row_bytes = ty.bytes_for(n as u64).expect("whole blocks") as usize;
        let gb = (format.group_bytes)(n).expect("whole blocks");
        let src_group = 8 * row_bytes;
        let groups = (256 << 20) / src_group;
        // bytes that vary, and f16 scales that are finite
        let src: Vec<u8> = (0..groups * src_group)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3b)
            .collect();
        let mut out = vec![0u8; groups * gb];
        let mut best_mem = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for (rows, g) in src.chunks_exact(src_group).zip(out.chunks_exact_mut(gb)) {
                assert!((format.pack)(n, rows, g));
            }
            best_mem = best_mem.min(t.elapsed().as_secs_f64());
            black_box(&out);
        }
        let reps = 20_000;
        let t = Instant::now();
        for _ in 0..reps {
            assert!((format.pack)(
                n,
                black_box(&src[..src_group]),
                &mut out[..gb]
            ));
        }
        let cache = t.elapsed().as_secs_f64();
        println!(
            "| {ty} | {:.2} | {:.2} |",
            src.len() as f64 / best_mem / 1e9,
            (reps * src_group) as f64 / cache / 1e9
        );
    }
}
