//! Copies of a GGUF file with edited metadata, for tests that need a model whose keys differ
//! (a key left out, another tokenizer, llama.cpp's defaults).

use std::error::Error;
use std::path::Path;
use xverse_quant::gguf::{Gguf, GgufWriter, TensorSpec, Value};

/// Writes `dst`: the GGUF `src` with its metadata changed by `edit` (tensors unchanged, same
/// alignment default; `general.alignment` is dropped before `edit` sees the list).
pub fn rewrite_metadata(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut Vec<(String, Value)>),
) -> Result<(), Box<dyn Error>> {
    let g = Gguf::open(src)?;
    let mut meta: Vec<(String, Value)> = g
        .metadata()
        .iter()
        .filter(|(k, _)| k != "general.alignment")
        .cloned()
        .collect();
    edit(&mut meta);
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.add_metadata(k, v)?;
    }
    let mut data: Vec<&[u8]> = Vec::new();
    for t in g.tensors() {
        w.add_tensor(TensorSpec::new(t.name.clone(), t.ty, t.dims.clone()))?;
        data.push(g.view(t).data);
    }
    std::fs::write(dst, w.to_bytes(&data)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_tiny_gguf, TinySpec};

    #[test]
    fn edits_metadata_and_keeps_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
        write_tiny_gguf(&a, &TinySpec::default()).unwrap();
        rewrite_metadata(&a, &b, |m| {
            m.retain(|(k, _)| k != "xverse.rope.freq_base");
            m.push(("test.added".into(), Value::U32(7)));
        })
        .unwrap();
        let (ga, gb) = (Gguf::open(&a).unwrap(), Gguf::open(&b).unwrap());
        assert!(gb.get("xverse.rope.freq_base").is_none());
        assert_eq!(gb.get_u32("test.added").unwrap(), 7);
        assert_eq!(ga.tensors().len(), gb.tensors().len());
        for t in ga.tensors() {
            assert_eq!(
                ga.view(t).data,
                gb.tensor(&t.name).unwrap().data,
                "{}",
                t.name
            );
        }
        assert!(rewrite_metadata(&dir.path().join("missing.gguf"), &b, |_| {}).is_err());
    }
}
