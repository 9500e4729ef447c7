//! Random-weight XVERSE checkpoints in Hugging Face layout, for any preset or shape: the input
//! of the converter's tests, of the demo and of the conversion benchmarks.
//!
//! [`write_hf_checkpoint`] writes a folder like a Hugging Face re-upload of an XVERSE model:
//!
//! * `model-0000K-of-0000N.safetensors`: the tensors (bf16 by default) under their HF names
//!   (`model.embed_tokens.weight` [vocab, hidden], `model.layers.{i}.input_layernorm.weight`,
//!   `…self_attn.{q,k,v,o}_proj.weight` ([out, in]; k/v have `kv_heads · head_dim` rows),
//!   `…post_attention_layernorm.weight`, `…mlp.{gate,up,down}_proj.weight`, `model.norm.weight`,
//!   `lm_head.weight` [vocab, hidden]), split like `save_pretrained` does: in model order, a new
//!   shard when the next tensor would take the current one over `max_shard_bytes` of tensor data
//!   (a tensor larger than that gets a shard of its own). Within a file the layout is exactly the
//!   one the `safetensors` crate's `serialize` gives (header `{"__metadata__":{"format":"pt"}, …}`,
//!   tensors sorted by name);
//! * `model.safetensors.index.json` (`{"metadata": {"total_size": N}, "weight_map": {…}}`);
//! * `config.json` with the keys of the developer fixture's (XVERSE's own plus `rope_theta`;
//!   `num_key_value_heads` only when the spec has one), `generation_config.json`;
//! * `tokenizer.json` (see [`tokenizer`]), `tokenizer_config.json`, `special_tokens_map.json`.
//!
//! Weights are random normal from the crate's seeded generator with the fixture's scales
//! (embedding std 0.5, q/k std 1.5/√hidden, the others 1/√fan_in, o and down also divided by
//! √(2·layers), norms 1 + 0.1·N(0,1)) and rounded to bf16 (nearest, ties to even). A tensor's
//! values depend only on the seed, its name and its size, so they are the same whatever the
//! sharding, the dtype (an f32 checkpoint holds the same bf16-rounded values) or the number of
//! threads; [`HfSpec::tensor_values`] gives them.
//!
//! Memory stays small whatever the model size: tensor bytes are generated in chunks of a few
//! MiB (in parallel) and streamed to the file. Everything is written into a hidden folder beside
//! the target ([`partial_dir`]), fsynced, then renamed: an interrupted run never leaves a half
//! checkpoint under the target's name.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::fmt;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;
use serde::Serialize;
use xverse_quant::blocks::bf16::f32_to_bf16;

use crate::presets::Preset;
use crate::rng::Rng;
use crate::shape::{Init, MinVocab, PlannedTensor, Role, Shape, ShapeError};
use crate::vocab::{BOS_ID, EOS_ID, PAD_ID};

pub mod tokenizer;

/// Default shard size limit: 1 GiB of tensor data per file.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 1 << 30;
/// `rope_theta` written by default (the fixture's config has it; published XVERSE configs leave
/// it out, which means the same base).
pub const ROPE_THETA: f64 = 10000.0;
/// `rms_norm_eps` of every XVERSE model (as f64: `1e-06` in the JSON).
pub const RMS_NORM_EPS: f64 = 1e-6;
/// `initializer_range` of XVERSE's configs.
pub const INITIALIZER_RANGE: f64 = 0.02;
/// Name of the index file.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The smallest vocabulary of a checkpoint.
const MIN_VOCAB: MinVocab = MinVocab {
    tokens: tokenizer::MIN_HF_VOCAB,
    holds: "4 special + 256 byte tokens + \"▁\"",
};
/// `transformers_version` of XVERSE's configs.
const TRANSFORMERS_VERSION: &str = "4.30.2";

