//! The soak test's figures, verdict and renderings. Pure: samples and totals in, CSV, Markdown and
//! JSON out.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use crate::loadgen::Measured;
use crate::report::{fmt_ms, fmt_num, ChurnStats, Machine};
use crate::ws::WsLoadResult;

/// Gantry at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the soak traffic started.
    pub t_s: f64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    pub threads: u64,
    /// `gantry_active_connections` summed over the listeners (`None` when /metrics did not answer).
    pub active_conns: Option<u64>,
}

pub const CSV_HEADER: &str = "t_s,rss_kib,fds,threads,active_conns";

/// One `samples.csv` line (no newline); an unknown connection count is an empty field.
pub fn csv_line(s: &Sample) -> String {
    format!(
        "{:.1},{},{},{},{}",
        s.t_s,
        s.rss_kib,
        s.fds,
        s.threads,
        s.active_conns.map(|n| n.to_string()).unwrap_or_default()
    )
}

/// `gantry_active_connections` summed over its label sets, from the Prometheus text exposition.
pub fn active_connections(metrics: &str) -> Option<u64> {
    let mut found = false;
    let mut sum = 0u64;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("gantry_active_connections") else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest.rsplit(' ').next()?.trim();
        // Gauges are integers, but the exposition may write them as floats.
        let v: f64 = value.parse().ok()?;
        sum += v.max(0.0).round() as u64;
        found = true;
    }
    found.then_some(sum)
}

/// The warm-up: the first 10 % of the run or 60 s, whichever is shorter.
pub fn warmup_for(duration: Duration) -> Duration {
    (duration / 10).min(Duration::from_secs(60))
}

/// At most this many distinct error messages are kept per traffic kind.
const MAX_ERROR_KINDS: usize = 10;

/// Counts `msg` in `kinds`, lumping messages beyond [`MAX_ERROR_KINDS`] under "other".
pub fn count_error(kinds: &mut BTreeMap<String, u64>, msg: &str) {
    let key: String = msg.chars().take(120).collect();
    if kinds.contains_key(&key) || kinds.len() < MAX_ERROR_KINDS {
        *kinds.entry(key).or_default() += 1;
    } else {
        *kinds.entry("other".into()).or_default() += 1;
    }
}

/// Totals of one oha traffic kind over its rounds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HttpTotals {
    pub name: String,
    pub description: String,
    pub rounds: u32,
    /// Rounds whose load generator failed or printed nothing usable.
    pub failed_rounds: u32,
    /// Responses of any status.
    pub responses: u64,
    pub non_2xx: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<String, u64>,
    /// Connection errors, timeouts, broken responses (not the requests cut off at a round's end).
    pub socket_errors: u64,
    /// Time the load ran, summed over rounds.
    pub duration_s: f64,
    /// Highest p99 latency of any round.
    pub p99_ms_max: f64,
    /// Error messages (load generator's wording) with counts.
    pub error_kinds: BTreeMap<String, u64>,
}

impl HttpTotals {
    pub fn new(name: &str, description: String) -> HttpTotals {
        HttpTotals {
            name: name.into(),
            description,
            ..HttpTotals::default()
        }
    }

    /// Adds one oha round: its parsed figures and its responses by status.
    pub fn add_round(&mut self, m: &Measured, statuses: &BTreeMap<String, u64>) {
        self.rounds += 1;
        let mut bad_status = 0;
        for (code, n) in statuses {
            *self.statuses.entry(code.clone()).or_default() += n;
            self.responses += n;
            if !code.starts_with('2') {
                self.non_2xx += n;
            }
            if code.parse::<u16>().map_or(true, |c| c >= 400) {
                bad_status += n;
            }
        }
        // `Measured::errors` counts socket errors plus statuses >= 400.
        let socket = m.errors.saturating_sub(bad_status);
        self.socket_errors += socket;
        if socket > 0 {
            for part in m.error_detail.split("; ").filter(|p| !p.starts_with("non-2xx")) {
                count_error(&mut self.error_kinds, part);
            }
        }
        self.duration_s += m.duration_s;
        self.p99_ms_max = self.p99_ms_max.max(m.p99_ms);
    }

