//! config.json parsing and refusals; tokenizer.json as GGUF vocab metadata.

mod convert_common;

use convert_common::{fixtures, presets};
use std::path::Path;
use xverse_convert::config::{HfConfig, HfFiles};
use xverse_convert::vocab::{token_type, Vocab};
use xverse_quant::gguf::Value;

fn parse(json: &str) -> Result<HfConfig, String> {
    HfConfig::parse(json, Path::new("m/config.json")).map_err(|e| e.to_string())
}

const TINY: &str = r#"{"architectures": ["XverseForCausalLM"], "model_type": "xverse",
  "hidden_size": 64, "intermediate_size": 172, "num_attention_heads": 4, "num_hidden_layers": 2,
  "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "vocab_size": 512,
  "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 1, "torch_dtype": "bfloat16"}"#;

fn with(key: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(TINY).unwrap();
    if value == "DELETE" {
        v.as_object_mut().unwrap().remove(key);
    } else {
        v[key] = serde_json::from_str(value).unwrap();
    }
    v.to_string()
}

#[test]
fn presets_parse() {
    for (name, hidden, layers, heads, vocab, ctx) in [
        ("xverse-7b", 4096, 32, 32, 100534, 8192),
        ("xverse-13b", 5120, 40, 40, 100534, 8192),
        ("xverse-13b-first-release", 5120, 40, 40, 100278, 8192),
        ("xverse-13b-256k", 5120, 40, 40, 100534, 32768),
        ("xverse-65b", 8192, 80, 64, 100534, 16384),
    ] {
        let path = presets().join(format!("{name}.json"));
        let c = HfConfig::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        assert_eq!(
            (
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.vocab_size
            ),
            (hidden, layers, heads, vocab),
            "{name}"
        );
        assert_eq!(c.max_position_embeddings, ctx);
        assert_eq!(c.num_key_value_heads, heads);
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.shape().head_dim(), 128);
        assert_eq!(
            (c.bos_token_id, c.eos_token_id, c.pad_token_id),
            (Some(2), Some(3), Some(1))
        );
    }
}

#[test]
fn fixture_config_and_defaults() {
    let c = HfConfig::load(&fixtures().join("tiny-xverse-st")).unwrap();
    assert_eq!(c.architecture, "XverseForCausalLM");
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
    let c = parse(&with("rope_theta", "500000.0")).unwrap();
    assert_eq!(c.rope_theta, 500000.0);
    let c = parse(&with("num_key_value_heads", "2")).unwrap();
    assert_eq!(c.num_key_value_heads, 2);
    let c = parse(&with("eos_token_id", "[3, 7]")).unwrap();
    assert_eq!(c.eos_token_id, Some(3));
    let c = parse(&with("architectures", "DELETE")).unwrap();
    assert_eq!(c.architecture, "XverseForCausalLM");
}

