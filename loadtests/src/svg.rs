//! Plots as hand-written SVG (no plotting dependency): horizontal grouped bars, one bar per proxy,
//! each group scaled to its own maximum so that groups with different units can share a chart; and
//! stacked time-series panels (the soak test's memory and descriptors over time).

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
        ProxyKind::GantryGateway => "#9467bd",
        ProxyKind::GantryTrace1 => "#17becf",
        ProxyKind::GantryTrace100 => "#d62728",
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
    let mut legend = ProxyKind::ALL.to_vec();
    if groups
        .iter()
        .any(|g| g.bars.iter().any(|b| b.0 == ProxyKind::GantryGateway))
    {
        legend.insert(1, ProxyKind::GantryGateway);
    }
    for p in legend {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="46" width="10" height="10" fill="{}"/><text x="{}" y="55">{}</text>"#,
            color(p),
            lx + 14.0,
            p.display()
        );
        lx += if p == ProxyKind::GantryGateway {
            160.0
        } else {
            90.0
        };
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

/// Whole numbers without decimals (counts), others as [`fmt_num`] writes them.
fn axis_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1000.0 {
        format!("{v:.0}")
    } else {
        fmt_num(v)
    }
}

/// One panel of [`time_series`]: a line over time with its own vertical scale.
pub struct Panel {
    /// What is plotted, with its unit ("RSS (MiB)").
    pub label: String,
    /// (seconds, value), in time order.
    pub points: Vec<(f64, f64)>,
}

/// Panels stacked on a shared time axis; each is scaled from a little under its minimum to a little
/// over its maximum (both printed), and `marker` draws a dashed vertical line (e.g. end of warm-up).
pub fn time_series(title: &str, subtitle: &str, panels: &[Panel], marker: Option<(f64, &str)>) -> String {
    const W: f64 = 760.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 50.0;
    const PANEL_H: f64 = 130.0;
    const GAP: f64 = 40.0;
    let plot_w = W - LEFT - RIGHT;
    let t_max = panels
        .iter()
        .flat_map(|p| p.points.iter().map(|q| q.0))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let x = |t: f64| LEFT + t / t_max * plot_w;
    let height = TOP + panels.len() as f64 * (PANEL_H + GAP) + 10.0;
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
    let line = color(ProxyKind::Gantry);
    for (i, p) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_H + GAP) + 16.0;
        let bottom = top + PANEL_H - 16.0;
        let (lo, hi) = p
            .points
            .iter()
            .map(|q| q.1)
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.01).max(1e-9);
        let (y0, y1) = ((lo - pad).max(0.0), hi + pad);
        let y = |v: f64| bottom - (v - y0) / (y1 - y0) * (bottom - top);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"#,
            top - 4.0,
            esc(&p.label)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top:.1}" width="{plot_w:.1}" height="{:.1}" fill="none" stroke="#ccc"/>"##,
            bottom - top
        );
        for v in [lo, hi] {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="dimgray">{}</text>"#,
                LEFT - 6.0,
                y(v) + 4.0,
                esc(&axis_num(v))
            );
        }
        for t in [0.0, t_max / 2.0, t_max] {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="dimgray">{:.0} s</text>"#,
                x(t),
                bottom + 14.0,
                t
            );
        }
        if let Some((t, label)) = marker {
            let _ = writeln!(
                s,
                r#"<line x1="{0:.1}" y1="{top:.1}" x2="{0:.1}" y2="{bottom:.1}" stroke="gray" stroke-dasharray="4 3"><title>{1}</title></line>"#,
                x(t),
                esc(label)
            );
        }
        let pts: Vec<String> = p
            .points
            .iter()
            .filter(|q| q.1.is_finite())
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{line}" stroke-width="1.5" points="{}"/>"#,
            pts.join(" ")
        );
    }
    s.push_str("</svg>\n");
    s
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

    #[test]
    fn time_series_draw_one_polyline_per_panel_across_the_whole_width() {
        let panels = [
            Panel {
                label: "RSS (MiB)".into(),
                points: vec![(0.0, 40.0), (5.0, 44.5), (10.0, 42.0)],
            },
            Panel {
                label: "fds <open>".into(),
                points: vec![(0.0, 100.0), (10.0, 100.0)],
            },
        ];
        let svg = time_series("soak", "sub", &panels, Some((5.0, "warm-up")));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("fds &lt;open&gt;") && svg.contains("stroke-dasharray"));
        // Counts are labelled without decimals, other values as fmt_num writes them.
        assert!(svg.contains(">100</text>") && svg.contains(">40</text>"), "{svg}");
        assert!(svg.contains(">44.5</text>"), "{svg}");
        // t = 0 at the left edge (70), t = 10 s at the right (760 - 20).
        assert!(svg.contains(r#"points="70.0,"#) && svg.contains("740.0,"));
        // A flat line does not divide by zero.
        assert!(!svg.contains("NaN"));
    }
}
