//! The weight types that have an eight-row packed layout ([`super::q4_0x8`], [`super::q4_kx8`],
//! [`super::q6_kx8`], [`super::q8_0x8`]),
//! behind one table of functions so the runtime's repacking and matrix products need not know
//! which one they hold.

use super::{effective, hardware_level, q4_0x8, q4_kx8, q6_kx8, q8_0x8, simd_level, SimdLevel};
use crate::types::GgmlType;

/// Rows in one packed group (every layout).
pub const ROWS: usize = 8;
/// Most activation rows one `gemm` kernel call takes at once (every layout).
pub const TILE_TOKENS: usize = 4;

/// Per-activation-row words a packed kernel needs besides the quantized row
/// ([`q4_0x8::block_sums`], [`q4_kx8::min_pairs`], [`q6_kx8::bsum_pairs`]; none for Q8_0:
/// [`q8_0x8::no_prep`] leaves it empty).
pub type PrepFn = fn(&[u8], &mut Vec<i32>);
/// `gemv(n, group, act, prep, out)`.
pub type GemvFn = fn(usize, &[u8], &[u8], &[i32], &mut [f32; ROWS]);
/// `gemm(n, group, acts, preps, out)`.
pub type GemmFn = fn(usize, &[u8], &[&[u8]], &[&[i32]], &mut [f32]);

/// One packed layout: its sizes, its packer and its kernels (at [`simd_level`]).
#[derive(Clone, Copy)]
pub struct Format {
    /// Bytes of one group of eight rows of `n` weights (`None`: `n` not whole blocks).
    pub group_bytes: fn(usize) -> Option<usize>,
    /// Packs eight rows (`false`: a length is wrong).
    pub pack: fn(usize, &[u8], &mut [u8]) -> bool,
    pub prep: PrepFn,
    pub gemv: GemvFn,
    pub gemm: GemmFn,
}

impl std::fmt::Debug for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("packed::Format")
    }
}

/// The packed layout of weight type `ty`, if it has one (Q4_0, Q4_K, Q6_K and Q8_0).
pub fn format(ty: GgmlType) -> Option<Format> {
    match ty {
        GgmlType::Q4_0 => Some(Format {
            group_bytes: q4_0x8::group_bytes,
            pack: q4_0x8::pack,
            prep: q4_0x8::block_sums,
            gemv: q4_0x8::gemv,
            gemm: q4_0x8::gemm,
        }),
        GgmlType::Q4K => Some(Format {
            group_bytes: q4_kx8::group_bytes,
            pack: q4_kx8::pack,
            prep: q4_kx8::min_pairs,
            gemv: q4_kx8::gemv,
            gemm: q4_kx8::gemm,
        }),
        GgmlType::Q6K => Some(Format {
            group_bytes: q6_kx8::group_bytes,
            pack: q6_kx8::pack,
            prep: q6_kx8::bsum_pairs,
            gemv: q6_kx8::gemv,
            gemm: q6_kx8::gemm,
        }),
        GgmlType::Q8_0 => Some(Format {
            group_bytes: q8_0x8::group_bytes,
            pack: q8_0x8::pack,
            prep: q8_0x8::no_prep,
            gemv: q8_0x8::gemv,
            gemm: q8_0x8::gemm,
        }),
        _ => None,
    }
}

/// The body every layout's `gemm_with` shares: checks that `acts`, `preps` and `out` agree and
/// that every activation row passes `row_ok`, then runs `tile` on chunks of at most
/// [`TILE_TOKENS`] rows (its output `[j · k + t]` for `k` rows) and places the results at
/// `out[j · acts.len() + t]`. `out` is zeroed where a check fails.
pub(super) fn gemm_tiles(
    acts: &[&[u8]],
    preps: &[&[i32]],
    out: &mut [f32],
    row_ok: impl Fn(&[u8], &[i32]) -> bool,
    mut tile: impl FnMut(&[&[u8]], &[&[i32]], &mut [f32]),
) {
    let ok = acts.len() == preps.len()
        && out.len() == ROWS * acts.len()
        && acts.iter().zip(preps).all(|(a, p)| row_ok(a, p));
    if !ok {
        out.fill(0.0);
        return;
    }
    let nt = acts.len();
    let mut buf = [0f32; ROWS * TILE_TOKENS];
    for (c, (a, p)) in acts
        .chunks(TILE_TOKENS)
        .zip(preps.chunks(TILE_TOKENS))
        .enumerate()
    {
        let k = a.len();
        let buf = &mut buf[..ROWS * k];
        tile(a, p, buf);
        for j in 0..ROWS {
            out[j * nt + c * TILE_TOKENS..][..k].copy_from_slice(&buf[j * k..(j + 1) * k]);
        }
    }
}