#[test]
fn config_errors_are_clear() {
    let cases = [
        (
            with("architectures", r#"["XverseMoeForCausalLM"]"#),
            "MoE models are not supported yet",
        ),
        (
            with("architectures", r#"["LlamaForCausalLM"]"#),
            "m/config.json: architecture LlamaForCausalLM is not XVERSE's",
        ),
        (
            with("hidden_size", "DELETE"),
            "m/config.json: hidden_size is missing",
        ),
        (with("rms_norm_eps", "DELETE"), "rms_norm_eps is missing"),
        (
            with("num_attention_heads", "5"),
            "hidden_size 64 is not a multiple of num_attention_heads 5",
        ),
        (
            with("num_key_value_heads", "3"),
            "num_attention_heads 4 is not a multiple of num_key_value_heads 3",
        ),
        (with("num_hidden_layers", "0"), "num_hidden_layers is 0"),
        (
            with("bos_token_id", "-1"),
            "bos_token_id must be a token id",
        ),
        (
            with("tie_word_embeddings", "true"),
            "tie_word_embeddings is true",
        ),
        (
            with("rope_scaling", r#"{"type": "dynamic", "factor": 2.0}"#),
            "rope_scaling of type dynamic is not supported",
        ),
        ("[1, 2]".to_string(), "expected a JSON object"),
        ("{".to_string(), "not valid JSON"),
    ];
    for (json, expected) in cases {
        let e = parse(&json).unwrap_err();
        assert!(e.contains(expected), "{e:?} should contain {expected:?}");
        assert!(!e.contains('\n'), "{e:?}");
    }
    let mut model_type_only = with("architectures", "DELETE");
    model_type_only = model_type_only.replace("\"xverse\"", "\"llama\"");
    let e = parse(&model_type_only).unwrap_err();
    assert!(e.contains("not an XVERSE model"), "{e}");
    let e = HfConfig::load(Path::new("/nonexistent-dir"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent-dir/config.json"), "{e}");
}

fn meta<'a>(m: &'a [(String, Value)], key: &str) -> &'a Value {
    &m.iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key}"))
        .1
}

#[test]
fn fixture_vocab_matches_llama_cpp_conventions() {
    let dir = fixtures().join("tiny-xverse-bin");
    let files = HfFiles::load(&dir).unwrap();
    let v = Vocab::load(&files).unwrap();
    assert_eq!(v.tokens.len(), 512);
    assert_eq!(v.padded, 0);
    assert_eq!(
        &v.tokens[..5],
        &[
            "<unk>",
            "<pad>",
            "<|startoftext|>",
            "<|endoftext|>",
            "<0x00>"
        ]
    );
    assert_eq!(v.tokens[259], "<0xFF>");
    assert_eq!(v.token_types[0], token_type::UNKNOWN);
    assert_eq!(&v.token_types[1..4], &[token_type::CONTROL; 3]);
    assert!(v.token_types[4..260].iter().all(|&t| t == token_type::BYTE));
    assert!(v.token_types[260..]
        .iter()
        .all(|&t| t == token_type::NORMAL));
    // merges: the 154 merge results are ids 358..511, in rank order
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    let first = &json["model"]["merges"][0];
    let merged = format!(
        "{}{}",
        first[0].as_str().unwrap(),
        first[1].as_str().unwrap()
    );
    let id = v.tokens.iter().position(|t| *t == merged).unwrap();
    assert_eq!(v.scores[id], 0.0);
    assert!(v.scores[..358].iter().all(|&s| s <= -154.0));
    assert!(v.scores[358..].iter().all(|&s| s > -154.0));
    assert_eq!(
        v.special_ids,
        vec![
            ("tokenizer.ggml.bos_token_id", 2),
            ("tokenizer.ggml.eos_token_id", 3),
            ("tokenizer.ggml.unknown_token_id", 0),
            ("tokenizer.ggml.padding_token_id", 1),
        ]
    );
    let m = v.metadata();
    assert_eq!(
        meta(&m, "tokenizer.ggml.model"),
        &Value::String("llama".into())
    );
    assert_eq!(
        meta(&m, "tokenizer.ggml.add_bos_token"),
        &Value::Bool(false)
    );
    assert_eq!(
        meta(&m, "tokenizer.ggml.add_space_prefix"),
        &Value::Bool(false)
    );
    assert_eq!(
        meta(&m, "tokenizer.huggingface.json"),
        &Value::String(std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
    );
    assert!(
        meta(&m, "tokenizer.ggml.tokens")
            .as_array()
            .unwrap()
            .1
            .len()
            == 512
    );
}

#[test]
fn vocab_is_padded_to_config_size_and_never_truncated() {
    let dir = fixtures().join("tiny-xverse-st");
    let mut files = HfFiles::load(&dir).unwrap();
    files.config.vocab_size = 520;
    let v = Vocab::load(&files).unwrap();
    assert_eq!(v.tokens.len(), 520);
    assert_eq!(v.padded, 8);
    assert_eq!(v.tokens[512], "[PAD512]");
    assert_eq!(v.tokens[519], "[PAD519]");
    assert_eq!(v.token_types[515], token_type::USER_DEFINED);
    assert!(v
        .warnings
        .iter()
        .any(|w| w.contains("8 of config.json's 520")));

    files.config.vocab_size = 500;
    let e = Vocab::load(&files).unwrap_err().to_string();
    assert!(e.contains("but config.json's vocab_size is 500"), "{e}");
}

#[test]
fn missing_or_broken_tokenizer_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("tiny-xverse-st/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let files = HfFiles::load(tmp.path()).unwrap();
    let e = Vocab::load(&files).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::write(tmp.path().join("tokenizer.json"), "{\"model\": 3}").unwrap();
    let e = Vocab::load(&files).unwrap_err().to_string();
    assert!(e.contains("not a tokenizer"), "{e}");
}

#[test]
fn added_tokens_that_are_not_special_are_user_defined() {
    let tmp = tempfile::tempdir().unwrap();
    let st = fixtures().join("tiny-xverse-st");
    for f in [
        "config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(st.join(f), tmp.path().join(f)).unwrap();
    }
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(st.join("tokenizer.json")).unwrap()).unwrap();
    // <pad> becomes an ordinary (not special) added token
    tok["added_tokens"][1]["special"] = serde_json::Value::Bool(false);
    std::fs::write(tmp.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let files = HfFiles::load(tmp.path()).unwrap();
    let v = Vocab::load(&files).unwrap();
    assert_eq!(v.token_types[1], token_type::USER_DEFINED);
    assert_eq!(v.token_types[2], token_type::CONTROL);
    assert_eq!(v.token_types[0], token_type::UNKNOWN);
}
