//! An XVERSE model loaded from a GGUF file: hyperparameters and typed views of every weight, in
//! the file's memory map or (after [`Model::repack`]) in copies of it in 2 MiB pages.
//!
//! [`Model::load`] opens the file with the foundation's reader (which validates every offset),
//! reads the hyperparameters ([`Hparams::from_gguf`]: our keys, llama.cpp's defaults where its
//! converter leaves one out), and checks that every tensor the forward pass needs is present,
//! has a type we can dequantize and has the shape the hyperparameters imply (ggml order,
//! `ne0` first). Any problem is one line naming the file and the tensor.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;
use xverse_quant::kernels::packed;

use xverse_quant::gguf::{Gguf, TensorInfo};
use xverse_quant::GgmlType;

use crate::error::RuntimeError;
use crate::hparams::Hparams;

/// Default `tokenizer.ggml.bos_token_id` of XVERSE (`<|startoftext|>`).
pub const DEFAULT_BOS: u32 = 2;
/// Default `tokenizer.ggml.eos_token_id` of XVERSE (`<|endoftext|>`).
pub const DEFAULT_EOS: u32 = 3;

/// A weight tensor: its type, its shape as rows of `row_len` elements, and its bytes
/// (borrowed from the file's map, or from the model's copy of it in 2 MiB pages after
/// [`Model::repack`]).
#[derive(Clone, Copy, Debug)]
pub struct Weight<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    /// Elements per row (`ne0`).
    pub row_len: usize,
    /// Rows (the product of the other dimensions).
    pub n_rows: usize,
    /// Bytes per row.
    pub row_bytes: usize,
    /// All the tensor's bytes (`n_rows * row_bytes`), in the file's layout: the file's map, or
    /// a copy of it where [`Model::repack`] copied the matrix without changing its layout.
    pub data: &'a [u8],
    /// The first `n_rows / 8 * 8` rows of a Q4_0, Q4_K, Q6_K or Q8_0 weight repacked eight at a time for
    /// the CPU kernels ([`xverse_quant::kernels::packed`]; see [`Model::repack`]), when they
    /// were.
    pub packed: Option<&'a [u8]>,
    /// Whether the weight is repacked, or will be by the background thread
    /// ([`Model::repack_in_background`]): its rows in the file's layout then go through the
    /// row kernel in the packed order ([`xverse_quant::kernels::packed::rows_for`]), so its
    /// numbers do not depend on whether the repacking is done.
    pub repacked: bool,
}

impl<'a> Weight<'a> {
    /// The bytes of row `i` (empty when there is no such row).
    pub fn row(&self, i: usize) -> &'a [u8] {
        let start = i.saturating_mul(self.row_bytes);
        self.data
            .get(start..start.saturating_add(self.row_bytes))
            .unwrap_or(&[])
    }

    /// Dequantizes row `i` into `out` (`out.len() == row_len`).
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) -> Result<(), RuntimeError> {
        if i >= self.n_rows {
            return Err(RuntimeError::new(format!(
                "{}: row {i} does not exist ({} rows)",
                self.name, self.n_rows
            )));
        }
        xverse_quant::blocks::dequantize_row(self.ty, self.row(i), out)
            .map_err(|e| RuntimeError::new(format!("{}: {e}", self.name)))
    }
}

/// Bytes in a GiB, for messages.
const GIB: f64 = (1u64 << 30) as f64;

/// Index of a tensor in [`Gguf::tensors`].
type Idx = usize;

/// The tensors of one decoder layer (indices into the file's tensor list).
#[derive(Clone, Debug)]
struct LayerIdx {
    attn_norm: Idx,
    attn_q: Idx,
    attn_k: Idx,
    attn_v: Idx,
    attn_output: Idx,
    ffn_norm: Idx,
    ffn_gate: Idx,
    ffn_up: Idx,
    ffn_down: Idx,
}

/// The weights of one decoder layer, viewed in place.
#[derive(Clone, Copy, Debug)]
pub struct LayerWeights<'a> {
    pub attn_norm: Weight<'a>,
    pub attn_q: Weight<'a>,
    pub attn_k: Weight<'a>,
    pub attn_v: Weight<'a>,
    pub attn_output: Weight<'a>,
    pub ffn_norm: Weight<'a>,
    pub ffn_gate: Weight<'a>,
    pub ffn_up: Weight<'a>,
    pub ffn_down: Weight<'a>,
}

/// A loaded XVERSE model: hyperparameters plus the file whose map holds the weights.
#[derive(Debug)]
pub struct Model {
    pub hparams: Hparams,
    gguf: Arc<Gguf>,
    token_embd: Idx,
    output_norm: Idx,
    output: Idx,
    layers: Vec<LayerIdx>,
    bos: u32,
    eos: u32,
    /// The repacked matrices ([`Model::repack`]): one anonymous map, and each tensor's byte
    /// range in it, by tensor index.
    packed: Option<Pages>,
    packed_at: HashMap<Idx, std::ops::Range<usize>>,
    /// The matrices copied as they are, each in use once its copy is complete.
    copies: Arc<Copies>,
    /// The thread making `copies` after [`Model::repack_in_background`].
    copier: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Whether [`Model::repack`] or [`Model::repack_in_background`] ran.
    repacked: bool,
    /// The bytes it copies, made or being made.
    repack_bytes: usize,
    /// What [`Model::repack`] left in the file's map for want of memory, where it did.
    repack_note: Option<String>,
    /// Tests: while set, the background thread waits before its first map, so the tokens
    /// evaluated meanwhile surely take every matrix it makes from the file.
    #[cfg(test)]
    hold_copies: Arc<std::sync::atomic::AtomicBool>,
}

