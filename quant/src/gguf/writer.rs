//! The GGUF writer (v3, little-endian), streaming.
//!
//! [`GgufWriter`] is the plan: metadata and tensor specs (names, types, shapes), from which
//! every offset is known before a byte of data is written. [`GgufWriter::create`] writes the
//! header, metadata, tensor infos and padding into a temporary file beside the target and
//! returns a [`GgufFileWriter`], which takes the tensor data in order, in chunks of any size,
//! pads each tensor to the alignment, and on [`finish`](GgufFileWriter::finish) checks that
//! every tensor got exactly its bytes, flushes, fsyncs, renames the file onto the target and
//! fsyncs the directory. An unfinished writer that is dropped deletes its temporary file, so an
//! interrupted conversion never leaves a partial file under the final name. Memory use does not
//! depend on the size of the tensors.
//!
//! The bytes are those of ggml's `gguf_write_to_file`: header, metadata, infos, zero padding to
//! the alignment, then each tensor's data followed by zero padding to the alignment.

use super::error::{quote, GgufError};
use super::value::{Value, ValueType};
use super::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_TENSOR_NAME_LEN,
};
use crate::types::GgmlType;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The GGUF version the writer writes.
const WRITE_VERSION: u32 = 3;

/// The name errors use before the writer has a file.
const PLAN: &str = "GGUF writer";

/// A tensor to write: name, type and shape (ggml order: `dims[0]` is the row length).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<u64>,
}

impl TensorSpec {
    /// A spec from its parts.
    pub fn new(name: impl Into<String>, ty: GgmlType, dims: Vec<u64>) -> Self {
        TensorSpec {
            name: name.into(),
            ty,
            dims,
        }
    }

    /// Number of elements, if it does not overflow.
    pub fn n_elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }

    /// Bytes of data, if the shape is whole blocks and the size does not overflow.
    pub fn n_bytes(&self) -> Option<u64> {
        self.ty.bytes_for(self.n_elements()?)
    }

    /// Why this spec cannot be written, if it cannot.
    fn problem(&self) -> Option<String> {
        let name = &self.name;
        if name.len() > MAX_TENSOR_NAME_LEN {
            return Some(format!(
                "name is {} bytes, more than the {MAX_TENSOR_NAME_LEN} ggml allows",
                name.len()
            ));
        }
        if name.contains('\0') {
            return Some("name contains a NUL byte".to_string());
        }
        if self.dims.is_empty() || self.dims.len() > MAX_DIMS {
            return Some(format!(
                "{} dimensions, expected 1 to {MAX_DIMS}",
                self.dims.len()
            ));
        }
        if self.dims.contains(&0) {
            return Some(format!("shape {:?} has a zero dimension", self.dims));
        }
        let Some(n) = self.n_elements().filter(|&n| i64::try_from(n).is_ok()) else {
            return Some(format!(
                "shape {:?}: the element count does not fit an i64",
                self.dims
            ));
        };
        let row = self.dims.first().copied().unwrap_or(0);
        let block = u64::try_from(self.ty.block_size()).unwrap_or(1);
        if row.checked_rem(block) != Some(0) {
            return Some(format!(
                "row length {row} is not a multiple of the {} block size {block}",
                self.ty
            ));
        }
        if self.ty.bytes_for(n).is_none() {
            return Some(format!(
                "{n} {} elements do not fit 64 bits of bytes",
                self.ty
            ));
        }
        None
    }
}

/// The plan of a GGUF file: metadata and tensor specs, from which every offset follows.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<TensorSpec>,
    sizes: Vec<u64>,
    names: HashSet<String>,
    /// Sum of the tensor sizes, each padded to the alignment.
    data_size: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn plan_error(what: String) -> GgufError {
    GgufError::Writer {
        file: PLAN.to_string(),
        what,
    }
}

