//! The tokenizer as GGUF metadata, the way llama.cpp b2757's converter writes it for xverse
//! (`XverseModel.set_vocab` in `convert-hf-to-gguf.py`), plus what llama.cpp needs to tokenize
//! like Hugging Face and what our runtime needs to tokenize exactly like it.
//!
//! * `tokenizer.ggml.model = "llama"`; `tokenizer.ggml.tokens`: every id `0..vocab_size` of
//!   `tokenizer.json` (model vocab and added tokens). When `config.json`'s `vocab_size` is larger
//!   than the tokenizer, the missing ids become `[PAD{id}]` (USER_DEFINED), as llama.cpp's
//!   converters pad. A token that is exactly `"\0"` is written as `<b'\x00'>`, as llama.cpp does.
//! * `tokenizer.ggml.token_type`: `<0xNN>` byte tokens BYTE (6); the unk token UNKNOWN (2);
//!   other special added tokens CONTROL (3); other added tokens USER_DEFINED (4); the rest
//!   NORMAL (1). (llama.cpp's xverse converter marks `<unk>` CONTROL, as it is a special added
//!   token; here it is UNKNOWN, as llama.cpp's SentencePiece converter marks it.)
//! * `tokenizer.ggml.scores` (llama.cpp's xverse converter writes none, so its SentencePiece
//!   tokenizer merges with all scores 0): a token made by BPE merge number `r` scores `-r`, so
//!   llama.cpp's highest-score-first bigram merging applies the merges in BPE rank order; a token
//!   no merge makes (single characters, bytes, added tokens) scores `-(n_merges + id)`, below
//!   every merge.
//! * Special ids as llama.cpp's `SpecialVocab` finds them: `tokenizer_config.json`'s
//!   `{bos,eos,unk,sep,pad,cls,mask}_token` looked up among `tokenizer.json`'s added tokens, then
//!   `special_tokens_map.json` the same way, then `config.json`'s and
//!   `generation_config.json`'s `*_token_id`; the BPE model's `unk_token` for unk last.
//! * `tokenizer.ggml.add_bos_token = false` (XVERSE's tokenizer adds nothing), `add_eos_token`
//!   when tokenizer_config.json sets it, `tokenizer.ggml.add_space_prefix = false` (Metaspace
//!   with `prepend_scheme: never`), `tokenizer.chat_template` when tokenizer_config.json has one,
//!   and `tokenizer.huggingface.json`: the original tokenizer.json text.

use crate::config::HfFiles;
use crate::convert_err;
use crate::source::ConvertError;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::fs;
use xverse_quant::gguf::{Value, ValueType};

/// llama.cpp's `llama_token_type` values.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const BYTE: i32 = 6;
}

/// The special token kinds llama.cpp's `SpecialVocab` looks for, with their GGUF keys.
const SPECIAL_KINDS: [(&str, &str); 7] = [
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("sep", "tokenizer.ggml.seperator_token_id"),
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("cls", "tokenizer.ggml.cls_token_id"),
    ("mask", "tokenizer.ggml.mask_token_id"),
];

/// The tokenizer, ready to be written as GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub token_types: Vec<i32>,
    /// `(GGUF key, id)` in the order they were found.
    pub special_ids: Vec<(&'static str, u32)>,
    pub add_eos_token: Option<bool>,
    pub chat_template: Option<String>,
    /// The original `tokenizer.json`.
    pub hf_json: String,
    /// Ids that `config.json`'s vocab_size has and the tokenizer lacks (written as `[PAD{id}]`).
    pub padded: usize,
    /// Problems that do not stop the conversion.
    pub warnings: Vec<String>,
}

/// Whether `s` is a byte-fallback token `<0xNN>`.
fn is_byte_token(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6
        && b.starts_with(b"<0x")
        && b[5] == b'>'
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}

/// The content of a `{kind}_token` entry: a string, or an object with `content`.
fn token_content(v: Option<&Json>) -> Option<&str> {
    match v? {
        Json::String(s) => Some(s),
        Json::Object(m) => m.get("content").and_then(Json::as_str),
        _ => None,
    }
}

