//! Function specifications: name, runtime, handler, limits, environment, retry policy.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a function specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("invalid function name `{0}`: use 1-64 of A-Z a-z 0-9 _ -")]
    Name(String),
    #[error("unsupported runtime `{0}`: use python3.x, nodejs*, provided, provided.al2* or wasm")]
    Runtime(String),
    #[error("function `{function}`: {field} must be between {min} and {max}, got {got}")]
    OutOfRange {
        function: String,
        field: &'static str,
        min: u64,
        max: u64,
        got: u64,
    },
    #[error("function `{function}`: runtime {runtime} needs a handler like `module.function`")]
    Handler { function: String, runtime: String },
    #[error("function `{function}`: invalid environment variable name `{name}`")]
    EnvName { function: String, name: String },
    #[error("function `{function}`: {detail}")]
    Grant { function: String, detail: String },
    #[error("function `{function}`: environment variable `{name}` is reserved by the runtime")]
    ReservedEnv { function: String, name: String },
    #[error(
        "function `{function}`: the environment is {size} bytes; Lambda's limit, kept here, is 4 KB in total"
    )]
    EnvTooLarge { function: String, size: usize },
    #[error("function `{function}`: environment variable `{name}` holds a NUL character")]
    EnvNul { function: String, name: String },
    #[error(
        "function `{function}`: role `{role}` is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)"
    )]
    Role { function: String, role: String },
    #[error("function `{function}`: its on-failure destination cannot be itself")]
    Destination { function: String },
}

/// Most bytes of all environment variable names and values together (Lambda's limit).
pub const MAX_ENV_BYTES: usize = 4096;

/// `arn:aws:iam::ACCOUNT:role/NAME`, as Lambda checks it.
fn valid_role(role: &str) -> bool {
    let Some(rest) = role.strip_prefix("arn:") else {
        return false;
    };
    let Some((partition, rest)) = rest.split_once(":iam::") else {
        return false;
    };
    let Some((account, name)) = rest.split_once(":role/") else {
        return false;
    };
    partition.starts_with("aws")
        && partition
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@-_/".contains(&b))
}

/// How a function's code runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Python 3 through Lambent's bootstrap; `declared` keeps what the user asked for
    /// (`python3.8`), which runs on the host's Python 3.
    Python { declared: String },
    /// Node.js through Lambent's bootstrap.
    Node { declared: String },
    /// An executable `bootstrap` in the code that speaks the Runtime API itself.
    Provided { declared: String },
    /// A WebAssembly component run in wasmtime: a `lambent:function` handler or a
    /// `wasi:http/proxy` component.
    Wasm { declared: String },
}

impl RuntimeKind {
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let declared = s.to_owned();
        if let Some(minor) = s.strip_prefix("python3") {
            if minor.is_empty()
                || (minor.starts_with('.')
                    && minor[1..].bytes().all(|b| b.is_ascii_digit())
                    && minor.len() > 1)
            {
                return Ok(Self::Python { declared });
            }
        } else if let Some(rest) = s.strip_prefix("nodejs") {
            if rest.is_empty() || rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
                return Ok(Self::Node { declared });
            }
        } else if s == "provided" || s.starts_with("provided.al") {
            return Ok(Self::Provided { declared });
        } else if s == "wasm" || s == "wasi" || s == "wasm32-wasip2" {
            return Ok(Self::Wasm { declared });
        }
        Err(SpecError::Runtime(s.to_owned()))
    }

    /// The runtime identifier as the user declared it (`python3.8`, `nodejs20.x`, ...).
    pub fn declared(&self) -> &str {
        match self {
            Self::Python { declared }
            | Self::Node { declared }
            | Self::Provided { declared }
            | Self::Wasm { declared } => declared,
        }
    }

    fn needs_handler(&self) -> bool {
        !matches!(self, Self::Provided { .. } | Self::Wasm { .. })
    }

    /// The family of runtimes that runs this kind (`process` or `wasm`): the key of
    /// the node's runtime registry.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Wasm { .. } => "wasm",
            _ => "process",
        }
    }
}

