//! The q/k row permutation: hand-checked examples (MHA and GQA), llama.cpp's formula, round
//! trips.

use xverse_convert::permute::{permute_rows, source_row, unpermute_rows};

/// Rows numbered by their index (each row is `cols` copies of its row number).
fn numbered(rows: usize, cols: usize) -> Vec<f32> {
    (0..rows)
        .flat_map(|r| std::iter::repeat_n(r as f32, cols))
        .collect()
}

fn row_ids(data: &[f32], cols: usize) -> Vec<usize> {
    data.chunks_exact(cols).map(|r| r[0] as usize).collect()
}

/// llama.cpp's `_reverse_hf_permute` with the correct head count:
/// `w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2).reshape(w.shape)`.
fn llama_cpp_permute(w: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let half = rows / n_head / 2;
    let mut out = vec![0f32; w.len()];
    // output index (h, j, s) <- input index (h, s, j)
    for h in 0..n_head {
        for j in 0..half {
            for s in 0..2 {
                let dst = (h * half + j) * 2 + s;
                let src = (h * 2 + s) * half + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn hand_checked_single_head() {
    // head_dim 8: HF pairs (0,4) (1,5) (2,6) (3,7) become adjacent
    let mut w = numbered(8, 3);
    permute_rows(&mut w, 1, 3).unwrap();
    assert_eq!(row_ids(&w, 3), vec![0, 4, 1, 5, 2, 6, 3, 7]);
    assert_eq!(
        (0..8).map(|r| source_row(r, 8)).collect::<Vec<_>>(),
        vec![0, 4, 1, 5, 2, 6, 3, 7]
    );
}

#[test]
fn hand_checked_two_heads() {
    // 2 heads of 4 rows: each head permuted on its own
    let mut w = numbered(8, 2);
    permute_rows(&mut w, 2, 2).unwrap();
    assert_eq!(row_ids(&w, 2), vec![0, 2, 1, 3, 4, 6, 5, 7]);
}

#[test]
fn hand_checked_gqa() {
    // hidden 16, 4 query heads (head_dim 4), 2 kv heads: q has 16 rows, k has 8
    let head_dim = 4;
    let (heads, kv_heads, cols) = (4, 2, 16);
    let mut q = numbered(heads * head_dim, cols);
    let mut k = numbered(kv_heads * head_dim, cols);
    permute_rows(&mut q, heads, cols).unwrap();
    permute_rows(&mut k, kv_heads, cols).unwrap();
    assert_eq!(
        row_ids(&q, cols),
        vec![0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15]
    );
    assert_eq!(row_ids(&k, cols), vec![0, 2, 1, 3, 4, 6, 5, 7]);

    // 8 query heads, 2 kv heads of head_dim 8: k permuted per kv head. llama.cpp b2757's
    // xverse converter would use 8 / 2 = 4 "heads" here and pair rows of different heads.
    let mut k = numbered(2 * 8, 4);
    permute_rows(&mut k, 2, 4).unwrap();
    assert_eq!(
        row_ids(&k, 4),
        vec![0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]
    );
    let b2757 = llama_cpp_permute(&numbered(16, 4), 8 / 2, 4);
    assert_ne!(row_ids(&b2757, 4), row_ids(&k, 4));
}

#[test]
fn matches_llama_cpp_formula_and_round_trips() {
    let mut seed = 12345u64;
    for &(heads, head_dim, cols) in &[(1, 2, 1), (4, 16, 64), (3, 10, 7), (8, 128, 5), (2, 6, 33)] {
        let n = heads * head_dim * cols;
        let w: Vec<f32> = (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                (seed >> 40) as f32 / 1000.0 - 8000.0
            })
            .collect();
        let mut p = w.clone();
        permute_rows(&mut p, heads, cols).unwrap();
        assert_eq!(
            p,
            llama_cpp_permute(&w, heads, cols),
            "{heads} {head_dim} {cols}"
        );
        unpermute_rows(&mut p, heads, cols).unwrap();
        assert_eq!(p, w);
    }
}

#[test]
fn bad_shapes_are_errors() {
    let mut w = vec![0f32; 12];
    assert!(permute_rows(&mut w, 0, 4).is_err());
    assert!(permute_rows(&mut w, 2, 5).is_err()); // 12 is not rows of 5
    assert!(permute_rows(&mut w, 4, 4).is_err()); // 3 rows in 4 heads
    let e = permute_rows(&mut w, 1, 4).unwrap_err().to_string(); // head of 3 rows: odd
    assert!(e.contains("even"), "{e}");
    assert!(permute_rows(&mut [], 1, 0).is_err());
}
