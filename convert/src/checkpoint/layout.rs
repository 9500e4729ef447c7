//! Tensor views over a storage: validation of offset/sizes/strides against the storage, and the
//! gather into row-major f32.

use std::ops::Range;

use super::pickle::ElemType;
use crate::convert_err;
use crate::source::{ConvertError, Dtype};

/// The converter's dtype for a storage element type, if it is a float type we read.
pub(crate) fn float_dtype(t: ElemType) -> Option<Dtype> {
    match t {
        ElemType::F32 => Some(Dtype::F32),
        ElemType::F16 => Some(Dtype::F16),
        ElemType::BF16 => Some(Dtype::BF16),
        _ => None,
    }
}

/// Bytes per element of a readable dtype.
pub(crate) fn dtype_size(d: Dtype) -> usize {
    match d {
        Dtype::F32 => 4,
        _ => 2,
    }
}

/// A validated strided view: element `idx` of the row-major output lives at storage element
/// `offset + Σ idx_i * stride_i`, and every such element is inside the storage.
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub dtype: Dtype,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
    pub numel: usize,
    /// Byte range of the storage the view touches (empty for an empty tensor).
    pub touched: Range<usize>,
}

impl View {
    /// Checks a view against a storage of `storage_bytes` bytes. `what` names file and tensor.
    pub fn new(
        what: &str,
        dtype: Dtype,
        offset: u64,
        shape: &[u64],
        stride: &[u64],
        storage_bytes: usize,
    ) -> Result<View, ConvertError> {
        let es = dtype_size(dtype);
        let too_big = || {
            convert_err!("{what}: sizes {shape:?} / strides {stride:?} / offset {offset} overflow")
        };
        if shape.len() != stride.len() {
            return Err(convert_err!(
                "{what}: {} sizes but {} strides",
                shape.len(),
                stride.len()
            ));
        }
        let to_usize = |x: u64| usize::try_from(x).map_err(|_| too_big());
        let shape: Vec<usize> = shape
            .iter()
            .map(|&x| to_usize(x))
            .collect::<Result<_, _>>()?;
        let stride: Vec<usize> = stride
            .iter()
            .map(|&x| to_usize(x))
            .collect::<Result<_, _>>()?;
        let offset = to_usize(offset)?;
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(too_big)?;
        let storage_elems = storage_bytes / es;
        if numel == 0 {
            if offset > storage_elems {
                return Err(convert_err!(
                    "{what}: storage offset {offset} is past the end of its storage ({storage_elems} elements)"
                ));
            }
            return Ok(View {
                dtype,
                offset,
                shape,
                stride,
                numel,
                touched: 0..0,
            });
        }
        let mut last = offset;
        for (&d, &s) in shape.iter().zip(&stride) {
            last = (d - 1)
                .checked_mul(s)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(too_big)?;
        }
        let end_bytes = last
            .checked_add(1)
            .and_then(|x| x.checked_mul(es))
            .ok_or_else(too_big)?;
        if end_bytes > storage_bytes {
            return Err(convert_err!(
                "{what}: view (offset {offset}, sizes {shape:?}, strides {stride:?}) reaches element {last}, \
                 past the end of its storage ({storage_elems} elements of {es} bytes, {storage_bytes} bytes)"
            ));
        }
        if numel > storage_elems {
            return Err(convert_err!(
                "{what}: {numel} elements from a storage of only {storage_elems}: broadcast (stride-0) views are not supported"
            ));
        }
        Ok(View {
            dtype,
            offset,
            shape,
            stride,
            numel,
            touched: offset * es..end_bytes,
        })
    }

    /// Row-major strides of the shape: the view is contiguous when its strides match them
    /// (dimensions of size 1 may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expect = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expect {
                return false;
            }
            expect = expect.saturating_mul(d);
        }
        true
    }

    /// Reads the view out of `storage` (the storage's bytes, starting at element 0) into `out`.
    pub fn gather(
        &self,
        what: &str,
        storage: &[u8],
        out: &mut Vec<f32>,
    ) -> Result<(), ConvertError> {
        out.clear();
        out.try_reserve_exact(self.numel)
            .map_err(|_| convert_err!("{what}: cannot allocate {} floats", self.numel))?;
        if self.numel == 0 {
            return Ok(());
        }
        let short = || {
            convert_err!(
                "{what}: storage holds {} bytes, the view needs {}",
                storage.len(),
                self.touched.end
            )
        };
        let es = dtype_size(self.dtype);
        if self.is_contiguous() {
            let bytes = storage
                .get(self.offset * es..(self.offset + self.numel) * es)
                .ok_or_else(short)?;
            extend_f32(self.dtype, bytes, out);
            return Ok(());
        }
        let bytes = storage.get(..self.touched.end).ok_or_else(short)?;
        let n = self.shape.len();
        let (inner, inner_stride) = (self.shape[n - 1], self.stride[n - 1]);
        let outer = &self.shape[..n - 1];
        let mut idx = vec![0usize; outer.len()];
        loop {
            let base = self.offset
                + idx
                    .iter()
                    .zip(&self.stride)
                    .map(|(&i, &s)| i * s)
                    .sum::<usize>();
            for j in 0..inner {
                let e = base + j * inner_stride;
                let b = bytes.get(e * es..(e + 1) * es).ok_or_else(short)?;
                out.push(elem_f32(self.dtype, b));
            }
            // next outer index
            let mut d = outer.len();
            loop {
                if d == 0 {
                    return Ok(());
                }
                d -= 1;
                idx[d] += 1;
                if idx[d] < outer[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
}

/// One element (little-endian bytes, exactly `dtype_size` long) as f32.
#[inline]
fn elem_f32(dtype: Dtype, b: &[u8]) -> f32 {
    match (dtype, b) {
        (Dtype::F32, &[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
        (Dtype::F16, &[a, b]) => half::f16::from_bits(u16::from_le_bytes([a, b])).to_f32(),
        (Dtype::BF16, &[a, b]) => half::bf16::from_bits(u16::from_le_bytes([a, b])).to_f32(),
        _ => f32::NAN,
    }
}

/// Appends little-endian elements (any alignment) to `out` as f32.
pub(crate) fn extend_f32(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()),
        ),
        Dtype::Ggml(_) => {}
    }
}

/// Drops the cached pages of `range` of a read-only file map (best effort).
pub(crate) use xverse_quant::gguf::release_map_range as release_range;