/// Retry policy for asynchronous deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (Lambda's default: 1 + 2 retries).
    pub max_attempts: u32,
    /// A delivery older than this is dead-lettered instead of retried.
    pub max_event_age_s: u64,
    /// Backoff before retry n is `base * 2^(n-1)`, capped and jittered.
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            max_event_age_s: 6 * 3600,
            base_delay_ms: 1000,
            max_delay_ms: 5 * 60 * 1000,
        }
    }
}

impl RetryPolicy {
    /// Delay before the attempt that follows attempt `attempt` (1-based): exponential
    /// with "equal jitter" (half fixed, half random) so retries of one burst spread out.
    pub fn backoff(&self, attempt: u32, unit_random: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self
            .base_delay_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_delay_ms);
        let half = full / 2;
        let jitter = (half as f64 * unit_random.clamp(0.0, 1.0)) as u64;
        Duration::from_millis(half + jitter)
    }
}

/// A function's configuration (everything but the code), as deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub name: String,
    pub runtime: RuntimeKind,
    #[serde(default)]
    pub handler: String,
    pub memory_mb: u32,
    pub timeout_s: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Most instances running at once (and so most concurrent invocations).
    pub concurrency: u32,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub description: String,
    /// Capabilities beyond the sandbox's defaults, deny by default: `net`, or
    /// `net:HOST[:PORT]` (see `grant`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
    /// The execution role an AWS client named (an IAM role ARN), kept and shown;
    /// Lambent does not assume it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A function that gets the failure record of each asynchronous event this one
    /// gives up on (Lambda's on-failure destination); the dead letter stays too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    /// This function's keep-alive policy (`fixed:10m`, `histogram`, `mdp:cost-ratio=R`)
    /// instead of the node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<String>,
}

/// Variables the runtime sets itself (LAMBDA-COMPAT.md); a function may not set them,
/// as in Lambda, which refuses them with "Reserved keys used in this request".
pub const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "LAMBENT_API_TOKEN",
];

pub const DEFAULT_MEMORY_MB: u32 = 128;
pub const DEFAULT_TIMEOUT_S: u32 = 3;
pub const DEFAULT_CONCURRENCY: u32 = 10;
/// A wasm function's default: an instance per request costs microseconds and a
/// few pages of a pre-mapped pool, so an HTTP route takes bursts as Spin would.
pub const DEFAULT_WASM_CONCURRENCY: u32 = 100;

impl FunctionSpec {
    /// Checks every field; the error names the function and the limit.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        let range = |field, min: u64, max: u64, got: u64| {
            if got < min || got > max {
                Err(SpecError::OutOfRange {
                    function: self.name.clone(),
                    field,
                    min,
                    max,
                    got,
                })
            } else {
                Ok(())
            }
        };
        range("memory (MB)", 128, 10240, self.memory_mb.into())?;
        range("timeout (s)", 1, 900, self.timeout_s.into())?;
        range("concurrency", 1, 1000, self.concurrency.into())?;
        range("max_attempts", 1, 100, self.retry.max_attempts.into())?;
        range(
            "max_event_age (s)",
            1,
            7 * 24 * 3600,
            self.retry.max_event_age_s,
        )?;
        range(
            "retry base delay (ms)",
            1,
            3_600_000,
            self.retry.base_delay_ms,
        )?;
        range(
            "retry max delay (ms)",
            self.retry.base_delay_ms,
            86_400_000,
            self.retry.max_delay_ms,
        )?;
        if self.runtime.needs_handler() && !valid_handler(&self.handler) {
            return Err(SpecError::Handler {
                function: self.name.clone(),
                runtime: self.runtime.declared().to_owned(),
            });
        }
        for name in self.env.keys() {
            let ok = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(SpecError::EnvName {
                    function: self.name.clone(),
                    name: name.clone(),
                });
            }
            if RESERVED_ENV.contains(&name.as_str()) {
                return Err(SpecError::ReservedEnv {
                    function: self.name.clone(),
                    name: name.clone(),
                });
            }
        }
        let env_size: usize = self.env.iter().map(|(k, v)| k.len() + v.len()).sum();
        if env_size > MAX_ENV_BYTES {
            return Err(SpecError::EnvTooLarge {
                function: self.name.clone(),
                size: env_size,
            });
        }
        if let Some((name, _)) = self.env.iter().find(|(_, v)| v.contains('\0')) {
            return Err(SpecError::EnvNul {
                function: self.name.clone(),
                name: name.clone(),
            });
        }
        if let Some(dest) = &self.on_failure {
            validate_name(dest)?;
            if *dest == self.name {
                return Err(SpecError::Destination {
                    function: self.name.clone(),
                });
            }
        }
        if let Some(role) = self.role.as_ref().filter(|r| !valid_role(r)) {
            return Err(SpecError::Role {
                function: self.name.clone(),
                role: role.clone(),
            });
        }
        for grant in &self.grants {
            crate::grant::parse_any(grant).map_err(|detail| SpecError::Grant {
                function: self.name.clone(),
                detail,
            })?;
        }
        Ok(())
    }

    /// Whether the function may reach the network beyond its own Runtime API.
    pub fn grants_net(&self) -> bool {
        !self.net_grants().is_empty()
    }

    /// Its network grants (the spec was validated: none fails to parse).
    pub fn net_grants(&self) -> Vec<crate::grant::NetGrant> {
        self.grants
            .iter()
            .filter_map(|g| crate::grant::parse(g).ok())
            .collect()
    }

    /// Whether the function may read and write the key-value namespace `namespace`.
    pub fn may_use_kv(&self, namespace: &str) -> bool {
        self.grants.iter().any(|g| {
            matches!(crate::grant::parse_any(g), Ok(crate::grant::Grant::Kv(ns)) if ns == "*" || ns == namespace)
        })
    }

    /// Whether the function may publish events of type `ty`.
    pub fn may_publish(&self, ty: &str) -> bool {
        self.grants.iter().any(|g| {
            matches!(crate::grant::parse_any(g), Ok(crate::grant::Grant::Publish(t)) if t == "*" || t == ty)
        })
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s.into())
    }
}

