//! Kernel tests: every SIMD kernel against the scalar reference, the scalar reference against
//! dequantize-then-dot, and the length checks of the public entry.

use super::*;
use crate::blocks;
use half::{bf16, f16};

pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(super) fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    /// Uniform in [-1, 1).
    pub(super) fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub(super) fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }
}

/// A layout's `gemm_with`.
pub(super) type GemmWith = fn(SimdLevel, usize, &[u8], &[&[u8]], &[&[i32]], &mut [f32]);
/// A layout's `rows_gemm_with`.
pub(super) type RowsGemmWith = fn(SimdLevel, usize, &[&[u8]], &[&[u8]], &mut [f32]);

/// A layout's `pack_with`.
pub(super) type PackWith = fn(SimdLevel, usize, &[u8], &mut [u8]) -> bool;

/// Packs eight rows (`rows`, `n` weights each) into a group of `group_bytes` by the scalar
/// `pack_with` and checks that every level this CPU runs packs the same bytes; the scalar
/// group.
pub(super) fn check_pack_levels(
    pack_with: PackWith,
    n: usize,
    rows: &[u8],
    group_bytes: usize,
) -> Vec<u8> {
    let mut reference = vec![0u8; group_bytes];
    assert!(pack_with(SimdLevel::Scalar, n, rows, &mut reference));
    for level in available_levels() {
        let mut g = vec![0xAAu8; group_bytes];
        assert!(pack_with(level, n, rows, &mut g));
        assert!(g == reference, "n = {n}, {level:?}");
    }
    reference
}

/// Checks a layout's row kernel at `level` on 1..=8 of the eight rows `rows` (`n` weights
/// each) in the file's layout, with 1..=9 copies of the activation row `act`: row `j` gives
/// `want[j]` bit for bit.
pub(super) fn check_rows_give(
    rows_gemm_with: RowsGemmWith,
    level: SimdLevel,
    n: usize,
    rows: &[u8],
    act: &[u8],
    want: &[f32],
    what: &str,
) {
    let rs: Vec<&[u8]> = rows.chunks_exact(rows.len() / 8).collect();
    for (nr, nt) in [(1, 1), (3, 2), (4, 4), (5, 1), (8, 3), (8, 9), (7, 5)] {
        let acts: Vec<&[u8]> = vec![act; nt];
        let mut out = vec![f32::NAN; nr * nt];
        rows_gemm_with(level, n, &rs[..nr], &acts, &mut out);
        for (i, v) in out.iter().enumerate() {
            let j = i / nt;
            assert_eq!(
                v.to_bits(),
                want[j].to_bits(),
                "{what} {level:?} n {n} rows_gemm {nr}x{nt} row {j}"
            );
        }
    }
}

/// Checks a layout's row kernel (`rows_gemm_with`) on eight weight rows of type `ty` in the
/// file's layout (`rows`, one after another, `n` weights each) and six different activation
/// rows (`acts`) at every level this CPU runs: it gives the packed group's `gemm_with` of the
/// same rows and activation rows bit for bit; rows 2..7 with tokens 1..6 give the matching
/// part of the same numbers; the table's `rows` entry for `ty` gives them at the default
/// level.
pub(super) fn check_rows_gemm(
    ty: GgmlType,
    n: usize,
    rows: &[u8],
    acts: &[Vec<u8>],
    gemm_with: GemmWith,
    rows_gemm_with: RowsGemmWith,
) {
    assert_eq!(acts.len(), 6);
    let f = packed::format(ty).expect("a packed layout");
    let mut g = vec![0u8; (f.group_bytes)(n).expect("whole blocks")];
    assert!((f.pack)(n, rows, &mut g), "{ty}: pack");
    let preps: Vec<Vec<i32>> = acts
        .iter()
        .map(|a| {
            let mut p = Vec::new();
            (f.prep)(a, &mut p);
            p
        })
        .collect();
    let ar: Vec<&[u8]> = acts.iter().map(|a| &a[..]).collect();
    let pr: Vec<&[i32]> = preps.iter().map(|p| &p[..]).collect();
    let rs: Vec<&[u8]> = rows.chunks_exact(rows.len() / 8).collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for level in available_levels() {
        let mut want = vec![0f32; 8 * 6];
        gemm_with(level, n, &g, &ar, &pr, &mut want);
        let mut got = vec![f32::NAN; 8 * 6];
        rows_gemm_with(level, n, &rs, &ar, &mut got);
        assert_eq!(bits(&got), bits(&want), "{ty} {level:?} n {n}");
        let mut part = vec![f32::NAN; 5 * 5];
        rows_gemm_with(level, n, &rs[2..7], &ar[1..], &mut part);
        for r in 0..5 {
            for t in 0..5 {
                assert_eq!(
                    part[r * 5 + t].to_bits(),
                    want[(r + 2) * 6 + t + 1].to_bits(),
                    "{ty} {level:?} n {n} row {} token {}",
                    r + 2,
                    t + 1
                );
            }
        }
        if level == simd_level() {
            let rows_fn = f.rows.expect("a row kernel in the packed order");
            let mut t = vec![f32::NAN; 8 * 6];
            rows_fn(n, &rs, &ar, &mut t);
            assert_eq!(bits(&t), bits(&want), "{ty}: the table's rows");
        }
    }
}

