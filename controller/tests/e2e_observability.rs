//! Observability, with the real tools: a real Prometheus (Debian's `prometheus` package) scrapes
//! Gantry under traffic and evaluates the chart's alert rules and every expression of the chart's
//! Grafana dashboard; headless Chromium (Debian's `chromium`) opens the admin status page of
//! `gantry --demo`.
//!
//! The tools are found on `PATH` (or `GANTRY_PROMETHEUS`, `GANTRY_PROMTOOL`, `GANTRY_CHROMIUM`).
//! Without them a test says so and passes, unless `GANTRY_REQUIRE_TOOLS` is set (`.ci/test` sets
//! it), when it fails. Everything binds to 127.0.0.1.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use gantry_testkit::{gantry, objects::*, tls::self_signed_expiring_in, *};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// === Prometheus ===

/// A kubernetes.io/tls Secret holding a self-signed certificate for `host` that lapses at midnight
/// (UTC) `days` days from today.
fn tls_secret_expiring_in(name: &str, host: &str, days: u32) -> String {
    let (cert, key) = self_signed_expiring_in(&[host], days);
    secret_yaml(
        name,
        "kubernetes.io/tls",
        &[("tls.crt", &cert), ("tls.key", &key)],
    )
}

fn tls_ingress_yaml(name: &str, host: &str, secret: &str, service: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{ name: {name}, namespace: default }}\n\
         spec:\n  ingressClassName: gantry\n  tls: [{{ hosts: [\"{host}\"], secretName: {secret} }}]\n  rules:\n\
         \x20 - host: \"{host}\"\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n\
         \x20       backend:\n          service: {{ name: {service}, port: {{ number: 80 }} }}\n"
    )
}

/// Two loopback addresses nothing listens on (bound, then closed): connections are refused.
fn refused_addrs() -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// A Service whose two endpoints refuse connections (two slices: they differ in port).
fn refusing_service_yaml(name: &str) -> String {
    service_yaml(name, 80, None, &refused_addrs())
}

/// Prometheus on a free loopback port, scraping `target` every second with `rules` loaded.
struct Prometheus {
    _child: Killed,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(binary: &Path, target: SocketAddr, rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
        // honor_labels: Gantry's `namespace` label is the Ingress's, as the chart's ServiceMonitor
        // keeps it.
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: gantry\n    honor_labels: true\n    \
             static_configs: [{{ targets: [\"{target}\"] }}]\n",
            dir.path().join("rules.yaml").display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            _child: Killed(child),
            url: format!("http://127.0.0.1:{port}"),
            client: plain_client(),
            _dir: dir,
        };
        for _ in 0..200 {
            let ready = p.client.get(format!("{}/-/ready", p.url)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus not ready; log:\n{}", p.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    }

    /// An instant query: `Ok(result)`, or `Err(error)` when Prometheus refuses the expression.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self.api("/api/v1/query", &[("query", expr)]).await;
        match v["status"].as_str() {
            Some("success") => Ok(v["data"]["result"].as_array().cloned().unwrap_or_default()),
            _ => Err(format!("{}: {}", v["errorType"], v["error"])),
        }
    }

    /// The firing alerts: (alert name, labels).
    async fn firing(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let v = self.api("/api/v1/alerts", &[]).await;
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(a["labels"].clone()).unwrap_or_default();
                (labels.get("alertname").cloned().unwrap_or_default(), labels)
            })
            .collect()
    }
}

/// The chart's rule file with every `for:` at 0s, so an alert fires at its first true evaluation
/// (the expressions and thresholds are the chart's own).
fn rules_without_hold() -> String {
    let rules = std::fs::read_to_string(repo().join("charts/gantry/rules/gantry-rules.yaml")).unwrap();
    let mut changed = 0;
    let out: Vec<String> = rules
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => {
                changed += 1;
                format!("{}for: 0s", &l[..l.len() - l.trim_start().len()])
            }
            None => l.to_string(),
        })
        .collect();
    assert_eq!(changed, 4, "one `for` per alert");
    out.join("\n") + "\n"
}

/// Every PromQL expression of the dashboard: each panel's targets (rows' nested panels too) and
/// the template variables' queries, with Grafana's variables given values Prometheus can run:
/// `$__rate_interval` → `1m`, `$namespace` → `.*`. `label_values(metric, label)` becomes `metric`.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn panels<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            panels(&p["panels"], out);
        }
    }
    let mut all = Vec::new();
    panels(&dashboard["panels"], &mut all);
    let substitute = |e: &str| e.replace("$__rate_interval", "1m").replace("$namespace", ".*");
    let mut exprs = Vec::new();
    for p in all {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            exprs.push((p["title"].as_str().unwrap_or("").to_string(), substitute(expr)));
        }
    }
    for v in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.split_once(','))
            .map(|(metric, _)| metric.trim().to_string())
            .unwrap_or_else(|| q.to_string());
        exprs.push((format!("variable {}", v["name"]), substitute(&inner)));
    }
    exprs
}

