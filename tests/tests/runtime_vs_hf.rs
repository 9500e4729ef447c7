//! The runtime end to end against the f64 Hugging Face reference: a checkpoint is converted by
//! our converter, run by our engine, and the logits of every prompt position are compared with
//! [`HfModel::forward`] on the checkpoint's own tensors (rotate_half rope on the unpermuted
//! rows, no quantization). This checks the converter's q/k permutation and the runtime's
//! adjacent-pair rope against each other, and everything else against plain f64 math.
//!
//! Checkpoints: the fixture `tiny-xverse-st` (the real layout, bf16 safetensors), and a
//! generated one with grouped kv heads (8 heads over 2), rows of 256 (so K-quants apply) and a
//! rope base of 50000 (config `rope_theta`, so the file's `xverse.rope.freq_base` must be used).
//!
//! Bounds: max |ours − ref| / max |ref| (the issue asks ≤ 1e-3 for F32 files, ≤ 1e-2 for F16 and
//! BF16; asserted 1e-5, see [`EXACT`]), top-1 agreement 100 % on those; quantized files: KL and
//! top-1 measured and bounded (they measure the quantization itself). The KV cache is f32 here;
//! the default f16 cache is measured on the F32 file as well (≤ 1e-3).

use std::path::Path;
use std::sync::atomic::AtomicBool;

use xverse_convert::checkpoint::open_hf;
use xverse_convert::convert::{run, Options};
use xverse_convert::plan::FileType;
use xverse_models::{write_hf_checkpoint, HfSpec};
use xverse_runtime::engine::{Engine, EngineConfig};
use xverse_runtime::kv_cache::CacheType;
use xverse_runtime::model::Model;
use xverse_tests::fixtures;
use xverse_tests::hf_reference::{argmax, kl_divergence, max_rel_diff, HfModel};
use xverse_tests::rng::SplitMix64;

fn convert(input: &Path, output: &Path, ty: FileType) {
    let opts = Options {
        ty: Some(ty),
        force: true,
        quiet: true,
        threads: Some(2),
        ..Options::default()
    };
    let cancel = AtomicBool::new(false);
    let mut report = Vec::new();
    run(input, output, &opts, &cancel, &mut report, &open_hf)
        .unwrap_or_else(|e| panic!("convert {} to {ty}: {e}", input.display()));
}

/// Our logits of every position of `ids` (one batch from an empty cache).
fn ours(path: &Path, ids: &[u32], cache_type: CacheType) -> Vec<Vec<f64>> {
    let model = Model::load(path).unwrap_or_else(|e| panic!("{e}"));
    let cfg = EngineConfig {
        n_ctx: ids.len().next_multiple_of(32),
        cache_type: cache_type.into(),
        threads: 2,
    };
    let mut e = Engine::new(&model, cfg).unwrap_or_else(|e| panic!("{e}"));
    let v = model.hparams.vocab as usize;
    let all = e.eval(ids, true).unwrap_or_else(|e| panic!("{e}"));
    all.chunks_exact(v)
        .map(|r| r.iter().map(|&x| x as f64).collect())
        .collect()
}

struct Measure {
    rel: f64,
    top1: usize,
    kl_mean: f64,
}

fn measure(ours: &[Vec<f64>], reference: &[Vec<f64>]) -> Measure {
    let mut m = Measure {
        rel: 0.0,
        top1: 0,
        kl_mean: 0.0,
    };
    let flat_o: Vec<f64> = ours.iter().flatten().copied().collect();
    let flat_r: Vec<f64> = reference.iter().flatten().copied().collect();
    m.rel = max_rel_diff(&flat_o, &flat_r);
    for (o, r) in ours.iter().zip(reference) {
        m.top1 += usize::from(argmax(o) == argmax(r));
        m.kl_mean += kl_divergence(r, o);
    }
    m.kl_mean /= ours.len() as f64;
    m
}

