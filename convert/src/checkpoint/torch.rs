//! PyTorch `torch.save` files: the zip format (`<prefix>/data.pkl` + `<prefix>/data/<key>`,
//! torch >= 1.6) and the legacy non-zip format (a sequence of pickles followed by the raw
//! storages).
//!
//! The file is memory-mapped. Stored (uncompressed) storage records are read in place; a
//! deflated record is decompressed into memory when its tensor is read. Every offset and length
//! taken from the file is checked before use.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use zip::CompressionMethod;

use super::layout::{float_dtype, release_range, View};
use super::pickle::{self, ElemType, PyValue, StateDict, MAX_PICKLE_BYTES};
use crate::convert_err;
use crate::source::{ConvertError, TensorMeta, TensorSource};

/// Bytes a legacy torch file starts with: `PROTO 2`, `LONG1` of the magic number
/// 0x1950a86a20f9469cfc6c, `STOP`.
pub const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

/// Message prefix for the legacy format when it cannot be read.
pub const LEGACY_HINT: &str =
    "legacy torch serialization format, re-save with torch>=1.6 (torch.save(sd, f))";

const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";
const LOCAL_HEADER_LEN: usize = 30;

/// True when `head` (the first bytes of a file) is the legacy torch format.
pub fn is_legacy_bytes(head: &[u8]) -> bool {
    head.starts_with(&LEGACY_MAGIC[..14])
}

/// True when `head` starts like a zip archive (a torch >= 1.6 file).
pub fn is_zip_bytes(head: &[u8]) -> bool {
    head.starts_with(ZIP_MAGIC)
}

#[derive(Clone, Debug)]
enum Storage {
    /// Bytes `range` of the map.
    Mapped(Range<usize>),
    /// A deflated zip record, `len` bytes once inflated; the storage is its first `bytes`.
    Deflated {
        index: usize,
        name: String,
        len: u64,
        bytes: usize,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    storage: Storage,
    view: View,
}

/// One torch checkpoint file.
pub struct TorchFile {
    path: PathBuf,
    shown: String,
    map: Mmap,
    metas: Vec<TensorMeta>,
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    skipped: Vec<String>,
    legacy: bool,
}

impl std::fmt::Debug for TorchFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchFile")
            .field("path", &self.path)
            .field("tensors", &self.metas.len())
            .field("legacy", &self.legacy)
            .finish()
    }
}

pub(crate) fn map_file(path: &Path) -> Result<Mmap, ConvertError> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| convert_err!("cannot open {shown}: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| convert_err!("cannot stat {shown}: {e}"))?
        .len();
    if len == 0 {
        return Err(convert_err!("{shown} is empty (0 bytes)"));
    }
    // SAFETY: the map is read-only and private; this program never writes the file. Another
    // process truncating or rewriting it while it is mapped is the usual caveat of memory maps
    // (a SIGBUS or changed bytes), which every mmap-based model loader accepts; all offsets
    // read from the bytes are still checked against the map's length.
    unsafe { Mmap::map(&file) }.map_err(|e| convert_err!("cannot memory-map {shown}: {e}"))
}

impl TorchFile {
    /// Opens a torch checkpoint (zip or legacy format) and reads its tensor table.
    pub fn open(path: &Path) -> Result<TorchFile, ConvertError> {
        let map = map_file(path)?;
        let shown = path.display().to_string();
        let mut tf = TorchFile {
            path: path.to_path_buf(),
            shown,
            map,
            metas: Vec::new(),
            entries: Vec::new(),
            by_name: HashMap::new(),
            skipped: Vec::new(),
            legacy: false,
        };
        if is_zip_bytes(&tf.map) {
            tf.open_zip()?;
        } else if is_legacy_bytes(&tf.map) {
            tf.legacy = true;
            tf.open_legacy()?;
        } else {
            let head: Vec<String> = tf.map.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(convert_err!(
                "{} is not a PyTorch checkpoint: it starts with bytes {} (expected a zip archive \"PK\\x03\\x04\" or the legacy pickle magic)",
                tf.shown,
                head.join(" ")
            ));
        }
        Ok(tf)
    }