/// Elements per independent random stream inside a tensor (the unit of parallel generation).
const STREAM_ELEMS: usize = 1 << 16;
/// Streams generated per parallel batch (64 · 64 Ki elements: 8 MiB of bf16).
const BATCH_STREAMS: usize = 64;

/// Element type of the checkpoint's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfDtype {
    /// bfloat16, as XVERSE is published.
    Bf16,
    /// float32 (holding the same bf16-rounded values).
    F32,
}

impl HfDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            HfDtype::Bf16 => 2,
            HfDtype::F32 => 4,
        }
    }

    /// `torch_dtype` in config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            HfDtype::Bf16 => "bfloat16",
            HfDtype::F32 => "float32",
        }
    }

    /// The safetensors dtype.
    pub fn safetensors(self) -> Dtype {
        match self {
            HfDtype::Bf16 => Dtype::BF16,
            HfDtype::F32 => Dtype::F32,
        }
    }

    /// `bf16` / `f32` (also `bfloat16`, `float32`).
    pub fn from_name(s: &str) -> Option<HfDtype> {
        match s.to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" => Some(HfDtype::Bf16),
            "f32" | "fp32" | "float32" => Some(HfDtype::F32),
            _ => None,
        }
    }
}

/// Shape, seed and file layout of a random-weight Hugging Face checkpoint.
///
/// The default is the developer fixtures' shape (hidden 64, ffn 172, 4 heads, 2 layers, vocab
/// 512, context 2048), seed 1, shards of at most 1 GiB, bf16.
#[derive(Clone, Debug, PartialEq)]
pub struct HfSpec {
    /// `hidden_size`.
    pub hidden: usize,
    /// `intermediate_size`.
    pub ffn: usize,
    /// `num_attention_heads`.
    pub heads: usize,
    /// `num_key_value_heads`: written to config.json only when `Some`; `None` means = heads.
    pub kv_heads: Option<usize>,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `vocab_size` (also the size of tokenizer.json's vocabulary).
    pub vocab: usize,
    /// `max_position_embeddings`.
    pub context: usize,
    /// Seed of the random weights.
    pub seed: u64,
    /// Most bytes of tensor data per shard (a single larger tensor gets a shard of its own).
    pub max_shard_bytes: u64,
    /// Element type of the tensors.
    pub dtype: HfDtype,
    /// `rope_theta` in config.json, or `None` to leave the key out as the published configs do.
    pub rope_theta: Option<f64>,
}

impl Default for HfSpec {
    fn default() -> Self {
        HfSpec {
            hidden: 64,
            ffn: 172,
            heads: 4,
            kv_heads: None,
            layers: 2,
            vocab: 512,
            context: 2048,
            seed: 1,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
            dtype: HfDtype::Bf16,
            rope_theta: Some(ROPE_THETA),
        }
    }
}

/// What is wrong with a spec or a target folder.
#[derive(Clone, Debug, PartialEq)]
pub enum HfError {
    /// The shape breaks a rule of [`Shape::validate`] (or the sizes overflow).
    Shape(ShapeError),
    /// `max_shard_bytes` is zero.
    ZeroShardBytes,
    /// `rope_theta` is not a positive finite number.
    BadRopeTheta(f64),
    /// The target has no usable folder name (`.`, `/`, `..`).
    BadTarget(PathBuf),
    /// The target exists and replacing it was not asked for.
    Exists(PathBuf),
    /// The target exists and is neither an empty folder nor a model checkpoint: never replaced.
    NotACheckpoint(PathBuf),
}

impl From<ShapeError> for HfError {
    fn from(e: ShapeError) -> Self {
        HfError::Shape(e)
    }
}

impl fmt::Display for HfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bad = "invalid checkpoint spec";
        match self {
            HfError::Shape(e) => write!(f, "{bad}: {e}"),
            HfError::ZeroShardBytes => write!(f, "{bad}: max_shard_bytes must be at least 1"),
            HfError::BadRopeTheta(v) => {
                write!(f, "{bad}: rope_theta {v} must be a positive finite number")
            }
            HfError::BadTarget(p) => write!(
                f,
                "{}: not a usable output folder (it needs a name)",
                p.display()
            ),
            HfError::Exists(p) => write!(
                f,
                "{} exists; pass --force (overwrite) to replace it",
                p.display()
            ),
            HfError::NotACheckpoint(p) => write!(
                f,
                "{} exists and is not a model checkpoint (no config.json): refusing to replace it",
                p.display()
            ),
        }
    }
}

