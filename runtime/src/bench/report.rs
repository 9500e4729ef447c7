//! `xverse-bench`'s results as llama-bench prints them: one [`Record`] per test, written as a
//! Markdown table, CSV, JSON, JSON Lines or SQL ([`Format`], `-o`), with llama-bench's field
//! names and value conventions so that scripts written for it (and its SQLite import) read
//! ours.

use serde_json::Value;

use super::{mean_sd, roofline_fraction};
use crate::error::RuntimeError;

/// Tokens per batch of the engine ([`crate::engine::MAX_BATCH`]): llama-bench's `n_batch` and
/// `n_ubatch`.
const N_BATCH: usize = crate::engine::MAX_BATCH;

/// An output format of `-o`/`--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// A Markdown table (and a few lines about the machine above it).
    #[default]
    Md,
    /// A header line of field names, then one line of quoted values per test.
    Csv,
    /// One JSON array of objects, printed at the end.
    Json,
    /// One JSON object per line, per test.
    Jsonl,
    /// `CREATE TABLE IF NOT EXISTS test (…)`, then one `INSERT` per test (for `sqlite3`).
    Sql,
}

impl std::str::FromStr for Format {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "md" => Ok(Format::Md),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "jsonl" => Ok(Format::Jsonl),
            "sql" => Ok(Format::Sql),
            _ => Err(RuntimeError::new(format!(
                "unknown output format \"{s}\" (expected md, csv, json, jsonl or sql)"
            ))),
        }
    }
}

/// One test's settings and measurements.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The model file as given on the command line.
    pub model_filename: String,
    /// llama-bench's `model_type` ([`super::model_type`]).
    pub model_type: String,
    /// Bytes of the file's tensors.
    pub model_size: u64,
    /// Parameters of the model.
    pub model_n_params: u64,
    /// Threads of the test.
    pub n_threads: usize,
    /// Element types of the cached keys and values.
    pub type_k: String,
    pub type_v: String,
    /// Whether the weights were repacked at load (false with `--no-repack`).
    pub repack: bool,
    /// Prompt tokens (0 for a tg test).
    pub n_prompt: usize,
    /// Generated tokens (0 for a pp test; both for a pp+tg test).
    pub n_gen: usize,
    /// Cached positions before the test.
    pub n_depth: usize,
    /// When the test started (UTC, `2024-04-27T12:00:00Z`).
    pub test_time: String,
    /// Seconds of each timed run.
    pub samples_s: Vec<f64>,
    /// tg only: bytes read per generated token.
    pub bytes_per_token: Option<f64>,
    /// tg only, with the bandwidth probe: the read bandwidth beside each run, bytes/s.
    pub samples_bw: Vec<f64>,
    /// The bandwidth the test is compared with: the mean of `samples_bw`, else the one
    /// measured at the start (`None` without the probe).
    pub read_bandwidth: Option<f64>,
}

/// One field's value, with the type that CSV and SQL give it.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Text(String),
    Int(u64),
    Bool(bool),
    /// A real number, or none (JSON `null`, SQL `NULL`, an empty CSV value).
    Real(Option<f64>),
    /// Lists are in JSON only, as llama-bench's `samples_ns` and `samples_ts` are.
    Ints(Vec<u64>),
    Reals(Vec<f64>),
}

impl Record {
    /// Tokens/s of each run: all the test's tokens (prompt and generated) over its time.
    pub fn samples_ts(&self) -> Vec<f64> {
        let n = (self.n_prompt + self.n_gen) as f64;
        self.samples_s.iter().map(|&s| n / s.max(1e-9)).collect()
    }

    /// Nanoseconds of each run.
    pub fn samples_ns(&self) -> Vec<u64> {
        self.samples_s
            .iter()
            .map(|&s| (s.max(0.0) * 1e9).round() as u64)
            .collect()
    }

