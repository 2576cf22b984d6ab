//! API tokens: made (shown once, stored hashed), listed, revoked, and checked for
//! every request when the node requires them.

use crate::error::{EngineError, Result};
use crate::{Engine, Inner};
use lambent_core::now_ms;
use lambent_store::{TokenRecord, TokenScope};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Why a request's token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this node requires an API token: send `Authorization: Bearer TOKEN` (the CLI sends LAMBENT_TOKEN)"
    )]
    Missing,
    #[error("the API token is not valid (unknown or revoked)")]
    Invalid,
    #[error(
        "token `{id}` has scope `{scope}`, which does not allow this request (it needs `{needed}`)"
    )]
    OutOfScope {
        id: String,
        scope: &'static str,
        needed: &'static str,
    },
}

/// Tokens checked recently, by hash. Revocation clears it, and a lookup that raced a
/// revocation is not cached (the generation moved), so a revoked token stops working
/// at once.
#[derive(Default)]
pub(crate) struct TokenCache {
    generation: u64,
    live: HashMap<String, TokenRecord>,
}

/// Cached tokens at most; a node has a handful.
const CACHE_MAX: usize = 1024;

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Inner {
    async fn lookup(&self, secret: &str) -> Result<Option<TokenRecord>> {
        let hashed = hash(secret);
        let generation = {
            let cache = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = cache.live.get(&hashed) {
                return Ok(Some(t.clone()));
            }
            cache.generation
        };
        let found = self.stores.tokens.token_by_hash(&hashed).await?;
        if let Some(t) = &found
            && t.revoked_ms.is_none()
        {
            let mut cache = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if cache.generation == generation && cache.live.len() < CACHE_MAX {
                cache.live.insert(hashed, t.clone());
            }
        }
        Ok(found)
    }
}

impl Engine {
    /// Makes a token; returns its record and its secret (shown once, never stored).
    pub async fn create_token(
        &self,
        name: &str,
        scope: TokenScope,
    ) -> Result<(TokenRecord, String)> {
        if name.len() > 128 || name.chars().any(char::is_control) {
            return Err(EngineError::Invalid(
                "a token name is at most 128 printable characters".into(),
            ));
        }
        let record = TokenRecord {
            id: format!("tok_{}", random_hex(6)),
            name: name.to_owned(),
            scope,
            created_ms: now_ms(),
            revoked_ms: None,
        };
        let secret = format!("lam_{}", random_hex(32));
        self.inner
            .stores
            .tokens
            .put_token(record.clone(), hash(&secret))
            .await?;
        Ok((record, secret))
    }

    /// At a node's first start (no token was ever made): an admin token, to print once.
    pub async fn first_admin_token(&self) -> Result<Option<String>> {
        if !self.inner.stores.tokens.list_tokens().await?.is_empty() {
            return Ok(None);
        }
        let (_, secret) = self
            .create_token("admin (first start)", TokenScope::Admin)
            .await?;
        Ok(Some(secret))
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        Ok(self.inner.stores.tokens.list_tokens().await?)
    }

    /// Revokes a token; it stops working at once.
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        {
            let mut cache = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
            cache.generation += 1;
            cache.live.clear();
        }
        let revoked = self.inner.stores.tokens.revoke_token(id, now_ms()).await?;
        {
            // Again after the write: a lookup that read the row before it must not
            // have cached it.
            let mut cache = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
            cache.generation += 1;
            cache.live.clear();
        }
        if revoked {
            Ok(())
        } else {
            Err(crate::error::not_found("live token", id))
        }
    }

    /// Whether the bearer of `secret` may make a request that needs `needed`.
    pub async fn authorize(
        &self,
        secret: Option<&str>,
        needed: TokenScope,
    ) -> Result<std::result::Result<(), AuthError>> {
        let Some(secret) = secret else {
            return Ok(Err(AuthError::Missing));
        };
        let Some(token) = self.inner.lookup(secret).await? else {
            return Ok(Err(AuthError::Invalid));
        };
        if token.revoked_ms.is_some() {
            return Ok(Err(AuthError::Invalid));
        }
        if !token.scope.allows(needed) {
            return Ok(Err(AuthError::OutOfScope {
                id: token.id,
                scope: token.scope.as_str(),
                needed: needed.as_str(),
            }));
        }
        Ok(Ok(()))
    }
}
