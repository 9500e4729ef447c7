//! The Hugging Face side of a checkpoint folder: `config.json` (required), and
//! `generation_config.json`, `tokenizer_config.json`, `special_tokens_map.json` when present.
//!
//! Only the XVERSE dense architecture (`XverseForCausalLM`) is accepted; the MoE models are
//! refused with a plain message, anything else with the architecture it found.

use crate::convert_err;
use crate::plan::ModelShape;
use crate::source::ConvertError;
use serde::Deserialize;
use serde_json::Value as Json;
use std::fs;
use std::path::{Path, PathBuf};

/// The architecture this converter accepts.
pub const ARCHITECTURE: &str = "XverseForCausalLM";
/// XVERSE's mixture-of-experts architecture, which is not supported yet.
pub const MOE_ARCHITECTURE: &str = "XverseMoeForCausalLM";
/// `rope_theta` when config.json has none (every published XVERSE model).
pub const DEFAULT_ROPE_THETA: f64 = 10000.0;

/// `config.json` as written by Hugging Face (only the keys the converter uses).
#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: Option<u64>,
    intermediate_size: Option<u64>,
    num_attention_heads: Option<u64>,
    num_key_value_heads: Option<u64>,
    num_hidden_layers: Option<u64>,
    max_position_embeddings: Option<u64>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    vocab_size: Option<u64>,
    bos_token_id: Option<Json>,
    eos_token_id: Option<Json>,
    pad_token_id: Option<Json>,
    torch_dtype: Option<String>,
    tie_word_embeddings: Option<bool>,
    rope_scaling: Option<Json>,
    #[serde(rename = "_name_or_path")]
    name_or_path: Option<String>,
    num_experts: Option<Json>,
}

/// Linear rope scaling, the only kind llama.cpp's xverse converter carries over.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeScaling {
    pub factor: f64,
}

/// The model hyperparameters and special ids from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct HfConfig {
    pub architecture: String,
    pub model_type: Option<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    /// `num_key_value_heads`, or `num_attention_heads` when absent (all published models).
    pub num_key_value_heads: usize,
    pub num_hidden_layers: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    /// `rope_theta`, or 10000 when absent.
    pub rope_theta: f64,
    pub vocab_size: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// `torch_dtype` as written (`"bfloat16"`, `"float16"`, `"float32"`).
    pub torch_dtype: Option<String>,
    pub tie_word_embeddings: bool,
    pub rope_scaling: Option<RopeScaling>,
    /// `_name_or_path`, when the config has it.
    pub name_or_path: Option<String>,
}

/// Everything read from the JSON files of a checkpoint folder.
#[derive(Clone, Debug)]
pub struct HfFiles {
    pub dir: PathBuf,
    pub config: HfConfig,
    /// `generation_config.json`, when present.
    pub generation_config: Option<Json>,
    /// `tokenizer_config.json`, when present.
    pub tokenizer_config: Option<Json>,
    /// `special_tokens_map.json`, when present.
    pub special_tokens_map: Option<Json>,
}

/// A token id in a config: an integer, or a list of integers (the first is used), or null.
fn token_id(file: &Path, key: &str, v: Option<&Json>) -> Result<Option<u32>, ConvertError> {
    let bad = || {
        convert_err!(
            "{}: {key} must be a token id (a non-negative integer), found {}",
            file.display(),
            v.map_or_else(String::new, |v| v.to_string())
        )
    };
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(bad),
        Some(Json::Array(items)) => match items.first() {
            None => Ok(None),
            Some(first) => token_id(file, key, Some(first)),
        },
        Some(_) => Err(bad()),
    }
}

fn read_json(path: &Path) -> Result<Json, ConvertError> {
    let text = fs::read_to_string(path)
        .map_err(|e| convert_err!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| convert_err!("{}: not valid JSON: {e}", path.display()))
}

fn read_optional_json(path: &Path) -> Result<Option<Json>, ConvertError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

fn to_usize(file: &Path, key: &str, v: Option<u64>) -> Result<usize, ConvertError> {
    let v = v.ok_or_else(|| convert_err!("{}: {key} is missing", file.display()))?;
    usize::try_from(v).map_err(|_| convert_err!("{}: {key} {v} is too large", file.display()))
}

