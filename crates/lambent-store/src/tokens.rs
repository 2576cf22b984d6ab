//! API tokens: what a bearer may do. Only a token's hash is stored; the token itself
//! is shown once, when it is made.

use crate::Result;
use async_trait::async_trait;
use lambent_core::EpochMs;
use serde::{Deserialize, Serialize};

/// What a token lets its bearer do. `Admin` includes every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Everything, tokens included.
    Admin,
    /// Publish events.
    Publish,
    /// Invoke functions.
    Invoke,
    /// Read anything (functions, rules, events, invocations, dead letters, status).
    Read,
}

impl TokenScope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "publish" => Some(Self::Publish),
            "invoke" => Some(Self::Invoke),
            "read" => Some(Self::Read),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Publish => "publish",
            Self::Invoke => "invoke",
            Self::Read => "read",
        }
    }

    /// Whether a token of this scope may do what `needed` allows.
    pub fn allows(self, needed: TokenScope) -> bool {
        self == Self::Admin || self == needed
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub scope: TokenScope,
    pub created_ms: EpochMs,
    /// Set once revoked; a revoked token is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<EpochMs>,
}

#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a token by the hash of its secret.
    async fn put_token(&self, token: TokenRecord, hash: String) -> Result<()>;
    /// The token whose secret hashes to `hash`, revoked or not.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Every token ever made, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Marks a token revoked; false when there is no such token or it was already.
    async fn revoke_token(&self, id: &str, at_ms: EpochMs) -> Result<bool>;
}
