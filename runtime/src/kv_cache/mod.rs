//! The key/value cache of a range of layers.
//!
//! For every layer, keys and values are stored per kv head (head-major: kv head `h` holds its
//! rows of `head_dim` elements for positions `0, 1, 2, …` contiguously, q4_0 values its
//! dimensions' runs of positions, so attention's passes over the positions of one head read
//! memory sequentially), in one of four types, chosen for the
//! keys and the values separately ([`KvTypes`], llama.cpp's `--cache-type-k` / `--cache-type-v`):
//!
//! * `f16` (the default, as in llama.cpp),
//! * `f32` (exact),
//! * `q8_0`: each head row is `head_dim / 32` Q8_0 blocks (8.5 bits per element), quantized
//!   with the foundation's (ggml's reference) quantizer,
//! * `q4_0`: Q4_0 blocks (4.5 bits per element), ggml's reference quantizer too, laid out for
//!   the repacked weights' Q4_0×8 matrix × vector kernel ([`q4_0x8`]) so that both passes of
//!   attention are that kernel. *Keys*: each head row is `head_dim / 32` blocks, stored eight
//!   positions to a group in the interleaved layout (per block column the eight positions'
//!   scales, then their quants four bytes each), written one position at a time. *Values*:
//!   transposed ([`columns`]): a block holds one dimension at 32 consecutive positions, eight
//!   dimensions to a group; the last positions, until 32 are complete, are kept as f32. Same
//!   bytes per position as rows (plus that f32 tail per head).
//!
//! The block types need `head_dim` to be a multiple of 32.
//!
//! Storage grows with the positions written (up to `n_ctx`), so a short session on a large
//! context does not hold the memory of the whole context.

use std::fmt;
use std::str::FromStr;

use half::f16;
use xverse_quant::blocks::q4_0::{self, BlockQ4_0};
use xverse_quant::blocks::q8_0::{self, BlockQ8_0};
use xverse_quant::kernels::q4_0x8;

use crate::error::RuntimeError;

mod columns;
pub use columns::Columns;
use columns::ValueColumns;

/// Elements per Q8_0 / Q4_0 block.
const QK: usize = 32;

/// The element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheType {
    F32,
    #[default]
    F16,
    Q8_0,
    Q4_0,
}

impl CacheType {
    /// Every cache type, in the order of `--cache-type`'s help.
    pub const ALL: [CacheType; 4] = [
        CacheType::F16,
        CacheType::F32,
        CacheType::Q8_0,
        CacheType::Q4_0,
    ];

    /// The name the command line uses: `f32`, `f16`, `q8_0` or `q4_0`.
    pub fn name(self) -> &'static str {
        match self {
            CacheType::F32 => "f32",
            CacheType::F16 => "f16",
            CacheType::Q8_0 => "q8_0",
            CacheType::Q4_0 => "q4_0",
        }
    }

    /// Elements per block: a head row must be whole blocks (1 for the float types).
    pub fn block_elems(self) -> usize {
        match self {
            CacheType::F32 | CacheType::F16 => 1,
            CacheType::Q8_0 | CacheType::Q4_0 => QK,
        }
    }

    /// Bytes of one row of `head_dim` elements (`head_dim` a multiple of [`Self::block_elems`]).
    pub fn row_bytes(self, head_dim: usize) -> usize {
        match self {
            CacheType::F32 => 4 * head_dim,
            CacheType::F16 => 2 * head_dim,
            CacheType::Q8_0 => head_dim / QK * std::mem::size_of::<BlockQ8_0>(),
            CacheType::Q4_0 => head_dim / QK * std::mem::size_of::<BlockQ4_0>(),
        }
    }

    /// An error unless a head row of `head_dim` elements is whole blocks of this type.
    pub fn check_head_dim(self, head_dim: usize) -> Result<(), RuntimeError> {
        if head_dim.is_multiple_of(self.block_elems()) {
            return Ok(());
        }
        Err(RuntimeError::new(format!(
            "cache type {self} needs a head size that is a multiple of {}; this model's is {head_dim} (use f16 or f32)",
            self.block_elems()
        )))
    }
}

/// The element types of the cached keys and of the cached values (llama.cpp's
/// `--cache-type-k` and `--cache-type-v`; `From<CacheType>` gives both the same type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KvTypes {
    pub k: CacheType,
    pub v: CacheType,
}

impl From<CacheType> for KvTypes {
    fn from(ty: CacheType) -> KvTypes {
        KvTypes { k: ty, v: ty }
    }
}

impl KvTypes {
    /// Bytes of one position of one kv head: its key row and its value row.
    pub fn row_bytes(self, head_dim: usize) -> usize {
        self.k.row_bytes(head_dim) + self.v.row_bytes(head_dim)
    }
}

