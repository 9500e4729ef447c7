//! xverse-runtime: runs XVERSE GGUF models.
//!
//! So far: [`hparams`], the model's hyperparameters read and checked from a GGUF file (ours or
//! llama.cpp's). The forward pass, tokenizer, sampler and stages arrive with the runtime issue.

pub mod cli;
pub mod hparams;

// speed (issue 5)
pub mod bench;

// engine (Engineer A)
pub mod cpu;
pub mod engine;
pub mod error;
pub mod kv_cache;
pub mod load;
pub mod model;
pub mod stage;

pub use error::RuntimeError;

// session (Engineer B)
pub mod chat;
pub mod perplexity;
pub mod sampler;
pub mod session;
pub mod tokenizer;
pub mod tokenizer_json;
