//! Time to build the tokenizer of a tokenizer.json text, the crate's `from_bytes` against the
//! one-pass reader of [`xverse_runtime::tokenizer_json`], runs alternating, milliseconds
//! (median and best of `-r` runs each):
//!
//! `cargo run --release -p xverse-runtime --example tokenizer_load [-- FILE.json] [-r 9]`
//!
//! Without a file it times the generated XVERSE-layout tokenizer (100,534 tokens and about as
//! many merges, as the published one).

use std::time::Instant;

fn main() {
    let mut file = None;
    let mut reps = 9usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-r" {
            reps = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(reps)
                .max(1);
        } else {
            file = Some(a);
        }
    }
    let json = match &file {
        Some(f) => std::fs::read(f).unwrap_or_else(|e| {
            eprintln!("tokenizer_load: cannot read {f}: {e}");
            std::process::exit(1)
        }),
        None => {
            let v =
                xverse_models::hf::tokenizer::build(100_534).expect("a 100,534-token vocabulary");
            xverse_models::hf::tokenizer::tokenizer_json(&v).into_bytes()
        }
    };
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..reps {
        let t = Instant::now();
        let slow = tokenizers::Tokenizer::from_bytes(&json);
        times[0].push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let fast = xverse_runtime::tokenizer_json::read(&json);
        times[1].push(t.elapsed().as_secs_f64() * 1e3);
        match (slow, fast) {
            (Ok(s), Ok(Some(f))) => assert_eq!(
                s.get_vocab_size(true),
                f.get_vocab_size(true),
                "the two tokenizers differ"
            ),
            (Ok(_), Ok(None)) => {
                eprintln!("tokenizer_load: the one-pass reader leaves this file to from_bytes");
                std::process::exit(1)
            }
            (s, f) => {
                eprintln!(
                    "tokenizer_load: not a tokenizer: {:?} / {:?}",
                    s.err(),
                    f.err()
                );
                std::process::exit(1)
            }
        }
    }
    println!(
        "{} bytes of tokenizer.json, {reps} runs each, ms",
        json.len()
    );
    for (name, t) in ["from_bytes", "one pass"].iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        println!("{name:>10}: median {:.1}, best {:.1}", t[t.len() / 2], t[0]);
    }
}