/// Bytes of a transparent huge page (x86-64, and aarch64 with 4 KiB pages).
const HUGE_PAGE: usize = 2 << 20;

/// `len` bytes of an anonymous map that start on a [`HUGE_PAGE`] boundary and ask for huge
/// pages, so the kernel can back all of them with 2 MiB pages (on kernels that do not align
/// large anonymous maps themselves, the map is made one huge page longer).
#[derive(Debug)]
struct Pages {
    map: memmap2::MmapMut,
    start: usize,
    len: usize,
}

impl Pages {
    fn new(len: usize) -> Option<Pages> {
        let total = len.checked_add(HUGE_PAGE)?;
        let map = memmap2::MmapMut::map_anon(total).ok()?;
        let start = map.as_ptr().align_offset(HUGE_PAGE).min(HUGE_PAGE);
        // Huge pages for the whole 2 MiB pages of the data, small ones for the rest: a last
        // huge page partly used would be resident whole (with a map per matrix, ~1 MiB
        // wasted per matrix: +110 MB peak RSS for bench-1b Q8_0 repacked in the background).
        #[cfg(target_os = "linux")]
        {
            let whole = len / HUGE_PAGE * HUGE_PAGE;
            let _ = map.advise_range(memmap2::Advice::HugePage, start, whole);
            let _ = map.advise_range(
                memmap2::Advice::NoHugePage,
                start + whole,
                total - start - whole,
            );
        }
        Some(Pages { map, start, len })
    }

    fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map[self.start..self.start + self.len]
    }
}

/// The matrices that [`Model::repack`] copies or repacks into maps of their own, by tensor
/// index, each set once it is complete: the ones copied as they are (every matrix of a type
/// without a [`packed`] layout) and the ones repacked whose rows give the same numbers
/// repacked or not ([`packed::exact_rows`]: Q8_0, Q4_K, Q6_K). Shared with the thread that
/// makes them.
#[derive(Debug, Default)]
struct Copies {
    /// In the order they are made (the forward pass's).
    order: Vec<Job>,
    slots: HashMap<Idx, Slot>,
    /// Set when the model is dropped: the thread stops at the next MiB.
    stop: AtomicBool,
    /// [`Model::hold_copies`] (tests).
    #[cfg(test)]
    hold: Arc<AtomicBool>,
}

/// One matrix for [`Copies`] to make: `bytes` bytes of the map, from the tensor's first `src`
/// bytes, copied as they are or repacked in groups of eight rows (`pack`: the layout, the row
/// length and the bytes of eight rows).
#[derive(Clone, Copy, Debug)]
struct Job {
    idx: Idx,
    bytes: usize,
    src: usize,
    pack: Option<(packed::Format, usize, usize)>,
}

/// Where a [`Job`]'s map is published.
#[derive(Debug, Default)]
struct Slot {
    pages: OnceLock<Pages>,
    /// The map holds the matrix repacked (else copied as it is).
    packs: bool,
}

impl Copies {
    /// Makes the maps in order, each from the file's bytes, publishes it and drops the file's
    /// pages of it; on the current rayon pool when `parallel`, else on this thread alone.
    /// Stops early when `stop` is set or a map cannot be made.
    fn make(&self, gguf: &Gguf, parallel: bool) {
        const CHUNK: usize = 1 << 20;
        #[cfg(test)]
        while self.hold.load(Ordering::Acquire) && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let src_of = |job: &Job| &gguf.view(&gguf.tensors()[job.idx]).data[..job.src];
        for (k, job) in self.order.iter().enumerate() {
            // the previous map's file pages again: a token that took that matrix from the
            // file just before the map was published may have read some back in
            if let Some(prev) = k.checked_sub(1).map(|p| &self.order[p]) {
                gguf.release_pages(src_of(prev));
            }
            let src = src_of(job);
            let Some(mut pages) = Pages::new(job.bytes) else {
                return;
            };
            let out = pages.bytes_mut();
            let stopped = || self.stop.load(Ordering::Relaxed);
            let made = match (job.pack, parallel) {
                (None, true) => {
                    out.par_chunks_mut(CHUNK)
                        .zip(src.par_chunks(CHUNK))
                        .for_each(|(o, d)| o.copy_from_slice(d));
                    true
                }
                (None, false) => out.chunks_mut(CHUNK).zip(src.chunks(CHUNK)).all(|(o, d)| {
                    !stopped() && {
                        o.copy_from_slice(d);
                        true
                    }
                }),
                (Some((f, n, rows)), true) => pack_groups(f, n, src, rows, out),
                (Some((f, n, rows)), false) => {
                    let gb = job.bytes / (job.src / rows.max(1)).max(1);
                    // about a MiB of groups between looks at `stop`
                    let per = (CHUNK / rows.max(1)).max(1);
                    out.chunks_mut(gb * per)
                        .zip(src.chunks(rows * per))
                        .all(|(gs, rs)| {
                            !stopped()
                                && gs
                                    .chunks_mut(gb)
                                    .zip(rs.chunks(rows))
                                    .all(|(g, r)| (f.pack)(n, r, g))
                        })
                }
            };
            if !made {
                return;
            }
            if self.slots[&job.idx].pages.set(pages).is_ok() {
                gguf.release_pages(src);
            }
        }
        if let Some(last) = self.order.last() {
            gguf.release_pages(src_of(last));
        }
    }

