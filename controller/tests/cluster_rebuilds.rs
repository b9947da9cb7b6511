//! Cluster mode, nothing rebuilt for nothing: watch events that change nothing translation reads
//! (Gantry's own status writes, someone else's, labels slimming drops) build no snapshot; a change
//! it reads that yields the serving snapshot again builds one but publishes nothing; a real
//! change is served. The real `gantry` binary against a real kube-apiserver (envtest).

use std::{collections::BTreeMap, time::Duration};

use gantry_testkit::{cluster::*, gantry, objects::*, TestEnv};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
/// How long a count must stay put to count as "did not grow": several rebuild hold-offs and
/// round trips of a watch event.
const QUIET: Duration = Duration::from_secs(2);
const ADDRESS: &str = "192.0.2.50";

async fn rebuilds(g: &gantry_testkit::Gantry) -> f64 {
    g.metric("gantry_snapshot_rebuilds_total", &[])
        .await
        .unwrap_or(0.0)
}

async fn rebuilds_with(g: &gantry_testkit::Gantry, result: &str) -> f64 {
    g.metric("gantry_snapshot_rebuilds_total", &[("result", result)])
        .await
        .unwrap_or(0.0)
}

async fn builds(g: &gantry_testkit::Gantry, how: &str) -> f64 {
    g.metric("gantry_translate_builds_total", &[("result", how)])
        .await
        .unwrap_or(0.0)
}

async fn ingress_events(g: &gantry_testkit::Gantry, result: &str) -> f64 {
    g.metric(
        "gantry_store_events_total",
        &[("kind", "Ingress"), ("result", result)],
    )
    .await
    .unwrap_or(0.0)
}

async fn generation(g: &gantry_testkit::Gantry) -> f64 {
    g.metric("gantry_snapshot_generation", &[]).await.unwrap_or(0.0)
}

/// Waits until the Ingress events ignored reach `at_least`: the events arrived.
async fn wait_ignored(g: &gantry_testkit::Gantry, at_least: f64) {
    eventually(g, WAIT, &format!("{at_least} ignored Ingress events"), || async {
        let n = ingress_events(g, "ignored").await;
        (n >= at_least).then_some(n).ok_or(format!("{n}"))
    })
    .await;
}

/// Polls for [`QUIET`] that the rebuilds stay at `expected`.
async fn assert_no_rebuild(g: &gantry_testkit::Gantry, expected: f64, after: &str) {
    let grew = eventually_ok(QUIET, || async {
        let now = rebuilds(g).await;
        (now != expected).then_some(now)
    })
    .await;
    assert_eq!(
        grew,
        None,
        "a rebuild after {after} (was {expected}); log:\n{}",
        tail(&g.log_text(), 40)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_change_nothing_translation_reads_build_nothing_and_equal_snapshots_publish_nothing() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "rebuilds").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    let a = ingress(&c.ns, "a", CLASS, &[("a.example", "/", "web", 80)]);
    apply(&c.api::<Ingress>(), &a).await;
    let g = gantry!()
        .cluster(&env)
        .args(["--publish-status-address", ADDRESS])
        .start()
        .await;
    wait_served_by(&g, WAIT, "a.example", "/", "web").await;
    eventually(&g, WAIT, "the status of Ingress a", || async {
        let s = c.ingress_status("a").await;
        (s == [ADDRESS]).then_some(()).ok_or(format!("{s:?}"))
    })
    .await;

    // (a) Gantry's own status write comes back as an event (the positive control: the ignored
    // count moves) and builds nothing.
    wait_ignored(&g, 1.0).await;
    let before = rebuilds(&g).await;
    assert!(before >= 1.0, "the first snapshot was built");
    assert_no_rebuild(&g, before, "Gantry's own status write").await;

    // Someone else's status write builds nothing either, and the status writer, woken by the
    // status change alone, puts the addresses back.
    let ignored = ingress_events(&g, "ignored").await;
    c.api::<Ingress>()
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.99"}]}}})),
        )
        .await
        .expect("overwrite the status");
    eventually(&g, WAIT, "the status of Ingress a restored", || async {
        let s = c.ingress_status("a").await;
        (s == [ADDRESS]).then_some(()).ok_or(format!("{s:?}"))
    })
    .await;
    // The overwrite and the restoring write.
    wait_ignored(&g, ignored + 2.0).await;
    assert_no_rebuild(&g, before, "a status overwritten and restored").await;

    // Labels: translation reads none of an Ingress's (slimming drops them on the way in).
    let ignored = ingress_events(&g, "ignored").await;
    let mut labelled = a.clone();
    labelled.metadata.labels = Some(BTreeMap::from([("team".to_string(), "a".to_string())]));
    apply(&c.api::<Ingress>(), &labelled).await;
    wait_ignored(&g, ignored + 1.0).await;
    assert_no_rebuild(&g, before, "a label-only change").await;
    assert_eq!(c.ingress_status("a").await, [ADDRESS], "no status write either");

    // (b) An annotation translation reads, giving the same snapshot: ssl-redirect off on an
    // Ingress without TLS, where there is nothing to redirect anyway. It is built and not
    // published.
    let (unchanged, changed) = (
        rebuilds_with(&g, "unchanged").await,
        ingress_events(&g, "changed").await,
    );
    let served = generation(&g).await;
    assert!(served >= 1.0, "a snapshot is serving");
    let mut annotated = a.clone();
    annotated.metadata.annotations = Some(BTreeMap::from([(
        "nginx.ingress.kubernetes.io/ssl-redirect".to_string(),
        "false".to_string(),
    )]));
    apply(&c.api::<Ingress>(), &annotated).await;
    eventually(&g, WAIT, "an unchanged rebuild", || async {
        let now = rebuilds_with(&g, "unchanged").await;
        (now > unchanged)
            .then_some(())
            .ok_or(format!("unchanged rebuilds {now}"))
    })
    .await;
    assert!(ingress_events(&g, "changed").await > changed);
    assert_eq!(generation(&g).await, served, "nothing published");
    wait_served_by(&g, WAIT, "a.example", "/", "web").await;

    // (c) A change that matters is built, published and served: by patching the last build
    // (one Ingress changed, nothing else), not by going over every Ingress again.
    let published = rebuilds_with(&g, "ok").await;
    let (patches, wholes) = (builds(&g, "patch").await, builds(&g, "whole").await);
    assert!(wholes >= 1.0, "the first build is a whole one");
    let mut grown = ingress(
        &c.ns,
        "a",
        CLASS,
        &[("a.example", "/", "web", 80), ("b.example", "/new", "web", 80)],
    );
    grown.metadata.annotations = annotated.metadata.annotations.clone();
    apply(&c.api::<Ingress>(), &grown).await;
    let body = wait_served_by(&g, WAIT, "b.example", "/new", "web").await;
    assert_eq!(body["path"], "/new");
    assert!(generation(&g).await > served, "a new generation serves");
    assert!(rebuilds_with(&g, "ok").await > published);
    assert!(builds(&g, "patch").await > patches, "the change was patched in");
    assert_eq!(builds(&g, "whole").await, wholes, "and not built whole");
}
