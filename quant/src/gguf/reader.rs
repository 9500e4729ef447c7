//! The GGUF reader: memory-maps a file (or owns a byte vector) and validates all of it before
//! anything is used.
//!
//! Layout (GGUF v2 and v3, little-endian): magic `GGUF`, version `u32`, tensor count `u64`,
//! metadata count `u64`; the metadata entries (key string, value type `u32`, value); the tensor
//! infos (name string, `n_dims: u32`, `n_dims` × `u64` dimensions, type `u32`, data offset
//! `u64`); padding to the alignment; the tensor data. A string is a `u64` byte count and the
//! bytes; an array is the element type `u32`, the count `u64` and the elements.
//!
//! Every count, length and offset is checked against the bytes that remain with
//! overflow-checked arithmetic before it is used, and nothing is allocated from a count before
//! the file is known to be big enough to hold that many items, so a hostile header fails fast
//! instead of exhausting memory. The parser indexes nothing directly and never panics.

use super::error::{quote, quote_bytes, GgufError};
use super::value::{Value, ValueType};
use super::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_TENSOR_NAME_LEN,
};
use crate::blocks;
use crate::types::{foreign_type_name, GgmlType};
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::Path;

/// The bytes of a file: a read-only map of it, or a vector handed to [`Gguf::from_bytes`].
enum Storage {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Map(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A validated GGUF file: its metadata, its tensor infos, and zero-copy views of tensor data.
pub struct Gguf {
    name: String,
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    names: HashMap<String, usize>,
}

impl fmt::Debug for Gguf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gguf")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("file_size", &self.file_size())
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Where a tensor is and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `dims[0]` (ne0) is the row length.
    pub dims: Vec<u64>,
    /// Offset of the data from the start of the data section ([`Gguf::data_offset`]).
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Elements per row (`ne0`); 0 for an info without dimensions.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Number of rows (all dimensions but the first, multiplied).
    pub fn n_rows(&self) -> u64 {
        self.n_elements.checked_div(self.row_len()).unwrap_or(0)
    }

    /// Bytes per row; 0 when the row length is not a whole number of blocks.
    pub fn row_bytes(&self) -> u64 {
        self.ty.bytes_for(self.row_len()).unwrap_or(0)
    }
}

/// A tensor's info and its bytes, borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// The bytes of row `i`, if there is such a row.
    pub fn row(&self, i: u64) -> Option<&'a [u8]> {
        if i >= self.info.n_rows() {
            return None;
        }
        let rb = self.info.row_bytes();
        let start = usize::try_from(i.checked_mul(rb)?).ok()?;
        let end = start.checked_add(usize::try_from(rb).ok()?)?;
        self.data.get(start..end)
    }

    /// Dequantizes row `i` into `out`, which must hold exactly [`TensorInfo::row_len`] values.
    pub fn dequantize_row(&self, i: u64, out: &mut [f32]) -> Result<(), GgufError> {
        let row = self.row(i).ok_or_else(|| {
            self.data_error(format!(
                "row {i} does not exist (the tensor has {} rows)",
                self.info.n_rows()
            ))
        })?;
        if u64::try_from(out.len()).ok() != Some(self.info.row_len()) {
            return Err(self.data_error(format!(
                "output row of {} values, expected {}",
                out.len(),
                self.info.row_len()
            )));
        }
        blocks::dequantize_row(self.info.ty, row, out).map_err(|e| self.data_error(e.to_string()))
    }

    /// The whole tensor as `f32` values, in ggml order.
    pub fn to_f32(&self) -> Result<Vec<f32>, GgufError> {
        if u64::try_from(self.data.len()).ok() != Some(self.info.n_bytes) {
            return Err(self.data_error(format!(
                "{} data bytes, expected {}",
                self.data.len(),
                self.info.n_bytes
            )));
        }
        let n = usize::try_from(self.info.n_elements).map_err(|_| {
            self.data_error(format!(
                "{} elements do not fit in memory",
                self.info.n_elements
            ))
        })?;
        let mut out = vec![0f32; n];
        blocks::dequantize_row(self.info.ty, self.data, &mut out)
            .map_err(|e| self.data_error(e.to_string()))?;
        Ok(out)
    }

    fn data_error(&self, what: String) -> GgufError {
        GgufError::Data {
            file: String::new(),
            tensor: self.info.name.clone(),
            what,
        }
    }
}

