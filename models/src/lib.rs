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

pub mod edit;
pub mod hf;
pub mod presets;
pub mod rng;
pub mod seeds;
pub mod shape;
pub mod vocab;

pub use edit::rewrite_metadata;
pub use hf::{create_hf_checkpoint, write_hf_checkpoint, HfDtype, HfError, HfSpec, HfSummary};
use rng::Rng;
use shape::{Init, PlannedTensor, Role};
pub use shape::{MinVocab, Shape, ShapeError};

/// `xverse.attention.layer_norm_rms_epsilon` of every XVERSE model.
pub const RMS_NORM_EPS: f32 = 1e-6;
/// `xverse.rope.freq_base` of every XVERSE model.
pub const ROPE_FREQ_BASE: f32 = 10000.0;
/// `general.name` of a tiny model.
pub const TINY_NAME: &str = "xverse-tiny";
/// The smallest vocabulary of a tiny model.
const MIN_VOCAB: MinVocab = MinVocab {
    tokens: vocab::MIN_VOCAB,
    holds: "4 special + 256 byte tokens",
};

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
    /// The shape breaks a rule of [`Shape::validate`] (or the sizes overflow).
    Shape(ShapeError),
    /// A type that cannot hold weights here.
    UnsupportedType { ty: GgmlType, why: &'static str },
}

impl From<ShapeError> for TinyError {
    fn from(e: ShapeError) -> Self {
        TinyError::Shape(e)
    }
}

impl fmt::Display for TinyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TinyError::Shape(e) => write!(f, "invalid tiny model: {e}"),
            TinyError::UnsupportedType { ty, why } => {
                write!(f, "invalid tiny model: type {ty} cannot be used: {why}")
            }
        }
    }
}

impl Error for TinyError {}

/// One tensor of the plan: name, type after fallback, ggml dims, initialisation.
#[derive(Clone, Debug, PartialEq)]
struct Planned {
    spec: TensorSpec,
    kind: Init,
}

impl TinySpec {
    /// The shape of a preset (at full size!) with type F32 and seed 1.
    pub fn from_preset(p: &presets::Preset) -> TinySpec {
        let mut spec = TinySpec::default();
        spec.set_shape(&Shape::from_preset(p));
        spec
    }

    /// The sizes of the model.
    pub fn shape(&self) -> Shape {
        Shape {
            hidden: self.hidden,
            ffn: self.ffn,
            heads: self.heads,
            kv_heads: Some(self.kv_heads),
            layers: self.layers,
            vocab: self.vocab,
            context: self.context,
        }
    }

    /// Sets the sizes of the model (`kv_heads` = `heads` when `shape.kv_heads` is `None`).
    pub fn set_shape(&mut self, shape: &Shape) {
        self.hidden = shape.hidden;
        self.ffn = shape.ffn;
        self.heads = shape.heads;
        self.kv_heads = shape.kv_heads();
        self.layers = shape.layers;
        self.vocab = shape.vocab;
        self.context = shape.context;
    }

    /// Checks that llama.cpp can load a model of this spec.
    pub fn validate(&self) -> Result<(), TinyError> {
        let shape = self.shape();
        shape.validate(MIN_VOCAB)?;
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
        shape.check_params()?;
        Ok(())
    }

    /// `hidden / heads`.
    pub fn head_dim(&self) -> usize {
        self.shape().head_dim()
    }

    /// Number of parameters (same formula as [`presets::Preset::params`], with GQA k/v);
    /// saturates at `u64::MAX`.
    pub fn params(&self) -> u64 {
        self.shape().params()
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
        let name = |t: &PlannedTensor| {
            let layer = |what: &str| format!("blk.{}.{what}.weight", t.layer);
            match t.role {
                Role::Embedding => "token_embd.weight".into(),
                Role::AttnNorm => layer("attn_norm"),
                Role::Q => layer("attn_q"),
                Role::K => layer("attn_k"),
                Role::V => layer("attn_v"),
                Role::O => layer("attn_output"),
                Role::FfnNorm => layer("ffn_norm"),
                Role::Gate => layer("ffn_gate"),
                Role::Up => layer("ffn_up"),
                Role::Down => layer("ffn_down"),
                Role::OutputNorm => "output_norm.weight".into(),
                Role::Output => "output.weight".into(),
            }
        };
        self.shape()
            .plan()
            .into_iter()
            .map(|t| {
                // ggml order: the row length (in) first
                let dims: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
                let ty = match t.init {
                    Init::Norm => GgmlType::F32,
                    Init::Weight { .. } => self.weight_type(dims[0] as usize),
                };
                Planned {
                    spec: TensorSpec {
                        name: name(&t),
                        ty,
                        dims,
                    },
                    kind: t.init,
                }
            })
            .collect()
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
    kind: Init,
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
            Init::Norm => self.rng.fill_normal(row, 1.0, 0.1),
            Init::Weight { std } => self.rng.fill_normal(row, 0.0, std),
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
            .ok_or(TinyError::Shape(ShapeError::TooLarge("row")))? as usize;
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
    let vocab = vocab::build(spec.vocab).ok_or(TinyError::Shape(ShapeError::VocabTooSmall {
        vocab: spec.vocab,
        min: MIN_VOCAB,
    }))?;
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
    let vocab = vocab::build(spec.vocab).ok_or(TinyError::Shape(ShapeError::VocabTooSmall {
        vocab: spec.vocab,
        min: MIN_VOCAB,
    }))?;
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