/// Merge ranks of the tokens BPE merges make: token text → first rank that makes it.
fn merge_ranks(json: &Json) -> (HashMap<String, usize>, usize) {
    let model = json.get("model");
    let prefix = model
        .and_then(|m| m.get("continuing_subword_prefix"))
        .and_then(Json::as_str)
        .unwrap_or("");
    let merges = model
        .and_then(|m| m.get("merges"))
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut ranks = HashMap::with_capacity(merges.len());
    for (rank, m) in merges.iter().enumerate() {
        let pair = match m {
            Json::String(s) => s.split_once(' '),
            Json::Array(v) => match (
                v.first().and_then(Json::as_str),
                v.get(1).and_then(Json::as_str),
            ) {
                (Some(a), Some(b)) => Some((a, b)),
                _ => None,
            },
            _ => None,
        };
        if let Some((a, b)) = pair {
            let b = if prefix.is_empty() {
                b
            } else {
                b.strip_prefix(prefix).unwrap_or(b)
            };
            ranks.entry(format!("{a}{b}")).or_insert(rank);
        }
    }
    (ranks, merges.len())
}

impl Vocab {
    /// Reads `tokenizer.json` (required) through the `tokenizers` crate and builds the vocab for
    /// `config.json`'s `vocab_size`.
    pub fn load(files: &HfFiles) -> Result<Vocab, ConvertError> {
        let path = files.dir.join("tokenizer.json");
        let text = fs::read_to_string(&path).map_err(|e| {
            convert_err!(
                "cannot read {}: {e} (XVERSE checkpoints ship a tokenizer.json; it is needed)",
                path.display()
            )
        })?;
        Vocab::from_json(&text, files, &path.display().to_string())
    }