    pub fn add_failed_round(&mut self, why: &str) {
        self.rounds += 1;
        self.failed_rounds += 1;
        count_error(&mut self.error_kinds, &format!("round failed: {why}"));
    }

    pub fn errors(&self) -> u64 {
        self.socket_errors + self.non_2xx + u64::from(self.failed_rounds)
    }

    pub fn rps(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.responses as f64 / self.duration_s
        } else {
            0.0
        }
    }
}

/// Totals of the WebSocket rounds (`ws-load`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WsTotals {
    pub description: String,
    pub rounds: u32,
    pub failed_rounds: u32,
    pub connected: u64,
    pub connect_failed: u64,
    /// Messages echoed.
    pub messages: u64,
    /// Connections that broke during a round.
    pub broken: u64,
    pub duration_s: f64,
    pub p99_ms_max: f64,
    pub error_kinds: BTreeMap<String, u64>,
    /// The rounds in which connections broke.
    pub broken_rounds: Vec<WsBrokenRound>,
}

/// A WebSocket round in which connections broke: when it ended against how long it should have run
/// (connections breaking together, early, point at the proxy).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WsBrokenRound {
    pub round: u32,
    pub broke: u64,
    pub planned_s: f64,
    /// Time from the first message until the last connection ended.
    pub ended_after_s: f64,
}

impl WsTotals {
    /// Adds one `ws-load` round that was to run `planned_s` seconds.
    pub fn add_round(&mut self, r: &WsLoadResult, planned_s: f64) {
        self.rounds += 1;
        if r.errors > 0 {
            self.broken_rounds.push(WsBrokenRound {
                round: self.rounds,
                broke: r.errors,
                planned_s,
                ended_after_s: r.duration_s,
            });
        }
        self.connected += r.connected;
        self.connect_failed += r.connect_failed;
        self.messages += r.messages;
        self.broken += r.errors;
        self.duration_s += r.duration_s;
        self.p99_ms_max = self.p99_ms_max.max(r.p99_ms);
        if let Some(e) = &r.first_error {
            count_error(&mut self.error_kinds, e);
        }
    }

    pub fn add_failed_round(&mut self, why: &str) {
        self.rounds += 1;
        self.failed_rounds += 1;
        count_error(&mut self.error_kinds, &format!("round failed: {why}"));
    }

    pub fn errors(&self) -> u64 {
        self.connect_failed + self.broken + u64::from(self.failed_rounds)
    }
}

/// Totals of the slow-download clients.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DownloadTotals {
    pub description: String,
    pub conns: usize,
    /// Downloads that got status 200 and exactly the whole body.
    pub completed: u64,
    pub errors: u64,
    /// Body bytes read (completed and cut-off downloads).
    pub bytes: u64,
    pub error_kinds: BTreeMap<String, u64>,
}

impl DownloadTotals {
    pub fn merge(&mut self, other: DownloadTotals) {
        self.completed += other.completed;
        self.errors += other.errors;
        self.bytes += other.bytes;
        for (k, n) in other.error_kinds {
            for _ in 0..n {
                count_error(&mut self.error_kinds, &k);
            }
        }
    }
}

/// One memory probe: Gantry's RSS before, while `opened` connections are held, and after they close.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProbeResult {
    pub name: String,
    pub description: String,
    pub conns: usize,
    pub opened: u64,
    /// Connections that could not be opened, or whose request did not get its answer.
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Time to open them all, seconds.
    pub open_s: f64,
    pub before: Sample,
    pub during: Sample,
    pub after: Sample,
    /// (RSS during − RSS before) / opened.
    pub kib_per_conn: f64,
    /// Share of the RSS increase given back once the connections closed, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub returned_pct: Option<f64>,
}

