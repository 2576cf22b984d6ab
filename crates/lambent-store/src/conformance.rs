//! The delivery contract's conformance suite: random sequences of publish / fetch /
//! ack / nak / terminate / extend / release / expire (the clock moves) / redrive /
//! compact (retention) / restart, run against an [`EventLog`] and a small in-memory
//! model of the contract, comparing every answer. Any implementation runs it through a [`Harness`]; the SQLite store
//! runs it in `tests/conformance.rs`.
//!
//! Deliveries are named by `(source, event id, function)`: an event reaches each
//! function once, and implementations choose their own delivery ids and tokens.

use crate::{
    Delivery, DeliveryId, EventLog, Fetch, LeaseRef, LeaseToken, ManualClock, NewEvent,
    PayloadMode, PublishOutcome, Redrive, StoreError, Target,
};
use lambent_core::{CloudEvent, DeadLetterReason, EpochMs};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Opens the implementation under test.
#[async_trait::async_trait]
pub trait Harness: Send {
    /// Opens the store on `clock`: empty the first time, and on the same data after
    /// the previous handle was dropped (a restart).
    async fn open(&mut self, clock: ManualClock) -> Arc<dyn EventLog>;
}

/// A run's failure: which step, what was done, and how the answers differ.
pub type Failure = String;

const FUNCTIONS: [&str; 2] = ["f", "g"];
const SOURCES: [&str; 2] = ["/a", "/b"];

/// A small deterministic generator (splitmix64): the seed names the run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

type Key = (String, String, String); // (source, event id, function)

#[derive(Debug, Clone, PartialEq)]
enum State {
    Pending { due: EpochMs },
    Leased { token: LeaseToken, until: EpochMs },
    Delivered { at: EpochMs },
    Dead { reason: DeadLetterReason },
}

#[derive(Debug, Clone)]
struct ModelDelivery {
    order: u64,
    /// The implementation's id for it, once a fetch revealed it.
    id: Option<DeliveryId>,
    state: State,
    attempt: u32,
    interrupted: bool,
}

/// The contract, as plainly as it can be said.
#[derive(Default)]
struct Model {
    /// Events by `(source, id)`, with when they were received.
    events: BTreeMap<(String, String), EpochMs>,
    deliveries: BTreeMap<Key, ModelDelivery>,
    next_order: u64,
}

impl Model {
    fn publish(&mut self, now: EpochMs, source: &str, id: &str, targets: &[&str]) -> bool {
        if self.events.contains_key(&(source.into(), id.into())) {
            return false;
        }
        self.events.insert((source.into(), id.into()), now);
        for f in targets {
            self.next_order += 1;
            self.deliveries.insert(
                (source.into(), id.into(), (*f).into()),
                ModelDelivery {
                    order: self.next_order,
                    id: None,
                    state: State::Pending { due: now },
                    attempt: 0,
                    interrupted: false,
                },
            );
        }
        true
    }

    /// Which deliveries a fetch leases, oldest due first, after expiring and
    /// dead-lettering; the tokens are filled in from the implementation's answer.
    fn fetch(&mut self, now: EpochMs, function: &str, fetch: Fetch) -> Vec<(Key, u32)> {
        for (key, d) in self.deliveries.iter_mut() {
            if key.2 != function {
                continue;
            }
            if let State::Leased { until, .. } = d.state
                && until < now
            {
                d.state = State::Pending { due: now };
                d.interrupted = true;
            }
            if matches!(d.state, State::Pending { .. })
                && d.interrupted
                && d.attempt >= fetch.max_attempts
            {
                d.state = State::Dead {
                    reason: DeadLetterReason::Interrupted,
                };
            }
        }
        let mut due: Vec<(EpochMs, u64, Key)> = self
            .deliveries
            .iter()
            .filter_map(|(key, d)| match d.state {
                State::Pending { due } if key.2 == function && due <= now => {
                    Some((due, d.order, key.clone()))
                }
                _ => None,
            })
            .collect();
        due.sort();
        due.into_iter()
            .take(fetch.max)
            .filter_map(|(_, _, key)| {
                let d = self.deliveries.get_mut(&key)?;
                d.attempt += 1;
                d.state = State::Leased {
                    token: 0,
                    until: now + fetch.lease_ms,
                };
                Some((key, d.attempt))
            })
            .collect()
    }

    /// The delivery whose current, unexpired lease this is.
    fn holder(&mut self, now: EpochMs, key: &Key, lease: LeaseRef) -> Option<&mut ModelDelivery> {
        let d = self.deliveries.get_mut(key)?;
        if d.id != Some(lease.delivery) {
            return None; // a delivery of the same key published again after compaction
        }
        match d.state {
            State::Leased { token: t, until } if t == lease.token && until >= now => Some(d),
            _ => None,
        }
    }

