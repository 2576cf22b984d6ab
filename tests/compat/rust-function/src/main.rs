//! Answers with what the runtime client saw (request id, deadline, function ARN, trace
//! id, client context), fails when asked to, sleeps past its timeout when asked to,
//! and exits at start when `FAIL_AT_INIT` is set.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    if let Some(message) = payload.get("fail").and_then(Value::as_str) {
        return Err(message.to_owned().into());
    }
    if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    Ok(json!({
        "request_id": context.request_id,
        "deadline": context.deadline,
        "function_arn": context.invoked_function_arn,
        "trace_id": context.xray_trace_id,
        "client_app": context.client_context.map(|c| c.client.app_title),
        "event": payload,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // A function that cannot start (its configuration is wrong, say).
    if std::env::var_os("FAIL_AT_INIT").is_some() {
        eprintln!("cannot start: FAIL_AT_INIT is set");
        std::process::exit(1);
    }
    lambda_runtime::run(service_fn(handler)).await
}