    /// Whether the file is in the legacy (pre-1.6, non-zip) format.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// Names of state-dict entries that are not float tensors (ints, bools, non-tensors): not
    /// listed by [`TensorSource::tensors`].
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    fn open_zip(&mut self) -> Result<(), ConvertError> {
        let file = self.shown.clone();
        let mut archive = zip::ZipArchive::new(Cursor::new(&self.map[..])).map_err(|e| {
            convert_err!(
                "{file}: not a readable zip archive ({e}); is the file truncated or corrupted?"
            )
        })?;
        struct Rec {
            index: usize,
            method: CompressionMethod,
            header: u64,
            csize: u64,
            size: u64,
        }
        let mut records: HashMap<String, Rec> = HashMap::new();
        let mut pkl: Vec<String> = Vec::new();
        for index in 0..archive.len() {
            let e = archive
                .by_index_data(index)
                .map_err(|e| convert_err!("{file}: zip entry {index}: {e}"))?;
            let name = String::from_utf8_lossy(e.name_raw()).into_owned();
            if e.encrypted() {
                return Err(convert_err!("{file}: zip entry {name} is encrypted"));
            }
            if let Some(prefix) = name.strip_suffix("/data.pkl") {
                if !prefix.contains('/') {
                    pkl.push(name.clone());
                }
            }
            records.insert(
                name,
                Rec {
                    index,
                    method: e.compression(),
                    header: e.header_start(),
                    csize: e.compressed_size(),
                    size: e.size(),
                },
            );
        }
        let pkl_name = match pkl.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(convert_err!(
                    "{file}: zip archive without a <name>/data.pkl record: not a torch.save file"
                ))
            }
            many => {
                return Err(convert_err!(
                    "{file}: zip archive has {} data.pkl records ({}), expected one",
                    many.len(),
                    many.join(", ")
                ))
            }
        };
        let prefix = pkl_name.trim_end_matches("data.pkl").to_owned();

        // Reads a whole (small) record: in place when stored, inflated when deflated.
        let read_small = |archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
                          name: &str,
                          limit: usize|
         -> Result<Vec<u8>, ConvertError> {
            let r = records
                .get(name)
                .ok_or_else(|| convert_err!("{file}: record {name} is missing"))?;
            if r.size > limit as u64 {
                return Err(convert_err!(
                    "{file}: record {name} is {} bytes, more than the {limit} accepted",
                    r.size
                ));
            }
            match r.method {
                CompressionMethod::Stored => {
                    let range = record_range(&file, &self.map, name, r.header, r.csize)?;
                    Ok(self.map[range].to_vec())
                }
                CompressionMethod::Deflated => inflate(&file, archive, r.index, name, r.size),
                m => Err(convert_err!(
                    "{file}: record {name} uses compression {m:?}; only stored and deflated records are supported"
                )),
            }
        };

        let byteorder_name = format!("{prefix}byteorder");
        if records.contains_key(&byteorder_name) {
            let b = read_small(&mut archive, &byteorder_name, 64)?;
            if b != b"little" {
                return Err(convert_err!(
                    "{file}: byte order is {:?}; only little-endian checkpoints are supported",
                    String::from_utf8_lossy(&b)
                ));
            }
        }
        let pkl_bytes = read_small(&mut archive, &pkl_name, MAX_PICKLE_BYTES)?;
        let sd = pickle::load_state_dict(&pkl_bytes, &file)?;

        // Resolve each storage key to its record once.
        let mut storages: HashMap<String, (Storage, usize)> = HashMap::new();
        let mut per_tensor = Vec::with_capacity(sd.tensors.len());
        for (name, t) in &sd.tensors {
            if float_dtype(t.dtype).is_none() {
                per_tensor.push(None);
                continue;
            }
            let key = &t.storage.key;
            if let Some(s) = storages.get(key) {
                per_tensor.push(Some(s.clone()));
                continue;
            }
            let rec_name = format!("{prefix}data/{key}");
            let Some(r) = records.get(&rec_name) else {
                return Err(convert_err!(
                    "{file}: tensor {name}: its storage record {rec_name} is missing from the archive"
                ));
            };
            let need = storage_bytes(&file, name, t.storage.numel, t.storage.dtype)?;
            if need as u64 > r.size {
                return Err(convert_err!(
                    "{file}: tensor {name}: storage {rec_name} should hold {} elements ({need} bytes) but the record has {} bytes",
                    t.storage.numel,
                    r.size
                ));
            }
            let storage = match r.method {
                CompressionMethod::Stored => {
                    let range = record_range(&file, &self.map, &rec_name, r.header, r.csize)?;
                    if (range.len() as u64) < r.size {
                        return Err(convert_err!(
                            "{file}: stored record {rec_name}: compressed size {} differs from size {}",
                            r.csize,
                            r.size
                        ));
                    }
                    Storage::Mapped(range.start..range.start + need)
                }
                CompressionMethod::Deflated => Storage::Deflated {
                    index: r.index,
                    name: rec_name.clone(),
                    len: r.size,
                    bytes: need,
                },
                m => {
                    return Err(convert_err!(
                        "{file}: record {rec_name} uses compression {m:?}; only stored and deflated records are supported"
                    ))
                }
            };
            storages.insert(key.clone(), (storage.clone(), need));
            per_tensor.push(Some((storage, need)));
        }
        drop(archive);
        self.add_tensors(sd, per_tensor)
    }

    /// Adds the float tensors of `sd`; `storages[i]` is the storage of tensor `i` (`None` for
    /// tensors that are not float and are skipped).
    fn add_tensors(
        &mut self,
        sd: StateDict,
        storages: Vec<Option<(Storage, usize)>>,
    ) -> Result<(), ConvertError> {
        self.skipped = sd.skipped;
        for ((name, t), storage) in sd.tensors.into_iter().zip(storages) {
            let (Some(dtype), Some((storage, bytes))) = (float_dtype(t.dtype), storage) else {
                self.skipped.push(name);
                continue;
            };
            let what = format!("{}: tensor {name}", self.shown);
            let view = View::new(&what, dtype, t.offset, &t.shape, &t.stride, bytes)?;
            let meta = TensorMeta {
                name: name.clone(),
                shape: view.shape.clone(),
                dtype,
                file: self.path.clone(),
                stored_bytes: (view.numel as u64).saturating_mul(t.dtype.size() as u64),
            };
            self.by_name.insert(name, self.entries.len());
            self.entries.push(Entry { storage, view });
            self.metas.push(meta);
        }
        Ok(())
    }

    fn open_legacy(&mut self) -> Result<(), ConvertError> {
        let file = self.shown.clone();
        let legacy_err =
            |what: String| convert_err!("{file}: {LEGACY_HINT}; it could not be read: {what}");
        if !self.map.starts_with(&LEGACY_MAGIC) {
            return Err(legacy_err("bad magic number".into()));
        }
        let data: &[u8] = &self.map;
        let mut pos = LEGACY_MAGIC.len();
        let next = |pos: &mut usize, what: &str| -> Result<PyValue, ConvertError> {
            let (v, used) = pickle::load(&data[*pos..], &format!("{file} ({what})"))?;
            *pos += used;
            Ok(v)
        };
        match next(&mut pos, "protocol version")? {
            PyValue::Int(1001) => {}
            other => {
                return Err(legacy_err(format!(
                    "unsupported protocol version {other:?}"
                )))
            }
        }
        let PyValue::Dict(sys) = next(&mut pos, "sys info")? else {
            return Err(legacy_err("sys info is not a dict".into()));
        };
        for (k, v) in &sys {
            if *k == PyValue::Str("little_endian".into()) && *v != PyValue::Bool(true) {
                return Err(convert_err!(
                    "{file}: big-endian legacy torch file; only little-endian checkpoints are supported"
                ));
            }
        }
        let start = pos;
        let sd = pickle::load_state_dict(&data[start..], &format!("{file} (state dict)"))?;
        pos = start + sd.end;
        let PyValue::List(keys) = next(&mut pos, "storage keys")? else {
            return Err(legacy_err("the storage key list is not a list".into()));
        };

        // Root storages the pickle declares: key -> (element type, elements).
        let mut declared: HashMap<String, (ElemType, u64)> = HashMap::new();
        for (name, t) in &sd.tensors {
            let s = &t.storage;
            if let Some(&(d, n)) = declared.get(s.key.as_str()) {
                if d != s.dtype || n != s.numel {
                    return Err(legacy_err(format!(
                        "tensor {name}: storage {} declared twice with different types or sizes",
                        s.key
                    )));
                }
            }
            declared.insert(s.key.clone(), (s.dtype, s.numel));
        }
        // Storages follow the key list in order, each as an i64 element count then its bytes.
        let mut roots: HashMap<String, (ElemType, Range<usize>)> = HashMap::new();
        for k in keys {
            let PyValue::Str(key) = k else {
                return Err(legacy_err("a storage key is not a str".into()));
            };
            let Some(&(dtype, numel)) = declared.get(&key) else {
                return Err(legacy_err(format!(
                    "storage {key} is listed but no tensor uses it, so its size is unknown"
                )));
            };
            let head = pos
                .checked_add(8)
                .and_then(|e| data.get(pos..e))
                .ok_or_else(|| {
                    convert_err!(
                        "{file}: storage {key}: header at byte {pos} is past the end of the file ({} bytes); truncated?",
                        data.len()
                    )
                })?;
            let mut h = [0u8; 8];
            h.copy_from_slice(head);
            let found = i64::from_le_bytes(h);
            if u64::try_from(found).ok() != Some(numel) {
                return Err(convert_err!(
                    "{file}: storage {key} at byte {pos}: the pickle says {numel} elements, the record says {found}"
                ));
            }
            let bytes = storage_bytes(&file, &key, numel, dtype)?;
            let begin = pos + 8;
            let end = begin.checked_add(bytes).filter(|&e| e <= data.len()).ok_or_else(|| {
                convert_err!(
                    "{file}: storage {key}: {bytes} bytes at offset {begin} run past the end of the file ({} bytes); truncated?",
                    data.len()
                )
            })?;
            roots.insert(key, (dtype, begin..end));
            pos = end;
        }
        let mut per_tensor = Vec::with_capacity(sd.tensors.len());
        for (name, t) in &sd.tensors {
            if float_dtype(t.dtype).is_none() {
                per_tensor.push(None);
                continue;
            }
            let s = &t.storage;
            let Some((dtype, range)) = roots.get(&s.key) else {
                return Err(legacy_err(format!(
                    "tensor {name}: storage {} is not in the file's storage list",
                    s.key
                )));
            };
            let storage = match &s.view {
                None => (Storage::Mapped(range.clone()), range.len()),
                Some(v) => {
                    let es = dtype.size() as u64;
                    let sub = v
                        .offset
                        .checked_mul(es)
                        .zip(v.numel.checked_mul(es))
                        .and_then(|(a, n)| Some((a, a.checked_add(n)?)))
                        .filter(|&(_, e)| e <= range.len() as u64);
                    let Some((a, e)) = sub else {
                        return Err(convert_err!(
                            "{file}: tensor {name}: storage view {} (elements {}..+{}) is outside its root storage {} ({} bytes)",
                            v.key,
                            v.offset,
                            v.numel,
                            s.key,
                            range.len()
                        ));
                    };
                    // a, e <= range.len(), a usize
                    let (a, e) = (a as usize, e as usize);
                    (Storage::Mapped(range.start + a..range.start + e), e - a)
                }
            };
            per_tensor.push(Some(storage));
        }
        self.add_tensors(sd, per_tensor)
    }

    fn storage_bytes_of(&self, i: usize, what: &str) -> Result<StorageBytes<'_>, ConvertError> {
        match &self.entries[i].storage {
            Storage::Mapped(r) => self
                .map
                .get(r.clone())
                .map(StorageBytes::Borrowed)
                .ok_or_else(|| convert_err!("{what}: storage bytes {r:?} outside the file")),
            Storage::Deflated {
                index,
                name,
                len,
                bytes,
            } => {
                let mut archive = zip::ZipArchive::new(Cursor::new(&self.map[..]))
                    .map_err(|e| convert_err!("{}: zip archive: {e}", self.shown))?;
                let mut v = inflate(&self.shown, &mut archive, *index, name, *len)?;
                v.truncate(*bytes);
                Ok(StorageBytes::Owned(v))
            }
        }
    }
}

