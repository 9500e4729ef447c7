//! Single-threaded matrix × vector speed of one kernel at a time, ours against ggml b2757's
//! `vec_dot` (taken from its type-traits table), interleaved, on the same bytes:
//! `cargo run --release -p xverse-tests --example vec_dot_vs_ggml [COLS]`, or on the rows of
//! tensors of a model file, read through its memory map as decode reads them:
//! `… --example vec_dot_vs_ggml FILE.gguf [TENSOR…]` (default: one tensor of each type).
//!
//! Two matrix sizes per type: one that stays in the L2 cache (what the kernel's instructions
//! cost) and one of ~64 MiB that streams from memory (what decode sees). Prints GB/s of weight
//! bytes and the ratio ours / ggml's (> 1: ours is faster).

use ggml_sys_bleedingedge as sys;
use std::ffi::c_void;
use std::hint::black_box;
use std::time::Instant;
use xverse_quant::blocks;
use xverse_quant::kernels;
use xverse_quant::GgmlType;
use xverse_tests::rng::SplitMix64;

fn ggml_vec_dot(ty: GgmlType) -> (sys::ggml_vec_dot_t, u32) {
    xverse_tests::oracle::init();
    // SAFETY: `ty.id()` is one of the types b2757 knows (the caller only passes those); the
    // function returns a copy of a static table entry.
    let t = unsafe { sys::ggml_internal_get_type_traits(ty.id()) };
    (t.vec_dot, t.vec_dot_type)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a.ends_with(".gguf")) {
        return from_file(&args[0], &args[1..]);
    }
    let cols: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(4096);
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::Q5K,
        GgmlType::F16,
    ];
    let mut rng = SplitMix64::new(0x1234_5678);
    let mut rnd = move || rng.uniform(-1.0, 1.0) as f32;
    let x: Vec<f32> = (0..cols).map(|_| rnd()).collect();
    println!(
        "{cols} columns, 1 thread, ours at {:?}",
        kernels::simd_level()
    );
    println!(
        "{:<6} {:>8} {:>12} {:>12} {:>7}",
        "type", "MiB", "ours GB/s", "ggml GB/s", "ratio"
    );
    for ty in types {
        let (Some(gdot), gact) = ggml_vec_dot(ty) else {
            continue;
        };
        assert_eq!(
            gact,
            kernels::vec_dot_type(ty).id(),
            "{ty}: activation type"
        );
        let row_bytes = ty.bytes_for(cols as u64).unwrap() as usize;
        let mut distinct = Vec::new();
        for _ in 0..16 {
            let src: Vec<f32> = (0..cols).map(|_| rnd()).collect();
            let mut r = vec![0u8; row_bytes];
            blocks::quantize_row(ty, &src, &mut r).unwrap();
            distinct.push(r);
        }
        let mut act = Vec::new();
        kernels::quantize_activations(ty, &x, &mut act);
        for total in [256 << 10, 64 << 20] {
            let rows = (total / row_bytes).max(16);
            let mut w = Vec::with_capacity(rows * row_bytes);
            for i in 0..rows {
                w.extend_from_slice(&distinct[i % 16]);
            }
            compare(ty, cols, &w, &act, gdot);
            if kernels::packed::format(ty).is_some() {
                compare_packed(ty, cols, &w, &act, gdot);
            }
        }
    }
}

/// Times ours against ggml's over every row of `w` (`cols` elements of `ty` per row) with the
/// activation row `act`, interleaved, best of 7, and prints one line.
fn compare(ty: GgmlType, cols: usize, w: &[u8], act: &[u8], gdot: GgmlDot) {
    let row_bytes = ty.bytes_for(cols as u64).unwrap() as usize;
    let ours = |out: &mut [f32]| {
        for (o, r) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
            *o = kernels::vec_dot(ty, cols, black_box(r), act);
        }
    };
    compare_with(ty.name(), ty, cols, w, act, gdot, ours);
}

