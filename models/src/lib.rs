//! xverse-models: the published XVERSE shapes ([`presets`]), a generator of small
//! random-weight XVERSE models as GGUF files ([`write_tiny_gguf`]) for demos, tests and fuzzing,
//! and a generator of random-weight XVERSE checkpoints in Hugging Face layout for any preset or
//! shape ([`hf::write_hf_checkpoint`]: bf16 safetensors shards with an index, config.json and an
//! XVERSE-style tokenizer.json) for the converter's tests and benchmarks.
//!
//! A tiny model is a real XVERSE GGUF: architecture `xverse`, llama.cpp's tensor names and ggml
//! dimension order, a llama-style (SentencePiece) vocabulary with scores and token types. llama.cpp
//! b2757 loads it. Weights are random normal from a seeded generator ([`rng::Rng`]), scaled like the
//! developer fixtures in `shared/fixtures/`: embedding std 0.5, q/k std 1.5/√hidden (attention far
//! from uniform), the others 1/√fan_in, o and down also divided by √(2·layers), norms 1 + 0.1·N(0,1).
//! The same spec (seed included) always gives the same bytes.

use std::error::Error;
use std::fmt;
use std::path::Path;

use xverse_quant::blocks;
use xverse_quant::gguf::{GgufWriter, TensorSpec, Value, ValueType};
use xverse_quant::GgmlType;

pub mod hf;
pub mod presets;
pub mod rng;
pub mod seeds;
pub mod vocab;

pub use hf::{create_hf_checkpoint, write_hf_checkpoint, HfDtype, HfError, HfSpec, HfSummary};
use rng::Rng;

/// `xverse.attention.layer_norm_rms_epsilon` of every XVERSE model.
pub const RMS_NORM_EPS: f32 = 1e-6;
/// `xverse.rope.freq_base` of every XVERSE model.
pub const ROPE_FREQ_BASE: f32 = 10000.0;
/// `general.name` of a tiny model.
pub const TINY_NAME: &str = "xverse-tiny";

/// Shape, tensor type and seed of a tiny random-weight XVERSE model.
///
/// The default is the shape of the developer fixtures (`shared/fixtures/tiny-xverse-*`): hidden
/// 64, 2 layers, 4 heads (no GQA), ffn 172, vocab 512, context 2048, F32, seed 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TinySpec {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub context: usize,
    /// Type of the 2-D weights; a tensor whose row length is not a multiple of this type's
    /// block size is written as F16 instead. Norms are always F32. (BF16 files need a llama.cpp
    /// newer than b2757, which has no BF16 type.)
    pub ty: GgmlType,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 4,
            ffn: 172,
            vocab: 512,
            context: 2048,
            ty: GgmlType::F32,
            seed: 1,
        }
    }
}

/// A spec that cannot make a model llama.cpp loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TinyError {
    /// A dimension that must be positive is zero.
    Zero(&'static str),
    /// `hidden` is not a multiple of `heads`.
    HiddenNotDivisible { hidden: usize, heads: usize },
    /// `hidden / heads` is odd: rotary embedding rotates pairs.
    OddHeadDim { head_dim: usize },
    /// `heads` is not a multiple of `kv_heads`.
    HeadsNotDivisible { heads: usize, kv_heads: usize },
    /// Fewer tokens than the 4 special and 256 byte tokens.
    VocabTooSmall { vocab: usize },
    /// A dimension does not fit the u32 that GGUF metadata stores (or the sizes overflow).
    TooLarge(&'static str),
    /// A type that cannot hold weights here.
    UnsupportedType { ty: GgmlType, why: &'static str },
}

impl fmt::Display for TinyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TinyError::Zero(what) => write!(f, "invalid tiny model: {what} must be at least 1"),
            TinyError::HiddenNotDivisible { hidden, heads } => write!(
                f,
                "invalid tiny model: hidden {hidden} is not divisible by heads {heads}"
            ),
            TinyError::OddHeadDim { head_dim } => write!(
                f,
                "invalid tiny model: head dimension hidden/heads = {head_dim} must be even (rotary embedding rotates pairs)"
            ),
            TinyError::HeadsNotDivisible { heads, kv_heads } => write!(
                f,
                "invalid tiny model: heads {heads} is not divisible by kv heads {kv_heads}"
            ),
            TinyError::VocabTooSmall { vocab } => write!(
                f,
                "invalid tiny model: vocab {vocab} is smaller than {} (4 special + 256 byte tokens)",
                vocab::MIN_VOCAB
            ),
            TinyError::TooLarge(what) => {
                write!(f, "invalid tiny model: {what} is too large")
            }
            TinyError::UnsupportedType { ty, why } => {
                write!(f, "invalid tiny model: type {ty} cannot be used: {why}")
            }
        }
    }
}

