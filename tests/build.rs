//! Compiles llama.cpp (the llama.h API) from the sources bundled in the `ggml-sys-bleedingedge`
//! crate (llama.cpp release b2757). That crate builds ggml only (`libggml_static.a`) and generates
//! Rust bindings for llama.h, but does not compile `llama.cpp` itself.
//!
//! The sources are found, in order, in `$XVERSE_GGML_SRC` (a `ggml-src` folder), or in cargo's
//! registry (`$CARGO_HOME`, else `~/.cargo`): `registry/src/*/<crate dir>/ggml-src`.
//!
//! Link order: the static library built here belongs to this crate, and rustc puts a crate's
//! native libraries before those of the crates it depends on, so `libxverse_llama.a` comes
//! before `libggml_static.a` on the linker line and its undefined ggml symbols resolve there.

use std::env;
use std::path::{Path, PathBuf};

/// The folder name of the pinned ggml-sys crate inside cargo's registry.
const CRATE_DIR: &str = "ggml-sys-bleedingedge-2404291813.0.0+llamacpp-release.b2757";
/// Files of llama.cpp b2757 that make up the llama library (besides ggml).
const SOURCES: [&str; 3] = ["llama.cpp", "unicode.cpp", "unicode-data.cpp"];
/// Env var that points at a `ggml-src` folder to use instead of the registry's.
const OVERRIDE: &str = "XVERSE_GGML_SRC";

fn registry_candidates() -> Vec<PathBuf> {
    let mut homes = Vec::new();
    if let Some(h) = env::var_os("CARGO_HOME") {
        homes.push(PathBuf::from(h));
    }
    if let Some(h) = env::var_os("HOME") {
        homes.push(PathBuf::from(h).join(".cargo"));
    }
    let mut found = Vec::new();
    for home in homes {
        let src = home.join("registry").join("src");
        let Ok(entries) = std::fs::read_dir(&src) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path().join(CRATE_DIR).join("ggml-src"))
            .filter(|p| p.join("llama.cpp").is_file())
            .collect();
        dirs.sort();
        found.extend(dirs);
    }
    found
}

fn ggml_src() -> PathBuf {
    println!("cargo:rerun-if-env-changed={OVERRIDE}");
    println!("cargo:rerun-if-env-changed=CARGO_HOME");
    if let Some(dir) = env::var_os(OVERRIDE) {
        let dir = PathBuf::from(dir);
        if !dir.join("llama.cpp").is_file() {
            panic!(
                "{OVERRIDE}={} does not contain llama.cpp: point it at the ggml-src folder of {CRATE_DIR}",
                dir.display()
            );
        }
        return dir;
    }
    match registry_candidates().into_iter().next() {
        Some(dir) => dir,
        None => panic!(
            "cannot find the sources of {CRATE_DIR} in cargo's registry ($CARGO_HOME or ~/.cargo, \
             registry/src/*/{CRATE_DIR}/ggml-src); fetch the crate (cargo fetch) or set {OVERRIDE}"
        ),
    }
}

fn main() {
    let src = ggml_src();
    for f in SOURCES
        .iter()
        .chain(["llama.h", "unicode.h", "unicode-data.h"].iter())
    {
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(&src).join(f).display()
        );
    }

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++11")
        .include(&src)
        // llama.cpp is the oracle: always optimised, whatever the profile of this crate.
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .extra_warnings(false)
        .define("NDEBUG", None)
        .define("_XOPEN_SOURCE", "600")
        .define("_GNU_SOURCE", None)
        .flag_if_supported("-pthread");
    for f in SOURCES {
        build.file(src.join(f));
    }
    build.compile("xverse_llama");
    println!("cargo:rustc-link-lib=pthread");
}
