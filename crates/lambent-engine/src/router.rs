//! The router: rules (listener registrations) compiled once, matched against each event.

use lambent_core::{CloudEvent, Pattern};
use lambent_store::{PayloadMode, Rule, Target};
use std::sync::{Arc, RwLock};

/// A rule with its compiled pattern.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub rule: Rule,
    pub pattern: Pattern,
}

/// The current rule set; swapped whole when rules change so routing never blocks on it.
#[derive(Debug, Default)]
pub struct Router {
    rules: RwLock<Arc<Vec<CompiledRule>>>,
}

impl Router {
    pub fn replace(&self, rules: Vec<CompiledRule>) {
        if let Ok(mut slot) = self.rules.write() {
            *slot = Arc::new(rules);
        }
    }

    fn snapshot(&self) -> Arc<Vec<CompiledRule>> {
        self.rules.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// Every function an event goes to: the targets of every matching rule, each once.
    pub fn route(&self, event: &CloudEvent) -> Vec<Target> {
        let mut targets: Vec<Target> = Vec::new();
        for compiled in self.snapshot().iter() {
            if !compiled.pattern.matches_event(event) {
                continue;
            }
            for function in &compiled.rule.targets {
                if !targets.iter().any(|t| &t.function == function) {
                    targets.push(Target {
                        function: function.clone(),
                        mode: PayloadMode::CloudEvent,
                    });
                }
            }
        }
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(name: &str, pattern: serde_json::Value, targets: &[&str]) -> CompiledRule {
        CompiledRule {
            pattern: Pattern::compile(&pattern).unwrap(),
            rule: Rule {
                name: name.into(),
                pattern,
                targets: targets.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    #[test]
    fn fans_out_to_every_matching_rule_once_per_function() {
        let router = Router::default();
        router.replace(vec![
            rule("a", json!({"type": ["user_action"]}), &["f", "g"]),
            rule("b", json!({"type": [{"prefix": "user"}]}), &["g", "h"]),
            rule("c", json!({"type": ["data_update"]}), &["x"]),
        ]);
        let e = CloudEvent::builder("1", "/s", "user_action")
            .build()
            .unwrap();
        let got: Vec<_> = router.route(&e).into_iter().map(|t| t.function).collect();
        assert_eq!(got, ["f", "g", "h"]);
        let e = CloudEvent::builder("2", "/s", "other").build().unwrap();
        assert!(router.route(&e).is_empty());
    }
}
