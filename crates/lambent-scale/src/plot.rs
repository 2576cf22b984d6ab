//! The `--plot` chart: cold-start percentage (p75 over functions) against wasted
//! memory, an MDP cost-ratio sweep as a line and other policies as points. Plain SVG
//! written directly: a few dozen elements, no font metrics needed.

use crate::sim::Report;
use std::fmt::Write;

const W: f64 = 760.0;
const H: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 6] = [
    "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// `sweep`: the MDP at several cost ratios (drawn as a line, labelled by ratio);
/// `points`: other policies. `caption` names the trace and the arrival synthesis.
pub fn chart(sweep: &[(f64, Report)], points: &[Report], caption: &str) -> String {
    let all: Vec<&Report> = sweep.iter().map(|(_, r)| r).chain(points).collect();
    let gb_h = |r: &Report| r.wasted_memory_gb_s / 3600.0;
    let x_max = nice(all.iter().map(|r| gb_h(r)).fold(0.0, f64::max));
    let y_max = nice(all.iter().map(|r| r.cold_start_pct_p75).fold(0.0, f64::max));
    let x = |v: f64| LEFT + v / x_max * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - v / y_max * (H - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">Cold starts against idle memory — {}</text>
"#,
        W / 2.0,
        escape(caption)
    );
    // Axes, ticks and grid.
    for i in 0..=5 {
        let (xv, yv) = (x_max * i as f64 / 5.0, y_max * i as f64 / 5.0);
        let _ = write!(
            svg,
            r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#eee"/><text x="{0}" y="{3}" text-anchor="middle">{4}</text>
<line x1="{5}" y1="{6}" x2="{7}" y2="{6}" stroke="#eee"/><text x="{8}" y="{9}" text-anchor="end">{10}</text>
"##,
            x(xv),
            TOP,
            H - BOTTOM,
            H - BOTTOM + 18.0,
            fmt(xv),
            LEFT,
            y(yv),
            W - RIGHT,
            LEFT - 6.0,
            y(yv) + 4.0,
            fmt(yv)
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{0}" stroke="black"/>
<text x="{2}" y="{3}" text-anchor="middle">wasted memory: idle warm instances (GB·h)</text>
<text x="18" y="{4}" text-anchor="middle" transform="rotate(-90 18 {4})">cold starts, p75 over functions (%)</text>
"##,
        H - BOTTOM,
        W - RIGHT,
        (LEFT + W - RIGHT) / 2.0,
        H - 15.0,
        (TOP + H - BOTTOM) / 2.0
    );
    if !sweep.is_empty() {
        let path: Vec<String> = sweep
            .iter()
            .map(|(_, r)| format!("{:.1},{:.1}", x(gb_h(r)), y(r.cold_start_pct_p75)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
            path.join(" ")
        );
        for (i, (ratio, r)) in sweep.iter().enumerate() {
            let (px, py) = (x(gb_h(r)), y(r.cold_start_pct_p75));
            // Alternate labels above and below: neighbouring ratios often land close.
            let dy = if i % 2 == 0 { -5.0 } else { 14.0 };
            let _ = writeln!(
                svg,
                r##"<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="#1f77b4"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#1f77b4">{}</text>"##,
                px + 3.0,
                py + dy,
                fmt(*ratio)
            );
        }
        let _ = writeln!(
            svg,
            r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#1f77b4" stroke-width="2"/><text x="{3}" y="{4}">mdp, by cost ratio</text>"##,
            W - RIGHT + 15.0,
            TOP + 10.0,
            W - RIGHT + 35.0,
            W - RIGHT + 40.0,
            TOP + 14.0
        );
    }
    for (i, r) in points.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let (px, py) = (x(gb_h(r)), y(r.cold_start_pct_p75));
        let ly = TOP + 30.0 + 20.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="{colour}"/><rect x="{}" y="{}" width="8" height="8" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            px - 4.0,
            py - 4.0,
            W - RIGHT + 21.0,
            ly,
            W - RIGHT + 40.0,
            ly + 8.0,
            escape(&r.policy)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The next "round" axis maximum at or above `v`.
fn nice(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * mag)
}

fn fmt(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(policy: &str, p75: f64, gb_s: f64) -> Report {
        Report {
            policy: policy.into(),
            invocations: 10,
            cold_starts: 1,
            cold_start_pct_p50: 0.0,
            cold_start_pct_p75: p75,
            wasted_memory_gb_s: gb_s,
            prewarms: 0,
            unused_memory_gb_s: 0.0,
        }
    }

    #[test]
    fn the_chart_has_a_line_for_the_sweep_and_a_labelled_point_per_policy() {
        let svg = chart(
            &[
                (1.0, report("mdp:cost-ratio=1", 40.0, 3600.0)),
                (10.0, report("mdp:cost-ratio=10", 20.0, 7200.0)),
            ],
            &[
                report("fixed:10m", 100.0, 9000.0),
                report("histogram", 16.0, 8000.0),
            ],
            "a <test>",
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains(">fixed:10m<") && svg.contains(">histogram<"));
        assert!(svg.contains("a &lt;test&gt;"));
        assert_eq!(nice(7.3), 10.0);
        assert_eq!(nice(0.21), 0.25);
    }
}
