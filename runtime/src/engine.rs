//! The engine: the model as a pipeline of [`Stage`]s (`shared/DESIGN.md` §5).
//!
//! [`Engine::eval`] embeds the tokens (on the CPU, from the file's map), passes the hidden
//! states through every stage in layer order, and asks the stage holding the last layer for
//! logits of the rows that need them. Today the pipeline is one [`CpuStage`] holding all
//! layers; GPU stages take a prefix of the layers later without changing this loop.

use crate::cpu::forward;
use crate::error::RuntimeError;
use crate::kv_cache::{CacheType, KvTypes};
use crate::model::Model;
use crate::stage::{CpuStage, Stage};

/// Tokens run through the stages at once: a longer prompt is several batches of this size
/// (each still matrix × matrix), which bounds the activation memory.
pub const MAX_BATCH: usize = 512;

/// How to run a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Positions of the KV cache; 0 means the model's `context_length`.
    pub n_ctx: usize,
    /// Element types of the KV cache's keys and values (`CacheType::F16.into()`: both f16).
    pub cache_type: KvTypes,
    /// Threads for the CPU kernels; 0 means one per available core.
    pub threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            n_ctx: 0,
            cache_type: CacheType::F16.into(),
            threads: 0,
        }
    }
}

/// A model ready to evaluate tokens: its stages, their KV caches and the thread pool.
pub struct Engine<'m> {
    model: &'m Model,
    stages: Vec<Box<dyn Stage + 'm>>,
    n_ctx: usize,
    n_past: usize,
    cache_type: KvTypes,
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("n_ctx", &self.n_ctx)
            .field("n_past", &self.n_past)
            .field("cache_type", &self.cache_type)
            .field("threads", &self.pool.current_num_threads())
            .field("stages", &self.describe())
            .finish()
    }
}

/// Most threads a pool takes: more is a mistyped number, not a machine (each thread is an OS
/// thread with its own stack, started before any work).
pub const MAX_THREADS: usize = 512;

/// The CPU worker pool of `threads` threads (1..=[`MAX_THREADS`]); a clear error otherwise.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, RuntimeError> {
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(RuntimeError::new(format!(
            "{threads} threads: give 1 to {MAX_THREADS}"
        )));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("xverse-cpu-{i}"))
        .build()
        .map_err(|e| RuntimeError::new(format!("cannot start {threads} threads: {e}")))
}