    fn restart(&mut self, now: EpochMs) {
        for d in self.deliveries.values_mut() {
            if let State::Leased { .. } = d.state {
                d.state = State::Pending { due: now };
                d.interrupted = true;
            }
        }
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for d in self.deliveries.values() {
            let name = match d.state {
                State::Pending { .. } => "pending",
                State::Leased { .. } => "leased",
                State::Delivered { .. } => "delivered",
                State::Dead { .. } => "dead_lettered",
            };
            *out.entry(name.to_owned()).or_insert(0) += 1;
        }
        out
    }

    /// Retention: delivered deliveries settled before `cut`, then events received
    /// before it that no delivery needs; returns how many went.
    fn compact(&mut self, cut: EpochMs) -> usize {
        let before = self.deliveries.len() + self.events.len();
        self.deliveries
            .retain(|_, d| !matches!(d.state, State::Delivered { at } if at < cut));
        let deliveries = &self.deliveries;
        self.events.retain(|(source, id), received| {
            *received >= cut || deliveries.keys().any(|(s, i, _)| s == source && i == id)
        });
        before - self.deliveries.len() - self.events.len()
    }

    fn due_functions(&self, now: EpochMs) -> BTreeSet<String> {
        self.deliveries
            .iter()
            .filter(|(_, d)| match d.state {
                State::Pending { due } => due <= now,
                State::Leased { until, .. } => until < now,
                _ => false,
            })
            .map(|(k, _)| k.2.clone())
            .collect()
    }
}

fn key_of(d: &Delivery) -> Key {
    (
        d.event.source().to_owned(),
        d.event.id().to_owned(),
        d.function.clone(),
    )
}

fn new_event(source: &str, id: &str, targets: &[&str]) -> NewEvent {
    let event = CloudEvent::builder(id, source, "conformance")
        .build()
        .unwrap_or_else(|e| unreachable!("a valid test event: {e}"));
    NewEvent::new(
        event,
        targets
            .iter()
            .map(|f| Target {
                function: (*f).into(),
                mode: PayloadMode::CloudEvent,
            })
            .collect(),
    )
}

fn lease_result(r: crate::Result<()>) -> Result<bool, String> {
    match r {
        Ok(()) => Ok(true),
        Err(StoreError::LeaseLost { .. }) => Ok(false),
        Err(e) => Err(format!("unexpected error: {e}")),
    }
}

