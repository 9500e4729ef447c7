//! Reading a `tokenizer.json` with a BPE model in one pass.
//!
//! `tokenizers::Tokenizer::from_bytes` reads the `model` object three times: buffered whole
//! (its `ModelWrapper` tells the models apart with an untagged enum), then copied into a
//! `serde_json::Value` (a `#[serde(flatten)]` field), then read into the BPE model. For
//! XVERSE's 100,534 tokens and 100,047 merges that is ~0.3 s of a start-up (0.28–0.34 s on
//! the development machine, ~0.42 s in Python's `tokenizers`), more than evaluating a short
//! prompt.
//!
//! [`read`] reads the same JSON once, into the same pieces, with the crate's own types and
//! in the crate's own way (`tokenizers/src/tokenizer/serialization.rs` and
//! `models/bpe/serialization.rs` of 0.22): the normalizer, pre-tokenizer, post-processor,
//! decoder, truncation and padding are the crate's `Deserialize` types; the BPE model is
//! built by `BpeBuilder` from the vocabulary and merges with the options the file gives; the
//! added tokens are added last, through `add_tokens`, so they take the ids the crate would
//! give them. Anything it does not expect (another model type, mixed merge formats, a
//! version other than "1.0", a duplicate key, any error) returns `None`, and the caller reads
//! the text with `from_bytes`, which then gives the crate's own result or error. One input
//! the crate panics on (a merge shorter than the `continuing_subword_prefix`) is an error here.
//! `tests::same_tokenizer_as_from_bytes` checks that both give the same tokenizer, field for
//! field as the crate serializes it, on every tokenizer.json the project has.

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PaddingParams,
    PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder, TruncationParams,
};

/// The top level of a tokenizer.json (the keys the crate reads; others are ignored, as it
/// ignores them).
#[derive(Deserialize)]
struct TokenizerJson {
    version: Option<String>,
    truncation: Option<TruncationParams>,
    padding: Option<PaddingParams>,
    added_tokens: Option<Vec<AddedTokenWithId>>,
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<PreTokenizerWrapper>,
    model: BpeJson,
    decoder: Option<DecoderWrapper>,
    post_processor: Option<PostProcessorWrapper>,
}

/// An entry of `added_tokens`: the crate's own layout (its `AddedTokenWithId`).
#[derive(Deserialize)]
struct AddedTokenWithId {
    #[allow(dead_code)]
    id: u32,
    #[serde(flatten)]
    token: AddedToken,
}

/// The `model` object of a BPE tokenizer.
#[derive(Deserialize)]
struct BpeJson {
    #[serde(rename = "type")]
    ty: Option<String>,
    dropout: Option<f32>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    fuse_unk: Option<bool>,
    byte_fallback: Option<bool>,
    ignore_merges: Option<bool>,
    vocab: Vocab,
    merges: Vec<Merge>,
}

/// One merge: a pair of strings (`["a", "b"]`) or a legacy line (`"a b"`).
enum Merge {
    Pair(String, String),
    Line(String),
}

