//! The f64 Hugging Face reference forward pass against transformers' own output on the fixture
//! `tiny-xverse-bin` (`expected_logits.safetensors`: `LlamaForCausalLM` in float32), and the same
//! reference on the bf16 safetensors folder `tiny-xverse-st` (the same weights).

use xverse_tests::fixtures;
use xverse_tests::hf_reference::{argmax, HfModel};

/// Largest |ours − transformers'| allowed, in logits. transformers runs in float32, the
/// reference in f64: the measured difference is about 1e-6 (see the test's output).
const MAX_ABS_DIFF: f64 = 1e-4;

#[test]
fn reference_matches_transformers_on_tiny_xverse_bin() {
    let expected = fixtures::expected_logits().unwrap();
    let model = HfModel::load(&fixtures::path("tiny-xverse-bin")).unwrap();
    assert_eq!(model.weights.tensors.len(), 21);
    let logits = model.forward(&expected.input_ids).unwrap();
    assert_eq!(logits.len(), expected.logits.len());

    let mut max_diff = 0f64;
    let mut max_logit = 0f64;
    for (pos, (ours, theirs)) in logits.iter().zip(&expected.logits).enumerate() {
        assert_eq!(ours.len(), theirs.len(), "position {pos}: vocabulary size");
        for (a, &b) in ours.iter().zip(theirs) {
            max_diff = max_diff.max((a - f64::from(b)).abs());
            max_logit = max_logit.max(f64::from(b).abs());
        }
        // the same next token at every position
        let theirs64: Vec<f64> = theirs.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(argmax(ours), argmax(&theirs64), "position {pos}: top-1");
    }
    println!(
        "hf reference vs transformers f32: max |diff| = {max_diff:.3e} (largest |logit| {max_logit:.2})"
    );
    assert!(
        max_diff <= MAX_ABS_DIFF,
        "reference differs from transformers by {max_diff:e} > {MAX_ABS_DIFF:e}"
    );
}

#[test]
fn reference_greedy_continuation_matches_transformers() {
    let expected = fixtures::expected_logits().unwrap();
    let model = HfModel::load(&fixtures::path("tiny-xverse-bin")).unwrap();
    let mut ids = expected.input_ids.clone();
    for _ in 0..expected.greedy_next_ids.len() {
        let logits = model.forward(&ids).unwrap();
        let last = logits.last().unwrap();
        ids.push(argmax(last) as u32);
    }
    assert_eq!(
        &ids[expected.input_ids.len()..],
        expected.greedy_next_ids.as_slice()
    );
}

#[test]
fn bf16_safetensors_folder_gives_the_same_weights_and_logits() {
    let expected = fixtures::expected_logits().unwrap();
    let f32_model = HfModel::load(&fixtures::path("tiny-xverse-bin")).unwrap();
    let bf16_model = HfModel::load(&fixtures::path("tiny-xverse-st")).unwrap();
    // bf16 → f64 is exact, so the weights are equal value for value
    assert_eq!(f32_model.weights, bf16_model.weights);
    assert_eq!(f32_model.config, bf16_model.config);
    let a = f32_model.forward(&expected.input_ids).unwrap();
    let b = bf16_model.forward(&expected.input_ids).unwrap();
    assert_eq!(a, b);
}
