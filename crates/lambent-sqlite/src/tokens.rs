//! API tokens in SQLite (hashes only).

use crate::{SqliteStore, all_rows, sql};
use async_trait::async_trait;
use lambent_core::EpochMs;
use lambent_store::{Result, StoreError, TokenRecord, TokenScope, TokenStore};
use rusqlite::{OptionalExtension, Row, params};

const SELECT: &str = "SELECT id, name, scope, created_ms, revoked_ms FROM tokens";

fn token_row(row: &Row<'_>) -> rusqlite::Result<(String, String, String, i64, Option<i64>)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn decode(raw: (String, String, String, i64, Option<i64>)) -> Result<TokenRecord> {
    let (id, name, scope, created_ms, revoked_ms) = raw;
    let scope = TokenScope::parse(&scope).ok_or_else(|| StoreError::Corrupt {
        what: "token scope",
        detail: format!("token {id} has unknown scope `{scope}`"),
    })?;
    Ok(TokenRecord {
        id,
        name,
        scope,
        created_ms,
        revoked_ms,
    })
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn put_token(&self, token: TokenRecord, hash: String) -> Result<()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO tokens (id, name, scope, hash, created_ms, revoked_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    token.id,
                    token.name,
                    token.scope.as_str(),
                    hash,
                    token.created_ms,
                    token.revoked_ms
                ],
            )
            .map_err(sql("inserting a token"))?;
            Ok(())
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let hash = hash.to_owned();
        self.read(move |conn| {
            conn.query_row(&format!("{SELECT} WHERE hash = ?1"), [hash], token_row)
                .optional()
                .map_err(sql("reading a token"))?
                .map(decode)
                .transpose()
        })
        .await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(move |conn| {
            let query = format!("{SELECT} ORDER BY created_ms, id");
            all_rows(conn, &query, "listing tokens", token_row)?
                .into_iter()
                .map(decode)
                .collect()
        })
        .await
    }

    async fn revoke_token(&self, id: &str, at_ms: EpochMs) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                    params![id, at_ms],
                )
                .map_err(sql("revoking a token"))?;
            Ok(n == 1)
        })
        .await
    }
}