/// A layout's `rows_gemm_with` on bad lengths, at every level: a short row, a short
/// activation row, `n` not whole blocks or another length, a wrong output length give zeros;
/// `row` and `act` (one block each, `n` weights) give a finite number.
pub(super) fn check_rows_wrong_lengths(
    n: usize,
    row: &[u8],
    act: &[u8],
    rows_gemm_with: RowsGemmWith,
) {
    for (rs, acts, nn, len) in [
        (vec![row, &row[1..]], vec![act], n, 2),
        (vec![row], vec![act, &act[..1]], n, 2),
        (vec![row], vec![act], n / 2, 1),
        (vec![row], vec![act], 2 * n, 1),
        (vec![row], vec![act], n, 2),
    ] {
        for level in available_levels() {
            let mut o = vec![f32::NAN; len];
            rows_gemm_with(level, nn, &rs, &acts, &mut o);
            assert!(o.iter().all(|&v| v == 0.0), "{level:?} n {nn}");
        }
    }
    for level in available_levels() {
        let mut o = [f32::NAN; 1];
        rows_gemm_with(level, n, &[row], &[act], &mut o);
        assert!(o[0].is_finite(), "{level:?}: right lengths compute");
    }
}

const QUANT: [GgmlType; 10] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];
const FLOAT: [GgmlType; 3] = [GgmlType::F32, GgmlType::F16, GgmlType::BF16];

fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// Offsets of the f16 scale fields of a weight block.
fn scale_offsets(w: GgmlType) -> &'static [usize] {
    match w {
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q6K => &[208],
        GgmlType::Q3K => &[108],
        _ => &[],
    }
}

/// Random weight bytes with every f16 scale set by `scale`.
pub(super) fn random_weights(
    rng: &mut Rng,
    w: GgmlType,
    n: usize,
    mut scale: impl FnMut(&mut Rng) -> f32,
) -> Vec<u8> {
    let bytes = w.bytes_for(n as u64).unwrap() as usize;
    let mut v: Vec<u8> = (0..bytes).map(|_| rng.byte()).collect();
    for b in v.chunks_exact_mut(w.type_size()) {
        for &off in scale_offsets(w) {
            let s = scale(rng);
            put_f16(b, off, s);
        }
        if w == GgmlType::Q6K {
            for s in &mut b[192..208] {
                *s = rng.int(-8, 8) as i8 as u8;
            }
        }
    }
    v
}