impl<'de> Deserialize<'de> for Merge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Merge, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Merge;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a merge: two strings or a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Merge, E> {
                Ok(Merge::Line(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Merge, E> {
                Ok(Merge::Line(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merge, A::Error> {
                let a: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let b: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(Merge::Pair(a, b))
            }
        }
        d.deserialize_any(V)
    }
}

/// The merges as the crate reads them: all pairs, or all legacy lines (those starting with
/// `#version` skipped, each of the others exactly two parts split at `' '`); `None` otherwise.
fn merges(list: Vec<Merge>) -> Option<Vec<(String, String)>> {
    if list.iter().all(|m| matches!(m, Merge::Pair(..))) {
        return Some(
            list.into_iter()
                .filter_map(|m| match m {
                    Merge::Pair(a, b) => Some((a, b)),
                    Merge::Line(_) => None,
                })
                .collect(),
        );
    }
    let mut out = Vec::with_capacity(list.len());
    for m in list {
        let Merge::Line(line) = m else { return None };
        if line.starts_with("#version") {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => out.push((a.to_string(), b.to_string())),
            _ => return None,
        }
    }
    Some(out)
}

/// The `tokenizers` tokenizer of a tokenizer.json text, what the runtime and the converter
/// read: in one pass ([`read`]) where its model is BPE, else by the crate's `from_bytes`. The
/// error is the reason only (the crate's, or [`read`]'s for a text the crate would panic on).
pub fn tokenizer(json: &str) -> Result<tokenizers::Tokenizer, String> {
    match read(json.as_bytes())? {
        Some(t) => Ok(t),
        None => tokenizers::Tokenizer::from_bytes(json.as_bytes()).map_err(|e| e.to_string()),
    }
}

/// The tokenizer of a tokenizer.json text whose model is BPE, read in one pass: `Ok(None)`
/// when the text is anything else or anything in it is unexpected (read it with
/// `from_bytes`), an error where the crate would panic (a merge's second part shorter than
/// `continuing_subword_prefix`, which the crate cuts off it unchecked).
pub fn read(json: &[u8]) -> Result<Option<tokenizers::Tokenizer>, String> {
    Ok(match parse(json) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return Err(e),
        None => None,
    })
}

fn parse(json: &[u8]) -> Option<Result<tokenizers::Tokenizer, String>> {
    let j: TokenizerJson = serde_json::from_slice(json).ok()?;
    let m = j.model;
    let merges = merges(m.merges)?;
    // checked before anything sends the text to `from_bytes`, which would panic on it: the
    // crate reads a model without "type" as BPE too
    if let (Some(p), None | Some("BPE")) = (&m.continuing_subword_prefix, m.ty.as_deref()) {
        if let Some((rank, (_, b))) = merges
            .iter()
            .enumerate()
            .find(|(_, (_, b))| !b.is_char_boundary(p.len()))
        {
            return Some(Err(format!(
                "merge {} ends in {b:?}, shorter than the continuing_subword_prefix {p:?}",
                rank + 1
            )));
        }
    }
    if j.version.as_deref().is_some_and(|v| v != "1.0") || m.ty.as_deref() != Some("BPE") {
        return None;
    }
    let mut b = BPE::builder().vocab_and_merges(m.vocab, merges);
    if let Some(v) = m.dropout {
        b = b.dropout(v);
    }
    if let Some(v) = m.unk_token {
        b = b.unk_token(v);
    }
    if let Some(v) = m.continuing_subword_prefix {
        b = b.continuing_subword_prefix(v);
    }
    if let Some(v) = m.end_of_word_suffix {
        b = b.end_of_word_suffix(v);
    }
    if let Some(v) = m.fuse_unk {
        b = b.fuse_unk(v);
    }
    if let Some(v) = m.byte_fallback {
        b = b.byte_fallback(v);
    }
    if let Some(v) = m.ignore_merges {
        b = b.ignore_merges(v);
    }
    let bpe = b.build().ok()?;
    let mut tok = TokenizerBuilder::<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(bpe.into())
    .with_normalizer(j.normalizer)
    .with_pre_tokenizer(j.pre_tokenizer)
    .with_post_processor(j.post_processor)
    .with_decoder(j.decoder)
    .with_truncation(j.truncation)
    .with_padding(j.padding)
    .build()
    .ok()?;
    let added: Vec<AddedToken> = j
        .added_tokens
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.token)
        .collect();
    tok.add_tokens(&added);
    Some(Ok(tok.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both readers' tokenizers, as the crate writes them back (every field: the vocabulary
    /// by id, the merges by rank, the added tokens with their ids, the pipeline).
    fn both(json: &str) -> (Option<String>, String) {
        let slow = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
        let fast = read(json.as_bytes())
            .unwrap()
            .map(|t| t.to_string(false).unwrap());
        (fast, slow.to_string(false).unwrap())
    }

    fn fixture_jsons() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path().join("tokenizer.json");
            if p.is_file() {
                out.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                ));
            }
        }
        assert!(!out.is_empty(), "no tokenizer.json under {}", dir.display());
        out
    }

    /// The generated XVERSE-layout tokenizer (100,534 tokens, as the published one) and every
    /// fixture's: the one-pass reader gives the crate's tokenizer, and encodes as it does.
    #[test]
    fn same_tokenizer_as_from_bytes() {
        let mut jsons = fixture_jsons();
        jsons.push((
            "generated".into(),
            xverse_models::hf::tokenizer::tokenizer_json(
                &xverse_models::hf::tokenizer::build(100_534).unwrap(),
            ),
        ));
        let text = "Hello, world! 你好，世界 12345 <|startoftext|>  tabs\tand\nlines ÿ \u{1F600}";
        for (name, json) in &jsons {
            let (fast, slow) = both(json);
            let fast = fast.unwrap_or_else(|| panic!("{name}: not read in one pass"));
            assert!(fast == slow, "{name}: the tokenizers differ");
            let a = read(json.as_bytes()).unwrap().unwrap();
            let b = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
            for special in [false, true] {
                let ea = a.encode(text, special).unwrap();
                let eb = b.encode(text, special).unwrap();
                assert_eq!(ea.get_ids(), eb.get_ids(), "{name}");
                assert!(!ea.get_ids().is_empty());
            }
        }
    }

    /// The variants the crate reads: legacy merge lines (with a `#version` line), options
    /// set, added tokens outside the vocabulary (new ids) and inside it (their ids).
    #[test]
    fn legacy_merges_and_options() {
        let (_, json) = fixture_jsons().remove(0);
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let model = v["model"].as_object_mut().unwrap();
        let lines: Vec<serde_json::Value> = std::iter::once("#version: 0.2".into())
            .chain(model["merges"].as_array().unwrap().iter().map(|m| match m {
                serde_json::Value::Array(p) => {
                    format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()).into()
                }
                other => other.clone(),
            }))
            .collect();
        model.insert("merges".into(), lines.into());
        model.insert("dropout".into(), 0.25.into());
        model.insert("end_of_word_suffix".into(), "</w>".into());
        model.insert("fuse_unk".into(), true.into());
        model.insert("ignore_merges".into(), true.into());
        let added = v["added_tokens"].as_array_mut().unwrap();
        let mut extra = added[0].clone();
        extra["content"] = "<|brand-new|>".into();
        extra["id"] = 999_999.into();
        added.push(extra);
        let json = v.to_string();
        let (fast, slow) = both(&json);
        assert!(fast.as_deref() == Some(slow.as_str()));
        assert!(slow.contains("<|brand-new|>") && slow.contains("</w>"));
    }

    /// What the one-pass reader does not take is left to `from_bytes`: another model type,
    /// mixed merge formats, a merge line of three parts, another version, a broken text.
    #[test]
    fn leaves_the_rest_to_from_bytes() {
        let (_, json) = fixture_jsons().remove(0);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut w = v.clone();
            f(&mut w);
            w.to_string()
        };
        let cases = [
            with(&|w| w["model"]["type"] = "WordPiece".into()),
            with(&|w| {
                w["model"].as_object_mut().unwrap().remove("type");
            }),
            with(&|w| {
                w["model"]["merges"]
                    .as_array_mut()
                    .unwrap()
                    .push("a b".into())
            }),
            with(&|w| w["model"]["merges"] = vec!["a b c"].into()),
            with(&|w| w["version"] = "2.0".into()),
            json[..json.len() / 2].to_string(),
        ];
        for c in &cases {
            assert!(read(c.as_bytes()).unwrap().is_none());
        }
    }

    /// A prefix longer than a merge's second part: the crate would panic; this is an error.
    #[test]
    fn a_prefix_longer_than_a_merge_is_an_error() {
        let (_, json) = fixture_jsons().remove(0);
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["model"]["continuing_subword_prefix"] = "#####".into();
        let e = read(v.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("continuing_subword_prefix"), "{e}");
        // also without "type", which the crate reads as BPE (and would panic on)
        v["model"].as_object_mut().unwrap().remove("type");
        let e = read(v.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("continuing_subword_prefix"), "{e}");
    }
}