/// Runs one random sequence of `steps` operations; `Err` describes the first difference.
pub async fn run(harness: &mut dyn Harness, seed: u64, steps: usize) -> Result<(), Failure> {
    let mut rng = Rng(seed);
    let clock = ManualClock::new(1_700_000_000_000);
    let mut log = Some(harness.open(clock.clone()).await);
    let mut model = Model::default();
    // Every lease the implementation handed out, current or stale.
    let mut leases: Vec<(Key, LeaseRef)> = Vec::new();
    let mut ids: HashMap<Key, DeliveryId> = HashMap::new();
    let mut trail: Vec<String> = Vec::new();
    for step in 0..steps {
        let Some(store) = log.clone() else {
            return Err("no store".into());
        };
        let now = crate::Clock::now_ms(&clock);
        let fail = |trail: &[String], what: String| -> Failure {
            format!(
                "seed {seed}, step {step}: {what}\nsteps so far:\n  {}",
                trail.join("\n  ")
            )
        };
        match rng.below(11) {
            0 | 1 => {
                let n = 1 + rng.below(3) as usize;
                let mut batch = Vec::new();
                let mut expect = Vec::new();
                let mut seen = BTreeSet::new();
                for _ in 0..n {
                    let source = *rng.pick(&SOURCES);
                    let id = format!("e{}", rng.below(12));
                    let targets: Vec<&str> = FUNCTIONS
                        .iter()
                        .copied()
                        .filter(|_| rng.below(3) > 0)
                        .collect();
                    let fresh = seen.insert((source, id.clone()))
                        && model.publish(now, source, &id, &targets);
                    expect.push(fresh.then_some(targets.len()));
                    batch.push(new_event(source, &id, &targets));
                }
                trail.push(format!("publish {:?}", expect));
                let got = store
                    .publish(batch)
                    .await
                    .map_err(|e| format!("publish failed: {e}"))?;
                let got: Vec<Option<usize>> = got
                    .into_iter()
                    .map(|o| match o {
                        PublishOutcome::Accepted { deliveries, .. } => Some(deliveries),
                        PublishOutcome::Duplicate => None,
                    })
                    .collect();
                if got != expect {
                    return Err(fail(
                        &trail,
                        format!("publish answered {got:?}, model {expect:?}"),
                    ));
                }
            }
            2 | 3 => {
                let function = *rng.pick(&FUNCTIONS);
                let fetch = Fetch {
                    max: 1 + rng.below(4) as usize,
                    lease_ms: *rng.pick(&[1_000, 5_000]),
                    max_attempts: 2 + rng.below(2) as u32,
                };
                trail.push(format!("fetch {function} {fetch:?}"));
                let mut expect = model.fetch(now, function, fetch);
                let got = store
                    .fetch(function, fetch)
                    .await
                    .map_err(|e| format!("fetch failed: {e}"))?;
                let mut got_keys: Vec<(Key, u32)> =
                    got.iter().map(|d| (key_of(d), d.attempt)).collect();
                got_keys.sort();
                expect.sort();
                if got_keys != expect {
                    return Err(fail(
                        &trail,
                        format!("fetch leased {got_keys:?}, model {expect:?}"),
                    ));
                }
                for d in &got {
                    let key = key_of(d);
                    if let Some(m) = model.deliveries.get_mut(&key) {
                        m.id = Some(d.id);
                        if let State::Leased { token, .. } = &mut m.state {
                            *token = d.token;
                        }
                    }
                    ids.insert(key.clone(), d.id);
                    leases.push((key, d.lease()));
                }
            }
            4..=6 if !leases.is_empty() => {
                // Mostly the newest leases (likely current), sometimes a stale one.
                let recent = leases.len().saturating_sub(4);
                let index = if rng.below(4) == 0 {
                    rng.below(leases.len() as u64) as usize
                } else {
                    recent + rng.below((leases.len() - recent) as u64) as usize
                };
                let (key, lease) = leases[index].clone();
                let op = rng.below(5);
                let delay = *rng.pick(&[0, 2_000]);
                trail.push(format!("settle op {op} on {key:?} token {}", lease.token));
                let valid = model.holder(now, &key, lease).is_some();
                let got = match op {
                    0 => store.ack(lease).await,
                    1 => store.nak(lease, delay, "failed").await,
                    2 => {
                        store
                            .terminate(lease, DeadLetterReason::MaxAttempts, "gave up")
                            .await
                    }
                    3 => store.extend(lease, 5_000).await,
                    _ => store.release(lease).await,
                };
                let got = lease_result(got).map_err(|e| fail(&trail, e))?;
                if got != valid {
                    return Err(fail(
                        &trail,
                        format!("settle accepted: {got}, model says the lease is valid: {valid}"),
                    ));
                }
                if let Some(d) = model.holder(now, &key, lease) {
                    match op {
                        0 => d.state = State::Delivered { at: now },
                        1 => {
                            d.state = State::Pending { due: now + delay };
                            d.interrupted = false;
                        }
                        2 => {
                            d.state = State::Dead {
                                reason: DeadLetterReason::MaxAttempts,
                            }
                        }
                        3 => {
                            if let State::Leased { token, .. } = d.state {
                                d.state = State::Leased {
                                    token,
                                    until: now + 5_000,
                                };
                            }
                        }
                        _ => {
                            d.state = State::Pending { due: now };
                            d.attempt = d.attempt.saturating_sub(1);
                        }
                    }
                }
            }
            7 => {
                let ms = *rng.pick(&[500, 1_500, 6_000]);
                trail.push(format!("clock +{ms} ms"));
                clock.advance(ms);
            }
            8 => {
                let dead: Vec<Key> = model
                    .deliveries
                    .iter()
                    .filter(|(_, d)| matches!(d.state, State::Dead { .. }))
                    .map(|(k, _)| k.clone())
                    .collect();
                let (which, chosen): (Redrive, Vec<Key>) = if rng.below(2) == 0 || dead.is_empty() {
                    (Redrive::All { function: None }, dead)
                } else {
                    let k = rng.pick(&dead).clone();
                    match ids.get(&k) {
                        Some(id) => (Redrive::Ids(vec![*id]), vec![k]),
                        None => continue,
                    }
                };
                trail.push(format!("redrive {which:?}"));
                for k in &chosen {
                    if let Some(d) = model.deliveries.get_mut(k) {
                        d.state = State::Pending { due: now };
                        d.attempt = 0;
                        d.interrupted = false;
                    }
                }
                let n = store
                    .redrive(which)
                    .await
                    .map_err(|e| format!("redrive failed: {e}"))?;
                if n != chosen.len() {
                    return Err(fail(
                        &trail,
                        format!("redrive moved {n}, model {}", chosen.len()),
                    ));
                }
            }
            10 => {
                let cut = now - *rng.pick(&[0, 3_000]);
                trail.push(format!("compact before {cut}"));
                let expect = model.compact(cut);
                let got = store
                    .compact(cut, 100_000)
                    .await
                    .map_err(|e| format!("compact failed: {e}"))?;
                if got != expect {
                    return Err(fail(
                        &trail,
                        format!("compact removed {got}, model {expect}"),
                    ));
                }
            }
            9 => {
                trail.push("restart".into());
                drop(store);
                drop(log.take()); // release the store (and its lock) before reopening
                model.restart(now);
                log = Some(harness.open(clock.clone()).await);
            }
            _ => continue,
        }
        let Some(store) = log.clone() else {
            return Err("no store".into());
        };
        // After every step: the same counts, dead letters and due functions.
        let counts: BTreeMap<String, u64> = store
            .delivery_counts()
            .await
            .map_err(|e| format!("counts failed: {e}"))?
            .into_iter()
            .collect();
        if counts != model.counts() {
            return Err(fail(
                &trail,
                format!("counts {counts:?}, model {:?}", model.counts()),
            ));
        }
        let mut dead: Vec<(Key, String)> = store
            .dead_letters(None, 10_000)
            .await
            .map_err(|e| format!("dead letters failed: {e}"))?
            .into_iter()
            .map(|d| {
                (
                    (d.event_source, d.event_id, d.function),
                    d.reason.as_str().to_owned(),
                )
            })
            .collect();
        dead.sort();
        let mut model_dead: Vec<(Key, String)> = model
            .deliveries
            .iter()
            .filter_map(|(k, d)| match d.state {
                State::Dead { reason } => Some((k.clone(), reason.as_str().to_owned())),
                _ => None,
            })
            .collect();
        model_dead.sort();
        if dead != model_dead {
            return Err(fail(
                &trail,
                format!("dead letters {dead:?}, model {model_dead:?}"),
            ));
        }
        let now = crate::Clock::now_ms(&clock);
        let due: BTreeSet<String> = store
            .due()
            .await
            .map_err(|e| format!("due failed: {e}"))?
            .functions
            .into_iter()
            .collect();
        if due != model.due_functions(now) {
            return Err(fail(
                &trail,
                format!("due {due:?}, model {:?}", model.due_functions(now)),
            ));
        }
    }
    Ok(())
}

