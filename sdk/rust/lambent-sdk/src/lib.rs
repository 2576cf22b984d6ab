//! Lambent functions in Rust, as WebAssembly components (`wasm32-wasip2`).
//!
//! ```ignore
//! use lambent_sdk::{Context, Result, Value};
//!
//! fn hello(event: Value, ctx: Context) -> Result<Value> {
//!     Ok(serde_json::json!({ "hello": event["name"], "request": ctx.request_id }))
//! }
//! lambent_sdk::handler!(hello);
//! ```
//!
//! The event is decoded into the handler's argument type (any `Deserialize`), the
//! result encoded from its return type (any `Serialize`). An `Err` is the
//! invocation's function error (retried like any other); a panic is a trap.
//! [`kv`], [`events`], [`log`] and [`config`] reach the node, each allowed by the
//! function's grants (`kv:NS`, `publish:TYPE`).

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "lambent:function/function",
        pub_export_macro: true,
        export_macro_name: "__export_function",
        default_bindings_module: "lambent_sdk::bindings",
    });
}

use bindings::lambent::function::types;
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use serde_json::{Value, json};

/// What an invocation is about.
#[derive(Debug, Clone)]
pub struct Context {
    pub request_id: String,
    pub function_name: String,
    pub function_version: String,
    pub memory_limit_mb: u32,
    /// Milliseconds since the Unix epoch.
    pub deadline_ms: i64,
    /// The CloudEvent being delivered (asynchronous deliveries).
    pub event_id: Option<String>,
    /// 1 on the first attempt of a delivery.
    pub attempt: u32,
    pub trace_id: Option<String>,
}

impl From<types::Context> for Context {
    fn from(c: types::Context) -> Self {
        Self {
            request_id: c.request_id,
            function_name: c.function_name,
            function_version: c.function_version,
            memory_limit_mb: c.memory_limit_mb,
            deadline_ms: c.deadline_ms,
            event_id: c.event_id,
            attempt: c.attempt,
            trace_id: c.trace_id,
        }
    }
}

/// A handler's failure: its type and message are what `lambent logs` and the
/// caller see (Lambda's `errorType` / `errorMessage`).
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub error_type: String,
    pub message: String,
}

