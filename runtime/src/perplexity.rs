//! Perplexity over a text, like llama.cpp's `llama-perplexity`, and the KL-divergence of a
//! model's next-token distributions against those saved from another file of the same model.
//!
//! The text is tokenized once (BOS first when the file says so) and cut into windows of
//! `n_ctx` tokens; each window is evaluated from an empty cache (its first token replaced by
//! BOS when the file adds one) and only its second half is scored: positions
//! `first = n_ctx / 2 .. n_ctx - 1` predict the token after them, so every scored token has
//! at least `n_ctx / 2` tokens of context. Perplexity is `exp(mean negative log-likelihood)`,
//! with llama.cpp's uncertainty estimate.
//!
//! # The saved-logits file (`--save-logits`, read by `--kl-base`)
//!
//! Little endian, version 1:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `XVLOGITS` |
//! | 8 | 4 | version, `1` |
//! | 12 | 4 | `n_vocab` |
//! | 16 | 4 | `n_ctx` (window length) |
//! | 20 | 4 | `n_chunks` (windows) |
//! | 24 | 4 | `first` (= `n_ctx / 2`) |
//! | 28 | 4 | flags: bit 0 = BOS replaced the first token of each window |
//! | 32 | 4 · `n_chunks` · `n_ctx` | the text's tokens (u32), window after window |
//! | … | 2 · `n_vocab` per row | for each window, for each scored position `first..n_ctx-1`: the natural log-probabilities of every token (IEEE f16) |
//!
//! A reader checks the magic, the version, `first`, that every token id is in the vocabulary,
//! and that the size of the file is exactly what the header implies. The current run's
//! log-probabilities are rounded to f16 the same way before they are compared, so a file
//! compared with itself gives a KL-divergence of exactly 0 and 100 % top-1 agreement. A row
//! costs `2 · n_vocab` bytes: 200 KB per scored token at XVERSE's vocabulary (`--chunks` limits
//! the windows).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use half::f16;

use crate::error::RuntimeError;

/// Magic bytes of a saved-logits file.
pub const MAGIC: &[u8; 8] = b"XVLOGITS";
/// Version written and read.
pub const VERSION: u32 = 1;
/// Bytes of the fixed header.
pub const HEADER_BYTES: u64 = 32;

/// The header of a saved-logits file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogitsHeader {
    pub n_vocab: u32,
    pub n_ctx: u32,
    pub n_chunks: u32,
    pub first: u32,
    pub bos_replaced: bool,
}

impl LogitsHeader {
    /// Scored positions per window.
    pub fn rows_per_chunk(&self) -> u64 {
        (self.n_ctx as u64).saturating_sub(1 + self.first as u64)
    }

    /// The size the whole file must have, `None` on overflow.
    pub fn file_size(&self) -> Option<u64> {
        let toks = (self.n_chunks as u64)
            .checked_mul(self.n_ctx as u64)?
            .checked_mul(4)?;
        let rows = (self.n_chunks as u64).checked_mul(self.rows_per_chunk())?;
        let row_bytes = (self.n_vocab as u64).checked_mul(2)?;
        HEADER_BYTES
            .checked_add(toks)?
            .checked_add(rows.checked_mul(row_bytes)?)
    }
}

/// Writes a saved-logits file: to `NAME.tmp` first, renamed to `NAME` by [`LogitsWriter::finish`]
/// (an interrupted run leaves no file under the final name).
pub struct LogitsWriter {
    out: BufWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    header: LogitsHeader,
    rows_left: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LogitsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogitsWriter")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("rows_left", &self.rows_left)
            .finish()
    }
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> RuntimeError {
    RuntimeError::new(format!("{}: {what}: {e}", path.display()))
}

