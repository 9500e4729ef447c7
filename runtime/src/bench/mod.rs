//! What `xverse-bench` measures, as a library: llama-bench-style prompt (pp) and generation
//! (tg) timings of an [`Engine`], this machine's memory read bandwidth, and the bytes a
//! generated token has to read (for the roofline: bytes/token × tokens/s ÷ bandwidth).

pub mod report;

use std::time::Instant;

use rayon::prelude::*;

use crate::engine::Engine;
use crate::error::RuntimeError;
use crate::kv_cache::KvTypes;
use crate::model::Model;

/// A small seeded generator (splitmix64) for the random token ids of a test.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A token id below `n_vocab`.
    pub fn token(&mut self, n_vocab: usize) -> u32 {
        (self.next_u64() % n_vocab.max(1) as u64) as u32
    }
}

/// Mean and sample standard deviation of `v` (sd 0 for fewer than two values).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// How the cache is filled to a test's depth (`-d`) before the timed part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DepthFill {
    /// Synthetic keys and values written straight into the cache
    /// ([`Engine::fill_cache_synthetic`]): seconds even for 16K positions. The timed tokens
    /// read the cache exactly as they would read a prompt's (same type, same amount, same
    /// layout); only the values differ.
    #[default]
    Synthetic,
    /// A prompt of random token ids evaluated by the model (llama-bench's way; slow on a CPU
    /// for deep caches).
    Prompt,
}

impl std::str::FromStr for DepthFill {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "synthetic" => Ok(DepthFill::Synthetic),
            "prompt" => Ok(DepthFill::Prompt),
            _ => Err(RuntimeError::new(format!(
                "unknown depth fill \"{s}\" (expected synthetic or prompt)"
            ))),
        }
    }
}

