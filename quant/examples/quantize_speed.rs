//! Quantizer throughput per type: `cargo run --release -p xverse-quant --example quantize_speed`.
//! Single-threaded; prints million weights per second.

use std::time::Instant;
use xverse_quant::blocks::{can_quantize, quantize_row};
use xverse_quant::GgmlType;

fn main() {
    let n = 256 * 4096;
    let mut s = 0x9e3779b97f4a7c15u64;
    let x: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    for ty in GgmlType::ALL {
        if !can_quantize(ty) || ty == GgmlType::Q8_1 || ty == GgmlType::Q8K {
            continue;
        }
        let mut out = vec![0u8; ty.bytes_for(n as u64).unwrap() as usize];
        let t = Instant::now();
        let mut reps = 0;
        while t.elapsed().as_secs_f64() < 0.5 {
            for (xr, orow) in x
                .chunks(4096)
                .zip(out.chunks_mut(ty.bytes_for(4096).unwrap() as usize))
            {
                quantize_row(ty, xr, orow).unwrap();
            }
            reps += 1;
        }
        let mw = (reps * n) as f64 / t.elapsed().as_secs_f64() / 1e6;
        println!("{:6} {mw:9.1} M weights/s", ty.name());
    }
}
