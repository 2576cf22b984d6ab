//! What the keep-alive policies learned, kept across restarts: saved when it changed
//! (by the reaper, at most once a minute by default, and when the node drains) and handed back
//! to each function's policy when the node starts.

use crate::{Engine, Inner};
use lambent_scale::Learned;
use std::time::Duration;

/// How often what the policies learned is saved while the node runs, by default
/// (`EngineConfig::learned_save_interval`; a node killed outright loses at most this
/// much learning).
pub(crate) const SAVE_INTERVAL: Duration = Duration::from_secs(60);

impl Inner {
    /// Saves what each policy learned since the last save; a store error is logged
    /// (the next save writes the whole state again).
    pub(crate) async fn save_learned(&self) {
        let changes: Vec<(String, String)> = self
            .pool
            .learned_changes()
            .into_iter()
            .filter_map(|(function, learned)| match serde_json::to_string(&learned) {
                Ok(text) => Some((function, text)),
                Err(e) => {
                    tracing::warn!(%function, error = %e, "could not serialize what its keep-alive policy learned");
                    None
                }
            })
            .collect();
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.stores.learned.put_learned(changes).await {
            tracing::warn!(error = %e, "could not save what the keep-alive policies learned");
        }
    }
}

impl Engine {
    /// Hands each function's policy what it learned before the node stopped. What
    /// cannot be read, or belongs to a deleted function, is dropped with a warning;
    /// a policy of another kind than the one that learned it starts afresh.
    pub(crate) async fn restore_learned(&self) -> crate::Result<()> {
        for (function, text) in self.inner.stores.learned.list_learned().await? {
            let spec = match self.inner.latest_function(&function).await? {
                Some(f) => f.spec,
                None => {
                    self.inner.stores.learned.delete_learned(&function).await?;
                    continue;
                }
            };
            match serde_json::from_str::<Learned>(&text) {
                Ok(learned) => {
                    if !self.inner.pool.relearn(&spec, &learned) {
                        tracing::info!(%function, kind = %learned.kind, "its keep-alive policy changed kind: it learns afresh");
                    }
                }
                Err(e) => {
                    tracing::warn!(%function, error = %e, "what its keep-alive policy learned cannot be read: it learns afresh");
                }
            }
        }
        Ok(())
    }
}