impl ProbeResult {
    /// Fills `kib_per_conn` and `returned_pct` from the three samples.
    pub fn compute(&mut self) {
        let delta = self.during.rss_kib as f64 - self.before.rss_kib as f64;
        self.kib_per_conn = if self.opened > 0 {
            delta / self.opened as f64
        } else {
            0.0
        };
        self.returned_pct =
            (delta > 0.0).then(|| (self.during.rss_kib as f64 - self.after.rss_kib as f64) / delta * 100.0);
    }
}

/// RSS, descriptors and threads at the warm-up sample, at the end, and their maxima.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemorySummary {
    pub warmup_s: f64,
    pub warmup: Sample,
    pub end: Sample,
    pub rss_max_kib: u64,
    pub fds_max: u64,
    pub threads_max: u64,
    /// (end − warm-up) / warm-up RSS, percent.
    pub rss_growth_pct: f64,
    /// end − warm-up open descriptors.
    pub fd_growth: i64,
}

/// The warm-up sample is the first at or after `warmup_s`, the end sample the last one; maxima are
/// over every sample. `None` when no sample comes after the warm-up.
pub fn memory_summary(samples: &[Sample], warmup_s: f64) -> Option<MemorySummary> {
    let warmup = *samples.iter().find(|s| s.t_s >= warmup_s)?;
    let end = *samples.last()?;
    Some(MemorySummary {
        warmup_s,
        warmup,
        end,
        rss_max_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        fds_max: samples.iter().map(|s| s.fds).max().unwrap_or(0),
        threads_max: samples.iter().map(|s| s.threads).max().unwrap_or(0),
        rss_growth_pct: if warmup.rss_kib > 0 {
            (end.rss_kib as f64 - warmup.rss_kib as f64) / warmup.rss_kib as f64 * 100.0
        } else {
            0.0
        },
        fd_growth: end.fds as i64 - warmup.fds as i64,
    })
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SoakSettings {
    pub duration_s: f64,
    pub churn_every_s: f64,
    pub sample_every_s: f64,
    pub probe_conns: usize,
    pub max_rss_growth_pct: f64,
    pub max_fd_growth: i64,
    pub workers: usize,
    /// `taskset -c` lists of Gantry and of the clients.
    pub proxy_cpu_list: String,
    pub load_cpu_list: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    pub pass: bool,
    /// `PASS: …` or `FAIL: …`.
    pub line: String,
    pub reasons: Vec<String>,
}

/// The whole soak report (`report.json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    pub machine: Machine,
    pub gantry_bin: String,
    pub generated_at: String,
    pub elapsed_s: f64,
    pub settings: SoakSettings,
    pub probes: Vec<ProbeResult>,
    /// Probes that could not run at all, and why.
    pub probe_errors: Vec<String>,
    pub http: Vec<HttpTotals>,
    pub websocket: WsTotals,
    pub slow_downloads: DownloadTotals,
    /// Route and endpoint changes (alternating); `propagation_ms` is a new route's time to be
    /// served, checked once after the traffic.
    pub churn: ChurnStats,
    pub samples: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySummary>,
    /// Gantry a few seconds after the traffic stopped (every client disconnected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_traffic: Option<Sample>,
    /// Set when Gantry exited during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gantry_exit: Option<String>,
    /// Set when a backend exited during the run (the run then says nothing about Gantry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_exit: Option<String>,
    pub notes: Vec<String>,
    pub verdict: Verdict,
}