/// Fills the cache with `n_depth` positions (untimed part of a test at depth `n_depth`; the
/// tests then start from [`Engine::truncate`]`(n_depth)`). Returns the seconds it took.
pub fn fill_depth(
    engine: &mut Engine<'_>,
    n_depth: usize,
    fill: DepthFill,
    rng: &mut Rng,
) -> Result<f64, RuntimeError> {
    let t = Instant::now();
    engine.truncate(0);
    if n_depth > 0 {
        match fill {
            DepthFill::Synthetic => engine.fill_cache_synthetic(n_depth, rng.next_u64())?,
            DepthFill::Prompt => {
                let n_vocab = engine.model().hparams.vocab as usize;
                let tokens: Vec<u32> = (0..n_depth).map(|_| rng.token(n_vocab)).collect();
                engine.eval(&tokens, false)?;
            }
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Seconds to evaluate a prompt of `n_prompt` random tokens after the first `n_depth` cached
/// positions (the cache must hold them: [`fill_depth`]), as one batch as the engine splits it,
/// logits of the last token only: [`time_prompt_gen`] without generated tokens.
pub fn time_prompt(
    engine: &mut Engine<'_>,
    n_prompt: usize,
    n_depth: usize,
    rng: &mut Rng,
) -> Result<f64, RuntimeError> {
    time_prompt_gen(engine, n_prompt, 0, n_depth, rng)
}

/// Seconds to generate `n_gen` tokens one at a time after the first `n_depth` cached positions
/// (random ids, as llama-bench does: the sampler is not part of the test): [`time_prompt_gen`]
/// without a prompt.
pub fn time_gen(
    engine: &mut Engine<'_>,
    n_gen: usize,
    n_depth: usize,
    rng: &mut Rng,
) -> Result<f64, RuntimeError> {
    time_prompt_gen(engine, 0, n_gen, n_depth, rng)
}

/// Seconds of a prompt of `n_prompt` random tokens (one batch as the engine splits it; none
/// for 0) followed by `n_gen` random tokens evaluated one at a time, after the first `n_depth`
/// cached positions: every test of `xverse-bench` (pp: `n_gen` 0, tg: `n_prompt` 0, and
/// llama-bench's `-pg` test with both). The token ids are drawn before the clock starts.
pub fn time_prompt_gen(
    engine: &mut Engine<'_>,
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    rng: &mut Rng,
) -> Result<f64, RuntimeError> {
    let n_vocab = engine.model().hparams.vocab as usize;
    let prompt: Vec<u32> = (0..n_prompt).map(|_| rng.token(n_vocab)).collect();
    let gen: Vec<u32> = (0..n_gen).map(|_| rng.token(n_vocab)).collect();
    start_at(engine, n_depth)?;
    let t = Instant::now();
    if !prompt.is_empty() {
        engine.eval(&prompt, false)?;
    }
    for &tok in &gen {
        engine.eval(&[tok], false)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Forgets the cache after position `n_depth`; an error if it does not hold that many.
fn start_at(engine: &mut Engine<'_>, n_depth: usize) -> Result<(), RuntimeError> {
    if engine.n_past() < n_depth {
        return Err(RuntimeError::new(format!(
            "the cache holds {} positions, not the depth of {n_depth}",
            engine.n_past()
        )));
    }
    engine.truncate(n_depth);
    Ok(())
}

/// Bytes one generated token reads: every weight except the embedding table, one row of that,
/// and the KV cache of `n_kv` positions (keys and values of `cache_type`).
pub fn bytes_per_token(model: &Model, cache_type: KvTypes, n_kv: f64) -> f64 {
    let embd = model.token_embd();
    let weights: u64 = model
        .gguf()
        .tensors()
        .iter()
        .filter(|t| t.name != "token_embd.weight")
        .map(|t| t.n_bytes)
        .sum();
    let hp = &model.hparams;
    let kv_row = cache_type.row_bytes(hp.head_dim as usize) as f64 * f64::from(hp.kv_heads);
    weights as f64 + embd.row_bytes as f64 + f64::from(hp.layers) * kv_row * n_kv
}

/// Streaming read bandwidth of this machine in bytes/s: `threads` threads each read their own
/// slice of an anonymous map of `bytes` (much larger than the caches; in 2 MiB pages where the
/// kernel gives them, as the repacked weights are; written once before timing) with the widest
/// loads the CPU has (AVX2 when it is detected at run time, else SSE2 or scalar), into several
/// accumulators; best of `reps`.
pub fn read_bandwidth(bytes: usize, threads: usize, reps: usize) -> Result<f64, RuntimeError> {
    Ok(ReadProbe::new(bytes, threads)?.measure(reps))
}

/// The buffer and threads of [`read_bandwidth`], kept so the bandwidth can be measured again
/// between timed runs: on a shared machine it moves by a quarter or more within minutes, so a
/// roofline fraction is only meaningful against a bandwidth measured next to the tokens/s.
pub struct ReadProbe {
    pool: rayon::ThreadPool,
    map: memmap2::MmapMut,
    part: usize,
}

impl ReadProbe {
    /// Maps `bytes` (whole 64-byte lines, at least 512 KiB) and writes them from the
    /// `threads` threads that will read them (first touch places the pages near them).
    ///
    /// The map asks for transparent huge pages (`MADV_HUGEPAGE`), as the repacked weights'
    /// copy does: in 4 KiB pages a stream pays a page walk every 4 KiB and the hardware
    /// prefetchers stop at each page, so the bandwidth would be understated and the roofline
    /// fractions overstated.
    pub fn new(bytes: usize, threads: usize) -> Result<ReadProbe, RuntimeError> {
        let threads = threads.max(1);
        let pool = crate::engine::thread_pool(threads)?;
        let lines = (bytes / 64).max(1 << 13);
        let mut map = memmap2::MmapMut::map_anon(lines * 64).map_err(|e| {
            RuntimeError::new(format!(
                "bandwidth test: cannot map {} bytes: {e}",
                lines * 64
            ))
        })?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        let part = lines.div_ceil(threads);
        let buf = line_slice_mut(&mut map)?;
        pool.install(|| {
            buf.par_chunks_mut(part).enumerate().for_each(|(c, p)| {
                for (i, l) in p.iter_mut().enumerate() {
                    let v = ((c * part + i) * 8) as u64;
                    l.0 = [v, v + 1, v + 2, v + 3, v + 4, v + 5, v + 6, v + 7];
                }
            })
        });
        Ok(ReadProbe { pool, map, part })
    }

    /// Bytes the probe reads per pass.
    pub fn bytes(&self) -> usize {
        self.map.len()
    }

    /// Read bandwidth in bytes/s: the fastest of `reps` passes over the whole buffer, each
    /// thread reading its own slice.
    pub fn measure(&self, reps: usize) -> f64 {
        let mut best = f64::INFINITY;
        let mut sink = 0u64;
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            let s = self.pool.install(|| {
                lines(&self.map)
                    .par_chunks(self.part)
                    .with_max_len(1)
                    .map(sum_lines)
                    .reduce(|| 0, u64::wrapping_add)
            });
            best = best.min(t.elapsed().as_secs_f64());
            sink = sink.wrapping_add(s);
        }
        std::hint::black_box(sink);
        self.bytes() as f64 / best.max(1e-12)
    }
}

/// Roofline fraction of a generation test whose repetition `i` ran at `ts[i]` tokens/s while
/// the machine read `bw[i]` bytes/s: the mean over repetitions of `bytes_per_token · ts[i] /
/// bw[i]` (each rate against the bandwidth measured beside it). `None` when there are no
/// pairs or a bandwidth is not positive.
pub fn roofline_fraction(bytes_per_token: f64, ts: &[f64], bw: &[f64]) -> Option<f64> {
    if ts.is_empty() || ts.len() != bw.len() || bw.iter().any(|&b| b.is_nan() || b <= 0.0) {
        return None;
    }
    let sum: f64 = ts
        .iter()
        .zip(bw)
        .map(|(t, b)| bytes_per_token * t / b)
        .sum();
    Some(sum / ts.len() as f64)
}

/// One 64-byte cache line, aligned to 64 bytes (so every vector load is aligned).
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([u64; 8]);

/// The map as cache lines (it is page-aligned and whole lines long).
fn line_slice_mut(map: &mut [u8]) -> Result<&mut [Line], RuntimeError> {
    bytemuck::try_cast_slice_mut(map)
        .map_err(|e| RuntimeError::new(format!("bandwidth test: buffer not in whole lines: {e}")))
}

/// The map as cache lines; [`ReadProbe::new`] checked the cast once, so this one holds.
fn lines(map: &[u8]) -> &[Line] {
    bytemuck::try_cast_slice(map).unwrap_or(&[])
}

/// Wrapping sum of every `u64` in `p`, with AVX2 loads when the CPU has them.
fn sum_lines(p: &[Line]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked just above).
            return unsafe { sum_lines_avx2(p) };
        }
        // SAFETY: SSE2 is part of the x86_64 baseline.
        return unsafe { sum_lines_sse2(p) };
    }
    #[allow(unreachable_code)]
    sum_lines_scalar(p)
}

/// Portable fallback of [`sum_lines`]: 8 independent lanes.
fn sum_lines_scalar(p: &[Line]) -> u64 {
    let mut acc = [0u64; 8];
    for l in p {
        for (a, &v) in acc.iter_mut().zip(&l.0) {
            *a = a.wrapping_add(v);
        }
    }
    acc.iter().fold(0, |a, &b| a.wrapping_add(b))
}

/// [`sum_lines`] with 256-bit aligned loads, two lines (four accumulators) per step.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_lines_avx2(p: &[Line]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut it = p.chunks_exact(2);
    for c in &mut it {
        let q = c.as_ptr().cast::<__m256i>();
        // SAFETY: `c` is two 64-byte-aligned lines, i.e. four aligned 32-byte vectors.
        unsafe {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_epi64(*a, _mm256_load_si256(q.add(k)));
            }
        }
    }
    for l in it.remainder() {
        let q = l.0.as_ptr().cast::<__m256i>();
        // SAFETY: one 64-byte-aligned line is two aligned 32-byte vectors.
        unsafe {
            acc[0] = _mm256_add_epi64(acc[0], _mm256_load_si256(q));
            acc[1] = _mm256_add_epi64(acc[1], _mm256_load_si256(q.add(1)));
        }
    }
    let s = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    let mut out = [0u64; 4];
    // SAFETY: `out` has room for 32 bytes; the store is unaligned.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), s) };
    out.iter().fold(0, |a, &b| a.wrapping_add(b))
}