impl LogitsWriter {
    /// Starts a file with `header` and the `tokens` (`n_chunks · n_ctx` of them).
    pub fn create(
        path: &Path,
        header: LogitsHeader,
        tokens: &[u32],
    ) -> Result<LogitsWriter, RuntimeError> {
        let n_tok = header.n_chunks as usize * header.n_ctx as usize;
        if tokens.len() != n_tok {
            return Err(RuntimeError::new(format!(
                "{}: {} tokens given, the header says {n_tok}",
                path.display(),
                tokens.len()
            )));
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let f = File::create(&tmp).map_err(|e| io_err(&tmp, "cannot create", e))?;
        let mut out = BufWriter::new(f);
        let mut h = Vec::with_capacity(HEADER_BYTES as usize + 4 * n_tok);
        h.extend_from_slice(MAGIC);
        for v in [
            VERSION,
            header.n_vocab,
            header.n_ctx,
            header.n_chunks,
            header.first,
            header.bos_replaced as u32,
        ] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        for t in tokens {
            h.extend_from_slice(&t.to_le_bytes());
        }
        out.write_all(&h)
            .map_err(|e| io_err(&tmp, "cannot write", e))?;
        let rows_left = header.n_chunks as u64 * header.rows_per_chunk();
        Ok(LogitsWriter {
            out,
            tmp,
            path: path.to_path_buf(),
            header,
            rows_left,
            buf: Vec::new(),
        })
    }

    /// Appends one row of log-probabilities (already rounded to f16).
    pub fn write_row(&mut self, row: &[f16]) -> Result<(), RuntimeError> {
        if row.len() != self.header.n_vocab as usize || self.rows_left == 0 {
            return Err(RuntimeError::new(format!(
                "{}: row of {} values does not fit (vocab {}, {} rows left)",
                self.path.display(),
                row.len(),
                self.header.n_vocab,
                self.rows_left
            )));
        }
        self.buf.clear();
        for v in row {
            self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        self.out
            .write_all(&self.buf)
            .map_err(|e| io_err(&self.tmp, "cannot write", e))?;
        self.rows_left -= 1;
        Ok(())
    }

    /// Completes the file (every row written) and gives it its final name.
    pub fn finish(mut self) -> Result<(), RuntimeError> {
        if self.rows_left != 0 {
            return Err(RuntimeError::new(format!(
                "{}: {} rows missing",
                self.path.display(),
                self.rows_left
            )));
        }
        self.out
            .flush()
            .map_err(|e| io_err(&self.tmp, "cannot write", e))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| io_err(&self.tmp, "cannot sync", e))?;
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| io_err(&self.path, "cannot rename the temporary file to", e))?;
        // nothing left to remove on drop
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for LogitsWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Reads a saved-logits file row by row after validating it.
pub struct LogitsReader {
    inp: BufReader<File>,
    path: PathBuf,
    /// The header.
    pub header: LogitsHeader,
    /// The tokens, `n_chunks · n_ctx`.
    pub tokens: Vec<u32>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LogitsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogitsReader")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish()
    }
}

impl LogitsReader {
    /// Opens and validates `path` (see the module documentation).
    pub fn open(path: &Path) -> Result<LogitsReader, RuntimeError> {
        let name = path.display().to_string();
        let bad = |msg: String| RuntimeError::new(format!("{name}: {msg}"));
        let f = File::open(path).map_err(|e| io_err(path, "cannot open", e))?;
        let size = f
            .metadata()
            .map_err(|e| io_err(path, "cannot read", e))?
            .len();
        let mut inp = BufReader::new(f);
        let mut h = [0u8; HEADER_BYTES as usize];
        if size < HEADER_BYTES || inp.read_exact(&mut h).is_err() {
            return Err(bad(format!(
                "not a saved-logits file ({size} bytes, shorter than the {HEADER_BYTES}-byte header)"
            )));
        }
        if &h[..8] != MAGIC {
            return Err(bad(
                "not a saved-logits file (no XVLOGITS magic; make it with xverse-perplexity --save-logits)".into(),
            ));
        }
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let version = word(8);
        if version != VERSION {
            return Err(bad(format!(
                "saved-logits version {version}, this program reads version {VERSION}"
            )));
        }
        let header = LogitsHeader {
            n_vocab: word(12),
            n_ctx: word(16),
            n_chunks: word(20),
            first: word(24),
            bos_replaced: word(28) & 1 == 1,
        };
        if word(28) > 1 {
            return Err(bad(format!("unknown flags {:#x}", word(28))));
        }
        if header.n_vocab == 0 || header.n_chunks == 0 || header.n_ctx < 4 {
            return Err(bad(format!(
                "empty or invalid header (vocab {}, n_ctx {}, chunks {})",
                header.n_vocab, header.n_ctx, header.n_chunks
            )));
        }
        if header.first != header.n_ctx / 2 {
            return Err(bad(format!(
                "first scored position {} is not n_ctx / 2 = {}",
                header.first,
                header.n_ctx / 2
            )));
        }
        match header.file_size() {
            Some(expected) if expected == size => {}
            Some(expected) => {
                return Err(bad(format!(
                    "{size} bytes, the header implies {expected} (truncated or corrupt)"
                )))
            }
            None => return Err(bad("the header's sizes overflow".into())),
        }
        let n_tok = header.n_chunks as usize * header.n_ctx as usize;
        let mut raw = vec![0u8; 4 * n_tok];
        inp.read_exact(&mut raw)
            .map_err(|e| io_err(path, "cannot read", e))?;
        let tokens: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(bad_tok) = tokens.iter().find(|&&t| t >= header.n_vocab) {
            return Err(bad(format!(
                "token id {bad_tok} is outside the vocabulary of {}",
                header.n_vocab
            )));
        }
        Ok(LogitsReader {
            inp,
            path: path.to_path_buf(),
            header,
            tokens,
            buf: Vec::new(),
        })
    }