    /// llama-bench's name of the test: `pp512`, `tg128`, `pp512+tg128`, with ` @ d4096` after
    /// a depth.
    pub fn test_name(&self) -> String {
        let mut name = match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, g) => format!("tg{g}"),
            (p, g) => format!("pp{p}+tg{g}"),
        };
        if self.n_depth > 0 {
            name += &format!(" @ d{}", self.n_depth);
        }
        name
    }

    /// The roofline fraction of a tg test: each run against the bandwidth measured beside it
    /// ([`roofline_fraction`]); `None` for other tests or without the probe.
    pub fn roofline(&self) -> Option<f64> {
        roofline_fraction(self.bytes_per_token?, &self.samples_ts(), &self.samples_bw)
    }

    /// Every field in output order: llama-bench's names (`cpu_info` is this machine's CPU),
    /// then ours (`n_depth`, `repack`, the bandwidth and the roofline).
    pub fn fields(&self, cpu_info: &str) -> Vec<(&'static str, Field)> {
        use Field::*;
        let ns = self.samples_ns();
        let ns_f: Vec<f64> = ns.iter().map(|&n| n as f64).collect();
        let (avg_ns, sd_ns) = mean_sd(&ns_f);
        let ts = self.samples_ts();
        let (avg_ts, sd_ts) = mean_sd(&ts);
        vec![
            (
                "build_commit",
                Text(format!("xverse-rs {}", env!("CARGO_PKG_VERSION"))),
            ),
            ("cpu_info", Text(cpu_info.to_string())),
            ("gpu_info", Text(String::new())),
            ("backends", Text("CPU".to_string())),
            ("model_filename", Text(self.model_filename.clone())),
            ("model_type", Text(self.model_type.clone())),
            ("model_size", Int(self.model_size)),
            ("model_n_params", Int(self.model_n_params)),
            ("n_batch", Int(N_BATCH as u64)),
            ("n_ubatch", Int(N_BATCH as u64)),
            ("n_threads", Int(self.n_threads as u64)),
            ("type_k", Text(self.type_k.clone())),
            ("type_v", Text(self.type_v.clone())),
            ("n_gpu_layers", Int(0)),
            ("use_mmap", Bool(true)),
            ("repack", Bool(self.repack)),
            ("n_prompt", Int(self.n_prompt as u64)),
            ("n_gen", Int(self.n_gen as u64)),
            ("n_depth", Int(self.n_depth as u64)),
            ("test_time", Text(self.test_time.clone())),
            ("avg_ns", Int(avg_ns.round() as u64)),
            ("stddev_ns", Int(sd_ns.round() as u64)),
            ("avg_ts", Real(Some(avg_ts))),
            ("stddev_ts", Real(Some(sd_ts))),
            ("read_bandwidth", Real(self.read_bandwidth)),
            ("bytes_per_token", Real(self.bytes_per_token)),
            ("roofline_fraction", Real(self.roofline())),
            ("samples_ns", Ints(ns)),
            ("samples_ts", Reals(ts)),
            ("samples_bw", Reals(self.samples_bw.clone())),
        ]
    }

    /// The record as one JSON object.
    pub fn to_json(&self, cpu_info: &str) -> Value {
        let map = self
            .fields(cpu_info)
            .into_iter()
            .map(|(k, f)| {
                let v = match f {
                    Field::Text(s) => Value::from(s),
                    Field::Int(i) => Value::from(i),
                    Field::Bool(b) => Value::from(b),
                    // a NaN or infinity (never measured, but JSON has no spelling) is null
                    Field::Real(x) => x.map_or(Value::Null, Value::from),
                    Field::Ints(v) => Value::from(v),
                    Field::Reals(v) => Value::from(v),
                };
                (k.to_string(), v)
            })
            .collect();
        Value::Object(map)
    }
}

/// The text of a field in CSV and SQL (`None` for lists, which only JSON has): integers and
/// reals as numbers, booleans as 1 / 0, none as the empty string (CSV) or `NULL` (SQL).
fn scalar(f: &Field) -> Option<Option<String>> {
    Some(match f {
        Field::Text(s) => Some(s.clone()),
        Field::Int(i) => Some(i.to_string()),
        Field::Bool(b) => Some(u8::from(*b).to_string()),
        Field::Real(x) => x.filter(|x| x.is_finite()).map(|x| format!("{x:.6}")),
        Field::Ints(_) | Field::Reals(_) => return None,
    })
}

