//! Safe wrappers over ggml and llama.cpp (release b2757), the oracle our code is compared with.
//!
//! * [`quant`]: ggml's reference quantizers, `ggml_quantize_chunk`, the dequantizers and the
//!   fp16 row conversions.
//! * [`gguf`]: ggml's own GGUF reader (`gguf_init_from_file`) and writer (`gguf_write_to_file`).
//! * [`llama`]: model loading and decoding through llama.h.
//!
//! Every entry point calls [`init`] first: without one `ggml_init` call, ggml's fp16 lookup
//! table is all zeros and every dequantized value is 0.
//!
//! ggml reports many misuses with `GGML_ASSERT`, which aborts the process. The wrappers check
//! their arguments (types, lengths, names) before calling into C, so a bad argument is an
//! [`OracleError`], never an abort; the remaining aborts are documented per function.

use ggml_sys_bleedingedge as sys;
use std::fmt;
use std::sync::Once;

pub mod gguf;
pub mod llama;
pub mod quant;

/// An argument the oracle refuses, or a failure that ggml or llama.cpp reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OracleError(pub String);

impl fmt::Display for OracleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oracle: {}", self.0)
    }
}

impl std::error::Error for OracleError {}

/// Shorthand for an [`OracleError`] result.
pub type Result<T> = std::result::Result<T, OracleError>;

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(OracleError(msg.into()))
}

/// Initialises ggml once per process (fills the fp16 table; later calls do nothing).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let params = sys::ggml_init_params {
            mem_size: 1024,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        };
        // SAFETY: ggml_init only reads the params struct passed by value; with a null
        // mem_buffer it allocates its own 1 KiB arena. On first use it fills the global fp16
        // table (under ggml's own critical section). The context is freed right away and never
        // used again.
        unsafe {
            let ctx = sys::ggml_init(params);
            if !ctx.is_null() {
                sys::ggml_free(ctx);
            }
        }
    });
}

/// The ggml type ids that b2757 knows (`GGML_TYPE_COUNT` is 30: it has no BF16).
pub const GGML_TYPE_COUNT: u32 = sys::ggml_type_GGML_TYPE_COUNT;

/// Ids of the types that exist in b2757's `enum ggml_type` (4 and 5, the removed Q4_2/Q4_3,
/// are holes).
pub fn ggml_knows_type(id: u32) -> bool {
    id < GGML_TYPE_COUNT && id != 4 && id != 5
}

/// ggml's elements per block of type `id` (`ggml_blck_size`), if b2757 knows the type.
pub fn ggml_block_size(id: u32) -> Option<usize> {
    if !ggml_knows_type(id) {
        return None;
    }
    // SAFETY: `id` is a valid index of ggml's type_traits table (checked above); the function
    // only reads that table.
    let b = unsafe { sys::ggml_blck_size(id) };
    usize::try_from(b).ok().filter(|&b| b > 0)
}

/// ggml's bytes per block of type `id` (`ggml_type_size`), if b2757 knows the type.
pub fn ggml_type_size(id: u32) -> Option<usize> {
    if !ggml_knows_type(id) {
        return None;
    }
    // SAFETY: as in `ggml_block_size`: a valid index into a static table.
    Some(unsafe { sys::ggml_type_size(id) })
}

/// ggml's bytes for `n` elements of type `id`, if the type is known and `n` is whole blocks.
pub fn ggml_row_size(id: u32, n: usize) -> Option<usize> {
    let bs = ggml_block_size(id)?;
    let ts = ggml_type_size(id)?;
    if !n.is_multiple_of(bs) {
        return None;
    }
    (n / bs).checked_mul(ts)
}

/// ggml's name of type `id` (`ggml_type_name`), if b2757 knows the type.
pub fn ggml_type_name(id: u32) -> Option<String> {
    if !ggml_knows_type(id) {
        return None;
    }
    // SAFETY: valid index into the static type_traits table; the returned pointer is a static
    // NUL-terminated string (or null for a hole, handled below).
    let p = unsafe { sys::ggml_type_name(id) };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a non-null pointer to a static NUL-terminated C string.
    Some(
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned(),
    )
}
