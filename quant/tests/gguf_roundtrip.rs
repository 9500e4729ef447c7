//! GGUF round trip, property-tested: random metadata (all 13 value types, nested arrays,
//! unicode strings, any float bits) and random tensors of every ggml type go through the
//! writer and come back identical from the reader, streamed or built in memory.

mod gguf_common;

mod gguf_roundtrip {
    use super::gguf_common::{noise, same_value};
    use proptest::prelude::*;
    use xverse_quant::gguf::{Gguf, GgufWriter, TensorSpec, Value, ValueType};
    use xverse_quant::GgmlType;

    fn scalar(ty: ValueType) -> BoxedStrategy<Value> {
        match ty {
            ValueType::U8 => any::<u8>().prop_map(Value::U8).boxed(),
            ValueType::I8 => any::<i8>().prop_map(Value::I8).boxed(),
            ValueType::U16 => any::<u16>().prop_map(Value::U16).boxed(),
            ValueType::I16 => any::<i16>().prop_map(Value::I16).boxed(),
            ValueType::U32 => any::<u32>().prop_map(Value::U32).boxed(),
            ValueType::I32 => any::<i32>().prop_map(Value::I32).boxed(),
            ValueType::F32 => any::<u32>()
                .prop_map(|b| Value::F32(f32::from_bits(b)))
                .boxed(),
            ValueType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            ValueType::String => any::<String>().prop_map(Value::String).boxed(),
            ValueType::U64 => any::<u64>().prop_map(Value::U64).boxed(),
            ValueType::I64 => any::<i64>().prop_map(Value::I64).boxed(),
            ValueType::F64 => any::<u64>()
                .prop_map(|b| Value::F64(f64::from_bits(b)))
                .boxed(),
            ValueType::Array => array(0),
        }
    }

    /// An array whose elements may themselves be arrays `depth` more levels down.
    fn array(depth: u32) -> BoxedStrategy<Value> {
        let types: Vec<ValueType> = ValueType::ALL
            .iter()
            .copied()
            .filter(|&t| depth > 0 || t != ValueType::Array)
            .collect();
        proptest::sample::select(types)
            .prop_flat_map(move |ety| {
                let item = if ety == ValueType::Array {
                    array(depth - 1)
                } else {
                    scalar(ety)
                };
                proptest::collection::vec(item, 0..6)
                    .prop_map(move |items| Value::Array(ety, items))
            })
            .boxed()
    }

    fn value() -> BoxedStrategy<Value> {
        prop_oneof![
            proptest::sample::select(ValueType::ALL.to_vec()).prop_flat_map(|t| {
                if t == ValueType::Array {
                    array(2)
                } else {
                    scalar(t)
                }
            }),
            array(2),
        ]
        .boxed()
    }

    #[derive(Clone, Debug)]
    struct Case {
        alignment: Option<u64>,
        metadata: Vec<(String, Value)>,
        tensors: Vec<(TensorSpec, u64)>,
        chunk: usize,
    }

