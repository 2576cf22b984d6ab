//! The founding document's event listener (seed/000_830f51d22dd644a1.txt, section 4)
//! in Rust: it dispatches on the event's `type` and hands its `data` to a
//! processor, as the Python original does. Each processor prints what it handled,
//! so `lambent logs` shows which branch ran.

use lambent_sdk::{Context, Result, Value, json};
use serde::Deserialize;

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    data: Value,
}

fn event_listener(event: Event, _ctx: Context) -> Result<Value> {
    let branch = match event.ty.as_str() {
        "user_action" => process_user_action(&event.data),
        "data_update" => process_data_update(&event.data),
        "timer_trigger" => process_timer_trigger(&event.data),
        _ => "ignored",
    };
    Ok(json!({ "handled": branch }))
}

fn process_user_action(user_action: &Value) -> &'static str {
    println!("user_action handled: {user_action}");
    "user_action"
}

fn process_data_update(data_update: &Value) -> &'static str {
    println!("data_update handled: {data_update}");
    "data_update"
}

fn process_timer_trigger(timer_trigger: &Value) -> &'static str {
    println!("timer_trigger handled: {timer_trigger}");
    "timer_trigger"
}

lambent_sdk::handler!(event_listener);
