//! Crash safety: kill -9 the node while 5,000 events are being published and
//! handled, at several points; after restarts every event that got a 202 is handled
//! at least once (counted by event id, from what the handler itself wrote).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

const EVENTS: usize = 5_000;
const PUBLISHERS: usize = 8;
/// Kill the node when this many events have been acknowledged (cumulative).
const KILL_POINTS: [usize; 3] = [700, 2_300, 3_900];

#[test]
fn every_acknowledged_event_is_handled_after_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sink = Sink::start();
    let code = sink.app("def handler(event, context):\n    report(event['id'])\n");

    let queue: Arc<Mutex<VecDeque<String>>> = Arc::new(Mutex::new(
        (0..EVENTS).map(|i| format!("crash-{i:05}")).collect(),
    ));
    let acked: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));

    let mut kills = KILL_POINTS.iter().copied().peekable();
    let mut round = 0;
    loop {
        round += 1;
        let node = Node::start(&data);
        if round == 1 {
            let env = sink.env();
            node.deploy_app(
                "recorder",
                "python3.11",
                code.path(),
                &["--concurrency", "8", "--grant", "net", "--env", &env],
            );
            node.ok(&[
                "rules",
                "add",
                "crash",
                "--pattern",
                r#"{"type": ["crash.test"]}"#,
                "--target",
                "recorder",
            ]);
        }
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|_| {
                let (queue, acked, url) = (queue.clone(), acked.clone(), node.url.clone());
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    loop {
                        let Some(id) = queue.lock().unwrap().pop_front() else {
                            return;
                        };
                        let body =
                            event(&id, "crash.test", serde_json::json!({"n": id})).to_string();
                        let sent = http
                            .post(format!("{url}/v1/events"))
                            .header("content-type", "application/cloudevents+json")
                            .body(body)
                            .send();
                        match sent {
                            Ok(r) if r.status() == 202 => {
                                acked.lock().unwrap().insert(id);
                            }
                            // The node died (or refused): publish it again to the next node.
                            _ => {
                                queue.lock().unwrap().push_back(id);
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        match kills.next() {
            Some(point) => {
                wait_for(&format!("{point} acknowledged events"), || {
                    (acked.lock().unwrap().len() >= point).then_some(())
                });
                node.kill9();
                for p in publishers {
                    p.join().unwrap();
                }
                let handled = sink.lines().len();
                eprintln!(
                    "round {round}: killed with {} acknowledged, {handled} handled so far",
                    acked.lock().unwrap().len()
                );
            }
            None => {
                for p in publishers {
                    p.join().unwrap();
                }
                assert!(queue.lock().unwrap().is_empty());
                let acked = acked.lock().unwrap().clone();
                assert_eq!(acked.len(), EVENTS);
                let handled = wait_for("every acknowledged event to be handled", || {
                    let ids = sink.lines();
                    let distinct: HashSet<String> = ids.iter().cloned().collect();
                    acked.is_subset(&distinct).then_some(ids)
                });
                let distinct: HashSet<&String> = handled.iter().collect();
                assert!(
                    distinct.iter().all(|id| acked.contains(*id)),
                    "handled an id nobody published"
                );
                let duplicates = handled.len() - distinct.len();
                eprintln!(
                    "{} events acknowledged across {} kill -9s; all handled; {duplicates} duplicate deliveries ({:.2}%)",
                    acked.len(),
                    KILL_POINTS.len(),
                    duplicates as f64 * 100.0 / EVENTS as f64
                );
                // The store agrees: every delivery is settled as delivered.
                let status = node.get("/v1/status");
                assert_eq!(
                    status["deliveries"],
                    serde_json::json!({"delivered": EVENTS}),
                    "{status}"
                );
                return;
            }
        }
    }
}
