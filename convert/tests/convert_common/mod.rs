//! Helpers shared by the converter tests: the fixtures, an in-memory tensor source, and GGUF
//! read-back.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use xverse_convert::convert::{self, Options, Summary};
use xverse_convert::plan::{FileType, ModelShape, TensorId};
use xverse_convert::source::{ConvertError, Dtype, TensorMeta, TensorSource};

/// `shared/fixtures/`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
}

/// `shared/presets/`.
pub fn presets() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/presets"))
}

/// The fixture's tensors as f32 (`expected-*.safetensors` of tiny-xverse-bin), HF names.
pub fn expected() -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let dir = fixtures().join("tiny-xverse-bin");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.index.json")).unwrap())
            .unwrap();
    let mut files: Vec<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    files.sort_unstable();
    files.dedup();
    let mut out = HashMap::new();
    for f in files {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            out.insert(name, (view.shape().to_vec(), values));
        }
    }
    assert_eq!(out.len(), 21);
    out
}

/// A tensor source held in memory. `dtype` is what it reports; values are f32.
pub struct MemSource {
    pub metas: Vec<TensorMeta>,
    pub data: HashMap<String, Vec<f32>>,
    /// Set `cancel` when this many tensors have been read.
    pub cancel_after: Option<(usize, &'static AtomicBool)>,
    /// Fail reading this tensor.
    pub fail_on: Option<String>,
    pub reads: AtomicUsize,
    pub released: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl MemSource {
    pub fn new(tensors: Vec<(String, Vec<usize>, Vec<f32>)>, dtype: Dtype) -> MemSource {
        let mut metas = Vec::new();
        let mut data = HashMap::new();
        for (name, shape, values) in tensors {
            let n: usize = shape.iter().product();
            let per = match dtype {
                Dtype::F32 => 4,
                _ => 2,
            };
            metas.push(TensorMeta {
                name: name.clone(),
                shape,
                dtype,
                file: PathBuf::from("memory/model.safetensors"),
                stored_bytes: (n * per) as u64,
            });
            data.insert(name, values);
        }
        MemSource {
            metas,
            data,
            cancel_after: None,
            fail_on: None,
            reads: AtomicUsize::new(0),
            released: Default::default(),
        }
    }

    /// The fixture's 21 tensors (in the index's order), reported as bf16.
    pub fn fixture() -> MemSource {
        let exp = expected();
        let mut names: Vec<&String> = exp.keys().collect();
        names.sort();
        let tensors = names
            .into_iter()
            .map(|n| (n.clone(), exp[n].0.clone(), exp[n].1.clone()))
            .collect();
        MemSource::new(tensors, Dtype::BF16)
    }

    /// Random values for every tensor of a model of `shape` (HF names).
    pub fn random(shape: &ModelShape, seed: u64) -> MemSource {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        let tensors = TensorId::all(shape.layers)
            .into_iter()
            .map(|id| {
                let s = id.expected_shape(shape);
                let n: usize = s.iter().product();
                let v: Vec<f32> = (0..n).map(|_| next()).collect();
                (id.hf_name(), s, v)
            })
            .collect();
        MemSource::new(tensors, Dtype::BF16)
    }

    pub fn without(mut self, name: &str) -> MemSource {
        self.metas.retain(|m| m.name != name);
        self.data.remove(name);
        self
    }
}

impl TensorSource for MemSource {
    fn tensors(&self) -> &[TensorMeta] {
        &self.metas
    }

    fn read_f32(&self, name: &str, out: &mut Vec<f32>) -> Result<(), ConvertError> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((after, flag)) = self.cancel_after {
            if n >= after {
                flag.store(true, Ordering::SeqCst);
            }
        }
        if self.fail_on.as_deref() == Some(name) {
            return Err(ConvertError(format!(
                "memory/model.safetensors: tensor {name}: simulated read error"
            )));
        }
        let v = self
            .data
            .get(name)
            .ok_or_else(|| ConvertError(format!("no tensor {name}")))?;
        out.clear();
        out.extend_from_slice(v);
        Ok(())
    }

    fn release(&self, name: &str) {
        self.released.lock().unwrap().push(name.to_string());
    }
}

/// Converts the fixture folder `dir` with `source` to `out` (quiet).
pub fn convert_with(
    dir: &Path,
    source: MemSource,
    out: &Path,
    ty: Option<FileType>,
    force: bool,
    cancel: &AtomicBool,
) -> Result<Summary, ConvertError> {
    let opts = Options {
        ty,
        dry_run: false,
        force,
        quiet: true,
        threads: Some(2),
    };
    let job = convert::prepare_hf(dir, Box::new(source), ty)?;
    convert::execute(job, out, &opts, cancel, &mut std::io::sink())
}

/// Files in `dir` (names), sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The shape of a preset file in `shared/presets/`.
pub fn preset_shape(name: &str) -> ModelShape {
    let path = presets().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    xverse_convert::config::HfConfig::parse(&text, &path)
        .unwrap()
        .shape()
}

/// Metadata-only tensor list of a model of `shape` with HF names (bf16).
pub fn metas_for(shape: &ModelShape) -> Vec<TensorMeta> {
    TensorId::all(shape.layers)
        .into_iter()
        .map(|id| {
            let s = id.expected_shape(shape);
            let n: usize = s.iter().product();
            TensorMeta {
                name: id.hf_name(),
                shape: s,
                dtype: Dtype::BF16,
                file: PathBuf::from("model/pytorch_model.bin"),
                stored_bytes: 2 * n as u64,
            }
        })
        .collect()
}
