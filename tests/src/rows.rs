//! Input rows for the quantizer comparisons: random rows from several distributions and edge
//! rows that probe the corners of every block format. All rows have [`ROW_LEN`] elements, one
//! K-quant super-block or eight 32-blocks.

use crate::rng::SplitMix64;

/// Elements per row: one super-block of the K-quants (`QK_K`), eight blocks of the 32-types.
pub const ROW_LEN: usize = 256;

/// The distribution a random row is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dist {
    /// Standard normal.
    Normal,
    /// Uniform on [-1, 1).
    Uniform,
    /// Uniform on [0, 1): all values of one sign (min = 0 for the types with a minimum).
    UniformPositive,
    /// Laplace (exponential tails).
    Laplace,
    /// Student-t with 3 degrees of freedom (polynomial tails).
    StudentT3,
    /// Cauchy (very heavy tails), clamped to ±1e6 relative to the scale.
    Cauchy,
    /// Normal with a different power-of-ten scale per 32-element block (weights of real models
    /// vary across blocks).
    BlockScaled,
    /// Normal plus a large constant offset (asymmetric rows, for the types with a minimum).
    Offset,
}

impl Dist {
    /// Every distribution, in the order random rows cycle through them.
    pub const ALL: [Dist; 8] = [
        Dist::Normal,
        Dist::Uniform,
        Dist::UniformPositive,
        Dist::Laplace,
        Dist::StudentT3,
        Dist::Cauchy,
        Dist::BlockScaled,
        Dist::Offset,
    ];
}

/// One row of [`ROW_LEN`] values from `dist`, multiplied by `scale`.
pub fn random_row(rng: &mut SplitMix64, dist: Dist, scale: f64) -> Vec<f32> {
    let mut row = Vec::with_capacity(ROW_LEN);
    let offset = rng.normal() * 4.0;
    for i in 0..ROW_LEN {
        let v = match dist {
            Dist::Normal => rng.normal(),
            Dist::Uniform => rng.uniform(-1.0, 1.0),
            Dist::UniformPositive => rng.unit(),
            Dist::Laplace => rng.laplace(),
            Dist::StudentT3 => rng.student_t(3),
            Dist::Cauchy => rng.cauchy().clamp(-1e6, 1e6),
            Dist::BlockScaled => rng.normal() * 10f64.powi((i / 32) as i32 - 4),
            Dist::Offset => offset + rng.normal(),
        };
        row.push((v * scale) as f32);
    }
    row
}

/// `n_rows` random rows, concatenated: the distribution cycles through [`Dist::ALL`] and each
/// row gets a random scale 10^U(-4, 4). Returns the rows and the distribution of each.
pub fn random_rows(seed: u64, n_rows: usize) -> (Vec<f32>, Vec<Dist>) {
    let mut rng = SplitMix64::new(seed);
    let mut data = Vec::with_capacity(n_rows * ROW_LEN);
    let mut dists = Vec::with_capacity(n_rows);
    for r in 0..n_rows {
        let dist = Dist::ALL[r % Dist::ALL.len()];
        let scale = 10f64.powf(rng.uniform(-4.0, 4.0));
        data.extend(random_row(&mut rng, dist, scale));
        dists.push(dist);
    }
    (data, dists)
}

/// A row of 256 values produced by `f(i)`.
fn row_from(f: impl Fn(usize) -> f32) -> Vec<f32> {
    (0..ROW_LEN).map(f).collect()
}

