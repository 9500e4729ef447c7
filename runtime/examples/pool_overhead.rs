//! Fork-join overhead of the thread pools a decode step could split its matrix × vector
//! products over: rayon (as `cpu::matmul` uses it today, `par_chunks_mut` inside the engine's
//! `pool.install`; plus `scope` and `join`) against a minimal persistent pool whose workers
//! spin on a generation counter.
//!
//! ```text
//! cargo run --release -p xverse-runtime --example pool_overhead [-- ROUNDS]
//! ```
//!
//! Three measurements, each with 1 and 2 threads, variants interleaved (their order rotates
//! every round) and repeated; median and min–max over the rounds:
//! - (a) an almost empty parallel job (64 outputs, a store each): ns per fork-join;
//! - (b) one decode step of a 65B-shaped model scaled down 16× in width (80 layers × 7
//!   products, Q4_0 weights held in memory, Q8_0 activations): ms per step;
//! - (c) 560 products of 512 × 512 Q4_0, where the overhead is a large part of each product.
//!
//! The conclusion prints the per-call difference as a fraction of a 65B Q4_0 decode step
//! (≈ 37 GB read per token at ≈ 30 GB/s ≈ 1.2 s, 560 products) and of a ~100 ms step with
//! ~150 products (bench-1b scale).

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use xverse_quant::kernels;
use xverse_quant::GgmlType;

