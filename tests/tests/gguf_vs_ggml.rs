//! Our GGUF reader and writer against ggml's own (llama.cpp b2757).
//!
//! * A file written by our `GgufWriter` (streamed, in uneven chunks) is read by ggml's
//!   `gguf_init_from_file` with the same version, alignment, data offset, keys, values (float bits
//!   included), tensor names, types, shapes, offsets and data bytes.
//! * A file ggml writes with `gguf_write_to_file` is read by our `Gguf::open` identically.
//! * Property tests do both directions on random metadata and tensors.
//!
//! b2757 cannot read or write arrays of arrays (its reader aborts on them): those are covered by
//! our own round trip at the end, and the oracle refuses such files instead of aborting.

use std::path::Path;

use proptest::prelude::*;
use xverse_quant::gguf::{Gguf, GgufWriter, TensorSpec, Value, ValueType};
use xverse_quant::GgmlType;
use xverse_tests::oracle::gguf::{self as ggml, vt, GgufValue, WriteTensor};
use xverse_tests::rng::SplitMix64;

/// Our value in the oracle's representation.
fn to_ggml(v: &Value) -> GgufValue {
    match v {
        Value::U8(x) => GgufValue::U8(*x),
        Value::I8(x) => GgufValue::I8(*x),
        Value::U16(x) => GgufValue::U16(*x),
        Value::I16(x) => GgufValue::I16(*x),
        Value::U32(x) => GgufValue::U32(*x),
        Value::I32(x) => GgufValue::I32(*x),
        Value::F32(x) => GgufValue::F32(*x),
        Value::Bool(x) => GgufValue::Bool(*x),
        Value::String(s) => GgufValue::String(s.clone()),
        Value::Array(t, items) => GgufValue::Array(t.id(), items.iter().map(to_ggml).collect()),
        Value::U64(x) => GgufValue::U64(*x),
        Value::I64(x) => GgufValue::I64(*x),
        Value::F64(x) => GgufValue::F64(*x),
    }
}

/// An oracle value as ours (for writing what ggml wrote).
fn from_ggml(v: &GgufValue) -> Value {
    match v {
        GgufValue::U8(x) => Value::U8(*x),
        GgufValue::I8(x) => Value::I8(*x),
        GgufValue::U16(x) => Value::U16(*x),
        GgufValue::I16(x) => Value::I16(*x),
        GgufValue::U32(x) => Value::U32(*x),
        GgufValue::I32(x) => Value::I32(*x),
        GgufValue::F32(x) => Value::F32(*x),
        GgufValue::Bool(x) => Value::Bool(*x),
        GgufValue::String(s) => Value::String(s.clone()),
        GgufValue::Array(t, items) => Value::Array(
            ValueType::from_id(*t).expect("valid element type"),
            items.iter().map(from_ggml).collect(),
        ),
        GgufValue::U64(x) => Value::U64(*x),
        GgufValue::I64(x) => Value::I64(*x),
        GgufValue::F64(x) => Value::F64(*x),
    }
}

/// Equality that compares floats by their bits (NaN payloads, -0.0).
fn eq_bits(a: &GgufValue, b: &GgufValue) -> bool {
    match (a, b) {
        (GgufValue::F32(x), GgufValue::F32(y)) => x.to_bits() == y.to_bits(),
        (GgufValue::F64(x), GgufValue::F64(y)) => x.to_bits() == y.to_bits(),
        (GgufValue::Array(ta, xa), GgufValue::Array(tb, xb)) => {
            ta == tb && xa.len() == xb.len() && xa.iter().zip(xb).all(|(x, y)| eq_bits(x, y))
        }
        _ => a == b,
    }
}

fn assert_same_kv(what: &str, ours: &[(String, GgufValue)], theirs: &[(String, GgufValue)]) {
    assert_eq!(
        ours.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        theirs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        "{what}: keys (in file order)"
    );
    for ((k, a), (_, b)) in ours.iter().zip(theirs) {
        assert!(
            eq_bits(a, b),
            "{what}: value of {k}: ours {a:?}, ggml {b:?}"
        );
    }
}

/// ggml's ne from our dims: padded with 1s to 4.
fn ne4(dims: &[u64]) -> [i64; 4] {
    let mut ne = [1i64; 4];
    for (n, d) in ne.iter_mut().zip(dims) {
        *n = *d as i64;
    }
    ne
}