/// Hand-made rows that probe the corners of the block formats, each with a name for messages:
/// all zeros, one huge value, subnormals, all equal, alternating signs, values exactly at (and
/// one ulp beside) the rounding boundaries of every format's grid, tiny magnitudes, and values
/// whose fp16 scale overflows or underflows.
pub fn edge_rows() -> Vec<(String, Vec<f32>)> {
    let mut rows: Vec<(String, Vec<f32>)> = Vec::new();
    let mut rng = SplitMix64::new(0xED6E);
    let mut normal_row = |scale: f64| -> Vec<f32> {
        (0..ROW_LEN)
            .map(|_| (rng.normal() * scale) as f32)
            .collect()
    };

    rows.push(("all zeros".into(), vec![0.0; ROW_LEN]));
    rows.push(("all negative zeros".into(), vec![-0.0; ROW_LEN]));
    rows.push((
        "zeros and negative zeros".into(),
        row_from(|i| if i % 3 == 0 { -0.0 } else { 0.0 }),
    ));

    // One huge value among ordinary ones, at several positions and magnitudes; the largest
    // make the fp16 scale overflow to infinity.
    for (k, &huge) in [1e4f32, 65504.0 * 8.0, 1e8, 1e20, 1e30, 3e38, f32::MAX]
        .iter()
        .enumerate()
    {
        for &sign in &[1.0f32, -1.0] {
            let mut r = normal_row(1.0);
            let pos = (k * 37 + 5) % ROW_LEN;
            r[pos] = sign * huge;
            rows.push((format!("one huge value {} at {pos}", sign * huge), r));
        }
    }
    // One huge value per block of 32.
    {
        let mut r = normal_row(0.01);
        for b in 0..ROW_LEN / 32 {
            r[b * 32 + (b * 7) % 32] = if b % 2 == 0 { 1e6 } else { -1e6 };
        }
        rows.push(("one huge value per block".into(), r));
    }
    // Only one non-zero value per block.
    rows.push((
        "one non-zero per block".into(),
        row_from(|i| {
            if i % 32 == 11 {
                (i as f32 - 100.0) * 0.37
            } else {
                0.0
            }
        }),
    ));
    rows.push((
        "single non-zero in the row".into(),
        row_from(|i| if i == 200 { -2.5 } else { 0.0 }),
    ));

    // Subnormals: all subnormal, mixed with zeros, mixed with small normals.
    let min_pos = f32::MIN_POSITIVE;
    rows.push((
        "all subnormal".into(),
        row_from(|i| {
            let v = f32::from_bits(1 + (i as u32 * 32_749) % 0x007F_FFFF);
            if i % 2 == 0 {
                v
            } else {
                -v
            }
        }),
    ));
    rows.push((
        "smallest subnormals".into(),
        row_from(|i| f32::from_bits((i % 4) as u32) * if i % 3 == 0 { -1.0 } else { 1.0 }),
    ));
    rows.push((
        "subnormals and min normal".into(),
        row_from(|i| match i % 4 {
            0 => min_pos,
            1 => min_pos / 3.0,
            2 => -min_pos / 7.0,
            _ => 0.0,
        }),
    ));
    rows.push((
        "subnormals with one normal per block".into(),
        row_from(|i| {
            if i % 32 == 3 {
                1e-3
            } else {
                f32::from_bits(0x0000_1234 + i as u32)
            }
        }),
    ));

    // Tiny magnitudes: fp16 scales that underflow to subnormal fp16 or to zero.
    for &s in &[1e-30f64, 1e-20, 1e-10, 1e-8, 6e-8, 1e-7, 6.1e-5, 1e-4] {
        rows.push((format!("tiny normal row scale {s:e}"), normal_row(s)));
    }

    // All equal.
    for &c in &[1.0f32, -1.0, 0.1, -3.7, 1e-3, 1e5, 65504.0, 7.0, 1.0 / 3.0] {
        rows.push((format!("all equal {c}"), vec![c; ROW_LEN]));
    }
    // All equal but one.
    rows.push((
        "all equal but one".into(),
        row_from(|i| if i == 77 { 2.0 } else { 1.0 }),
    ));

    // Alternating signs.
    rows.push((
        "alternating +-1".into(),
        row_from(|i| if i % 2 == 0 { 1.0 } else { -1.0 }),
    ));
    rows.push((
        "alternating +-(i+1)".into(),
        row_from(|i| {
            let v = (i % 32 + 1) as f32;
            if i % 2 == 0 {
                v
            } else {
                -v
            }
        }),
    ));
    {
        let base = normal_row(1.0);
        rows.push((
            "alternating signs, random magnitudes".into(),
            base.iter()
                .enumerate()
                .map(|(i, v)| if i % 2 == 0 { v.abs() } else { -v.abs() })
                .collect(),
        ));
    }

    // Ramps and integers.
    rows.push((
        "ramp -1..1".into(),
        row_from(|i| -1.0 + 2.0 * i as f32 / (ROW_LEN - 1) as f32),
    ));
    rows.push(("integers 0..255".into(), row_from(|i| i as f32)));
    rows.push(("integers -128..127".into(), row_from(|i| i as f32 - 128.0)));
    rows.push((
        "integers -16..15 per block".into(),
        row_from(|i| (i % 32) as f32 - 16.0),
    ));
    rows.push((
        "all positive".into(),
        normal_row(1.0).iter().map(|v| v.abs() + 0.5).collect(),
    ));
    rows.push((
        "all negative".into(),
        normal_row(1.0).iter().map(|v| -v.abs() - 0.5).collect(),
    ));

    // Rounding boundaries: the block maximum is A (first element of each block), the others are
    // A/k * (j + 1/2) for the grid steps k of the formats (Q4_0: max/-8, Q4_1: range/15,
    // Q5_0: max/-16, Q5_1: range/31, Q8_0: amax/127, Q8_K: max/-128, K-quants: 3, 7, 15, 31, 63),
    // exactly and nudged by one ulp either way.
    for &k in &[3.0f32, 7.0, 8.0, 15.0, 16.0, 31.0, 32.0, 63.0, 127.0, 128.0] {
        for &a in &[1.0f32, 3.0, 0.3, 10.0, 1e-3, 12345.6] {
            for nudge in [0i32, 1, -1] {
                for &sign in &[1.0f32, -1.0] {
                    let amax = sign * a;
                    let step = a / k;
                    let r = row_from(|i| {
                        if i % 32 == 0 {
                            return amax;
                        }
                        let j = (i % 32) as f32 % k;
                        let v = step * (j + 0.5) * if i % 2 == 0 { 1.0 } else { -1.0 };
                        nudge_ulps(v, nudge)
                    });
                    rows.push((format!("boundaries A={amax} k={k} nudge={nudge}"), r));
                }
            }
        }
    }
    // Half-integers, quarter-integers after scaling by 1/8 and 1/16 (ties of the round-half
    // rules of the 32-blocks).
    rows.push((
        "half-integers with max -8".into(),
        row_from(|i| {
            if i % 32 == 0 {
                -8.0
            } else {
                (i % 16) as f32 - 7.5
            }
        }),
    ));
    rows.push((
        "half-integers with max 16".into(),
        row_from(|i| {
            if i % 32 == 0 {
                16.0
            } else {
                (i % 32) as f32 - 15.5
            }
        }),
    ));

    rows
}