/// (type, max rel, min top-1 fraction, max mean KL)
type Bound = (FileType, f64, f64, f64);

fn check(
    dir: &Path,
    name: &str,
    ckpt: &Path,
    ids: &[u32],
    reference: &[Vec<f64>],
    bounds: &[Bound],
) {
    let n = ids.len();
    for &(ty, rel, top1, kl) in bounds {
        let path = dir.join(format!("{name}-{ty}.gguf"));
        convert(ckpt, &path, ty);
        let m = measure(&ours(&path, ids, CacheType::F32), reference);
        println!(
            "{name} {ty}: rel {:.2e}, top-1 {}/{n}, KL mean {:.2e}",
            m.rel, m.top1, m.kl_mean
        );
        assert!(m.rel <= rel, "{name} {ty}: rel {:.3e} > {rel:.0e}", m.rel);
        assert!(
            m.top1 as f64 >= top1 * n as f64,
            "{name} {ty}: top-1 {}/{n}",
            m.top1
        );
        assert!(
            m.kl_mean <= kl,
            "{name} {ty}: KL {:.3e} > {kl:.0e}",
            m.kl_mean
        );
        if ty == FileType::F32 {
            // the default f16 cache, for scale
            let m = measure(&ours(&path, ids, CacheType::F16), reference);
            println!(
                "{name} {ty} with an f16 cache: rel {:.2e}, KL mean {:.2e}",
                m.rel, m.kl_mean
            );
            assert!(m.rel <= 1e-3, "{name} f16 cache: rel {:.3e}", m.rel);
        }
    }
}

/// The issue asks for 1e-3 (F32) and 1e-2 (F16, BF16). These checkpoints hold bf16 values,
/// which F16 and BF16 files store exactly, so all three files hold the reference's weights and
/// what remains is f32 arithmetic: measured about 4e-7, asserted 1e-5.
const EXACT: [Bound; 3] = [
    (FileType::F32, 1e-5, 1.0, 1e-10),
    (FileType::F16, 1e-5, 1.0, 1e-10),
    (FileType::BF16, 1e-5, 1.0, 1e-10),
];

#[test]
fn fixture_runs_like_the_reference() {
    let expected = fixtures::expected_logits().unwrap();
    let ckpt = fixtures::path("tiny-xverse-st");
    let reference = HfModel::load(&ckpt)
        .unwrap()
        .forward(&expected.input_ids)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut bounds = EXACT.to_vec();
    // rows of 64 and 172: the 32-block mixes (K mixes fall back to them)
    bounds.extend([
        (FileType::Q8_0, 6e-2, 0.9, 5e-4),
        (FileType::Q5_1, 0.3, 0.7, 1.5e-2),
        (FileType::Q4_0, 0.6, 0.45, 7e-2),
    ]);
    check(
        dir.path(),
        "fixture",
        &ckpt,
        &expected.input_ids,
        &reference,
        &bounds,
    );
}

#[test]
fn gqa_k_quant_checkpoint_runs_like_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let spec = HfSpec {
        hidden: 256,
        ffn: 512,
        heads: 8,
        kv_heads: Some(2),
        layers: 2,
        vocab: 512,
        seed: 11,
        rope_theta: Some(50000.0),
        ..HfSpec::default()
    };
    write_hf_checkpoint(&ckpt, &spec).unwrap();
    let mut rng = SplitMix64::new(5);
    let mut ids = vec![2u32];
    while ids.len() < 24 {
        ids.push(rng.below(512) as u32);
    }
    let reference = HfModel::load(&ckpt).unwrap().forward(&ids).unwrap();
    let mut bounds = EXACT.to_vec();
    bounds.extend([
        (FileType::Q8_0, 6e-2, 0.85, 5e-4),
        (FileType::Q6K, 0.15, 0.8, 4e-3),
        (FileType::Q4KM, 0.4, 0.65, 4e-2),
    ]);
    check(dir.path(), "gqa256", &ckpt, &ids, &reference, &bounds);
}
