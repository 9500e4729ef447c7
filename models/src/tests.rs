//! Tests of the tiny-model writer and the fuzz seeds (they read back with the project's reader).

use std::collections::HashSet;
use std::path::Path;

use xverse_quant::gguf::{Gguf, Value, ValueType};
use xverse_quant::GgmlType;

use crate::vocab::token_type;
use crate::*;

fn small(ty: GgmlType) -> TinySpec {
    TinySpec {
        ty,
        ..TinySpec::default()
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Every key of the contract, with its value and GGUF type.
fn check_metadata(g: &Gguf, spec: &TinySpec) {
    let s = |k: &str| g.get_str(k).unwrap().to_string();
    let u = |k: &str| match g.get(k) {
        Some(Value::U32(v)) => *v,
        other => panic!("{k}: expected u32, found {other:?}"),
    };
    let f = |k: &str| match g.get(k) {
        Some(Value::F32(v)) => *v,
        other => panic!("{k}: expected f32, found {other:?}"),
    };
    let b = |k: &str| match g.get(k) {
        Some(Value::Bool(v)) => *v,
        other => panic!("{k}: expected bool, found {other:?}"),
    };
    assert_eq!(g.metadata()[0].0, "general.architecture");
    assert_eq!(s("general.architecture"), "xverse");
    assert_eq!(s("general.name"), TINY_NAME);
    u("general.file_type");
    assert_eq!(u("xverse.context_length") as usize, spec.context);
    assert_eq!(u("xverse.embedding_length") as usize, spec.hidden);
    assert_eq!(u("xverse.block_count") as usize, spec.layers);
    assert_eq!(u("xverse.feed_forward_length") as usize, spec.ffn);
    assert_eq!(u("xverse.rope.dimension_count") as usize, spec.head_dim());
    assert_eq!(u("xverse.attention.head_count") as usize, spec.heads);
    assert_eq!(u("xverse.attention.head_count_kv") as usize, spec.kv_heads);
    assert_eq!(f("xverse.attention.layer_norm_rms_epsilon"), 1e-6);
    assert_eq!(f("xverse.rope.freq_base"), 10000.0);
    assert_eq!(s("tokenizer.ggml.model"), "llama");
    assert_eq!(u("tokenizer.ggml.bos_token_id"), 2);
    assert_eq!(u("tokenizer.ggml.eos_token_id"), 3);
    assert_eq!(u("tokenizer.ggml.padding_token_id"), 1);
    assert_eq!(u("tokenizer.ggml.unknown_token_id"), 0);
    assert!(!b("tokenizer.ggml.add_bos_token"));
    assert!(!b("tokenizer.ggml.add_space_prefix"));

    let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), spec.vocab);
    assert_eq!(
        tokens.iter().collect::<HashSet<_>>().len(),
        spec.vocab,
        "unique tokens"
    );
    assert_eq!(
        &tokens[..4],
        &["<unk>", "<pad>", "<|startoftext|>", "<|endoftext|>"]
    );
    assert_eq!(tokens[4 + 0x0A], "<0x0A>");
    assert_eq!(
        g.get_array("tokenizer.ggml.scores").unwrap().0,
        ValueType::F32
    );
    let scores = g.get_f32_array("tokenizer.ggml.scores").unwrap();
    assert_eq!(scores.len(), spec.vocab);
    assert_eq!(
        g.get_array("tokenizer.ggml.token_type").unwrap().0,
        ValueType::I32
    );
    let types = g.get_i32_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types.len(), spec.vocab);
    assert_eq!(types[0], token_type::UNKNOWN);
    assert_eq!(&types[1..4], &[token_type::CONTROL; 3]);
    assert!(types[4..260].iter().all(|&t| t == token_type::BYTE));
    assert!(types[260..].iter().all(|&t| t == token_type::NORMAL));
}

