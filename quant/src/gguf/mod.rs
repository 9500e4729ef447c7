//! The GGUF container (v2 and v3, little-endian), as llama.cpp reads and writes it.
//!
//! * [`reader`]: [`Gguf::open`] memory-maps a file and validates all of it before anything is
//!   used: every count, length and offset is checked against the file size with
//!   overflow-checked arithmetic. It never panics, whatever the input.
//! * [`writer`]: [`GgufWriter`] streams a file: header, metadata and tensor infos first (every
//!   offset computed up front), then tensor data in order, into a temporary file beside the
//!   target that is fsynced and renamed only when complete.

mod error;
mod reader;
mod value;
mod writer;

pub use error::GgufError;
pub use reader::{release_map_range, Gguf, TensorInfo, TensorView};
pub use value::{Value, ValueType};
pub use writer::{GgufFileWriter, GgufWriter, TensorSpec};

/// `"GGUF"` as the first four bytes of the file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that sets the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of arrays the reader accepts (arrays of arrays of …).
pub const MAX_ARRAY_DEPTH: usize = 16;
/// Longest tensor name, in bytes: ggml stores names in `char[GGML_MAX_NAME]` (64) with the
/// terminating NUL, and would silently cut a longer one.
pub const MAX_TENSOR_NAME_LEN: usize = 63;