enum StorageBytes<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl StorageBytes<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            StorageBytes::Borrowed(b) => b,
            StorageBytes::Owned(v) => v,
        }
    }
}

fn storage_bytes(
    file: &str,
    name: &str,
    numel: u64,
    dtype: ElemType,
) -> Result<usize, ConvertError> {
    numel
        .checked_mul(dtype.size() as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| {
            convert_err!(
                "{file}: {name}: storage of {numel} {} elements is too large",
                dtype.name()
            )
        })
}

/// The byte range of a stored zip record's data, from its local header.
fn record_range(
    file: &str,
    map: &[u8],
    name: &str,
    header: u64,
    csize: u64,
) -> Result<Range<usize>, ConvertError> {
    let past = |what: &str, at: u64| {
        convert_err!(
            "{file}: record {name}: {what} at offset {at} is past the end of the file ({} bytes); truncated?",
            map.len()
        )
    };
    let h = usize::try_from(header).map_err(|_| past("local header", header))?;
    let hdr = h
        .checked_add(LOCAL_HEADER_LEN)
        .and_then(|e| map.get(h..e))
        .ok_or_else(|| past("local header", header))?;
    if hdr[..4] != ZIP_MAGIC[..] {
        return Err(convert_err!(
            "{file}: record {name}: no local file header signature at offset {header} (found {:02x?})",
            &hdr[..4]
        ));
    }
    let name_len = usize::from(u16::from_le_bytes([hdr[26], hdr[27]]));
    let extra_len = usize::from(u16::from_le_bytes([hdr[28], hdr[29]]));
    let start = h + LOCAL_HEADER_LEN + name_len + extra_len;
    let len = usize::try_from(csize).map_err(|_| past("data", header))?;
    let end = start
        .checked_add(len)
        .filter(|&e| e <= map.len())
        .ok_or_else(|| {
            convert_err!(
                "{file}: record {name}: {csize} bytes of data at offset {start} run past the end of the file ({} bytes); truncated?",
                map.len()
            )
        })?;
    Ok(start..end)
}

