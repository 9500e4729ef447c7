//! `xverse-convert inspect`: header, metadata and tensor table of a GGUF file, as text or JSON.

use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use xverse_quant::gguf::{Gguf, Value};

/// Array elements shown before "…" unless `--full`.
const ARRAY_PREVIEW: usize = 8;
/// String characters shown before "…" unless `--full`.
const STRING_PREVIEW: usize = 120;

/// Opens `path` and prints its description to `out`.
pub fn run(
    path: &Path,
    json: bool,
    full: bool,
    out: &mut dyn Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let gguf = Gguf::open(path)?;
    if json {
        let v = to_json(&gguf, full);
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        write_text(&gguf, full, out)?;
    }
    Ok(())
}

fn shorten(s: &str, full: bool) -> String {
    if full || s.chars().count() <= STRING_PREVIEW {
        s.to_string()
    } else {
        let head: String = s.chars().take(STRING_PREVIEW).collect();
        format!("{head}… ({} chars)", s.chars().count())
    }
}

fn value_text(v: &Value, full: bool) -> String {
    match v {
        Value::String(s) => format!("{:?}", shorten(s, full)),
        Value::Array(_, items) => {
            let shown = if full {
                items.len()
            } else {
                items.len().min(ARRAY_PREVIEW)
            };
            let mut parts: Vec<String> =
                items[..shown].iter().map(|i| value_text(i, full)).collect();
            if shown < items.len() {
                parts.push(format!("… {} more", items.len() - shown));
            }
            format!("[{}]", parts.join(", "))
        }
        Value::F32(x) => format!("{x:?}"),
        Value::F64(x) => format!("{x:?}"),
        Value::Bool(b) => b.to_string(),
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
    }
}

fn type_text(v: &Value) -> String {
    match v {
        Value::Array(t, items) => format!("[{}; {}]", t.name(), items.len()),
        other => other.value_type().name().to_string(),
    }
}

fn value_json(v: &Value, full: bool) -> Json {
    match v {
        Value::String(s) => Json::String(shorten(s, full)),
        Value::Array(t, items) => {
            let shown = if full {
                items.len()
            } else {
                items.len().min(ARRAY_PREVIEW)
            };
            let mut obj = Map::new();
            obj.insert("type".into(), json!(t.name()));
            obj.insert("len".into(), json!(items.len()));
            obj.insert(
                "items".into(),
                Json::Array(items[..shown].iter().map(|i| value_json(i, full)).collect()),
            );
            if shown < items.len() {
                obj.insert("truncated".into(), json!(true));
            }
            Json::Object(obj)
        }
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Bool(b) => json!(b),
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
    }
}

struct Totals {
    elements: u64,
    bytes: u64,
    per_type: BTreeMap<&'static str, (usize, u64)>,
}

fn totals(gguf: &Gguf) -> Totals {
    let mut t = Totals {
        elements: 0,
        bytes: 0,
        per_type: BTreeMap::new(),
    };
    for info in gguf.tensors() {
        t.elements = t.elements.saturating_add(info.n_elements);
        t.bytes = t.bytes.saturating_add(info.n_bytes);
        let e = t.per_type.entry(info.ty.name()).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.saturating_add(info.n_bytes);
    }
    t
}

fn to_json(gguf: &Gguf, full: bool) -> Json {
    let mut meta = Map::new();
    for (k, v) in gguf.metadata() {
        meta.insert(
            k.clone(),
            json!({ "type": v.value_type().name(), "value": value_json(v, full) }),
        );
    }
    let tensors: Vec<Json> = gguf
        .tensors()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "type": t.ty.name(),
                "shape": t.dims,
                "offset": gguf.data_offset() + t.offset,
                "bytes": t.n_bytes,
            })
        })
        .collect();
    let tot = totals(gguf);
    let per_type: Map<String, Json> = tot
        .per_type
        .iter()
        .map(|(k, (n, b))| (k.to_string(), json!({ "tensors": n, "bytes": b })))
        .collect();
    json!({
        "file": gguf.name(),
        "file_size": gguf.file_size(),
        "version": gguf.version(),
        "alignment": gguf.alignment(),
        "data_offset": gguf.data_offset(),
        "metadata": meta,
        "tensors": tensors,
        "totals": {
            "tensors": gguf.tensors().len(),
            "elements": tot.elements,
            "bytes": tot.bytes,
            "per_type": per_type,
        },
    })
}

fn write_text(gguf: &Gguf, full: bool, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "file:        {} ({} bytes)",
        gguf.name(),
        gguf.file_size()
    )?;
    writeln!(
        out,
        "gguf:        version {}, alignment {}, tensor data at offset {}",
        gguf.version(),
        gguf.alignment(),
        gguf.data_offset()
    )?;
    writeln!(out, "\nmetadata ({} keys):", gguf.metadata().len())?;
    let kw = gguf
        .metadata()
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (k, v) in gguf.metadata() {
        writeln!(
            out,
            "  {k:kw$}  {:<16} {}",
            type_text(v),
            value_text(v, full)
        )?;
    }
    writeln!(out, "\ntensors ({}):", gguf.tensors().len())?;
    let nw = gguf
        .tensors()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "  {:>5}  {:nw$}  {:<5}  {:<26}  {:>14}  {:>14}",
        "#", "name", "type", "shape (ggml order)", "offset", "bytes"
    )?;
    for (i, t) in gguf.tensors().iter().enumerate() {
        let shape = t
            .dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" x ");
        writeln!(
            out,
            "  {i:>5}  {:nw$}  {:<5}  {shape:<26}  {:>14}  {:>14}",
            t.name,
            t.ty.name(),
            gguf.data_offset() + t.offset,
            t.n_bytes
        )?;
    }
    let tot = totals(gguf);
    writeln!(
        out,
        "\ntotal: {} tensors, {} elements, {} bytes ({:.2} MiB)",
        gguf.tensors().len(),
        tot.elements,
        tot.bytes,
        tot.bytes as f64 / (1024.0 * 1024.0)
    )?;
    for (ty, (n, b)) in &tot.per_type {
        writeln!(out, "  {ty:<5} {n:>6} tensors {b:>16} bytes")?;
    }
    Ok(())
}
