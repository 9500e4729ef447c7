//! Single-threaded quantizer throughput, ours against ggml b2757's, interleaved:
//! `cargo run --release -p xverse-tests --example quantize_speed_vs_ggml`.

use std::time::Instant;
use xverse_quant::blocks::quantize_row;
use xverse_quant::GgmlType;
use xverse_tests::oracle::quant::{quantize_chunk, quantize_reference};

fn main() {
    let n = 256 * 1024;
    let mut s = 0x9e3779b97f4a7c15u64;
    let x: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    let types = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];
    println!("type    ours M/s  ggml M/s  ratio (3 interleaved rounds, best of each)");
    for ty in types {
        let mut ours = vec![0u8; ty.bytes_for(n as u64).unwrap() as usize];
        let (mut best_ours, mut best_ggml) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            let t = Instant::now();
            quantize_row(ty, &x, &mut ours).unwrap();
            best_ours = best_ours.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let theirs = if ty.block_size() == 256 {
                quantize_chunk(ty, &x, 4096).unwrap()
            } else {
                quantize_reference(ty, &x).unwrap()
            };
            best_ggml = best_ggml.min(t.elapsed().as_secs_f64());
            assert_eq!(ours, theirs, "{ty}: bytes differ");
        }
        let (o, g) = (n as f64 / best_ours / 1e6, n as f64 / best_ggml / 1e6);
        println!("{:6} {o:9.1} {g:9.1} {:7.2}", ty.name(), o / g);
    }
}