/// Every tensor of llama.cpp's xverse loader with ggml dims and the expected type.
fn check_tensors(g: &Gguf, spec: &TinySpec) {
    let (h, f, v) = (spec.hidden as u64, spec.ffn as u64, spec.vocab as u64);
    let kv = (spec.kv_heads * spec.head_dim()) as u64;
    let mut expected: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![h, v])];
    for i in 0..spec.layers {
        for (n, d) in [
            ("attn_norm", vec![h]),
            ("attn_q", vec![h, h]),
            ("attn_k", vec![h, kv]),
            ("attn_v", vec![h, kv]),
            ("attn_output", vec![h, h]),
            ("ffn_norm", vec![h]),
            ("ffn_gate", vec![h, f]),
            ("ffn_up", vec![h, f]),
            ("ffn_down", vec![f, h]),
        ] {
            expected.push((format!("blk.{i}.{n}.weight"), d));
        }
    }
    expected.push(("output_norm.weight".into(), vec![h]));
    expected.push(("output.weight".into(), vec![h, v]));
    assert_eq!(g.tensors().len(), expected.len());
    for (name, dims) in expected {
        let t = g
            .tensor_info(&name)
            .unwrap_or_else(|| panic!("missing {name}"));
        assert_eq!(t.dims, dims, "{name}");
        let want = if dims.len() == 1 {
            GgmlType::F32
        } else if (dims[0] as usize).is_multiple_of(spec.ty.block_size()) {
            spec.ty
        } else {
            GgmlType::F16
        };
        assert_eq!(t.ty, want, "{name}");
        assert_eq!(t.offset % g.alignment(), 0, "{name}");
        assert_eq!(
            t.n_bytes,
            want.bytes_for(dims.iter().product()).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn default_f32_model_has_every_key_and_tensor_and_the_generated_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let spec = TinySpec::default();
    write_tiny_gguf(&path, &spec).unwrap();
    let g = Gguf::open(&path).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    check_metadata(&g, &spec);
    check_tensors(&g, &spec);
    assert_eq!(g.get_u32("general.file_type").unwrap(), 0);
    let n_params: u64 = g.tensors().iter().map(|t| t.n_elements).sum();
    assert_eq!(n_params, spec.params());
    assert_eq!(n_params, 164_672, "same size as the developer fixture");
    // F32: the file holds exactly the generated values
    for t in g.tensors() {
        let want = spec.tensor_values(&t.name).unwrap().unwrap();
        let got = g.view(t).to_f32().unwrap();
        assert_eq!(got, want, "{}", t.name);
    }
    assert_eq!(spec.tensor_values("nope").unwrap(), None);
    assert_eq!(files_in(dir.path()), vec!["tiny.gguf"], "no temp file left");
}

#[test]
fn weights_have_the_fixture_scales() {
    let spec = TinySpec {
        hidden: 256,
        ffn: 512,
        layers: 4,
        ..TinySpec::default()
    };
    let stats = |name: &str| {
        let v = spec.tensor_values(name).unwrap().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    };
    let close = |name: &str, mean: f64, std: f64| {
        let (m, s) = stats(name);
        assert!((m - mean).abs() < 0.05 * std.max(0.1), "{name}: mean {m}");
        assert!((s / std - 1.0).abs() < 0.05, "{name}: std {s}, want {std}");
    };
    let sh = 1.0 / 16.0;
    let res = 1.0 / 8f64.sqrt();
    close("token_embd.weight", 0.0, 0.5);
    close("blk.0.attn_q.weight", 0.0, 1.5 * sh);
    close("blk.1.attn_k.weight", 0.0, 1.5 * sh);
    close("blk.2.attn_v.weight", 0.0, sh);
    close("blk.3.attn_output.weight", 0.0, sh * res);
    close("blk.0.ffn_gate.weight", 0.0, sh);
    close("blk.0.ffn_up.weight", 0.0, sh);
    close("blk.0.ffn_down.weight", 0.0, res / 512f64.sqrt());
    close("output.weight", 0.0, sh);
    let (m, s) = stats("blk.0.attn_norm.weight");
    assert!((m - 1.0).abs() < 0.03 && (s - 0.1).abs() < 0.03, "{m} {s}");
    // different tensors get different streams
    assert_ne!(
        spec.tensor_values("blk.0.ffn_gate.weight").unwrap(),
        spec.tensor_values("blk.0.ffn_up.weight").unwrap()
    );
}

#[test]
fn quantized_types_fall_back_to_f16_for_partial_blocks() {
    let dir = tempfile::tempdir().unwrap();
    for (ty, ftype) in [
        (GgmlType::F16, 1),
        (GgmlType::BF16, 32),
        (GgmlType::Q8_0, 7),
        (GgmlType::Q4_0, 2),
        (GgmlType::Q4_1, 3),
        (GgmlType::Q5_0, 8),
        (GgmlType::Q5_1, 9),
        // hidden 64 is no whole 256-block: every weight falls back to F16
        (GgmlType::Q4K, 1),
        (GgmlType::Q6K, 1),
    ] {
        let spec = small(ty);
        let path = dir.path().join(format!("{ty}.gguf"));
        write_tiny_gguf(&path, &spec).unwrap();
        let g = Gguf::open(&path).unwrap();
        check_metadata(&g, &spec);
        check_tensors(&g, &spec);
        assert_eq!(g.get_u32("general.file_type").unwrap(), ftype, "{ty}");
        if ty.is_quantized() && ty.block_size() == 32 {
            assert_eq!(g.tensor_info("blk.0.ffn_gate.weight").unwrap().ty, ty);
            assert_eq!(
                g.tensor_info("blk.0.ffn_down.weight").unwrap().ty,
                GgmlType::F16,
                "row of 172"
            );
        }
        // the dequantized weights are close to the generated ones
        let name = "blk.1.attn_q.weight";
        let want = spec.tensor_values(name).unwrap().unwrap();
        let got = g.tensor(name).unwrap().to_f32().unwrap();
        let err = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            / want.len() as f32;
        let var = want.iter().map(|a| a * a).sum::<f32>() / want.len() as f32;
        assert!(err < 0.02 * var, "{ty}: mse {err} vs var {var}");
    }
}

#[test]
fn k_quants_with_256_rows_and_gqa() {
    let spec = TinySpec {
        hidden: 256,
        heads: 4,
        kv_heads: 2,
        ffn: 512,
        layers: 1,
        vocab: 300,
        ty: GgmlType::Q4K,
        ..TinySpec::default()
    };
    let bytes = tiny_gguf_bytes(&spec).unwrap();
    let g = Gguf::from_bytes(bytes, "q4k").unwrap();
    check_metadata(&g, &spec);
    check_tensors(&g, &spec);
    assert_eq!(g.get_u32("general.file_type").unwrap(), 15);
    assert_eq!(
        g.tensor_info("blk.0.attn_k.weight").unwrap().dims,
        vec![256, 128]
    );
    assert_eq!(
        g.tensor_info("blk.0.ffn_down.weight").unwrap().ty,
        GgmlType::Q4K
    );
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = small(GgmlType::Q8_0);
    let a = dir.path().join("a.gguf");
    let b = dir.path().join("b.gguf");
    write_tiny_gguf(&a, &spec).unwrap();
    write_tiny_gguf(&b, &spec).unwrap();
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ba, bb);
    assert_eq!(tiny_gguf_bytes(&spec).unwrap(), ba, "in-memory = streamed");
    let other = TinySpec {
        seed: 2,
        ..spec.clone()
    };
    let bo = tiny_gguf_bytes(&other).unwrap();
    assert_eq!(bo.len(), ba.len());
    assert_ne!(bo, ba);
    // replacing an existing file works for write_tiny_gguf
    write_tiny_gguf(&a, &other).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), bo);
}

