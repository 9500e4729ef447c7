//! `xverse-run`: runs an XVERSE GGUF model on a prompt, or as a chat.
//!
//! ```text
//! xverse-run MODEL [-p PROMPT | -f FILE] [-n N] [-c CTX] [-t THREADS] [--temp T] [--top-k K]
//!            [--top-p P] [--min-p P] [--repeat-penalty R] [--repeat-last-n N] [--seed S]
//!            [--chat] [--system TEXT] [--verbose-prompt] [--cache-type f16|f32|q8_0|q4_0]
//!            [-ctk TYPE] [-ctv TYPE] [--ignore-eos] [--no-display-prompt] [--no-escape]
//! ```
//!
//! The flags are spelled like llama.cpp's `main` and default to its values. Generated text
//! streams to stdout (after the prompt, which is echoed unless `--no-display-prompt`); load
//! time, prompt and generation speed go to stderr. Any error is one line on stderr and exit
//! status 1.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use xverse_runtime::chat::Chat;
use xverse_runtime::cli::CacheArgs;
use xverse_runtime::engine::{Engine, EngineConfig};
use xverse_runtime::load::model_and_tokenizer;
use xverse_runtime::model::{repack_by_default, Model};
use xverse_runtime::sampler::{Sampler, SamplerConfig};
use xverse_runtime::session::{Session, Stop};
use xverse_runtime::tokenizer::Tokenizer;
use xverse_runtime::RuntimeError;

/// The end of a run: everything is printed, and the process is about to exit, which gives
/// back all its memory at once. Dropping the session, tokenizer and model one piece at a time
/// first (200k small allocations of the tokenizer, the unmapping of the weights' copies, a
/// background copy thread joined) cost every command ~0.1 s on bench-1b (whole `-n 1`
/// commands, median of ten: Q8_0 0.735 → 0.635 s, Q4_K_M 0.70 → 0.59 s).
macro_rules! leave {
    ($($v:ident),*) => {
        $(std::mem::forget($v);)*
    };
}

/// Runs an XVERSE GGUF model: completes a prompt, or chats (--chat).
#[derive(Parser, Debug)]
#[command(name = "xverse-run", version, about, max_term_width = 100)]
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
    /// The prompt (with --chat: the first message).
    #[arg(short = 'p', long = "prompt", value_name = "PROMPT")]
    prompt: Option<String>,
    /// Read the prompt from a file (one trailing newline is removed, as llama.cpp does).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "prompt"
    )]
    file: Option<PathBuf>,
    /// Tokens to generate (per reply with --chat); -1: until eos or a full context.
    #[arg(short = 'n', long = "n-predict", value_name = "N", default_value_t = -1, allow_negative_numbers = true)]
    n_predict: i64,
    /// Context size in tokens; 0: the model's training context.
    #[arg(
        short = 'c',
        long = "ctx-size",
        value_name = "N",
        default_value_t = 512
    )]
    ctx_size: usize,
    /// CPU threads (default: one per available core).
    #[arg(short = 't', long = "threads", value_name = "N")]
    threads: Option<usize>,
    /// Temperature; <= 0: greedy (always the most likely token).
    #[arg(
        long,
        value_name = "T",
        default_value_t = 0.8,
        allow_negative_numbers = true
    )]
    temp: f32,
    /// Keep the K most likely tokens; <= 0: all.
    #[arg(
        long = "top-k",
        value_name = "K",
        default_value_t = 40,
        allow_negative_numbers = true
    )]
    top_k: i32,
    /// Keep the most likely tokens up to this total probability; 1.0: off.
    #[arg(long = "top-p", value_name = "P", default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than P times the most likely one; 0.0: off.
    #[arg(long = "min-p", value_name = "P", default_value_t = 0.05)]
    min_p: f32,
    /// Penalise recent tokens (Hugging Face's rule: positive logits divided, negative
    /// multiplied); 1.0: off.
    #[arg(long = "repeat-penalty", value_name = "R", default_value_t = 1.0)]
    repeat_penalty: f32,
    /// How many recent tokens the penalty looks at; 0: none, -1: the whole context.
    #[arg(
        long = "repeat-last-n",
        value_name = "N",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    repeat_last_n: i64,
    /// Random seed; -1: a new one each run (printed on stderr).
    #[arg(short = 's', long = "seed", value_name = "S", default_value_t = -1, allow_negative_numbers = true)]
    seed: i64,
    /// Chat: one message per line on stdin, in XVERSE's "Human: … Assistant: …" format;
    /// Ctrl-D ends.
    #[arg(long)]
    chat: bool,
    /// With --chat: a system text sent first ("Human: TEXT\n").
    #[arg(long, value_name = "TEXT", requires = "chat")]
    system: Option<String>,
    /// Print the prompt's tokens on stderr.
    #[arg(long = "verbose-prompt")]
    verbose_prompt: bool,
    #[command(flatten)]
    cache: CacheArgs,
    /// Keep generating after eos.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Do not echo the prompt before the generated text.
    #[arg(long = "no-display-prompt")]
    no_display_prompt: bool,
    /// Turn \n, \r, \t, \', \", \\ and \xNN in -p and --system into the characters (the
    /// default; accepted for llama.cpp's spelling).
    #[arg(short = 'e', long = "escape", overrides_with = "no_escape")]
    escape: bool,
    /// Take -p and --system literally.
    #[arg(long = "no-escape")]
    no_escape: bool,
    /// Read the weights from the file's map instead of copying them at load into 2 MiB pages
    /// (Q4_0, Q4_K, Q6_K and Q8_0 repacked eight rows at a time; llama.cpp's `--no-repack`;
    /// also `XVERSE_REPACK=0`).
    #[arg(long = "no-repack")]
    no_repack: bool,
}

