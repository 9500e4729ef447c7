//! AVX-512 BF16 kernels (x86-64) for bf16 weights: `vdpbf16ps` multiplies 32 bf16 pairs
//! exactly and adds them into 16 f32 lanes, two products per lane per instruction.
//!
//! - [`bf16_bf16`]: bf16 · bf16 (ggml's pairing, [`super::vec_dot`] with BF16 activations):
//!   the same exact products as the scalar reference, only the f32 summation order differs.
//! - [`f32_act_tile`]: bf16 weight rows × f32 activation rows for prompts. Each activation
//!   vector is rounded to bf16 once per step (`vcvtne2ps2bf16`, round to nearest even, as
//!   PyTorch's `.to(torch.bfloat16)`), then every weight row of the tile takes one `vdpbf16ps`
//!   per 32 elements. This is what ggml and Hugging Face do with a bf16 model (its activations
//!   are bf16); the per-row decode path keeps f32 activations (it is bound by memory, not
//!   by arithmetic). The last `n % 32` elements go through the scalar reference with the
//!   f32 activations.
//!
//! `vdpbf16ps` treats subnormal inputs as zero and flushes subnormal results, so a product
//! of subnormals (below 2^-126, far below any weight or activation of a trained model)
//! counts as 0.
//!
//! Miri does not emulate AVX-512 BF16, so these kernels are tested only where the CPU has it
//! (`XVERSE_REQUIRE_AVX512_BF16=1` makes their tests fail instead of skip elsewhere).

use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Whether this CPU has AVX-512 BF16 (with F, BW and VL), detected once.
pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bf16")
    })
}

/// 32 bf16 (64 bytes from the start of `b`) as a `vdpbf16ps` operand.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn bf16x32(b: &[u8]) -> __m512bh {
    assert!(b.len() >= 64);
    // SAFETY: `b` holds at least 64 bytes (checked above); unaligned load; __m512bh has the
    // size and (any) bit validity of __m512i.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(b.as_ptr().cast())) }
}

/// bf16 · bf16 with f32 accumulation: 4 accumulators over 128 elements per step, then 32
/// per step, the rest (< 32 elements) by the scalar reference.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16 ([`available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub unsafe fn bf16_bf16(x: &[u8], y: &[u8]) -> f32 {
    let mut acc = [_mm512_setzero_ps(); 4];
    let xs = x.chunks_exact(256);
    let ys = y.chunks_exact(256);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm512_dpbf16_ps(*acc, bf16x32(&a[64 * k..]), bf16x32(&b[64 * k..]));
        }
    }
    let xs = xr.chunks_exact(64);
    let ys = yr.chunks_exact(64);
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        acc[0] = _mm512_dpbf16_ps(acc[0], bf16x32(a), bf16x32(b));
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s) + super::scalar::bf16_bf16(xr, yr)
}

/// Most rows / activation rows of a tile (as [`super::TILE_ROWS`], [`super::TILE_COLS`]).
const TILE: usize = 4;

