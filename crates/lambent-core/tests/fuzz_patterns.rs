//! Fuzzing (bounded, run by the test command): event patterns of any shape compile or
//! are refused with an error, and matching any event never panics; a few properties
//! pin what matching means.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lambent_core::Pattern;
use proptest::prelude::*;
use serde_json::{Value, json};

const WORDS: &str = "[a-z]{0,2}|prefix|suffix|anything-but|numeric|exists|equals-ignore-case|wildcard|cidr|source|type|data|\\*";

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        WORDS.prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(WORDS, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn any_pattern_compiles_or_is_refused_and_matching_never_panics(
        pattern in json_value(),
        event in json_value(),
    ) {
        if let Ok(p) = Pattern::compile(&pattern) {
            let _ = p.matches(&event);
        }
    }

    #[test]
    fn an_exact_value_pattern_matches_exactly_that_value(ty in "[ -~]{0,20}", other in "[ -~]{0,20}") {
        let p = Pattern::compile(&json!({"type": [ty.clone()]})).unwrap();
        let same = json!({"type": ty.clone()});
        let differs = json!({"type": other.clone()});
        let elsewhere = json!({"source": ty.clone()});
        prop_assert!(p.matches(&same));
        prop_assert_eq!(p.matches(&differs), other == ty);
        prop_assert!(!p.matches(&elsewhere));
    }

    #[test]
    fn a_prefix_pattern_matches_what_starts_with_it(prefix in "[a-z]{0,6}", rest in "[a-z]{0,6}") {
        let p = Pattern::compile(&json!({"type": [{"prefix": prefix.clone()}]})).unwrap();
        let event = json!({"type": format!("{prefix}{rest}")});
        prop_assert!(p.matches(&event));
    }
}