impl Error for TinyError {}

/// What a tensor holds, which decides its initialisation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Norm,
    Weight { std: f64 },
}

/// One tensor of the plan: name, type after fallback, ggml dims, initialisation.
#[derive(Clone, Debug, PartialEq)]
struct Planned {
    spec: TensorSpec,
    kind: Kind,
}

impl TinySpec {
    /// The shape of a preset (at full size!) with type F32 and seed 1.
    pub fn from_preset(p: &presets::Preset) -> TinySpec {
        TinySpec {
            hidden: p.hidden,
            layers: p.layers,
            heads: p.heads,
            kv_heads: p.kv_heads(),
            ffn: p.ffn,
            vocab: p.vocab,
            context: p.context,
            ..TinySpec::default()
        }
    }

    /// Checks that llama.cpp can load a model of this spec.
    pub fn validate(&self) -> Result<(), TinyError> {
        for (v, what) in [
            (self.hidden, "hidden"),
            (self.layers, "layers"),
            (self.heads, "heads"),
            (self.kv_heads, "kv_heads"),
            (self.ffn, "ffn"),
            (self.context, "context"),
        ] {
            if v == 0 {
                return Err(TinyError::Zero(what));
            }
            if u32::try_from(v).is_err() {
                return Err(TinyError::TooLarge(what));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(TinyError::HiddenNotDivisible {
                hidden: self.hidden,
                heads: self.heads,
            });
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(TinyError::OddHeadDim {
                head_dim: self.head_dim(),
            });
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(TinyError::HeadsNotDivisible {
                heads: self.heads,
                kv_heads: self.kv_heads,
            });
        }
        if self.vocab < vocab::MIN_VOCAB {
            return Err(TinyError::VocabTooSmall { vocab: self.vocab });
        }
        if i32::try_from(self.vocab).is_err() {
            return Err(TinyError::TooLarge("vocab"));
        }
        match self.ty {
            GgmlType::Q8_1 | GgmlType::Q8K => {
                return Err(TinyError::UnsupportedType {
                    ty: self.ty,
                    why: "it is an activation format, not a weight type",
                })
            }
            ty if !blocks::can_quantize(ty) => {
                return Err(TinyError::UnsupportedType {
                    ty,
                    why: "there is no quantizer for it",
                })
            }
            _ => {}
        }
        // the whole file (at most 4 bytes per parameter) must fit in u64 and usize
        let limit = (u64::MAX as u128 / 8).min(usize::MAX as u128 / 8);
        if self.params_u128() > limit {
            return Err(TinyError::TooLarge("model"));
        }
        Ok(())
    }

    /// `hidden / heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden.checked_div(self.heads).unwrap_or(0)
    }

    /// Number of parameters (same formula as [`presets::Preset::params`], with GQA k/v);
    /// saturates at `u64::MAX`.
    pub fn params(&self) -> u64 {
        u64::try_from(self.params_u128()).unwrap_or(u64::MAX)
    }

    fn params_u128(&self) -> u128 {
        let (v, h, f, l) = (
            self.vocab as u128,
            self.hidden as u128,
            self.ffn as u128,
            self.layers as u128,
        );
        let kv = self.kv_heads as u128 * self.head_dim() as u128;
        2 * v * h + l * (2 * h * h + 2 * h * kv + 3 * h * f + 2 * h) + h
    }

    /// The type a 2-D weight with rows of `row_len` elements gets: `ty`, or F16 when `row_len`
    /// is not a whole number of `ty` blocks.
    pub fn weight_type(&self, row_len: usize) -> GgmlType {
        if row_len.is_multiple_of(self.ty.block_size()) {
            self.ty
        } else {
            GgmlType::F16
        }
    }

    /// llama.cpp's `general.file_type` (`enum llama_ftype`) for a model whose weights are
    /// mostly `ty`.
    pub fn file_type(ty: GgmlType) -> u32 {
        match ty {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 7,
            GgmlType::Q5_0 => 8,
            GgmlType::Q5_1 => 9,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 12,  // Q3_K_M
            GgmlType::Q4K => 15,  // Q4_K_M
            GgmlType::Q5K => 17,  // Q5_K_M
            GgmlType::Q6K => 18,  // Q6_K
            GgmlType::BF16 => 32, // MOSTLY_BF16 (after b2757)
            // activation formats never hold weights; "guessed" flag
            GgmlType::Q8_1 | GgmlType::Q8K => 1024,
        }
    }