fn statuses_text(statuses: &BTreeMap<String, u64>, only_non_2xx: bool) -> String {
    let parts: Vec<String> = statuses
        .iter()
        .filter(|(c, _)| !(only_non_2xx && c.starts_with('2')))
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn mib(kib: u64) -> String {
    format!("{} MiB", crate::report::mib(kib))
}

/// PASS when nothing failed and memory and descriptors stayed within the limits after the warm-up.
pub fn judge(r: &SoakReport) -> Verdict {
    let mut reasons = Vec::new();
    if let Some(e) = &r.gantry_exit {
        reasons.push(format!("Gantry exited: {e}"));
    }
    if let Some(e) = &r.backend_exit {
        reasons.push(format!(
            "a backend exited (the run says nothing about Gantry): {e}"
        ));
    }
    for e in &r.probe_errors {
        reasons.push(format!("probe did not run: {e}"));
    }
    for p in &r.probes {
        if p.failed > 0 {
            reasons.push(format!(
                "probe {}: {} of {} connections failed ({})",
                p.name,
                p.failed,
                p.conns,
                p.first_error.as_deref().unwrap_or("?")
            ));
        }
    }
    for h in &r.http {
        if h.errors() > 0 {
            reasons.push(format!(
                "{}: {} socket errors, {} non-2xx ({}), {} failed rounds",
                h.name,
                h.socket_errors,
                h.non_2xx,
                statuses_text(&h.statuses, true),
                h.failed_rounds
            ));
        } else if h.responses == 0 {
            reasons.push(format!("{}: no responses at all", h.name));
        }
    }
    let ws = &r.websocket;
    if ws.errors() > 0 {
        let when: Vec<String> = ws
            .broken_rounds
            .iter()
            .map(|b| {
                format!(
                    "{} in round {} ({:.0} of {:.0} s)",
                    b.broke, b.round, b.ended_after_s, b.planned_s
                )
            })
            .collect();
        reasons.push(format!(
            "websocket: {} connections failed to open, {} broke{}, {} failed rounds",
            ws.connect_failed,
            ws.broken,
            if when.is_empty() {
                String::new()
            } else {
                format!(" ({})", when.join(", "))
            },
            ws.failed_rounds
        ));
    } else if ws.messages == 0 {
        reasons.push("websocket: no messages echoed".into());
    }
    let dl = &r.slow_downloads;
    if dl.errors > 0 {
        reasons.push(format!("slow downloads: {} errors", dl.errors));
    } else if dl.completed == 0 {
        reasons.push("slow downloads: none completed".into());
    }
    if r.churn.failed > 0 {
        reasons.push(format!(
            "churn: {} of {} changes failed ({})",
            r.churn.failed,
            r.churn.failed + r.churn.changes,
            r.churn.last_error.as_deref().unwrap_or("?")
        ));
    }
    if r.churn.propagation_timed_out {
        reasons.push("churn: a route added after the run was not served within 5 s".into());
    }
    let limits = &r.settings;
    match &r.memory {
        None => reasons.push("no sample after the warm-up: memory growth unknown".into()),
        Some(m) => {
            if m.rss_growth_pct >= limits.max_rss_growth_pct {
                reasons.push(format!(
                    "RSS grew {:.1}% after the warm-up ({} → {}), limit {}%",
                    m.rss_growth_pct,
                    mib(m.warmup.rss_kib),
                    mib(m.end.rss_kib),
                    limits.max_rss_growth_pct
                ));
            }
            if m.fd_growth >= limits.max_fd_growth {
                reasons.push(format!(
                    "open file descriptors grew by {} after the warm-up ({} → {}), limit {}",
                    m.fd_growth, m.warmup.fds, m.end.fds, limits.max_fd_growth
                ));
            }
        }
    }
    let pass = reasons.is_empty();
    let line = if pass {
        let m = r.memory.clone().unwrap_or_default();
        format!(
            "PASS: 0 errors; after the warm-up RSS {:+.1}% (limit {}%), file descriptors {:+} (limit {})",
            m.rss_growth_pct, limits.max_rss_growth_pct, m.fd_growth, limits.max_fd_growth
        )
    } else {
        format!("FAIL: {}", reasons.join("; "))
    };
    Verdict { pass, line, reasons }
}

fn kinds_text(kinds: &BTreeMap<String, u64>) -> String {
    kinds
        .iter()
        .map(|(k, n)| format!("{} x{n}", k.replace('|', "\\|")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `report.md`.
pub fn markdown(r: &SoakReport) -> String {
    let mut s = String::new();
    let st = &r.settings;
    let _ = writeln!(s, "### Gantry soak test\n");
    let _ = writeln!(
        s,
        "{} CPUs ({}), {} GiB, {}; Gantry {} ({}), {} worker thread(s) on CPU {}, clients on CPU {}; \
         {:.0} s of traffic, churn every {} s, samples every {} s; {}.\n",
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.mem_total_kb / (1024 * 1024),
        r.machine.os,
        r.machine.gantry_commit,
        r.gantry_bin,
        st.workers,
        st.proxy_cpu_list,
        st.load_cpu_list,
        st.duration_s,
        st.churn_every_s,
        st.sample_every_s,
        r.generated_at
    );
    let _ = writeln!(s, "**{}**\n", r.verdict.line);

    let _ = writeln!(s, "#### Memory and file descriptors\n");
    match &r.memory {
        Some(m) => {
            let _ = writeln!(
                s,
                "| | t (s) | RSS | fds | threads | open conns |\n|---|---:|---:|---:|---:|---:|"
            );
            let row = |s: &mut String, name: &str, x: &Sample| {
                let _ = writeln!(
                    s,
                    "| {name} | {:.0} | {} | {} | {} | {} |",
                    x.t_s,
                    mib(x.rss_kib),
                    x.fds,
                    x.threads,
                    x.active_conns.map(|n| n.to_string()).unwrap_or("-".into())
                );
            };
            row(&mut s, "after warm-up", &m.warmup);
            row(&mut s, "end", &m.end);
            let _ = writeln!(
                s,
                "| max | | {} | {} | {} | |",
                mib(m.rss_max_kib),
                m.fds_max,
                m.threads_max
            );
            if let Some(a) = &r.after_traffic {
                row(&mut s, "idle after the traffic", a);
            }
            let _ = writeln!(
                s,
                "\nGrowth after the warm-up (first {:.0} s): RSS {:+.1}% (limit {}%), file descriptors {:+} \
                 (limit {}). {} samples in `samples.csv`, plotted in `soak.svg`.\n",
                m.warmup_s, m.rss_growth_pct, st.max_rss_growth_pct, m.fd_growth, st.max_fd_growth, r.samples
            );
        }
        None => {
            let _ = writeln!(s, "No sample after the warm-up.\n");
        }
    }

    let _ = writeln!(s, "#### Memory probes (before the traffic)\n");
    if !r.probes.is_empty() {
        let _ = writeln!(
            s,
            "| probe | conns | opened | failed | RSS before | RSS held | KiB/conn | RSS after close | returned | fds held → after |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for p in &r.probes {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} → {} |",
                p.name,
                p.conns,
                p.opened,
                p.failed,
                mib(p.before.rss_kib),
                mib(p.during.rss_kib),
                p.kib_per_conn,
                mib(p.after.rss_kib),
                p.returned_pct.map(|v| format!("{v:.0}%")).unwrap_or("-".into()),
                p.during.fds,
                p.after.fds
            );
        }
        s.push('\n');
        for p in &r.probes {
            let _ = writeln!(s, "- {}: {}", p.name, p.description);
            if let Some(e) = &p.first_error {
                let _ = writeln!(s, "  First error: {}", e.replace('|', "\\|"));
            }
        }
    }
    for e in &r.probe_errors {
        let _ = writeln!(s, "- probe did not run: {e}");
    }
    s.push('\n');

    let _ = writeln!(s, "#### Traffic\n");
    let _ = writeln!(
        s,
        "| kind | rounds | responses | avg req/s | non-2xx (by status) | socket errors | failed rounds | worst p99 ms |\n\
         |---|---:|---:|---:|---|---:|---:|---:|"
    );
    for h in &r.http {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            h.name,
            h.rounds,
            fmt_num(h.responses as f64),
            fmt_num(h.rps()),
            statuses_text(&h.statuses, true),
            h.socket_errors,
            h.failed_rounds,
            fmt_ms(h.p99_ms_max)
        );
    }
    let ws = &r.websocket;
    let _ = writeln!(
        s,
        "\n- WebSocket ({}): {} rounds, {} connections opened, {} failed to open, {} broke, {} messages \
         echoed, worst round p99 {} ms, {} failed rounds.",
        ws.description,
        ws.rounds,
        ws.connected,
        ws.connect_failed,
        ws.broken,
        fmt_num(ws.messages as f64),
        fmt_ms(ws.p99_ms_max),
        ws.failed_rounds
    );
    for b in &ws.broken_rounds {
        let _ = writeln!(
            s,
            "  - round {}: {} connections broke; the round ended after {:.1} s of its {:.0} s",
            b.round, b.broke, b.ended_after_s, b.planned_s
        );
    }
    let dl = &r.slow_downloads;
    let _ = writeln!(
        s,
        "- Slow downloads ({}): {} complete (status 200, whole body), {} errors, {:.0} MB read.",
        dl.description,
        dl.completed,
        dl.errors,
        dl.bytes as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "- Churn (route and endpoint changes alternating): {} applied, {} failed{}{}.",
        r.churn.changes,
        r.churn.failed,
        r.churn
            .propagation_ms
            .map(|v| format!("; a route added after the run was served after {v:.0} ms"))
            .unwrap_or_default(),
        if r.churn.propagation_timed_out {
            "; a route added after the run was NOT served within 5 s"
        } else {
            ""
        }
    );
    let mut errors = Vec::new();
    for h in &r.http {
        if !h.error_kinds.is_empty() {
            errors.push(format!("{}: {}", h.name, kinds_text(&h.error_kinds)));
        }
    }
    if !ws.error_kinds.is_empty() {
        errors.push(format!("websocket: {}", kinds_text(&ws.error_kinds)));
    }
    if !dl.error_kinds.is_empty() {
        errors.push(format!("slow downloads: {}", kinds_text(&dl.error_kinds)));
    }
    if !errors.is_empty() {
        let _ = writeln!(s, "\nErrors:\n");
        for e in errors {
            let _ = writeln!(s, "- {e}");
        }
    }
    if !r.notes.is_empty() {
        s.push('\n');
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, rss_kib: u64, fds: u64) -> Sample {
        Sample {
            t_s,
            rss_kib,
            fds,
            threads: 5,
            active_conns: Some(60),
        }
    }

    /// A run where everything went right.
    fn good_report() -> SoakReport {
        let samples: Vec<Sample> = (0..=12)
            .map(|i| sample(f64::from(i) * 5.0, 40_000, 200))
            .collect();
        let mut h1 = HttpTotals::new("http1-keepalive", "oha".into());
        h1.add_round(
            &Measured {
                requests: 1000,
                duration_s: 60.0,
                ..Measured::default()
            },
            &BTreeMap::from([("200".to_string(), 1000)]),
        );
        SoakReport {
            settings: SoakSettings {
                max_rss_growth_pct: 10.0,
                max_fd_growth: 50,
                ..SoakSettings::default()
            },
            http: vec![h1],
            websocket: WsTotals {
                rounds: 1,
                connected: 50,
                messages: 3000,
                ..WsTotals::default()
            },
            slow_downloads: DownloadTotals {
                completed: 100,
                ..DownloadTotals::default()
            },
            churn: ChurnStats {
                changes: 12,
                propagation_ms: Some(400.0),
                ..ChurnStats::default()
            },
            samples: samples.len(),
            memory: memory_summary(&samples, 6.0),
            probes: vec![ProbeResult {
                name: "slow-readers".into(),
                conns: 1000,
                opened: 1000,
                ..ProbeResult::default()
            }],
            ..SoakReport::default()
        }
    }

    #[test]
    fn csv_lines_match_the_header_and_leave_unknown_counts_empty() {
        assert_eq!(CSV_HEADER.split(',').count(), 5);
        let s = Sample {
            t_s: 12.345,
            rss_kib: 40_960,
            fds: 212,
            threads: 7,
            active_conns: Some(110),
        };
        assert_eq!(csv_line(&s), "12.3,40960,212,7,110");
        let unknown = Sample {
            active_conns: None,
            ..s
        };
        assert_eq!(csv_line(&unknown), "12.3,40960,212,7,");
        assert_eq!(csv_line(&unknown).split(',').count(), 5);
    }

    #[test]
    fn active_connections_are_summed_over_listeners() {
        let text = "# HELP gantry_active_connections Open client connections.\n\
                    # TYPE gantry_active_connections gauge\n\
                    gantry_active_connections{listener=\"http\"} 52\n\
                    gantry_active_connections{listener=\"https\"} 10\n\
                    gantry_active_connections_total_bogus 99\n\
                    gantry_routes 11\n";
        assert_eq!(active_connections(text), Some(62));
        assert_eq!(active_connections("gantry_active_connections 3.0\n"), Some(3));
        assert_eq!(active_connections("gantry_routes 1\n"), None);
    }

    #[test]
    fn the_warm_up_is_a_tenth_of_the_run_at_most_a_minute() {
        assert_eq!(warmup_for(Duration::from_secs(40)), Duration::from_secs(4));
        assert_eq!(warmup_for(Duration::from_secs(1800)), Duration::from_secs(60));
    }

    #[test]
    fn memory_is_compared_between_the_first_sample_after_warm_up_and_the_last() {
        let samples = [
            sample(0.0, 10_000, 50),
            sample(5.0, 40_000, 200),
            sample(10.0, 48_000, 260),
            sample(15.0, 44_000, 230),
        ];
        let m = memory_summary(&samples, 4.0).unwrap();
        assert_eq!((m.warmup.t_s, m.end.t_s), (5.0, 15.0));
        assert!((m.rss_growth_pct - 10.0).abs() < 1e-9);
        assert_eq!((m.fd_growth, m.fds_max, m.rss_max_kib), (30, 260, 48_000));
        assert!(memory_summary(&samples, 20.0).is_none());
        assert!(memory_summary(&[], 0.0).is_none());
    }

    #[test]
    fn a_clean_run_passes_and_says_so() {
        let r = good_report();
        let v = judge(&r);
        assert!(v.pass, "{:?}", v.reasons);
        assert!(v.line.starts_with("PASS: 0 errors"), "{}", v.line);
        assert!(v.line.contains("RSS +0.0% (limit 10%)"), "{}", v.line);
    }

    #[test]
    fn errors_of_any_kind_fail_the_run_with_the_reason() {
        let mut r = good_report();
        r.http[0].add_round(
            &Measured {
                requests: 10,
                errors: 3,
                error_detail: "connection reset: 1; non-2xx/3xx: 2".into(),
                ..Measured::default()
            },
            &BTreeMap::from([("200".to_string(), 10), ("502".to_string(), 2)]),
        );
        assert_eq!(
            (r.http[0].socket_errors, r.http[0].non_2xx, r.http[0].errors()),
            (1, 2, 3)
        );
        assert_eq!(r.http[0].error_kinds.get("connection reset: 1"), Some(&1));
        r.websocket.add_round(
            &WsLoadResult {
                connected: 50,
                messages: 100,
                errors: 1,
                duration_s: 45.1,
                first_error: Some("receive: reset".into()),
                ..WsLoadResult::default()
            },
            60.0,
        );
        assert_eq!(r.websocket.broken_rounds.len(), 1);
        r.slow_downloads.errors = 4;
        r.churn.failed = 1;
        r.probes[0].failed = 2;
        let v = judge(&r);
        assert!(!v.pass);
        assert!(v.line.starts_with("FAIL: "));
        assert_eq!(v.reasons.len(), 5, "{:?}", v.reasons);
        assert!(
            v.line.contains("1 socket errors, 2 non-2xx (502: 2)"),
            "{}",
            v.line
        );
        assert!(v.line.contains("slow downloads: 4 errors") && v.line.contains("probe slow-readers"));
        assert!(
            v.line.contains("1 broke (1 in round 2 (45 of 60 s))"),
            "{}",
            v.line
        );
        assert!(
            markdown(&r).contains("round 2: 1 connections broke; the round ended after 45.1 s of its 60 s")
        );
    }

    #[test]
    fn growth_at_or_over_the_limits_fails_and_the_rss_limit_is_configurable() {
        let mut r = good_report();
        let mut samples: Vec<Sample> = (0..=12)
            .map(|i| sample(f64::from(i) * 5.0, 40_000, 200))
            .collect();
        samples.last_mut().unwrap().rss_kib = 44_000;
        r.memory = memory_summary(&samples, 6.0);
        let v = judge(&r);
        assert!(!v.pass && v.line.contains("RSS grew 10.0%"), "{}", v.line);
        r.settings.max_rss_growth_pct = 25.0;
        assert!(judge(&r).pass);
        samples.last_mut().unwrap().fds = 250;
        r.memory = memory_summary(&samples, 6.0);
        let v = judge(&r);
        assert!(!v.pass && v.line.contains("grew by 50"), "{}", v.line);
        samples.last_mut().unwrap().fds = 249;
        r.memory = memory_summary(&samples, 6.0);
        assert!(judge(&r).pass);
    }

    #[test]
    fn a_run_without_traffic_or_samples_or_gantry_does_not_pass() {
        let mut r = good_report();
        r.memory = None;
        assert!(judge(&r).line.contains("no sample after the warm-up"));
        let mut r = good_report();
        r.http[0] = HttpTotals::new("h2-tls", String::new());
        assert!(judge(&r).line.contains("h2-tls: no responses at all"));
        let mut r = good_report();
        r.gantry_exit = Some("exit status: 101".into());
        r.churn.propagation_timed_out = true;
        let v = judge(&r);
        assert!(v.line.contains("Gantry exited: exit status: 101") && v.reasons.len() == 2);
    }

    #[test]
    fn probes_compute_kib_per_connection_and_what_came_back() {
        let mut p = ProbeResult {
            opened: 1000,
            before: sample(0.0, 40_000, 100),
            during: sample(0.0, 80_000, 2100),
            after: sample(0.0, 50_000, 100),
            ..ProbeResult::default()
        };
        p.compute();
        assert!((p.kib_per_conn - 40.0).abs() < 1e-9);
        assert!((p.returned_pct.unwrap() - 75.0).abs() < 1e-9);
        p.during.rss_kib = 39_000;
        p.compute();
        assert!(p.kib_per_conn < 0.0 && p.returned_pct.is_none());
    }

    #[test]
    fn error_kinds_are_capped() {
        let mut kinds = BTreeMap::new();
        for i in 0..15 {
            count_error(&mut kinds, &format!("error {i}"));
        }
        count_error(&mut kinds, "error 0");
        assert_eq!(kinds.len(), MAX_ERROR_KINDS + 1);
        assert_eq!((kinds["error 0"], kinds["other"]), (2, 5));
    }

    #[test]
    fn markdown_shows_the_verdict_probes_and_traffic() {
        let mut r = good_report();
        r.verdict = judge(&r);
        let md = markdown(&r);
        assert!(md.contains("**PASS: 0 errors"));
        assert!(
            md.contains("| after warm-up | 10 | 39.1 MiB | 200 | 5 | 60 |"),
            "{md}"
        );
        assert!(md.contains("| slow-readers | 1000 | 1000 | 0 |"));
        assert!(md.contains("| http1-keepalive | 1 | 1,000 |"), "{md}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["verdict"]["pass"], true);
        assert_eq!(json["http"][0]["statuses"]["200"], 1000);
        assert!(json["memory"]["rss_growth_pct"].is_number());
    }
}
