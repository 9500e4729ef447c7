//! xverse-convert: Hugging Face XVERSE checkpoints to GGUF, and GGUF inspection.
//!
//! * [`config`]: `config.json` and the other JSON files of a checkpoint folder.
//! * [`vocab`]: `tokenizer.json` as llama.cpp's `tokenizer.ggml.*` metadata.
//! * [`plan`]: names, order, shapes and per-tensor types (llama.cpp's quantization mixes).
//! * [`permute`]: q/k rows from Hugging Face's rotate_half layout to adjacent pairs.
//! * [`checkpoint`]: the readers of torch `.bin` and safetensors shards.
//! * [`gguf_source`]: a GGUF file as a source, for re-quantizing.
//! * [`convert`]: the streaming conversion.
//! * [`inspect`]: `xverse-convert inspect`.

pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod gguf_source;
pub mod inspect;
pub mod permute;
pub mod plan;
pub mod source;
pub mod vocab;