/// [`sum_lines`] with 128-bit aligned loads, four accumulators.
///
/// # Safety
/// The CPU must support SSE2 (always true on x86_64).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn sum_lines_sse2(p: &[Line]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm_setzero_si128(); 4];
    for l in p {
        let q = l.0.as_ptr().cast::<__m128i>();
        // SAFETY: one 64-byte-aligned line is four aligned 16-byte vectors.
        unsafe {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm_add_epi64(*a, _mm_load_si128(q.add(k)));
            }
        }
    }
    let s = _mm_add_epi64(_mm_add_epi64(acc[0], acc[1]), _mm_add_epi64(acc[2], acc[3]));
    let mut out = [0u64; 2];
    // SAFETY: `out` has room for 16 bytes; the store is unaligned.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), s) };
    out[0].wrapping_add(out[1])
}

/// llama-bench's `model_type`: `xverse 1B Q8_0`, from the parameter count and
/// `general.file_type` (or the type of the first layer's `attn_q`).
pub fn model_type(model: &Model) -> String {
    let p = model.hparams.parameters() as f64;
    let size = if p >= 1e9 {
        format!("{}B", (p / 1e9).round())
    } else {
        format!("{}M", (p / 1e6).round())
    };
    let ft = model
        .gguf()
        .get_u32("general.file_type")
        .ok()
        .and_then(file_type_name)
        .map(str::to_string)
        .unwrap_or_else(|| model.layer(0).attn_q.ty.to_string());
    format!("xverse {size} {ft}")
}

