//! Block formats: one module per ggml type, each holding the block struct (byte for byte the
//! struct of llama.cpp's `ggml-common.h`, size asserted at compile time), a scalar reference
//! `dequantize_row` and, where ggml has one, `quantize_row` producing the same bytes as ggml.
//!
//! The functions in each module take typed blocks and assume `x.len() == blocks * block_size`
//! (they walk `chunks_exact`, so a wrong length never reads out of bounds, it only leaves the
//! tail untouched). [`dequantize_row`] and [`quantize_row`] here take raw bytes, check every
//! length and dispatch on the type.

use crate::types::GgmlType;
use bytemuck::{Pod, Zeroable};
use std::fmt;

pub mod bf16;
pub mod f16;
pub mod f32;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;

/// A length or capability problem in a (de)quantize call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// The element count is not a multiple of the type's block size.
    NotWholeBlocks { ty: GgmlType, elements: usize },
    /// The byte buffer does not hold exactly the blocks the element count needs.
    ByteLength {
        ty: GgmlType,
        elements: usize,
        expected: usize,
        found: usize,
    },
    /// ggml has no quantizer for this type (Q2_K and Q3_K are read-only here).
    NoQuantizer(GgmlType),
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::NotWholeBlocks { ty, elements } => write!(
                f,
                "{elements} elements is not a whole number of {ty} blocks of {}",
                ty.block_size()
            ),
            BlockError::ByteLength {
                ty,
                elements,
                expected,
                found,
            } => write!(
                f,
                "{elements} {ty} elements need {expected} bytes, found {found}"
            ),
            BlockError::NoQuantizer(ty) => write!(f, "no quantizer for type {ty}"),
        }
    }
}

impl std::error::Error for BlockError {}

/// Whether [`quantize_row`] supports `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::Q2K | GgmlType::Q3K)
}

fn check(ty: GgmlType, elements: usize, bytes: usize) -> Result<(), BlockError> {
    if !elements.is_multiple_of(ty.block_size()) {
        return Err(BlockError::NotWholeBlocks { ty, elements });
    }
    let expected = elements / ty.block_size() * ty.type_size();
    if expected != bytes {
        return Err(BlockError::ByteLength {
            ty,
            elements,
            expected,
            found: bytes,
        });
    }
    Ok(())
}

/// Views `bytes` as blocks without a copy when aligned, else copies them into aligned storage.
fn blocks_of<B: Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [B]> {
    match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(b) => std::borrow::Cow::Borrowed(b),
        Err(_) => {
            let mut v = vec![B::zeroed(); bytes.len() / std::mem::size_of::<B>()];
            bytemuck::cast_slice_mut::<B, u8>(&mut v).copy_from_slice(bytes);
            std::borrow::Cow::Owned(v)
        }
    }
}

/// Dequantizes `dst.len()` elements of type `ty` stored in `src`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), BlockError> {
    check(ty, dst.len(), src.len())?;
    macro_rules! go {
        ($m:ident) => {
            $m::dequantize_row(&blocks_of::<$m::Block>(src), dst)
        };
    }
    match ty {
        GgmlType::F32 => go!(f32),
        GgmlType::F16 => go!(f16),
        GgmlType::BF16 => go!(bf16),
        GgmlType::Q4_0 => go!(q4_0),
        GgmlType::Q4_1 => go!(q4_1),
        GgmlType::Q5_0 => go!(q5_0),
        GgmlType::Q5_1 => go!(q5_1),
        GgmlType::Q8_0 => go!(q8_0),
        GgmlType::Q8_1 => go!(q8_1),
        GgmlType::Q2K => go!(q2_k),
        GgmlType::Q3K => go!(q3_k),
        GgmlType::Q4K => go!(q4_k),
        GgmlType::Q5K => go!(q5_k),
        GgmlType::Q6K => go!(q6_k),
        GgmlType::Q8K => go!(q8_k),
    }
    Ok(())
}