    fn tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>, String, u64)> {
        (
            proptest::sample::select(GgmlType::ALL.to_vec()),
            1u64..=3,
            proptest::collection::vec(1u64..=3, 0..=3),
            "\\PC{0,12}",
            any::<u64>(),
        )
            .prop_map(|(ty, k, rest, suffix, seed)| {
                let mut dims = vec![k * ty.block_size() as u64];
                dims.extend(rest);
                (ty, dims, suffix, seed)
            })
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            proptest::option::of(proptest::sample::select(vec![
                1u64, 2, 8, 32, 64, 256, 4096,
            ])),
            proptest::collection::vec(("[^\\x00]{0,16}", value()), 0..10),
            proptest::collection::vec(tensor(), 0..6),
            1usize..5000,
        )
            .prop_map(|(alignment, kvs, ts, chunk)| Case {
                alignment,
                metadata: kvs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (k, v))| (format!("k{i}.{k}"), v))
                    .collect(),
                tensors: ts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (ty, dims, suffix, seed))| {
                        let mut name = format!("t{i}.{suffix}");
                        while name.len() > 63 {
                            name.pop();
                        }
                        (TensorSpec::new(name, ty, dims), seed)
                    })
                    .collect(),
                chunk,
            })
    }

    fn check(case: &Case, dir: &std::path::Path) -> Result<(), TestCaseError> {
        let mut w = GgufWriter::new();
        if let Some(a) = case.alignment {
            w.set_alignment(a).unwrap();
        }
        for (k, v) in &case.metadata {
            w.add_metadata(k.clone(), v.clone()).unwrap();
        }
        let mut data = Vec::new();
        for (spec, seed) in &case.tensors {
            let n = spec.ty.bytes_for(spec.n_elements().unwrap()).unwrap();
            data.push(noise(*seed, n as usize));
            w.add_tensor(spec.clone()).unwrap();
        }
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let bytes = w.clone().to_bytes(&refs).unwrap();
        prop_assert_eq!(bytes.len() as u64, w.file_size());

        let g = Gguf::from_bytes(bytes.clone(), "roundtrip.gguf")
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(g.version(), 3);
        prop_assert_eq!(g.alignment(), case.alignment.unwrap_or(32));
        prop_assert_eq!(g.data_offset(), w.data_offset());
        prop_assert_eq!(g.file_size(), w.file_size());
        prop_assert_eq!(g.metadata().len(), w.metadata().len());
        for ((k1, v1), (k2, v2)) in g.metadata().iter().zip(w.metadata()) {
            prop_assert_eq!(k1, k2);
            prop_assert!(same_value(v1, v2), "{k1}: {v1:?} != {v2:?}");
            prop_assert!(same_value(g.get(k1).unwrap(), v2));
        }
        let offsets = w.tensor_offsets();
        prop_assert_eq!(g.tensors().len(), case.tensors.len());
        for (((info, (spec, _)), d), off) in g
            .tensors()
            .iter()
            .zip(&case.tensors)
            .zip(&data)
            .zip(&offsets)
        {
            prop_assert_eq!(&info.name, &spec.name);
            prop_assert_eq!(info.ty, spec.ty);
            prop_assert_eq!(&info.dims, &spec.dims);
            prop_assert_eq!(info.offset, *off);
            prop_assert_eq!(info.n_elements, spec.n_elements().unwrap());
            prop_assert_eq!(info.n_bytes, d.len() as u64);
            let view = g.tensor(&spec.name).unwrap();
            prop_assert!(view.data == &d[..]);
            prop_assert_eq!(info.n_rows() * info.row_bytes(), info.n_bytes);
        }

        // streamed in chunks of `chunk` bytes, the file is the same
        let path = dir.join("rt.gguf");
        let mut f = w.create(&path, true).unwrap();
        for c in data.concat().chunks(case.chunk) {
            f.write_tensor_data(c).unwrap();
        }
        f.finish().unwrap();
        let streamed = std::fs::read(&path).unwrap();
        prop_assert!(streamed == bytes, "streamed file differs from to_bytes");
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn write_then_read_is_identity(case in case()) {
            let dir = tempfile::tempdir().unwrap();
            check(&case, dir.path())?;
        }

        #[test]
        fn mutated_files_never_panic(
            case in case(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut w = GgufWriter::new();
            for (k, v) in &case.metadata {
                w.add_metadata(k.clone(), v.clone()).unwrap();
            }
            let mut data = Vec::new();
            for (spec, seed) in &case.tensors {
                data.push(noise(*seed, spec.n_bytes().unwrap() as usize));
                w.add_tensor(spec.clone()).unwrap();
            }
            let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
            let mut bytes = w.to_bytes(&refs).unwrap();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let _ = Gguf::from_bytes(bytes.clone(), "mutated.gguf");
            let n = cut.index(bytes.len());
            bytes.truncate(n);
            let _ = Gguf::from_bytes(bytes, "mutated.gguf");
        }
    }
}
