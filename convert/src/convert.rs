//! The conversion: prepare (read config, tokenizer and tensor list, plan every tensor, check
//! everything that can be checked before writing), then one streaming pass.
//!
//! The pass writes the header, metadata and tensor infos first (every offset follows from the
//! plan), then for each tensor in GGUF order: read it as f32, permute q/k rows, quantize row
//! chunks in parallel (rayon), append the bytes, let the source drop the tensor's pages. Memory
//! holds one tensor in f32 plus one chunk of output (at most [`CHUNK_ELEMS`] elements), not the
//! model. The file is written beside the target under a temporary name, fsynced and renamed
//! when complete ([`GgufFileWriter`]); on any error or interruption the temporary file is
//! removed and nothing appears under the target's name.

use crate::config::HfFiles;
use crate::convert_err;
use crate::gguf_source::{GgufSource, QUANTIZATION_VERSION};
use crate::permute::permute_rows;
use crate::plan::{build_plan, human_bytes, FileType, Naming, Plan, PlannedTensor};
use crate::source::{ConvertError, Dtype, TensorSource};
use crate::vocab::Vocab;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use xverse_quant::blocks;
use xverse_quant::gguf::{GgufFileWriter, GgufWriter, Value};
use xverse_quant::GgmlType;

/// Opens the tensors of a Hugging Face checkpoint folder ([`crate::checkpoint::open_hf`]).
pub type OpenHf<'a> = &'a dyn Fn(&Path) -> Result<Box<dyn TensorSource>, ConvertError>;

/// Elements quantized and written per step (64 MiB of f32): bounds the output buffer and how
/// long a Ctrl-C waits.
pub const CHUNK_ELEMS: usize = 16 << 20;

/// The message of an interrupted conversion.
pub const INTERRUPTED: &str = "interrupted: no output written";

/// Whether `e` is the error of an interrupted conversion.
pub fn is_interrupted(e: &ConvertError) -> bool {
    e.0 == INTERRUPTED
}

/// The temporary file being written, so that a second Ctrl-C can remove it before exiting.
static TEMP_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The temporary file of the conversion in progress, if one is being written.
pub fn temp_file_in_progress() -> Option<PathBuf> {
    TEMP_FILE.lock().ok().and_then(|g| g.clone())
}

fn set_temp_file(p: Option<PathBuf>) {
    if let Ok(mut g) = TEMP_FILE.lock() {
        *g = p;
    }
}

/// Clears [`TEMP_FILE`] when dropped.
struct TempGuard;

impl Drop for TempGuard {
    fn drop(&mut self) {
        set_temp_file(None);
    }
}

/// Command-line options of a conversion.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--type`; `None`: the checkpoint's precision (bf16 for XVERSE's checkpoints).
    pub ty: Option<FileType>,
    pub dry_run: bool,
    pub force: bool,
    pub quiet: bool,
    /// Worker threads for quantization (`None`: all cores).
    pub threads: Option<usize>,
}

/// What a conversion did.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub output: PathBuf,
    pub ftype: FileType,
    /// Size of the output file (planned size for a dry run).
    pub file_size: u64,
    pub tensors: usize,
    pub counts: BTreeMap<GgmlType, usize>,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub seconds: f64,
    pub dry_run: bool,
}

/// Where the tensors come from.
pub enum Source {
    /// A Hugging Face checkpoint reader (or any other source).
    Dyn(Box<dyn TensorSource>),
    /// A GGUF file: tensors that keep their type are copied byte for byte.
    Gguf(Box<GgufSource>),
}

impl Source {
    fn as_dyn(&self) -> &dyn TensorSource {
        match self {
            Source::Dyn(s) => s.as_ref(),
            Source::Gguf(g) => g.as_ref(),
        }
    }
}

