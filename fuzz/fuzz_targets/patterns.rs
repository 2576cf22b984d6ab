//! Event patterns: any JSON compiles or is refused; a compiled pattern matches any
//! event without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], &[u8])| {
    let (pattern, event) = input;
    let Ok(pattern) = serde_json::from_slice::<serde_json::Value>(pattern) else {
        return;
    };
    if let Ok(p) = lambent_core::Pattern::compile(&pattern) {
        if let Ok(event) = serde_json::from_slice::<serde_json::Value>(event) {
            let _ = p.matches(&event);
        }
        let _ =
            p.matches(&serde_json::json!({"type": "t", "source": "s", "data": {"a": [1, "x"]}}));
    }
});