    /// Bytes made so far.
    fn done(&self) -> usize {
        self.order
            .iter()
            .filter(|j| self.slots[&j.idx].pages.get().is_some())
            .map(|j| j.bytes)
            .sum()
    }
}

/// Whether [`Model::load`] repacks and copies the weights: yes where the packed kernels have a
/// SIMD path ([`packed::worthwhile`]) unless the environment says `XVERSE_REPACK=0` (or `off`, `no`,
/// `false`).
pub fn repack_by_default() -> bool {
    let off = std::env::var("XVERSE_REPACK").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "no" | "false"
        )
    });
    !off && packed::worthwhile()
}

impl Model {
    /// Opens and checks the GGUF file at `path` (memory-mapped), then, where
    /// [`repack_by_default`] says so, repacks its Q4_0, Q4_K, Q6_K and Q8_0 matrices and copies
    /// the others into 2 MiB pages, the copies and the layers' Q8_0 repacks on a thread of
    /// their own ([`Model::repack_in_background`]).
    pub fn load(path: &Path) -> Result<Model, RuntimeError> {
        Model::load_with(path, repack_by_default())
    }

    /// [`Model::load`], repacking or not as `repack` says (`--no-repack`): where it does, the
    /// Q4_0, Q4_K and Q6_K matrices and the output's Q8_0 are repacked before this returns, the
    /// layers' Q8_0 ones and the copies of the other matrices by a thread of their own
    /// ([`Model::repack_in_background`]).
    pub fn load_with(path: &Path, repack: bool) -> Result<Model, RuntimeError> {
        Model::from_gguf_with(Arc::new(Gguf::open(path)?), repack)
    }

    /// [`Model::from_gguf`], then repacked as [`Model::load_with`] does when `repack`.
    pub fn from_gguf_with(gguf: Arc<Gguf>, repack: bool) -> Result<Model, RuntimeError> {
        let mut model = Model::from_gguf(gguf)?;
        if repack {
            model.repack_in_background();
        }
        Ok(model)
    }

    /// Copies the matrices of the layers and the output into one anonymous map in 2 MiB pages
    /// and drops the copied pages of the file from memory ([`Gguf::release_pages`]), one
    /// tensor at a time, so the resident size stays about the file's:
    ///
    /// * Q4_0, Q4_K, Q6_K and Q8_0 matrices (their whole groups of eight rows; the last
    ///   `n_rows % 8` rows stay in the map) into the eight-row interleaved layouts of
    ///   [`packed`], whose kernels read each activation block once for eight rows (Q4_K's
    ///   layout is 2.8 % larger: its scales are stored one byte each);
    /// * every other matrix (F16, BF16, F32 and the other block types) as it is: the file's
    ///   pages are mostly 4 KiB ones, and decode streams the same rows ~20 % faster from 2 MiB
    ///   pages on the development machine (README, "Float weights in 2 MiB pages").
    ///
    /// Returns the bytes copied (0 when called again). What would not fit in the memory this
    /// machine has available is not copied, the plain copies first: [`Model::repack_note`]
    /// says so. The embedding table is never copied (it is read one row at a time).
    ///
    /// Each matrix is used from the moment its map is complete, and its numbers do not depend
    /// on whether it was: a copy holds the same bytes and goes through the same kernels, and a
    /// type whose row kernel sums in its packed layout's order ([`packed::exact_rows`]: Q8_0,
    /// Q4_K, Q6_K) gives the same bits from its rows in the file's layout as repacked.
    pub fn repack(&mut self) -> usize {
        self.repack_within(crate::kv_cache::memory_available(), false)
    }

    /// [`Model::repack`], but the matrices copied as they are (F16, BF16, …) and the ones
    /// repacked whose rows give the same numbers either way (Q8_0, Q4_K, Q6_K) are made by a
    /// thread of its own after this returns, repackings first, each used from the moment it
    /// is complete; only the others (Q4_0, and an output matrix of those types: see
    /// `repack_within`) are repacked before this returns. The first tokens do not wait for
    /// the thread, and their results do not depend on it. Returns the bytes to copy.
    /// [`Model::wait_repacked`] waits for the thread; dropping the model stops it.
    pub fn repack_in_background(&mut self) -> usize {
        self.repack_within(crate::kv_cache::memory_available(), true)
    }