/// A prepared conversion: metadata and plan, checked, nothing written yet.
pub struct Job {
    pub metadata: Vec<(String, Value)>,
    pub plan: Plan,
    pub source: Source,
    /// Problems that do not stop the conversion (fallback types, padded vocab, …).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("metadata", &self.metadata.len())
            .field("plan", &self.plan.tensors.len())
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl Job {
    /// The writer plan: metadata and tensor specs.
    pub fn writer(&self) -> Result<GgufWriter, ConvertError> {
        let mut w = GgufWriter::new();
        for (k, v) in &self.metadata {
            w.add_metadata(k.clone(), v.clone())?;
        }
        for t in &self.plan.tensors {
            w.add_tensor(t.spec())?;
        }
        Ok(w)
    }
}

/// The mix that keeps a checkpoint's precision: f32 or f16 when every 2-D tensor is stored so,
/// else bf16 (XVERSE's published checkpoints are bf16).
pub fn default_file_type(source: &dyn TensorSource) -> FileType {
    let dtypes: Vec<Dtype> = source
        .tensors()
        .iter()
        .filter(|t| t.shape.len() >= 2)
        .map(|t| t.dtype)
        .collect();
    if !dtypes.is_empty() && dtypes.iter().all(|&d| d == Dtype::F32) {
        FileType::F32
    } else if !dtypes.is_empty() && dtypes.iter().all(|&d| d == Dtype::F16) {
        FileType::F16
    } else {
        FileType::BF16
    }
}

fn u32_of(what: &str, v: usize) -> Result<Value, ConvertError> {
    u32::try_from(v)
        .map(Value::U32)
        .map_err(|_| convert_err!("{what} {v} does not fit a u32"))
}

/// Prepares the conversion of the Hugging Face checkpoint in `dir`, whose tensors `source` reads.
pub fn prepare_hf(
    dir: &Path,
    source: Box<dyn TensorSource>,
    ty: Option<FileType>,
) -> Result<Job, ConvertError> {
    let files = HfFiles::load(dir)?;
    let vocab = Vocab::load(&files)?;
    let ftype = ty.unwrap_or_else(|| default_file_type(source.as_ref()));
    let c = &files.config;
    let shape = c.shape();
    let plan = build_plan(
        source.tensors(),
        &shape,
        ftype,
        Naming::HuggingFace,
        "config.json",
    )?;
    let arch = "xverse";
    let k = |s: &str| format!("{arch}.{s}");
    let mut m: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(files.model_name())),
        ("general.file_type".into(), Value::U32(ftype.llama_ftype())),
        (
            "general.quantization_version".into(),
            Value::U32(QUANTIZATION_VERSION),
        ),
    ];
    if let Some(repo) = &c.name_or_path {
        m.push((
            "general.source.huggingface.repository".into(),
            Value::String(repo.clone()),
        ));
    }
    m.extend([
        (
            k("tensor_data_layout"),
            Value::String("Meta AI original pth".into()),
        ),
        (
            k("context_length"),
            u32_of("max_position_embeddings", c.max_position_embeddings)?,
        ),
        (k("embedding_length"), u32_of("hidden_size", c.hidden_size)?),
        (
            k("block_count"),
            u32_of("num_hidden_layers", c.num_hidden_layers)?,
        ),
        (
            k("feed_forward_length"),
            u32_of("intermediate_size", c.intermediate_size)?,
        ),
        (
            k("rope.dimension_count"),
            u32_of("head size", shape.head_dim())?,
        ),
        (
            k("attention.head_count"),
            u32_of("num_attention_heads", c.num_attention_heads)?,
        ),
        (
            k("attention.head_count_kv"),
            u32_of("num_key_value_heads", c.num_key_value_heads)?,
        ),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(c.rms_norm_eps as f32),
        ),
        (k("rope.freq_base"), Value::F32(c.rope_theta as f32)),
    ]);
    if let Some(s) = &c.rope_scaling {
        m.push((k("rope.scaling.type"), Value::String("linear".into())));
        m.push((k("rope.scaling.factor"), Value::F32(s.factor as f32)));
    }
    m.extend(vocab.metadata());
    let mut warnings = vocab.warnings.clone();
    warnings.extend(plan.warnings());
    Ok(Job {
        metadata: m,
        plan,
        source: Source::Dyn(source),
        warnings,
    })
}

/// Prepares re-quantizing the GGUF file `path` (like `llama-quantize`).
pub fn prepare_gguf(path: &Path, ty: Option<FileType>) -> Result<Job, ConvertError> {
    let src = GgufSource::open(path)?;
    let ftype = ty.ok_or_else(|| {
        convert_err!(
            "{}: give --type to re-quantize a GGUF file (one of {})",
            path.display(),
            FileType::names()
        )
    })?;
    let shape = src.shape()?;
    let label = format!("{}'s metadata", path.display());
    let plan = build_plan(src.tensors(), &shape, ftype, Naming::Gguf, &label)?;
    let metadata = src.metadata_for(ftype);
    let mut warnings = plan.warnings();
    let requantized: Vec<&str> = plan
        .tensors
        .iter()
        .filter(|t| !t.copy)
        .filter_map(|t| match t.source_dtype {
            Dtype::Ggml(g) if g.is_quantized() => Some(g.name()),
            _ => None,
        })
        .collect();
    if !requantized.is_empty() {
        let mut kinds = requantized.clone();
        kinds.sort_unstable();
        kinds.dedup();
        warnings.push(format!(
            "re-quantizing {} already quantized tensors ({}): quality is lower than quantizing from the original weights",
            requantized.len(),
            kinds.join(", ")
        ));
    }
    Ok(Job {
        metadata,
        plan,
        source: Source::Gguf(Box::new(src)),
        warnings,
    })
}