/// Inflates a deflated record, expecting exactly `size` bytes.
fn inflate(
    file: &str,
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    index: usize,
    name: &str,
    size: u64,
) -> Result<Vec<u8>, ConvertError> {
    let n = usize::try_from(size)
        .map_err(|_| convert_err!("{file}: record {name}: size {size} is too large"))?;
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| convert_err!("{file}: record {name}: cannot allocate {size} bytes"))?;
    let rec = archive
        .by_index(index)
        .map_err(|e| convert_err!("{file}: record {name}: {e}"))?;
    rec.take(size.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| convert_err!("{file}: record {name}: cannot inflate: {e}"))?;
    if out.len() as u64 != size {
        return Err(convert_err!(
            "{file}: record {name}: inflated to {} bytes, expected {size}",
            out.len()
        ));
    }
    Ok(out)
}

impl TensorSource for TorchFile {
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
        let what = format!("{}: tensor {name}", self.shown);
        let storage = self.storage_bytes_of(i, &what)?;
        self.entries[i].view.gather(&what, storage.bytes(), out)
    }

    fn release(&self, name: &str) {
        let Some(&i) = self.by_name.get(name) else {
            return;
        };
        let e = &self.entries[i];
        if let Storage::Mapped(r) = &e.storage {
            let t = &e.view.touched;
            release_range(&self.map, r.start + t.start..r.start + t.end);
        }
    }
}