/// A tile of 1..=4 bf16 weight rows × 1..=4 f32 activation rows (`out[r·cols + t]`); the
/// caller has checked that every row holds `n` bf16 and every activation row `n` f32.
/// Returns `false` (and writes nothing) for another shape.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16 ([`available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub unsafe fn f32_act_tile(rows: &[&[u8]], xs: &[&[f32]], out: &mut [f32]) -> bool {
    let (r, c) = (rows.len(), xs.len());
    if !(1..=TILE).contains(&r) || !(1..=TILE).contains(&c) || out.len() != r * c {
        return false;
    }
    let n = xs[0].len();
    if xs.iter().any(|x| x.len() != n) || rows.iter().any(|w| w.len() != 2 * n) {
        return false;
    }
    let full = n - n % 32;
    let mut acc = [[_mm512_setzero_ps(); TILE]; TILE];
    let mut v = [bf16x32(&[0u8; 64]); TILE];
    for e in (0..full).step_by(32) {
        for t in 0..c {
            let x = &xs[t][e..e + 32];
            // SAFETY: `x` holds 32 f32 (sliced above); unaligned loads.
            let (lo, hi) = unsafe {
                (
                    _mm512_loadu_ps(x.as_ptr()),
                    _mm512_loadu_ps(x.as_ptr().add(16)),
                )
            };
            // bf16 lanes 0..16 from `lo` (elements e..e+16), 16..32 from `hi`
            v[t] = _mm512_cvtne2ps_pbh(hi, lo);
        }
        for i in 0..r {
            let wv = bf16x32(&rows[i][2 * e..2 * e + 64]);
            for t in 0..c {
                acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv, v[t]);
            }
        }
    }
    for i in 0..r {
        for t in 0..c {
            let rest = super::scalar::bf16_f32_act(&rows[i][2 * full..], &xs[t][full..]);
            out[i * c + t] = _mm512_reduce_add_ps(acc[i][t]) + rest;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// Fails (rather than skips) where `XVERSE_REQUIRE_AVX512_BF16=1` and the CPU lacks it.
    fn have() -> bool {
        let required = std::env::var("XVERSE_REQUIRE_AVX512_BF16").is_ok_and(|v| v == "1");
        assert!(
            available() || !required,
            "XVERSE_REQUIRE_AVX512_BF16=1 but this CPU has no AVX-512 BF16"
        );
        available()
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * 0.75
            })
            .collect()
    }

    fn bf16_bytes(x: &[f32]) -> Vec<u8> {
        x.iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect()
    }

    /// `Σ w·round_bf16(x)` in f64 over the first `full` elements, exact f32 `x` after.
    fn reference(w: &[u8], x: &[f32], full: usize) -> f64 {
        x.iter()
            .enumerate()
            .map(|(i, &xv)| {
                let wv = f64::from(bf16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32());
                let xv = if i < full {
                    bf16::from_f32(xv).to_f32()
                } else {
                    xv
                };
                wv * f64::from(xv)
            })
            .sum()
    }

    #[test]
    fn bf16_pairs_match_the_scalar_reference() {
        if !have() {
            return;
        }
        for n in [1usize, 31, 32, 33, 64, 127, 128, 129, 256, 300, 4096] {
            let (x, y) = (
                bf16_bytes(&values(n, n as u64)),
                bf16_bytes(&values(n, 7 + n as u64)),
            );
            // SAFETY: `have()` checked AVX-512 F/BW/BF16.
            let got = unsafe { bf16_bf16(&x, &y) };
            let want = super::super::scalar::bf16_bf16(&x, &y);
            // f32 rounding of the sums only: far below one product of these magnitudes
            let abs: f32 = super::super::scalar::bf16_bf16(
                &x.iter()
                    .enumerate()
                    .map(|(i, &b)| if i % 2 == 1 { b & 0x7f } else { b })
                    .collect::<Vec<_>>(),
                &y.iter()
                    .enumerate()
                    .map(|(i, &b)| if i % 2 == 1 { b & 0x7f } else { b })
                    .collect::<Vec<_>>(),
            );
            assert!(
                (got - want).abs() <= 1e-5 * abs + 1e-7,
                "n={n}: {got} vs {want}"
            );
        }
        // small integers: every product and partial sum exact, so the sums are equal
        let n = 1000;
        let ints: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let (x, y) = (
            bf16_bytes(&ints),
            bf16_bytes(&ints[..].iter().rev().copied().collect::<Vec<_>>()),
        );
        // SAFETY: as above.
        let got = unsafe { bf16_bf16(&x, &y) };
        assert_eq!(got, super::super::scalar::bf16_bf16(&x, &y));
    }

    #[test]
    fn f32_act_tiles_match_bf16_rounded_activations() {
        if !have() {
            return;
        }
        for n in [32usize, 33, 95, 256, 1000] {
            for r in 1..=TILE {
                for c in 1..=TILE {
                    let rows: Vec<Vec<u8>> = (0..r)
                        .map(|i| bf16_bytes(&values(n, 100 + i as u64)))
                        .collect();
                    let xs: Vec<Vec<f32>> = (0..c).map(|t| values(n, 200 + t as u64)).collect();
                    let rr: Vec<&[u8]> = rows.iter().map(|v| v.as_slice()).collect();
                    let xr: Vec<&[f32]> = xs.iter().map(|v| v.as_slice()).collect();
                    let mut out = vec![f32::NAN; r * c];
                    // SAFETY: `have()` checked AVX-512 F/BW/BF16.
                    assert!(unsafe { f32_act_tile(&rr, &xr, &mut out) });
                    let full = n - n % 32;
                    for i in 0..r {
                        for t in 0..c {
                            let want = reference(&rows[i], &xs[t], full);
                            let got = f64::from(out[i * c + t]);
                            assert!(
                                (got - want).abs() <= 1e-5 * (n as f64).sqrt(),
                                "n={n} r={r} c={c} ({i},{t}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        // a wrong shape is refused, not computed
        let w = bf16_bytes(&values(32, 1));
        let x = values(32, 2);
        let mut out = [0f32; 2];
        // SAFETY: as above.
        assert!(!unsafe { f32_act_tile(&[&w], &[&x], &mut out) });
        // SAFETY: as above.
        assert!(!unsafe { f32_act_tile(&[&w[..62]], &[&x], &mut out[..1]) });
    }
}