impl Gguf {
    /// Memory-maps and validates the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf, GgufError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let io = |action: &str, source| GgufError::Io {
            file: name.clone(),
            action: action.to_string(),
            source,
        };
        let file = File::open(path).map_err(|e| io("open", e))?;
        let meta = file.metadata().map_err(|e| io("read the metadata of", e))?;
        if !meta.is_file() {
            return Err(io(
                "read",
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        // SAFETY: the map is read-only and private to this process. Like every reader that maps
        // a file (llama.cpp included), we rely on nobody truncating or rewriting the file while
        // it is mapped; the bytes are only ever read through bounds-checked slices.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io("memory-map", e))?;
        Self::parse(Storage::Map(map), name)
    }

    /// Validates a file held in memory; `name` is used in messages.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Gguf, GgufError> {
        Self::parse(Storage::Owned(bytes), name.to_string())
    }

    fn parse(storage: Storage, name: String) -> Result<Gguf, GgufError> {
        let parsed = Parser::new(storage.bytes(), &name).parse()?;
        Ok(Gguf {
            name,
            storage,
            version: parsed.version,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            metadata: parsed.metadata,
            keys: parsed.keys,
            tensors: parsed.tensors,
            names: parsed.names,
        })
    }

    /// The path as given (or the name given to [`from_bytes`](Self::from_bytes)).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The GGUF version: 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data: `general.alignment`, or 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the tensor data section (the end of the tensor infos, aligned up).
    ///
    /// A file without tensors may end before it (llama.cpp's vocabulary-only files do).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        len64(self.storage.bytes().len())
    }

    /// All bytes of the file.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let i = *self.keys.get(key)?;
        self.metadata.get(i).map(|(_, v)| v)
    }

    fn need(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            file: self.name.clone(),
            key: key.to_string(),
        })
    }

    fn wrong(&self, key: &str, expected: &str, found: String) -> GgufError {
        GgufError::WrongType {
            file: self.name.clone(),
            key: key.to_string(),
            expected: expected.to_string(),
            found,
        }
    }

    /// An integer value of any type that fits a `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.need(key)?;
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| self.wrong(key, "an integer in 0..=4294967295 (u32)", v.describe()))
    }

    /// An integer value of any type that is not negative.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.need(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong(key, "a non-negative integer (u64)", v.describe()))
    }

    /// An `F32` value, or an `F64` one rounded to `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.need(key)? {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            v => Err(self.wrong(key, "f32 or f64", v.describe())),
        }
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.need(key)?;
        v.as_bool()
            .ok_or_else(|| self.wrong(key, "bool", v.describe()))
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.need(key)?;
        v.as_str()
            .ok_or_else(|| self.wrong(key, "string", v.describe()))
    }

    /// An array value: its element type and elements.
    pub fn get_array(&self, key: &str) -> Result<(ValueType, &[Value]), GgufError> {
        let v = self.need(key)?;
        v.as_array()
            .ok_or_else(|| self.wrong(key, "array", v.describe()))
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let (ty, items) = self.get_array(key)?;
        if ty != ValueType::String {
            return Err(self.wrong(
                key,
                "array of string",
                format!("array of {} {ty}", items.len()),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(j, v)| {
                v.as_str().ok_or_else(|| {
                    self.wrong(
                        key,
                        "array of string",
                        format!("element {j}: {}", v.describe()),
                    )
                })
            })
            .collect()
    }

    /// An array of `f32` (or of `f64`, rounded to `f32`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        let (ty, items) = self.get_array(key)?;
        items
            .iter()
            .enumerate()
            .map(|(j, v)| match v {
                Value::F32(x) => Ok(*x),
                Value::F64(x) => Ok(*x as f32),
                _ => Err(self.wrong(
                    key,
                    "array of f32 or f64",
                    format!(
                        "array of {} {ty} (element {j}: {})",
                        items.len(),
                        v.describe()
                    ),
                )),
            })
            .collect()
    }

    /// An array of integers (of any integer type) that each fit an `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let (ty, items) = self.get_array(key)?;
        items
            .iter()
            .enumerate()
            .map(|(j, v)| {
                v.as_i64()
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or_else(|| {
                        self.wrong(
                            key,
                            "array of integers that fit an i32",
                            format!(
                                "array of {} {ty} (element {j}: {})",
                                items.len(),
                                v.describe()
                            ),
                        )
                    })
            })
            .collect()
    }

    /// The tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        let i = *self.names.get(name)?;
        self.tensors.get(i)
    }

    /// Drops the resident pages of `bytes`, a sub-slice of this file (a tensor's data from
    /// [`view`](Self::view)), from the process's memory: for a file map the kernel refills
    /// them from the file with the same bytes on the next access, so this only lowers the
    /// resident set (used once a tensor has been copied into another layout). Best effort: a
    /// file held in memory, or a slice that is not part of the file, is left alone.
    pub fn release_pages(&self, bytes: &[u8]) {
        if let Some((map, range)) = self.map_range(bytes) {
            release_map_range(map, range);
        }
    }

    /// The map and the range of it that `bytes` is (`None`: not a file map, or not inside it).
    fn map_range(&self, bytes: &[u8]) -> Option<(&memmap2::Mmap, std::ops::Range<usize>)> {
        let Storage::Map(map) = &self.storage else {
            return None;
        };
        let (start, base) = (bytes.as_ptr() as usize, map.as_ptr() as usize);
        if bytes.is_empty() || start < base || start + bytes.len() > base + map.len() {
            return None;
        }
        Some((map, start - base..start - base + bytes.len()))
    }

    /// A view of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.tensor_info(name).map(|info| self.view(info))
    }

    /// A view of the tensor `info` describes. For an info that is not one of this file's,
    /// whatever part of the file it points at (empty when it points outside).
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        let range = self
            .data_offset
            .checked_add(info.offset)
            .and_then(|s| Some((s, s.checked_add(info.n_bytes)?)))
            .and_then(|(s, e)| Some(usize::try_from(s).ok()?..usize::try_from(e).ok()?));
        let data = range
            .and_then(|r| self.storage.bytes().get(r))
            .unwrap_or(&[]);
        TensorView { info, data }
    }
}

