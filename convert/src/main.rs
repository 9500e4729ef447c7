use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Converts XVERSE checkpoints to GGUF and inspects GGUF files.
#[derive(Parser)]
#[command(name = "xverse-convert", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { file, json, full } => {
            xverse_convert::inspect::run(&file, json, full, &mut std::io::stdout().lock())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xverse-convert: {e}");
            ExitCode::FAILURE
        }
    }
}
