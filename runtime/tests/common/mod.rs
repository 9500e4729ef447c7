//! Helpers shared by the runtime's integration tests: tiny models and GGUF metadata edits.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use xverse_models::{write_tiny_gguf, TinySpec};
use xverse_quant::gguf::Value;

/// `shared/fixtures/tiny-xverse-bin`.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/tiny-xverse-bin"
    ))
}

/// The fixture's `tokenizer.json` text.
pub fn fixture_tokenizer_json() -> String {
    let p = fixture_dir().join("tokenizer.json");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A tiny random model (the fixture shape, vocab 512) at `dir/name`.
pub fn tiny(dir: &Path, name: &str, spec: &TinySpec) -> PathBuf {
    let p = dir.join(name);
    write_tiny_gguf(&p, spec).unwrap();
    p
}

/// Copies the GGUF `src` to `dst` with its metadata edited by `edit` (tensors unchanged).
pub fn rewrite(src: &Path, dst: &Path, edit: impl FnOnce(&mut Vec<(String, Value)>)) {
    xverse_models::rewrite_metadata(src, dst, edit).unwrap();
}

/// Removes the metadata keys `keys`.
pub fn without(meta: &mut Vec<(String, Value)>, keys: &[&str]) {
    meta.retain(|(k, _)| !keys.contains(&k.as_str()));
}

/// A tiny model that carries the fixture's tokenizer.json as `tokenizer.huggingface.json`.
pub fn tiny_with_hf_tokenizer(dir: &Path) -> PathBuf {
    let base = tiny(dir, "base.gguf", &TinySpec::default());
    let p = dir.join("hf.gguf");
    let json = fixture_tokenizer_json();
    rewrite(&base, &p, |m| {
        m.push(("tokenizer.huggingface.json".into(), Value::String(json)))
    });
    p
}
