//! Fuzzing (bounded, run by the test command): unpacking takes any bytes — random,
//! and valid archives with corrupted bytes or hostile names — and either stores a
//! tree or refuses, never panics, and never writes outside the code store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lambent_sqlite::FsCodeStore;
use lambent_store::CodeStore;
use proptest::prelude::*;
use std::io::Write;

const NAMES: &str = "[a-z]{1,6}(\\.py)?|\\.\\./[a-z]{1,4}|/tmp/[a-z]{1,4}|[a-z]{1,3}/\\.\\./\\.\\./[a-z]{1,3}|[a-z]{1,3}/|\\.|[a-z]{1,3}\\\\[a-z]{1,3}";

fn archive(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in entries {
        let options = zip::write::SimpleFileOptions::default();
        if name.ends_with('/') {
            let _ = w.add_directory(name.as_str(), options);
        } else if w.start_file(name.as_str(), options).is_ok() {
            let _ = w.write_all(body);
        }
    }
    w.finish().map(|c| c.into_inner()).unwrap_or_default()
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    let entries = prop::collection::vec((NAMES, prop::collection::vec(any::<u8>(), 0..64)), 0..6);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        entries.clone().prop_map(|e| archive(&e)),
        (
            entries,
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
        )
            .prop_map(|(e, flips)| {
                let mut bytes = archive(&e);
                if !bytes.is_empty() {
                    for (at, value) in flips {
                        let i = at.index(bytes.len());
                        bytes[i] = value;
                    }
                }
                bytes
            }),
    ]
}

/// Every path under `dir`, relative.
fn listing(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_unpack_inside_the_store_or_are_refused(bytes in input()) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsCodeStore::open(dir.path().join("code")).unwrap();
        let result = store.put_zip(&bytes);
        // Nothing beside the store was written.
        prop_assert_eq!(listing(dir.path()).iter().filter(|p| !p.starts_with("code")).count(), 0);
        match result {
            Ok(stored) => prop_assert!(store.tree(&stored.sha256).is_dir()),
            // A refused package leaves no tree and no staging behind.
            Err(_) => {
                prop_assert!(std::fs::read_dir(dir.path().join("code/trees")).unwrap().next().is_none());
                prop_assert!(std::fs::read_dir(dir.path().join("code/tmp")).unwrap().next().is_none());
            }
        }
    }
}
