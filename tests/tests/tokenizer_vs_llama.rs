//! The runtime's SPM tokenizer (a file without `tokenizer.huggingface.json`) against llama.cpp
//! b2757's own (`llama_tokenize` with `parse_special`, as its `main` tokenizes a prompt) on tiny
//! XVERSE GGUF files: ids for a multilingual text set and for random texts, with and without
//! BOS, with our metadata and with llama.cpp converter-style metadata (no `add_bos_token`, no
//! `add_space_prefix`, no scores: llama.cpp's defaults apply), and every token's piece.

use std::path::{Path, PathBuf};

use xverse_models::{rng::Rng, write_tiny_gguf, TinySpec};
use xverse_quant::gguf::{Gguf, Value};
use xverse_runtime::tokenizer::{Source, Tokenizer};
use xverse_tests::oracle::llama;

/// Copies a GGUF with its metadata edited.
fn rewrite(src: &Path, dst: &Path, edit: impl FnOnce(&mut Vec<(String, Value)>)) {
    xverse_models::rewrite_metadata(src, dst, edit).unwrap();
}

/// The variants of the vocabulary metadata to compare on.
fn variants(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let ours = dir.join("ours.gguf");
    write_tiny_gguf(&ours, &TinySpec::default()).unwrap();
    let big = dir.join("big.gguf");
    write_tiny_gguf(
        &big,
        &TinySpec {
            vocab: 3000,
            ..TinySpec::default()
        },
    )
    .unwrap();
    let defaults = dir.join("defaults.gguf");
    rewrite(&ours, &defaults, |m| {
        m.retain(|(k, _)| {
            k != "tokenizer.ggml.add_bos_token" && k != "tokenizer.ggml.add_space_prefix"
        })
    });
    // llama.cpp's converter for XVERSE writes no scores: every merge ties at 0
    let no_scores = dir.join("no-scores.gguf");
    rewrite(&big, &no_scores, |m| {
        m.retain(|(k, _)| {
            k != "tokenizer.ggml.add_bos_token"
                && k != "tokenizer.ggml.add_space_prefix"
                && k != "tokenizer.ggml.scores"
        })
    });
    let big_defaults = dir.join("big-defaults.gguf");
    rewrite(&big, &big_defaults, |m| {
        m.retain(|(k, _)| k != "tokenizer.ggml.add_space_prefix");
        m.retain(|(k, _)| k != "tokenizer.ggml.add_bos_token");
        m.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)));
    });
    vec![
        ("ours (no BOS, no space prefix)", ours),
        ("vocab 3000", big),
        ("llama.cpp defaults", defaults),
        ("vocab 3000 without scores", no_scores),
        ("vocab 3000, add_bos true, space prefix", big_defaults),
    ]
}

fn texts() -> Vec<String> {
    let mut v: Vec<String> = [
        "北京的景点：故宫、天坛、万里长城等。\n深圳的景点：",
        "你好，世界！中文是我们的语言。",
        "The quick brown fox jumps over the lazy dog. Hello world!",
        "the model has two layers, and the license of the software is free",
        "日本語のテキスト、ひらがなとカタカナ。",
        "Привет, мир! Съешь же ещё этих мягких булок.",
        "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n}",
        "emoji 🦀🚀👍🏽 and ZWJ 👨‍👩‍👧",
        "digits 0123456789 3.14159 1,000,000",
        "whitespace  runs   of    spaces\t\ttabs\n\n\nnewlines \r\n crlf",
        "      leading and trailing      ",
        "Größe über alles — naïve café",
        "<|endoftext|> special <|startoftext|> tokens <pad> <unk> inside<|endoftext|>",
        "<|startoftext|>at the start",
        "▁already▁escaped▁",
        "<0x41> looks like a byte token",
        "",
        " ",
        "a",
        "theirtheretheythethe",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // random texts over an alphabet that mixes pieces, spaces, bytes and specials
    let alphabet: Vec<&str> = vec![
        "the",
        "th",
        "e",
        " ",
        "  ",
        "a",
        "b",
        "z",
        "q",
        "mo",
        "del",
        "北",
        "京",
        "的",
        "你",
        "好",
        "é",
        "ß",
        "🦀",
        "\n",
        "\t",
        ".",
        ",",
        "!",
        "0",
        "7",
        "<|endoftext|>",
        "<pad>",
        "w",
        "or",
        "ld",
        "ing",
        "ly",
        "x",
        "y",
    ];
    let mut rng = Rng::new(20240601);
    for _ in 0..300 {
        let n = (rng.next_u64() % 40) as usize;
        let s: String = (0..n)
            .map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize])
            .collect();
        v.push(s);
    }
    v
}

#[test]
fn spm_ids_equal_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let texts = texts();
    for (name, path) in variants(dir.path()) {
        let ours = Tokenizer::from_gguf(&Gguf::open(&path).unwrap()).unwrap();
        assert_eq!(ours.source(), Source::Spm, "{name}");
        let theirs = llama::Model::load(&path).unwrap();
        let mut n_tokens = 0;
        for t in &texts {
            let want: Vec<u32> = theirs
                .tokenize(t, true, true)
                .unwrap()
                .into_iter()
                .map(|i| i as u32)
                .collect();
            assert_eq!(ours.encode(t).unwrap(), want, "{name}: {t:?}");
            let want_seg: Vec<u32> = theirs
                .tokenize(t, false, true)
                .unwrap()
                .into_iter()
                .map(|i| i as u32)
                .collect();
            assert_eq!(
                ours.encode_segment(t).unwrap(),
                want_seg,
                "{name}, no BOS: {t:?}"
            );
            n_tokens += want.len();
        }
        eprintln!(
            "{name}: {} texts, {n_tokens} tokens identical to llama.cpp",
            texts.len()
        );
    }
}

#[test]
fn pieces_equal_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for (name, path) in variants(dir.path()) {
        let ours = Tokenizer::from_gguf(&Gguf::open(&path).unwrap()).unwrap();
        let theirs = llama::Model::load(&path).unwrap();
        assert_eq!(ours.n_vocab(), theirs.n_vocab(), "{name}");
        for id in 0..theirs.n_vocab() {
            let want = theirs.token_to_piece(id as i32, false).unwrap();
            assert_eq!(ours.token_bytes(id as u32), want, "{name}: token {id}");
        }
    }
}
