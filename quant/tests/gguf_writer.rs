//! GGUF streaming writer: temporary file handling, overwrite protection, byte accounting, and
//! equality of the streamed file with `to_bytes`.

mod gguf_common;

mod gguf_writer {
    use super::gguf_common::{assert_mentions, noise};
    use std::path::Path;
    use xverse_quant::gguf::{Gguf, GgufWriter, TensorSpec, Value, ValueType};
    use xverse_quant::GgmlType;

    fn plan() -> (GgufWriter, Vec<Vec<u8>>) {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", Value::String("xverse".into()))
            .unwrap();
        w.add_metadata(
            "tokenizer.ggml.scores",
            Value::Array(ValueType::F32, vec![Value::F32(0.0), Value::F32(-1.5)]),
        )
        .unwrap();
        let specs = [
            TensorSpec::new("token_embd.weight", GgmlType::Q4K, vec![256, 3]),
            TensorSpec::new("output_norm.weight", GgmlType::F32, vec![7]),
            TensorSpec::new("output.weight", GgmlType::Q8_0, vec![64, 2]),
        ];
        let data = specs
            .iter()
            .enumerate()
            .map(|(i, s)| noise(i as u64 + 7, s.n_bytes().unwrap() as usize))
            .collect();
        for s in specs {
            w.add_tensor(s).unwrap();
        }
        (w, data)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn streamed_file_equals_to_bytes_for_any_chunking() {
        let (w, data) = plan();
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let expected = w.clone().to_bytes(&refs).unwrap();
        assert_eq!(expected.len() as u64, w.file_size());
        let all: Vec<u8> = data.concat();
        let dir = tempfile::tempdir().unwrap();
        for (k, chunk) in [1usize, 7, 100, 577, all.len()].into_iter().enumerate() {
            let path = dir.path().join(format!("m{k}.gguf"));
            let mut f = w.clone().create(&path, false).unwrap();
            assert_eq!(f.current_tensor().unwrap().name, "token_embd.weight");
            for c in all.chunks(chunk) {
                f.write_tensor_data(c).unwrap();
            }
            assert!(f.current_tensor().is_none());
            let size = f.finish().unwrap();
            let got = std::fs::read(&path).unwrap();
            assert_eq!(size, got.len() as u64);
            assert!(got == expected, "chunk {chunk}: streamed bytes differ");
        }
        // per-tensor writes, the way a converter writes
        let path = dir.path().join("per_tensor.gguf");
        let mut f = w.clone().create(&path, false).unwrap();
        for d in &data {
            f.write_tensor_data(d).unwrap();
        }
        f.finish().unwrap();
        let g = Gguf::open(&path).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.data_offset(), w.data_offset());
        for ((info, d), off) in g.tensors().iter().zip(&data).zip(w.tensor_offsets()) {
            assert_eq!(info.offset, off);
            assert_eq!(g.view(info).data, &d[..]);
        }
    }

    #[test]
    fn target_appears_only_at_finish() {
        let (w, data) = plan();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        let mut f = w.create(&path, false).unwrap();
        let temp = f.temp_path().to_path_buf();
        assert_eq!(temp.parent(), Some(dir.path()));
        let temp_name = temp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(temp_name.starts_with(".model.gguf.partial-"), "{temp_name}");
        assert!(temp.exists());
        assert!(!path.exists());
        for d in &data {
            f.write_tensor_data(d).unwrap();
            assert!(!path.exists());
        }
        f.finish().unwrap();
        assert!(path.exists());
        assert!(!temp.exists());
        assert_eq!(entries(dir.path()), vec!["model.gguf"]);
    }

