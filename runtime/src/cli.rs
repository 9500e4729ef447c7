//! What the command-line programs share: parse, run, and report any error as one line.

use crate::error::RuntimeError;
use crate::kv_cache::{CacheType, KvTypes};
use clap::Parser;
use std::ffi::OsString;
use std::process::ExitCode;

/// llama.cpp's multi-letter single-dash flags that these programs share, and the long flag
/// each one means here (clap takes only one letter after a single dash).
const LLAMA_SPELLINGS: [(&str, &str); 2] = [("-ctk", "--cache-type-k"), ("-ctv", "--cache-type-v")];

/// `args` with llama.cpp's single-dash spellings ([`LLAMA_SPELLINGS`]) turned into the long
/// flags they stand for, up to a `--` (after which everything is a value).
pub fn llama_spellings(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    llama_spellings_with(&[], args)
}

/// [`llama_spellings`] with a program's own single-dash spellings (`extra`, e.g.
/// `xverse-bench`'s `-pg`) as well.
pub fn llama_spellings_with(
    extra: &[(&str, &str)],
    args: impl IntoIterator<Item = OsString>,
) -> Vec<OsString> {
    let mut rest = false;
    args.into_iter()
        .map(|a| {
            if rest {
                return a;
            }
            if a == "--" {
                rest = true;
                return a;
            }
            match LLAMA_SPELLINGS
                .iter()
                .chain(extra)
                .find(|(short, _)| a == *short)
            {
                Some((_, long)) => OsString::from(long),
                None => a,
            }
        })
        .collect()
}

/// The KV cache flags of every program (llama.cpp's names; `-ctk`/`-ctv` are accepted too).
#[derive(clap::Args, Clone, Debug)]
pub struct CacheArgs {
    /// Element type of the KV cache's keys and values: f16, f32, q8_0 or q4_0.
    #[arg(long = "cache-type", value_name = "TYPE", default_value = "f16")]
    pub cache_type: String,
    /// Element type of the cached keys (-ctk; default: --cache-type).
    #[arg(long = "cache-type-k", value_name = "TYPE")]
    pub cache_type_k: Option<String>,
    /// Element type of the cached values (-ctv; default: --cache-type).
    #[arg(long = "cache-type-v", value_name = "TYPE")]
    pub cache_type_v: Option<String>,
}

impl CacheArgs {
    /// The types the flags name (an error naming an unknown type).
    pub fn types(&self) -> Result<KvTypes, RuntimeError> {
        let both: CacheType = self.cache_type.parse()?;
        let one = |s: &Option<String>| s.as_deref().map_or(Ok(both), str::parse);
        Ok(KvTypes {
            k: one(&self.cache_type_k)?,
            v: one(&self.cache_type_v)?,
        })
    }
}

/// Parses the command line as `C`, runs `run`, and turns a failure into one stderr line
/// `PROGRAM: message` with exit status 1. `--help` and `--version` print normally.
pub fn main_with<C: Parser>(
    program: &str,
    run: impl FnOnce(C) -> Result<(), RuntimeError>,
) -> ExitCode {
    main_with_spellings(program, &[], run)
}

/// [`main_with`] for a program with single-dash spellings of its own
/// ([`llama_spellings_with`]).
pub fn main_with_spellings<C: Parser>(
    program: &str,
    extra: &[(&str, &str)],
    run: impl FnOnce(C) -> Result<(), RuntimeError>,
) -> ExitCode {
    let cli = match C::try_parse_from(llama_spellings_with(extra, std::env::args_os())) {
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
    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        cache: CacheArgs,
        #[arg(short = 'p')]
        prompt: Option<String>,
    }

    fn parse(args: &[&str]) -> Result<KvTypes, String> {
        let args = llama_spellings(
            std::iter::once("x")
                .chain(args.iter().copied())
                .map(OsString::from),
        );
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        cli.cache.types().map_err(|e| e.to_string())
    }

    #[test]
    fn cache_flags_take_llama_cpp_spellings() {
        let kv = |k, v| KvTypes { k, v };
        assert_eq!(parse(&[]).unwrap(), kv(CacheType::F16, CacheType::F16));
        assert_eq!(
            parse(&["--cache-type", "q8_0"]).unwrap(),
            kv(CacheType::Q8_0, CacheType::Q8_0)
        );
        assert_eq!(
            parse(&["-ctk", "q8_0", "-ctv", "q4_0"]).unwrap(),
            kv(CacheType::Q8_0, CacheType::Q4_0)
        );
        assert_eq!(
            parse(&["--cache-type", "f32", "--cache-type-v", "q8_0"]).unwrap(),
            kv(CacheType::F32, CacheType::Q8_0)
        );
        let e = parse(&["-ctk", "q3_k"]).unwrap_err();
        assert!(e.contains("q3_k") && e.contains("q4_0"), "{e}");
        // after `--` a "-ctk" is a value, not a flag
        let args = llama_spellings(["x", "--", "-ctk"].map(OsString::from));
        assert_eq!(args[2], "-ctk");
        // a program's own spellings, also only before `--`
        let args = llama_spellings_with(
            &[("-pg", "--pg")],
            ["x", "-pg", "1,2", "-ctv", "f16", "--", "-pg"].map(OsString::from),
        );
        assert_eq!(
            args,
            ["x", "--pg", "1,2", "--cache-type-v", "f16", "--", "-pg"]
        );
        assert_eq!(llama_spellings(["x", "-pg"].map(OsString::from))[1], "-pg");
    }

    #[test]
    fn clap_messages_fold_to_their_first_paragraph() {
        let text = "error: unexpected argument '--bogus' found\n\n  tip: to pass '--bogus' as a value, use '-- --bogus'\n\nUsage: xverse-run [OPTIONS]\n";
        assert_eq!(one_line(text), "unexpected argument '--bogus' found");
        assert_eq!(one_line("\nerror: a\n  b\n\nc"), "a b");
    }
}