/// `x` rounded up to a multiple of `align` (a power of two), if that fits.
fn align_up(x: u64, align: u64) -> Option<u64> {
    let rem = x.checked_rem(align)?;
    if rem == 0 {
        Some(x)
    } else {
        x.checked_add(align - rem)
    }
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Sum of `sizes`, each padded to `alignment`.
fn padded_total(sizes: &[u64], alignment: u64) -> Option<u64> {
    sizes
        .iter()
        .try_fold(0u64, |acc, &s| acc.checked_add(align_up(s, alignment)?))
}

/// Why `value` cannot be written, if it cannot: arrays whose elements are not all of the
/// declared type, or arrays nested deeper than the reader accepts.
fn value_problem(value: &Value, depth: usize) -> Option<String> {
    let Value::Array(ety, items) = value else {
        return None;
    };
    if *ety == ValueType::Array && depth + 2 > MAX_ARRAY_DEPTH {
        return Some(format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"));
    }
    for (j, item) in items.iter().enumerate() {
        if item.value_type() != *ety {
            return Some(format!(
                "array element {j} is a {} in an array of {ety}",
                item.value_type()
            ));
        }
        if let Some(p) = value_problem(item, depth + 1) {
            return Some(format!("array element {j}: {p}"));
        }
    }
    None
}

impl GgufWriter {
    /// An empty plan: GGUF v3, alignment 32.
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            sizes: Vec::new(),
            names: HashSet::new(),
            data_size: 0,
        }
    }

    /// Sets the alignment of tensor data (a power of two that fits a `u32`) and records it as
    /// `general.alignment` (u32), replacing an earlier value of that key.
    pub fn set_alignment(&mut self, a: u64) -> Result<(), GgufError> {
        let a32 = u32::try_from(a)
            .ok()
            .filter(|a| a.is_power_of_two())
            .ok_or_else(|| {
                plan_error(format!(
                    "alignment {a}: expected a power of two of at most 2^31"
                ))
            })?;
        let data_size = padded_total(&self.sizes, a).ok_or_else(|| {
            plan_error(format!(
                "alignment {a}: the tensor data would exceed 2^64 bytes"
            ))
        })?;
        self.alignment = a;
        self.data_size = data_size;
        if let Some((_, v)) = self.metadata.iter_mut().find(|(k, _)| k == ALIGNMENT_KEY) {
            *v = Value::U32(a32);
        } else {
            self.metadata
                .push((ALIGNMENT_KEY.to_string(), Value::U32(a32)));
            self.keys.insert(ALIGNMENT_KEY.to_string());
        }
        Ok(())
    }

    /// Adds a metadata entry. A duplicate key, a key with a NUL byte, an array whose elements
    /// are not all of its element type, or arrays nested deeper than [`MAX_ARRAY_DEPTH`] are
    /// refused. `general.alignment` must be a u32 power of two and sets the alignment.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: Value) -> Result<(), GgufError> {
        let key = key.into();
        if self.keys.contains(&key) {
            return Err(plan_error(format!(
                "duplicate metadata key {}",
                quote(&key)
            )));
        }
        if key.contains('\0') {
            return Err(plan_error(format!(
                "metadata key {}: contains a NUL byte",
                quote(&key)
            )));
        }
        if let Some(p) = value_problem(&value, 0) {
            return Err(plan_error(format!("metadata key {}: {p}", quote(&key))));
        }
        if key == ALIGNMENT_KEY {
            return match value {
                Value::U32(a) => self.set_alignment(u64::from(a)),
                other => Err(plan_error(format!(
                    "metadata key {}: expected a u32 power of two, found {}",
                    quote(&key),
                    other.describe()
                ))),
            };
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(())
    }

    /// Adds a tensor: 1 to 4 nonzero dimensions, a row length that is a whole number of
    /// blocks, a name of at most [`MAX_TENSOR_NAME_LEN`] bytes used once.
    pub fn add_tensor(&mut self, spec: TensorSpec) -> Result<(), GgufError> {
        if let Some(p) = spec.problem() {
            return Err(plan_error(format!("tensor {}: {p}", quote(&spec.name))));
        }
        if self.names.contains(&spec.name) {
            return Err(plan_error(format!(
                "duplicate tensor name {}",
                quote(&spec.name)
            )));
        }
        let size = spec.n_bytes().unwrap_or(0);
        let data_size = align_up(size, self.alignment)
            .and_then(|s| self.data_size.checked_add(s))
            .ok_or_else(|| {
                plan_error(format!(
                    "tensor {}: the tensor data would exceed 2^64 bytes",
                    quote(&spec.name)
                ))
            })?;
        self.data_size = data_size;
        self.names.insert(spec.name.clone());
        self.sizes.push(size);
        self.tensors.push(spec);
        Ok(())
    }

    /// The alignment of tensor data.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The metadata, in the order it will be written.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The tensor specs, in the order their data must be written.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// Offsets of the tensors' data, relative to the data section.
    pub fn tensor_offsets(&self) -> Vec<u64> {
        offsets(&self.sizes, self.alignment)
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        let mut counter = Counter(0);
        // writing to a counter cannot fail
        let _ = self.write_meta(&mut counter);
        align_up(counter.0, self.alignment).unwrap_or(u64::MAX)
    }

    /// Size of the whole file.
    pub fn file_size(&self) -> u64 {
        self.data_offset().saturating_add(self.data_size)
    }

    /// Header, metadata and tensor infos, without the padding after them.
    fn write_meta<W: Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(&MAGIC)?;
        w.write_all(&WRITE_VERSION.to_le_bytes())?;
        w.write_all(&len64(self.tensors.len()).to_le_bytes())?;
        w.write_all(&len64(self.metadata.len()).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_str(w, key)?;
            w.write_all(&value.value_type().id().to_le_bytes())?;
            write_value(w, value)?;
        }
        for (spec, offset) in self.tensors.iter().zip(self.tensor_offsets()) {
            write_str(w, &spec.name)?;
            let n_dims = u32::try_from(spec.dims.len()).unwrap_or(u32::MAX);
            w.write_all(&n_dims.to_le_bytes())?;
            for d in &spec.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&spec.ty.id().to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
        }
        Ok(())
    }

    /// Header, metadata, tensor infos and padding to the data section; returns the bytes
    /// written.
    fn write_head<W: Write>(&self, w: &mut W) -> io::Result<u64> {
        let mut counter = Counter(0);
        self.write_meta(&mut Tee(w, &mut counter))?;
        let end = align_up(counter.0, self.alignment).unwrap_or(counter.0);
        write_zeros(w, end - counter.0)?;
        Ok(end)
    }

    /// Writes the header, metadata and tensor infos into a temporary file beside `path` and
    /// returns the writer that takes the tensor data. An existing `path` is refused unless
    /// `overwrite` is set.
    pub fn create(
        self,
        path: impl AsRef<Path>,
        overwrite: bool,
    ) -> Result<GgufFileWriter, GgufError> {
        let target = path.as_ref().to_path_buf();
        let label = target.display().to_string();
        let writer_error = |what: String| GgufError::Writer {
            file: label.clone(),
            what,
        };
        let Some(file_name) = target.file_name() else {
            return Err(writer_error("the path does not name a file".to_string()));
        };
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !overwrite && fs::symlink_metadata(&target).is_ok() {
            return Err(writer_error(
                "already exists; refusing to overwrite it".to_string(),
            ));
        }
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (temp, file) = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut temp_name = OsString::from(".");
            temp_name.push(file_name);
            temp_name.push(format!(".partial-{}-{n}", std::process::id()));
            let temp = dir.join(temp_name);
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(f) => break (temp, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1_000_000 => continue,
                Err(e) => {
                    return Err(GgufError::Io {
                        file: label,
                        action: format!("create the temporary file {}", temp.display()),
                        source: e,
                    })
                }
            }
        };
        let expected_size = self.file_size();
        let remaining = self.sizes.iter().fold(0u64, |a, &s| a.saturating_add(s));
        let mut out = GgufFileWriter {
            label,
            target,
            dir,
            temp,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            overwrite,
            alignment: self.alignment,
            tensors: Vec::new(),
            sizes: Vec::new(),
            current: 0,
            done_in_current: 0,
            remaining,
            written: 0,
            expected_size,
            poisoned: false,
            finished: false,
        };
        let head = match out.out.as_mut() {
            Some(w) => self.write_head(w),
            None => Err(io::Error::other("no output")),
        };
        match head {
            Ok(n) => out.written = n,
            Err(e) => {
                return Err(GgufError::Io {
                    file: out.label.clone(),
                    action: format!("write the temporary file {}", out.temp.display()),
                    source: e,
                })
            }
        }
        out.tensors = self.tensors;
        out.sizes = self.sizes;
        Ok(out)
    }

    /// The whole file in memory; `data` holds each tensor's bytes, in order.
    pub fn to_bytes(self, data: &[&[u8]]) -> Result<Vec<u8>, GgufError> {
        if data.len() != self.tensors.len() {
            return Err(plan_error(format!(
                "data for {} tensors given, expected {}",
                data.len(),
                self.tensors.len()
            )));
        }
        for ((spec, &size), d) in self.tensors.iter().zip(&self.sizes).zip(data) {
            if len64(d.len()) != size {
                return Err(plan_error(format!(
                    "tensor {}: {} data bytes given, expected {size}",
                    quote(&spec.name),
                    d.len()
                )));
            }
        }
        let cap = usize::try_from(self.file_size())
            .map_err(|_| plan_error("the file does not fit in memory".to_string()))?;
        let mut out = Vec::with_capacity(cap);
        let io_error = |e: io::Error| plan_error(format!("cannot build the file: {e}"));
        self.write_head(&mut out).map_err(io_error)?;
        for d in data {
            out.extend_from_slice(d);
            let end = align_up(len64(out.len()), self.alignment).unwrap_or(0);
            out.resize(usize::try_from(end).unwrap_or(out.len()), 0);
        }
        Ok(out)
    }
}