/// Quantizes `src` into type `ty`, writing exactly the bytes ggml's reference quantizer writes
/// (for the K-quants: `ggml_quantize_chunk` without an importance matrix).
///
/// The reference code uses `f32::mul_add` where ggml's build fuses a multiply-add; on x86-64
/// without the `fma` target feature that is a libm call per weight, so when the CPU has FMA the
/// same code runs compiled with it (chosen at run time; the bytes are the same either way).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), BlockError> {
    check(ty, src.len(), dst.len())?;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports FMA, checked on the line above.
        return unsafe { quantize_row_fma(ty, src, dst) };
    }
    quantize_checked(ty, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn quantize_row_fma(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), BlockError> {
    quantize_checked(ty, src, dst)
}

/// The quantizer dispatch, inlined into both the plain and the FMA entry point.
#[inline(always)]
fn quantize_checked(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), BlockError> {
    macro_rules! go {
        ($m:ident) => {{
            let mut blocks = vec![<$m::Block as Zeroable>::zeroed(); dst.len() / ty.type_size()];
            $m::quantize_row(src, &mut blocks);
            dst.copy_from_slice(bytemuck::cast_slice(&blocks));
        }};
    }
    match ty {
        GgmlType::F32 => go!(f32),
        GgmlType::F16 => go!(f16),
        GgmlType::BF16 => go!(bf16),
        GgmlType::Q4_0 => go!(q4_0),
        GgmlType::Q4_1 => go!(q4_1),
        GgmlType::Q5_0 => go!(q5_0),
        GgmlType::Q5_1 => go!(q5_1),
        GgmlType::Q8_0 => go!(q8_0),
        GgmlType::Q8_1 => go!(q8_1),
        GgmlType::Q4K => go!(q4_k),
        GgmlType::Q5K => go!(q5_k),
        GgmlType::Q6K => go!(q6_k),
        GgmlType::Q8K => go!(q8_k),
        GgmlType::Q2K | GgmlType::Q3K => return Err(BlockError::NoQuantizer(ty)),
    }
    Ok(())
}

/// Size checks shared by every block module: struct size equals ggml's `type_size`.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_equal_type_sizes() {
        use std::mem::size_of;
        assert_eq!(size_of::<f32::Block>(), GgmlType::F32.type_size());
        assert_eq!(size_of::<f16::Block>(), GgmlType::F16.type_size());
        assert_eq!(size_of::<bf16::Block>(), GgmlType::BF16.type_size());
        assert_eq!(size_of::<q4_0::Block>(), GgmlType::Q4_0.type_size());
        assert_eq!(size_of::<q4_1::Block>(), GgmlType::Q4_1.type_size());
        assert_eq!(size_of::<q5_0::Block>(), GgmlType::Q5_0.type_size());
        assert_eq!(size_of::<q5_1::Block>(), GgmlType::Q5_1.type_size());
        assert_eq!(size_of::<q8_0::Block>(), GgmlType::Q8_0.type_size());
        assert_eq!(size_of::<q8_1::Block>(), GgmlType::Q8_1.type_size());
        assert_eq!(size_of::<q2_k::Block>(), GgmlType::Q2K.type_size());
        assert_eq!(size_of::<q3_k::Block>(), GgmlType::Q3K.type_size());
        assert_eq!(size_of::<q4_k::Block>(), GgmlType::Q4K.type_size());
        assert_eq!(size_of::<q5_k::Block>(), GgmlType::Q5K.type_size());
        assert_eq!(size_of::<q6_k::Block>(), GgmlType::Q6K.type_size());
        assert_eq!(size_of::<q8_k::Block>(), GgmlType::Q8K.type_size());
    }

    #[test]
    fn length_errors_not_panics() {
        let mut out = [0f32; 32];
        assert!(matches!(
            dequantize_row(GgmlType::Q4_0, &[0u8; 17], &mut out),
            Err(BlockError::ByteLength {
                expected: 18,
                found: 17,
                ..
            })
        ));
        assert!(matches!(
            dequantize_row(GgmlType::Q4K, &[0u8; 144], &mut out),
            Err(BlockError::NotWholeBlocks { .. })
        ));
        let mut bytes = [0u8; 84];
        assert_eq!(
            quantize_row(GgmlType::Q2K, &[0.0; 256], &mut bytes),
            Err(BlockError::NoQuantizer(GgmlType::Q2K))
        );
    }

    #[test]
    fn misaligned_bytes_are_read_correctly() {
        let x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) * 0.37).collect();
        for ty in GgmlType::ALL {
            if !can_quantize(ty) {
                continue;
            }
            let mut q = vec![0u8; ty.bytes_for(256).unwrap() as usize + 1];
            quantize_row(ty, &x, &mut q[1..]).unwrap();
            let mut a = vec![0f32; 256];
            let mut b = vec![0f32; 256];
            dequantize_row(ty, &q[1..], &mut a).unwrap();
            let aligned = q[1..].to_vec();
            dequantize_row(ty, &aligned, &mut b).unwrap();
            assert_eq!(a, b, "{ty}");
        }
    }
}