/// A persistent pool whose workers spin on a generation counter between jobs.
mod spin {
    use std::cell::UnsafeCell;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex, PoisonError};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    /// A job as the workers see it: called with the worker's index.
    type Job = dyn Fn(usize) + Sync;

    struct Shared {
        /// Bumped once per job (and once to stop); workers wait for it to change.
        generation: AtomicU64,
        /// The current job. Written by the owner only while every worker is idle (before it
        /// bumps `generation`, after all workers counted themselves in `done`); read by the
        /// workers only between seeing a new generation and counting themselves in `done`.
        job: UnsafeCell<Option<*const Job>>,
        /// Workers that finished the current job.
        done: AtomicUsize,
        /// Set (before a last bump of `generation`) when the pool is dropped.
        stop: AtomicBool,
        /// A worker's job panicked (reported by `run` on the owner's thread).
        panicked: AtomicBool,
        /// Workers parked on `wake` (or about to).
        sleepers: AtomicUsize,
        lock: Mutex<()>,
        wake: Condvar,
        /// How long an idle worker spins before it parks.
        spin: Duration,
    }

    // SAFETY: the only field that is not Sync is `job`, a raw pointer in an UnsafeCell. Its
    // accesses are ordered by `generation` and `done` (see the field's comment): the owner
    // writes it while no worker can read it, publishes it with a SeqCst (release) bump of
    // `generation` that workers load with acquire, and writes it again only after observing
    // (acquire) every worker's release increment of `done`. The pointee is `Sync`, so calling
    // it from several threads at once is allowed.
    unsafe impl Sync for Shared {}
    // SAFETY: `Shared` is only ever shared through an `Arc` (which needs Send + Sync); the raw
    // pointer it holds points to a `Sync` closure that outlives every use (see `SpinPool::run`).
    unsafe impl Send for Shared {}

    /// The owner's side of the pool. `run` takes `&mut self`: one job at a time.
    pub struct SpinPool {
        shared: Arc<Shared>,
        workers: Vec<JoinHandle<()>>,
    }

    impl SpinPool {
        /// A pool of `n_threads` (the caller of `run` counts as thread 0, so `n_threads - 1`
        /// workers are started), whose idle workers spin for `spin` before parking.
        pub fn new(n_threads: usize, spin: Duration) -> SpinPool {
            let shared = Arc::new(Shared {
                generation: AtomicU64::new(0),
                job: UnsafeCell::new(None),
                done: AtomicUsize::new(0),
                stop: AtomicBool::new(false),
                panicked: AtomicBool::new(false),
                sleepers: AtomicUsize::new(0),
                lock: Mutex::new(()),
                wake: Condvar::new(),
                spin,
            });
            let workers = (1..n_threads.max(1))
                .map(|index| {
                    let shared = Arc::clone(&shared);
                    std::thread::Builder::new()
                        .name(format!("spin-{index}"))
                        .spawn(move || worker(&shared, index))
                        .expect("cannot start a pool thread")
                })
                .collect();
            SpinPool { shared, workers }
        }

        /// Threads that run a job (the caller included).
        pub fn n_threads(&self) -> usize {
            self.workers.len() + 1
        }

        /// Calls `f(i)` once for each thread `i` in `0..n_threads()`, `f(0)` on the calling
        /// thread, and returns when every call has returned. A panic in a worker's call is
        /// re-raised here (after all calls have returned).
        pub fn run(&mut self, f: &(dyn Fn(usize) + Sync)) {
            let sh = &*self.shared;
            let n_workers = self.workers.len();
            if n_workers == 0 {
                f(0);
                return;
            }
            // SAFETY: only the lifetime of the trait object is erased (same fat pointer). The
            // workers dereference it only for this generation, and this function does not
            // return (nor unwind) before `WaitAll` below has seen every worker count itself
            // in `done`, so `f` outlives every use of the pointer.
            let job =
                unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const Job>(f) };
            sh.done.store(0, Ordering::Relaxed);
            // SAFETY: no worker reads `job` now: each one counted itself in `done` for the
            // previous generation (observed by the previous `WaitAll`, acquire) or none has
            // run yet, and `&mut self` excludes another owner-side call.
            unsafe { *sh.job.get() = Some(job) };
            // publishes `job` and the reset of `done` (release); SeqCst against `sleepers`
            sh.generation.fetch_add(1, Ordering::SeqCst);
            if sh.sleepers.load(Ordering::SeqCst) > 0 {
                let _g = sh.lock.lock().unwrap_or_else(PoisonError::into_inner);
                sh.wake.notify_all();
            }
            let wait = WaitAll { sh, n_workers };
            f(0);
            drop(wait);
            if sh.panicked.swap(false, Ordering::Relaxed) {
                panic!("a job panicked on a pool thread");
            }
        }
    }

    /// Waits (also when the owner's own call unwinds) until every worker finished the job,
    /// then clears it.
    struct WaitAll<'a> {
        sh: &'a Shared,
        n_workers: usize,
    }

    impl Drop for WaitAll<'_> {
        fn drop(&mut self) {
            let mut spins = 0u32;
            while self.sh.done.load(Ordering::Acquire) < self.n_workers {
                if spins < 1 << 14 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    // a worker was descheduled: let it have the core
                    std::thread::yield_now();
                }
            }
            // SAFETY: every worker counted itself in `done` (acquire above), after its last
            // read of `job`; none reads it again before the next generation.
            unsafe { *self.sh.job.get() = None };
        }
    }

    fn worker(sh: &Shared, index: usize) {
        let mut seen = 0u64;
        loop {
            seen = next_generation(sh, seen);
            if sh.stop.load(Ordering::Acquire) {
                return;
            }
            // SAFETY: the owner wrote `job` before bumping `generation` to `seen` (release),
            // which this thread loaded with acquire (SeqCst) in `next_generation`; the owner
            // does not write it again until this thread increments `done` below.
            let job = unsafe { *sh.job.get() };
            if let Some(job) = job {
                // SAFETY: the closure behind `job` is alive until every worker counted itself
                // in `done` (`SpinPool::run` waits for that before returning or unwinding),
                // and it is `Sync`, so it may be called from this thread concurrently.
                let job = unsafe { &*job };
                if catch_unwind(AssertUnwindSafe(|| job(index))).is_err() {
                    sh.panicked.store(true, Ordering::Relaxed);
                }
            }
            sh.done.fetch_add(1, Ordering::Release);
        }
    }

    /// Spins until `generation` differs from `seen` (then returns it); parks after `sh.spin`.
    fn next_generation(sh: &Shared, seen: u64) -> u64 {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = sh.generation.load(Ordering::Acquire);
            if g != seen {
                return g;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(128) && start.elapsed() >= sh.spin {
                break;
            }
        }
        // park: the SeqCst increment of `sleepers` then load of `generation` here, against the
        // owner's SeqCst bump of `generation` then load of `sleepers`, means that either this
        // thread sees the new generation or the owner sees a sleeper and notifies under the lock
        // (which this thread holds from its check until `wait` releases it)
        let mut guard = sh.lock.lock().unwrap_or_else(PoisonError::into_inner);
        sh.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let g = sh.generation.load(Ordering::SeqCst);
            if g != seen {
                sh.sleepers.fetch_sub(1, Ordering::SeqCst);
                return g;
            }
            guard = sh.wake.wait(guard).unwrap_or_else(PoisonError::into_inner);
        }
    }

    impl Drop for SpinPool {
        fn drop(&mut self) {
            let sh = &*self.shared;
            sh.stop.store(true, Ordering::Release);
            sh.generation.fetch_add(1, Ordering::SeqCst);
            {
                let _g = sh.lock.lock().unwrap_or_else(PoisonError::into_inner);
                sh.wake.notify_all();
            }
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}

use spin::SpinPool;

/// How long an idle spinning worker spins before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// One weight matrix: `n_out` rows of `n_in` Q4_0 weights.
struct Mat {
    n_in: usize,
    n_out: usize,
    row_bytes: usize,
    data: Vec<u8>,
}

impl Mat {
    fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

/// xorshift64*
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Random Q4_0 rows: random nibbles, block scales in [2^-3, 2^-2) (finite, normal f16).
fn random_q4_0(n_in: usize, n_out: usize, rng: &mut Rng) -> Mat {
    let row_bytes = GgmlType::Q4_0
        .bytes_for(n_in as u64)
        .expect("rows of whole Q4_0 blocks") as usize;
    let mut data = vec![0u8; row_bytes * n_out];
    for chunk in data.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    for block in data.chunks_exact_mut(18) {
        let d: u16 = 0x3000 | (block[0] as u16 & 0xff);
        block[..2].copy_from_slice(&d.to_le_bytes());
    }
    Mat {
        n_in,
        n_out,
        row_bytes,
        data,
    }
}

/// Rows per task as `cpu::matmul::rows_per_task` computes them for one token.
fn rows_per_task_matmul(n_rows: usize, threads: usize) -> usize {
    let by_threads = n_rows.div_ceil(4 * threads.max(1));
    let by_work = 65_536usize.div_ceil(64).max(1);
    by_threads.max(by_work.min(n_rows)).max(1)
}

/// Rows per task for a forced split: 4 tasks per thread.
fn rows_per_task_split(n_rows: usize, threads: usize) -> usize {
    n_rows.div_ceil(4 * threads.max(1)).max(1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// a plain loop on the calling thread (the reference)
    Serial,
    /// `par_chunks_mut` with `cpu::matmul`'s rows per task (what decode does today)
    RayonMatmul,
    /// `par_chunks_mut`, 4 tasks per thread
    RayonChunks,
    /// `rayon::scope`, one static part per thread
    RayonScope,
    /// recursive `rayon::join` down to one static part per thread (at least 2 parts)
    RayonJoin,
    /// spinning pool, atomic counter over tasks of 4 per thread
    SpinDyn,
    /// spinning pool, one static part per thread
    SpinStatic,
}

const VARIANTS: [Variant; 7] = [
    Variant::Serial,
    Variant::RayonMatmul,
    Variant::RayonChunks,
    Variant::RayonScope,
    Variant::RayonJoin,
    Variant::SpinDyn,
    Variant::SpinStatic,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Serial => "serial loop",
            Variant::RayonMatmul => "rayon par_chunks_mut (matmul's split)",
            Variant::RayonChunks => "rayon par_chunks_mut (4 tasks/thread)",
            Variant::RayonScope => "rayon scope (1 part/thread)",
            Variant::RayonJoin => "rayon join (1 part/thread, >=2)",
            Variant::SpinDyn => "spin pool (atomic tasks, 4/thread)",
            Variant::SpinStatic => "spin pool (1 part/thread)",
        }
    }
    fn is_spin(self) -> bool {
        matches!(self, Variant::SpinDyn | Variant::SpinStatic)
    }
}

/// The pools of one thread count.
struct Pools {
    threads: usize,
    rayon: rayon::ThreadPool,
    spin: SpinPool,
}

impl Pools {
    fn new(threads: usize) -> Pools {
        let rayon = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("rayon-{i}"))
            .build()
            .expect("rayon pool");
        Pools {
            threads,
            rayon,
            spin: SpinPool::new(threads, SPIN),
        }
    }
}

