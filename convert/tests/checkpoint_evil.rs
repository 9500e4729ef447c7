//! The malicious pickle fixture is refused, and its side effect never happens.
//! (Its own test binary: it changes the working directory of the process.)

use std::path::PathBuf;

use xverse_convert::checkpoint;

#[test]
fn checkpoint_evil_pickle_is_refused_and_never_runs() {
    let fixtures = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
    .canonicalize()
    .unwrap();
    let evil_dir = fixtures.join("evil");
    let cwd = tempfile::tempdir().unwrap();
    std::env::set_current_dir(cwd.path()).unwrap();

    let e = match checkpoint::open_hf(&evil_dir) {
        Ok(_) => panic!("the evil checkpoint was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("refusing") && e.contains("pytorch_model.bin: its pickle calls posix.system"),
        "{e}"
    );
    let e = match checkpoint::open_file(&evil_dir.join("pytorch_model.bin")) {
        Ok(_) => panic!("the evil file was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("posix.system"), "{e}");

    assert!(!cwd.path().join("evil_ran").exists());
    assert!(!evil_dir.join("evil_ran").exists());
    std::env::set_current_dir(&fixtures).unwrap();
    assert!(!fixtures.join("evil_ran").exists());
}
