//! The report: per-round figures, medians per proxy, Gantry's ratios to the peers, and renderings
//! (console table, Markdown for the README, JSON for machines). Pure: figures in, text out.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::cli::ProxyKind;
use crate::scenarios::Unit;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_kb: u64,
    pub kernel: String,
    pub os: String,
    /// Versions of nginx, HAProxy, wrk, h2load, oha.
    pub tools: BTreeMap<String, String>,
    /// `git rev-parse --short HEAD` of the workspace Gantry was built from.
    pub gantry_commit: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub rounds: u32,
    pub duration_s: f64,
    pub proxies: Vec<ProxyKind>,
    /// `taskset -c` lists.
    pub proxy_cpu_list: String,
    pub load_cpu_list: String,
    /// Proxy and load generator share CPUs (`--proxy-cpus 2` on a 2-core machine).
    pub shared_cpus: bool,
    pub workers: usize,
}

/// The whole report. `machine`, `proxy_cpus` and `scenarios` are the stable shape; the rest is extra.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub proxy_cpus: u8,
    pub scenarios: Vec<ScenarioReport>,
    pub settings: Settings,
    pub generated_at: String,
    pub elapsed_s: f64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub description: String,
    /// Unit of the headline throughput: "req/s", "MB/s", "msg/s" or "KiB/conn".
    pub unit: String,
    pub results: Vec<ProxyResult>,
    /// Proxies that have no result, and why (not available, did not start, run failed).
    pub failures: Vec<Failure>,
    /// Set when the scenario did not run at all (e.g. oha could not be installed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub notes: Vec<String>,
    pub ratios: Vec<Ratio>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub proxy: ProxyKind,
    pub error: String,
}

/// Medians over the rounds of one proxy in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyResult {
    pub proxy: ProxyKind,
    /// Requests (WebSocket: messages) per second.
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Sum over all rounds.
    pub errors: u64,
    /// Proxy CPU seconds during one measured run (utime + stime of the process tree).
    pub cpu_s: f64,
    /// Highest VmHWM (summed over the proxy's processes) seen after any round.
    pub peak_rss_kb: u64,
    /// Highest Pss (summed over the proxy's processes) seen at the end of a round: memory without
    /// counting pages shared by nginx/HAProxy master and workers twice.
    pub pss_kb: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mb_s: Option<f64>,
    /// Proxy CPU per request (message), microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_req: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_per_conn_kb: Option<f64>,
    /// New connections the backend accepted during one run (checks upstream keep-alive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_conns_opened: Option<u64>,
    pub rounds: Vec<RoundResult>,
}

/// One measured run of one proxy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundResult {
    pub round: u32,
    pub requests: u64,
    pub duration_s: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error_detail: String,
    pub cpu_s: f64,
    pub peak_rss_kb: u64,
    pub pss_kb: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mb_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_conns_opened: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_per_conn_kb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conns_held: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChurnStats {
    /// Changes applied during the run.
    pub changes: u64,
    /// Changes that failed to apply (write, signal or API error).
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// After the run: time from writing a new route until it answered 200 (route churn only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation_ms: Option<f64>,
    /// The propagation check ran and the new route was not served within 5 s.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub propagation_timed_out: bool,
}

/// Gantry's figure divided by a peer's.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub metric: String,
    /// "higher" or "lower": which way is better.
    pub better: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gantry_vs_nginx: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gantry_vs_haproxy: Option<f64>,
    /// Gantry with its routes as Gateway API objects ÷ Gantry with Ingresses (`gantry-gateway`
    /// runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_vs_ingress: Option<f64>,
}

pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_opt(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = values.into_iter().flatten().collect();
    (!v.is_empty()).then(|| median(v))
}