    /// Reads the next row of log-probabilities into `out` (`n_vocab` values).
    pub fn read_row(&mut self, out: &mut [f32]) -> Result<(), RuntimeError> {
        let n = self.header.n_vocab as usize;
        if out.len() != n {
            return Err(RuntimeError::new(format!(
                "{}: row buffer of {} for vocab {n}",
                self.path.display(),
                out.len()
            )));
        }
        self.buf.resize(2 * n, 0);
        self.inp
            .read_exact(&mut self.buf)
            .map_err(|e| io_err(&self.path, "cannot read", e))?;
        for (o, c) in out.iter_mut().zip(self.buf.chunks_exact(2)) {
            *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
        }
        Ok(())
    }
}

/// Natural log-probabilities of a row of logits, rounded to f16 (the saved precision).
pub fn log_probs_f16(logits: &[f32]) -> Vec<f16> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    logits
        .iter()
        .map(|&l| f16::from_f64(l as f64 - lse))
        .collect()
}

/// `-log p(target)` of a row of logits, in f64 (llama.cpp's `log_softmax`).
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    -(logits
        .get(target as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY) as f64
        - max
        - sum.ln())
}

/// `KL(base ‖ cur) = Σ p_base (log p_base − log p_cur)` from log-probabilities.
pub fn kl_divergence(base: &[f32], cur: &[f32]) -> f64 {
    base.iter()
        .zip(cur)
        .map(|(&b, &c)| {
            let p = (b as f64).exp();
            if p == 0.0 {
                0.0
            } else {
                p * (b as f64 - c as f64)
            }
        })
        .sum()
}

/// Running mean and uncertainty (llama.cpp's estimate: `sqrt(var / (n - 1))`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stat {
    pub n: u64,
    pub sum: f64,
    pub sum2: f64,
    pub max: f64,
}

impl Stat {
    /// Adds a value.
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sum2 += x * x;
        if self.n == 1 || x > self.max {
            self.max = x;
        }
    }

    /// The mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// The uncertainty of the mean (0 with fewer than two values).
    pub fn err(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let m = self.mean();
        let var = self.sum2 / self.n as f64 - m * m;
        if var > 0.0 {
            (var / (self.n - 1) as f64).sqrt()
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.xvl");
        let h = LogitsHeader {
            n_vocab: 5,
            n_ctx: 4,
            n_chunks: 2,
            first: 2,
            bos_replaced: true,
        };
        assert_eq!(h.rows_per_chunk(), 1);
        let toks: Vec<u32> = (0..8).map(|i| i % 5).collect();
        let mut w = LogitsWriter::create(&p, h.clone(), &toks).unwrap();
        let r1 = log_probs_f16(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        w.write_row(&r1).unwrap();
        w.write_row(&r1).unwrap();
        assert!(w.write_row(&r1).is_err());
        w.finish().unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), h.file_size().unwrap());
        let mut r = LogitsReader::open(&p).unwrap();
        assert_eq!(r.header, h);
        assert_eq!(r.tokens, toks);
        let mut row = vec![0.0; 5];
        r.read_row(&mut row).unwrap();
        let cur: Vec<f32> = r1.iter().map(|v| v.to_f32()).collect();
        assert_eq!(row, cur);
        assert_eq!(kl_divergence(&row, &cur), 0.0);
        // truncated file
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let e = LogitsReader::open(&p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        // wrong magic
        let mut b2 = bytes.clone();
        b2[0] = b'Y';
        std::fs::write(&p, &b2).unwrap();
        assert!(LogitsReader::open(&p)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        // token outside the vocabulary
        let mut b3 = bytes.clone();
        b3[32..36].copy_from_slice(&7u32.to_le_bytes());
        std::fs::write(&p, &b3).unwrap();
        assert!(LogitsReader::open(&p)
            .unwrap_err()
            .to_string()
            .contains("outside"));
    }

    #[test]
    fn unfinished_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("y.xvl");
        let h = LogitsHeader {
            n_vocab: 3,
            n_ctx: 4,
            n_chunks: 1,
            first: 2,
            bos_replaced: false,
        };
        let w = LogitsWriter::create(&p, h, &[0, 1, 2, 0]).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn kl_and_nll() {
        let a = [0.0f32, 1.0, 2.0];
        let la: Vec<f32> = log_probs_f16(&a).iter().map(|v| v.to_f32()).collect();
        let b = [2.0f32, 1.0, 0.0];
        let lb: Vec<f32> = log_probs_f16(&b).iter().map(|v| v.to_f32()).collect();
        assert!(kl_divergence(&la, &lb) > 0.1);
        assert_eq!(kl_divergence(&la, &la), 0.0);
        let n = nll(&a, 2);
        let p2 = (2.0f64).exp() / (1.0 + 1f64.exp() + 2f64.exp());
        assert!((n + p2.ln()).abs() < 1e-12);
    }
}