/// Writes one row of blocks (`block` bytes each: an f16 scale, then quants four bytes at a
/// time; Q4_0 and Q8_0) as row `j` of a group in the layout [`q4_0x8`] and [`q8_0x8`] share: per
/// block column the eight rows' scales (bytes 0..16), then `P[32·m + 4·j + t]` = row `j`'s
/// quant byte `4·m + t`. The other rows are left as they are. (Lengths checked by the caller:
/// whole blocks, `j < 8`.)
#[inline]
pub(super) fn scatter_row(block: usize, j: usize, row: &[u8], group: &mut [u8]) {
    for (blk, col) in row
        .chunks_exact(block)
        .zip(group.chunks_exact_mut(ROWS * block))
    {
        col[2 * j..2 * j + 2].copy_from_slice(&blk[..2]);
        for m in 0..(block - 2) / 4 {
            let at = 2 * ROWS + 32 * m + 4 * j;
            col[at..at + 4].copy_from_slice(&blk[2 + 4 * m..6 + 4 * m]);
        }
    }
}

/// The inverse of [`scatter_row`]: row `j` of a group into `row`.
#[inline]
pub(super) fn gather_row(block: usize, j: usize, group: &[u8], row: &mut [u8]) {
    for (blk, col) in row
        .chunks_exact_mut(block)
        .zip(group.chunks_exact(ROWS * block))
    {
        blk[..2].copy_from_slice(&col[2 * j..2 * j + 2]);
        for m in 0..(block - 2) / 4 {
            blk[2 + 4 * m..][..4].copy_from_slice(&col[2 * ROWS + 32 * m + 4 * j..][..4]);
        }
    }
}

/// What a packed layout's module gives the entry points that all layouts share
/// ([`gemv_with`], [`gemm_with`]): its length check, its scalar reference and its AVX2
/// kernels.
pub(super) trait Layout {
    /// Whether `group`, `act` and `prep` are the lengths of a group and one prepared
    /// activation row of `n` weights.
    fn lengths_ok(n: usize, group: &[u8], act: &[u8], prep: &[i32]) -> bool;
    /// The scalar reference for one activation row (lengths checked).
    fn gemv_scalar(group: &[u8], act: &[u8], prep: &[i32]) -> [f32; ROWS];
    /// The AVX2 kernel for one activation row (lengths checked).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemv(group: &[u8], act: &[u8], prep: &[i32]) -> [f32; ROWS];
    /// The AVX2 kernel for at most [`TILE_TOKENS`] activation rows (lengths checked), output
    /// `[j · acts.len() + t]`.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemm(group: &[u8], acts: &[&[u8]], preps: &[&[i32]], out: &mut [f32]);
}

/// The public entry points of a packed layout's module, over its [`Layout`] `$l`: `gemv`,
/// `gemv_with`, `gemm` and `gemm_with` ([`gemv_with`] and [`gemm_with`] here at the level
/// [`simd_level`] gives or at a given one).
macro_rules! entry_points {
    ($l:ty) => {
        /// `out[j]` = row `j` of the group · the activation row `act` (`prep`: its prepared
        /// words, the layout's `prep` of [`super::packed::Format`]), at
        /// [`super::simd_level`]. Zeros where a length is wrong.
        pub fn gemv(
            n: usize,
            group: &[u8],
            act: &[u8],
            prep: &[i32],
            out: &mut [f32; $crate::kernels::packed::ROWS],
        ) {
            gemv_with($crate::kernels::simd_level(), n, group, act, prep, out)
        }

        /// [`gemv`] at the best level `<= level` this CPU runs.
        pub fn gemv_with(
            level: $crate::kernels::SimdLevel,
            n: usize,
            group: &[u8],
            act: &[u8],
            prep: &[i32],
            out: &mut [f32; $crate::kernels::packed::ROWS],
        ) {
            $crate::kernels::packed::gemv_with::<$l>(level, n, group, act, prep, out)
        }

        /// `out[j · acts.len() + t]` = row `j` of the group · activation row `acts[t]`
        /// (`preps[t]`: its prepared words), for any number of activation rows, at
        /// [`super::simd_level`]. Zeros where a length is wrong.
        pub fn gemm(n: usize, group: &[u8], acts: &[&[u8]], preps: &[&[i32]], out: &mut [f32]) {
            gemm_with($crate::kernels::simd_level(), n, group, acts, preps, out)
        }

        /// [`gemm`] at the best level `<= level` this CPU runs.
        pub fn gemm_with(
            level: $crate::kernels::SimdLevel,
            n: usize,
            group: &[u8],
            acts: &[&[u8]],
            preps: &[&[i32]],
            out: &mut [f32],
        ) {
            $crate::kernels::packed::gemm_with::<$l>(level, n, group, acts, preps, out)
        }
    };
}
pub(super) use entry_points;

