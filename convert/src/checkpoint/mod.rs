//! Checkpoint readers: the weights of a Hugging Face model folder, as safetensors shards or
//! PyTorch `.bin` shards (zip format, or the legacy pre-1.6 format), behind [`TensorSource`].
//!
//! * [`open_hf`] finds the weights in a folder: `model.safetensors.index.json` + shards, or one
//!   `model.safetensors`; else `pytorch_model.bin.index.json` + shards, or one
//!   `pytorch_model.bin`.
//! * [`open_file`] opens one weight file, recognised by its content.
//! * Pickles are parsed by a restricted unpickler ([`pickle`]) that refuses any global not on
//!   its allow-list, before anything is built.

mod layout;
pub mod pickle;
pub mod safetensors;
pub mod torch;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::convert_err;
use crate::source::{ConvertError, TensorMeta, TensorSource};

pub use self::safetensors::SafetensorsFile;
pub use self::torch::{TorchFile, LEGACY_HINT};

/// File names Hugging Face uses, in the order they are looked for.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
pub const SAFETENSORS_SINGLE: &str = "model.safetensors";
pub const TORCH_INDEX: &str = "pytorch_model.bin.index.json";
pub const TORCH_SINGLE: &str = "pytorch_model.bin";

/// What a weight file holds, judged from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    Safetensors,
    /// `torch.save` zip archive (torch >= 1.6).
    TorchZip,
    /// `torch.save(..., _use_new_zipfile_serialization=False)`, or torch < 1.6.
    TorchLegacy,
    Unknown,
}

/// Judges a weight file's format from its first bytes (16 are enough).
pub fn detect_format_bytes(head: &[u8]) -> WeightFormat {
    if torch::is_zip_bytes(head) {
        WeightFormat::TorchZip
    } else if torch::is_legacy_bytes(head) {
        WeightFormat::TorchLegacy
    } else if head.len() >= 9 && head[8] == b'{' && head[5..8] == [0, 0, 0] {
        // u64 little-endian header length (< 2^40), then the JSON header
        WeightFormat::Safetensors
    } else {
        WeightFormat::Unknown
    }
}

/// Judges a weight file's format from its first bytes.
pub fn detect_format(path: &Path) -> Result<WeightFormat, ConvertError> {
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path)
        .and_then(|f| f.take(16).read_to_end(&mut head))
        .map_err(|e| convert_err!("cannot read {}: {e}", path.display()))?;
    Ok(detect_format_bytes(&head))
}

/// True when `path` is a torch file in the legacy (pre-1.6, non-zip) format.
pub fn is_legacy_torch(path: &Path) -> Result<bool, ConvertError> {
    Ok(detect_format(path)? == WeightFormat::TorchLegacy)
}

/// Whether `dir` holds Hugging Face weights that [`open_hf`] would look for.
pub fn has_hf_weights(dir: &Path) -> bool {
    [
        SAFETENSORS_INDEX,
        SAFETENSORS_SINGLE,
        TORCH_INDEX,
        TORCH_SINGLE,
    ]
    .iter()
    .any(|n| dir.join(n).is_file())
}

/// One opened weight file.
enum Shard {
    Torch(TorchFile),
    Safetensors(SafetensorsFile),
}

impl Shard {
    fn source(&self) -> &dyn TensorSource {
        match self {
            Shard::Torch(t) => t,
            Shard::Safetensors(s) => s,
        }
    }

    /// Names present in the file but not readable as float tensors.
    fn skipped(&self) -> &[String] {
        match self {
            Shard::Torch(t) => t.skipped(),
            Shard::Safetensors(s) => s.skipped(),
        }
    }
}

fn open_shard(path: &Path) -> Result<Shard, ConvertError> {
    match detect_format(path)? {
        WeightFormat::Safetensors => Ok(Shard::Safetensors(SafetensorsFile::open(path)?)),
        WeightFormat::TorchZip | WeightFormat::TorchLegacy => {
            Ok(Shard::Torch(TorchFile::open(path)?))
        }
        WeightFormat::Unknown => {
            if path.extension().is_some_and(|e| e == "safetensors") {
                // Let the safetensors crate say what is wrong with it.
                Ok(Shard::Safetensors(SafetensorsFile::open(path)?))
            } else {
                Ok(Shard::Torch(TorchFile::open(path)?))
            }
        }
    }
}

/// Opens one weight file (safetensors, torch zip or legacy torch), recognised by its content.
pub fn open_file(path: &Path) -> Result<Box<dyn TensorSource>, ConvertError> {
    Ok(match open_shard(path)? {
        Shard::Torch(t) => Box::new(t),
        Shard::Safetensors(s) => Box::new(s),
    })
}

