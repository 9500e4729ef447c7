//! `xverse-perplexity` through its binary: a finite perplexity, saved logits, and the
//! KL-divergence of a file against itself (0, 100 % top-1) and against a quantized copy.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use xverse_models::TinySpec;
use xverse_quant::GgmlType;

const BIN: &str = env!("CARGO_BIN_EXE_xverse-perplexity");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The number after `key` in stdout.
fn value(o: &Output, key: &str) -> f64 {
    let s = text(&o.stdout);
    let i = s.find(key).unwrap_or_else(|| panic!("{key:?} not in {s}"));
    s[i + key.len()..]
        .trim_start()
        .split(|c: char| c.is_whitespace() || c == ',')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e} in {s}"))
}

fn corpus(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("text.txt");
    let para = "The model has two layers and a small vocabulary. It is a test of the software, \
                and the license of the program is free. 北京的景点：故宫、天坛、万里长城等。\n";
    std::fs::write(&p, para.repeat(4)).unwrap();
    p
}

fn assert_one_line_error(o: &Output, needle: &str) {
    let e = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert_eq!(e.lines().count(), 1, "{e:?}");
    assert!(e.contains(needle), "{needle:?} not in {e:?}");
}

#[test]
fn perplexity_save_logits_and_kl_against_itself_and_a_quantized_copy() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny(dir.path(), "f32.gguf", &TinySpec::default());
    let q = common::tiny(
        dir.path(),
        "q8.gguf",
        &TinySpec {
            ty: GgmlType::Q8_0,
            ..TinySpec::default()
        },
    );
    let (m, q) = (m.to_str().unwrap(), q.to_str().unwrap());
    let t = corpus(dir.path());
    let t = t.to_str().unwrap();
    let base = dir.path().join("base.xvl");
    let base = base.to_str().unwrap();

    let o = run(&[m, "-f", t, "-c", "64", "--save-logits", base]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let ppl = value(&o, "PPL =");
    // a random model over a 512-token vocabulary: finite, above 1
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
    assert!(text(&o.stdout).contains("[1]"));
    assert!(Path::new(base).exists());

    // the same file against its own logits
    let o = run(&[m, "--kl-base", base]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(value(&o, "KL divergence: mean"), 0.0, "{}", text(&o.stdout));
    assert_eq!(value(&o, "Same top-1:"), 100.0);
    assert_eq!(value(&o, "PPL ="), ppl);
    // with the text as well: checked against the saved tokens
    let o = run(&[m, "-f", t, "--kl-base", base]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(value(&o, "KL divergence: mean"), 0.0);

    // a Q8_0 copy of the same weights: small but non-zero KL, perplexity close
    let o = run(&[q, "--kl-base", base]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let kl = value(&o, "KL divergence: mean");
    assert!(kl > 0.0 && kl < 0.05, "Q8_0 KL {kl}");
    let qppl = value(&o, "PPL =");
    assert!((qppl / ppl - 1.0).abs() < 0.05, "{qppl} vs {ppl}");
    assert!(value(&o, "Same top-1:") > 80.0);
}

#[test]
fn bad_inputs_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny(dir.path(), "f32.gguf", &TinySpec::default());
    let m = m.to_str().unwrap();
    let t = corpus(dir.path());
    let t = t.to_str().unwrap();
    assert_one_line_error(&run(&[m]), "no text");
    assert_one_line_error(&run(&[m, "-f", t, "--bogus"]), "--bogus");
    assert_one_line_error(&run(&[m, "-f", t, "-c", "4096"]), "needs at least");
    assert_one_line_error(&run(&[m, "-f", t, "-c", "2"]), "at least 4");
    let junk = dir.path().join("junk.xvl");
    std::fs::write(&junk, b"not logits").unwrap();
    assert_one_line_error(&run(&[m, "--kl-base", junk.to_str().unwrap()]), "junk.xvl");
    assert_one_line_error(
        &run(&[
            m,
            "--kl-base",
            dir.path().join("none.xvl").to_str().unwrap(),
        ]),
        "none.xvl",
    );
    // saved from one text, compared with another
    let base = dir.path().join("b.xvl");
    let o = run(&[
        m,
        "-f",
        t,
        "-c",
        "32",
        "--save-logits",
        base.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let other = dir.path().join("other.txt");
    std::fs::write(&other, "something else entirely ".repeat(20)).unwrap();
    assert_one_line_error(
        &run(&[
            m,
            "-f",
            other.to_str().unwrap(),
            "--kl-base",
            base.to_str().unwrap(),
        ]),
        "does not tokenize",
    );
    assert_one_line_error(
        &run(&[m, "--kl-base", base.to_str().unwrap(), "-c", "64"]),
        "differs",
    );
    // a different vocabulary
    let big = common::tiny(
        dir.path(),
        "v600.gguf",
        &TinySpec {
            vocab: 600,
            ..TinySpec::default()
        },
    );
    assert_one_line_error(
        &run(&[big.to_str().unwrap(), "--kl-base", base.to_str().unwrap()]),
        "vocabulary",
    );
}
