//! A generation session: the engine (and its KV cache), the tokenizer and the sampler.
//!
//! [`Session::complete`] is `xverse-run -p`: the prompt is evaluated as one batch, then tokens
//! are sampled one at a time and streamed to a [`Write`] as text (never half a UTF-8
//! character), until eos, `-n` tokens or a full context. [`Session::generate`] is the loop
//! itself, which the chat ([`crate::chat`]) drives turn after turn over the same cache.
//!
//! [`Session::history`] mirrors the KV cache: token `i` of it sits at position `i`.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::RuntimeError;
use crate::sampler::Sampler;
use crate::tokenizer::Tokenizer;

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The model sampled eos.
    Eos,
    /// The token limit (`-n`) was reached.
    Limit,
    /// The context is full and nothing could be dropped.
    ContextFull,
    /// The output was closed (a broken pipe).
    OutputClosed,
}

/// What [`Session::generate`] produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The generated tokens, eos not included.
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop: Stop,
    /// The last sampled token that is not in the KV cache yet (the eos or the token after
    /// which the limit was reached); `None` when the loop ended before sampling.
    pub unevaluated: Option<u32>,
}

/// Accumulated timings of a session.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// Tokens evaluated as prompts (chat turns and re-evaluated history included).
    pub prompt_tokens: usize,
    /// Time spent evaluating them.
    pub prompt_time: Duration,
    /// Tokens generated.
    pub gen_tokens: usize,
    /// Time of the generation loops (sampling, evaluation, output).
    pub gen_time: Duration,
}

fn rate(n: usize, t: Duration) -> f64 {
    let s = t.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

impl Timings {
    /// The two lines `xverse-run` prints on stderr at the end.
    pub fn report(&self) -> String {
        format!(
            "prompt: {} tokens in {:.1} ms ({:.2} tokens/s)\ngeneration: {} tokens in {:.1} ms ({:.2} tokens/s)",
            self.prompt_tokens,
            self.prompt_time.as_secs_f64() * 1e3,
            rate(self.prompt_tokens, self.prompt_time),
            self.gen_tokens,
            self.gen_time.as_secs_f64() * 1e3,
            rate(self.gen_tokens, self.gen_time),
        )
    }
}

/// The engine, tokenizer and sampler of one conversation or completion.
pub struct Session<'a> {
    engine: Engine<'a>,
    tok: &'a Tokenizer,
    sampler: Sampler,
    history: Vec<u32>,
    /// Generate past eos (benchmarks and tests).
    pub ignore_eos: bool,
    /// Timings so far.
    pub timings: Timings,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("engine", &self.engine)
            .field("n_past", &self.history.len())
            .field("timings", &self.timings)
            .finish()
    }
}

/// A write error that ends the output: a closed pipe is a normal end, anything else an error.
fn write_out(out: &mut dyn Write, text: &str) -> Result<bool, RuntimeError> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(RuntimeError::new(format!("cannot write the output: {e}"))),
    }
}

impl<'a> Session<'a> {
    /// A session over an engine whose cache is empty or is rewound to empty.
    pub fn new(mut engine: Engine<'a>, tok: &'a Tokenizer, sampler: Sampler) -> Session<'a> {
        engine.truncate(0);
        Session {
            engine,
            tok,
            sampler,
            history: Vec::new(),
            ignore_eos: false,
            timings: Timings::default(),
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &'a Tokenizer {
        self.tok
    }

    /// The engine.
    pub fn engine(&self) -> &Engine<'a> {
        &self.engine
    }

    /// Positions of the context.
    pub fn n_ctx(&self) -> usize {
        self.engine.n_ctx()
    }

    /// Tokens in the KV cache.
    pub fn n_past(&self) -> usize {
        self.history.len()
    }

    /// The tokens in the KV cache, in position order.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// The token ids of a completion prompt: BOS when the file says so, then the text; an
    /// empty result becomes `[bos]` (something must be evaluated).
    pub fn prompt_tokens(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        let mut ids = self.tok.encode(text)?;
        if ids.is_empty() {
            ids.push(self.tok.bos());
        }
        Ok(ids)
    }

    /// Evaluates `tokens` as one batch after the cache (counted as prompt time) and returns the
    /// logits of the last one.
    pub fn eval_prompt(&mut self, tokens: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let t = Instant::now();
        let logits = self.engine.eval(tokens, false)?;
        self.history.extend_from_slice(tokens);
        self.timings.prompt_tokens += tokens.len();
        self.timings.prompt_time += t.elapsed();
        Ok(logits)
    }

    /// Forgets the cache from position `n` on.
    pub fn rewind(&mut self, n: usize) {
        self.engine.truncate(n);
        self.history.truncate(n);
    }

    /// Samples and streams tokens after `logits` (those of the last token in the cache).
    ///
    /// Stops after eos (unless [`Session::ignore_eos`]), after `limit` tokens (`None`: no
    /// limit), or when the context is full: then `on_full` is called and may make room
    /// (rewind and re-evaluate a shorter history) and return `true` to go on.
    pub fn generate(
        &mut self,
        mut logits: Vec<f32>,
        limit: Option<usize>,
        out: &mut dyn Write,
        on_full: &mut dyn FnMut(&mut Session<'a>) -> Result<bool, RuntimeError>,
    ) -> Result<Generated, RuntimeError> {
        let start = Instant::now();
        let mut dec = self.tok.stream();
        let mut tokens = Vec::new();
        let mut unevaluated = None;
        let mut paused = Duration::ZERO;
        let eos = self.tok.eos();
        let stop = loop {
            if limit.is_some_and(|n| tokens.len() >= n) {
                break Stop::Limit;
            }
            let id = self.sampler.sample(&mut logits, &self.history);
            unevaluated = Some(id);
            if id == eos && !self.ignore_eos {
                break Stop::Eos;
            }
            tokens.push(id);
            self.timings.gen_tokens += 1;
            if let Some(text) = dec.push(id) {
                if !write_out(out, &text)? {
                    break Stop::OutputClosed;
                }
            }
            if limit.is_some_and(|n| tokens.len() >= n) {
                break Stop::Limit;
            }
            if self.history.len() >= self.n_ctx() {
                // a re-evaluation counts as prompt time, not generation time
                let pause = Instant::now();
                let room = on_full(self)?;
                paused += pause.elapsed();
                if !room || self.history.len() >= self.n_ctx() {
                    break Stop::ContextFull;
                }
            }
            logits = self.engine.eval(&[id], false)?;
            self.history.push(id);
            unevaluated = None;
        };
        if let Some(text) = dec.flush() {
            // a closed output at the very end changes nothing
            write_out(out, &text)?;
        }
        self.timings.gen_time += start.elapsed().saturating_sub(paused);
        Ok(Generated {
            tokens,
            stop,
            unevaluated,
        })
    }

    /// A completion: evaluates `prompt` (one batch) on an empty cache and generates at most
    /// `limit` tokens (`None`: until eos or a full context), streaming them to `out`.
    pub fn complete(
        &mut self,
        prompt: &[u32],
        limit: Option<usize>,
        out: &mut dyn Write,
    ) -> Result<Generated, RuntimeError> {
        let n_ctx = self.n_ctx();
        if prompt.is_empty() {
            return Err(RuntimeError::new("the prompt has no tokens"));
        }
        if prompt.len() > n_ctx {
            return Err(RuntimeError::new(format!(
                "the prompt is {} tokens, longer than the context of {n_ctx} (raise -c)",
                prompt.len()
            )));
        }
        self.rewind(0);
        let logits = self.eval_prompt(prompt)?;
        self.generate(logits, limit, out, &mut |_| Ok(false))
    }
}