/// `y[r] = f(r)` for every row, split over the threads as `v` does. Rayon variants must be
/// called inside the pool's `install` (as the engine calls matmul); `ya` is the spin pool's
/// output (safe shared writes: a relaxed atomic store is a plain store on x86/ARM).
fn parallel_rows(
    v: Variant,
    threads: usize,
    spin: &mut SpinPool,
    y: &mut [f32],
    ya: &[AtomicU32],
    f: &(dyn Fn(usize) -> f32 + Sync),
) {
    let n = y.len();
    match v {
        Variant::Serial => {
            for (r, o) in y.iter_mut().enumerate() {
                *o = f(r);
            }
        }
        Variant::RayonMatmul | Variant::RayonChunks => {
            let per = if v == Variant::RayonMatmul {
                rows_per_task_matmul(n, threads)
            } else {
                rows_per_task_split(n, threads)
            };
            y.par_chunks_mut(per).enumerate().for_each(|(c, out)| {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = f(c * per + j);
                }
            });
        }
        Variant::RayonScope => {
            let per = n.div_ceil(threads.max(1)).max(1);
            rayon::scope(|s| {
                let mut parts = y.chunks_mut(per).enumerate();
                let first = parts.next();
                for (c, out) in parts {
                    s.spawn(move |_| {
                        for (j, o) in out.iter_mut().enumerate() {
                            *o = f(c * per + j);
                        }
                    });
                }
                if let Some((_, out)) = first {
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = f(j);
                    }
                }
            });
        }
        Variant::RayonJoin => join_split(y, 0, threads.max(2), f),
        Variant::SpinDyn => {
            let per = rows_per_task_split(n, threads);
            let next = AtomicUsize::new(0);
            spin.run(&|_| loop {
                let start = next.fetch_add(1, Ordering::Relaxed) * per;
                if start >= n {
                    break;
                }
                for (r, o) in ya.iter().enumerate().take((start + per).min(n)).skip(start) {
                    o.store(f(r).to_bits(), Ordering::Relaxed);
                }
            });
        }
        Variant::SpinStatic => {
            let t = spin.n_threads();
            spin.run(&|i| {
                let rows: Range<usize> = i * n / t..(i + 1) * n / t;
                for r in rows {
                    ya[r].store(f(r).to_bits(), Ordering::Relaxed);
                }
            });
        }
    }
}

