//! On-failure destinations: when the engine gives up on an asynchronous event of a
//! function that names one, the destination function gets Lambda's failure record
//! (published in the same write as the dead letter).

use bytes::Bytes;
use lambent_core::CloudEvent;
use lambent_store::{DeliveryId, FunctionVersion, NewEvent, PayloadMode, Target};
use serde_json::{Value, json};

/// Source of the failure records' events.
pub const DESTINATION_SOURCE: &str = "lambent/destinations";

/// Why the engine gave up, in Lambda's words.
pub(crate) enum Condition {
    RetriesExhausted,
    EventAgeExceeded,
}

/// A payload as JSON where it is JSON, else as a string.
fn as_json(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The failure record for `function`'s destination, if it has one.
pub(crate) fn failure_record(
    function: &FunctionVersion,
    delivery: DeliveryId,
    attempts: u32,
    request: &Bytes,
    response: Option<&(String, Bytes)>,
    condition: Condition,
) -> Option<NewEvent> {
    let destination = function.spec.on_failure.as_ref()?;
    let name = &function.spec.name;
    let record = json!({
        "version": "1.0",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "requestContext": {
            "requestId": response.map(|(id, _)| id.clone()).unwrap_or_default(),
            "functionArn": format!("arn:aws:lambda:us-east-1:000000000000:function:{name}:$LATEST"),
            "condition": match condition {
                Condition::RetriesExhausted => "RetriesExhausted",
                Condition::EventAgeExceeded => "EventAgeExceeded",
            },
            "approximateInvokeCount": attempts,
        },
        "requestPayload": as_json(request),
        "responseContext": {
            "statusCode": 200,
            "executedVersion": function.version.to_string(),
            "functionError": "Unhandled",
        },
        "responsePayload": response.map(|(_, body)| as_json(body)).unwrap_or(Value::Null),
    });
    // One record per given-up delivery: its id de-duplicates a repeat.
    let event = CloudEvent::builder(
        format!("{name}/{delivery}"),
        DESTINATION_SOURCE,
        "lambent.destination.failure",
    )
    .attr("subject", name.clone())
    .json_data(record)
    .build()
    .ok()?;
    Some(NewEvent::new(
        event,
        vec![Target {
            function: destination.clone(),
            mode: PayloadMode::Data,
        }],
    ))
}
