//! `xverse-models`: write a tiny random-weight XVERSE GGUF, write a random-weight XVERSE
//! checkpoint in Hugging Face layout, list the XVERSE presets, write the fuzz seeds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::{Parser, Subcommand};
use xverse_models::hf::{self, HfDtype, HfSpec};
use xverse_models::{create_hf_checkpoint, create_tiny_gguf, presets, seeds, Shape, TinySpec};
use xverse_quant::GgmlType;

#[derive(Parser)]
#[command(
    name = "xverse-models",
    version,
    about = "XVERSE presets and small random-weight XVERSE models (GGUF) for demos and tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a random-weight XVERSE GGUF that llama.cpp (architecture "xverse") loads.
    Tiny(TinyArgs),
    /// Write a random-weight XVERSE checkpoint in Hugging Face layout (bf16 safetensors shards,
    /// index, config.json, tokenizer.json, …) for a preset or any shape.
    Hf(HfArgs),
    /// Print the published XVERSE shapes with their parameter counts.
    Presets,
    /// Write the starting corpus of the gguf_reader fuzz target into DIR.
    FuzzSeeds {
        /// Folder to write the seed files into (created if missing).
        dir: PathBuf,
    },
}

/// The shape and seed flags of `tiny` and `hf`.
#[derive(clap::Args)]
struct ShapeArgs {
    /// Start from the shape of a preset (see `xverse-models presets`); the flags below override it.
    #[arg(long)]
    preset: Option<String>,
    /// Hidden size (hidden_size) [default: 64].
    #[arg(long)]
    hidden: Option<usize>,
    /// Number of layers (num_hidden_layers) [default: 2].
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads (num_attention_heads) [default: 4].
    #[arg(long)]
    heads: Option<usize>,
    /// Key/value heads (num_key_value_heads) [default: = heads].
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Feed-forward size (intermediate_size) [default: 172].
    #[arg(long)]
    ffn: Option<usize>,
    /// Vocabulary size (vocab_size) [default: 512]; each subcommand says its minimum.
    #[arg(long)]
    vocab: Option<usize>,
    /// Training context length (max_position_embeddings) [default: 2048].
    #[arg(long)]
    context: Option<usize>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl ShapeArgs {
    /// The preset's shape (or `default`) with the flags given applied: `--heads` alone also
    /// sets the key/value heads to it.
    fn shape(&self, default: Shape) -> Result<Shape, String> {
        let mut s = match &self.preset {
            Some(name) => Shape::from_preset(&find_preset(name)?),
            None => default,
        };
        for (flag, field) in [
            (self.hidden, &mut s.hidden),
            (self.layers, &mut s.layers),
            (self.heads, &mut s.heads),
            (self.ffn, &mut s.ffn),
            (self.vocab, &mut s.vocab),
            (self.context, &mut s.context),
        ] {
            if let Some(v) = flag {
                *field = v;
            }
        }
        if self.heads.is_some() {
            s.kv_heads = None;
        }
        if self.kv_heads.is_some() {
            s.kv_heads = self.kv_heads;
        }
        Ok(s)
    }
}

#[derive(clap::Args)]
#[command(mut_arg("vocab", |a| a.help("Vocabulary size (vocab_size), at least 260 [default: 512]")))]
struct TinyArgs {
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
    /// Type of the 2-D weights: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, q6_k.
    /// A tensor whose rows are not whole blocks of it is written as f16; norms are f32.
    /// (llama.cpp b2757 cannot load bf16.)
    #[arg(short = 't', long = "type", default_value = "f32", value_parser = parse_type)]
    ty: GgmlType,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Replace OUTPUT if it exists.
    #[arg(short, long)]
    force: bool,
}

#[derive(clap::Args)]
#[command(mut_arg("vocab", |a| a.help("Vocabulary size (vocab_size), at least 261 [default: 512]")))]
#[command(mut_arg("kv_heads", |a| a.help(
    "Key/value heads (num_key_value_heads, written to config.json only when given) [default: = heads]"
)))]
struct HfArgs {
    /// Output folder (created; it must not exist, or be empty, unless --force).
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Most tensor bytes per shard: a number, or with a unit like Hugging Face's
    /// `max_shard_size` (`2GB` = 2·10⁹, `1GiB` = 2³⁰, also KB/MB/KiB/MiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    max_shard_bytes: u64,
    /// Tensor type: bf16 or f32 (f32 holds the same bf16-rounded values).
    #[arg(long, default_value = "bf16", value_parser = parse_dtype)]
    dtype: HfDtype,
    /// Leave rope_theta out of config.json, as the published XVERSE configs do.
    #[arg(long)]
    no_rope_theta: bool,
    /// Replace OUTPUT if it is a checkpoint folder (one with a config.json).
    #[arg(short, long)]
    force: bool,
}

