//! `xverse-bench`: prompt-processing and generation speed, like llama.cpp's `llama-bench`.
//!
//! ```text
//! xverse-bench -m FILE... [-p 128,512] [-n 32] [-pg 512,128] [-d 0,4096] [-t 1,2] [-r 5]
//!              [-o md|csv|json|jsonl|sql]
//! ```
//!
//! For every model × thread count × depth × test, `-r` timed runs after one warm-up: a `pp N`
//! test evaluates N random token ids (seeded) as one prompt, a `tg N` test generates N tokens
//! one at a time, a `-pg P,G` test does both in one timed run; all after the first `-d`
//! positions of the cache (none by default). The
//! cache is filled to that depth once per depth, untimed: by default with synthetic keys and
//! values written straight into the cache (`--depth-fill synthetic`: the timed tokens read it
//! as they would read a prompt's), or by evaluating a prompt of random tokens
//! (`--depth-fill prompt`, llama-bench's way, slow for deep caches on a CPU). The context is
//! depth + the longest test, even past the model's training context (a warning on stderr, as
//! llama.cpp). The table gives tokens/s (mean ± sd);
//! each tg also as a fraction of the roofline (bytes read per token × tokens/s ÷ this
//! machine's streaming read bandwidth, measured first and again before and after each timed
//! tg run: each run's rate is divided by the mean of the two measurements beside it, since a
//! shared machine's bandwidth drifts by a quarter or more within minutes). `-o` prints CSV,
//! JSON, JSON Lines or SQL with llama-bench's field names instead (`--json` is `-o json`).
//! Any error is one line and exit status 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use xverse_runtime::bench::report::{self, Format, Record};
use xverse_runtime::bench::{
    bytes_per_token, fill_depth, mean_sd, model_type, time_prompt_gen, DepthFill, ReadProbe, Rng,
};
use xverse_runtime::cli::CacheArgs;
use xverse_runtime::cpu::attention::Level;
use xverse_runtime::engine::{Engine, EngineConfig};
use xverse_runtime::kv_cache::{check_fits, KvTypes};
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
    /// A prompt of PP tokens and then TG generated, timed as one test (`pp512+tg128`);
    /// repeat the flag for more (also spelled `-pg`, as llama-bench).
    #[arg(long = "pg", value_name = "PP,TG", value_parser = parse_pg)]
    pg: Vec<(usize, usize)>,
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
    /// Output format: md (a table), csv, json, jsonl or sql (llama-bench's field names).
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FORMAT",
        default_value = "md"
    )]
    output: String,
    /// The same as `-o json`.
    #[arg(long = "json")]
    json: bool,
    /// Time every run: no untimed warm-up run before each test.
    #[arg(long = "no-warmup")]
    no_warmup: bool,
    /// Read the weights from the file's map instead of copying them at load into 2 MiB pages
    /// (Q4_0, Q4_K, Q6_K and Q8_0 repacked eight rows at a time; llama.cpp's `--no-repack`;
    /// also `XVERSE_REPACK=0`).
    #[arg(long = "no-repack")]
    no_repack: bool,
}

fn main() -> ExitCode {
    xverse_runtime::cli::main_with_spellings::<Cli>("xverse-bench", &[("-pg", "--pg")], run)
}

/// `PP,TG`: two token counts, both at least 1.
fn parse_pg(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("\"{s}\" is not PP,TG (two token counts, both at least 1)");
    let (p, g) = s.split_once(',').ok_or_else(bad)?;
    let p: usize = p.trim().parse().map_err(|_| bad())?;
    let g: usize = g.trim().parse().map_err(|_| bad())?;
    if p == 0 || g == 0 {
        return Err(bad());
    }
    Ok((p, g))
}

fn err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::new(msg)
}

