//! Content-addressed code on local disk: each package (a zip) is stored once under its SHA-256 and
//! unpacked once into a read-only tree that every instance of every version sharing
//! it runs from. Unpacking refuses anything that could write outside the tree (zip
//! slip: `..`, absolute paths, symlinks) and bounds what it writes (zip bombs): the
//! limits are checked against bytes actually written, not the sizes the archive claims.

use lambent_store::{CodeError, CodeStore, MAX_ENTRIES, MAX_UNPACKED_BYTES, StoredCode};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Code blobs and their unpacked trees under one directory.
#[derive(Debug, Clone)]
pub struct FsCodeStore {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CodeError + '_ {
    move |source| CodeError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl FsCodeStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, CodeError> {
        let root = root.into();
        for sub in ["blobs", "trees", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(Self { root })
    }
}

impl CodeStore for FsCodeStore {
    fn tree(&self, sha256: &str) -> PathBuf {
        self.root.join("trees").join(sha256)
    }

    fn gc(&self, in_use: &HashSet<String>, min_age: Duration) -> Result<usize, CodeError> {
        let trees = self.root.join("trees");
        let mut removed = 0;
        for entry in fs::read_dir(&trees).map_err(io(&trees))? {
            let entry = entry.map_err(io(&trees))?;
            let sha = entry.file_name().to_string_lossy().into_owned();
            if in_use.contains(&sha) {
                continue;
            }
            let old_enough = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if !old_enough {
                continue;
            }
            let blob = self.root.join("blobs").join(format!("{sha}.zip"));
            let _ = fs::remove_file(&blob);
            // Running instances keep their open files; the tree is gone for new ones.
            fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
            removed += 1;
        }
        Ok(removed)
    }

    fn put_zip(&self, zip_bytes: &[u8]) -> Result<StoredCode, CodeError> {
        let sha256 = hex::encode(Sha256::digest(zip_bytes));
        let stored = StoredCode {
            sha256: sha256.clone(),
            size: zip_bytes.len() as u64,
        };
        let tree = self.tree(&sha256);
        if tree.is_dir() {
            // Reused only as unpacked: a tree changed on disk since (by a process
            // running without a sandbox, or by hand) is rebuilt, never served again.
            if matches_zip(zip_bytes, &tree) {
                return Ok(stored);
            }
            tracing::warn!(sha256 = %sha256, "code tree differs from its package: rebuilding it");
            let aside = tempdir_in(&self.root.join("tmp"))?.join("tampered");
            fs::rename(&tree, &aside).map_err(io(&tree))?;
            let _ = fs::remove_dir_all(aside.parent().unwrap_or(&aside));
        }
        let staging = tempdir_in(&self.root.join("tmp"))?;
        let result = unpack(zip_bytes, &staging).and_then(|()| {
            let blob = self.root.join("blobs").join(format!("{sha256}.zip"));
            let tmp_blob = staging.with_extension("zip");
            fs::write(&tmp_blob, zip_bytes).map_err(io(&tmp_blob))?;
            fs::rename(&tmp_blob, &blob).map_err(io(&blob))?;
            match fs::rename(&staging, &tree) {
                // Another deploy of the same package won the race: same content.
                Err(_) if tree.is_dir() => Ok(()),
                other => other.map_err(io(&tree)),
            }?;
            // The deploy that stores this is acknowledged once its version is
            // committed; its code must be on disk by then too, or a power loss leaves
            // a version whose tree is empty files. One syncfs for the package, its
            // tree and their directory entries (fsync per file would be one per
            // file of, say, a node_modules tree).
            sync_filesystem(&self.root)
        });
        if staging.exists() {
            let _ = fs::remove_dir_all(&staging);
        }
        result.map(|()| stored)
    }
}

/// Puts everything written to the file system holding `dir` on disk.
fn sync_filesystem(dir: &Path) -> Result<(), CodeError> {
    let handle = fs::File::open(dir).map_err(io(dir))?;
    rustix::fs::syncfs(&handle).map_err(|e| io(dir)(e.into()))
}

fn tempdir_in(parent: &Path) -> Result<PathBuf, CodeError> {
    let dir = parent.join(format!(
        "unpack-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    Ok(dir)
}

/// A relative path of plain components only.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty() && !name.contains('\\')).then_some(out)
}

const S_IFMT: u32 = 0o170000;
const S_IFLNK: u32 = 0o120000;

fn unpack(zip_bytes: &[u8], dest: &Path) -> Result<(), CodeError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes))
        .map_err(|e| CodeError::NotAZip(e.to_string()))?;
    if archive.len() > MAX_ENTRIES {
        return Err(CodeError::TooManyEntries { limit: MAX_ENTRIES });
    }
    let mut budget = MAX_UNPACKED_BYTES;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| CodeError::NotAZip(e.to_string()))?;
        let name = entry.name().to_owned();
        let rel = safe_relative(&name).ok_or_else(|| CodeError::UnsafePath(name.clone()))?;
        let mode = entry.unix_mode();
        if mode.is_some_and(|m| m & S_IFMT == S_IFLNK) {
            return Err(CodeError::Symlink(name));
        }
        let target = dest.join(&rel);
        if entry.is_dir() {
            fs::create_dir_all(&target).map_err(io(&target))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut out = fs::File::create(&target).map_err(io(&target))?;
        // Read one byte past the budget so an archive that lies about sizes is caught.
        let mut limited = (&mut entry).take(budget + 1);
        let written = std::io::copy(&mut limited, &mut out).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => CodeError::NotAZip(e.to_string()),
            _ => CodeError::Io {
                path: target.display().to_string(),
                source: e,
            },
        })?;
        if written > budget {
            return Err(CodeError::TooLarge {
                limit: MAX_UNPACKED_BYTES,
            });
        }
        budget -= written;
        out.flush().map_err(io(&target))?;
        #[cfg(unix)]
        if let Some(m) = mode {
            use std::os::unix::fs::PermissionsExt;
            // Keep the executable bits (a `provided` bootstrap needs them); nothing else.
            let perms = fs::Permissions::from_mode(0o644 | (m & 0o111));
            fs::set_permissions(&target, perms).map_err(io(&target))?;
        }
    }
    Ok(())
}

