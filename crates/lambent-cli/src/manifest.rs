//! `lambent.toml`: an app's functions, rules, schedules, routes and key-value
//! namespaces. Unknown keys and bad values are errors naming the file, the line, the
//! key and what was expected.

use anyhow::{Result, anyhow};
use lambent_core::{RouteSpec, ScheduleSpec};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

pub const FILE: &str = "lambent.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub functions: BTreeMap<String, Spanned<FunctionEntry>>,
    #[serde(default)]
    pub rules: BTreeMap<String, Spanned<RuleEntry>>,
    #[serde(default)]
    pub schedules: BTreeMap<String, Spanned<ScheduleEntry>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSpec>>,
    #[serde(default)]
    pub kv: BTreeMap<String, Spanned<NamespaceEntry>>,
    #[serde(default)]
    pub sources: BTreeMap<String, Spanned<SourceEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    pub kind: lambent_core::source::SourceKind,
    pub url: String,
    pub subject: Option<String>,
    pub stream: Option<String>,
    pub topic: Option<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub target: Option<String>,
}

impl SourceEntry {
    pub fn spec(&self, name: &str) -> lambent_core::source::SourceSpec {
        lambent_core::source::SourceSpec {
            name: name.to_owned(),
            kind: self.kind,
            url: self.url.clone(),
            subject: self.subject.clone(),
            stream: self.stream.clone(),
            topic: self.topic.clone(),
            tables: self.tables.clone(),
            ty: self.ty.clone(),
            target: self.target.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionEntry {
    /// A directory or a zip, relative to the manifest.
    pub code: PathBuf,
    pub runtime: String,
    #[serde(default)]
    pub handler: String,
    pub memory: Option<u32>,
    /// Seconds.
    pub timeout: Option<u32>,
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub grants: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub max_attempts: Option<u32>,
    /// Seconds.
    pub max_event_age: Option<u64>,
    pub retry_delay_ms: Option<u64>,
    /// A function that gets the failure record of each event this one gives up on.
    pub on_failure: Option<String>,
    /// The function's own keep-alive policy (`fixed:10m`, `histogram`, `mdp:cost-ratio=R`).
    pub keep_alive: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    pub pattern: toml::Value,
    pub targets: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    pub cron: Option<String>,
    pub rate: Option<String>,
    pub at: Option<String>,
    pub timezone: Option<String>,
    #[serde(rename = "type")]
    pub ty: String,
    pub target: Option<String>,
    pub data: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceEntry {
    #[serde(default = "lambent_store::sources::default_put_type")]
    pub put_type: String,
    #[serde(default = "lambent_store::sources::default_delete_type")]
    pub delete_type: String,
}

/// A loaded manifest with what is needed to point at its lines.
pub struct Loaded {
    pub dir: PathBuf,
    pub path: PathBuf,
    text: String,
    pub manifest: Manifest,
}

impl Loaded {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        let loaded = Self {
            dir: dir.to_path_buf(),
            path,
            text,
            manifest,
        };
        loaded.check()?;
        Ok(loaded)
    }

    /// `FILE:LINE: [section]: message`, for an entry spanning `span`.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        section: &str,
        message: impl std::fmt::Display,
    ) -> anyhow::Error {
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        anyhow!("{}:{line}: [{section}]: {message}", self.path.display())
    }

    /// What can be checked without a node: names, timers, routes, targets, code paths.
    fn check(&self) -> Result<()> {
        let m = &self.manifest;
        for (name, f) in &m.functions {
            let section = format!("functions.{name}");
            lambent_core::function::validate_name(name)
                .map_err(|e| self.error_at(f.span(), &section, e))?;
            lambent_core::RuntimeKind::parse(&f.get_ref().runtime)
                .map_err(|e| self.error_at(f.span(), &section, format!("runtime: {e}")))?;
            let code = self.dir.join(&f.get_ref().code);
            if !code.exists() {
                return Err(self.error_at(
                    f.span(),
                    &section,
                    format!(
                        "code: {} does not exist (paths are relative to {FILE})",
                        code.display()
                    ),
                ));
            }
        }
        for (name, r) in &m.rules {
            let section = format!("rules.{name}");
            let pattern = serde_json::to_value(&r.get_ref().pattern)?;
            lambent_core::Pattern::compile(&pattern)
                .map_err(|e| self.error_at(r.span(), &section, format!("pattern: {e}")))?;
            if r.get_ref().targets.is_empty() {
                return Err(self.error_at(
                    r.span(),
                    &section,
                    "targets: at least one function is needed",
                ));
            }
        }
        for (name, s) in &m.schedules {
            let section = format!("schedules.{name}");
            self.schedule(name, s.get_ref())?
                .timer()
                .map_err(|e| self.error_at(s.span(), &section, e))?;
        }
        for (i, r) in m.routes.iter().enumerate() {
            let section = format!("routes[{i}]");
            r.get_ref()
                .clone()
                .validate()
                .map_err(|e| self.error_at(r.span(), &section, e))?;
        }
        for (name, src) in &m.sources {
            src.get_ref()
                .spec(name)
                .validate()
                .map_err(|e| self.error_at(src.span(), &format!("sources.{name}"), e.problem))?;
        }
        // Targets may be functions already on the node: the node checks them.
        Ok(())
    }

    pub fn schedule(&self, name: &str, entry: &ScheduleEntry) -> Result<ScheduleSpec> {
        Ok(ScheduleSpec {
            name: name.to_owned(),
            cron: entry.cron.clone(),
            rate: entry.rate.clone(),
            at: entry.at.clone(),
            timezone: entry.timezone.clone(),
            ty: entry.ty.clone(),
            target: entry.target.clone(),
            data: entry.data.as_ref().map(serde_json::to_value).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(text: &str) -> Result<Loaded> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join(FILE), text).unwrap();
        Loaded::load(dir.path())
    }

    #[test]
    fn errors_name_file_line_key_and_what_was_expected() {
        let unknown =
            load("[functions.f]\ncode = \"src\"\nruntime = \"python3.12\"\nmemroy = 128\n")
                .err()
                .unwrap()
                .to_string();
        assert!(unknown.contains("lambent.toml"), "{unknown}");
        assert!(unknown.contains("line 4"), "{unknown}");
        assert!(unknown.contains("memroy"), "{unknown}");
        assert!(unknown.contains("expected one of"), "{unknown}");

        let bad_type =
            load("[functions.f]\ncode = \"src\"\nruntime = \"python3.12\"\nmemory = \"lots\"\n")
                .err()
                .unwrap()
                .to_string();
        assert!(
            bad_type.contains("line 4") && bad_type.contains("memory"),
            "{bad_type}"
        );

        let bad_cron = load(
            "[functions.f]\ncode = \"src\"\nruntime = \"python3.12\"\n\n[schedules.tick]\ncron = \"61 * * * *\"\ntype = \"t\"\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            bad_cron.contains("lambent.toml:5: [schedules.tick]"),
            "{bad_cron}"
        );
        assert!(bad_cron.contains("cron"), "{bad_cron}");

        let missing_code = load("[functions.f]\ncode = \"nowhere\"\nruntime = \"python3.12\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            missing_code.contains(":1: [functions.f]: code:"),
            "{missing_code}"
        );

        let bad_route = load("[[routes]]\nmethod = \"FETCH\"\npath = \"/a\"\ntarget = \"f\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            bad_route.contains(":1: [routes[0]]") && bad_route.contains("FETCH"),
            "{bad_route}"
        );
    }
}