fn join_split(y: &mut [f32], start: usize, parts: usize, f: &(dyn Fn(usize) -> f32 + Sync)) {
    if parts <= 1 || y.len() <= 1 {
        for (j, o) in y.iter_mut().enumerate() {
            *o = f(start + j);
        }
        return;
    }
    let half = parts / 2;
    let mid = y.len() * half / parts;
    let (a, b) = y.split_at_mut(mid);
    rayon::join(
        || join_split(a, start, half, f),
        || join_split(b, start + mid, parts - half, f),
    );
}

/// Runs `sample` with variant `v` in the right context (rayon variants inside the pool's
/// `install`, as the engine runs a forward pass) and returns the seconds it measured itself.
fn timed(
    pools: &mut Pools,
    v: Variant,
    sample: &mut (dyn FnMut(&mut SpinPool) -> f64 + Send),
) -> f64 {
    if v.is_spin() || v == Variant::Serial {
        sample(&mut pools.spin)
    } else {
        let spin = &mut pools.spin;
        pools.rayon.install(|| sample(spin))
    }
}

/// Checks that every variant writes every output, as the serial loop computes it.
fn verify(pools: &mut Pools, mats: &[Mat], x: &[f32]) {
    let threads = pools.threads;
    let mut act = Vec::new();
    for m in mats {
        kernels::quantize_activations(GgmlType::Q4_0, &x[..m.n_in], &mut act);
        let a = &act[..];
        let dot = |r: usize| kernels::vec_dot(GgmlType::Q4_0, m.n_in, m.row(r), a);
        let want: Vec<f32> = (0..m.n_out).map(dot).collect();
        for v in VARIANTS {
            let mut y = vec![f32::NAN; m.n_out];
            let ya: Vec<AtomicU32> = (0..m.n_out)
                .map(|_| AtomicU32::new(f32::NAN.to_bits()))
                .collect();
            timed(pools, v, &mut |spin| {
                parallel_rows(v, threads, spin, &mut y, &ya, &dot);
                0.0
            });
            let got: Vec<f32> = if v.is_spin() {
                ya.iter()
                    .map(|o| f32::from_bits(o.load(Ordering::Relaxed)))
                    .collect()
            } else {
                y
            };
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits()),
                "{} with {threads} threads computes other outputs than the serial loop",
                v.name()
            );
        }
    }
}

/// A decode-shaped set of products: `layers` × (q, k, v, o, gate, up, down).
fn decode_model(d: usize, d_kv: usize, ffn: usize, layers: usize, rng: &mut Rng) -> Vec<Mat> {
    let mut mats = Vec::with_capacity(layers * 7);
    for _ in 0..layers {
        for (n_in, n_out) in [
            (d, d),
            (d, d_kv),
            (d, d_kv),
            (d, d),
            (d, ffn),
            (d, ffn),
            (ffn, d),
        ] {
            mats.push(random_q4_0(n_in, n_out, rng));
        }
    }
    mats
}

