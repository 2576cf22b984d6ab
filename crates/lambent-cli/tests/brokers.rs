//! Broker and database sources through the real binary and real servers: PostgreSQL
//! changes by logical decoding, core NATS, JetStream and MQTT — with Lambent stopped,
//! killed with -9, and the broker stopped and started again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, code_dir, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ECHO: &str = "import json\n\
def handler(event, context):\n    print('EVENT ' + json.dumps(event))\n";

/// Events a function saw, by `(source, id)`, with how often each came and the event.
type Seen = BTreeMap<String, (usize, Value)>;

/// What `function` printed, from its invocation logs.
fn seen(node: &Node, function: &str) -> Seen {
    let mut seen = BTreeMap::new();
    for i in node.invocations(function) {
        for line in i["logs"].as_str().unwrap_or("").lines() {
            if let Some(e) = line
                .strip_prefix("EVENT ")
                .and_then(|l| serde_json::from_str::<Value>(l).ok())
            {
                let key = format!(
                    "{} {}",
                    e["source"].as_str().unwrap(),
                    e["id"].as_str().unwrap()
                );
                seen.entry(key).or_insert((0, e.clone())).0 += 1;
            }
        }
    }
    seen
}

fn echo(node: &Node) -> tempfile::TempDir {
    let code = code_dir(&[("app.py", ECHO)]);
    node.deploy_app("echo", "python3", code.path(), &["--concurrency", "4"]);
    code
}

/// Whether a service answers on 127.0.0.1:`port`; when it does not, the test is
/// skipped, unless `LAMBENT_REQUIRE_SERVICES` is set (CI), where it fails.
fn service(name: &str, port: u16) -> bool {
    let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    if !up {
        assert!(
            std::env::var_os("LAMBENT_REQUIRE_SERVICES").is_none(),
            "{name} is not running on 127.0.0.1:{port}"
        );
        eprintln!("skipped: {name} is not running on 127.0.0.1:{port}");
    }
    up
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn source_status(node: &Node, name: &str) -> String {
    node.get("/v1/sources")["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| s["status"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

// ---- PostgreSQL ----

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

fn pg_count(sql: &str) -> i64 {
    runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(PG, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.query_one(sql, &[]).await.unwrap().get(0)
    })
}

fn pg(sql: &str) {
    runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(PG, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
    });
}

/// Drops a source's slot and publication (a slot left behind holds WAL for ever).
struct PgCleanup(String, String);

impl Drop for PgCleanup {
    fn drop(&mut self) {
        let (slot, table) = (&self.0, &self.1);
        let _ = std::panic::catch_unwind(|| {
            pg(&format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}';
                 DROP PUBLICATION IF EXISTS {slot}; DROP TABLE IF EXISTS {table};"
            ))
        });
    }
}

/// A table of the test's own and the name of a source on it; the source's slot and
/// publication and the table are dropped with it.
struct PgCase {
    table: String,
    name: String,
    data: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _cleanup: PgCleanup,
}

fn pg_case(prefix: &str, columns: &str) -> PgCase {
    let table = format!("{prefix}_{}", std::process::id());
    let name = format!("pg-{prefix}-{}", std::process::id());
    let cleanup = PgCleanup(format!("lambent_{}", name.replace('-', "_")), table.clone());
    pg(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns})"
    ));
    let dir = tempfile::tempdir().unwrap();
    PgCase {
        table,
        name,
        data: dir.path().join("data"),
        _dir: dir,
        _cleanup: cleanup,
    }
}

fn pg_source(node: &Node, name: &str, table: &str) {
    node.ok(&[
        "sources",
        "add",
        name,
        "--kind",
        "postgres",
        "--url",
        PG,
        "--table",
        table,
        "--type",
        "data_update",
        "--target",
        "echo",
    ]);
    wait_for("the PostgreSQL source connected", || {
        (source_status(node, name) == "connected").then_some(())
    });
}

