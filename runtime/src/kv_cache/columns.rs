//! Q4_0 values stored transposed: for each of a kv head's `head_dim` dimensions, its values at
//! 32 consecutive positions are one Q4_0 block, and eight dimensions' blocks of the same 32
//! positions are one block column of [`q4_0x8`]'s packed layout.
//!
//! Attention's weighted sum `a = Σ_j p_j v_j` is then, dimension by dimension, a dot product
//! of that dimension's row of values with the weights `p`: with `p` quantized to Q8_0 once per
//! token and head, it is the repacked weights' Q4_0×8 matrix × vector kernel over eight
//! dimensions at a time (exact integer products per block), as the scores over the keys are.
//! This is how llama.cpp stores V when it does not use flash attention (transposed), here
//! quantized.
//!
//! Positions arrive one at a time; the last, not yet complete, 32 of them (the *tail*) are kept
//! as f32 rows and quantized, all `head_dim` blocks at once, when the 32nd arrives. Forgetting
//! positions inside a quantized column brings that column's kept positions back into the tail
//! as their dequantized values, to be quantized again with the new ones.
//!
//! Memory: the same 18 bytes per 32 values as Q4_0 rows, plus the tail (32 f32 rows). The
//! groups of one head are apart (`cap` columns each), so the columns a head holds are grown
//! geometrically and moved when they run out.

use xverse_quant::blocks::q4_0::{self, BlockQ4_0};
use xverse_quant::kernels::q4_0x8;

use crate::error::RuntimeError;

/// Positions per block column (elements per Q4_0 block).
pub const QK: usize = 32;
/// Dimensions per group (rows of a [`q4_0x8`] group).
const DIMS: usize = q4_0x8::ROWS;
/// Bytes of one block column of one group.
const COL_BYTES: usize = q4_0x8::GROUP_BLOCK_BYTES;

/// The values of one kv head, transposed (see the module documentation).
#[derive(Clone, Debug)]
pub struct ValueColumns {
    head_dim: usize,
    /// Block columns allocated per group.
    cap: usize,
    /// Block columns written: positions `0..32·cols`.
    cols: usize,
    /// `head_dim / 8` groups, each `cap` columns of [`COL_BYTES`].
    groups: Vec<u8>,
    /// Positions `32·cols..` (fewer than 32), `head_dim` f32 each, position-major.
    tail: Vec<f32>,
}

impl ValueColumns {
    /// No positions, for heads of `head_dim` (a multiple of 32) values.
    pub fn new(head_dim: usize) -> ValueColumns {
        ValueColumns {
            head_dim,
            cap: 0,
            cols: 0,
            groups: Vec::new(),
            tail: Vec::new(),
        }
    }

    /// Values per position.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Positions stored.
    pub fn positions(&self) -> usize {
        self.cols * QK + self.tail.len() / self.head_dim
    }

    /// Makes room for `n` positions (whole columns growing geometrically, never past the
    /// columns of `max` positions); an error (not an abort) when the memory cannot be had.
    pub fn ensure(&mut self, n: usize, max: usize) -> Result<(), RuntimeError> {
        let hd = self.head_dim;
        if self.tail.capacity() < QK * hd {
            self.tail
                .try_reserve_exact(QK * hd - self.tail.len())
                .map_err(|_| no_memory(QK * hd * 4))?;
        }
        let need = n / QK;
        if need <= self.cap {
            return Ok(());
        }
        let cap = need
            .max(self.cap.saturating_mul(2))
            .min((max / QK).max(need));
        let stride = cap * COL_BYTES;
        let total = (hd / DIMS).saturating_mul(stride);
        let mut groups = Vec::new();
        groups
            .try_reserve_exact(total)
            .map_err(|_| no_memory(total))?;
        groups.resize(total, 0u8);
        let used = self.cols * COL_BYTES;
        if used > 0 {
            for (new, old) in groups
                .chunks_exact_mut(stride)
                .zip(self.groups.chunks_exact(self.cap * COL_BYTES))
            {
                new[..used].copy_from_slice(&old[..used]);
            }
        }
        self.groups = groups;
        self.cap = cap;
        Ok(())
    }