#[test]
fn bad_specs_are_refused_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(TinySpec, &str)> = vec![
        (
            TinySpec {
                hidden: 60,
                heads: 8,
                kv_heads: 8,
                ..TinySpec::default()
            },
            "not divisible by heads",
        ),
        (
            TinySpec {
                layers: 0,
                ..TinySpec::default()
            },
            "layers must be at least 1",
        ),
        (
            TinySpec {
                vocab: 259,
                ..TinySpec::default()
            },
            "smaller than 260",
        ),
        (
            TinySpec {
                heads: 0,
                ..TinySpec::default()
            },
            "heads must be at least 1",
        ),
        (
            TinySpec {
                kv_heads: 3,
                ..TinySpec::default()
            },
            "not divisible by kv heads",
        ),
        (
            TinySpec {
                hidden: 12,
                heads: 4,
                ..TinySpec::default()
            },
            "must be even",
        ),
        (
            TinySpec {
                ty: GgmlType::Q2K,
                ..TinySpec::default()
            },
            "no quantizer",
        ),
        (
            TinySpec {
                ty: GgmlType::Q8K,
                ..TinySpec::default()
            },
            "activation format",
        ),
        (
            TinySpec {
                hidden: 1 << 31,
                heads: 1 << 20,
                kv_heads: 1 << 20,
                vocab: 1 << 30,
                ..TinySpec::default()
            },
            "too large",
        ),
        (
            TinySpec {
                hidden: 1 << 33,
                ..TinySpec::default()
            },
            "hidden is too large",
        ),
    ];
    for (i, (spec, msg)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.gguf"));
        let e = write_tiny_gguf(&path, spec).unwrap_err().to_string();
        assert!(e.contains(msg), "{e:?} should contain {msg:?}");
        assert!(e.starts_with("invalid tiny model"), "{e}");
        assert!(tiny_gguf_bytes(spec).is_err());
        assert!(spec.tensors().is_err());
    }
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn create_refuses_to_replace_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, b"keep me").unwrap();
    assert!(create_tiny_gguf(&path, &TinySpec::default(), false).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    assert_eq!(files_in(dir.path()), vec!["m.gguf"]);
    let size = create_tiny_gguf(&path, &TinySpec::default(), true).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
}