#[test]
fn rows_changed_while_lambent_is_down_are_each_handled_once_after_it_starts() {
    if !service("PostgreSQL", 5432) {
        return;
    }
    let case = pg_case("orders", "id int primary key, item text");
    let (table, name, data) = (&case.table, &case.name, &case.data);
    let node = Node::start(data);
    let _code = echo(&node);
    pg_source(&node, name, table);
    pg(&format!("INSERT INTO {table} VALUES (1, 'book')"));
    wait_for("the first row handled", || {
        (seen(&node, "echo").len() == 1).then_some(())
    });

    // Lambent stops; rows change meanwhile.
    let mut node = node;
    assert!(node.terminate().success());
    pg(&format!(
        "INSERT INTO {table} SELECT g, 'item ' || g FROM generate_series(2, 6) g;
         UPDATE {table} SET item = 'pen' WHERE id = 2; DELETE FROM {table} WHERE id = 3"
    ));
    let node = Node::start(data);
    let events = wait_for("every change made while down handled", || {
        let s = seen(&node, "echo");
        (s.len() >= 8).then_some(s)
    });
    std::thread::sleep(Duration::from_millis(500));
    let events = seen(&node, "echo")
        .into_iter()
        .chain(events)
        .collect::<BTreeMap<_, _>>();
    assert_eq!(
        events.len(),
        8,
        "1 + 5 inserts, 1 update, 1 delete: {events:#?}"
    );
    assert!(
        events.values().all(|(n, _)| *n == 1),
        "each once: {events:#?}"
    );
    let ops: Vec<(String, Value)> = events
        .values()
        .map(|(_, e)| {
            (
                e["data"]["operation"].as_str().unwrap().to_owned(),
                e["data"]["row"]["id"].clone(),
            )
        })
        .collect();
    assert!(ops.contains(&("update".into(), Value::from(2))), "{ops:?}");
    assert!(ops.iter().any(|(op, _)| op == "delete"), "{ops:?}");
    let first = events.values().next().unwrap();
    assert_eq!(first.1["type"], "data_update");
    assert_eq!(first.1["subject"], format!("public.{table}"));

    // The slot was advanced past everything handled: nothing is left to read.
    let slot = format!("lambent_{}", name.replace('-', "_"));
    let unread = format!(
        "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, NULL,
             'proto_version', '1', 'publication_names', '{slot}')"
    );
    wait_for("the slot advanced", || {
        (pg_count(&unread) == 0).then_some(())
    });

    // Removing the source releases its slot (which would hold WAL for ever).
    let slots = format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'");
    assert_eq!(pg_count(&slots), 1);
    node.ok(&["sources", "rm", name]);
    wait_for("the slot dropped", || (pg_count(&slots) == 0).then_some(()));
}