/// Drops the resident pages of `range` of a read-only file map (best effort; nothing when the
/// range is empty or not inside the map).
pub fn release_map_range(map: &memmap2::Mmap, range: std::ops::Range<usize>) {
    if range.is_empty() || range.end > map.len() {
        return;
    }
    #[cfg(unix)]
    {
        // SAFETY: `map` is a read-only file mapping (memmap2 `Mmap`, never made mutable), so it
        // has no dirty pages: MADV_DONTNEED only drops clean pages that the kernel refills from
        // the file on the next access, with the same bytes, so any outstanding borrow of the
        // range still sees identical data. The range was checked to lie inside the map above.
        let _ = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                range.start,
                range.end - range.start,
            )
        };
    }
}

/// `n` as a `u64` (lossless: `usize` has at most 64 bits on every supported target).
fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
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

/// What the parser found, before it is attached to its storage.
struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    names: HashMap<String, usize>,
}

/// A position in the file bytes. Every read checks the bytes that remain.
struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
}

/// Fewest bytes a metadata entry takes: key length, value type, a one-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// Fewest bytes a tensor info takes: name length, n_dims, one dimension, type, offset.
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 8 + 4 + 8;

impl<'a> Parser<'a> {
    fn new(buf: &'a [u8], file: &'a str) -> Self {
        Parser { buf, pos: 0, file }
    }

    fn pos(&self) -> u64 {
        len64(self.pos)
    }

    fn remaining(&self) -> u64 {
        len64(self.buf.len().saturating_sub(self.pos))
    }

    fn invalid(&self, offset: u64, what: String, expected: String, found: String) -> GgufError {
        GgufError::Invalid {
            file: self.file.to_string(),
            offset,
            what,
            expected,
            found,
        }
    }