/// Random activation bytes of the pairing type with unit scales (integers only).
pub(super) fn unit_activations(rng: &mut Rng, w: GgmlType, n: usize) -> Vec<u8> {
    let t = vec_dot_type(w);
    let mut v = vec![0u8; t.bytes_for(n as u64).unwrap() as usize];
    for b in v.chunks_exact_mut(t.type_size()) {
        match t {
            GgmlType::Q8_0 => {
                put_f16(b, 0, 1.0);
                for q in &mut b[2..] {
                    *q = rng.int(-127, 127) as i8 as u8;
                }
            }
            GgmlType::Q8_1 => {
                put_f16(b, 0, 1.0);
                let mut s = 0i32;
                for q in &mut b[4..] {
                    let x = rng.int(-127, 127);
                    s += x;
                    *q = x as i8 as u8;
                }
                put_f16(b, 2, s as f32);
            }
            GgmlType::Q8K => {
                b[..4].copy_from_slice(&1f32.to_le_bytes());
                let qs: Vec<i8> = (0..256).map(|_| rng.int(-128, 127) as i8).collect();
                for (d, &q) in b[4..260].iter_mut().zip(&qs) {
                    *d = q as u8;
                }
                for (g, s) in qs.chunks_exact(16).enumerate() {
                    let sum: i16 = s.iter().map(|&q| i16::from(q)).sum();
                    b[260 + 2 * g..262 + 2 * g].copy_from_slice(&sum.to_le_bytes());
                }
            }
            _ => unreachable!(),
        }
    }
    v
}

/// Floats that are small integers, encoded in `t` (exact products and sums).
fn int_floats(rng: &mut Rng, t: GgmlType, n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..n {
        let x = rng.int(-16, 16) as f32;
        match t {
            GgmlType::F32 => v.extend_from_slice(&x.to_le_bytes()),
            GgmlType::F16 => v.extend_from_slice(&f16::from_f32(x).to_bits().to_le_bytes()),
            _ => v.extend_from_slice(&bf16::from_f32(x).to_bits().to_le_bytes()),
        }
    }
    v
}

/// The SIMD levels this CPU runs (the scalar reference excluded).
fn levels() -> Vec<SimdLevel> {
    available_levels()
        .into_iter()
        .filter(|&l| l != SimdLevel::Scalar)
        .collect()
}

const BLOCK_COUNTS: [usize; 10] = [1, 2, 3, 4, 5, 7, 8, 16, 31, 64];

#[test]
fn kernels_simd_exact_on_integer_inputs() {
    let mut rng = Rng(1);
    for &w in &QUANT {
        for &nb in &BLOCK_COUNTS {
            let n = nb * w.block_size();
            let x = random_weights(&mut rng, w, n, |_| 1.0);
            let y = unit_activations(&mut rng, w, n);
            let s = vec_dot_with(SimdLevel::Scalar, w, n, &x, &y);
            assert_eq!(s, scalar::vec_dot(w, &x, &y).unwrap());
            for l in levels() {
                let v = vec_dot_with(l, w, n, &x, &y);
                assert_eq!(v, s, "{w} {l:?} n={n}");
            }
        }
    }
    for &w in &FLOAT {
        for n in [
            1, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 100, 255, 256, 1000, 4096,
        ] {
            let x = int_floats(&mut rng, w, n);
            let y = int_floats(&mut rng, w, n);
            let s = vec_dot_with(SimdLevel::Scalar, w, n, &x, &y);
            for l in levels() {
                assert_eq!(vec_dot_with(l, w, n, &x, &y), s, "{w} {l:?} n={n}");
            }
        }
    }
}

/// Dequantized row of `t` (any type with a dequantizer).
fn deq(t: GgmlType, b: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    blocks::dequantize_row(t, b, &mut out).unwrap();
    out
}

/// Σ (|w_i| + max|w| of its block)·|a_i|: a bound on every float term the kernels add.
fn bound(w: GgmlType, wd: &[f32], ad: &[f32]) -> f64 {
    let bs = w.block_size().max(1);
    let mut s = 0f64;
    for (wb, ab) in wd.chunks(bs).zip(ad.chunks(bs)) {
        let m = wb.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let m = if w.is_quantized() { m } else { 0.0 };
        for (&a, &b) in wb.iter().zip(ab) {
            s += f64::from(a.abs() + m) * f64::from(b.abs());
        }
    }
    s
}

