//! `lambent simulate`: replays an invocation trace through the keep-alive policies
//! (the same `lambent-scale` code the node's pool runs) and reports each.

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lambent_scale::sim::{Arrivals, Report, simulate};
use lambent_scale::trace::Trace;
use lambent_scale::{KeepAlivePolicy, Mdp, parse_policy};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct SimulateArgs {
    /// A directory with invocations.csv (Azure Functions 2019 layout) and optionally
    /// durations.csv and memory.csv.
    #[arg(long)]
    trace: PathBuf,
    /// Policies, comma-separated: fixed:10m, histogram, mdp, mdp:cost-ratio=R.
    #[arg(long, default_value = "fixed:10m,fixed:20m,histogram,mdp")]
    policy: String,
    /// How arrivals are placed inside each trace minute.
    #[arg(long, default_value = "uniform", value_parser = parse_arrivals)]
    arrivals: Arrivals,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One JSON array of results instead of a table.
    #[arg(long)]
    json: bool,
    /// Draw cold-start % against wasted memory to this SVG: an MDP sweep over
    /// --sweep's cost ratios, with the --policy policies as points.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Cost ratios of the MDP sweep that --plot draws.
    #[arg(
        long,
        default_value = "1,2,5,10,20,50,100,200,500",
        value_delimiter = ','
    )]
    sweep: Vec<f64>,
}

fn parse_arrivals(s: &str) -> Result<Arrivals, String> {
    s.parse()
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let policies: Vec<Arc<dyn KeepAlivePolicy>> = args
        .policy
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(parse_policy)
        .collect::<Result<_, _>>()?;
    if policies.is_empty() {
        bail!("--policy names no policy");
    }
    let sweep: Vec<(f64, Arc<dyn KeepAlivePolicy>)> = match &args.plot {
        None => Vec::new(),
        Some(_) => args
            .sweep
            .iter()
            .map(|&r| {
                if !(r.is_finite() && r > 0.0) {
                    bail!("--sweep: cost ratio {r} must be a positive number");
                }
                let mdp = Mdp {
                    cost_ratio: r,
                    ..Mdp::default()
                };
                Ok((r, Arc::new(mdp) as Arc<dyn KeepAlivePolicy>))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let trace = Trace::load(&args.trace)
        .with_context(|| format!("reading the trace in {}", args.trace.display()))?;
    let runs = policies.len() + sweep.len();
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new((trace.functions.len() * runs) as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:>28} [{bar:40}] {pos}/{len} functions, {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = std::time::Instant::now();
    let run_one = |p: &dyn KeepAlivePolicy| {
        bar.set_message(p.name());
        simulate(&trace, p, args.arrivals, args.seed, &|| bar.inc(1))
    };
    let reports: Vec<Report> = policies.iter().map(|p| run_one(p.as_ref())).collect();
    let swept: Vec<(f64, Report)> = sweep
        .iter()
        .map(|(r, p)| (*r, run_one(p.as_ref())))
        .collect();
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print_table(&trace, &args, &reports);
        println!(
            "{} functions, {} minutes, {} runs in {:.2} s",
            trace.functions.len(),
            trace.minutes,
            runs,
            elapsed.as_secs_f64()
        );
    }
    if let Some(path) = &args.plot {
        let caption = format!(
            "{} ({} arrivals, seed {})",
            args.trace
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            args.arrivals.as_str(),
            args.seed
        );
        let svg = lambent_scale::plot::chart(&swept, &reports, &caption);
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        if !args.json {
            println!("plot: {}", path.display());
            for (_, r) in &swept {
                println!("  {}", row(r));
            }
        }
    }
    Ok(())
}

fn print_table(trace: &Trace, args: &SimulateArgs, reports: &[Report]) {
    println!(
        "trace {} ({} invocations), arrivals {}, seed {}",
        args.trace.display(),
        trace.invocations(),
        args.arrivals.as_str(),
        args.seed
    );
    println!(
        "  {:<28} {:>11} {:>11} {:>10} {:>10} {:>14} {:>10}",
        "policy",
        "invocations",
        "cold starts",
        "cold% p50",
        "cold% p75",
        "wasted GB·s",
        "pre-warms"
    );
    for r in reports {
        println!("  {}", row(r));
    }
}

fn row(r: &Report) -> String {
    format!(
        "{:<28} {:>11} {:>11} {:>10.2} {:>10.2} {:>14.0} {:>10}",
        r.policy,
        r.invocations,
        r.cold_starts,
        r.cold_start_pct_p50,
        r.cold_start_pct_p75,
        r.wasted_memory_gb_s,
        r.prewarms
    )
}
