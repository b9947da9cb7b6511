//! HTTP/2 conformance: h2spec (github.com/summerwind/h2spec) against the real `gantry` binary, on
//! both listeners: TLS with ALPN h2 (`--https-addr`) and plain HTTP with h2c prior knowledge
//! (`--http-addr`). Every case must pass; none may be skipped.
//!
//! h2spec is the binary named by `GANTRY_H2SPEC`; when that is unset the test runs
//! `controller/testenv/build-h2spec.sh` (built once from the Go module proxy, then cached under
//! ~/.cache/gantry/) and uses the path it prints last.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use gantry_testkit::{gantry, objects::*, *};

/// Upper bound for one h2spec run (it makes ~150 short connections; each case waits at most `-o`).
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// h2spec's per-case timeout (`-o`, seconds).
const CASE_TIMEOUT_SECS: &str = "5";

/// The h2spec binary: `GANTRY_H2SPEC`, or what `build-h2spec.sh` builds (or finds cached).
fn h2spec_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GANTRY_H2SPEC").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "GANTRY_H2SPEC={} is not a file", p.display());
        return p;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testenv/build-h2spec.sh");
    let out = std::process::Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim();
    let p = PathBuf::from(last);
    assert!(
        p.is_file(),
        "{} printed no binary path (got {last:?})",
        script.display()
    );
    p
}

/// What one h2spec run reported.
struct Outcome {
    total: usize,
    passed: usize,
    skipped: usize,
    failed: usize,
    /// Failing cases as "<section> — <case number>: <title> [<spec>]".
    failures: Vec<String>,
    /// h2spec's own account of the failures (or its whole output when it has none).
    report: String,
}

/// Parses h2spec's plain-text output: the `N tests, P passed, S skipped, F failed` summary, and the
/// failing cases from its `Failures:` list, each named with the spec and the section above it.
fn parse(output: &str) -> Outcome {
    let mut summary = None;
    let mut failures = Vec::new();
    // (indentation, heading) of the headings above the current line in the `Failures:` list.
    let mut headings: Vec<(usize, String)> = Vec::new();
    // Indentation of the last failing case: deeper lines are its details (requirement, expected, actual).
    let mut case_indent = None;
    let mut in_failures = false;
    for raw in output.lines() {
        // A case's line is "<title>\r<✔|×> <title>": keep what a terminal would show.
        let line = raw.rsplit('\r').next().unwrap_or_default();
        let t = line.trim();
        if t.starts_with("Failures:") {
            in_failures = true;
            continue;
        }
        if !in_failures || t.is_empty() {
            continue;
        }
        if t.starts_with("Finished in") {
            break;
        }
        let indent = line.len() - line.trim_start().len();
        if case_indent.is_some_and(|c| indent > c) {
            continue;
        }
        if let Some(case) = t.strip_prefix('×') {
            let spec = headings.first().map_or("?", |h| h.1.as_str());
            let section = headings.last().map_or("?", |h| h.1.as_str());
            failures.push(format!("{section} — {} [{spec}]", case.trim()));
            case_indent = Some(indent);
        } else {
            headings.retain(|h| h.0 < indent);
            headings.push((indent, t.to_string()));
            case_indent = None;
        }
    }
    for line in output.lines() {
        let nums: Vec<usize> = line
            .split(',')
            .filter_map(|part| part.split_whitespace().next()?.parse().ok())
            .collect();
        if line.contains(" tests, ") && line.contains(" passed, ") && nums.len() == 4 {
            summary = Some((nums[0], nums[1], nums[2], nums[3]));
        }
    }
    let (total, passed, skipped, failed) =
        summary.unwrap_or_else(|| panic!("no h2spec summary line in its output:\n{output}"));
    // What to show on failure: h2spec's `Failures:` list with expectations, else everything.
    let report = match output.find("Failures:") {
        Some(i) => output[i..].to_string(),
        None => output.to_string(),
    };
    Outcome {
        total,
        passed,
        skipped,
        failed,
        failures,
        report,
    }
}