/// Weight and activation rows for `w`: quantized from `xw`/`xa` (Q2_K: random quants).
fn make_rows(rng: &mut Rng, w: GgmlType, xw: &[f32], xa: &[f32]) -> (Vec<u8>, Vec<u8>) {
    let n = xw.len();
    let wb = if blocks::can_quantize(w) {
        let mut b = vec![0u8; w.bytes_for(n as u64).unwrap() as usize];
        blocks::quantize_row(w, xw, &mut b).unwrap();
        b
    } else {
        random_weights(rng, w, n, |r| r.f() * 0.01)
    };
    let mut ab = Vec::new();
    quantize_activations(w, xa, &mut ab);
    (wb, ab)
}

fn inputs(rng: &mut Rng, n: usize, kind: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match kind {
            0 => rng.f(),
            1 => rng.f() * 1e4,
            2 => {
                if i % 3 == 0 {
                    6e4
                } else if i % 3 == 1 {
                    -6e4
                } else {
                    0.0
                }
            }
            3 => rng.f().abs() * 100.0 + 1.0,
            _ => (rng.f() * 1e-3).powi(3),
        })
        .collect()
}

#[test]
fn kernels_simd_match_scalar_on_real_rows() {
    let mut rng = Rng(2);
    for w in QUANT.iter().chain(&FLOAT).copied() {
        for &nb in &BLOCK_COUNTS {
            for kind in 0..5 {
                let n = nb * w.block_size().max(32);
                let xw = inputs(&mut rng, n, kind);
                let xa = inputs(&mut rng, n, (kind + 1) % 5);
                let (wb, ab) = make_rows(&mut rng, w, &xw, &xa);
                let s = vec_dot_with(SimdLevel::Scalar, w, n, &wb, &ab);
                let bnd = bound(w, &deq(w, &wb, n), &deq(vec_dot_type(w), &ab, n));
                for l in levels() {
                    let v = vec_dot_with(l, w, n, &wb, &ab);
                    if !s.is_finite() {
                        // Q8_1's f16 `s` overflows for huge activations, as in ggml
                        assert!(
                            v == s || (v.is_nan() && s.is_nan()),
                            "{w} {l:?}: {v} vs {s}"
                        );
                        continue;
                    }
                    let err = f64::from((v - s).abs());
                    assert!(
                        err <= 4e-5 * bnd + 1e-30,
                        "{w} {l:?} n={n} kind={kind}: {v} vs {s} (bound {bnd})"
                    );
                }
            }
        }
    }
}

#[test]
fn kernels_scalar_matches_dequantized_dot() {
    let mut rng = Rng(3);
    for w in QUANT.iter().chain(&FLOAT).copied() {
        for &nb in &[1usize, 3, 16] {
            for kind in [0, 1, 3] {
                let n = nb * w.block_size().max(32);
                let xw = inputs(&mut rng, n, kind);
                let xa = inputs(&mut rng, n, 0);
                let (wb, ab) = make_rows(&mut rng, w, &xw, &xa);
                let s = vec_dot_with(SimdLevel::Scalar, w, n, &wb, &ab);
                let wd = deq(w, &wb, n);
                let ad = deq(vec_dot_type(w), &ab, n);
                let exact: f64 = wd
                    .iter()
                    .zip(&ad)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                let bnd = bound(w, &wd, &ad);
                // Q8_1 stores d·Σq as f16: the min term is rounded to 11 bits.
                let tol = if matches!(w, GgmlType::Q4_1 | GgmlType::Q5_1) {
                    2e-3
                } else {
                    1e-5
                };
                assert!(
                    (f64::from(s) - exact).abs() <= tol * bnd + 1e-30,
                    "{w} n={n} kind={kind}: {s} vs {exact}"
                );
                // and against the unquantized rows, within the quantization error
                if blocks::can_quantize(w) {
                    let f: f64 = xw
                        .iter()
                        .zip(&xa)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    let mag: f64 = xw
                        .iter()
                        .zip(&xa)
                        .map(|(&a, &b)| f64::from((a * b).abs()))
                        .sum();
                    assert!(
                        (f64::from(s) - f).abs() <= 0.1 * mag + 1e-30,
                        "{w} n={n}: {s} vs f32 {f}"
                    );
                }
            }
        }
    }
}