impl fmt::Display for KvTypes {
    /// `q8_0` when keys and values share the type, else `k q8_0, v f16`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.k == self.v {
            write!(f, "{}", self.k)
        } else {
            write!(f, "k {}, v {}", self.k, self.v)
        }
    }
}

impl fmt::Display for CacheType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CacheType {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(CacheType::F32),
            "f16" => Ok(CacheType::F16),
            "q8_0" => Ok(CacheType::Q8_0),
            "q4_0" => Ok(CacheType::Q4_0),
            _ => Err(RuntimeError::new(format!(
                "unknown cache type \"{s}\" (expected f16, f32, q8_0 or q4_0)"
            ))),
        }
    }
}

/// Rows of one tensor (the keys or the values of one layer).
#[derive(Clone, Debug)]
enum Rows {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Q8_0(Vec<BlockQ8_0>),
    /// Q4_0 rows eight to a group in [`q4_0x8`]'s layout (whole groups allocated; the slots
    /// of a last group past `rows` hold zeros or forgotten rows, never read as positions).
    Q4_0x8 {
        groups: Vec<u8>,
        rows: usize,
        head_dim: usize,
    },
    /// Q4_0 values by dimension, 32 positions to a block ([`ValueColumns`]).
    Q4_0Columns(ValueColumns),
}

impl Rows {
    /// Keys of `head_dim` elements: row after row, Q4_0 in groups of eight
    /// ([`Rows::Q4_0x8`]).
    fn new_keys(ty: CacheType, head_dim: usize) -> Rows {
        match ty {
            CacheType::F32 => Rows::F32(Vec::new()),
            CacheType::F16 => Rows::F16(Vec::new()),
            CacheType::Q8_0 => Rows::Q8_0(Vec::new()),
            CacheType::Q4_0 => Rows::Q4_0x8 {
                groups: Vec::new(),
                rows: 0,
                head_dim,
            },
        }
    }

    /// Values of `head_dim` elements: Q4_0 by dimension ([`Rows::Q4_0Columns`]), the other
    /// types as keys.
    fn new_values(ty: CacheType, head_dim: usize) -> Rows {
        match ty {
            CacheType::Q4_0 => Rows::Q4_0Columns(ValueColumns::new(head_dim)),
            _ => Rows::new_keys(ty, head_dim),
        }
    }

    /// Makes room for `n` elements (whole rows), growing geometrically but never past `max`;
    /// an error (not an abort) when the memory cannot be had.
    fn ensure(&mut self, n: usize, max: usize) -> Result<(), RuntimeError> {
        fn grow<T: Clone>(
            v: &mut Vec<T>,
            n: usize,
            max: usize,
            zero: T,
        ) -> Result<(), RuntimeError> {
            if v.len() >= n {
                return Ok(());
            }
            if v.capacity() < n {
                let target = n.max(v.capacity().saturating_mul(2)).min(max.max(n));
                v.try_reserve_exact(target - v.len()).map_err(|_| {
                    RuntimeError::new(format!(
                        "kv cache: cannot allocate {} bytes for one head's rows",
                        target.saturating_mul(std::mem::size_of::<T>())
                    ))
                })?;
            }
            v.resize(n, zero);
            Ok(())
        }
        match self {
            Rows::F32(v) => grow(v, n, max, 0.0),
            Rows::F16(v) => grow(v, n, max, f16::ZERO),
            Rows::Q8_0(v) => {
                let zero = BlockQ8_0 {
                    d: f16::ZERO,
                    qs: [0; QK],
                };
                grow(v, n / QK, max / QK, zero)
            }
            Rows::Q4_0x8 {
                groups,
                rows,
                head_dim,
            } => {
                let gb = group_bytes(*head_dim);
                let (n, max) = (n / *head_dim, max / *head_dim);
                grow(groups, n.div_ceil(8) * gb, max.div_ceil(8) * gb, 0u8)?;
                *rows = (*rows).max(n);
                Ok(())
            }
            Rows::Q4_0Columns(c) => {
                let hd = c.head_dim();
                c.ensure(n / hd, max / hd)
            }
        }
    }

    /// Elements stored.
    fn len(&self) -> usize {
        match self {
            Rows::F32(v) => v.len(),
            Rows::F16(v) => v.len(),
            Rows::Q8_0(v) => v.len() * QK,
            Rows::Q4_0x8 { rows, head_dim, .. } => rows * head_dim,
            Rows::Q4_0Columns(c) => c.positions() * c.head_dim(),
        }
    }

    fn truncate(&mut self, n: usize) {
        match self {
            Rows::F32(v) => v.truncate(n),
            Rows::F16(v) => v.truncate(n),
            Rows::Q8_0(v) => v.truncate(n / QK),
            Rows::Q4_0x8 {
                groups,
                rows,
                head_dim,
            } => {
                *rows = (*rows).min(n / *head_dim);
                groups.truncate(rows.div_ceil(8) * group_bytes(*head_dim));
            }
            Rows::Q4_0Columns(c) => c.truncate(n / c.head_dim()),
        }
    }

