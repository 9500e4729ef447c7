//! A GGUF file (ours or llama.cpp's) as a [`TensorSource`], for re-quantizing like
//! `llama-quantize`: names are already GGUF names and q/k are already permuted.
//!
//! The file is validated by [`Gguf::open`]; tensor data is read through a second read-only map
//! of the same file so that the pages of each tensor can be dropped once it is converted
//! (`madvise(MADV_DONTNEED)`), keeping resident memory bounded by one tensor.

use crate::convert_err;
use crate::plan::{FileType, ModelShape};
use crate::source::{ConvertError, Dtype, TensorMeta, TensorSource};
use memmap2::Mmap;
use rayon::prelude::*;
use std::fs::File;
use std::path::{Path, PathBuf};
use xverse_quant::blocks;
use xverse_quant::gguf::{Gguf, Value};

/// The architecture a GGUF input must have.
pub const GGUF_ARCH: &str = "xverse";
/// Keys of split files, which `llama-quantize` drops from its output.
const SPLIT_KEYS: [&str; 3] = ["split.no", "split.count", "split.tensors.count"];
/// `GGML_QNT_VERSION`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// A GGUF file being read as a tensor source.
pub struct GgufSource {
    path: PathBuf,
    gguf: Gguf,
    map: Mmap,
    tensors: Vec<TensorMeta>,
}

impl std::fmt::Debug for GgufSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufSource")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufSource {
    /// Opens and validates `path`; it must be an unsplit XVERSE GGUF file.
    pub fn open(path: &Path) -> Result<GgufSource, ConvertError> {
        let gguf = Gguf::open(path)?;
        let shown = path.display();
        let arch = gguf.get_str("general.architecture").map_err(|_| {
            convert_err!("{shown}: general.architecture is missing or not a string")
        })?;
        if arch != GGUF_ARCH {
            return Err(convert_err!(
                "{shown}: general.architecture is {arch:?}; only XVERSE ({GGUF_ARCH:?}) files convert"
            ));
        }
        if let Some(n) = gguf.get("split.count").and_then(Value::as_u64) {
            if n > 1 {
                return Err(convert_err!(
                    "{shown} is part {} of a {n}-file split GGUF: merge it first (llama-gguf-split --merge)",
                    gguf.get("split.no").and_then(Value::as_u64).unwrap_or(0) + 1
                ));
            }
        }
        let file = File::open(path).map_err(|e| convert_err!("cannot open {shown}: {e}"))?;
        // SAFETY: the map is read-only and private to this value; the file is not written by
        // this process while mapped. Another process truncating it could fault reads, as with
        // any memory-mapped reader (llama.cpp included); every range is checked against the
        // map's length before use.
        let map =
            unsafe { Mmap::map(&file) }.map_err(|e| convert_err!("cannot map {shown}: {e}"))?;
        let tensors = gguf
            .tensors()
            .iter()
            .map(|t| TensorMeta {
                name: t.name.clone(),
                shape: t.dims.iter().rev().map(|&d| d as usize).collect(),
                dtype: Dtype::Ggml(t.ty),
                file: path.to_path_buf(),
                stored_bytes: t.n_bytes,
            })
            .collect();
        Ok(GgufSource {
            path: path.to_path_buf(),
            gguf,
            map,
            tensors,
        })
    }

    /// The parsed file.
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// The model's shape from its `xverse.*` metadata and `token_embd.weight`.
    pub fn shape(&self) -> Result<ModelShape, ConvertError> {
        let g = &self.gguf;
        let key = |k: &str| format!("{GGUF_ARCH}.{k}");
        let get = |k: &str| -> Result<usize, ConvertError> { Ok(g.get_u64(&key(k))? as usize) };
        let heads = get("attention.head_count")?;
        let kv_heads = match g.get(&key("attention.head_count_kv")) {
            Some(_) => get("attention.head_count_kv")?,
            None => heads,
        };
        let vocab = match g.tensor_info("token_embd.weight") {
            Some(t) => t.dims.get(1).copied().unwrap_or(0) as usize,
            None => g
                .get_array("tokenizer.ggml.tokens")
                .map(|(_, v)| v.len())
                .unwrap_or(0),
        };
        Ok(ModelShape {
            hidden: get("embedding_length")?,
            ffn: get("feed_forward_length")?,
            heads,
            kv_heads,
            layers: get("block_count")?,
            vocab,
        })
    }

    /// The file's metadata for an output of mix `ftype`, as `llama-quantize` writes it: every
    /// key copied in order, `general.quantization_version` and `general.file_type` set (in
    /// place when present, else appended), split keys dropped.
    pub fn metadata_for(&self, ftype: FileType) -> Vec<(String, Value)> {
        let mut m: Vec<(String, Value)> = self
            .gguf
            .metadata()
            .iter()
            .filter(|(k, _)| !SPLIT_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        for (key, value) in [
            (
                "general.quantization_version",
                Value::U32(QUANTIZATION_VERSION),
            ),
            ("general.file_type", Value::U32(ftype.llama_ftype())),
        ] {
            match m.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => m.push((key.to_string(), value)),
            }
        }
        m
    }

    /// The mix the file says it is (`general.file_type`), when it is one of ours.
    pub fn file_type(&self) -> Option<FileType> {
        self.gguf
            .get("general.file_type")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .and_then(FileType::from_llama_ftype)
    }

    /// Absolute byte range of tensor `name` in the file.
    fn range(&self, name: &str) -> Result<(usize, usize), ConvertError> {
        let info = self
            .gguf
            .tensor_info(name)
            .ok_or_else(|| convert_err!("{}: no tensor {name}", self.path.display()))?;
        let start = self
            .gguf
            .data_offset()
            .checked_add(info.offset)
            .and_then(|s| usize::try_from(s).ok());
        let len = usize::try_from(info.n_bytes).ok();
        match (start, len) {
            (Some(s), Some(l)) if s.checked_add(l).is_some_and(|e| e <= self.map.len()) => {
                Ok((s, l))
            }
            _ => Err(convert_err!(
                "{}: tensor {name} lies outside the file (was it changed while converting?)",
                self.path.display()
            )),
        }
    }

    /// The stored bytes of tensor `name` (for copying a tensor that keeps its type).
    pub fn raw(&self, name: &str) -> Result<&[u8], ConvertError> {
        let (start, len) = self.range(name)?;
        self.map
            .get(start..start + len)
            .ok_or_else(|| convert_err!("{}: tensor {name} is out of range", self.path.display()))
    }
}

