//! End-to-end conversions of the developer fixtures: every tensor checked against the
//! fixture's expected values, refusals leave no file, re-quantizing a GGUF equals converting
//! directly.

mod convert_common;

use convert_common::{convert_with, expected, fixtures, listing, MemSource};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use xverse_convert::convert::{self, Options, INTERRUPTED};
use xverse_convert::permute::{permute_rows, unpermute_rows};
use xverse_convert::plan::{FileType, LayerTensor, NameMatch, TensorId};
use xverse_quant::blocks;
use xverse_quant::gguf::{Gguf, Value};
use xverse_quant::GgmlType;

const HEADS: usize = 4;

/// Checks every tensor of the GGUF file at `path` against the fixture's expected values.
fn check_against_expected(path: &Path, exact_values: bool) {
    let exp = expected();
    let g = Gguf::open(path).unwrap();
    assert_eq!(g.tensors().len(), 21);
    for info in g.tensors() {
        let NameMatch::Tensor(id) = TensorId::from_gguf_name(&info.name) else {
            panic!("unexpected {}", info.name)
        };
        let (shape, values) = &exp[&id.hf_name()];
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        assert_eq!(info.dims, dims, "{}", info.name);
        let cols = *shape.last().unwrap();
        let mut permuted = values.clone();
        if matches!(
            id,
            TensorId::Layer(_, LayerTensor::AttnQ | LayerTensor::AttnK)
        ) {
            permute_rows(&mut permuted, HEADS, cols).unwrap();
        }
        // the stored bytes are exactly our quantizer's output on the permuted values
        let view = g.view(info);
        let mut want = vec![0u8; view.data.len()];
        blocks::quantize_row(info.ty, &permuted, &mut want).unwrap();
        assert!(view.data == want.as_slice(), "{} ({})", info.name, info.ty);
        if exact_values {
            let mut got = view.to_f32().unwrap();
            if matches!(
                id,
                TensorId::Layer(_, LayerTensor::AttnQ | LayerTensor::AttnK)
            ) {
                unpermute_rows(&mut got, HEADS, cols).unwrap();
            }
            if info.ty == GgmlType::F16 {
                // exact up to f16 rounding: bf16 values below f16's normal range (6.1e-5)
                // lose bits as f16 subnormals; everything else is exact
                for (g, &v) in got.iter().zip(values) {
                    assert_eq!(*g, half::f16::from_f32(v).to_f32(), "{}", info.name);
                    if v.abs() >= 6.2e-5 {
                        assert_eq!(*g, v, "{}", info.name);
                    }
                }
            } else {
                assert!(got == *values, "{} ({}) values differ", info.name, info.ty);
            }
        }
    }
}

fn meta_of<'a>(g: &'a Gguf, key: &str) -> &'a Value {
    g.get(key).unwrap_or_else(|| panic!("no {key}"))
}

