//! The `xverse-models hf` command, run as a user would.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xverse-models"))
        .args(args)
        .output()
        .expect("run xverse-models")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `hf -o OUT` with a small shape; `extra` flags are appended, or replace the value of a shape
/// flag they repeat.
fn shape<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "hf", "-o", out, "--hidden", "32", "--heads", "2", "--ffn", "48", "--layers", "2",
        "--vocab", "300",
    ];
    for pair in extra.chunks(2) {
        match v.iter().position(|a| *a == pair[0]) {
            Some(i) if pair.len() == 2 => v[i + 1] = pair[1],
            _ => v.extend_from_slice(pair),
        }
    }
    v
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn hf_writes_a_checkpoint_and_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ckpt");
    let out_s = out.to_str().unwrap();
    let o = run(&shape(
        out_s,
        &["--max-shard-bytes", "10KB", "--kv-heads", "1"],
    ));
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    // 2·300·32 + 2·(2·32·32 + 2·32·16 + 3·32·48 + 2·32) + 32 = 34,720 parameters
    assert!(t.contains("34,720 parameters"), "{t}");
    assert!(t.contains("tensor data 69,440 bytes"), "{t}");
    assert!(t.contains("model-00001-of-0000"), "{t}");
    let files = names(&out);
    assert!(files.contains(&"model.safetensors.index.json".to_string()));
    assert!(files.contains(&"tokenizer.json".to_string()));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_key_value_heads"], 1);
    assert_eq!(config["vocab_size"], 300);

    let o = run(&shape(out_s, &[]));
    assert!(!o.status.success());
    assert!(text(&o).contains("exists; pass --force"), "{}", text(&o));
    assert_eq!(names(&out), files, "untouched");

    let o = run(&shape(out_s, &["--seed", "3", "--dtype", "f32", "--force"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("float32"), "{}", text(&o));
    assert_eq!(names(tmp.path()), ["ckpt"], "nothing left beside it");
}

#[test]
fn hf_bad_arguments_give_a_clear_error_and_no_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bad");
    let out_s = out.to_str().unwrap();
    for (args, want) in [
        (
            shape(out_s, &["--heads", "3"]),
            "hidden 32 is not divisible by heads 3",
        ),
        (
            shape(out_s, &["--vocab", "100"]),
            "vocab 100 is smaller than 261",
        ),
        (
            shape(out_s, &["--kv-heads", "3"]),
            "not divisible by kv heads 3",
        ),
        (
            shape(out_s, &["--max-shard-bytes", "0"]),
            "max_shard_bytes must be at least 1",
        ),
        (shape(out_s, &["--max-shard-bytes", "lots"]), "not a size"),
        (shape(out_s, &["--dtype", "int4"]), "unknown dtype 'int4'"),
        (
            vec!["hf", "-o", out_s, "--preset", "xverse-3b"],
            "unknown preset 'xverse-3b'",
        ),
    ] {
        let o = run(&args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
        assert!(names(tmp.path()).is_empty(), "{args:?} left files");
    }
}

#[test]
fn tiny_and_presets_still_work() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("t.gguf");
    let o = run(&["tiny", "-o", gguf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(gguf.is_file());
    let o = run(&["presets"]);
    assert!(o.status.success());
    assert!(text(&o).contains("bench-1b"));
}

/// Ctrl-C while shards are being written: exit status 130, no checkpoint, no partial folder.
#[cfg(unix)]
#[test]
fn hf_interrupted_leaves_nothing() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("big");
    // 2.5 GB if it ran to the end: it is stopped as soon as the first shard is being written
    let child = Command::new(env!("CARGO_BIN_EXE_xverse-models"))
        .args(["hf", "--preset", "bench-1b", "-o", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = tmp
        .path()
        .join(".big.partial")
        .join("model-00001-of-00003.safetensors");
    let start = Instant::now();
    while !first.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no shard started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(text(&o).contains("interrupted"), "{}", text(&o));
    assert!(names(tmp.path()).is_empty(), "left {:?}", names(tmp.path()));
}
