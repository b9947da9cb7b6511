//! Cluster mode, Events: diagnostics about an Ingress become `Warning` Events on it, once each.
//! The real `gantry` binary against a real kube-apiserver (envtest).

use std::{collections::BTreeMap, time::Duration};

use gantry_testkit::{cluster::*, gantry, objects::*, TestEnv};
use k8s_openapi::api::{
    core::v1::Secret,
    events::v1::Event,
    networking::v1::{Ingress, IngressClass},
};
use kube::api::ListParams;

const WAIT: Duration = Duration::from_secs(20);

/// (regarding name, reason) → Events, for the Events gantry wrote in the namespace.
async fn events_by_ingress(c: &Cluster) -> BTreeMap<(String, String), Vec<Event>> {
    let mut out: BTreeMap<(String, String), Vec<Event>> = BTreeMap::new();
    for e in c
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
    {
        let regarding = e
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        out.entry((regarding, e.reason.clone().unwrap_or_default()))
            .or_default()
            .push(e);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_ingress_gets_warning_events_with_the_reason_and_its_neighbours_are_untouched() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "events").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    apply(
        &c.api::<Secret>(),
        &tls_secret(&c.ns, "good-tls", &["good.example"]),
    )
    .await;
    apply(
        &c.api::<Secret>(),
        &raw_tls_secret(&c.ns, "bad-tls", b"not a certificate", b"not a key"),
    )
    .await;
    let good = with_tls(
        ingress(&c.ns, "good", CLASS, &[("good.example", "/", "web", 80)]),
        &["good.example"],
        "good-tls",
    );
    apply(&c.api::<Ingress>(), &good).await;
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "also-good", CLASS, &[("also.example", "/", "web", 80)]),
    )
    .await;
    let broken = with_tls(
        ingress(
            &c.ns,
            "broken",
            CLASS,
            &[
                ("broken.example", "/", "missing", 80),
                ("broken.example", "/web", "web", 80),
            ],
        ),
        &["broken.example"],
        "bad-tls",
    );
    let broken = apply(&c.api::<Ingress>(), &broken).await;

    let g = gantry!().cluster(&env).start().await;
    let events = eventually(
        &g,
        WAIT,
        "Events for both problems of the broken Ingress",
        || async {
            let events = events_by_ingress(&c).await;
            let has = |reason: &str| events.contains_key(&("broken".to_string(), reason.to_string()));
            if has("ServiceNotFound") && has("TLSSecretInvalid") {
                Ok(events)
            } else {
                Err(format!("{:?}", events.keys().collect::<Vec<_>>()))
            }
        },
    )
    .await;
    let missing = &events[&("broken".to_string(), "ServiceNotFound".to_string())];
    assert_eq!(missing.len(), 1, "{missing:#?}");
    let e = &missing[0];
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.reporting_controller.as_deref(), Some(CONTROLLER));
    let note = e.note.as_deref().unwrap_or_default();
    assert!(note.contains("missing") && note.contains("503"), "{note}");
    let regarding = e.regarding.as_ref().unwrap();
    assert_eq!(regarding.kind.as_deref(), Some("Ingress"));
    assert_eq!(regarding.uid, broken.metadata.uid);
    let bad_tls = &events[&("broken".to_string(), "TLSSecretInvalid".to_string())];
    assert!(bad_tls[0].note.as_deref().unwrap_or_default().contains("bad-tls"));
    assert!(
        events.keys().all(|(name, _)| name == "broken"),
        "only the broken Ingress has Events: {:?}",
        events.keys().collect::<Vec<_>>()
    );

    // The good ones are unaffected; the broken one serves what it can.
    // (Hosts with TLS redirect plain HTTP, so they are asked over HTTPS.)
    wait_https_served_by(&g, WAIT, "good.example", "/", "web").await;
    wait_served_by(&g, WAIT, "also.example", "/", "web").await;
    wait_https_served_by(&g, WAIT, "broken.example", "/web", "web").await;
    assert_eq!(get_https(&g, "broken.example", "/").await.unwrap().0, 503);

    // `kubectl describe` shows them.
    let out = env
        .kubectl()
        .args(["describe", "ingress", "broken", "-n", &c.ns])
        .output()
        .expect("kubectl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ServiceNotFound") && text.contains("TLSSecretInvalid"),
        "{text}"
    );

    // While the problems persist, more snapshots send no more Events.
    // Rebuilds, published or not: a rebuild equal to the serving snapshot is not published
    // and leaves the generation as it is.
    let rebuilds = g
        .metric("gantry_snapshot_rebuilds_total", &[])
        .await
        .unwrap_or(0.0);
    for port in [81, 82, 83] {
        apply(
            &c.api::<k8s_openapi::api::core::v1::Service>(),
            &service(&c.ns, "web", 80, port),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(&g, WAIT, "more snapshots", || async {
        let now = g
            .metric("gantry_snapshot_rebuilds_total", &[])
            .await
            .unwrap_or(0.0);
        (now >= rebuilds + 2.0)
            .then_some(())
            .ok_or(format!("rebuilds {now}"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = events_by_ingress(&c).await;
    for reason in ["ServiceNotFound", "TLSSecretInvalid"] {
        let list = &again[&("broken".to_string(), reason.to_string())];
        assert_eq!(list.len(), 1, "{reason}: {list:#?}");
        assert_eq!(list[0].series, None, "{reason} not re-sent");
    }
    assert!(again.keys().all(|(name, _)| name == "broken"));
    assert_eq!(g.metric("gantry_kube_events_total", &[]).await, Some(2.0));
}
