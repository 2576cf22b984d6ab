//! The smallest Lambent function in Rust: greets whoever the event names.

use lambent_sdk::{Context, Result, Value, json};

fn hello(event: Value, ctx: Context) -> Result<Value> {
    let name = event["name"].as_str().unwrap_or("world");
    println!("hello handled request {}", ctx.request_id);
    Ok(json!({ "message": format!("Hello, {name}!"), "function": ctx.function_name }))
}

lambent_sdk::handler!(hello);