/// The metric names an expression reads: the identifiers left once strings, label matchers
/// `{..}`, range selectors `[..]` and the label lists of `by`, `without`, `on`, `ignoring`,
/// `group_left` and `group_right` are taken out, that are not functions (followed by `(`),
/// aggregation operators (`sum by (..) (..)` puts `by` between the name and its `(`) or keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    // Strings, `{...}` and `[...]` out.
    let mut plain = Vec::new();
    let (mut depth, mut in_str) = (0usize, false);
    for c in expr.chars() {
        match c {
            '"' => in_str = !in_str,
            _ if in_str => {}
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            c => plain.push(c),
        }
    }
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < plain.len() {
        let c = plain[i];
        if c.is_ascii_digit() || c == '.' {
            // A number (with its exponent or unit letters).
            while i < plain.len() && (ident(plain[i]) || plain[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < plain.len() && ident(plain[i]) {
            i += 1;
        }
        let word: String = plain[start..i].iter().collect();
        let mut next = i;
        while next < plain.len() && plain[next].is_whitespace() {
            next += 1;
        }
        let call = plain.get(next) == Some(&'(');
        if LISTS.contains(&word.as_str()) {
            if call {
                // Skip the label list.
                while next < plain.len() && plain[next] != ')' {
                    next += 1;
                }
                i = next + 1;
            }
            continue;
        }
        if call || KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            continue;
        }
        names.insert(word);
    }
    names
}

/// The metric names a Prometheus text exposition has samples of.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn metric_names_are_read_out_of_promql_expressions() {
    let names = metric_names(
        r#"sum by (kind, namespace) (rate(gantry_requests_total{status_class="5xx", x="a{b}"}[5m])) / on (kind) gantry_up > bool 0.5 and histogram_quantile(0.9, sum by (le) (rate(gantry_b_bucket[1m])))"#,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "gantry_requests_total".to_string(),
            "gantry_up".to_string(),
            "gantry_b_bucket".to_string(),
        ])
    );
    assert_eq!(
        metric_names("time() - max(gantry_snapshot_last_publish_timestamp_seconds) < 14 * 86400 or 1e3"),
        BTreeSet::from(["gantry_snapshot_last_publish_timestamp_seconds".to_string()])
    );
}

#[test]
fn the_dashboard_is_a_grafana_dashboard() {
    let text = std::fs::read_to_string(repo().join("charts/gantry/dashboards/gantry.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert!(d["title"].is_string() && d["uid"].is_string());
    let variables: BTreeSet<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(variables.contains("datasource"));
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut with_targets = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "{title}: ids are unique");
        assert!(p["type"].is_string(), "{title}: type");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "{title}: gridPos");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: the datasource variable"
        );
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}: targets");
        let refs: BTreeSet<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap()).collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds are unique");
        assert!(targets.iter().all(|t| t["expr"].is_string()), "{title}: exprs");
        with_targets += 1;
    }
    assert!(with_targets >= 10, "{with_targets} panels with queries");
    // The issue's panels: request rate, error ratio and latency per Ingress, upstream health, TLS
    // expiry, configuration changes.
    let exprs: String = dashboard_exprs(&d).into_iter().map(|(_, e)| e + "\n").collect();
    for needle in [
        "rate(gantry_requests_total",
        "status_class=\"5xx\"",
        "histogram_quantile(0.99, sum by (kind, namespace, ingress, le) (rate(gantry_request_duration_seconds_bucket",
        "gantry_upstream_response_duration_seconds_bucket",
        "gantry_backend_endpoints",
        "gantry_tls_certificate_expiry_timestamp_seconds",
        "gantry_snapshot_rebuilds_total",
    ] {
        assert!(exprs.contains(needle), "the dashboard shows {needle}");
    }
}

