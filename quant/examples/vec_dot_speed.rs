//! Single-threaded matrix × vector speed of the dot-product kernels: a 4096 × 4096 weight
//! matrix per type, one activation row, every SIMD level this CPU has. Prints GB/s of weight
//! bytes read (and GFLOP-equivalent element rate).
//!
//! `cargo run --release -p xverse-quant --example vec_dot_speed [ROWS COLS]`

use std::hint::black_box;
use std::time::Instant;
use xverse_quant::blocks;
use xverse_quant::kernels::{self, SimdLevel};
use xverse_quant::GgmlType;

#[path = "support/timing.rs"]
mod timing;
use timing::*;

/// This thread's CPU time in seconds (`/proc/thread-self/schedstat`, Linux), if readable: the
/// machine may be shared, so GB/s per CPU-second is printed beside GB/s per wall-second.
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(4096);
    let cols = args.get(1).copied().unwrap_or(4096);
    let types = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q5K,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::F32,
    ];
    let levels: Vec<SimdLevel> = SimdLevel::ALL
        .into_iter()
        .filter(|l| l.available())
        .collect();
    println!(
        "{rows} x {cols} matrix x vector, 1 thread, hardware level {:?}",
        kernels::hardware_level()
    );
    print!("{:<6} {:>10}", "type", "MiB");
    for l in &levels {
        print!(" {:>22}", format!("{} GB/s wall (cpu)", l.name()));
    }
    println!();
    let mut seed = 0x1234_5678_u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let x: Vec<f32> = (0..cols).map(|_| rnd()).collect();
    for ty in types {
        if !kernels::supported(ty) || cols % ty.block_size() != 0 {
            continue;
        }
        let row_bytes = ty.bytes_for(cols as u64).unwrap() as usize;
        // 16 distinct quantized rows, tiled over the matrix (quantizing 16M values per type
        // with the reference quantizers would take longer than the measurement).
        let mut distinct = Vec::new();
        for _ in 0..16 {
            let mut r = vec![0u8; row_bytes];
            if blocks::can_quantize(ty) {
                let src: Vec<f32> = (0..cols).map(|_| rnd()).collect();
                blocks::quantize_row(ty, &src, &mut r).unwrap();
            } else {
                for b in r.iter_mut() {
                    *b = (rnd() * 127.0) as i8 as u8;
                }
                // keep the f16 scales finite (Q2_K: d and dmin at 80 and 82; Q3_K: d at 108)
                let off = if ty == GgmlType::Q2K { 80 } else { 108 };
                for blk in r.chunks_exact_mut(ty.type_size()) {
                    blk[off..off + 2].copy_from_slice(&[0x00, 0x1c]);
                    if ty == GgmlType::Q2K {
                        blk[82..84].copy_from_slice(&[0x00, 0x1c]);
                    }
                }
            }
            distinct.push(r);
        }
        let mut w = Vec::with_capacity(rows * row_bytes);
        for i in 0..rows {
            w.extend_from_slice(&distinct[i % 16]);
        }
        let mut act = Vec::new();
        kernels::quantize_activations(ty, &x, &mut act);
        let mut out = vec![0f32; rows];
        print!(
            "{:<6} {:>10.1}",
            ty.name(),
            w.len() as f64 / (1 << 20) as f64
        );
        for &l in &levels {
            let run = |out: &mut [f32]| {
                for (o, r) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
                    *o = kernels::vec_dot_with(l, ty, cols, black_box(r), &act);
                }
            };
            run(&mut out);
            let mut reps = 0u32;
            let c0 = cpu_time();
            let t = Instant::now();
            while reps < 3 || t.elapsed().as_secs_f64() < 0.5 {
                run(&mut out);
                black_box(&out);
                reps += 1;
            }
            let secs = t.elapsed().as_secs_f64();
            let bytes = w.len() as f64 * f64::from(reps);
            let cpu = match (c0, cpu_time()) {
                (Some(a), Some(b)) if b > a => format!("{:.2}", bytes / (b - a) / 1e9),
                _ => "-".to_string(),
            };
            print!(" {:>22}", format!("{:.2} ({cpu})", bytes / secs / 1e9));
        }
        println!();
    }
}
