//! Cluster mode across a relist: when a watch's resourceVersion has been compacted away, the API
//! server answers `410 Gone`, kube-runtime's watcher lists again, and Gantry must end up with
//! exactly the cluster's routes: nothing deleted meanwhile kept, nothing added meanwhile missed,
//! nothing twice.
//!
//! How the 410 is produced, for real: the API server runs with `--watch-cache=false`, so a watch
//! reads etcd's history directly (with the watch cache, a resumed watch would be served from the
//! cache's own window and etcd's compaction would not matter), and `--etcd-compaction-interval=0`,
//! so that only this test compacts. Gantry reaches the API server through a TCP relay that the test
//! cuts: every connection is dropped and new ones are refused, so Gantry's watches fail and retry
//! with their last resourceVersion while the test changes the cluster behind its back and then
//! compacts etcd up to its current revision. When the relay is restored, the resumed watches get
//! "too old resource version" (410) and relist. The proof that this path ran is
//! `gantry_kube_relists_total{kind="Ingress"}`, which must have grown; a first cut without a
//! compaction is the control: Gantry catches up through the resumed watch, and relists nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use futures_util::{stream, StreamExt};
use gantry_testkit::{cluster::*, gantry, objects::*, Gantry, TestEnv};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::DeleteParams;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// Ingresses before the relist. More than kube-runtime's list page (500 objects), so the relist
/// arrives in more than one page and more than one batch of Gantry's watcher.
const INGRESSES: usize = 600;
/// API calls in flight while the test writes objects.
const CONCURRENCY: usize = 16;
/// Long enough for the watches' backoff (0.8 s doubling to 30 s) to bring them back.
const CATCH_UP: Duration = Duration::from_secs(120);

/// A TCP relay between Gantry and the API server that the test can cut: a cut closes every
/// relayed connection and closes new ones at once, until `restore`. TLS passes through untouched
/// (the API server's certificate names 127.0.0.1, which is where the relay listens too).
struct Link {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
        // The relayed connections end too: they wait for a cut or for their sockets.
        self.cut.send_replace(true);
    }
}

impl Link {
    async fn start(upstream: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay listener");
        let addr = listener.local_addr().unwrap();
        let (cut, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if *rx.borrow() {
                    continue; // Dropped: closed at once.
                }
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Link { addr, cut, task }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// The environment's kubeconfig with the server replaced by the relay; returns its path.
fn relay_kubeconfig(env: &TestEnv, link: &Link) -> std::path::PathBuf {
    let text = std::fs::read_to_string(env.kubeconfig_path()).expect("kubeconfig");
    let server = format!("server: {}", env.apiserver_url());
    assert!(text.contains(&server), "kubeconfig names {server}");
    let path = env.dir().join("kubeconfig-relay");
    std::fs::write(
        &path,
        text.replace(&server, &format!("server: https://{}", link.addr)),
    )
    .unwrap();
    path
}

fn name(i: usize) -> String {
    format!("ing-{i:04}")
}

fn host(i: usize) -> String {
    format!("{}.example", name(i))
}

/// Ingress `i`: its host, `/` to `alpha` or `beta` (alternating) and `/other` to the other one.
fn numbered(ns: &str, i: usize) -> Ingress {
    let (first, second) = if i % 2 == 0 {
        ("alpha", "beta")
    } else {
        ("beta", "alpha")
    };
    let h = host(i);
    ingress(
        ns,
        &name(i),
        CLASS,
        &[(&h, "/", first, 80), (&h, "/other", second, 80)],
    )
}

/// What the routes should be: (host, path) to Service, for every Ingress in `ingresses`.
fn routes_of(ingresses: &BTreeMap<String, Ingress>) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for ing in ingresses.values() {
        for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
            let host = rule.host.clone().unwrap_or_default();
            for p in rule.http.iter().flat_map(|h| &h.paths) {
                let svc = p
                    .backend
                    .service
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                out.insert((host.clone(), p.path.clone().unwrap_or_default()), svc);
            }
        }
    }
    out
}

/// Compares `/debug/routes` (this namespace's routes) with `want`: each (host, path) exactly once,
/// to the right backend, and nothing else.
async fn check_route_table(
    g: &Gantry,
    ns: &str,
    want: &BTreeMap<(String, String), String>,
) -> Result<(), String> {
    let dump = g.routes().await;
    let mut seen: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in dump["routes"].as_array().into_iter().flatten() {
        if !r["ingress"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{ns}/"))
        {
            continue;
        }
        let key = (
            r["host"].as_str().unwrap_or_default().to_string(),
            r["path"].as_str().unwrap_or_default().to_string(),
        );
        seen.entry(key)
            .or_default()
            .push(r["backend"].as_str().unwrap_or_default().to_string());
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, b)| b.len() > 1).collect();
    if !duplicated.is_empty() {
        return Err(format!("routes listed more than once: {duplicated:?}"));
    }
    let missing: Vec<_> = want.keys().filter(|k| !seen.contains_key(*k)).collect();
    let extra: Vec<_> = seen.keys().filter(|k| !want.contains_key(*k)).collect();
    let wrong: Vec<_> = want
        .iter()
        .filter_map(|(k, svc)| {
            let got = seen.get(k)?.first()?;
            (*got != format!("{ns}/{svc}:80")).then_some((k, svc, got))
        })
        .collect();
    if missing.is_empty() && extra.is_empty() && wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} missing (first: {:?}), {} extra (first: {:?}), {} with the wrong backend (first: {:?})",
            missing.len(),
            missing.first(),
            extra.len(),
            extra.first(),
            wrong.len(),
            wrong.first()
        ))
    }
}