#[test]
fn fixture_converts_to_every_checked_type() {
    let dir = fixtures().join("tiny-xverse-bin");
    let tmp = tempfile::tempdir().unwrap();
    for (ftype, exact) in [
        (FileType::F32, true),
        (FileType::BF16, true),
        (FileType::F16, true),
        (FileType::Q8_0, false),
        (FileType::Q4KM, false),
        (FileType::Q4_0, false),
        (FileType::Q5KS, false),
        (FileType::Q6K, false),
    ] {
        let out = tmp.path().join(format!("tiny-{ftype}.gguf"));
        let cancel = AtomicBool::new(false);
        let s = convert_with(
            &dir,
            MemSource::fixture(),
            &out,
            Some(ftype),
            false,
            &cancel,
        )
        .unwrap();
        assert_eq!(s.file_size, std::fs::metadata(&out).unwrap().len());
        assert_eq!(s.tensors, 21);
        check_against_expected(&out, exact);
        let g = Gguf::open(&out).unwrap();
        assert_eq!(
            meta_of(&g, "general.file_type"),
            &Value::U32(ftype.llama_ftype())
        );
        let norm = g.tensor_info("blk.0.attn_norm.weight").unwrap();
        assert_eq!(norm.ty, GgmlType::F32);
    }
    // q4_k_m on rows of 64 / 172: the fallbacks
    let g = Gguf::open(tmp.path().join("tiny-q4_k_m.gguf")).unwrap();
    let ty = |n: &str| g.tensor_info(n).unwrap().ty;
    assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q5_0);
    assert_eq!(ty("blk.1.attn_v.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::F16);
    assert_eq!(ty("output.weight"), GgmlType::Q8_0);
    assert_eq!(listing(tmp.path()).len(), 8, "no temporary files left");
}

#[test]
fn metadata_is_llama_cpp_s_plus_ours() {
    let dir = fixtures().join("tiny-xverse-bin");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    let source = MemSource::fixture();
    convert_with(
        &dir,
        source,
        &out,
        Some(FileType::BF16),
        false,
        &AtomicBool::new(false),
    )
    .unwrap();
    let g = Gguf::open(&out).unwrap();
    let keys: Vec<&str> = g.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys[0], "general.architecture");
    let u = |k: &str| g.get_u32(k).unwrap();
    assert_eq!(g.get_str("general.architecture").unwrap(), "xverse");
    assert_eq!(g.get_str("general.name").unwrap(), "tiny-xverse-bin");
    assert_eq!(u("general.file_type"), 32);
    assert_eq!(u("general.quantization_version"), 2);
    assert_eq!(u("xverse.context_length"), 2048);
    assert_eq!(u("xverse.embedding_length"), 64);
    assert_eq!(u("xverse.block_count"), 2);
    assert_eq!(u("xverse.feed_forward_length"), 172);
    assert_eq!(u("xverse.rope.dimension_count"), 16);
    assert_eq!(u("xverse.attention.head_count"), 4);
    assert_eq!(u("xverse.attention.head_count_kv"), 4);
    assert_eq!(
        g.get_f32("xverse.attention.layer_norm_rms_epsilon")
            .unwrap(),
        1e-6
    );
    assert_eq!(g.get_f32("xverse.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!(g.get_str_array("tokenizer.ggml.tokens").unwrap().len(), 512);
    assert_eq!(g.get_f32_array("tokenizer.ggml.scores").unwrap().len(), 512);
    assert_eq!(
        g.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
        512
    );
    assert_eq!(u("tokenizer.ggml.bos_token_id"), 2);
    assert_eq!(u("tokenizer.ggml.eos_token_id"), 3);
    assert_eq!(u("tokenizer.ggml.padding_token_id"), 1);
    assert_eq!(u("tokenizer.ggml.unknown_token_id"), 0);
    assert!(!g.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert!(!g.get_bool("tokenizer.ggml.add_space_prefix").unwrap());
    assert_eq!(
        g.get_str("tokenizer.huggingface.json").unwrap(),
        std::fs::read_to_string(dir.join("tokenizer.json")).unwrap()
    );
    // llama.cpp's tensor names and order
    let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names[0], "token_embd.weight");
    assert_eq!(names[1], "blk.0.attn_q.weight");
    assert_eq!(names[20], "output.weight");
}

#[test]
fn every_tensor_is_released_after_conversion() {
    let dir = fixtures().join("tiny-xverse-bin");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    let opts = Options {
        ty: Some(FileType::Q8_0),
        quiet: true,
        ..Options::default()
    };
    let source = MemSource::fixture();
    let released = source.released.clone();
    let job = convert::prepare_hf(&dir, Box::new(source), opts.ty).unwrap();
    let mut report = Vec::new();
    let summary = convert::execute(job, &out, &opts, &AtomicBool::new(false), &mut report).unwrap();
    assert_eq!(summary.counts.values().sum::<usize>(), 21);
    assert_eq!(summary.input_bytes, 329_344);
    assert!(report.is_empty(), "quiet prints nothing");
    let mut released = released.lock().unwrap().clone();
    assert_eq!(released.len(), 21);
    released.sort();
    released.dedup();
    assert_eq!(released.len(), 21);
}

#[test]
fn real_readers_convert_both_fixture_formats() {
    let tmp = tempfile::tempdir().unwrap();
    for folder in ["tiny-xverse-st", "tiny-xverse-bin"] {
        for ftype in [
            FileType::F32,
            FileType::BF16,
            FileType::F16,
            FileType::Q8_0,
            FileType::Q4KM,
        ] {
            let out = tmp.path().join(format!("{folder}-{ftype}.gguf"));
            let opts = Options {
                ty: Some(ftype),
                quiet: true,
                ..Options::default()
            };
            convert::run(
                &fixtures().join(folder),
                &out,
                &opts,
                &AtomicBool::new(false),
                &mut std::io::sink(),
                &xverse_convert::checkpoint::open_hf,
            )
            .unwrap_or_else(|e| panic!("{folder} {ftype}: {e}"));
            check_against_expected(
                &out,
                matches!(ftype, FileType::F32 | FileType::BF16 | FileType::F16),
            );
        }
    }
    // the same tensors from both formats
    let a = Gguf::open(tmp.path().join("tiny-xverse-st-q4_k_m.gguf")).unwrap();
    let b = Gguf::open(tmp.path().join("tiny-xverse-bin-q4_k_m.gguf")).unwrap();
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!(a.view(x).data, b.view(y).data, "{}", x.name);
    }
}

#[test]
fn default_type_keeps_the_checkpoint_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("default.gguf");
    let opts = Options {
        quiet: true,
        ..Options::default()
    };
    let s = convert::run(
        &fixtures().join("tiny-xverse-st"),
        &out,
        &opts,
        &AtomicBool::new(false),
        &mut std::io::sink(),
        &xverse_convert::checkpoint::open_hf,
    )
    .unwrap();
    assert_eq!(s.ftype, FileType::BF16);
    let g = Gguf::open(&out).unwrap();
    assert_eq!(
        g.tensor_info("token_embd.weight").unwrap().ty,
        GgmlType::BF16
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn refusals_leave_no_output_file() {
    let fixture = fixtures().join("tiny-xverse-bin");
    let tmp = tempfile::tempdir().unwrap();
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("x.gguf");
    let no = AtomicBool::new(false);

    // missing tensor
    let src = MemSource::fixture().without("model.layers.1.mlp.up_proj.weight");
    let e = convert_with(&fixture, src, &out, Some(FileType::Q8_0), false, &no)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.layers.1.mlp.up_proj.weight"), "{e}");
    assert!(listing(&outdir).is_empty());

    // wrong shape
    let mut src = MemSource::fixture();
    let m = src
        .metas
        .iter_mut()
        .find(|m| m.name == "model.layers.0.self_attn.v_proj.weight")
        .unwrap();
    m.shape = vec![32, 128];
    let e = convert_with(&fixture, src, &out, Some(FileType::Q8_0), false, &no)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("has shape [32, 128], config.json implies [64, 64]"),
        "{e}"
    );
    assert!(listing(&outdir).is_empty());

    // MoE architecture: refused from config.json before the weights are opened
    let moe = tmp.path().join("moe");
    copy_dir(&fixtures().join("tiny-xverse-st"), &moe);
    let cfg = std::fs::read_to_string(moe.join("config.json"))
        .unwrap()
        .replace("XverseForCausalLM", "XverseMoeForCausalLM");
    std::fs::write(moe.join("config.json"), cfg).unwrap();
    let opened = std::sync::atomic::AtomicBool::new(false);
    let open = |d: &Path| {
        opened.store(true, std::sync::atomic::Ordering::SeqCst);
        xverse_convert::checkpoint::open_hf(d)
    };
    let opts = Options {
        ty: Some(FileType::Q8_0),
        quiet: true,
        ..Options::default()
    };
    let e = convert::run(&moe, &out, &opts, &no, &mut std::io::sink(), &open)
        .unwrap_err()
        .to_string();
    assert!(e.contains("MoE models are not supported yet"), "{e}");
    assert!(!opened.load(std::sync::atomic::Ordering::SeqCst));
    assert!(listing(&outdir).is_empty());

    // existing target without --force: untouched; with --force: replaced
    std::fs::write(&out, b"precious").unwrap();
    let e = convert_with(
        &fixture,
        MemSource::fixture(),
        &out,
        Some(FileType::Q8_0),
        false,
        &no,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("already exists"), "{e}");
    let e = convert::run(
        &fixtures().join("tiny-xverse-st"),
        &out,
        &opts,
        &no,
        &mut std::io::sink(),
        &xverse_convert::checkpoint::open_hf,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("already exists; use --force"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    assert_eq!(listing(&outdir), vec!["x.gguf"]);
    convert_with(
        &fixture,
        MemSource::fixture(),
        &out,
        Some(FileType::Q8_0),
        true,
        &no,
    )
    .unwrap();
    check_against_expected(&out, false);
    assert_eq!(listing(&outdir), vec!["x.gguf"]);
}

#[test]
fn interruption_and_read_errors_remove_the_temporary_file() {
    static CANCEL: AtomicBool = AtomicBool::new(false);
    let fixture = fixtures().join("tiny-xverse-bin");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.gguf");

    let mut src = MemSource::fixture();
    src.cancel_after = Some((3, &CANCEL));
    let e = convert_with(&fixture, src, &out, Some(FileType::Q8_0), false, &CANCEL).unwrap_err();
    assert!(convert::is_interrupted(&e));
    assert_eq!(e.to_string(), INTERRUPTED);
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));

    let mut src = MemSource::fixture();
    src.fail_on = Some("model.layers.1.mlp.down_proj.weight".into());
    let e = convert_with(
        &fixture,
        src,
        &out,
        Some(FileType::Q8_0),
        false,
        &AtomicBool::new(false),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model.layers.1.mlp.down_proj.weight: simulated read error"),
        "{e}"
    );
    assert!(e.contains("no output written"), "{e}");
    assert!(listing(tmp.path()).is_empty());
}

fn requantize(input: &Path, out: &Path, ftype: FileType) {
    let opts = Options {
        ty: Some(ftype),
        quiet: true,
        ..Options::default()
    };
    let job = convert::prepare_gguf(input, Some(ftype)).unwrap();
    convert::execute(
        job,
        out,
        &opts,
        &AtomicBool::new(false),
        &mut std::io::sink(),
    )
    .unwrap();
}

#[test]
fn requantizing_a_gguf_equals_converting_directly() {
    let fixture = fixtures().join("tiny-xverse-bin");
    let tmp = tempfile::tempdir().unwrap();
    let no = AtomicBool::new(false);
    let f32_file = tmp.path().join("f32.gguf");
    convert_with(
        &fixture,
        MemSource::fixture(),
        &f32_file,
        Some(FileType::F32),
        false,
        &no,
    )
    .unwrap();
    for ftype in [
        FileType::Q4KM,
        FileType::Q8_0,
        FileType::BF16,
        FileType::F16,
        FileType::Q5KM,
        FileType::F32,
    ] {
        let direct = tmp.path().join(format!("direct-{ftype}.gguf"));
        let requant = tmp.path().join(format!("requant-{ftype}.gguf"));
        convert_with(
            &fixture,
            MemSource::fixture(),
            &direct,
            Some(ftype),
            false,
            &no,
        )
        .unwrap();
        requantize(&f32_file, &requant, ftype);
        let (a, b) = (
            std::fs::read(&direct).unwrap(),
            std::fs::read(&requant).unwrap(),
        );
        assert!(
            a == b,
            "{ftype}: re-quantized file differs from the direct conversion"
        );
    }
    // a quantized input: tensors that keep their type are copied, the rest re-quantized
    let q8 = tmp.path().join("direct-q8_0.gguf");
    let out = tmp.path().join("q8-to-q4km.gguf");
    requantize(&q8, &out, FileType::Q4KM);
    let (a, b) = (Gguf::open(&q8).unwrap(), Gguf::open(&out).unwrap());
    assert_eq!(b.get_u32("general.file_type").unwrap(), 15);
    let out_v = b.tensor("blk.0.attn_v.weight").unwrap();
    assert_eq!(out_v.info.ty, GgmlType::Q5_0);
    let v = b.tensor("output.weight").unwrap();
    assert_eq!(v.info.ty, GgmlType::Q8_0);
    assert_eq!(v.data, a.tensor("output.weight").unwrap().data, "copied");
}

#[test]
fn requantizes_a_llama_cpp_style_gguf() {
    use xverse_models::{write_tiny_gguf, TinySpec};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.gguf");
    let spec = TinySpec {
        hidden: 256,
        ffn: 512,
        heads: 2,
        kv_heads: 2,
        vocab: 300,
        ..TinySpec::default()
    };
    write_tiny_gguf(&input, &spec).unwrap();
    let out = tmp.path().join("out.gguf");
    requantize(&input, &out, FileType::Q4KM);
    let (a, b) = (Gguf::open(&input).unwrap(), Gguf::open(&out).unwrap());
    assert_eq!(b.get_u32("general.file_type").unwrap(), 15);
    assert_eq!(b.get_u32("general.quantization_version").unwrap(), 2);
    // metadata copied in order, only file_type / quantization_version changed
    for ((ka, va), (kb, vb)) in a.metadata().iter().zip(b.metadata()) {
        assert_eq!(ka, kb);
        if ka != "general.file_type" && ka != "general.quantization_version" {
            assert_eq!(va, vb, "{ka}");
        }
    }
    let ty = |n: &str| b.tensor_info(n).unwrap().ty;
    assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q4K);
    assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q4K); // use_more_bits(0, 2) is false
    assert_eq!(ty("blk.1.attn_v.weight"), GgmlType::Q6K);
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q4K);
    assert_eq!(ty("blk.1.ffn_down.weight"), GgmlType::Q6K);
    assert_eq!(ty("output.weight"), GgmlType::Q6K);
    assert_eq!(ty("output_norm.weight"), GgmlType::F32);
    // values: our quantizer on the input's values, no permutation
    let q = a.tensor("blk.0.attn_q.weight").unwrap().to_f32().unwrap();
    let mut want = vec![0u8; b.tensor("blk.0.attn_q.weight").unwrap().data.len()];
    blocks::quantize_row(GgmlType::Q4K, &q, &mut want).unwrap();
    assert_eq!(
        b.tensor("blk.0.attn_q.weight").unwrap().data,
        want.as_slice()
    );

    // --type is needed for a GGUF input
    let e = convert::prepare_gguf(&input, None).unwrap_err().to_string();
    assert!(e.contains("give --type"), "{e}");
}
