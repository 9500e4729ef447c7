//! xverse-tests: end-to-end tests and the oracle tests against llama.cpp release b2757.
//!
//! * [`oracle`]: safe wrappers over ggml's and llama.cpp's C API (quantizers, dequantizers,
//!   fp16 conversion, the GGUF reader and writer, model loading and decoding). `build.rs`
//!   compiles `llama.cpp` itself; ggml comes from the `ggml-sys-bleedingedge` crate.
//! * [`rng`]: a small deterministic PRNG (splitmix64 + Box-Muller) so test inputs are the same
//!   on every run and every machine.
//! * [`rows`]: the input rows the quantizer comparisons use: random rows from several
//!   distributions and hand-made edge rows.
//! * [`hf_reference`]: a plain f64 Hugging Face forward pass (rotate_half RoPE, no permutation,
//!   no quantization) straight from safetensors, and the logit comparisons (KL, top-1).
//! * [`fixtures`]: where `shared/fixtures/` is, and the tiny model's expected logits.

pub mod fixtures;
pub mod hf_reference;
pub mod oracle;
pub mod rng;
pub mod rows;
