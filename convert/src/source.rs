//! What the converter reads tensors from: a Hugging Face checkpoint (torch `.bin` shards or
//! safetensors) or a GGUF file being re-quantized.

use std::fmt;
use std::path::PathBuf;

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    /// A ggml block type, when the source is a GGUF file.
    Ggml(xverse_quant::GgmlType),
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dtype::F32 => f.write_str("f32"),
            Dtype::F16 => f.write_str("f16"),
            Dtype::BF16 => f.write_str("bf16"),
            Dtype::Ggml(t) => write!(f, "{t}"),
        }
    }
}

/// Shape and storage of one tensor, as the source names it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMeta {
    /// The source's name (`model.layers.0.self_attn.q_proj.weight`, or a GGUF name).
    pub name: String,
    /// Shape in PyTorch order: outermost first, so a Linear weight is `[out, in]` and the last
    /// dimension is the row length. (GGUF sources report their dims reversed into this order.)
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    /// The file the tensor lives in, for messages.
    pub file: PathBuf,
    /// Bytes the tensor takes in its source file.
    pub stored_bytes: u64,
}

impl TensorMeta {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A conversion error: one line naming the file, the tensor or key, and what was wrong.
#[derive(Debug)]
pub struct ConvertError(pub String);

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConvertError {}

impl From<xverse_quant::gguf::GgufError> for ConvertError {
    fn from(e: xverse_quant::gguf::GgufError) -> Self {
        ConvertError(e.to_string())
    }
}

/// Builds a [`ConvertError`] from a format string.
#[macro_export]
macro_rules! convert_err {
    ($($arg:tt)*) => { $crate::source::ConvertError(format!($($arg)*)) };
}

/// A set of named tensors that can be read one at a time as f32.
///
/// Implementations validate every offset and length before use, never panic on bad input, and
/// hold memory bounded by the tensor being read (not by the checkpoint).
pub trait TensorSource: Send + Sync {
    /// Every tensor, in the source's order.
    fn tensors(&self) -> &[TensorMeta];

    /// The tensor called `name`.
    fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.tensors().iter().find(|t| t.name == name)
    }

    /// Reads the whole tensor `name` as f32 in row-major order of `meta.shape` (strides,
    /// storage offsets and views resolved), replacing the contents of `out`.
    fn read_f32(&self, name: &str, out: &mut Vec<f32>) -> Result<(), ConvertError>;

    /// Lets the source drop cached pages of tensor `name` once it has been converted
    /// (e.g. `madvise(DONTNEED)` on a memory map), so resident memory does not grow with the
    /// model. The default does nothing.
    fn release(&self, _name: &str) {}
}
