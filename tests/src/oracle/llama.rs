//! llama.cpp (b2757) through llama.h: load a GGUF model, make a context, decode tokens, read
//! logits. CPU only, one thread (ggml's worker threads busy-wait, which starves a small machine).
//! [`quantize_model`] runs llama.cpp's own quantizer (`llama_model_quantize`) on a GGUF file.
//!
//! llama.cpp's log goes through a callback that forwards errors and warnings to `eprint!` (so the
//! test harness captures them) and everything else only when `XVERSE_ORACLE_LOG` is set.

use super::{err, init, Result};
use ggml_sys_bleedingedge as sys;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Once;

/// The log callback handed to `llama_log_set`.
unsafe extern "C" fn log_callback(
    level: sys::ggml_log_level,
    text: *const c_char,
    _user: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    let verbose = std::env::var_os("XVERSE_ORACLE_LOG").is_some();
    if level > sys::ggml_log_level_GGML_LOG_LEVEL_WARN && !verbose {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated message that lives for the duration of the call.
    let msg = unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned();
    // Never unwind into C: a failing eprint! (closed stderr) is ignored.
    let _ = std::panic::catch_unwind(move || eprint!("[llama.cpp] {msg}"));
}

/// `llama_backend_init` and the log callback, once per process.
fn backend_init() {
    static ONCE: Once = Once::new();
    init();
    ONCE.call_once(|| {
        // SAFETY: llama_backend_init only initialises ggml's timer and fp16 tables (idempotent);
        // llama_log_set stores a static function pointer and a null user pointer that the
        // callback never dereferences.
        unsafe {
            sys::llama_backend_init();
            sys::llama_log_set(Some(log_callback), std::ptr::null_mut());
        }
    });
}

/// A model loaded by llama.cpp (`llama_load_model_from_file`), CPU only, memory-mapped.
pub struct Model {
    ptr: NonNull<sys::llama_model>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("n_vocab", &self.n_vocab())
            .field("n_embd", &self.n_embd())
            .field("n_layer", &self.n_layer())
            .finish()
    }
}

impl Model {
    /// Loads `path` with llama.cpp's default model parameters, no GPU layers.
    pub fn load(path: &Path) -> Result<Model> {
        backend_init();
        let Some(s) = path.to_str() else {
            return err(format!("path {} is not UTF-8", path.display()));
        };
        let Ok(cpath) = CString::new(s) else {
            return err(format!("path {s} contains a NUL"));
        };
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { sys::llama_model_default_params() };
        params.n_gpu_layers = 0;
        params.use_mlock = false;
        // SAFETY: `cpath` is NUL-terminated; `params` is a valid struct (defaults with plain
        // fields changed; its pointers are the defaults' nulls). Returns null on failure.
        let p = unsafe { sys::llama_load_model_from_file(cpath.as_ptr(), params) };
        match NonNull::new(p) {
            Some(ptr) => Ok(Model { ptr }),
            None => err(format!("llama.cpp could not load {s} (see its log above)")),
        }
    }

