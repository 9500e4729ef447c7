//! Whatever the bytes, `Gguf::from_bytes` returns an error or a file whose every metadata value
//! and tensor view can be walked without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xverse_quant::gguf::{Gguf, Value};

fn walk(v: &Value, depth: usize) -> usize {
    let _ = (v.value_type().name(), v.as_u64(), v.as_i64(), v.as_f64());
    let _ = (v.as_str().map(str::len), v.as_bool());
    match v.as_array() {
        Some((ty, items)) => {
            let _ = ty.name();
            items.iter().map(|x| walk(x, depth + 1)).sum::<usize>() + 1
        }
        None => 1,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::from_bytes(data.to_vec(), "fuzz") else {
        return;
    };
    let _ = (
        g.name(),
        g.version(),
        g.alignment(),
        g.data_offset(),
        g.file_size(),
    );
    for (key, value) in g.metadata() {
        walk(value, 0);
        assert!(g.get(key).is_some());
        let _ = (
            g.get_u32(key),
            g.get_u64(key),
            g.get_f32(key),
            g.get_bool(key),
        );
        let _ = (g.get_str(key), g.get_array(key), g.get_str_array(key));
        let _ = (g.get_f32_array(key), g.get_i32_array(key));
    }
    for info in g.tensors() {
        assert!(g.tensor_info(&info.name).is_some());
        let view = g.view(info);
        let _ = (info.row_len(), info.n_rows(), info.row_bytes());
        if let Some(row) = view.row(0) {
            assert_eq!(row.len() as u64, info.row_bytes());
            // rows are checked against the file size; cap the buffer for huge rows anyway
            if info.row_len() <= 1 << 20 {
                let mut out = vec![0f32; info.row_len() as usize];
                let _ = view.dequantize_row(0, &mut out);
            }
        }
        let _ = view.row(info.n_rows());
        let _ = view.row(u64::MAX);
        if info.n_bytes <= 1 << 16 {
            let _ = view.to_f32();
        }
    }
});