#[test]
fn a_kill_9_between_a_postgres_commit_and_its_dispatch_loses_nothing() {
    if !service("PostgreSQL", 5432) {
        return;
    }
    let case = pg_case("items", "id int primary key");
    let (table, name, data) = (&case.table, &case.name, &case.data);
    let node = Node::start(data);
    let _code = echo(&node);
    pg_source(&node, name, table);
    // 50 transactions; the node dies while it reads, stores and dispatches them.
    for i in 0..50 {
        pg(&format!("INSERT INTO {table} VALUES ({i})"));
    }
    node.kill9();
    let node = Node::start(data);
    let events = wait_for("all 50 rows handled after the restart", || {
        let s = seen(&node, "echo");
        (s.len() >= 50).then_some(s)
    });
    assert_eq!(events.len(), 50);
    let ids: std::collections::BTreeSet<i64> = events
        .values()
        .map(|(_, e)| e["data"]["row"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 50, "every row, none twice");
    // A row handled before the kill may have been attempted again (at-least-once
    // delivery), but its event was stored once: the re-read was de-duplicated.
    let stored: usize = node.get("/v1/status")["deliveries"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap() as usize)
        .sum();
    assert_eq!(
        stored,
        50,
        "one delivery per row: {}",
        node.get("/v1/status")
    );
}

// ---- NATS ----

/// A broker of the test's own (so it can be stopped and started again) on a free
/// port, keeping its state in a directory of its own across restarts.
struct Broker {
    port: u16,
    dir: tempfile::TempDir,
    /// The broker's command for a port and a state directory.
    command: fn(u16, &std::path::Path) -> Command,
    /// Stop with SIGTERM (a clean shutdown) rather than SIGKILL.
    graceful: bool,
    child: Option<Child>,
}

impl Broker {
    fn start(command: fn(u16, &std::path::Path) -> Command, graceful: bool) -> Broker {
        let mut broker = Broker {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            command,
            graceful,
            child: None,
        };
        broker.restart();
        broker
    }

    fn restart(&mut self) {
        let child = (self.command)(self.port, self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker");
        self.child = Some(child);
        wait_for("the broker up", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.graceful {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
            } else {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nats-server with JetStream storing in `dir`.
fn nats_server(port: u16, dir: &std::path::Path) -> Command {
    let mut c = Command::new("nats-server");
    c.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir);
    c
}

/// Mosquitto persisting its sessions in `dir`.
fn mosquitto(port: u16, dir: &std::path::Path) -> Command {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut c = Command::new("mosquitto");
    c.arg("-c").arg(conf);
    c
}

/// A source through a Lambent stop (or kill -9) and a broker restart. `publish(port,
/// from)` publishes five messages numbered from `from`; `count` says how many of them
/// were handled. Returns what the function saw once all fifteen were.
fn survives_restarts(
    broker: &mut Broker,
    source: &[&str],
    kill_lambent: bool,
    publish: &dyn Fn(u16, usize),
    count: &dyn Fn(&Seen) -> usize,
) -> Seen {
    let name = source[0];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data);
    let _code = echo(&node);
    let mut add = vec!["sources", "add"];
    add.extend_from_slice(source);
    add.extend_from_slice(&["--target", "echo"]);
    node.ok(&add);
    wait_for("the source connected", || {
        (source_status(&node, name) == "connected").then_some(())
    });
    publish(broker.port, 0);
    wait_for("the first 5 handled", || {
        (count(&seen(&node, "echo")) == 5).then_some(())
    });

    // Lambent is down: the broker keeps what is published meanwhile (a stream, a
    // persistent session).
    let mut node = node;
    if kill_lambent {
        node.kill9();
    } else {
        assert!(node.terminate().success());
    }
    publish(broker.port, 5);
    let node = Node::start(&data);
    wait_for("the 5 published while Lambent was down", || {
        (count(&seen(&node, "echo")) >= 10).then_some(())
    });

    // The broker stops: the source says so, and resumes when it is back.
    broker.stop();
    wait_for("status says reconnecting", || {
        source_status(&node, name)
            .starts_with("reconnecting")
            .then_some(())
    });
    broker.restart();
    wait_for("the source connected again", || {
        (source_status(&node, name) == "connected").then_some(())
    });
    publish(broker.port, 10);
    wait_for("all 15 handled", || {
        let s = seen(&node, "echo");
        (count(&s) >= 15).then_some(s)
    })
}

fn nats_publish(port: u16, subject: &str, payloads: &[String], jetstream: bool) {
    runtime().block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        if jetstream {
            let js = async_nats::jetstream::new(client.clone());
            for p in payloads {
                js.publish(subject.to_owned(), p.clone().into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        } else {
            for p in payloads {
                client
                    .publish(subject.to_owned(), p.clone().into())
                    .await
                    .unwrap();
            }
            client.flush().await.unwrap();
        }
    });
}

#[test]
fn a_core_nats_message_is_handled() {
    if !service("NATS", 4222) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    let _code = echo(&node);
    let subject = format!("lambent.test.{}.core", std::process::id());
    node.ok(&[
        "sources",
        "add",
        "core",
        "--kind",
        "nats",
        "--url",
        "nats://127.0.0.1:4222",
        "--subject",
        &format!("{subject}.*"),
        "--type",
        "ping",
        "--target",
        "echo",
    ]);
    wait_for("the NATS source connected", || {
        (source_status(&node, "core") == "connected").then_some(())
    });
    nats_publish(
        4222,
        &format!("{subject}.a"),
        &[r#"{"n": 1}"#.into()],
        false,
    );
    let events = wait_for("the message handled", || {
        let s = seen(&node, "echo");
        (!s.is_empty()).then_some(s)
    });
    let (_, e) = events.values().next().unwrap();
    assert_eq!(e["type"], "ping");
    assert_eq!(e["subject"], format!("{subject}.a"));
    assert_eq!(e["data"]["n"], 1);
    assert_eq!(e["source"], "lambent/nats/core");
}

#[test]
fn jetstream_messages_survive_lambent_and_broker_restarts_each_handled_once() {
    if !service("NATS", 4222) {
        return;
    }
    let mut broker = Broker::start(nats_server, false);
    let url = format!("nats://127.0.0.1:{}", broker.port);
    let source = [
        "orders",
        "--kind",
        "jetstream",
        "--url",
        &url,
        "--stream",
        "ORDERS",
        "--subject",
        "orders.>",
        "--type",
        "order_placed",
    ];
    let publish = |port: u16, from: usize| {
        let batch: Vec<String> = (from..from + 5)
            .map(|i| format!(r#"{{"order": {i}}}"#))
            .collect();
        nats_publish(port, "orders.new", &batch, true);
    };
    let events = survives_restarts(&mut broker, &source, true, &publish, &|s| s.len());
    assert_eq!(events.len(), 15);
    assert!(
        events.values().all(|(n, _)| *n == 1),
        "each once: {events:#?}"
    );
    let (_, e) = events.values().next().unwrap();
    assert_eq!(e["type"], "order_placed");
    assert_eq!(e["subject"], "orders.new");
}

// ---- MQTT ----

fn mqtt_publish(port: u16, topic: &str, payloads: &[String]) {
    runtime().block_on(async {
        let mut options =
            rumqttc::MqttOptions::new(format!("pub-{}", free_port()), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
        for p in payloads {
            client
                .publish(
                    topic,
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    p.clone().into_bytes(),
                )
                .await
                .unwrap();
        }
        // Wait for every PUBACK: the broker has each message.
        let mut acked = 0;
        while acked < payloads.len() {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) =
                eventloop.poll().await.unwrap()
            {
                acked += 1;
            }
        }
        client.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    });
}

#[test]
fn mqtt_qos1_messages_survive_lambent_and_broker_restarts() {
    if !service("Mosquitto", 1883) {
        return;
    }
    let mut broker = Broker::start(mosquitto, true);
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let source = [
        "sensors",
        "--kind",
        "mqtt",
        "--url",
        &url,
        "--topic",
        "sensors/#",
        "--type",
        "reading",
    ];
    let publish = |port: u16, from: usize| {
        let batch: Vec<String> = (from..from + 5)
            .map(|i| format!(r#"{{"reading": {i}}}"#))
            .collect();
        let topic = if from < 10 {
            "sensors/t1"
        } else {
            "sensors/t2"
        };
        mqtt_publish(port, topic, &batch);
    };
    // At least once: count the readings, not the events.
    let readings = |s: &Seen| {
        s.values()
            .filter_map(|(_, e)| e["data"]["reading"].as_i64())
            .collect::<std::collections::BTreeSet<i64>>()
            .len()
    };
    let events = survives_restarts(&mut broker, &source, false, &publish, &readings);
    let (_, e) = events.values().next().unwrap();
    assert_eq!(e["type"], "reading");
    assert!(e["subject"].as_str().unwrap().starts_with("sensors/"));
}
