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
/// `gemv2(n, group_a, group_b, act, prep, out)`: `gemv` of two groups at once, `out[0]` for
/// `group_a` and `out[1]` for `group_b`.
pub type Gemv2Fn = fn(usize, &[u8], &[u8], &[u8], &[i32], &mut [[f32; ROWS]; 2]);
/// `gemm(n, group, acts, preps, out)`.
pub type GemmFn = fn(usize, &[u8], &[&[u8]], &[&[i32]], &mut [f32]);
/// `rows(n, rows, acts, out)`: `out[r · acts.len() + t]` = `rows[r]` (the file's layout) ·
/// `acts[t]`, for any counts.
pub type RowsFn = fn(usize, &[&[u8]], &[&[u8]], &mut [f32]);

/// One packed layout: its sizes, its packer and its kernels (at [`simd_level`]).
#[derive(Clone, Copy)]
pub struct Format {
    /// Bytes of one group of eight rows of `n` weights (`None`: `n` not whole blocks).
    pub group_bytes: fn(usize) -> Option<usize>,
    /// Packs eight rows (`false`: a length is wrong).
    pub pack: fn(usize, &[u8], &mut [u8]) -> bool,
    pub prep: PrepFn,
    pub gemv: GemvFn,
    /// `gemv` of two groups in one pass (for decode: two streams from memory at once).
    pub gemv2: Gemv2Fn,
    pub gemm: GemmFn,
    /// Rows in the file's layout by the sums of `gemv` and `gemm`, bit for bit what they give
    /// for the same rows packed, where this layout has such a kernel (Q8_0, Q4_K and Q6_K:
    /// [`q8_0x8::rows_gemm`], [`q4_kx8::rows_gemm`], [`q6_kx8::rows_gemm`]; not Q4_0): a weight
    /// of such a type gives the same numbers before and after its repacking, so the
    /// repacking need not be done before the first token.
    pub rows: Option<RowsFn>,
    /// Whether [`Format::rows`] is also the kernel to take for rows that stay in the file's
    /// layout for good ([`rows_for`]): so for Q8_0 (decode from memory 1.2–1.7× the per-row
    /// kernel of [`super::vec_dot`] with the next rows prefetched, on the Zen 3 machine, rows
    /// of 2048 and 5632; prompts as fast as its tiles), not for Q4_K (decode 0.8–0.9× at 2048
    /// columns, the width of most of bench-1b's matrices; the `rows_speed` example) nor Q6_K
    /// (decode 1.0–1.4×, but bench-1b Q4_K_M's pp128 from the map 0.85–0.9× with its 4 × 4
    /// tiles).
    pub rows_for_plain: bool,
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
            gemv2: q4_0x8::gemv2,
            gemm: q4_0x8::gemm,
            rows: None,
            rows_for_plain: false,
        }),
        GgmlType::Q4K => Some(Format {
            group_bytes: q4_kx8::group_bytes,
            pack: q4_kx8::pack,
            prep: q4_kx8::min_pairs,
            gemv: q4_kx8::gemv,
            gemv2: q4_kx8::gemv2,
            gemm: q4_kx8::gemm,
            rows: Some(q4_kx8::rows_gemm),
            rows_for_plain: false,
        }),
        GgmlType::Q6K => Some(Format {
            group_bytes: q6_kx8::group_bytes,
            pack: q6_kx8::pack,
            prep: q6_kx8::bsum_pairs,
            gemv: q6_kx8::gemv,
            gemv2: q6_kx8::gemv2,
            gemm: q6_kx8::gemm,
            rows: Some(q6_kx8::rows_gemm),
            rows_for_plain: false,
        }),
        GgmlType::Q8_0 => Some(Format {
            group_bytes: q8_0x8::group_bytes,
            pack: q8_0x8::pack,
            prep: q8_0x8::no_prep,
            gemv: q8_0x8::gemv,
            gemv2: q8_0x8::gemv2,
            gemm: q8_0x8::gemm,
            rows: Some(q8_0x8::rows_gemm),
            rows_for_plain: true,
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

/// Most weight rows in the file's layout one call of a row kernel ([`Format::rows`]) takes
/// at once (its AVX2 kernels: four rows × up to [`TILE_TOKENS`] activation rows).
pub const ROWS_TILE: usize = 4;

/// What a layout with a row kernel in its packed order ([`Format::rows`]) gives the entry
/// point they share ([`rows_gemm_with`]): its block sizes, its scalar reference and its AVX2
/// tile.
pub(super) trait RowKernel {
    /// Weights in one block.
    const QK: usize;
    /// Bytes of one block of a weight row.
    const ROW_BLOCK: usize;
    /// Bytes of one block of an activation row.
    const ACT_BLOCK: usize;
    /// One weight row · one activation row, as the scalar packed kernel computes it (lengths
    /// checked).
    fn scalar(row: &[u8], act: &[u8]) -> f32;
    /// At most [`ROWS_TILE`] rows × [`TILE_TOKENS`] activation rows, `out[r · acts.len() +
    /// t]`, bit for bit the packed AVX2 kernels' results (lengths checked).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_tile(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]);
}

/// The row kernel of a layout's module: the [`RowKernel`] impl of its type `$l` (weights per
/// block `$qk`, bytes of a weight block `$row` and of an activation block `$act`, the scalar
/// reference `$scalar` of one row, the AVX2 tile `$avx2`) and the entry points `rows_gemm`
/// and `rows_gemm_with` ([`rows_gemm_with`] here, at the level [`simd_level`] gives or at a
/// given one).
macro_rules! row_kernel {
    ($l:ty, $qk:expr, $row:expr, $act:expr, $scalar:path, $avx2:path) => {
        impl $crate::kernels::packed::RowKernel for $l {
            const QK: usize = $qk;
            const ROW_BLOCK: usize = $row;
            const ACT_BLOCK: usize = $act;

            fn scalar(row: &[u8], act: &[u8]) -> f32 {
                $scalar(row, act)
            }

            #[cfg(target_arch = "x86_64")]
            unsafe fn avx2_tile(rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
                // SAFETY: the caller's contract: AVX2, FMA and F16C, lengths and counts
                // checked.
                unsafe { $avx2(rows, acts, out) }
            }
        }

        /// `out[r · acts.len() + t]` = weight row `rows[r]` in the file's layout (`n`
        /// weights) · activation row `acts[t]`, for any counts, at [`super::simd_level`], by
        /// the sums of [`gemv`] and [`gemm`]: bit for bit what they give for the same rows
        /// packed (at the scalar level, the scalar reference of each pair, which the scalar
        /// packed kernel equals). So a weight's rows give the same numbers before its
        /// repacking is done as after, and the repacking can run while the first tokens are
        /// computed (the runtime's `Model::repack_in_background`). Zeros where a length is
        /// wrong.
        pub fn rows_gemm(n: usize, rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
            rows_gemm_with($crate::kernels::simd_level(), n, rows, acts, out)
        }

        /// [`rows_gemm`] at the best level `<= level` this CPU runs.
        pub fn rows_gemm_with(
            level: $crate::kernels::SimdLevel,
            n: usize,
            rows: &[&[u8]],
            acts: &[&[u8]],
            out: &mut [f32],
        ) {
            $crate::kernels::packed::rows_gemm_with::<$l>(level, n, rows, acts, out)
        }
    };
}
pub(super) use row_kernel;

/// A layout's `rows_gemm_with`: `out[r · acts.len() + t]` = weight row `rows[r]` in the
/// file's layout (`n` weights) · activation row `acts[t]`, for any counts, with the best
/// kernel `<= level` this CPU runs, in tiles of at most [`ROWS_TILE`] × [`TILE_TOKENS`].
/// Zeros where a length is wrong.
pub(super) fn rows_gemm_with<K: RowKernel>(
    level: SimdLevel,
    n: usize,
    rows: &[&[u8]],
    acts: &[&[u8]],
    out: &mut [f32],
) {
    let nb = n.is_multiple_of(K::QK).then_some(n / K::QK);
    let ok = nb.is_some_and(|nb| {
        out.len() == rows.len() * acts.len()
            && rows.iter().all(|r| r.len() == nb * K::ROW_BLOCK)
            && acts.iter().all(|a| a.len() == nb * K::ACT_BLOCK)
    });
    if !ok {
        out.fill(0.0);
        return;
    }
    let level = effective(level, hardware_level());
    let nt = acts.len();
    let mut buf = [0f32; ROWS_TILE * TILE_TOKENS];
    for (rc, rs) in rows.chunks(ROWS_TILE).enumerate() {
        for (tc, ts) in acts.chunks(TILE_TOKENS).enumerate() {
            let k = ts.len();
            let tile = &mut buf[..rs.len() * k];
            rows_tile::<K>(level, rs, ts, tile);
            for (r, vals) in tile.chunks_exact(k).enumerate() {
                let o = (rc * ROWS_TILE + r) * nt + tc * TILE_TOKENS;
                out[o..o + k].copy_from_slice(vals);
            }
        }
    }
}

/// One tile of [`rows_gemm_with`] (lengths checked; at most [`ROWS_TILE`] × [`TILE_TOKENS`]).
fn rows_tile<K: RowKernel>(level: SimdLevel, rows: &[&[u8]], acts: &[&[u8]], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        // SAFETY: `level` comes from `effective`, so `Avx2` or above means AVX2, FMA and
        // F16C; the caller checked every length and the counts.
        unsafe { K::avx2_tile(rows, acts, out) };
        return;
    }
    let _ = level;
    let k = acts.len();
    for (r, row) in rows.iter().enumerate() {
        for (t, act) in acts.iter().enumerate() {
            out[r * k + t] = K::scalar(row, act);
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
    /// The AVX2 kernel for one activation row and two groups of the same length (lengths
    /// checked), the same results as [`Layout::avx2_gemv`] of each.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemv2(a: &[u8], b: &[u8], act: &[u8], prep: &[i32]) -> [[f32; ROWS]; 2];
    /// The AVX2 kernel for at most [`TILE_TOKENS`] activation rows (lengths checked), output
    /// `[j · acts.len() + t]`.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2_gemm(group: &[u8], acts: &[&[u8]], preps: &[&[i32]], out: &mut [f32]);
}

/// The public entry points of a packed layout's module, over its [`Layout`] `$l`: `gemv`,
/// `gemv_with`, `gemv2`, `gemv2_with`, `gemm` and `gemm_with` ([`gemv_with`], [`gemv2_with`]
/// and [`gemm_with`] here at the level [`simd_level`] gives or at a given one).
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

        /// [`gemv`] of two groups in one pass, `out[0]` = group `a`'s rows and `out[1]` =
        /// group `b`'s, bit for bit [`gemv`]'s results (two streams from memory at once
        /// when the groups are far apart), at [`super::simd_level`]. Zeros where a length is
        /// wrong.
        pub fn gemv2(
            n: usize,
            a: &[u8],
            b: &[u8],
            act: &[u8],
            prep: &[i32],
            out: &mut [[f32; $crate::kernels::packed::ROWS]; 2],
        ) {
            gemv2_with($crate::kernels::simd_level(), n, a, b, act, prep, out)
        }

        /// [`gemv2`] at the best level `<= level` this CPU runs.
        pub fn gemv2_with(
            level: $crate::kernels::SimdLevel,
            n: usize,
            a: &[u8],
            b: &[u8],
            act: &[u8],
            prep: &[i32],
            out: &mut [[f32; $crate::kernels::packed::ROWS]; 2],
        ) {
            $crate::kernels::packed::gemv2_with::<$l>(level, n, a, b, act, prep, out)
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

/// A layout's `gemv2_with`: [`gemv_with`] of the groups `a` and `b` in one pass, into `out[0]`
/// and `out[1]`; zeros where a length is wrong.
pub(super) fn gemv2_with<L: Layout>(
    level: SimdLevel,
    n: usize,
    a: &[u8],
    b: &[u8],
    act: &[u8],
    prep: &[i32],
    out: &mut [[f32; ROWS]; 2],
) {
    if !L::lengths_ok(n, a, act, prep) || !L::lengths_ok(n, b, act, prep) {
        *out = [[0.0; ROWS]; 2];
        return;
    }
    let level = effective(level, hardware_level());
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        // SAFETY: `effective` returns `Avx2` or above only when the CPU has AVX2, FMA and
        // F16C; the lengths of both groups were checked above.
        *out = unsafe { L::avx2_gemv2(a, b, act, prep) };
        return;
    }
    let _ = level;
    *out = [L::gemv_scalar(a, act, prep), L::gemv_scalar(b, act, prep)];
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

/// The row kernel of weight type `ty` in its packed layout's order ([`Format::rows`]) where the
/// weights of that type are repacked ([`worthwhile`]): the runtime multiplies such a weight's
/// rows in the file's layout by it, so its results do not depend on whether (or when) the
/// weight was repacked. `None` elsewhere: there the per-row kernels of [`super::vec_dot`]
/// serve, faster in cache.
pub fn exact_rows(ty: GgmlType) -> Option<RowsFn> {
    if worthwhile() {
        format(ty)?.rows
    } else {
        None
    }
}

/// The row kernel for weight type `ty`'s rows in the file's layout: [`exact_rows`] where the
/// weight is repacked or will be (`repacked`), so that its numbers do not depend on whether
/// that is done; for a weight that stays in the file's layout, the same kernel only where it
/// is also the faster one ([`Format::rows_for_plain`]). `None`: the per-row kernels of
/// [`super::vec_dot`] serve.
pub fn rows_for(ty: GgmlType, repacked: bool) -> Option<RowsFn> {
    let f = exact_rows(ty)?;
    (repacked || format(ty).is_some_and(|x| x.rows_for_plain)).then_some(f)
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
        // row kernels in the packed order: where the packed kernels run, for Q8_0, Q4_K and
        // Q6_K; for rows never repacked only Q8_0's
        let on = worthwhile();
        for (ty, exact, plain) in [
            (GgmlType::Q4_0, false, false),
            (GgmlType::Q4K, true, false),
            (GgmlType::Q6K, true, false),
            (GgmlType::Q8_0, true, true),
            (GgmlType::Q5K, false, false),
        ] {
            assert_eq!(exact_rows(ty).is_some(), on && exact, "{ty}");
            assert_eq!(rows_for(ty, true).is_some(), on && exact, "{ty}");
            assert_eq!(rows_for(ty, false).is_some(), on && plain, "{ty}");
        }
    }

    type GemvWith = fn(SimdLevel, usize, &[u8], &[u8], &[i32], &mut [f32; ROWS]);
    type Gemv2With = fn(SimdLevel, usize, &[u8], &[u8], &[u8], &[i32], &mut [[f32; ROWS]; 2]);

    /// `gemv2` of two groups equals `gemv` of each, bit for bit, for every layout and every
    /// level this CPU runs (the scalar level included), on real quantized rows; the table's
    /// `gemv2` is the module's; a group of the wrong length gives zeros.
    #[test]
    fn gemv2_is_gemv_of_each_group() {
        let table: [(GgmlType, GemvWith, Gemv2With); 4] = [
            (GgmlType::Q4_0, q4_0x8::gemv_with, q4_0x8::gemv2_with),
            (GgmlType::Q4K, q4_kx8::gemv_with, q4_kx8::gemv2_with),
            (GgmlType::Q6K, q6_kx8::gemv_with, q6_kx8::gemv2_with),
            (GgmlType::Q8_0, q8_0x8::gemv_with, q8_0x8::gemv2_with),
        ];
        let mut rng = super::super::tests::Rng(31);
        for (ty, gemv_with, gemv2_with) in table {
            let f = format(ty).unwrap();
            for n in [256, 1024] {
                let gb = (f.group_bytes)(n).unwrap();
                let rb = ty.bytes_for(n as u64).unwrap() as usize;
                // two groups of eight rows from different weights
                let mut groups = vec![0u8; 2 * gb];
                for g in groups.chunks_exact_mut(gb) {
                    let w: Vec<f32> = (0..8 * n).map(|_| rng.f()).collect();
                    let mut rows = vec![0u8; 8 * rb];
                    crate::blocks::quantize_row(ty, &w, &mut rows).unwrap();
                    assert!((f.pack)(n, &rows, g));
                }
                let (a, b) = groups.split_at(gb);
                let x: Vec<f32> = (0..n).map(|_| rng.f()).collect();
                let mut act = Vec::new();
                crate::kernels::quantize_activations(ty, &x, &mut act);
                let mut prep = Vec::new();
                (f.prep)(&act, &mut prep);
                for level in crate::kernels::available_levels() {
                    let (mut wa, mut wb) = ([0f32; ROWS], [0f32; ROWS]);
                    gemv_with(level, n, a, &act, &prep, &mut wa);
                    gemv_with(level, n, b, &act, &prep, &mut wb);
                    assert_ne!(wa, wb, "{ty} n={n}: two different groups");
                    let mut got = [[f32::NAN; ROWS]; 2];
                    gemv2_with(level, n, a, b, &act, &prep, &mut got);
                    let bits = |v: &[f32; ROWS]| v.map(f32::to_bits);
                    assert_eq!(bits(&got[0]), bits(&wa), "{ty} n={n} {level:?}: group a");
                    assert_eq!(bits(&got[1]), bits(&wb), "{ty} n={n} {level:?}: group b");
                    // and the table's entry (at the default level) agrees with its level
                    if level == crate::kernels::simd_level() {
                        let mut t = [[f32::NAN; ROWS]; 2];
                        (f.gemv2)(n, a, b, &act, &prep, &mut t);
                        assert_eq!(bits(&t[0]), bits(&wa), "{ty}: table gemv2");
                    }
                    // a short second group: zeros, no panic
                    let mut z = [[1f32; ROWS]; 2];
                    gemv2_with(level, n, a, &b[1..], &act, &prep, &mut z);
                    assert_eq!(z, [[0f32; ROWS]; 2], "{ty} {level:?}: short group");
                }
            }
        }
    }
}
