//! The control API client (the CLI's only way into a node).

use anyhow::{Context, Result, bail};
use reqwest::{Method, Response};
use serde_json::Value;

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Ok(token) = std::env::var("LAMBENT_TOKEN") {
            rb = rb.bearer_auth(token);
        }
        rb
    }

    /// Sends a request; a non-2xx answer becomes an error carrying the server's message.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Response> {
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach the Lambent node at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("{message} ({status})")
    }

    pub async fn json(&self, rb: reqwest::RequestBuilder) -> Result<Value> {
        let resp = self.send(rb).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        resp.json()
            .await
            .context("the node answered with invalid JSON")
    }
}
