use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use xverse_convert::convert::{self, Options, INTERRUPTED};
use xverse_convert::plan::FileType;
use xverse_convert::source::{ConvertError, TensorSource};

/// Converts XVERSE checkpoints to GGUF and inspects GGUF files.
///
/// `xverse-convert HF_DIR -o OUT.gguf --type q4_k_m` converts a Hugging Face checkpoint folder
/// (torch .bin or safetensors shards, config.json, tokenizer.json); `xverse-convert IN.gguf -o
/// OUT.gguf --type q4_k_m` re-quantizes a GGUF file like llama-quantize.
#[derive(Parser)]
#[command(
    name = "xverse-convert",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    convert: ConvertArgs,
}

#[derive(Args)]
struct ConvertArgs {
    /// A Hugging Face checkpoint folder, or a .gguf file to re-quantize.
    #[arg(required = true)]
    input: Option<PathBuf>,
    /// The GGUF file to write.
    #[arg(
        short,
        long,
        value_name = "OUT.gguf",
        required_unless_present = "dry_run"
    )]
    output: Option<PathBuf>,
    /// Tensor types (llama.cpp's mixes): f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q6_k,
    /// q5_k_m, q5_k_s, q4_k_m, q4_k_s. Default: the checkpoint's precision (bf16 for XVERSE's
    /// checkpoints); required for a GGUF input.
    #[arg(long = "type", short = 't', value_name = "TYPE", value_parser = parse_type)]
    ty: Option<FileType>,
    /// Print the plan (every tensor, its type and bytes, the file size) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    force: bool,
    /// No progress bar and no summary.
    #[arg(long, short)]
    quiet: bool,
    /// Threads for quantization, 1 to 512 (default: all cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512))]
    threads: Option<u16>,
}

fn parse_type(s: &str) -> Result<FileType, String> {
    FileType::from_name(s)
        .ok_or_else(|| format!("unknown type {s:?}; expected one of {}", FileType::names()))
}

#[derive(Subcommand)]
enum Command {
    /// Print a GGUF file's header, metadata and tensor table (ours or llama.cpp's).
    Inspect {
        /// The GGUF file.
        file: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Print long arrays and strings whole instead of abbreviated.
        #[arg(long)]
        full: bool,
    },
}

/// Set by the first Ctrl-C; the conversion stops at the next chunk and removes its file.
static CANCEL: AtomicBool = AtomicBool::new(false);

fn open_hf(dir: &Path) -> Result<Box<dyn TensorSource>, ConvertError> {
    xverse_convert::checkpoint::open_hf(dir)
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    let msg = msg.to_string();
    let line = msg.lines().next().unwrap_or("").trim();
    eprintln!("xverse-convert: {line}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // clap's message up to the usage, on one line
            let text = e.render().to_string();
            let parts: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .map(str::trim)
                .collect();
            let line = parts.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            return fail(format!("{line} (see xverse-convert --help)"));
        }
    };
    match cli.command {
        Some(Command::Inspect { file, json, full }) => {
            match xverse_convert::inspect::run(&file, json, full, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        None => convert_main(cli.convert),
    }
}

fn convert_main(args: ConvertArgs) -> ExitCode {
    let Some(input) = args.input else {
        return fail("give an input: a Hugging Face checkpoint folder or a .gguf file");
    };
    let output = args.output.unwrap_or_else(|| PathBuf::from("out.gguf"));
    let opts = Options {
        ty: args.ty,
        dry_run: args.dry_run,
        force: args.force,
        quiet: args.quiet,
        threads: args.threads.map(usize::from),
    };
    let handler = ctrlc::set_handler(|| {
        if CANCEL.swap(true, Ordering::SeqCst) {
            // a second Ctrl-C: stop now, without waiting for the current chunk
            if let Some(temp) = convert::temp_file_in_progress() {
                let _ = std::fs::remove_file(temp);
            }
            eprintln!("\nxverse-convert: {INTERRUPTED}");
            std::process::exit(130);
        }
    });
    if let Err(e) = handler {
        eprintln!("xverse-convert: warning: cannot catch Ctrl-C: {e}");
    }
    let mut stdout = std::io::stdout().lock();
    match convert::run(&input, &output, &opts, &CANCEL, &mut stdout, &open_hf) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if convert::is_interrupted(&e) => {
            eprintln!("xverse-convert: {INTERRUPTED}");
            ExitCode::from(130)
        }
        Err(e) => fail(e),
    }
}
