//! `xverse-bench`: prompt-processing and generation speed, like llama.cpp's `llama-bench`.
//!
//! ```text
//! xverse-bench -m FILE... [-p 128,512] [-n 32] [-d 0,4096] [-t 1,2] [-r 5] [--json]
//! ```
//!
//! For every model × thread count × depth × test, `-r` timed runs after one warm-up: a `pp N`
//! test evaluates N random token ids (seeded) as one prompt, a `tg N` test generates N tokens
//! one at a time, both after the first `-d` positions of the cache (none by default). The
//! cache is filled to that depth once per depth, untimed: by default with synthetic keys and
//! values written straight into the cache (`--depth-fill synthetic`: the timed tokens read it
//! as they would read a prompt's), or by evaluating a prompt of random tokens
//! (`--depth-fill prompt`, llama-bench's way, slow for deep caches on a CPU). The context is
//! depth + the longest test, even past the model's training context (a warning on stderr, as
//! llama.cpp). The table gives tokens/s (mean ± sd);
//! each tg also as a fraction of the roofline (bytes read per token × tokens/s ÷ this
//! machine's streaming read bandwidth, measured first and again before and after each timed
//! tg run: each run's rate is divided by the mean of the two measurements beside it, since a
//! shared machine's bandwidth drifts by a quarter or more within minutes). `--json` prints a JSON array with
//! llama-bench's field names instead. Any error is one line and exit status 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use serde_json::json;
use xverse_runtime::bench::{
    bytes_per_token, fill_depth, mean_sd, model_type, roofline_fraction, time_gen, time_prompt,
    DepthFill, ReadProbe, Rng,
};
use xverse_runtime::cli::CacheArgs;
use xverse_runtime::cpu::attention::Level;
use xverse_runtime::engine::{Engine, EngineConfig};
use xverse_runtime::model::{repack_by_default, Model};
use xverse_runtime::RuntimeError;

/// Prompt and generation speed of XVERSE GGUF models (llama-bench's flags and JSON).
#[derive(Parser, Debug)]
#[command(name = "xverse-bench", version, about, max_term_width = 100)]
struct Cli {
    /// GGUF model files (-m A B or -m A -m B).
    #[arg(short = 'm', long = "model", value_name = "FILE", num_args = 1.., required = true)]
    models: Vec<PathBuf>,
    /// Prompt lengths to test (comma-separated; 0 for none).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Numbers of tokens to generate (comma-separated; 0 for none).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Depths: cached positions before each test (comma-separated), filled untimed as
    /// --depth-fill says.
    #[arg(
        short = 'd',
        long = "n-depth",
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "0"
    )]
    n_depth: Vec<usize>,
    /// How the cache is filled to a depth: `synthetic` (deterministic pseudo-random keys and
    /// values written straight into the cache, in seconds; the timed tokens read them as they
    /// would a prompt's) or `prompt` (a prompt of random tokens evaluated by the model).
    #[arg(long = "depth-fill", value_name = "HOW", default_value = "synthetic")]
    depth_fill: String,
    /// Thread counts (comma-separated; default: one per available core).
    #[arg(
        short = 't',
        long = "threads",
        value_name = "N,...",
        value_delimiter = ','
    )]
    threads: Vec<usize>,
    /// Timed repetitions of each test.
    #[arg(
        short = 'r',
        long = "repetitions",
        value_name = "N",
        default_value_t = 5
    )]
    reps: usize,
    #[command(flatten)]
    cache: CacheArgs,
    /// Seed of the random token ids.
    #[arg(long = "seed", value_name = "N", default_value_t = 1234)]
    seed: u64,
    /// MiB of the buffer the bandwidth test reads (0: skip it and the roofline). The buffer
    /// stays allocated: the bandwidth is measured again around every timed tg run.
    #[arg(long = "bw-mib", value_name = "N", default_value_t = 1024)]
    bw_mib: usize,
    /// Print a JSON array (llama-bench's field names) instead of the table.
    #[arg(long = "json")]
    json: bool,
    /// Read the weights from the file's map instead of copying them at load into 2 MiB pages
    /// (Q4_0, Q4_K, Q6_K and Q8_0 repacked eight rows at a time; llama.cpp's `--no-repack`;
    /// also `XVERSE_REPACK=0`).
    #[arg(long = "no-repack")]
    no_repack: bool,
}

fn main() -> ExitCode {
    xverse_runtime::cli::main_with::<Cli>("xverse-bench", run)
}

