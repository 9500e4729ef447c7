//! The tokenizer: the fixture's expected ids through `tokenizer.huggingface.json`, the SPM path
//! on a tiny model's `tokenizer.ggml.*` vocabulary, and streaming detokenization.

mod common;

use xverse_quant::gguf::{Gguf, Value};
use xverse_runtime::tokenizer::{Source, StreamDecoder, Tokenizer};

/// The fixture's samples: (text, ids, decoded).
fn samples() -> Vec<(String, Vec<u32>, String)> {
    let p = common::fixture_dir().join("expected_tokens.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v["add_special_tokens"], serde_json::Value::Bool(false));
    let s = v["samples"].as_array().unwrap();
    assert!(s.len() >= 6, "expected 6 samples, found {}", s.len());
    s.iter()
        .map(|x| {
            (
                x["text"].as_str().unwrap().to_string(),
                x["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_u64().unwrap() as u32)
                    .collect(),
                x["decoded"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn stream_all(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut d = tok.stream();
    let mut s = String::new();
    for &id in ids {
        if let Some(t) = d.push(id) {
            s.push_str(&t);
        }
    }
    if let Some(t) = d.flush() {
        s.push_str(&t);
    }
    s
}

fn check_fixture(tok: &Tokenizer) {
    for (text, ids, decoded) in samples() {
        assert_eq!(tok.encode(&text).unwrap(), ids, "ids of {text:?}");
        // the fixture decodes with the special tokens' text kept
        assert_eq!(tok.decode_with(&ids, false), decoded, "decode of {text:?}");
        let plain = decoded
            .replace("<|startoftext|>", "")
            .replace("<|endoftext|>", "")
            .replace("<pad>", "")
            .replace("<unk>", "");
        assert_eq!(tok.decode(&ids), plain, "decode of {text:?}");
        assert_eq!(stream_all(tok, &ids), plain, "streamed decode of {text:?}");
    }
}

#[test]
fn fixture_expected_tokens_from_tokenizer_json() {
    let tok = Tokenizer::from_hf_json(&common::fixture_tokenizer_json()).unwrap();
    assert_eq!(tok.source(), Source::HuggingFace);
    check_fixture(&tok);
}

#[test]
fn fixture_expected_tokens_through_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::tiny_with_hf_tokenizer(dir.path());
    let g = Gguf::open(&p).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    assert_eq!(tok.source(), Source::HuggingFace);
    assert_eq!((tok.bos(), tok.eos(), tok.add_bos()), (2, 3, false));
    check_fixture(&tok);
    // special tokens written in the text are recognised, as Hugging Face does
    let ids = tok.encode("a<|endoftext|>b").unwrap();
    assert!(ids.contains(&3), "{ids:?}");
    assert_eq!(tok.decode(&ids), "ab");
}

#[test]
fn hf_json_with_add_bos_adds_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::tiny_with_hf_tokenizer(dir.path());
    let q = dir.path().join("bos.gguf");
    common::rewrite(&p, &q, |m| {
        common::without(m, &["tokenizer.ggml.add_bos_token"]);
        m.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)));
    });
    let tok = Tokenizer::from_gguf(&Gguf::open(&q).unwrap()).unwrap();
    assert_eq!(tok.encode("Hello").unwrap()[0], 2);
    assert_eq!(tok.encode_segment("Hello").unwrap()[0], 290);
}

#[test]
fn broken_hf_json_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::tiny(dir.path(), "t.gguf", &Default::default());
    let q = dir.path().join("bad.gguf");
    common::rewrite(&base, &q, |m| {
        m.push((
            "tokenizer.huggingface.json".into(),
            Value::String("{not json".into()),
        ))
    });
    let e = Tokenizer::from_gguf(&Gguf::open(&q).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tokenizer.huggingface.json") && !e.contains('\n'),
        "{e}"
    );
}

#[test]
fn spm_vocab_of_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::tiny(dir.path(), "t.gguf", &Default::default());
    let tok = Tokenizer::from_gguf(&Gguf::open(&p).unwrap()).unwrap();
    assert_eq!(tok.source(), Source::Spm);
    // our files: add_bos_token = false, add_space_prefix = false
    assert!(!tok.add_bos());
    for text in [
        "Hello world, the model has 2 layers.",
        "北京的景点：故宫、天坛、万里长城等。\n深圳的景点：",
        "emoji 🦀 and Größe",
        "  two  spaces\tand a tab",
        "",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids), text, "{ids:?}");
        assert_eq!(stream_all(&tok, &ids), text);
        assert!(ids.iter().all(|&i| (i as usize) < tok.n_vocab()));
    }
    // "▁the" is a piece: merges happen
    let ids = tok.encode(" the").unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(tok.token_text(ids[0]).unwrap(), "\u{2581}the");
    // special tokens in the text
    let ids = tok.encode("<|endoftext|>x").unwrap();
    assert_eq!(ids[0], 3);
}