    /// Waits until the copies started by [`Model::repack_in_background`] are made.
    pub fn wait_repacked(&self) {
        let handle = self.copier.lock().map(|mut h| h.take()).unwrap_or(None);
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// [`Model::repack`] when at most `limit` bytes may be allocated (`None`: no limit known),
    /// the plain copies made on a thread of their own when `background`.
    fn repack_within(&mut self, limit: Option<u64>, background: bool) -> usize {
        if self.repacked {
            return 0;
        }
        self.repacked = true;
        // the forward pass's order: the layers, then the output
        let mut ids = Vec::new();
        for l in &self.layers {
            ids.extend([
                l.attn_q,
                l.attn_k,
                l.attn_v,
                l.attn_output,
                l.ffn_gate,
                l.ffn_up,
                l.ffn_down,
            ]);
        }
        ids.push(self.output);
        // the repacked matrices: into one map here (`at`), or each into a map of its own by
        // `Copies` where their rows give the same numbers before (`packs`); the plain copies
        // by `Copies`; each tensor once
        let mut at = HashMap::new();
        let mut packs: Vec<Job> = Vec::new();
        let mut plain: Vec<Job> = Vec::new();
        let mut total = 0;
        for i in ids {
            if at.contains_key(&i) || packs.iter().chain(&plain).any(|j| j.idx == i) {
                continue;
            }
            let w = self.weight(i);
            if let (Some(n), Some(f)) = (packed_len(&w), packed::format(w.ty)) {
                // The output matrix is repacked here even so: it is the largest (a sixth of
                // bench-1b), and the first tokens read all of it from the file, so in the
                // background its file pages and its new map would be resident together
                // (peak RSS 1.49 GB against 1.15 for bench-1b Q8_0).
                if packed::exact_rows(w.ty).is_some() && i != self.output {
                    let rows = packed::ROWS * w.row_bytes;
                    let src = w.n_rows / packed::ROWS * rows;
                    let pack = Some((f, w.row_len, rows));
                    packs.push(Job {
                        idx: i,
                        bytes: n,
                        src,
                        pack,
                    });
                } else {
                    at.insert(i, total..total + n);
                    total += n;
                }
            } else if let Some(n) = w.n_rows.checked_mul(w.row_bytes) {
                if n > 0 && w.data.len() >= n {
                    plain.push(Job {
                        idx: i,
                        bytes: n,
                        src: n,
                        pack: None,
                    });
                }
            }
        }
        let sum = |js: &[Job]| js.iter().map(|j| j.bytes).sum::<usize>();
        let (packs_total, plain_total) = (sum(&packs), sum(&plain));
        let repack_total = total + packs_total;
        // what does not fit is left in the map: the plain copies first (they gain the least)
        let fits = |n: usize| limit.is_none_or(|l| n as u64 <= l);
        let gib = |n: usize| n as f64 / GIB;
        let avail = limit.unwrap_or(0) as f64 / GIB;
        if !fits(repack_total + plain_total) && plain_total > 0 {
            self.repack_note = Some(format!(
                "{:.2} GiB of weights left in the file's map: {:.2} GiB to copy in all, \
                 {avail:.2} GiB of memory available",
                gib(plain_total),
                gib(repack_total + plain_total)
            ));
            plain.clear();
        }
        if !fits(repack_total) && repack_total > 0 {
            self.repack_note = Some(format!(
                "weights left in the file's map: repacking them would take {:.2} GiB, and \
                 {avail:.2} GiB of memory is available",
                gib(repack_total)
            ));
            at.clear();
            packs.clear();
            total = 0;
        }
        if total > 0 {
            // One anonymous map for all of them, in 2 MiB pages where the kernel allows
            // (transparent huge pages in `madvise` mode): this VM takes ~3 µs per 4 KiB page
            // fault, ~0.35 s for the 113k pages of a 1B Q4_0 model, against a few ms in
            // huge pages.
            let Some(mut buf) = Pages::new(total) else {
                return 0;
            };
            let mut order: Vec<(Idx, std::ops::Range<usize>)> =
                at.iter().map(|(&i, r)| (i, r.clone())).collect();
            order.sort_by_key(|(_, r)| r.start);
            for (i, r) in &order {
                let w = self.weight(*i);
                if !repack_weight(&w, &mut buf.bytes_mut()[r.clone()]) {
                    return 0;
                }
                let groups = w.n_rows / packed::ROWS;
                self.gguf
                    .release_pages(&w.data[..groups * packed::ROWS * w.row_bytes]);
            }
            self.packed = Some(buf);
            self.packed_at = at;
        }
        // the repackings whose results do not depend on them first: the sooner they are
        // done, the sooner decode reads 2 MiB pages
        let jobs: Vec<Job> = packs.into_iter().chain(plain).collect();
        let later = sum(&jobs);
        self.repack_bytes = total + later;
        if jobs.is_empty() {
            return total;
        }
        let copies = Arc::new(Copies {
            slots: jobs
                .iter()
                .map(|j| {
                    let slot = Slot {
                        pages: OnceLock::new(),
                        packs: j.pack.is_some(),
                    };
                    (j.idx, slot)
                })
                .collect(),
            order: jobs,
            stop: AtomicBool::new(false),
            #[cfg(test)]
            hold: Arc::clone(&self.hold_copies),
        });
        self.copies = Arc::clone(&copies);
        let mut spawned = false;
        if background {
            let gguf = Arc::clone(&self.gguf);
            let c = Arc::clone(&copies);
            if let Ok(h) = std::thread::Builder::new()
                .name("xverse-copy".into())
                .spawn(move || c.make(&gguf, false))
            {
                if let Ok(mut slot) = self.copier.lock() {
                    *slot = Some(h);
                }
                spawned = true;
            }
        }
        if !spawned {
            copies.make(&self.gguf, true);
        }
        total + later
    }

    /// The bytes [`Model::repack`] or [`Model::repack_in_background`] copies, made or still
    /// being made ([`Model::packed_bytes`] counts those made).
    pub fn repack_bytes(&self) -> usize {
        self.repack_bytes
    }

    /// What [`Model::repack`] left in the file's map for want of memory, where it did.
    pub fn repack_note(&self) -> Option<&str> {
        self.repack_note.as_deref()
    }

    /// Checks an already opened file (also the way to load a file held in memory).
    pub fn from_gguf(gguf: Arc<Gguf>) -> Result<Model, RuntimeError> {
        let hparams = Hparams::from_gguf(&gguf)?;
        let file = gguf.name().to_string();
        let fail = |what: String| RuntimeError::new(format!("{file}: {what}"));
        let h = hparams.hidden as u64;
        let kv = hparams.kv_heads as u64 * hparams.head_dim as u64;
        let f = hparams.ffn as u64;
        let v = hparams.vocab as u64;
        if hparams.ffn == 0 {
            return Err(fail("feed_forward_length is 0".into()));
        }
        // llama.cpp asserts rope.dimension_count == head size for XVERSE; a smaller count is
        // accepted here and rotates only the first rope_dims dimensions, as ggml's rope does.

        let find = |name: &str, dims: &[u64]| -> Result<Idx, RuntimeError> {
            let Some(i) = gguf.tensors().iter().position(|t| t.name == name) else {
                return Err(fail(format!("tensor {name} is missing")));
            };
            check_tensor(&gguf.tensors()[i], dims).map_err(fail)?;
            Ok(i)
        };

        let token_embd = find("token_embd.weight", &[h, v])?;
        let mut layers = Vec::with_capacity(hparams.layers as usize);
        for l in 0..hparams.layers {
            let n = |t: &str| format!("blk.{l}.{t}.weight");
            layers.push(LayerIdx {
                attn_norm: find(&n("attn_norm"), &[h])?,
                attn_q: find(&n("attn_q"), &[h, h])?,
                attn_k: find(&n("attn_k"), &[h, kv])?,
                attn_v: find(&n("attn_v"), &[h, kv])?,
                attn_output: find(&n("attn_output"), &[h, h])?,
                ffn_norm: find(&n("ffn_norm"), &[h])?,
                ffn_gate: find(&n("ffn_gate"), &[h, f])?,
                ffn_up: find(&n("ffn_up"), &[h, f])?,
                ffn_down: find(&n("ffn_down"), &[f, h])?,
            });
        }
        let output_norm = find("output_norm.weight", &[h])?;
        let output = find("output.weight", &[h, v])?;

        // the vocabulary of the tokenizer, when the file has one, must be the embedding's
        if let Some(tokens) = gguf.get("tokenizer.ggml.tokens") {
            if let Some((_, list)) = tokens.as_array() {
                if list.len() as u64 != v {
                    return Err(fail(format!(
                        "tokenizer.ggml.tokens has {} tokens but token_embd.weight has {v} rows",
                        list.len()
                    )));
                }
            }
        }
        let token_id = |key: &str, default: u32| -> Result<u32, RuntimeError> {
            match gguf.get(key) {
                None => Ok(default),
                Some(_) => {
                    let id = gguf.get_u32(key)?;
                    if id as u64 >= v {
                        return Err(fail(format!(
                            "{key} is {id}, outside the vocabulary of {v}"
                        )));
                    }
                    Ok(id)
                }
            }
        };
        let bos = token_id("tokenizer.ggml.bos_token_id", DEFAULT_BOS)?;
        let eos = token_id("tokenizer.ggml.eos_token_id", DEFAULT_EOS)?;

        Ok(Model {
            hparams,
            gguf,
            token_embd,
            output_norm,
            output,
            layers,
            bos,
            eos,
            packed: None,
            packed_at: HashMap::new(),
            copies: Arc::default(),
            copier: Mutex::new(None),
            repacked: false,
            repack_bytes: 0,
            repack_note: None,
            #[cfg(test)]
            hold_copies: Arc::default(),
        })
    }

    /// Tests: while `hold` is set, the thread of [`Model::repack_in_background`] waits before
    /// its first map (dropping the model still stops it).
    #[cfg(test)]
    pub(crate) fn hold_copies(&self, hold: bool) {
        self.hold_copies.store(hold, Ordering::Release);
    }

    /// Bytes of the weights [`Model::repack`] has copied so far, repacked or as they are (0:
    /// none).
    pub fn packed_bytes(&self) -> usize {
        self.packed.as_ref().map_or(0, |p| p.len) + self.copies.done()
    }

    /// The file (metadata for the tokenizer, the tensor list).
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// A shared handle to the file.
    pub fn gguf_arc(&self) -> Arc<Gguf> {
        Arc::clone(&self.gguf)
    }

    /// `tokenizer.ggml.eos_token_id`, default 3.
    pub fn eos_token(&self) -> u32 {
        self.eos
    }

    /// `tokenizer.ggml.bos_token_id`, default 2.
    pub fn bos_token(&self) -> u32 {
        self.bos
    }

    /// Number of decoder layers.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    fn weight(&self, i: Idx) -> Weight<'_> {
        let info: &TensorInfo = &self.gguf.tensors()[i];
        let view = self.gguf.view(info);
        let packed = self
            .packed
            .as_ref()
            .zip(self.packed_at.get(&i))
            .map(|(p, r)| &p.bytes()[r.clone()]);
        let (copy, packed, repacked) = match self.copies.slots.get(&i) {
            Some(s) if s.packs => (None, s.pages.get().map(Pages::bytes), true),
            Some(s) => (s.pages.get(), packed, packed.is_some()),
            None => (None, packed, packed.is_some()),
        };
        let data = copy.map_or(view.data, Pages::bytes);
        Weight {
            name: &info.name,
            ty: info.ty,
            row_len: info.row_len() as usize,
            n_rows: info.n_rows() as usize,
            row_bytes: info.row_bytes() as usize,
            data,
            packed,
            repacked,
        }
    }

