//! The crate's error type: one line that says what went wrong and where.

use std::fmt;

use crate::hparams::HparamsError;
use xverse_quant::blocks::BlockError;
use xverse_quant::gguf::GgufError;

/// An error of the runtime. Its `Display` is a single line, ready for stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeError(pub String);

impl RuntimeError {
    /// An error with message `msg` (newlines are folded into spaces: always one line).
    pub fn new(msg: impl Into<String>) -> RuntimeError {
        let msg: String = msg.into();
        if msg.contains('\n') {
            RuntimeError(msg.split('\n').collect::<Vec<_>>().join(" "))
        } else {
            RuntimeError(msg)
        }
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // the message is one line by construction through `new`; fold anyway for the tuple
        // constructor
        for (i, part) in self.0.split('\n').enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(part)?;
        }
        Ok(())
    }
}

impl std::error::Error for RuntimeError {}

impl From<GgufError> for RuntimeError {
    fn from(e: GgufError) -> Self {
        RuntimeError::new(e.to_string())
    }
}

impl From<HparamsError> for RuntimeError {
    fn from(e: HparamsError) -> Self {
        RuntimeError::new(e.to_string())
    }
}

impl From<BlockError> for RuntimeError {
    fn from(e: BlockError) -> Self {
        RuntimeError::new(e.to_string())
    }
}

impl From<std::io::Error> for RuntimeError {
    fn from(e: std::io::Error) -> Self {
        RuntimeError::new(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line() {
        let e = RuntimeError("a\nb".into());
        assert_eq!(e.to_string(), "a b");
        assert_eq!(RuntimeError::new("x\ny").0, "x y");
    }
}