/// Offsets of tensors of `sizes` bytes, each padded to `alignment`.
fn offsets(sizes: &[u64], alignment: u64) -> Vec<u64> {
    let mut at = 0u64;
    sizes
        .iter()
        .map(|&s| {
            let here = at;
            at = at.saturating_add(align_up(s, alignment).unwrap_or(u64::MAX));
            here
        })
        .collect()
}

fn write_str<W: Write>(w: &mut W, s: &str) -> io::Result<()> {
    w.write_all(&len64(s.len()).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// A value without its type id (an array: element type, count, elements).
fn write_value<W: Write>(w: &mut W, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&x.to_le_bytes()),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(*x)]),
        Value::String(s) => write_str(w, s),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Array(ety, items) => {
            w.write_all(&ety.id().to_le_bytes())?;
            w.write_all(&len64(items.len()).to_le_bytes())?;
            items.iter().try_for_each(|item| write_value(w, item))
        }
    }
}

fn write_zeros<W: Write>(w: &mut W, mut n: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(len64(ZEROS.len()));
        let chunk = ZEROS.get(..usize::try_from(k).unwrap_or(0)).unwrap_or(&[]);
        w.write_all(chunk)?;
        n -= k;
    }
    Ok(())
}

/// Counts the bytes written to it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(len64(buf.len()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes to a writer and counts.
struct Tee<'a, W: Write>(&'a mut W, &'a mut Counter);

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1 .0 = self.1 .0.saturating_add(len64(n));
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A GGUF file being written: takes the tensor data in order, then [`finish`](Self::finish)
/// puts the file in place. Dropping it unfinished deletes the temporary file.
#[derive(Debug)]
pub struct GgufFileWriter {
    label: String,
    target: PathBuf,
    dir: PathBuf,
    temp: PathBuf,
    out: Option<BufWriter<File>>,
    overwrite: bool,
    alignment: u64,
    tensors: Vec<TensorSpec>,
    sizes: Vec<u64>,
    /// Index of the tensor whose data comes next.
    current: usize,
    /// Bytes of the current tensor written so far.
    done_in_current: u64,
    /// Data bytes (without padding) still expected, for all tensors.
    remaining: u64,
    /// Bytes written to the file.
    written: u64,
    expected_size: u64,
    /// A write failed: the file is in an unknown state.
    poisoned: bool,
    finished: bool,
}

