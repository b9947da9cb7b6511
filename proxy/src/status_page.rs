//! The status page at the admin port's `/`: the routes, the backends with their endpoints and
//! recent error rates, the TLS hosts with their certificates' expiry, the embedding program's
//! diagnostics, and a form for `/debug/explain`.
//!
//! One self-contained HTML document: inline CSS, a few lines of inline script (the explain form
//! also works without it), no external assets. Read-only: nothing on it changes anything. Every
//! string that came from configuration (hosts, paths, names, messages) goes through [`escape`].
//!
//! The route listing is also the JSON of `/debug/routes` ([`RouteDump`]).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt::Write,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    metrics::{class_index, RouteIndex},
    routes::{HostMatch, PathMatch},
    snapshot::Snapshot,
};

/// Requests by status class of one backend (`namespace`, `service`), summed over its routes.
type Totals = HashMap<(String, String), [u64; 5]>;

/// How often [`ErrorWindow::sample`] should run, and how many samples it keeps: the "recent"
/// window is at most `SAMPLE_EVERY * (SAMPLES - 1)` (one minute).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const SAMPLES: usize = 7;

/// Recent request counts per backend: the request counters, sampled every [`SAMPLE_EVERY`], so
/// that the page can show rates over the last minute rather than since the start.
#[derive(Debug, Default)]
pub struct ErrorWindow {
    samples: Mutex<VecDeque<(Instant, Totals)>>,
}

impl ErrorWindow {
    /// Records the counters' current values, dropping the oldest sample beyond [`SAMPLES`].
    pub fn sample(&self, index: &RouteIndex) {
        let now = totals(index);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.push_back((Instant::now(), now));
        while samples.len() > SAMPLES {
            samples.pop_front();
        }
    }

    /// The oldest sample still kept: the start of the recent window.
    fn oldest(&self) -> Option<(Instant, Totals)> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.front().cloned()
    }
}

