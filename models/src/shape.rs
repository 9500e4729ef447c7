//! The model shape shared by [`crate::TinySpec`] and [`crate::HfSpec`]: its sizes, the rules
//! every XVERSE model obeys ([`Shape::validate`]), its head dimension and parameter count.

use std::error::Error;
use std::fmt;

use crate::presets::Preset;

/// The sizes of an XVERSE model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Hidden size (`hidden_size`).
    pub hidden: usize,
    /// Feed-forward size (`intermediate_size`).
    pub ffn: usize,
    /// Attention heads (`num_attention_heads`).
    pub heads: usize,
    /// Key/value heads (`num_key_value_heads`); `None` means = `heads`.
    pub kv_heads: Option<usize>,
    /// Number of layers (`num_hidden_layers`).
    pub layers: usize,
    /// Vocabulary size (`vocab_size`).
    pub vocab: usize,
    /// Training context length (`max_position_embeddings`).
    pub context: usize,
}

/// The smallest vocabulary a model writer accepts, and what it must hold (for the message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinVocab {
    /// Fewest tokens.
    pub tokens: usize,
    /// What these tokens are, like `4 special + 256 byte tokens`.
    pub holds: &'static str,
}

/// A shape that breaks a rule of [`Shape::validate`] (or sizes that overflow). Its message has no
/// prefix: the spec's error puts its own (`invalid tiny model: …`) in front.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShapeError {
    /// A dimension that must be positive is zero.
    Zero(&'static str),
    /// `hidden` is not a multiple of `heads`.
    HiddenNotDivisible { hidden: usize, heads: usize },
    /// `hidden / heads` is odd: rotary embedding rotates pairs.
    OddHeadDim { head_dim: usize },
    /// `heads` is not a multiple of `kv_heads`.
    HeadsNotDivisible { heads: usize, kv_heads: usize },
    /// Fewer tokens than the vocabulary needs.
    VocabTooSmall { vocab: usize, min: MinVocab },
    /// A size does not fit (the u32 of GGUF metadata and the JSON integers, usize, or u64).
    TooLarge(&'static str),
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::Zero(what) => write!(f, "{what} must be at least 1"),
            ShapeError::HiddenNotDivisible { hidden, heads } => {
                write!(f, "hidden {hidden} is not divisible by heads {heads}")
            }
            ShapeError::OddHeadDim { head_dim } => write!(
                f,
                "head dimension hidden/heads = {head_dim} must be even (rotary embedding rotates pairs)"
            ),
            ShapeError::HeadsNotDivisible { heads, kv_heads } => {
                write!(f, "heads {heads} is not divisible by kv heads {kv_heads}")
            }
            ShapeError::VocabTooSmall { vocab, min } => write!(
                f,
                "vocab {vocab} is smaller than {} ({})",
                min.tokens, min.holds
            ),
            ShapeError::TooLarge(what) => write!(f, "{what} is too large"),
        }
    }
}

impl Error for ShapeError {}

impl Shape {
    /// The shape of a preset (at full size!); `kv_heads` stays `None` (no XVERSE model has GQA).
    pub fn from_preset(p: &Preset) -> Shape {
        Shape {
            hidden: p.hidden,
            ffn: p.ffn,
            heads: p.heads,
            kv_heads: None,
            layers: p.layers,
            vocab: p.vocab,
            context: p.context,
        }
    }

    /// Key/value heads (`heads` when not set).
    pub fn kv_heads(&self) -> usize {
        self.kv_heads.unwrap_or(self.heads)
    }

    /// `hidden / heads` (0 when `heads` is 0).
    pub fn head_dim(&self) -> usize {
        self.hidden.checked_div(self.heads).unwrap_or(0)
    }