fn random_bytes(rng: &mut SplitMix64, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// Metadata with every value type b2757 can read: all scalar types (float edge values
/// included), strings (empty, non-ASCII), arrays of every fixed type, empty arrays, arrays of
/// strings, a long array.
fn all_types_metadata() -> Vec<(String, Value)> {
    let mut m: Vec<(String, Value)> = vec![
        (
            "general.architecture".into(),
            Value::String("xverse".into()),
        ),
        ("t.u8".into(), Value::U8(200)),
        ("t.i8".into(), Value::I8(-100)),
        ("t.u16".into(), Value::U16(65535)),
        ("t.i16".into(), Value::I16(i16::MIN)),
        ("t.u32".into(), Value::U32(0xDEAD_BEEF)),
        ("t.i32".into(), Value::I32(i32::MIN)),
        ("t.f32".into(), Value::F32(-1.5e-7)),
        ("t.f32.nan".into(), Value::F32(f32::from_bits(0x7FC1_2345))),
        ("t.f32.negzero".into(), Value::F32(-0.0)),
        ("t.f32.inf".into(), Value::F32(f32::NEG_INFINITY)),
        ("t.f32.subnormal".into(), Value::F32(f32::from_bits(3))),
        ("t.bool.true".into(), Value::Bool(true)),
        ("t.bool.false".into(), Value::Bool(false)),
        (
            "t.str".into(),
            Value::String("héllo, 世界 🦀 \"quoted\"\n\ttab".into()),
        ),
        ("t.str.empty".into(), Value::String(String::new())),
        ("t.u64".into(), Value::U64(u64::MAX)),
        ("t.i64".into(), Value::I64(i64::MIN)),
        ("t.f64".into(), Value::F64(std::f64::consts::PI)),
        (
            "t.f64.nan".into(),
            Value::F64(f64::from_bits(0xFFF8_0000_0000_0001)),
        ),
    ];
    let arr = |t: ValueType, items: Vec<Value>| Value::Array(t, items);
    m.push((
        "a.u8".into(),
        arr(ValueType::U8, vec![Value::U8(0), Value::U8(255)]),
    ));
    m.push((
        "a.i8".into(),
        arr(ValueType::I8, vec![Value::I8(-128), Value::I8(127)]),
    ));
    m.push((
        "a.u16".into(),
        arr(ValueType::U16, vec![Value::U16(1), Value::U16(65535)]),
    ));
    m.push((
        "a.i16".into(),
        arr(ValueType::I16, vec![Value::I16(-2), Value::I16(3)]),
    ));
    m.push(("a.u32".into(), arr(ValueType::U32, vec![Value::U32(7); 3])));
    m.push((
        "a.i32".into(),
        arr(
            ValueType::I32,
            (0..10_000).map(|i| Value::I32(i * 7 - 5000)).collect(),
        ),
    ));
    m.push((
        "a.f32".into(),
        arr(
            ValueType::F32,
            vec![
                Value::F32(0.5),
                Value::F32(-0.0),
                Value::F32(f32::from_bits(0x7F80_0001)),
            ],
        ),
    ));
    m.push((
        "a.bool".into(),
        arr(
            ValueType::Bool,
            vec![Value::Bool(true), Value::Bool(false), Value::Bool(true)],
        ),
    ));
    m.push((
        "a.u64".into(),
        arr(ValueType::U64, vec![Value::U64(u64::MAX), Value::U64(0)]),
    ));
    m.push((
        "a.i64".into(),
        arr(ValueType::I64, vec![Value::I64(i64::MIN), Value::I64(-1)]),
    ));
    m.push((
        "a.f64".into(),
        arr(ValueType::F64, vec![Value::F64(1e300), Value::F64(-1e-300)]),
    ));
    m.push(("a.empty.u32".into(), arr(ValueType::U32, vec![])));
    m.push(("a.empty.str".into(), arr(ValueType::String, vec![])));
    m.push((
        "tokenizer.ggml.tokens".into(),
        arr(
            ValueType::String,
            ["<unk>", "", "▁the", "世界", "<0x0A>", "🦀🦀"]
                .iter()
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
    ));
    m
}

/// Tensors of every type b2757 knows that we support (BF16 excluded: b2757 has no BF16), with
/// 1 to 4 dimensions, a trailing dimension of 1, odd sizes.
fn all_types_tensors() -> Vec<TensorSpec> {
    let t = |name: &str, ty: GgmlType, dims: &[u64]| TensorSpec {
        name: name.into(),
        ty,
        dims: dims.to_vec(),
    };
    vec![
        t("f32.odd", GgmlType::F32, &[7, 3]),
        t("f16", GgmlType::F16, &[64, 2]),
        t("q4_0", GgmlType::Q4_0, &[64, 3]),
        t("q4_1.trailing1", GgmlType::Q4_1, &[32, 1]),
        t("q5_0.1d", GgmlType::Q5_0, &[96]),
        t("q5_1.3d", GgmlType::Q5_1, &[32, 2, 2]),
        t("q8_0.4d", GgmlType::Q8_0, &[32, 1, 2, 3]),
        t("q8_1", GgmlType::Q8_1, &[64]),
        t("q2_K", GgmlType::Q2K, &[256, 2]),
        t("q3_K", GgmlType::Q3K, &[256]),
        t("q4_K", GgmlType::Q4K, &[512, 1]),
        t("q5_K", GgmlType::Q5K, &[256, 3]),
        t("q6_K", GgmlType::Q6K, &[256, 2]),
        t("q8_K", GgmlType::Q8K, &[256]),
        t("blk.0.attn_q.weight", GgmlType::F32, &[1]),
    ]
}

fn tensor_bytes(spec: &TensorSpec) -> usize {
    let n: u64 = spec.dims.iter().product();
    spec.ty.bytes_for(n).expect("whole blocks") as usize
}

/// Writes `meta` and `tensors` (with `data`) with our streaming writer, feeding each tensor's
/// bytes in uneven chunks; checks the file against `to_bytes` and the writer's own plan.
/// Returns the planned (data offset, tensor offsets).
fn write_ours(
    path: &Path,
    alignment: Option<u64>,
    meta: &[(String, Value)],
    tensors: &[TensorSpec],
    data: &[Vec<u8>],
) -> (u64, Vec<u64>) {
    let plan = || {
        let mut w = GgufWriter::new();
        if let Some(a) = alignment {
            w.set_alignment(a).unwrap();
        }
        for (k, v) in meta {
            w.add_metadata(k.clone(), v.clone()).unwrap();
        }
        for t in tensors {
            w.add_tensor(t.clone()).unwrap();
        }
        w
    };
    let w = plan();
    let offsets = w.tensor_offsets();
    let data_offset = w.data_offset();
    let size = w.file_size();
    let mut f = w.create(path, false).unwrap();
    let chunks = [1usize, 7, 3, 100, 33, 4096];
    for (i, d) in data.iter().enumerate() {
        let mut pos = 0;
        let mut c = i;
        while pos < d.len() {
            let n = chunks[c % chunks.len()].min(d.len() - pos);
            f.write_tensor_data(&d[pos..pos + n]).unwrap();
            pos += n;
            c += 1;
        }
    }
    assert_eq!(
        f.finish().unwrap(),
        size,
        "finish() returns the planned size"
    );
    let file = std::fs::read(path).unwrap();
    assert_eq!(file.len() as u64, size, "file size");
    let slices: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    assert!(
        plan().to_bytes(&slices).unwrap() == file,
        "to_bytes equals the streamed file"
    );
    (data_offset, offsets)
}

/// `got` is `meta` (in order) plus one `general.alignment` key.
fn assert_is_meta_plus_alignment(got: &[(String, Value)], meta: &[(String, Value)]) {
    let without: Vec<(String, GgufValue)> = got
        .iter()
        .filter(|(k, _)| k != "general.alignment")
        .map(|(k, v)| (k.clone(), to_ggml(v)))
        .collect();
    let want: Vec<(String, GgufValue)> =
        meta.iter().map(|(k, v)| (k.clone(), to_ggml(v))).collect();
    assert_same_kv("our metadata besides general.alignment", &without, &want);
    assert_eq!(got.len(), meta.len() + 1, "one general.alignment key");
}

/// Reads `path` with ggml and checks it against what we wrote.
fn check_ggml_reads_ours(
    path: &Path,
    alignment: u64,
    meta: &[(String, Value)],
    tensors: &[TensorSpec],
    data: &[Vec<u8>],
    planned: &(u64, Vec<u64>),
) {
    let g = ggml::read_file(path, true).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, alignment, "alignment");
    assert_eq!(g.data_offset, planned.0, "data offset");
    let ours_kv: Vec<(String, GgufValue)> =
        meta.iter().map(|(k, v)| (k.clone(), to_ggml(v))).collect();
    assert_same_kv("ggml reading our file", &ours_kv, &g.kv);
    assert_eq!(g.tensors.len(), tensors.len(), "tensor count");
    for (i, ((spec, d), t)) in tensors.iter().zip(data).zip(&g.tensors).enumerate() {
        assert_eq!(t.name, spec.name, "tensor {i} name");
        assert_eq!(t.ty, spec.ty.id(), "{}: type", spec.name);
        assert_eq!(t.ne, ne4(&spec.dims), "{}: shape", spec.name);
        assert_eq!(t.offset, planned.1[i], "{}: offset", spec.name);
        assert!(
            t.data.as_deref() == Some(d.as_slice()),
            "{}: data bytes",
            spec.name
        );
    }
}

#[test]
fn ggml_reads_our_file() {
    let dir = tempfile::tempdir().unwrap();
    let meta = all_types_metadata();
    let tensors = all_types_tensors();
    let mut rng = SplitMix64::new(7);
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| random_bytes(&mut rng, tensor_bytes(t)))
        .collect();

    let p = dir.path().join("ours.gguf");
    let planned = write_ours(&p, None, &meta, &tensors, &data);
    check_ggml_reads_ours(&p, 32, &meta, &tensors, &data, &planned);

    // With general.alignment = 64 (ggml reads it as a u32 and aligns the data to it). Our
    // writer records the key first-come, so it is part of the expected metadata.
    let p64 = dir.path().join("ours64.gguf");
    let planned = write_ours(&p64, Some(64), &meta, &tensors, &data);
    let ours = Gguf::open(&p64).unwrap();
    assert_is_meta_plus_alignment(ours.metadata(), &meta);
    check_ggml_reads_ours(&p64, 64, ours.metadata(), &tensors, &data, &planned);
    assert!(ours
        .metadata()
        .iter()
        .any(|(k, v)| k == "general.alignment" && *v == Value::U32(64)));
    assert_eq!(planned.0 % 64, 0);
    assert!(planned.1.iter().all(|o| o % 64 == 0));

    // No metadata, no tensors.
    let pe = dir.path().join("empty.gguf");
    let planned = write_ours(&pe, None, &[], &[], &[]);
    check_ggml_reads_ours(&pe, 32, &[], &[], &[], &planned);
    println!("ggml reads our files: same keys, values, tensor names, types, shapes, offsets, data");
}

