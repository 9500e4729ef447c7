//! `xverse-convert inspect` on a generated model and on broken files, through the binary.

use std::path::Path;
use std::process::Command;
use xverse_models::{write_tiny_gguf, TinySpec};
use xverse_quant::GgmlType;

fn inspect(args: &[&str], file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xverse-convert"))
        .arg("inspect")
        .args(args)
        .arg(file)
        .output()
        .expect("run xverse-convert")
}

fn tiny(dir: &Path, ty: GgmlType) -> std::path::PathBuf {
    let path = dir.join(format!("tiny-{}.gguf", ty.name()));
    let spec = TinySpec {
        ty,
        ..TinySpec::default()
    };
    write_tiny_gguf(&path, &spec).expect("write tiny model");
    path
}

#[test]
fn text_output_lists_metadata_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny(dir.path(), GgmlType::Q8_0);
    let out = inspect(&[], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("version 3, alignment 32"), "{text}");
    assert!(text.contains("general.architecture"), "{text}");
    assert!(text.contains("\"xverse\""), "{text}");
    // the tokens array is abbreviated without --full
    assert!(text.contains("[string; 512]"), "{text}");
    assert!(text.contains("… 504 more"), "{text}");
    // a 64-wide attention tensor is q8_0; the 172-wide ffn_down fell back to a non-block type
    let q = text
        .lines()
        .find(|l| l.contains("blk.0.attn_q.weight "))
        .expect("attn_q row");
    assert!(q.contains("q8_0") && q.contains("64 x 64"), "{q}");
    let down = text
        .lines()
        .find(|l| l.contains("blk.0.ffn_down.weight "))
        .expect("ffn_down row");
    assert!(down.contains("172 x 64"), "{down}");
    assert!(
        text.contains("total: 21 tensors, 164672 elements"),
        "{text}"
    );

    let full = inspect(&["--full"], &path);
    let full = String::from_utf8(full.stdout).unwrap();
    assert!(!full.contains("more]"), "--full must not abbreviate arrays");
    assert!(full.len() > text.len());
}

#[test]
fn json_output_is_one_object_with_exact_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny(dir.path(), GgmlType::F16);
    let out = inspect(&["--json"], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let g = xverse_quant::gguf::Gguf::open(&path).unwrap();
    assert_eq!(v["version"], 3);
    assert_eq!(v["alignment"], 32);
    assert_eq!(v["data_offset"], g.data_offset());
    assert_eq!(v["file_size"], std::fs::metadata(&path).unwrap().len());
    assert_eq!(v["metadata"]["general.architecture"]["value"], "xverse");
    assert_eq!(v["metadata"]["xverse.block_count"]["value"], 2);
    assert_eq!(v["metadata"]["tokenizer.ggml.tokens"]["value"]["len"], 512);
    assert_eq!(
        v["metadata"]["tokenizer.ggml.tokens"]["value"]["truncated"],
        true
    );
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), g.tensors().len());
    for (j, t) in tensors.iter().zip(g.tensors()) {
        assert_eq!(j["name"], t.name.as_str());
        assert_eq!(j["type"], t.ty.name());
        assert_eq!(j["bytes"], t.n_bytes);
        assert_eq!(j["offset"], g.data_offset() + t.offset);
    }
    let sum: u64 = g.tensors().iter().map(|t| t.n_bytes).sum();
    assert_eq!(v["totals"]["bytes"], sum);
}

#[test]
fn broken_files_give_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(tiny(dir.path(), GgmlType::F32)).unwrap();
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        ("empty", Vec::new(), "truncated"),
        ("not-gguf", b"PK\x03\x04 this is a zip".to_vec(), "magic"),
    ];
    let mut v1 = good.clone();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    cases.push(("v1", v1, "version 1"));
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("huge-count", huge, "tensor count"));
    for (name, bytes, expect) in cases {
        let path = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&path, &bytes).unwrap();
        let out = inspect(&[], &path);
        assert!(!out.status.success(), "{name} must be refused");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{name}: one line, got {err}"
        );
        assert!(err.starts_with("xverse-convert: "), "{name}: {err}");
        assert!(
            err.contains(&format!("{name}.gguf")),
            "{name}: message names the file: {err}"
        );
        assert!(err.contains(expect), "{name}: expected {expect:?} in {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    let missing = inspect(&[], &dir.path().join("nope.gguf"));
    assert!(!missing.status.success());
    let err = String::from_utf8(missing.stderr).unwrap();
    assert!(err.contains("nope.gguf"), "{err}");
}