/// The load line's words on the weights' copies: how many bytes were repacked or copied at
/// load, how many are still being copied, what was left in the file's map.
fn repack_line(model: &Model) -> String {
    let size = |b: usize| {
        if b >= 1 << 30 {
            format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
        } else {
            format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
        }
    };
    let (all, done) = (model.repack_bytes(), model.packed_bytes());
    let mut parts = Vec::new();
    if all > 0 && done >= all {
        parts.push(format!("repacked {} of weights", size(all)));
    } else if all > 0 {
        parts.push(format!(
            "repacking {} of weights, {} of them in the background",
            size(all),
            size(all - done)
        ));
    }
    parts.extend(model.repack_note().map(str::to_string));
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// llama.cpp's `process_escapes`: `\n \r \t \' \" \\ \xNN`; anything else stays as written.
fn process_escapes(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let c = b[i + 1];
            let simple = match c {
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                b'\'' => Some(b'\''),
                b'"' => Some(b'"'),
                b'\\' => Some(b'\\'),
                _ => None,
            };
            if let Some(x) = simple {
                out.push(x);
                i += 2;
                continue;
            }
            if c == b'x' {
                let hex = s
                    .get(i + 2..i + 4)
                    .filter(|h| h.bytes().all(|x| x.is_ascii_hexdigit()));
                if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn main() -> ExitCode {
    xverse_runtime::cli::main_with::<Cli>("xverse-run", run)
}

fn err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::new(msg)
}

fn sampler_config(cli: &Cli) -> Result<SamplerConfig, RuntimeError> {
    let seed = if cli.seed < 0 {
        if cli.seed != -1 {
            return Err(err(format!("--seed {} must be -1 or >= 0", cli.seed)));
        }
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ (u64::from(std::process::id()) << 32)
    } else {
        cli.seed as u64
    };
    let repeat_last_n = match cli.repeat_last_n {
        -1 => usize::MAX,
        n if n >= 0 => n as usize,
        n => return Err(err(format!("--repeat-last-n {n} must be -1 or >= 0"))),
    };
    let cfg = SamplerConfig {
        temp: cli.temp,
        top_k: cli.top_k,
        top_p: cli.top_p,
        min_p: cli.min_p,
        repeat_penalty: cli.repeat_penalty,
        repeat_last_n,
        seed,
    };
    cfg.validate().map_err(err)?;
    Ok(cfg)
}

fn run(cli: Cli) -> Result<(), RuntimeError> {
    // everything about the arguments is checked before the model is loaded
    let Some(model_path) = cli.model.clone().or_else(|| cli.model_flag.clone()) else {
        return Err(err(
            "no model file given (xverse-run MODEL.gguf …, see --help)",
        ));
    };
    let limit = match cli.n_predict {
        -1 => None,
        n if n >= 0 => Some(n as usize),
        n => return Err(err(format!("-n {n} must be -1 (no limit) or >= 0"))),
    };
    let sampler_cfg = sampler_config(&cli)?;
    let cache_type = cli.cache.types()?;
    if cli.threads == Some(0) {
        return Err(err("-t 0: at least one thread is needed"));
    }
    let escape = |t: &str| {
        if cli.no_escape {
            t.to_string()
        } else {
            process_escapes(t)
        }
    };
    let system = cli.system.as_deref().map(escape);
    let prompt = match (&cli.prompt, &cli.file) {
        (Some(p), _) => Some(escape(p)),
        (None, Some(f)) => {
            let bytes = std::fs::read(f)
                .map_err(|e| err(format!("cannot read the prompt file {}: {e}", f.display())))?;
            let mut text = String::from_utf8(bytes)
                .map_err(|_| err(format!("the prompt file {} is not UTF-8 text", f.display())))?;
            if text.ends_with('\n') {
                text.pop();
            }
            Some(text)
        }
        (None, None) => None,
    };

    let t_load = Instant::now();
    let (model, tok) = model_and_tokenizer(&model_path, !cli.no_repack && repack_by_default())?;
    let train_ctx = model.hparams.context_length as usize;
    if cli.ctx_size > train_ctx && train_ctx > 0 {
        eprintln!(
            "xverse-run: warning: context {} is longer than the model's training context {train_ctx}",
            cli.ctx_size
        );
    }
    let engine = Engine::new(
        &model,
        EngineConfig {
            n_ctx: cli.ctx_size,
            cache_type,
            threads: cli.threads.unwrap_or(0),
        },
    )?;
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;
    let setup = |engine: &Engine<'_>| {
        print_setup(
            &model_path,
            load_ms,
            &model,
            engine,
            &sampler_cfg,
            cli.repeat_last_n,
        )
    };
    let mut session = Session::new(engine, &tok, Sampler::new(sampler_cfg.clone()));
    session.ignore_eos = cli.ignore_eos;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut errw = io::stderr();

    if cli.chat {
        let stdin = io::stdin();
        let marker = stdin.is_terminal();
        let mut chat = Chat::new(&mut session, system.as_deref(), limit)?;
        setup(chat.session().engine());
        let mut closed = false;
        if let Some(p) = &prompt {
            if cli.verbose_prompt {
                let ids = tok.encode_segment(&xverse_runtime::chat::user_segment(p))?;
                print_tokens(&tok, &ids);
            }
            closed = chat.turn(p, &mut out, &mut errw)? == xverse_runtime::chat::Turn::Closed;
        }
        if !closed {
            chat.run(&mut stdin.lock(), &mut out, &mut errw, marker)?;
        }
        eprintln!();
        for line in session.timings.report().lines() {
            eprintln!("xverse-run: {line}");
        }
        drop(out);
        leave!(session, tok, model);
        return Ok(());
    }

    let text = prompt.unwrap_or_default();
    let ids = session.prompt_tokens(&text)?;
    if cli.verbose_prompt {
        print_tokens(&tok, &ids);
    }
    if ids.len() > session.n_ctx() {
        return Err(err(format!(
            "the prompt is {} tokens, longer than the context of {} (raise -c)",
            ids.len(),
            session.n_ctx()
        )));
    }
    setup(session.engine());
    if !cli.no_display_prompt {
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
    let g = session.complete(&ids, limit, &mut out)?;
    eprintln!();
    match g.stop {
        Stop::ContextFull => eprintln!(
            "xverse-run: stopped: the context of {} tokens is full (raise -c)",
            session.n_ctx()
        ),
        Stop::Eos => eprintln!("xverse-run: stopped at eos"),
        Stop::Limit | Stop::OutputClosed => {}
    }
    for line in session.timings.report().lines() {
        eprintln!("xverse-run: {line}");
    }
    drop(out);
    leave!(session, tok, model);
    Ok(())
}

/// The load and sampling lines on stderr (after the arguments and the prompt were checked, so
/// an error is always the only line).
fn print_setup(
    model_path: &std::path::Path,
    load_ms: f64,
    model: &Model,
    engine: &Engine<'_>,
    sampler_cfg: &SamplerConfig,
    repeat_last_n: i64,
) {
    let h = &model.hparams;
    eprintln!(
        "xverse-run: loaded {} in {:.1} ms{}: {} parameters, {} layers, vocab {}, context {}, {} threads, {} KV cache ({:.1} MiB), {}",
        model_path.display(),
        load_ms,
        repack_line(model),
        human(h.parameters()),
        h.layers,
        h.vocab,
        engine.n_ctx(),
        engine.threads(),
        engine.cache_type(),
        engine.cache_bytes() as f64 / (1024.0 * 1024.0),
        engine.describe(),
    );
    eprintln!(
        "xverse-run: sampling: seed {}, temp {}, top-k {}, top-p {}, min-p {}, repeat-penalty {} over {}",
        sampler_cfg.seed,
        sampler_cfg.temp,
        sampler_cfg.top_k,
        sampler_cfg.top_p,
        sampler_cfg.min_p,
        sampler_cfg.repeat_penalty,
        repeat_last_n
    );
}

/// 1234567 -> "1.23 M".
fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// `--verbose-prompt`: each token id and its vocabulary entry, like llama.cpp.
fn print_tokens(tok: &Tokenizer, ids: &[u32]) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "xverse-run: prompt: {} tokens", ids.len());
    for &id in ids {
        let text = tok.token_text(id).unwrap_or_default();
        let _ = writeln!(e, "{id:6} -> '{}'", text.escape_debug());
    }
}

#[cfg(test)]
mod tests {
    use super::process_escapes;

    #[test]
    fn escapes_like_llama_cpp() {
        assert_eq!(process_escapes(r#"a\nb\tc\\d\'\"\r"#), "a\nb\tc\\d'\"\r");
        assert_eq!(process_escapes(r"\x41\x4g\q\"), "A\\x4g\\q\\");
        assert_eq!(process_escapes("北京\\n深圳"), "北京\n深圳");
        assert_eq!(process_escapes(r"\xe4\xbd\xa0"), "你");
    }
}
