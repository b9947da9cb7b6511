//! Cluster mode, Events: diagnostics about an Ingress become `Warning` Events on it, once each;
//! problems with our IngressClass and its ProxyConfig become Events on those (cluster-scoped, so in
//! namespace `default`). The real `gantry` binary against a real kube-apiserver (envtest).

use std::{collections::BTreeMap, path::Path, time::Duration};

use gantry::crd::ProxyConfig;
use gantry_testkit::{cluster::*, gantry, objects::*, TestEnv};
use k8s_openapi::api::{
    core::v1::Secret,
    events::v1::Event,
    networking::v1::{Ingress, IngressClass, IngressClassParametersReference},
};
use kube::{api::ListParams, Api};

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
        // Gantry's Events, and any about an Ingress: the control plane writes its own about other
        // kinds (the API server's ClusterIP repair loop once reported the Service `web` as
        // `ClusterIPNotAllocated`), which say nothing of Gantry.
        let about_ingress = e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Ingress");
        if !about_ingress && e.reporting_controller.as_deref() != Some(CONTROLLER) {
            continue;
        }
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
    for protocol in ["example.com/a", "example.com/b", "example.com/c"] {
        apply(
            &c.api::<k8s_openapi::api::core::v1::Service>(),
            &service_with_app_protocol(&c.ns, "web", 80, web.addr.port(), protocol),
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

/// Installs the ProxyConfig CRD and waits until it is served.
fn install_proxy_config_crd(env: &TestEnv) {
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/gantry.dev_proxyconfigs.yaml");
    for args in [
        vec!["apply", "-f", crd.to_str().unwrap()],
        vec![
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/proxyconfigs.gantry.dev",
        ],
    ] {
        let out = env.kubectl().args(&args).output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The Events in namespace `default` regarding `kind` `name` with `reason`.
async fn cluster_scoped_events(c: &Cluster, kind: &str, name: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(c.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            let r = e.regarding.as_ref();
            r.and_then(|r| r.kind.as_deref()) == Some(kind)
                && r.and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

/// Waits for exactly one Event `reason` regarding cluster-scoped `kind` `name`, and checks what
/// every such Event must say: a Warning from Gantry, in `default`, regarding the object at `uid`.
async fn wait_cluster_scoped_event(
    g: &gantry_testkit::Gantry,
    c: &Cluster,
    (api_version, kind, name): (&str, &str, &str),
    uid: Option<&String>,
    reason: &str,
) -> Event {
    let events = eventually(g, WAIT, &format!("a {reason} Event on {kind} {name}"), || async {
        match cluster_scoped_events(c, kind, name, reason).await {
            found if found.is_empty() => Err("none".to_string()),
            found => Ok(found),
        }
    })
    .await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = events.into_iter().next().unwrap();
    assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.reporting_controller.as_deref(), Some(CONTROLLER));
    let regarding = e.regarding.clone().expect("regarding");
    assert_eq!(regarding.api_version.as_deref(), Some(api_version));
    assert_eq!(regarding.namespace, None, "cluster-scoped");
    assert!(uid.is_some());
    assert_eq!(regarding.uid.as_ref(), uid);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_with_the_ingress_class_and_its_proxy_config_get_events_on_them() {
    let env = TestEnv::start_async().await.expect("control plane");
    install_proxy_config_crd(&env);
    let c = Cluster::new(&env, "class-events").await;
    let mut class = ingress_class();
    if let Some(spec) = class.spec.as_mut() {
        spec.parameters = Some(IngressClassParametersReference {
            api_group: Some("gantry.dev".into()),
            kind: "ProxyConfig".into(),
            name: "settings".into(),
            scope: Some("Cluster".into()),
            namespace: None,
        });
    }
    let class = apply(&c.cluster_api::<IngressClass>(), &class).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "healthy", CLASS, &[("healthy.example", "/", "web", 80)]),
    )
    .await;

    let g = gantry!().cluster(&env).start().await;
    // The class names a ProxyConfig that does not exist: the flags apply, and the class says why.
    let e = wait_cluster_scoped_event(
        &g,
        &c,
        ("networking.k8s.io/v1", "IngressClass", CLASS),
        class.metadata.uid.as_ref(),
        "ProxyConfigNotFound",
    )
    .await;
    let note = e.note.unwrap_or_default();
    assert!(note.contains("settings"), "{note}");
    wait_served_by(&g, WAIT, "healthy.example", "/", "web").await;
    // `kubectl describe` finds it on the class.
    let out = env
        .kubectl()
        .args(["describe", "ingressclass", CLASS])
        .output()
        .expect("kubectl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ProxyConfigNotFound"), "{text}");

    // The ProxyConfig comes, with a value its schema lets through but Gantry cannot use.
    let pc: ProxyConfig = serde_json::from_value(serde_json::json!({
        "apiVersion": "gantry.dev/v1alpha1",
        "kind": "ProxyConfig",
        "metadata": {"name": "settings"},
        "spec": {"trustedProxies": ["not-a-cidr"]},
    }))
    .expect("a ProxyConfig");
    let pc = apply(&Api::<ProxyConfig>::all(c.client.clone()), &pc).await;
    let e = wait_cluster_scoped_event(
        &g,
        &c,
        ("gantry.dev/v1alpha1", "ProxyConfig", "settings"),
        pc.metadata.uid.as_ref(),
        "InvalidProxyConfig",
    )
    .await;
    let note = e.note.unwrap_or_default();
    assert!(
        note.contains("trustedProxies") && note.contains("not-a-cidr"),
        "{note}"
    );

    // Negative control: once both Events are out, the healthy Ingress has none, and nothing else
    // was sent.
    eventually(&g, WAIT, "two Events sent", || async {
        match g.metric("gantry_kube_events_total", &[]).await {
            Some(2.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_served_by(&g, WAIT, "healthy.example", "/", "web").await;
    let in_namespace = events_by_ingress(&c).await;
    assert!(
        in_namespace.is_empty(),
        "{:?}",
        in_namespace.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        g.metric("gantry_kube_events_total", &[("result", "error")]).await,
        Some(0.0)
    );
}
