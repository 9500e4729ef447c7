//! The plan: names, order, shapes and llama.cpp b2757's type mixes on the published shapes.

mod convert_common;

use convert_common::{metas_for, preset_shape};
use xverse_convert::plan::{
    build_plan, use_more_bits, FileType, LayerTensor, ModelShape, NameMatch, Naming, Plan, TensorId,
};
use xverse_convert::source::{Dtype, TensorMeta};
use xverse_quant::GgmlType;

fn plan(shape: &ModelShape, ftype: FileType) -> Plan {
    build_plan(
        &metas_for(shape),
        shape,
        ftype,
        Naming::HuggingFace,
        "config.json",
    )
    .unwrap()
}

fn ty(p: &Plan, name: &str) -> GgmlType {
    p.type_of(name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

/// Layers whose attn_v / ffn_down get more bits in q4_k_m and q5_k_m, written out by hand
/// from llama.cpp's `use_more_bits` (first and last eighth, every third in between).
fn more_bits_layers(n: usize) -> Vec<usize> {
    match n {
        16 => vec![0, 1, 4, 7, 10, 13, 14, 15],
        32 => vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31],
        40 => vec![
            0, 1, 2, 3, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 35, 36, 37, 38, 39,
        ],
        80 => {
            let mut v: Vec<usize> = (0..10).collect();
            v.extend((12..70).step_by(3));
            v.extend(70..80);
            v
        }
        _ => unreachable!(),
    }
}

#[test]
fn use_more_bits_matches_the_hand_lists() {
    for n in [16, 32, 40, 80] {
        let got: Vec<usize> = (0..n).filter(|&i| use_more_bits(i, n)).collect();
        assert_eq!(got, more_bits_layers(n), "{n} layers");
    }
    assert_eq!(more_bits_layers(80).len(), 40);
}

#[test]
fn names_and_order_follow_llama_cpp() {
    let shape = preset_shape("xverse-7b");
    let p = plan(&shape, FileType::BF16);
    assert_eq!(p.tensors.len(), 2 + 32 * 9 + 1);
    let names: Vec<&str> = p.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        &names[..11],
        &[
            "token_embd.weight",
            "blk.0.attn_q.weight",
            "blk.0.attn_k.weight",
            "blk.0.attn_v.weight",
            "blk.0.attn_output.weight",
            "blk.0.ffn_gate.weight",
            "blk.0.ffn_up.weight",
            "blk.0.ffn_down.weight",
            "blk.0.attn_norm.weight",
            "blk.0.ffn_norm.weight",
            "blk.1.attn_q.weight",
        ]
    );
    assert_eq!(
        &names[names.len() - 2..],
        &["output_norm.weight", "output.weight"]
    );
    let src: Vec<&str> = p.tensors.iter().map(|t| t.source_name.as_str()).collect();
    assert_eq!(src[0], "model.embed_tokens.weight");
    assert_eq!(src[1], "model.layers.0.self_attn.q_proj.weight");
    assert_eq!(src[4], "model.layers.0.self_attn.o_proj.weight");
    assert_eq!(src[5], "model.layers.0.mlp.gate_proj.weight");
    assert_eq!(src[7], "model.layers.0.mlp.down_proj.weight");
    assert_eq!(src[8], "model.layers.0.input_layernorm.weight");
    assert_eq!(src[9], "model.layers.0.post_attention_layernorm.weight");
    assert_eq!(src[src.len() - 2], "model.norm.weight");
    assert_eq!(src[src.len() - 1], "lm_head.weight");
    // ggml dims are the HF shape reversed; q/k are permuted with the right head counts
    let q = &p.tensors[1];
    assert_eq!(q.dims, vec![4096, 4096]);
    assert_eq!(q.permute_heads, Some(32));
    assert_eq!(p.tensors[2].permute_heads, Some(32));
    assert_eq!(p.tensors[3].permute_heads, None);
    let down = &p.tensors[7];
    assert_eq!(down.shape, vec![4096, 11008]);
    assert_eq!(down.dims, vec![11008, 4096]);
    assert_eq!(p.tensors[0].dims, vec![4096, 100534]);
    assert_eq!(p.tensors[8].dims, vec![4096]);
}