fn run(cli: Cli) -> Result<(), RuntimeError> {
    let cache_type = cli.cache.types()?;
    let depth_fill: DepthFill = cli.depth_fill.parse()?;
    let format: Format = if cli.json {
        if cli.output != "md" && cli.output != "json" {
            return Err(err(format!(
                "--json and -o {}: two output formats",
                cli.output
            )));
        }
        Format::Json
    } else {
        cli.output.parse()?
    };
    let table = format == Format::Md;
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
    if prompts.is_empty() && gens.is_empty() && cli.pg.is_empty() {
        return Err(err("nothing to test (every -p and -n is 0, and no -pg)"));
    }
    for m in &cli.models {
        if !m.is_file() {
            return Err(err(format!("{}: no such file", m.display())));
        }
    }
    // the context: the deepest depth + the longest test (sizes from the command line, so
    // checked: a sum past usize is an error, not a wrapped context)
    let too_long = || err("-p, -n, -pg and -d: more positions than this machine can address");
    let longest = prompts
        .iter()
        .chain(&gens)
        .map(|&n| Some(n))
        .chain(cli.pg.iter().map(|&(p, g)| p.checked_add(g)))
        .try_fold(1usize, |m, n| n.map(|n| m.max(n)))
        .ok_or_else(too_long)?;
    let n_ctx = longest
        .checked_add(cli.n_depth.iter().copied().max().unwrap_or(0))
        .ok_or_else(too_long)?;
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
    if table {
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
    if let (Some(bw), true) = (bandwidth, table) {
        println!(
            "read bandwidth: {:.1} GB/s ({cores} threads, {} MiB streamed; measured again \
             before and after each timed tg run)\n",
            bw / 1e9,
            cli.bw_mib
        );
    }

    let cpu = report::cpu_info();
    let file_width = cli
        .models
        .iter()
        .map(|m| report::md_file_name(&m.to_string_lossy()).chars().count())
        .max()
        .unwrap_or(0);
    let mut out = Output::new(format, cpu, file_width);
    for path in &cli.models {
        let repack = !cli.no_repack && repack_by_default();
        let model = Model::load_with(path, repack)?;
        // the copies made in the background are finished before anything is timed
        model.wait_repacked();
        let mtype = model_type(&model);
        let size: u64 = model.gguf().tensors().iter().map(|t| t.n_bytes).sum();
        let params = model.hparams.parameters();
        check_cache_fits(&model, cache_type, n_ctx)?;
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
                // llama-bench's order: the pp tests, the tg tests, the pp+tg tests
                let tests = prompts
                    .iter()
                    .map(|&p| (p, 0))
                    .chain(gens.iter().map(|&g| (0, g)))
                    .chain(cli.pg.iter().copied());
                for (np, ng) in tests {
                    let time =
                        |e: &mut Engine<'_>, rng: &mut Rng| time_prompt_gen(e, np, ng, nd, rng);
                    let test_time = report::utc_now();
                    if !cli.no_warmup {
                        time(&mut engine, &mut rng)?;
                    }
                    let mut samples_s = Vec::with_capacity(cli.reps);
                    let mut bw = Vec::new();
                    // tg: the bandwidth just before and just after each run (best of two
                    // passes); the one after a run is the one before the next
                    let tg = np == 0;
                    let probe = probe.as_ref().filter(|_| tg);
                    let mut before = probe.map(|p| p.measure(2));
                    for _ in 0..cli.reps {
                        samples_s.push(time(&mut engine, &mut rng)?);
                        if let (Some(p), Some(b)) = (probe, before) {
                            let after = p.measure(2);
                            bw.push((b + after) / 2.0);
                            before = Some(after);
                        }
                    }
                    let read_bandwidth = if bw.is_empty() {
                        bandwidth
                    } else {
                        Some(mean_sd(&bw).0)
                    };
                    out.push(Record {
                        model_filename: path.to_string_lossy().into_owned(),
                        model_type: mtype.clone(),
                        model_size: size,
                        model_n_params: params,
                        n_threads: t,
                        type_k: cache_type.k.name().to_string(),
                        type_v: cache_type.v.name().to_string(),
                        repack,
                        n_prompt: np,
                        n_gen: ng,
                        n_depth: nd,
                        test_time,
                        samples_s,
                        // the cache holds nd + 1..=nd + ng positions while generating
                        bytes_per_token: tg.then(|| {
                            bytes_per_token(&model, cache_type, nd as f64 + (ng as f64 + 1.0) / 2.0)
                        }),
                        samples_bw: bw,
                        read_bandwidth,
                    });
                }
            }
        }
    }
    out.finish()
}

/// An error unless a KV cache of `n_ctx` positions fits in this machine's memory: the
/// longest test fills it, and it grows as it is filled, so a context too large would
/// otherwise run for hours (or be killed) before it failed.
fn check_cache_fits(model: &Model, cache_type: KvTypes, n_ctx: usize) -> Result<(), RuntimeError> {
    let hp = &model.hparams;
    let per_position = (hp.layers as usize)
        .checked_mul(hp.kv_heads as usize)
        .and_then(|n| n.checked_mul(cache_type.row_bytes(hp.head_dim as usize)));
    let need = per_position.and_then(|b| b.checked_mul(n_ctx));
    check_fits(need, n_ctx).map_err(|e| {
        err(format!(
            "{e} ({cache_type}); ask for shorter tests or depths"
        ))
    })
}

/// Prints the records in the chosen format as they come (all at the end for JSON, which is
/// one array).
struct Output {
    format: Format,
    cpu: String,
    /// Characters of the longest file name (the Markdown table's first column).
    file_width: usize,
    records: Vec<Record>,
}

impl Output {
    fn new(format: Format, cpu: String, file_width: usize) -> Output {
        Output {
            format,
            cpu,
            file_width,
            records: Vec::new(),
        }
    }

    fn push(&mut self, r: Record) {
        let first = self.records.is_empty();
        let fields = r.fields(&self.cpu);
        match self.format {
            Format::Md => {
                if first {
                    println!("{}", report::md_header(self.file_width));
                }
                println!("{}", report::md_row(&r, self.file_width));
            }
            Format::Csv => {
                if first {
                    println!("{}", report::csv_header(&fields));
                }
                println!("{}", report::csv_line(&fields));
            }
            Format::Jsonl => println!("{}", r.to_json(&self.cpu)),
            Format::Sql => {
                if first {
                    println!("{}\n", report::sql_create(&fields));
                }
                println!("{}", report::sql_insert(&fields));
            }
            Format::Json => {}
        }
        self.records.push(r);
    }

    fn finish(self) -> Result<(), RuntimeError> {
        match self.format {
            Format::Json => {
                let arr: Vec<_> = self.records.iter().map(|r| r.to_json(&self.cpu)).collect();
                let text = serde_json::to_string_pretty(&arr).map_err(|e| err(e.to_string()))?;
                println!("{text}");
            }
            Format::Md => {
                let beside: Vec<f64> = self
                    .records
                    .iter()
                    .flat_map(|r| r.samples_bw.iter().copied())
                    .collect();
                if !beside.is_empty() {
                    let lo = beside.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = beside.iter().copied().fold(0.0, f64::max);
                    println!(
                        "\nread bandwidth beside the tg runs: {:.1}-{:.1} GB/s (each run's \
                         roofline is against its own)",
                        lo / 1e9,
                        hi / 1e9
                    );
                }
            }
            Format::Csv | Format::Jsonl | Format::Sql => {}
        }
        Ok(())
    }
}