#[test]
fn kernels_wrong_lengths_give_zero() {
    let mut rng = Rng(4);
    for w in QUANT.iter().chain(&FLOAT).copied() {
        let n = 2 * w.block_size().max(32);
        let xw = inputs(&mut rng, n, 0);
        let (wb, ab) = make_rows(&mut rng, w, &xw, &xw);
        assert_ne!(vec_dot(w, n, &wb, &ab), 0.0, "{w}");
        for l in [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512] {
            assert_eq!(vec_dot_with(l, w, n, &wb[1..], &ab), 0.0);
            assert_eq!(vec_dot_with(l, w, n, &wb, &ab[..ab.len() - 1]), 0.0);
            assert_eq!(vec_dot_with(l, w, n + 1, &wb, &ab), 0.0);
            assert_eq!(vec_dot_with(l, w, n - 1, &wb, &ab), 0.0);
            assert_eq!(vec_dot_with(l, w, 0, &[], &[]), 0.0);
        }
    }
    assert!(!supported(GgmlType::Q8K) && !supported(GgmlType::Q8_1));
    assert_eq!(vec_dot(GgmlType::Q8K, 256, &[0; 292], &[0; 292]), 0.0);
    let mut out = vec![1u8; 3];
    quantize_activations(GgmlType::Q4_0, &[1.0; 33], &mut out);
    assert!(out.is_empty());
}

#[test]
fn kernels_f16_conversion_exact() {
    for h in 0..=u16::MAX {
        let a = scalar::f16_to_f32(h);
        let b = f16::from_bits(h).to_f32();
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{h:#x}"
        );
    }
}

#[test]
fn kernels_pairing_and_levels() {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        assert!(levels().contains(&SimdLevel::Avx2));
    }
    assert_eq!(vec_dot_type(GgmlType::Q4_0), GgmlType::Q8_0);
    assert_eq!(vec_dot_type(GgmlType::Q5_1), GgmlType::Q8_1);
    assert_eq!(vec_dot_type(GgmlType::Q4K), GgmlType::Q8K);
    assert_eq!(vec_dot_type(GgmlType::BF16), GgmlType::BF16);
    assert!(simd_level() <= hardware_level());
    assert!(SimdLevel::Scalar < SimdLevel::Avx2 && SimdLevel::Avx2 < SimdLevel::Avx512);
    for l in [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512] {
        assert_eq!(SimdLevel::from_name(l.name()), Some(l));
    }
    let mut out = Vec::new();
    quantize_activations(GgmlType::Q6K, &[0.5; 512], &mut out);
    assert_eq!(out.len(), 2 * 292);
}

/// `n` random floats in [-1, 1) encoded in `t` (F32, F16 or BF16), and their f32 values.
fn float_row(rng: &mut Rng, t: GgmlType, n: usize) -> (Vec<u8>, Vec<f32>) {
    let (mut b, mut v) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let x = rng.f();
        let x = match t {
            GgmlType::F32 => {
                b.extend_from_slice(&x.to_le_bytes());
                x
            }
            GgmlType::F16 => {
                let h = f16::from_f32(x);
                b.extend_from_slice(&h.to_bits().to_le_bytes());
                h.to_f32()
            }
            _ => {
                let h = bf16::from_f32(x);
                b.extend_from_slice(&h.to_bits().to_le_bytes());
                h.to_f32()
            }
        };
        v.push(x);
    }
    (b, v)
}

const F32_ACT_LENGTHS: [usize; 17] = [
    0, 1, 7, 8, 9, 15, 16, 31, 32, 33, 63, 64, 65, 100, 255, 1000, 4096,
];

#[test]
fn kernels_f32_act_exact_on_integer_inputs() {
    let mut rng = Rng(11);
    for &w in &FLOAT {
        for n in F32_ACT_LENGTHS {
            let wb = int_floats(&mut rng, w, n);
            let x: Vec<f32> = (0..n).map(|_| rng.int(-16, 16) as f32).collect();
            let wd = deq(w, &wb, n);
            let exact: f64 = wd.iter().zip(&x).map(|(&a, &b)| f64::from(a * b)).sum();
            let s = vec_dot_f32_act_with(SimdLevel::Scalar, w, n, &wb, &x);
            assert_eq!(f64::from(s), exact, "{w} scalar n={n}");
            for l in levels() {
                assert_eq!(vec_dot_f32_act_with(l, w, n, &wb, &x), s, "{w} {l:?} n={n}");
            }
        }
    }
}