impl GgufFileWriter {
    fn error(&self, what: String) -> GgufError {
        GgufError::Writer {
            file: self.label.clone(),
            what,
        }
    }

    fn emit(&mut self, bytes: &[u8], zeros: u64) -> Result<(), GgufError> {
        let result = match self.out.as_mut() {
            Some(w) => w.write_all(bytes).and_then(|()| write_zeros(w, zeros)),
            None => Err(io::Error::other("the file is closed")),
        };
        match result {
            Ok(()) => {
                self.written = self
                    .written
                    .saturating_add(len64(bytes.len()))
                    .saturating_add(zeros);
                Ok(())
            }
            Err(e) => {
                self.poisoned = true;
                Err(GgufError::Io {
                    file: self.label.clone(),
                    action: format!("write the temporary file {}", self.temp.display()),
                    source: e,
                })
            }
        }
    }

    /// Appends `bytes` to the data of the current tensor (any chunking: a chunk may complete
    /// one tensor and start the next). More bytes than the remaining tensors take is refused
    /// before anything is written.
    pub fn write_tensor_data(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        if self.poisoned {
            return Err(self.error("an earlier write failed".to_string()));
        }
        let n = len64(bytes.len());
        if n > self.remaining {
            let where_ = match self.tensors.get(self.current) {
                Some(t) => format!(
                    "only {} bytes remain for tensor {} and the ones after it",
                    self.remaining,
                    quote(&t.name)
                ),
                None => format!("all {} tensors are complete", self.tensors.len()),
            };
            return Err(self.error(format!("too many tensor data bytes: got {n}, but {where_}")));
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let Some(&size) = self.sizes.get(self.current) else {
                return Err(self.error("tensor data past the last tensor".to_string()));
            };
            let need = size.saturating_sub(self.done_in_current);
            let take = usize::try_from(need).map_or(rest.len(), |need| need.min(rest.len()));
            let Some((chunk, tail)) = rest.split_at_checked(take) else {
                return Err(self.error("internal error: bad chunk length".to_string()));
            };
            let take = len64(take);
            let completes = take == need;
            let pad = if completes {
                align_up(size, self.alignment).map_or(0, |p| p - size)
            } else {
                0
            };
            self.emit(chunk, pad)?;
            self.remaining -= take;
            if completes {
                self.current += 1;
                self.done_in_current = 0;
            } else {
                self.done_in_current += take;
            }
            rest = tail;
        }
        Ok(())
    }