/// Sends one request per wanted route (the right Service must answer) and one per gone host (404).
async fn check_traffic(g: &Gantry, want: &BTreeMap<(String, String), String>, gone: &BTreeSet<String>) {
    // (host, path, the Service that must answer; `None`: 404).
    let requests = want
        .iter()
        .map(|((host, path), svc)| (host, path.as_str(), Some(svc)))
        .chain(gone.iter().map(|host| (host, "/", None)));
    let failures: Vec<String> = stream::iter(requests)
        .map(|(host, path, svc)| async move {
            match (get(g, host, path).await, svc) {
                (Ok((200, body)), Some(svc)) if body["service"] == svc.as_str() => None,
                (Ok((404, _)), None) => None,
                (other, svc) => Some(format!("{host}{path}: want {svc:?} (None: 404), got {other:?}")),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} requests went wrong, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

async fn relists(g: &Gantry, kind: &str) -> f64 {
    g.metric_series(&format!("gantry_kube_relists_total{{kind=\"{kind}\"}}"))
        .await
        .unwrap_or(0.0)
}

async fn watch_errors(g: &Gantry, kind: &str) -> f64 {
    g.metric_series(&format!("gantry_kube_watch_errors_total{{kind=\"{kind}\"}}"))
        .await
        .unwrap_or(0.0)
}

/// Cuts the link and waits until Gantry's Ingress watch has failed to reconnect at least once, so
/// the changes that follow are made behind its back.
async fn cut_and_wait_for_failure(g: &Gantry, link: &Link) {
    let errors = watch_errors(g, "Ingress").await;
    link.cut();
    eventually(
        g,
        Duration::from_secs(60),
        "the Ingress watch fails behind the cut",
        || async {
            let now = watch_errors(g, "Ingress").await;
            (now > errors).then_some(()).ok_or(format!("{now} errors"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_410_gone_keeps_exactly_the_clusters_routes() {
    let env = Arc::new(
        TestEnv::start_with_apiserver_args(&["--watch-cache=false", "--etcd-compaction-interval=0"])
            .expect("control plane"),
    );
    let c = Cluster::new(&env, "relist").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let (alpha, beta) = (pod("alpha").await, pod("beta").await);
    let (moved_from, moved_to) = (pod("moved").await, pod("moved").await);
    c.backend("alpha", &[alpha.addr]).await;
    c.backend("beta", &[beta.addr]).await;
    c.backend("moved", &[moved_from.addr]).await;

    let mut ingresses: BTreeMap<String, Ingress> =
        (0..INGRESSES).map(|i| (name(i), numbered(&c.ns, i))).collect();
    ingresses.insert(
        "moved".into(),
        ingress(&c.ns, "moved", CLASS, &[("moved.example", "/", "moved", 80)]),
    );
    ingresses.insert(
        "control".into(),
        ingress(&c.ns, "control", CLASS, &[("control.example", "/", "alpha", 80)]),
    );
    let api = c.api::<Ingress>();
    stream::iter(ingresses.values())
        .for_each_concurrent(CONCURRENCY, |ing| {
            let api = api.clone();
            async move {
                apply(&api, ing).await;
            }
        })
        .await;

    let apiserver: SocketAddr = env
        .apiserver_url()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let link = Link::start(apiserver).await;
    let g = gantry!()
        .kubeconfig(&env, &relay_kubeconfig(&env, &link))
        .arg("--access-log=false")
        .spawn();
    g.wait_ready(Duration::from_secs(90)).await;
    let mut gone = BTreeSet::new();
    let want = routes_of(&ingresses);
    eventually(&g, CATCH_UP, "every route listed once", || {
        check_route_table(&g, &c.ns, &want)
    })
    .await;
    check_traffic(&g, &want, &gone).await;
    assert_eq!(relists(&g, "Ingress").await, 0.0, "no relist before any cut");

    // Control: a cut without a compaction. The resumed watch replays what it missed from etcd's
    // history, and nothing lists again.
    cut_and_wait_for_failure(&g, &link).await;
    api.delete("control", &DeleteParams::default())
        .await
        .expect("delete control");
    ingresses.remove("control");
    gone.insert("control.example".to_string());
    link.restore();
    wait_status(&g, CATCH_UP, "control.example", "/", 404).await;
    assert_eq!(
        relists(&g, "Ingress").await,
        0.0,
        "a resumed watch whose history is still in etcd does not relist"
    );

    // Routes that no change touches must never fail, not even half-way through the relist (which
    // arrives in pages): requests to some of them run from before the cut until the end.
    let stable: Vec<String> = (300..INGRESSES).step_by(50).map(host).collect();
    let (stop_probe, mut stopped) = watch::channel(false);
    let probe = {
        let (g_url, stable) = (g.url("/"), stable.clone());
        tokio::spawn(async move {
            let client = gantry_testkit::plain_client();
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !*stopped.borrow_and_update() {
                for h in &stable {
                    match client.get(&g_url).header("host", h).send().await {
                        Ok(r) if r.status() == 200 => ok += 1,
                        other => failed.push(format!("{h}: {:?}", other.map(|r| r.status()))),
                    }
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            (ok, failed)
        })
    };

    // The cut that matters: changes behind Gantry's back, then etcd compacted past them.
    cut_and_wait_for_failure(&g, &link).await;
    let deleted: Vec<String> = (1..=100).map(name).collect();
    let added: Vec<Ingress> = (INGRESSES..INGRESSES + 100).map(|i| numbered(&c.ns, i)).collect();
    // Deleted and created again under the same name, with another host.
    let reborn = ingress(&c.ns, &name(150), CLASS, &[("reborn.example", "/", "beta", 80)]);
    // Changed in place: `/other` now goes to the same Service as `/`.
    let changed = {
        let h = host(200);
        ingress(
            &c.ns,
            &name(200),
            CLASS,
            &[(&h, "/", "alpha", 80), (&h, "/other", "alpha", 80)],
        )
    };
    stream::iter(&deleted)
        .for_each_concurrent(CONCURRENCY, |n| {
            let api = api.clone();
            async move {
                api.delete(n, &DeleteParams::default())
                    .await
                    .unwrap_or_else(|e| panic!("delete {n}: {e}"));
            }
        })
        .await;
    stream::iter(&added)
        .for_each_concurrent(CONCURRENCY, |ing| {
            let api = api.clone();
            async move {
                apply(&api, ing).await;
            }
        })
        .await;
    api.delete(&name(150), &DeleteParams::default())
        .await
        .expect("delete ing-0150");
    create(&api, &reborn).await;
    apply(&api, &changed).await;
    c.backend("moved", &[moved_to.addr]).await;
    for n in &deleted {
        ingresses.remove(n);
        gone.insert(format!("{n}.example"));
    }
    for ing in added.iter().chain([&reborn, &changed]) {
        ingresses.insert(ing.metadata.name.clone().unwrap(), ing.clone());
    }
    gone.insert(host(150));

    // Gantry has not seen any of it: it still serves what was deleted.
    let (status, _) = get(&g, &host(1), "/").await.expect("request");
    assert_eq!(status, 200, "the cut kept the deletion from Gantry");
    let e = env.clone();
    let revision = tokio::task::spawn_blocking(move || e.compact_etcd())
        .await
        .unwrap()
        .expect("compacting etcd");
    eprintln!("compacted etcd at revision {revision}");
    link.restore();

    eventually(&g, CATCH_UP, "the Ingress watch relisted", || async {
        let n = relists(&g, "Ingress").await;
        (n > 0.0).then_some(n).ok_or(format!("{n} relists"))
    })
    .await;
    let want = routes_of(&ingresses);
    eventually(
        &g,
        CATCH_UP,
        "exactly the cluster's routes, once each",
        || async {
            check_route_table(&g, &c.ns, &want).await?;
            // The EndpointSlice change made in the gap.
            let dump = g.routes().await;
            let moved = dump["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["host"] == "moved.example")
                .map(|r| r["endpoints"].clone());
            if moved == Some(serde_json::json!([moved_to.addr.to_string()])) {
                Ok(())
            } else {
                Err(format!("moved.example's endpoints: {moved:?}"))
            }
        },
    )
    .await;
    check_traffic(&g, &want, &gone).await;
    let from_before = moved_from.hits.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..10 {
        let (status, body) = get(&g, "moved.example", "/").await.expect("request");
        assert_eq!(
            (status, &body["pod"]),
            (200, &serde_json::json!(moved_to.addr.to_string())),
            "only the new endpoint serves after the relist"
        );
    }
    assert_eq!(
        moved_from.hits.load(std::sync::atomic::Ordering::Relaxed),
        from_before
    );
    stop_probe.send_replace(true);
    let (ok, failed) = probe.await.unwrap();
    assert!(
        failed.is_empty() && ok > 0,
        "untouched routes failed across the relist: {} of {} requests, e.g. {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    eprintln!("{ok} requests to untouched routes across the relist, none failed");

    // The API server's answer to the resumed watch, as Gantry logged it (410, reason Expired).
    let log = g.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("Ingress") && l.contains("resourceVersion for the provided watch is too old")),
        "Gantry logged the 410 of its Ingress watch; log:\n{}",
        tail(&log, 80)
    );
    let relist_lines: Vec<&str> = log.lines().filter(|l| l.contains("relist")).collect();
    eprintln!("gantry's relist log lines:\n{}", relist_lines.join("\n"));
    assert!(
        relist_lines
            .iter()
            .any(|l| l.contains("removing objects deleted meanwhile") && l.contains("Ingress")),
        "the relist removed the Ingresses deleted in the gap; log:\n{}",
        tail(&log, 80)
    );
    for kind in ["Ingress", "Service", "EndpointSlice"] {
        eprintln!("relists of {kind}: {}", relists(&g, kind).await);
    }
}
