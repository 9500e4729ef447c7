//! Tests of the Hugging Face checkpoint writer: read back with the `safetensors` crate, compared
//! with the developer fixtures, tokenizer loaded with the `tokenizers` crate.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::tokenizer::{self, MIN_HF_VOCAB};
use super::*;
use crate::presets;

/// `shared/fixtures/`.
fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// One tensor as read back: the shard holding it, dtype, shape, bytes.
struct Read {
    shard: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Parses every shard of the checkpoint in `dir` with the safetensors crate; returns the index
/// and the tensors by name. Checks that no tensor is in two shards and that each shard's
/// metadata is `{"format": "pt"}`.
fn read_checkpoint(dir: &Path) -> (Value, BTreeMap<String, Read>, BTreeMap<String, u64>) {
    let index = read_json(&dir.join(INDEX_FILE));
    let mut tensors = BTreeMap::new();
    let mut shard_data = BTreeMap::new();
    for name in files_in(dir) {
        if !name.ends_with(".safetensors") {
            continue;
        }
        let bytes = fs::read(dir.join(&name)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(
            meta.metadata()
                .as_ref()
                .unwrap()
                .get("format")
                .map(|s| s.as_str()),
            Some("pt")
        );
        let mut data = 0u64;
        for (tname, view) in st.tensors() {
            data += view.data().len() as u64;
            let prev = tensors.insert(
                tname.clone(),
                Read {
                    shard: name.clone(),
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    data: view.data().to_vec(),
                },
            );
            assert!(prev.is_none(), "{tname} is in two shards");
        }
        shard_data.insert(name, data);
    }
    (index, tensors, shard_data)
}

fn bf16_values(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(2)
        .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
        .collect()
}

fn f32_values(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Everything a checkpoint must satisfy for `spec`.
fn check_checkpoint(dir: &Path, spec: &HfSpec, summary: &HfSummary) {
    let (index, tensors, shard_data) = read_checkpoint(dir);
    let plan = spec.tensors().unwrap();
    let n_shards = summary.shards.len();
    let mut expected_files: Vec<String> = (1..=n_shards).map(|k| shard_name(k, n_shards)).collect();
    assert_eq!(summary.shards, expected_files);
    expected_files.extend(
        [
            INDEX_FILE,
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ]
        .map(String::from),
    );
    expected_files.sort();
    assert_eq!(files_in(dir), expected_files);
    let parent = dir.parent().unwrap();
    for f in files_in(parent) {
        assert!(!f.ends_with(".partial") && !f.ends_with(".old"), "{f} left");
    }

    // names, shapes, dtypes, values
    assert_eq!(tensors.len(), plan.len());
    assert_eq!(summary.tensors, plan.len());
    let mut total = 0u64;
    for t in &plan {
        let r = tensors
            .get(&t.name)
            .unwrap_or_else(|| panic!("missing {}", t.name));
        assert_eq!(r.dtype, spec.dtype.safetensors(), "{}", t.name);
        assert_eq!(r.shape, t.shape, "{}", t.name);
        assert_eq!(r.data.len(), t.n_elements() * spec.dtype.size());
        total += r.data.len() as u64;
        let vals = match spec.dtype {
            HfDtype::Bf16 => bf16_values(&r.data),
            HfDtype::F32 => f32_values(&r.data),
        };
        let want = spec.tensor_values(&t.name).unwrap().unwrap();
        assert!(
            vals.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{} values differ",
            t.name
        );
    }
    // shapes per config
    let config = read_json(&dir.join("config.json"));
    let (h, f, v) = (spec.hidden, spec.ffn, spec.vocab);
    let kv = spec.kv_heads() * spec.head_dim();
    assert_eq!(config["hidden_size"], h);
    assert_eq!(config["intermediate_size"], f);
    assert_eq!(config["vocab_size"], v);
    assert_eq!(config["num_hidden_layers"], spec.layers);
    assert_eq!(tensors["model.embed_tokens.weight"].shape, [v, h]);
    assert_eq!(tensors["lm_head.weight"].shape, [v, h]);
    assert_eq!(tensors["model.norm.weight"].shape, [h]);
    for i in 0..spec.layers {
        let p = |n: &str| &tensors[&format!("model.layers.{i}.{n}.weight")].shape;
        assert_eq!(p("input_layernorm"), &[h]);
        assert_eq!(p("post_attention_layernorm"), &[h]);
        assert_eq!(p("self_attn.q_proj"), &[h, h]);
        assert_eq!(p("self_attn.k_proj"), &[kv, h]);
        assert_eq!(p("self_attn.v_proj"), &[kv, h]);
        assert_eq!(p("self_attn.o_proj"), &[h, h]);
        assert_eq!(p("mlp.gate_proj"), &[f, h]);
        assert_eq!(p("mlp.up_proj"), &[f, h]);
        assert_eq!(p("mlp.down_proj"), &[h, f]);
    }

    // the index: every tensor, in the shard that holds it; total_size
    let map = index["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), plan.len());
    for (name, shard) in map {
        assert_eq!(shard.as_str().unwrap(), tensors[name].shard, "{name}");
    }
    assert_eq!(index["metadata"]["total_size"].as_u64().unwrap(), total);
    assert_eq!(total, spec.total_size());
    assert_eq!(summary.total_size, total);
    assert_eq!(total, spec.params() * spec.dtype.size() as u64);
    assert_eq!(summary.params, spec.params());

    // shards: consecutive runs of the model order, each within the limit unless it is one tensor
    let order: Vec<usize> = plan
        .iter()
        .map(|t| {
            summary
                .shards
                .iter()
                .position(|s| *s == tensors[&t.name].shard)
                .unwrap()
        })
        .collect();
    assert!(order.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
    assert_eq!(*order.last().unwrap(), n_shards - 1);
    for (name, bytes) in &shard_data {
        let count = tensors.values().filter(|r| r.shard == *name).count();
        assert!(
            *bytes <= spec.max_shard_bytes || count == 1,
            "{name}: {bytes} bytes in {count} tensors over {}",
            spec.max_shard_bytes
        );
    }
    // greedy: the first tensor of each shard did not fit into the one before
    for k in 1..n_shards {
        let first = plan.iter().zip(&order).find(|(_, &o)| o == k).unwrap().0;
        let prev = shard_data[&summary.shards[k - 1]];
        assert!(prev + (first.n_elements() * spec.dtype.size()) as u64 > spec.max_shard_bytes);
    }
    let on_disk: u64 = files_in(dir)
        .iter()
        .map(|f| fs::metadata(dir.join(f)).unwrap().len())
        .sum();
    assert_eq!(summary.file_bytes, on_disk);
}

#[test]
fn fixture_shape_checkpoint_reads_back_and_splits_like_the_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    // the fixture (tiny-xverse-st) has embed + layer 0 + layers.1.input_layernorm (164,736
    // bytes) in its first shard and the other 164,608 bytes in the second: greedy at 164,736
    let spec = HfSpec {
        max_shard_bytes: 164_736,
        ..HfSpec::default()
    };
    let s = write_hf_checkpoint(&dir, &spec).unwrap();
    check_checkpoint(&dir, &spec, &s);
    assert_eq!(s.params, 164_672);
    assert_eq!(s.total_size, 329_344);
    assert_eq!(s.tensors, 21);
    assert_eq!(s.dir, dir);

    let fx = fixtures().join("tiny-xverse-st");
    let ours = read_json(&dir.join(INDEX_FILE));
    let theirs = read_json(&fx.join(INDEX_FILE));
    assert_eq!(ours, theirs, "same names, same split, same total_size");
    // the same safetensors header layout (names, dtypes, shapes, offsets), only the values differ
    for shard in &s.shards {
        let a = fs::read(dir.join(shard)).unwrap();
        let b = fs::read(fx.join(shard)).unwrap();
        assert_eq!(a.len(), b.len(), "{shard}");
        let (na, nb) = (
            u64::from_le_bytes(a[..8].try_into().unwrap()) as usize,
            u64::from_le_bytes(b[..8].try_into().unwrap()) as usize,
        );
        assert_eq!(a[..8 + na], b[..8 + nb], "{shard} header");
    }
    // config.json and generation_config.json equal the fixture's
    assert_eq!(
        read_json(&dir.join("config.json")),
        read_json(&fx.join("config.json"))
    );
    assert_eq!(
        read_json(&dir.join("generation_config.json")),
        read_json(&fixtures().join("tiny-xverse-bin/generation_config.json"))
    );
    assert_eq!(
        read_json(&dir.join("special_tokens_map.json")),
        read_json(&fx.join("special_tokens_map.json"))
    );
    let mut tc = read_json(&dir.join("tokenizer_config.json"));
    let mut fc = read_json(&fx.join("tokenizer_config.json"));
    assert_eq!(tc["model_max_length"], 2048);
    tc["model_max_length"] = Value::Null;
    fc["model_max_length"] = Value::Null;
    assert_eq!(tc, fc);
}

#[test]
fn written_shards_equal_the_safetensors_crates_serialization() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let spec = HfSpec {
        hidden: 32,
        ffn: 48,
        heads: 2,
        vocab: 300,
        layers: 3,
        max_shard_bytes: 20_000,
        ..HfSpec::default()
    };
    let s = write_hf_checkpoint(&dir, &spec).unwrap();
    assert!(s.shards.len() > 2);
    check_checkpoint(&dir, &spec, &s);
    for shard in &s.shards {
        let bytes = fs::read(dir.join(shard)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let again = safetensors::serialize(
            st.tensors(),
            Some(HashMap::from([("format".to_string(), "pt".to_string())])),
        )
        .unwrap();
        assert!(
            again == bytes,
            "{shard}: not byte-identical to safetensors::serialize"
        );
    }
}

#[test]
fn values_are_bf16_deterministic_and_have_the_fixture_scales() {
    let spec = HfSpec {
        hidden: 256,
        ffn: 512,
        heads: 4,
        layers: 4,
        vocab: 1000,
        ..HfSpec::default()
    };
    let stats = |name: &str| {
        let v = spec.tensor_values(name).unwrap().unwrap();
        for x in &v {
            assert_eq!(x.to_bits() & 0xffff, 0, "{name}: not a bf16 value");
            assert!(x.is_finite());
        }
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    };
    let (h, f, l) = (256f64, 512f64, 4f64);
    let res = 1.0 / (2.0 * l).sqrt();
    for (name, want_mean, want_std) in [
        ("model.embed_tokens.weight", 0.0, 0.5),
        ("lm_head.weight", 0.0, 1.0 / h.sqrt()),
        (
            "model.layers.0.self_attn.q_proj.weight",
            0.0,
            1.5 / h.sqrt(),
        ),
        (
            "model.layers.1.self_attn.k_proj.weight",
            0.0,
            1.5 / h.sqrt(),
        ),
        (
            "model.layers.2.self_attn.v_proj.weight",
            0.0,
            1.0 / h.sqrt(),
        ),
        (
            "model.layers.3.self_attn.o_proj.weight",
            0.0,
            res / h.sqrt(),
        ),
        ("model.layers.0.mlp.gate_proj.weight", 0.0, 1.0 / h.sqrt()),
        ("model.layers.0.mlp.up_proj.weight", 0.0, 1.0 / h.sqrt()),
        ("model.layers.0.mlp.down_proj.weight", 0.0, res / f.sqrt()),
    ] {
        let (m, s) = stats(name);
        assert!(
            (s / want_std - 1.0).abs() < 0.03,
            "{name}: std {s} want {want_std}"
        );
        assert!((m - want_mean).abs() < 0.05 * want_std, "{name}: mean {m}");
    }
    // norms: 1 + 0.1·N(0,1) (few samples: loose bounds)
    let norms: Vec<f32> = (0..4)
        .flat_map(|i| {
            spec.tensor_values(&format!("model.layers.{i}.input_layernorm.weight"))
                .unwrap()
                .unwrap()
        })
        .collect();
    let mean = norms.iter().map(|&x| x as f64).sum::<f64>() / norms.len() as f64;
    let std = (norms
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / norms.len() as f64)
        .sqrt();
    assert!((mean - 1.0).abs() < 0.02, "norm mean {mean}");
    assert!((std - 0.1).abs() < 0.02, "norm std {std}");

    // deterministic for a seed; another seed or tensor gives other values
    let a = spec
        .tensor_values("model.layers.0.mlp.up_proj.weight")
        .unwrap();
    assert_eq!(
        a,
        spec.tensor_values("model.layers.0.mlp.up_proj.weight")
            .unwrap()
    );
    let other = HfSpec {
        seed: 2,
        ..spec.clone()
    };
    let b = other
        .tensor_values("model.layers.0.mlp.up_proj.weight")
        .unwrap();
    assert_ne!(a, b);
    let c = spec
        .tensor_values("model.layers.0.mlp.gate_proj.weight")
        .unwrap();
    assert_ne!(a, c);
    assert_eq!(
        spec.tensor_values("model.layers.9.mlp.up_proj.weight"),
        Ok(None)
    );
    // every stored value is its own bf16 rounding, and that rounding is to nearest even
    assert_eq!(bf16_round(1.0 + f32::EPSILON * 64.0), 1.0); // below half an ulp
    assert_eq!(bf16_round(f32::from_bits(0x3f80_8000)), 1.0); // tie → even (1.0)
    assert_eq!(
        bf16_round(f32::from_bits(0x3f81_8000)).to_bits(),
        0x3f82_0000 // tie → even (up)
    );
}

#[test]
fn same_seed_same_files_and_values_independent_of_sharding_and_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = HfSpec {
        hidden: 32,
        ffn: 64,
        heads: 4,
        vocab: 400,
        max_shard_bytes: 30_000,
        ..HfSpec::default()
    };
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    write_hf_checkpoint(&a, &spec).unwrap();
    write_hf_checkpoint(&b, &spec).unwrap();
    for f in files_in(&a) {
        assert!(
            fs::read(a.join(&f)).unwrap() == fs::read(b.join(&f)).unwrap(),
            "{f} differs between two runs"
        );
    }
    // another seed: other weights, same JSON files
    let c = tmp.path().join("c");
    write_hf_checkpoint(
        &c,
        &HfSpec {
            seed: 9,
            ..spec.clone()
        },
    )
    .unwrap();
    for f in files_in(&a) {
        let same = fs::read(a.join(&f)).unwrap() == fs::read(c.join(&f)).unwrap();
        assert_eq!(same, f.ends_with(".json"), "{f}");
    }
    // one shard, and f32: the same tensor values
    let d = tmp.path().join("d");
    let one = HfSpec {
        max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
        dtype: HfDtype::F32,
        ..spec.clone()
    };
    let s = write_hf_checkpoint(&d, &one).unwrap();
    assert_eq!(s.shards, ["model-00001-of-00001.safetensors"]);
    check_checkpoint(&d, &one, &s);
    assert_eq!(read_json(&d.join("config.json"))["torch_dtype"], "float32");
    let (_, ta, _) = read_checkpoint(&a);
    let (_, td, _) = read_checkpoint(&d);
    for (name, r) in &ta {
        assert_eq!(bf16_values(&r.data), f32_values(&td[name].data), "{name}");
    }
}

#[test]
fn gqa_shapes_and_num_key_value_heads_only_when_set() {
    let tmp = tempfile::tempdir().unwrap();
    let gqa = HfSpec {
        hidden: 128,
        heads: 8,
        kv_heads: Some(2),
        ffn: 96,
        vocab: 300,
        ..HfSpec::default()
    };
    let dir = tmp.path().join("gqa");
    let s = write_hf_checkpoint(&dir, &gqa).unwrap();
    check_checkpoint(&dir, &gqa, &s);
    let (_, t, _) = read_checkpoint(&dir);
    assert_eq!(t["model.layers.1.self_attn.k_proj.weight"].shape, [32, 128]);
    assert_eq!(t["model.layers.1.self_attn.v_proj.weight"].shape, [32, 128]);
    assert_eq!(
        t["model.layers.1.self_attn.q_proj.weight"].shape,
        [128, 128]
    );
    let c = read_json(&dir.join("config.json"));
    assert_eq!(c["num_key_value_heads"], 2);
    assert_eq!(c["num_attention_heads"], 8);
    let elements: u64 = gqa
        .tensors()
        .unwrap()
        .iter()
        .map(|t| t.n_elements() as u64)
        .sum();
    assert_eq!(elements, gqa.params());

    // kv_heads = heads, but written explicitly
    let explicit = HfSpec {
        kv_heads: Some(4),
        ..HfSpec::default()
    };
    let c: Value = serde_json::from_str(&explicit.config_json()).unwrap();
    assert_eq!(c["num_key_value_heads"], 4);
    let c: Value = serde_json::from_str(&HfSpec::default().config_json()).unwrap();
    assert!(c.get("num_key_value_heads").is_none());
    let c: Value = serde_json::from_str(
        &HfSpec {
            rope_theta: None,
            ..HfSpec::default()
        }
        .config_json(),
    )
    .unwrap();
    assert!(c.get("rope_theta").is_none());
}

#[test]
fn presets_give_their_published_config_and_parameter_count() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/presets"));
    let mut seen = 0;
    for p in presets::ALL {
        let spec = HfSpec::from_preset(&p);
        assert_eq!(spec.params(), p.params(), "{}", p.name);
        let elements: u64 = spec
            .tensors()
            .unwrap()
            .iter()
            .map(|t| t.n_elements() as u64)
            .sum();
        assert_eq!(elements, p.params(), "{}", p.name);
        assert_eq!(spec.total_size(), p.bf16_bytes());
        let path = dir.join(format!("{}.json", p.name));
        if !path.exists() {
            continue;
        }
        seen += 1;
        let published = read_json(&path);
        let ours: Value = serde_json::from_str(&spec.config_json()).unwrap();
        for (k, v) in published.as_object().unwrap() {
            assert_eq!(&ours[k], v, "{}: {k}", p.name);
        }
    }
    assert!(seen >= 5, "shared/presets/*.json");
    // bench-1b at the default 1 GiB limit: 3 shards; shard sizes are all under the limit
    let spec = HfSpec::from_preset(&presets::BENCH_1B);
    let shards = spec.shards().unwrap();
    assert_eq!(shards.len(), 3);
    for s in &shards {
        let bytes: usize = s.iter().map(|t| t.n_elements() * 2).sum();
        assert!(bytes as u64 <= DEFAULT_MAX_SHARD_BYTES);
    }
}

#[test]
fn a_tensor_larger_than_the_limit_gets_a_shard_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = HfSpec {
        max_shard_bytes: 1,
        hidden: 16,
        heads: 2,
        ffn: 24,
        vocab: 270,
        ..HfSpec::default()
    };
    let dir = tmp.path().join("each");
    let s = write_hf_checkpoint(&dir, &spec).unwrap();
    assert_eq!(s.shards.len(), 21);
    assert_eq!(s.shards[20], "model-00021-of-00021.safetensors");
    check_checkpoint(&dir, &spec, &s);
    // exactly the embedding's size: the embedding alone, then the rest greedily
    let embed = (270 * 16 * 2) as u64;
    let spec = HfSpec {
        max_shard_bytes: embed,
        ..spec
    };
    let shards = spec.shards().unwrap();
    assert_eq!(shards[0].len(), 1);
    assert_eq!(shards[0][0].name, "model.embed_tokens.weight");
    assert_eq!(
        shards.last().unwrap().last().unwrap().name,
        "lm_head.weight"
    );
}

#[test]
fn bad_specs_are_refused_and_leave_nothing() {
    let cases: Vec<(HfSpec, &str)> = vec![
        (
            HfSpec {
                hidden: 0,
                ..HfSpec::default()
            },
            "hidden must be at least 1",
        ),
        (
            HfSpec {
                heads: 0,
                ..HfSpec::default()
            },
            "heads must be at least 1",
        ),
        (
            HfSpec {
                layers: 0,
                ..HfSpec::default()
            },
            "layers must be at least 1",
        ),
        (
            HfSpec {
                ffn: 0,
                ..HfSpec::default()
            },
            "ffn must be at least 1",
        ),
        (
            HfSpec {
                context: 0,
                ..HfSpec::default()
            },
            "context must be at least 1",
        ),
        (
            HfSpec {
                kv_heads: Some(0),
                ..HfSpec::default()
            },
            "kv_heads must be at least 1",
        ),
        (
            HfSpec {
                max_shard_bytes: 0,
                ..HfSpec::default()
            },
            "max_shard_bytes must be at least 1",
        ),
        (
            HfSpec {
                heads: 3,
                ..HfSpec::default()
            },
            "not divisible by heads 3",
        ),
        (
            HfSpec {
                hidden: 12,
                heads: 4,
                ..HfSpec::default()
            },
            "head dimension hidden/heads = 3 must be even",
        ),
        (
            HfSpec {
                kv_heads: Some(3),
                ..HfSpec::default()
            },
            "heads 4 is not divisible by kv heads 3",
        ),
        (
            HfSpec {
                kv_heads: Some(8),
                ..HfSpec::default()
            },
            "heads 4 is not divisible by kv heads 8",
        ),
        (
            HfSpec {
                vocab: 260,
                ..HfSpec::default()
            },
            "vocab 260 is smaller than 261",
        ),
        (
            HfSpec {
                vocab: 0,
                ..HfSpec::default()
            },
            "vocab 0 is smaller",
        ),
        (
            HfSpec {
                rope_theta: Some(f64::NAN),
                ..HfSpec::default()
            },
            "rope_theta NaN must be a positive finite number",
        ),
        (
            HfSpec {
                rope_theta: Some(-1.0),
                ..HfSpec::default()
            },
            "must be a positive finite number",
        ),
        (
            HfSpec {
                hidden: 1 << 33,
                heads: 1 << 20,
                ..HfSpec::default()
            },
            "hidden is too large",
        ),
        (
            HfSpec {
                hidden: 1 << 31,
                heads: 1 << 20,
                vocab: i32::MAX as usize,
                ..HfSpec::default()
            },
            "model is too large",
        ),
        (
            HfSpec {
                vocab: 1 << 31,
                ..HfSpec::default()
            },
            "vocab is too large",
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (spec, want) in cases {
        let dir = tmp.path().join("sub").join("ckpt");
        let e = write_hf_checkpoint(&dir, &spec).unwrap_err().to_string();
        assert!(e.contains(want), "{spec:?}: {e:?} lacks {want:?}");
        assert!(e.starts_with("invalid checkpoint spec: "), "{e}");
        assert!(spec.validate().is_err());
        assert!(spec.tensors().is_err());
        assert!(
            files_in(tmp.path()).is_empty(),
            "{spec:?} left {:?}",
            files_in(tmp.path())
        );
    }
    for target in [Path::new("/"), Path::new(".."), Path::new("a/..")] {
        let e = write_hf_checkpoint(target, &HfSpec::default()).unwrap_err();
        assert!(e.to_string().contains("not a usable output folder"), "{e}");
    }
}

#[test]
fn existing_targets_are_kept_unless_replacing_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = HfSpec {
        hidden: 16,
        heads: 2,
        ffn: 24,
        vocab: 270,
        layers: 1,
        ..HfSpec::default()
    };
    // an existing empty folder is filled
    let dir = tmp.path().join("ckpt");
    fs::create_dir(&dir).unwrap();
    let s = write_hf_checkpoint(&dir, &spec).unwrap();
    check_checkpoint(&dir, &spec, &s);
    let before = fs::read(dir.join(&s.shards[0])).unwrap();

    // a checkpoint: refused without overwrite, untouched
    let e = write_hf_checkpoint(
        &dir,
        &HfSpec {
            seed: 5,
            ..spec.clone()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("exists; pass --force"), "{e}");
    assert_eq!(fs::read(dir.join(&s.shards[0])).unwrap(), before);

    // replaced with overwrite; nothing left beside it
    let other = HfSpec {
        seed: 5,
        ..spec.clone()
    };
    let s2 = create_hf_checkpoint(&dir, &other, true).unwrap();
    check_checkpoint(&dir, &other, &s2);
    assert_ne!(fs::read(dir.join(&s2.shards[0])).unwrap(), before);
    assert_eq!(files_in(tmp.path()), ["ckpt"]);

    // a leftover partial folder of a killed run is cleaned up by the next run
    let fresh = tmp.path().join("fresh");
    let partial = partial_dir(&fresh).unwrap();
    assert_eq!(partial, tmp.path().join(".fresh.partial"));
    fs::create_dir(&partial).unwrap();
    fs::write(partial.join("model-00001-of-00009.safetensors"), b"junk").unwrap();
    let s3 = write_hf_checkpoint(&fresh, &spec).unwrap();
    check_checkpoint(&fresh, &spec, &s3);
    assert!(!partial.exists());

    // a folder that is not a checkpoint, or a file: never replaced
    let notes = tmp.path().join("notes");
    fs::create_dir(&notes).unwrap();
    fs::write(notes.join("todo.txt"), b"keep me").unwrap();
    for overwrite in [false, true] {
        let e = create_hf_checkpoint(&notes, &spec, overwrite).unwrap_err();
        assert!(
            e.to_string().contains(if overwrite {
                "is not a model checkpoint"
            } else {
                "exists"
            }),
            "{e}"
        );
        assert_eq!(files_in(&notes), ["todo.txt"]);
        let file = tmp.path().join("fresh").join("config.json");
        assert!(create_hf_checkpoint(&file, &spec, overwrite).is_err());
        assert!(file.is_file());
    }
    let mut all = files_in(tmp.path());
    all.sort();
    assert_eq!(all, ["ckpt", "fresh", "notes"]);
}

// ---------------------------------------------------------------- tokenizer

#[test]
fn bpe_vocabulary_is_consistent_and_deterministic() {
    let big = tokenizer::build(100_534).unwrap();
    for n in [MIN_HF_VOCAB, 300, 512, 5000, 100_534] {
        let v = if n == big.tokens.len() {
            big.clone()
        } else {
            tokenizer::build(n).unwrap()
        };
        assert_eq!(v.tokens.len(), n);
        let ids: HashMap<&str, usize> = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        assert_eq!(ids.len(), n, "unique tokens");
        assert_eq!(&v.tokens[..4], &tokenizer::SPECIALS);
        assert_eq!(v.tokens[4], "<0x00>");
        assert_eq!(v.tokens[4 + 0x0A], "<0x0A>");
        assert_eq!(v.tokens[259], "<0xFF>");
        assert_eq!(v.tokens[260], "▁");
        // merges: pairs of tokens whose concatenation is a token; every longer token is made
        // by one; no pair twice
        let mut results = HashSet::new();
        let mut pairs = HashSet::new();
        for (a, b) in &v.merges {
            let r = format!("{a}{b}");
            assert!(
                ids.contains_key(a.as_str()) && ids.contains_key(b.as_str()),
                "{a} + {b}"
            );
            assert!(ids.contains_key(r.as_str()), "{a} + {b}");
            assert!(pairs.insert((a, b)), "{a} + {b} twice");
            results.insert(r);
        }
        for t in &v.tokens[260..] {
            assert_eq!(t.chars().count() > 1, results.contains(t), "{t}");
        }
        // a prefix of the bigger vocabulary, in the same order
        assert_eq!(v.tokens[..], big.tokens[..n]);
        assert_eq!(v.merges[..], big.merges[..v.merges.len()]);
    }
    assert_eq!(tokenizer::build(MIN_HF_VOCAB - 1), None);
    assert_eq!(tokenizer::build(777), tokenizer::build(777));
    let t = tokenizer::build(512).unwrap();
    for piece in ["▁the", "▁The", "the", "▁of", "é", "ß", "北"] {
        assert!(t.tokens.contains(&piece.to_string()), "{piece}");
    }
    let t = tokenizer::build(5000).unwrap();
    for piece in ["▁world", "北京", "万里长城", "▁xverse", "国", "▁zz", "abc"] {
        assert!(t.tokens.contains(&piece.to_string()), "{piece}");
    }
}

#[test]
fn tokenizer_json_has_the_fixtures_structure() {
    let ours: Value =
        serde_json::from_str(&tokenizer::tokenizer_json(&tokenizer::build(512).unwrap())).unwrap();
    let theirs = read_json(&fixtures().join("tiny-xverse-st/tokenizer.json"));
    let (o, t) = (ours.as_object().unwrap(), theirs.as_object().unwrap());
    assert_eq!(
        o.keys().collect::<Vec<_>>(),
        t.keys().collect::<Vec<_>>(),
        "same top-level keys"
    );
    for k in t.keys().filter(|k| *k != "model") {
        assert_eq!(o[k], t[k], "{k}");
    }
    let (om, tm) = (
        o["model"].as_object().unwrap(),
        t["model"].as_object().unwrap(),
    );
    assert_eq!(om.keys().collect::<Vec<_>>(), tm.keys().collect::<Vec<_>>());
    for k in tm.keys().filter(|k| *k != "vocab" && *k != "merges") {
        assert_eq!(om[k], tm[k], "model.{k}");
    }
    assert_eq!(om["vocab"].as_object().unwrap().len(), 512);
    // the first 260 entries are the fixture's
    let tv = tm["vocab"].as_object().unwrap();
    for (tok, id) in om["vocab"].as_object().unwrap() {
        if id.as_u64().unwrap() < 260 {
            assert_eq!(tv.get(tok), Some(id), "{tok}");
        }
    }
}

/// Loads the tokenizer with Hugging Face's `tokenizers` and checks that texts round-trip.
fn check_round_trips(n: usize) {
    let json = tokenizer::tokenizer_json(&tokenizer::build(n).unwrap());
    let tok: tokenizers::Tokenizer = json.parse().unwrap_or_else(|e| panic!("vocab {n}: {e}"));
    assert_eq!(tok.get_vocab_size(true), n);
    assert_eq!(tok.token_to_id("<|startoftext|>"), Some(2));
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(3));
    assert_eq!(tok.token_to_id("<0x0A>"), Some(14));
    let texts = [
        "Hello world! The model has 2 layers.",
        "the quick brown fox jumps over the lazy dog",
        "  two  spaces,   three; trailing ",
        "0123456789 3.14159 -42 1e-6",
        "北京的景点：故宫、天坛、万里长城等。\n深圳的景点：",
        "你好，世界！鑫淼焱垚",
        "Größe café naïve Ærø",
        "emoji 🙂🚀 and\ttab\r\nnew line",
        "<|endoftext|> is text here",
        "",
    ];
    for text in texts {
        let enc = tok.encode(text, false).unwrap();
        let ids = enc.get_ids();
        assert!(ids.iter().all(|&i| (i as usize) < n), "{text:?}");
        assert!(!ids.contains(&0), "{text:?}: no <unk> with byte fallback");
        let dec = tok.decode(ids, false).unwrap();
        assert_eq!(dec, text, "vocab {n}: {:?}", enc.get_tokens());
        // digits are single tokens
        for (t, &id) in enc.get_tokens().iter().zip(ids) {
            if !t.starts_with("<0x") && t.chars().any(|c| c.is_ascii_digit()) {
                assert_eq!(t.chars().count(), 1, "{t}");
            }
            assert!(id != 2 && id != 3 || text.contains("<|"), "{text:?}");
        }
    }
    // characters in no token go through bytes: 鑫 = E9 91 AB
    let enc = tok.encode("鑫", false).unwrap();
    assert_eq!(enc.get_ids(), &[4 + 0xE9, 4 + 0x91, 4 + 0xAB]);
    // no BOS added, no prefix space
    let enc = tok.encode("the", true).unwrap();
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "the");
    assert_ne!(enc.get_ids()[0], 2);
    if n >= 5000 {
        // the word pieces merge: "▁the", "▁world" are single tokens
        let enc = tok.encode("Hello the world", false).unwrap();
        let toks = enc.get_tokens();
        assert!(
            toks.ends_with(&["▁the".to_string(), "▁world".to_string()]),
            "{toks:?}"
        );
    }
}

#[test]
fn tokenizer_loads_with_tokenizers_and_round_trips_text() {
    for n in [MIN_HF_VOCAB, 512, 100_534] {
        check_round_trips(n);
    }
}

#[test]
fn written_tokenizer_file_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tok");
    write_hf_checkpoint(&dir, &HfSpec::default()).unwrap();
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    assert_eq!(tok.get_vocab_size(true), 512);
    let text = "北京的景点：故宫、天坛、万里长城等。\n深圳的景点：";
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(tok.decode(ids.get_ids(), false).unwrap(), text);
}