impl HfConfig {
    /// Parses the text of a `config.json`; `file` names it in messages.
    pub fn parse(text: &str, file: &Path) -> Result<HfConfig, ConvertError> {
        let shown = file.display();
        let json: Json =
            serde_json::from_str(text).map_err(|e| convert_err!("{shown}: not valid JSON: {e}"))?;
        if !json.is_object() {
            return Err(convert_err!("{shown}: expected a JSON object"));
        }
        let raw: RawConfig = serde_json::from_value(json)
            .map_err(|e| convert_err!("{shown}: unexpected value: {e}"))?;

        let archs = raw.architectures.clone().unwrap_or_default();
        let architecture = if archs.iter().any(|a| a == ARCHITECTURE) {
            ARCHITECTURE.to_string()
        } else if archs.iter().any(|a| a == MOE_ARCHITECTURE)
            || raw.num_experts.is_some() && raw.model_type.as_deref() == Some("xverse")
        {
            return Err(convert_err!(
                "{shown}: architecture {MOE_ARCHITECTURE}: XVERSE MoE models are not supported yet \
                 (only {ARCHITECTURE} converts)"
            ));
        } else if archs.is_empty() {
            if raw.model_type.as_deref() == Some("xverse") {
                ARCHITECTURE.to_string()
            } else {
                return Err(convert_err!(
                    "{shown}: no \"architectures\" and model_type {:?}: not an XVERSE model \
                     (expected {ARCHITECTURE})",
                    raw.model_type.as_deref().unwrap_or("(none)")
                ));
            }
        } else {
            return Err(convert_err!(
                "{shown}: architecture {} is not XVERSE's: this converter handles {ARCHITECTURE} only",
                archs.join(", ")
            ));
        };

        let hidden_size = to_usize(file, "hidden_size", raw.hidden_size)?;
        let intermediate_size = to_usize(file, "intermediate_size", raw.intermediate_size)?;
        let num_attention_heads = to_usize(file, "num_attention_heads", raw.num_attention_heads)?;
        let num_key_value_heads = match raw.num_key_value_heads {
            Some(_) => to_usize(file, "num_key_value_heads", raw.num_key_value_heads)?,
            None => num_attention_heads,
        };
        let num_hidden_layers = to_usize(file, "num_hidden_layers", raw.num_hidden_layers)?;
        let max_position_embeddings =
            to_usize(file, "max_position_embeddings", raw.max_position_embeddings)?;
        let vocab_size = to_usize(file, "vocab_size", raw.vocab_size)?;
        let rms_norm_eps = raw
            .rms_norm_eps
            .ok_or_else(|| convert_err!("{shown}: rms_norm_eps is missing"))?;
        if !rms_norm_eps.is_finite() || rms_norm_eps < 0.0 {
            return Err(convert_err!(
                "{shown}: rms_norm_eps {rms_norm_eps} is not a finite non-negative number"
            ));
        }
        let rope_theta = raw.rope_theta.unwrap_or(DEFAULT_ROPE_THETA);
        if !rope_theta.is_finite() || rope_theta <= 0.0 {
            return Err(convert_err!(
                "{shown}: rope_theta {rope_theta} is not a positive number"
            ));
        }
        let rope_scaling = match &raw.rope_scaling {
            Some(Json::Object(m)) => {
                let kind = m.get("type").or_else(|| m.get("rope_type"));
                let factor = m.get("factor").and_then(Json::as_f64);
                match (kind.and_then(Json::as_str), factor) {
                    (Some("linear"), Some(factor)) => Some(RopeScaling { factor }),
                    (kind, _) => {
                        return Err(convert_err!(
                            "{shown}: rope_scaling of type {} is not supported (only linear)",
                            kind.unwrap_or("(none)")
                        ))
                    }
                }
            }
            None | Some(Json::Null) => None,
            Some(other) => {
                return Err(convert_err!(
                    "{shown}: rope_scaling must be an object, found {other}"
                ))
            }
        };
        let config = HfConfig {
            architecture,
            model_type: raw.model_type,
            hidden_size,
            intermediate_size,
            num_attention_heads,
            num_key_value_heads,
            num_hidden_layers,
            max_position_embeddings,
            rms_norm_eps,
            rope_theta,
            vocab_size,
            bos_token_id: token_id(file, "bos_token_id", raw.bos_token_id.as_ref())?,
            eos_token_id: token_id(file, "eos_token_id", raw.eos_token_id.as_ref())?,
            pad_token_id: token_id(file, "pad_token_id", raw.pad_token_id.as_ref())?,
            torch_dtype: raw.torch_dtype,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            rope_scaling,
            name_or_path: raw.name_or_path.filter(|s| !s.is_empty()),
        };
        config
            .shape()
            .validate()
            .map_err(|e| convert_err!("{shown}: {e}"))?;
        if config.tie_word_embeddings {
            return Err(convert_err!(
                "{shown}: tie_word_embeddings is true, but XVERSE models have a separate lm_head \
                 and llama.cpp's xverse architecture needs one"
            ));
        }
        Ok(config)
    }

    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<HfConfig, ConvertError> {
        let file = dir.join("config.json");
        let text = fs::read_to_string(&file).map_err(|e| {
            convert_err!(
                "cannot read {}: {e} (a Hugging Face checkpoint folder has a config.json)",
                file.display()
            )
        })?;
        HfConfig::parse(&text, &file)
    }

    /// The tensor shapes that follow from this config.
    pub fn shape(&self) -> ModelShape {
        ModelShape {
            hidden: self.hidden_size,
            ffn: self.intermediate_size,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            layers: self.num_hidden_layers,
            vocab: self.vocab_size,
        }
    }
}

impl HfFiles {
    /// Reads `config.json` (required) and the optional JSON files of `dir`.
    pub fn load(dir: &Path) -> Result<HfFiles, ConvertError> {
        let config = HfConfig::load(dir)?;
        Ok(HfFiles {
            dir: dir.to_path_buf(),
            config,
            generation_config: read_optional_json(&dir.join("generation_config.json"))?,
            tokenizer_config: read_optional_json(&dir.join("tokenizer_config.json"))?,
            special_tokens_map: read_optional_json(&dir.join("special_tokens_map.json"))?,
        })
    }

    /// A token id from `generation_config.json` (`bos_token_id`, …), when present.
    pub fn generation_token_id(&self, key: &str) -> Result<Option<u32>, ConvertError> {
        match &self.generation_config {
            Some(g) => token_id(&self.dir.join("generation_config.json"), key, g.get(key)),
            None => Ok(None),
        }
    }

    /// `general.name`: the folder's name, as llama.cpp's converter writes it.
    pub fn model_name(&self) -> String {
        let canonical = fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        canonical
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "xverse".to_string())
    }
}