#[test]
fn we_read_ggml_file() {
    let dir = tempfile::tempdir().unwrap();
    let meta: Vec<(String, GgufValue)> = all_types_metadata()
        .iter()
        .map(|(k, v)| (k.clone(), to_ggml(v)))
        .collect();
    let specs = all_types_tensors();
    let mut rng = SplitMix64::new(8);
    let tensors: Vec<WriteTensor> = specs
        .iter()
        .map(|s| WriteTensor {
            name: s.name.clone(),
            ty: s.ty.id(),
            ne: s.dims.iter().map(|&d| d as i64).collect(),
            data: random_bytes(&mut rng, tensor_bytes(s)),
        })
        .collect();
    let p = dir.path().join("ggml.gguf");
    ggml::write_file(&p, &meta, &tensors).unwrap();
    check_we_read_ggml(&p, &meta, &tensors);

    // A real Q8_0 tensor: our view's to_f32 equals ggml's dequantization.
    let x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let q = xverse_tests::oracle::quant::quantize_reference(GgmlType::Q8_0, &x).unwrap();
    let t = WriteTensor {
        name: "w".into(),
        ty: GgmlType::Q8_0.id(),
        ne: vec![64, 4],
        data: q.clone(),
    };
    let p2 = dir.path().join("ggml_q8.gguf");
    ggml::write_file(&p2, &[], std::slice::from_ref(&t)).unwrap();
    check_we_read_ggml(&p2, &[], &[t]);
    let g = Gguf::open(&p2).unwrap();
    let ours = g.tensor("w").unwrap().to_f32().unwrap();
    let theirs = xverse_tests::oracle::quant::dequantize(GgmlType::Q8_0, &q, 256).unwrap();
    assert!(ours
        .iter()
        .zip(&theirs)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    println!("we read ggml's files: same keys, values, tensor names, types, shapes, offsets, data");
}

/// Reads a file ggml wrote with our reader and compares with what ggml was given (and with
/// what ggml itself reads back).
fn check_we_read_ggml(path: &Path, meta: &[(String, GgufValue)], tensors: &[WriteTensor]) {
    let theirs = ggml::read_file(path, false).unwrap();
    let ours = Gguf::open(path).unwrap_or_else(|e| panic!("our reader refuses ggml's file: {e}"));
    assert_eq!(ours.version(), 3);
    assert_eq!(ours.alignment(), 32);
    assert_eq!(ours.data_offset(), theirs.data_offset, "data offset");
    assert_eq!(ours.file_size(), std::fs::metadata(path).unwrap().len());
    let ours_kv: Vec<(String, GgufValue)> = ours
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), to_ggml(v)))
        .collect();
    assert_same_kv("our reader on ggml's file", &ours_kv, meta);
    assert_eq!(ours.tensors().len(), tensors.len());
    for (i, (info, t)) in ours.tensors().iter().zip(tensors).enumerate() {
        assert_eq!(info.name, t.name, "tensor {i}");
        assert_eq!(info.ty.id(), t.ty, "{}: type", t.name);
        // ggml writes n_dims without trailing 1s (ggml_n_dims), at least 1
        let mut dims: Vec<u64> = t.ne.iter().map(|&d| d as u64).collect();
        while dims.len() > 1 && dims.last() == Some(&1) {
            dims.pop();
        }
        assert_eq!(info.dims, dims, "{}: dims", t.name);
        assert_eq!(info.offset, theirs.tensors[i].offset, "{}: offset", t.name);
        assert_eq!(
            info.n_elements,
            t.ne.iter().product::<i64>() as u64,
            "{}: n_elements",
            t.name
        );
        assert_eq!(info.n_bytes, t.data.len() as u64, "{}: n_bytes", t.name);
        let view = ours.tensor(&t.name).expect("tensor by name");
        assert!(view.data == t.data.as_slice(), "{}: data bytes", t.name);
    }
}

