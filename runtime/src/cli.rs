//! What the command-line programs share: parse, run, and report any error as one line.

use crate::error::RuntimeError;
use clap::Parser;
use std::process::ExitCode;

/// Parses the command line as `C`, runs `run`, and turns a failure into one stderr line
/// `PROGRAM: message` with exit status 1. `--help` and `--version` print normally.
pub fn main_with<C: Parser>(
    program: &str,
    run: impl FnOnce(C) -> Result<(), RuntimeError>,
) -> ExitCode {
    let cli = match C::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(program, e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A clap error as one line (without the usage and tips clap prints after its first blank line).
fn usage_error(program: &str, e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "{program}: {} (see --help)",
        one_line(&e.render().to_string())
    );
    ExitCode::FAILURE
}

/// The first paragraph of a clap message, joined into one line, without its `error: ` prefix.
fn one_line(text: &str) -> String {
    let msg: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    msg.join(" ").trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn clap_messages_fold_to_their_first_paragraph() {
        let text = "error: unexpected argument '--bogus' found\n\n  tip: to pass '--bogus' as a value, use '-- --bogus'\n\nUsage: xverse-run [OPTIONS]\n";
        assert_eq!(one_line(text), "unexpected argument '--bogus' found");
        assert_eq!(one_line("\nerror: a\n  b\n\nc"), "a b");
    }
}
