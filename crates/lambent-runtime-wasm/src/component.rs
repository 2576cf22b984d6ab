//! A function's component, compiled and checked: which world it serves, what it
//! imports (each import needs its grant), and an `InstancePre` so that starting it
//! is an instantiation. Compiled code is cached on disk, keyed by the wasmtime
//! build and the component's bytes.

use crate::WasmError;
use crate::handler::FunctionPre;
use crate::state::State;
use lambent_core::FunctionSpec;
use lambent_core::grant::{Grant, parse_any};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// The world a component serves.
pub enum World {
    /// `lambent:function`: events in, a result out.
    Handler(FunctionPre<State>),
    /// `wasi:http/proxy`: HTTP requests.
    Proxy(ProxyPre<State>),
}

pub struct Prepared {
    pub world: World,
    /// The interfaces the component imports (`wasi:http/outgoing-handler@0.2.6`, ...).
    pub imports: Vec<String>,
    /// The name of its compiled code in the cache (kept while it is prepared).
    pub cache_key: String,
}

/// A compiled component and the name of its compiled code in the cache.
pub struct Compiled {
    pub component: Component,
    pub cache_key: String,
}

/// The component file in a code tree: the one named by `--handler`, or the only
/// `.wasm` at its top.
pub fn find(spec: &FunctionSpec, code_dir: &Path) -> Result<PathBuf, WasmError> {
    let invalid = |detail: String| WasmError::Code {
        function: spec.name.clone(),
        detail,
    };
    if spec.handler.ends_with(".wasm") {
        let path = code_dir.join(&spec.handler);
        return match path.is_file() && !spec.handler.contains("..") {
            true => Ok(path),
            false => Err(invalid(format!(
                "its handler `{}` is not a file in the code",
                spec.handler
            ))),
        };
    }
    let entries =
        std::fs::read_dir(code_dir).map_err(|e| invalid(format!("cannot read its code: {e}")))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(invalid(
            "its code holds no .wasm file (a WebAssembly component)".into(),
        )),
        _ => Err(invalid(format!(
            "its code holds {} .wasm files: name one with --handler FILE.wasm",
            found.len()
        ))),
    }
}

/// Compiles `wasm` (or loads its compiled code from `cache_dir`, marking it used:
/// [`collect_cache`] drops what was not used for a while).
pub fn compile(
    engine: &Engine,
    cache_dir: &Path,
    function: &str,
    wasm: &Path,
) -> Result<Compiled, WasmError> {
    let invalid = |detail: String| WasmError::Code {
        function: function.to_owned(),
        detail,
    };
    let bytes =
        std::fs::read(wasm).map_err(|e| invalid(format!("cannot read {}: {e}", wasm.display())))?;
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let key = hex::encode(
        Sha256::new()
            .chain_update(&bytes)
            .chain_update(engine_hash.finish().to_le_bytes())
            .finalize(),
    );
    let cached = cache_dir.join(format!("{key}.cwasm"));
    if cached.is_file() {
        // SAFETY: the file is one this node wrote with `Component::serialize` from an
        // engine with the same compatibility hash (part of its name), into its own
        // data directory, which functions cannot write to, and synced before it was
        // given this name (a power loss cannot leave it partly written); wasmtime
        // checks the header's version and settings again and refuses a mismatch.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => {
                mark_used(&cached);
                return Ok(Compiled {
                    component,
                    cache_key: key,
                });
            }
            Err(e) => {
                tracing::warn!(file = %cached.display(), error = %e, "wasm: stale compiled code; compiling again")
            }
        }
    }
    if wasmparser_is_core_module(&bytes) {
        return Err(invalid(
            "its .wasm is a core module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)".into(),
        ));
    }
    let component = Component::new(engine, &bytes)
        .map_err(|e| invalid(format!("its .wasm is not a valid component: {e:#}")))?;
    match component.serialize() {
        Ok(compiled) => {
            // Unique per compile: two deploys of the same code compile at once, and a
            // shared name let one truncate the file the other was about to rename.
            static COMPILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COMPILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = cache_dir.join(format!("{key}.tmp-{}-{n}", std::process::id()));
            // Synced before it takes its name: the name is what `deserialize_file`
            // trusts (above), so after a power loss it must not stand for a file
            // whose blocks never reached the disk.
            let written = std::fs::create_dir_all(cache_dir)
                .and_then(|()| std::fs::File::create(&tmp))
                .and_then(|mut file| {
                    std::io::Write::write_all(&mut file, &compiled)?;
                    file.sync_all()
                })
                .and_then(|()| std::fs::rename(&tmp, &cached));
            if let Err(e) = written {
                tracing::warn!(error = %e, "wasm: cannot cache compiled code");
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Err(e) => tracing::warn!(error = %e, "wasm: cannot serialize compiled code"),
    }
    Ok(Compiled {
        component,
        cache_key: key,
    })
}

/// Sets a cached file's modification time to now: the time it was last used.
fn mark_used(path: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(file = %path.display(), error = %e, "wasm: cannot mark compiled code used");
    }
}