#[test]
fn kernels_f32_act_simd_matches_scalar_on_random_rows() {
    let mut rng = Rng(12);
    for &w in &FLOAT {
        for n in F32_ACT_LENGTHS {
            let (wb, wd) = float_row(&mut rng, w, n);
            let x: Vec<f32> = (0..n).map(|_| rng.f() * 3.0).collect();
            let exact: f64 = wd
                .iter()
                .zip(&x)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let mag: f64 = wd
                .iter()
                .zip(&x)
                .map(|(&a, &b)| f64::from((a * b).abs()))
                .sum();
            // reassociation: each sum order is within ~n·eps·Σ|terms| of the exact sum
            let tol = 2.0 * (n as f64 + 8.0) * f64::from(f32::EPSILON) * mag + 1e-30;
            let s = vec_dot_f32_act_with(SimdLevel::Scalar, w, n, &wb, &x);
            assert!(
                (f64::from(s) - exact).abs() <= tol,
                "{w} scalar n={n}: {s} vs {exact}"
            );
            for l in levels() {
                let v = vec_dot_f32_act_with(l, w, n, &wb, &x);
                assert!(
                    (f64::from(v) - exact).abs() <= tol,
                    "{w} {l:?} n={n}: {v} vs {exact}"
                );
                assert!(
                    (v - s).abs() as f64 <= 2.0 * tol,
                    "{w} {l:?} n={n}: {v} vs {s}"
                );
            }
        }
    }
}

#[test]
fn kernels_f32_act_wrong_lengths_or_types_give_zero() {
    let mut rng = Rng(13);
    for &w in &FLOAT {
        let n = 64;
        let (wb, _) = float_row(&mut rng, w, n);
        let x = vec![1.0f32; n];
        assert_ne!(vec_dot_f32_act(w, n, &wb, &x), 0.0, "{w}");
        assert!(supported_f32_act(w));
        for l in [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512] {
            assert_eq!(vec_dot_f32_act_with(l, w, n, &wb[1..], &x), 0.0);
            assert_eq!(vec_dot_f32_act_with(l, w, n, &wb, &x[1..]), 0.0);
            assert_eq!(vec_dot_f32_act_with(l, w, n + 1, &wb, &x), 0.0);
            assert_eq!(vec_dot_f32_act_with(l, w, n - 1, &wb, &x), 0.0);
        }
    }
    assert!(!supported_f32_act(GgmlType::Q8_0));
    assert_eq!(
        vec_dot_f32_act(GgmlType::Q8_0, 32, &[0; 34], &[1.0; 32]),
        0.0
    );
}

