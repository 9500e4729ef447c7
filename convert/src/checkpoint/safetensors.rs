//! safetensors files, memory-mapped, parsed by the `safetensors` crate.
//!
//! Tensor data in a safetensors file is only guaranteed 8-byte aligned relative to the start of
//! the file's data section (and the header length can make it any alignment in memory), so
//! elements are decoded with `from_le_bytes`, never by casting the bytes to wider types.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ::safetensors::{Dtype as StDtype, SafeTensors};
use memmap2::Mmap;

use super::layout::{dtype_size, extend_f32, release_range};
use super::torch::map_file;
use crate::convert_err;
use crate::source::{ConvertError, Dtype, TensorMeta, TensorSource};

/// One safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    shown: String,
    map: Mmap,
    metas: Vec<TensorMeta>,
    ranges: Vec<Range<usize>>,
    by_name: HashMap<String, usize>,
    skipped: Vec<String>,
    metadata: HashMap<String, String>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.metas.len())
            .finish()
    }
}

fn dtype_of(d: StDtype) -> Option<Dtype> {
    match d {
        StDtype::F32 => Some(Dtype::F32),
        StDtype::F16 => Some(Dtype::F16),
        StDtype::BF16 => Some(Dtype::BF16),
        _ => None,
    }
}

impl SafetensorsFile {
    /// Maps and parses a `.safetensors` file (header validated by the `safetensors` crate,
    /// offsets checked again here).
    pub fn open(path: &Path) -> Result<SafetensorsFile, ConvertError> {
        let map = map_file(path)?;
        let shown = path.display().to_string();
        let (header_len, meta) = SafeTensors::read_metadata(&map).map_err(|e| {
            convert_err!(
                "{shown}: not a valid safetensors file ({e}); is it truncated or corrupted? ({} bytes)",
                map.len()
            )
        })?;
        let data_start = header_len
            .checked_add(8)
            .filter(|&s| s <= map.len())
            .ok_or_else(|| {
                convert_err!(
                    "{shown}: header of {header_len} bytes is longer than the file ({} bytes)",
                    map.len()
                )
            })?;
        let mut infos: Vec<(String, ::safetensors::tensor::TensorInfo)> = meta
            .tensors()
            .into_iter()
            .map(|(n, i)| (n, i.clone()))
            .collect();
        infos.sort_by(|a, b| a.1.data_offsets.cmp(&b.1.data_offsets).then(a.0.cmp(&b.0)));
        let mut f = SafetensorsFile {
            path: path.to_path_buf(),
            shown,
            metas: Vec::with_capacity(infos.len()),
            ranges: Vec::with_capacity(infos.len()),
            by_name: HashMap::new(),
            skipped: Vec::new(),
            metadata: meta.metadata().clone().unwrap_or_default(),
            map,
        };
        for (name, info) in infos {
            let Some(dtype) = dtype_of(info.dtype) else {
                f.skipped.push(name);
                continue;
            };
            let (b, e) = info.data_offsets;
            let range = data_start
                .checked_add(b)
                .zip(data_start.checked_add(e))
                .filter(|&(s, e)| s <= e && e <= f.map.len())
                .map(|(s, e)| s..e)
                .ok_or_else(|| {
                    convert_err!(
                        "{}: tensor {name}: data offsets {b}..{e} (+{data_start}) are outside the file ({} bytes)",
                        f.shown,
                        f.map.len()
                    )
                })?;
            let numel = info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let want = numel.and_then(|n| n.checked_mul(dtype_size(dtype)));
            if want != Some(range.len()) {
                return Err(convert_err!(
                    "{}: tensor {name}: shape {:?} of {dtype} needs {} bytes, found {} at offset {}",
                    f.shown,
                    info.shape,
                    want.map_or_else(|| "too many".to_string(), |w| w.to_string()),
                    range.len(),
                    range.start
                ));
            }
            f.by_name.insert(name.clone(), f.metas.len());
            f.metas.push(TensorMeta {
                name,
                shape: info.shape.clone(),
                dtype,
                file: f.path.clone(),
                stored_bytes: range.len() as u64,
            });
            f.ranges.push(range);
        }
        Ok(f)
    }

    /// Tensors of a dtype the converter does not read (ints, bools, f64, fp8): not listed by
    /// [`TensorSource::tensors`].
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The header's `__metadata__` (e.g. `{"format": "pt"}`).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }
}

impl TensorSource for SafetensorsFile {
    fn tensors(&self) -> &[TensorMeta] {
        &self.metas
    }

    fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.by_name.get(name).map(|&i| &self.metas[i])
    }

    fn read_f32(&self, name: &str, out: &mut Vec<f32>) -> Result<(), ConvertError> {
        let &i = self
            .by_name
            .get(name)
            .ok_or_else(|| convert_err!("{}: no tensor named {name}", self.shown))?;
        let meta = &self.metas[i];
        let bytes = self.map.get(self.ranges[i].clone()).ok_or_else(|| {
            convert_err!(
                "{}: tensor {name}: bytes {:?} outside the file",
                self.shown,
                self.ranges[i]
            )
        })?;
        let n = bytes.len() / dtype_size(meta.dtype);
        out.clear();
        out.try_reserve_exact(n).map_err(|_| {
            convert_err!("{}: tensor {name}: cannot allocate {n} floats", self.shown)
        })?;
        extend_f32(meta.dtype, bytes, out);
        Ok(())
    }

    fn release(&self, name: &str) {
        if let Some(&i) = self.by_name.get(name) {
            release_range(&self.map, self.ranges[i].clone());
        }
    }
}
