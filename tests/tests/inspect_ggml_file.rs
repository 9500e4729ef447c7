//! `xverse-convert inspect` on a file that ggml itself wrote (llama.cpp b2757's
//! `gguf_write_to_file`), so inspection is not only checked against our own writer.

use xverse_quant::GgmlType;
use xverse_tests::oracle::gguf::{self as ggml, vt, GgufValue, WriteTensor};
use xverse_tests::oracle::quant::quantize_reference;

#[test]
fn inspect_reads_a_file_ggml_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("by-ggml.gguf");
    let tokens: Vec<GgufValue> = (0..40)
        .map(|i| GgufValue::String(format!("tok{i}")))
        .collect();
    let kv = vec![
        (
            "general.architecture".to_string(),
            GgufValue::String("xverse".into()),
        ),
        ("xverse.block_count".to_string(), GgufValue::U32(1)),
        (
            "xverse.attention.layer_norm_rms_epsilon".to_string(),
            GgufValue::F32(1e-6),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            GgufValue::Array(vt::STRING, tokens),
        ),
    ];
    let x: Vec<f32> = (0..512).map(|i| (i as f32 * 0.11).cos()).collect();
    let q8 = quantize_reference(GgmlType::Q8_0, &x).unwrap();
    let tensors = vec![
        WriteTensor {
            name: "blk.0.attn_norm.weight".into(),
            ty: GgmlType::F32.id(),
            ne: vec![64],
            data: vec![0u8; 256],
        },
        WriteTensor {
            name: "blk.0.attn_q.weight".into(),
            ty: GgmlType::Q8_0.id(),
            ne: vec![64, 8],
            data: q8.clone(),
        },
    ];
    ggml::write_file(&path, &kv, &tensors).unwrap();

    let mut out = Vec::new();
    xverse_convert::inspect::run(&path, true, false, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["version"], 3);
    assert_eq!(v["alignment"], 32);
    assert_eq!(v["metadata"]["general.architecture"]["value"], "xverse");
    assert_eq!(v["metadata"]["xverse.block_count"]["value"], 1);
    assert_eq!(v["metadata"]["tokenizer.ggml.tokens"]["value"]["len"], 40);
    assert_eq!(
        v["metadata"]["tokenizer.ggml.tokens"]["value"]["items"][0],
        "tok0"
    );
    let t = &v["tensors"];
    assert_eq!(t[0]["name"], "blk.0.attn_norm.weight");
    assert_eq!(t[0]["type"], "f32");
    assert_eq!(t[0]["shape"], serde_json::json!([64]));
    assert_eq!(t[1]["name"], "blk.0.attn_q.weight");
    assert_eq!(t[1]["type"], "q8_0");
    assert_eq!(t[1]["shape"], serde_json::json!([64, 8]));
    assert_eq!(t[1]["bytes"], q8.len());
    // ggml aligns each tensor to 32 bytes: the second starts right after the first's 256 bytes
    let off0 = t[0]["offset"].as_u64().unwrap();
    assert_eq!(t[1]["offset"].as_u64().unwrap(), off0 + 256);
    assert_eq!(v["totals"]["bytes"], 256 + q8.len());

    let mut text = Vec::new();
    xverse_convert::inspect::run(&path, false, false, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("[string; 40]"), "{text}");
    assert!(text.contains("… 32 more"), "{text}");
    assert!(text.contains("total: 2 tensors, 576 elements"), "{text}");
}