    /// Appends one position's values (`head_dim` of them); room must have been made for it
    /// ([`ValueColumns::ensure`]).
    pub fn push(&mut self, row: &[f32]) {
        let hd = self.head_dim;
        debug_assert_eq!(row.len(), hd);
        self.tail.extend_from_slice(&row[..hd]);
        if self.tail.len() < QK * hd {
            return;
        }
        assert!(
            self.cols < self.cap,
            "kv cache: a column written before room was made"
        );
        // one Q4_0 block per dimension over the 32 positions, eight dimensions to a column
        let mut x = [0f32; QK];
        let mut blocks = [<BlockQ4_0 as bytemuck::Zeroable>::zeroed(); DIMS];
        let stride = self.cap * COL_BYTES;
        for (g, group) in self.groups.chunks_exact_mut(stride).enumerate() {
            for (i, block) in blocks.iter_mut().enumerate() {
                let d = g * DIMS + i;
                for (j, xj) in x.iter_mut().enumerate() {
                    *xj = self.tail[j * hd + d];
                }
                q4_0::quantize_row(&x, std::slice::from_mut(block));
            }
            let column = &mut group[self.cols * COL_BYTES..][..COL_BYTES];
            let packed = q4_0x8::pack(QK, bytemuck::cast_slice(&blocks), column);
            debug_assert!(packed, "eight blocks make one column");
        }
        self.cols += 1;
        self.tail.clear();
    }

    /// Forgets positions from `n` on.
    pub fn truncate(&mut self, n: usize) {
        let hd = self.head_dim;
        if n >= self.positions() {
            return;
        }
        if n >= self.cols * QK {
            self.tail.truncate((n - self.cols * QK) * hd);
            return;
        }
        // the kept positions of column n / 32 back to the tail, dequantized
        let (col, kept) = (n / QK, n % QK);
        self.tail.clear();
        self.tail.resize(kept * hd, 0.0);
        if kept > 0 {
            let mut values = [0f32; DIMS * QK];
            let stride = self.cap * COL_BYTES;
            for (g, group) in self.groups.chunks_exact(stride).enumerate() {
                dequantize_column(&group[col * COL_BYTES..][..COL_BYTES], &mut values);
                for (i, dim) in values.chunks_exact(QK).enumerate() {
                    for (j, &v) in dim[..kept].iter().enumerate() {
                        self.tail[j * hd + g * DIMS + i] = v;
                    }
                }
            }
        }
        self.cols = col;
    }

    /// The values of positions `0..n` (`n` at most [`ValueColumns::positions`]), as stored.
    pub fn view(&self, n: usize) -> Columns<'_> {
        Columns {
            groups: &self.groups,
            stride: self.cap * COL_BYTES,
            cols: self.cols,
            tail: &self.tail,
            head_dim: self.head_dim,
            start: 0,
            end: n.min(self.positions()),
        }
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.groups.capacity() + self.tail.capacity() * std::mem::size_of::<f32>()
    }
}

/// One block column of a group (eight dimensions) dequantized: 32 positions of each,
/// dimension by dimension.
fn dequantize_column(column: &[u8], out: &mut [f32; DIMS * QK]) {
    let mut blocks = [<BlockQ4_0 as bytemuck::Zeroable>::zeroed(); DIMS];
    let unpacked = q4_0x8::unpack(QK, column, bytemuck::cast_slice_mut(&mut blocks));
    debug_assert!(unpacked, "one column is eight blocks");
    q4_0::dequantize_row(&blocks, out);
}

fn no_memory(bytes: usize) -> RuntimeError {
    RuntimeError::new(format!(
        "kv cache: cannot allocate {bytes} bytes for one head's values"
    ))
}

