//! What the keep-alive policies learned, per function (`learned` table).

use crate::{SqliteStore, all_rows, sql};
use async_trait::async_trait;
use lambent_store::{LearnedStore, Result};
use rusqlite::params;

#[async_trait]
impl LearnedStore for SqliteStore {
    async fn put_learned(&self, learned: Vec<(String, String)>) -> Result<()> {
        let now = self.now();
        self.write(move |conn| {
            let mut put = conn
                .prepare_cached(
                    // Only for a function the registry still holds: a save that
                    // raced the function's delete must not write its entry back.
                    "INSERT INTO learned (function, state, updated_ms)
                     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM function_versions WHERE name = ?1)
                     ON CONFLICT(function) DO UPDATE
                     SET state = excluded.state, updated_ms = excluded.updated_ms",
                )
                .map_err(sql("storing what a policy learned"))?;
            for (function, state) in &learned {
                put.execute(params![function, state, now])
                    .map_err(sql("storing what a policy learned"))?;
            }
            Ok(())
        })
        .await
    }

    async fn list_learned(&self) -> Result<Vec<(String, String)>> {
        self.read(|conn| {
            all_rows(
                conn,
                "SELECT function, state FROM learned ORDER BY function",
                "listing what the policies learned",
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    async fn delete_learned(&self, function: &str) -> Result<bool> {
        let function = function.to_owned();
        self.write(move |conn| {
            conn.execute("DELETE FROM learned WHERE function = ?1", [function])
                .map(|n| n > 0)
                .map_err(sql("forgetting what a policy learned"))
        })
        .await
    }
}
