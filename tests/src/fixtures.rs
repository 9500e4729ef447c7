//! The developer fixtures in `shared/fixtures/` (made with real torch, safetensors and
//! transformers; see their README): where they are, and the expected logits of the tiny model.

use crate::hf_reference::{RefError, Result};
use std::path::{Path, PathBuf};

/// `shared/fixtures/`, beside the repository.
pub fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
}

/// `shared/fixtures/<name>`.
pub fn path(name: &str) -> PathBuf {
    dir().join(name)
}

/// transformers' output for the tiny model (`tiny-xverse-bin/expected_logits.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedLogits {
    /// bos, then the tokenization of the fixture's sample text.
    pub input_ids: Vec<u32>,
    /// `LlamaForCausalLM` in float32: one row of `vocab_size` logits per input position.
    pub logits: Vec<Vec<f32>>,
    /// The 8 greedy tokens that follow `input_ids`.
    pub greedy_next_ids: Vec<u32>,
}

fn err<T>(what: &Path, msg: impl std::fmt::Display) -> Result<T> {
    Err(RefError(format!("{}: {msg}", what.display())))
}

fn ids_of(path: &Path, v: &serde_json::Value, key: &str) -> Result<Vec<u32>> {
    let Some(arr) = v.get(key).and_then(serde_json::Value::as_array) else {
        return err(path, format!("no array {key}"));
    };
    arr.iter()
        .map(|x| match x.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Ok(n),
            None => err(path, format!("{key}: {x} is not a token id")),
        })
        .collect()
}

/// Reads `tiny-xverse-bin/expected_logits.safetensors` and `expected_logits.json`, and checks
/// that both name the same `input_ids`.
pub fn expected_logits() -> Result<ExpectedLogits> {
    let st_path = path("tiny-xverse-bin/expected_logits.safetensors");
    let json_path = path("tiny-xverse-bin/expected_logits.json");
    let bytes = std::fs::read(&st_path).or_else(|e| err(&st_path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).or_else(|e| err(&st_path, e))?;

    let ids = st.tensor("input_ids").or_else(|e| err(&st_path, e))?;
    if ids.dtype() != safetensors::Dtype::I64 {
        return err(&st_path, format!("input_ids is {:?}, not I64", ids.dtype()));
    }
    let input_ids = ids
        .data()
        .chunks_exact(8)
        .map(|b| {
            let id = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            u32::try_from(id).or_else(|_| err(&st_path, format!("input id {id}")))
        })
        .collect::<Result<Vec<u32>>>()?;

    let logits = st.tensor("logits").or_else(|e| err(&st_path, e))?;
    let shape = logits.shape().to_vec();
    if logits.dtype() != safetensors::Dtype::F32 || shape.len() != 2 || shape[0] != input_ids.len()
    {
        return err(
            &st_path,
            format!("logits are {:?} {shape:?}", logits.dtype()),
        );
    }
    let flat: Vec<f32> = logits
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let logits = flat.chunks_exact(shape[1]).map(<[f32]>::to_vec).collect();

    let text = std::fs::read_to_string(&json_path).or_else(|e| err(&json_path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).or_else(|e| err(&json_path, e))?;
    if ids_of(&json_path, &v, "input_ids")? != input_ids {
        return err(&json_path, "input_ids differ from the safetensors file's");
    }
    Ok(ExpectedLogits {
        input_ids,
        logits,
        greedy_next_ids: ids_of(&json_path, &v, "greedy_next_ids")?,
    })
}