    /// `token_embd.weight`: one row of `hidden` per token.
    pub fn token_embd(&self) -> Weight<'_> {
        self.weight(self.token_embd)
    }

    /// `output_norm.weight`.
    pub fn output_norm(&self) -> Weight<'_> {
        self.weight(self.output_norm)
    }

    /// `output.weight`: one row of `hidden` per token of the vocabulary.
    pub fn output(&self) -> Weight<'_> {
        self.weight(self.output)
    }

    /// The weights of layer `l` (`l < n_layers()`; panics otherwise, an internal bug).
    pub fn layer(&self, l: usize) -> LayerWeights<'_> {
        let x = &self.layers[l];
        LayerWeights {
            attn_norm: self.weight(x.attn_norm),
            attn_q: self.weight(x.attn_q),
            attn_k: self.weight(x.attn_k),
            attn_v: self.weight(x.attn_v),
            attn_output: self.weight(x.attn_output),
            ffn_norm: self.weight(x.ffn_norm),
            ffn_gate: self.weight(x.ffn_gate),
            ffn_up: self.weight(x.ffn_up),
            ffn_down: self.weight(x.ffn_down),
        }
    }
}

impl Drop for Model {
    /// Stops the thread of [`Model::repack_in_background`] (at its next MiB) and waits for it.
    fn drop(&mut self) {
        self.copies.stop.store(true, Ordering::Relaxed);
        self.wait_repacked();
    }
}