/// Whether `tree` holds exactly what `zip_bytes` unpacks to: the same files with the
/// same bytes and executable bits, and nothing else (no extra file, no link).
fn matches_zip(zip_bytes: &[u8], tree: &Path) -> bool {
    let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)) else {
        return false;
    };
    let mut expected_files = HashSet::new();
    let mut expected_dirs = HashSet::new();
    for i in 0..archive.len() {
        let Ok(mut entry) = archive.by_index(i) else {
            return false;
        };
        let Some(rel) = safe_relative(entry.name()) else {
            return false;
        };
        for ancestor in rel.ancestors().skip(1) {
            if !ancestor.as_os_str().is_empty() {
                expected_dirs.insert(ancestor.to_path_buf());
            }
        }
        if entry.is_dir() {
            expected_dirs.insert(rel);
            continue;
        }
        let path = tree.join(&rel);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return false;
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let exec = entry.unix_mode().map_or(0, |m| m & 0o111);
            if !meta.is_file() || meta.permissions().mode() & 0o111 != exec {
                return false;
            }
        }
        if meta.len() != entry.size() {
            return false;
        }
        let mut want = Vec::new();
        if entry.read_to_end(&mut want).is_err() || fs::read(&path).ok() != Some(want) {
            return false;
        }
        expected_files.insert(rel);
    }
    // Nothing more than the package: walk the tree.
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = fs::read_dir(tree.join(&rel)) else {
            return false;
        };
        for entry in entries.flatten() {
            let child = rel.join(entry.file_name());
            match entry.file_type() {
                Ok(t) if t.is_dir() && expected_dirs.contains(&child) => stack.push(child),
                Ok(t) if t.is_file() && expected_files.contains(&child) => {}
                _ => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, body) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(body).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn unpacks_and_deduplicates_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsCodeStore::open(dir.path()).unwrap();
        let z = zip_of(&[
            ("handler.py", b"def h(e, c): return 1"),
            ("pkg/mod.py", b"x = 1"),
        ]);
        let a = store.put_zip(&z).unwrap();
        let b = store.put_zip(&z).unwrap();
        assert_eq!(a, b);
        assert!(store.tree(&a.sha256).join("pkg/mod.py").is_file());
    }

    /// Isolation issue: a tree changed after unpacking (a file edited, one added, an
    /// executable bit set) is rebuilt when a deploy reuses it, never served again.
    #[test]
    fn a_tampered_tree_is_rebuilt_before_reuse() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = FsCodeStore::open(dir.path()).unwrap();
        let z = zip_of(&[("app.py", b"print('good')"), ("pkg/mod.py", b"x = 1")]);
        let sha = store.put_zip(&z).unwrap().sha256;
        let tree = store.tree(&sha);
        type Tamper = fn(&Path);
        let tampers: [Tamper; 4] = [
            |t| fs::write(t.join("app.py"), b"print('evil')").unwrap(),
            |t| fs::write(t.join("pkg/extra.py"), b"evil").unwrap(),
            |t| fs::set_permissions(t.join("app.py"), fs::Permissions::from_mode(0o755)).unwrap(),
            |t| std::os::unix::fs::symlink("/etc/passwd", t.join("link")).unwrap(),
        ];
        for tamper in tampers {
            tamper(&tree);
            assert!(!matches_zip(&z, &tree));
            store.put_zip(&z).unwrap();
            assert!(matches_zip(&z, &tree), "not rebuilt");
            assert_eq!(fs::read(tree.join("app.py")).unwrap(), b"print('good')");
        }
    }

    #[test]
    fn refuses_zip_slip_absolute_paths_and_symlinks_writing_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsCodeStore::open(dir.path().join("code")).unwrap();
        for (name, expect) in [
            ("../evil.py", "outside"),
            ("/tmp/evil-abs.py", "outside"),
            ("a/../../evil.py", "outside"),
        ] {
            let z = zip_of(&[("ok.py", b"1"), (name, b"pwned")]);
            let err = store.put_zip(&z).unwrap_err();
            assert!(err.to_string().contains(expect), "{name}: {err}");
        }
        assert!(!dir.path().join("evil.py").exists());
        assert!(!Path::new("/tmp/evil-abs.py").exists());

        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.add_symlink("link", "/etc/passwd", SimpleFileOptions::default())
            .unwrap();
        let z = w.finish().unwrap().into_inner();
        assert!(matches!(store.put_zip(&z), Err(CodeError::Symlink(_))));

        // Nothing refused was kept.
        assert_eq!(
            fs::read_dir(dir.path().join("code/trees")).unwrap().count(),
            0
        );
        assert_eq!(
            fs::read_dir(dir.path().join("code/tmp")).unwrap().count(),
            0
        );
        assert!(matches!(
            store.put_zip(b"not a zip"),
            Err(CodeError::NotAZip(_))
        ));
    }
}