/// Function names as Lambda allows them (without ARNs, which the Lambda API resolves).
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::Name(name.to_owned()))
    }
}

/// `module.function`, where the module may be a path (`pkg/mod.fn`).
fn valid_handler(handler: &str) -> bool {
    match handler.rsplit_once('.') {
        Some((module, function)) => {
            !module.is_empty() && !function.is_empty() && !handler.contains("..")
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FunctionSpec {
        FunctionSpec {
            role: None,
            on_failure: None,
            keep_alive: None,
            name: "event_listener".into(),
            runtime: RuntimeKind::parse("python3.8").unwrap(),
            handler: "event_listener.event_listener".into(),
            memory_mb: DEFAULT_MEMORY_MB,
            timeout_s: DEFAULT_TIMEOUT_S,
            env: BTreeMap::new(),
            concurrency: DEFAULT_CONCURRENCY,
            retry: RetryPolicy::default(),
            description: String::new(),
            grants: Vec::new(),
        }
    }

    #[test]
    fn runtimes_parse_every_python3_minor() {
        for r in ["python3.8", "python3.9", "python3.13", "python3"] {
            assert!(
                matches!(RuntimeKind::parse(r), Ok(RuntimeKind::Python { .. })),
                "{r}"
            );
        }
        assert!(matches!(
            RuntimeKind::parse("nodejs20.x"),
            Ok(RuntimeKind::Node { .. })
        ));
        assert!(matches!(
            RuntimeKind::parse("provided.al2023"),
            Ok(RuntimeKind::Provided { .. })
        ));
        assert!(matches!(
            RuntimeKind::parse("wasm"),
            Ok(RuntimeKind::Wasm { .. })
        ));
        for bad in ["python2.7", "python3.", "java21", "ruby"] {
            assert!(RuntimeKind::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_field_and_limit() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.timeout_s = 0;
        assert!(s.validate().unwrap_err().to_string().contains("timeout"));
        let mut s = spec();
        s.name = "no spaces".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.handler = "nohandler".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.env.insert("1BAD".into(), "x".into());
        assert!(s.validate().is_err());
        let mut s = spec();
        s.env
            .insert("AWS_LAMBDA_RUNTIME_API".into(), "evil:1".into());
        assert!(matches!(s.validate(), Err(SpecError::ReservedEnv { .. })));
    }

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_cap() {
        let p = RetryPolicy {
            base_delay_ms: 100,
            max_delay_ms: 1000,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(3, 1.0), Duration::from_millis(400));
        assert_eq!(p.backoff(10, 1.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(10, 0.0), Duration::from_millis(500));
    }
}