    /// Size of the vocabulary (rows of the output matrix).
    pub fn n_vocab(&self) -> usize {
        // SAFETY: `self.ptr` is a live model until drop.
        let n = unsafe { sys::llama_n_vocab(self.ptr.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Embedding width.
    pub fn n_embd(&self) -> usize {
        // SAFETY: `self.ptr` is a live model until drop.
        let n = unsafe { sys::llama_n_embd(self.ptr.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Number of layers.
    pub fn n_layer(&self) -> usize {
        // SAFETY: `self.ptr` is a live model until drop.
        let n = unsafe { sys::llama_n_layer(self.ptr.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Training context length (`<arch>.context_length`).
    pub fn n_ctx_train(&self) -> usize {
        // SAFETY: `self.ptr` is a live model until drop.
        let n = unsafe { sys::llama_n_ctx_train(self.ptr.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// A metadata value as llama.cpp prints it (`llama_model_meta_val_str`).
    pub fn meta(&self, key: &str) -> Option<String> {
        let ck = CString::new(key).ok()?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: live model; `ck` NUL-terminated; llama.cpp writes at most buf.len() bytes
        // (snprintf semantics, NUL-terminated) into `buf`.
        let n = unsafe {
            sys::llama_model_meta_val_str(
                self.ptr.as_ptr(),
                ck.as_ptr(),
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
            )
        };
        if n < 0 {
            return None;
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Some(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    /// The text of token `id` in llama.cpp's vocabulary.
    pub fn token_text(&self, id: i32) -> Option<String> {
        if id < 0 || id as usize >= self.n_vocab() {
            return None;
        }
        // SAFETY: live model and an id inside the vocabulary (checked); the returned string is
        // owned by the model and copied at once.
        let p = unsafe { sys::llama_token_get_text(self.ptr.as_ptr(), id) };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null NUL-terminated string owned by the live model.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// llama.cpp's tokenizer (`llama_tokenize`) on `text`: BOS (and EOS) as the file says when
    /// `add_special`; control tokens written in the text are matched when `parse_special` (as
    /// llama.cpp's `main` tokenizes a prompt). Aborts (a C++ exception) only when an SPM
    /// vocabulary lacks the byte token a character falls back to.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<i32>> {
        let Ok(len) = i32::try_from(text.len()) else {
            return err(format!("text of {} bytes is too long", text.len()));
        };
        // at most one token per byte, plus BOS, EOS and the space prefix
        let mut cap = text.len() + 8;
        loop {
            let Ok(cap_i32) = i32::try_from(cap) else {
                return err("too many tokens");
            };
            let mut buf = vec![0i32; cap];
            // SAFETY: live model; `text` points to `len` readable bytes (no NUL needed: the length
            // is passed); `buf` has room for `cap` tokens and llama.cpp writes at most that many.
            let n = unsafe {
                sys::llama_tokenize(
                    self.ptr.as_ptr(),
                    text.as_ptr().cast::<c_char>(),
                    len,
                    buf.as_mut_ptr(),
                    cap_i32,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            // too small: llama.cpp returns minus the number of tokens needed
            cap = n.unsigned_abs() as usize;
        }
    }

    /// llama.cpp's detokenizer for one token (`llama_token_to_piece`): the bytes it prints;
    /// `special` also prints control tokens.
    pub fn token_to_piece(&self, id: i32, special: bool) -> Result<Vec<u8>> {
        if id < 0 || id as usize >= self.n_vocab() {
            return err(format!(
                "token {id} outside the vocabulary of {}",
                self.n_vocab()
            ));
        }
        let mut buf = vec![0u8; 64];
        loop {
            let Ok(cap) = i32::try_from(buf.len()) else {
                return err("piece too long");
            };
            // SAFETY: live model, an id inside the vocabulary (checked); llama.cpp writes at most
            // `cap` bytes into `buf` and returns their count, or minus the size it needs.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.ptr.as_ptr(),
                    id,
                    buf.as_mut_ptr().cast::<c_char>(),
                    cap,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            buf = vec![0u8; n.unsigned_abs() as usize];
        }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the model was returned by llama_load_model_from_file and is freed once; every
        // Context borrows the Model, so none outlives it.
        unsafe { sys::llama_free_model(self.ptr.as_ptr()) };
    }
}

/// An inference context over a [`Model`]: one thread, a small KV cache, logits for every token.
pub struct Context<'m> {
    ptr: NonNull<sys::llama_context>,
    model: &'m Model,
    n_ctx: usize,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("n_ctx", &self.n_ctx)
            .finish()
    }
}

impl<'m> Context<'m> {
    /// A context of `n_ctx` positions (also the batch size), 1 thread, seed 1, llama.cpp's
    /// default F16 KV cache.
    pub fn new(model: &'m Model, n_ctx: u32) -> Result<Context<'m>> {
        Context::create(model, n_ctx, None, 1)
    }

    /// As [`Context::new`], with `n_threads` threads for both single tokens and batches
    /// (ggml's workers busy-wait between graph nodes: fine for a benchmark, not for a test
    /// sharing a small machine).
    pub fn with_threads(model: &'m Model, n_ctx: u32, n_threads: u32) -> Result<Context<'m>> {
        Context::create(model, n_ctx, None, n_threads)
    }

    /// As [`Context::new`], with the KV cache in F32 (`type_k = type_v = GGML_TYPE_F32`), so that
    /// the cache adds no rounding of its own: the logits then show the precision of the
    /// model file alone.
    pub fn with_f32_kv_cache(model: &'m Model, n_ctx: u32) -> Result<Context<'m>> {
        let f32 = sys::ggml_type_GGML_TYPE_F32;
        Context::create(model, n_ctx, Some((f32, f32)), 1)
    }

    /// As [`Context::new`], with keys cached as `type_k` and values as `type_v` (ggml type
    /// ids; b2757 without flash attention takes quantized keys, e.g. Q8_0 or Q4_0, but only
    /// F16/F32 values).
    pub fn with_kv_types(
        model: &'m Model,
        n_ctx: u32,
        type_k: sys::ggml_type,
        type_v: sys::ggml_type,
    ) -> Result<Context<'m>> {
        Context::create(model, n_ctx, Some((type_k, type_v)), 1)
    }

    fn create(
        model: &'m Model,
        n_ctx: u32,
        kv_types: Option<(sys::ggml_type, sys::ggml_type)>,
        n_threads: u32,
    ) -> Result<Context<'m>> {
        backend_init();
        if n_ctx == 0 {
            return err("n_ctx must be positive");
        }
        if n_threads == 0 || n_threads > i32::MAX as u32 {
            return err("n_threads must be positive");
        }
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { sys::llama_context_default_params() };
        params.seed = 1;
        params.n_ctx = n_ctx;
        params.n_batch = n_ctx;
        params.n_ubatch = n_ctx;
        params.n_seq_max = 1;
        params.n_threads = n_threads;
        params.n_threads_batch = n_threads;
        params.logits_all = false;
        params.embeddings = false;
        if let Some((k, v)) = kv_types {
            params.type_k = k;
            params.type_v = v;
        }
        // SAFETY: `model` is live for 'm (borrowed); `params` is the defaults with plain fields
        // changed (callbacks and their user data stay null). Returns null on failure.
        let p = unsafe { sys::llama_new_context_with_model(model.ptr.as_ptr(), params) };
        match NonNull::new(p) {
            Some(ptr) => {
                // SAFETY: live context.
                let n = unsafe { sys::llama_n_ctx(ptr.as_ptr()) };
                Ok(Context {
                    ptr,
                    model,
                    n_ctx: n as usize,
                })
            }
            None => err("llama_new_context_with_model failed (see its log above)"),
        }
    }

    /// The context size llama.cpp actually allocated.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Empties the KV cache (the next decode starts at position 0 again).
    pub fn clear(&mut self) {
        // SAFETY: live context.
        unsafe { sys::llama_kv_cache_clear(self.ptr.as_ptr()) };
    }

    /// Decodes `tokens` at positions `start_pos..` in sequence 0 and returns the logits of every
    /// token (`tokens.len()` vectors of `n_vocab` floats).
    pub fn decode(&mut self, tokens: &[i32], start_pos: usize) -> Result<Vec<Vec<f32>>> {
        self.decode_with(tokens, start_pos, true)
    }

    /// As [`Context::decode`], with logits computed and returned for the last token only (as
    /// llama-bench and a generating application ask for them).
    pub fn decode_last(&mut self, tokens: &[i32], start_pos: usize) -> Result<Vec<f32>> {
        let mut out = self.decode_with(tokens, start_pos, false)?;
        match out.pop() {
            Some(l) => Ok(l),
            None => err("no logits"),
        }
    }

    fn decode_with(
        &mut self,
        tokens: &[i32],
        start_pos: usize,
        all_logits: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let n_vocab = self.model.n_vocab();
        if tokens.is_empty() {
            return err("no tokens to decode");
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t < 0 || t as usize >= n_vocab) {
            return err(format!("token {bad} outside the vocabulary of {n_vocab}"));
        }
        let end = start_pos.checked_add(tokens.len());
        if end.is_none_or(|e| e > self.n_ctx) {
            return err(format!(
                "positions {start_pos}..+{} exceed the context of {}",
                tokens.len(),
                self.n_ctx
            ));
        }
        let n = tokens.len() as i32;
        // SAFETY: allocates arrays for n tokens with one sequence id each; freed below.
        let batch = unsafe { sys::llama_batch_init(n, 0, 1) };
        // SAFETY: llama_batch_init allocated token, pos, n_seq_id, seq_id[i] (1 entry each) and
        // logits for n tokens; every index written is < n.
        unsafe {
            for (i, &t) in tokens.iter().enumerate() {
                *batch.token.add(i) = t;
                *batch.pos.add(i) = (start_pos + i) as i32;
                *batch.n_seq_id.add(i) = 1;
                *(*batch.seq_id.add(i)) = 0;
                *batch.logits.add(i) = i8::from(all_logits || i + 1 == tokens.len());
            }
        }
        let mut batch = batch;
        batch.n_tokens = n;
        // SAFETY: live context; the batch is fully initialised for n tokens whose ids are in the
        // vocabulary and whose positions fit the context (checked); n <= n_batch (= n_ctx).
        let rc = unsafe { sys::llama_decode(self.ptr.as_ptr(), batch) };
        let result = if rc != 0 {
            err(format!("llama_decode returned {rc}"))
        } else {
            let first = if all_logits { 0 } else { n - 1 };
            let mut out = Vec::with_capacity(tokens.len());
            for i in first..n {
                // SAFETY: live context after a successful decode with logits requested for
                // token i; the pointer covers n_vocab floats owned by the context, copied at once.
                let p = unsafe { sys::llama_get_logits_ith(self.ptr.as_ptr(), i) };
                if p.is_null() {
                    out.clear();
                    break;
                }
                // SAFETY: see above.
                out.push(unsafe { std::slice::from_raw_parts(p, n_vocab) }.to_vec());
            }
            if out.len() == (n - first) as usize {
                Ok(out)
            } else {
                err("llama_get_logits_ith returned null")
            }
        };
        // SAFETY: the batch came from llama_batch_init and is freed once.
        unsafe { sys::llama_batch_free(batch) };
        result
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: the context came from llama_new_context_with_model and is freed once, before
        // the model it borrows.
        unsafe { sys::llama_free(self.ptr.as_ptr()) };
    }
}

/// The `llama_ftype` ids [`quantize_model`] accepts: F32, F16 and the mixes of the legacy
/// 32-block types and the K-quants (the IQ mixes need an importance matrix).
pub const QUANTIZE_FTYPES: [u32; 17] =
    [0, 1, 2, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 21];

/// llama.cpp's own quantizer (`llama_model_quantize`, what `llama-quantize` runs): rewrites the
/// GGUF file `input` (F32 or F16 weights) as `output` in the mix `ftype` (a `llama_ftype` id from
/// [`QUANTIZE_FTYPES`]), with llama.cpp's per-tensor rules, no importance matrix and one thread.
///
/// b2757 `GGML_ASSERT`s (aborts) when a quantized tensor's rows are not whole blocks, and its
/// fallback for K-quants is a 32-block type, so a file with a 2-D weight whose row length is not
/// a multiple of 32 is refused here for every quantized `ftype`.
pub fn quantize_model(input: &Path, output: &Path, ftype: u32) -> Result<()> {
    backend_init();
    if !QUANTIZE_FTYPES.contains(&ftype) {
        return err(format!(
            "llama_ftype {ftype} is not one quantize_model runs"
        ));
    }
    let file = super::gguf::read_file(input, false)?;
    for t in &file.tensors {
        if t.ty != sys::ggml_type_GGML_TYPE_F32 && t.ty != sys::ggml_type_GGML_TYPE_F16 {
            return err(format!(
                "{}: tensor {} has ggml type {}: only F32 and F16 inputs are quantized here",
                input.display(),
                t.name,
                t.ty
            ));
        }
        // the tensors llama.cpp quantizes: 2-D or more, named *weight, not a norm
        let quantized = t.ne[1..].iter().any(|&n| n > 1)
            && t.name.ends_with("weight")
            && !t.name.contains("_norm.weight");
        if ftype > 1 && quantized && t.ne[0] % 32 != 0 {
            return err(format!(
                "{}: tensor {} has rows of {}, not whole 32-element blocks: llama.cpp b2757 would abort",
                input.display(),
                t.name,
                t.ne[0]
            ));
        }
    }
    let cin = path_c_string(input)?;
    let cout = path_c_string(output)?;
    // SAFETY: returns a plain struct of defaults (null imatrix and kv_overrides).
    let mut params = unsafe { sys::llama_model_quantize_default_params() };
    params.nthread = 1;
    params.ftype = ftype;
    // SAFETY: both paths are NUL-terminated; `params` is a valid struct that outlives the call
    // (its pointers are the defaults' nulls). llama.cpp catches its own exceptions and returns
    // non-zero; the inputs that would make ggml abort are refused above.
    let rc = unsafe { sys::llama_model_quantize(cin.as_ptr(), cout.as_ptr(), &params) };
    if rc != 0 {
        return err(format!(
            "llama_model_quantize({} -> {}, ftype {ftype}) returned {rc} (see its log above)",
            input.display(),
            output.display()
        ));
    }
    Ok(())
}

fn path_c_string(path: &Path) -> Result<CString> {
    let Some(s) = path.to_str() else {
        return err(format!("path {} is not UTF-8", path.display()));
    };
    CString::new(s).or_else(|_| err(format!("path {s} contains a NUL")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_broken_model_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.gguf");
        assert!(Model::load(&missing).is_err());
        let broken = dir.path().join("broken.gguf");
        std::fs::write(&broken, b"GGUF\x03\0\0\0").unwrap();
        assert!(Model::load(&broken).is_err());
    }

    #[test]
    fn quantize_model_refuses_what_would_abort() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("tiny.gguf");
        // the default tiny shape has ffn rows of 172: not whole 32-element blocks
        xverse_models::write_tiny_gguf(&input, &xverse_models::TinySpec::default()).unwrap();
        let out = dir.path().join("out.gguf");
        let e = quantize_model(&input, &out, 2).unwrap_err();
        assert!(e.0.contains("rows of 172"), "{e}");
        // an IQ mix (needs an importance matrix) and an unknown id
        assert!(quantize_model(&input, &out, 19).is_err());
        assert!(quantize_model(&input, &out, 1000).is_err());
        assert!(!out.exists());
        // F16 needs no blocks: llama.cpp converts the file
        quantize_model(&input, &out, 1).unwrap();
        assert!(Model::load(&out).is_ok());
    }
}
