//! The `xverse-convert` command line: conversion, dry run, refusals and Ctrl-C, through the
//! binary.

mod convert_common;

use convert_common::{fixtures, listing};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use xverse_quant::gguf::Gguf;
use xverse_quant::GgmlType;

fn xc(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xverse-convert"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run xverse-convert")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One line on stderr, starting with `xverse-convert: `, exit status 1.
fn assert_one_line_error(o: &Output, contains: &str) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("xverse-convert: "), "{err}");
    assert!(
        err.contains(contains),
        "{err:?} should contain {contains:?}"
    );
}

#[test]
fn converts_a_folder_and_prints_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let st = fixtures().join("tiny-xverse-st");
    let o = xc(
        &[
            st.to_str().unwrap(),
            "-o",
            "out.gguf",
            "--type",
            "q8_0",
            "--threads",
            "2",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("wrote out.gguf (q8_0): 21 tensors"), "{out}");
    assert!(out.contains("MB/s of input"), "{out}");
    let g = Gguf::open(tmp.path().join("out.gguf")).unwrap();
    assert_eq!(g.get_u32("general.file_type").unwrap(), 7);
    assert_eq!(
        g.tensor_info("blk.0.attn_q.weight").unwrap().ty,
        GgmlType::Q8_0
    );
    // warnings about fallbacks go to stderr
    let o = xc(
        &[st.to_str().unwrap(), "-o", "k.gguf", "--type", "q4_k_m"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("warning: blk.0.ffn_down.weight: row length 172"),
        "{err}"
    );
    // --quiet: nothing at all
    let o = xc(
        &["out.gguf", "-o", "re.gguf", "--type", "q4_0", "--quiet"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
    assert_eq!(listing(tmp.path()), vec!["k.gguf", "out.gguf", "re.gguf"]);
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = fixtures().join("tiny-xverse-bin");
    let o = xc(
        &[bin.to_str().unwrap(), "--dry-run", "--type", "q4_k_m"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for name in [
        "token_embd.weight",
        "blk.1.ffn_down.weight",
        "output.weight",
    ] {
        assert!(out.contains(name), "{out}");
    }
    assert!(out.contains("file size:"), "{out}");
    assert!(out.contains("(fallback)"), "{out}");
    assert!(listing(tmp.path()).is_empty());
}

#[test]
fn command_line_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let st = fixtures().join("tiny-xverse-st");
    let st = st.to_str().unwrap();
    assert_one_line_error(
        &xc(&[st, "-o", "o.gguf", "--type", "q3_k"], tmp.path()),
        "unknown type \"q3_k\"",
    );
    assert_one_line_error(&xc(&[st], tmp.path()), "--output");
    assert_one_line_error(
        &xc(&["nowhere", "-o", "o.gguf"], tmp.path()),
        "nowhere: no such file or folder",
    );
    let cfg = fixtures().join("tiny-xverse-st/config.json");
    assert_one_line_error(
        &xc(&[cfg.to_str().unwrap(), "-o", "o.gguf"], tmp.path()),
        "give its folder",
    );
    std::fs::write(tmp.path().join("o.gguf"), b"keep").unwrap();
    assert_one_line_error(
        &xc(&[st, "-o", "o.gguf"], tmp.path()),
        "o.gguf already exists; use --force to overwrite it",
    );
    assert_eq!(std::fs::read(tmp.path().join("o.gguf")).unwrap(), b"keep");
    let o = xc(&[st, "-o", "o.gguf", "--force", "--quiet"], tmp.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_one_line_error(
        &xc(&["o.gguf", "-o", "p.gguf"], tmp.path()),
        "give --type to re-quantize a GGUF file",
    );
    assert_eq!(listing(tmp.path()), vec!["o.gguf"]);
    // the inspect subcommand still works
    let o = xc(&["inspect", "o.gguf"], tmp.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("general.architecture"));
}

#[test]
fn unsafe_and_legacy_checkpoints_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = fixtures().join("evil");
    let o = xc(&[evil.to_str().unwrap(), "-o", "e.gguf"], tmp.path());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("system"), "{err}");
    assert!(!tmp.path().join("evil_ran").exists());
    assert!(!evil.join("evil_ran").exists());
    let legacy = fixtures().join("tiny-xverse-fp32-legacy");
    let o = xc(&[legacy.to_str().unwrap(), "-o", "l.gguf"], tmp.path());
    let err = text(&o.stderr);
    assert!(o.status.success() || err.contains("legacy"), "{err}");
    if o.status.success() {
        // the reader handles the legacy format: an f32 checkpoint stays f32 by default
        let g = Gguf::open(tmp.path().join("l.gguf")).unwrap();
        assert_eq!(g.get_u32("general.file_type").unwrap(), 0);
        std::fs::remove_file(tmp.path().join("l.gguf")).unwrap();
    }
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
}

#[test]
fn ctrl_c_leaves_no_file() {
    use xverse_models::{write_tiny_gguf, TinySpec};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("big.gguf");
    // about 60 MB of f32: long enough to be interrupted mid-way
    let spec = TinySpec {
        hidden: 512,
        layers: 6,
        heads: 4,
        kv_heads: 4,
        ffn: 1536,
        vocab: 4096,
        ..TinySpec::default()
    };
    write_tiny_gguf(&input, &spec).unwrap();
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xverse-convert"))
        .args([
            input.to_str().unwrap(),
            "-o",
            "x.gguf",
            "--type",
            "q4_k_m",
            "--threads",
            "1",
        ])
        .current_dir(&outdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // wait for the temporary file, then interrupt
    let start = Instant::now();
    let mut seen = false;
    while start.elapsed() < Duration::from_secs(60) {
        if listing(&outdir).iter().any(|n| n.contains(".partial-")) {
            seen = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
    let o = child.wait_with_output().unwrap();
    let err = text(&o.stderr);
    eprintln!(
        "ctrl-c test: temp file seen {seen}, exit {:?}",
        o.status.code()
    );
    if seen && o.status.code() != Some(0) {
        assert_eq!(o.status.code(), Some(130), "{err}");
        assert!(
            err.contains("xverse-convert: interrupted: no output written"),
            "{err}"
        );
        assert!(listing(&outdir).is_empty(), "{:?}", listing(&outdir));
    } else {
        // finished before the signal: the file is complete
        assert!(o.status.success(), "{err}");
        assert_eq!(listing(&outdir), vec!["x.gguf"]);
    }
}