    fn plan(&self) -> Vec<Planned> {
        let (h, f, v) = (self.hidden as u64, self.ffn as u64, self.vocab as u64);
        let kv = (self.kv_heads * self.head_dim()) as u64;
        let sh = 1.0 / (self.hidden as f64).sqrt();
        let sf = 1.0 / (self.ffn as f64).sqrt();
        let res = 1.0 / (2.0 * self.layers as f64).sqrt();
        let weight = |name: String, ne0: u64, ne1: u64, std: f64| Planned {
            spec: TensorSpec {
                name,
                ty: self.weight_type(ne0 as usize),
                dims: vec![ne0, ne1],
            },
            kind: Kind::Weight { std },
        };
        let norm = |name: String| Planned {
            spec: TensorSpec {
                name,
                ty: GgmlType::F32,
                dims: vec![h],
            },
            kind: Kind::Norm,
        };
        let mut p = vec![weight("token_embd.weight".into(), h, v, 0.5)];
        for i in 0..self.layers {
            let b = format!("blk.{i}.");
            p.push(norm(format!("{b}attn_norm.weight")));
            p.push(weight(format!("{b}attn_q.weight"), h, h, 1.5 * sh));
            p.push(weight(format!("{b}attn_k.weight"), h, kv, 1.5 * sh));
            p.push(weight(format!("{b}attn_v.weight"), h, kv, sh));
            p.push(weight(format!("{b}attn_output.weight"), h, h, sh * res));
            p.push(norm(format!("{b}ffn_norm.weight")));
            p.push(weight(format!("{b}ffn_gate.weight"), h, f, sh));
            p.push(weight(format!("{b}ffn_up.weight"), h, f, sh));
            p.push(weight(format!("{b}ffn_down.weight"), f, h, sf * res));
        }
        p.push(norm("output_norm.weight".into()));
        p.push(weight("output.weight".into(), h, v, sh));
        p
    }

    /// Names, types (after the F16 fallback) and ggml dims of every tensor, in file order.
    pub fn tensors(&self) -> Result<Vec<TensorSpec>, TinyError> {
        self.validate()?;
        Ok(self.plan().into_iter().map(|p| p.spec).collect())
    }

    /// The f32 values of tensor `name` before quantization (row-major, ggml order: `dims[0]`
    /// elements per row), or `None` if the model has no such tensor.
    pub fn tensor_values(&self, name: &str) -> Result<Option<Vec<f32>>, TinyError> {
        self.validate()?;
        Ok(self
            .plan()
            .into_iter()
            .find(|p| p.spec.name == name)
            .map(|p| {
                let mut g = TensorGen::new(self.seed, &p);
                let mut out = vec![0f32; g.n_elements()];
                for row in out.chunks_exact_mut(g.row_len) {
                    g.next_row(row);
                }
                out
            }))
    }

    fn writer(&self, vocab: vocab::Vocab, plan: &[Planned]) -> Result<GgufWriter, Box<dyn Error>> {
        let mut w = GgufWriter::new();
        let u32v = |x: usize| Value::U32(x as u32);
        let mostly = if plan.iter().any(|p| p.spec.ty == self.ty) {
            self.ty
        } else {
            GgmlType::F16
        };
        let strings = |v: Vec<String>| {
            Value::Array(
                ValueType::String,
                v.into_iter().map(Value::String).collect(),
            )
        };
        let md: Vec<(&str, Value)> = vec![
            ("general.architecture", Value::String("xverse".into())),
            ("general.name", Value::String(TINY_NAME.into())),
            ("general.file_type", Value::U32(Self::file_type(mostly))),
            ("xverse.context_length", u32v(self.context)),
            ("xverse.embedding_length", u32v(self.hidden)),
            ("xverse.block_count", u32v(self.layers)),
            ("xverse.feed_forward_length", u32v(self.ffn)),
            ("xverse.rope.dimension_count", u32v(self.head_dim())),
            ("xverse.attention.head_count", u32v(self.heads)),
            ("xverse.attention.head_count_kv", u32v(self.kv_heads)),
            (
                "xverse.attention.layer_norm_rms_epsilon",
                Value::F32(RMS_NORM_EPS),
            ),
            ("xverse.rope.freq_base", Value::F32(ROPE_FREQ_BASE)),
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", strings(vocab.tokens)),
            (
                "tokenizer.ggml.scores",
                Value::Array(
                    ValueType::F32,
                    vocab.scores.into_iter().map(Value::F32).collect(),
                ),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(
                    ValueType::I32,
                    vocab.types.into_iter().map(Value::I32).collect(),
                ),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(vocab::BOS_ID)),
            ("tokenizer.ggml.eos_token_id", Value::U32(vocab::EOS_ID)),
            ("tokenizer.ggml.padding_token_id", Value::U32(vocab::PAD_ID)),
            ("tokenizer.ggml.unknown_token_id", Value::U32(vocab::UNK_ID)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
            ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        ];
        for (k, v) in md {
            w.add_metadata(k, v)?;
        }
        for p in plan {
            w.add_tensor(p.spec.clone())?;
        }
        Ok(w)
    }
}

/// Generates one tensor's values row by row.
struct TensorGen {
    rng: Rng,
    kind: Kind,
    row_len: usize,
    n_rows: usize,
    ty: GgmlType,
}

impl TensorGen {
    fn new(seed: u64, p: &Planned) -> TensorGen {
        // one stream per tensor: a tensor's values depend on the seed and its name only
        let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
        for b in p.spec.name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        let mut mix = Rng::new(seed ^ h);
        let row_len = p.spec.dims[0] as usize;
        let n_rows = p.spec.dims[1..].iter().product::<u64>() as usize;
        TensorGen {
            rng: Rng::new(mix.next_u64()),
            kind: p.kind,
            row_len,
            n_rows,
            ty: p.spec.ty,
        }
    }