    /// The next `n` bytes; `what` names them for the error when the file is too short.
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        let truncated = || GgufError::Truncated {
            file: self.file.to_string(),
            offset: self.pos(),
            what: what(),
            needed: n,
            available,
        };
        if n > available {
            return Err(truncated());
        }
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .ok_or_else(truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn fixed<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let b = self.take(len64(N), what)?;
        // `take` returned exactly N bytes
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.fixed(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.fixed(what)?))
    }

    /// A string's bytes and the offset where they start.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<(&'a [u8], u64), GgufError> {
        let len = self.u64(&|| format!("{}: string length", what()))?;
        let at = self.pos();
        let bytes = self.take(len, &|| format!("{}: string of {len} bytes", what()))?;
        Ok((bytes, at))
    }

    /// `bytes` (which start at `at`) as UTF-8.
    fn utf8(
        &self,
        bytes: &'a [u8],
        at: u64,
        what: &dyn Fn() -> String,
    ) -> Result<&'a str, GgufError> {
        std::str::from_utf8(bytes).map_err(|e| {
            let bad = len64(e.valid_up_to());
            self.invalid(
                at.saturating_add(bad),
                what(),
                "valid UTF-8".to_string(),
                format!(
                    "an invalid byte sequence at byte {bad} of {}",
                    quote_bytes(bytes)
                ),
            )
        })
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in what remains of
    /// the file, before anything is allocated for them.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        at: u64,
        what: &dyn Fn() -> String,
        item: &str,
    ) -> Result<usize, GgufError> {
        let remaining = self.remaining();
        let fits = count
            .checked_mul(min_size)
            .is_some_and(|need| need <= remaining);
        match usize::try_from(count) {
            Ok(n) if fits => Ok(n),
            _ => Err(self.invalid(
                at,
                what(),
                format!(
                    "at most {} ({remaining} bytes remain and each {item} takes at least {min_size})",
                    remaining / min_size.max(1)
                ),
                count.to_string(),
            )),
        }
    }

    fn parse(mut self) -> Result<Parsed, GgufError> {
        let magic = self.take(4, &|| "header: magic".to_string())?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic {
                file: self.file.to_string(),
                found: magic.to_vec(),
            });
        }
        let version = self.u32(&|| "header: version".to_string())?;
        if version != 2 && version != 3 {
            let reason = if version == 1 {
                "GGUF v1 (32-bit counts) is no longer supported; convert the model again with a current llama.cpp or xverse-convert".to_string()
            } else if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                format!(
                    "this is a big-endian GGUF v{} file, which this little-endian reader does not read",
                    version.swap_bytes()
                )
            } else if version == 0 {
                "version 0 does not exist".to_string()
            } else {
                "a newer GGUF version than this reader knows".to_string()
            };
            return Err(GgufError::Version {
                file: self.file.to_string(),
                found: version,
                reason,
            });
        }
        let n_tensors_at = self.pos();
        let n_tensors = self.u64(&|| "header: tensor count".to_string())?;
        let n_kv_at = self.pos();
        let n_kv = self.u64(&|| "header: metadata count".to_string())?;
        let n_kv = self.check_count(
            n_kv,
            MIN_KV_SIZE,
            n_kv_at,
            &|| "header: metadata count".to_string(),
            "metadata entry",
        )?;
        let n_tensors = self.check_count(
            n_tensors,
            MIN_TENSOR_INFO_SIZE,
            n_tensors_at,
            &|| "header: tensor count".to_string(),
            "tensor info",
        )?;

        // metadata
        let mut metadata = Vec::with_capacity(n_kv);
        let mut keys = HashMap::with_capacity(n_kv);
        let mut key_offsets: Vec<u64> = Vec::with_capacity(n_kv);
        let mut alignment_at = None;
        for i in 0..n_kv {
            let entry_at = self.pos();
            let what_key = || format!("metadata entry {i} of {n_kv}: key");
            let (kb, kat) = self.string(&what_key)?;
            let key = self.utf8(kb, kat, &what_key)?;
            if let Some(&first) = keys.get(key) {
                return Err(GgufError::Duplicate {
                    file: self.file.to_string(),
                    offset: entry_at,
                    kind: "metadata key",
                    name: key.to_string(),
                    first_offset: key_offsets.get::<usize>(first).copied().unwrap_or(0),
                });
            }
            let ctx = || format!("key {}", quote(key));
            let type_at = self.pos();
            let type_id = self.u32(&|| format!("{}: value type", ctx()))?;
            let ty = ValueType::from_id(type_id).ok_or_else(|| {
                self.invalid(
                    type_at,
                    format!("{}: value type", ctx()),
                    "a GGUF value type id 0..=12".to_string(),
                    type_id.to_string(),
                )
            })?;
            let value_at = self.pos();
            let value = self.value(ty, 0, &ctx)?;
            if key == ALIGNMENT_KEY {
                alignment_at = Some(value_at);
            }
            keys.insert(key.to_string(), metadata.len());
            key_offsets.push(entry_at);
            metadata.push((key.to_string(), value));
        }

        // tensor infos
        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors);
        let mut names: HashMap<String, usize> = HashMap::with_capacity(n_tensors);
        let mut info_offsets: Vec<u64> = Vec::with_capacity(n_tensors);
        let mut offset_fields: Vec<u64> = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let info_at = self.pos();
            let what_name = || format!("tensor info {i} of {n_tensors}: name");
            let (nb, nat) = self.string(&what_name)?;
            let name = self.utf8(nb, nat, &what_name)?;
            let ctx = || format!("tensor {}", quote(name));
            if name.len() > MAX_TENSOR_NAME_LEN {
                return Err(self.invalid(
                    nat,
                    format!("{}: name", ctx()),
                    format!("at most {MAX_TENSOR_NAME_LEN} bytes (ggml keeps names in 64 bytes with the terminating NUL)"),
                    format!("{} bytes", name.len()),
                ));
            }
            if let Some(&first) = names.get(name) {
                return Err(GgufError::Duplicate {
                    file: self.file.to_string(),
                    offset: info_at,
                    kind: "tensor name",
                    name: name.to_string(),
                    first_offset: info_offsets.get::<usize>(first).copied().unwrap_or(0),
                });
            }
            let n_dims_at = self.pos();
            let n_dims = self.u32(&|| format!("{}: number of dimensions", ctx()))?;
            let n_dims = usize::try_from(n_dims)
                .ok()
                .filter(|n| (1..=MAX_DIMS).contains(n))
                .ok_or_else(|| {
                    self.invalid(
                        n_dims_at,
                        format!("{}: number of dimensions", ctx()),
                        format!("1 to {MAX_DIMS}"),
                        n_dims.to_string(),
                    )
                })?;
            let mut dims = Vec::with_capacity(n_dims);
            let mut n_elements: u64 = 1;
            for d in 0..n_dims {
                let dim_at = self.pos();
                let what_dim = || format!("{}: dimension {d}", ctx());
                let dim = self.u64(&what_dim)?;
                if dim == 0 {
                    return Err(self.invalid(
                        dim_at,
                        what_dim(),
                        "at least 1".to_string(),
                        "0".to_string(),
                    ));
                }
                dims.push(dim);
                n_elements = n_elements
                    .checked_mul(dim)
                    .filter(|&n| i64::try_from(n).is_ok())
                    .ok_or_else(|| {
                        self.invalid(
                            dim_at,
                            what_dim(),
                            "a shape whose element count fits an i64".to_string(),
                            format!("shape {dims:?}"),
                        )
                    })?;
            }
            let type_at = self.pos();
            let type_id = self.u32(&|| format!("{}: type", ctx()))?;
            let ty = GgmlType::from_id(type_id).ok_or_else(|| {
                let known = match foreign_type_name(type_id) {
                    Some(n) => format!("ggml type {n}, which this project does not support"),
                    None => "not a ggml type".to_string(),
                };
                self.invalid(
                    type_at,
                    format!("{}: type", ctx()),
                    "a supported ggml type id (0-3, 6-15 or 30)".to_string(),
                    format!("id {type_id} ({known})"),
                )
            })?;
            let row_len = dims.first().copied().unwrap_or(0);
            let block = len64(ty.block_size());
            if row_len.checked_rem(block) != Some(0) {
                return Err(self.invalid(
                    n_dims_at,
                    format!("{}: row length (dimension 0)", ctx()),
                    format!("a multiple of the {ty} block size {block}"),
                    row_len.to_string(),
                ));
            }
            let n_bytes = ty.bytes_for(n_elements).ok_or_else(|| {
                self.invalid(
                    n_dims_at,
                    format!("{}: size", ctx()),
                    "a data size that fits 64 bits".to_string(),
                    format!("{n_elements} {ty} elements"),
                )
            })?;
            let offset_at = self.pos();
            let offset = self.u64(&|| format!("{}: data offset", ctx()))?;
            names.insert(name.to_string(), tensors.len());
            info_offsets.push(info_at);
            offset_fields.push(offset_at);
            tensors.push(TensorInfo {
                name: name.to_string(),
                ty,
                dims,
                offset,
                n_elements,
                n_bytes,
            });
        }
        let infos_end = self.pos();

        // alignment
        let alignment = match keys
            .get(ALIGNMENT_KEY)
            .and_then(|&i| metadata.get::<usize>(i))
        {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if *a != 0 && a.is_power_of_two() => u64::from(*a),
            Some((_, v)) => {
                return Err(self.invalid(
                    alignment_at.unwrap_or(0),
                    format!("key {}", quote(ALIGNMENT_KEY)),
                    "a u32 power of two (1, 2, 4, … 32, …)".to_string(),
                    v.describe(),
                ))
            }
        };
        let data_offset = align_up(infos_end, alignment).ok_or_else(|| {
            self.invalid(
                infos_end,
                "end of the tensor infos".to_string(),
                format!("an offset that can be aligned to {alignment}"),
                infos_end.to_string(),
            )
        })?;

        // tensor data: aligned, inside the file, not overlapping
        let file_size = len64(self.buf.len());
        for (t, &field) in tensors.iter().zip(&offset_fields) {
            if t.offset.checked_rem(alignment) != Some(0) {
                return Err(self.invalid(
                    field,
                    format!("tensor {}: data offset", quote(&t.name)),
                    format!("a multiple of the alignment {alignment}"),
                    t.offset.to_string(),
                ));
            }
            let start = data_offset.checked_add(t.offset);
            let fits = start
                .and_then(|s| s.checked_add(t.n_bytes))
                .is_some_and(|end| end <= file_size);
            if !fits {
                let Some(start) = start else {
                    return Err(self.invalid(
                        field,
                        format!("tensor {}: data offset", quote(&t.name)),
                        format!("data inside the file (data section at byte {data_offset}, file size {file_size})"),
                        t.offset.to_string(),
                    ));
                };
                return Err(GgufError::Truncated {
                    file: self.file.to_string(),
                    offset: start,
                    what: format!(
                        "tensor {} (data offset {} in the data section at byte {data_offset}, given at byte offset {field}): data",
                        quote(&t.name),
                        t.offset
                    ),
                    needed: t.n_bytes,
                    available: file_size.saturating_sub(start),
                });
            }
        }
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors.get(i).map_or(0, |t| t.offset));
        for pair in order.windows(2) {
            let (Some(&a), Some(&b)) = (pair.first(), pair.get(1)) else {
                continue;
            };
            let (Some(ta), Some(tb)) = (tensors.get(a), tensors.get(b)) else {
                continue;
            };
            // offset + n_bytes was checked against the file size above
            let a_end = ta.offset.saturating_add(ta.n_bytes);
            if tb.offset < a_end {
                return Err(self.invalid(
                    offset_fields.get(b).copied().unwrap_or(0),
                    format!("tensor {}: data offset", quote(&tb.name)),
                    format!(
                        "at least {a_end}, where the data of tensor {} (data offset {}, {} bytes) ends",
                        quote(&ta.name),
                        ta.offset,
                        ta.n_bytes
                    ),
                    format!("{} (the tensors overlap)", tb.offset),
                ));
            }
        }
        // the data section ends aligned, as ggml and gguf-py write it
        if let Some(last) = order.last().and_then(|&i| tensors.get(i)) {
            let end = data_offset
                .saturating_add(last.offset)
                .saturating_add(last.n_bytes);
            let padded = align_up(end, alignment).unwrap_or(u64::MAX);
            if padded > file_size {
                return Err(GgufError::Truncated {
                    file: self.file.to_string(),
                    offset: end,
                    what: format!(
                        "padding after the data of the last tensor {} (to a multiple of the alignment {alignment})",
                        quote(&last.name)
                    ),
                    needed: padded - end,
                    available: file_size.saturating_sub(end),
                });
            }
        }

        Ok(Parsed {
            version,
            alignment,
            data_offset,
            metadata,
            keys,
            tensors,
            names,
        })
    }

    /// A value of type `ty`, inside `depth` arrays; `ctx` names it for messages.
    fn value(
        &mut self,
        ty: ValueType,
        depth: usize,
        ctx: &dyn Fn() -> String,
    ) -> Result<Value, GgufError> {
        if let Some(size) = ty.fixed_size() {
            let at = self.pos();
            let b = self.take(size, &|| format!("{}: {ty} value", ctx()))?;
            return self.scalar(ty, b, at, ctx);
        }
        match ty {
            ValueType::String => {
                let (b, at) = self.string(ctx)?;
                let s = self.utf8(b, at, &|| format!("{}: string value", ctx()))?;
                Ok(Value::String(s.to_string()))
            }
            _ => self.array(depth, ctx),
        }
    }

    fn array(&mut self, depth: usize, ctx: &dyn Fn() -> String) -> Result<Value, GgufError> {
        let type_at = self.pos();
        let what_type = || format!("{}: array element type", ctx());
        let type_id = self.u32(&what_type)?;
        let ety = ValueType::from_id(type_id).ok_or_else(|| {
            self.invalid(
                type_at,
                what_type(),
                "a GGUF value type id 0..=12".to_string(),
                type_id.to_string(),
            )
        })?;
        // this array is nested `depth + 1` deep; arrays of arrays one more
        if ety == ValueType::Array && depth + 2 > MAX_ARRAY_DEPTH {
            return Err(self.invalid(
                type_at,
                what_type(),
                format!("arrays nested at most {MAX_ARRAY_DEPTH} deep"),
                format!("an array of arrays nested {} deep", depth + 2),
            ));
        }
        let len_at = self.pos();
        let what_len = || format!("{}: array length", ctx());
        let len = self.u64(&what_len)?;
        let n = self.check_count(
            len,
            ety.min_size(),
            len_at,
            &what_len,
            &format!("{ety} element"),
        )?;
        let mut items = Vec::with_capacity(n);
        if let Some(size) = ety.fixed_size() {
            let at = self.pos();
            let all = self.take(len.saturating_mul(size), &|| {
                format!("{}: {len} {ety} elements", ctx())
            })?;
            let step = usize::try_from(size).unwrap_or(1);
            for (j, b) in all.chunks_exact(step).enumerate() {
                let el_at = at.saturating_add(len64(j).saturating_mul(size));
                items.push(self.scalar(ety, b, el_at, &|| format!("{}[{j}]", ctx()))?);
            }
        } else {
            for j in 0..n {
                items.push(self.value(ety, depth + 1, &|| format!("{}[{j}]", ctx()))?);
            }
        }
        Ok(Value::Array(ety, items))
    }

    /// Decodes a fixed-size value from exactly its bytes `b`, found at `at`.
    fn scalar(
        &self,
        ty: ValueType,
        b: &[u8],
        at: u64,
        ctx: &dyn Fn() -> String,
    ) -> Result<Value, GgufError> {
        fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
            let mut out = [0u8; N];
            if let Some(src) = b.get(..N) {
                out.copy_from_slice(src);
            }
            out
        }
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(arr(b))),
            ValueType::I8 => Value::I8(i8::from_le_bytes(arr(b))),
            ValueType::U16 => Value::U16(u16::from_le_bytes(arr(b))),
            ValueType::I16 => Value::I16(i16::from_le_bytes(arr(b))),
            ValueType::U32 => Value::U32(u32::from_le_bytes(arr(b))),
            ValueType::I32 => Value::I32(i32::from_le_bytes(arr(b))),
            ValueType::F32 => Value::F32(f32::from_le_bytes(arr(b))),
            ValueType::U64 => Value::U64(u64::from_le_bytes(arr(b))),
            ValueType::I64 => Value::I64(i64::from_le_bytes(arr(b))),
            ValueType::F64 => Value::F64(f64::from_le_bytes(arr(b))),
            ValueType::Bool => match b.first() {
                Some(0) => Value::Bool(false),
                Some(1) => Value::Bool(true),
                other => {
                    return Err(self.invalid(
                        at,
                        format!("{}: bool", ctx()),
                        "0 or 1".to_string(),
                        other.map_or_else(|| "nothing".to_string(), |b| b.to_string()),
                    ))
                }
            },
            ValueType::String | ValueType::Array => {
                return Err(self.invalid(
                    at,
                    ctx(),
                    "a fixed-size value".to_string(),
                    ty.name().to_string(),
                ))
            }
        })
    }
}