/// Every tile shape up to 6 × 7 (so whole and partial kernel tiles) against the per-pair
/// products at the same level, on real rows of every type.
#[test]
fn kernels_tile_matches_pairs() {
    let mut rng = Rng(7);
    for w in QUANT.iter().chain(&FLOAT).copied() {
        for nb in [1, 2, 3, 8] {
            let n = nb * w.block_size().max(32);
            let mut rows = Vec::new();
            let mut acts = Vec::new();
            let mut xs = Vec::new();
            for i in 0..7 {
                let xw = inputs(&mut rng, n, i % 5);
                let xa = inputs(&mut rng, n, (i + 2) % 5);
                let (wb, ab) = make_rows(&mut rng, w, &xw, &xa);
                rows.push(wb);
                acts.push(ab);
                xs.push(xa);
            }
            for l in available_levels() {
                for (nr, nc) in [
                    (1, 1),
                    (4, 4),
                    (4, 3),
                    (3, 4),
                    (2, 1),
                    (1, 5),
                    (6, 7),
                    (5, 2),
                ] {
                    let rs: Vec<&[u8]> = rows[..nr].iter().map(|r| &r[..]).collect();
                    let mut out = vec![f32::NAN; nr * nc];
                    if w.is_quantized() {
                        let ts: Vec<&[u8]> = acts[..nc].iter().map(|a| &a[..]).collect();
                        vec_dot_tile_with(l, w, n, &rs, &ts, &mut out);
                        for r in 0..nr {
                            for t in 0..nc {
                                let want = vec_dot_with(l, w, n, rs[r], ts[t]);
                                let bnd =
                                    bound(w, &deq(w, rs[r], n), &deq(vec_dot_type(w), ts[t], n));
                                let got = out[r * nc + t];
                                assert!(
                                    f64::from((got - want).abs()) <= 4e-5 * bnd + 1e-30
                                        || got == want
                                        || (got.is_nan() && want.is_nan()),
                                    "{w} {l:?} {nr}x{nc} [{r},{t}] n={n}: {got} vs {want}"
                                );
                            }
                        }
                    } else {
                        let ts: Vec<&[f32]> = xs[..nc].iter().map(|a| &a[..]).collect();
                        vec_dot_f32_act_tile_with(l, w, n, &rs, &ts, &mut out);
                        for r in 0..nr {
                            for t in 0..nc {
                                let want = vec_dot_f32_act_with(l, w, n, rs[r], ts[t]);
                                let bnd: f64 = deq(w, rs[r], n)
                                    .iter()
                                    .zip(ts[t].iter())
                                    .map(|(a, b)| f64::from(a.abs()) * f64::from(b.abs()))
                                    .sum();
                                let got = out[r * nc + t];
                                // AVX-512 BF16 tiles round the activations to bf16 (half an
                                // ulp: 2^-9 relative per product); the per-pair path does not
                                #[cfg(target_arch = "x86_64")]
                                let tol = if w == GgmlType::BF16
                                    && l >= SimdLevel::Avx512
                                    && super::avx512_bf16::available()
                                {
                                    f64::powi(2.0, -8)
                                } else {
                                    4e-6
                                };
                                #[cfg(not(target_arch = "x86_64"))]
                                let tol = 4e-6;
                                assert!(
                                    f64::from((got - want).abs()) <= tol * bnd + 1e-30,
                                    "{w} {l:?} {nr}x{nc} [{r},{t}] n={n}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn kernels_tile_wrong_lengths_give_zeros() {
    let w = GgmlType::Q8_0;
    let row = vec![0u8; 34];
    let act = vec![0u8; 34];
    let short = vec![0u8; 33];
    let mut out = vec![1f32; 2];
    vec_dot_tile(w, 32, &[&row, &short], &[&act], &mut out);
    assert_eq!(out, [0.0, 0.0]);
    let mut out = vec![1f32; 2];
    vec_dot_tile(w, 32, &[&row], &[&act, &short], &mut out);
    assert_eq!(out, [0.0, 0.0]);
    let mut out = vec![1f32; 3];
    vec_dot_tile(w, 32, &[&row], &[&act, &act], &mut out);
    assert_eq!(out, [0.0, 0.0, 0.0]);
    let x = vec![1f32; 31];
    let f = vec![0u8; 64];
    let mut out = vec![1f32; 1];
    vec_dot_f32_act_tile(GgmlType::F16, 32, &[&f], &[&x], &mut out);
    assert_eq!(out, [0.0]);
}

#[test]
fn levels_parse_cap_and_availability() {
    for l in SimdLevel::ALL {
        assert_eq!(SimdLevel::from_name(l.name()), Some(l));
    }
    assert!(SimdLevel::Scalar.available());
    assert!(hardware_level().available());
    // a cap never raises the level and never picks another architecture's level
    for hw in SimdLevel::ALL {
        for want in SimdLevel::ALL {
            let e = effective(want, hw);
            assert!(
                e <= want && available_on_this_cpu(e, hw),
                "{want:?} on {hw:?}"
            );
        }
    }
    assert_eq!(
        effective(SimdLevel::Avx512, SimdLevel::Neon),
        SimdLevel::Neon
    );
    assert_eq!(
        effective(SimdLevel::Avx2, SimdLevel::Avx512),
        SimdLevel::Avx2
    );
    assert_eq!(
        effective(SimdLevel::Neon, SimdLevel::Avx2),
        SimdLevel::Scalar
    );
}