/// `v` moved by `n` ulps towards +inf (n > 0) or -inf (n < 0), staying finite.
pub fn nudge_ulps(v: f32, n: i32) -> f32 {
    let mut x = v;
    for _ in 0..n.unsigned_abs() {
        x = if n > 0 { next_up(x) } else { next_down(x) };
    }
    x
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

fn next_down(x: f32) -> f32 {
    -next_up(-x)
}

/// Every row of [`edge_rows`] concatenated, with the names.
pub fn edge_rows_flat() -> (Vec<f32>, Vec<String>) {
    let rows = edge_rows();
    let names = rows.iter().map(|(n, _)| n.clone()).collect();
    let data = rows.into_iter().flat_map(|(_, r)| r).collect();
    (data, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let (d, dists) = random_rows(1, 17);
        assert_eq!(d.len(), 17 * ROW_LEN);
        assert_eq!(dists.len(), 17);
        assert!(d.iter().all(|v| v.is_finite()));
        for (name, r) in edge_rows() {
            assert_eq!(r.len(), ROW_LEN, "{name}");
            assert!(r.iter().all(|v| v.is_finite()), "{name}");
        }
        assert_eq!(nudge_ulps(1.0, 1), f32::from_bits(1.0f32.to_bits() + 1));
        assert_eq!(nudge_ulps(1.0, -1), f32::from_bits(1.0f32.to_bits() - 1));
        assert_eq!(nudge_ulps(0.0, -1), -f32::from_bits(1));
    }
}