/// Removes compiled code (and leftovers of interrupted writes) from `cache_dir`
/// that was not used for `unused_for` and is not among `in_use` (the keys of what
/// is prepared now): code of deleted versions, and code compiled by another
/// wasmtime, which is never loaded again. Returns how many files it removed.
pub fn collect_cache(
    cache_dir: &Path,
    in_use: &std::collections::HashSet<String>,
    unused_for: std::time::Duration,
) -> usize {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let key = match name.split_once('.') {
            Some((key, "cwasm")) => key,
            Some((key, rest)) if rest.starts_with("tmp-") => key,
            _ => continue,
        };
        if in_use.contains(key) && name.ends_with(".cwasm") {
            continue;
        }
        let idle = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok());
        if idle.is_some_and(|idle| idle >= unused_for) && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// A core module starts with the version word 1; a component with another.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// Sorts a compiled component into its world and pre-instantiates it.
pub fn prepare(
    engine: &Engine,
    linker: &Linker<State>,
    function: &str,
    compiled: &Compiled,
) -> Result<Prepared, WasmError> {
    let component = &compiled.component;
    let invalid = |detail: String| WasmError::Code {
        function: function.to_owned(),
        detail,
    };
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| invalid(format!("it imports what Lambent does not provide: {e:#}")))?;
    let world = if exports
        .iter()
        .any(|e| e.starts_with("lambent:function/handler@"))
    {
        World::Handler(FunctionPre::new(pre).map_err(|e| {
            invalid(format!(
                "its lambent:function/handler export does not match Lambent's: {e:#}"
            ))
        })?)
    } else if exports
        .iter()
        .any(|e| e.starts_with("wasi:http/incoming-handler@"))
    {
        World::Proxy(ProxyPre::new(pre).map_err(|e| {
            invalid(format!(
                "its wasi:http/incoming-handler export does not match: {e:#}"
            ))
        })?)
    } else {
        return Err(invalid(format!(
            "it exports neither lambent:function/handler nor wasi:http/incoming-handler (it exports: {})",
            exports.join(", ")
        )));
    };
    Ok(Prepared {
        world,
        imports,
        cache_key: compiled.cache_key.clone(),
    })
}

/// Checks that every capability-bearing import has its grant.
pub fn check_grants(spec: &FunctionSpec, imports: &[String]) -> Result<(), WasmError> {
    let grants: Vec<Grant> = spec
        .grants
        .iter()
        .filter_map(|g| parse_any(g).ok())
        .collect();
    for import in imports {
        let (needs, has) = if import.starts_with("lambent:function/kv@") {
            (
                "kv:NAMESPACE",
                grants.iter().any(|g| matches!(g, Grant::Kv(_))),
            )
        } else if import.starts_with("lambent:function/events@") {
            (
                "publish:TYPE",
                grants.iter().any(|g| matches!(g, Grant::Publish(_))),
            )
        } else if import.starts_with("wasi:http/outgoing-handler@") {
            (
                "net:HOST (or net)",
                grants.iter().any(|g| matches!(g, Grant::Net(_))),
            )
        } else {
            continue;
        };
        if !has {
            return Err(WasmError::Ungranted {
                function: spec.name.clone(),
                import: import.clone(),
                grant: needs,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::{Duration, SystemTime};

    const DAY: Duration = Duration::from_secs(86_400);

    fn written(path: &Path, age: Duration) {
        std::fs::write(path, b"x").unwrap_or_else(|e| panic!("{e}"));
        set_age(path, age);
    }

    fn set_age(path: &Path, age: Duration) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(SystemTime::now() - age))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Compiled code unused for the period goes, as do leftovers of interrupted
    /// writes; what a prepared component uses, what was used recently and other
    /// files stay.
    #[test]
    fn compiled_code_not_used_for_the_period_is_removed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let at = |name: &str| dir.path().join(name);
        written(&at("old.cwasm"), 2 * DAY);
        written(&at("prepared.cwasm"), 2 * DAY);
        written(&at("recent.cwasm"), Duration::ZERO);
        written(&at("old.tmp-42"), 2 * DAY);
        written(&at("notes.txt"), 2 * DAY);
        let in_use = HashSet::from(["prepared".to_owned()]);
        assert_eq!(collect_cache(dir.path(), &in_use, DAY), 2);
        assert_eq!(
            names(dir.path()),
            ["notes.txt", "prepared.cwasm", "recent.cwasm"]
        );
    }

    /// Loading compiled code from the cache counts as a use: code loaded at each
    /// start of the node is not collected however old its file is.
    #[test]
    fn loading_compiled_code_marks_it_used() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // An empty component: the magic number and the component layer's version.
        let wasm = dir.path().join("empty.wasm");
        std::fs::write(&wasm, b"\0asm\x0d\0\x01\0").unwrap_or_else(|e| panic!("{e}"));
        let engine = Engine::default();
        let cache = dir.path().join("cache");
        let first = compile(&engine, &cache, "f", &wasm).unwrap_or_else(|e| panic!("{e}"));
        let file = cache.join(format!("{}.cwasm", first.cache_key));
        set_age(&file, 2 * DAY);
        let again = compile(&engine, &cache, "f", &wasm).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.cache_key, first.cache_key);
        assert_eq!(collect_cache(&cache, &HashSet::new(), DAY), 0);
        assert!(file.is_file());
    }
}