    /// Checks the sizes (each at least 1 and fitting a u32; the vocabulary at least `min` and
    /// fitting an i32), that `heads` divides `hidden` into heads of even size and that
    /// `kv_heads` divides `heads`. The size of the whole model is [`Shape::check_params`]'s.
    pub fn validate(&self, min: MinVocab) -> Result<(), ShapeError> {
        for (v, what) in [
            (self.hidden, "hidden"),
            (self.ffn, "ffn"),
            (self.heads, "heads"),
            (self.kv_heads(), "kv_heads"),
            (self.layers, "layers"),
            (self.context, "context"),
        ] {
            if v == 0 {
                return Err(ShapeError::Zero(what));
            }
            if u32::try_from(v).is_err() {
                return Err(ShapeError::TooLarge(what));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(ShapeError::HiddenNotDivisible {
                hidden: self.hidden,
                heads: self.heads,
            });
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(ShapeError::OddHeadDim {
                head_dim: self.head_dim(),
            });
        }
        if !self.heads.is_multiple_of(self.kv_heads()) {
            return Err(ShapeError::HeadsNotDivisible {
                heads: self.heads,
                kv_heads: self.kv_heads(),
            });
        }
        if self.vocab < min.tokens {
            return Err(ShapeError::VocabTooSmall {
                vocab: self.vocab,
                min,
            });
        }
        if i32::try_from(self.vocab).is_err() {
            return Err(ShapeError::TooLarge("vocab"));
        }
        Ok(())
    }

    /// Checks that every byte count of the model (4 bytes per parameter at most) fits u64 and
    /// usize.
    pub fn check_params(&self) -> Result<(), ShapeError> {
        let limit = (u64::MAX as u128 / 8).min(usize::MAX as u128 / 8);
        if self.params_u128() > limit {
            return Err(ShapeError::TooLarge("model"));
        }
        Ok(())
    }

    /// Number of parameters: `2·vocab·hidden + layers·(2·hidden² + 2·hidden·kv + 3·hidden·ffn
    /// + 2·hidden) + hidden` (kv = kv_heads·head_dim, the formula of [`Preset::params`] with
    /// GQA k/v); saturates at `u64::MAX`.
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
        let kv = self.kv_heads() as u128 * self.head_dim() as u128;
        2 * v * h + l * (2 * h * h + 2 * h * kv + 3 * h * f + 2 * h) + h
    }
}

/// `hidden 64 layers 2 heads 4 (kv 4) ffn 172 vocab 512 context 2048`.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hidden {} layers {} heads {} (kv {}) ffn {} vocab {} context {}",
            self.hidden,
            self.layers,
            self.heads,
            self.kv_heads(),
            self.ffn,
            self.vocab,
            self.context
        )
    }
}

/// How a tensor's values are drawn: norms 1 + 0.1·N(0,1), weights N(0, std²).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Init {
    Norm,
    Weight { std: f64 },
}

/// What a tensor is in the model (the writers name it in their own way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Embedding,
    AttnNorm,
    Q,
    K,
    V,
    O,
    FfnNorm,
    Gate,
    Up,
    Down,
    OutputNorm,
    Output,
}

/// One tensor of the model: what it is, its layer (0 outside the layers), its shape (`[out,
/// in]` for weights, `[hidden]` for norms) and its initialisation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PlannedTensor {
    pub role: Role,
    pub layer: usize,
    pub shape: Vec<usize>,
    pub init: Init,
}

impl Shape {
    /// Every tensor in model order (embedding; per layer attention norm, q, k, v, o, ffn norm,
    /// gate, up, down; final norm; output) with the developer fixtures' scales: embedding std
    /// 0.5, q/k 1.5/√hidden, the others 1/√fan_in, o and down also divided by √(2·layers).
    pub(crate) fn plan(&self) -> Vec<PlannedTensor> {
        let (h, f, v) = (self.hidden, self.ffn, self.vocab);
        let kv = self.kv_heads() * self.head_dim();
        let sh = 1.0 / (h as f64).sqrt();
        let sf = 1.0 / (f as f64).sqrt();
        let res = 1.0 / (2.0 * self.layers as f64).sqrt();
        let weight = |role, layer, out, inp, std| PlannedTensor {
            role,
            layer,
            shape: vec![out, inp],
            init: Init::Weight { std },
        };
        let norm = |role, layer| PlannedTensor {
            role,
            layer,
            shape: vec![h],
            init: Init::Norm,
        };
        let mut p = Vec::with_capacity(9 * self.layers + 3);
        p.push(weight(Role::Embedding, 0, v, h, 0.5));
        for i in 0..self.layers {
            p.extend([
                norm(Role::AttnNorm, i),
                weight(Role::Q, i, h, h, 1.5 * sh),
                weight(Role::K, i, kv, h, 1.5 * sh),
                weight(Role::V, i, kv, h, sh),
                weight(Role::O, i, h, h, sh * res),
                norm(Role::FfnNorm, i),
                weight(Role::Gate, i, f, h, sh),
                weight(Role::Up, i, f, h, sh),
                weight(Role::Down, i, h, f, sf * res),
            ]);
        }
        p.push(norm(Role::OutputNorm, 0));
        p.push(weight(Role::Output, 0, v, h, sh));
        p
    }
}
