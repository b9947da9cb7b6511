//! Cluster mode, routing: the real `gantry` binary watching a real kube-apiserver (envtest), real
//! backends on loopback. Each test has its own control plane and namespace.

use std::{collections::BTreeSet, time::Duration};

use gantry_testkit::{cluster::*, gantry, objects::*, served_cert_names, tls_client, Echo, TestEnv};
use k8s_openapi::api::{
    core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, Secret, Service},
    networking::v1::{Ingress, IngressClass, IngressClassSpec},
};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingresses_in_the_api_server_are_routed_rerouted_spread_over_new_endpoints_and_removed() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "routing").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "web", CLASS, &[("app.example", "/v1", "web", 80)]),
    )
    .await;

    let g = gantry!().cluster(&env).start().await;
    let body = wait_served_by(&g, WAIT, "app.example", "/v1/x", "web").await;
    assert_eq!(body["path"], "/v1/x");
    assert_eq!(get(&g, "app.example", "/v2/x").await.unwrap().0, 404);

    // Change the path: the new one is routed, the old one is gone.
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "web", CLASS, &[("app.example", "/v2", "web", 80)]),
    )
    .await;
    wait_served_by(&g, WAIT, "app.example", "/v2/x", "web").await;
    wait_status(&g, WAIT, "app.example", "/v1/x", 404).await;

    // Scale from one endpoint to three. (All test pods share the host's address, so each has its
    // own port and its own slice, as the EndpointSlice controller would split them.)
    let more = [pod("web").await, pod("web").await];
    let all = [web.addr, more[0].addr, more[1].addr];
    c.endpoints("web", &all).await;
    let want: BTreeSet<String> = all.iter().map(|a| a.to_string()).collect();
    eventually(&g, WAIT, "traffic spread over all three endpoints", || async {
        let mut pods = BTreeSet::new();
        for _ in 0..12 {
            match get(&g, "app.example", "/v2/spread").await? {
                (200, body) => pods.insert(body["pod"].as_str().unwrap_or_default().to_string()),
                other => return Err(format!("{other:?}")),
            };
        }
        if pods == want {
            Ok(())
        } else {
            Err(format!("pods seen: {pods:?}"))
        }
    })
    .await;
    for pod in std::iter::once(&web).chain(&more) {
        assert!(pod.hits.load(std::sync::atomic::Ordering::Relaxed) > 0);
    }

    // Delete the Ingress: 404.
    c.api::<Ingress>()
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete ingress");
    wait_status(&g, WAIT, "app.example", "/v2/x", 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_tls_certificate_is_served_without_a_restart() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "tls").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    apply(
        &c.api::<Secret>(),
        &tls_secret(&c.ns, "site-tls", &["secure.example", "first.cert.test"]),
    )
    .await;
    let ing = with_tls(
        ingress(&c.ns, "site", CLASS, &[("secure.example", "/", "web", 80)]),
        &["secure.example"],
        "site-tls",
    );
    apply(&c.api::<Ingress>(), &ing).await;

    let g = gantry!().cluster(&env).start().await;
    let pid = g.child.as_ref().unwrap().id();
    let served_names = || async {
        // A new client per try: a new TLS handshake, so the certificate served now.
        let r = tls_client("secure.example", g.https, false)
            .get("https://secure.example/")
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if r.status() != 200 {
            return Err(format!("status {}", r.status()));
        }
        Ok(served_cert_names(&r))
    };
    let names = eventually(&g, WAIT, "the first certificate served", || async {
        let names = served_names().await?;
        if names.iter().any(|n| n == "first.cert.test") {
            Ok(names)
        } else {
            Err(format!("names {names:?}"))
        }
    })
    .await;
    assert!(names.contains(&"secure.example".to_string()), "{names:?}");

    apply(
        &c.api::<Secret>(),
        &tls_secret(&c.ns, "site-tls", &["secure.example", "second.cert.test"]),
    )
    .await;
    eventually(&g, WAIT, "the replaced certificate served", || async {
        let names = served_names().await?;
        if names.iter().any(|n| n == "second.cert.test") {
            Ok(())
        } else {
            Err(format!("names {names:?}"))
        }
    })
    .await;
    // Same process, never restarted.
    let mut g = g;
    assert_eq!(g.child.as_ref().unwrap().id(), pid);
    assert_eq!(
        g.child.as_mut().unwrap().try_wait().unwrap(),
        None,
        "gantry is still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_of_another_class_is_ignored_and_gets_no_status_until_it_switches_to_ours() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "class").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let other_class = IngressClass {
        metadata: ObjectMeta {
            name: Some("other".into()),
            ..ObjectMeta::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some("example.com/other-controller".into()),
            ..IngressClassSpec::default()
        }),
    };
    apply(&c.cluster_api::<IngressClass>(), &other_class).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "mine", CLASS, &[("mine.example", "/", "web", 80)]),
    )
    .await;
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "theirs", "other", &[("theirs.example", "/", "web", 80)]),
    )
    .await;

    let g = gantry!()
        .cluster(&env)
        .args(["--publish-status-address", "192.0.2.10"])
        .start()
        .await;
    wait_served_by(&g, WAIT, "mine.example", "/", "web").await;
    eventually(&g, WAIT, "status of our Ingress", || async {
        let s = c.ingress_status("mine").await;
        (s == ["192.0.2.10"]).then_some(()).ok_or(format!("{s:?}"))
    })
    .await;
    // The writes of one status pass run concurrently, but passes run one after another: once an
    // Ingress created now has its status, the pass that wrote "mine" (and would have written
    // "theirs") is over.
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "later", CLASS, &[("later.example", "/", "web", 80)]),
    )
    .await;
    eventually(&g, WAIT, "status of an Ingress created later", || async {
        let s = c.ingress_status("later").await;
        (s == ["192.0.2.10"]).then_some(()).ok_or(format!("{s:?}"))
    })
    .await;
    assert_eq!(get(&g, "theirs.example", "/").await.unwrap().0, 404);
    assert!(c.ingress_status("theirs").await.is_empty());
    let routes = g.routes().await.to_string();
    assert!(!routes.contains("theirs.example"), "{routes}");

    // Switch it to our class: served, and it gets our status.
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "theirs", CLASS, &[("theirs.example", "/", "web", 80)]),
    )
    .await;
    wait_served_by(&g, WAIT, "theirs.example", "/", "web").await;
    eventually(&g, WAIT, "status of the switched Ingress", || async {
        let s = c.ingress_status("theirs").await;
        (s == ["192.0.2.10"]).then_some(()).ok_or(format!("{s:?}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_port_mode_routes_to_ready_nodes_at_the_service_node_port() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "nodeport").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    // The "node" is this host at 127.0.0.1 (Node addresses may be loopback, unlike EndpointSlice
    // ones); the pod listens on a free port of the node-port range, as kube-proxy would.
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let port = (30000..32768)
        .find(|p| std::net::TcpListener::bind((loopback, *p)).is_ok())
        .expect("a free port in 30000-32767");
    let pod = Echo::builder("np").ip(loopback).port(port).start().await;
    let node = |ready: &str| Node {
        metadata: ObjectMeta {
            name: Some("node-1".into()),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: "127.0.0.1".into(),
            }]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
        ..Node::default()
    };
    create(&c.cluster_api::<Node>(), &node("True")).await;
    let mut svc = service(&c.ns, "np", 80, 8080);
    let spec = svc.spec.as_mut().unwrap();
    spec.type_ = Some("NodePort".into());
    spec.ports.as_mut().unwrap()[0].node_port = Some(port.into());
    create(&c.api::<Service>(), &svc).await;
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "np", CLASS, &[("np.example", "/", "np", 80)]),
    )
    .await;

    let g = gantry!()
        .cluster(&env)
        .args(["--backend-mode", "node-port"])
        .start()
        .await;
    let body = wait_served_by(&g, WAIT, "np.example", "/", "np").await;
    assert_eq!(body["pod"], pod.addr.to_string());

    // The only node goes NotReady: no endpoint left, 503.
    let not_ready = serde_json::json!({ "status": node("False").status });
    c.cluster_api::<Node>()
        .patch_status("node-1", &PatchParams::default(), &Patch::Merge(&not_ready))
        .await
        .expect("node status");
    wait_status(&g, WAIT, "np.example", "/", 503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watch_namespace_only_the_named_namespaces_are_served() {
    let env = TestEnv::start_async().await.expect("control plane");
    let watched = Cluster::new(&env, "watched").await;
    let other = Cluster::new(&env, "unwatched").await;
    apply(&watched.cluster_api::<IngressClass>(), &ingress_class()).await;
    let web = pod("web").await;
    for (c, host) in [(&watched, "in.example"), (&other, "out.example")] {
        c.backend("web", &[web.addr]).await;
        apply(
            &c.api::<Ingress>(),
            &ingress(&c.ns, "web", CLASS, &[(host, "/", "web", 80)]),
        )
        .await;
    }
    let g = gantry!()
        .cluster(&env)
        .args(["--watch-namespace", &watched.ns])
        .start()
        .await;
    wait_served_by(&g, WAIT, "in.example", "/", "web").await;
    assert_eq!(get(&g, "out.example", "/").await.unwrap().0, 404);
    let routes = g.routes().await.to_string();
    assert!(!routes.contains("out.example"), "{routes}");
    // Changes in the other namespace stay invisible; changes in the watched one apply.
    apply(
        &other.api::<Ingress>(),
        &ingress(&other.ns, "web2", CLASS, &[("out2.example", "/", "web", 80)]),
    )
    .await;
    apply(
        &watched.api::<Ingress>(),
        &ingress(&watched.ns, "web2", CLASS, &[("in2.example", "/", "web", 80)]),
    )
    .await;
    wait_served_by(&g, WAIT, "in2.example", "/", "web").await;
    assert_eq!(get(&g, "out2.example", "/").await.unwrap().0, 404);
}