/// Bytes of the whole groups of eight rows of a Q4_0, Q4_K, Q6_K or Q8_0 weight in its [`packed`] layout
/// (`None`: another type, fewer than eight rows, rows not whole blocks, or fewer bytes than
/// the shape's).
fn packed_len(w: &Weight<'_>) -> Option<usize> {
    let format = packed::format(w.ty)?;
    if w.n_rows < packed::ROWS {
        return None;
    }
    let gb = (format.group_bytes)(w.row_len)?;
    let groups = w.n_rows / packed::ROWS;
    (w.data.len() >= groups * packed::ROWS * w.row_bytes).then_some(groups * gb)
}

/// Packs the whole groups of eight rows of `w` into `out` ([`packed_len`] bytes), groups in
/// parallel on the current rayon pool; `false` when a length is wrong.
fn repack_weight(w: &Weight<'_>, out: &mut [u8]) -> bool {
    let (Some(n), Some(format)) = (packed_len(w), packed::format(w.ty)) else {
        return false;
    };
    if out.len() != n {
        return false;
    }
    let groups = w.n_rows / packed::ROWS;
    let src = packed::ROWS * w.row_bytes;
    pack_groups(format, w.row_len, &w.data[..groups * src], src, out)
}

/// Packs `src`, groups of eight rows of `n` weights (`rows` bytes each group), into `out`,
/// groups in parallel on the current rayon pool; `false` when a length is wrong.
fn pack_groups(format: packed::Format, n: usize, src: &[u8], rows: usize, out: &mut [u8]) -> bool {
    let groups = src.len() / rows.max(1);
    if groups == 0 || groups * rows != src.len() || !out.len().is_multiple_of(groups) {
        return false;
    }
    out.par_chunks_mut(out.len() / groups)
        .zip(src.par_chunks(rows))
        .all(|(g, r)| (format.pack)(n, r, g))
}