#[test]
fn spm_defaults_when_keys_are_absent() {
    // llama.cpp's converter writes neither add_bos_token nor add_space_prefix for XVERSE:
    // llama.cpp then adds BOS and a space prefix
    let dir = tempfile::tempdir().unwrap();
    let p = common::tiny(dir.path(), "t.gguf", &Default::default());
    let q = dir.path().join("llamacpp-style.gguf");
    common::rewrite(&p, &q, |m| {
        common::without(
            m,
            &[
                "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_space_prefix",
                "tokenizer.ggml.scores",
            ],
        )
    });
    let tok = Tokenizer::from_gguf(&Gguf::open(&q).unwrap()).unwrap();
    assert!(tok.add_bos());
    let ids = tok.encode("the model").unwrap();
    assert_eq!(ids[0], 2);
    assert_eq!(
        tok.token_text(ids[1]).unwrap().chars().next(),
        Some('\u{2581}')
    );
    assert_eq!(tok.decode(&ids), "the model");
    assert_eq!(tok.encode("").unwrap(), vec![2]);
    assert!(tok.encode_segment("").unwrap().is_empty());
}

#[test]
fn a_gpt2_vocab_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::tiny(dir.path(), "t.gguf", &Default::default());
    let q = dir.path().join("gpt2.gguf");
    common::rewrite(&p, &q, |m| {
        common::without(m, &["tokenizer.ggml.model"]);
        m.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
    });
    let e = Tokenizer::from_gguf(&Gguf::open(&q).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("gpt2") && !e.contains('\n'), "{e}");
    let r = dir.path().join("none.gguf");
    common::rewrite(&p, &r, |m| m.retain(|(k, _)| !k.starts_with("tokenizer.")));
    let e = Tokenizer::from_gguf(&Gguf::open(&r).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no tokenizer"), "{e}");
}

#[test]
fn stream_decoder_never_splits_a_character() {
    let tok = Tokenizer::from_hf_json(&common::fixture_tokenizer_json()).unwrap();
    // "你" = E4 BD A0 as three byte tokens (<0xNN> ids are 4 + byte)
    let byte = |b: u8| 4 + b as u32;
    let mut d = tok.stream();
    assert_eq!(d.push(byte(0xE4)), None);
    assert_eq!(d.push(byte(0xBD)), None);
    assert_eq!(d.pending(), &[0xE4, 0xBD]);
    assert_eq!(d.push(byte(0xA0)).as_deref(), Some("你"));
    assert!(d.pending().is_empty());
    // a 4-byte emoji after text: the text comes out at once, the emoji only when complete
    let mut d = tok.stream();
    let h = tok.encode("H").unwrap()[0];
    assert_eq!(d.push(h).as_deref(), Some("H"));
    let crab = "🦀".as_bytes();
    for &b in &crab[..3] {
        assert_eq!(d.push(byte(b)), None);
    }
    assert_eq!(d.push(byte(crab[3])).as_deref(), Some("🦀"));
    // a byte that can never start a character is replaced at once, the rest kept
    let mut d = tok.stream();
    assert_eq!(d.push(byte(0xFF)).as_deref(), Some("\u{FFFD}"));
    assert_eq!(d.push(byte(0xC3)), None);
    assert_eq!(d.flush().as_deref(), Some("\u{FFFD}"));
    assert_eq!(d.flush(), None);
}

#[test]
fn stream_decoder_over_every_split_of_multilingual_bytes() {
    let tok = Tokenizer::from_hf_json(&common::fixture_tokenizer_json()).unwrap();
    let text = "Größe 你好，世界！🦀 Привет こんにちは";
    let ids = tok.encode(text).unwrap();
    let mut d = StreamDecoder::new(&tok);
    let mut out = String::new();
    for &id in &ids {
        if let Some(s) = d.push(id) {
            assert!(!s.contains('\u{FFFD}'), "half a character in {s:?}");
            out.push_str(&s);
        }
    }
    assert!(d.flush().is_none());
    assert_eq!(out, text);
    // raw byte chunks of every size give the same text
    for chunk in 1..=5 {
        let mut d = StreamDecoder::new(&tok);
        let mut out = String::new();
        for c in text.as_bytes().chunks(chunk) {
            if let Some(s) = d.push_bytes(c) {
                out.push_str(&s);
            }
        }
        assert_eq!(out, text, "chunks of {chunk}");
    }
}
