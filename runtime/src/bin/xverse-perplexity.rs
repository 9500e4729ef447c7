//! `xverse-perplexity`: perplexity of a model over a text, like llama.cpp's `llama-perplexity`,
//! and the KL-divergence / top-1 agreement of its next-token distributions against those
//! saved from another file (how each quantized type is judged against bf16).
//!
//! ```text
//! xverse-perplexity MODEL -f TEXT [-c 512] [--chunks N] [--save-logits FILE]
//! xverse-perplexity MODEL --kl-base FILE [-f TEXT]
//! ```
//!
//! Windows of `-c` tokens, the second half of each scored (see `xverse_runtime::perplexity`
//! for the method and the saved-logits file format). Results go to stdout, progress and
//! timings to stderr; any error is one line and exit status 1.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use xverse_runtime::cli::CacheArgs;
use xverse_runtime::engine::{Engine, EngineConfig};
use xverse_runtime::load::model_and_tokenizer;
use xverse_runtime::model::repack_by_default;
use xverse_runtime::perplexity::{
    kl_divergence, log_probs_f16, nll, LogitsHeader, LogitsReader, LogitsWriter, Stat,
};
use xverse_runtime::sampler::argmax;
use xverse_runtime::RuntimeError;

/// Perplexity of an XVERSE GGUF model over a text; KL-divergence against saved logits.
#[derive(Parser, Debug)]
#[command(name = "xverse-perplexity", version, about, max_term_width = 100)]
struct Cli {
    /// The GGUF model file (or -m FILE).
    #[arg(value_name = "MODEL")]
    model: Option<PathBuf>,
    /// The GGUF model file, llama.cpp's spelling.
    #[arg(
        short = 'm',
        long = "model",
        value_name = "FILE",
        conflicts_with = "model"
    )]
    model_flag: Option<PathBuf>,
    /// The text (UTF-8). With --kl-base it is optional: the tokens come from the saved file.
    #[arg(short = 'f', long = "file", value_name = "TEXT")]
    file: Option<PathBuf>,
    /// Window length in tokens (default 512; with --kl-base, the saved file's).
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    ctx_size: Option<usize>,
    /// Evaluate at most N windows (default: all).
    #[arg(long = "chunks", value_name = "N")]
    chunks: Option<usize>,
    /// CPU threads (default: one per available core).
    #[arg(short = 't', long = "threads", value_name = "N")]
    threads: Option<usize>,
    #[command(flatten)]
    cache: CacheArgs,
    /// Save the log-probabilities of every scored position to FILE (for --kl-base later).
    #[arg(long = "save-logits", value_name = "FILE", conflicts_with = "kl_base")]
    save_logits: Option<PathBuf>,
    /// Compare with log-probabilities saved by --save-logits (from another file of the same
    /// model): mean KL-divergence and top-1 agreement.
    #[arg(long = "kl-base", value_name = "FILE")]
    kl_base: Option<PathBuf>,
}

fn main() -> ExitCode {
    xverse_runtime::cli::main_with::<Cli>("xverse-perplexity", run)
}

fn err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::new(msg)
}