/// A layout's `gemv_with`: `out[j]` = row `j` of the group · the activation row `act`
/// (`prep`: its prepared words), with the best kernel `<= level` this CPU runs; zeros where a
/// length is wrong.
pub(super) fn gemv_with<L: Layout>(
    level: SimdLevel,
    n: usize,
    group: &[u8],
    act: &[u8],
    prep: &[i32],
    out: &mut [f32; ROWS],
) {
    if !L::lengths_ok(n, group, act, prep) {
        *out = [0.0; ROWS];
        return;
    }
    let level = effective(level, hardware_level());
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        // SAFETY: `effective` returns `Avx2` or above only when the CPU has AVX2, FMA and
        // F16C; the lengths were checked above.
        *out = unsafe { L::avx2_gemv(group, act, prep) };
        return;
    }
    let _ = level;
    *out = L::gemv_scalar(group, act, prep);
}

/// A layout's `gemm_with`: `out[j · acts.len() + t]` = row `j` of the group · activation row
/// `acts[t]` (`preps[t]`: its prepared words), for any number of activation rows, with the
/// best kernels `<= level` this CPU runs; zeros where a length is wrong.
pub(super) fn gemm_with<L: Layout>(
    level: SimdLevel,
    n: usize,
    group: &[u8],
    acts: &[&[u8]],
    preps: &[&[i32]],
    out: &mut [f32],
) {
    let level = effective(level, hardware_level());
    gemm_tiles(
        acts,
        preps,
        out,
        |a, p| L::lengths_ok(n, group, a, p),
        |a, p, tile| {
            #[cfg(target_arch = "x86_64")]
            if level >= SimdLevel::Avx2 {
                // SAFETY: `level` comes from `effective`, so `Avx2` or above means AVX2, FMA
                // and F16C; `gemm_tiles` checked every length and passes at most
                // TILE_TOKENS rows.
                unsafe { L::avx2_gemm(group, a, p, tile) };
                return;
            }
            let _ = level;
            for (t, (a1, p1)) in a.iter().zip(p).enumerate() {
                let v = L::gemv_scalar(group, a1, p1);
                for (j, x) in v.into_iter().enumerate() {
                    tile[j * a.len() + t] = x;
                }
            }
        },
    );
}

/// Whether the packed kernels have a SIMD path at [`simd_level`] (where they do not, the
/// per-row kernels are as fast and repacking would only cost time at load).
pub fn worthwhile() -> bool {
    simd_level() >= SimdLevel::Avx2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_the_modules() {
        assert_eq!(ROWS, q4_0x8::ROWS);
        assert_eq!(ROWS, q4_kx8::ROWS);
        assert_eq!(TILE_TOKENS, q4_0x8::TILE_TOKENS);
        assert_eq!(TILE_TOKENS, q4_kx8::TILE_TOKENS);
        assert_eq!(ROWS, q6_kx8::ROWS);
        assert_eq!(TILE_TOKENS, q6_kx8::TILE_TOKENS);
        let f = format(GgmlType::Q4_0).unwrap();
        assert_eq!((f.group_bytes)(64), Some(2 * 144));
        let f = format(GgmlType::Q4K).unwrap();
        assert_eq!((f.group_bytes)(512), Some(2 * 1184));
        let f = format(GgmlType::Q6K).unwrap();
        assert_eq!((f.group_bytes)(512), Some(2 * 8 * 210));
        assert_eq!(ROWS, q8_0x8::ROWS);
        assert_eq!(TILE_TOKENS, q8_0x8::TILE_TOKENS);
        let f = format(GgmlType::Q8_0).unwrap();
        assert_eq!((f.group_bytes)(64), Some(2 * 8 * 34));
        assert!(format(GgmlType::Q5K).is_none() && format(GgmlType::Q4_1).is_none());
    }
}