fn err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::new(msg)
}

/// One test's result.
struct Row {
    file: String,
    model_type: String,
    size: u64,
    params: u64,
    threads: usize,
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    ts: Vec<f64>,
    /// tg only: bytes read per generated token.
    bytes_per_token: Option<f64>,
    /// tg only, with the bandwidth probe: the read bandwidth beside each of `ts` (mean of the
    /// measurements just before and just after that run), bytes/s.
    bw: Vec<f64>,
}

fn run(cli: Cli) -> Result<(), RuntimeError> {
    let cache_type = cli.cache.types()?;
    let depth_fill: DepthFill = cli.depth_fill.parse()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if cli.threads.is_empty() {
        vec![cores]
    } else {
        cli.threads.clone()
    };
    if threads.contains(&0) {
        return Err(err("-t 0: at least one thread is needed"));
    }
    if cli.reps == 0 {
        return Err(err("-r 0: at least one repetition is needed"));
    }
    let prompts: Vec<usize> = cli.n_prompt.iter().copied().filter(|&n| n > 0).collect();
    let gens: Vec<usize> = cli.n_gen.iter().copied().filter(|&n| n > 0).collect();
    if prompts.is_empty() && gens.is_empty() {
        return Err(err("nothing to test (every -p and -n is 0)"));
    }
    for m in &cli.models {
        if !m.is_file() {
            return Err(err(format!("{}: no such file", m.display())));
        }
    }
    // the bandwidth probe's buffer, before anything is printed (a size that cannot be mapped
    // is one line on stderr and nothing on stdout)
    let probe = if cli.bw_mib > 0 {
        let bytes = cli.bw_mib.checked_mul(1 << 20).ok_or_else(|| {
            err(format!(
                "--bw-mib {}: more bytes than this machine can address",
                cli.bw_mib
            ))
        })?;
        Some(ReadProbe::new(bytes, cores)?)
    } else {
        None
    };
    if !cli.json {
        let level = match Level::current() {
            Level::Avx2 => "avx2",
            Level::Scalar => "scalar",
            Level::Reference => "reference (XVERSE_ATTENTION)",
        };
        println!("attention kernels: {level}");
        println!("kv cache: {cache_type}");
        if cli.n_depth.iter().any(|&d| d > 0) {
            println!("depth fill: {}", cli.depth_fill);
        }
    }

    let bandwidth = probe.as_ref().map(|p| p.measure(5));
    if let (Some(bw), false) = (bandwidth, cli.json) {
        println!(
            "read bandwidth: {:.1} GB/s ({cores} threads, {} MiB streamed; measured again \
             before and after each timed tg run)\n",
            bw / 1e9,
            cli.bw_mib
        );
    }

    if !cli.json {
        println!(
            "| {:<30} | {:>10} | {:>8} | {:>7} | {:>15} | {:>18} | {:>8} |",
            "model", "size", "params", "threads", "test", "t/s", "roofline"
        );
        println!(
            "| {:-<30} | {:->10} | {:->8} | {:->7} | {:->15} | {:->18} | {:->8} |",
            "", "", "", "", "", "", ""
        );
    }
    let mut rows = Vec::new();
    let n_ctx = prompts
        .iter()
        .chain(&gens)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1)
        + cli.n_depth.iter().copied().max().unwrap_or(0);
    for path in &cli.models {
        let model = Model::load_with(path, !cli.no_repack && repack_by_default())?;
        // the copies made in the background are finished before anything is timed
        model.wait_repacked();
        let mtype = model_type(&model);
        let size: u64 = model.gguf().tensors().iter().map(|t| t.n_bytes).sum();
        let params = model.hparams.parameters();
        let train_ctx = model.hparams.context_length as usize;
        if train_ctx > 0 && n_ctx > train_ctx {
            eprintln!(
                "warning: {}: context of {n_ctx} exceeds the training context of {train_ctx}",
                path.display()
            );
        }
        for &t in &threads {
            let cfg = EngineConfig {
                n_ctx,
                cache_type,
                threads: t,
            };
            let mut engine = Engine::new(&model, cfg)?;
            let mut rng = Rng::new(cli.seed);
            for &nd in &cli.n_depth {
                fill_depth(&mut engine, nd, depth_fill, &mut rng)?;
                let tests = prompts
                    .iter()
                    .map(|&p| (p, 0))
                    .chain(gens.iter().map(|&g| (0, g)));
                for (np, ng) in tests {
                    let time = |e: &mut Engine<'_>, rng: &mut Rng| {
                        if np > 0 {
                            time_prompt(e, np, nd, rng)
                        } else {
                            time_gen(e, ng, nd, rng)
                        }
                    };
                    time(&mut engine, &mut rng)?; // warm-up
                    let mut ts = Vec::with_capacity(cli.reps);
                    let mut bw = Vec::new();
                    // tg: the bandwidth just before and just after each run (best of two
                    // passes); the one after a run is the one before the next
                    let probe = probe.as_ref().filter(|_| ng > 0);
                    let mut before = probe.map(|p| p.measure(2));
                    for _ in 0..cli.reps {
                        let s = time(&mut engine, &mut rng)?;
                        ts.push((np + ng) as f64 / s.max(1e-9));
                        if let (Some(p), Some(b)) = (probe, before) {
                            let after = p.measure(2);
                            bw.push((b + after) / 2.0);
                            before = Some(after);
                        }
                    }
                    let row = Row {
                        file: file_name(path),
                        model_type: mtype.clone(),
                        size,
                        params,
                        threads: t,
                        n_prompt: np,
                        n_gen: ng,
                        n_depth: nd,
                        ts,
                        // the cache holds nd + 1..=nd + ng positions while generating
                        bytes_per_token: (ng > 0).then(|| {
                            bytes_per_token(&model, cache_type, nd as f64 + (ng as f64 + 1.0) / 2.0)
                        }),
                        bw,
                    };
                    if !cli.json {
                        print_row(&row);
                    }
                    rows.push(row);
                }
            }
        }
    }
    let beside: Vec<f64> = rows.iter().flat_map(|r| r.bw.iter().copied()).collect();
    if !cli.json && !beside.is_empty() {
        let lo = beside.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = beside.iter().copied().fold(0.0, f64::max);
        println!(
            "\nread bandwidth beside the tg runs: {:.1}-{:.1} GB/s (each run's roofline is \
             against its own)",
            lo / 1e9,
            hi / 1e9
        );
    }
    if cli.json {
        let arr: Vec<_> = rows
            .iter()
            .map(|r| {
                let (avg, sd) = mean_sd(&r.ts);
                let roof = roofline(r);
                let bw = if r.bw.is_empty() {
                    bandwidth
                } else {
                    Some(mean_sd(&r.bw).0)
                };
                json!({
                    "build_commit": "xverse-rs",
                    "model_filename": r.file,
                    "model_type": r.model_type,
                    "model_size": r.size,
                    "model_n_params": r.params,
                    "n_threads": r.threads,
                    "type_k": cache_type.k.name(),
                    "type_v": cache_type.v.name(),
                    "n_prompt": r.n_prompt,
                    "n_gen": r.n_gen,
                    "n_depth": r.n_depth,
                    "avg_ts": avg,
                    "stddev_ts": sd,
                    "samples_ts": r.ts,
                    "read_bandwidth": bw,
                    "samples_bw": r.bw,
                    "bytes_per_token": r.bytes_per_token,
                    "roofline_fraction": roof,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&arr).map_err(|e| err(e.to_string()))?;
        println!("{text}");
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Fraction of the roofline a tg row reaches: each run against the bandwidth measured beside
/// it, averaged.
fn roofline(r: &Row) -> Option<f64> {
    roofline_fraction(r.bytes_per_token?, &r.ts, &r.bw)
}

fn print_row(r: &Row) {
    let (avg, sd) = mean_sd(&r.ts);
    let name = Path::new(&r.file)
        .file_name()
        .map_or_else(|| r.file.clone(), |n| n.to_string_lossy().into_owned());
    let mut test = if r.n_prompt > 0 {
        format!("pp {}", r.n_prompt)
    } else {
        format!("tg {}", r.n_gen)
    };
    if r.n_depth > 0 {
        test += &format!(" @ d{}", r.n_depth);
    }
    let roof = roofline(r).map_or_else(|| "-".to_string(), |f| format!("{:.0} %", 100.0 * f));
    println!(
        "| {:<30} | {:>10} | {:>8} | {:>7} | {:>15} | {:>18} | {:>8} |",
        format!("{name} ({})", r.model_type),
        format!("{:.2} GiB", r.size as f64 / (1u64 << 30) as f64),
        format!("{:.2} B", r.params as f64 / 1e9),
        r.threads,
        test,
        format!("{avg:.2} ± {sd:.2}"),
        roof
    );
}
