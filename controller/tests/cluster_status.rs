//! Cluster mode, writing back: Ingress status from `--publish-status-address` and
//! `--publish-service`, and leader election between two replicas. The real `gantry` binary against
//! a real kube-apiserver (envtest); each test has its own control plane and namespace.

use std::time::{Duration, Instant};

use gantry_testkit::{cluster::*, gantry, objects::*, TestEnv};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, NodeAddress, NodeStatus, Service},
    networking::v1::{Ingress, IngressClass},
};
use kube::api::{ObjectMeta, Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn wait_ingress_status(g: &gantry_testkit::Gantry, c: &Cluster, name: &str, want: &[&str]) {
    eventually(
        g,
        WAIT,
        &format!("status of Ingress {name} = {want:?}"),
        || async {
            let s = c.ingress_status(name).await;
            (s == want).then_some(()).ok_or(format!("{s:?}"))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_addresses_are_written_once_and_cleared_when_the_ingress_leaves_our_class() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "status").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    for name in ["a", "b"] {
        apply(
            &c.api::<Ingress>(),
            &ingress(
                &c.ns,
                name,
                CLASS,
                &[(&format!("{name}.example"), "/", "web", 80)],
            ),
        )
        .await;
    }
    let g = gantry!()
        .cluster(&env)
        .args(["--publish-status-address", "lb.example.test,192.0.2.50"])
        .start()
        .await;
    for name in ["a", "b"] {
        wait_ingress_status(&g, &c, name, &["192.0.2.50", "lb.example.test"]).await;
    }

    // Nothing changed for the status, so changes elsewhere write nothing more.
    eventually(&g, WAIT, "two status writes counted", || async {
        let writes = g.metric("gantry_ingress_status_writes_total", &[]).await;
        (writes == Some(2.0)).then_some(()).ok_or(format!("{writes:?}"))
    })
    .await;
    // Rebuilds, published or not: a rebuild equal to the serving snapshot is not published
    // and leaves the generation as it is.
    let rebuilds = g
        .metric("gantry_snapshot_rebuilds_total", &[])
        .await
        .unwrap_or(0.0);
    for protocol in ["example.com/a", "example.com/b"] {
        apply(
            &c.api::<Service>(),
            &service_with_app_protocol(&c.ns, "web", 80, web.addr.port(), protocol),
        )
        .await;
    }
    eventually(&g, WAIT, "a later snapshot", || async {
        let now = g
            .metric("gantry_snapshot_rebuilds_total", &[])
            .await
            .unwrap_or(0.0);
        (now > rebuilds).then_some(()).ok_or(format!("rebuilds {now}"))
    })
    .await;
    // Give the status pass after the last publish time to (not) write.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        g.metric("gantry_ingress_status_writes_total", &[]).await,
        Some(2.0)
    );

    // Ingress b leaves our class: no longer served, and what we wrote is cleared.
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "b", "someone-else", &[("b.example", "/", "web", 80)]),
    )
    .await;
    wait_ingress_status(&g, &c, "b", &[]).await;
    wait_status(&g, WAIT, "b.example", "/", 404).await;
    assert_eq!(c.ingress_status("a").await, ["192.0.2.50", "lb.example.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_service_gives_its_load_balancer_addresses_or_for_node_port_its_nodes() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "publish").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "web", CLASS, &[("web.example", "/", "web", 80)]),
    )
    .await;
    let mut lb = service(&c.ns, "gantry", 80, 8080);
    lb.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
    create(&c.api::<Service>(), &lb).await;
    let services = c.api::<Service>();
    let set_lb = |entries: serde_json::Value| {
        let services = services.clone();
        async move {
            let patch = json!({ "status": { "loadBalancer": { "ingress": entries } } });
            services
                .patch_status("gantry", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("service status");
        }
    };
    set_lb(json!([{ "ip": "203.0.113.7" }])).await;

    let publish = format!("{}/gantry", c.ns);
    let g = gantry!()
        .cluster(&env)
        .args(["--publish-service", &publish])
        .start()
        .await;
    wait_served_by(&g, WAIT, "web.example", "/", "web").await;
    wait_ingress_status(&g, &c, "web", &["203.0.113.7"]).await;

    // The load balancer changes: so does the Ingress.
    set_lb(json!([{ "hostname": "lb.cloud.example" }, { "ip": "203.0.113.8" }])).await;
    wait_ingress_status(&g, &c, "web", &["203.0.113.8", "lb.cloud.example"]).await;

    // Now a NodePort Service without a load balancer: the Nodes' addresses, ExternalIP first.
    let node = |name: &str, addresses: &[(&str, &str)]| Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(ty, a)| NodeAddress {
                        type_: ty.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            ..NodeStatus::default()
        }),
        ..Node::default()
    };
    create(
        &c.cluster_api::<Node>(),
        &node(
            "n1",
            &[("InternalIP", "10.1.0.1"), ("ExternalIP", "198.51.100.4")],
        ),
    )
    .await;
    create(
        &c.cluster_api::<Node>(),
        &node("n2", &[("InternalIP", "10.1.0.2")]),
    )
    .await;
    set_lb(serde_json::Value::Null).await;
    services
        .patch(
            "gantry",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "type": "NodePort" } })),
        )
        .await
        .expect("switch to NodePort");
    wait_ingress_status(&g, &c, "web", &["10.1.0.2", "198.51.100.4"]).await;
}