#[test]
fn b2757_limits_are_refused_not_aborted() {
    let dir = tempfile::tempdir().unwrap();
    // Nested arrays: our writer writes them and our reader reads them back, ggml b2757 cannot
    // (its reader GGML_ASSERTs); the oracle refuses the file cleanly.
    let nested = Value::Array(
        ValueType::Array,
        vec![
            Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(2)]),
            Value::Array(ValueType::String, vec![Value::String("x".into())]),
            Value::Array(ValueType::Array, vec![Value::Array(ValueType::U8, vec![])]),
        ],
    );
    let meta = vec![("nested".to_string(), nested.clone())];
    let p = dir.path().join("nested.gguf");
    write_ours(&p, None, &meta, &[], &[]);
    assert_eq!(Gguf::open(&p).unwrap().get("nested"), Some(&nested));
    let e = ggml::read_file(&p, false).unwrap_err();
    assert!(e.0.contains("array"), "{e}");

    // BF16 tensors: b2757 has no type 30.
    let spec = TensorSpec {
        name: "b".into(),
        ty: GgmlType::BF16,
        dims: vec![8],
    };
    let p = dir.path().join("bf16.gguf");
    write_ours(&p, None, &[], std::slice::from_ref(&spec), &[vec![0u8; 16]]);
    let e = ggml::read_file(&p, false).unwrap_err();
    assert!(e.0.contains("type 30"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Property tests: random metadata and tensors, both directions. Empty metadata, tensor lists
// and arrays are covered above; here they are left out because b2757 prints a warning to
// stderr for every zero-sized allocation they cause.

/// Types b2757 can hold in a file, with their block sizes.
fn b2757_types() -> Vec<GgmlType> {
    // b2757 predates BF16; it holds every other type we have
    GgmlType::ALL
        .into_iter()
        .filter(|&t| t != GgmlType::BF16)
        .collect()
}

fn scalar_strategy(t: u32) -> BoxedStrategy<GgufValue> {
    match t {
        vt::U8 => any::<u8>().prop_map(GgufValue::U8).boxed(),
        vt::I8 => any::<i8>().prop_map(GgufValue::I8).boxed(),
        vt::U16 => any::<u16>().prop_map(GgufValue::U16).boxed(),
        vt::I16 => any::<i16>().prop_map(GgufValue::I16).boxed(),
        vt::U32 => any::<u32>().prop_map(GgufValue::U32).boxed(),
        vt::I32 => any::<i32>().prop_map(GgufValue::I32).boxed(),
        vt::F32 => any::<u32>()
            .prop_map(|b| GgufValue::F32(f32::from_bits(b)))
            .boxed(),
        vt::BOOL => any::<bool>().prop_map(GgufValue::Bool).boxed(),
        vt::U64 => any::<u64>().prop_map(GgufValue::U64).boxed(),
        vt::I64 => any::<i64>().prop_map(GgufValue::I64).boxed(),
        vt::F64 => any::<u64>()
            .prop_map(|b| GgufValue::F64(f64::from_bits(b)))
            .boxed(),
        _ => "\\PC{0,24}".prop_map(GgufValue::String).boxed(),
    }
}

/// A value b2757 can hold: a scalar, a string, or an array of either kind (no nesting).
fn value_strategy() -> impl Strategy<Value = GgufValue> {
    let types = prop::sample::select(vec![
        vt::U8,
        vt::I8,
        vt::U16,
        vt::I16,
        vt::U32,
        vt::I32,
        vt::F32,
        vt::BOOL,
        vt::STRING,
        vt::U64,
        vt::I64,
        vt::F64,
    ]);
    (types, any::<bool>()).prop_flat_map(|(t, is_array)| {
        if is_array {
            prop::collection::vec(scalar_strategy(t), 1..12)
                .prop_map(move |items| GgufValue::Array(t, items))
                .boxed()
        } else {
            scalar_strategy(t)
        }
    })
}

fn meta_strategy() -> impl Strategy<Value = Vec<(String, GgufValue)>> {
    prop::collection::vec(("[a-z.]{0,12}", value_strategy()), 1..10).prop_map(|kv| {
        kv.into_iter()
            .enumerate()
            .map(|(i, (k, v))| (format!("k{i}.{k}"), v))
            .collect()
    })
}

/// (type, dims) of a small tensor: 1 to 4 dims, ne0 whole blocks.
fn tensor_strategy() -> impl Strategy<Value = (GgmlType, Vec<u64>)> {
    (
        prop::sample::select(b2757_types()),
        1u64..3,
        prop::collection::vec(1u64..4, 0..4),
    )
        .prop_map(|(ty, blocks, rest)| {
            let mut dims = vec![blocks * ty.block_size() as u64];
            dims.extend(rest);
            (ty, dims)
        })
}

fn tensors_strategy() -> impl Strategy<Value = Vec<(GgmlType, Vec<u64>)>> {
    prop::collection::vec(tensor_strategy(), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn prop_ggml_reads_ours(
        meta in meta_strategy(),
        tensors in tensors_strategy(),
        align_log2 in prop::option::of(3u32..8),
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.gguf");
        let meta: Vec<(String, Value)> = meta.iter().map(|(k, v)| (k.clone(), from_ggml(v))).collect();
        let specs: Vec<TensorSpec> = tensors
            .iter()
            .enumerate()
            .map(|(i, (ty, dims))| TensorSpec { name: format!("t{i}.{}", ty.name()), ty: *ty, dims: dims.clone() })
            .collect();
        let mut rng = SplitMix64::new(seed);
        let data: Vec<Vec<u8>> = specs.iter().map(|t| random_bytes(&mut rng, tensor_bytes(t))).collect();
        let alignment = align_log2.map(|l| 1u64 << l);
        let planned = write_ours(&p, alignment, &meta, &specs, &data);
        let expect_meta = if alignment.is_some() {
            let with = Gguf::open(&p).unwrap().metadata().to_vec();
            assert_is_meta_plus_alignment(&with, &meta);
            with
        } else {
            meta.clone()
        };
        check_ggml_reads_ours(&p, alignment.unwrap_or(32), &expect_meta, &specs, &data, &planned);
    }

    #[test]
    fn prop_we_read_ggml(meta in meta_strategy(), tensors in tensors_strategy(), seed in any::<u64>()) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.gguf");
        let mut rng = SplitMix64::new(seed);
        let wt: Vec<WriteTensor> = tensors
            .iter()
            .enumerate()
            .map(|(i, (ty, dims))| WriteTensor {
                name: format!("t{i}"),
                ty: ty.id(),
                ne: dims.iter().map(|&d| d as i64).collect(),
                data: random_bytes(&mut rng, ty.bytes_for(dims.iter().product()).unwrap() as usize),
            })
            .collect();
        ggml::write_file(&p, &meta, &wt).unwrap();
        check_we_read_ggml(&p, &meta, &wt);
    }
}
