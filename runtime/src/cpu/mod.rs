//! The CPU back end: [`forward`] (the whole forward pass, top to bottom), [`attention`]
//! (attention over the KV cache, SIMD kernels), [`matmul`] (matrix products on weights of any
//! type), [`matvec`] (the one-token products of decode, several weights in one parallel pass)
//! and [`ops`] (the small operations).

pub mod attention;
pub mod forward;
pub mod matmul;
pub mod matvec;
pub mod ops;