/// Rows of `ty` repacked eight at a time by its [`kernels::packed::format`] (whole groups of
/// 8 only): the packed matrix × vector kernel against ggml's per-row kernel on the same rows,
/// printed as `q4_0x8`, `q4_Kx8`, ….
fn compare_packed(ty: GgmlType, cols: usize, w: &[u8], act: &[u8], gdot: GgmlDot) {
    let f = kernels::packed::format(ty).expect("a packed layout");
    let row_bytes = ty.bytes_for(cols as u64).unwrap() as usize;
    let w = &w[..w.len() / (8 * row_bytes) * 8 * row_bytes];
    let gb = (f.group_bytes)(cols).unwrap();
    let mut packed = vec![0u8; w.len() / (8 * row_bytes) * gb];
    for (g, rows) in packed
        .chunks_exact_mut(gb)
        .zip(w.chunks_exact(8 * row_bytes))
    {
        assert!((f.pack)(cols, rows, g));
    }
    let mut prep = Vec::new();
    (f.prep)(act, &mut prep);
    let ours = |out: &mut [f32]| {
        let mut o8 = [0f32; 8];
        for (o, g) in out.chunks_exact_mut(8).zip(packed.chunks_exact(gb)) {
            (f.gemv)(cols, black_box(g), act, &prep, &mut o8);
            o.copy_from_slice(&o8);
        }
    };
    compare_with(&format!("{}x8", ty.name()), ty, cols, w, act, gdot, ours);
}

/// ggml's `vec_dot` function type.
type GgmlDot =
    unsafe extern "C" fn(i32, *mut f32, usize, *const c_void, usize, *const c_void, usize, i32);

/// Times `ours` (all rows of `w` into its argument) against ggml's `vec_dot` over the rows of
/// `w`, interleaved, best of 7, and prints one line labelled `label`.
fn compare_with(
    label: &str,
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    act: &[u8],
    gdot: GgmlDot,
    ours: impl Fn(&mut [f32]),
) {
    let row_bytes = ty.bytes_for(cols as u64).unwrap() as usize;
    let rows = w.len() / row_bytes;
    let mut out_ours = vec![0f32; rows];
    let mut out_ggml = vec![0f32; rows];
    let theirs = |out: &mut [f32]| {
        for (o, r) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
            // SAFETY: `r` holds one row of `cols` elements of `ty` and `act` one row of
            // its vec_dot type (same byte layout as ggml's blocks); nrc = 1 writes one
            // float to `o`.
            unsafe {
                gdot(
                    cols as i32,
                    o,
                    0,
                    black_box(r).as_ptr().cast(),
                    0,
                    act.as_ptr().cast(),
                    0,
                    1,
                )
            };
        }
    };
    ours(&mut out_ours);
    theirs(&mut out_ggml);
    for (a, b) in out_ours.iter().zip(&out_ggml) {
        assert!(
            (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
            "{ty}: ours {a} ggml {b}"
        );
    }
    let (mut t_ours, mut t_ggml) = (f64::MAX, f64::MAX);
    let reps = (256 << 20) / w.len() + 1;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..reps {
            ours(&mut out_ours);
        }
        t_ours = t_ours.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for _ in 0..reps {
            theirs(&mut out_ggml);
        }
        t_ggml = t_ggml.min(t.elapsed().as_secs_f64());
    }
    let bytes = (w.len() * reps) as f64;
    let (o, g) = (bytes / t_ours / 1e9, bytes / t_ggml / 1e9);
    println!(
        "{:<6} {:>8.2} {o:>12.2} {g:>12.2} {:>7.2}",
        label,
        w.len() as f64 / (1 << 20) as f64,
        o / g
    );
}

/// The file mode: each named tensor (or the first of each weight type) of `path`, in place.
fn from_file(path: &str, names: &[String]) {
    let file = match xverse_quant::gguf::Gguf::open(path) {
        Ok(f) => f,
        Err(e) => {
            // the error names the file already
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut picked: Vec<&xverse_quant::gguf::TensorInfo> = Vec::new();
    for t in file.tensors() {
        let wanted = if names.is_empty() {
            t.dims.len() == 2
                && t.name != "token_embd.weight"
                && !picked.iter().any(|p| p.ty == t.ty)
        } else {
            names.contains(&t.name)
        };
        if wanted {
            picked.push(t);
        }
    }
    let mut rng = SplitMix64::new(0x1234_5678);
    println!("{path}, 1 thread, ours at {:?}", kernels::simd_level());
    println!(
        "{:<6} {:>8} {:>12} {:>12} {:>7}  tensor",
        "type", "MiB", "ours GB/s", "ggml GB/s", "ratio"
    );
    for t in picked {
        let (Some(gdot), _) = ggml_vec_dot(t.ty) else {
            continue;
        };
        let cols = t.row_len() as usize;
        let x: Vec<f32> = (0..cols).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let mut act = Vec::new();
        kernels::quantize_activations(t.ty, &x, &mut act);
        print!("{:<28} ", t.name);
        compare(t.ty, cols, file.view(t).data, &act, gdot);
        if kernels::packed::format(t.ty).is_some() && t.n_rows() >= 8 {
            print!("{:<28} ", t.name);
            compare_packed(t.ty, cols, file.view(t).data, &act, gdot);
        }
    }
}
