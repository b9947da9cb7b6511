//! Plots as hand-written SVG (no plotting dependency): horizontal grouped bars, one bar per proxy,
//! each group scaled to its own maximum so that groups with different units can share a chart.

use std::fmt::Write;

use crate::cli::ProxyKind;
use crate::report::{fmt_ms, fmt_num, unit_label, Report, ScenarioReport};
use crate::scenarios::Unit;

/// One group of bars: a label and one (proxy, value, text) per bar.
pub struct Group {
    pub label: String,
    pub bars: Vec<(ProxyKind, f64, String)>,
}

fn color(p: ProxyKind) -> &'static str {
    match p {
        ProxyKind::Gantry => "#1f77b4",
        ProxyKind::Nginx => "#2ca02c",
        ProxyKind::Haproxy => "#ff7f0e",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A chart of `groups`, each bar scaled to the largest value of its group.
pub fn grouped_bars(title: &str, subtitle: &str, groups: &[Group]) -> String {
    const W: f64 = 760.0;
    const LABEL_W: f64 = 210.0;
    const BAR_H: f64 = 16.0;
    const GAP: f64 = 14.0;
    const TOP: f64 = 62.0;
    let plot_w = W - LABEL_W - 130.0;
    let height: f64 = TOP
        + groups
            .iter()
            .map(|g| g.bars.len().max(1) as f64 * (BAR_H + 3.0) + GAP)
            .sum::<f64>()
        + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height:.0}" viewBox="0 0 {W} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="38" fill="dimgray">{}</text>"#,
        esc(subtitle)
    );
    // Legend.
    let mut lx = 10.0;
    for p in ProxyKind::ALL {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="46" width="10" height="10" fill="{}"/><text x="{}" y="55">{}</text>"#,
            color(p),
            lx + 14.0,
            p.display()
        );
        lx += 90.0;
    }
    let mut y = TOP;
    for g in groups {
        let max = g.bars.iter().map(|b| b.1).fold(0.0_f64, f64::max);
        let group_h = g.bars.len().max(1) as f64 * (BAR_H + 3.0);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            y + group_h / 2.0 + 4.0,
            esc(&g.label)
        );
        if g.bars.is_empty() {
            let _ = writeln!(
                s,
                r#"<text x="{LABEL_W}" y="{:.1}" fill="gray">no result</text>"#,
                y + 12.0
            );
        }
        for (i, (p, v, text)) in g.bars.iter().enumerate() {
            let by = y + i as f64 * (BAR_H + 3.0);
            let w = if max > 0.0 && v.is_finite() {
                (v / max * plot_w).max(1.0)
            } else {
                1.0
            };
            let _ = writeln!(
                s,
                r#"<rect x="{LABEL_W}" y="{by:.1}" width="{w:.1}" height="{BAR_H}" fill="{}"><title>{}: {}</title></rect>"#,
                color(*p),
                p.display(),
                esc(text)
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                LABEL_W + w + 5.0,
                by + 12.5,
                esc(text)
            );
        }
        y += group_h + GAP;
    }
    s.push_str("</svg>\n");
    s
}

/// Throughput and latency percentiles of one scenario.
pub fn scenario_chart(s: &ScenarioReport, unit: Unit) -> String {
    let label = unit_label(unit);
    let mut groups = vec![Group {
        label: format!("throughput ({label})"),
        bars: s
            .results
            .iter()
            .filter_map(|r| {
                r.headline(unit)
                    .map(|v| (r.proxy, v, format!("{} {label}", fmt_num(v))))
            })
            .collect(),
    }];
    for (name, f) in [
        (
            "p50 latency",
            (|r| r.p50_ms) as fn(&crate::report::ProxyResult) -> f64,
        ),
        ("p99 latency", |r| r.p99_ms),
        ("p99.9 latency", |r| r.p999_ms),
    ] {
        groups.push(Group {
            label: name.into(),
            bars: s
                .results
                .iter()
                .map(|r| (r.proxy, f(r), format!("{} ms", fmt_ms(f(r)))))
                .collect(),
        });
    }
    groups.push(Group {
        label: "CPU per request (µs)".into(),
        bars: s
            .results
            .iter()
            .filter_map(|r| r.cpu_us_per_req.map(|v| (r.proxy, v, format!("{v:.1} µs"))))
            .collect(),
    });
    grouped_bars(&s.name, &s.description, &groups)
}

/// Headline throughput of every scenario, each scaled to its best proxy.
pub fn throughput_overview(r: &Report, units: &[(String, Unit)]) -> String {
    let groups: Vec<Group> = r
        .scenarios
        .iter()
        .filter_map(|s| {
            let unit = units.iter().find(|(n, _)| *n == s.name)?.1;
            Some(Group {
                label: format!("{} ({})", s.name, unit_label(unit)),
                bars: s
                    .results
                    .iter()
                    .filter_map(|x| x.headline(unit).map(|v| (x.proxy, v, fmt_num(v))))
                    .collect(),
            })
        })
        .collect();
    grouped_bars(
        "Throughput per scenario",
        "bars scaled to the largest value in each scenario; KiB/conn: lower is better",
        &groups,
    )
}

/// p99 latency of every scenario, each scaled to its slowest proxy.
pub fn latency_overview(r: &Report) -> String {
    let groups: Vec<Group> = r
        .scenarios
        .iter()
        .map(|s| Group {
            label: s.name.clone(),
            bars: s
                .results
                .iter()
                .map(|x| (x.proxy, x.p99_ms, format!("p99 {} ms", fmt_ms(x.p99_ms))))
                .collect(),
        })
        .collect();
    grouped_bars(
        "p99 latency per scenario (lower is better)",
        "bars scaled to the largest value in each scenario",
        &groups,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_group_maximum_and_text_is_escaped() {
        let g = Group {
            label: "a<b".into(),
            bars: vec![
                (ProxyKind::Gantry, 50.0, "50".into()),
                (ProxyKind::Nginx, 100.0, "100 & up".into()),
            ],
        };
        let svg = grouped_bars("t", "s", &[g]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b") && svg.contains("100 &amp; up"));
        // plot width = 760 - 210 - 130 = 420: the larger bar is full width, the other half.
        assert!(svg.contains(r#"width="420.0""#) && svg.contains(r#"width="210.0""#));
    }
}