/// Output buffers: `y` for the serial and rayon variants, `ya` for the spin pool (safe shared
/// writes: a relaxed atomic store is a plain store on x86/ARM), `act` the quantized activations.
struct Bufs {
    y: Vec<f32>,
    ya: Vec<AtomicU32>,
    act: Vec<u8>,
}

/// All products of `mats` with `x` (activations quantized once per product on the caller,
/// as `cpu::matmul` does), rows split as `v` does; returns a checksum of the outputs.
fn products(
    v: Variant,
    threads: usize,
    spin: &mut SpinPool,
    mats: &[Mat],
    x: &[f32],
    b: &mut Bufs,
) -> f64 {
    let mut sum = 0f64;
    for m in mats {
        kernels::quantize_activations(GgmlType::Q4_0, &x[..m.n_in], &mut b.act);
        let a = &b.act[..];
        let dot = |r: usize| kernels::vec_dot(GgmlType::Q4_0, m.n_in, m.row(r), a);
        parallel_rows(
            v,
            threads,
            spin,
            &mut b.y[..m.n_out],
            &b.ya[..m.n_out],
            &dot,
        );
        sum += if v.is_spin() {
            f32::from_bits(b.ya[m.n_out - 1].load(Ordering::Relaxed)) as f64
        } else {
            b.y[m.n_out - 1] as f64
        };
    }
    sum
}

