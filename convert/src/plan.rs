//! The plan of a conversion: which source tensor becomes which GGUF tensor, in which order,
//! with which shape and ggml type.
//!
//! * Names: Hugging Face's (`model.layers.N.self_attn.q_proj.weight`, …) map to llama.cpp's
//!   (`blk.N.attn_q.weight`, …); `rotary_emb.inv_freq` buffers are skipped; any other tensor is
//!   an error. A GGUF input already has GGUF names.
//! * Order: the order llama.cpp's converter writes for the published `.bin` checkpoints (their
//!   PyTorch `state_dict` order): `token_embd`, then for each layer `attn_q`, `attn_k`, `attn_v`,
//!   `attn_output`, `ffn_gate`, `ffn_up`, `ffn_down`, `attn_norm`, `ffn_norm`, then
//!   `output_norm`, `output`. A GGUF input keeps its own order, as `llama-quantize` does.
//! * Shapes: every tensor is checked against the model's hyperparameters before anything is
//!   written; all problems are reported in one error. ggml dims are the PyTorch shape reversed.
//! * Types ([`Mixer`]): the rules of llama.cpp b2757's `llama_tensor_get_type` and
//!   `llama_model_quantize_internal` for the mixes named by [`FileType`], including the
//!   fallback to a 32-block type when a row is not a multiple of 256, plus one rule llama.cpp
//!   lacks: a row that is not a multiple of 32 either is stored as F16.

use crate::convert_err;
use crate::source::{ConvertError, Dtype, TensorMeta};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Write};
use xverse_quant::gguf::TensorSpec;
use xverse_quant::types::QK_K;
use xverse_quant::GgmlType;

/// The hyperparameters that fix every tensor's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    pub hidden: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub layers: usize,
    pub vocab: usize,
}

impl ModelShape {
    /// Rows per attention head (`hidden / heads`).
    pub fn head_dim(&self) -> usize {
        self.hidden.checked_div(self.heads).unwrap_or(0)
    }

    /// Why these hyperparameters cannot describe an XVERSE model, if they cannot.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("hidden_size", self.hidden),
            ("intermediate_size", self.ffn),
            ("num_attention_heads", self.heads),
            ("num_key_value_heads", self.kv_heads),
            ("num_hidden_layers", self.layers),
            ("vocab_size", self.vocab),
        ];
        for (name, v) in fields {
            if v == 0 {
                return Err(format!("{name} is 0"));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden, self.heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head size {} (hidden_size / num_attention_heads) is odd: rotary embedding needs pairs",
                self.head_dim()
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.heads, self.kv_heads
            ));
        }
        if self.layers > 100_000 || self.vocab > u32::MAX as usize {
            return Err("num_hidden_layers or vocab_size is implausibly large".to_string());
        }
        Ok(())
    }
}

/// A tensor of one decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerTensor {
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnGate,
    FfnUp,
    FfnDown,
    AttnNorm,
    FfnNorm,
}

impl LayerTensor {
    /// Every layer tensor, in the order they are written.
    pub const ALL: [LayerTensor; 9] = [
        LayerTensor::AttnQ,
        LayerTensor::AttnK,
        LayerTensor::AttnV,
        LayerTensor::AttnOutput,
        LayerTensor::FfnGate,
        LayerTensor::FfnUp,
        LayerTensor::FfnDown,
        LayerTensor::AttnNorm,
        LayerTensor::FfnNorm,
    ];

    /// The part of the Hugging Face name after `model.layers.N.` and before `.weight`.
    pub fn hf_name(self) -> &'static str {
        match self {
            LayerTensor::AttnQ => "self_attn.q_proj",
            LayerTensor::AttnK => "self_attn.k_proj",
            LayerTensor::AttnV => "self_attn.v_proj",
            LayerTensor::AttnOutput => "self_attn.o_proj",
            LayerTensor::FfnGate => "mlp.gate_proj",
            LayerTensor::FfnUp => "mlp.up_proj",
            LayerTensor::FfnDown => "mlp.down_proj",
            LayerTensor::AttnNorm => "input_layernorm",
            LayerTensor::FfnNorm => "post_attention_layernorm",
        }
    }

    /// The part of the GGUF name after `blk.N.` and before `.weight`.
    pub fn gguf_name(self) -> &'static str {
        match self {
            LayerTensor::AttnQ => "attn_q",
            LayerTensor::AttnK => "attn_k",
            LayerTensor::AttnV => "attn_v",
            LayerTensor::AttnOutput => "attn_output",
            LayerTensor::FfnGate => "ffn_gate",
            LayerTensor::FfnUp => "ffn_up",
            LayerTensor::FfnDown => "ffn_down",
            LayerTensor::AttnNorm => "attn_norm",
            LayerTensor::FfnNorm => "ffn_norm",
        }
    }
}