impl Error {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::new("Json", e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs a handler on one event: the glue [`handler!`] exports.
#[doc(hidden)]
pub fn __run<E, R, F>(
    event: Vec<u8>,
    context: types::Context,
    handler: F,
) -> Result<Vec<u8>, types::Error>
where
    E: DeserializeOwned,
    R: Serialize,
    F: FnOnce(E, Context) -> Result<R>,
{
    let to_wit = |e: Error| types::Error {
        error_type: e.error_type,
        message: e.message,
    };
    let event: E = serde_json::from_slice(&event).map_err(|e| {
        to_wit(Error::new(
            "Runtime.UnmarshalError",
            format!("the event does not fit the handler's type: {e}"),
        ))
    })?;
    let result = handler(event, context.into()).map_err(to_wit)?;
    serde_json::to_vec(&result)
        .map_err(|e| to_wit(Error::new("Runtime.MarshalError", e.to_string())))
}

/// Exports `handler` (a `fn(E, Context) -> Result<R>`) as the component's
/// `lambent:function/handler`.
#[macro_export]
macro_rules! handler {
    ($handler:path) => {
        struct __LambentHandler;

        impl $crate::bindings::exports::lambent::function::handler::Guest for __LambentHandler {
            fn handle(
                event: ::std::vec::Vec<u8>,
                context: $crate::bindings::lambent::function::types::Context,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::bindings::lambent::function::types::Error> {
                $crate::__run(event, context, $handler)
            }
        }

        $crate::bindings::__export_function!(__LambentHandler with_types_in $crate::bindings);
    };
}

/// The node's key-value store (grant `kv:NAMESPACE`). Every write is also a
/// data-change event.
pub mod kv {
    use super::{Error, Result};
    use crate::bindings::lambent::function::kv as wit;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// A stored value and its revision.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Entry {
        pub key: String,
        pub value: serde_json::Value,
        pub revision: u64,
    }

    fn error(e: wit::KvError) -> Error {
        match e {
            wit::KvError::Denied(m) => Error::new("KV.Denied", m),
            wit::KvError::Conflict(m) => Error::new("KV.Conflict", m),
            wit::KvError::Invalid(m) => Error::new("KV.Invalid", m),
            wit::KvError::Unavailable(m) => Error::new("KV.Unavailable", m),
        }
    }

    fn entry(e: wit::Entry) -> Result<Entry> {
        Ok(Entry {
            key: e.key,
            value: serde_json::from_str(&e.value)?,
            revision: e.revision,
        })
    }

    pub fn get(namespace: &str, key: &str) -> Result<Option<Entry>> {
        wit::get(namespace, key)
            .map_err(error)?
            .map(entry)
            .transpose()
    }

    /// The value of `key` decoded as `T`, if present.
    pub fn get_as<T: DeserializeOwned>(namespace: &str, key: &str) -> Result<Option<T>> {
        match get(namespace, key)? {
            Some(e) => Ok(Some(serde_json::from_value(e.value)?)),
            None => Ok(None),
        }
    }

    /// Puts a value; returns its revision.
    pub fn set(namespace: &str, key: &str, value: &impl Serialize) -> Result<u64> {
        wit::set(namespace, key, &serde_json::to_string(value)?, None).map_err(error)
    }

    /// Puts a value that expires after `ttl_seconds`.
    pub fn set_with_ttl(
        namespace: &str,
        key: &str,
        value: &impl Serialize,
        ttl_seconds: u64,
    ) -> Result<u64> {
        wit::set(
            namespace,
            key,
            &serde_json::to_string(value)?,
            Some(ttl_seconds),
        )
        .map_err(error)
    }

    pub fn delete(namespace: &str, key: &str) -> Result<()> {
        wit::delete(namespace, key).map_err(error)
    }

    /// Puts only if `key` is at `revision` (0: only if absent); a `KV.Conflict`
    /// error otherwise.
    pub fn compare_and_swap(
        namespace: &str,
        key: &str,
        value: &impl Serialize,
        revision: u64,
    ) -> Result<u64> {
        wit::compare_and_swap(namespace, key, &serde_json::to_string(value)?, revision)
            .map_err(error)
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn list(namespace: &str, prefix: &str) -> Result<Vec<Entry>> {
        wit::list(namespace, prefix)
            .map_err(error)?
            .into_iter()
            .map(entry)
            .collect()
    }
}

/// Publishing events (grant `publish:TYPE`).
pub mod events {
    use super::{Error, Result};
    use crate::bindings::lambent::function::events as wit;
    use serde::Serialize;

    /// Publishes an event of type `ty` with `data`; returns its id.
    pub fn publish(ty: &str, data: &impl Serialize) -> Result<String> {
        publish_event(&serde_json::json!({ "type": ty, "data": data }))
    }

    /// Publishes a whole CloudEvent (`id` and `source` are filled in when absent).
    pub fn publish_event(event: &serde_json::Value) -> Result<String> {
        wit::publish(&event.to_string()).map_err(|e| match e {
            wit::PublishError::Denied(m) => Error::new("Publish.Denied", m),
            wit::PublishError::Invalid(m) => Error::new("Publish.Invalid", m),
            wit::PublishError::Unavailable(m) => Error::new("Publish.Unavailable", m),
        })
    }
}

/// Lines in the invocation's log, beside stdout and stderr.
pub mod log {
    use crate::bindings::lambent::function::log::{Level, write};

    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }
    pub fn info(message: &str) {
        write(Level::Info, message);
    }
    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }
    pub fn error(message: &str) {
        write(Level::Error, message);
    }
}

/// The function's configuration variables (`--env`).
pub mod config {
    pub fn get(name: &str) -> Option<String> {
        crate::bindings::lambent::function::config::get(name)
    }

    pub fn all() -> Vec<(String, String)> {
        crate::bindings::lambent::function::config::get_all()
    }
}