impl Error for HfError {}

/// One tensor of the checkpoint: HF name and shape (`[out, in]` for weights).
#[derive(Clone, Debug, PartialEq)]
pub struct HfTensor {
    /// Hugging Face name (`model.layers.0.self_attn.q_proj.weight`, …).
    pub name: String,
    /// Shape, outer dimension first.
    pub shape: Vec<usize>,
    kind: Init,
}

impl HfTensor {
    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What [`write_hf_checkpoint`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfSummary {
    /// The checkpoint folder.
    pub dir: PathBuf,
    /// Number of parameters.
    pub params: u64,
    /// Number of tensors.
    pub tensors: usize,
    /// Bytes of tensor data (`metadata.total_size` of the index).
    pub total_size: u64,
    /// Shard file names, in order.
    pub shards: Vec<String>,
    /// Bytes of every file written (shards with their headers, JSON files).
    pub file_bytes: u64,
}

impl HfSpec {
    /// The shape of a preset (at full size!), seed 1, default shards, bf16; `kv_heads` stays
    /// `None` (no XVERSE model has `num_key_value_heads`).
    pub fn from_preset(p: &Preset) -> HfSpec {
        let mut spec = HfSpec::default();
        spec.set_shape(&Shape::from_preset(p));
        spec
    }

    /// The sizes of the model.
    pub fn shape(&self) -> Shape {
        Shape {
            hidden: self.hidden,
            ffn: self.ffn,
            heads: self.heads,
            kv_heads: self.kv_heads,
            layers: self.layers,
            vocab: self.vocab,
            context: self.context,
        }
    }

    /// Sets the sizes of the model.
    pub fn set_shape(&mut self, shape: &Shape) {
        self.hidden = shape.hidden;
        self.ffn = shape.ffn;
        self.heads = shape.heads;
        self.kv_heads = shape.kv_heads;
        self.layers = shape.layers;
        self.vocab = shape.vocab;
        self.context = shape.context;
    }

    /// Key/value heads (`heads` when not set).
    pub fn kv_heads(&self) -> usize {
        self.shape().kv_heads()
    }

    /// `hidden / heads`.
    pub fn head_dim(&self) -> usize {
        self.shape().head_dim()
    }

    /// Checks that the spec describes a model the converter and llama.cpp accept.
    pub fn validate(&self) -> Result<(), HfError> {
        let shape = self.shape();
        shape.validate(MIN_VOCAB)?;
        if self.max_shard_bytes == 0 {
            return Err(HfError::ZeroShardBytes);
        }
        if let Some(t) = self.rope_theta {
            if !(t.is_finite() && t > 0.0) {
                return Err(HfError::BadRopeTheta(t));
            }
        }
        // every byte count (4 bytes per parameter at most) must fit u64 and usize
        shape.check_params()?;
        Ok(())
    }

    /// Number of parameters: `2·vocab·hidden + layers·(2·hidden² + 2·hidden·kv + 3·hidden·ffn
    /// + 2·hidden) + hidden` (kv = kv_heads·head_dim); saturates at `u64::MAX`.
    pub fn params(&self) -> u64 {
        self.shape().params()
    }

    /// Bytes of tensor data (the index's `total_size`).
    pub fn total_size(&self) -> u64 {
        self.params().saturating_mul(self.dtype.size() as u64)
    }

    fn plan(&self) -> Vec<HfTensor> {
        let name = |t: &PlannedTensor| {
            let layer = |what: &str| format!("model.layers.{}.{what}.weight", t.layer);
            match t.role {
                Role::Embedding => "model.embed_tokens.weight".into(),
                Role::AttnNorm => layer("input_layernorm"),
                Role::Q => layer("self_attn.q_proj"),
                Role::K => layer("self_attn.k_proj"),
                Role::V => layer("self_attn.v_proj"),
                Role::O => layer("self_attn.o_proj"),
                Role::FfnNorm => layer("post_attention_layernorm"),
                Role::Gate => layer("mlp.gate_proj"),
                Role::Up => layer("mlp.up_proj"),
                Role::Down => layer("mlp.down_proj"),
                Role::OutputNorm => "model.norm.weight".into(),
                Role::Output => "lm_head.weight".into(),
            }
        };
        self.shape()
            .plan()
            .into_iter()
            .map(|t| HfTensor {
                name: name(&t),
                shape: t.shape,
                kind: t.init,
            })
            .collect()
    }

    /// Every tensor, in model order (embedding, layers, final norm, lm_head).
    pub fn tensors(&self) -> Result<Vec<HfTensor>, HfError> {
        self.validate()?;
        Ok(self.plan())
    }

    /// The tensors grouped into shards, in model order (`save_pretrained`'s rule).
    pub fn shards(&self) -> Result<Vec<Vec<HfTensor>>, HfError> {
        self.validate()?;
        Ok(self.split(self.plan()))
    }

    fn split(&self, plan: Vec<HfTensor>) -> Vec<Vec<HfTensor>> {
        let mut shards: Vec<Vec<HfTensor>> = Vec::new();
        let mut cur: Vec<HfTensor> = Vec::new();
        let mut cur_bytes = 0u64;
        for t in plan {
            let n = (t.n_elements() * self.dtype.size()) as u64;
            if !cur.is_empty() && cur_bytes + n > self.max_shard_bytes {
                shards.push(std::mem::take(&mut cur));
                cur_bytes = 0;
            }
            cur_bytes += n;
            cur.push(t);
        }
        if !cur.is_empty() {
            shards.push(cur);
        }
        shards
    }

    /// The values of tensor `name` as the checkpoint stores them (bf16-rounded, row-major in HF
    /// order), or `None` if there is no such tensor.
    pub fn tensor_values(&self, name: &str) -> Result<Option<Vec<f32>>, HfError> {
        self.validate()?;
        Ok(self.plan().into_iter().find(|t| t.name == name).map(|t| {
            let base = stream_base(self.seed, &t.name);
            let mut out = vec![0f32; t.n_elements()];
            for (i, chunk) in out.chunks_mut(STREAM_ELEMS).enumerate() {
                fill_stream(base, i as u64, t.kind, chunk);
            }
            out
        }))
    }

    /// `config.json`.
    pub fn config_json(&self) -> String {
        #[derive(Serialize)]
        struct Config {
            architectures: [&'static str; 1],
            model_type: &'static str,
            bos_token_id: u32,
            eos_token_id: u32,
            pad_token_id: u32,
            hidden_act: &'static str,
            hidden_size: usize,
            initializer_range: f64,
            intermediate_size: usize,
            max_position_embeddings: usize,
            max_tokenizer_truncation: usize,
            num_attention_heads: usize,
            num_hidden_layers: usize,
            #[serde(skip_serializing_if = "Option::is_none")]
            num_key_value_heads: Option<usize>,
            rms_norm_eps: f64,
            #[serde(skip_serializing_if = "Option::is_none")]
            rope_theta: Option<f64>,
            tie_word_embeddings: bool,
            torch_dtype: &'static str,
            transformers_version: &'static str,
            use_cache: bool,
            vocab_size: usize,
        }
        let c = Config {
            architectures: ["XverseForCausalLM"],
            model_type: "xverse",
            bos_token_id: BOS_ID,
            eos_token_id: EOS_ID,
            pad_token_id: PAD_ID,
            hidden_act: "silu",
            hidden_size: self.hidden,
            initializer_range: INITIALIZER_RANGE,
            intermediate_size: self.ffn,
            max_position_embeddings: self.context,
            max_tokenizer_truncation: self.context,
            num_attention_heads: self.heads,
            num_hidden_layers: self.layers,
            num_key_value_heads: self.kv_heads,
            rms_norm_eps: RMS_NORM_EPS,
            rope_theta: self.rope_theta,
            tie_word_embeddings: false,
            torch_dtype: self.dtype.torch_name(),
            transformers_version: TRANSFORMERS_VERSION,
            use_cache: true,
            vocab_size: self.vocab,
        };
        serde_json::to_string_pretty(&c).expect("json")
    }
}

/// `generation_config.json` (the fixture's).
pub fn generation_config_json() -> String {
    #[derive(Serialize)]
    struct Gen {
        bos_token_id: u32,
        eos_token_id: u32,
        pad_token_id: u32,
        do_sample: bool,
    }
    serde_json::to_string_pretty(&Gen {
        bos_token_id: BOS_ID,
        eos_token_id: EOS_ID,
        pad_token_id: PAD_ID,
        do_sample: false,
    })
    .expect("json")
}

/// `model-0000K-of-0000N.safetensors` (K from 1).
pub fn shard_name(k: usize, n: usize) -> String {
    format!("model-{k:05}-of-{n:05}.safetensors")
}

/// The hidden folder beside `dir` that a run writes into before renaming it to `dir`
/// (`parent/.NAME.partial`). A leftover one (from a killed run) is removed by the next run.
pub fn partial_dir(dir: &Path) -> Result<PathBuf, HfError> {
    sibling(dir, "partial")
}

fn sibling(dir: &Path, what: &str) -> Result<PathBuf, HfError> {
    let name = dir
        .file_name()
        .ok_or_else(|| HfError::BadTarget(dir.to_path_buf()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push(".");
    hidden.push(what);
    Ok(parent.join(hidden))
}

/// The rounding every stored value goes through.
fn bf16_round(v: f32) -> f32 {
    f32::from_bits(u32::from(f32_to_bf16(v).to_bits()) << 16)
}

/// A tensor's generator seed: depends on the spec's seed and the tensor's name only.
fn stream_base(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    Rng::new(seed ^ h).next_u64()
}

/// Fills `out` with stream `index` of a tensor (elements `index · STREAM_ELEMS ..`).
fn fill_stream(base: u64, index: u64, kind: Init, out: &mut [f32]) {
    let mut mix = Rng::new(base ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03));
    let mut rng = Rng::new(mix.next_u64());
    let (mean, std) = match kind {
        Init::Norm => (1.0, 0.1),
        Init::Weight { std } => (0.0, std),
    };
    let mut pairs = out.chunks_exact_mut(2);
    for pair in &mut pairs {
        let (a, b) = normal_pair(&mut rng);
        pair[0] = bf16_round((mean + std * a) as f32);
        pair[1] = bf16_round((mean + std * b) as f32);
    }
    if let [last] = pairs.into_remainder() {
        *last = bf16_round((mean + std * normal_pair(&mut rng).0) as f32);
    }
}

/// Two independent standard normal deviates (Marsaglia's polar method: no trigonometry, so
/// about twice as fast as Box-Muller, which matters at billions of values).
fn normal_pair(rng: &mut Rng) -> (f64, f64) {
    loop {
        let u = 2.0 * rng.next_f64() - 1.0;
        let v = 2.0 * rng.next_f64() - 1.0;
        let s = u * u + v * v;
        if s < 1.0 && s > 0.0 {
            let m = (-2.0 * s.ln() / s).sqrt();
            return (u * m, v * m);
        }
    }
}

/// Encodes stream `index` of tensor `t` as little-endian bytes of `dtype`.
fn stream_bytes(base: u64, t: &HfTensor, index: usize, dtype: HfDtype) -> Vec<u8> {
    let start = index * STREAM_ELEMS;
    let len = STREAM_ELEMS.min(t.n_elements() - start);
    let mut vals = vec![0f32; len];
    fill_stream(base, index as u64, t.kind, &mut vals);
    let mut out = Vec::with_capacity(len * dtype.size());
    match dtype {
        HfDtype::Bf16 => {
            for v in vals {
                out.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
            }
        }
        HfDtype::F32 => {
            for v in vals {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

/// Streams tensor `t`'s bytes into `w`, generating batches of streams in parallel.
fn write_tensor(
    w: &mut impl Write,
    seed: u64,
    t: &HfTensor,
    dtype: HfDtype,
) -> std::io::Result<()> {
    let base = stream_base(seed, &t.name);
    let n_streams = t.n_elements().div_ceil(STREAM_ELEMS);
    let mut first = 0;
    while first < n_streams {
        let last = (first + BATCH_STREAMS).min(n_streams);
        let chunks: Vec<Vec<u8>> = (first..last)
            .into_par_iter()
            .map(|i| stream_bytes(base, t, i, dtype))
            .collect();
        for c in chunks {
            w.write_all(&c)?;
        }
        first = last;
    }
    Ok(())
}

/// Writes one safetensors file holding `tensors`; returns its size.
fn write_shard(path: &Path, tensors: &[HfTensor], spec: &HfSpec) -> Result<u64, Box<dyn Error>> {
    // the order and header `safetensors::serialize` produces: sorted by (dtype, name)
    let mut sorted: Vec<&HfTensor> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut offset = 0usize;
    let mut infos = Vec::with_capacity(sorted.len());
    for t in &sorted {
        let n = t.n_elements() * spec.dtype.size();
        infos.push((
            t.name.clone(),
            TensorInfo {
                dtype: spec.dtype.safetensors(),
                shape: t.shape.clone(),
                data_offsets: (offset, offset + n),
            },
        ));
        offset += n;
    }
    let meta = Metadata::new(
        Some(HashMap::from([("format".to_string(), "pt".to_string())])),
        infos,
    )?;
    let mut header = serde_json::to_string(&meta)?.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let file = File::create(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    for t in &sorted {
        write_tensor(&mut w, spec.seed, t, spec.dtype)?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((8 + header.len() + offset) as u64)
}

fn write_text(path: &Path, text: &str) -> Result<u64, Box<dyn Error>> {
    let mut f = File::create(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(text.len() as u64 + 1)
}

/// Writes every file of the checkpoint into `dir` (which exists and is empty).
fn write_files(dir: &Path, spec: &HfSpec) -> Result<HfSummary, Box<dyn Error>> {
    let shards = spec.shards()?;
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut names = Vec::with_capacity(n);
    let mut file_bytes = 0u64;
    let mut tensors = 0usize;
    for (k, shard) in shards.iter().enumerate() {
        let name = shard_name(k + 1, n);
        file_bytes += write_shard(&dir.join(&name), shard, spec)?;
        for t in shard {
            weight_map.insert(t.name.clone(), name.clone());
        }
        tensors += shard.len();
        names.push(name);
    }
    #[derive(Serialize)]
    struct IndexMeta {
        total_size: u64,
    }
    #[derive(Serialize)]
    struct Index {
        metadata: IndexMeta,
        weight_map: BTreeMap<String, String>,
    }
    let index = Index {
        metadata: IndexMeta {
            total_size: spec.total_size(),
        },
        weight_map,
    };
    file_bytes += write_text(
        &dir.join(INDEX_FILE),
        &serde_json::to_string_pretty(&index)?,
    )?;
    file_bytes += write_text(&dir.join("config.json"), &spec.config_json())?;
    file_bytes += write_text(
        &dir.join("generation_config.json"),
        &generation_config_json(),
    )?;
    let vocab = tokenizer::build(spec.vocab).ok_or(HfError::Shape(ShapeError::VocabTooSmall {
        vocab: spec.vocab,
        min: MIN_VOCAB,
    }))?;
    file_bytes += write_text(
        &dir.join("tokenizer.json"),
        &tokenizer::tokenizer_json(&vocab),
    )?;
    file_bytes += write_text(
        &dir.join("tokenizer_config.json"),
        &tokenizer::tokenizer_config_json(spec.context),
    )?;
    file_bytes += write_text(
        &dir.join("special_tokens_map.json"),
        &tokenizer::special_tokens_map_json(),
    )?;
    Ok(HfSummary {
        dir: dir.to_path_buf(),
        params: spec.params(),
        tensors,
        total_size: spec.total_size(),
        shards: names,
        file_bytes,
    })
}

/// Writes a random-weight XVERSE checkpoint into the new folder `dir` (an existing empty folder
/// is fine; anything else there is refused: see [`create_hf_checkpoint`]).
///
/// A spec that cannot make a valid model is refused before anything is created. The folder
/// appears under `dir` only when complete.
pub fn write_hf_checkpoint(dir: &Path, spec: &HfSpec) -> Result<HfSummary, Box<dyn Error>> {
    create_hf_checkpoint(dir, spec, false)
}

/// Like [`write_hf_checkpoint`]; with `overwrite`, an existing checkpoint folder (one holding a
/// `config.json`) is replaced once the new one is complete. A folder that does not look like a
/// checkpoint is never replaced.
pub fn create_hf_checkpoint(
    dir: &Path,
    spec: &HfSpec,
    overwrite: bool,
) -> Result<HfSummary, Box<dyn Error>> {
    spec.validate()?;
    let partial = partial_dir(dir)?;
    let target = match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Target::New,
        Err(e) => return Err(format!("{}: {e}", dir.display()).into()),
        Ok(m) if m.is_dir() && fs::read_dir(dir)?.next().is_none() => Target::Empty,
        Ok(m) if m.is_dir() && dir.join("config.json").is_file() => {
            if !overwrite {
                return Err(HfError::Exists(dir.to_path_buf()).into());
            }
            Target::Replace
        }
        Ok(_) => {
            if !overwrite {
                return Err(HfError::Exists(dir.to_path_buf()).into());
            }
            return Err(HfError::NotACheckpoint(dir.to_path_buf()).into());
        }
    };
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    if let Some(parent) = partial.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::create_dir(&partial)?;
    let summary = write_files(&partial, spec).and_then(|s| {
        move_in_place(&partial, dir, target).map_err(|e| {
            format!(
                "{}: could not move the checkpoint in place: {e}",
                dir.display()
            )
        })?;
        Ok(s)
    });
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    Ok(HfSummary {
        dir: dir.to_path_buf(),
        ..summary
    })
}

/// What is at the target before the checkpoint moves there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    New,
    Empty,
    Replace,
}

/// Renames the complete `partial` folder to `dir`. An old checkpoint there is moved aside
/// first, and put back if the rename fails.
fn move_in_place(partial: &Path, dir: &Path, target: Target) -> std::io::Result<()> {
    match target {
        Target::New => fs::rename(partial, dir)?,
        Target::Empty => {
            fs::remove_dir(dir)?;
            fs::rename(partial, dir)?;
        }
        Target::Replace => {
            let old = sibling(dir, "old").map_err(std::io::Error::other)?;
            if old.exists() {
                fs::remove_dir_all(&old)?;
            }
            fs::rename(dir, &old)?;
            if let Err(e) = fs::rename(partial, dir) {
                let _ = fs::rename(&old, dir);
                return Err(e);
            }
            fs::remove_dir_all(&old)?;
        }
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        // make the rename durable where the platform allows it
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