/// `1073741824`, `2GB`, `1GiB`, `500MB`, `64KiB`, `1.5GB` → bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("'{s}' is not a size (like 1073741824, 2GB or 1GiB)");
    if num.is_empty() {
        return Err(bad());
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown size unit in '{s}' (use B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(bad);
    }
    let x: f64 = num.parse().map_err(|_| bad())?;
    let bytes = (x * mult as f64).round();
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

fn parse_dtype(s: &str) -> Result<HfDtype, String> {
    HfDtype::from_name(s).ok_or_else(|| format!("unknown dtype '{s}' (known: bf16, f32)"))
}

fn find_preset(name: &str) -> Result<presets::Preset, String> {
    presets::find(name).ok_or_else(|| {
        let names: Vec<&str> = presets::ALL.iter().map(|p| p.name).collect();
        format!("unknown preset '{name}' (known: {})", names.join(", "))
    })
}

fn hf_checkpoint(a: HfArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut spec = HfSpec::default();
    spec.set_shape(&a.shape.shape(spec.shape())?);
    spec.seed = a.shape.seed;
    spec.max_shard_bytes = a.max_shard_bytes;
    spec.dtype = a.dtype;
    if a.no_rope_theta {
        spec.rope_theta = None;
    }
    spec.validate()?;
    // Ctrl-C: remove the half-written folder (the target itself is only ever renamed into place)
    let partial = hf::partial_dir(&a.output)?;
    ctrlc::set_handler(move || {
        INTERRUPTED.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_dir_all(&partial);
        eprintln!(
            "xverse-models: interrupted; removed the partial checkpoint {}",
            partial.display()
        );
        std::process::exit(130);
    })?;
    let start = Instant::now();
    let s = create_hf_checkpoint(&a.output, &spec, a.force)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "wrote {}: {} parameters, {} tensors, {}, {}, seed {}",
        s.dir.display(),
        presets::group_thousands(s.params),
        s.tensors,
        spec.shape(),
        spec.dtype.torch_name(),
        spec.seed
    );
    println!(
        "  tensor data {} bytes ({:.2} GB) in {} shard{} of at most {} bytes; {} bytes written in {:.1} s ({:.0} MB/s)",
        presets::group_thousands(s.total_size),
        s.total_size as f64 / 1e9,
        s.shards.len(),
        if s.shards.len() == 1 { "" } else { "s" },
        presets::group_thousands(spec.max_shard_bytes),
        presets::group_thousands(s.file_bytes),
        secs,
        s.file_bytes as f64 / 1e6 / secs.max(1e-9)
    );
    for name in &s.shards {
        println!("  {name}");
    }
    Ok(())
}

/// Set by the Ctrl-C handler of `hf`.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn parse_type(s: &str) -> Result<GgmlType, String> {
    GgmlType::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown type '{s}' (known: {})", names.join(", "))
    })
}

fn tiny(a: TinyArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut spec = TinySpec::default();
    spec.set_shape(&a.shape.shape(spec.shape())?);
    spec.ty = a.ty;
    spec.seed = a.shape.seed;
    spec.validate()?;
    if a.output.exists() && !a.force {
        return Err(format!("{} exists; pass --force to replace it", a.output.display()).into());
    }
    let tensors = spec.tensors()?;
    let size = create_tiny_gguf(&a.output, &spec, a.force)?;
    let fallback = tensors
        .iter()
        .filter(|t| t.dims.len() == 2 && t.ty != spec.ty)
        .count();
    println!(
        "wrote {}: {} bytes, {} tensors, {} parameters, {}, type {}{}, seed {}",
        a.output.display(),
        size,
        tensors.len(),
        presets::group_thousands(spec.params()),
        spec.shape(),
        spec.ty,
        if fallback > 0 {
            format!(
                " ({fallback} weights in f16: rows not whole {} blocks)",
                spec.ty
            )
        } else {
            String::new()
        },
        spec.seed
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tiny(a) => tiny(a),
        Command::Hf(a) => hf_checkpoint(a),
        Command::Presets => {
            print!("{}", presets::table());
            Ok(())
        }
        Command::FuzzSeeds { dir } => seeds::write_fuzz_seeds(&dir).map(|n| {
            println!("wrote fuzz seeds ({n} bytes) into {}", dir.display());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if INTERRUPTED.load(Ordering::SeqCst) {
                // the error comes from the Ctrl-C handler removing the partial folder: it
                // reports and exits with 130 itself
                loop {
                    std::thread::park();
                }
            }
            eprintln!("xverse-models: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_hugging_faces_max_shard_size() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("64kib"), Ok(64 << 10));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size(" 10 MiB "), Ok(10 << 20));
        assert_eq!(parse_size("7B"), Ok(7));
        assert!(parse_size("").is_err());
        assert!(parse_size("GB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999GB").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
