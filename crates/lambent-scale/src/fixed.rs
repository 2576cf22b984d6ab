//! `fixed:DURATION`: every idle instance is kept the same time.

use crate::policy::format_duration_ms;
use crate::{FunctionPolicy, KeepAlivePolicy, Profile, Schedule};

/// Keep every idle instance for the same time (AWS keeps about 10 minutes, Azure 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    keep_ms: u64,
}

impl Fixed {
    pub fn new(keep_ms: u64) -> Self {
        Self { keep_ms }
    }
}

impl KeepAlivePolicy for Fixed {
    fn name(&self) -> String {
        format!("fixed:{}", format_duration_ms(self.keep_ms))
    }

    fn for_function(&self, _profile: Profile) -> Box<dyn FunctionPolicy> {
        Box::new(*self)
    }
}

impl FunctionPolicy for Fixed {
    fn observe_idle(&mut self, _idle_ms: u64) {}

    fn schedule(&mut self) -> Schedule {
        Schedule::keep_for(self.keep_ms)
    }
}
