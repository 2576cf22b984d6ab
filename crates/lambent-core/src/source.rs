//! Broker and database sources as users configure them: a NATS subject, a JetStream
//! durable consumer, an MQTT topic, PostgreSQL tables.

use serde::{Deserialize, Serialize};

/// The kinds of configured source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A core NATS subscription (at-most-once: what arrives while Lambent is down is gone).
    Nats,
    /// A JetStream durable pull consumer, acknowledged after the event is durable.
    Jetstream,
    /// An MQTT subscription at QoS 1 in a persistent session, acknowledged after the
    /// event is durable.
    Mqtt,
    /// Row changes of PostgreSQL tables by logical decoding (pgoutput, a publication
    /// and a replication slot), the slot advanced after the events are durable.
    Postgres,
}

/// A configured source. Which fields apply depends on `kind` (see `validate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub name: String,
    pub kind: SourceKind,
    /// `nats://127.0.0.1:4222`, `mqtt://127.0.0.1:1883`,
    /// `postgres://user@127.0.0.1:5432/db`.
    pub url: String,
    /// NATS subject (wildcards allowed), or for JetStream the stream's filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// JetStream stream (created over `subject` if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// MQTT topic filter (`+` and `#` allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// PostgreSQL tables (`public.orders` or `orders`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// The type of the events (PostgreSQL: default `lambent.pg.change`; brokers:
    /// required).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// A function every event goes to directly (rules matching the events see them too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("source `{name}`: {problem}")]
pub struct SourceError {
    pub name: String,
    pub problem: String,
}

/// A SQL identifier as PostgreSQL writes it unquoted: letters, digits, `_`, `$`.
fn plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

impl SourceSpec {
    /// The event type of this source's events.
    pub fn event_type(&self) -> String {
        match (&self.ty, self.kind) {
            (Some(t), _) => t.clone(),
            (None, SourceKind::Postgres) => "lambent.pg.change".into(),
            (None, _) => "lambent.message".into(),
        }
    }

    /// The name of the replication slot and publication of a PostgreSQL source.
    pub fn pg_slot(&self) -> String {
        format!(
            "lambent_{}",
            self.name.replace('-', "_").to_ascii_lowercase()
        )
    }

    pub fn validate(&self) -> Result<(), SourceError> {
        let fail = |problem: String| SourceError {
            name: self.name.clone(),
            problem,
        };
        crate::function::validate_name(&self.name).map_err(|_| SourceError {
            name: self.name.clone(),
            problem: "invalid name: use 1-64 of A-Z a-z 0-9 _ -".into(),
        })?;
        let scheme = match self.kind {
            SourceKind::Nats | SourceKind::Jetstream => "nats://",
            SourceKind::Mqtt => "mqtt://",
            SourceKind::Postgres => "postgres",
        };
        if !self.url.starts_with(scheme) {
            return Err(fail(format!("url `{}` must start with {scheme}", self.url)));
        }
        let need = |field: &str, value: &Option<String>| match value {
            Some(v) if !v.trim().is_empty() => Ok(()),
            _ => Err(fail(format!("a {:?} source needs `{field}`", self.kind))),
        };
        let refuse = |field: &str, present: bool| {
            if present {
                Err(fail(format!(
                    "`{field}` does not apply to a {:?} source",
                    self.kind
                )))
            } else {
                Ok(())
            }
        };
        match self.kind {
            SourceKind::Nats => {
                need("subject", &self.subject)?;
                refuse("stream", self.stream.is_some())?;
                refuse("topic", self.topic.is_some())?;
                refuse("tables", !self.tables.is_empty())?;
            }
            SourceKind::Jetstream => {
                need("stream", &self.stream)?;
                need("subject", &self.subject)?;
                refuse("topic", self.topic.is_some())?;
                refuse("tables", !self.tables.is_empty())?;
                if !self.stream.iter().all(|s| plain_identifier(s)) {
                    return Err(fail("`stream`: letters, digits and _ only".into()));
                }
            }
            SourceKind::Mqtt => {
                need("topic", &self.topic)?;
                refuse("subject", self.subject.is_some())?;
                refuse("stream", self.stream.is_some())?;
                refuse("tables", !self.tables.is_empty())?;
            }
            SourceKind::Postgres => {
                if self.tables.is_empty() {
                    return Err(fail("a Postgres source needs `tables`".into()));
                }
                for table in &self.tables {
                    if !table.split('.').all(plain_identifier) || table.split('.').count() > 2 {
                        return Err(fail(format!(
                            "table `{table}`: expected `name` or `schema.name` (unquoted identifiers)"
                        )));
                    }
                }
                refuse("subject", self.subject.is_some())?;
                refuse("stream", self.stream.is_some())?;
                refuse("topic", self.topic.is_some())?;
            }
        }
        if self.ty.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(fail("`type` cannot be empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: SourceKind, url: &str) -> SourceSpec {
        SourceSpec {
            name: "s".into(),
            kind,
            url: url.into(),
            subject: None,
            stream: None,
            topic: None,
            tables: Vec::new(),
            ty: Some("t".into()),
            target: None,
        }
    }

    #[test]
    fn each_kind_needs_its_own_fields() {
        let mut nats = spec(SourceKind::Nats, "nats://127.0.0.1:4222");
        assert!(nats.validate().is_err());
        nats.subject = Some("orders.*".into());
        assert!(nats.validate().is_ok());
        nats.topic = Some("x".into());
        assert!(
            nats.validate()
                .unwrap_err()
                .problem
                .contains("does not apply")
        );

        let mut mqtt = spec(SourceKind::Mqtt, "nats://127.0.0.1:1883");
        mqtt.topic = Some("sensors/#".into());
        assert!(mqtt.validate().unwrap_err().problem.contains("mqtt://"));
        mqtt.url = "mqtt://127.0.0.1:1883".into();
        assert!(mqtt.validate().is_ok());

        let mut pg = spec(SourceKind::Postgres, "postgres://postgres@127.0.0.1/test");
        assert!(pg.validate().is_err());
        pg.tables = vec!["public.orders".into(), "items".into()];
        assert!(pg.validate().is_ok());
        pg.tables = vec!["orders; drop table x".into()];
        assert!(pg.validate().is_err());
        assert_eq!(pg.event_type(), "t");
        pg.ty = None;
        assert_eq!(pg.event_type(), "lambent.pg.change");
    }
}
