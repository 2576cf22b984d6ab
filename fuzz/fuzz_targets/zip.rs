//! Zip unpacking: any bytes are stored as a tree or refused, and nothing is written
//! outside the code store.
#![no_main]

use lambent_store::CodeStore;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("lambent-fuzz-zip-{}", std::process::id()))
}

fuzz_target!(|bytes: &[u8]| {
    let dir = scratch();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = lambent_sqlite::FsCodeStore::open(dir.join("code")).unwrap();
    let result = store.put_zip(bytes);
    // The store's directory is the only thing in `dir`.
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("code")]);
    if let Ok(stored) = result {
        assert!(store.tree(&stored.sha256).is_dir());
    }
});
