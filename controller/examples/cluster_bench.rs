//! Cluster-mode benchmark: the real `gantry` binary (release) against a real kube-apiserver and
//! etcd (envtest) holding 5,000 Ingresses (one host, two paths each), their 5,000 (headless)
//! Services and EndpointSlices, and 500 TLS Secrets. Prints a Markdown table with
//!
//! - how long loading the objects into the API server took (32 requests in flight),
//! - time from process start to `/readyz` 200 (every watch listed, first snapshot published),
//! - resident memory (VmRSS, and the peak VmHWM, from `/proc/PID/status`) at ready and once settled,
//! - time from ready until all 5,000 Ingress statuses are written (`--publish-status-address`),
//! - latency from an Ingress update (the API call starting) to the new route serving, p50/p99 over
//!   100 sequential updates, measured by polling the proxy every millisecond.
//!
//! Run: `cargo run --release -p gantry --example cluster_bench` (it builds the release `gantry`
//! binary first). Knobs: `BENCH_INGRESSES` (5000), `BENCH_SECRETS` (500), `BENCH_UPDATES` (100),
//! and envtest's `KUBEBUILDER_ASSETS`.

#[path = "../tests/support/envtest.rs"]
mod envtest;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use k8s_openapi::{
    api::{
        core::v1::{Secret, Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
        networking::v1::{
            HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressClassSpec,
            IngressRule, IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
        },
    },
    apimachinery::pkg::util::intstr::IntOrString,
    ByteString,
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
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        ..ObjectMeta::default()
    }
}

fn host(i: usize) -> String {
    format!("h{i}.bench.example")
}

fn path(p: &str, svc: &str) -> HTTPIngressPath {
    HTTPIngressPath {
        path: Some(p.into()),
        path_type: "Prefix".into(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: svc.into(),
                port: Some(ServiceBackendPort {
                    number: Some(80),
                    ..ServiceBackendPort::default()
                }),
            }),
            ..IngressBackend::default()
        },
    }
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

/// Headless: envtest's Service range is a /24, far too small for 5,000 cluster IPs, and Gantry
/// forwards to the EndpointSlices' addresses either way.
fn service(i: usize, target: u16) -> Service {
    Service {
        metadata: meta(&format!("svc-{i}")),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(target.into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn slice(i: usize, backend: SocketAddr) -> EndpointSlice {
    let mut m = meta(&format!("svc-{i}-1"));
    m.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        format!("svc-{i}"),
    )]));
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![backend.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(backend.port().into()),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    }
}

fn secret(i: usize) -> Secret {
    let names = vec![host(i * 10)];
    let c = rcgen::generate_simple_self_signed(names).expect("certificate");
    Secret {
        metadata: meta(&format!("tls-{i}")),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(c.cert.pem().into_bytes())),
            (
                "tls.key".to_string(),
                ByteString(c.signing_key.serialize_pem().into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
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

/// A non-loopback IPv4 address of this host (the API server refuses loopback EndpointSlice
/// addresses); traffic to it stays on the host.
fn host_ip() -> IpAddr {
    // An address in a network namespace of our own (see .ci/test and the README): the API server
    // refuses loopback EndpointSlice addresses, and traffic must stay in loopback or our namespace.
    std::env::var("GANTRY_TEST_POD_IP")
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("set GANTRY_TEST_POD_IP to an address in a network namespace of your own (see README)")
}

/// One backend for every Service: answers 200 with the request path.
async fn start_backend(ip: IpAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("backend");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                        req.uri().path().to_string(),
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .http1()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let n = env_usize("BENCH_INGRESSES", 5000);
    let secrets = env_usize("BENCH_SECRETS", 500).min(n.div_ceil(10));
    let updates = env_usize("BENCH_UPDATES", 100).min(n);
    let binary = gantry_binary();

    eprintln!("starting etcd + kube-apiserver ...");
    let env = envtest::TestEnv::start_async().await.expect("control plane");
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
    let class = IngressClass {
        metadata: ObjectMeta {
            name: Some("gantry".into()),
            ..ObjectMeta::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some("gantry.dev/ingress-controller".into()),
            ..IngressClassSpec::default()
        }),
    };
    Api::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("ingress class");
    let backend = start_backend(host_ip()).await;

    eprintln!("loading {n} Ingresses, Services and EndpointSlices and {secrets} TLS Secrets ...");
    let load_started = Instant::now();
    let secret_objects: Vec<Secret> = (0..secrets).map(secret).collect();
    create_all(&Api::namespaced(client.clone(), NS), secret_objects).await;
    create_all(
        &Api::namespaced(client.clone(), NS),
        (0..n).map(|i| service(i, backend.port())).collect(),
    )
    .await;
    create_all(
        &Api::namespaced(client.clone(), NS),
        (0..n).map(|i| slice(i, backend)).collect(),
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

    let (http, admin) = (free_port(), free_port());
    let log = env.dir().join("gantry-bench.log");
    let out = std::fs::File::create(&log).unwrap();
    let started = Instant::now();
    let child = Command::new(&binary)
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--https-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--access-log=false", "--publish-status-address", PUBLISHED])
        .args(["--election-namespace", NS])
        .env("GANTRY_LOG", "info")
        .env_remove("KUBECONFIG")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start gantry");
    let gantry = Killed(child);
    let pid = gantry.0.id();
    // Redirects are answers here (TLS hosts redirect plain HTTP), not something to follow.
    let http_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = http_client
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready in 300 s; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let url = format!("http://127.0.0.1:{http}");
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
    drop(gantry);
}
