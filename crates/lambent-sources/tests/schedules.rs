//! The scheduler under an injected clock: nominal times, restarts, clock steps and
//! outages. No test sleeps; the clock moves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{T0, node, on_node};
use lambent_core::ScheduleSpec;
use lambent_store::ManualClock;

/// The names of the schedules one pass fired.
async fn fired_names(scheduler: &lambent_sources::Scheduler) -> Vec<String> {
    let tick = scheduler.tick().await.unwrap();
    tick.fired.into_iter().map(|f| f.0).collect()
}

fn every_ten_seconds() -> ScheduleSpec {
    ScheduleSpec {
        name: "tick".into(),
        cron: Some("*/10 * * * * *".into()),
        rate: None,
        at: None,
        timezone: None,
        ty: "timer_trigger".into(),
        target: None,
        data: Some(serde_json::json!({"job": "cleanup"})),
    }
}

#[tokio::test]
async fn schedules_fire_at_their_nominal_times_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 3_000);
    let (engine, scheduler) = node(dir.path(), &clock).await;
    engine.put_schedule(every_ten_seconds()).await.unwrap();

    assert!(scheduler.tick().await.unwrap().fired.is_empty());
    clock.set(T0 + 9_999);
    let tick = scheduler.tick().await.unwrap();
    assert!(tick.fired.is_empty());
    assert_eq!(tick.next_ms, Some(T0 + 10_000));
    clock.set(T0 + 10_000);
    let tick = scheduler.tick().await.unwrap();
    assert_eq!(tick.fired, vec![("tick".to_owned(), T0 + 10_000, 0)]);
    assert_eq!(tick.next_ms, Some(T0 + 20_000));
    // Again at the same instant: nothing more.
    assert!(scheduler.tick().await.unwrap().fired.is_empty());

    let event = engine
        .event(
            "lambent/schedules",
            "schedule/tick/2027-01-01T00:00:10.000Z",
        )
        .await
        .unwrap();
    let body = &event.event;
    assert_eq!(body["type"], "timer_trigger");
    assert_eq!(body["time"], "2027-01-01T00:00:10.000Z");
    assert_eq!(body["data"]["job"], "cleanup");
    assert_eq!(body["subject"], "tick");
}

#[test]
fn a_restart_does_not_fire_twice_and_a_clock_stepping_back_fires_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    on_node(dir.path(), &clock, async |engine, scheduler| {
        engine.put_schedule(every_ten_seconds()).await.unwrap();
        clock.set(T0 + 10_500);
        assert_eq!(scheduler.tick().await.unwrap().fired.len(), 1);
    });
    // A new node on the same data, at the same time: the firing is not repeated.
    on_node(dir.path(), &clock, async |engine, scheduler| {
        assert!(scheduler.tick().await.unwrap().fired.is_empty());
        // The clock steps back past the last firing, then forward again to it.
        clock.set(T0 + 1_000);
        assert!(scheduler.tick().await.unwrap().fired.is_empty());
        clock.set(T0 + 10_000);
        assert!(scheduler.tick().await.unwrap().fired.is_empty());
        clock.set(T0 + 20_000);
        assert_eq!(
            scheduler.tick().await.unwrap().fired,
            vec![("tick".to_owned(), T0 + 20_000, 0)]
        );
        let record = &engine.schedules().await.unwrap()[0];
        assert_eq!(record.fired, 2);
        assert_eq!(record.last_nominal_ms, Some(T0 + 20_000));
    });
}

#[test]
fn a_three_hour_outage_fires_once_not_one_thousand_and_eighty_times() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    on_node(dir.path(), &clock, async |engine, scheduler| {
        engine.put_schedule(every_ten_seconds()).await.unwrap();
        clock.set(T0 + 10_000);
        assert_eq!(scheduler.tick().await.unwrap().fired.len(), 1);
    });
    clock.set(T0 + 10_000 + 3 * 3_600_000 + 5_000);
    on_node(dir.path(), &clock, async |engine, scheduler| {
        let tick = scheduler.tick().await.unwrap();
        // The latest missed time, once, saying how many others were skipped.
        assert_eq!(
            tick.fired,
            vec![("tick".to_owned(), T0 + 10_000 + 3 * 3_600_000, 1_079)]
        );
        assert!(scheduler.tick().await.unwrap().fired.is_empty());
        let event = engine
            .event(
                "lambent/schedules",
                "schedule/tick/2027-01-01T03:00:10.000Z",
            )
            .await
            .unwrap();
        assert_eq!(event.event["missed"], "1079");
        assert_eq!(engine.schedules().await.unwrap()[0].fired, 2);
    });
}

#[tokio::test]
async fn rates_and_one_time_schedules_fire_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (engine, scheduler) = node(dir.path(), &clock).await;
    let rate = ScheduleSpec {
        name: "rate".into(),
        cron: None,
        rate: Some("5 minutes".into()),
        ..every_ten_seconds()
    };
    let once = ScheduleSpec {
        name: "once".into(),
        cron: None,
        at: Some("2027-01-01T00:07:00Z".into()),
        ..every_ten_seconds()
    };
    engine.put_schedule(rate).await.unwrap();
    engine.put_schedule(once).await.unwrap();
    clock.set(T0 + 5 * 60_000);
    let fired = fired_names(&scheduler).await;
    assert_eq!(fired, vec!["rate"]);
    clock.set(T0 + 7 * 60_000);
    let tick = scheduler.tick().await.unwrap();
    assert_eq!(tick.fired.len(), 1);
    assert_eq!(tick.fired[0].0, "once");
    clock.set(T0 + 60 * 60_000);
    let fired = fired_names(&scheduler).await;
    assert_eq!(fired, vec!["rate"], "a one-time schedule fires once");

    let bad = ScheduleSpec {
        name: "bad".into(),
        cron: Some("not cron".into()),
        ..every_ten_seconds()
    };
    let err = engine.put_schedule(bad).await.unwrap_err().to_string();
    assert!(err.contains("invalid cron expression"), "{err}");
    let missing = ScheduleSpec {
        name: "orphan".into(),
        target: Some("nobody".into()),
        ..every_ten_seconds()
    };
    let err = engine.put_schedule(missing).await.unwrap_err().to_string();
    assert!(err.contains("nobody"), "{err}");
    assert_eq!(engine.schedules().await.unwrap().len(), 2);
}
