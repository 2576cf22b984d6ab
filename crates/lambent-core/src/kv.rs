//! The built-in key-value store's names and limits.

/// Largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value (its JSON text), in bytes: a change event carries it.
pub const MAX_VALUE_BYTES: usize = 128 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KvError {
    #[error("invalid namespace `{0}`: use 1-64 of A-Z a-z 0-9 _ -")]
    Namespace(String),
    #[error(
        "invalid key in namespace `{namespace}`: {why} (keys are 1-{MAX_KEY_BYTES} bytes of printable text)"
    )]
    Key {
        namespace: String,
        why: &'static str,
    },
    #[error("value of {namespace}/{key} is {size} bytes; the limit is {MAX_VALUE_BYTES}")]
    Value {
        namespace: String,
        key: String,
        size: usize,
    },
}

pub fn validate_namespace(namespace: &str) -> Result<(), KvError> {
    crate::function::validate_name(namespace).map_err(|_| KvError::Namespace(namespace.to_owned()))
}

pub fn validate_key(namespace: &str, key: &str) -> Result<(), KvError> {
    let why = if key.is_empty() {
        Some("it is empty")
    } else if key.len() > MAX_KEY_BYTES {
        Some("it is too long")
    } else if key.chars().any(char::is_control) {
        Some("it holds a control character")
    } else {
        None
    };
    match why {
        Some(why) => Err(KvError::Key {
            namespace: namespace.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_checked() {
        assert!(validate_namespace("profiles").is_ok());
        assert!(validate_namespace("a/b").is_err());
        assert!(validate_key("ns", "users/42").is_ok());
        assert!(validate_key("ns", "").is_err());
        assert!(validate_key("ns", "a\0b").is_err());
        assert!(validate_key("ns", &"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }
}