/// The JSON shape of `/debug/routes`.
#[derive(Debug, Serialize)]
pub struct RouteDump {
    pub generation: u64,
    pub routes: Vec<RouteEntry>,
    pub default_backend: Option<RouteEntry>,
    pub tls_hosts: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RouteEntry {
    /// `foo.example.com`, `*.example.com`, or `*` for rules without host.
    pub host: String,
    pub path: String,
    pub path_type: &'static str,
    pub backend: String,
    pub endpoints: Vec<String>,
    pub unavailable: Option<String>,
    pub ingress: String,
    /// `Kind namespace/name` of the object the route came from.
    pub source: String,
    /// What else a request must meet (`GET, header version=two`), for Gateway API routes.
    pub conditions: Option<String>,
    pub ssl_redirect: bool,
    /// The local address whose connections this route serves (a Gateway with an address of its
    /// own); absent for the shared table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl From<&Snapshot> for RouteDump {
    fn from(s: &Snapshot) -> Self {
        let entry = |address: Option<std::net::IpAddr>, host: String, r: &crate::Route| {
            let (path, path_type) = match &r.path {
                PathMatch::Exact(p) => (p.clone(), "Exact"),
                PathMatch::Prefix(p) => (p.clone(), "Prefix"),
                PathMatch::Regex(p) => (p.clone(), "Regex"),
                PathMatch::FullRegex(p) => (p.clone(), "RegularExpression"),
            };
            RouteEntry {
                host,
                path,
                path_type,
                backend: r.backend.id.to_string(),
                endpoints: r.backend.endpoints.iter().map(|e| e.addr.to_string()).collect(),
                unavailable: r.backend.unavailable.as_deref().map(str::to_string),
                ingress: format!("{}/{}", r.source.namespace, r.source.name),
                source: r.source.to_string(),
                conditions: r.conditions.as_ref().map(|c| c.describe()),
                ssl_redirect: r.policies.https_redirect.is_some(),
                address: address.map(|a| a.to_string()),
            }
        };
        // As `HostMatch` displays: `a.example`, `*.example` (Ingress, one label), `**.example`
        // (Gateway API, any depth), `*` for rules without host.
        let host_name = |h: &HostMatch| h.to_string();
        Self {
            generation: s.generation,
            routes: s
                .tables()
                .flat_map(|(a, t)| {
                    let default = t
                        .default_route()
                        .filter(|_| a.is_some())
                        .map(move |r| (a, HostMatch::Any, r));
                    t.iter().map(move |(h, r)| (a, h.clone(), r)).chain(default)
                })
                .map(|(a, h, r)| entry(a, host_name(&h), r))
                .collect(),
            default_backend: s.routes.default_route().map(|r| entry(None, "*".into(), r)),
            tls_hosts: s.certs.names(),
        }
    }
}

fn totals(index: &RouteIndex) -> Totals {
    let mut out = Totals::new();
    for (labels, counts) in index.totals() {
        let key = (labels.namespace.0.to_string(), labels.service.0.to_string());
        let sum = out.entry(key).or_default();
        for (s, c) in sum.iter_mut().zip(counts) {
            *s += c;
        }
    }
    out
}

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by character references: safe as element text and
/// as a quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the page shows besides the snapshot.
pub struct PageInputs<'a> {
    pub ready: bool,
    pub index: &'a RouteIndex,
    pub window: &'a ErrorWindow,
    /// The diagnostics section of `/debug/routes`, if the embedding program adds one: an array of
    /// objects with `object`, `reason` and `message`.
    pub diagnostics: Option<serde_json::Value>,
    /// The time now, as a Unix time in seconds (for the certificates' days left).
    pub unix_now: i64,
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d232a;background:#fff}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .4em;border-bottom:1px solid #ccd}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #e4e7eb;vertical-align:top}\
th{background:#f3f5f7;font-weight:600}code{font:12px ui-monospace,monospace}.ok{color:#17803d}.bad{color:#b42318;font-weight:600}\
.warn{color:#a15c07}.muted{color:#667}nav a{margin-right:1em}form{display:flex;gap:.5em;flex-wrap:wrap}\
input{font:inherit;padding:.2em .4em}input[name=url]{flex:1;min-width:20em}pre{background:#f3f5f7;padding:.6em;overflow:auto;max-height:30em}";

/// The explain form's script: shows the answer below the form instead of leaving the page.
const SCRIPT: &str = "document.getElementById('explain').addEventListener('submit',function(e){\
e.preventDefault();var out=document.getElementById('explain-out');\
var q=new URLSearchParams(new FormData(e.target)).toString();\
fetch('/debug/explain?'+q).then(function(r){return r.text()}).then(function(t){out.textContent=t;out.hidden=false})\
.catch(function(err){out.textContent=String(err);out.hidden=false});});";

/// The whole page.
pub fn render(snapshot: &Snapshot, inputs: &PageInputs<'_>) -> String {
    let dump = RouteDump::from(snapshot);
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Gantry status</title><style>{STYLE}</style></head><body>\
         <h1>Gantry status</h1><p>Snapshot generation <b id=\"generation\">{}</b> · {} · {} routes · \
         {} TLS hosts</p><nav><a href=\"/metrics\">/metrics</a><a href=\"/debug/routes\">/debug/routes</a>\
         <a href=\"/readyz\">/readyz</a></nav>",
        dump.generation,
        if inputs.ready {
            "<span class=\"ok\">ready</span>"
        } else {
            "<span class=\"bad\">not ready</span>"
        },
        dump.routes.len(),
        dump.tls_hosts.len(),
    );
    routes_section(&mut h, &dump);
    backends_section(&mut h, snapshot, inputs);
    tls_section(&mut h, snapshot, inputs.unix_now);
    diagnostics_section(&mut h, inputs.diagnostics.as_ref());
    h.push_str(
        "<h2 id=\"explain-title\">Explain a request</h2><form id=\"explain\" action=\"/debug/explain\" method=\"get\">\
         <input name=\"url\" placeholder=\"http://host/path\" required aria-label=\"URL\">\
         <input name=\"method\" placeholder=\"GET\" size=\"7\" aria-label=\"method\">\
         <input name=\"header\" placeholder=\"name:value\" aria-label=\"header\">\
         <button type=\"submit\">Explain</button></form><pre id=\"explain-out\" hidden></pre>",
    );
    let _ = write!(h, "<script>{SCRIPT}</script></body></html>");
    h
}

fn routes_section(h: &mut String, dump: &RouteDump) {
    h.push_str(
        "<h2>Routes</h2><table id=\"routes\"><thead><tr><th>Host</th><th>Path</th><th>Source</th>\
         <th>Conditions</th><th>Backend</th><th>Endpoints</th></tr></thead><tbody>",
    );
    let rows = dump
        .routes
        .iter()
        .map(|r| (r.host.as_str(), r))
        .chain(dump.default_backend.iter().map(|r| ("(default backend)", r)));
    let mut any = false;
    for (host, r) in rows {
        any = true;
        let endpoints = match (&r.unavailable, r.endpoints.len()) {
            (Some(why), _) => format!("<span class=\"bad\">none: {}</span>", escape(why)),
            (None, 0) => "<span class=\"bad\">none</span>".to_owned(),
            (None, n) => format!("<span class=\"ok\">{n}</span>"),
        };
        let address = r
            .address
            .as_deref()
            .map(|a| format!(" <span class=\"muted\">at {}</span>", escape(a)))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td><code>{}</code>{address}</td><td><code>{}</code> <span class=\"muted\">{}</span></td>\
             <td>{}</td><td>{}</td><td><code>{}</code></td><td>{endpoints}</td></tr>",
            escape(host),
            escape(&r.path),
            r.path_type,
            escape(&r.source),
            escape(r.conditions.as_deref().unwrap_or("")),
            escape(&r.backend),
        );
    }
    if !any {
        h.push_str("<tr><td colspan=\"6\" class=\"muted\">No routes.</td></tr>");
    }
    h.push_str("</tbody></table>");
}

fn backends_section(h: &mut String, snapshot: &Snapshot, inputs: &PageInputs<'_>) {
    let mut backends = BTreeMap::new();
    for (_, table) in snapshot.tables() {
        for route in table
            .iter_unordered()
            .map(|(_, r)| r)
            .chain(table.default_route())
        {
            for b in route.backends() {
                backends.insert(b.id.to_string(), b.clone());
            }
        }
    }
    let now = totals(inputs.index);
    let (since, before) = match inputs.window.oldest() {
        Some((at, t)) => (at.elapsed(), t),
        None => (Duration::ZERO, Totals::new()),
    };
    let _ = write!(
        h,
        "<h2>Backends</h2><p class=\"muted\">Recent: the last {} s. Requests are counted by the \
         route's namespace and the Service name.</p><table id=\"backends\"><thead><tr><th>Backend</th>\
         <th>Endpoints</th><th>Recent requests/s</th><th>Recent 5xx</th><th>Requests</th><th>5xx</th>\
         </tr></thead><tbody>",
        since.as_secs()
    );
    for (id, b) in &backends {
        let key = (b.id.namespace.to_string(), b.id.service.to_string());
        let total = now.get(&key).copied().unwrap_or_default();
        let old = before.get(&key).copied().unwrap_or_default();
        let recent: [u64; 5] = std::array::from_fn(|i| total[i].saturating_sub(old[i]));
        let sum = |c: &[u64; 5]| c.iter().sum::<u64>();
        let errors = class_index(500);
        let rate = if since.as_secs_f64() > 0.0 {
            format!("{:.2}", sum(&recent) as f64 / since.as_secs_f64())
        } else {
            "–".to_owned()
        };
        let ratio = |c: &[u64; 5]| match sum(c) {
            0 => "<span class=\"muted\">–</span>".to_owned(),
            n => {
                let pct = 100.0 * c[errors] as f64 / n as f64;
                let class = if c[errors] == 0 { "ok" } else { "bad" };
                format!("<span class=\"{class}\">{pct:.1}%</span>")
            }
        };
        let endpoints = if b.endpoints.is_empty() {
            let why = b.unavailable.as_deref().unwrap_or("no endpoints");
            format!("<span class=\"bad\">none: {}</span>", escape(why))
        } else {
            b.endpoints
                .iter()
                .map(|e| format!("<code>{}</code>", escape(&e.addr.to_string())))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{endpoints}</td><td>{rate}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>",
            escape(id),
            ratio(&recent),
            sum(&total),
            total[errors],
        );
    }
    if backends.is_empty() {
        h.push_str("<tr><td colspan=\"6\" class=\"muted\">No backends.</td></tr>");
    }
    h.push_str("</tbody></table>");
}

fn tls_section(h: &mut String, snapshot: &Snapshot, unix_now: i64) {
    let mut hosts: Vec<_> = snapshot
        .certs
        .entries()
        .map(|(host, cert)| (host, cert.not_after()))
        .collect();
    hosts.sort();
    h.push_str(
        "<h2>TLS hosts</h2><table id=\"tls\"><thead><tr><th>Host</th><th>Certificate expires</th></tr>\
         </thead><tbody>",
    );
    for (host, not_after) in &hosts {
        let expiry = match not_after {
            None => "<span class=\"muted\">unknown</span>".to_owned(),
            Some(t) => {
                let days = (t - unix_now).div_euclid(86_400);
                let class = match days {
                    ..0 => "bad",
                    0..14 => "warn",
                    _ => "ok",
                };
                let when = if days < 0 {
                    format!("expired {} days ago", -days)
                } else {
                    format!("in {days} days")
                };
                format!("<span class=\"{class}\">{when}</span>")
            }
        };
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{expiry}</td></tr>",
            escape(host)
        );
    }
    if hosts.is_empty() {
        h.push_str("<tr><td colspan=\"2\" class=\"muted\">No TLS hosts.</td></tr>");
    }
    h.push_str("</tbody></table>");
}

fn diagnostics_section(h: &mut String, diagnostics: Option<&serde_json::Value>) {
    let Some(list) = diagnostics.and_then(|d| d.as_array()) else {
        return;
    };
    h.push_str(
        "<h2>Diagnostics</h2><table id=\"diagnostics\"><thead><tr><th>Object</th><th>Reason</th>\
         <th>Message</th></tr></thead><tbody>",
    );
    let field =
        |d: &serde_json::Value, name: &str| escape(d.get(name).and_then(|v| v.as_str()).unwrap_or(""));
    for d in list {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"warn\">{}</td><td>{}</td></tr>",
            field(d, "object"),
            field(d, "reason"),
            field(d, "message"),
        );
    }
    if list.is_empty() {
        h.push_str("<tr><td colspan=\"3\" class=\"ok\">None: every object is applied.</td></tr>");
    }
    h.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        backend::{Backend, BackendId, Endpoint},
        metrics::Metrics,
        routes::{HostMatch, PathMatch, Route, RouteSource, RouteTableBuilder},
    };

    fn snapshot_with(host: &str, path: &str, service: &str) -> Snapshot {
        let id = BackendId {
            namespace: "default".into(),
            service: service.into(),
            port: "80".into(),
        };
        let endpoint = Endpoint {
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        let route = Route {
            path: PathMatch::Prefix(path.into()),
            conditions: None,
            backend: Arc::new(Backend::new(id, vec![endpoint])),
            source: RouteSource {
                kind: crate::SourceKind::Ingress,
                namespace: "default".into(),
                name: "web".into(),
            },
            policies: Default::default(),
        };
        let mut b = RouteTableBuilder::new();
        b.add(HostMatch::Exact(host.into()), route).unwrap();
        Snapshot {
            routes: b.build(),
            generation: 3,
            ..Snapshot::default()
        }
    }

    fn page(snapshot: &Snapshot, diagnostics: Option<serde_json::Value>) -> String {
        let metrics = Metrics::default();
        let window = ErrorWindow::default();
        render(
            snapshot,
            &PageInputs {
                ready: true,
                index: &metrics.route_index,
                window: &window,
                diagnostics,
                unix_now: 0,
            },
        )
    }

    #[test]
    fn escape_replaces_every_markup_character() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(escape("plain.example"), "plain.example");
    }

    #[test]
    fn page_lists_routes_and_backends() {
        let html = page(&snapshot_with("a.example", "/api", "svc-a"), None);
        assert!(html.contains("<code>a.example</code>"), "{html}");
        assert!(html.contains("<code>/api</code>"));
        assert!(html.contains("<code>default/svc-a:80</code>"));
        assert!(html.contains("<code>127.0.0.1:9</code>"));
        assert!(html.contains("id=\"generation\">3<"));
        // No diagnostics section unless the program gives one.
        assert!(!html.contains("id=\"diagnostics\""));
    }

    #[test]
    fn configuration_strings_are_never_markup() {
        // A path and a diagnostic message with markup in them (a path cannot hold `<` once
        // normalized, but the page must not rely on that).
        let html = page(
            &snapshot_with("a.example", "/<script>alert(1)</script>", "svc"),
            Some(serde_json::json!([{
                "object": "Ingress default/<b>x</b>",
                "reason": "Bad\"Reason",
                "message": "<img src=x onerror=alert(1)>",
            }])),
        );
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>x"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("Bad&quot;Reason"));
        // The page's own script is the only one.
        assert_eq!(html.matches("<script>").count(), 1);
    }

    #[test]
    fn recent_error_rates_count_5xx_since_the_oldest_sample() {
        let snapshot = snapshot_with("a.example", "/", "svc-a");
        let metrics = Metrics::default();
        let window = ErrorWindow::default();
        let labels = crate::metrics::RouteLabels {
            kind: "Ingress",
            namespace: crate::metrics::Label("default".into()),
            ingress: crate::metrics::Label("web".into()),
            service: crate::metrics::Label("svc-a".into()),
        };
        let m = metrics.route_metrics(&labels);
        m.classes[1].inc_by(10);
        window.sample(&metrics.route_index);
        m.classes[1].inc_by(3);
        m.classes[4].inc();
        let inputs = PageInputs {
            ready: true,
            index: &metrics.route_index,
            window: &window,
            diagnostics: Some(serde_json::json!([])),
            unix_now: 0,
        };
        let html = render(&snapshot, &inputs);
        // Recent: 1 of 4 since the sample; in all: 14 requests, 1 of them a 5xx.
        assert!(html.contains("25.0%"), "{html}");
        assert!(html.contains("<td>14</td><td>1</td>"), "{html}");
        assert!(html.contains("None: every object is applied."));
    }
}