    fn n_elements(&self) -> usize {
        self.row_len * self.n_rows
    }

    fn next_row(&mut self, row: &mut [f32]) {
        match self.kind {
            Kind::Norm => self.rng.fill_normal(row, 1.0, 0.1),
            Kind::Weight { std } => self.rng.fill_normal(row, 0.0, std),
        }
    }

    /// Calls `sink` with the tensor's bytes in chunks of about 1 MiB (whole rows).
    fn emit(
        mut self,
        mut sink: impl FnMut(&[u8]) -> Result<(), Box<dyn Error>>,
    ) -> Result<(), Box<dyn Error>> {
        let row_bytes = self
            .ty
            .bytes_for(self.row_len as u64)
            .ok_or(TinyError::TooLarge("row"))? as usize;
        let rows_per_chunk = ((1 << 20) / row_bytes.max(1)).clamp(1, self.n_rows.max(1));
        let mut vals = vec![0f32; self.row_len];
        let mut buf = vec![0u8; row_bytes * rows_per_chunk];
        let mut done = 0;
        while done < self.n_rows {
            let n = rows_per_chunk.min(self.n_rows - done);
            for dst in buf[..n * row_bytes].chunks_exact_mut(row_bytes) {
                self.next_row(&mut vals);
                blocks::quantize_row(self.ty, &vals, dst)?;
            }
            sink(&buf[..n * row_bytes])?;
            done += n;
        }
        Ok(())
    }
}

/// Writes a tiny random-weight XVERSE GGUF to `path`, replacing an existing file.
///
/// The file appears under `path` only when complete (temporary file, fsync, rename). A spec
/// that llama.cpp could not load is refused before anything is written.
pub fn write_tiny_gguf(path: &Path, spec: &TinySpec) -> Result<(), Box<dyn Error>> {
    create_tiny_gguf(path, spec, true).map(|_| ())
}

/// Like [`write_tiny_gguf`], but refuses to replace an existing file unless `overwrite`.
/// Returns the size of the file written.
pub fn create_tiny_gguf(
    path: &Path,
    spec: &TinySpec,
    overwrite: bool,
) -> Result<u64, Box<dyn Error>> {
    spec.validate()?;
    let vocab = vocab::build(spec.vocab).ok_or(TinyError::VocabTooSmall { vocab: spec.vocab })?;
    let plan = spec.plan();
    let w = spec.writer(vocab, &plan)?;
    let mut file = w.create(path, overwrite)?;
    for p in &plan {
        TensorGen::new(spec.seed, p).emit(|bytes| Ok(file.write_tensor_data(bytes)?))?;
    }
    Ok(file.finish()?)
}

/// The bytes of the file [`write_tiny_gguf`] writes, built in memory (for small models: tests
/// and fuzz seeds).
pub fn tiny_gguf_bytes(spec: &TinySpec) -> Result<Vec<u8>, Box<dyn Error>> {
    spec.validate()?;
    let vocab = vocab::build(spec.vocab).ok_or(TinyError::VocabTooSmall { vocab: spec.vocab })?;
    let plan = spec.plan();
    let w = spec.writer(vocab, &plan)?;
    let mut data: Vec<Vec<u8>> = Vec::with_capacity(plan.len());
    for p in &plan {
        let mut t = Vec::new();
        TensorGen::new(spec.seed, p).emit(|bytes| {
            t.extend_from_slice(bytes);
            Ok(())
        })?;
        data.push(t);
    }
    let slices: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    Ok(w.to_bytes(&slices)?)
}

#[cfg(test)]
mod tests;
