//! Packaging code for upload: a directory becomes a zip; a zip is sent as it is; a
//! WebAssembly component (`.wasm`) is zipped alone.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::Path;
use zip::write::SimpleFileOptions;

pub fn read_code(path: &Path) -> Result<Vec<u8>> {
    if path.is_dir() {
        return zip_dir(path);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if path.extension().is_some_and(|x| x == "wasm") {
        return zip_one(path, &bytes);
    }
    if !bytes.starts_with(b"PK") {
        bail!(
            "{} is neither a directory, a zip archive nor a .wasm component",
            path.display()
        );
    }
    Ok(bytes)
}

fn zip_one(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("function.wasm");
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer.start_file(name, SimpleFileOptions::default())?;
    writer.write_all(bytes)?;
    Ok(writer.finish()?.into_inner())
}

fn zip_dir(root: &Path) -> Result<Vec<u8>> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut stack = vec![root.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name == "__pycache__" || name == ".git" || name == "node_modules/.cache" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&path)?.permissions().mode() & 0o777
        };
        #[cfg(not(unix))]
        let mode = 0o644;
        let options = SimpleFileOptions::default().unix_permissions(mode);
        writer.start_file(rel, options)?;
        writer.write_all(
            &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        )?;
    }
    Ok(writer.finish()?.into_inner())
}
