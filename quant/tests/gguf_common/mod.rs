//! Helpers shared by the GGUF integration tests: a raw byte builder for hand-made (and
//! deliberately broken) files, and a bitwise comparison of metadata values.

#![allow(dead_code)]

use xverse_quant::gguf::{Gguf, GgufError, Value};

/// The name every test file is given, so messages can be checked for it.
pub const NAME: &str = "test.gguf";

/// Value type ids, as a file stores them.
pub mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U32: u32 = 4;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
}

/// Builds GGUF bytes field by field, little-endian.
#[derive(Clone, Debug, Default)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    /// Magic, version, tensor count, metadata count.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        Raw(Vec::new())
            .bytes(b"GGUF")
            .u32(version)
            .u64(n_tensors)
            .u64(n_kv)
    }

    pub fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }

    pub fn u8(self, v: u8) -> Raw {
        self.bytes(&[v])
    }

    pub fn u32(self, v: u32) -> Raw {
        self.bytes(&v.to_le_bytes())
    }

    pub fn u64(self, v: u64) -> Raw {
        self.bytes(&v.to_le_bytes())
    }

    /// A string: `u64` length and the bytes.
    pub fn str(self, s: &[u8]) -> Raw {
        self.u64(s.len() as u64).bytes(s)
    }

    /// A metadata entry with a u32 value.
    pub fn kv_u32(self, key: &str, v: u32) -> Raw {
        self.str(key.as_bytes()).u32(vt::U32).u32(v)
    }

    /// A metadata entry with a string value.
    pub fn kv_str(self, key: &str, v: &str) -> Raw {
        self.str(key.as_bytes()).u32(vt::STRING).str(v.as_bytes())
    }

    /// A tensor info.
    pub fn info(self, name: &[u8], dims: &[u64], ty: u32, offset: u64) -> Raw {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }

    /// Zero bytes up to a multiple of `align`.
    pub fn pad(self, align: usize) -> Raw {
        let n = self.0.len().div_ceil(align) * align - self.0.len();
        self.zeros(n)
    }

    pub fn zeros(mut self, n: usize) -> Raw {
        self.0.resize(self.0.len() + n, 0);
        self
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn parse(&self) -> Result<Gguf, GgufError> {
        Gguf::from_bytes(self.0.clone(), NAME)
    }

    /// The error message of parsing these bytes; fails the test when they parse. Checks that
    /// the message is one line and names the file.
    pub fn err(&self) -> String {
        match self.parse() {
            Ok(g) => panic!("parsed, expected an error: {g:?}"),
            Err(e) => {
                let s = e.to_string();
                assert!(!s.contains('\n'), "not one line: {s}");
                assert!(s.starts_with(NAME), "does not name the file: {s}");
                s
            }
        }
    }
}

/// Asserts that `msg` contains every one of `parts`.
#[track_caller]
pub fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}: {msg}");
    }
}

/// Values equal, comparing floats bit for bit (so NaN equals the same NaN).
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(ta, xa), Value::Array(tb, xb)) => {
            ta == tb && xa.len() == xb.len() && xa.iter().zip(xb).all(|(x, y)| same_value(x, y))
        }
        _ => a == b,
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}
