//! Aliases: a name for a version of a function, optionally routing a share of the
//! calls to a second version (a weighted alias, for canary releases).

use crate::Engine;
use crate::error::{EngineError, Result, not_found};
use lambent_store::Alias;

/// A request to create or change an alias.
#[derive(Debug, Clone)]
pub struct AliasRequest {
    pub function: String,
    pub name: String,
    /// The version (required to create; absent keeps the current one).
    pub version: Option<u64>,
    pub description: Option<String>,
    /// `Some(None)` removes a second version; `None` keeps what is there.
    pub additional: Option<Option<(u64, f64)>>,
}

/// Lambda's alias names: letters, digits, `-` and `_`, not all digits (that is a version).
fn valid_alias_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit())
}

impl Engine {
    async fn version_exists(&self, function: &str, version: u64) -> Result<()> {
        self.inner
            .stores
            .registry
            .get_function(function, Some(version))
            .await?
            .map(|_| ())
            .ok_or_else(|| not_found("function version", format!("{function}:{version}")))
    }

    /// Creates an alias (`create`) or changes one; versions must exist, weights lie
    /// strictly between 0 and 1, and the second version differs from the first.
    pub async fn put_alias(&self, request: AliasRequest, create: bool) -> Result<Alias> {
        self.function(&request.function).await?;
        if !valid_alias_name(&request.name) {
            return Err(EngineError::Invalid(format!(
                "invalid alias name `{}`: 1-128 of A-Z a-z 0-9 - _, not all digits",
                request.name
            )));
        }
        let existing = self
            .inner
            .stores
            .registry
            .get_alias(&request.function, &request.name)
            .await?;
        let current = match (existing, create) {
            (Some(_), true) => {
                return Err(EngineError::Conflict(format!(
                    "alias `{}` of function `{}` already exists",
                    request.name, request.function
                )));
            }
            (None, false) => {
                return Err(not_found(
                    "alias",
                    format!("{}:{}", request.function, request.name),
                ));
            }
            (current, _) => current,
        };
        let version = request
            .version
            .or(current.as_ref().map(|a| a.version))
            .ok_or_else(|| EngineError::Invalid("an alias needs a function version".into()))?;
        let additional = match request.additional {
            Some(a) => a,
            None => current.as_ref().and_then(|a| a.additional),
        };
        self.version_exists(&request.function, version).await?;
        if let Some((extra, weight)) = additional {
            if extra == version {
                return Err(EngineError::Invalid(format!(
                    "the alias's second version must differ from its version ({version})"
                )));
            }
            if !(weight > 0.0 && weight < 1.0) {
                return Err(EngineError::Invalid(format!(
                    "the weight of version {extra} must be between 0 and 1, got {weight}"
                )));
            }
            self.version_exists(&request.function, extra).await?;
        }
        let alias = Alias {
            function: request.function,
            name: request.name,
            version,
            description: request
                .description
                .or(current.map(|a| a.description))
                .unwrap_or_default(),
            additional,
        };
        self.inner.stores.registry.put_alias(alias.clone()).await?;
        Ok(alias)
    }

    pub async fn alias(&self, function: &str, name: &str) -> Result<Alias> {
        self.inner
            .stores
            .registry
            .get_alias(function, name)
            .await?
            .ok_or_else(|| not_found("alias", format!("{function}:{name}")))
    }

    pub async fn aliases(&self, function: &str) -> Result<Vec<Alias>> {
        self.function(function).await?;
        Ok(self.inner.stores.registry.list_aliases(function).await?)
    }

    pub async fn delete_alias(&self, function: &str, name: &str) -> Result<()> {
        if !self
            .inner
            .stores
            .registry
            .delete_alias(function, name)
            .await?
        {
            return Err(not_found("alias", format!("{function}:{name}")));
        }
        Ok(())
    }

    /// The version a call through the alias runs: its second version with its weight's
    /// probability, else its version.
    pub async fn route_alias(&self, function: &str, name: &str) -> Result<u64> {
        let alias = self.alias(function, name).await?;
        Ok(match alias.additional {
            Some((extra, weight)) if rand::random::<f64>() < weight => extra,
            _ => alias.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::valid_alias_name;

    #[test]
    fn alias_names_are_not_versions() {
        assert!(valid_alias_name("prod"));
        assert!(valid_alias_name("v2-canary_1"));
        assert!(!valid_alias_name("12"));
        assert!(!valid_alias_name(""));
        assert!(!valid_alias_name("a:b"));
    }
}