#[test]
fn name_mapping_both_ways() {
    for id in TensorId::all(3) {
        assert_eq!(TensorId::from_hf_name(&id.hf_name()), NameMatch::Tensor(id));
        assert_eq!(
            TensorId::from_gguf_name(&id.gguf_name()),
            NameMatch::Tensor(id)
        );
    }
    assert_eq!(
        TensorId::from_hf_name("model.layers.3.self_attn.rotary_emb.inv_freq"),
        NameMatch::Skip
    );
    for bad in [
        "model.layers.0.self_attn.q_proj.bias",
        "model.layers.x.mlp.up_proj.weight",
        "model.layers.01.mlp.up_proj.weight",
        "model.layers.0.mlp.experts.0.up_proj.weight",
        "transformer.wte.weight",
        "model.embed_tokens",
    ] {
        assert_eq!(TensorId::from_hf_name(bad), NameMatch::Unknown, "{bad}");
    }
    assert_eq!(
        TensorId::from_gguf_name("rope_freqs.weight"),
        NameMatch::Unknown
    );
}

#[test]
fn file_type_names_and_ids() {
    let ids: Vec<(&str, u32)> = FileType::ALL
        .iter()
        .map(|t| (t.name(), t.llama_ftype()))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("f32", 0),
            ("f16", 1),
            ("bf16", 32),
            ("q8_0", 7),
            ("q4_0", 2),
            ("q4_1", 3),
            ("q5_0", 8),
            ("q5_1", 9),
            ("q6_k", 18),
            ("q5_k_m", 17),
            ("q5_k_s", 16),
            ("q4_k_m", 15),
            ("q4_k_s", 14),
        ]
    );
    assert_eq!(FileType::from_name("Q4_K_M"), Some(FileType::Q4KM));
    assert_eq!(FileType::from_name("q4_k"), Some(FileType::Q4KM));
    assert_eq!(FileType::from_name("q5_k"), Some(FileType::Q5KM));
    assert_eq!(FileType::from_name("q3_k_m"), None);
    for t in FileType::ALL {
        assert_eq!(FileType::from_llama_ftype(t.llama_ftype()), Some(t));
    }
    assert_eq!(FileType::BF16.default_type().id(), 30);
}

/// Checks a K-quant mix on a published shape against llama.cpp's rules.
fn check_k_mix(preset: &str, ftype: FileType) {
    let shape = preset_shape(preset);
    let n = shape.layers;
    let p = plan(&shape, ftype);
    let base = ftype.default_type();
    let more = more_bits_layers(n);
    for t in &p.tensors {
        let expected = match t.id {
            TensorId::Output => GgmlType::Q6K,
            TensorId::TokenEmbd => base,
            TensorId::OutputNorm => GgmlType::F32,
            TensorId::Layer(_, LayerTensor::AttnNorm | LayerTensor::FfnNorm) => GgmlType::F32,
            TensorId::Layer(l, LayerTensor::AttnV) => match ftype {
                FileType::Q4KM | FileType::Q5KM if more.contains(&l) => GgmlType::Q6K,
                FileType::Q4KS if l < 4 => GgmlType::Q5K,
                _ => base,
            },
            TensorId::Layer(l, LayerTensor::FfnDown) => match ftype {
                FileType::Q4KM | FileType::Q5KM if more.contains(&l) => GgmlType::Q6K,
                FileType::Q4KS if l < n / 8 => GgmlType::Q5K,
                _ => base,
            },
            TensorId::Layer(..) => base,
        };
        assert_eq!(t.ty, expected, "{preset} {ftype} {}", t.name);
        assert!(t.fallback.is_none(), "{preset} {ftype} {}", t.name);
    }
}

#[test]
fn k_mixes_on_published_shapes() {
    for preset in ["xverse-7b", "xverse-13b", "xverse-65b", "bench-1b"] {
        for ftype in [
            FileType::Q4KM,
            FileType::Q4KS,
            FileType::Q5KM,
            FileType::Q5KS,
            FileType::Q6K,
        ] {
            check_k_mix(preset, ftype);
        }
    }
}

#[test]
fn q4_k_m_counts_on_65b() {
    let shape = preset_shape("xverse-65b");
    let p = plan(&shape, FileType::Q4KM);
    let c = p.counts_by_type();
    // 40 attn_v + 40 ffn_down + output
    assert_eq!(c[&GgmlType::Q6K], 81);
    assert_eq!(c[&GgmlType::F32], 161);
    assert_eq!(c[&GgmlType::Q4K], 80 * 7 - 80 + 1);
    assert_eq!(ty(&p, "blk.11.attn_v.weight"), GgmlType::Q4K);
    assert_eq!(ty(&p, "blk.12.attn_v.weight"), GgmlType::Q6K);
    assert_eq!(ty(&p, "blk.12.ffn_down.weight"), GgmlType::Q6K);
    assert_eq!(ty(&p, "blk.12.ffn_up.weight"), GgmlType::Q4K);
    // about 40 GB, between Q4_K (4.5 bits) and Q6_K (6.56 bits) everywhere
    let bytes = p.output_bytes() as f64;
    let params = 66_408_521_728f64;
    assert!(
        bytes > params * 4.5 / 8.0 && bytes < params * 5.0 / 8.0,
        "{bytes}"
    );
}

