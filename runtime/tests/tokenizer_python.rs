//! Tokenizer parity with Hugging Face's Python `tokenizers` package (the package that made the
//! fixture, `pip install tokenizers==0.23.3`) over a multilingual text set: our ids for the
//! fixture's tokenizer.json, through a GGUF file's `tokenizer.huggingface.json`, must equal
//! `Tokenizer.from_file(...).encode(text, add_special_tokens=False).ids`, and our decode must
//! equal its `decode(ids)`.
//!
//! This test FAILS (it does not skip) when `python3` or the package is missing: CI installs
//! it. `PYTHON` overrides the interpreter.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use xverse_quant::gguf::Gguf;
use xverse_runtime::tokenizer::Tokenizer;

const SCRIPT: &str = r#"
import json, sys
try:
    import tokenizers
    from tokenizers import Tokenizer
except ImportError as e:
    print("IMPORT-ERROR " + str(e))
    sys.exit(3)
tok = Tokenizer.from_file(sys.argv[1])
texts = json.load(sys.stdin)
out = []
for t in texts:
    ids = tok.encode(t, add_special_tokens=False).ids
    out.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True)})
print(json.dumps({"version": tokenizers.__version__, "results": out}))
"#;

/// Chinese, English, Japanese, Russian, code, emoji, digit runs, whitespace runs, and mixes.
fn texts() -> Vec<String> {
    let mut v: Vec<String> = [
        "北京的景点：故宫、天坛、万里长城等。\n深圳的景点：",
        "你好，世界！人工智能正在改变我们的生活方式。",
        "The quick brown fox jumps over the lazy dog. Hello world!",
        "It's a test: don't split \"quotes\" (parentheses) [brackets] {braces}.",
        "日本語のテキスト、ひらがなとカタカナと漢字。東京は大きい都市です。",
        "Привет, мир! Съешь же ещё этих мягких французских булок.",
        "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{x:?}\");\n}",
        "def f(a, b=2):\n\treturn a ** b  # comment\n",
        "emoji 🦀🚀👍🏽 and flags 🇨🇳🇯🇵 and ZWJ 👨‍👩‍👧",
        "digits 0123456789 3.14159 1,000,000 2024-06-01 1e-6",
        "1234567890123456789012345678901234567890",
        "whitespace  runs   of    spaces\t\ttabs\n\n\nnewlines \r\n crlf",
        "      leading spaces and trailing      ",
        "\u{3000}full-width space\u{3000}and\u{00a0}nbsp",
        "Größe über alles, 12345 und ß — naïve café résumé",
        "한국어 텍스트와 العربية و עברית",
        "mixed 中文English日本語Русский123!?",
        "<|endoftext|> special <|startoftext|> tokens <pad> <unk>",
        "",
        " ",
        "a",
        "▁already▁escaped▁",
        "<0x41> looks like a byte token",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // a longer mixed text built from the pieces above
    let long: String = v.iter().take(12).cloned().collect::<Vec<_>>().join(" ");
    v.push(long);
    v
}

#[test]
fn ids_equal_the_python_tokenizers_package() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let tok_path = common::fixture_dir().join("tokenizer.json");
    let texts = texts();
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(&tok_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {python}: {e}. This test needs Python 3 with the tokenizers package: \
                 pip install tokenizers==0.23.3"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&texts).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{python} failed ({}): {stdout} {}. This test needs the Python tokenizers package: \
         pip install tokenizers==0.23.3",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let version = v["version"].as_str().unwrap_or("?").to_string();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), texts.len());

    let ours_json = Tokenizer::from_hf_json(&common::fixture_tokenizer_json()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gguf = Gguf::open(common::tiny_with_hf_tokenizer(dir.path())).unwrap();
    let ours_gguf = Tokenizer::from_gguf(&gguf).unwrap();
    let mut total = 0;
    for (text, r) in texts.iter().zip(results) {
        let want: Vec<u32> = r["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        for (name, tok) in [("tokenizer.json", &ours_json), ("gguf", &ours_gguf)] {
            let got = tok.encode(text).unwrap();
            assert_eq!(
                got, want,
                "{name}: ids of {text:?} differ from Python tokenizers {version}"
            );
            assert_eq!(
                tok.decode(&got),
                r["decoded"].as_str().unwrap(),
                "{name}: decode of {text:?} differs from Python tokenizers {version}"
            );
        }
        total += want.len();
    }
    eprintln!(
        "{} texts, {total} tokens: identical to Python tokenizers {version}",
        texts.len()
    );
}
