//! `xverse-bench` through its binary on a tiny model: the table, the JSON (llama-bench's field
//! names), and one-line errors for bad flags.

mod common;

use std::process::{Command, Output};

use xverse_models::TinySpec;

const BIN: &str = env!("CARGO_BIN_EXE_xverse-bench");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny(dir.path(), "tiny.gguf", &TinySpec::default());
    let m = m.to_str().unwrap();

    let o = run(&[
        "-m", m, "-p", "8,16", "-n", "4", "-t", "1,2", "-r", "2", "--bw-mib", "8",
    ]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.contains("read bandwidth:"), "{out}");
    assert!(out.contains("| model"), "{out}");
    for test in ["pp 8", "pp 16", "tg 4"] {
        // one row per thread count
        assert_eq!(
            out.matches(&format!(" {test} ")).count(),
            2,
            "{test}: {out}"
        );
    }
    // the tg rows give a roofline fraction
    let tg = out.lines().find(|l| l.contains(" tg 4 ")).unwrap();
    assert!(tg.trim_end().ends_with("% |"), "{tg}");
    // the bandwidth measured beside the tg runs is reported
    assert!(out.contains("read bandwidth beside the tg runs:"), "{out}");

    let o = run(&[
        "-m", m, "-p", "8", "-n", "4", "-t", "1", "-r", "2", "--bw-mib", "8", "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    for r in arr {
        for f in [
            "model_filename",
            "model_type",
            "n_threads",
            "n_prompt",
            "n_gen",
            "avg_ts",
            "stddev_ts",
        ] {
            assert!(r.get(f).is_some(), "{f} missing in {r}");
        }
        assert_eq!(r["model_filename"], m);
        assert_eq!(r["n_threads"], 1);
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0);
        assert!(r["model_type"].as_str().unwrap().starts_with("xverse "));
    }
    assert_eq!(
        (arr[0]["n_prompt"].as_u64(), arr[0]["n_gen"].as_u64()),
        (Some(8), Some(0))
    );
    assert_eq!(
        (arr[1]["n_prompt"].as_u64(), arr[1]["n_gen"].as_u64()),
        (Some(0), Some(4))
    );
    assert!(arr[1]["roofline_fraction"].as_f64().unwrap() > 0.0);
    // one bandwidth beside each of the tg test's two runs; none for the pp test
    let bw = arr[1]["samples_bw"].as_array().unwrap();
    assert_eq!(bw.len(), 2, "{}", arr[1]);
    assert!(bw.iter().all(|b| b.as_f64().unwrap() > 0.0));
    assert_eq!(arr[0]["samples_bw"].as_array().unwrap().len(), 0);
    // the fraction is the mean over runs of bytes · rate / bandwidth
    let bpt = arr[1]["bytes_per_token"].as_f64().unwrap();
    let ts = arr[1]["samples_ts"].as_array().unwrap();
    let want = ts
        .iter()
        .zip(bw)
        .map(|(t, b)| bpt * t.as_f64().unwrap() / b.as_f64().unwrap())
        .sum::<f64>()
        / 2.0;
    let got = arr[1]["roofline_fraction"].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
}

#[test]
fn bad_flags_give_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny(dir.path(), "tiny.gguf", &TinySpec::default());
    let m = m.to_str().unwrap();
    let missing = dir.path().join("missing.gguf");
    for args in [
        vec!["-m", m, "--frobnicate"],
        vec!["-m", m, "-t", "x"],
        vec!["-m", m, "-t", "0"],
        vec!["-m", m, "-r", "0"],
        vec!["-m", m, "-p", "0", "-n", "0"],
        vec!["-p", "8"],
        vec!["-m", missing.to_str().unwrap()],
        vec!["-m", m, "--cache-type", "q9"],
        vec!["-m", m, "--bw-mib", "18446744073709551615"],
    ] {
        let o = run(&args);
        assert!(!o.status.success(), "{args:?}");
        let err = text(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("xverse-bench: "), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}