/// Finds and opens the weights of a Hugging Face model folder.
pub fn open_hf(dir: &Path) -> Result<Box<dyn TensorSource>, ConvertError> {
    if !dir.is_dir() {
        return Err(convert_err!("{} is not a directory", dir.display()));
    }
    let index = dir.join(SAFETENSORS_INDEX);
    if index.is_file() {
        return Ok(Box::new(Sharded::open(&index)?));
    }
    let single = dir.join(SAFETENSORS_SINGLE);
    if single.is_file() {
        return Ok(Box::new(SafetensorsFile::open(&single)?));
    }
    let index = dir.join(TORCH_INDEX);
    if index.is_file() {
        return Ok(Box::new(Sharded::open(&index)?));
    }
    let single = dir.join(TORCH_SINGLE);
    if single.is_file() {
        return Ok(Box::new(TorchFile::open(&single)?));
    }
    Err(convert_err!(
        "no weights found in {}: expected {SAFETENSORS_INDEX}, {SAFETENSORS_SINGLE}, {TORCH_INDEX} or {TORCH_SINGLE}",
        dir.display()
    ))
}

/// Several shard files tied together by a Hugging Face index (`weight_map`).
pub struct Sharded {
    shards: Vec<Shard>,
    metas: Vec<TensorMeta>,
    /// name -> (shard, index in `metas`)
    lookup: HashMap<String, (usize, usize)>,
}

impl std::fmt::Debug for Sharded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharded")
            .field("shards", &self.shards.len())
            .field("tensors", &self.metas.len())
            .finish()
    }
}

/// A shard name from an index must stay inside the model folder.
fn safe_relative(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

impl Sharded {
    /// Opens the shards named by an index file (`*.index.json` with a `weight_map`), checking
    /// that every shard exists and holds the tensors mapped to it.
    pub fn open(index: &Path) -> Result<Sharded, ConvertError> {
        let shown = index.display();
        let dir = index.parent().unwrap_or(Path::new("."));
        let text =
            std::fs::read_to_string(index).map_err(|e| convert_err!("cannot read {shown}: {e}"))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| convert_err!("{shown}: invalid JSON: {e}"))?;
        let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
            return Err(convert_err!("{shown}: no \"weight_map\" object"));
        };
        // tensor -> shard file, and the shard files in name order
        let mut wanted: HashMap<String, String> = HashMap::new();
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (tensor, file) in map {
            let Some(file) = file.as_str() else {
                return Err(convert_err!(
                    "{shown}: weight_map entry {tensor} is not a file name"
                ));
            };
            if !safe_relative(file) {
                return Err(convert_err!(
                    "{shown}: weight_map entry {tensor} names {file:?}, which is not a file inside {}",
                    dir.display()
                ));
            }
            wanted.insert(tensor.clone(), file.to_owned());
            files
                .entry(file.to_owned())
                .or_insert_with(|| dir.join(file));
        }
        if files.is_empty() {
            return Err(convert_err!("{shown}: the weight_map is empty"));
        }
        for (name, path) in &files {
            if !path.is_file() {
                return Err(convert_err!(
                    "{shown} names shard {name}, but {} does not exist",
                    path.display()
                ));
            }
        }
        let mut shards = Vec::with_capacity(files.len());
        let mut metas = Vec::new();
        let mut lookup: HashMap<String, (usize, usize)> = HashMap::new();
        let mut from: HashMap<String, String> = HashMap::new();
        for (si, (file, path)) in files.iter().enumerate() {
            let shard = open_shard(path)?;
            for m in shard.source().tensors() {
                match wanted.get(&m.name) {
                    // The index maps it to another shard: the index wins.
                    Some(f) if f != file => continue,
                    Some(_) => {}
                    None => {
                        if let Some(other) = from.get(&m.name) {
                            return Err(convert_err!(
                                "{shown}: tensor {} is in both {other} and {file}, and the index names neither",
                                m.name
                            ));
                        }
                    }
                }
                from.insert(m.name.clone(), file.clone());
                lookup.insert(m.name.clone(), (si, metas.len()));
                metas.push(m.clone());
            }
            for name in shard.skipped() {
                if wanted.get(name).is_none_or(|f| f == file) {
                    from.insert(name.clone(), file.clone());
                }
            }
            shards.push(shard);
        }
        let mut missing: Vec<(&String, &String)> = wanted
            .iter()
            .filter(|(t, _)| !from.contains_key(*t))
            .collect();
        missing.sort();
        if let Some((t, f)) = missing.first() {
            return Err(convert_err!(
                "{shown} maps tensor {t} to {f}, but {} does not hold it{}",
                dir.join(f).display(),
                if missing.len() > 1 {
                    format!(" ({} tensors missing in all)", missing.len())
                } else {
                    String::new()
                }
            ));
        }
        Ok(Sharded {
            shards,
            metas,
            lookup,
        })
    }
}

impl TensorSource for Sharded {
    fn tensors(&self) -> &[TensorMeta] {
        &self.metas
    }

    fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.lookup.get(name).map(|&(_, i)| &self.metas[i])
    }

    fn read_f32(&self, name: &str, out: &mut Vec<f32>) -> Result<(), ConvertError> {
        let &(s, _) = self
            .lookup
            .get(name)
            .ok_or_else(|| convert_err!("no tensor named {name} in the checkpoint"))?;
        self.shards[s].source().read_f32(name, out)
    }

    fn release(&self, name: &str) {
        if let Some(&(s, _)) = self.lookup.get(name) {
            self.shards[s].source().release(name);
        }
    }
}