#[test]
fn the_rule_file_passes_promtool() {
    let Some(promtool) = tool("promtool", "GANTRY_PROMTOOL") else {
        return;
    };
    let rules = repo().join("charts/gantry/rules/gantry-rules.yaml");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 4 rules found"), "{text}");
    // Negative control: promtool refuses a broken expression.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum by (a (gantry_requests_total)\n",
    )
    .unwrap();
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success(), "promtool accepts a broken rule");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_evaluates_the_dashboard_and_fires_every_alert() {
    let Some(prometheus) = tool("prometheus", "GANTRY_PROMETHEUS") else {
        return;
    };
    let good = Echo::start("good").await;
    let g = gantry!()
        // shop: a working backend over HTTP and HTTPS, with a certificate that lapses in 7 days.
        .manifest("good.yaml", &service_yaml("good", 80, None, &[good.addr]))
        .manifest(
            "shop-tls.yaml",
            &tls_secret_expiring_in("shop-tls", "shop.example", 7),
        )
        .manifest(
            "shop.yaml",
            &tls_ingress_yaml("shop", "shop.example", "shop-tls", "good"),
        )
        // long: the same backend and a certificate for a year (the expiry alert's negative
        // control).
        .manifest(
            "long-tls.yaml",
            &tls_secret_expiring_in("long-tls", "long.example", 365),
        )
        .manifest(
            "long.yaml",
            &tls_ingress_yaml("long", "long.example", "long-tls", "good"),
        )
        // broken: both endpoints refuse connections, so every request is a 502.
        .manifest("broken-svc.yaml", &refusing_service_yaml("broken"))
        .manifest(
            "broken.yaml",
            &ingress_yaml("broken", &[], &[("broken.example", "/", "Prefix", "broken", 80)]),
        )
        // empty: a Service without endpoints (503s).
        .manifest("empty-svc.yaml", &service_yaml("empty", 80, None, &[]))
        .manifest(
            "empty.yaml",
            &ingress_yaml("empty", &[], &[("empty.example", "/", "Prefix", "empty", 80)]),
        )
        // orphan: an Ingress naming a Service that does not exist (a diagnostic: not applied as
        // is).
        .manifest(
            "orphan.yaml",
            &ingress_yaml("orphan", &[], &[("orphan.example", "/", "Prefix", "missing", 80)]),
        )
        .start()
        .await;

    // Traffic until the test ends: HTTP and HTTPS to shop, and to the failing backends.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, http, https) = (stop.clone(), g.http, g.https);
        tokio::spawn(async move {
            let plain = plain_client();
            let tls = tls_client("shop.example", https, false);
            let mut statuses = BTreeMap::<(String, u16), usize>::new();
            // Bounded: at most 10 minutes of traffic.
            for _ in 0..6000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for host in ["shop.example", "broken.example", "empty.example"] {
                    let r = plain
                        .get(format!("http://{http}/"))
                        .header("host", host)
                        .send()
                        .await;
                    if let Ok(r) = r {
                        *statuses
                            .entry((host.to_string(), r.status().as_u16()))
                            .or_default() += 1;
                    }
                }
                if let Ok(r) = tls.get("https://shop.example/tls").send().await {
                    *statuses
                        .entry(("https shop".to_string(), r.status().as_u16()))
                        .or_default() += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            statuses
        })
    };

    let p = Prometheus::start(&prometheus, g.admin, &rules_without_hold()).await;

    // Every alert fires, on the objects made to trigger it.
    let expected = [
        ("GantryHighErrorRatio", "ingress", "broken"),
        ("GantryCertificateExpiringSoon", "host", "shop.example"),
        ("GantryConfigurationNotApplied", "reason", "ServiceNotFound"),
        ("GantryBackendWithoutEndpoints", "service", "empty"),
    ];
    let mut firing = Vec::new();
    for _ in 0..240 {
        firing = p.firing().await;
        let all = expected.iter().all(|(name, k, v)| {
            firing
                .iter()
                .any(|(n, l)| n == name && l.get(*k).map(String::as_str) == Some(v))
        });
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (name, k, v) in expected {
        assert!(
            firing
                .iter()
                .any(|(n, l)| n == name && l.get(k).map(String::as_str) == Some(v)),
            "{name} fires for {k}={v}; firing: {firing:#?}\nrules: {:#}\nprometheus log:\n{}",
            p.api("/api/v1/rules", &[]).await,
            p.log()
        );
    }
    // Negative controls: nothing fires for what works.
    for (name, k, v) in [
        ("GantryHighErrorRatio", "ingress", "shop"),
        ("GantryCertificateExpiringSoon", "host", "long.example"),
        ("GantryBackendWithoutEndpoints", "service", "good"),
    ] {
        assert!(
            !firing
                .iter()
                .any(|(n, l)| n == name && l.get(k).map(String::as_str) == Some(v)),
            "{name} must not fire for {k}={v}: {firing:#?}"
        );
    }
    // Every rule is loaded and healthy.
    let rules = p.api("/api/v1/rules", &[]).await;
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), 4, "{rules:#}");
    assert!(loaded.iter().all(|r| r["health"] == "ok"), "{rules:#}");

    // Every expression of the dashboard runs and returns data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("charts/gantry/dashboards/gantry.json")).unwrap(),
    )
    .unwrap();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 15, "{exprs:?}");
    for (panel, expr) in &exprs {
        let mut last = Ok(Vec::new());
        for _ in 0..60 {
            last = p.query(expr).await;
            if last.as_ref().is_ok_and(|r| !r.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        match last {
            Ok(r) if !r.is_empty() => {}
            other => panic!("panel {panel:?}: {expr}\nreturned {other:?}"),
        }
    }
    // Negative control: a name Gantry does not export returns nothing, and bad syntax is refused.
    assert_eq!(
        p.query("rate(gantry_no_such_metric_total[1m])").await,
        Ok(Vec::new())
    );
    assert!(p.query("sum by (a (gantry_requests_total)").await.is_err());

    // Every metric the dashboard and the rules read is one Gantry exports.
    let exported = exported_names(
        &plain_client()
            .get(format!("http://{}/metrics", g.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let rules_file: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("charts/gantry/rules/gantry-rules.yaml")).unwrap(),
    )
    .unwrap();
    let rule_exprs = rules_file["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| ("rule".to_string(), r["expr"].as_str().unwrap().to_string()));
    let mut read = BTreeSet::new();
    for (_, expr) in exprs.iter().cloned().chain(rule_exprs) {
        read.extend(metric_names(&expr));
    }
    assert!(read.len() >= 15, "{read:?}");
    let missing: Vec<_> = read.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "read but not exported: {missing:?}\nexported: {exported:?}"
    );
    assert!(!exported.contains("gantry_no_such_metric_total"));

    // GANTRY_SCREENSHOT_DIR: a picture of the dashboard's first queries in Prometheus's graph
    // view, for the README (docs/images/dashboard-queries.png).
    if let Some(out) = std::env::var_os("GANTRY_SCREENSHOT_DIR") {
        let chromium_bin = tool("chromium", "GANTRY_CHROMIUM").expect("chromium for the screenshot");
        let mut graph = url_with_query(&format!("{}/graph", p.url), &[]);
        for (i, (_, expr)) in exprs.iter().take(3).enumerate() {
            for (k, v) in [("expr", expr.as_str()), ("tab", "0"), ("range_input", "1m")] {
                graph.query_pairs_mut().append_pair(&format!("g{i}.{k}"), v);
            }
        }
        let shot = Path::new(&out).join("dashboard-queries.png");
        let profile = tempfile::tempdir().unwrap();
        chromium(
            &chromium_bin,
            profile.path(),
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1280,2300",
                "--virtual-time-budget=10000",
                "--hide-scrollbars",
            ],
            graph.as_str(),
        );
        assert!(shot.is_file());
    }

    stop.store(true, Ordering::Relaxed);
    let statuses = traffic.await.unwrap();
    // The traffic was what the scenario says.
    // Plain HTTP to a TLS host is redirected to HTTPS (as ingress-nginx does).
    assert!(
        statuses
            .get(&("shop.example".into(), 308))
            .is_some_and(|n| *n > 0),
        "{statuses:?}"
    );
    assert!(
        statuses.get(&("https shop".into(), 200)).is_some_and(|n| *n > 0),
        "{statuses:?}"
    );
    assert!(
        statuses
            .get(&("broken.example".into(), 502))
            .is_some_and(|n| *n > 0),
        "{statuses:?}"
    );
    assert!(
        statuses
            .get(&("empty.example".into(), 503))
            .is_some_and(|n| *n > 0),
        "{statuses:?}"
    );
}

// === Gantry's own metrics ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_connections_protocols_bytes_certificates_endpoints_and_objects() {
    let good = Echo::start("good").await;
    let g = gantry!()
        .manifest("good.yaml", &service_yaml("good", 80, None, &[good.addr]))
        .manifest("empty-svc.yaml", &service_yaml("empty", 80, None, &[]))
        .manifest(
            "shop-tls.yaml",
            &tls_secret_expiring_in("shop-tls", "shop.example", 7),
        )
        .manifest(
            "shop.yaml",
            &tls_ingress_yaml("shop", "shop.example", "shop-tls", "good"),
        )
        .manifest(
            "plain.yaml",
            &ingress_yaml(
                "plain",
                &[],
                &[
                    ("plain.example", "/", "Prefix", "good", 80),
                    ("plain.example", "/empty", "Prefix", "empty", 80),
                ],
            ),
        )
        .start()
        .await;
    let connections = |listener: &str, protocol: &str| {
        format!("gantry_active_connections{{listener=\"{listener}\",protocol=\"{protocol}\"}}")
    };

    // Nothing open yet, nothing counted.
    for (l, p) in [("http", "http1"), ("http", "h2"), ("https", "h2")] {
        assert_eq!(
            g.metric_series(&connections(l, p)).await.unwrap_or(0.0),
            0.0,
            "{l} {p}"
        );
    }
    let received_before = g
        .metric_series("gantry_received_bytes_total{listener=\"http\"}")
        .await
        .unwrap_or(0.0);

    // One connection of each: HTTP/1.1, HTTP/2 with prior knowledge, HTTP/2 over TLS (ALPN). The
    // clients keep their connections open while they live.
    let h1 = plain_client();
    // HTTP/2 has no Host header of its own to override (`:authority` is the URL's).
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("plain.example", g.http)
        .build()
        .unwrap();
    let tls = tls_client("shop.example", g.https, true);
    let r = h1
        .get(g.url("/"))
        .header("host", "plain.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    let r = h2c
        .get(format!("http://plain.example:{}/", g.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, http::Version::HTTP_2));
    let r = tls.get("https://shop.example/").send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, http::Version::HTTP_2));
    let r = h1
        .get(g.url("/empty/"))
        .header("host", "plain.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    for (l, p) in [("http", "http1"), ("http", "h2"), ("https", "h2")] {
        assert_eq!(
            g.metric_series(&connections(l, p)).await.unwrap_or(0.0),
            1.0,
            "{l} {p}"
        );
    }
    assert_eq!(
        g.metric_series(&connections("https", "http1"))
            .await
            .unwrap_or(0.0),
        0.0
    );

    // Bytes both ways, at least the body that went out.
    let received = g
        .metric_series("gantry_received_bytes_total{listener=\"http\"}")
        .await
        .unwrap_or(0.0);
    assert!(received > received_before, "{received}");
    assert!(
        g.metric_series("gantry_sent_bytes_total{listener=\"http\"}")
            .await
            .unwrap_or(0.0)
            >= body.len() as f64
    );
    assert!(
        g.metric_series("gantry_received_bytes_total{listener=\"https\"}")
            .await
            .unwrap_or(0.0)
            > 0.0
    );

    // Upstream latency only for what went upstream: the 503 (no endpoint) sent nothing.
    let route = "kind=\"Ingress\",namespace=\"default\",ingress=\"plain\"";
    assert_eq!(
        g.metric_series(&format!(
            "gantry_upstream_response_duration_seconds_count{{{route},service=\"good\"}}"
        ))
        .await
        .unwrap_or(0.0),
        2.0
    );
    assert_eq!(
        g.metric_series(&format!(
            "gantry_request_duration_seconds_count{{{route},service=\"empty\"}}"
        ))
        .await
        .unwrap_or(0.0),
        1.0
    );
    assert_eq!(
        g.metric_series(&format!(
            "gantry_upstream_response_duration_seconds_count{{{route},service=\"empty\"}}"
        ))
        .await
        .unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        g.metric_series(&format!(
            "gantry_requests_total{{{route},service=\"empty\",status_class=\"5xx\"}}"
        ))
        .await
        .unwrap_or(0.0),
        1.0
    );

    // The certificate's notAfter: midnight (UTC) 7 days from today, as it was made.
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    assert_eq!(
        g.metric_series("gantry_tls_certificate_expiry_timestamp_seconds{host=\"shop.example\"}")
            .await
            .unwrap_or(0.0),
        ((today + 7) * 86_400) as f64
    );
    // Endpoints per backend, and the objects read from the manifests.
    let backend =
        |s: &str| format!("gantry_backend_endpoints{{namespace=\"default\",service=\"{s}\",port=\"80\"}}");
    assert_eq!(g.metric_series(&backend("good")).await.unwrap_or(0.0), 1.0);
    let text = plain_client()
        .get(format!("http://{}/metrics", g.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(&format!("{} 0\n", backend("empty"))), "{text}");
    assert_eq!(
        g.metric_series("gantry_objects{kind=\"Ingress\"}")
            .await
            .unwrap_or(0.0),
        2.0
    );
    assert_eq!(
        g.metric_series("gantry_objects{kind=\"Service\"}")
            .await
            .unwrap_or(0.0),
        2.0
    );
    assert_eq!(
        g.metric_series("gantry_objects{kind=\"Secret\"}")
            .await
            .unwrap_or(0.0),
        1.0
    );
    assert!(
        g.metric_series("gantry_snapshot_last_publish_timestamp_seconds")
            .await
            .unwrap_or(0.0)
            > 0.0
    );

    // A removed Ingress takes its certificate's series with it.
    std::fs::remove_file(g.dir.join("shop.yaml")).unwrap();
    g.wait_routes("shop gone", |r| {
        r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["host"] != "shop.example")
    })
    .await;
    assert!(!plain_client()
        .get(format!("http://{}/metrics", g.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("host=\"shop.example\""));

    // Closed connections leave the gauges: the HTTP/1.1 client's, and a bare connection that
    // opened with the HTTP/2 preface (counted as h2 from its first bytes). (A dropped reqwest
    // client does not promptly close its HTTP/2 connections, so those are left to the end.)
    drop((r, h1));
    let mut raw = tokio::net::TcpStream::connect(g.http).await.unwrap();
    use tokio::io::AsyncWriteExt;
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let settled = |want: [f64; 2]| {
        let g = &g;
        async move {
            let mut got = [f64::NAN; 2];
            for _ in 0..100 {
                got = [
                    g.metric_series(&connections("http", "http1"))
                        .await
                        .unwrap_or(0.0),
                    g.metric_series(&connections("http", "h2")).await.unwrap_or(0.0),
                ];
                if got == want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            got
        }
    };
    assert_eq!(
        settled([0.0, 2.0]).await,
        [0.0, 2.0],
        "h1 closed; h2c and the bare h2 connection open"
    );
    drop(raw);
    assert_eq!(
        settled([0.0, 1.0]).await,
        [0.0, 1.0],
        "the bare h2 connection closed"
    );
    drop((h2c, tls));
}

// === Chromium ===

fn url_with_query(base: &str, pairs: &[(&str, &str)]) -> reqwest::Url {
    reqwest::Url::parse_with_params(base, pairs).unwrap()
}

/// `gantry --demo` on free loopback ports (the demo's backends are on 9101-9103), its log in `dir`.
async fn start_demo(dir: &Path) -> Gantry {
    gantry!()
        .flags_only()
        .arg("--demo")
        .log(dir.join("gantry.log"))
        .start()
        .await
}

/// Runs headless Chromium with `args` and `url`: (stdout, stderr). Bounded by a 60 s timeout.
fn chromium(binary: &Path, profile: &Path, args: &[&str], url: &str) -> (String, String) {
    let out = Command::new("timeout")
        .arg("60")
        .arg(binary)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JavaScript errors Chromium logged to the console.
fn js_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("Uncaught") || (l.contains("CONSOLE") && l.contains("Error")))
        .collect()
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_of_the_demo_renders_in_chromium() {
    let Some(chromium_bin) = tool("chromium", "GANTRY_CHROMIUM") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = start_demo(dir.path()).await;
    let (http, admin) = (demo.http, demo.admin);
    // Some traffic, so the backends have requests to show.
    let client = plain_client();
    for path in ["/", "/api/x", "/api/health"] {
        let r = client
            .get(format!("http://{http}{path}"))
            .header("host", "demo.localhost")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let url = format!("http://{admin}/");

    // The DOM Chromium built (after the page's script ran) lists the routes and the backends.
    let (dom, stderr) = chromium(&chromium_bin, &dir.path().join("p1"), &["--dump-dom"], &url);
    for needle in [
        "<title>Gantry status</title>",
        "<code>demo.localhost</code>",
        "<code>*.apps.localhost</code>",
        "<code>/api</code>",
        "<code>/api/health</code>",
        "Ingress demo/demo",
        "(default backend)",
        "<code>demo/web:http</code>",
        "<code>demo/api:80</code>",
        "<code>demo/apps:80</code>",
        "<code>127.0.0.1:9101</code>",
        "id=\"explain\"",
    ] {
        assert!(dom.contains(needle), "the page shows {needle}:\n{dom}\n{stderr}");
    }
    assert!(
        js_errors(&stderr).is_empty(),
        "JavaScript errors: {:?}",
        js_errors(&stderr)
    );

    // The explain form without script: a GET to /debug/explain with every field, empty or not.
    let r = client
        .get(format!(
            "http://{admin}/debug/explain?url=http%3A%2F%2Fdemo.localhost%2Fapi%2Fv1&method=&header="
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let explained: Value = r.json().await.unwrap();
    assert_eq!(explained["route"]["backend"], "demo/api:80", "{explained:#}");

    // Positive control for the error check: a page with a script error is caught.
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        "<html><body><script>noSuchFunction();</script></body></html>",
    )
    .unwrap();
    let (_, stderr) = chromium(
        &chromium_bin,
        &dir.path().join("p2"),
        &["--dump-dom"],
        &format!("file://{}", broken.display()),
    );
    assert!(
        !js_errors(&stderr).is_empty(),
        "the check sees script errors:\n{stderr}"
    );

    // The screenshot: a 1280x900 PNG with the page drawn on it, much larger than the screenshot of
    // an empty page (a blank image compresses to almost nothing).
    let shot = dir.path().join("status.png");
    let (_, stderr) = chromium(
        &chromium_bin,
        &dir.path().join("p3"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
            "--hide-scrollbars",
        ],
        &url,
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}):\n{stderr}"));
    assert_eq!(png_size(&png), Some((1280, 900)));
    assert!(
        js_errors(&stderr).is_empty(),
        "JavaScript errors: {:?}",
        js_errors(&stderr)
    );
    let blank = dir.path().join("blank.png");
    chromium(
        &chromium_bin,
        &dir.path().join("p4"),
        &[
            &format!("--screenshot={}", blank.display()),
            "--window-size=1280,900",
        ],
        "about:blank",
    );
    let blank = std::fs::read(&blank).unwrap();
    assert_eq!(png_size(&blank), Some((1280, 900)));
    assert!(
        png.len() > 4 * blank.len(),
        "the screenshot has content: {} bytes against {} for a blank page",
        png.len(),
        blank.len()
    );
    // GANTRY_SCREENSHOT_DIR keeps the screenshot (docs/images/ holds the README's).
    if let Some(out) = std::env::var_os("GANTRY_SCREENSHOT_DIR") {
        std::fs::copy(&shot, Path::new(&out).join("status-page.png")).unwrap();
    }
}

/// The binary turns transparent huge pages off for itself (`main.rs`): with 2 MiB pages its heap
/// of small long-lived objects cost 238 against 199 MiB at 10,000 Ingresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_without_transparent_huge_pages() {
    let thp = |pid: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .map(|v| v.trim().to_string())
    };
    // The control: a process that did not ask has them (where the kernel has them at all).
    if thp("self").as_deref() != Some("1") {
        eprintln!("this kernel gives no process transparent huge pages; nothing to check");
        return;
    }
    let backend = Echo::start("b").await;
    let g = gantry!()
        .manifest("b.yaml", &service_yaml("b", 80, None, &[backend.addr]))
        .start()
        .await;
    assert_eq!(thp(&g.pid().to_string()).as_deref(), Some("0"));
}