/// Runs h2spec against `port` (TLS or plain h2c) and returns its outcome.
async fn run_h2spec(label: &str, port: u16, tls: bool, report: &Path) -> Outcome {
    let bin = h2spec_binary();
    let port = port.to_string();
    let mut args: Vec<&str> = vec!["-h", "127.0.0.1", "-p", &port];
    if tls {
        // Insecure: the default (self-signed) certificate; 127.0.0.1 sends no SNI.
        args.extend(["-t", "-k"]);
    }
    let report_s = report.to_string_lossy();
    args.extend(["-o", CASE_TIMEOUT_SECS, "--junit-report", &report_s]);
    eprintln!("[{label}] {} {}", bin.display(), args.join(" "));
    let child = tokio::process::Command::new(&bin)
        .args(&args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("[{label}] h2spec did not finish within {RUN_LIMIT:?}"))
        .expect("wait for h2spec");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let o = parse(&text);
    eprintln!(
        "[{label}] {} tests, {} passed, {} skipped, {} failed ({})",
        o.total, o.passed, o.skipped, o.failed, out.status
    );
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_passes_on_the_tls_and_the_plain_listener() {
    let backend = Echo::start("h2spec-backend").await;
    let dir = tempfile::tempdir().unwrap();
    let host = "h2spec.example";
    write_manifest(
        dir.path(),
        "svc.yaml",
        &service_yaml("svc-h2spec", 80, None, &[backend.addr]),
    );
    write_manifest(dir.path(), "cert.yaml", &tls_secret_yaml("h2spec-cert", &[host]));
    // The named host with TLS, and the same backend for requests without a matching host: h2spec
    // sends `:authority: 127.0.0.1:<port>`, so its requests are proxied rather than answered 404.
    write_manifest(
        dir.path(),
        "ing.yaml",
        &format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: h2spec\n  namespace: default\n\
             spec:\n  ingressClassName: gantry\n  tls: [{{ hosts: [{host}], secretName: h2spec-cert }}]\n  rules:\n\
             \x20   - host: {host}\n      http: {{ paths: [{{ path: /, pathType: Prefix, backend: {{ service: {{ name: svc-h2spec, port: {{ number: 80 }} }} }} }}] }}\n\
             \x20   - http: {{ paths: [{{ path: /, pathType: Prefix, backend: {{ service: {{ name: svc-h2spec, port: {{ number: 80 }} }} }} }}] }}\n"
        ),
    );
    let g = gantry!().manifests(dir.path()).start().await;
    g.wait_routes("the h2spec host", |r| r.to_string().contains(host))
        .await;

    let reports = tempfile::tempdir().unwrap();
    let runs = [("TLS", g.https.port(), true), ("plain h2c", g.http.port(), false)];
    let mut problems = Vec::new();
    for (label, port, tls) in runs {
        let report = reports
            .path()
            .join(format!("{}.xml", if tls { "tls" } else { "plain" }));
        let o = run_h2spec(label, port, tls, &report).await;
        if o.failed != 0 || o.skipped != 0 || o.passed != o.total || o.total == 0 {
            problems.push(format!(
                "[{label}] {} tests, {} passed, {} skipped, {} failed; failing cases:\n  {}\n\
                 h2spec says:\n{}",
                o.total,
                o.passed,
                o.skipped,
                o.failed,
                o.failures.join("\n  "),
                o.report
            ));
        }
    }
    if !problems.is_empty() {
        let log = g.log_text();
        let lines: Vec<&str> = log.lines().collect();
        panic!(
            "h2spec found non-conformance:\n{}\nlast lines of the gantry log:\n{}",
            problems.join("\n"),
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
}

#[test]
fn parse_reads_the_summary_and_names_the_failing_cases() {
    let out = "Generic tests for HTTP/2 server\n  1. Starting HTTP/2\n    \
               1: Sends a client connection preface\r\u{2714} 1: Sends a client connection preface\n\n\
               Failures: \n\n\
               Generic tests for HTTP/2 server\n  2. Streams and Multiplexing\n    \u{d7} 4: Sends a RST_STREAM frame\n      \
               -> The endpoint MUST NOT\n         Expected: Connection closed\n                   RST_STREAM Frame\n           \
               Actual: DATA Frame\n\n\
               Hypertext Transfer Protocol Version 2 (HTTP/2)\n  3. Starting HTTP/2\n    3.5. HTTP/2 Connection Preface\n      \
               \u{d7} 2: Sends invalid connection preface\n        -> The endpoint MUST terminate the TCP connection.\n\n\
               Finished in 0.8354 seconds\n145 tests, 143 passed, 0 skipped, 2 failed\n";
    let o = parse(out);
    assert_eq!((o.total, o.passed, o.skipped, o.failed), (145, 143, 0, 2));
    assert_eq!(
        o.failures,
        [
            "2. Streams and Multiplexing — 4: Sends a RST_STREAM frame [Generic tests for HTTP/2 server]",
            "3.5. HTTP/2 Connection Preface — 2: Sends invalid connection preface \
             [Hypertext Transfer Protocol Version 2 (HTTP/2)]",
        ]
    );
    assert!(o.report.starts_with("Failures:"));
}
