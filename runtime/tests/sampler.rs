//! The sampler: greedy, top-k, top-p, min-p, temperature, repetition penalty, seeds.

use xverse_runtime::sampler::{apply_repetition_penalty, argmax, Rng, Sampler, SamplerConfig};

fn cfg() -> SamplerConfig {
    SamplerConfig {
        temp: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 64,
        seed: 7,
    }
}

/// Logits whose softmax is `probs`.
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

fn ids(c: &[(u32, f32)]) -> Vec<u32> {
    let mut v: Vec<u32> = c.iter().map(|x| x.0).collect();
    v.sort_unstable();
    v
}

#[test]
fn greedy_picks_the_argmax() {
    let mut s = Sampler::new(SamplerConfig { temp: 0.0, ..cfg() });
    let logits = vec![0.1, 3.0, -2.0, 2.9, 3.0];
    // the first of equal maxima, like llama.cpp's greedy
    assert_eq!(s.sample(&mut logits.clone(), &[]), 1);
    assert_eq!(argmax(&[f32::NAN, 1.0, 0.5]), 1);
    let mut neg = Sampler::new(SamplerConfig {
        temp: -1.0,
        ..cfg()
    });
    assert_eq!(neg.sample(&mut [-5.0, -1.0, -3.0], &[]), 1);
}

