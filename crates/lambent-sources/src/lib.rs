//! Event sources. Each one runs until shutdown and hands its events to a narrow
//! [`Sink`]; it learns that they are durable when the sink's call returns, and only
//! then acknowledges them upstream (a broker message, a replication position), so
//! nothing a source took is lost. One module per source; their state lives behind
//! the store traits.

mod message;
pub mod mqtt;
pub mod nats;
mod pgoutput;
pub mod postgres;
pub mod schedule;
pub mod supervisor;

pub use schedule::Scheduler;

use async_trait::async_trait;
use lambent_engine::{Engine, EngineError, PublishResult};
use tokio::sync::watch;

/// Why a source stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {source_name}: {detail}")]
    Failed { source_name: String, detail: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Where a source's events go: published durably (the call returns once they are).
#[derive(Clone)]
pub struct Sink {
    engine: Engine,
}

impl Sink {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// Publishes events; returns once they and their deliveries are durable.
    pub async fn publish(
        &self,
        events: Vec<lambent_core::CloudEvent>,
    ) -> Result<Vec<PublishResult>, EngineError> {
        self.engine.publish(events).await
    }

    /// Publishes a source's events, also to its own target; returns once durable.
    pub async fn publish_to(
        &self,
        events: Vec<lambent_core::CloudEvent>,
        target: Option<&str>,
    ) -> Result<Vec<PublishResult>, EngineError> {
        self.engine.publish_from(events, target).await
    }

    /// Says how the source is doing (`connected`, `reconnecting: ...`), for status.
    pub fn status(&self, source: &str, status: impl Into<String>) {
        self.engine.set_source_status(source, status);
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// What a running source gets.
pub struct SourceContext {
    /// Becomes `true` when the node stops.
    pub shutdown: watch::Receiver<bool>,
    pub sink: Sink,
}

/// An event source.
#[async_trait]
pub trait Source: Send {
    /// A name for logs and status (`schedules`, `nats:orders.*`).
    fn name(&self) -> String;
    /// Runs until `cx.shutdown` turns true; returns an error only when it cannot go on.
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError>;
    /// The source was removed: release what it holds upstream (a replication slot
    /// keeps WAL on the server for ever; a durable consumer or session keeps messages).
    async fn retire(self: Box<Self>) -> Result<(), String> {
        Ok(())
    }
}

/// Starts a source as a task the engine supervises (`health` fails if it stops).
pub fn spawn(source: Box<dyn Source>, engine: &Engine, shutdown: watch::Receiver<bool>) {
    let name = source.name();
    let cx = SourceContext {
        shutdown,
        sink: Sink::new(engine.clone()),
    };
    let task_name = format!("source {name}");
    let task = tokio::spawn(async move {
        match source.run(cx).await {
            Ok(()) => tracing::info!(source = %name, "source stopped"),
            Err(e) => tracing::error!(source = %name, error = %e, "source failed"),
        }
    });
    engine.supervise(task_name, task);
}