impl TensorSource for GgufSource {
    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    fn read_f32(&self, name: &str, out: &mut Vec<f32>) -> Result<(), ConvertError> {
        let info = self
            .gguf
            .tensor_info(name)
            .ok_or_else(|| convert_err!("{}: no tensor {name}", self.path.display()))?;
        let ty = info.ty;
        let n = usize::try_from(info.n_elements)
            .map_err(|_| convert_err!("{name}: too many elements"))?;
        let row_len = usize::try_from(info.row_len()).unwrap_or(0).max(1);
        let row_bytes = usize::try_from(info.row_bytes()).unwrap_or(0);
        let bytes = self.raw(name)?;
        out.clear();
        out.resize(n, 0.0);
        if row_bytes == 0 || bytes.len() != n / row_len * row_bytes {
            return Err(convert_err!(
                "{}: tensor {name}: {} bytes for {n} {ty} elements",
                self.path.display(),
                bytes.len()
            ));
        }
        // rows in parallel, in pieces of about 1 MiB of output
        let rows_per_piece = (1usize << 18).div_ceil(row_len).max(1);
        out.par_chunks_mut(rows_per_piece * row_len)
            .zip(bytes.par_chunks(rows_per_piece * row_bytes))
            .try_for_each(|(dst, src)| blocks::dequantize_row(ty, src, dst))
            .map_err(|e| convert_err!("{}: tensor {name}: {e}", self.path.display()))
    }

    fn release(&self, name: &str) {
        if let Ok((start, len)) = self.range(name) {
            #[cfg(unix)]
            {
                // SAFETY: the map is a read-only, shared, file-backed mapping, so its pages are
                // clean: MADV_DONTNEED only drops them from this process, and a later read
                // faults them back in from the file with the same contents. No reference into
                // the map observes a change, and the range was checked against the map's length.
                let _ = unsafe {
                    self.map
                        .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
                };
            }
            #[cfg(not(unix))]
            let _ = (start, len);
        }
    }
}
