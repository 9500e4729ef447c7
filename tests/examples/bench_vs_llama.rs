//! Prompt (pp) and generation (tg) speed of our engine against llama.cpp b2757 on the same GGUF
//! file, same threads, same random token ids, interleaved (ours, theirs, ours, theirs …):
//!
//! `cargo run --release -p xverse-tests --example bench_vs_llama -- FILE.gguf [-p 128,512]
//! [-n 32] [-t 1,2] [-r 3] [--load]`
//!
//! `--load` adds a start-up row: open the file, build the tokenizer, make a context, tokenize a
//! short prompt and evaluate it (the file in the page cache for both), each start in a process
//! of its own (this program run again with `--start-child ours|llama FILE THREADS N_CTX`, which
//! prints the seconds from opening the file to the prompt's logits), since a process that has
//! loaded the model once finds its freed pages at hand and starts faster than a user's does.
//! Reported as starts per second so that the ratio reads like the others (above 1: ours
//! starts faster). Ours loads as `xverse-run` does ([`model_and_tokenizer`]).
//!
//! Both sides start each test from an empty cache and ask for the last token's logits only.
//! ggml's worker threads busy-wait, so use no more threads than free cores.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use xverse_runtime::bench::{mean_sd, Rng};
use xverse_runtime::engine::{Engine, EngineConfig};
use xverse_runtime::kv_cache::CacheType;
use xverse_runtime::load::model_and_tokenizer;
use xverse_runtime::model::{repack_by_default, Model};
use xverse_tests::oracle::llama;

struct Args {
    file: PathBuf,
    n_prompt: Vec<usize>,
    n_gen: Vec<usize>,
    threads: Vec<usize>,
    reps: usize,
    load: bool,
}

const USAGE: &str =
    "usage: bench_vs_llama FILE.gguf [-p 128[,512…]] [-n 32[,…]] [-t 1[,2…]] [-r 3] [--load]";

fn list(flag: &str, v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| format!("{flag} {v}: not a list of non-negative integers"))
        })
        .collect()
}

