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
    for test in ["pp8", "pp16", "tg4"] {
        // one row per thread count
        assert_eq!(
            out.matches(&format!(" {test} ")).count(),
            2,
            "{test}: {out}"
        );
    }
    // the tg rows give a roofline fraction
    let tg = out.lines().find(|l| l.contains(" tg4 ")).unwrap();
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
        vec!["-m", m, "-o", "xml"],
        vec!["-m", m, "-o", "csv", "--json"],
        vec!["-m", m, "-pg", "8"],
        vec!["-m", m, "-pg", "0,4"],
        vec!["-m", m, "-pg", "8,x"],
        vec!["-m", m, "-pg", "18446744073709551615,1"],
        vec!["-m", m, "-n", "4", "-d", "18446744073709551615"],
    ] {
        let o = run(&args);
        assert!(!o.status.success(), "{args:?}");
        let err = text(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("xverse-bench: "), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}

/// A test longer than the machine's memory can cache is refused at once (the cache grows as
/// it fills, so it would otherwise run for hours), in one line.
#[test]
fn a_context_past_memory_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny(dir.path(), "tiny.gguf", &TinySpec::default());
    let m = m.to_str().unwrap();
    let t = std::time::Instant::now();
    let o = run(&[
        "-m",
        m,
        "-p",
        "0",
        "-n",
        "4",
        "-d",
        "1000000000000000",
        "--bw-mib",
        "0",
    ]);
    assert!(!o.status.success());
    assert!(t.elapsed().as_secs() < 60);
    let err = text(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("1000000000000004 positions") && err.contains("does not fit"),
        "{err}"
    );
}

/// Runs `python3` with `script`, `input` on its stdin; its stdout.
fn python(script: &str, input: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (the CI installs it)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "python3: {}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn llama_bench_output_formats_and_pg() {
    let dir = tempfile::tempdir().unwrap();
    // a comma and quotes in the path: CSV and SQL must quote them
    let m = common::tiny(dir.path(), "ti,n\"y'.gguf", &TinySpec::default());
    let m = m.to_str().unwrap();
    let base = [
        "-m", m, "-p", "8", "-n", "4", "-pg", "8,2", "-t", "1", "-r", "2", "--bw-mib", "8",
    ];
    let with = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = run(&args);
        assert!(o.status.success(), "{extra:?}: {}", text(&o.stderr));
        o.stdout
    };

    // the table: llama-bench's test names, the pp+tg test without a roofline
    let out = text(&with(&[]));
    let pg = out.lines().find(|l| l.contains(" pp8+tg2 ")).expect(&out);
    assert!(pg.trim_end().ends_with("- |"), "{pg}");
    assert!(
        out.lines()
            .any(|l| l.contains(" tg4 ") && l.ends_with("% |")),
        "{out}"
    );

    // JSON Lines: one object per test, in llama-bench's order (pp, tg, pp+tg)
    let out = text(&with(&["-o", "jsonl"]));
    let objs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tests: Vec<(u64, u64)> = objs
        .iter()
        .map(|o| {
            (
                o["n_prompt"].as_u64().unwrap(),
                o["n_gen"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(tests, [(8, 0), (0, 4), (8, 2)]);
    for o in &objs {
        assert_eq!(o["model_filename"], m);
        assert_eq!(o["samples_ns"].as_array().unwrap().len(), 2);
        // avg_ts is of all the test's tokens over each run's time
        let n = (o["n_prompt"].as_u64().unwrap() + o["n_gen"].as_u64().unwrap()) as f64;
        let ts: Vec<f64> = o["samples_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ns| n / (ns.as_f64().unwrap() * 1e-9))
            .collect();
        let avg = o["avg_ts"].as_f64().unwrap();
        assert!(((ts[0] + ts[1]) / 2.0 - avg).abs() < 1e-6 * avg, "{o}");
        let t = o["test_time"].as_str().unwrap();
        assert!(
            t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
    assert!(objs[1]["roofline_fraction"].as_f64().unwrap() > 0.0);
    assert!(objs[2]["roofline_fraction"].is_null());

    // CSV, read by Python's csv module: a header and one row per test, quoting intact
    let out = with(&["-o", "csv"]);
    let rows = python(
        "import csv, json, sys; print(json.dumps(list(csv.DictReader(sys.stdin))))",
        &out,
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&rows).unwrap();
    assert_eq!(rows.len(), 3, "{}", text(&out));
    assert_eq!(rows[0]["model_filename"], m);
    assert_eq!(
        (rows[2]["n_prompt"].as_str(), rows[2]["n_gen"].as_str()),
        (Some("8"), Some("2"))
    );
    assert_eq!(rows[0]["roofline_fraction"], "");
    assert!(rows[1]["avg_ts"].as_str().unwrap().parse::<f64>().unwrap() > 0.0);

    // SQL, run by SQLite (Python's sqlite3): one table, one row per test
    let out = with(&["-o", "sql"]);
    let got = python(
        "import sqlite3, sys, json\n\
         db = sqlite3.connect(':memory:'); db.executescript(sys.stdin.read())\n\
         q = 'select model_filename, n_prompt, n_gen, avg_ts > 0, roofline_fraction is null from test'\n\
         print(json.dumps(db.execute(q).fetchall()))",
        &out,
    );
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(
        got,
        serde_json::json!([[m, 8, 0, 1, 1], [m, 0, 4, 1, 0], [m, 8, 2, 1, 1]])
    );

    // --json is -o json
    let a: serde_json::Value = serde_json::from_slice(&with(&["--json"])).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&with(&["-o", "json"])).unwrap();
    assert_eq!(a.as_array().unwrap().len(), 3);
    assert_eq!(b.as_array().unwrap().len(), 3);
}

/// The timed parts through the library: each test leaves the cache holding the depth and
/// exactly its own tokens (a pp+tg test both the prompt and the generated ones), and a depth
/// the cache does not hold is an error.
#[test]
fn timed_tests_evaluate_their_tokens() {
    use xverse_runtime::bench::{fill_depth, time_gen, time_prompt, time_prompt_gen};
    use xverse_runtime::bench::{DepthFill, Rng};
    use xverse_runtime::engine::{Engine, EngineConfig};
    use xverse_runtime::model::Model;

    let dir = tempfile::tempdir().unwrap();
    let p = common::tiny(dir.path(), "t.gguf", &TinySpec::default());
    let model = Model::load(&p).unwrap();
    let cfg = EngineConfig {
        n_ctx: 64,
        threads: 1,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&model, cfg).unwrap();
    let mut rng = Rng::new(1);
    fill_depth(&mut e, 5, DepthFill::Synthetic, &mut rng).unwrap();
    assert_eq!(e.n_past(), 5);
    assert!(time_prompt(&mut e, 8, 5, &mut rng).unwrap() > 0.0);
    assert_eq!(e.n_past(), 13);
    assert!(time_gen(&mut e, 3, 5, &mut rng).unwrap() > 0.0);
    assert_eq!(e.n_past(), 8);
    assert!(time_prompt_gen(&mut e, 8, 3, 5, &mut rng).unwrap() > 0.0);
    assert_eq!(e.n_past(), 16);
    e.truncate(2);
    assert!(time_prompt_gen(&mut e, 8, 3, 5, &mut rng).is_err());
}
