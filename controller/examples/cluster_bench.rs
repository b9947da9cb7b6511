//! Cluster-mode benchmark: the real `gantry` binary (release) against a real kube-apiserver and
//! etcd (envtest) holding 10,000 Ingresses (one host, two paths each), their 10,000 (headless)
//! Services and EndpointSlices, and 1,000 TLS Secrets. Prints a Markdown table with
//!
//! - how long loading the objects into the API server took (32 requests in flight),
//! - time from process start to `/readyz` 200 (every watch listed, first snapshot published),
//! - resident memory (VmRSS, and the peak VmHWM, from `/proc/PID/status`) at ready and once settled,
//! - time from ready until every Ingress status is written (`--publish-status-address`),
//! - latency from an Ingress update (the API call starting) to the new route serving, p50/p99 over
//!   200 sequential updates, measured by polling the proxy every millisecond,
//! - latency from an EndpointSlice update to traffic reaching the new endpoint, p50/p99 over 100,
//! - the time of each rebuild during the Ingress updates (one Ingress changed each), from Gantry's
//!   own `gantry_snapshot_build_duration_seconds` and its "snapshot built" log lines.
//!
//! The figures are also written as JSON to `target/bench/cluster.json` (or `BENCH_JSON`):
//! `{"ingresses", "secrets", "ready_ms", "rss_mib_ready", "rss_mib_peak", "update_p50_ms",
//! "update_p99_ms", "endpoint_update_p99_ms", "rebuild_cpu_ms_p50", ...}`.
//!
//! Run: `cargo run --release -p gantry --example cluster_bench` (it builds the release `gantry`
//! binary first). Knobs: `BENCH_INGRESSES` (10000), `BENCH_SECRETS` (1000), `BENCH_UPDATES` (200),
//! `BENCH_ENDPOINT_UPDATES` (100), `BENCH_JSON`, and envtest's `KUBEBUILDER_ASSETS`.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use futures_util::{stream, StreamExt};
use gantry_testkit::{cluster::host_ip, objects, Echo, Gantry, TestEnv};
use k8s_openapi::api::{
    core::v1::{Secret, Service},
    discovery::v1::EndpointSlice,
    networking::v1::{HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressRule, IngressSpec, IngressTLS},
};
use kube::{
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    Api, Client,
};

const CONCURRENCY: usize = 32;
const NS: &str = "bench";
const PUBLISHED: &str = "192.0.2.80";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn meta(name: &str) -> ObjectMeta {
    objects::meta(NS, name)
}

fn host(i: usize) -> String {
    format!("h{i}.bench.example")
}

fn path(p: &str, svc: &str) -> HTTPIngressPath {
    objects::ingress_path(p, svc, 80)
}

