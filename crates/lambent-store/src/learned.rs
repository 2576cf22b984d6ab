//! What the keep-alive policies learned of each function (its idle times), kept
//! across restarts so a restarted node schedules as the stopped one did instead of
//! learning every function again from nothing.

use crate::Result;
use async_trait::async_trait;

#[async_trait]
pub trait LearnedStore: Send + Sync {
    /// Replaces what is kept for each function named, in one write, skipping any the
    /// registry no longer holds (a save racing a delete must not bring its entry
    /// back). The text is the engine's (its policies' serialized state); the store
    /// does not read it.
    async fn put_learned(&self, learned: Vec<(String, String)>) -> Result<()>;
    /// Everything kept, as (function, text), in function order.
    async fn list_learned(&self) -> Result<Vec<(String, String)>>;
    /// Forgets a function's (it was deleted); false when nothing was kept.
    async fn delete_learned(&self, function: &str) -> Result<bool>;
}