#[test]
fn legacy_mixes_and_float_types() {
    for preset in ["xverse-7b", "xverse-13b", "xverse-65b"] {
        let shape = preset_shape(preset);
        for ftype in [
            FileType::Q8_0,
            FileType::Q4_0,
            FileType::Q4_1,
            FileType::Q5_0,
            FileType::Q5_1,
        ] {
            let p = plan(&shape, ftype);
            for t in &p.tensors {
                let expected = match t.id {
                    // llama.cpp: output gets Q6_K unless the mix is Q8_0
                    TensorId::Output if ftype != FileType::Q8_0 => GgmlType::Q6K,
                    _ if t.dims.len() == 1 => GgmlType::F32,
                    _ => ftype.default_type(),
                };
                assert_eq!(t.ty, expected, "{preset} {ftype} {}", t.name);
            }
        }
        for ftype in [FileType::F32, FileType::F16, FileType::BF16] {
            let p = plan(&shape, ftype);
            for t in &p.tensors {
                let expected = if t.dims.len() == 1 {
                    GgmlType::F32
                } else {
                    ftype.default_type()
                };
                assert_eq!(t.ty, expected, "{preset} {ftype} {}", t.name);
            }
        }
    }
    // DESIGN.md §2: 65B is 132.8 GB in bf16 and about 70.6 GB in Q8_0
    let shape = preset_shape("xverse-65b");
    let bf16 = plan(&shape, FileType::BF16).output_bytes() as f64 / 1e9;
    assert!((bf16 - 132.8).abs() < 0.1, "{bf16}");
    let q8 = plan(&shape, FileType::Q8_0).output_bytes() as f64 / 1e9;
    assert!((q8 - 70.6).abs() < 0.1, "{q8}");
}

#[test]
fn tiny_shapes_fall_back_like_llama_cpp() {
    // the fixtures' shape: rows of 64 (hidden) and 172 (ffn)
    let shape = ModelShape {
        hidden: 64,
        ffn: 172,
        heads: 4,
        kv_heads: 4,
        layers: 2,
        vocab: 512,
    };
    let p = plan(&shape, FileType::Q4KM);
    // Q4_K -> Q5_0 (llama.cpp's fallback table)
    assert_eq!(ty(&p, "token_embd.weight"), GgmlType::Q5_0);
    assert_eq!(ty(&p, "blk.0.attn_q.weight"), GgmlType::Q5_0);
    // use_more_bits(1, 2) (the last eighth): Q6_K -> Q8_0; layer 0 gets no more bits
    assert_eq!(ty(&p, "blk.0.attn_v.weight"), GgmlType::Q5_0);
    assert_eq!(ty(&p, "blk.1.attn_v.weight"), GgmlType::Q8_0);
    // output: a row that is not a multiple of 256 gets Q8_0
    assert_eq!(ty(&p, "output.weight"), GgmlType::Q8_0);
    // ffn_down rows of 172: not a multiple of 32 either -> F16 (llama.cpp would abort)
    assert_eq!(ty(&p, "blk.0.ffn_down.weight"), GgmlType::F16);
    assert_eq!(ty(&p, "blk.0.ffn_up.weight"), GgmlType::Q5_0);
    let warnings = p.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("blk.0.ffn_down.weight") && w.contains("f16")),
        "{warnings:?}"
    );
    assert!(warnings
        .iter()
        .any(|w| w.contains("blk.0.attn_q.weight") && w.contains("fallback quantization q5_0")));
    let p = plan(&shape, FileType::Q5KS);
    assert_eq!(ty(&p, "blk.0.attn_q.weight"), GgmlType::Q5_1);
    let p = plan(&shape, FileType::Q6K);
    assert_eq!(ty(&p, "blk.0.attn_q.weight"), GgmlType::Q8_0);
    let p = plan(&shape, FileType::Q4_0);
    assert_eq!(ty(&p, "blk.0.ffn_down.weight"), GgmlType::F16);
    assert_eq!(ty(&p, "blk.0.ffn_gate.weight"), GgmlType::Q4_0);
    assert_eq!(ty(&p, "output.weight"), GgmlType::Q8_0);
}