/// Which tensor of an XVERSE model a name denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TensorId {
    TokenEmbd,
    Layer(usize, LayerTensor),
    OutputNorm,
    Output,
}

/// What a source tensor name means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameMatch {
    Tensor(TensorId),
    /// A buffer llama.cpp does not need (`rotary_emb.inv_freq`).
    Skip,
    Unknown,
}

fn parse_layer(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('.')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0'))
    {
        return None;
    }
    Some((n.parse().ok()?, rest))
}

impl TensorId {
    /// Every tensor of a model with `layers` layers, in the order they are written.
    pub fn all(layers: usize) -> Vec<TensorId> {
        let mut v = Vec::with_capacity(layers * LayerTensor::ALL.len() + 3);
        v.push(TensorId::TokenEmbd);
        for l in 0..layers {
            v.extend(LayerTensor::ALL.iter().map(|&t| TensorId::Layer(l, t)));
        }
        v.push(TensorId::OutputNorm);
        v.push(TensorId::Output);
        v
    }

    /// The Hugging Face name.
    pub fn hf_name(&self) -> String {
        match self {
            TensorId::TokenEmbd => "model.embed_tokens.weight".to_string(),
            TensorId::Layer(l, t) => format!("model.layers.{l}.{}.weight", t.hf_name()),
            TensorId::OutputNorm => "model.norm.weight".to_string(),
            TensorId::Output => "lm_head.weight".to_string(),
        }
    }

    /// The GGUF (llama.cpp) name.
    pub fn gguf_name(&self) -> String {
        match self {
            TensorId::TokenEmbd => "token_embd.weight".to_string(),
            TensorId::Layer(l, t) => format!("blk.{l}.{}.weight", t.gguf_name()),
            TensorId::OutputNorm => "output_norm.weight".to_string(),
            TensorId::Output => "output.weight".to_string(),
        }
    }

    /// What a Hugging Face tensor name means.
    pub fn from_hf_name(name: &str) -> NameMatch {
        if name.ends_with(".rotary_emb.inv_freq") {
            return NameMatch::Skip;
        }
        let Some(base) = name.strip_suffix(".weight") else {
            return NameMatch::Unknown;
        };
        let id = match base {
            "model.embed_tokens" => Some(TensorId::TokenEmbd),
            "model.norm" => Some(TensorId::OutputNorm),
            "lm_head" => Some(TensorId::Output),
            _ => base
                .strip_prefix("model.layers.")
                .and_then(parse_layer)
                .and_then(|(l, rest)| {
                    LayerTensor::ALL
                        .iter()
                        .find(|t| t.hf_name() == rest)
                        .map(|&t| TensorId::Layer(l, t))
                }),
        };
        id.map_or(NameMatch::Unknown, NameMatch::Tensor)
    }

    /// What a GGUF tensor name means.
    pub fn from_gguf_name(name: &str) -> NameMatch {
        let Some(base) = name.strip_suffix(".weight") else {
            return NameMatch::Unknown;
        };
        let id = match base {
            "token_embd" => Some(TensorId::TokenEmbd),
            "output_norm" => Some(TensorId::OutputNorm),
            "output" => Some(TensorId::Output),
            _ => base
                .strip_prefix("blk.")
                .and_then(parse_layer)
                .and_then(|(l, rest)| {
                    LayerTensor::ALL
                        .iter()
                        .find(|t| t.gguf_name() == rest)
                        .map(|&t| TensorId::Layer(l, t))
                }),
        };
        id.map_or(NameMatch::Unknown, NameMatch::Tensor)
    }

    /// The layer, for layer tensors.
    pub fn layer(&self) -> Option<usize> {
        match self {
            TensorId::Layer(l, _) => Some(*l),
            _ => None,
        }
    }