#[test]
fn top_k_one_is_greedy() {
    let mut rng = Rng::new(1);
    for seed in 0..50 {
        let logits: Vec<f32> = (0..100).map(|_| (rng.next_f64() * 10.0) as f32).collect();
        let mut s = Sampler::new(SamplerConfig {
            top_k: 1,
            temp: 1.5,
            seed,
            ..cfg()
        });
        assert_eq!(s.sample(&mut logits.clone(), &[]), argmax(&logits));
    }
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative() {
    let mut l = vec![2.0f32, -2.0, 1.0, -1.0, 0.0];
    // token 0 twice: penalised once; token 2 outside the last 4
    apply_repetition_penalty(&mut l, &[2, 0, 1, 0, 4], 4, 2.0);
    assert_eq!(l, vec![1.0, -4.0, 1.0, -1.0, 0.0]);
    // 1.0 or last_n 0: unchanged; ids outside the vocabulary ignored
    let mut m = vec![2.0f32, -2.0];
    apply_repetition_penalty(&mut m, &[0, 1, 99], 64, 1.0);
    apply_repetition_penalty(&mut m, &[0, 1, 99], 0, 1.3);
    assert_eq!(m, vec![2.0, -2.0]);
    apply_repetition_penalty(&mut m, &[0, 1, 99], usize::MAX, 1.25);
    assert_eq!(m, vec![1.6, -2.5]);
    // through the sampler: greedy now prefers the unpenalised token
    let mut s = Sampler::new(SamplerConfig {
        temp: 0.0,
        repeat_penalty: 1.5,
        ..cfg()
    });
    assert_eq!(s.sample(&mut [3.0, 2.5, 0.0], &[0]), 1);
}

#[test]
fn the_same_seed_gives_the_same_tokens() {
    let logits: Vec<f32> = (0..64).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
    let run = |seed| {
        let mut s = Sampler::new(SamplerConfig { seed, ..cfg() });
        (0..200)
            .map(|_| s.sample(&mut logits.clone(), &[]))
            .collect::<Vec<u32>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
    // the generator itself is fixed: these values never change across machines
    let mut r = Rng::new(0);
    let first: Vec<u64> = (0..2).map(|_| r.next_u64()).collect();
    let mut r2 = Rng::new(0);
    assert_eq!(first, (0..2).map(|_| r2.next_u64()).collect::<Vec<_>>());
    for _ in 0..1000 {
        let x = r.next_f64();
        assert!((0.0..1.0).contains(&x));
    }
}

#[test]
fn sampling_follows_the_distribution() {
    // p = 0.5, 0.3, 0.2 at temperature 1
    let logits = logits_of(&[0.5, 0.3, 0.2]);
    let mut s = Sampler::new(cfg());
    let mut counts = [0usize; 3];
    let n = 20000;
    for _ in 0..n {
        counts[s.sample(&mut logits.clone(), &[]) as usize] += 1;
    }
    for (c, p) in counts.iter().zip([0.5, 0.3, 0.2]) {
        let f = *c as f64 / n as f64;
        assert!((f - p).abs() < 0.02, "{counts:?}");
    }
    // a low temperature sharpens it
    let mut cold = Sampler::new(SamplerConfig { temp: 0.1, ..cfg() });
    let hits = (0..2000)
        .filter(|_| cold.sample(&mut logits.clone(), &[]) == 0)
        .count();
    assert!(hits > 1950, "{hits}");
}

#[test]
fn top_k_keeps_the_k_largest() {
    let s = Sampler::new(SamplerConfig { top_k: 3, ..cfg() });
    let c = s.candidates(&[0.0, 5.0, 1.0, 4.0, 3.0, -1.0]);
    assert_eq!(ids(&c), vec![1, 3, 4]);
    // most likely first
    assert_eq!(c[0].0, 1);
    // k <= 0 or k >= n: everything
    let all = Sampler::new(SamplerConfig { top_k: 0, ..cfg() });
    assert_eq!(all.candidates(&[1.0, 2.0, 3.0]).len(), 3);
}

#[test]
fn top_p_cuts_the_tail() {
    // probabilities 0.4 0.3 0.2 0.1
    let logits = logits_of(&[0.1, 0.4, 0.2, 0.3]);
    let keep = |p: f32| ids(&Sampler::new(SamplerConfig { top_p: p, ..cfg() }).candidates(&logits));
    assert_eq!(keep(0.35), vec![1]); // 0.4 >= 0.35
    assert_eq!(keep(0.5), vec![1, 3]); // 0.4 + 0.3
    assert_eq!(keep(0.85), vec![1, 2, 3]); // 0.9
    assert_eq!(keep(0.95), vec![0, 1, 2, 3]);
    assert_eq!(keep(1.0), vec![0, 1, 2, 3]);
    // never empty
    assert_eq!(keep(0.0), vec![1]);
}

#[test]
fn min_p_drops_what_is_unlikely_relative_to_the_best() {
    // probabilities 0.5 0.3 0.15 0.05: min-p 0.2 keeps p >= 0.1
    let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
    let keep = |m: f32| ids(&Sampler::new(SamplerConfig { min_p: m, ..cfg() }).candidates(&logits));
    assert_eq!(keep(0.2), vec![0, 1, 2]);
    assert_eq!(keep(0.5), vec![0, 1]); // >= 0.25
    assert_eq!(keep(0.9), vec![0]);
    assert_eq!(keep(0.0), vec![0, 1, 2, 3]);
    // a cut token is never sampled
    let mut s = Sampler::new(SamplerConfig {
        min_p: 0.5,
        seed: 3,
        ..cfg()
    });
    for _ in 0..2000 {
        assert!(s.sample(&mut logits.clone(), &[]) < 2);
    }
}

#[test]
fn cuts_combine_in_llama_cpp_order() {
    // top-k 3 -> {0.4, 0.3, 0.2} renormalised; top-p 0.6 keeps 0.4/0.9 + 0.3/0.9 = 0.78
    let logits = logits_of(&[0.4, 0.3, 0.2, 0.1]);
    let s = Sampler::new(SamplerConfig {
        top_k: 3,
        top_p: 0.6,
        ..cfg()
    });
    assert_eq!(ids(&s.candidates(&logits)), vec![0, 1]);
}

#[test]
fn validation_rejects_out_of_range_values() {
    assert!(cfg().validate().is_ok());
    assert!(SamplerConfig {
        top_p: 1.5,
        ..cfg()
    }
    .validate()
    .is_err());
    assert!(SamplerConfig {
        min_p: -0.1,
        ..cfg()
    }
    .validate()
    .is_err());
    assert!(SamplerConfig {
        repeat_penalty: 0.0,
        ..cfg()
    }
    .validate()
    .is_err());
    assert!(SamplerConfig {
        temp: f32::NAN,
        ..cfg()
    }
    .validate()
    .is_err());
}
