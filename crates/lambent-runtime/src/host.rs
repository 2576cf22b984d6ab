//! What a running function may ask of its node beyond the Runtime API: the key-value
//! store and publishing events. A runtime serves these to its instances (the process
//! runtime on the instance's own endpoint, under `/lambent/v1/`); the engine answers
//! them, allowing only what the function's grants name (deny by default).

use async_trait::async_trait;
use lambent_core::FunctionSpec;
use serde_json::Value;
use std::sync::Arc;

/// A request from a function.
#[derive(Debug, Clone, PartialEq)]
pub enum HostRequest {
    KvGet {
        namespace: String,
        key: String,
    },
    KvList {
        namespace: String,
        prefix: String,
    },
    /// A put (`value`) or a delete (`None`).
    KvWrite {
        namespace: String,
        key: String,
        value: Option<Value>,
        ttl_s: Option<u64>,
        /// Compare-and-swap on this revision (`0`: only if absent).
        if_revision: Option<u64>,
    },
    /// A CloudEvent in its JSON form (`id` and `source` filled in when absent).
    Publish {
        event: Value,
    },
}

impl HostRequest {
    /// The key-value namespace the request touches, if any (its grant is `kv:NS`).
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Self::KvGet { namespace, .. }
            | Self::KvList { namespace, .. }
            | Self::KvWrite { namespace, .. } => Some(namespace),
            Self::Publish { .. } => None,
        }
    }
}

/// The answer: an HTTP status and a JSON body (`{"error": {...}}` when refused).
#[derive(Debug, Clone, PartialEq)]
pub struct HostResponse {
    pub status: u16,
    pub body: Value,
}

impl HostResponse {
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: serde_json::json!({"error": {"code": code, "message": message.into()}}),
        }
    }
}

#[async_trait]
pub trait HostServices: Send + Sync {
    /// Serves `request` for an instance of `function`.
    async fn call(&self, function: &FunctionSpec, request: HostRequest) -> HostResponse;
}

/// A handle on the node's services, handed to instances.
#[derive(Clone)]
pub struct Host(pub Arc<dyn HostServices>);

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Host")
    }
}
