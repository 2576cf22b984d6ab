//! The node's services as functions see them (`lambent.kv`, `lambent.events` in the
//! bootstraps): the key-value store and publishing, each allowed only by a grant
//! (`kv:NS`, `publish:TYPE`), deny by default.

use crate::error::EngineError;
use crate::{Engine, Inner, KvRequest};
use async_trait::async_trait;
use lambent_core::{CloudEvent, FunctionSpec};
use lambent_runtime::host::{HostRequest, HostResponse, HostServices};
use serde_json::{Value, json};
use std::sync::Weak;
use std::time::Duration;

/// The engine as its instances' host (weak: instances do not keep a stopped node alive).
pub(crate) struct EngineHost(pub Weak<Inner>);

fn refused(e: EngineError) -> HostResponse {
    let (status, code) = match &e {
        EngineError::NotFound { .. } => (404, "not_found"),
        EngineError::Conflict(_) => (409, "conflict"),
        EngineError::TooLarge { .. } => (413, "too_large"),
        EngineError::Invalid(_) | EngineError::Event { .. } | EngineError::Spec(_) => {
            (400, "bad_request")
        }
        _ => (503, "unavailable"),
    };
    HostResponse::error(status, code, e.to_string())
}

fn no_grant(function: &str, grant: &str) -> HostResponse {
    HostResponse::error(
        403,
        "forbidden",
        format!("function `{function}` has no grant `{grant}` (deploy it with --grant {grant})"),
    )
}

fn ok(status: u16, body: impl serde::Serialize) -> HostResponse {
    HostResponse {
        status,
        body: json!(body),
    }
}

#[async_trait]
impl HostServices for EngineHost {
    async fn call(&self, function: &FunctionSpec, request: HostRequest) -> HostResponse {
        let Some(inner) = self.0.upgrade() else {
            return HostResponse::error(503, "unavailable", "the node is stopping");
        };
        let engine = Engine { inner };
        let name = &function.name;
        if let Some(namespace) = request.namespace()
            && !function.may_use_kv(namespace)
        {
            return no_grant(name, &format!("kv:{namespace}"));
        }
        match request {
            HostRequest::KvGet { namespace, key } => engine
                .kv_get(&namespace, &key)
                .await
                .map_or_else(refused, |entry| ok(200, entry)),
            HostRequest::KvList { namespace, prefix } => engine
                .kv_list(&namespace, &prefix, None, 1000)
                .await
                .map_or_else(refused, |keys| ok(200, json!({ "keys": keys }))),
            HostRequest::KvWrite {
                namespace,
                key,
                value,
                ttl_s,
                if_revision,
            } => engine
                .kv_write(KvRequest {
                    namespace,
                    key,
                    value,
                    ttl: ttl_s.map(Duration::from_secs),
                    expect_revision: if_revision,
                })
                .await
                .map_or_else(refused, |written| ok(200, written)),
            HostRequest::Publish { mut event } => {
                let Some(map) = event.as_object_mut() else {
                    return HostResponse::error(400, "bad_request", "an event is a JSON object");
                };
                map.entry("specversion").or_insert_with(|| "1.0".into());
                map.entry("id")
                    .or_insert_with(|| lambent_core::new_id().into());
                map.entry("source")
                    .or_insert_with(|| format!("lambent/functions/{name}").into());
                let event = match CloudEvent::from_json(event) {
                    Ok(e) => e,
                    Err(e) => return HostResponse::error(400, "bad_request", e.to_string()),
                };
                if !function.may_publish(event.ty()) {
                    return no_grant(name, &format!("publish:{}", event.ty()));
                }
                match engine.publish(vec![event]).await {
                    Ok(results) => ok(
                        202,
                        results
                            .into_iter()
                            .next()
                            .map(|r| json!(r))
                            .unwrap_or(Value::Null),
                    ),
                    Err(e) => refused(e),
                }
            }
        }
    }
}