/// Positions `start..end` of one kv head's values as [`ValueColumns`] stores them.
#[derive(Clone, Copy, Debug)]
pub struct Columns<'a> {
    /// `head_dim / 8` groups, `stride` bytes apart.
    groups: &'a [u8],
    stride: usize,
    /// Quantized columns: positions `0..32·cols`.
    cols: usize,
    /// Positions `32·cols..`, f32 rows.
    tail: &'a [f32],
    head_dim: usize,
    /// The positions of this view.
    pub start: usize,
    pub end: usize,
}

impl<'a> Columns<'a> {
    /// Positions in the view.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the view holds no position.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Positions `range` of this view (relative to its start).
    pub fn rows(self, range: std::ops::Range<usize>) -> Columns<'a> {
        assert!(range.start <= range.end && range.end <= self.len());
        Columns {
            start: self.start + range.start,
            end: self.start + range.end,
            ..self
        }
    }

    /// The positions of the view that are in quantized columns, as the columns `c0..c1` that
    /// hold them: `(first position, end position, c0, c1)`; `None` when there are none.
    pub fn quantized(&self) -> Option<(usize, usize, usize, usize)> {
        let end = self.end.min(self.cols * QK);
        (self.start < end).then(|| (self.start, end, self.start / QK, end.div_ceil(QK)))
    }

    /// Columns `c0..c1` of group `g` (dimensions `8g..8g + 8`), [`q4_0x8`]'s layout for
    /// `32 · (c1 - c0)` weights per row.
    pub fn group(&self, g: usize, c0: usize, c1: usize) -> &'a [u8] {
        &self.groups[g * self.stride + c0 * COL_BYTES..][..(c1 - c0) * COL_BYTES]
    }

    /// The positions of the view that are in the tail: the first and the f32 rows.
    pub fn tail(&self) -> (usize, &'a [f32]) {
        let first = self.start.max(self.cols * QK);
        let end = self.end.max(first);
        let base = self.cols * QK;
        let hd = self.head_dim;
        (first, &self.tail[(first - base) * hd..(end - base) * hd])
    }

    /// Position `start + j` of the view dequantized into `out` (`head_dim` values).
    pub fn read(&self, j: usize, out: &mut [f32]) {
        let (p, hd) = (self.start + j, self.head_dim);
        if p >= self.cols * QK {
            let t = p - self.cols * QK;
            out.copy_from_slice(&self.tail[t * hd..(t + 1) * hd]);
            return;
        }
        let (col, at) = (p / QK, p % QK);
        let mut values = [0f32; DIMS * QK];
        for (g, out) in out.chunks_exact_mut(DIMS).enumerate() {
            dequantize_column(self.group(g, col, col + 1), &mut values);
            for (o, dim) in out.iter_mut().zip(values.chunks_exact(QK)) {
                *o = dim[at];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Q4_0 block of 32 values, dequantized.
    fn q4(x: &[f32]) -> Vec<f32> {
        let mut b = [<BlockQ4_0 as bytemuck::Zeroable>::zeroed()];
        q4_0::quantize_row(x, &mut b);
        let mut out = vec![0f32; QK];
        q4_0::dequantize_row(&b, &mut out);
        out
    }

    /// Positions written one at a time read back as each dimension's Q4_0 block over its 32
    /// positions (the tail exactly), through any view; truncation inside a column keeps the
    /// positions before it, and new positions complete the column again.
    #[test]
    fn values_are_stored_by_dimension_and_read_back() {
        let (hd, n) = (64, 75);
        let values: Vec<f32> = (0..n * hd).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut v = ValueColumns::new(hd);
        v.ensure(1, 200).unwrap();
        for p in 0..n {
            v.ensure(p + 1, 200).unwrap();
            v.push(&values[p * hd..(p + 1) * hd]);
        }
        assert_eq!((v.positions(), v.cols), (n, 2));
        // what position p, dimension d should read: its block of 32 positions quantized
        let want = |src: &[f32], p: usize, d: usize, quantized_below: usize| -> f32 {
            if p >= quantized_below {
                return src[p * hd + d];
            }
            let c = p / QK;
            let x: Vec<f32> = (0..QK).map(|j| src[(c * QK + j) * hd + d]).collect();
            q4(&x)[p % QK]
        };
        let mut row = vec![0f32; hd];
        let all = v.view(n);
        for from in [0, 5, 32, 70] {
            let view = all.rows(from..n);
            for j in 0..view.len() {
                view.read(j, &mut row);
                for (d, &got) in row.iter().enumerate() {
                    assert_eq!(
                        got,
                        want(&values, from + j, d, 64),
                        "pos {} dim {d}",
                        from + j
                    );
                }
            }
        }
        let view = v.view(n);
        assert_eq!(view.quantized(), Some((0, 64, 0, 2)));
        assert_eq!(view.tail().0, 64);
        assert_eq!(view.tail().1.len(), 11 * hd);
        assert_eq!(view.rows(40..70).quantized(), Some((40, 64, 1, 2)));
        assert_eq!(view.rows(66..70).quantized(), None);
        assert_eq!(view.rows(66..70).tail(), (66, &v.tail[2 * hd..6 * hd]));
        // the quantized column 1 read through `group`: each dimension's block
        let mut blocks = vec![0u8; DIMS * 18];
        assert!(q4_0x8::unpack(QK, view.group(1, 1, 2), &mut blocks));

        // forget positions 40.. (inside column 1): 0..40 read as before
        let before: Vec<Vec<f32>> = (0..40)
            .map(|p| {
                view.read(p, &mut row);
                row.clone()
            })
            .collect();
        v.truncate(40);
        assert_eq!((v.positions(), v.cols), (40, 1));
        for (p, b) in before.iter().enumerate() {
            v.view(40).read(p, &mut row);
            assert_eq!(&row, b, "pos {p} after truncation");
        }
        // new positions complete column 1 again (its first 8 re-quantized with them)
        let other: Vec<f32> = (0..n * hd).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut mixed = values.clone();
        for (p, b) in before.iter().enumerate().skip(32) {
            mixed[p * hd..(p + 1) * hd].copy_from_slice(b);
        }
        for p in 40..n {
            v.push(&other[p * hd..(p + 1) * hd]);
            mixed[p * hd..(p + 1) * hd].copy_from_slice(&other[p * hd..(p + 1) * hd]);
        }
        assert_eq!(v.positions(), n);
        for p in 0..n {
            v.view(n).read(p, &mut row);
            for (d, &got) in row.iter().enumerate() {
                assert_eq!(got, want(&mixed, p, d, 64), "pos {p} dim {d} rewritten");
            }
        }
        // truncation to a column boundary and to nothing
        v.truncate(32);
        assert_eq!((v.positions(), v.cols, v.tail.len()), (32, 1, 0));
        v.truncate(0);
        assert_eq!(v.positions(), 0);
    }

    /// Growing moves the written columns of every group to the new places.
    #[test]
    fn growing_keeps_the_columns() {
        let hd = 32;
        let mut v = ValueColumns::new(hd);
        let values: Vec<f32> = (0..200 * hd).map(|i| (i as f32 * 0.7).sin()).collect();
        let mut caps = Vec::new();
        for p in 0..200 {
            v.ensure(p + 1, 1000).unwrap();
            v.push(&values[p * hd..(p + 1) * hd]);
            caps.push(v.cap);
        }
        caps.dedup();
        assert_eq!(caps, [0, 1, 2, 4, 8], "geometric growth");
        let mut row = vec![0f32; hd];
        for p in [0, 31, 32, 100, 191, 199] {
            v.view(200).read(p, &mut row);
            for (d, &got) in row.iter().enumerate() {
                let want = values[p * hd + d];
                assert!((got - want).abs() <= 1.0 / 8.0 + 1e-6, "pos {p} dim {d}");
            }
        }
        // never past the columns of the context
        let mut v = ValueColumns::new(hd);
        v.ensure(64, 70).unwrap();
        assert_eq!(v.cap, 2);
        v.ensure(65, 70).unwrap();
        assert_eq!(v.cap, 2);
    }
}
