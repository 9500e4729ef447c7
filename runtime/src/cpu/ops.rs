//! The small operations of the forward pass, on f32 slices: dot product, RMSNorm, rotary
//! embedding, softmax, SiLU, residual add, and the f16 rounding ggml applies to the operand of
//! an f16 dot product.

use half::f16;

/// `Σ a[i]·b[i]` in f32, accumulated in 8 independent lanes (like ggml's SIMD dot products,
/// and more accurate than one running sum on long rows).
///
/// On x86-64 with AVX the same lanes are computed by 256-bit vectors (separate multiply and
/// add, no FMA), so the result is bit for bit the portable one.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), the only requirement of `dot_avx`.
        return unsafe { dot_avx(a, b) };
    }
    dot_lanes(a, b)
}

/// [`dot_lanes`] compiled for AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dot_avx(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `out = x / sqrt(mean(x²) + eps) * w` (the mean of squares summed in f64, as ggml does).
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ss: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean = (ss / x.len().max(1) as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

/// Cosines and sines of the rotary angles of position `pos`: `theta_i = pos · base^(-2i/dims)`
/// for `i < dims/2` (computed in f64).
pub fn rope_angles(pos: usize, dims: usize, base: f32, cos: &mut [f32], sin: &mut [f32]) {
    let half = dims / 2;
    for i in 0..half.min(cos.len()).min(sin.len()) {
        let theta = pos as f64 * f64::from(base).powf(-2.0 * i as f64 / dims as f64);
        cos[i] = theta.cos() as f32;
        sin[i] = theta.sin() as f32;
    }
}

/// Rotary embedding of adjacent pairs (ggml's "normal" rope) on one head of `x`: pair
/// `(x[2i], x[2i+1])` is rotated by `theta_i` for `i < cos.len()`; the rest is untouched.
pub fn rope_pairs(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, &c), &s) in x.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = x0 * c - x1 * s;
        pair[1] = x0 * s + x1 * c;
    }
}

/// Softmax in place (max subtracted; the sum in f64). Entries of `-inf` get probability 0.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `x / (1 + e^-x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `gate = silu(gate) * up`, elementwise (SwiGLU).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// `acc += x`, elementwise (residual connection).
pub fn add(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// Rounds every value to the nearest f16 and back (what ggml does to the f32 operand of a dot
/// product with an f16 matrix).
pub fn round_f16(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = f16::from_f32(*v).to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn dot_is_the_portable_dot_bit_for_bit() {
        for n in [0, 1, 7, 8, 9, 31, 64, 100, 2048] {
            let a: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.731).sin() * 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.193).cos() / 7.0).collect();
            assert_eq!(dot(&a, &b).to_bits(), dot_lanes(&a, &b).to_bits(), "{n}");
        }
    }

    #[test]
    fn dot_matches_f64() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).cos()).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!(close(dot(&a, &b), want as f32, 1e-5));
        assert_eq!(dot(&[], &[]), 0.0);
    }

    #[test]
    fn rmsnorm_by_hand() {
        // mean of squares of [3, 4] is 12.5
        let mut out = [0f32; 2];
        rmsnorm(&mut out, &[3.0, 4.0], &[1.0, 2.0], 0.0);
        let s = 1.0 / 12.5f32.sqrt();
        assert!(close(out[0], 3.0 * s, 1e-6) && close(out[1], 8.0 * s, 1e-6));
        // eps matters for a zero vector: no NaN
        rmsnorm(&mut out, &[0.0, 0.0], &[1.0, 1.0], 1e-6);
        assert_eq!(out, [0.0, 0.0]);
    }

    #[test]
    fn rope_on_a_known_vector() {
        // head of 4 dims, base 10000, position 3: theta_0 = 3, theta_1 = 3 / 100
        let (mut c, mut s) = ([0f32; 2], [0f32; 2]);
        rope_angles(3, 4, 10000.0, &mut c, &mut s);
        assert!(close(c[0], 3f32.cos(), 1e-6) && close(s[0], 3f32.sin(), 1e-6));
        assert!(close(c[1], 0.03f32.cos(), 1e-6) && close(s[1], 0.03f32.sin(), 1e-6));
        let mut x = [1.0, 0.0, 0.0, 1.0];
        rope_pairs(&mut x, &c, &s);
        // (1, 0) rotated by 3 rad; (0, 1) rotated by 0.03 rad
        let want = [3f32.cos(), 3f32.sin(), -(0.03f32.sin()), 0.03f32.cos()];
        for (a, b) in x.iter().zip(want) {
            assert!(close(*a, b, 1e-6), "{x:?} vs {want:?}");
        }
        // position 0 is the identity; rope_dims < head_dim leaves the tail alone
        let (mut c, mut s) = ([0f32; 1], [0f32; 1]);
        rope_angles(0, 2, 10000.0, &mut c, &mut s);
        let mut y = [0.5, -0.25, 7.0, 8.0];
        rope_pairs(&mut y, &c, &s);
        assert_eq!(y, [0.5, -0.25, 7.0, 8.0]);
        rope_angles(5, 2, 10000.0, &mut c, &mut s);
        rope_pairs(&mut y, &c, &s);
        assert_eq!(&y[2..], &[7.0, 8.0]);
        // a rotation keeps the norm
        assert!(close(y[0] * y[0] + y[1] * y[1], 0.3125, 1e-6));
    }

    #[test]
    fn softmax_by_hand() {
        let mut x = [1.0, 2.0, 3.0, f32::NEG_INFINITY];
        softmax(&mut x);
        let e: [f32; 3] = [(-2f32).exp(), (-1f32).exp(), 1.0];
        let z: f32 = e.iter().sum();
        for i in 0..3 {
            assert!(close(x[i], e[i] / z, 1e-6));
        }
        assert_eq!(x[3], 0.0);
        // large values do not overflow
        let mut y = [1000.0, 1000.0];
        softmax(&mut y);
        assert_eq!(y, [0.5, 0.5]);
    }

    #[test]
    fn silu_and_swiglu() {
        assert_eq!(silu(0.0), 0.0);
        assert!(close(silu(1.0), 1.0 / (1.0 + (-1f32).exp()), 1e-7));
        assert!(close(silu(-20.0), -20.0 * (-20f32).exp(), 1e-9));
        let mut g = [1.0, -1.0];
        swiglu(&mut g, &[2.0, 3.0]);
        assert!(close(g[0], 2.0 * silu(1.0), 1e-7) && close(g[1], 3.0 * silu(-1.0), 1e-7));
    }

    #[test]
    fn f16_rounding() {
        let mut x = [1.0 + 1.0 / 4096.0, 65504.0, 0.1];
        round_f16(&mut x);
        assert_eq!(x[0], 1.0);
        assert_eq!(x[1], 65504.0);
        assert!(close(x[2], 0.1, 1e-4) && x[2] != 0.1);
    }
}