#[test]
fn from_preset_keeps_the_shape() {
    let s = TinySpec::from_preset(&presets::XVERSE_65B);
    assert_eq!(
        (s.hidden, s.layers, s.heads, s.kv_heads),
        (8192, 80, 64, 64)
    );
    assert_eq!((s.ffn, s.vocab, s.context), (22016, 100534, 16384));
    assert_eq!(s.params(), presets::XVERSE_65B.params());
    s.validate().unwrap();
    let t = s.tensors().unwrap();
    assert_eq!(t.len(), 2 + 80 * 9 + 1);
    assert_eq!(t[0].dims, vec![8192, 100534]);
}

#[test]
fn fuzz_seeds_are_valid_and_small() {
    let seeds = seeds::fuzz_seeds().unwrap();
    let total: usize = seeds.iter().map(|(_, b)| b.len()).sum();
    assert!(total < 200_000, "{total} bytes");
    assert!(seeds.len() >= 8);
    for (name, bytes) in seeds {
        let g = Gguf::from_bytes(bytes, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
        for t in g.tensors() {
            let v = g.view(t);
            let mut out = vec![0f32; t.row_len() as usize];
            if t.n_rows() > 0 {
                v.dequantize_row(0, &mut out).unwrap();
            }
        }
        if name == "metadata" {
            let (ty, items) = g.get_array("test.deep").unwrap();
            assert_eq!((ty, items.len()), (ValueType::Array, 1));
            assert_eq!(g.get_u64("test.scalar.u64").unwrap(), u64::MAX - 1);
            assert_eq!(
                g.get_str("test.scalar.string").unwrap(),
                "héllo 世界 ▁tok\n"
            );
        }
        if name == "align64" {
            assert_eq!(g.alignment(), 64);
        }
        if name == "types" {
            assert_eq!(g.tensors().len(), GgmlType::ALL.len() + 3);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let n = seeds::write_fuzz_seeds(&dir.path().join("s")).unwrap();
    assert_eq!(n as usize, total);
}