impl<'m> Engine<'m> {
    /// An engine over `model`: one CPU stage with every layer.
    pub fn new(model: &'m Model, cfg: EngineConfig) -> Result<Self, RuntimeError> {
        let n_ctx = if cfg.n_ctx == 0 {
            model.hparams.context_length as usize
        } else {
            cfg.n_ctx
        };
        if n_ctx == 0 {
            return Err(RuntimeError::new(
                "context size is 0 and the model gives none (pass a context size)",
            ));
        }
        let threads = if cfg.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.threads
        };
        let pool = thread_pool(threads)?;
        let cpu = CpuStage::new(model, 0..model.n_layers(), n_ctx, cfg.cache_type)?;
        Ok(Engine {
            model,
            stages: vec![Box::new(cpu)],
            n_ctx,
            n_past: 0,
            cache_type: cfg.cache_type,
            pool,
        })
    }

    /// The model.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Positions of the KV cache.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Tokens in the KV cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// The KV cache's types.
    pub fn cache_type(&self) -> KvTypes {
        self.cache_type
    }

    /// Threads of the CPU kernels.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Bytes of KV cache allocated by all stages.
    pub fn cache_bytes(&self) -> usize {
        self.stages.iter().map(|s| s.cache_bytes()).sum()
    }

    /// The pipeline in words, e.g. `cpu: layers 0..32 + output`.
    pub fn describe(&self) -> String {
        self.stages
            .iter()
            .map(|s| {
                let r = s.layers();
                let head = if s.has_head() { " + output" } else { "" };
                format!("{}: layers {}..{}{head}", s.device(), r.start, r.end)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Runs `tokens` at positions `n_past..` (one batch, matrix × matrix; a prompt longer than
    /// [`MAX_BATCH`] in batches of that size), appends them to the cache and returns logits:
    /// for `all == false` only the last token's (vocab floats), else every token's
    /// (`tokens.len() × vocab`).
    ///
    /// Errors (never panics) when there are no tokens, when `n_past + tokens.len() > n_ctx`,
    /// or when a token id is not in the vocabulary; the cache is then unchanged.
    pub fn eval(&mut self, tokens: &[u32], all: bool) -> Result<Vec<f32>, RuntimeError> {
        let vocab = self.model.hparams.vocab as usize;
        if tokens.is_empty() {
            return Err(RuntimeError::new("no tokens to evaluate"));
        }
        if self.n_past + tokens.len() > self.n_ctx {
            return Err(RuntimeError::new(format!(
                "{} tokens after the {} in the cache exceed the context of {}",
                tokens.len(),
                self.n_past,
                self.n_ctx
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(RuntimeError::new(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let n_past = self.n_past;
        let model = self.model;
        let stages = &mut self.stages;
        let result = self.pool.install(|| {
            let mut logits = Vec::new();
            let mut pos = n_past;
            let n_batches = tokens.len().div_ceil(MAX_BATCH);
            for (b, batch) in tokens.chunks(MAX_BATCH).enumerate() {
                let last = b + 1 == n_batches;
                run_batch(model, stages, batch, pos, all, last, &mut logits)?;
                pos += batch.len();
            }
            Ok(logits)
        });
        match result {
            Ok(logits) => {
                self.n_past += tokens.len();
                Ok(logits)
            }
            Err(e) => {
                self.truncate(n_past);
                Err(e)
            }
        }
    }

    /// Benchmarks only: replaces the cache's contents by `n` positions of synthetic keys and
    /// values (deterministic pseudo-random values from `seed`, written straight into every
    /// stage's cache without running the model), as if `n` tokens had been evaluated. What
    /// comes after reads them as it would read a model's; the logits are meaningless.
    pub fn fill_cache_synthetic(&mut self, n: usize, seed: u64) -> Result<(), RuntimeError> {
        if n > self.n_ctx {
            return Err(RuntimeError::new(format!(
                "{n} positions exceed the context of {}",
                self.n_ctx
            )));
        }
        let stages = &mut self.stages;
        let result = self.pool.install(|| {
            stages
                .iter_mut()
                .try_for_each(|s| s.fill_cache_synthetic(n, seed))
        });
        match result {
            Ok(()) => {
                self.n_past = n;
                Ok(())
            }
            Err(e) => {
                self.n_past = 0;
                self.truncate(0);
                Err(e)
            }
        }
    }

    /// Forgets cached tokens from position `n` on (`n >= n_past` changes nothing).
    pub fn truncate(&mut self, n: usize) {
        if n < self.n_past {
            self.n_past = n;
        }
        for s in &mut self.stages {
            s.truncate(self.n_past);
        }
    }
}

/// One batch through the pipeline: embedding, every stage, then the head for the rows that
/// need logits (all of them with `all`, else the last token of the last batch).
fn run_batch(
    model: &Model,
    stages: &mut [Box<dyn Stage + '_>],
    tokens: &[u32],
    pos0: usize,
    all: bool,
    last: bool,
    logits: &mut Vec<f32>,
) -> Result<(), RuntimeError> {
    let dim = model.hparams.hidden as usize;
    let n = tokens.len();
    let mut hidden = vec![0f32; n * dim];
    forward::embed(&model.token_embd(), tokens, &mut hidden)?;
    for s in stages.iter_mut() {
        s.forward(&mut hidden, pos0, n)?;
    }
    let Some(head) = stages.last_mut() else {
        return Err(RuntimeError::new("the pipeline has no stage"));
    };
    if all {
        logits.extend(head.head(&hidden, n)?);
    } else if last {
        *logits = head.head(&hidden[(n - 1) * dim..], 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use xverse_models::{tiny_gguf_bytes, TinySpec};
    use xverse_quant::gguf::Gguf;
    use xverse_quant::kernels::packed;
    use xverse_quant::GgmlType;

    /// A thread count of 0 or above [`MAX_THREADS`] (a mistyped `-t`) is one clear error,
    /// before any thread starts; the counts in between make a pool of that size.
    #[test]
    fn thread_counts_outside_the_limit_are_refused() {
        for n in [0, MAX_THREADS + 1, 99_999_999_999] {
            let e = thread_pool(n).unwrap_err().to_string();
            assert!(e.contains(&n.to_string()) && e.contains("1 to 512"), "{e}");
        }
        assert_eq!(thread_pool(3).unwrap().current_num_threads(), 3);
    }

    fn model(spec: &TinySpec) -> Model {
        let g = Gguf::from_bytes(tiny_gguf_bytes(spec).unwrap(), "tiny.gguf").unwrap();
        Model::from_gguf(Arc::new(g)).unwrap()
    }

    fn cfg(n_ctx: usize, cache_type: impl Into<KvTypes>) -> EngineConfig {
        EngineConfig {
            n_ctx,
            cache_type: cache_type.into(),
            threads: 2,
        }
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Repacking the Q4_0, Q4_K or Q6_K matrices (eight-row groups plus a tail of rows: vocab
    /// 515) changes the logits only by float rounding, for a prompt and for decode; Q8_0
    /// matrices, whose rows go through a kernel in the packed order even where they are never
    /// repacked ([`packed::rows_for`]), give exactly the same logits repacked or not, and so
    /// does every other matrix (F16, BF16, Q5_K), copied as it is; the embedding table and the
    /// norms stay in the map. (Q4_K's and Q6_K's rows take that kernel only where they are
    /// repacked or will be: `repacked_in_the_background_gives_the_same_logits`.)
    #[test]
    fn repacked_weights_give_the_same_logits() {
        let specs = [
            // rows of 172 (ffn_down) are not Q4_0 blocks: written as F16, copied as it is
            (GgmlType::Q4_0, 64, 172),
            (GgmlType::Q4K, 256, 512),
            (GgmlType::Q6K, 256, 512),
            (GgmlType::Q8_0, 64, 172),
            (GgmlType::F16, 64, 172),
            (GgmlType::BF16, 64, 172),
            (GgmlType::Q5K, 256, 512),
        ];
        for (ty, hidden, ffn) in specs {
            let spec = TinySpec {
                ty,
                hidden,
                ffn,
                vocab: 515,
                kv_heads: 2,
                ..TinySpec::default()
            };
            let plain = model(&spec);
            let mut packed = model(&spec);
            let bytes = packed.repack();
            assert!(bytes > 0, "{ty}");
            assert_eq!(packed.packed_bytes(), bytes);
            assert_eq!(plain.packed_bytes(), 0);
            assert_eq!(packed.repack(), 0, "a second repack does nothing");
            let (l0, p0) = (packed.layer(0), plain.layer(0));
            let matrices = [
                (l0.attn_q, p0.attn_q),
                (l0.attn_k, p0.attn_k),
                (l0.attn_v, p0.attn_v),
                (l0.attn_output, p0.attn_output),
                (l0.ffn_gate, p0.ffn_gate),
                (l0.ffn_up, p0.ffn_up),
                (l0.ffn_down, p0.ffn_down),
                (packed.output(), plain.output()),
            ];
            // whether a weight's bytes are the file's own
            let in_file = |w: &crate::model::Weight<'_>| {
                let g = packed.gguf();
                let t = g.tensors().iter().find(|t| t.name == w.name).unwrap();
                std::ptr::eq(g.view(t).data, w.data)
            };
            for (w, p) in matrices {
                assert!(p.packed.is_none());
                if xverse_quant::kernels::packed::format(w.ty).is_some() {
                    assert!(w.packed.is_some(), "{ty}: {} ({}) repacked", w.name, w.ty);
                    assert!(in_file(&w), "{ty}: {}", w.name);
                } else {
                    assert!(w.packed.is_none(), "{ty}: {} ({})", w.name, w.ty);
                    assert!(!in_file(&w), "{ty}: {} copied", w.name);
                    assert_eq!(w.data, p.data, "{ty}: {} copied as it is", w.name);
                }
            }
            for w in [packed.token_embd(), l0.attn_norm] {
                assert!(w.packed.is_none());
                assert!(in_file(&w), "{ty}: {} stays", w.name);
            }
            let same = |t| packed::format(t).is_none() || packed::rows_for(t, false).is_some();
            let exact = same(ty) && same(packed.output().ty);
            // where the packed kernels run (AVX2), Q8_0 is exact; Q4_0, Q4_K and Q6_K not
            assert_eq!(
                packed::rows_for(GgmlType::Q8_0, false).is_some(),
                packed::worthwhile()
            );
            for t in [GgmlType::Q4_0, GgmlType::Q4K, GgmlType::Q6K] {
                assert!(packed::rows_for(t, false).is_none(), "{t}");
            }
            let toks = [5u32, 77, 300, 2, 511, 42, 9, 1, 3];
            let (mut a, mut b) = (
                Engine::new(&plain, cfg(32, CacheType::F32)).unwrap(),
                Engine::new(&packed, cfg(32, CacheType::F32)).unwrap(),
            );
            let (pa, pb) = (a.eval(&toks, true).unwrap(), b.eval(&toks, true).unwrap());
            let d = max_abs_diff(&pa, &pb);
            assert!(d < 1e-3, "{ty} prompt {d}");
            assert!(!exact || pa == pb, "{ty}: exact, prompt {d}");
            for t in [7u32, 8, 9] {
                let (da, db) = (a.eval(&[t], false).unwrap(), b.eval(&[t], false).unwrap());
                let d = max_abs_diff(&da, &db);
                assert!(d < 1e-3, "{ty} decode {d}");
                assert!(!exact || da == db, "{ty}: exact, decode {d}");
            }
        }
    }

    /// Where Q8_0, Q4_K and Q6_K rows go through the packed order ([`packed::exact_rows`]),
    /// the layers' matrices of such a model are repacked by the background thread, not before
    /// `repack_in_background` returns; the first tokens, computed while it may still be at
    /// work, give the logits of the model repacked before its first token bit for bit, and so
    /// do the tokens after it is done; the maps it made hold what the synchronous repack
    /// makes. Elsewhere they are repacked before it returns.
    #[test]
    fn repacked_in_the_background_gives_the_same_logits() {
        for (ty, hidden, ffn) in [
            (GgmlType::Q8_0, 64, 192),
            (GgmlType::Q4K, 256, 512),
            (GgmlType::Q6K, 256, 512),
        ] {
            background_repack_gives_the_same_logits(&TinySpec {
                ty,
                hidden,
                ffn,
                vocab: 515,
                kv_heads: 2,
                ..TinySpec::default()
            });
        }
    }

    /// The checks of [`repacked_in_the_background_gives_the_same_logits`] for one model.
    fn background_repack_gives_the_same_logits(spec: &TinySpec) {
        let ty = spec.ty;
        let mut sync = model(spec);
        let n = sync.repack();
        // a prompt, then three tokens of decode: the logits of each call
        let run = |m: &Model| -> Vec<Vec<f32>> {
            let mut e = Engine::new(m, cfg(32, CacheType::F32)).unwrap();
            std::iter::once(e.eval(&[5, 77, 300, 2, 511, 42, 9, 1, 3], true).unwrap())
                .chain([7u32, 8, 9].map(|t| e.eval(&[t], false).unwrap()))
                .collect()
        };
        let want = run(&sync);
        for round in 0..4 {
            let mut bg = model(spec);
            // the first round's tokens surely before any map is made; the others' wherever
            // the thread is
            bg.hold_copies(round == 0);
            assert_eq!(bg.repack_in_background(), n, "{ty}");
            if packed::exact_rows(ty).is_none() {
                assert_eq!(bg.packed_bytes(), n, "{ty}: repacked before it returns");
                continue;
            }
            if round == 0 {
                // only the output matrix is repacked before it returns
                let out = bg.output().packed.map_or(0, <[u8]>::len);
                assert_eq!(bg.packed_bytes(), out, "{ty}");
                let q = bg.layer(0).attn_q;
                assert!(q.packed.is_none() && q.repacked, "{ty}: to be repacked");
            }
            assert!(
                run(&bg) == want,
                "{ty} round {round}: logits while repacking"
            );
            bg.hold_copies(false);
            bg.wait_repacked();
            assert_eq!(bg.packed_bytes(), n, "{ty}");
            for l in 0..bg.n_layers() {
                let (x, y) = (bg.layer(l), sync.layer(l));
                for (w, v) in [
                    (x.attn_q, y.attn_q),
                    (x.ffn_up, y.ffn_up),
                    (x.ffn_down, y.ffn_down),
                ] {
                    let p = w.packed.expect("repacked");
                    assert_eq!(p, v.packed.unwrap(), "{}", w.name);
                    assert_eq!(
                        p.as_ptr() as usize % (2 << 20),
                        0,
                        "{}: own huge pages",
                        w.name
                    );
                }
            }
            assert_eq!(bg.output().packed, sync.output().packed, "{ty}");
            assert!(
                run(&bg) == want,
                "{ty} round {round}: logits after repacking"
            );
        }
    }

    #[test]
    fn batch_equals_token_by_token() {
        let m = model(&TinySpec {
            kv_heads: 2,
            ..TinySpec::default()
        });
        let v = m.hparams.vocab as usize;
        let toks = [5u32, 77, 300, 2, 511, 42, 9];
        let mut e = Engine::new(&m, cfg(16, CacheType::F32)).unwrap();
        let all = e.eval(&toks, true).unwrap();
        assert_eq!(all.len(), toks.len() * v);
        assert_eq!(e.n_past(), 7);
        let mut e2 = Engine::new(&m, cfg(16, CacheType::F32)).unwrap();
        for (i, &t) in toks.iter().enumerate() {
            let l = e2.eval(&[t], false).unwrap();
            assert_eq!(l.len(), v);
            let d = max_abs_diff(&l, &all[i * v..(i + 1) * v]);
            assert!(d < 1e-4, "position {i}: {d}");
        }
        // last-only logits equal the last row of all
        let mut e3 = Engine::new(&m, cfg(16, CacheType::F32)).unwrap();
        let last = e3.eval(&toks, false).unwrap();
        assert!(max_abs_diff(&last, &all[6 * v..]) < 1e-5);
        // truncate and re-evaluate: same logits
        e3.truncate(3);
        assert_eq!(e3.n_past(), 3);
        let again = e3.eval(&toks[3..], true).unwrap();
        assert!(max_abs_diff(&again, &all[3 * v..]) < 1e-5);
    }

    #[test]
    fn eval_errors_leave_the_cache_alone() {
        let m = model(&TinySpec::default());
        let mut e = Engine::new(&m, cfg(4, CacheType::F16)).unwrap();
        assert_eq!(e.n_ctx(), 4);
        e.eval(&[1, 2, 3], false).unwrap();
        let err = e.eval(&[4, 5], false).unwrap_err().to_string();
        assert!(err.contains("context of 4") && !err.contains('\n'), "{err}");
        assert_eq!(e.n_past(), 3);
        let err = e.eval(&[512], false).unwrap_err().to_string();
        assert!(err.contains("512") && err.contains("vocabulary"), "{err}");
        assert!(e.eval(&[], false).is_err());
        assert_eq!(e.n_past(), 3);
        e.eval(&[4], false).unwrap();
        assert_eq!(e.n_past(), 4);
        assert!(e.eval(&[1], false).is_err());
        // n_ctx 0: the model's context length
        let e = Engine::new(&m, cfg(0, CacheType::F16)).unwrap();
        assert_eq!(e.n_ctx(), 2048);
        assert!(e.describe().contains("cpu: layers 0..2 + output"));
    }

    #[test]
    fn cache_types_give_close_logits() {
        // head size 32 so that q8_0 rows are whole blocks
        let m = model(&TinySpec {
            hidden: 128,
            heads: 4,
            kv_heads: 2,
            ..TinySpec::default()
        });
        let toks: Vec<u32> = (0..12).map(|i| (i * 37 + 11) % 512).collect();
        let run = |ty: KvTypes| {
            Engine::new(&m, cfg(32, ty))
                .unwrap()
                .eval(&toks, true)
                .unwrap()
        };
        let f32l = run(CacheType::F32.into());
        let scale = f32l.iter().fold(0f32, |a, x| a.max(x.abs()));
        let mut errs = Vec::new();
        for (ty, tol) in [
            (CacheType::F16.into(), 1e-2),
            (CacheType::Q8_0.into(), 5e-2),
            (CacheType::Q4_0.into(), 0.25),
            (
                KvTypes {
                    k: CacheType::Q8_0,
                    v: CacheType::Q4_0,
                },
                0.25,
            ),
        ] {
            let d = max_abs_diff(&run(ty), &f32l) / scale;
            assert!(d < tol, "{ty}: {d}");
            errs.push(d);
        }
        // the coarser the cache, the further from f32 (so each type is what ran)
        assert!(errs[0] < errs[1] && errs[1] < errs[2], "{errs:?}");
        // q8_0 and q4_0 need head size a multiple of 32
        let small = model(&TinySpec::default());
        for ty in [CacheType::Q8_0, CacheType::Q4_0] {
            let err = Engine::new(&small, cfg(8, ty)).unwrap_err();
            assert!(err.to_string().contains(ty.name()), "{err}");
        }
    }
}