    /// Writes `src` at element offset `at` (`at` and `src.len()` whole rows).
    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Rows::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Rows::F16(v) => {
                for (d, &s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(s);
                }
            }
            Rows::Q8_0(v) => {
                let b = at / QK;
                q8_0::quantize_row(src, &mut v[b..b + src.len() / QK]);
            }
            Rows::Q4_0x8 {
                groups, head_dim, ..
            } => {
                let (hd, gb) = (*head_dim, group_bytes(*head_dim));
                let mut row: Vec<BlockQ4_0> = vec![bytemuck::Zeroable::zeroed(); hd / QK];
                for (i, src) in src.chunks_exact(hd).enumerate() {
                    let r = at / hd + i;
                    q4_0::quantize_row(src, &mut row);
                    let group = &mut groups[r / 8 * gb..][..gb];
                    let packed = q4_0x8::pack_row(hd, r % 8, bytemuck::cast_slice(&row), group);
                    debug_assert!(packed, "whole rows of a group of {gb} bytes");
                }
            }
            Rows::Q4_0Columns(c) => {
                // positions are appended: writing at `at` forgets those from there on
                let hd = c.head_dim();
                c.truncate(at / hd);
                debug_assert_eq!(c.positions(), at / hd, "positions are written in order");
                for row in src.chunks_exact(hd) {
                    c.push(row);
                }
            }
        }
    }

    /// Reads `dst.len()` elements from element offset `at` as f32.
    fn read(&self, at: usize, dst: &mut [f32]) {
        match self {
            Rows::F32(v) => dst.copy_from_slice(&v[at..at + dst.len()]),
            Rows::F16(v) => {
                let n = dst.len();
                for (d, s) in dst.iter_mut().zip(&v[at..at + n]) {
                    *d = s.to_f32();
                }
            }
            Rows::Q8_0(v) => {
                let b = at / QK;
                q8_0::dequantize_row(&v[b..b + dst.len() / QK], dst);
            }
            Rows::Q4_0x8 {
                groups, head_dim, ..
            } => {
                let hd = *head_dim;
                let packed = PackedRows {
                    groups,
                    skip: 0,
                    rows: groups.len() / group_bytes(hd) * 8,
                };
                let mut row = vec![bytemuck::Zeroable::zeroed(); hd / QK];
                for (i, dst) in dst.chunks_exact_mut(hd).enumerate() {
                    packed.read_with(at / hd + i, &mut row, dst);
                }
            }
            Rows::Q4_0Columns(c) => {
                let (hd, view) = (c.head_dim(), c.view(c.positions()));
                for (i, dst) in dst.chunks_exact_mut(hd).enumerate() {
                    view.read(at / hd + i, dst);
                }
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Rows::F32(v) => v.capacity() * 4,
            Rows::F16(v) => v.capacity() * 2,
            Rows::Q8_0(v) => v.capacity() * std::mem::size_of::<BlockQ8_0>(),
            Rows::Q4_0x8 { groups, .. } => groups.capacity(),
            Rows::Q4_0Columns(c) => c.bytes(),
        }
    }
}

/// Bytes of a group of eight Q4_0 rows of `head_dim` elements (a multiple of 32).
fn group_bytes(head_dim: usize) -> usize {
    head_dim / QK * q4_0x8::GROUP_BLOCK_BYTES
}

/// Q4_0 rows stored eight to a group ([`q4_0x8`]'s layout): `rows` positions, the first
/// `skip` rows into the first of `groups` (a range that starts within a group).
#[derive(Clone, Copy, Debug)]
pub struct PackedRows<'a> {
    /// Whole groups, from the one that holds the first position.
    pub groups: &'a [u8],
    /// Rows of the first group before the first position (0..8).
    pub skip: usize,
    /// Positions.
    pub rows: usize,
}

impl PackedRows<'_> {
    /// Position `j` (`< rows`) dequantized into `out` (`head_dim` elements).
    pub fn read(&self, j: usize, head_dim: usize, out: &mut [f32]) {
        let mut row = vec![bytemuck::Zeroable::zeroed(); head_dim / QK];
        self.read_with(j, &mut row, out);
    }

    /// [`PackedRows::read`] through `row` (`head_dim / 32` blocks), for many positions
    /// without a buffer each.
    pub fn read_with(&self, j: usize, row: &mut [BlockQ4_0], out: &mut [f32]) {
        let head_dim = row.len() * QK;
        let (r, gb) = (self.skip + j, group_bytes(head_dim));
        let group = &self.groups[r / 8 * gb..][..gb];
        let unpacked = q4_0x8::unpack_row(head_dim, r % 8, group, bytemuck::cast_slice_mut(row));
        debug_assert!(unpacked, "whole rows of a group of {gb} bytes");
        q4_0::dequantize_row(row, out);
    }
}