impl ProxyResult {
    /// Medians over `rounds` (errors summed, peak RSS maxed). `None` without rounds.
    pub fn from_rounds(proxy: ProxyKind, rounds: Vec<RoundResult>) -> Option<ProxyResult> {
        if rounds.is_empty() {
            return None;
        }
        let m = |f: fn(&RoundResult) -> f64| median(rounds.iter().map(f));
        Some(ProxyResult {
            proxy,
            rps: m(|r| r.rps),
            p50_ms: m(|r| r.p50_ms),
            p99_ms: m(|r| r.p99_ms),
            p999_ms: m(|r| r.p999_ms),
            errors: rounds.iter().map(|r| r.errors).sum(),
            cpu_s: m(|r| r.cpu_s),
            peak_rss_kb: rounds.iter().map(|r| r.peak_rss_kb).max().unwrap_or(0),
            pss_kb: rounds.iter().map(|r| r.pss_kb).max().unwrap_or(0),
            mb_s: median_opt(rounds.iter().map(|r| r.mb_s)),
            cpu_us_per_req: median_opt(
                rounds
                    .iter()
                    .map(|r| (r.requests > 0).then(|| r.cpu_s * 1e6 / r.requests as f64)),
            ),
            mem_per_conn_kb: median_opt(rounds.iter().map(|r| r.mem_per_conn_kb)),
            upstream_conns_opened: median_opt(
                rounds.iter().map(|r| r.upstream_conns_opened.map(|v| v as f64)),
            )
            .map(|v| v.round() as u64),
            rounds,
        })
    }

    /// The scenario's headline figure for this proxy.
    pub fn headline(&self, unit: Unit) -> Option<f64> {
        match unit {
            Unit::Rps | Unit::MsgsPerSec => Some(self.rps),
            Unit::MBps { .. } => self.mb_s,
            Unit::KibPerConn => self.mem_per_conn_kb,
        }
    }
}

impl RoundResult {
    /// The scenario's headline figure in this round.
    pub fn headline(&self, unit: Unit) -> Option<f64> {
        match unit {
            Unit::Rps | Unit::MsgsPerSec => Some(self.rps),
            Unit::MBps { .. } => self.mb_s,
            Unit::KibPerConn => self.mem_per_conn_kb,
        }
    }
}

pub fn unit_label(unit: Unit) -> &'static str {
    match unit {
        Unit::Rps => "req/s",
        Unit::MBps { .. } => "MB/s",
        Unit::MsgsPerSec => "msg/s",
        Unit::KibPerConn => "KiB/conn",
    }
}

pub fn unit_higher_is_better(unit: Unit) -> bool {
    !matches!(unit, Unit::KibPerConn)
}

/// Gantry ÷ nginx and Gantry ÷ HAProxy for the headline, p99, CPU per request and peak RSS.
pub fn ratios(results: &[ProxyResult], unit: Unit) -> Vec<Ratio> {
    let get = |k: ProxyKind| results.iter().find(|r| r.proxy == k);
    let Some(g) = get(ProxyKind::Gantry) else {
        return Vec::new();
    };
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => Some(a / b),
        _ => None,
    };
    type Metric = (String, &'static str, fn(&ProxyResult, Unit) -> Option<f64>);
    let metrics: [Metric; 4] = [
        (
            unit_label(unit).to_string(),
            if unit_higher_is_better(unit) {
                "higher"
            } else {
                "lower"
            },
            |r, u| r.headline(u),
        ),
        ("p99".into(), "lower", |r, _| Some(r.p99_ms)),
        ("cpu/req".into(), "lower", |r, _| r.cpu_us_per_req),
        ("peak RSS".into(), "lower", |r, _| Some(r.peak_rss_kb as f64)),
    ];
    metrics
        .into_iter()
        .filter(|(name, ..)| !(unit == Unit::KibPerConn && name == "cpu/req"))
        .map(|(metric, better, f)| Ratio {
            metric,
            better,
            gantry_vs_nginx: div(f(g, unit), get(ProxyKind::Nginx).and_then(|r| f(r, unit))),
            gantry_vs_haproxy: div(f(g, unit), get(ProxyKind::Haproxy).and_then(|r| f(r, unit))),
            gateway_vs_ingress: div(get(ProxyKind::GantryGateway).and_then(|r| f(r, unit)), f(g, unit)),
        })
        .collect()
}

// === formatting ===

/// 76912.4 → "76,912"; 12.34 → "12.3"; 0.5 → "0.50".
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Milliseconds with enough digits for sub-millisecond loopback latencies.
pub fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into())
}

