//! Functions and rules in SQLite.

use crate::{SqliteStore, all_rows, corrupt, sql};
use async_trait::async_trait;
use lambent_core::{FunctionSpec, now_ms};
use lambent_store::{Alias, FunctionVersion, Registry, Result, Rule, StoredCode};
use rusqlite::{OptionalExtension, Row, params};

fn function_row(row: &Row<'_>) -> rusqlite::Result<(String, u64, String, u64, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn decode_function(raw: (String, u64, String, u64, i64)) -> Result<FunctionVersion> {
    let (spec, version, code_sha256, code_size, created_ms) = raw;
    Ok(FunctionVersion {
        spec: serde_json::from_str(&spec).map_err(|e| corrupt("function spec", e))?,
        version,
        code_sha256,
        code_size,
        created_ms,
    })
}

const SELECT_FUNCTION: &str =
    "SELECT spec, version, code_sha256, code_size, created_ms FROM function_versions";

#[async_trait]
impl Registry for SqliteStore {
    async fn put_function(&self, spec: FunctionSpec, code: StoredCode) -> Result<FunctionVersion> {
        self.write(move |conn| {
            let spec_json = serde_json::to_string(&spec).map_err(|e| corrupt("function spec", e))?;
            let latest: Option<u64> = conn
                .query_row(
                    "SELECT MAX(version) FROM function_versions WHERE name = ?1",
                    [&spec.name],
                    |r| r.get(0),
                )
                .map_err(sql("reading the latest version"))?;
            let version = latest.unwrap_or(0) + 1;
            let created_ms = now_ms();
            conn.execute(
                "INSERT INTO function_versions (name, version, spec, code_sha256, code_size, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![spec.name, version, spec_json, code.sha256, code.size, created_ms],
            )
            .map_err(sql("inserting a function version"))?;
            Ok(FunctionVersion {
                spec,
                version,
                code_sha256: code.sha256,
                code_size: code.size,
                created_ms,
            })
        })
        .await
    }

