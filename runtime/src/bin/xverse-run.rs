use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use xverse_quant::gguf::Gguf;
use xverse_runtime::hparams::Hparams;

/// Runs an XVERSE GGUF model. This build loads and checks the model; text generation arrives
/// with the CPU runtime (see the README's status section).
#[derive(Parser)]
#[command(name = "xverse-run", version, about)]
struct Cli {
    /// The GGUF model file.
    model: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let g = match Gguf::open(&cli.model) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("xverse-run: {e}");
            return ExitCode::FAILURE;
        }
    };
    match Hparams::from_gguf(&g) {
        Ok(h) => {
            println!(
                "{}: xverse model, {:.3} B parameters",
                g.name(),
                h.parameters() as f64 / 1e9
            );
            println!("{h:#?}");
            eprintln!("xverse-run: text generation is not implemented yet (model checked only)");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("xverse-run: {e}");
            ExitCode::FAILURE
        }
    }
}
