//! Errors of the GGUF reader and writer.
//!
//! Every message is one line and names the file; where it applies, also the metadata key or
//! tensor, the byte offset in the file, and what was expected against what was found. Names
//! that come from a file are quoted and escaped (and shortened when very long), so a hostile
//! name cannot break the line.

use std::fmt;
use std::io;

/// Something wrong with a GGUF file, or with how a reader or writer was used.
#[derive(Debug)]
#[non_exhaustive]
pub enum GgufError {
    /// An I/O operation failed (`action` says which: "open", "memory-map", "rename to …").
    Io {
        file: String,
        action: String,
        source: io::Error,
    },
    /// The first four bytes are not `GGUF`.
    BadMagic { file: String, found: Vec<u8> },
    /// A GGUF version this reader does not read (v1, big-endian files, future versions).
    Version {
        file: String,
        found: u32,
        reason: String,
    },
    /// The file ends before the end of something it announces.
    Truncated {
        file: String,
        /// Where the missing structure starts.
        offset: u64,
        /// What is cut: `key "general.name": string value`, `tensor "output": data`, …
        what: String,
        /// Bytes that structure needs from `offset`.
        needed: u64,
        /// Bytes the file has from `offset`.
        available: u64,
    },
    /// A field holds a value that is not allowed.
    Invalid {
        file: String,
        /// Where the field is.
        offset: u64,
        /// Which field: `header: tensor count`, `key "general.alignment"`, `tensor "x": type`, …
        what: String,
        expected: String,
        found: String,
    },
    /// A metadata key or a tensor name that appears twice.
    Duplicate {
        file: String,
        /// Where the second one is.
        offset: u64,
        /// "metadata key" or "tensor name".
        kind: &'static str,
        name: String,
        /// Where the first one is.
        first_offset: u64,
    },
    /// A typed getter's key is absent.
    MissingKey { file: String, key: String },
    /// A typed getter's key holds a value of another type (or one out of range).
    WrongType {
        file: String,
        key: String,
        expected: String,
        found: String,
    },
    /// A writer was given something it cannot write (bad tensor spec, duplicate key, wrong
    /// number of data bytes, …).
    Writer { file: String, what: String },
    /// Tensor data could not be converted (a wrong output length, …).
    Data {
        file: String,
        tensor: String,
        what: String,
    },
}

/// How much of a name from a file a message shows.
const MAX_SHOWN: usize = 96;

/// `s` quoted and escaped for a one-line message, shortened when longer than [`MAX_SHOWN`]
/// bytes.
pub(crate) fn quote(s: &str) -> String {
    if s.len() <= MAX_SHOWN {
        return format!("{s:?}");
    }
    let mut end = MAX_SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let head = s.get(..end).unwrap_or("");
    format!("{head:?}… ({} bytes)", s.len())
}

/// Raw bytes from a file (maybe not UTF-8) quoted for a message.
pub(crate) fn quote_bytes(b: &[u8]) -> String {
    quote(&String::from_utf8_lossy(b))
}

/// A file name for a message: the path as given, escaped if it holds control characters.
fn file_name(f: &str) -> String {
    if f.chars().any(char::is_control) {
        format!("{f:?}")
    } else {
        f.to_string()
    }
}

impl GgufError {
    /// The file (or, for a writer without a file yet, a description) this error is about.
    pub fn file(&self) -> &str {
        match self {
            GgufError::Io { file, .. }
            | GgufError::BadMagic { file, .. }
            | GgufError::Version { file, .. }
            | GgufError::Truncated { file, .. }
            | GgufError::Invalid { file, .. }
            | GgufError::Duplicate { file, .. }
            | GgufError::MissingKey { file, .. }
            | GgufError::WrongType { file, .. }
            | GgufError::Writer { file, .. }
            | GgufError::Data { file, .. } => file,
        }
    }

    /// The byte offset in the file this error points at, when it points at one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            GgufError::Truncated { offset, .. }
            | GgufError::Invalid { offset, .. }
            | GgufError::Duplicate { offset, .. } => Some(*offset),
            GgufError::BadMagic { .. } | GgufError::Version { .. } => Some(0),
            _ => None,
        }
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file().is_empty() {
            write!(f, "{}: ", file_name(self.file()))?;
        }
        match self {
            GgufError::Io { action, source, .. } => {
                let src = source.to_string().replace('\n', " ");
                write!(f, "cannot {action}: {src}")
            }
            GgufError::BadMagic { found, .. } => {
                let shown: String = found.iter().flat_map(|b| b.escape_ascii()).map(char::from).collect();
                let hint = match found.as_slice() {
                    b"lmgg" | b"fmgg" | b"tjgg" => {
                        " (a GGML/GGJT file: the format llama.cpp used before GGUF)"
                    }
                    _ => "",
                };
                write!(
                    f,
                    "not a GGUF file: at byte offset 0 expected the magic \"GGUF\", found \"{shown}\"{hint}"
                )
            }
            GgufError::Version { found, reason, .. } => write!(
                f,
                "at byte offset 4: unsupported GGUF version {found} (expected 2 or 3): {reason}"
            ),
            GgufError::Truncated {
                offset,
                what,
                needed,
                available,
                ..
            } => write!(
                f,
                "truncated: {what} at byte offset {offset} needs {needed} bytes, but the file has only {available} bytes from there"
            ),
            GgufError::Invalid {
                offset,
                what,
                expected,
                found,
                ..
            } => write!(
                f,
                "{what} at byte offset {offset}: expected {expected}, found {found}"
            ),
            GgufError::Duplicate {
                offset,
                kind,
                name,
                first_offset,
                ..
            } => write!(
                f,
                "duplicate {kind} {} at byte offset {offset} (first at byte offset {first_offset})",
                quote(name)
            ),
            GgufError::MissingKey { key, .. } => {
                write!(f, "metadata key {} is missing", quote(key))
            }
            GgufError::WrongType {
                key,
                expected,
                found,
                ..
            } => write!(
                f,
                "metadata key {}: expected {expected}, found {found}",
                quote(key)
            ),
            GgufError::Writer { what, .. } => f.write_str(what),
            GgufError::Data { tensor, what, .. } => {
                write!(f, "tensor {}: {what}", quote(tensor))
            }
        }
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GgufError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_quote_escapes_and_shortens() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "é".repeat(100);
        let q = quote(&long);
        assert!(q.ends_with("(200 bytes)"), "{q}");
        assert!(!q.contains('\n'));
        assert_eq!(quote_bytes(b"a\xffb"), "\"a\u{fffd}b\"");
    }

    #[test]
    fn gguf_messages_are_one_line() {
        let e = GgufError::Invalid {
            file: "m.gguf".into(),
            offset: 40,
            what: format!("key {}", quote("x\ny")),
            expected: "a".into(),
            found: "b".into(),
        };
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(
            s.starts_with("m.gguf: key \"x\\ny\" at byte offset 40"),
            "{s}"
        );
        let e = GgufError::BadMagic {
            file: "m.gguf".into(),
            found: b"tjgg".to_vec(),
        };
        assert!(e.to_string().contains("GGJT"));
    }
}