fn read_text(path: &PathBuf) -> Result<String, RuntimeError> {
    let bytes = std::fs::read(path)
        .map_err(|e| err(format!("cannot read the text file {}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| err(format!("the text file {} is not UTF-8", path.display())))
}

fn run(cli: Cli) -> Result<(), RuntimeError> {
    let Some(model_path) = cli.model.clone().or_else(|| cli.model_flag.clone()) else {
        return Err(err(
            "no model file given (xverse-perplexity MODEL.gguf -f TEXT, see --help)",
        ));
    };
    if cli.file.is_none() && cli.kl_base.is_none() {
        return Err(err("no text given (-f TEXT)"));
    }
    let cache_type = cli.cache.types()?;
    if cli.threads == Some(0) {
        return Err(err("-t 0: at least one thread is needed"));
    }
    if cli.chunks == Some(0) {
        return Err(err("--chunks 0: nothing to evaluate"));
    }
    let text = cli.file.as_ref().map(read_text).transpose()?;
    let mut base = cli.kl_base.as_deref().map(LogitsReader::open).transpose()?;

    let t_load = Instant::now();
    let (model, tok) = model_and_tokenizer(&model_path, repack_by_default())?;
    let n_vocab = model.hparams.vocab as usize;

    let n_ctx = match (&base, cli.ctx_size) {
        (Some(b), Some(c)) if c != b.header.n_ctx as usize => {
            return Err(err(format!(
                "-c {c} differs from the window length {} of the saved logits",
                b.header.n_ctx
            )))
        }
        (Some(b), _) => b.header.n_ctx as usize,
        (None, c) => c.unwrap_or(512),
    };
    if n_ctx < 4 {
        return Err(err(format!("-c {n_ctx}: a window needs at least 4 tokens")));
    }
    let first = n_ctx / 2;
    let add_bos = tok.add_bos();

    // the tokens: the text's, or the saved file's (checked against the text when both)
    let tokens: Vec<u32> = match (&base, &text) {
        (Some(b), text) => {
            if b.header.n_vocab as usize != n_vocab {
                return Err(err(format!(
                    "the saved logits have a vocabulary of {}, this model {n_vocab}",
                    b.header.n_vocab
                )));
            }
            if b.header.bos_replaced != add_bos {
                return Err(err(
                    "the saved logits were made with a different BOS setting (tokenizer.ggml.add_bos_token)",
                ));
            }
            if let Some(t) = text {
                let mine = tok.encode(t)?;
                if mine.len() < b.tokens.len() || mine[..b.tokens.len()] != b.tokens[..] {
                    return Err(err(
                        "the text does not tokenize to the saved logits' tokens (another text or tokenizer)",
                    ));
                }
            }
            b.tokens.clone()
        }
        (None, Some(t)) => tok.encode(t)?,
        (None, None) => return Err(err("no text given (-f TEXT)")),
    };
    if base.is_none() && tokens.len() < 2 * n_ctx {
        return Err(err(format!(
            "the text is {} tokens; a window of {n_ctx} needs at least {} (as llama-perplexity; lower -c)",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let mut n_chunks = tokens.len() / n_ctx;
    if let Some(c) = cli.chunks {
        n_chunks = n_chunks.min(c);
    }

    let mut engine = Engine::new(
        &model,
        EngineConfig {
            n_ctx,
            cache_type,
            threads: cli.threads.unwrap_or(0),
        },
    )?;
    eprintln!(
        "xverse-perplexity: loaded {} in {:.1} ms; {} tokens, {n_chunks} windows of {n_ctx}, scoring positions {first}..{} of each, {} threads",
        model_path.display(),
        t_load.elapsed().as_secs_f64() * 1e3,
        tokens.len(),
        n_ctx - 1,
        engine.threads()
    );

    let header = LogitsHeader {
        n_vocab: n_vocab as u32,
        n_ctx: n_ctx as u32,
        n_chunks: n_chunks as u32,
        first: first as u32,
        bos_replaced: add_bos,
    };
    let mut saver = match &cli.save_logits {
        Some(p) => Some(LogitsWriter::create(
            p,
            header,
            &tokens[..n_chunks * n_ctx],
        )?),
        None => None,
    };

    let mut ppl = Stat::default();
    let mut base_ppl = Stat::default();
    let mut kl = Stat::default();
    let mut agree = 0u64;
    let mut base_row = vec![0f32; n_vocab];
    let mut cur_row = vec![0f32; n_vocab];
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let t_start = Instant::now();
    for c in 0..n_chunks {
        let start = c * n_ctx;
        let mut window = tokens[start..start + n_ctx].to_vec();
        if add_bos {
            window[0] = tok.bos();
        }
        let t = Instant::now();
        engine.truncate(0);
        let logits = engine.eval(&window, true)?;
        if logits.len() != n_ctx * n_vocab {
            return Err(err(format!(
                "the engine returned {} logits for {n_ctx} tokens of vocab {n_vocab}",
                logits.len()
            )));
        }
        for j in first..n_ctx - 1 {
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let target = tokens[start + j + 1];
            ppl.add(nll(row, target));
            if saver.is_some() || base.is_some() {
                let lp = log_probs_f16(row);
                if let Some(w) = saver.as_mut() {
                    w.write_row(&lp)?;
                }
                if let Some(b) = base.as_mut() {
                    b.read_row(&mut base_row)?;
                    for (o, v) in cur_row.iter_mut().zip(&lp) {
                        *o = v.to_f32();
                    }
                    kl.add(kl_divergence(&base_row, &cur_row));
                    if argmax(&base_row) == argmax(&cur_row) {
                        agree += 1;
                    }
                    base_ppl.add(-(base_row[target as usize] as f64));
                }
            }
        }
        if c == 0 {
            let secs = t.elapsed().as_secs_f64();
            eprintln!(
                "xverse-perplexity: {secs:.2} seconds per window, about {:.1} minutes in all",
                secs * n_chunks as f64 / 60.0
            );
        }
        let _ = write!(out, "[{}]{:.4},", c + 1, ppl.mean().exp());
        let _ = out.flush();
    }
    let _ = writeln!(out);
    if let Some(w) = saver {
        w.finish()?;
        if let Some(p) = &cli.save_logits {
            eprintln!(
                "xverse-perplexity: saved the log-probabilities to {}",
                p.display()
            );
        }
    }
    let p = ppl.mean().exp();
    let _ = writeln!(
        out,
        "Final estimate: PPL = {p:.4} +/- {:.5} ({} tokens scored)",
        ppl.err() * p,
        ppl.n
    );
    if base.is_some() {
        let bp = base_ppl.mean().exp();
        let _ = writeln!(
            out,
            "Base PPL = {bp:.4} +/- {:.5}; ln(PPL/base PPL) = {:.6}",
            base_ppl.err() * bp,
            ppl.mean() - base_ppl.mean()
        );
        let _ = writeln!(
            out,
            "KL divergence: mean {:.6} +/- {:.6}, max {:.6}",
            kl.mean(),
            kl.err(),
            kl.max
        );
        let _ = writeln!(
            out,
            "Same top-1: {:.3} % ({agree} of {})",
            100.0 * agree as f64 / kl.n.max(1) as f64,
            kl.n
        );
    }
    eprintln!(
        "xverse-perplexity: {} windows in {:.2} s",
        n_chunks,
        t_start.elapsed().as_secs_f64()
    );
    Ok(())
}