    /// The shape this tensor must have, in PyTorch order (outermost first).
    pub fn expected_shape(&self, s: &ModelShape) -> Vec<usize> {
        let kv = s.kv_heads * s.head_dim();
        match self {
            TensorId::TokenEmbd | TensorId::Output => vec![s.vocab, s.hidden],
            TensorId::OutputNorm => vec![s.hidden],
            TensorId::Layer(_, t) => match t {
                LayerTensor::AttnQ | LayerTensor::AttnOutput => vec![s.hidden, s.hidden],
                LayerTensor::AttnK | LayerTensor::AttnV => vec![kv, s.hidden],
                LayerTensor::FfnGate | LayerTensor::FfnUp => vec![s.ffn, s.hidden],
                LayerTensor::FfnDown => vec![s.hidden, s.ffn],
                LayerTensor::AttnNorm | LayerTensor::FfnNorm => vec![s.hidden],
            },
        }
    }
}

/// A `--type`: the mixes of llama.cpp's `llama-quantize` (and f32/f16/bf16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q6K,
    Q5KM,
    Q5KS,
    Q4KM,
    Q4KS,
}

impl FileType {
    /// Every mix, in the order `--help` lists them.
    pub const ALL: [FileType; 13] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q6K,
        FileType::Q5KM,
        FileType::Q5KS,
        FileType::Q4KM,
        FileType::Q4KS,
    ];

    /// The name `--type` takes.
    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "f32",
            FileType::F16 => "f16",
            FileType::BF16 => "bf16",
            FileType::Q8_0 => "q8_0",
            FileType::Q4_0 => "q4_0",
            FileType::Q4_1 => "q4_1",
            FileType::Q5_0 => "q5_0",
            FileType::Q5_1 => "q5_1",
            FileType::Q6K => "q6_k",
            FileType::Q5KM => "q5_k_m",
            FileType::Q5KS => "q5_k_s",
            FileType::Q4KM => "q4_k_m",
            FileType::Q4KS => "q4_k_s",
        }
    }

    /// The mix called `name` (case-insensitive; `q4_k` and `q5_k` mean the `_m` mixes, as in
    /// `llama-quantize`).
    pub fn from_name(name: &str) -> Option<FileType> {
        let lower = name.to_ascii_lowercase();
        let lower = match lower.as_str() {
            "q4_k" => "q4_k_m",
            "q5_k" => "q5_k_m",
            other => other,
        };
        FileType::ALL.iter().copied().find(|t| t.name() == lower)
    }

    /// llama.cpp's `enum llama_ftype`, stored as `general.file_type`.
    pub fn llama_ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q4KS => 14,
            FileType::Q4KM => 15,
            FileType::Q5KS => 16,
            FileType::Q5KM => 17,
            FileType::Q6K => 18,
            // LLAMA_FTYPE_MOSTLY_BF16 in llama.cpp releases after b2757
            FileType::BF16 => 32,
        }
    }

    /// The mix with llama.cpp file type `id`, if it is one of these.
    pub fn from_llama_ftype(id: u32) -> Option<FileType> {
        FileType::ALL
            .iter()
            .copied()
            .find(|t| t.llama_ftype() == id)
    }

    /// The type of the 2-D weights that no rule changes (`default_type` in llama.cpp).
    pub fn default_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q6K => GgmlType::Q6K,
            FileType::Q5KM | FileType::Q5KS => GgmlType::Q5K,
            FileType::Q4KM | FileType::Q4KS => GgmlType::Q4K,
        }
    }

    /// Whether the 2-D weights are quantized (the per-tensor rules apply only then).
    pub fn is_quantized(self) -> bool {
        self.default_type().is_quantized()
    }

    /// The names, for messages: `f32, f16, …`.
    pub fn names() -> String {
        FileType::ALL.map(|t| t.name()).join(", ")
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The type one tensor gets, and the warning when it had to fall back.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeChoice {
    pub ty: GgmlType,
    pub fallback: Option<String>,
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third one
/// in between.
pub fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The 32-block type llama.cpp falls back to when a K-quant's row is not a multiple of 256.
fn k_fallback(ty: GgmlType) -> Option<GgmlType> {
    match ty {
        GgmlType::Q4K => Some(GgmlType::Q5_0),
        GgmlType::Q5K => Some(GgmlType::Q5_1),
        GgmlType::Q6K => Some(GgmlType::Q8_0),
        // llama.cpp goes to IQ4_NL, which this project does not write: the nearest 32-block
        // type of at least as many bits
        GgmlType::Q2K | GgmlType::Q3K => Some(GgmlType::Q4_0),
        _ => None,
    }
}

/// llama.cpp's per-tensor type rules for one mix, with its counters (`quantize_state_internal`):
/// feed it the tensors in file order.
#[derive(Clone, Debug)]
pub struct Mixer {
    ftype: FileType,
    n_layer: usize,
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
}

impl Mixer {
    /// A mixer for a model of `n_layer` layers with `n_attention_wv` attn_v tensors.
    pub fn new(ftype: FileType, n_layer: usize, n_attention_wv: usize) -> Mixer {
        Mixer {
            ftype,
            n_layer,
            n_attention_wv,
            i_attention_wv: 0,
            i_ffn_down: 0,
        }
    }

    /// The type of the next tensor, `id` with ggml dims `dims`.
    pub fn choose(&mut self, id: &TensorId, dims: &[u64]) -> TypeChoice {
        let keep = |ty| TypeChoice { ty, fallback: None };
        // llama.cpp quantizes only tensors of 2 or more dims whose name does not end in
        // "_norm.weight"; 1-D tensors stay F32 (its converter writes norms as F32).
        if dims.len() < 2 {
            return keep(GgmlType::F32);
        }
        if !self.ftype.is_quantized() {
            return keep(self.ftype.default_type());
        }
        use FileType as F;
        let ftype = self.ftype;
        let nx = dims.first().copied().unwrap_or(0);
        let qk_k = QK_K as u64;
        let mut ty = ftype.default_type();
        match id {
            TensorId::Output => {
                if nx % qk_k != 0 {
                    ty = GgmlType::Q8_0;
                } else if ty != GgmlType::Q8_0 {
                    ty = GgmlType::Q6K;
                }
            }
            TensorId::Layer(_, LayerTensor::AttnV) => {
                let more = use_more_bits(self.i_attention_wv, self.n_attention_wv);
                if matches!(ftype, F::Q4KM | F::Q5KM) && more {
                    ty = GgmlType::Q6K;
                } else if ftype == F::Q4KS && self.i_attention_wv < 4 {
                    ty = GgmlType::Q5K;
                }
                // (XVERSE-65B is MODEL_65B in llama.cpp, so its MODEL_70B attn_v bump never
                // applies)
                self.i_attention_wv += 1;
            }
            TensorId::Layer(_, LayerTensor::FfnDown) => {
                let (i_layer, n_layer) = (self.i_ffn_down, self.n_layer);
                if ftype == F::Q4KM {
                    if use_more_bits(i_layer, n_layer) {
                        ty = GgmlType::Q6K;
                    }
                } else if ftype == F::Q5KM && use_more_bits(i_layer, n_layer) {
                    ty = GgmlType::Q6K;
                } else if ftype == F::Q4KS && i_layer < n_layer / 8 {
                    ty = GgmlType::Q5K;
                }
                self.i_ffn_down += 1;
            }
            _ => {}
        }
        let mut fallback = None;
        if ty.block_size() == QK_K && nx % qk_k != 0 {
            if let Some(fb) = k_fallback(ty) {
                fallback = Some(format!(
                    "row length {nx} is not a multiple of {QK_K}, required for {ty}: using fallback quantization {fb}"
                ));
                ty = fb;
            }
        }
        let block = ty.block_size() as u64;
        if nx % block != 0 {
            let note = format!(
                "row length {nx} is not a multiple of {block}, required for {ty}: storing it as f16"
            );
            fallback = Some(match fallback {
                Some(first) => format!("{first}; {note}"),
                None => note,
            });
            ty = GgmlType::F16;
        }
        TypeChoice { ty, fallback }
    }
}

/// How the source names its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// A Hugging Face checkpoint: HF names, rotate_half q/k, written in [`TensorId::all`] order.
    HuggingFace,
    /// A GGUF file: GGUF names, q/k already permuted, written in the file's order.
    Gguf,
}

/// One tensor of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    pub id: TensorId,
    /// The name in the source.
    pub source_name: String,
    /// The name in the output.
    pub name: String,
    /// PyTorch order (outermost first), as the source reports it.
    pub shape: Vec<usize>,
    /// ggml order (`dims[0]` is the row length).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Bytes in the output.
    pub bytes: u64,
    /// Bytes in the source.
    pub source_bytes: u64,
    pub source_dtype: Dtype,
    /// Permute rows from rotate_half into adjacent pairs, with this many heads.
    pub permute_heads: Option<usize>,
    /// The source tensor already has this type (a GGUF input): copy its bytes.
    pub copy: bool,
    /// Why the type is not the mix's usual one, when it had to fall back.
    pub fallback: Option<String>,
}

