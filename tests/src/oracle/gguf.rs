//! ggml's own GGUF reader and writer (b2757), behind safe functions.
//!
//! b2757's reader `GGML_ASSERT`s (aborts the process) on arrays of arrays, unknown value types,
//! unknown tensor types (BF16 among them), more than 4 dimensions and a `general.alignment`
//! that is not a u32. [`read_file`] first scans the file with a small independent parser and
//! refuses those files with an [`OracleError`](super::OracleError) instead.
//!
//! Strings come back through `gguf_get_val_str`, which returns a NUL-terminated copy: a string
//! with an interior NUL byte is cut there (b2757's API has no way to get its length).

use super::{err, ggml_knows_type, ggml_row_size, init, Result};
use ggml_sys_bleedingedge as sys;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;

/// GGUF value type ids (`enum gguf_type`).
pub mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// A metadata value as ggml sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Element type id (see [`vt`]) and the elements.
    Array(u32, Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// The GGUF type id of this value (see [`vt`]).
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => vt::U8,
            GgufValue::I8(_) => vt::I8,
            GgufValue::U16(_) => vt::U16,
            GgufValue::I16(_) => vt::I16,
            GgufValue::U32(_) => vt::U32,
            GgufValue::I32(_) => vt::I32,
            GgufValue::F32(_) => vt::F32,
            GgufValue::Bool(_) => vt::BOOL,
            GgufValue::String(_) => vt::STRING,
            GgufValue::Array(..) => vt::ARRAY,
            GgufValue::U64(_) => vt::U64,
            GgufValue::I64(_) => vt::I64,
            GgufValue::F64(_) => vt::F64,
        }
    }

    /// Little-endian bytes of a scalar of fixed size (None for strings and arrays).
    fn scalar_bytes(&self) -> Option<Vec<u8>> {
        Some(match *self {
            GgufValue::U8(v) => vec![v],
            GgufValue::I8(v) => v.to_le_bytes().to_vec(),
            GgufValue::U16(v) => v.to_le_bytes().to_vec(),
            GgufValue::I16(v) => v.to_le_bytes().to_vec(),
            GgufValue::U32(v) => v.to_le_bytes().to_vec(),
            GgufValue::I32(v) => v.to_le_bytes().to_vec(),
            GgufValue::F32(v) => v.to_le_bytes().to_vec(),
            GgufValue::Bool(v) => vec![u8::from(v)],
            GgufValue::U64(v) => v.to_le_bytes().to_vec(),
            GgufValue::I64(v) => v.to_le_bytes().to_vec(),
            GgufValue::F64(v) => v.to_le_bytes().to_vec(),
            GgufValue::String(_) | GgufValue::Array(..) => return None,
        })
    }
}

/// Bytes of one element of a fixed-size GGUF type (`gguf_type_size`), None for string/array.
fn fixed_size(ty: u32) -> Option<usize> {
    Some(match ty {
        vt::U8 | vt::I8 | vt::BOOL => 1,
        vt::U16 | vt::I16 => 2,
        vt::U32 | vt::I32 | vt::F32 => 4,
        vt::U64 | vt::I64 | vt::F64 => 8,
        _ => return None,
    })
}

/// Decodes one element of fixed-size type `ty` from little-endian `b` (`b.len()` is its size).
fn decode_scalar(ty: u32, b: &[u8]) -> Option<GgufValue> {
    let a = |n: usize| -> Option<&[u8]> { b.get(..n) };
    Some(match ty {
        vt::U8 => GgufValue::U8(*b.first()?),
        vt::I8 => GgufValue::I8(i8::from_le_bytes(a(1)?.try_into().ok()?)),
        vt::BOOL => GgufValue::Bool(*b.first()? != 0),
        vt::U16 => GgufValue::U16(u16::from_le_bytes(a(2)?.try_into().ok()?)),
        vt::I16 => GgufValue::I16(i16::from_le_bytes(a(2)?.try_into().ok()?)),
        vt::U32 => GgufValue::U32(u32::from_le_bytes(a(4)?.try_into().ok()?)),
        vt::I32 => GgufValue::I32(i32::from_le_bytes(a(4)?.try_into().ok()?)),
        vt::F32 => GgufValue::F32(f32::from_le_bytes(a(4)?.try_into().ok()?)),
        vt::U64 => GgufValue::U64(u64::from_le_bytes(a(8)?.try_into().ok()?)),
        vt::I64 => GgufValue::I64(i64::from_le_bytes(a(8)?.try_into().ok()?)),
        vt::F64 => GgufValue::F64(f64::from_le_bytes(a(8)?.try_into().ok()?)),
        _ => return None,
    })
}