    /// The tensor whose data comes next (`None` once all are complete).
    pub fn current_tensor(&self) -> Option<&TensorSpec> {
        self.tensors.get(self.current)
    }

    /// Bytes the current tensor still needs.
    pub fn current_remaining(&self) -> u64 {
        self.sizes
            .get(self.current)
            .map_or(0, |s| s.saturating_sub(self.done_in_current))
    }

    /// Where the file is being written until it is finished.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Where the file goes when it is finished.
    pub fn target_path(&self) -> &Path {
        &self.target
    }

    /// Checks that every tensor got its bytes, then flushes, fsyncs, renames the temporary
    /// file onto the target and fsyncs the directory. Returns the file size. On error the
    /// temporary file is deleted.
    pub fn finish(mut self) -> Result<u64, GgufError> {
        if self.poisoned {
            return Err(self.error("an earlier write failed".to_string()));
        }
        if let Some(t) = self.tensors.get(self.current) {
            let size = self.sizes.get(self.current).copied().unwrap_or(0);
            let incomplete = self.tensors.len() - self.current;
            return Err(self.error(format!(
                "tensor {} got {} of its {size} data bytes ({incomplete} of {} tensors incomplete)",
                quote(&t.name),
                self.done_in_current,
                self.tensors.len()
            )));
        }
        if self.written != self.expected_size {
            return Err(self.error(format!(
                "internal error: wrote {} bytes, planned {}",
                self.written, self.expected_size
            )));
        }
        let io_error = |action: String, source| GgufError::Io {
            file: self.label.clone(),
            action,
            source,
        };
        let temp_shown = self.temp.display().to_string();
        let Some(buf) = self.out.take() else {
            return Err(self.error("the file is closed".to_string()));
        };
        let file = buf
            .into_inner()
            .map_err(|e| io_error(format!("flush {temp_shown}"), e.into_error()))?;
        file.sync_all()
            .map_err(|e| io_error(format!("fsync {temp_shown}"), e))?;
        drop(file);
        if !self.overwrite && fs::symlink_metadata(&self.target).is_ok() {
            return Err(self.error(
                "appeared while the file was written; refusing to overwrite it".to_string(),
            ));
        }
        fs::rename(&self.temp, &self.target)
            .map_err(|e| io_error(format!("rename {temp_shown} to it"), e))?;
        self.finished = true;
        #[cfg(unix)]
        {
            let synced = File::open(&self.dir).and_then(|d| d.sync_all());
            if let Err(e) = synced {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
                ) {
                    return Err(io_error(
                        format!("fsync the directory {}", self.dir.display()),
                        e,
                    ));
                }
            }
        }
        Ok(self.written)
    }
}