impl PlannedTensor {
    /// The spec the GGUF writer takes.
    pub fn spec(&self) -> TensorSpec {
        TensorSpec::new(self.name.clone(), self.ty, self.dims.clone())
    }

    /// Row length (ne0).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
}

/// The whole plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub ftype: FileType,
    pub tensors: Vec<PlannedTensor>,
}

impl Plan {
    /// Bytes of tensor data in the output (without alignment padding).
    pub fn output_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }

    /// Bytes of the planned tensors in the source.
    pub fn source_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.source_bytes).sum()
    }

    /// How many tensors get each type.
    pub fn counts_by_type(&self) -> BTreeMap<GgmlType, usize> {
        let mut m = BTreeMap::new();
        for t in &self.tensors {
            *m.entry(t.ty).or_insert(0) += 1;
        }
        m
    }

    /// The type planned for the tensor with output name `name`.
    pub fn type_of(&self, name: &str) -> Option<GgmlType> {
        self.tensors.iter().find(|t| t.name == name).map(|t| t.ty)
    }

    /// The fallback warnings, one per tensor that needed one.
    pub fn warnings(&self) -> Vec<String> {
        self.tensors
            .iter()
            .filter_map(|t| t.fallback.as_ref().map(|w| format!("{}: {w}", t.name)))
            .collect()
    }

    /// Prints every tensor with its type and bytes, then the totals (`--dry-run`).
    pub fn write_table(&self, out: &mut dyn Write, file_size: u64) -> io::Result<()> {
        let width = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        writeln!(
            out,
            "{:<width$}  {:<6}  {:<6}  {:<18}  {:>14}",
            "tensor", "from", "type", "ggml dims", "bytes"
        )?;
        for t in &self.tensors {
            let dims = format!("{:?}", t.dims);
            let note = match (&t.fallback, t.copy, t.permute_heads) {
                (Some(_), _, _) => "  (fallback)",
                (None, true, _) => "  (copied)",
                (None, false, Some(_)) => "  (q/k permuted)",
                _ => "",
            };
            writeln!(
                out,
                "{:<width$}  {:<6}  {:<6}  {:<18}  {:>14}{note}",
                t.name,
                t.source_dtype.to_string(),
                t.ty.name(),
                dims,
                t.bytes
            )?;
        }
        let counts: Vec<String> = self
            .counts_by_type()
            .iter()
            .map(|(ty, n)| format!("{n} {ty}"))
            .collect();
        writeln!(
            out,
            "{} tensors ({}), {} of tensor data from {} in the source",
            self.tensors.len(),
            counts.join(", "),
            human_bytes(self.output_bytes()),
            human_bytes(self.source_bytes())
        )?;
        writeln!(
            out,
            "file size: {file_size} bytes ({}), type {} (general.file_type {})",
            human_bytes(file_size),
            self.ftype,
            self.ftype.llama_ftype()
        )
    }
}

