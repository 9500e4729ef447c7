//! GGUF reader: one test per rejection (each checks that the one-line message names the file,
//! the key or tensor, the byte offset and what was expected), plus acceptance of the valid
//! variants, typed getters and tensor views.

mod gguf_common;

mod gguf_reader {
    use super::gguf_common::{assert_mentions, noise, vt, Raw, NAME};
    use xverse_quant::gguf::{
        Gguf, GgufError, GgufWriter, TensorSpec, Value, ValueType, MAX_ARRAY_DEPTH,
    };
    use xverse_quant::GgmlType;

    const F32: u32 = 0;
    const Q4_0: u32 = 2;

    /// A valid file with every kind of metadata and three tensors whose sizes need padding.
    fn valid_file() -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", Value::String("xverse".into()))
            .unwrap();
        w.add_metadata("u8", Value::U8(7)).unwrap();
        w.add_metadata("i8", Value::I8(-7)).unwrap();
        w.add_metadata("u16", Value::U16(700)).unwrap();
        w.add_metadata("i16", Value::I16(-700)).unwrap();
        w.add_metadata("u32", Value::U32(70_000)).unwrap();
        w.add_metadata("i32", Value::I32(-70_000)).unwrap();
        w.add_metadata("f32", Value::F32(0.5)).unwrap();
        w.add_metadata("bool", Value::Bool(true)).unwrap();
        w.add_metadata("u64", Value::U64(1 << 40)).unwrap();
        w.add_metadata("i64", Value::I64(-(1 << 40))).unwrap();
        w.add_metadata("f64", Value::F64(-0.25)).unwrap();
        w.add_metadata(
            "strings",
            Value::Array(
                ValueType::String,
                vec![Value::String("北京".into()), Value::String(String::new())],
            ),
        )
        .unwrap();
        w.add_metadata(
            "nested",
            Value::Array(
                ValueType::Array,
                vec![
                    Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(-2)]),
                    Value::Array(ValueType::Bool, vec![Value::Bool(false)]),
                ],
            ),
        )
        .unwrap();
        let specs = [
            TensorSpec::new("a", GgmlType::F32, vec![3]),
            TensorSpec::new("b", GgmlType::Q4_0, vec![32, 2]),
            TensorSpec::new("c", GgmlType::F16, vec![5]),
        ];
        let data: Vec<Vec<u8>> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| noise(i as u64 + 1, s.n_bytes().unwrap() as usize))
            .collect();
        for s in specs {
            w.add_tensor(s).unwrap();
        }
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        w.to_bytes(&refs).unwrap()
    }

    /// A file with one F32 tensor `w` of 4 elements: header, info, padding, 32 data bytes.
    fn one_tensor(dims: &[u64], ty: u32, offset: u64) -> Raw {
        Raw::header(3, 1, 0)
            .info(b"w", dims, ty, offset)
            .pad(32)
            .zeros(32)
    }

    #[test]
    fn every_prefix_is_rejected() {
        let full = valid_file();
        Gguf::from_bytes(full.clone(), NAME).expect("the full file parses");
        for len in 0..full.len() {
            let prefix = Raw(full[..len].to_vec());
            let msg = prefix.err();
            assert!(
                msg.contains("truncated") || msg.contains("at most"),
                "prefix {len}: {msg}"
            );
        }
    }

    #[test]
    fn random_corruption_never_panics() {
        let full = valid_file();
        for seed in 0..3000u64 {
            let mut bytes = full.clone();
            let r = noise(seed + 100, 8);
            let n = 1 + usize::from(r[0] % 4);
            for k in 0..n {
                let at = (usize::from(r[1 + k]) * 257 + usize::from(r[5 + k.min(2)])) % bytes.len();
                bytes[at] = r[(k + 3) % 8];
            }
            let _ = Gguf::from_bytes(bytes, NAME);
        }
    }

    #[test]
    fn rejects_empty_file_and_wrong_magic() {
        assert_mentions(&Raw::default().err(), &["truncated", "magic", "offset 0"]);
        let msg = Raw(b"GGUG\x03\0\0\0".to_vec()).err();
        assert_mentions(&msg, &["not a GGUF file", "offset 0", "\"GGUF\"", "GGUG"]);
        let msg = Raw(b"tjgg\x03\0\0\0".to_vec()).err();
        assert_mentions(&msg, &["GGJT"]);
    }

    #[test]
    fn rejects_v1_big_endian_and_unknown_versions() {
        let msg = Raw::header(1, 0, 0).err();
        assert_mentions(&msg, &["version 1", "v1", "offset 4"]);
        let msg = Raw::header(3u32.swap_bytes(), 0, 0).err();
        assert_mentions(&msg, &["big-endian", "offset 4"]);
        let msg = Raw::header(4, 0, 0).err();
        assert_mentions(&msg, &["version 4", "expected 2 or 3"]);
        let msg = Raw::header(0, 0, 0).err();
        assert_mentions(&msg, &["version 0"]);
    }

    #[test]
    fn rejects_huge_kv_count() {
        for n in [u64::MAX, 1 << 60, 1] {
            let msg = Raw::header(3, 0, n).err();
            if n == 1 {
                assert_mentions(&msg, &["metadata count", "offset 16", "found 1"]);
            } else {
                assert_mentions(&msg, &["metadata count", "offset 16", &n.to_string()]);
            }
        }
    }

    #[test]
    fn rejects_huge_tensor_count() {
        let msg = Raw::header(3, u64::MAX, 0).zeros(100).err();
        assert_mentions(
            &msg,
            &[
                "tensor count",
                "offset 8",
                &u64::MAX.to_string(),
                "at most 3",
            ],
        );
    }

    #[test]
    fn rejects_huge_string_lengths() {
        // key
        let msg = Raw::header(3, 0, 1).u64(u64::MAX).zeros(16).err();
        assert_mentions(&msg, &["metadata entry 0", "key", "offset 32", "truncated"]);
        // string value
        let msg = Raw::header(3, 0, 1)
            .str(b"general.name")
            .u32(vt::STRING)
            .u64(u64::MAX)
            .zeros(8)
            .err();
        assert_mentions(&msg, &["key \"general.name\"", "string", "offset 56"]);
        // tensor name
        let msg = Raw::header(3, 1, 0).u64(u64::MAX).zeros(40).err();
        assert_mentions(&msg, &["tensor info 0", "name", "offset 32"]);
    }

    #[test]
    fn rejects_huge_array_lengths() {
        for (ety, n) in [
            (vt::U8, u64::MAX),
            (vt::U64, u64::MAX / 4),
            (vt::STRING, 1 << 60),
            (vt::ARRAY, 1 << 62),
        ] {
            let msg = Raw::header(3, 0, 1)
                .str(b"tokenizer.ggml.tokens")
                .u32(vt::ARRAY)
                .u32(ety)
                .u64(n)
                .zeros(64)
                .err();
            assert_mentions(
                &msg,
                &[
                    "key \"tokenizer.ggml.tokens\"",
                    "array length",
                    "offset 61",
                    &n.to_string(),
                ],
            );
        }
    }

    #[test]
    fn rejects_tensor_data_past_the_end() {
        let msg = one_tensor(&[4], F32, 1 << 40).err();
        assert_mentions(
            &msg,
            &["tensor \"w\"", "offset", "truncated", "1099511627776"],
        );
        // an offset whose sum with the data section start overflows
        let msg = one_tensor(&[4], F32, u64::MAX - 31).err();
        assert_mentions(&msg, &["tensor \"w\"", "offset"]);
        // a shape larger than the file
        let msg = one_tensor(&[1 << 40], F32, 0).err();
        assert_mentions(
            &msg,
            &["tensor \"w\"", "offset", "needs 4398046511104 bytes"],
        );
        // the data fits but not the padding after it
        let msg = Raw::header(3, 1, 0)
            .info(b"w", &[4], F32, 0)
            .pad(32)
            .zeros(16)
            .err();
        assert_mentions(&msg, &["padding", "tensor \"w\"", "offset"]);
    }

    #[test]
    fn rejects_misaligned_data_offset() {
        let msg = Raw::header(3, 1, 0)
            .info(b"w", &[4], F32, 8)
            .pad(32)
            .zeros(64)
            .err();
        assert_mentions(
            &msg,
            &[
                "tensor \"w\": data offset",
                "offset 49",
                "multiple of the alignment 32",
                "found 8",
            ],
        );
    }

    #[test]
    fn rejects_overlapping_tensors() {
        let msg = Raw::header(3, 2, 0)
            .info(b"first", &[16], F32, 0)
            .info(b"second", &[8], F32, 32)
            .pad(32)
            .zeros(96)
            .err();
        assert_mentions(
            &msg,
            &[
                "tensor \"second\": data offset",
                "tensor \"first\"",
                "at least 64",
                "overlap",
                "offset",
            ],
        );
        // same offset, listed in the other order
        let msg = Raw::header(3, 2, 0)
            .info(b"x", &[8], F32, 0)
            .info(b"y", &[8], F32, 0)
            .pad(32)
            .zeros(64)
            .err();
        assert_mentions(&msg, &["overlap", "offset"]);
    }

    #[test]
    fn rejects_unknown_tensor_type() {
        let msg = one_tensor(&[256], 16, 0).zeros(1024).err();
        assert_mentions(
            &msg,
            &["tensor \"w\": type", "offset 45", "id 16", "iq2_xxs"],
        );
        let msg = one_tensor(&[4], 99, 0).err();
        assert_mentions(&msg, &["tensor \"w\": type", "id 99", "not a ggml type"]);
    }

    #[test]
    fn rejects_n_dims_5_and_0() {
        let msg = one_tensor(&[1, 1, 1, 1, 4], F32, 0).err();
        assert_mentions(
            &msg,
            &[
                "tensor \"w\": number of dimensions",
                "offset 33",
                "1 to 4",
                "found 5",
            ],
        );
        let msg = one_tensor(&[], F32, 0).err();
        assert_mentions(&msg, &["number of dimensions", "found 0"]);
    }

    #[test]
    fn rejects_zero_and_overflowing_dims() {
        let msg = one_tensor(&[4, 0], F32, 0).err();
        assert_mentions(
            &msg,
            &["tensor \"w\": dimension 1", "offset 45", "at least 1"],
        );
        let msg = one_tensor(&[1 << 32, 1 << 32], F32, 0).err();
        assert_mentions(
            &msg,
            &["tensor \"w\": dimension 1", "fits an i64", "offset"],
        );
        let msg = one_tensor(&[1 << 62, 2], F32, 0).err();
        assert_mentions(&msg, &["tensor \"w\": dimension 1", "fits an i64"]);
    }

    #[test]
    fn rejects_partial_blocks() {
        let msg = one_tensor(&[48, 2], Q4_0, 0).err();
        assert_mentions(
            &msg,
            &[
                "tensor \"w\": row length",
                "multiple of the q4_0 block size 32",
                "48",
                "offset",
            ],
        );
    }

    #[test]
    fn rejects_bad_utf8_in_key() {
        let msg = Raw::header(3, 0, 1)
            .str(b"general.\xffname")
            .u32(vt::U32)
            .u32(1)
            .err();
        assert_mentions(
            &msg,
            &[
                "metadata entry 0",
                "key",
                "offset 40",
                "valid UTF-8",
                "general.\u{fffd}name",
            ],
        );
    }

    #[test]
    fn rejects_bad_utf8_in_tensor_name() {
        let msg = Raw::header(3, 1, 0)
            .info(b"blk.\xc3.attn", &[4], F32, 0)
            .pad(32)
            .zeros(32)
            .err();
        assert_mentions(&msg, &["tensor info 0", "name", "offset 36", "valid UTF-8"]);
    }

    #[test]
    fn rejects_bad_utf8_in_string_values() {
        let msg = Raw::header(3, 0, 1)
            .str(b"general.name")
            .u32(vt::STRING)
            .str(b"ab\xe4")
            .err();
        assert_mentions(
            &msg,
            &["key \"general.name\"", "string", "offset 58", "UTF-8"],
        );
        let msg = Raw::header(3, 0, 1)
            .str(b"tokens")
            .u32(vt::ARRAY)
            .u32(vt::STRING)
            .u64(2)
            .str(b"ok")
            .str(b"\x80")
            .err();
        assert_mentions(
            &msg,
            &["key \"tokens\"[1]: string value", "UTF-8", "offset"],
        );
    }

    #[test]
    fn rejects_duplicate_keys() {
        let msg = Raw::header(3, 0, 2)
            .kv_u32("general.alignment", 32)
            .kv_u32("general.alignment", 64)
            .err();
        assert_mentions(
            &msg,
            &[
                "duplicate metadata key \"general.alignment\"",
                "offset 57",
                "offset 24",
            ],
        );
    }

    #[test]
    fn rejects_duplicate_tensor_names() {
        let msg = Raw::header(3, 2, 0)
            .info(b"output.weight", &[4], F32, 0)
            .info(b"output.weight", &[4], F32, 32)
            .pad(32)
            .zeros(64)
            .err();
        assert_mentions(
            &msg,
            &[
                "duplicate tensor name \"output.weight\"",
                "offset 69",
                "offset 24",
            ],
        );
    }

    #[test]
    fn rejects_bad_alignment_values() {
        for a in [0u32, 3, 48] {
            let msg = Raw::header(3, 0, 1).kv_u32("general.alignment", a).err();
            assert_mentions(
                &msg,
                &[
                    "key \"general.alignment\"",
                    "offset 53",
                    "power of two",
                    &format!("u32 {a}"),
                ],
            );
        }
        let msg = Raw::header(3, 0, 1)
            .str(b"general.alignment")
            .u32(vt::U64)
            .u64(32)
            .err();
        assert_mentions(&msg, &["key \"general.alignment\"", "u32", "found u64 32"]);
    }

    #[test]
    fn rejects_long_tensor_names() {
        let name = "n".repeat(64);
        let msg = Raw::header(3, 1, 0)
            .info(name.as_bytes(), &[4], F32, 0)
            .pad(32)
            .zeros(32)
            .err();
        assert_mentions(
            &msg,
            &["name", "offset 32", "at most 63 bytes", "found 64 bytes"],
        );
        let name = "n".repeat(63);
        let ok = Raw::header(3, 1, 0)
            .info(name.as_bytes(), &[4], F32, 0)
            .pad(32)
            .zeros(32)
            .parse()
            .unwrap();
        assert_eq!(ok.tensors()[0].name, name);
    }

    #[test]
    fn rejects_unknown_value_types() {
        let msg = Raw::header(3, 0, 1).str(b"k").u32(13).u32(0).err();
        assert_mentions(&msg, &["key \"k\": value type", "offset 33", "found 13"]);
        let msg = Raw::header(3, 0, 1)
            .str(b"k")
            .u32(vt::ARRAY)
            .u32(u32::MAX)
            .u64(0)
            .err();
        assert_mentions(
            &msg,
            &["key \"k\": array element type", "offset 37", "4294967295"],
        );
    }

    #[test]
    fn rejects_bool_not_0_or_1() {
        let msg = Raw::header(3, 0, 1).str(b"flag").u32(vt::BOOL).u8(2).err();
        assert_mentions(
            &msg,
            &["key \"flag\": bool", "offset 40", "0 or 1", "found 2"],
        );
    }

    #[test]
    fn rejects_arrays_nested_too_deep() {
        let nested = |depth: usize| {
            // `depth` arrays, each holding the next; the innermost holds no u8
            let mut r = Raw::header(3, 0, 1).str(b"deep").u32(vt::ARRAY);
            for _ in 1..depth {
                r = r.u32(vt::ARRAY).u64(1);
            }
            r.u32(vt::U8).u64(0)
        };
        let g = nested(MAX_ARRAY_DEPTH).parse().unwrap();
        assert_eq!(g.get("deep").unwrap().array_depth(), MAX_ARRAY_DEPTH);
        let msg = nested(MAX_ARRAY_DEPTH + 1).err();
        assert_mentions(&msg, &["key \"deep\"[0][0]", "nested at most 16", "offset"]);
    }

    #[test]
    fn accepts_v2_files_and_vocab_only_files() {
        // a v2 file with no tensors that ends right after the metadata, as gguf-py's
        // vocabulary-only files do
        let g = Raw::header(2, 0, 1)
            .kv_str("general.name", "v")
            .parse()
            .unwrap();
        assert_eq!(g.version(), 2);
        assert_eq!(g.alignment(), 32);
        assert_eq!(g.file_size(), 57);
        assert_eq!(g.data_offset(), 64);
        assert!(g.tensors().is_empty());
        assert_eq!(g.get_str("general.name").unwrap(), "v");
    }

    #[test]
    fn honours_general_alignment() {
        let raw = Raw::header(3, 2, 1)
            .kv_u32("general.alignment", 64)
            .info(b"a", &[4], F32, 0)
            .info(b"b", &[4], F32, 64)
            .pad(64);
        let data_offset = raw.len();
        let g = raw.zeros(128).parse().unwrap();
        assert_eq!(g.alignment(), 64);
        assert_eq!(g.data_offset(), data_offset as u64);
        assert_eq!(g.data_offset() % 64, 0);
        // 32-aligned but not 64-aligned offsets are refused
        let msg = Raw::header(3, 1, 1)
            .kv_u32("general.alignment", 64)
            .info(b"a", &[4], F32, 32)
            .pad(64)
            .zeros(128)
            .err();
        assert_mentions(&msg, &["multiple of the alignment 64"]);
        // alignment 1: tensors may follow each other without padding
        let g = Raw::header(3, 2, 1)
            .kv_u32("general.alignment", 1)
            .info(b"a", &[3], F32, 0)
            .info(b"b", &[1], 1, 12)
            .zeros(14)
            .parse()
            .unwrap();
        assert_eq!(g.tensor("b").unwrap().data.len(), 2);
    }

    #[test]
    fn typed_getters() {
        let g = Gguf::from_bytes(valid_file(), NAME).unwrap();
        assert_eq!(g.get_u32("u8").unwrap(), 7);
        assert_eq!(g.get_u32("u32").unwrap(), 70_000);
        assert_eq!(g.get_u64("u64").unwrap(), 1 << 40);
        assert_eq!(g.get_f32("f32").unwrap(), 0.5);
        assert_eq!(g.get_f32("f64").unwrap(), -0.25);
        assert!(g.get_bool("bool").unwrap());
        assert_eq!(g.get_str("general.architecture").unwrap(), "xverse");
        assert_eq!(g.get_str_array("strings").unwrap(), vec!["北京", ""]);
        let (t, items) = g.get_array("nested").unwrap();
        assert_eq!((t, items.len()), (ValueType::Array, 2));
        assert_eq!(
            items[0].as_array().unwrap().1,
            &[Value::I32(1), Value::I32(-2)]
        );
        assert_eq!(g.metadata()[0].0, "general.architecture");
        assert_eq!(g.metadata().len(), 14);

        let msg = g.get_u32("u64").unwrap_err().to_string();
        assert_mentions(
            &msg,
            &[NAME, "key \"u64\"", "u32", "found u64 1099511627776"],
        );
        let msg = g.get_u32("i8").unwrap_err().to_string();
        assert_mentions(&msg, &["key \"i8\"", "found i8 -7"]);
        let msg = g.get_str("u8").unwrap_err().to_string();
        assert_mentions(&msg, &["key \"u8\"", "expected string", "found u8 7"]);
        let e = g.get_u32("missing.key").unwrap_err();
        assert!(matches!(e, GgufError::MissingKey { .. }));
        assert_mentions(&e.to_string(), &[NAME, "\"missing.key\" is missing"]);
        let msg = g.get_f32_array("strings").unwrap_err().to_string();
        assert_mentions(
            &msg,
            &["key \"strings\"", "array of f32", "array of 2 string"],
        );
        let msg = g.get_str_array("nested").unwrap_err().to_string();
        assert_mentions(&msg, &["array of string", "array of 2 array"]);

        let g = Raw::header(3, 0, 3)
            .str(b"scores")
            .u32(vt::ARRAY)
            .u32(6)
            .u64(2)
            .bytes(&1.5f32.to_le_bytes())
            .bytes(&(-2f32).to_le_bytes())
            .str(b"types")
            .u32(vt::ARRAY)
            .u32(5)
            .u64(2)
            .bytes(&(-1i32).to_le_bytes())
            .bytes(&3i32.to_le_bytes())
            .str(b"big")
            .u32(vt::ARRAY)
            .u32(vt::U64)
            .u64(1)
            .u64(1 << 33)
            .parse()
            .unwrap();
        assert_eq!(g.get_f32_array("scores").unwrap(), vec![1.5, -2.0]);
        assert_eq!(g.get_i32_array("types").unwrap(), vec![-1, 3]);
        let msg = g.get_i32_array("big").unwrap_err().to_string();
        assert_mentions(&msg, &["key \"big\"", "fit an i32", "element 0"]);
    }

    #[test]
    fn tensor_views() {
        let mut w = GgufWriter::new();
        w.add_tensor(TensorSpec::new("m", GgmlType::F32, vec![3, 2]))
            .unwrap();
        w.add_tensor(TensorSpec::new("h", GgmlType::F16, vec![2]))
            .unwrap();
        let m: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let h: Vec<u8> = [0x3c00u16, 0xc000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let g = Gguf::from_bytes(w.to_bytes(&[&m, &h]).unwrap(), NAME).unwrap();
        let info = g.tensor_info("m").unwrap();
        assert_eq!(
            (info.row_len(), info.n_rows(), info.row_bytes()),
            (3, 2, 12)
        );
        assert_eq!((info.n_elements, info.n_bytes, info.offset), (6, 24, 0));
        let v = g.tensor("m").unwrap();
        assert_eq!(v.data, &m[..]);
        assert_eq!(v.row(1).unwrap(), &m[12..]);
        assert_eq!(v.row(2), None);
        assert_eq!(v.row(u64::MAX), None);
        let mut out = [0f32; 3];
        v.dequantize_row(1, &mut out).unwrap();
        assert_eq!(out, [4., 5., 6.]);
        assert!(v.dequantize_row(2, &mut out).is_err());
        let msg = v.dequantize_row(0, &mut [0f32; 2]).unwrap_err().to_string();
        assert_mentions(&msg, &["tensor \"m\"", "expected 3"]);
        assert_eq!(v.to_f32().unwrap(), vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(g.tensor("h").unwrap().to_f32().unwrap(), vec![1.0, -2.0]);
        assert_eq!(g.tensor_info("h").unwrap().offset, 32);
        assert!(g.tensor("nope").is_none());
        // an info that is not from this file never panics
        let foreign = xverse_quant::gguf::TensorInfo {
            name: "x".into(),
            ty: GgmlType::F32,
            dims: vec![],
            offset: u64::MAX,
            n_elements: u64::MAX,
            n_bytes: u64::MAX,
        };
        let v = g.view(&foreign);
        assert!(v.data.is_empty());
        assert_eq!(v.row(0), None);
        assert!(v.to_f32().is_err());
    }

    #[test]
    fn open_reads_files_and_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, valid_file()).unwrap();
        let g = Gguf::open(&path).unwrap();
        assert_eq!(g.name(), path.display().to_string());
        assert_eq!(g.tensors().len(), 3);
        assert_eq!(g.file_size(), valid_file().len() as u64);

        let missing = dir.path().join("missing.gguf");
        let msg = Gguf::open(&missing).unwrap_err().to_string();
        assert_mentions(&msg, &["missing.gguf", "cannot open"]);

        let cut = dir.path().join("cut.gguf");
        std::fs::write(&cut, &valid_file()[..100]).unwrap();
        let msg = Gguf::open(&cut).unwrap_err().to_string();
        assert_mentions(&msg, &["cut.gguf", "offset"]);

        let empty = dir.path().join("empty.gguf");
        std::fs::write(&empty, b"").unwrap();
        let msg = Gguf::open(&empty).unwrap_err().to_string();
        assert_mentions(&msg, &["empty.gguf", "truncated", "magic"]);

        assert!(Gguf::open(dir.path()).is_err());
    }
}