/// The token contract: a token is found by its hash until revoked and after (marked),
/// revocation happens once, listings hold every token ever made, and hashes are unique.
pub async fn tokens(store: &dyn crate::TokenStore) -> Result<(), Failure> {
    use crate::{TokenRecord, TokenScope};
    let token = |id: &str, scope| TokenRecord {
        id: id.into(),
        name: format!("name-{id}"),
        scope,
        created_ms: 1_700_000_000_000,
        revoked_ms: None,
    };
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
    let e = |e: StoreError| format!("unexpected error: {e}");
    check(
        store.list_tokens().await.map_err(e)?.is_empty(),
        "a new store has tokens",
    )?;
    store
        .put_token(token("t1", TokenScope::Admin), "h1".into())
        .await
        .map_err(e)?;
    store
        .put_token(token("t2", TokenScope::Publish), "h2".into())
        .await
        .map_err(e)?;
    check(
        store
            .put_token(token("t3", TokenScope::Read), "h1".into())
            .await
            .is_err(),
        "a second token with the same hash was accepted",
    )?;
    check(
        store.token_by_hash("h2").await.map_err(e)? == Some(token("t2", TokenScope::Publish)),
        "token_by_hash did not return the publish token",
    )?;
    check(
        store.token_by_hash("nope").await.map_err(e)?.is_none(),
        "an unknown hash found a token",
    )?;
    check(
        store.revoke_token("t2", 5).await.map_err(e)?,
        "revoking a live token answered false",
    )?;
    check(
        !store.revoke_token("t2", 6).await.map_err(e)?,
        "revoking twice answered true",
    )?;
    check(
        !store.revoke_token("nope", 6).await.map_err(e)?,
        "revoking an unknown token answered true",
    )?;
    check(
        store
            .token_by_hash("h2")
            .await
            .map_err(e)?
            .and_then(|t| t.revoked_ms)
            == Some(5),
        "a revoked token is not marked revoked at its first revocation time",
    )?;
    let ids: Vec<String> = store
        .list_tokens()
        .await
        .map_err(e)?
        .into_iter()
        .map(|t| t.id)
        .collect();
    check(
        ids == ["t1", "t2"],
        "the listing is not every token, oldest first",
    )
}
