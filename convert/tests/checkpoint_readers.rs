//! Checkpoint readers against the real fixtures (made by torch.save / safetensors), and against
//! damaged or hostile copies of them.

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use ::safetensors::{Dtype as StDtype, SafeTensors};
use xverse_convert::checkpoint::{self, pickle, WeightFormat};
use xverse_convert::source::{Dtype, TensorSource};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
}

type Expected = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// The expected float32 values, read with the safetensors crate directly.
fn expected() -> Expected {
    let mut out = HashMap::new();
    for k in 1..=3 {
        let p = fixtures().join(format!(
            "tiny-xverse-bin/expected-0000{k}-of-00003.safetensors"
        ));
        let bytes = std::fs::read(&p).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            assert_eq!(view.dtype(), StDtype::F32);
            let vals: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            out.insert(name, (view.shape().to_vec(), vals));
        }
    }
    assert_eq!(out.len(), 21);
    out
}

fn assert_same_bits(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{name}[{i}]: got {g}, want {w}");
    }
}

/// Every tensor of `src` equals the expected values exactly, and there are exactly those.
fn check_all(src: &dyn TensorSource, want_dtype: Dtype) {
    let exp = expected();
    let metas = src.tensors();
    assert_eq!(metas.len(), exp.len());
    let mut buf = Vec::new();
    for m in metas {
        let (shape, vals) = exp
            .get(&m.name)
            .unwrap_or_else(|| panic!("unexpected {}", m.name));
        assert_eq!(&m.shape, shape, "{}", m.name);
        assert_eq!(m.dtype, want_dtype, "{}", m.name);
        assert_eq!(m.numel(), vals.len());
        let es = if want_dtype == Dtype::F32 { 4 } else { 2 };
        assert_eq!(m.stored_bytes, (vals.len() * es) as u64, "{}", m.name);
        assert_eq!(src.meta(&m.name), Some(m));
        src.read_f32(&m.name, &mut buf).unwrap();
        assert_same_bits(&m.name, &buf, vals);
        // release, then read again: same values
        src.release(&m.name);
        buf.push(1.0);
        src.read_f32(&m.name, &mut buf).unwrap();
        assert_same_bits(&m.name, &buf, vals);
    }
    assert!(src.read_f32("no.such.tensor", &mut buf).is_err());
}

#[test]
fn checkpoint_torch_bin_shards_read_exactly() {
    let src = checkpoint::open_hf(&fixtures().join("tiny-xverse-bin")).unwrap();
    check_all(src.as_ref(), Dtype::BF16);
    // order: shard 1 (embed first), then shard 2 (lm_head last)
    let names: Vec<&str> = src.tensors().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names[0], "model.embed_tokens.weight");
    assert_eq!(*names.last().unwrap(), "lm_head.weight");
    for m in src.tensors() {
        assert!(m.file.to_string_lossy().ends_with(".bin"));
    }
}

#[test]
fn checkpoint_safetensors_shards_read_exactly() {
    let src = checkpoint::open_hf(&fixtures().join("tiny-xverse-st")).unwrap();
    check_all(src.as_ref(), Dtype::BF16);
}

#[test]
fn checkpoint_legacy_torch_reads_exactly() {
    let p = fixtures().join("tiny-xverse-fp32-legacy/pytorch_model.bin");
    assert!(checkpoint::is_legacy_torch(&p).unwrap());
    assert_eq!(
        checkpoint::detect_format(&p).unwrap(),
        WeightFormat::TorchLegacy
    );
    let src = checkpoint::open_hf(&fixtures().join("tiny-xverse-fp32-legacy")).unwrap();
    check_all(src.as_ref(), Dtype::F32);
}

