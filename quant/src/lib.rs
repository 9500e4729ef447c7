//! xverse-quant: the ggml-equivalent core of xverse-rs.
//!
//! * [`types`]: ggml's tensor type ids, block sizes and byte sizes.
//! * [`blocks`]: one module per block format, each with the block struct (byte for byte
//!   llama.cpp's `ggml-common.h`), a scalar reference `dequantize_row` and, where ggml has one,
//!   `quantize_row`. [`blocks::dequantize_row`] and [`blocks::quantize_row`] dispatch on a type.
//! * [`kernels`]: dot products of weight rows with quantized activations (scalar reference and
//!   AVX2, chosen at run time).
//! * [`gguf`]: a memory-mapped GGUF reader that validates every offset, and a streaming writer.
//!
//! This crate knows nothing about XVERSE.

pub mod blocks;
pub mod gguf;
pub mod kernels;
pub mod types;

pub use types::GgmlType;
