//! Prompt (pp) and generation (tg) speed of our engine against llama.cpp b2757 on the same GGUF
//! file, same threads, same random token ids, interleaved (ours, theirs, ours, theirs …):
//!
//! `cargo run --release -p xverse-tests --example bench_vs_llama -- FILE.gguf [-p 128] [-n 32]
//! [-t 1] [-r 3]`
//!
//! Both sides start each test from an empty cache and ask for the last token's logits only.
//! ggml's worker threads busy-wait, so use no more threads than free cores.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use xverse_runtime::bench::{mean_sd, Rng};
use xverse_runtime::engine::{Engine, EngineConfig};
use xverse_runtime::kv_cache::CacheType;
use xverse_runtime::model::Model;
use xverse_tests::oracle::llama;

struct Args {
    file: PathBuf,
    n_prompt: usize,
    n_gen: usize,
    threads: usize,
    reps: usize,
}

const USAGE: &str = "usage: bench_vs_llama FILE.gguf [-p 128] [-n 32] [-t 1] [-r 3]";

fn parse_args() -> Result<Args, String> {
    let mut file = None;
    let (mut n_prompt, mut n_gen, mut threads, mut reps) = (128, 32, 1, 3);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let slot = match a.as_str() {
            "-p" => &mut n_prompt,
            "-n" => &mut n_gen,
            "-t" => &mut threads,
            "-r" => &mut reps,
            "-h" | "--help" => return Err(USAGE.to_string()),
            _ if a.starts_with('-') => return Err(format!("unknown flag {a}\n{USAGE}")),
            _ if file.is_none() => {
                file = Some(PathBuf::from(&a));
                continue;
            }
            _ => return Err(format!("unexpected argument {a}\n{USAGE}")),
        };
        let v = it
            .next()
            .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))?;
        *slot = v
            .parse()
            .map_err(|_| format!("{a} {v}: not a non-negative integer"))?;
    }
    let file = file.ok_or_else(|| USAGE.to_string())?;
    if threads == 0 || reps == 0 {
        return Err("-t and -r must be positive".to_string());
    }
    if n_prompt == 0 && n_gen == 0 {
        return Err("nothing to test (-p 0 and -n 0)".to_string());
    }
    Ok(Args {
        file,
        n_prompt,
        n_gen,
        threads,
        reps,
    })
}

/// One engine under test: evaluates a prompt from an empty cache, or generates one token at a
/// time from an empty cache; returns seconds.
trait Side {
    fn prompt(&mut self, tokens: &[u32]) -> Result<f64, String>;
    fn gen(&mut self, tokens: &[u32]) -> Result<f64, String>;
}

struct Ours<'m>(Engine<'m>);

impl Side for Ours<'_> {
    fn prompt(&mut self, tokens: &[u32]) -> Result<f64, String> {
        self.0.truncate(0);
        let t = Instant::now();
        self.0.eval(tokens, false).map_err(|e| e.to_string())?;
        Ok(t.elapsed().as_secs_f64())
    }

    fn gen(&mut self, tokens: &[u32]) -> Result<f64, String> {
        self.0.truncate(0);
        let t = Instant::now();
        for &tok in tokens {
            self.0.eval(&[tok], false).map_err(|e| e.to_string())?;
        }
        Ok(t.elapsed().as_secs_f64())
    }
}

struct Theirs<'m>(llama::Context<'m>);

fn ids(tokens: &[u32]) -> Vec<i32> {
    tokens.iter().map(|&t| t as i32).collect()
}

impl Side for Theirs<'_> {
    fn prompt(&mut self, tokens: &[u32]) -> Result<f64, String> {
        let tokens = ids(tokens);
        self.0.clear();
        let t = Instant::now();
        self.0.decode_last(&tokens, 0).map_err(|e| e.to_string())?;
        Ok(t.elapsed().as_secs_f64())
    }

    fn gen(&mut self, tokens: &[u32]) -> Result<f64, String> {
        let tokens = ids(tokens);
        self.0.clear();
        let t = Instant::now();
        for (pos, &tok) in tokens.iter().enumerate() {
            self.0.decode_last(&[tok], pos).map_err(|e| e.to_string())?;
        }
        Ok(t.elapsed().as_secs_f64())
    }
}

fn run(a: &Args) -> Result<(), String> {
    let ours_model = Model::load(&a.file).map_err(|e| e.to_string())?;
    let their_model = llama::Model::load(&a.file).map_err(|e| e.to_string())?;
    let n_vocab = ours_model.hparams.vocab as usize;
    if their_model.n_vocab() != n_vocab {
        return Err(format!(
            "vocabulary sizes differ: ours {n_vocab}, llama.cpp {}",
            their_model.n_vocab()
        ));
    }
    let n_ctx = a.n_prompt.max(a.n_gen).max(1);
    let cfg = EngineConfig {
        n_ctx,
        cache_type: CacheType::F16,
        threads: a.threads,
    };
    let mut ours = Ours(Engine::new(&ours_model, cfg).map_err(|e| e.to_string())?);
    let ctx = llama::Context::with_threads(&their_model, n_ctx as u32, a.threads as u32)
        .map_err(|e| e.to_string())?;
    let mut theirs = Theirs(ctx);
    let mut sides: [&mut dyn Side; 2] = [&mut ours, &mut theirs];

    println!(
        "{} — {} thread(s), {} interleaved repetition(s) after one warm-up, F16 KV cache",
        a.file.display(),
        a.threads,
        a.reps
    );
    println!(
        "| {:>6} | {:>18} | {:>18} | {:>13} |",
        "test", "ours t/s", "llama.cpp t/s", "ours/llama"
    );
    println!("| {:->6} | {:->18} | {:->18} | {:->13} |", "", "", "", "");
    let mut rng = Rng::new(1234);
    let tests = [(a.n_prompt, true), (a.n_gen, false)];
    for (n, is_prompt) in tests {
        if n == 0 {
            continue;
        }
        let mut ts = [Vec::new(), Vec::new()];
        // rep 0 is the warm-up of both sides
        for rep in 0..=a.reps {
            let tokens: Vec<u32> = (0..n).map(|_| rng.token(n_vocab)).collect();
            for (side, t) in sides.iter_mut().zip(&mut ts) {
                let s = if is_prompt {
                    side.prompt(&tokens)?
                } else {
                    side.gen(&tokens)?
                };
                if rep > 0 {
                    t.push(n as f64 / s.max(1e-9));
                }
            }
        }
        let (om, os) = mean_sd(&ts[0]);
        let (lm, ls) = mean_sd(&ts[1]);
        // the ratio's sd from the two relative sds (first order)
        let ratio = om / lm;
        let rsd = ratio * ((os / om).powi(2) + (ls / lm).powi(2)).sqrt();
        let name = format!("{} {n}", if is_prompt { "pp" } else { "tg" });
        println!(
            "| {name:>6} | {:>18} | {:>18} | {:>13} |",
            format!("{om:.2} ± {os:.2}"),
            format!("{lm:.2} ± {ls:.2}"),
            format!("{ratio:.3} ± {rsd:.3}")
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_vs_llama: {e}");
            ExitCode::FAILURE
        }
    }
}
