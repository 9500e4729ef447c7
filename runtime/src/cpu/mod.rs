//! The CPU back end: [`forward`] (the whole forward pass, top to bottom), [`matmul`] (matrix
//! products on weights of any type) and [`ops`] (the small operations).

pub mod forward;
pub mod matmul;
pub mod ops;