#[test]
fn checkpoint_single_files_and_formats() {
    let bin = fixtures().join("tiny-xverse-bin/pytorch_model-00001-of-00002.bin");
    let st = fixtures().join("tiny-xverse-st/model-00002-of-00002.safetensors");
    assert_eq!(
        checkpoint::detect_format(&bin).unwrap(),
        WeightFormat::TorchZip
    );
    assert_eq!(
        checkpoint::detect_format(&st).unwrap(),
        WeightFormat::Safetensors
    );
    assert!(!checkpoint::is_legacy_torch(&bin).unwrap());
    let exp = expected();
    let mut buf = Vec::new();
    for p in [&bin, &st] {
        let src = checkpoint::open_file(p).unwrap();
        assert!(!src.tensors().is_empty());
        for m in src.tensors() {
            assert_eq!(m.file, *p);
            src.read_f32(&m.name, &mut buf).unwrap();
            assert_same_bits(&m.name, &buf, &exp[&m.name].1);
        }
    }
    assert!(checkpoint::has_hf_weights(
        &fixtures().join("tiny-xverse-st")
    ));
    assert!(!checkpoint::has_hf_weights(&fixtures()));
}

/// The layouts of the fixture README's "Odd storage layouts", checked one by one.
#[test]
fn checkpoint_odd_storage_layouts() {
    let layout: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tiny-xverse-bin/storage_layout.json")).unwrap(),
    )
    .unwrap();
    let layout: HashMap<String, &serde_json::Value> = layout
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t))
        .collect();
    let stride = |n: &str| -> Vec<u64> {
        layout[n]["stride"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    // the fixture really has the odd layouts
    assert_eq!(stride("model.layers.0.self_attn.q_proj.weight"), [1, 64]);
    assert_eq!(stride("model.layers.1.self_attn.o_proj.weight"), [1, 64]);
    assert_eq!(stride("model.layers.0.mlp.down_proj.weight"), [200, 1]);
    assert_eq!(
        layout["model.layers.0.self_attn.v_proj.weight"]["storage_offset"],
        8192
    );

    let src = checkpoint::open_hf(&fixtures().join("tiny-xverse-bin")).unwrap();
    let exp = expected();
    let mut buf = Vec::new();
    let cases: &[(&str, Option<f32>)] = &[
        ("model.layers.0.self_attn.q_proj.weight", None),
        ("model.layers.1.self_attn.o_proj.weight", None),
        ("model.layers.0.self_attn.k_proj.weight", Some(-7.0)),
        ("model.layers.0.self_attn.v_proj.weight", Some(-7.0)),
        ("model.layers.0.mlp.down_proj.weight", Some(99.0)),
        ("model.layers.1.mlp.gate_proj.weight", None),
        ("model.layers.1.mlp.up_proj.weight", None),
        ("model.layers.1.input_layernorm.weight", Some(5.0)),
        ("model.layers.1.post_attention_layernorm.weight", Some(5.0)),
    ];
    for &(name, junk) in cases {
        src.read_f32(name, &mut buf).unwrap();
        assert_same_bits(name, &buf, &exp[name].1);
        if let Some(j) = junk {
            assert!(!buf.contains(&j), "{name} contains junk value {j}");
        }
    }
    assert_eq!(
        src.meta("model.layers.0.mlp.down_proj.weight")
            .unwrap()
            .shape,
        [64, 172]
    );
    // a transposed view is not the storage read in order
    src.read_f32("model.layers.0.self_attn.q_proj.weight", &mut buf)
        .unwrap();
    let q = buf.clone();
    assert_ne!(q[1], q[64]);
}

/// Rewrites a zip archive with every record deflated (or only some).
fn repack(src: &[u8], deflate: impl Fn(&str) -> bool) -> Vec<u8> {
    let mut ar = zip::ZipArchive::new(Cursor::new(src)).unwrap();
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..ar.len() {
        let mut f = ar.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        let method = if deflate(&name) {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        w.start_file(name, opts).unwrap();
        w.write_all(&data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn checkpoint_deflated_zip_records_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let exp = expected();
    let mut buf = Vec::new();
    for shard in [
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
    ] {
        let orig = std::fs::read(fixtures().join("tiny-xverse-bin").join(shard)).unwrap();
        for (tag, pick) in [
            ("all", &(|_: &str| true) as &dyn Fn(&str) -> bool),
            ("data", &|n: &str| n.contains("/data/")),
            ("pkl", &|n: &str| n.ends_with("data.pkl")),
        ] {
            let bytes = repack(&orig, pick);
            let ar = zip::ZipArchive::new(Cursor::new(&bytes[..])).unwrap();
            let deflated = (0..ar.len())
                .filter(|&i| {
                    ar.by_index_data(i).unwrap().compression() == zip::CompressionMethod::Deflated
                })
                .count();
            assert!(deflated > 0, "{tag}: nothing was deflated");
            let p = dir.path().join(format!("{tag}-{shard}"));
            std::fs::write(&p, &bytes).unwrap();
            let src = checkpoint::open_file(&p).unwrap();
            assert!(!src.tensors().is_empty());
            for m in src.tensors() {
                src.read_f32(&m.name, &mut buf).unwrap();
                assert_same_bits(&m.name, &buf, &exp[&m.name].1);
                src.release(&m.name);
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn err_of(r: Result<Box<dyn TensorSource>, xverse_convert::source::ConvertError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn checkpoint_folder_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    // no weights at all
    let e = err_of(checkpoint::open_hf(tmp.path()));
    assert!(
        e.contains("no weights found") && e.contains("pytorch_model.bin"),
        "{e}"
    );
    assert!(checkpoint::open_hf(&tmp.path().join("nope")).is_err());

    // index naming a missing shard
    for fixture in ["tiny-xverse-bin", "tiny-xverse-st"] {
        let d = tmp.path().join(format!("{fixture}-missing"));
        copy_dir(&fixtures().join(fixture), &d);
        let shard = if fixture.ends_with("bin") {
            "pytorch_model-00002-of-00002.bin"
        } else {
            "model-00002-of-00002.safetensors"
        };
        std::fs::remove_file(d.join(shard)).unwrap();
        let e = err_of(checkpoint::open_hf(&d));
        assert!(e.contains(shard) && e.contains("does not exist"), "{e}");
    }

    // a tensor mapped to a shard that does not hold it
    let d = tmp.path().join("wrong-map");
    copy_dir(&fixtures().join("tiny-xverse-st"), &d);
    let idx = d.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&idx).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors".into();
    std::fs::write(&idx, json.to_string()).unwrap();
    let e = err_of(checkpoint::open_hf(&d));
    assert!(
        e.contains("lm_head.weight")
            && e.contains("model-00001-of-00002.safetensors")
            && e.contains("does not hold it"),
        "{e}"
    );
    // a tensor the index lists but no shard has
    json["weight_map"]["lm_head.weight"] = "model-00002-of-00002.safetensors".into();
    json["weight_map"]["model.extra.weight"] = "model-00002-of-00002.safetensors".into();
    std::fs::write(&idx, json.to_string()).unwrap();
    let e = err_of(checkpoint::open_hf(&d));
    assert!(e.contains("model.extra.weight"), "{e}");
    // a shard path escaping the folder
    json["weight_map"]["model.extra.weight"] = "../../etc/passwd".into();
    std::fs::write(&idx, json.to_string()).unwrap();
    let e = err_of(checkpoint::open_hf(&d));
    assert!(e.contains("not a file inside"), "{e}");
    // invalid JSON
    std::fs::write(&idx, "{\"weight_map\": ").unwrap();
    let e = err_of(checkpoint::open_hf(&d));
    assert!(
        e.contains("model.safetensors.index.json") && e.contains("JSON"),
        "{e}"
    );
}

/// Opens `bytes` as a file called `name`; if it opens, reads every tensor. Must never panic.
fn open_and_read_all(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let src = checkpoint::open_file(&p).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    for m in src.tensors() {
        src.read_f32(&m.name, &mut buf).map_err(|e| e.to_string())?;
        src.release(&m.name);
    }
    Ok(())
}

#[test]
fn checkpoint_truncated_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let files = [
        (
            "bin",
            fixtures().join("tiny-xverse-bin/pytorch_model-00001-of-00002.bin"),
        ),
        (
            "st",
            fixtures().join("tiny-xverse-st/model-00001-of-00002.safetensors"),
        ),
        (
            "legacy",
            fixtures().join("tiny-xverse-fp32-legacy/pytorch_model.bin"),
        ),
    ];
    for (tag, path) in files {
        let full = std::fs::read(&path).unwrap();
        let name = format!(
            "cut-{tag}.{}",
            if tag == "st" { "safetensors" } else { "bin" }
        );
        let mut cuts: Vec<usize> = (0..full.len()).step_by(full.len() / 97 + 1).collect();
        cuts.extend([1, 8, 15, 16, 100, full.len() / 2, full.len() - 1]);
        for cut in cuts {
            let r = open_and_read_all(tmp.path(), &name, &full[..cut]);
            let e = r.expect_err(&format!(
                "{tag} cut at {cut} of {} was accepted",
                full.len()
            ));
            assert!(
                e.contains(&name) || e.contains("empty"),
                "{tag} cut {cut}: {e}"
            );
        }
        open_and_read_all(tmp.path(), &name, &full).unwrap();
    }
}

#[test]
fn checkpoint_corrupted_files_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let files = [
        fixtures().join("tiny-xverse-bin/pytorch_model-00002-of-00002.bin"),
        fixtures().join("tiny-xverse-st/model-00002-of-00002.safetensors"),
        fixtures().join("tiny-xverse-fp32-legacy/pytorch_model.bin"),
        fixtures().join("evil/pytorch_model.bin"),
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for path in files {
        let full = std::fs::read(&path).unwrap();
        // the pickle / header region is where damage matters most: bias toward the first 4 KB
        for i in 0..300 {
            let mut b = full.clone();
            for _ in 0..1 + i % 3 {
                let r = rnd() as usize;
                let at = if i % 2 == 0 {
                    r % full.len().min(4096)
                } else {
                    r % full.len()
                };
                b[at] = (rnd() & 0xff) as u8;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let _ = open_and_read_all(tmp.path(), &format!("x-{name}"), &b);
        }
    }
}

// ---- hand-made torch archives: one tensor with chosen storage, offset, sizes, strides ----

fn pkl_int(out: &mut Vec<u8>, v: i64) {
    out.push(0x8a); // LONG1
    out.push(8);
    out.extend_from_slice(&v.to_le_bytes());
}

fn pkl_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct T<'a> {
    name: &'a str,
    class: &'a str,
    key: &'a str,
    numel: i64,
    offset: i64,
    shape: &'a [i64],
    stride: &'a [i64],
}

fn state_dict_pickle(ts: &[T]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    for t in ts {
        pkl_str(&mut p, t.name);
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(("); // GLOBAL, MARK, MARK
        pkl_str(&mut p, "storage");
        p.extend_from_slice(format!("ctorch\n{}\n", t.class).as_bytes());
        pkl_str(&mut p, t.key);
        pkl_str(&mut p, "cpu");
        pkl_int(&mut p, t.numel);
        p.extend_from_slice(b"tQ"); // TUPLE, BINPERSID
        pkl_int(&mut p, t.offset);
        p.push(b'(');
        for &d in t.shape {
            pkl_int(&mut p, d);
        }
        p.extend_from_slice(b"t(");
        for &s in t.stride {
            pkl_int(&mut p, s);
        }
        p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend_from_slice(b"u.");
    p
}

fn torch_zip(pkl: &[u8], records: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    w.start_file("archive/data.pkl", opts).unwrap();
    w.write_all(pkl).unwrap();
    w.start_file("archive/byteorder", opts).unwrap();
    w.write_all(b"little").unwrap();
    for (k, data) in records {
        w.start_file(format!("archive/data/{k}"), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn bf16_bytes(vals: &[f32]) -> Vec<u8> {
    vals.iter()
        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect()
}

#[test]
fn checkpoint_hand_made_views() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Vec<f32> = (0..24).map(|i| i as f32).collect();
    // a [2,3,4] storage; view: offset 1, sizes [3,2], strides [1,12] (a 3-d transposed slice)
    let pkl = state_dict_pickle(&[
        T {
            name: "a",
            class: "BFloat16Storage",
            key: "0",
            numel: 24,
            offset: 1,
            shape: &[3, 2],
            stride: &[1, 12],
        },
        T {
            name: "b",
            class: "BFloat16Storage",
            key: "0",
            numel: 24,
            offset: 0,
            shape: &[2, 3, 4],
            stride: &[12, 4, 1],
        },
        T {
            name: "c",
            class: "BFloat16Storage",
            key: "0",
            numel: 24,
            offset: 23,
            shape: &[],
            stride: &[],
        },
        T {
            name: "d",
            class: "BFloat16Storage",
            key: "0",
            numel: 24,
            offset: 5,
            shape: &[0, 7],
            stride: &[7, 1],
        },
        T {
            name: "i",
            class: "LongStorage",
            key: "1",
            numel: 2,
            offset: 0,
            shape: &[2],
            stride: &[1],
        },
    ]);
    let bytes = torch_zip(&pkl, &[("0", bf16_bytes(&storage)), ("1", vec![0; 16])]);
    let p = tmp.path().join("views.bin");
    std::fs::write(&p, &bytes).unwrap();
    let src = checkpoint::open_file(&p).unwrap();
    let names: Vec<&str> = src.tensors().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"], "int tensors are skipped");
    let mut buf = Vec::new();
    src.read_f32("a", &mut buf).unwrap();
    assert_eq!(buf, [1.0, 13.0, 2.0, 14.0, 3.0, 15.0]);
    src.read_f32("b", &mut buf).unwrap();
    assert_eq!(buf, storage);
    src.read_f32("c", &mut buf).unwrap();
    assert_eq!(buf, [23.0]);
    assert_eq!(src.meta("c").unwrap().shape, Vec::<usize>::new());
    src.read_f32("d", &mut buf).unwrap();
    assert!(buf.is_empty());
    // f16 and f32 storages
    let h: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let f: Vec<u8> = [0.1f32, 7.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let pkl = state_dict_pickle(&[
        T {
            name: "h",
            class: "HalfStorage",
            key: "h",
            numel: 2,
            offset: 0,
            shape: &[2],
            stride: &[1],
        },
        T {
            name: "f",
            class: "FloatStorage",
            key: "f",
            numel: 2,
            offset: 1,
            shape: &[1],
            stride: &[1],
        },
    ]);
    let p = tmp.path().join("types.bin");
    std::fs::write(&p, torch_zip(&pkl, &[("h", h), ("f", f)])).unwrap();
    let src = checkpoint::open_file(&p).unwrap();
    assert_eq!(src.meta("h").unwrap().dtype, Dtype::F16);
    assert_eq!(src.meta("f").unwrap().dtype, Dtype::F32);
    src.read_f32("h", &mut buf).unwrap();
    assert_eq!(buf, [1.5, -2.0]);
    src.read_f32("f", &mut buf).unwrap();
    assert_eq!(buf, [7.0]);
}

#[test]
fn checkpoint_bad_views_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = bf16_bytes(&[0.0; 16]);
    let t = |numel, offset, shape, stride| T {
        name: "w",
        class: "BFloat16Storage",
        key: "0",
        numel,
        offset,
        shape,
        stride,
    };
    let cases: Vec<(T, &str)> = vec![
        (t(16, 17, &[1], &[1]), "past the end"),
        (t(16, 16, &[1], &[1]), "past the end"),
        (t(16, 0, &[4, 5], &[4, 1]), "past the end"),
        (t(16, 0, &[2, 2], &[1, 15]), "past the end"),
        (t(16, 0, &[1 << 40, 1 << 40], &[1, 1]), "overflow"),
        (t(16, 0, &[4, 4], &[1 << 62, 1]), "overflow"),
        (t(16, 0, &[32], &[0]), "broadcast"),
        (t(1 << 62, 0, &[4], &[1]), "record has 32 bytes"),
        (
            T {
                class: "FloatStorage",
                ..t(i64::MAX, 0, &[4], &[1])
            },
            "too large",
        ),
        (t(64, 0, &[4], &[1]), "record has 32 bytes"),
        (t(16, -1, &[4], &[1]), "negative"),
        (t(16, 0, &[-4], &[1]), "negative"),
        (t(16, 0, &[4, 4], &[1]), "dimensions"),
    ];
    for (i, (tensor, want)) in cases.into_iter().enumerate() {
        let pkl = state_dict_pickle(&[tensor]);
        let name = format!("bad{i}.bin");
        let p = tmp.path().join(&name);
        std::fs::write(&p, torch_zip(&pkl, &[("0", data.clone())])).unwrap();
        let e = err_of(checkpoint::open_file(&p));
        assert!(e.contains(&name) && e.contains(want), "case {i}: {e}");
    }
    // missing storage record
    let pkl = state_dict_pickle(&[t(16, 0, &[16], &[1])]);
    let p = tmp.path().join("norec.bin");
    std::fs::write(&p, torch_zip(&pkl, &[("1", data.clone())])).unwrap();
    let e = err_of(checkpoint::open_file(&p));
    assert!(e.contains("archive/data/0") && e.contains("missing"), "{e}");
    // a storage class that is not on the allow-list
    let mut bad = t(16, 0, &[16], &[1]);
    bad.class = "FancyStorage";
    let pkl = state_dict_pickle(&[bad]);
    let p = tmp.path().join("fancy.bin");
    std::fs::write(&p, torch_zip(&pkl, &[("0", data.clone())])).unwrap();
    let e = err_of(checkpoint::open_file(&p));
    assert!(
        e.contains("refusing") && e.contains("torch.FancyStorage"),
        "{e}"
    );
    // not a checkpoint at all
    let p = tmp.path().join("text.bin");
    std::fs::write(&p, b"hello, world").unwrap();
    let e = err_of(checkpoint::open_file(&p));
    assert!(
        e.contains("text.bin") && e.contains("not a PyTorch checkpoint"),
        "{e}"
    );
    // empty file
    let p = tmp.path().join("empty.bin");
    std::fs::write(&p, b"").unwrap();
    let e = err_of(checkpoint::open_file(&p));
    assert!(e.contains("empty.bin") && e.contains("empty"), "{e}");
}

#[test]
fn checkpoint_safetensors_damage_is_clear() {
    let tmp = tempfile::tempdir().unwrap();
    // header claiming a huge shape
    let header = br#"{"w":{"dtype":"BF16","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0; 8]);
    let p = tmp.path().join("huge.safetensors");
    std::fs::write(&p, &b).unwrap();
    let e = err_of(checkpoint::open_file(&p));
    assert!(e.contains("huge.safetensors"), "{e}");
    // header length past the end of the file
    let mut b = (1u64 << 20).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    let p = tmp.path().join("long.safetensors");
    std::fs::write(&p, &b).unwrap();
    let e = err_of(checkpoint::open_file(&p));
    assert!(e.contains("long.safetensors"), "{e}");
    // a valid unaligned-header file: data starts at an odd address
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} "#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&1.25f32.to_le_bytes());
    b.extend_from_slice(&(-3.0f32).to_le_bytes());
    let p = tmp.path().join("odd.safetensors");
    std::fs::write(&p, &b).unwrap();
    let src = checkpoint::open_file(&p).unwrap();
    let mut buf = Vec::new();
    src.read_f32("w", &mut buf).unwrap();
    assert_eq!(buf, [1.25, -3.0]);
}

#[test]
fn checkpoint_pickle_allow_list() {
    let allowed = [
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch", "BFloat16Storage"),
        ("torch", "HalfStorage"),
        ("torch", "FloatStorage"),
        ("torch", "UntypedStorage"),
        ("torch.storage", "UntypedStorage"),
        ("torch", "bfloat16"),
        ("torch", "float16"),
        ("torch", "float32"),
    ];
    for (m, n) in allowed {
        assert!(pickle::lookup_global(m, n).is_some(), "{m}.{n}");
    }
    let refused = [
        ("posix", "system"),
        ("os", "system"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_qtensor_foo"),
        ("subprocess", "Popen"),
        ("torch", "Storage\nx"),
    ];
    for (m, n) in refused {
        assert!(pickle::lookup_global(m, n).is_none(), "{m}.{n}");
    }
    // STACK_GLOBAL (protocol 4) is checked like GLOBAL
    let p = b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x04exec\x94\x93\x94\x8c\x01x\x85R.";
    let e = pickle::load(p, "p4.bin").unwrap_err().to_string();
    assert!(
        e.contains("refusing p4.bin: its pickle calls builtins.exec"),
        "{e}"
    );
}