/// llama.cpp's names of `general.file_type` values.
fn file_type_name(ft: u32) -> Option<&'static str> {
    Some(match ft {
        0 => "all F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K - Medium",
        11 => "Q3_K - Small",
        12 => "Q3_K - Medium",
        13 => "Q3_K - Large",
        14 => "Q4_K - Small",
        15 => "Q4_K - Medium",
        16 => "Q5_K - Small",
        17 => "Q5_K - Medium",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sd() {
        assert_eq!(mean_sd(&[]), (0.0, 0.0));
        assert_eq!(mean_sd(&[3.0]), (3.0, 0.0));
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12 && (s - 1.0).abs() < 1e-12);
    }

    #[test]
    fn rng_is_seeded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..10 {
            let t = a.token(100);
            assert!(t < 100);
            assert_eq!(t, b.token(100));
        }
    }

    #[test]
    fn every_path_sums_everything() {
        let v: Vec<Line> = (0..1003u64)
            .map(|i| Line(std::array::from_fn(|k| i * 8 + k as u64)))
            .collect();
        let want = 8024 * 8023 / 2;
        assert_eq!(sum_lines(&v), want);
        assert_eq!(sum_lines_scalar(&v), want);
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: SSE2 is part of the x86_64 baseline.
            assert_eq!(unsafe { sum_lines_sse2(&v) }, want);
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is present (checked just above).
                assert_eq!(unsafe { sum_lines_avx2(&v) }, want);
            }
        }
    }

    #[test]
    fn bandwidth_is_positive() {
        assert!(read_bandwidth(1 << 20, 2, 1).unwrap() > 0.0);
        let probe = ReadProbe::new(3 << 20, 2).unwrap();
        assert_eq!(probe.bytes(), 3 << 20);
        assert!(probe.measure(2) > 0.0);
    }

    #[test]
    fn roofline_pairs_each_rate_with_its_bandwidth() {
        // 1 GB per token: 10 tokens/s at 20 GB/s is 0.5, 30 tokens/s at 40 GB/s is 0.75
        let f = roofline_fraction(1e9, &[10.0, 30.0], &[20e9, 40e9]).unwrap();
        assert!((f - 0.625).abs() < 1e-12, "{f}");
        // not the ratio of the means (20 / 30e9 · 1e9 = 0.667)
        assert!((f - 2.0 / 3.0).abs() > 0.01);
        assert_eq!(roofline_fraction(1e9, &[], &[]), None);
        assert_eq!(roofline_fraction(1e9, &[1.0], &[]), None);
        assert_eq!(roofline_fraction(1e9, &[1.0], &[0.0]), None);
        assert_eq!(roofline_fraction(1e9, &[1.0], &[f64::NAN]), None);
    }
}