    /// Builds the vocab from the text of a `tokenizer.json`; `name` names it in messages.
    pub fn from_json(text: &str, files: &HfFiles, name: &str) -> Result<Vocab, ConvertError> {
        let tokenizer = xverse_runtime::tokenizer_json::tokenizer(text).map_err(|e| {
            convert_err!("{name}: not a tokenizer the tokenizers library reads: {e}")
        })?;
        let json: Json =
            serde_json::from_str(text).map_err(|e| convert_err!("{name}: not valid JSON: {e}"))?;
        let vocab_size = files.config.vocab_size;
        let mut warnings = Vec::new();

        let mut by_id: Vec<Option<String>> = vec![None; vocab_size];
        for (token, id) in tokenizer.get_vocab(true) {
            let slot = usize::try_from(id).ok().and_then(|i| by_id.get_mut(i));
            match slot {
                Some(slot) => {
                    // the same id twice (model and added): keep one deterministically
                    if slot.as_ref().is_none_or(|old| token < *old) {
                        *slot = Some(token);
                    }
                }
                None => {
                    return Err(convert_err!(
                        "{name}: token {token:?} has id {id}, but config.json's vocab_size is {vocab_size}"
                    ))
                }
            }
        }
        let added = tokenizer.get_added_tokens_decoder();

        // special ids, in llama.cpp's SpecialVocab order
        let added_list: Vec<(String, u32)> = json
            .get("added_tokens")
            .and_then(Json::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(|t| {
                        let content = t.get("content")?.as_str()?.to_string();
                        let id = u32::try_from(t.get("id")?.as_u64()?).ok()?;
                        Some((content, id))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut special_ids: Vec<(&'static str, u32)> = Vec::new();
        let mut set = |kind: &str, id: Option<u32>, from: &str, warnings: &mut Vec<String>| {
            let Some(id) = id else { return };
            let Some(&(_, key)) = SPECIAL_KINDS.iter().find(|(k, _)| *k == kind) else {
                return;
            };
            if special_ids.iter().any(|(k, _)| *k == key) {
                return;
            }
            if (id as usize) < vocab_size {
                special_ids.push((key, id));
            } else {
                warnings.push(format!(
                    "{from}: {kind} token id {id} is not below vocab_size {vocab_size}; skipped"
                ));
            }
        };
        for (file, map) in [
            ("tokenizer_config.json", files.tokenizer_config.as_ref()),
            ("special_tokens_map.json", files.special_tokens_map.as_ref()),
        ] {
            let Some(map) = map else { continue };
            for (kind, _) in SPECIAL_KINDS {
                if let Some(content) = token_content(map.get(format!("{kind}_token").as_str())) {
                    let id = added_list
                        .iter()
                        .find(|(c, _)| c == content)
                        .map(|&(_, id)| id);
                    set(kind, id, file, &mut warnings);
                }
            }
        }
        let c = &files.config;
        for (kind, id) in [
            ("bos", c.bos_token_id),
            ("eos", c.eos_token_id),
            ("pad", c.pad_token_id),
        ] {
            set(kind, id, "config.json", &mut warnings);
        }
        for kind in ["bos", "eos", "pad"] {
            let id = files.generation_token_id(&format!("{kind}_token_id"))?;
            set(kind, id, "generation_config.json", &mut warnings);
        }
        let model_unk = match tokenizer.get_model() {
            tokenizers::ModelWrapper::BPE(bpe) => bpe
                .get_unk_token()
                .as_ref()
                .and_then(|u| tokenizer.token_to_id(u)),
            _ => None,
        };
        set("unk", model_unk, name, &mut warnings);
        let unk_id = special_ids
            .iter()
            .find(|(k, _)| *k == "tokenizer.ggml.unknown_token_id")
            .map(|&(_, id)| id);

        let (ranks, n_merges) = merge_ranks(&json);
        let mut tokens = Vec::with_capacity(vocab_size);
        let mut scores = Vec::with_capacity(vocab_size);
        let mut token_types = Vec::with_capacity(vocab_size);
        let mut padded = 0;
        for (id, tok) in by_id.into_iter().enumerate() {
            let id32 = id as u32;
            let Some(tok) = tok else {
                padded += 1;
                tokens.push(format!("[PAD{id}]"));
                scores.push(-((n_merges + id) as f32));
                token_types.push(token_type::USER_DEFINED);
                continue;
            };
            let score = match ranks.get(&tok) {
                Some(&r) => -(r as f32),
                None => -((n_merges + id) as f32),
            };
            let (text, ty) = if tok == "\0" {
                ("<b'\\x00'>".to_string(), token_type::BYTE)
            } else if is_byte_token(&tok) {
                (tok, token_type::BYTE)
            } else if Some(id32) == unk_id {
                (tok, token_type::UNKNOWN)
            } else if let Some(a) = added.get(&id32) {
                let ty = if a.special {
                    token_type::CONTROL
                } else {
                    token_type::USER_DEFINED
                };
                (tok, ty)
            } else {
                (tok, token_type::NORMAL)
            };
            tokens.push(text);
            scores.push(score);
            token_types.push(ty);
        }
        if padded > 0 {
            warnings.push(format!(
                "{name}: {padded} of config.json's {vocab_size} token ids are not in the tokenizer; written as [PAD<id>]"
            ));
        }

        let tc = files.tokenizer_config.as_ref();
        let add_eos_token = tc
            .and_then(|t| t.get("add_eos_token"))
            .and_then(Json::as_bool);
        let chat_template = tc
            .and_then(|t| t.get("chat_template"))
            .and_then(Json::as_str)
            .map(str::to_string);
        Ok(Vocab {
            tokens,
            scores,
            token_types,
            special_ids,
            add_eos_token,
            chat_template,
            hf_json: text.to_string(),
            padded,
            warnings,
        })
    }

    /// The GGUF metadata entries, in the order they are written.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let mut m = vec![
            (
                "tokenizer.ggml.model".to_string(),
                Value::String("llama".into()),
            ),
            (
                "tokenizer.ggml.tokens".to_string(),
                Value::Array(
                    ValueType::String,
                    self.tokens.iter().cloned().map(Value::String).collect(),
                ),
            ),
            (
                "tokenizer.ggml.scores".to_string(),
                Value::Array(
                    ValueType::F32,
                    self.scores.iter().copied().map(Value::F32).collect(),
                ),
            ),
            (
                "tokenizer.ggml.token_type".to_string(),
                Value::Array(
                    ValueType::I32,
                    self.token_types.iter().copied().map(Value::I32).collect(),
                ),
            ),
        ];
        for &(key, id) in &self.special_ids {
            m.push((key.to_string(), Value::U32(id)));
        }
        m.push((
            "tokenizer.ggml.add_bos_token".to_string(),
            Value::Bool(false),
        ));
        if let Some(add_eos) = self.add_eos_token {
            m.push((
                "tokenizer.ggml.add_eos_token".to_string(),
                Value::Bool(add_eos),
            ));
        }
        m.push((
            "tokenizer.ggml.add_space_prefix".to_string(),
            Value::Bool(false),
        ));
        if let Some(t) = &self.chat_template {
            m.push((
                "tokenizer.chat_template".to_string(),
                Value::String(t.clone()),
            ));
        }
        m.push((
            "tokenizer.huggingface.json".to_string(),
            Value::String(self.hf_json.clone()),
        ));
        m
    }
}