/// One call over the first 64 outputs with a trivial job.
fn empty_call(v: Variant, threads: usize, spin: &mut SpinPool, b: &mut Bufs) {
    let f = |r: usize| r as f32;
    parallel_rows(v, threads, spin, &mut b.y[..64], &b.ya[..64], &f);
}

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(xs: &[f64]) -> Stats {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stats {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bench {
    Empty,
    Decode,
    Small,
}

const BENCHES: [Bench; 3] = [Bench::Empty, Bench::Decode, Bench::Small];
const THREADS: [usize; 2] = [1, 2];
/// fork-joins per sample of the empty job
const EMPTY_CALLS: usize = 4000;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
        .max(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // 65B (XVERSE-65B: d 8192, 8 KV heads of 128, ffn 22016, 80 layers) at 1/16 width
    let decode = decode_model(512, 64, 1376, 80, &mut rng);
    let small: Vec<Mat> = (0..560).map(|_| random_q4_0(512, 512, &mut rng)).collect();
    let decode_bytes: usize = decode.iter().map(|m| m.data.len()).sum();
    let x: Vec<f32> = (0..4096).map(|_| rng.f32()).collect();
    let max_out = 4096;
    let mut bufs = Bufs {
        y: vec![0f32; max_out],
        ya: (0..max_out).map(|_| AtomicU32::new(0)).collect(),
        act: Vec::new(),
    };
    let mut pools: Vec<Pools> = THREADS.iter().map(|&t| Pools::new(t)).collect();
    for p in &mut pools {
        verify(p, &decode[..14], &x);
        verify(p, &small[..4], &x);
    }

    println!(
        "pool_overhead: {} rounds, SIMD {}, decode model {} products / {:.0} MB Q4_0, small {} × 512×512, spin {} µs before parking",
        rounds,
        kernels::simd_level().name(),
        decode.len(),
        decode_bytes as f64 / 1e6,
        small.len(),
        SPIN.as_micros()
    );

    // the reference checksums (serial), to check every variant computes the same
    let mut reference = [0f64; 3];
    {
        let spin = &mut pools[0].spin;
        reference[1] = products(Variant::Serial, 1, spin, &decode, &x, &mut bufs);
        reference[2] = products(Variant::Serial, 1, spin, &small, &x, &mut bufs);
    }

    // samples[bench][threads][variant]: seconds per unit (per call / per step)
    let mut samples = vec![vec![vec![Vec::<f64>::new(); VARIANTS.len()]; THREADS.len()]; 3];
    let t_start = Instant::now();
    for round in 0..rounds {
        for (bi, &bench) in BENCHES.iter().enumerate() {
            for (ti, pools) in pools.iter_mut().enumerate() {
                let threads = pools.threads;
                for k in 0..VARIANTS.len() {
                    let vi = (k + round) % VARIANTS.len();
                    let v = VARIANTS[vi];
                    // let the idle workers of the previous variant park / sleep
                    std::thread::sleep(Duration::from_millis(2));
                    let (secs, units, check) = match bench {
                        Bench::Empty => {
                            let mut sample = |spin: &mut SpinPool| {
                                // one untimed call wakes the workers (as the first product
                                // of a step would)
                                empty_call(v, threads, spin, &mut bufs);
                                let t0 = Instant::now();
                                for _ in 0..EMPTY_CALLS {
                                    empty_call(v, threads, spin, &mut bufs);
                                }
                                t0.elapsed().as_secs_f64()
                            };
                            (timed(pools, v, &mut sample), EMPTY_CALLS, None)
                        }
                        Bench::Decode | Bench::Small => {
                            let mats = if bench == Bench::Decode {
                                &decode
                            } else {
                                &small
                            };
                            let mut sum = 0f64;
                            let mut sample = |spin: &mut SpinPool| {
                                empty_call(v, threads, spin, &mut bufs);
                                let t0 = Instant::now();
                                sum = products(v, threads, spin, mats, &x, &mut bufs);
                                t0.elapsed().as_secs_f64()
                            };
                            let secs = timed(pools, v, &mut sample);
                            (secs, 1, Some(sum))
                        }
                    };
                    if let Some(sum) = check {
                        assert!(
                            sum.to_bits() == reference[bi].to_bits(),
                            "{} with {threads} threads: checksum {sum} != {}",
                            v.name(),
                            reference[bi]
                        );
                    }
                    samples[bi][ti][vi].push(secs / units as f64);
                }
            }
        }
    }
    println!(
        "({:.1} s of measurement; each cell: median [min – max] over {rounds} rounds)\n",
        t_start.elapsed().as_secs_f64()
    );

    let titles = [
        format!("(a) empty fork-join over 64 outputs: ns per call ({EMPTY_CALLS} calls a sample)"),
        format!(
            "(b) decode step, {} Q4_0 products (65B shape at 1/16 width): ms per step",
            decode.len()
        ),
        format!(
            "(c) {} products of 512×512 Q4_0: µs per product",
            small.len()
        ),
    ];
    let scale = [1e9, 1e3, 1e6 / small.len() as f64];
    let prec = [0usize, 2, 2];
    for (bi, title) in titles.iter().enumerate() {
        println!("{title}");
        println!("  {:<40} {:>28} {:>28}", "variant", "1 thread", "2 threads");
        for (vi, v) in VARIANTS.iter().enumerate() {
            let cells: Vec<String> = (0..THREADS.len())
                .map(|ti| {
                    let s = stats(&samples[bi][ti][vi]);
                    let p = prec[bi];
                    format!(
                        "{:.p$} [{:.p$} – {:.p$}]",
                        s.median * scale[bi],
                        s.min * scale[bi],
                        s.max * scale[bi]
                    )
                })
                .collect();
            println!("  {:<40} {:>28} {:>28}", v.name(), cells[0], cells[1]);
        }
        println!();
    }

    // conclusion, 2 threads
    let med = |bi: usize, v: Variant| {
        let vi = VARIANTS.iter().position(|&w| w == v).expect("variant");
        stats(&samples[bi][1][vi]).median
    };
    let rayon_call = med(0, Variant::RayonChunks);
    let spin_call = med(0, Variant::SpinDyn).min(med(0, Variant::SpinStatic));
    let saved = rayon_call - spin_call;
    let step_65b = 1.2;
    let step_1b = 0.1;
    let frac_65b = 560.0 * saved / step_65b;
    let frac_1b = 150.0 * saved / step_1b;
    for (bi, what, unit, k) in [
        (1, "decode step (b)", "ms", 1e3),
        (2, "512x512 product (c)", "µs", 1e6 / small.len() as f64),
    ] {
        let r = med(bi, Variant::RayonChunks);
        let sp = med(bi, Variant::SpinDyn);
        println!(
            "{what}, 2 threads: rayon par_chunks_mut (4 tasks/thread) {:.2} {unit}, spin pool (same split) {:.2} {unit} ({:+.1}%); rayon with matmul's split {:.2} {unit}, serial {:.2} {unit}",
            r * k,
            sp * k,
            (sp / r - 1.0) * 100.0,
            med(bi, Variant::RayonMatmul) * k,
            med(bi, Variant::Serial) * k,
        );
    }
    let decision = if frac_65b.max(frac_1b) > 0.01 {
        "SWITCH: the spinning pool saves more than 1% of a decode step"
    } else {
        "KEEP RAYON: the spinning pool saves less than 1% of a decode step at 65B and bench-1b scale"
    };
    println!("conclusion: {decision}");
}
