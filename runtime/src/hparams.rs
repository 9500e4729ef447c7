//! XVERSE hyperparameters from a GGUF file's `xverse.*` keys, with llama.cpp's defaults where
//! its converter leaves a key out.

use std::fmt;
use xverse_quant::gguf::{Gguf, GgufError};

/// The architecture name XVERSE files carry in `general.architecture`.
pub const ARCH: &str = "xverse";

/// Shape and constants of an XVERSE model.
#[derive(Clone, Debug, PartialEq)]
pub struct Hparams {
    pub context_length: u32,
    pub hidden: u32,
    pub layers: u32,
    pub ffn: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub rope_dims: u32,
    pub rope_freq_base: f32,
    pub rms_norm_eps: f32,
    pub vocab: u32,
}

/// Why a file's hyperparameters were refused.
#[derive(Debug)]
pub enum HparamsError {
    Gguf(GgufError),
    NotXverse { file: String, arch: String },
    Invalid { file: String, what: String },
}

impl fmt::Display for HparamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HparamsError::Gguf(e) => write!(f, "{e}"),
            HparamsError::NotXverse { file, arch } => write!(
                f,
                "{file}: general.architecture is \"{arch}\", expected \"{ARCH}\""
            ),
            HparamsError::Invalid { file, what } => write!(f, "{file}: {what}"),
        }
    }
}

impl std::error::Error for HparamsError {}

impl From<GgufError> for HparamsError {
    fn from(e: GgufError) -> Self {
        HparamsError::Gguf(e)
    }
}

impl Hparams {
    /// Reads and checks the hyperparameters of an XVERSE GGUF file.
    pub fn from_gguf(g: &Gguf) -> Result<Hparams, HparamsError> {
        let arch = g.get_str("general.architecture")?;
        if arch != ARCH {
            return Err(HparamsError::NotXverse {
                file: g.name().to_string(),
                arch: arch.to_string(),
            });
        }
        let key = |k: &str| format!("{ARCH}.{k}");
        let heads = g.get_u32(&key("attention.head_count"))?;
        let hidden = g.get_u32(&key("embedding_length"))?;
        let invalid = |what: String| HparamsError::Invalid {
            file: g.name().to_string(),
            what,
        };
        if heads == 0 || hidden == 0 || hidden % heads != 0 {
            return Err(invalid(format!(
                "embedding_length {hidden} is not a positive multiple of head_count {heads}"
            )));
        }
        let head_dim = hidden / heads;
        // llama.cpp: head_count_kv defaults to head_count, rope dims to the head size,
        // freq_base to 10000.
        let kv_heads = match g.get(&key("attention.head_count_kv")) {
            Some(_) => g.get_u32(&key("attention.head_count_kv"))?,
            None => heads,
        };
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(invalid(format!(
                "head_count {heads} is not a multiple of head_count_kv {kv_heads}"
            )));
        }
        let rope_dims = match g.get(&key("rope.dimension_count")) {
            Some(_) => g.get_u32(&key("rope.dimension_count"))?,
            None => head_dim,
        };
        if rope_dims == 0 || rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(invalid(format!(
                "rope.dimension_count {rope_dims} must be even and at most the head size {head_dim}"
            )));
        }
        let rope_freq_base = match g.get(&key("rope.freq_base")) {
            Some(_) => g.get_f32(&key("rope.freq_base"))?,
            None => 10000.0,
        };
        let rms_norm_eps = g.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        if !(rope_freq_base.is_finite() && rope_freq_base > 0.0) {
            return Err(invalid(format!(
                "rope.freq_base {rope_freq_base} is not positive"
            )));
        }
        if !(rms_norm_eps.is_finite() && rms_norm_eps >= 0.0) {
            return Err(invalid(format!(
                "attention.layer_norm_rms_epsilon {rms_norm_eps} is not a finite non-negative number"
            )));
        }
        let vocab = match g.tensor_info("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => u32::try_from(t.dims[1])
                .map_err(|_| invalid(format!("token_embd.weight has {} rows", t.dims[1])))?,
            Some(t) => {
                return Err(invalid(format!(
                    "token_embd.weight has shape {:?}, expected [{hidden}, vocab]",
                    t.dims
                )))
            }
            None => return Err(invalid("tensor token_embd.weight is missing".into())),
        };
        let layers = g.get_u32(&key("block_count"))?;
        if layers == 0 {
            return Err(invalid("block_count is 0".into()));
        }
        Ok(Hparams {
            context_length: g.get_u32(&key("context_length"))?,
            hidden,
            layers,
            ffn: g.get_u32(&key("feed_forward_length"))?,
            heads,
            kv_heads,
            head_dim,
            rope_dims,
            rope_freq_base,
            rms_norm_eps,
            vocab,
        })
    }

    /// Parameters of the weights (embedding + layers + norm + output).
    pub fn parameters(&self) -> u64 {
        let (h, f, v, l) = (
            self.hidden as u64,
            self.ffn as u64,
            self.vocab as u64,
            self.layers as u64,
        );
        let kv = self.kv_heads as u64 * self.head_dim as u64;
        2 * v * h + l * (2 * h * h + 2 * h * kv + 3 * h * f + 2 * h) + h
    }
}