/// Whether `path` starts with the GGUF magic.
fn is_gguf_file(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

/// Prepares converting `input`: a Hugging Face checkpoint folder (tensors read by `open_hf`) or
/// a GGUF file.
pub fn prepare(
    input: &Path,
    ty: Option<FileType>,
    open_hf: OpenHf<'_>,
) -> Result<Job, ConvertError> {
    let shown = input.display();
    if input.is_dir() {
        // config.json first: an unsupported architecture is refused before any weights are
        // opened
        HfFiles::load(input)?;
        let source = open_hf(input)?;
        prepare_hf(input, source, ty)
    } else if input.is_file() {
        if is_gguf_file(input) {
            prepare_gguf(input, ty)
        } else {
            let hint = match input.parent() {
                Some(p) if p.join("config.json").is_file() => format!(
                    ": to convert a Hugging Face checkpoint, give its folder ({})",
                    p.display()
                ),
                _ => String::new(),
            };
            Err(convert_err!(
                "{shown} is neither a Hugging Face checkpoint folder nor a GGUF file{hint}"
            ))
        }
    } else {
        Err(convert_err!("{shown}: no such file or folder"))
    }
}

/// Converts `input` to `output`: refuses an existing target without `--force`, prepares, and
/// either prints the plan (`--dry-run`) or writes the file. Progress goes to stderr, the plan
/// and the summary to `out` (nothing with `--quiet` but the plan of a dry run).
pub fn run(
    input: &Path,
    output: &Path,
    opts: &Options,
    cancel: &AtomicBool,
    out: &mut dyn Write,
    open_hf: OpenHf<'_>,
) -> Result<Summary, ConvertError> {
    if !opts.dry_run && !opts.force && std::fs::symlink_metadata(output).is_ok() {
        return Err(convert_err!(
            "{} already exists; use --force to overwrite it",
            output.display()
        ));
    }
    let job = prepare(input, opts.ty, open_hf)?;
    execute(job, output, opts, cancel, out)
}

fn thread_pool(threads: Option<usize>) -> Result<rayon::ThreadPool, ConvertError> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        // more is a mistyped number, not a machine: each thread is started before any work
        if !(1..=512).contains(&n) {
            return Err(convert_err!("--threads {n}: give 1 to 512"));
        }
        b = b.num_threads(n);
    }
    b.build()
        .map_err(|e| convert_err!("cannot start worker threads: {e}"))
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:32!} [{bar:28}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Writes the prepared `job` to `output` (or prints its plan for a dry run).
pub fn execute(
    job: Job,
    output: &Path,
    opts: &Options,
    cancel: &AtomicBool,
    out: &mut dyn Write,
) -> Result<Summary, ConvertError> {
    let started = Instant::now();
    let writer = job.writer()?;
    let file_size = writer.file_size();
    let plan = &job.plan;
    let summary = |seconds: f64, dry_run: bool| Summary {
        output: output.to_path_buf(),
        ftype: plan.ftype,
        file_size,
        tensors: plan.tensors.len(),
        counts: plan.counts_by_type(),
        input_bytes: plan.source_bytes(),
        output_bytes: plan.output_bytes(),
        seconds,
        dry_run,
    };
    let io = |e: std::io::Error| convert_err!("cannot write the report: {e}");
    if opts.dry_run {
        for w in &job.warnings {
            writeln!(out, "warning: {w}").map_err(io)?;
        }
        plan.write_table(out, file_size).map_err(io)?;
        return Ok(summary(started.elapsed().as_secs_f64(), true));
    }
    if !opts.quiet {
        for w in &job.warnings {
            eprintln!("xverse-convert: warning: {w}");
        }
    }
    let pool = thread_pool(opts.threads)?;
    check_cancel(cancel)?;
    let mut file = writer.create(output, opts.force)?;
    set_temp_file(Some(file.temp_path().to_path_buf()));
    let _guard = TempGuard;
    let pb = progress_bar(plan.source_bytes(), opts.quiet);
    let written = stream(&job, &mut file, &pb, cancel, &pool).and_then(|()| {
        if cancel.load(Ordering::SeqCst) {
            return Err(ConvertError(INTERRUPTED.to_string()));
        }
        file.finish().map_err(ConvertError::from)
    });
    pb.finish_and_clear();
    let written = match written {
        Ok(n) => n,
        Err(e) if is_interrupted(&e) => return Err(e),
        Err(e) => {
            return Err(convert_err!(
                "{e}; no output written ({} was not created or changed)",
                output.display()
            ))
        }
    };
    let mut s = summary(started.elapsed().as_secs_f64(), false);
    s.file_size = written;
    if !opts.quiet {
        write_summary(out, &s).map_err(io)?;
    }
    Ok(s)
}

/// The end-of-run report.
pub fn write_summary(out: &mut dyn Write, s: &Summary) -> std::io::Result<()> {
    let counts: Vec<String> = s.counts.iter().map(|(ty, n)| format!("{n} {ty}")).collect();
    writeln!(
        out,
        "wrote {} ({}): {} tensors, {} ({})",
        s.output.display(),
        s.ftype,
        s.tensors,
        human_bytes(s.file_size),
        counts.join(", ")
    )?;
    let mbps = if s.seconds > 0.0 {
        s.input_bytes as f64 / 1e6 / s.seconds
    } else {
        0.0
    };
    writeln!(
        out,
        "read {} of tensors, wrote {} in {:.1} s ({mbps:.1} MB/s of input)",
        human_bytes(s.input_bytes),
        human_bytes(s.output_bytes),
        s.seconds
    )
}

fn check_cancel(cancel: &AtomicBool) -> Result<(), ConvertError> {
    if cancel.load(Ordering::SeqCst) {
        Err(ConvertError(INTERRUPTED.to_string()))
    } else {
        Ok(())
    }
}

/// Writes every tensor's data in plan order.
fn stream(
    job: &Job,
    file: &mut GgufFileWriter,
    pb: &ProgressBar,
    cancel: &AtomicBool,
    pool: &rayon::ThreadPool,
) -> Result<(), ConvertError> {
    let source = job.source.as_dyn();
    let mut values: Vec<f32> = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    for t in &job.plan.tensors {
        check_cancel(cancel)?;
        pb.set_message(t.name.clone());
        match (&job.source, t.copy) {
            (Source::Gguf(g), true) => {
                let raw = g.raw(&t.source_name)?;
                let step = (CHUNK_ELEMS * 4).max(1);
                let total = raw.len().max(1) as u64;
                for chunk in raw.chunks(step) {
                    check_cancel(cancel)?;
                    file.write_tensor_data(chunk)?;
                    pb.inc(t.source_bytes * chunk.len() as u64 / total);
                }
            }
            _ => {
                let io = Io {
                    file: &mut *file,
                    pb,
                    cancel,
                    pool,
                };
                convert_one(source, t, &mut values, &mut bytes, io)?;
            }
        }
        source.release(&t.source_name);
    }
    Ok(())
}

/// Where a tensor's bytes go, and what runs the work.
struct Io<'a> {
    file: &'a mut GgufFileWriter,
    pb: &'a ProgressBar,
    cancel: &'a AtomicBool,
    pool: &'a rayon::ThreadPool,
}