    async fn get_function(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<Option<FunctionVersion>> {
        let name = name.to_owned();
        self.read(move |conn| {
            let raw = match version {
                Some(v) => conn
                    .query_row(
                        &format!("{SELECT_FUNCTION} WHERE name = ?1 AND version = ?2"),
                        params![name, v],
                        function_row,
                    )
                    .optional(),
                None => conn
                    .query_row(
                        &format!("{SELECT_FUNCTION} WHERE name = ?1 ORDER BY version DESC LIMIT 1"),
                        [&name],
                        function_row,
                    )
                    .optional(),
            }
            .map_err(sql("reading a function"))?;
            raw.map(decode_function).transpose()
        })
        .await
    }

    async fn list_functions(&self) -> Result<Vec<FunctionVersion>> {
        self.read(|conn| {
            let query = format!(
                "{SELECT_FUNCTION} f WHERE version = (SELECT MAX(version) FROM function_versions g WHERE g.name = f.name) ORDER BY name"
            );
            all_rows(conn, &query, "listing functions", function_row)?
                .into_iter()
                .map(decode_function)
                .collect()
        })
        .await
    }

    async fn list_versions(&self, name: &str) -> Result<Vec<FunctionVersion>> {
        let name = name.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "{SELECT_FUNCTION} WHERE name = ?1 ORDER BY version"
                ))
                .map_err(sql("listing versions"))?;
            let rows = stmt
                .query_map([&name], function_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("listing versions"))?;
            rows.into_iter().map(decode_function).collect()
        })
        .await
    }

    async fn delete_function(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn| {
            let n = conn
                .execute("DELETE FROM function_versions WHERE name = ?1", [&name])
                .map_err(sql("deleting a function"))?;
            conn.execute("DELETE FROM aliases WHERE function = ?1", [&name])
                .map_err(sql("deleting a function's aliases"))?;
            conn.execute("DELETE FROM function_tags WHERE function = ?1", [&name])
                .map_err(sql("deleting a function's tags"))?;
            Ok(n > 0)
        })
        .await
    }

    async fn code_in_use(&self) -> Result<std::collections::HashSet<String>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT DISTINCT code_sha256 FROM function_versions")
                .map_err(sql("listing code in use"))?;
            stmt.query_map([], |r| r.get(0))
                .map_err(sql("listing code in use"))?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql("listing code in use"))
        })
        .await
    }

    async fn put_alias(&self, alias: Alias) -> Result<()> {
        self.write(move |conn| {
            let text = serde_json::to_string(&alias).map_err(|e| corrupt("alias", e))?;
            conn.execute(
                "INSERT INTO aliases (function, name, alias) VALUES (?1, ?2, ?3)
                 ON CONFLICT(function, name) DO UPDATE SET alias = excluded.alias",
                params![alias.function, alias.name, text],
            )
            .map_err(sql("storing an alias"))?;
            Ok(())
        })
        .await
    }

    async fn get_alias(&self, function: &str, name: &str) -> Result<Option<Alias>> {
        let (function, name) = (function.to_owned(), name.to_owned());
        self.read(move |conn| {
            conn.query_row(
                "SELECT alias FROM aliases WHERE function = ?1 AND name = ?2",
                params![function, name],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(sql("reading an alias"))?
            .map(|text| serde_json::from_str(&text).map_err(|e| corrupt("alias", e)))
            .transpose()
        })
        .await
    }

    async fn list_aliases(&self, function: &str) -> Result<Vec<Alias>> {
        let function = function.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare("SELECT alias FROM aliases WHERE function = ?1 ORDER BY name")
                .map_err(sql("listing aliases"))?;
            let rows = stmt
                .query_map([&function], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("listing aliases"))?;
            rows.iter()
                .map(|text| serde_json::from_str(text).map_err(|e| corrupt("alias", e)))
                .collect()
        })
        .await
    }

    async fn delete_alias(&self, function: &str, name: &str) -> Result<bool> {
        let (function, name) = (function.to_owned(), name.to_owned());
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM aliases WHERE function = ?1 AND name = ?2",
                params![function, name],
            )
            .map(|n| n > 0)
            .map_err(sql("deleting an alias"))
        })
        .await
    }

    async fn set_tags(
        &self,
        function: &str,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let function = function.to_owned();
        self.write(move |conn| {
            let text = serde_json::to_string(&tags).map_err(|e| corrupt("tags", e))?;
            conn.execute(
                "INSERT INTO function_tags (function, tags) VALUES (?1, ?2)
                 ON CONFLICT(function) DO UPDATE SET tags = excluded.tags",
                params![function, text],
            )
            .map_err(sql("storing tags"))?;
            Ok(())
        })
        .await
    }

    async fn tags(&self, function: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let function = function.to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT tags FROM function_tags WHERE function = ?1",
                [&function],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(sql("reading tags"))?
            .map(|text| serde_json::from_str(&text).map_err(|e| corrupt("tags", e)))
            .transpose()
            .map(Option::unwrap_or_default)
        })
        .await
    }

    async fn put_rule(&self, rule: Rule) -> Result<()> {
        self.write(move |conn| {
            let targets = serde_json::to_string(&rule.targets).map_err(|e| corrupt("rule targets", e))?;
            conn.execute(
                "INSERT INTO rules (name, pattern, targets) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET pattern = excluded.pattern, targets = excluded.targets",
                params![rule.name, rule.pattern.to_string(), targets],
            )
            .map_err(sql("storing a rule"))?;
            Ok(())
        })
        .await
    }

    async fn list_rules(&self) -> Result<Vec<Rule>> {
        self.read(|conn| {
            let rows = all_rows(
                conn,
                "SELECT name, pattern, targets FROM rules ORDER BY name",
                "listing rules",
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )?;
            rows.into_iter()
                .map(|(name, pattern, targets)| {
                    Ok(Rule {
                        name,
                        pattern: serde_json::from_str(&pattern)
                            .map_err(|e| corrupt("rule pattern", e))?,
                        targets: serde_json::from_str(&targets)
                            .map_err(|e| corrupt("rule targets", e))?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn delete_rule(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn| {
            let n = conn
                .execute("DELETE FROM rules WHERE name = ?1", [&name])
                .map_err(sql("deleting a rule"))?;
            Ok(n > 0)
        })
        .await
    }
}