    #[test]
    fn drop_of_an_unfinished_writer_removes_the_temp_file() {
        let (w, data) = plan();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        // nothing written
        let f = w.clone().create(&path, false).unwrap();
        assert_eq!(entries(dir.path()).len(), 1);
        drop(f);
        assert!(entries(dir.path()).is_empty());
        // part of the data written
        let mut f = w.clone().create(&path, false).unwrap();
        f.write_tensor_data(&data[0]).unwrap();
        f.write_tensor_data(&data[1][..3]).unwrap();
        let temp = f.temp_path().to_path_buf();
        assert!(temp.exists());
        drop(f);
        assert!(!temp.exists());
        assert!(!path.exists());
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn overwrite_is_refused_unless_asked() {
        let (w, data) = plan();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, b"precious").unwrap();
        let msg = w.clone().create(&path, false).unwrap_err().to_string();
        assert_mentions(
            &msg,
            &["model.gguf", "already exists", "refusing to overwrite"],
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        assert_eq!(entries(dir.path()), vec!["model.gguf"]);

        let mut f = w.clone().create(&path, true).unwrap();
        for d in &data {
            f.write_tensor_data(d).unwrap();
        }
        f.finish().unwrap();
        assert!(Gguf::open(&path).is_ok());

        // a target that appears while the file is written is not overwritten either
        let late = dir.path().join("late.gguf");
        let mut f = w.create(&late, false).unwrap();
        for d in &data {
            f.write_tensor_data(d).unwrap();
        }
        std::fs::write(&late, b"someone else's").unwrap();
        let temp = f.temp_path().to_path_buf();
        let msg = f.finish().unwrap_err().to_string();
        assert_mentions(&msg, &["late.gguf", "refusing to overwrite"]);
        assert_eq!(std::fs::read(&late).unwrap(), b"someone else's");
        assert!(!temp.exists());
    }

    #[test]
    fn too_many_bytes_are_refused_before_writing() {
        let (w, data) = plan();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        let mut f = w.create(&path, false).unwrap();
        let total: usize = data.iter().map(Vec::len).sum();
        let msg = f
            .write_tensor_data(&vec![0u8; total + 1])
            .unwrap_err()
            .to_string();
        assert_mentions(
            &msg,
            &[
                "model.gguf",
                "too many tensor data bytes",
                &format!("got {}", total + 1),
            ],
        );
        // nothing was written: the right bytes still complete the file
        for d in &data {
            f.write_tensor_data(d).unwrap();
        }
        let msg = f.write_tensor_data(&[0]).unwrap_err().to_string();
        assert_mentions(&msg, &["all 3 tensors are complete"]);
        f.write_tensor_data(&[]).unwrap();
        f.finish().unwrap();
        assert!(Gguf::open(&path).is_ok());
    }

    #[test]
    fn too_few_bytes_are_refused_at_finish() {
        let (w, data) = plan();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        let mut f = w.create(&path, false).unwrap();
        f.write_tensor_data(&data[0]).unwrap();
        f.write_tensor_data(&data[1][..5]).unwrap();
        assert_eq!(f.current_tensor().unwrap().name, "output_norm.weight");
        assert_eq!(f.current_remaining(), 23);
        let msg = f.finish().unwrap_err().to_string();
        assert_mentions(
            &msg,
            &[
                "model.gguf",
                "tensor \"output_norm.weight\" got 5 of its 28 data bytes",
                "2 of 3",
            ],
        );
        assert!(!path.exists());
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn create_reports_io_errors() {
        let (w, _) = plan();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/model.gguf");
        let msg = w.clone().create(&path, false).unwrap_err().to_string();
        assert_mentions(&msg, &["model.gguf", "cannot create the temporary file"]);
        let msg = w
            .create(dir.path().join(".."), true)
            .unwrap_err()
            .to_string();
        assert_mentions(&msg, &["does not name a file"]);
    }

    #[test]
    fn a_plan_without_tensors_is_a_valid_file() {
        let mut w = GgufWriter::new();
        w.add_metadata("general.name", Value::String("empty".into()))
            .unwrap();
        let bytes = w.clone().to_bytes(&[]).unwrap();
        assert_eq!(bytes.len() as u64, w.data_offset());
        assert_eq!(bytes.len() % 32, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.gguf");
        assert_eq!(
            w.create(&path, false).unwrap().finish().unwrap(),
            bytes.len() as u64
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let g = Gguf::open(&path).unwrap();
        assert_eq!(g.get_str("general.name").unwrap(), "empty");
    }

    #[test]
    fn alignment_is_written_and_used() {
        let (mut w, data) = plan();
        w.set_alignment(128).unwrap();
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let g = Gguf::from_bytes(w.clone().to_bytes(&refs).unwrap(), "a.gguf").unwrap();
        assert_eq!(g.alignment(), 128);
        assert_eq!(g.get_u32("general.alignment").unwrap(), 128);
        assert!(matches!(g.get("general.alignment"), Some(Value::U32(128))));
        assert_eq!(g.data_offset() % 128, 0);
        let offsets: Vec<u64> = g.tensors().iter().map(|t| t.offset).collect();
        assert_eq!(offsets, w.tensor_offsets());
        assert!(offsets.iter().all(|o| o % 128 == 0));
    }
}