/// The first positions of one kv head's keys or values, as stored: `n × head_dim` elements,
/// position-major (q8_0: `n × head_dim / 32` blocks; q4_0 keys: groups of eight positions,
/// [`PackedRows`]; q4_0 values: by dimension, [`Columns`]).
#[derive(Clone, Copy, Debug)]
pub enum HeadRows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Q8_0(&'a [BlockQ8_0]),
    /// Q4_0 keys, eight positions to a group.
    Q4_0x8(PackedRows<'a>),
    /// Q4_0 values by dimension, 32 positions to a block.
    Q4_0Columns(Columns<'a>),
}

impl<'a> HeadRows<'a> {
    /// Rows `range` of these (rows of `head_dim` elements), as stored.
    pub fn rows(self, range: std::ops::Range<usize>, head_dim: usize) -> HeadRows<'a> {
        let (a, b) = (range.start, range.end);
        match self {
            HeadRows::F32(r) => HeadRows::F32(&r[a * head_dim..b * head_dim]),
            HeadRows::F16(r) => HeadRows::F16(&r[a * head_dim..b * head_dim]),
            HeadRows::Q8_0(r) => HeadRows::Q8_0(&r[a * head_dim / QK..b * head_dim / QK]),
            HeadRows::Q4_0x8(p) => {
                let (first, gb) = (p.skip + a, group_bytes(head_dim));
                HeadRows::Q4_0x8(PackedRows {
                    groups: &p.groups[first / 8 * gb..(p.skip + b).div_ceil(8) * gb],
                    skip: first % 8,
                    rows: b - a,
                })
            }
            HeadRows::Q4_0Columns(c) => HeadRows::Q4_0Columns(c.rows(range)),
        }
    }
}

impl Rows {
    /// The first `n` elements (whole rows), as stored.
    fn head_rows(&self, n: usize) -> HeadRows<'_> {
        match self {
            Rows::F32(v) => HeadRows::F32(&v[..n]),
            Rows::F16(v) => HeadRows::F16(&v[..n]),
            Rows::Q8_0(v) => HeadRows::Q8_0(&v[..n / QK]),
            Rows::Q4_0x8 {
                groups, head_dim, ..
            } => {
                let rows = n / *head_dim;
                HeadRows::Q4_0x8(PackedRows {
                    groups: &groups[..rows.div_ceil(8) * group_bytes(*head_dim)],
                    skip: 0,
                    rows,
                })
            }
            Rows::Q4_0Columns(c) => HeadRows::Q4_0Columns(c.view(n / c.head_dim())),
        }
    }
}

/// Keys and values of one layer: one [`Rows`] per kv head.
#[derive(Clone, Debug)]
pub struct LayerCache {
    k: Vec<Rows>,
    v: Vec<Rows>,
    /// `kv_heads * head_dim`: elements per position.
    kv_dim: usize,
    head_dim: usize,
    kv_heads: usize,
    n_ctx: usize,
}

impl LayerCache {
    /// Positions stored.
    pub fn len(&self) -> usize {
        self.k[0].len() / self.head_dim
    }

    /// Whether no position is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores the keys and values of tokens at positions `pos0..pos0 + n` (`k` and `v`:
    /// `n × kv_heads·head_dim`, row-major). Positions from `pos0 + n` on are forgotten.
    pub fn store(&mut self, pos0: usize, k: &[f32], v: &[f32]) -> Result<(), RuntimeError> {
        let n = k.len() / self.kv_dim;
        if k.len() != v.len() || !k.len().is_multiple_of(self.kv_dim) {
            return Err(RuntimeError::new(format!(
                "kv cache: {} keys and {} values are not whole positions of {}",
                k.len(),
                v.len(),
                self.kv_dim
            )));
        }
        if pos0 > self.len() || pos0 + n > self.n_ctx {
            return Err(RuntimeError::new(format!(
                "kv cache: positions {pos0}..{} do not follow the {} cached positions within the context of {}",
                pos0 + n,
                self.len(),
                self.n_ctx
            )));
        }
        let hd = self.head_dim;
        let end = (pos0 + n) * hd;
        let max = self.n_ctx * hd;
        for (heads, src) in [(&mut self.k, k), (&mut self.v, v)] {
            for rows in heads.iter_mut() {
                rows.truncate(pos0 * hd);
                rows.ensure(end, max)?;
            }
            // one head row at a time: a q8_0 / q4_0 row is whole blocks by construction
            for (i, row) in src.chunks_exact(hd).enumerate() {
                let (p, h) = (pos0 + i / self.kv_heads, i % self.kv_heads);
                heads[h].write(p * hd, row);
            }
        }
        Ok(())
    }

