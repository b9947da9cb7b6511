//! Cluster mode when the control plane goes away: the last good snapshot keeps serving, the watches
//! reconnect, and the snapshot catches up. The real `gantry` binary against a real kube-apiserver
//! and etcd (envtest), both killed and restarted while traffic flows.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use gantry_testkit::{cluster::*, gantry, objects::*, TestEnv};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_never_fails_while_the_api_server_is_down_and_changes_apply_once_it_is_back() {
    let env = Arc::new(TestEnv::start_async().await.expect("control plane"));
    let c = Cluster::new(&env, "outage").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "web", CLASS, &[("app.example", "/", "web", 80)]),
    )
    .await;
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "doomed", CLASS, &[("doomed.example", "/", "web", 80)]),
    )
    .await;
    let g = gantry!()
        .cluster(&env)
        .args(["--publish-status-address", "192.0.2.70"])
        .start()
        .await;
    wait_served_by(&g, Duration::from_secs(20), "app.example", "/", "web").await;
    wait_served_by(&g, Duration::from_secs(20), "doomed.example", "/", "web").await;
    let synced_before = g
        .metric("gantry_kube_last_sync_timestamp_seconds", &[])
        .await
        .expect("last-sync metric");
    assert!(synced_before > 0.0);

    // Four clients, new connections and kept-alive ones, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, tally, url) = (stop.clone(), tally.clone(), g.url("/traffic"));
        clients.push(tokio::spawn(async move {
            let mut client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                if i % 2 == 0 {
                    client = reqwest::Client::builder()
                        .pool_max_idle_per_host(0)
                        .build()
                        .unwrap();
                }
                let r = client
                    .get(&url)
                    .header("host", "app.example")
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!("status {}", r.status());
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Kill etcd and kube-apiserver.
    let e = env.clone();
    tokio::task::spawn_blocking(move || e.stop_apiserver())
        .await
        .unwrap();
    assert!(!env.is_ready());
    // The watches notice (their reconnects fail) ...
    eventually(&g, Duration::from_secs(30), "watch errors counted", || async {
        let errors = g
            .metric("gantry_kube_watch_errors_total", &[])
            .await
            .unwrap_or(0.0);
        (errors > 0.0).then_some(()).ok_or(format!("{errors}"))
    })
    .await;
    // ... while traffic keeps flowing and the proxy stays ready.
    let ok_before = tally.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        tally.ok.load(Ordering::Relaxed) > ok_before,
        "requests kept succeeding while the API server was down"
    );
    let ready = gantry_testkit::plain_client()
        .get(format!("http://{}/readyz", g.admin))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(ready, 200, "still ready without the API server");

    // Bring it back, delete an Ingress before the watches are back (they are in backoff), and change
    // another: both changes are served.
    env.start_apiserver_async().await.expect("control plane restarts");
    c.api::<Ingress>()
        .delete("doomed", &Default::default())
        .await
        .expect("delete");
    apply(
        &c.api::<Ingress>(),
        &ingress(
            &c.ns,
            "web",
            CLASS,
            &[("app.example", "/", "web", 80), ("after.example", "/", "web", 80)],
        ),
    )
    .await;
    // Generous: the watches may be sleeping in their backoff (up to 30 s) when the server returns.
    wait_served_by(&g, Duration::from_secs(90), "after.example", "/", "web").await;
    wait_status(&g, Duration::from_secs(20), "doomed.example", "/", 404).await;
    let synced_after = g
        .metric("gantry_kube_last_sync_timestamp_seconds", &[])
        .await
        .unwrap();
    assert!(synced_after > synced_before, "{synced_after} > {synced_before}");

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok > 100, "only {ok} requests made");
    // The status of the changed Ingress is (still) ours after the restart.
    eventually(
        &g,
        Duration::from_secs(20),
        "status after the restart",
        || async {
            let s = c.ingress_status("web").await;
            (s == ["192.0.2.70"]).then_some(()).ok_or(format!("{s:?}"))
        },
    )
    .await;
}
