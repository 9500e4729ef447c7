//! Valid GGUF files used as the starting corpus of the `gguf_reader` fuzz target
//! (`fuzz/seeds/`, written by `xverse-models fuzz-seeds DIR`).
//!
//! Small on purpose (about 160 KB in all): tiny models of several types, one tensor of every
//! ggml type this project knows, a file with every metadata value type (arrays of arrays too),
//! a file with `general.alignment = 64`, and an empty file. The file names have no `.gguf`
//! extension (the repository ignores `*.gguf`; libFuzzer does not care).

use std::error::Error;
use std::path::Path;

use xverse_quant::blocks;
use xverse_quant::gguf::{GgufWriter, TensorSpec, Value, ValueType};
use xverse_quant::GgmlType;

use crate::rng::Rng;
use crate::{tiny_gguf_bytes, TinySpec};

/// A seed file: (file name, bytes).
pub type Seed = (String, Vec<u8>);

/// Every seed.
pub fn fuzz_seeds() -> Result<Vec<Seed>, Box<dyn Error>> {
    let mut out = Vec::new();
    let small = TinySpec {
        hidden: 8,
        layers: 1,
        heads: 2,
        kv_heads: 2,
        ffn: 16,
        vocab: 260,
        context: 64,
        ty: GgmlType::F32,
        seed: 11,
    };
    out.push(("tiny-f32".to_string(), tiny_gguf_bytes(&small)?));
    let gqa = TinySpec {
        hidden: 16,
        heads: 4,
        kv_heads: 2,
        ffn: 24,
        ty: GgmlType::F16,
        seed: 12,
        ..small.clone()
    };
    out.push(("tiny-f16-gqa".to_string(), tiny_gguf_bytes(&gqa)?));
    for (ty, seed) in [
        (GgmlType::Q8_0, 13),
        (GgmlType::Q4_0, 14),
        (GgmlType::Q5_1, 15),
    ] {
        // ffn 48: ffn_down rows are not whole 32-blocks, so it falls back to F16
        let spec = TinySpec {
            hidden: 32,
            ffn: 48,
            ty,
            seed,
            ..small.clone()
        };
        out.push((format!("tiny-{}", ty.name()), tiny_gguf_bytes(&spec)?));
    }
    out.push(("types".to_string(), every_type()?));
    out.push(("metadata".to_string(), metadata_heavy()?));
    out.push(("align64".to_string(), aligned_64()?));
    out.push(("empty".to_string(), GgufWriter::new().to_bytes(&[])?));
    Ok(out)
}

/// Writes every seed into `dir` (created if missing). Returns the number of bytes written.
pub fn write_fuzz_seeds(dir: &Path) -> Result<u64, Box<dyn Error>> {
    std::fs::create_dir_all(dir)?;
    let mut total = 0;
    for (name, bytes) in fuzz_seeds()? {
        std::fs::write(dir.join(name), &bytes)?;
        total += bytes.len() as u64;
    }
    Ok(total)
}

/// Bytes of `n` elements of `ty`: quantized from random values where a quantizer exists,
/// random bytes otherwise (Q2_K, Q3_K).
fn tensor_bytes(ty: GgmlType, n: usize, rng: &mut Rng) -> Result<Vec<u8>, Box<dyn Error>> {
    let len = ty.bytes_for(n as u64).ok_or("not whole blocks")? as usize;
    let mut out = vec![0u8; len];
    if blocks::can_quantize(ty) {
        let mut vals = vec![0f32; n];
        rng.fill_normal(&mut vals, 0.0, 1.0);
        blocks::quantize_row(ty, &vals, &mut out)?;
    } else {
        for b in out.iter_mut() {
            *b = rng.next_u64() as u8;
        }
    }
    Ok(out)
}

