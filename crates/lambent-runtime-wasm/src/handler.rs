//! The `lambent:function` world: the host side of its imports (key-value, log,
//! events, config — answered by the node's services, each under the function's
//! grants) and calling its `handler` export.

use crate::state::State;
use lambent_runtime::host::{HostRequest, HostResponse};
use serde_json::Value;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "lambent:function/function",
    imports: { default: async },
    exports: { default: async },
});

pub use exports::lambent::function::handler::Context;
use lambent::function::{config, events, kv, log, types};

impl State {
    /// Asks the node (without holding the store's state across the await: it is
    /// not `Sync`).
    fn host_call(&self, request: HostRequest) -> impl Future<Output = HostResponse> + Send + use<> {
        let (host, spec) = (self.host.clone(), self.spec.clone());
        async move {
            match host {
                Some(host) => host.0.call(&spec, request).await,
                None => {
                    HostResponse::error(503, "unavailable", "this node serves no host services")
                }
            }
        }
    }
}

fn message(response: &HostResponse) -> String {
    response
        .body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map_or_else(|| response.body.to_string(), str::to_owned)
}

fn kv_error(response: &HostResponse) -> kv::KvError {
    let message = message(response);
    match response.status {
        403 => kv::KvError::Denied(message),
        409 => kv::KvError::Conflict(message),
        400 | 404 | 413 => kv::KvError::Invalid(message),
        _ => kv::KvError::Unavailable(message),
    }
}

fn entry(value: &Value) -> Option<kv::Entry> {
    Some(kv::Entry {
        key: value.get("key")?.as_str()?.to_owned(),
        value: value.get("value")?.to_string(),
        revision: value.get("revision")?.as_u64()?,
    })
}

fn parse_value(value: &str) -> Result<Value, kv::KvError> {
    serde_json::from_str(value)
        .map_err(|e| kv::KvError::Invalid(format!("a value is JSON text: {e}")))
}

impl types::Host for State {}

impl kv::Host for State {
    async fn get(
        &mut self,
        namespace: String,
        key: String,
    ) -> Result<Option<kv::Entry>, kv::KvError> {
        let response = self.host_call(HostRequest::KvGet { namespace, key }).await;
        match response.status {
            200 => Ok(entry(&response.body)),
            404 if response.body.pointer("/error/code") == Some(&Value::from("not_found")) => {
                Ok(None)
            }
            _ => Err(kv_error(&response)),
        }
    }

    async fn set(
        &mut self,
        namespace: String,
        key: String,
        value: String,
        ttl_seconds: Option<u64>,
    ) -> Result<u64, kv::KvError> {
        self.write(
            namespace,
            key,
            Some(parse_value(&value)?),
            ttl_seconds,
            None,
        )
        .await
    }

    async fn delete(&mut self, namespace: String, key: String) -> Result<(), kv::KvError> {
        let request = HostRequest::KvWrite {
            namespace,
            key,
            value: None,
            ttl_s: None,
            if_revision: None,
        };
        let response = self.host_call(request).await;
        match response.status {
            // Deleting an absent key leaves it absent: done.
            200 | 404 => Ok(()),
            _ => Err(kv_error(&response)),
        }
    }

    async fn compare_and_swap(
        &mut self,
        namespace: String,
        key: String,
        value: String,
        if_revision: u64,
    ) -> Result<u64, kv::KvError> {
        let value = parse_value(&value)?;
        self.write(namespace, key, Some(value), None, Some(if_revision))
            .await
    }

    async fn list(
        &mut self,
        namespace: String,
        prefix: String,
    ) -> Result<Vec<kv::Entry>, kv::KvError> {
        let response = self
            .host_call(HostRequest::KvList { namespace, prefix })
            .await;
        if response.status != 200 {
            return Err(kv_error(&response));
        }
        Ok(response
            .body
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(entry)
            .collect())
    }
}

impl State {
    async fn write(
        &mut self,
        namespace: String,
        key: String,
        value: Option<Value>,
        ttl_s: Option<u64>,
        if_revision: Option<u64>,
    ) -> Result<u64, kv::KvError> {
        let response = self
            .host_call(HostRequest::KvWrite {
                namespace,
                key,
                value,
                ttl_s,
                if_revision,
            })
            .await;
        match response.status {
            200 => Ok(response
                .body
                .get("revision")
                .and_then(Value::as_u64)
                .unwrap_or_default()),
            _ => Err(kv_error(&response)),
        }
    }
}

impl log::Host for State {
    async fn write(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Debug => "DEBUG",
            log::Level::Info => "INFO",
            log::Level::Warn => "WARN",
            log::Level::Error => "ERROR",
        };
        self.log.append(format!("[{level}] {message}\n").as_bytes());
    }
}

impl events::Host for State {
    async fn publish(&mut self, event: String) -> Result<String, events::PublishError> {
        let event: Value = serde_json::from_str(&event).map_err(|e| {
            events::PublishError::Invalid(format!("an event is a CloudEvent as JSON: {e}"))
        })?;
        let response = self.host_call(HostRequest::Publish { event }).await;
        match response.status {
            200..=299 => Ok(response
                .body
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()),
            403 => Err(events::PublishError::Denied(message(&response))),
            400 | 413 => Err(events::PublishError::Invalid(message(&response))),
            _ => Err(events::PublishError::Unavailable(message(&response))),
        }
    }
}

impl config::Host for State {
    async fn get(&mut self, name: String) -> Option<String> {
        self.spec.env.get(&name).cloned()
    }

    async fn get_all(&mut self) -> Vec<(String, String)> {
        self.spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