/// The CSV header: the names of the scalar fields.
pub fn csv_header(fields: &[(&'static str, Field)]) -> String {
    fields
        .iter()
        .filter(|(_, f)| scalar(f).is_some())
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(",")
}

/// One CSV line: every scalar value in double quotes (a quote inside doubled), as llama-bench
/// writes them.
pub fn csv_line(fields: &[(&'static str, Field)]) -> String {
    fields
        .iter()
        .filter_map(|(_, f)| scalar(f))
        .map(|v| format!("\"{}\"", v.unwrap_or_default().replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(",")
}

/// `CREATE TABLE IF NOT EXISTS test (…)` with a column per scalar field: TEXT, INTEGER
/// (integers and booleans) or REAL.
pub fn sql_create(fields: &[(&'static str, Field)]) -> String {
    let cols: Vec<String> = fields
        .iter()
        .filter_map(|(k, f)| {
            let ty = match f {
                Field::Text(_) => "TEXT",
                Field::Int(_) | Field::Bool(_) => "INTEGER",
                Field::Real(_) => "REAL",
                Field::Ints(_) | Field::Reals(_) => return None,
            };
            Some(format!("  {k} {ty}"))
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS test (\n{}\n);",
        cols.join(",\n")
    )
}

/// One `INSERT INTO test (…) VALUES (…);`: text in single quotes (a quote inside doubled),
/// numbers bare, none as `NULL`.
pub fn sql_insert(fields: &[(&'static str, Field)]) -> String {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for (k, f) in fields {
        let Some(v) = scalar(f) else { continue };
        names.push(*k);
        values.push(match (f, v) {
            (_, None) => "NULL".to_string(),
            (Field::Text(_), Some(s)) => format!("'{}'", s.replace('\'', "''")),
            (_, Some(s)) => s,
        });
    }
    format!(
        "INSERT INTO test ({}) VALUES ({});",
        names.join(", "),
        values.join(", ")
    )
}

/// The name of a model file in the Markdown table: the last part of its path.
pub fn md_file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// The Markdown table's header and rule, with `file_width` characters for the file names
/// (the longest [`md_file_name`] of the models).
pub fn md_header(file_width: usize) -> String {
    let w = file_width.max(4);
    format!(
        "| {:<w$} | {:<30} | {:>10} | {:>8} | {:>7} | {:>24} | {:>20} | {:>8} |\n| {:-<w$} | {:-<30} | {:->9}: | {:->7}: | {:->6}: | {:->23}: | {:->19}: | {:->7}: |",
        "file", "model", "size", "params", "threads", "test", "t/s", "roofline", "", "", "", "", "", "", "", ""
    )
}

/// One Markdown row: the file's name, its llama-bench model type, GiB, billions of
/// parameters, threads, the test, tokens/s as mean ± sd, the roofline fraction (tg tests
/// with the probe, else `-`).
pub fn md_row(r: &Record, file_width: usize) -> String {
    let w = file_width.max(4);
    let (avg, sd) = mean_sd(&r.samples_ts());
    let roof = r
        .roofline()
        .map_or_else(|| "-".to_string(), |f| format!("{:.0} %", 100.0 * f));
    format!(
        "| {:<w$} | {:<30} | {:>10} | {:>8} | {:>7} | {:>24} | {:>20} | {:>8} |",
        md_file_name(&r.model_filename),
        r.model_type,
        format!("{:.2} GiB", r.model_size as f64 / (1u64 << 30) as f64),
        format!("{:.2} B", r.model_n_params as f64 / 1e9),
        r.n_threads,
        r.test_name(),
        format!("{avg:.2} ± {sd:.2}"),
        roof
    )
}

/// This machine's CPU as `/proc/cpuinfo` names it (`model name`, else `Hardware` or
/// `Processor`), else the architecture's name.
pub fn cpu_info() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu_info_from(&text).unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The CPU's name in the text of a `/proc/cpuinfo`.
fn cpu_info_from(cpuinfo: &str) -> Option<String> {
    for key in ["model name", "Hardware", "Processor"] {
        let found = cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_string())
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// `secs` after the Unix epoch as llama-bench's `test_time`: `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_time(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (the usual era arithmetic: 400-year
/// eras of 146,097 days, years starting on 1 March so the leap day is last).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of the era, 0..146_096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // month from March, 0..11
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Now as [`utc_time`].
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_time(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n_prompt: usize, n_gen: usize) -> Record {
        Record {
            model_filename: "/m/a \"b\" 'c'.gguf".to_string(),
            model_type: "xverse 1B Q4_0".to_string(),
            model_size: 747_404_640,
            model_n_params: 1_233_938_432,
            n_threads: 2,
            type_k: "f16".to_string(),
            type_v: "q4_0".to_string(),
            repack: true,
            n_prompt,
            n_gen,
            n_depth: 0,
            test_time: utc_time(1_700_000_000),
            samples_s: vec![0.5, 0.25],
            bytes_per_token: (n_prompt == 0).then_some(1e9),
            samples_bw: if n_prompt == 0 {
                vec![20e9, 40e9]
            } else {
                vec![]
            },
            read_bandwidth: Some(30e9),
        }
    }

    #[test]
    fn formats_parse_by_llama_bench_names() {
        for (s, f) in [
            ("md", Format::Md),
            ("csv", Format::Csv),
            ("json", Format::Json),
            ("jsonl", Format::Jsonl),
            ("sql", Format::Sql),
        ] {
            assert_eq!(s.parse::<Format>().unwrap(), f);
        }
        let e = "xml".parse::<Format>().unwrap_err().to_string();
        assert!(e.contains("xml") && e.contains("jsonl"), "{e}");
    }

    #[test]
    fn test_names_and_rates() {
        let tg = record(0, 16);
        assert_eq!(tg.test_name(), "tg16");
        assert_eq!(tg.samples_ts(), vec![32.0, 64.0]);
        assert_eq!(tg.samples_ns(), vec![500_000_000, 250_000_000]);
        // 1 GB per token: 32 tokens/s at 20 GB/s is 1.6, 64 at 40 GB/s is 1.6
        assert!((tg.roofline().unwrap() - 1.6).abs() < 1e-12);
        let pp = record(512, 0);
        assert_eq!(pp.test_name(), "pp512");
        assert_eq!(pp.roofline(), None);
        // pp+tg: all the tokens over the whole time
        let mut pg = record(512, 128);
        pg.n_depth = 4096;
        assert_eq!(pg.test_name(), "pp512+tg128 @ d4096");
        assert_eq!(pg.samples_ts(), vec![1280.0, 2560.0]);
    }

    #[test]
    fn json_has_llama_bench_fields_and_ours() {
        let v = record(0, 16).to_json("Some CPU");
        assert_eq!(v["cpu_info"], "Some CPU");
        assert_eq!(v["model_filename"], "/m/a \"b\" 'c'.gguf");
        assert_eq!(v["n_prompt"], 0);
        assert_eq!(v["n_gen"], 16);
        assert_eq!(v["n_batch"], 512);
        assert_eq!(v["test_time"], "2023-11-14T22:13:20Z");
        assert_eq!(v["avg_ns"], 375_000_000u64);
        // sample sd of 0.5 s and 0.25 s
        assert_eq!(v["stddev_ns"], 176_776_695u64);
        assert_eq!(v["avg_ts"], 48.0);
        assert_eq!(
            v["samples_ns"],
            serde_json::json!([500_000_000u64, 250_000_000u64])
        );
        assert_eq!(v["samples_ts"], serde_json::json!([32.0, 64.0]));
        assert_eq!(v["repack"], true);
        assert!((v["roofline_fraction"].as_f64().unwrap() - 1.6).abs() < 1e-12);
        let pp = record(8, 0).to_json("x");
        assert!(pp["roofline_fraction"].is_null() && pp["bytes_per_token"].is_null());
    }

    #[test]
    fn csv_quotes_every_value_and_leaves_out_lists() {
        let f = record(8, 0).fields("cpu, \"fast\"");
        let head = csv_header(&f);
        let line = csv_line(&f);
        assert!(head.starts_with("build_commit,cpu_info,gpu_info,backends,model_filename,"));
        assert!(!head.contains("samples_"), "{head}");
        let names: Vec<&str> = head.split(',').collect();
        // every value quoted; the quotes inside doubled, the commas inside kept
        assert!(line.contains("\"cpu, \"\"fast\"\"\""), "{line}");
        assert!(line.contains("\"/m/a \"\"b\"\" 'c'.gguf\""), "{line}");
        // split on the quotes' boundaries: as many values as names, in the same order
        let inner = line.strip_prefix('"').unwrap().strip_suffix('"').unwrap();
        let values: Vec<String> = inner
            .split("\",\"")
            .map(|v| v.replace("\"\"", "\""))
            .collect();
        assert_eq!(values.len(), names.len(), "{head}\n{line}");
        let at = |k: &str| &values[names.iter().position(|n| *n == k).unwrap()];
        assert_eq!(at("n_prompt"), "8");
        assert_eq!(at("n_gen"), "0");
        assert_eq!(at("repack"), "1");
        assert_eq!(at("avg_ts"), "24.000000");
        assert_eq!(at("roofline_fraction"), "");
        assert_eq!(at("cpu_info"), "cpu, \"fast\"");
    }

    #[test]
    fn sql_types_columns_and_quotes_text() {
        let f = record(0, 16).fields("it's");
        let create = sql_create(&f);
        assert!(create.starts_with("CREATE TABLE IF NOT EXISTS test (\n"));
        assert!(create.contains("  model_filename TEXT,\n"), "{create}");
        assert!(create.contains("  n_gen INTEGER,\n"), "{create}");
        assert!(create.contains("  repack INTEGER,\n"), "{create}");
        assert!(create.contains("  avg_ts REAL,\n"), "{create}");
        assert!(!create.contains("samples_"), "{create}");
        let insert = sql_insert(&f);
        assert!(insert.starts_with("INSERT INTO test (build_commit, cpu_info,"));
        assert!(insert.contains("'it''s'"), "{insert}");
        assert!(insert.contains("'/m/a \"b\" ''c''.gguf'"), "{insert}");
        assert!(insert.ends_with(");"));
        let pp = sql_insert(&record(8, 0).fields("x"));
        assert!(pp.contains(", NULL, NULL"), "{pp}");
        // as many columns as values
        let cols = create.lines().filter(|l| l.starts_with("  ")).count();
        let vals = pp.split(" VALUES (").nth(1).unwrap().split(", ").count();
        assert_eq!(cols, vals);
    }

    #[test]
    fn markdown_rows_line_up_with_the_header() {
        let w = md_file_name(&record(0, 16).model_filename).chars().count();
        assert_eq!(w, 14);
        let head = md_header(w);
        let mut r = record(0, 16);
        r.n_depth = 16384;
        let row = md_row(&r, w);
        let bars = |s: &str| -> Vec<usize> {
            s.char_indices()
                .filter(|&(_, c)| c == '|')
                .map(|(i, _)| s[..i].chars().count())
                .collect()
        };
        for line in head.lines() {
            assert_eq!(bars(line), bars(&row), "{head}\n{row}");
        }
        assert!(
            row.starts_with("| a \"b\" 'c'.gguf | xverse 1B Q4_0 "),
            "{row}"
        );
        assert!(row.contains(" tg16 @ d16384 |"), "{row}");
        assert!(row.contains(" 48.00 ± 22.63 |"), "{row}");
        assert!(row.ends_with("160 % |"), "{row}");
        assert!(md_row(&record(8, 0), w).ends_with("- |"));
        // the longest test name the table is made for still lines up
        let mut pg = record(16384, 4096);
        pg.n_depth = 131_072;
        assert_eq!(pg.test_name().len(), 24);
        assert_eq!(bars(&md_row(&pg, w)), bars(&row));
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(utc_time(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(utc_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_time(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(utc_time(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(utc_now().len(), 20);
    }

    #[test]
    fn cpu_names_from_cpuinfo() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n";
        assert_eq!(
            cpu_info_from(x86).as_deref(),
            Some("AMD EPYC 7B13 64-Core Processor")
        );
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\n\nHardware\t: BCM2835\n";
        assert_eq!(cpu_info_from(arm).as_deref(), Some("BCM2835"));
        assert_eq!(cpu_info_from("processor : 0\nmodel name :\n"), None);
        assert!(!cpu_info().is_empty());
    }
}