/// One 2x256 tensor of every type, plus a 3-D and a 4-D tensor.
fn every_type() -> Result<Vec<u8>, Box<dyn Error>> {
    let mut rng = Rng::new(20);
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("test".into()))?;
    let mut data = Vec::new();
    for ty in GgmlType::ALL {
        w.add_tensor(TensorSpec {
            name: format!("t.{}", ty.name()),
            ty,
            dims: vec![256, 2],
        })?;
        data.push(tensor_bytes(ty, 512, &mut rng)?);
    }
    for (name, ty, dims) in [
        ("t.3d", GgmlType::F32, vec![32, 2, 2]),
        ("t.4d", GgmlType::Q8_0, vec![32, 2, 2, 2]),
        ("t.1d", GgmlType::F16, vec![5]),
    ] {
        let n = dims.iter().product::<u64>() as usize;
        w.add_tensor(TensorSpec {
            name: name.into(),
            ty,
            dims,
        })?;
        data.push(tensor_bytes(ty, n, &mut rng)?);
    }
    let slices: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    Ok(w.to_bytes(&slices)?)
}

/// Every metadata value type, arrays of each, empty arrays and strings, arrays of arrays.
fn metadata_heavy() -> Result<Vec<u8>, Box<dyn Error>> {
    let mut w = GgufWriter::new();
    let scalars = vec![
        ("u8", Value::U8(200)),
        ("i8", Value::I8(-100)),
        ("u16", Value::U16(60000)),
        ("i16", Value::I16(-30000)),
        ("u32", Value::U32(4_000_000_000)),
        ("i32", Value::I32(-2_000_000_000)),
        ("f32", Value::F32(-1.5e-3)),
        ("bool", Value::Bool(true)),
        ("string", Value::String("héllo 世界 ▁tok\n".into())),
        ("u64", Value::U64(u64::MAX - 1)),
        ("i64", Value::I64(i64::MIN + 1)),
        ("f64", Value::F64(std::f64::consts::PI)),
    ];
    w.add_metadata("general.architecture", Value::String("test".into()))?;
    for (k, v) in &scalars {
        w.add_metadata(format!("test.scalar.{k}"), v.clone())?;
    }
    for (k, v) in &scalars {
        let vt = v.value_type();
        w.add_metadata(
            format!("test.array.{k}"),
            Value::Array(vt, vec![v.clone(), v.clone(), v.clone()]),
        )?;
    }
    w.add_metadata("test.empty_string", Value::String(String::new()))?;
    w.add_metadata("test.empty_array", Value::Array(ValueType::U32, vec![]))?;
    w.add_metadata(
        "test.strings",
        Value::Array(
            ValueType::String,
            ["", "a", "<0x0A>", "北京", "▁the"]
                .iter()
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
    )?;
    let inner = |n: u32| Value::Array(ValueType::U32, (0..n).map(Value::U32).collect());
    w.add_metadata(
        "test.nested",
        Value::Array(
            ValueType::Array,
            vec![
                inner(0),
                inner(3),
                Value::Array(ValueType::String, vec![Value::String("x".into())]),
            ],
        ),
    )?;
    let mut deep = Value::Array(ValueType::I8, vec![Value::I8(1)]);
    for _ in 0..4 {
        deep = Value::Array(ValueType::Array, vec![deep]);
    }
    w.add_metadata("test.deep", deep)?;
    w.add_tensor(TensorSpec {
        name: "x".into(),
        ty: GgmlType::F32,
        dims: vec![8],
    })?;
    let data: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
    Ok(w.to_bytes(&[&data])?)
}

/// `general.alignment = 64` with tensors of sizes that need padding.
fn aligned_64() -> Result<Vec<u8>, Box<dyn Error>> {
    let mut rng = Rng::new(30);
    let mut w = GgufWriter::new();
    w.set_alignment(64)?;
    w.add_metadata("general.architecture", Value::String("test".into()))?;
    let tensors = [
        ("a", GgmlType::F16, vec![3u64]),
        ("b", GgmlType::Q4_0, vec![32, 3]),
        ("c", GgmlType::F32, vec![7, 1]),
    ];
    let mut data = Vec::new();
    for (name, ty, dims) in tensors {
        let n = dims.iter().product::<u64>() as usize;
        w.add_tensor(TensorSpec {
            name: name.into(),
            ty,
            dims,
        })?;
        data.push(tensor_bytes(ty, n, &mut rng)?);
    }
    let slices: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    Ok(w.to_bytes(&slices)?)
}