pub fn mib(kb: u64) -> String {
    fmt_num(kb as f64 / 1024.0)
}

/// Columns shared by the console and Markdown tables.
fn row_cells(r: &ProxyResult, unit: Unit) -> Vec<String> {
    vec![
        r.proxy.display().to_string(),
        r.headline(unit).map(fmt_num).unwrap_or_else(|| "-".into()),
        if matches!(unit, Unit::MBps { .. }) {
            fmt_num(r.rps)
        } else {
            String::new()
        },
        fmt_ms(r.p50_ms),
        fmt_ms(r.p99_ms),
        fmt_ms(r.p999_ms),
        r.errors.to_string(),
        format!("{:.2}", r.cpu_s),
        r.cpu_us_per_req
            .map(|v| format!("{v:.1}"))
            .unwrap_or_else(|| "-".into()),
        mib(r.peak_rss_kb),
        mib(r.pss_kb),
        r.upstream_conns_opened
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into()),
    ]
}

fn headers(unit: Unit) -> Vec<String> {
    let rate = if matches!(unit, Unit::MBps { .. }) {
        "req/s"
    } else {
        ""
    };
    vec![
        "proxy".into(),
        unit_label(unit).into(),
        rate.into(),
        "p50 ms".into(),
        "p99 ms".into(),
        "p99.9 ms".into(),
        "errors".into(),
        "CPU s".into(),
        "CPU us/req".into(),
        "peak RSS MiB".into(),
        "PSS MiB".into(),
        "upstream conns".into(),
    ]
}

/// Drops columns that are empty in every row (e.g. the second rate column for req/s scenarios).
fn prune(mut head: Vec<String>, mut rows: Vec<Vec<String>>) -> (Vec<String>, Vec<Vec<String>>) {
    let keep: Vec<bool> = (0..head.len())
        .map(|i| !head[i].is_empty() && rows.iter().any(|r| !r[i].is_empty() && r[i] != "-"))
        .collect();
    let filt = |v: &mut Vec<String>| {
        let mut i = 0;
        v.retain(|_| {
            let k = keep[i];
            i += 1;
            k
        })
    };
    filt(&mut head);
    rows.iter_mut().for_each(filt);
    (head, rows)
}

/// The console table of one scenario.
pub fn console_table(s: &ScenarioReport, unit: Unit) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n== {} — {}", s.name, s.description);
    if let Some(why) = &s.skipped {
        let _ = writeln!(out, "   skipped: {why}");
        return out;
    }
    let rows: Vec<Vec<String>> = s.results.iter().map(|r| row_cells(r, unit)).collect();
    let (head, rows) = prune(headers(unit), rows);
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut l = String::from("   ");
        for (i, c) in cells.iter().enumerate() {
            if i == 0 {
                let _ = write!(l, "{:<w$}", c, w = widths[i]);
            } else {
                let _ = write!(l, "  {:>w$}", c, w = widths[i]);
            }
        }
        l
    };
    if !rows.is_empty() {
        let _ = writeln!(out, "{}", line(&head));
        for r in &rows {
            let _ = writeln!(out, "{}", line(r));
        }
    }
    for f in &s.failures {
        let _ = writeln!(
            out,
            "   {:<w$}  not measured: {}",
            f.proxy.display(),
            short_line(&f.error),
            w = widths.first().copied().unwrap_or(7)
        );
    }
    if !s.ratios.is_empty() {
        let parts: Vec<String> = s
            .ratios
            .iter()
            .map(|r| {
                format!(
                    "{} {} / {} ({} is better)",
                    r.metric,
                    fmt_ratio(r.gantry_vs_nginx),
                    fmt_ratio(r.gantry_vs_haproxy),
                    r.better
                )
            })
            .collect();
        let _ = writeln!(out, "   Gantry/nginx / Gantry/HAProxy: {}", parts.join("; "));
    }
    if let Some(line) = gateway_vs_ingress_line(s, unit) {
        let _ = writeln!(out, "   {line}");
    }
    for r in &s.results {
        if let Some(line) = churn_line(r) {
            let _ = writeln!(out, "   {}", line);
        }
    }
    out
}