impl Drop for GgufFileWriter {
    fn drop(&mut self) {
        if !self.finished {
            drop(self.out.take());
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_writer_offsets_follow_sizes() {
        let mut w = GgufWriter::new();
        w.add_tensor(TensorSpec::new("a", GgmlType::F32, vec![3]))
            .unwrap();
        w.add_tensor(TensorSpec::new("b", GgmlType::Q4_0, vec![32, 2]))
            .unwrap();
        w.add_tensor(TensorSpec::new("c", GgmlType::F16, vec![1]))
            .unwrap();
        assert_eq!(w.tensor_offsets(), vec![0, 32, 96]);
        w.set_alignment(64).unwrap();
        assert_eq!(w.tensor_offsets(), vec![0, 64, 128]);
        assert_eq!(w.file_size() - w.data_offset(), 192);
        assert_eq!(w.data_offset().checked_rem(64), Some(0));
        assert_eq!(w.metadata().len(), 1);
        w.set_alignment(32).unwrap();
        assert_eq!(w.metadata(), &[(ALIGNMENT_KEY.to_string(), Value::U32(32))]);
    }

    #[test]
    fn gguf_writer_refuses_bad_plans() {
        let mut w = GgufWriter::new();
        for a in [0, 3, 48, 1 << 32] {
            assert!(w.set_alignment(a).is_err(), "{a}");
        }
        w.add_metadata("k", Value::U8(1)).unwrap();
        let e = w.add_metadata("k", Value::U8(2)).unwrap_err().to_string();
        assert!(e.contains("duplicate metadata key \"k\""), "{e}");
        assert!(w.add_metadata("a\0b", Value::U8(1)).is_err());
        let mixed = Value::Array(ValueType::U8, vec![Value::U8(1), Value::I8(1)]);
        let e = w.add_metadata("m", mixed).unwrap_err().to_string();
        assert!(e.contains("element 1"), "{e}");
        assert!(w.add_metadata(ALIGNMENT_KEY, Value::U64(32)).is_err());
        assert!(w.add_metadata(ALIGNMENT_KEY, Value::U32(3)).is_err());
        let mut deep = Value::Array(ValueType::U8, vec![]);
        for _ in 0..MAX_ARRAY_DEPTH - 1 {
            deep = Value::Array(ValueType::Array, vec![deep]);
        }
        w.add_metadata("deep", deep.clone()).unwrap();
        let deeper = Value::Array(ValueType::Array, vec![deep]);
        assert!(w.add_metadata("deeper", deeper).is_err());
        let bad = [
            TensorSpec::new("x", GgmlType::F32, vec![]),
            TensorSpec::new("x", GgmlType::F32, vec![1, 1, 1, 1, 1]),
            TensorSpec::new("x", GgmlType::F32, vec![0]),
            TensorSpec::new("x", GgmlType::Q4_0, vec![48]),
            TensorSpec::new("x", GgmlType::F32, vec![1 << 32, 1 << 32]),
            TensorSpec::new("x".repeat(64), GgmlType::F32, vec![1]),
            TensorSpec::new("x\0", GgmlType::F32, vec![1]),
        ];
        for spec in bad {
            assert!(w.add_tensor(spec.clone()).is_err(), "{spec:?}");
        }
        w.add_tensor(TensorSpec::new("x".repeat(63), GgmlType::F32, vec![1]))
            .unwrap();
        let e = w
            .add_tensor(TensorSpec::new("x".repeat(63), GgmlType::F16, vec![2]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate tensor name"), "{e}");
    }

    #[test]
    fn gguf_to_bytes_checks_data() {
        let mut w = GgufWriter::new();
        w.add_tensor(TensorSpec::new("a", GgmlType::F32, vec![2]))
            .unwrap();
        assert!(w.clone().to_bytes(&[]).is_err());
        let e = w.clone().to_bytes(&[&[0u8; 7]]).unwrap_err().to_string();
        assert!(
            e.contains("tensor \"a\": 7 data bytes given, expected 8"),
            "{e}"
        );
        let bytes = w.clone().to_bytes(&[&[1u8; 8]]).unwrap();
        assert_eq!(super::len64(bytes.len()), w.file_size());
        let (head, pad) = bytes.split_at(bytes.len() - 24);
        assert!(head.ends_with(&[1; 8]));
        assert_eq!(pad, &[0; 24]);
    }
}
