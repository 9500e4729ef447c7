//! `xverse-run` through its binary, on tiny random models.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use xverse_models::TinySpec;

const BIN: &str = env!("CARGO_BIN_EXE_xverse-run");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The number in stderr's `generation: N tokens` line.
fn generated(o: &Output) -> usize {
    let e = text(&o.stderr);
    let line = e
        .lines()
        .find(|l| l.contains("generation: "))
        .unwrap_or_else(|| panic!("no generation line in {e}"));
    line.split("generation: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The number in stderr's `prompt: N tokens in` line.
fn prompt_tokens(o: &Output) -> usize {
    let e = text(&o.stderr);
    let line = e
        .lines()
        .find(|l| l.contains("prompt: ") && l.contains(" tokens in "))
        .unwrap_or_else(|| panic!("no prompt line in {e}"));
    line.split("prompt: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Exit status 1 and exactly one line on stderr, containing `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
    let e = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {e}");
    assert_eq!(e.lines().count(), 1, "not one line: {e:?}");
    assert!(e.starts_with("xverse-run: "), "{e}");
    assert!(e.contains(needle), "{needle:?} not in {e:?}");
}

fn tiny(dir: &Path) -> PathBuf {
    common::tiny(dir, "tiny.gguf", &TinySpec::default())
}

#[test]
fn generates_n_tokens_and_streams_after_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let m = m.to_str().unwrap();
    let o = run(&[
        m,
        "-p",
        "Hello world, the model",
        "-n",
        "12",
        "--ignore-eos",
        "--seed",
        "5",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.starts_with("Hello world, the model"), "{out}");
    assert!(out.len() > "Hello world, the model".len());
    assert_eq!(generated(&o), 12);
    let e = text(&o.stderr);
    assert!(e.contains("loaded ") && e.contains(" ms"), "{e}");
    assert!(e.contains("tokens/s"), "{e}");
    // the same seed gives the same text; -m is llama.cpp's spelling of the model
    let o2 = run(&[
        "-m",
        m,
        "-p",
        "Hello world, the model",
        "-n",
        "12",
        "--ignore-eos",
        "-s",
        "5",
    ]);
    assert_eq!(text(&o2.stdout), out);
    // -n 0 generates nothing; --no-display-prompt hides the prompt
    let o3 = run(&[m, "-p", "Hello", "-n", "0", "--no-display-prompt"]);
    assert!(o3.status.success());
    assert_eq!(text(&o3.stdout), "");
    assert_eq!(generated(&o3), 0);
}

#[test]
fn greedy_is_reproducible_and_the_model_card_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let m = m.to_str().unwrap();
    let prompt = "北京的景点：故宫、天坛、万里长城等。\n深圳的景点：";
    let a = run(&[m, "-p", prompt, "--temp", "0", "-n", "16", "--ignore-eos"]);
    let b = run(&[
        m,
        "-p",
        prompt,
        "--temp",
        "0",
        "-n",
        "16",
        "--ignore-eos",
        "-s",
        "99",
    ]);
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert_eq!(text(&a.stdout), text(&b.stdout));
    // the model card: repetition_penalty 1.1, 64 new tokens
    let c = run(&[m, "-p", prompt, "--repeat-penalty", "1.1", "-n", "64"]);
    assert!(c.status.success(), "{}", text(&c.stderr));
    assert!(text(&c.stdout).starts_with(prompt));
    assert!(generated(&c) <= 64);
}

#[test]
fn every_sampling_flag_and_cache_type_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny(
        dir.path(),
        "h32.gguf",
        &TinySpec {
            hidden: 128,
            heads: 4,
            kv_heads: 4,
            ..TinySpec::default()
        },
    );
    let m = m.to_str().unwrap();
    for ct in ["f16", "f32", "q8_0"] {
        let o = run(&[
            m,
            "-p",
            "the",
            "-n",
            "4",
            "-c",
            "64",
            "-t",
            "1",
            "--temp",
            "0.7",
            "--top-k",
            "20",
            "--top-p",
            "0.9",
            "--min-p",
            "0.1",
            "--repeat-penalty",
            "1.2",
            "--repeat-last-n",
            "-1",
            "--seed",
            "3",
            "--cache-type",
            ct,
            "--ignore-eos",
            "--verbose-prompt",
        ]);
        assert!(o.status.success(), "{ct}: {}", text(&o.stderr));
        assert_eq!(generated(&o), 4);
        assert!(text(&o.stderr).contains("-> '"), "verbose prompt");
    }
}

#[test]
fn until_the_context_is_full_without_n() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let o = run(&[m.to_str().unwrap(), "-p", "the", "-c", "16", "--ignore-eos"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let p = prompt_tokens(&o);
    // every position of the context is used, plus the last sampled token
    assert_eq!(p + generated(&o), 17, "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("context of 16 tokens is full"));
}

#[test]
fn prompt_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let f = dir.path().join("prompt.txt");
    std::fs::write(&f, "the model\n").unwrap();
    let o = run(&[
        m.to_str().unwrap(),
        "-f",
        f.to_str().unwrap(),
        "-n",
        "2",
        "--ignore-eos",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // one trailing newline removed, as llama.cpp does
    assert!(text(&o.stdout).starts_with("the model"));
    assert!(!text(&o.stdout).starts_with("the model\n"));
}

#[test]
fn bad_flags_and_files_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let m = m.to_str().unwrap();
    assert_one_line_error(&run(&[m, "--bogus"]), "--bogus");
    assert_one_line_error(&run(&[m, "-n", "many"]), "many");
    assert_one_line_error(&run(&[m, "-n", "-5"]), "-n -5");
    assert_one_line_error(&run(&[m, "--top-p", "1.5"]), "--top-p");
    assert_one_line_error(&run(&[m, "--min-p", "2"]), "--min-p");
    assert_one_line_error(&run(&[m, "--repeat-penalty", "0"]), "--repeat-penalty");
    assert_one_line_error(&run(&[m, "--cache-type", "q4_0"]), "q4_0");
    assert_one_line_error(&run(&[m, "-p", "a", "-f", "b"]), "cannot be used with");
    assert_one_line_error(&run(&[m, "--system", "x"]), "--chat");
    assert_one_line_error(&run(&[m, "-t", "0"]), "-t 0");
    assert_one_line_error(&run(&[]), "no model");
    // files
    let missing = dir.path().join("missing.gguf");
    assert_one_line_error(&run(&[missing.to_str().unwrap()]), "missing.gguf");
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a gguf file at all").unwrap();
    assert_one_line_error(&run(&[junk.to_str().unwrap()]), "junk.gguf");
    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(m).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(&run(&[truncated.to_str().unwrap()]), "truncated.gguf");
    assert_one_line_error(
        &run(&[m, "-f", dir.path().join("nope.txt").to_str().unwrap()]),
        "nope.txt",
    );
    let latin1 = dir.path().join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9").unwrap();
    assert_one_line_error(&run(&[m, "-f", latin1.to_str().unwrap()]), "not UTF-8");
    // a prompt longer than the context
    let long = "the model ".repeat(40);
    assert_one_line_error(
        &run(&[m, "-p", &long, "-c", "16"]),
        "longer than the context",
    );
}

#[test]
fn help_and_version_succeed() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let h = text(&o.stdout);
    for flag in [
        "--prompt",
        "--file",
        "--n-predict",
        "--ctx-size",
        "--threads",
        "--temp",
        "--top-k",
        "--top-p",
        "--min-p",
        "--repeat-penalty",
        "--repeat-last-n",
        "--seed",
        "--chat",
        "--system",
        "--verbose-prompt",
        "--cache-type",
    ] {
        assert!(h.contains(flag), "{flag} missing from --help");
    }
    assert!(run(&["--version"]).status.success());
}

#[test]
fn chat_two_turns_from_stdin_then_eof() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let m = m.to_str().unwrap();
    let o = run_stdin(
        &[m, "--chat", "-n", "6", "--seed", "1", "-c", "256"],
        "hello there\n\nwhat is the model\n",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    // replies stream to stdout, each closed by a newline; no "> " marker when stdin is not a
    // terminal
    assert!(out.ends_with('\n'), "{out:?}");
    assert!(!out.contains("> "));
    let g = generated(&o);
    assert!(g <= 12, "{g}");
    // history stays in the cache: each turn evaluates only its own segment (and the eos
    // closing the previous reply), never the whole conversation again
    let p = prompt_tokens(&o);
    assert!(p < 60, "prompt tokens {p}: the history was re-evaluated");
    assert!(!text(&o.stderr).contains("dropped"));
}

#[test]
fn chat_with_a_system_text_and_a_full_context_drops_old_turns() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let m = m.to_str().unwrap();
    let input = "the first message is here\nthe second message is here\nthe third message\nthe fourth one\n";
    let o = run_stdin(
        &[
            m,
            "--chat",
            "--system",
            "be brief",
            "-n",
            "8",
            "-c",
            "64",
            "--seed",
            "2",
            "--ignore-eos",
        ],
        input,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(e.contains("dropped the oldest"), "{e}");
    assert_eq!(generated(&o), 32, "{e}");
}

#[test]
fn chat_refuses_a_message_longer_than_the_context_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let long = "the model ".repeat(30);
    let o = run_stdin(
        &[
            m.to_str().unwrap(),
            "--chat",
            "-n",
            "3",
            "-c",
            "32",
            "--ignore-eos",
        ],
        &format!("{long}\nhi\n"),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    let refusals: Vec<&str> = e.lines().filter(|l| l.contains("too long")).collect();
    assert_eq!(refusals.len(), 1, "{e}");
    assert!(refusals[0].contains("context of 32"), "{e}");
    assert_eq!(generated(&o), 3, "{e}");
}