/// Gantry's routes as Gateway API objects against the same routes as Ingresses: the headline ratio
/// of the medians, each side's range over its rounds, and whether the ranges overlap (the same
/// figure within the run's noise). `None` unless both were measured.
pub fn gateway_vs_ingress_line(s: &ScenarioReport, unit: Unit) -> Option<String> {
    let get = |k: ProxyKind| s.results.iter().find(|r| r.proxy == k);
    let (ing, gw) = (get(ProxyKind::Gantry)?, get(ProxyKind::GantryGateway)?);
    let range = |r: &ProxyResult| -> Option<(f64, f64)> {
        let v: Vec<f64> = r
            .rounds
            .iter()
            .filter_map(|x| x.headline(unit))
            .filter(|x| x.is_finite())
            .collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (!v.is_empty()).then_some((lo, hi))
    };
    let ratio = s.ratios.first().and_then(|r| r.gateway_vs_ingress);
    let (a, b) = (range(ing)?, range(gw)?);
    let verdict = if ing.rounds.len() < 2 || gw.rounds.len() < 2 {
        "one round: no estimate of the noise"
    } else if a.0 <= b.1 && b.0 <= a.1 {
        "rounds overlap: the same within this run's noise"
    } else if (b.0 > a.1) == unit_higher_is_better(unit) {
        "rounds do not overlap: Gateway API better"
    } else {
        "rounds do not overlap: Gateway API worse"
    };
    Some(format!(
        "Gateway API/Ingress: {} {} (Ingress rounds {}-{}, Gateway API rounds {}-{}; {verdict})",
        unit_label(unit),
        fmt_ratio(ratio),
        fmt_num(a.0),
        fmt_num(a.1),
        fmt_num(b.0),
        fmt_num(b.1),
    ))
}