/// The holder of the election Lease.
async fn lease_holder(c: &Cluster) -> Option<String> {
    let lease = c.api::<Lease>().get_opt("gantry-leader").await.ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_leader_writes_status_and_the_other_takes_over_when_it_dies() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "leader").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "web", CLASS, &[("web.example", "/", "web", 80)]),
    )
    .await;
    // Each replica publishes a different address (a test-only setup), so the status tells who
    // wrote it: if both wrote, it would flip.
    let replica = |name: &str, address: &str| {
        vec![
            "--pod-name".to_string(),
            name.to_string(),
            "--election-namespace".to_string(),
            c.ns.clone(),
            "--publish-status-address".to_string(),
            address.to_string(),
        ]
    };
    let args_a = replica("gantry-a", "192.0.2.61");
    let a = gantry!().cluster(&env).args(args_a.iter()).start().await;
    eventually(&a, WAIT, "gantry-a holding the Lease", || async {
        let h = lease_holder(&c).await;
        (h.as_deref() == Some("gantry-a"))
            .then_some(())
            .ok_or(format!("{h:?}"))
    })
    .await;
    let args_b = replica("gantry-b", "192.0.2.62");
    let b = gantry!().cluster(&env).args(args_b.iter()).start().await;
    wait_served_by(&b, WAIT, "web.example", "/", "web").await;
    wait_ingress_status(&a, &c, "web", &["192.0.2.61"]).await;

    // For longer than two renewals, the status stays A's and B writes nothing.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        assert_eq!(c.ingress_status("web").await, ["192.0.2.61"]);
        assert_eq!(lease_holder(&c).await.as_deref(), Some("gantry-a"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(a.metric("gantry_leader", &[]).await, Some(1.0));
    assert_eq!(b.metric("gantry_leader", &[]).await, Some(0.0));
    assert!(
        a.metric("gantry_ingress_status_writes_total", &[])
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        b.metric("gantry_ingress_status_writes_total", &[])
            .await
            .unwrap_or(0.0),
        0.0
    );

    // Kill the leader outright (no release): B takes over once the lease expires, and converges
    // the status, also of an Ingress created meanwhile.
    drop(a);
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "late", CLASS, &[("late.example", "/", "web", 80)]),
    )
    .await;
    eventually(
        &b,
        Duration::from_secs(40),
        "gantry-b holding the Lease",
        || async {
            let h = lease_holder(&c).await;
            (h.as_deref() == Some("gantry-b"))
                .then_some(())
                .ok_or(format!("{h:?}"))
        },
    )
    .await;
    wait_ingress_status(&b, &c, "web", &["192.0.2.62"]).await;
    wait_ingress_status(&b, &c, "late", &["192.0.2.62"]).await;
    assert_eq!(b.metric("gantry_leader", &[]).await, Some(1.0));
    wait_served_by(&b, WAIT, "late.example", "/", "web").await;

    // A graceful stop releases the Lease (empty holder) rather than leaving it to expire, and the
    // remaining replica takes it.
    let args_c = replica("gantry-c", "192.0.2.62");
    let c_replica = gantry!().cluster(&env).args(args_c.iter()).start().await;
    let mut b = b;
    b.sigterm();
    assert_eq!(b.wait_exit(Duration::from_secs(40)), Some(0), "{}", b.log_text());
    let holder = lease_holder(&c).await;
    assert!(
        holder.is_none() || holder.as_deref() == Some("gantry-c"),
        "released on exit, then free or taken by gantry-c: {holder:?}"
    );
    assert!(b.log_text().contains("released the Lease"), "{}", b.log_text());
    eventually(&c_replica, WAIT, "gantry-c holding the Lease", || async {
        let h = lease_holder(&c).await;
        (h.as_deref() == Some("gantry-c"))
            .then_some(())
            .ok_or(format!("{h:?}"))
    })
    .await;
}