/// `1.23 GB`-style sizes (decimal units, like the model cards).
pub fn human_bytes(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2} GB", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} MB", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} kB", x / 1e3)
    } else {
        format!("{n} B")
    }
}

/// Joins problems into one line.
fn one_error(what: &str, problems: &[String]) -> ConvertError {
    const SHOWN: usize = 4;
    let mut msg = if problems.len() == 1 {
        format!("{what}: {}", problems[0])
    } else {
        format!(
            "{what}: {} problems: {}",
            problems.len(),
            problems
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    if problems.len() > SHOWN {
        msg.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    ConvertError(msg)
}

/// Plans the conversion of `tensors` (a source's tensor list) for a model of shape `shape`
/// into mix `ftype`. `hparams` names where the shape came from, for messages (`config.json`).
///
/// Every missing, unknown, duplicated or misshapen tensor is reported in one error.
pub fn build_plan(
    tensors: &[TensorMeta],
    shape: &ModelShape,
    ftype: FileType,
    naming: Naming,
    hparams: &str,
) -> Result<Plan, ConvertError> {
    shape
        .validate()
        .map_err(|e| convert_err!("{hparams}: {e}"))?;
    let mut problems = Vec::new();
    let mut found: HashMap<TensorId, &TensorMeta> = HashMap::new();
    let mut source_order = Vec::new();
    for t in tensors {
        let m = match naming {
            Naming::HuggingFace => TensorId::from_hf_name(&t.name),
            Naming::Gguf => TensorId::from_gguf_name(&t.name),
        };
        let file = t.file.display();
        match m {
            NameMatch::Skip => {}
            NameMatch::Unknown => problems.push(format!(
                "unexpected tensor {} in {file}: not part of an XVERSE model",
                t.name
            )),
            NameMatch::Tensor(id) => {
                if let Some(l) = id.layer().filter(|&l| l >= shape.layers) {
                    problems.push(format!(
                        "tensor {} in {file} is in layer {l}, but {hparams} has {} layers",
                        t.name, shape.layers
                    ));
                    continue;
                }
                if found.insert(id, t).is_some() {
                    problems.push(format!("tensor {} appears twice", t.name));
                    continue;
                }
                source_order.push(id);
                let expected = id.expected_shape(shape);
                if t.shape != expected {
                    problems.push(format!(
                        "tensor {} in {file} has shape {:?}, {hparams} implies {:?}",
                        t.name, t.shape, expected
                    ));
                }
            }
        }
    }
    let all = TensorId::all(shape.layers);
    let name_of = |id: &TensorId| match naming {
        Naming::HuggingFace => id.hf_name(),
        Naming::Gguf => id.gguf_name(),
    };
    let missing: Vec<&TensorId> = all.iter().filter(|id| !found.contains_key(id)).collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().take(4).map(|id| name_of(id)).collect();
        let more = if missing.len() > 4 {
            format!(" and {} more", missing.len() - 4)
        } else {
            String::new()
        };
        problems.push(format!(
            "{} tensor{} missing: {}{more}",
            missing.len(),
            if missing.len() == 1 { " is" } else { "s are" },
            names.join(", ")
        ));
    }
    if !problems.is_empty() {
        let what = tensors
            .first()
            .and_then(|t| t.file.parent())
            .map_or_else(|| "the checkpoint".to_string(), |p| p.display().to_string());
        return Err(one_error(&what, &problems));
    }
    let order = match naming {
        Naming::HuggingFace => all,
        Naming::Gguf => source_order,
    };
    let n_attention_wv = order
        .iter()
        .filter(|id| matches!(id, TensorId::Layer(_, LayerTensor::AttnV)))
        .count();
    let mut mixer = Mixer::new(ftype, shape.layers, n_attention_wv);
    let mut planned = Vec::with_capacity(order.len());
    for id in order {
        let Some(meta) = found.get(&id) else {
            continue;
        };
        let dims: Vec<u64> = meta.shape.iter().rev().map(|&d| d as u64).collect();
        let choice = mixer.choose(&id, &dims);
        let n: u64 = dims.iter().product();
        let bytes = choice.ty.bytes_for(n).ok_or_else(|| {
            convert_err!(
                "tensor {}: {n} elements do not fit {} blocks",
                meta.name,
                choice.ty
            )
        })?;
        let permute_heads = match (naming, id) {
            (Naming::HuggingFace, TensorId::Layer(_, LayerTensor::AttnQ)) => Some(shape.heads),
            (Naming::HuggingFace, TensorId::Layer(_, LayerTensor::AttnK)) => Some(shape.kv_heads),
            _ => None,
        };
        planned.push(PlannedTensor {
            id,
            source_name: meta.name.clone(),
            name: id.gguf_name(),
            shape: meta.shape.clone(),
            dims,
            ty: choice.ty,
            bytes,
            source_bytes: meta.stored_bytes,
            source_dtype: meta.dtype,
            permute_heads,
            copy: naming == Naming::Gguf && meta.dtype == Dtype::Ggml(choice.ty),
            fallback: choice.fallback,
        });
    }
    Ok(Plan {
        ftype,
        tensors: planned,
    })
}