/// Ingress `ing-i`: host `h<i>.bench.example`, paths `/a` and `second` to Service `svc-i`; every
/// tenth has TLS with Secret `tls-<i/10>`.
fn ingress(i: usize, second: &str, secrets: usize) -> Ingress {
    let svc = format!("svc-{i}");
    let tls = (i % 10 == 0 && i / 10 < secrets).then(|| {
        vec![IngressTLS {
            hosts: Some(vec![host(i)]),
            secret_name: Some(format!("tls-{}", i / 10)),
        }]
    });
    Ingress {
        metadata: meta(&format!("ing-{i}")),
        spec: Some(IngressSpec {
            ingress_class_name: Some("gantry".into()),
            tls,
            rules: Some(vec![IngressRule {
                host: Some(host(i)),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![path("/a", &svc), path(second, &svc)],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

/// Headless: envtest's Service range is a /24, far too small for thousands of cluster IPs, and Gantry
/// forwards to the EndpointSlices' addresses either way.
fn service(i: usize, target: u16) -> Service {
    let mut s = objects::service(NS, &format!("svc-{i}"), 80, target);
    s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    s
}

fn slice(i: usize, backend: std::net::SocketAddr) -> EndpointSlice {
    objects::endpoint_slice(NS, &format!("svc-{i}-1"), &format!("svc-{i}"), &[backend])
}

fn secret(i: usize) -> Secret {
    objects::tls_secret(NS, &format!("tls-{i}"), &[&host(i * 10)])
}

/// Creates every object, `CONCURRENCY` requests in flight.
async fn create_all<K>(api: &Api<K>, objects: Vec<K>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    stream::iter(objects)
        .map(|o| async move {
            api.create(&PostParams::default(), &o)
                .await
                .unwrap_or_else(|e| panic!("creating {:?}: {e}", o.meta().name))
        })
        .buffer_unordered(CONCURRENCY)
        .for_each(|_| async {})
        .await;
}

/// `(VmRSS, VmHWM)` in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// Builds the `gantry` binary in this example's profile (a no-op when it is up to date) and returns
/// its path, beside this example's folder.
fn gantry_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "gantry", "--bin", "gantry"]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let ok = build.status().expect("cargo build").success();
    assert!(ok, "building the gantry binary failed");
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("gantry")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let n = env_usize("BENCH_INGRESSES", 10_000);
    let secrets = env_usize("BENCH_SECRETS", 1000).min(n.div_ceil(10));
    let updates = env_usize("BENCH_UPDATES", 200).min(n);
    let endpoint_updates = env_usize("BENCH_ENDPOINT_UPDATES", 100).min(n);
    let binary = gantry_binary();

    eprintln!("starting etcd + kube-apiserver ...");
    let env = TestEnv::start_async().await.expect("control plane");
    let client: Client = env.client().await;
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            ..ObjectMeta::default()
        },
        ..Default::default()
    };
    Api::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    Api::all(client.clone())
        .create(&PostParams::default(), &objects::ingress_class())
        .await
        .expect("ingress class");
    let backend = Echo::builder("backend").ip(host_ip()).start().await;
    // Where the endpoint updates move Services to: it answers with its name, so the moment traffic
    // reaches it is seen in the response.
    let moved = Echo::builder("moved").ip(host_ip()).start().await;

    eprintln!("loading {n} Ingresses, Services and EndpointSlices and {secrets} TLS Secrets ...");
    let load_started = Instant::now();
    let secret_objects: Vec<Secret> = (0..secrets).map(secret).collect();
    create_all(&Api::namespaced(client.clone(), NS), secret_objects).await;
    create_all(
        &Api::namespaced(client.clone(), NS),
        (0..n).map(|i| service(i, backend.addr.port())).collect(),
    )
    .await;
    create_all(
        &Api::namespaced(client.clone(), NS),
        (0..n).map(|i| slice(i, backend.addr)).collect(),
    )
    .await;
    create_all(
        &Api::namespaced(client.clone(), NS),
        (0..n).map(|i| ingress(i, "/b", secrets)).collect(),
    )
    .await;
    let load_time = load_started.elapsed();
    let objects = 3 * n + secrets;
    eprintln!("loaded {objects} objects in {load_time:?}");

    let log = env.dir().join("gantry-bench.log");
    let started = Instant::now();
    // Ready: every watch listed, the first snapshot published (polled every 10 ms).
    let gantry = Gantry::builder(&binary)
        .kubeconfig(&env, &env.kubeconfig_path())
        .args(["--access-log=false", "--publish-status-address", PUBLISHED])
        .args(["--election-namespace", NS])
        .env("GANTRY_LOG", "info")
        .log(&log)
        .ready_within(Duration::from_secs(300))
        .start()
        .await;
    let pid = gantry.pid();
    // Redirects are answers here (TLS hosts redirect plain HTTP), not something to follow.
    let http_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ready = started.elapsed();
    let (rss_ready, hwm_ready) = memory(pid);
    eprintln!("ready in {ready:?}; RSS {rss_ready:.1} MiB");

    // Every Ingress gets its status.
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), NS);
    let status_started = Instant::now();
    loop {
        let list = ingresses.list(&Default::default()).await.expect("list");
        let done = list
            .items
            .iter()
            .filter(|i| {
                i.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .is_some_and(|e| e.iter().any(|e| e.ip.as_deref() == Some(PUBLISHED)))
            })
            .count();
        if done == n {
            break;
        }
        assert!(
            status_started.elapsed() < Duration::from_secs(600),
            "only {done} statuses after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status_time = ready + status_started.elapsed();
    // Settle: let the snapshots the status writes caused be built.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_settled, hwm_settled) = memory(pid);

    // Update latency: change the second path of one Ingress, poll until the new path is served.
    let url = format!("http://{}", gantry.http);
    let metrics_url = format!("http://{}/metrics", gantry.admin);
    let builds_before = build_histogram(&http_client, &metrics_url).await;
    let log_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let mut latencies = Vec::with_capacity(updates);
    for k in 0..updates {
        let i = (k * n / updates.max(1) + 1) % n;
        let new_path = format!("/u{k}");
        let t0 = Instant::now();
        let patch = serde_json::json!({
            "spec": { "rules": [{ "host": host(i), "http": { "paths": [
                path("/a", &format!("svc-{i}")),
                path(&new_path, &format!("svc-{i}")),
            ]}}]}
        });
        ingresses
            .patch(
                &format!("ing-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("update ingress");
        let target = format!("{url}{new_path}/x");
        loop {
            let r = http_client.get(&target).header("host", host(i)).send().await;
            // Every tenth host has TLS and redirects plain HTTP: a 308 there means routed too.
            let status = r.as_ref().map(|r| r.status().as_u16());
            if matches!(status, Ok(200 | 308)) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "update {k} (ing-{i}) not served in 60 s: last answer {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    let builds_after = build_histogram(&http_client, &metrics_url).await;
    let rebuilds = builds_after.1 - builds_before.1;
    let rebuild_mean_ms = if rebuilds > 0.0 {
        (builds_after.0 - builds_before.0) / rebuilds * 1000.0
    } else {
        f64::NAN
    };
    let mut build_ms = snapshot_build_times(&log, log_before);
    build_ms.sort_by(f64::total_cmp);
    let rebuild_p50_ms = build_ms.get(build_ms.len() / 2).copied().unwrap_or(f64::NAN);

    // Endpoint latency: move one Service's EndpointSlice to the other backend, poll until its
    // traffic arrives there.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let mut endpoint_latencies = Vec::with_capacity(endpoint_updates);
    for k in 0..endpoint_updates {
        // Hosts the Ingress updates did not touch, without TLS (no redirect to follow).
        let i = (k * n / endpoint_updates.max(1) + 3) % n;
        let i = if i % 10 == 0 { (i + 1) % n } else { i };
        let t0 = Instant::now();
        slices
            .replace(&format!("svc-{i}-1"), &PostParams::default(), &{
                let mut s = slice(i, moved.addr);
                s.metadata.resource_version = slices
                    .get(&format!("svc-{i}-1"))
                    .await
                    .expect("get slice")
                    .metadata
                    .resource_version;
                s
            })
            .await
            .expect("update endpoint slice");
        let target = format!("{url}/a/x");
        loop {
            let r = http_client.get(&target).header("host", host(i)).send().await;
            let body = match r {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if body.contains(r#""service":"moved""#) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "endpoint update {k} (svc-{i}) not in effect in 60 s: last answer {body:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        endpoint_latencies.push(t0.elapsed());
    }
    endpoint_latencies.sort();
    let (rss_end, hwm_end) = memory(pid);

    println!();
    println!("| Measurement | Value |");
    println!("|---|---|");
    println!(
        "| Objects in the API server | {n} Ingresses (1 host, 2 paths each), {n} headless Services, {n} EndpointSlices, {secrets} TLS Secrets |"
    );
    println!(
        "| Loading them ({CONCURRENCY} requests in flight) | {:.1} s ({:.0} objects/s) |",
        load_time.as_secs_f64(),
        objects as f64 / load_time.as_secs_f64()
    );
    println!("| Start to ready (`/readyz` 200) | {} |", ms(ready));
    println!(
        "| Start to every Ingress status written | {:.1} s |",
        status_time.as_secs_f64()
    );
    println!("| Resident memory at ready (VmRSS / VmHWM) | {rss_ready:.1} MiB / {hwm_ready:.1} MiB |");
    println!(
        "| Resident memory after status writes (VmRSS / VmHWM) | {rss_settled:.1} MiB / {hwm_settled:.1} MiB |"
    );
    println!("| Resident memory after the updates (VmRSS / VmHWM) | {rss_end:.1} MiB / {hwm_end:.1} MiB |");
    println!(
        "| Ingress update → new route serving, p50 / p99 / max ({} updates) | {} / {} / {} |",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );
    if !endpoint_latencies.is_empty() {
        println!(
            "| EndpointSlice update → traffic at the new endpoint, p50 / p99 / max ({} updates) | {} / {} / {} |",
            endpoint_latencies.len(),
            ms(percentile(&endpoint_latencies, 0.5)),
            ms(percentile(&endpoint_latencies, 0.99)),
            ms(*endpoint_latencies.last().unwrap())
        );
    }
    println!(
        "| Rebuild after one Ingress changed: median / mean ({rebuilds:.0} rebuilds) | {rebuild_p50_ms:.2} ms / {rebuild_mean_ms:.2} ms |"
    );
    let ms_f = |d: Duration| d.as_secs_f64() * 1000.0;
    let json = serde_json::json!({
        "ingresses": n,
        "secrets": secrets,
        "ready_ms": ms_f(ready),
        "rss_mib_ready": rss_ready,
        "rss_mib_peak": hwm_end.max(hwm_settled).max(hwm_ready),
        "rss_mib_end": rss_end,
        "status_all_written_ms": ms_f(status_time),
        "update_p50_ms": ms_f(percentile(&latencies, 0.5)),
        "update_p99_ms": ms_f(percentile(&latencies, 0.99)),
        "endpoint_update_p50_ms": endpoint_latencies.first().map(|_| ms_f(percentile(&endpoint_latencies, 0.5))),
        "endpoint_update_p99_ms": endpoint_latencies.first().map(|_| ms_f(percentile(&endpoint_latencies, 0.99))),
        // The wall time of a rebuild on its own blocking thread: translation is single-threaded
        // CPU work, so on an idle machine this is its CPU time.
        "rebuild_cpu_ms_p50": rebuild_p50_ms,
        "rebuild_ms_mean": rebuild_mean_ms,
        "rebuilds_during_updates": rebuilds,
        "updates": latencies.len(),
        "endpoint_updates": endpoint_latencies.len(),
    });
    let out = std::env::var_os("BENCH_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench/cluster.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("bench output directory");
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap() + "\n").expect("write the JSON");
    eprintln!("wrote {}", out.display());
    drop(gantry);
}

/// `(sum in seconds, count)` of `gantry_snapshot_build_duration_seconds`.
async fn build_histogram(client: &reqwest::Client, url: &str) -> (f64, f64) {
    let text = client
        .get(url)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("gantry_snapshot_build_duration_seconds_sum"),
        value("gantry_snapshot_build_duration_seconds_count"),
    )
}

/// The `elapsed_ms` of every "snapshot built" line logged after byte `from` of the log.
fn snapshot_build_times(log: &std::path::Path, from: u64) -> Vec<f64> {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    // The log is coloured when the terminal is: drop the escape sequences first.
    let plain = regex::Regex::new("\x1b\\[[0-9;]*m").expect("a valid pattern");
    let text = plain.replace_all(&text, "");
    text.lines()
        .filter(|l| l.contains("snapshot built"))
        .filter_map(|l| {
            let rest = &l[l.find("elapsed_ms")? + "elapsed_ms".len()..];
            let digits: String = rest
                .trim_start_matches(['=', '"', ':', ' '])
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// The cargo target directory this example runs from (`target/release/examples/cluster_bench`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}