fn parse_args() -> Result<Args, String> {
    let mut file = None;
    let (mut n_prompt, mut n_gen, mut threads, mut reps) = (vec![128], vec![32], vec![1], 3);
    let mut load = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Err(USAGE.to_string()),
            "--load" => {
                load = true;
                continue;
            }
            "-p" | "-n" | "-t" | "-r" => {}
            _ if a.starts_with('-') => return Err(format!("unknown flag {a}\n{USAGE}")),
            _ if file.is_none() => {
                file = Some(PathBuf::from(&a));
                continue;
            }
            _ => return Err(format!("unexpected argument {a}\n{USAGE}")),
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))?;
        match a.as_str() {
            "-p" => n_prompt = list(&a, &v)?,
            "-n" => n_gen = list(&a, &v)?,
            "-t" => threads = list(&a, &v)?,
            _ => {
                reps = v
                    .parse()
                    .map_err(|_| format!("{a} {v}: not a non-negative integer"))?
            }
        }
    }
    let file = file.ok_or_else(|| USAGE.to_string())?;
    if threads.contains(&0) || reps == 0 {
        return Err("-t and -r must be positive".to_string());
    }
    n_prompt.retain(|&n| n > 0);
    n_gen.retain(|&n| n > 0);
    if n_prompt.is_empty() && n_gen.is_empty() && !load {
        return Err("nothing to test (-p 0, -n 0 and no --load)".to_string());
    }
    Ok(Args {
        file,
        n_prompt,
        n_gen,
        threads,
        reps,
        load,
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

/// Prints one table row: both sides' rates (mean ± sd) and the ratio of the means.
fn row(name: &str, ours: &[f64], theirs: &[f64]) {
    let (om, os) = mean_sd(ours);
    let (lm, ls) = mean_sd(theirs);
    // the ratio's sd from the two relative sds (first order)
    let ratio = om / lm;
    let rsd = ratio * ((os / om).powi(2) + (ls / lm).powi(2)).sqrt();
    println!(
        "| {name:>14} | {:>18} | {:>18} | {:>13} |",
        format!("{om:.2} ± {os:.2}"),
        format!("{lm:.2} ± {ls:.2}"),
        format!("{ratio:.3} ± {rsd:.3}")
    );
}

/// The prompt of a start-up, and its context (`xverse-run -c 512`).
const START_PROMPT: &str = "The capital of France is";
const START_CTX: usize = 512;

/// One start-up of `side` ("ours" or "llama") in this process: open `file`, build the
/// tokenizer, make a context of `n_ctx` with `threads` threads, tokenize [`START_PROMPT`] and
/// evaluate it; seconds.
fn start_here(side: &str, file: &Path, threads: usize, n_ctx: usize) -> Result<f64, String> {
    let t = Instant::now();
    match side {
        "ours" => {
            let (model, tok) =
                model_and_tokenizer(file, repack_by_default()).map_err(|e| e.to_string())?;
            let ids = tok.encode(START_PROMPT).map_err(|e| e.to_string())?;
            let cfg = EngineConfig {
                n_ctx,
                cache_type: CacheType::F16.into(),
                threads,
            };
            let mut e = Engine::new(&model, cfg).map_err(|e| e.to_string())?;
            e.eval(&ids, false).map_err(|e| e.to_string())?;
            let s = t.elapsed().as_secs_f64();
            // the process exits at once: nothing to gain from unmapping
            std::mem::forget(e);
            std::mem::forget(model);
            Ok(s)
        }
        "llama" => {
            let model = llama::Model::load(file).map_err(|e| e.to_string())?;
            let mut ctx = llama::Context::with_threads(&model, n_ctx as u32, threads as u32)
                .map_err(|e| e.to_string())?;
            let ids = model
                .tokenize(START_PROMPT, true, true)
                .map_err(|e| e.to_string())?;
            ctx.decode_last(&ids, 0).map_err(|e| e.to_string())?;
            let s = t.elapsed().as_secs_f64();
            std::mem::forget(ctx);
            std::mem::forget(model);
            Ok(s)
        }
        _ => Err(format!("--start-child {side}: expected ours or llama")),
    }
}

/// Start-up in fresh processes ([`start_here`] in a child of this program) with a context of
/// `n_ctx`: seconds, ours then llama.cpp's.
fn startup(a: &Args, threads: usize, n_ctx: usize) -> Result<[f64; 2], String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut out = [0.0; 2];
    for (side, o) in ["ours", "llama"].into_iter().zip(&mut out) {
        let child = std::process::Command::new(&exe)
            .arg("--start-child")
            .arg(side)
            .arg(&a.file)
            .arg(threads.to_string())
            .arg(n_ctx.to_string())
            .stderr(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let text = String::from_utf8_lossy(&child.stdout);
        *o = text
            .trim()
            .parse()
            .map_err(|_| format!("start-up of {side} failed: {}", text.trim()))?;
    }
    Ok(out)
}

/// `--start-child SIDE FILE THREADS N_CTX`: one start-up, its seconds on stdout.
fn start_child(args: &[String]) -> ExitCode {
    let [side, file, threads, n_ctx] = args else {
        println!("--start-child needs SIDE FILE THREADS N_CTX");
        return ExitCode::from(2);
    };
    let (Ok(threads), Ok(n_ctx)) = (threads.parse(), n_ctx.parse()) else {
        println!("--start-child: THREADS and N_CTX are numbers");
        return ExitCode::from(2);
    };
    match start_here(side, Path::new(file), threads, n_ctx) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<(), String> {
    let ours_model = Model::load(&a.file).map_err(|e| e.to_string())?;
    // the copies made in the background are finished before anything is timed (start-up,
    // below, includes none of them: they go on while the first token runs)
    ours_model.wait_repacked();
    let their_model = llama::Model::load(&a.file).map_err(|e| e.to_string())?;
    let n_vocab = ours_model.hparams.vocab as usize;
    if their_model.n_vocab() != n_vocab {
        return Err(format!(
            "vocabulary sizes differ: ours {n_vocab}, llama.cpp {}",
            their_model.n_vocab()
        ));
    }
    let n_ctx = a
        .n_prompt
        .iter()
        .chain(&a.n_gen)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    println!(
        "{} — {} interleaved repetition(s) after one warm-up, F16 KV cache",
        a.file.display(),
        a.reps
    );
    println!(
        "| {:>14} | {:>18} | {:>18} | {:>13} |",
        "test", "ours t/s", "llama.cpp t/s", "ours/llama"
    );
    println!("| {:->14} | {:->18} | {:->18} | {:->13} |", "", "", "", "");
    let mut rng = Rng::new(1234);
    for &threads in &a.threads {
        let cfg = EngineConfig {
            n_ctx,
            cache_type: CacheType::F16.into(),
            threads,
        };
        let mut ours = Ours(Engine::new(&ours_model, cfg).map_err(|e| e.to_string())?);
        let ctx = llama::Context::with_threads(&their_model, n_ctx as u32, threads as u32)
            .map_err(|e| e.to_string())?;
        let mut theirs = Theirs(ctx);
        let mut sides: [&mut dyn Side; 2] = [&mut ours, &mut theirs];
        let tests = a
            .n_prompt
            .iter()
            .map(|&n| (n, true))
            .chain(a.n_gen.iter().map(|&n| (n, false)));
        for (n, is_prompt) in tests {
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
            let name = format!("{} {n} t{threads}", if is_prompt { "pp" } else { "tg" });
            row(&name, &ts[0], &ts[1]);
        }
        if a.load {
            // start-up as a rate (1 / seconds), so the ratio reads like the others
            let mut ts = [Vec::new(), Vec::new()];
            for _ in 0..a.reps {
                let s = startup(a, threads, START_CTX)?;
                ts[0].push(1.0 / s[0].max(1e-9));
                ts[1].push(1.0 / s[1].max(1e-9));
            }
            row(&format!("start-up/s t{threads}"), &ts[0], &ts[1]);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--start-child") {
        return start_child(&argv[2..]);
    }
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