#[test]
fn gqa_shapes_use_kv_heads() {
    let shape = ModelShape {
        hidden: 64,
        ffn: 128,
        heads: 8,
        kv_heads: 2,
        layers: 1,
        vocab: 32,
    };
    let p = plan(&shape, FileType::F32);
    let k = p
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_k.weight")
        .unwrap();
    assert_eq!(k.shape, vec![16, 64]);
    assert_eq!(k.permute_heads, Some(2));
    let q = p
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(q.permute_heads, Some(8));
}

fn meta(name: &str, shape: Vec<usize>) -> TensorMeta {
    TensorMeta {
        name: name.to_string(),
        shape,
        dtype: Dtype::BF16,
        file: "ckpt/model-00001-of-00002.safetensors".into(),
        stored_bytes: 0,
    }
}

#[test]
fn problems_are_reported_together_before_writing() {
    let shape = preset_shape("xverse-7b");
    let mut metas = metas_for(&shape);
    metas.retain(|m| m.name != "model.layers.5.mlp.up_proj.weight");
    let e = build_plan(
        &metas,
        &shape,
        FileType::BF16,
        Naming::HuggingFace,
        "config.json",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("1 tensor is missing: model.layers.5.mlp.up_proj.weight"),
        "{e}"
    );
    assert!(!e.contains('\n'));

    let mut metas = metas_for(&shape);
    metas[3] = meta("model.layers.0.self_attn.v_proj.weight", vec![4096, 4000]);
    metas.push(meta(
        "model.layers.0.self_attn.rotary_emb.inv_freq",
        vec![64],
    ));
    metas.push(meta("model.layers.0.mlp.gate_proj.bias", vec![11008]));
    metas.push(meta(
        "model.layers.32.mlp.up_proj.weight",
        vec![11008, 4096],
    ));
    let e = build_plan(
        &metas,
        &shape,
        FileType::Q4KM,
        Naming::HuggingFace,
        "config.json",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("3 problems"), "{e}");
    assert!(
        e.contains(
            "tensor model.layers.0.self_attn.v_proj.weight in ckpt/model-00001-of-00002.safetensors has shape [4096, 4000], config.json implies [4096, 4096]"
        ),
        "{e}"
    );
    assert!(
        e.contains("unexpected tensor model.layers.0.mlp.gate_proj.bias"),
        "{e}"
    );
    assert!(e.contains("layer 32, but config.json has 32 layers"), "{e}");
    assert!(!e.contains("inv_freq"), "{e}");

    let mut metas = metas_for(&shape);
    metas.push(metas[0].clone());
    let e = build_plan(
        &metas,
        &shape,
        FileType::BF16,
        Naming::HuggingFace,
        "config.json",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("model.embed_tokens.weight appears twice"), "{e}");
}

#[test]
fn gguf_naming_keeps_order_and_does_not_permute() {
    let shape = ModelShape {
        hidden: 256,
        ffn: 512,
        heads: 2,
        kv_heads: 2,
        layers: 2,
        vocab: 64,
    };
    let mut metas: Vec<TensorMeta> = TensorId::all(2)
        .into_iter()
        .map(|id| TensorMeta {
            name: id.gguf_name(),
            shape: id.expected_shape(&shape),
            dtype: Dtype::Ggml(GgmlType::F16),
            file: "in.gguf".into(),
            stored_bytes: 0,
        })
        .collect();
    metas.reverse();
    metas[0].dtype = Dtype::Ggml(GgmlType::Q6K); // output already Q6_K
    let p = build_plan(&metas, &shape, FileType::Q4KM, Naming::Gguf, "in.gguf").unwrap();
    assert_eq!(p.tensors[0].name, "output.weight");
    assert!(p.tensors[0].copy);
    assert!(p.tensors.iter().all(|t| t.permute_heads.is_none()));
    assert!(p
        .tensors
        .iter()
        .skip(1)
        .all(|t| !t.copy || t.ty == GgmlType::F16));
    // llama.cpp's counters follow the file's order: in the reversed file attn_v of layer 1
    // comes first (counter 0: no more bits), layer 0's second (counter 1 of 2: more bits)
    assert_eq!(ty(&p, "blk.1.attn_v.weight"), GgmlType::Q4K);
    assert_eq!(ty(&p, "blk.0.attn_v.weight"), GgmlType::Q6K);
}

#[test]
fn dry_run_table_lists_every_tensor() {
    let shape = preset_shape("xverse-13b");
    let p = plan(&shape, FileType::Q4KM);
    let mut out = Vec::new();
    p.write_table(&mut out, 123_456_789).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1 + p.tensors.len() + 2);
    assert!(text.contains("blk.39.ffn_down.weight"), "{text}");
    assert!(text.contains("file size: 123456789 bytes"), "{text}");
    assert!(text.contains("general.file_type 15"), "{text}");
}
