//! Opening a GGUF file for generation: the model and its tokenizer, built side by side.
//!
//! The two take about as long as each other on a 100k-token vocabulary: the tokenizer is
//! parsed from the file's `tokenizer.huggingface.json` by the `tokenizers` crate (~0.4 s for
//! XVERSE's 100,534 tokens and 100k merges on the development machine, in Python's
//! `tokenizers` too), and the model's Q4_0, Q4_K and Q6_K matrices are repacked into fresh
//! pages (0.2–1.3 s for a 1.3 GB file, mostly the kernel zeroing pages; Q8_0 ones, whose
//! results do not depend on it, are repacked in the background). [`model_and_tokenizer`]
//! builds the tokenizer on a thread of its own while the model is checked and repacked, so a
//! start-up waits for the longer of the two rather than their sum (README, "Start-up").

use std::path::Path;
use std::sync::Arc;

use xverse_quant::gguf::Gguf;

use crate::error::RuntimeError;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// Opens the GGUF file at `path` and returns its model, repacked (and its plain copies started
/// in the background) when `repack` says so, as [`Model::load_with`] does, together with its
/// tokenizer ([`Tokenizer::from_gguf`]), the two built at the same time. A problem with the
/// model is reported before one with the tokenizer, as when they are built one after the
/// other.
pub fn model_and_tokenizer(path: &Path, repack: bool) -> Result<(Model, Tokenizer), RuntimeError> {
    let gguf = Arc::new(Gguf::open(path)?);
    let (model, tok) = std::thread::scope(|s| {
        let tokenizer = std::thread::Builder::new()
            .name("xverse-tokenizer".into())
            .spawn_scoped(s, || Tokenizer::from_gguf(&gguf));
        let model = Model::from_gguf_with(Arc::clone(&gguf), repack);
        let tok = match tokenizer {
            Ok(h) => h.join().unwrap_or_else(|_| {
                Err(RuntimeError::new(format!(
                    "{}: the tokenizer could not be built (its thread panicked)",
                    gguf.name()
                )))
            }),
            // no thread to be had: build it here
            Err(_) => Tokenizer::from_gguf(&gguf),
        };
        (model, tok)
    });
    Ok((model?, tok?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xverse_models::{rewrite_metadata, tiny_gguf_bytes, TinySpec};
    use xverse_quant::gguf::Value;

    fn tiny_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The pair built side by side is the pair built one after the other: the same
    /// tokenizer (same ids for a text with special tokens, bos, eos) and the same model.
    #[test]
    fn builds_what_the_two_loads_build() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let spec = TinySpec::default();
        let path = tiny_file(dir, "tiny.gguf", &tiny_gguf_bytes(&spec).unwrap());
        for repack in [false, true] {
            let (model, tok) = model_and_tokenizer(&path, repack).unwrap();
            let one = Model::load_with(&path, repack).unwrap();
            let tok1 = Tokenizer::from_gguf(one.gguf()).unwrap();
            let text = "hello world, <|startoftext|> 123";
            assert_eq!(tok.encode(text).unwrap(), tok1.encode(text).unwrap());
            assert_eq!(tok.n_vocab(), tok1.n_vocab());
            assert_eq!((tok.bos(), tok.eos()), (tok1.bos(), tok1.eos()));
            assert_eq!(model.hparams, one.hparams);
            model.wait_repacked();
            one.wait_repacked();
            assert_eq!(model.repack_bytes(), one.repack_bytes());
            assert_eq!(model.packed_bytes(), one.packed_bytes());
        }
    }

    /// A file whose model is broken is reported for its model, one whose tokenizer is broken
    /// for its tokenizer, one with both for its model, and a missing file for the file.
    #[test]
    fn reports_the_model_then_the_tokenizer() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let missing = dir.join("missing.gguf");
        let e = model_and_tokenizer(&missing, true).unwrap_err().to_string();
        assert!(e.contains("missing.gguf"), "{e}");

        let good = tiny_file(
            dir,
            "good.gguf",
            &tiny_gguf_bytes(&TinySpec::default()).unwrap(),
        );
        // no head count: the model is broken, the tokenizer is not
        let path = dir.join("no-heads.gguf");
        rewrite_metadata(&good, &path, |m| {
            m.retain(|(k, _)| k != "xverse.attention.head_count")
        })
        .unwrap();
        let e = model_and_tokenizer(&path, true).unwrap_err().to_string();
        assert!(e.contains("xverse.attention.head_count"), "{e}");
        // a tokenizer json that is not one: the model is fine
        let path = dir.join("bad-tok.gguf");
        rewrite_metadata(&good, &path, |m| {
            let not_json = Value::String("{\"not\": 1}".into());
            m.push(("tokenizer.huggingface.json".into(), not_json));
        })
        .unwrap();
        let e = model_and_tokenizer(&path, true).unwrap_err().to_string();
        assert!(
            e.contains("bad-tok.gguf")
                && e.contains("tokenizer.huggingface.json is not a valid tokenizer"),
            "{e}"
        );
        // both broken: the model's problem is the one reported
        let both = dir.join("both.gguf");
        rewrite_metadata(&path, &both, |m| {
            m.retain(|(k, _)| k != "xverse.attention.head_count")
        })
        .unwrap();
        let e = model_and_tokenizer(&both, true).unwrap_err().to_string();
        assert!(
            e.contains("xverse.attention.head_count") && !e.contains("tokenizer"),
            "{e}"
        );
    }
}