    /// The keys of kv head `head` at positions `0..n`, as stored (for attention's kernels).
    pub fn k_rows(&self, head: usize, n: usize) -> HeadRows<'_> {
        self.k[head].head_rows(n * self.head_dim)
    }

    /// The values of kv head `head` at positions `0..n`, as stored.
    pub fn v_rows(&self, head: usize, n: usize) -> HeadRows<'_> {
        self.v[head].head_rows(n * self.head_dim)
    }

    /// Benchmarks only: fills positions `0..n` (forgetting any others) with synthetic keys
    /// and values instead of a model's, without running the model: deterministic
    /// pseudo-random values from `seed`, uniform in ±1 for keys and ±0.5 for values (the
    /// magnitudes of real post-RoPE keys and of values), stored in the cache's type. Reading
    /// them costs what reading a model's costs, so the speed of tokens after them is the same.
    pub fn fill_synthetic(&mut self, n: usize, seed: u64) -> Result<(), RuntimeError> {
        if n > self.n_ctx {
            return Err(RuntimeError::new(format!(
                "kv cache: {n} positions exceed the context of {}",
                self.n_ctx
            )));
        }
        let hd = self.head_dim;
        let mut state = seed;
        let mut next = move || {
            // splitmix64 → uniform in [-1, 1)
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let mut row = vec![0f32; hd];
        for (heads, amp) in [(&mut self.k, 1.0f32), (&mut self.v, 0.5)] {
            for rows in heads.iter_mut() {
                rows.truncate(0);
                rows.ensure(n * hd, self.n_ctx * hd)?;
                for p in 0..n {
                    row.iter_mut().for_each(|x| *x = amp * next());
                    rows.write(p * hd, &row);
                }
            }
        }
        Ok(())
    }

    /// The keys of kv head `head` at positions `0..n` as f32 (`out`: `n × head_dim`).
    pub fn read_k(&self, head: usize, n: usize, out: &mut [f32]) {
        Self::read(&self.k, self.head_dim, head, n, out);
    }

    /// The values of kv head `head` at positions `0..n` as f32 (`out`: `n × head_dim`).
    pub fn read_v(&self, head: usize, n: usize, out: &mut [f32]) {
        Self::read(&self.v, self.head_dim, head, n, out);
    }

    fn read(rows: &[Rows], hd: usize, head: usize, n: usize, out: &mut [f32]) {
        for (p, dst) in out.chunks_exact_mut(hd).take(n).enumerate() {
            rows[head].read(p * hd, dst);
        }
    }

    /// Number of kv heads.
    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    fn truncate(&mut self, n: usize) {
        for rows in self.k.iter_mut().chain(&mut self.v) {
            rows.truncate(n * self.head_dim);
        }
    }

    fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(Rows::bytes).sum()
    }
}

/// The KV cache of a stage: one [`LayerCache`] per layer of the stage.
#[derive(Clone, Debug)]
pub struct KvCache {
    ty: KvTypes,
    n_ctx: usize,
    layers: Vec<LayerCache>,
}

impl KvCache {
    /// An empty cache of `n_layers` layers for `n_ctx` positions of `kv_heads × head_dim`.
    pub fn new(
        ty: KvTypes,
        n_layers: usize,
        n_ctx: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<KvCache, RuntimeError> {
        if head_dim == 0 || kv_heads == 0 {
            return Err(RuntimeError::new("kv cache: empty heads"));
        }
        ty.k.check_head_dim(head_dim)?;
        ty.v.check_head_dim(head_dim)?;
        let layer = LayerCache {
            k: vec![Rows::new_keys(ty.k, head_dim); kv_heads],
            v: vec![Rows::new_values(ty.v, head_dim); kv_heads],
            kv_dim: kv_heads * head_dim,
            head_dim,
            kv_heads,
            n_ctx,
        };
        Ok(KvCache {
            ty,
            n_ctx,
            layers: vec![layer; n_layers],
        })
    }

    /// The element types of keys and values.
    pub fn cache_type(&self) -> KvTypes {
        self.ty
    }

    /// Positions the cache can hold.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The cache of the stage's `i`-th layer.
    pub fn layer(&self, i: usize) -> &LayerCache {
        &self.layers[i]
    }

    /// The cache of the stage's `i`-th layer, to store into.
    pub fn layer_mut(&mut self, i: usize) -> &mut LayerCache {
        &mut self.layers[i]
    }

    /// Benchmarks only: every layer holds `n` positions of synthetic keys and values (see
    /// [`LayerCache::fill_synthetic`]; layer `i` seeded with `seed + i`).
    ///
    /// Before allocating, the bytes still needed are compared with what the machine can back
    /// ([`memory_available`]): Linux lets a process reserve far more than RAM + swap and
    /// kills it when the pages are touched, so a depth that cannot fit is refused here with
    /// an error instead.
    pub fn fill_synthetic(&mut self, n: usize, seed: u64) -> Result<(), RuntimeError> {
        let per_position: usize = self
            .layers
            .iter()
            .map(|l| l.kv_heads * self.ty.row_bytes(l.head_dim))
            .sum();
        check_fits(
            Some(per_position.saturating_mul(n).saturating_sub(self.bytes())),
            n,
        )?;
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.fill_synthetic(n, seed.wrapping_add(i as u64))?;
        }
        Ok(())
    }

