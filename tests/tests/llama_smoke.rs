//! Smoke test of the llama.h oracle on our own files: a tiny random-weight XVERSE GGUF written by
//! `xverse_models::write_tiny_gguf` is loaded by llama.cpp b2757, which decodes a few tokens;
//! the logits must be finite, one vocabulary long per token, not all equal, and deterministic.

use xverse_models::{write_tiny_gguf, TinySpec};
use xverse_quant::GgmlType;
use xverse_tests::oracle::llama::{Context, Model};

/// bos, then a few ordinary tokens (ids below the default vocabulary of 512).
const TOKENS: [i32; 6] = [2, 300, 301, 77, 400, 5];

fn smoke(spec: TinySpec) {
    let ty = spec.ty;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("tiny-{}.gguf", ty.name()));
    write_tiny_gguf(&path, &spec).unwrap_or_else(|e| panic!("write_tiny_gguf({ty}): {e}"));

    let model = Model::load(&path).unwrap_or_else(|e| panic!("{ty}: {e}"));
    assert_eq!(model.n_vocab(), spec.vocab, "{ty}: n_vocab");
    assert_eq!(model.n_embd(), spec.hidden, "{ty}: n_embd");
    assert_eq!(model.n_layer(), spec.layers, "{ty}: n_layer");
    assert_eq!(model.n_ctx_train(), spec.context, "{ty}: n_ctx_train");
    assert_eq!(
        model.meta("general.architecture").as_deref(),
        Some("xverse")
    );

    let mut ctx = Context::new(&model, 32).unwrap_or_else(|e| panic!("{ty}: {e}"));
    let logits = ctx
        .decode(&TOKENS, 0)
        .unwrap_or_else(|e| panic!("{ty}: {e}"));
    assert_eq!(logits.len(), TOKENS.len());
    for (i, l) in logits.iter().enumerate() {
        assert_eq!(l.len(), spec.vocab, "{ty}: logits of token {i}");
        assert!(
            l.iter().all(|v| v.is_finite()),
            "{ty}: non-finite logit at token {i}"
        );
        let first = l[0];
        assert!(
            l.iter().any(|&v| v != first),
            "{ty}: all logits equal at token {i}"
        );
    }
    // Different contexts give different distributions.
    assert_ne!(
        logits[0],
        logits[TOKENS.len() - 1],
        "{ty}: logits ignore the input"
    );

    // One more token, incrementally, at the next position.
    let next = ctx.decode(&[123], TOKENS.len()).unwrap();
    assert!(next[0].iter().all(|v| v.is_finite()));

    // Deterministic: the same tokens from an empty cache give the same logits, bit for bit.
    ctx.clear();
    let again = ctx.decode(&TOKENS, 0).unwrap();
    for (a, b) in logits.iter().zip(&again) {
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{ty}: not deterministic"
        );
    }

    // Decoding token by token gives (nearly) the logits of the whole batch: the KV cache works.
    ctx.clear();
    for (i, &t) in TOKENS.iter().enumerate() {
        let one = ctx.decode(&[t], i).unwrap();
        let max_diff = one[0]
            .iter()
            .zip(&logits[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = logits[i].iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        assert!(
            max_diff <= 1e-2 * scale,
            "{ty}: token {i}: incremental logits differ from batch logits by {max_diff}"
        );
    }

    // Errors, not crashes, on bad input.
    assert!(ctx.decode(&[spec.vocab as i32], 0).is_err());
    assert!(ctx.decode(&[-1], 0).is_err());
    assert!(ctx.decode(&[1], 32).is_err());
    assert!(ctx.decode(&[], 0).is_err());
    println!(
        "llama.cpp b2757 loads tiny xverse {}: {} tokens decoded, {} logits each, finite",
        ty.name(),
        TOKENS.len(),
        spec.vocab
    );
}

/// The default tiny shape (hidden 64, 2 layers, vocab 512) with weights of type `ty`.
fn default_with(ty: GgmlType) -> TinySpec {
    TinySpec {
        ty,
        ..TinySpec::default()
    }
}

#[test]
fn tiny_f32() {
    smoke(default_with(GgmlType::F32));
}

#[test]
fn tiny_f16() {
    smoke(default_with(GgmlType::F16));
}

#[test]
fn tiny_q8_0() {
    smoke(default_with(GgmlType::Q8_0));
}

#[test]
fn tiny_q4_0() {
    smoke(default_with(GgmlType::Q4_0));
}

/// Rows of 256 so that every 2-D weight really is a K-quant (none falls back to F16).
#[test]
fn tiny_q4_k() {
    smoke(TinySpec {
        hidden: 256,
        ffn: 512,
        ty: GgmlType::Q4K,
        ..TinySpec::default()
    });
}
