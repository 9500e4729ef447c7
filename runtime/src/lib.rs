//! xverse-runtime: runs XVERSE GGUF models.
//!
//! So far: [`hparams`], the model's hyperparameters read and checked from a GGUF file (ours or
//! llama.cpp's). The forward pass, tokenizer, sampler and stages arrive with the runtime issue.

pub mod hparams;