/// A tensor as ggml's reader reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    /// ggml type id.
    pub ty: u32,
    /// ggml's `ne`, padded with 1s to 4 dimensions (b2757's API does not expose `n_dims`).
    pub ne: [i64; 4],
    /// Offset relative to the start of the data section.
    pub offset: u64,
    /// The tensor's bytes (`ggml_nbytes` of them), when read with data.
    pub data: Option<Vec<u8>>,
}

/// What ggml's reader makes of a whole file.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Metadata, in file order.
    pub kv: Vec<(String, GgufValue)>,
    /// Tensor infos, in file order.
    pub tensors: Vec<GgufTensor>,
}

impl GgufFile {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

fn c_path(path: &Path) -> Result<CString> {
    let Some(s) = path.to_str() else {
        return err(format!("path {} is not UTF-8", path.display()));
    };
    CString::new(s).map_err(|_| super::OracleError(format!("path {s} contains a NUL byte")))
}

/// Owns a `gguf_context` and the `ggml_context` it created; frees both on drop.
struct Contexts {
    gguf: *mut sys::gguf_context,
    ggml: *mut sys::ggml_context,
}

impl Drop for Contexts {
    fn drop(&mut self) {
        // SAFETY: both pointers are either null or were returned by gguf_init_* / ggml_init and
        // are freed exactly once, here; nothing borrowed from them outlives this struct.
        unsafe {
            if !self.gguf.is_null() {
                sys::gguf_free(self.gguf);
            }
            if !self.ggml.is_null() {
                sys::ggml_free(self.ggml);
            }
        }
    }
}

/// Copies a NUL-terminated C string; a null pointer gives an error naming `what`.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that stays valid during the call.
unsafe fn owned_str(p: *const c_char, what: &str) -> Result<String> {
    if p.is_null() {
        return err(format!("ggml returned a null {what}"));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Reads `path` with ggml's `gguf_init_from_file`: every key and value, every tensor info
/// (name, type, ne, offset) and, when `with_data`, every tensor's bytes.
pub fn read_file(path: &Path, with_data: bool) -> Result<GgufFile> {
    init();
    let bytes = std::fs::read(path)
        .map_err(|e| super::OracleError(format!("cannot read {}: {e}", path.display())))?;
    if let Err(why) = prescan(&bytes) {
        return err(format!(
            "{}: ggml b2757 would abort on this file: {why}",
            path.display()
        ));
    }
    let cpath = c_path(path)?;
    let mut ctxs = Contexts {
        gguf: std::ptr::null_mut(),
        ggml: std::ptr::null_mut(),
    };
    let params = sys::gguf_init_params {
        no_alloc: !with_data,
        ctx: &mut ctxs.ggml,
    };
    // SAFETY: `cpath` is a valid NUL-terminated path; `params.ctx` points to `ctxs.ggml`, which
    // outlives the call and receives a ggml context owned (and freed) by `ctxs`. The prescan
    // above refused every input on which b2757's reader asserts.
    ctxs.gguf = unsafe { sys::gguf_init_from_file(cpath.as_ptr(), params) };
    if ctxs.gguf.is_null() {
        return err(format!("gguf_init_from_file refused {}", path.display()));
    }
    let g = ctxs.gguf;

    // SAFETY: (this and the getters below) `g` is a live gguf_context owned by `ctxs`; every index
    // passed is within the counts ggml reports, and each typed getter is only called after
    // checking that the key has that type (the getters GGML_ASSERT the type).
    let (version, alignment, data_offset, n_kv, n_tensors) = unsafe {
        (
            sys::gguf_get_version(g),
            sys::gguf_get_alignment(g),
            sys::gguf_get_data_offset(g),
            sys::gguf_get_n_kv(g),
            sys::gguf_get_n_tensors(g),
        )
    };

    let mut kv = Vec::new();
    for i in 0..n_kv {
        // SAFETY: see above; `i < n_kv`. The key pointer is owned by the context and copied at once.
        let key = unsafe { owned_str(sys::gguf_get_key(g, i), "key")? };
        // SAFETY: see above.
        let ty = unsafe { sys::gguf_get_kv_type(g, i) };
        let value = match ty {
            vt::STRING => {
                // SAFETY: the key has type string (checked); the returned string is owned by `g`.
                GgufValue::String(unsafe { owned_str(sys::gguf_get_val_str(g, i), "string")? })
            }
            vt::ARRAY => {
                // SAFETY: the key has type array (checked).
                let (ety, n) = unsafe { (sys::gguf_get_arr_type(g, i), sys::gguf_get_arr_n(g, i)) };
                let n = usize::try_from(n).unwrap_or(0);
                let mut items = Vec::with_capacity(n);
                if ety == vt::STRING {
                    for j in 0..n {
                        let j = i32::try_from(j).unwrap_or(i32::MAX);
                        // SAFETY: array of strings (checked) and `j < n`.
                        items.push(GgufValue::String(unsafe {
                            owned_str(sys::gguf_get_arr_str(g, i, j), "array string")?
                        }));
                    }
                } else if let Some(sz) = fixed_size(ety) {
                    // SAFETY: array of a fixed-size type (checked): ggml returns a pointer to
                    // n * sz bytes owned by `g`.
                    let p = unsafe { sys::gguf_get_arr_data(g, i) }.cast::<u8>();
                    if p.is_null() && n > 0 {
                        return err(format!("{key}: null array data"));
                    }
                    let raw: &[u8] = if n == 0 {
                        &[]
                    } else {
                        // SAFETY: `p` is non-null and points to n * sz initialised bytes that
                        // live as long as `g`; the slice is dropped before `ctxs`.
                        unsafe { std::slice::from_raw_parts(p, n * sz) }
                    };
                    for c in raw.chunks_exact(sz) {
                        match decode_scalar(ety, c) {
                            Some(v) => items.push(v),
                            None => return err(format!("{key}: bad element type {ety}")),
                        }
                    }
                } else {
                    return err(format!(
                        "{key}: array of type {ety} is not readable by b2757"
                    ));
                }
                GgufValue::Array(ety, items)
            }
            _ => {
                let Some(sz) = fixed_size(ty) else {
                    return err(format!("{key}: unknown value type {ty}"));
                };
                // SAFETY: the value has the fixed-size type `ty` (checked), so
                // gguf_get_val_data returns a pointer to at least `sz` bytes of it.
                let p = unsafe { sys::gguf_get_val_data(g, i) }.cast::<u8>();
                if p.is_null() {
                    return err(format!("{key}: null value"));
                }
                // SAFETY: `p` points to the value (at least `sz` bytes), owned by `g`.
                let raw = unsafe { std::slice::from_raw_parts(p, sz) };
                match decode_scalar(ty, raw) {
                    Some(v) => v,
                    None => return err(format!("{key}: bad value type {ty}")),
                }
            }
        };
        kv.push((key, value));
    }

    let mut tensors = Vec::new();
    for i in 0..n_tensors {
        // SAFETY: see above; `i < n_tensors`; the name is owned by `g` and copied at once.
        let name = unsafe { owned_str(sys::gguf_get_tensor_name(g, i), "tensor name")? };
        // SAFETY: see above.
        let (ty, offset) = unsafe {
            (
                sys::gguf_get_tensor_type(g, i),
                sys::gguf_get_tensor_offset(g, i),
            )
        };
        let cname = CString::new(name.clone())
            .map_err(|_| super::OracleError(format!("tensor name {name:?} has a NUL")))?;
        // SAFETY: `ctxs.ggml` is the ggml context gguf_init_from_file filled with one tensor per
        // info (non-null since the read succeeded with params.ctx set); `cname` is NUL-terminated.
        let t = unsafe { sys::ggml_get_tensor(ctxs.ggml, cname.as_ptr()) };
        if t.is_null() {
            return err(format!("ggml made no tensor named {name}"));
        }
        // SAFETY: `t` is a live tensor of `ctxs.ggml`; reading its `ne` array is a plain copy.
        let ne = unsafe { (*t).ne };
        let data = if with_data {
            // SAFETY: with no_alloc false, ggml loaded the data section and pointed `data` at
            // this tensor's bytes, ggml_nbytes(t) of them, owned by `ctxs.ggml`; they are copied
            // before `ctxs` is dropped.
            unsafe {
                let n = sys::ggml_nbytes(t);
                let p = (*t).data.cast::<u8>();
                if p.is_null() {
                    return err(format!("tensor {name} has no data"));
                }
                Some(std::slice::from_raw_parts(p, n).to_vec())
            }
        } else {
            None
        };
        tensors.push(GgufTensor {
            name,
            ty,
            ne,
            offset: offset as u64,
            data,
        });
    }

    Ok(GgufFile {
        version: u32::try_from(version).unwrap_or(0),
        alignment: alignment as u64,
        data_offset: data_offset as u64,
        kv,
        tensors,
    })
}

/// A tensor to write with [`write_file`].
#[derive(Clone, Debug, PartialEq)]
pub struct WriteTensor {
    pub name: String,
    /// ggml type id (must exist in b2757).
    pub ty: u32,
    /// ggml's ne, 1 to 4 entries (ggml writes n_dims without trailing 1s).
    pub ne: Vec<i64>,
    /// Exactly ggml_row_size(ty, product of ne) bytes.
    pub data: Vec<u8>,
}

/// `GGML_MAX_NAME`: tensor names must be shorter.
const GGML_MAX_NAME: usize = 64;

/// Writes `path` with ggml: `gguf_init_empty`, `gguf_set_*` for each key (in order),
/// `gguf_add_tensor` for each tensor (from a ggml context holding the data), then
/// `gguf_write_to_file`. Alignment is ggml's default 32 (b2757's writer ignores
/// `general.alignment`, so a different value is refused).
pub fn write_file(path: &Path, kv: &[(String, GgufValue)], tensors: &[WriteTensor]) -> Result<()> {
    init();
    let cpath = c_path(path)?;
    // gguf_write_to_file aborts when it cannot open the file: check that here first.
    std::fs::File::create(path)
        .map_err(|e| super::OracleError(format!("cannot create {}: {e}", path.display())))?;

    // Validate everything before touching C.
    let mut seen_keys = std::collections::HashSet::new();
    for (k, v) in kv {
        if !seen_keys.insert(k.as_str()) {
            return err(format!("duplicate key {k} (ggml would overwrite it)"));
        }
        if k == "general.alignment" && *v != GgufValue::U32(32) {
            return err("b2757's writer always aligns to 32; refusing another general.alignment");
        }
        check_writable(k, v)?;
    }
    let mut seen_names = std::collections::HashSet::new();
    let mut mem = 1024usize;
    for t in tensors {
        if !seen_names.insert(t.name.as_str()) {
            return err(format!("duplicate tensor name {}", t.name));
        }
        if t.name.len() >= GGML_MAX_NAME || t.name.contains('\0') {
            return err(format!("tensor name {:?} is too long or has a NUL", t.name));
        }
        if !ggml_knows_type(t.ty) {
            return err(format!("{}: ggml b2757 has no type {}", t.name, t.ty));
        }
        if t.ne.is_empty() || t.ne.len() > 4 || t.ne.iter().any(|&d| d <= 0) {
            return err(format!("{}: bad shape {:?}", t.name, t.ne));
        }
        let n: i64 = t.ne.iter().product();
        let expect = usize::try_from(n).ok().and_then(|n| ggml_row_size(t.ty, n));
        if expect != Some(t.data.len()) {
            return err(format!(
                "{}: {} bytes of data, ggml expects {expect:?}",
                t.name,
                t.data.len()
            ));
        }
        // SAFETY: ggml_tensor_overhead only returns a constant.
        mem += unsafe { sys::ggml_tensor_overhead() } + t.data.len() + 64;
    }

    let mut ctxs = Contexts {
        gguf: std::ptr::null_mut(),
        ggml: std::ptr::null_mut(),
    };
    // SAFETY: gguf_init_empty allocates a fresh context, owned and freed by `ctxs`.
    ctxs.gguf = unsafe { sys::gguf_init_empty() };
    if ctxs.gguf.is_null() {
        return err("gguf_init_empty failed");
    }
    let g = ctxs.gguf;

    for (k, v) in kv {
        set_value(g, k, v)?;
    }

    if !tensors.is_empty() {
        let params = sys::ggml_init_params {
            mem_size: mem,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: false,
        };
        // SAFETY: ggml_init allocates its own arena of `mem` bytes (enough for every tensor's
        // header and data, computed above); the context is owned and freed by `ctxs`.
        ctxs.ggml = unsafe { sys::ggml_init(params) };
        if ctxs.ggml.is_null() {
            return err("ggml_init failed");
        }
        for t in tensors {
            let cname = CString::new(t.name.as_str())
                .map_err(|_| super::OracleError(format!("tensor name {:?}", t.name)))?;
            let n_dims = t.ne.len() as i32;
            // SAFETY: the type exists in b2757, `ne` holds n_dims (1..=4) positive sizes and the
            // arena has room (computed above), so ggml_new_tensor returns a tensor whose `data`
            // holds exactly t.data.len() bytes (checked against ggml_row_size above).
            unsafe {
                let tensor = sys::ggml_new_tensor(ctxs.ggml, t.ty, n_dims, t.ne.as_ptr());
                if tensor.is_null() || (*tensor).data.is_null() {
                    return err(format!("ggml_new_tensor failed for {}", t.name));
                }
                if sys::ggml_nbytes(tensor) != t.data.len() {
                    return err(format!("{}: ggml_nbytes disagrees", t.name));
                }
                std::ptr::copy_nonoverlapping(
                    t.data.as_ptr(),
                    (*tensor).data.cast::<u8>(),
                    t.data.len(),
                );
                sys::ggml_set_name(tensor, cname.as_ptr());
                // Names are unique (checked), so gguf_add_tensor does not assert; it keeps a
                // pointer to the tensor's data, which lives in `ctxs.ggml` until after writing.
                sys::gguf_add_tensor(g, tensor);
            }
        }
    }

    // SAFETY: `g` is a complete gguf context whose tensor data pointers are alive (in
    // `ctxs.ggml`); `cpath` is NUL-terminated and the file was just created successfully.
    unsafe { sys::gguf_write_to_file(g, cpath.as_ptr(), false) };
    Ok(())
}

/// Refuses values b2757's writer cannot express (nested arrays, NULs in strings, mixed arrays).
fn check_writable(key: &str, v: &GgufValue) -> Result<()> {
    if key.contains('\0') {
        return err(format!("key {key:?} has a NUL"));
    }
    match v {
        GgufValue::String(s) if s.contains('\0') => err(format!("{key}: string has a NUL")),
        GgufValue::Array(ety, items) => {
            if *ety == vt::ARRAY {
                return err(format!(
                    "{key}: b2757 cannot write or read arrays of arrays"
                ));
            }
            if *ety != vt::STRING && fixed_size(*ety).is_none() {
                return err(format!("{key}: unknown element type {ety}"));
            }
            if i32::try_from(items.len()).is_err() {
                return err(format!("{key}: too many elements"));
            }
            for it in items {
                if it.type_id() != *ety {
                    return err(format!("{key}: element {it:?} is not of type {ety}"));
                }
                if let GgufValue::String(s) = it {
                    if s.contains('\0') {
                        return err(format!("{key}: string element has a NUL"));
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `gguf_set_*` for one (checked) key and value.
fn set_value(g: *mut sys::gguf_context, key: &str, v: &GgufValue) -> Result<()> {
    let ck = CString::new(key).map_err(|_| super::OracleError(format!("key {key:?}")))?;
    let k = ck.as_ptr();
    // SAFETY: `g` is a live gguf context; `k` and every string passed are NUL-terminated and
    // alive for the call (ggml copies them); array data pointers cover `n` elements of the
    // declared type (packed below) and n fits in an int (checked by check_writable).
    unsafe {
        match v {
            GgufValue::U8(x) => sys::gguf_set_val_u8(g, k, *x),
            GgufValue::I8(x) => sys::gguf_set_val_i8(g, k, *x),
            GgufValue::U16(x) => sys::gguf_set_val_u16(g, k, *x),
            GgufValue::I16(x) => sys::gguf_set_val_i16(g, k, *x),
            GgufValue::U32(x) => sys::gguf_set_val_u32(g, k, *x),
            GgufValue::I32(x) => sys::gguf_set_val_i32(g, k, *x),
            GgufValue::F32(x) => sys::gguf_set_val_f32(g, k, *x),
            GgufValue::U64(x) => sys::gguf_set_val_u64(g, k, *x),
            GgufValue::I64(x) => sys::gguf_set_val_i64(g, k, *x),
            GgufValue::F64(x) => sys::gguf_set_val_f64(g, k, *x),
            GgufValue::Bool(x) => sys::gguf_set_val_bool(g, k, *x),
            GgufValue::String(s) => {
                let cs = CString::new(s.as_str())
                    .map_err(|_| super::OracleError(format!("{key}: NUL in string")))?;
                sys::gguf_set_val_str(g, k, cs.as_ptr());
            }
            GgufValue::Array(ety, items) => {
                let n = items.len() as i32;
                if *ety == vt::STRING {
                    let owned: Vec<CString> = items
                        .iter()
                        .map(|it| match it {
                            GgufValue::String(s) => CString::new(s.as_str()).unwrap_or_default(),
                            _ => CString::default(),
                        })
                        .collect();
                    let mut ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
                    sys::gguf_set_arr_str(g, k, ptrs.as_mut_ptr(), n);
                } else {
                    let packed: Vec<u8> = items
                        .iter()
                        .flat_map(|it| it.scalar_bytes().unwrap_or_default())
                        .collect();
                    // ggml memcpy's n * type_size bytes: use 8-byte-aligned storage anyway.
                    let mut words = vec![0u64; packed.len().div_ceil(8).max(1)];
                    std::ptr::copy_nonoverlapping(
                        packed.as_ptr(),
                        words.as_mut_ptr().cast::<u8>(),
                        packed.len(),
                    );
                    sys::gguf_set_arr_data(g, k, *ety, words.as_ptr().cast::<c_void>(), n);
                }
            }
        }
    }
    Ok(())
}

/// A minimal, independent scan of a GGUF header: refuses what makes b2757's reader assert.
fn prescan(b: &[u8]) -> std::result::Result<(), String> {
    struct Cur<'a> {
        b: &'a [u8],
        pos: usize,
    }
    impl Cur<'_> {
        fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
            let end = self.pos.checked_add(n).ok_or("offset overflow")?;
            let s = self.b.get(self.pos..end).ok_or("file ends early")?;
            self.pos = end;
            Ok(s)
        }
        fn u32(&mut self) -> std::result::Result<u32, String> {
            let s = self.take(4)?;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        }
        fn u64(&mut self) -> std::result::Result<u64, String> {
            let s = self.take(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            Ok(u64::from_le_bytes(a))
        }
        fn string(&mut self) -> std::result::Result<String, String> {
            let n = usize::try_from(self.u64()?).map_err(|_| "string length")?;
            Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
        }
    }
    let mut c = Cur { b, pos: 0 };
    if c.take(4)? != b"GGUF" {
        return Err("bad magic".into());
    }
    let version = c.u32()?;
    if version < 2 {
        return Err(format!("version {version}"));
    }
    let n_tensors = c.u64()?;
    let n_kv = c.u64()?;
    for _ in 0..n_kv {
        let key = c.string()?;
        let ty = c.u32()?;
        match ty {
            vt::STRING => {
                c.string()?;
            }
            vt::ARRAY => {
                let ety = c.u32()?;
                let n = c.u64()?;
                if ety == vt::STRING {
                    for _ in 0..n {
                        c.string()?;
                    }
                } else if let Some(sz) = fixed_size(ety) {
                    let len = usize::try_from(n)
                        .ok()
                        .and_then(|n| n.checked_mul(sz))
                        .ok_or("array too large")?;
                    c.take(len)?;
                } else {
                    return Err(format!("key {key}: array of element type {ety}"));
                }
            }
            _ => {
                let Some(sz) = fixed_size(ty) else {
                    return Err(format!("key {key}: value type {ty}"));
                };
                if key == "general.alignment" && ty != vt::U32 {
                    return Err(format!("general.alignment has type {ty}, not u32"));
                }
                let v = c.take(sz)?;
                if key == "general.alignment" {
                    let a = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                    if a == 0 {
                        return Err("general.alignment is 0".into());
                    }
                }
            }
        }
    }
    for _ in 0..n_tensors {
        let name = c.string()?;
        let n_dims = c.u32()?;
        if n_dims > 4 {
            return Err(format!("tensor {name}: {n_dims} dims"));
        }
        let mut n: u64 = 1;
        for _ in 0..n_dims {
            let d = c.u64()?;
            if d > i64::MAX as u64 {
                return Err(format!("tensor {name}: dim {d}"));
            }
            n = n.saturating_mul(d);
        }
        let ty = c.u32()?;
        if !ggml_knows_type(ty) {
            return Err(format!("tensor {name}: type {ty} unknown to b2757"));
        }
        let bs = super::ggml_block_size(ty).unwrap_or(1) as u64;
        if !n.is_multiple_of(bs) {
            return Err(format!("tensor {name}: {n} elements, block {bs}"));
        }
        c.u64()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_with_ggml() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.gguf");
        let kv = vec![
            ("a.u8".to_string(), GgufValue::U8(7)),
            ("a.s".to_string(), GgufValue::String("héllo".into())),
            (
                "a.arr".to_string(),
                GgufValue::Array(vt::I32, vec![GgufValue::I32(-1), GgufValue::I32(2)]),
            ),
            (
                "a.strs".to_string(),
                GgufValue::Array(
                    vt::STRING,
                    vec![
                        GgufValue::String("x".into()),
                        GgufValue::String(String::new()),
                    ],
                ),
            ),
        ];
        let data: Vec<u8> = (0..32u8).collect();
        let t = WriteTensor {
            name: "t".into(),
            ty: 0,
            ne: vec![4, 2],
            data: data.clone(),
        };
        write_file(&p, &kv, &[t]).unwrap();
        let f = read_file(&p, true).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.alignment, 32);
        assert_eq!(f.kv, kv);
        assert_eq!(f.tensors.len(), 1);
        assert_eq!(f.tensors[0].ne, [4, 2, 1, 1]);
        assert_eq!(f.tensors[0].data.as_deref(), Some(&data[..]));
    }

    #[test]
    fn refuses_what_ggml_would_abort_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.gguf");
        let nested = GgufValue::Array(vt::ARRAY, vec![]);
        assert!(write_file(&p, &[("k".into(), nested)], &[]).is_err());
        // a nested array written by hand: header, 0 tensors, 1 kv
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.push(b'k');
        b.extend(vt::ARRAY.to_le_bytes());
        b.extend(vt::ARRAY.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        let e = read_file(&p, false).unwrap_err();
        assert!(e.0.contains("array of element type 9"), "{e}");
    }
}
