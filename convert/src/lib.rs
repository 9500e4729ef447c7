//! xverse-convert: Hugging Face XVERSE checkpoints to GGUF, and GGUF inspection.

pub mod inspect;
