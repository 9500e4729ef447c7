//! Time of one decode token's attention over a filled KV cache, without the matrix products:
//! the part of a token at depth that `xverse-bench -d` adds to the empty-context step.
//!
//! ```text
//! cargo run --release -p xverse-runtime --example attention_speed -- [DEPTHS] [CACHE_TYPE] [THREADS] [ROUNDS]
//! cargo run --release -p xverse-runtime --example attention_speed -- 4096,16384 q4_0 1,2 5
//! ```
//!
//! The bench-1b shape (16 layers, 16 heads of 128); keys and values synthetic
//! (`KvCache::fill_synthetic`). Per depth and thread count, ms per token (all 16 layers, the
//! cache streamed from memory as in a decode step): median and min–max over the rounds, the
//! thread counts interleaved within each round; and the bytes of K and V read per token over
//! that time (GB/s).

use std::time::Instant;

use xverse_runtime::cpu::attention;
use xverse_runtime::hparams::Hparams;
use xverse_runtime::kv_cache::{CacheType, KvCache, KvTypes};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let depths: Vec<usize> = list(args.first().map_or("4096,16384", String::as_str));
    let ty: CacheType = args
        .get(1)
        .map_or("q4_0", String::as_str)
        .parse()
        .expect("cache type");
    let threads: Vec<usize> = list(args.get(2).map_or("1,2", String::as_str));
    let rounds: usize = args.get(3).map_or(5, |s| s.parse().expect("rounds"));

    let (layers, heads, hd) = (16usize, 16usize, 128usize);
    let hp = Hparams {
        context_length: 32768,
        hidden: (heads * hd) as u32,
        layers: layers as u32,
        ffn: 5632,
        heads: heads as u32,
        kv_heads: heads as u32,
        head_dim: hd as u32,
        rope_dims: hd as u32,
        rope_freq_base: 10000.0,
        rms_norm_eps: 1e-6,
        vocab: 100534,
    };
    let pools: Vec<rayon::ThreadPool> = threads
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("thread pool")
        })
        .collect();
    let q: Vec<f32> = (0..heads * hd)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    println!("cache {ty}, bench-1b shape ({layers} layers × {heads} heads × {hd})");
    println!("| depth | threads | ms/token (median, min–max) | K+V GB/s |");
    println!("| ----- | ------- | -------------------------- | -------- |");
    for &depth in &depths {
        let mut cache =
            KvCache::new(KvTypes::from(ty), layers, depth + 1, heads, hd).expect("kv cache");
        cache.fill_synthetic(depth + 1, 7).expect("fill");
        let bytes = 2 * layers * heads * (depth + 1) * ty.row_bytes(hd);
        let mut times = vec![Vec::new(); threads.len()];
        for round in 0..rounds + 1 {
            for (i, pool) in pools.iter().enumerate() {
                let t0 = Instant::now();
                pool.install(|| {
                    for l in 0..layers {
                        let out = attention::attention(
                            &hp,
                            cache.layer(l),
                            KvTypes::from(ty),
                            &q,
                            depth,
                            1,
                        )
                        .expect("attention");
                        std::hint::black_box(out);
                    }
                });
                if round > 0 {
                    times[i].push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        for (t, mut v) in threads.iter().zip(times) {
            v.sort_by(f64::total_cmp);
            let med = v[v.len() / 2];
            println!(
                "| {depth} | {t} | {med:.2} ({:.2}–{:.2}) | {:.1} |",
                v[0],
                v[v.len() - 1],
                bytes as f64 / med / 1e6
            );
        }
    }
}

fn list(s: &str) -> Vec<usize> {
    s.split(',')
        .map(|x| x.trim().parse().expect("number"))
        .collect()
}