    /// Forgets positions from `n` on.
    pub fn truncate(&mut self, n: usize) {
        for l in &mut self.layers {
            l.truncate(n);
        }
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::bytes).sum()
    }
}

/// An error unless `need` more bytes of cache, for `n` positions, fit in what this machine
/// can still back ([`memory_available`]; `None` for `need`: more than `usize` holds). Linux
/// lets a process reserve far more than RAM + swap and kills it when the pages are touched,
/// so a size that cannot fit is refused before it is allocated. Where the memory is not
/// known, any representable size passes.
pub fn check_fits(need: Option<usize>, n: usize) -> Result<(), RuntimeError> {
    let avail = memory_available();
    match (need, avail) {
        (Some(need), Some(avail)) if need as u64 <= avail => Ok(()),
        (Some(_), None) => Ok(()),
        (need, avail) => Err(RuntimeError::new(format!(
            "kv cache: cannot allocate {} bytes for {n} positions, so a cache of {n} positions \
             does not fit: this machine has {} bytes available (MemAvailable + SwapFree in \
             /proc/meminfo)",
            need.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string()),
            avail.map_or_else(|| "an unknown number of".to_string(), |b| b.to_string()),
        ))),
    }
}

/// Bytes this machine can still back with RAM or swap (Linux: `MemAvailable` + `SwapFree` of
/// `/proc/meminfo`); `None` where that is not known.
pub fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        kib.checked_mul(1024)
    };
    let avail = field("MemAvailable:")?;
    Some(avail.saturating_add(field("SwapFree:").unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_reads_each_type() {
        let (heads, hd) = (2, 32);
        for ty in CacheType::ALL {
            let mut c = KvCache::new(ty.into(), 1, 8, heads, hd).unwrap();
            let k: Vec<f32> = (0..3 * heads * hd)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let v: Vec<f32> = k.iter().map(|x| -2.0 * x).collect();
            c.layer_mut(0).store(0, &k, &v).unwrap();
            assert_eq!(c.layer(0).len(), 3);
            let tol = match ty {
                CacheType::F32 => 0.0,
                CacheType::F16 => 1e-3,
                CacheType::Q8_0 => 2.0 / 127.0,
                // the step is max/8: 1/8 of the block's largest magnitude (≤ 1)
                CacheType::Q4_0 => 1.0 / 8.0,
            };
            let mut out = vec![0f32; 3 * hd];
            for h in 0..heads {
                c.layer(0).read_k(h, 3, &mut out);
                for p in 0..3 {
                    for d in 0..hd {
                        let want = k[p * heads * hd + h * hd + d];
                        assert!((out[p * hd + d] - want).abs() <= tol, "{ty} k");
                    }
                }
                c.layer(0).read_v(h, 3, &mut out);
                for p in 0..3 {
                    for d in 0..hd {
                        let want = v[p * heads * hd + h * hd + d];
                        assert!((out[p * hd + d] - want).abs() <= 2.0 * tol, "{ty} v");
                    }
                }
            }
            // overwrite from position 1 on: the cache now holds 2 positions
            c.layer_mut(0)
                .store(1, &k[..heads * hd], &v[..heads * hd])
                .unwrap();
            assert_eq!(c.layer(0).len(), 2);
            // a gap and a position past n_ctx are errors
            assert!(c.layer_mut(0).store(5, &k, &v).is_err());
            assert!(c.layer_mut(0).store(2, &k[..0], &v[..0]).is_ok());
            c.truncate(0);
            assert!(c.layer(0).is_empty());
        }
    }

    #[test]
    fn head_rows_are_each_heads_positions_in_order() {
        let (heads, hd) = (3, 32);
        for ty in CacheType::ALL {
            let mut c = KvCache::new(ty.into(), 2, 8, heads, hd).unwrap();
            let k: Vec<f32> = (0..5 * heads * hd)
                .map(|i| (i as f32 * 0.1).cos())
                .collect();
            c.layer_mut(0).store(0, &k, &k).unwrap();
            let mut want = vec![0f32; 5 * hd];
            let mut got = vec![0f32; hd];
            for h in 0..heads {
                c.layer(0).read_k(h, 5, &mut want);
                let rows = c.layer(0).k_rows(h, 5);
                for p in 0..5 {
                    match rows {
                        HeadRows::F32(r) => got.copy_from_slice(&r[p * hd..(p + 1) * hd]),
                        HeadRows::F16(r) => {
                            for (g, x) in got.iter_mut().zip(&r[p * hd..(p + 1) * hd]) {
                                *g = x.to_f32();
                            }
                        }
                        HeadRows::Q8_0(r) => q8_0::dequantize_row(&r[p..p + 1], &mut got),
                        HeadRows::Q4_0x8(r) => r.read(p, hd, &mut got),
                        HeadRows::Q4_0Columns(r) => r.read(p, &mut got),
                    }
                    assert_eq!(
                        &got[..],
                        &want[p * hd..(p + 1) * hd],
                        "{ty} head {h} pos {p}"
                    );
                }
            }
            // the synthetic fill: n positions in every layer, values within ±1 (keys), ±0.5
            c.fill_synthetic(6, 1).unwrap();
            for l in 0..2 {
                assert_eq!(c.layer(l).len(), 6);
                let mut v = vec![0f32; 6 * hd];
                c.layer(l).read_k(2, 6, &mut v);
                assert!(v.iter().all(|x| x.abs() <= 1.0) && v.iter().any(|&x| x != 0.0));
                c.layer(l).read_v(2, 6, &mut v);
                assert!(v.iter().all(|x| x.abs() <= 0.51));
            }
            assert!(c.fill_synthetic(9, 1).is_err());
        }
    }

    #[test]
    fn block_types_need_whole_blocks() {
        for ty in [CacheType::Q8_0, CacheType::Q4_0] {
            let e = KvCache::new(ty.into(), 1, 8, 4, 16).unwrap_err();
            assert!(e.to_string().contains(ty.name()), "{e}");
            // keys or values alone
            let e = KvCache::new(
                KvTypes {
                    k: CacheType::F16,
                    v: ty,
                },
                1,
                8,
                4,
                16,
            )
            .unwrap_err();
            assert!(e.to_string().contains(ty.name()), "{e}");
            let e = KvCache::new(
                KvTypes {
                    k: ty,
                    v: CacheType::F32,
                },
                1,
                8,
                4,
                16,
            )
            .unwrap_err();
            assert!(e.to_string().contains(ty.name()), "{e}");
        }
        assert!(KvCache::new(CacheType::F16.into(), 1, 8, 4, 16).is_ok());
    }

    /// Keys and values of different types are stored, read and sized each in its own type.
    #[test]
    fn keys_and_values_may_differ_in_type() {
        let (heads, hd) = (2, 64);
        let ty = KvTypes {
            k: CacheType::Q8_0,
            v: CacheType::Q4_0,
        };
        assert_eq!(ty.to_string(), "k q8_0, v q4_0");
        assert_eq!(KvTypes::from(CacheType::F16).to_string(), "f16");
        assert_eq!(ty.row_bytes(hd), 2 * 34 + 2 * 18);
        let mut c = KvCache::new(ty, 1, 64, heads, hd).unwrap();
        assert_eq!(c.cache_type(), ty);
        // 33 positions: q4_0 values of positions 0..32 quantized, position 32 still f32
        let n = 33;
        let k: Vec<f32> = (0..n * heads * hd)
            .map(|i| (i as f32 * 0.3).sin())
            .collect();
        c.layer_mut(0).store(0, &k, &k).unwrap();
        assert!(matches!(c.layer(0).k_rows(1, n), HeadRows::Q8_0(r) if r.len() == 2 * n));
        assert!(matches!(c.layer(0).v_rows(1, n), HeadRows::Q4_0Columns(r) if r.len() == n));
        let (mut a, mut b) = (vec![0f32; n * hd], vec![0f32; n * hd]);
        c.layer(0).read_k(1, n, &mut a);
        c.layer(0).read_v(1, n, &mut b);
        // position p of head 1
        let err = |x: &[f32], p: usize| -> f32 {
            x[p * hd..(p + 1) * hd]
                .iter()
                .zip(&k[p * heads * hd + hd..])
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max)
        };
        for p in 0..32 {
            assert!(
                err(&a, p) <= 1.0 / 127.0 && err(&b, p) <= 1.0 / 8.0,
                "{} {}",
                err(&a, p),
                err(&b, p)
            );
            assert!(
                err(&b, p) > err(&a, p),
                "values are stored coarser than keys"
            );
        }
        assert_eq!(
            err(&b, 32),
            0.0,
            "the last values, not yet 32, are kept as f32"
        );
        c.fill_synthetic(64, 7).unwrap();
        // q8_0 keys 34 B + q4_0 values 18 B per block of 32, 2 heads, 64 positions; and the
        // values' f32 rows of the last positions (room for 32 per head)
        assert_eq!(
            c.bytes(),
            64 * heads * (2 * 34 + 2 * 18) + heads * 32 * hd * 4
        );
    }

    /// Q4_0 keys are stored eight positions to a group, one position at a time as decode
    /// writes them: each position reads back as the Q4_0 row the quantizer makes of it, from
    /// any first position (within a group too), after a truncation into a group and new
    /// positions written over the forgotten ones; a partly filled group takes a whole group's
    /// bytes.
    #[test]
    fn q4_0_keys_are_stored_eight_to_a_group() {
        let (heads, hd, n) = (2, 64, 19);
        let mut c = KvCache::new(CacheType::Q4_0.into(), 1, 32, heads, hd).unwrap();
        let kv = heads * hd;
        let first: Vec<f32> = (0..n * kv).map(|i| (i as f32 * 0.29).sin()).collect();
        let second: Vec<f32> = (0..n * kv).map(|i| (i as f32 * 0.71).cos()).collect();
        // the Q4_0 row of position p, head h, dequantized
        let want = |k: &[f32], p: usize, h: usize| {
            let mut blocks = vec![bytemuck::Zeroable::zeroed(); hd / QK];
            q4_0::quantize_row(&k[p * kv + h * hd..][..hd], &mut blocks);
            let mut out = vec![0f32; hd];
            q4_0::dequantize_row(&blocks, &mut out);
            out
        };
        for p in 0..n {
            let at = p * kv..(p + 1) * kv;
            c.layer_mut(0)
                .store(p, &first[at.clone()], &first[at])
                .unwrap();
        }
        // forget positions 11.. (within the second group), write new ones from there
        c.truncate(11);
        for p in 11..n {
            let at = p * kv..(p + 1) * kv;
            c.layer_mut(0)
                .store(p, &second[at.clone()], &second[at])
                .unwrap();
        }
        let expected = |p: usize, h: usize| {
            if p < 11 {
                want(&first, p, h)
            } else {
                want(&second, p, h)
            }
        };
        let mut got = vec![0f32; hd];
        for h in 0..heads {
            let HeadRows::Q4_0x8(all) = c.layer(0).k_rows(h, n) else {
                panic!("q4_0 keys are stored eight to a group");
            };
            assert_eq!((all.rows, all.skip), (n, 0));
            assert_eq!(
                all.groups.len(),
                3 * 8 * hd / QK * 18,
                "three groups for 19 rows"
            );
            for from in [0, 3, 8, 13] {
                let HeadRows::Q4_0x8(r) = HeadRows::Q4_0x8(all).rows(from..n, hd) else {
                    unreachable!()
                };
                assert_eq!((r.rows, r.skip), (n - from, from % 8));
                for j in 0..r.rows {
                    r.read(j, hd, &mut got);
                    assert_eq!(got, expected(from + j, h), "head {h}, from {from}, row {j}");
                }
            }
            let mut all_rows = vec![0f32; n * hd];
            c.layer(0).read_k(h, n, &mut all_rows);
            for p in 0..n {
                assert_eq!(
                    all_rows[p * hd..(p + 1) * hd],
                    expected(p, h)[..],
                    "read_k {p}"
                );
            }
            // values are stored by dimension
            assert!(matches!(c.layer(0).v_rows(h, n), HeadRows::Q4_0Columns(_)));
        }
    }

    #[test]
    fn cache_types_parse_by_name() {
        for ty in CacheType::ALL {
            assert_eq!(ty.name().parse::<CacheType>().unwrap(), ty);
            assert_eq!(ty.name().to_uppercase().parse::<CacheType>().unwrap(), ty);
        }
        assert_eq!(CacheType::default(), CacheType::F16);
        let e = "q4_1".parse::<CacheType>().unwrap_err().to_string();
        assert!(
            e.contains("q4_1") && e.contains("q4_0") && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn impossible_sizes_are_errors_not_aborts() {
        let mut c = KvCache::new(CacheType::F16.into(), 1, 1 << 50, 2, 32).unwrap();
        let e = c.fill_synthetic(1 << 50, 1).unwrap_err();
        assert!(e.to_string().contains("cannot allocate"), "{e}");
    }

    /// A depth that Linux would let us reserve (overcommit) but not back is refused before
    /// anything is allocated, instead of ending in the OOM killer.
    #[test]
    fn depth_beyond_memory_is_refused_before_allocating() {
        #[cfg(target_os = "linux")]
        let avail = memory_available().expect("/proc/meminfo is readable on Linux");
        #[cfg(not(target_os = "linux"))]
        let Some(avail) = memory_available() else {
            return;
        };
        // f32, one layer, one head of 128: 1 KiB per position (K and V)
        let n = usize::try_from(avail / 1024 * 2 + 1).unwrap();
        let mut c = KvCache::new(CacheType::F32.into(), 1, n, 1, 128).unwrap();
        let e = c.fill_synthetic(n, 1).unwrap_err();
        assert!(e.to_string().contains("bytes available"), "{e}");
        assert_eq!(c.bytes(), 0, "nothing was allocated");
        // a small depth still works
        let mut c = KvCache::new(CacheType::F32.into(), 1, 64, 1, 128).unwrap();
        c.fill_synthetic(64, 1).unwrap();
        assert_eq!(c.bytes(), 64 * 1024);
    }
}
