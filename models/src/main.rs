//! `xverse-models`: write a tiny random-weight XVERSE GGUF, list the XVERSE presets, write the
//! fuzz seeds.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xverse_models::{create_tiny_gguf, presets, seeds, TinySpec};
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
    /// Print the published XVERSE shapes with their parameter counts.
    Presets,
    /// Write the starting corpus of the gguf_reader fuzz target into DIR.
    FuzzSeeds {
        /// Folder to write the seed files into (created if missing).
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct TinyArgs {
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
    /// Type of the 2-D weights: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, q6_k.
    /// A tensor whose rows are not whole blocks of it is written as f16; norms are f32.
    /// (llama.cpp b2757 cannot load bf16.)
    #[arg(short = 't', long = "type", default_value = "f32", value_parser = parse_type)]
    ty: GgmlType,
    /// Start from the shape of a preset (see `xverse-models presets`); the flags below override it.
    #[arg(long)]
    preset: Option<String>,
    /// Hidden size [default: 64].
    #[arg(long)]
    hidden: Option<usize>,
    /// Number of layers [default: 2].
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads [default: 4].
    #[arg(long)]
    heads: Option<usize>,
    /// Key/value heads [default: = heads].
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Feed-forward size [default: 172].
    #[arg(long)]
    ffn: Option<usize>,
    /// Vocabulary size, at least 260 [default: 512].
    #[arg(long)]
    vocab: Option<usize>,
    /// Training context length [default: 2048].
    #[arg(long)]
    context: Option<usize>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replace OUTPUT if it exists.
    #[arg(short, long)]
    force: bool,
}

fn parse_type(s: &str) -> Result<GgmlType, String> {
    GgmlType::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown type '{s}' (known: {})", names.join(", "))
    })
}

fn tiny(a: TinyArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut spec = match &a.preset {
        Some(name) => {
            let p = presets::find(name).ok_or_else(|| {
                let names: Vec<&str> = presets::ALL.iter().map(|p| p.name).collect();
                format!("unknown preset '{name}' (known: {})", names.join(", "))
            })?;
            TinySpec::from_preset(&p)
        }
        None => TinySpec::default(),
    };
    spec.ty = a.ty;
    spec.seed = a.seed;
    if let Some(v) = a.hidden {
        spec.hidden = v;
    }
    if let Some(v) = a.layers {
        spec.layers = v;
    }
    if let Some(v) = a.heads {
        spec.heads = v;
        spec.kv_heads = v;
    }
    if let Some(v) = a.kv_heads {
        spec.kv_heads = v;
    }
    if let Some(v) = a.ffn {
        spec.ffn = v;
    }
    if let Some(v) = a.vocab {
        spec.vocab = v;
    }
    if let Some(v) = a.context {
        spec.context = v;
    }
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
        "wrote {}: {} bytes, {} tensors, {} parameters, hidden {} layers {} heads {} (kv {}) ffn {} vocab {} context {}, type {}{}, seed {}",
        a.output.display(),
        size,
        tensors.len(),
        presets::group_thousands(spec.params()),
        spec.hidden,
        spec.layers,
        spec.heads,
        spec.kv_heads,
        spec.ffn,
        spec.vocab,
        spec.context,
        spec.ty,
        if fallback > 0 {
            format!(" ({fallback} weights in f16: rows not whole {} blocks)", spec.ty)
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
            eprintln!("xverse-models: error: {e}");
            ExitCode::FAILURE
        }
    }
}
