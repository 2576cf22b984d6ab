//! Keep-alive policies: when an idle instance is dropped. One trait, so the
//! histogram and MDP policies of DESIGN §5 plug in beside `fixed`.

use std::time::Duration;

/// Decides how long idle instances of a function stay warm.
pub trait KeepAlivePolicy: Send + Sync {
    /// A short name for status output (`fixed:10m`).
    fn name(&self) -> String;
    /// Told of every invocation start, so adaptive policies can learn idle times.
    fn on_invocation(&self, _function: &str) {}
    /// How long an instance of `function` that has been idle may stay warm.
    fn keep_alive(&self, function: &str) -> Duration;
}

/// Keep every idle instance for the same time (AWS keeps about 10 minutes).
#[derive(Debug, Clone, Copy)]
pub struct Fixed(pub Duration);

impl KeepAlivePolicy for Fixed {
    fn name(&self) -> String {
        format!("fixed:{}s", self.0.as_secs())
    }

    fn keep_alive(&self, _function: &str) -> Duration {
        self.0
    }
}