/// Checks a tensor's shape (`expected`, ggml order; trailing dimensions of 1 are ignored, as
/// llama.cpp does), its type and its row layout.
fn check_tensor(t: &TensorInfo, expected: &[u64]) -> Result<(), String> {
    let mut dims: Vec<u64> = t.dims.clone();
    while dims.len() > expected.len() && dims.last() == Some(&1) {
        dims.pop();
    }
    while dims.len() < expected.len() {
        dims.push(1);
    }
    if dims != expected {
        return Err(format!(
            "tensor {} has shape {:?}, expected {:?}",
            t.name, t.dims, expected
        ));
    }
    if t.row_bytes() == 0 {
        return Err(format!(
            "tensor {} has rows of {} elements, not a whole number of {} blocks of {}",
            t.name,
            t.row_len(),
            t.ty,
            t.ty.block_size()
        ));
    }
    if usize::try_from(t.n_bytes).is_err() {
        return Err(format!("tensor {} is too large for this machine", t.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use xverse_models::{tiny_gguf_bytes, TinySpec};
    use xverse_quant::gguf::{GgufWriter, TensorSpec, Value};

    /// Rewrites a GGUF held in memory: `meta` may replace a metadata value, `tensor` may drop
    /// a tensor (None) or change its dims (keeping its bytes when the size allows).
    fn rewrite(
        bytes: Vec<u8>,
        meta: impl Fn(&str, &Value) -> Value,
        tensor: impl Fn(&TensorInfo) -> Option<Vec<u64>>,
    ) -> Vec<u8> {
        let g = Gguf::from_bytes(bytes, "in.gguf").unwrap();
        let mut w = GgufWriter::new();
        for (k, v) in g.metadata() {
            if k != "general.alignment" {
                w.add_metadata(k.clone(), meta(k, v)).unwrap();
            }
        }
        let mut data: Vec<Vec<u8>> = Vec::new();
        for t in g.tensors() {
            let Some(dims) = tensor(t) else { continue };
            let n: u64 = dims.iter().product();
            let size = t.ty.bytes_for(n).unwrap() as usize;
            let mut d = g.view(t).data.to_vec();
            d.resize(size, 0);
            w.add_tensor(TensorSpec {
                name: t.name.clone(),
                ty: t.ty,
                dims,
            })
            .unwrap();
            data.push(d);
        }
        let slices: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        w.to_bytes(&slices).unwrap()
    }

    fn load(bytes: Vec<u8>) -> Result<Model, RuntimeError> {
        Model::from_gguf(Arc::new(Gguf::from_bytes(bytes, "m.gguf")?))
    }

    fn one_line(e: &RuntimeError) -> String {
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        s
    }

    #[test]
    fn loads_a_tiny_model_without_copy() {
        let spec = TinySpec {
            kv_heads: 2,
            ..TinySpec::default()
        };
        let m = load(tiny_gguf_bytes(&spec).unwrap()).unwrap();
        let hp = &m.hparams;
        assert_eq!((hp.hidden, hp.layers, hp.heads, hp.kv_heads), (64, 2, 4, 2));
        assert_eq!(
            (hp.vocab, hp.head_dim, hp.rope_freq_base),
            (512, 16, 10000.0)
        );
        assert_eq!((m.bos_token(), m.eos_token()), (2, 3));
        let l = m.layer(1);
        assert_eq!((l.attn_k.row_len, l.attn_k.n_rows), (64, 32));
        assert_eq!((l.ffn_down.row_len, l.ffn_down.n_rows), (172, 64));
        assert_eq!(l.ffn_down.ty, GgmlType::F32);
        // the views point into the file's bytes
        let base = m.gguf().as_bytes().as_ptr_range();
        assert!(base.contains(&m.output().data.as_ptr()));
        let e = m.token_embd();
        let mut row = vec![0f32; 64];
        e.dequantize_row(511, &mut row).unwrap();
        assert!(e.dequantize_row(512, &mut row).is_err());
    }

    /// A copy that would not fit in the memory available is not made: the weights stay in
    /// the map and the note says why; with room, they are copied.
    #[test]
    fn repack_that_does_not_fit_is_skipped() {
        let spec = TinySpec {
            ty: GgmlType::F16,
            ..TinySpec::default()
        };
        let mut m = load(tiny_gguf_bytes(&spec).unwrap()).unwrap();
        let q = m.layer(0).attn_q.data.as_ptr();
        assert_eq!(m.repack_within(Some(1000), false), 0);
        assert_eq!(m.packed_bytes(), 0);
        assert_eq!(m.layer(0).attn_q.data.as_ptr(), q);
        let note = m.repack_note().expect("a note").to_string();
        assert!(note.contains("left in the file's map"), "{note}");
        let mut m = load(tiny_gguf_bytes(&spec).unwrap()).unwrap();
        let q = m.layer(0).attn_q.data.as_ptr();
        let n = m.repack_within(Some(1 << 30), false);
        assert!(n > 0);
        assert_eq!(m.packed_bytes(), n);
        assert!(m.repack_note().is_none());
        assert_ne!(m.layer(0).attn_q.data.as_ptr(), q);
    }

    /// The copies made by a thread of their own are used once made, hold the file's bytes, and
    /// a model dropped while its thread copies stops it.
    #[test]
    fn copies_in_the_background() {
        let spec = TinySpec {
            ty: GgmlType::BF16,
            ..TinySpec::default()
        };
        let plain = load(tiny_gguf_bytes(&spec).unwrap()).unwrap();
        let mut m = load(tiny_gguf_bytes(&spec).unwrap()).unwrap();
        let q = m.layer(1).ffn_down.data.as_ptr();
        let n = m.repack_in_background();
        assert!(n > 0);
        assert_eq!(m.repack_in_background(), 0, "once");
        m.wait_repacked();
        assert_eq!(m.packed_bytes(), n);
        let (a, b) = (m.layer(1).ffn_down, plain.layer(1).ffn_down);
        assert_ne!(a.data.as_ptr(), q);
        assert_eq!(a.data, b.data);
        assert_eq!(m.output().data, plain.output().data);
        assert_eq!(
            a.data.as_ptr() as usize % HUGE_PAGE,
            0,
            "starts on a huge page"
        );
        for _ in 0..4 {
            let mut m = load(tiny_gguf_bytes(&spec).unwrap()).unwrap();
            m.repack_in_background();
            drop(m);
        }
    }

    #[test]
    fn llama_cpp_defaults_for_missing_keys() {
        // llama.cpp's converter writes no rope.freq_base, no file_type, no head_count_kv
        let bytes = tiny_gguf_bytes(&TinySpec::default()).unwrap();
        let g = Gguf::from_bytes(bytes, "in.gguf").unwrap();
        let mut w = GgufWriter::new();
        for (k, v) in g.metadata() {
            if !matches!(
                k.as_str(),
                "xverse.rope.freq_base"
                    | "general.file_type"
                    | "xverse.attention.head_count_kv"
                    | "tokenizer.ggml.bos_token_id"
                    | "tokenizer.ggml.eos_token_id"
            ) {
                w.add_metadata(k.clone(), v.clone()).unwrap();
            }
        }
        let mut data = Vec::new();
        for t in g.tensors() {
            w.add_tensor(TensorSpec {
                name: t.name.clone(),
                ty: t.ty,
                dims: t.dims.clone(),
            })
            .unwrap();
            data.push(g.view(t).data);
        }
        let m = load(w.to_bytes(&data).unwrap()).unwrap();
        assert_eq!(m.hparams.rope_freq_base, 10000.0);
        assert_eq!(m.hparams.kv_heads, 4);
        assert_eq!((m.bos_token(), m.eos_token()), (2, 3));
    }

    #[test]
    fn missing_tensor_is_one_line() {
        let bytes = tiny_gguf_bytes(&TinySpec::default()).unwrap();
        let b = rewrite(
            bytes,
            |_, v| v.clone(),
            |t| (t.name != "blk.1.ffn_up.weight").then(|| t.dims.clone()),
        );
        let e = load(b).unwrap_err();
        assert_eq!(
            one_line(&e),
            "m.gguf: tensor blk.1.ffn_up.weight is missing"
        );
    }

    #[test]
    fn wrong_shape_is_one_line() {
        let bytes = tiny_gguf_bytes(&TinySpec::default()).unwrap();
        let b = rewrite(
            bytes,
            |_, v| v.clone(),
            |t| {
                Some(if t.name == "blk.0.attn_k.weight" {
                    vec![64, 32]
                } else {
                    t.dims.clone()
                })
            },
        );
        let e = load(b).unwrap_err();
        assert_eq!(
            one_line(&e),
            "m.gguf: tensor blk.0.attn_k.weight has shape [64, 32], expected [64, 64]"
        );
        // a transposed matrix is refused as well
        let bytes = tiny_gguf_bytes(&TinySpec::default()).unwrap();
        let b = rewrite(
            bytes,
            |_, v| v.clone(),
            |t| {
                Some(if t.name == "blk.1.ffn_down.weight" {
                    vec![64, 172]
                } else {
                    t.dims.clone()
                })
            },
        );
        let s = one_line(&load(b).unwrap_err());
        assert!(
            s.contains("blk.1.ffn_down.weight") && s.contains("[172, 64]"),
            "{s}"
        );
    }

    #[test]
    fn non_xverse_file_is_one_line() {
        let bytes = tiny_gguf_bytes(&TinySpec::default()).unwrap();
        let b = rewrite(
            bytes,
            |k, v| {
                if k == "general.architecture" {
                    Value::String("llama".into())
                } else {
                    v.clone()
                }
            },
            |t| Some(t.dims.clone()),
        );
        let s = one_line(&load(b).unwrap_err());
        assert!(s.contains("\"llama\"") && s.contains("xverse"), "{s}");
        // not a GGUF at all
        let s = one_line(&load(b"GGML garbage".to_vec()).unwrap_err());
        assert!(s.contains("m.gguf"), "{s}");
        let dir = tempfile::tempdir().unwrap();
        let s = one_line(&Model::load(&dir.path().join("none.gguf")).unwrap_err());
        assert!(s.contains("none.gguf"), "{s}");
    }
}