/// "Gantry: 8.0 changes/s applied, 0 failed, a new route served after 113 ms (median)".
pub fn churn_line(r: &ProxyResult) -> Option<String> {
    let churned: Vec<(&RoundResult, &ChurnStats)> = r
        .rounds
        .iter()
        .filter_map(|x| x.churn.as_ref().map(|c| (x, c)))
        .collect();
    if churned.is_empty() {
        return None;
    }
    let rate = median(
        churned
            .iter()
            .map(|(x, c)| c.changes as f64 / x.duration_s.max(1e-9)),
    );
    let failed: u64 = churned.iter().map(|(_, c)| c.failed).sum();
    let prop: Vec<f64> = churned.iter().filter_map(|(_, c)| c.propagation_ms).collect();
    let missing = churned.iter().filter(|(_, c)| c.propagation_timed_out).count();
    let mut line = format!(
        "{}: {rate:.1} changes/s applied, {failed} failed",
        r.proxy.display()
    );
    if !prop.is_empty() {
        let _ = write!(line, ", a new route served after {:.0} ms (median)", median(prop));
    }
    if missing > 0 {
        let _ = write!(
            line,
            "; in {missing} round(s) the new route was not served within 5 s"
        );
    }
    if let Some(e) = churned.iter().rev().find_map(|(_, c)| c.last_error.as_deref()) {
        let _ = write!(line, " (last error: {})", one_line(e));
    }
    Some(line)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One line of at most 300 characters (errors on the console can carry whole log tails).
fn short_line(s: &str) -> String {
    let s = one_line(s);
    if s.chars().count() > 300 {
        s.chars().take(300).collect::<String>() + "…"
    } else {
        s
    }
}

fn md_escape(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}

/// The Markdown report: settings, a summary table of headline figures and ratios, then one detail
/// table per scenario. Ready to paste into the README.
pub fn markdown(r: &Report, units: &[(String, Unit)]) -> String {
    let unit_of = |name: &str| {
        units
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, u)| *u)
            .unwrap_or(Unit::Rps)
    };
    let mut md = String::new();
    let m = &r.machine;
    let _ = writeln!(md, "### Gantry vs nginx vs HAProxy\n");
    let _ = writeln!(
        md,
        "{} CPUs ({}), {} GiB, {}; {}. Proxy on CPU {}, load generator and backend on CPU {}{}; \
         {} worker(s)/thread(s) per proxy; {} round(s) of {:.0} s per proxy, medians; {}.\n",
        m.cpus,
        m.cpu_model,
        m.mem_total_kb / (1024 * 1024),
        m.os,
        m.tools.values().cloned().collect::<Vec<_>>().join(", "),
        r.settings.proxy_cpu_list,
        r.settings.load_cpu_list,
        if r.settings.shared_cpus {
            " (shared: this machine cannot separate them)"
        } else {
            ""
        },
        r.settings.workers,
        r.settings.rounds,
        r.settings.duration_s,
        r.generated_at,
    );
    // Gateway API columns only when `gantry-gateway` ran: other reports keep their shape.
    let gw = r.settings.proxies.contains(&ProxyKind::GantryGateway);
    let _ = writeln!(
        md,
        "| scenario | unit | Gantry |{} nginx | HAProxy | Gantry/nginx | Gantry/HAProxy |{}",
        if gw { " Gantry (Gateway API) |" } else { "" },
        if gw { " Gateway API/Ingress |" } else { "" },
    );
    let _ = writeln!(
        md,
        "|---|---|---:|{}---:|---:|---:|---:|{}",
        if gw { "---:|" } else { "" },
        if gw { "---:|" } else { "" },
    );
    for s in &r.scenarios {
        let unit = unit_of(&s.name);
        let cell = |k: ProxyKind| {
            if let Some(res) = s.results.iter().find(|x| x.proxy == k) {
                res.headline(unit).map(fmt_num).unwrap_or_else(|| "-".into())
            } else if s.failures.iter().any(|f| f.proxy == k) || s.skipped.is_some() {
                "n/a".into()
            } else {
                "-".into()
            }
        };
        let head = s.ratios.first();
        let better = if unit_higher_is_better(unit) {
            ""
        } else {
            " (lower is better)"
        };
        let _ = writeln!(
            md,
            "| {} | {}{} | {} |{} {} | {} | {} | {} |{}",
            s.name,
            unit_label(unit),
            better,
            cell(ProxyKind::Gantry),
            if gw {
                format!(" {} |", cell(ProxyKind::GantryGateway))
            } else {
                String::new()
            },
            cell(ProxyKind::Nginx),
            cell(ProxyKind::Haproxy),
            fmt_ratio(head.and_then(|h| h.gantry_vs_nginx)),
            fmt_ratio(head.and_then(|h| h.gantry_vs_haproxy)),
            if gw {
                format!(" {} |", fmt_ratio(head.and_then(|h| h.gateway_vs_ingress)))
            } else {
                String::new()
            },
        );
    }
    for s in &r.scenarios {
        let unit = unit_of(&s.name);
        let _ = writeln!(md, "\n#### {}\n\n{}.\n", s.name, md_escape(&s.description));
        if let Some(why) = &s.skipped {
            let _ = writeln!(md, "Skipped: {}\n", md_escape(why));
            continue;
        }
        if !s.results.is_empty() {
            let rows: Vec<Vec<String>> = s.results.iter().map(|x| row_cells(x, unit)).collect();
            let (head, rows) = prune(headers(unit), rows);
            let _ = writeln!(md, "| {} |", head.join(" | "));
            let _ = writeln!(md, "|---|{}", "---:|".repeat(head.len() - 1));
            for row in rows {
                let _ = writeln!(md, "| {} |", row.join(" | "));
            }
            md.push('\n');
        }
        for f in &s.failures {
            let _ = writeln!(
                md,
                "- {}: not measured: {}",
                f.proxy.display(),
                short_line(&f.error).replace('|', "\\|")
            );
        }
        if let Some(line) = gateway_vs_ingress_line(s, unit) {
            let _ = writeln!(md, "- {}", md_escape(&line));
        }
        for r in &s.results {
            if let Some(line) = churn_line(r) {
                let _ = writeln!(md, "- {}", md_escape(&line));
            }
        }
        if !s.ratios.is_empty() {
            let parts: Vec<String> = s
                .ratios
                .iter()
                .map(|x| {
                    format!(
                        "{} {} / {}",
                        x.metric,
                        fmt_ratio(x.gantry_vs_nginx),
                        fmt_ratio(x.gantry_vs_haproxy)
                    )
                })
                .collect();
            let _ = writeln!(md, "- Gantry/nginx / Gantry/HAProxy: {}", parts.join("; "));
        }
        for n in &s.notes {
            let _ = writeln!(md, "- {}", md_escape(n));
        }
    }
    if !r.notes.is_empty() {
        md.push_str("\nNotes:\n");
        for n in &r.notes {
            let _ = writeln!(md, "- {}", md_escape(n));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn round(rps: f64, p99: f64, cpu: f64, requests: u64) -> RoundResult {
        RoundResult {
            requests,
            duration_s: 10.0,
            rps,
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            p999_ms: p99 * 2.0,
            cpu_s: cpu,
            peak_rss_kb: 10_240,
            ..Default::default()
        }
    }

    fn result(proxy: ProxyKind, rps: f64) -> ProxyResult {
        ProxyResult::from_rounds(proxy, vec![round(rps, 1.0, 9.0, (rps * 10.0) as u64)]).unwrap()
    }

    #[test]
    fn medians_sum_errors_and_keep_the_highest_peak() {
        let mut rounds = vec![
            round(100.0, 1.0, 9.0, 1000),
            round(300.0, 3.0, 9.5, 3000),
            round(200.0, 2.0, 9.9, 2000),
        ];
        rounds[0].errors = 2;
        rounds[2].errors = 1;
        rounds[1].peak_rss_kb = 99_999;
        let r = ProxyResult::from_rounds(ProxyKind::Nginx, rounds).unwrap();
        assert_eq!((r.rps, r.p99_ms, r.cpu_s), (200.0, 2.0, 9.5));
        assert_eq!(r.errors, 3);
        assert_eq!(r.peak_rss_kb, 99_999);
        assert!((r.cpu_us_per_req.unwrap() - 4950.0).abs() < 1e-6);
        assert!(ProxyResult::from_rounds(ProxyKind::Nginx, vec![]).is_none());
        assert_eq!(median([1.0, 2.0, 3.0, 4.0]), 2.5);
    }

    #[test]
    fn ratios_divide_gantry_by_each_peer() {
        let results = vec![
            result(ProxyKind::Gantry, 90.0),
            result(ProxyKind::Nginx, 60.0),
            result(ProxyKind::Haproxy, 45.0),
        ];
        let r = ratios(&results, Unit::Rps);
        assert_eq!(r[0].metric, "req/s");
        assert_eq!(r[0].better, "higher");
        assert_eq!(r[0].gantry_vs_nginx, Some(1.5));
        assert_eq!(r[0].gantry_vs_haproxy, Some(2.0));
        assert_eq!(r[1].metric, "p99");
        assert_eq!(r[1].gantry_vs_nginx, Some(1.0));
        assert!(
            ratios(&results[1..], Unit::Rps).is_empty(),
            "no Gantry, no ratios"
        );
    }

    fn sample_report() -> (Report, Vec<(String, Unit)>) {
        let results = vec![
            result(ProxyKind::Gantry, 90_000.0),
            result(ProxyKind::Nginx, 60_000.0),
            result(ProxyKind::Haproxy, 45_000.0),
        ];
        let scenario = ScenarioReport {
            name: "http1-keepalive".into(),
            description: "HTTP/1.1 keep-alive".into(),
            unit: "req/s".into(),
            ratios: ratios(&results, Unit::Rps),
            results,
            failures: Vec::new(),
            skipped: None,
            notes: vec!["a | note".into(), format!("long {}end", "x ".repeat(200))],
        };
        let failed = ScenarioReport {
            name: "h2-tls".into(),
            description: "HTTP/2".into(),
            unit: "req/s".into(),
            results: vec![result(ProxyKind::Nginx, 30_000.0)],
            failures: vec![Failure {
                proxy: ProxyKind::Gantry,
                error: "not available: no binary".into(),
            }],
            skipped: None,
            notes: Vec::new(),
            ratios: Vec::new(),
        };
        let report = Report {
            machine: Machine {
                cpus: 2,
                mem_total_kb: 24 << 20,
                ..Default::default()
            },
            proxy_cpus: 1,
            scenarios: vec![scenario, failed],
            settings: Settings {
                quick: true,
                rounds: 2,
                duration_s: 3.0,
                proxies: ProxyKind::ALL.to_vec(),
                proxy_cpu_list: "0".into(),
                load_cpu_list: "1".into(),
                shared_cpus: false,
                workers: 1,
            },
            generated_at: "2026-01-01T00:00:00Z".into(),
            elapsed_s: 1.0,
            notes: Vec::new(),
        };
        (
            report,
            vec![
                ("http1-keepalive".into(), Unit::Rps),
                ("h2-tls".into(), Unit::Rps),
            ],
        )
    }

    #[test]
    fn report_json_has_the_documented_shape() {
        let (report, _) = sample_report();
        let v = serde_json::to_value(&report).unwrap();
        assert!(v["machine"].is_object());
        assert_eq!(v["proxy_cpus"], 1);
        let s = &v["scenarios"][0];
        assert_eq!(s["name"], "http1-keepalive");
        let names: Vec<&str> = s["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["proxy"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["gantry", "nginx", "haproxy"]);
        for r in s["results"].as_array().unwrap() {
            for k in ["rps", "p50_ms", "p99_ms", "p999_ms", "cpu_s"] {
                assert!(r[k].is_f64(), "{k} is {:?}", r[k]);
            }
            for k in ["errors", "peak_rss_kb"] {
                assert!(r[k].is_u64(), "{k} is {:?}", r[k]);
            }
        }
        // A proxy without a result is not in `results`; it is in `failures`.
        assert_eq!(v["scenarios"][1]["results"].as_array().unwrap().len(), 1);
        assert_eq!(v["scenarios"][1]["failures"][0]["proxy"], "gantry");
    }

    #[test]
    fn markdown_has_a_summary_row_per_scenario_and_escapes_pipes() {
        let (report, units) = sample_report();
        let md = markdown(&report, &units);
        assert!(md.contains("| scenario | unit | Gantry | nginx | HAProxy | Gantry/nginx | Gantry/HAProxy |"));
        assert!(
            md.contains("| http1-keepalive | req/s | 90,000 | 60,000 | 45,000 | 1.50x | 2.00x |"),
            "{md}"
        );
        assert!(
            md.contains("| h2-tls | req/s | n/a | 30,000 | - | - | - |"),
            "{md}"
        );
        assert!(md.contains("a \\| note"));
        assert!(md.contains("x end"), "notes are not cut short in the Markdown");
        assert!(md.contains("- Gantry: not measured: not available: no binary"));
        let mut churned = report.clone();
        churned.scenarios[0].results[0].rounds[0].churn = Some(ChurnStats {
            changes: 200,
            ..Default::default()
        });
        assert!(markdown(&churned, &units).contains("- Gantry: 20.0 changes/s applied, 0 failed\n"));
        let console = console_table(&report.scenarios[0], Unit::Rps);
        assert!(
            console.contains("Gantry/nginx / Gantry/HAProxy: req/s 1.50x / 2.00x"),
            "{console}"
        );
    }

    #[test]
    fn gantry_gateway_gets_its_columns_its_ratio_and_a_noise_verdict() {
        let rounds = |v: &[f64]| -> Vec<RoundResult> {
            v.iter()
                .map(|&rps| round(rps, 1.0, 9.0, (rps * 10.0) as u64))
                .collect()
        };
        let results = vec![
            ProxyResult::from_rounds(ProxyKind::Gantry, rounds(&[100_000.0, 96_000.0, 104_000.0])).unwrap(),
            ProxyResult::from_rounds(ProxyKind::GantryGateway, rounds(&[98_000.0, 99_000.0, 101_000.0]))
                .unwrap(),
            result(ProxyKind::Nginx, 50_000.0),
        ];
        let r = ratios(&results, Unit::Rps);
        assert_eq!(r[0].gateway_vs_ingress, Some(0.99));
        assert_eq!(
            r[0].gantry_vs_nginx,
            Some(2.0),
            "peers still divide by Ingress Gantry"
        );
        let (mut report, units) = sample_report();
        report.scenarios[0].results = results;
        report.scenarios[0].ratios = r;
        report.scenarios[1].failures.push(Failure {
            proxy: ProxyKind::GantryGateway,
            error: "not offered: no Gateway API form".into(),
        });
        report.settings.proxies = vec![ProxyKind::Gantry, ProxyKind::GantryGateway, ProxyKind::Nginx];
        let md = markdown(&report, &units);
        assert!(md.contains(
            "| scenario | unit | Gantry | Gantry (Gateway API) | nginx | HAProxy | Gantry/nginx | Gantry/HAProxy | Gateway API/Ingress |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        ), "{md}");
        assert!(
            md.contains("| http1-keepalive | req/s | 100,000 | 99,000 | 50,000 | - | 2.00x | - | 0.99x |"),
            "{md}"
        );
        assert!(
            md.contains("| h2-tls | req/s | n/a | n/a | 30,000 | - | - | - | - |"),
            "{md}"
        );
        assert!(
            md.contains("- Gantry (Gateway API): not measured: not offered"),
            "{md}"
        );
        let line = "Gateway API/Ingress: req/s 0.99x (Ingress rounds 96,000-104,000, Gateway API rounds \
                    98,000-101,000; rounds overlap: the same within this run's noise)";
        assert!(md.contains(line), "{md}");
        assert!(console_table(&report.scenarios[0], Unit::Rps).contains(line));
        // Rounds apart: said which way.
        report.scenarios[0].results[1] =
            ProxyResult::from_rounds(ProxyKind::GantryGateway, rounds(&[80_000.0, 81_000.0])).unwrap();
        let l = gateway_vs_ingress_line(&report.scenarios[0], Unit::Rps).unwrap();
        assert!(l.ends_with("rounds do not overlap: Gateway API worse)"), "{l}");
        report.scenarios[0].results[1] =
            ProxyResult::from_rounds(ProxyKind::GantryGateway, rounds(&[80_000.0])).unwrap();
        let l = gateway_vs_ingress_line(&report.scenarios[0], Unit::Rps).unwrap();
        assert!(l.ends_with("one round: no estimate of the noise)"), "{l}");
        // The default report keeps its shape.
        let (plain, units) = sample_report();
        assert!(!markdown(&plain, &units).contains("Gateway API"));
        assert!(gateway_vs_ingress_line(&plain.scenarios[0], Unit::Rps).is_none());
    }

    #[test]
    fn churn_lines_give_the_rate_failures_and_median_propagation() {
        let mut rounds = vec![round(1.0, 1.0, 1.0, 10), round(1.0, 1.0, 1.0, 10)];
        rounds[0].churn = Some(ChurnStats {
            changes: 80,
            propagation_ms: Some(120.0),
            ..Default::default()
        });
        rounds[1].churn = Some(ChurnStats {
            changes: 60,
            failed: 2,
            last_error: Some("boom".into()),
            propagation_ms: None,
            propagation_timed_out: true,
        });
        let r = ProxyResult::from_rounds(ProxyKind::Haproxy, rounds).unwrap();
        let line = churn_line(&r).unwrap();
        assert_eq!(
            line,
            "HAProxy: 7.0 changes/s applied, 2 failed, a new route served after 120 ms (median); \
             in 1 round(s) the new route was not served within 5 s (last error: boom)"
        );
        assert!(churn_line(&result(ProxyKind::Nginx, 1.0)).is_none());
    }

    #[test]
    fn numbers_are_formatted_for_people() {
        assert_eq!(fmt_num(76912.4), "76,912");
        assert_eq!(fmt_num(1234567.0), "1,234,567");
        assert_eq!(fmt_num(123.4), "123");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(0.5), "0.50");
        assert_eq!(fmt_ms(0.123), "0.12");
        assert_eq!(fmt_ratio(Some(1.234)), "1.23x");
        assert_eq!(fmt_ratio(None), "-");
    }
}