/// Reads, permutes, quantizes and writes one tensor.
fn convert_one(
    source: &dyn TensorSource,
    t: &PlannedTensor,
    values: &mut Vec<f32>,
    bytes: &mut Vec<u8>,
    io: Io<'_>,
) -> Result<(), ConvertError> {
    let Io {
        file,
        pb,
        cancel,
        pool,
    } = io;
    pool.install(|| source.read_f32(&t.source_name, values))?;
    let n: usize = t.shape.iter().product();
    if values.len() != n {
        return Err(convert_err!(
            "tensor {}: the reader returned {} values for shape {:?}",
            t.source_name,
            values.len(),
            t.shape
        ));
    }
    let row_len = t.row_len().max(1);
    if let Some(heads) = t.permute_heads {
        permute_rows(values, heads, row_len)
            .map_err(|e| convert_err!("tensor {}: {e}", t.source_name))?;
    }
    let ty = t.ty;
    let row_bytes = ty
        .bytes_for(row_len as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| {
            convert_err!(
                "tensor {}: rows of {row_len} are not whole {ty} blocks",
                t.name
            )
        })?;
    let rows_per_chunk = (CHUNK_ELEMS / row_len).max(1);
    // each rayon task quantizes about 256 Ki elements
    let rows_per_task = ((1usize << 18) / row_len).max(1);
    let total = n.max(1) as u64;
    for chunk in values.chunks(rows_per_chunk * row_len) {
        check_cancel(cancel)?;
        let rows = chunk.len() / row_len;
        bytes.clear();
        bytes.resize(rows * row_bytes, 0);
        pool.install(|| {
            chunk
                .par_chunks(rows_per_task * row_len)
                .zip(bytes.par_chunks_mut(rows_per_task * row_bytes))
                .try_for_each(|(src, dst)| blocks::quantize_row(ty, src, dst))
        })
        .map_err(|e| convert_err!("tensor {}: {e}", t.name))?;
        file.write_tensor_data(bytes)?;
        pb.inc(t.source_bytes * chunk.len() as u64 / total);
    }
    Ok(())
}
