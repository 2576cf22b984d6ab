//! `lambent simulate` through the binary: the JSON contract, the table, the plot,
//! and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::BIN;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// A small trace in the Azure 2019 layout: a timer every 15 minutes, a bursty HTTP
/// function, and one that runs twice.
fn write_trace(dir: &Path) {
    let minutes = 180;
    let mut inv = String::from("HashOwner,HashApp,HashFunction,Trigger");
    for m in 0..minutes {
        inv.push_str(&format!(",{}", 480 + m));
    }
    inv.push('\n');
    type PerMinute = Box<dyn Fn(usize) -> u32>;
    let rows: [(&str, &str, PerMinute); 3] = [
        ("timer", "timer", Box::new(|m| u32::from(m % 15 == 0))),
        (
            "burst",
            "http",
            Box::new(|m| if m % 40 < 5 { 30 } else { 0 }),
        ),
        ("rare", "queue", Box::new(|m| u32::from(m == 3 || m == 150))),
    ];
    for (name, trigger, count) in &rows {
        inv.push_str(&format!("o,a,{name},{trigger}"));
        for m in 0..minutes {
            inv.push_str(&format!(",{}", count(m)));
        }
        inv.push('\n');
    }
    std::fs::write(dir.join("invocations.csv"), inv).unwrap();
    std::fs::write(
        dir.join("memory.csv"),
        "HashFunction,HashOwner,HashApp,SampleCount,AverageAllocatedMb\ntimer,o,a,1,256\nburst,o,a,1,512\nrare,o,a,1,128\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("durations.csv"),
        "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum\no,a,timer,2000,1,1,1\no,a,burst,900,1,1,1\no,a,rare,50,1,1,1\n",
    )
    .unwrap();
}

fn simulate(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("simulate")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_has_exactly_the_contract_keys_and_every_policy_sees_the_same_arrivals() {
    let tmp = tempfile::tempdir().unwrap();
    write_trace(tmp.path());
    let trace = tmp.path().to_str().unwrap();
    let out = simulate(&[
        "--trace",
        trace,
        "--policy",
        "fixed:10m,fixed:20m,histogram,mdp,mdp:cost-ratio=50",
        "--arrivals",
        "equidistant",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["policy"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "fixed:10m",
            "fixed:20m",
            "histogram",
            "mdp:cost-ratio=10",
            "mdp:cost-ratio=50"
        ]
    );
    let expected_invocations = 12 + 5 * 5 * 30 + 2;
    for r in &reports {
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "cold_start_pct_p50",
                "cold_start_pct_p75",
                "cold_starts",
                "invocations",
                "policy",
                "wasted_memory_gb_s"
            ]
        );
        assert_eq!(r["invocations"], expected_invocations, "{r}");
        // Each function's first call is cold, whatever the policy.
        assert!(r["cold_starts"].as_u64().unwrap() >= 3, "{r}");
    }
    // A 20-minute keep-alive keeps the 15-minute timer warm; 10 minutes does not,
    // and holds less memory.
    let cold = |i: usize| reports[i]["cold_starts"].as_u64().unwrap();
    let wasted = |i: usize| reports[i]["wasted_memory_gb_s"].as_f64().unwrap();
    assert!(cold(1) < cold(0), "{reports:?}");
    assert!(wasted(1) > wasted(0), "{reports:?}");
}

#[test]
fn a_table_and_a_plot_without_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    write_trace(tmp.path());
    let svg = tmp.path().join("plot.svg");
    let out = simulate(&[
        "--trace",
        tmp.path().to_str().unwrap(),
        "--policy",
        "fixed:10m,histogram",
        "--seed",
        "3",
        "--plot",
        svg.to_str().unwrap(),
        "--sweep",
        "1,10,100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("cold% p75") && table.contains("histogram"),
        "{table}"
    );
    assert!(
        table.contains("mdp:cost-ratio=100"),
        "the sweep is listed: {table}"
    );
    // No progress bar off a terminal.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains(">fixed:10m<"));
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    write_trace(tmp.path());
    let trace = tmp.path().to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--trace", trace, "--policy", "lru"],
            "unknown keep-alive policy",
        ),
        (
            vec!["--trace", trace, "--arrivals", "gaussian"],
            "uniform, poisson or equidistant",
        ),
        (vec!["--trace", "/nonexistent"], "invocations.csv"),
    ] {
        let out = simulate(&args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    std::fs::write(tmp.path().join("invocations.csv"), "HashOwner,HashApp\n").unwrap();
    let out = simulate(&["--trace", trace]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 1"), "{err}");
}
