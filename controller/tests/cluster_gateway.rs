//! Cluster mode, the Gateway API: the real `gantry` binary and a real kube-apiserver with the
//! Gateway API v1.6 standard CRDs installed; GatewayClass, Gateway and HTTPRoute objects made
//! through the API, real backends on the test's own network namespace.

use std::time::Duration;

use gantry::gateway::api::{Gateway, GatewayClass, HttpRoute};
use gantry_testkit::{cluster::*, gantry, objects::*, TestEnv};
use k8s_openapi::api::networking::v1::Ingress;

const WAIT: Duration = Duration::from_secs(30);

fn from_yaml<K: serde::de::DeserializeOwned>(yaml: &str) -> K {
    serde_norway::from_str(yaml).expect("test manifest")
}

/// A GET with extra request headers; the status and the JSON body.
async fn get_with(
    g: &gantry_testkit::Gantry,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, serde_json::Value), String> {
    let mut req = gantry_testkit::plain_client()
        .get(g.url(path))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.map_err(|e| format!("request failed: {e}"))?;
    let status = r.status().as_u16();
    let body = r.bytes().await.map_err(|e| format!("body: {e}"))?;
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    ))
}

/// `(type, status, reason)` of each condition in a JSON list.
fn conditions(list: &serde_json::Value) -> Vec<(String, String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_owned(),
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn has(list: &serde_json::Value, type_: &str, status: &str, reason: &str) -> bool {
    conditions(list)
        .iter()
        .any(|(t, s, r)| t == type_ && s == status && r == reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_route_on_a_gateway_is_served_beside_an_ingress_and_every_status_is_written() {
    let env = TestEnv::start_async().await.expect("control plane");
    env.install_gateway_api_crds().expect("Gateway API CRDs");
    let c = Cluster::new(&env, "gateway").await;
    let ns = c.ns.clone();
    let address = host_ip().to_string();
    let g = gantry!()
        .cluster(&env)
        .args(["--publish-status-address", &address, "--gateway-http-port", "80"])
        .start()
        .await;

    let web = pod("web").await;
    let canary = pod("canary").await;
    let legacy = pod("legacy").await;
    c.backend("web", &[web.addr]).await;
    c.backend("canary", &[canary.addr]).await;
    c.backend("legacy", &[legacy.addr]).await;

    apply(
        &c.cluster_api::<GatewayClass>(),
        &from_yaml(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: gantry-{ns}}}\nspec: {{controllerName: gantry.dev/gateway-controller}}\n"
        )),
    )
    .await;
    apply(
        &c.api::<Gateway>(),
        &from_yaml(&format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: {ns}}}
spec:
  gatewayClassName: gantry-{ns}
  listeners:
  - {{name: http, protocol: HTTP, port: 80}}
  - {{name: elsewhere, protocol: HTTP, port: 8081}}
"#
        )),
    )
    .await;
    apply(
        &c.api::<HttpRoute>(),
        &from_yaml(&format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: {ns}}}
spec:
  parentRefs: [{{name: gw, sectionName: http}}]
  hostnames: [gw.example, shared.example]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /app}}}}]
    backendRefs: [{{name: web, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /}}, headers: [{{name: x-canary, value: "yes"}}]}}]
    backendRefs: [{{name: canary, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{{name: web, port: 80}}]
"#
        )),
    )
    .await;
    // An Ingress on one of the route's hosts, for the path the route's last rule also claims.
    let ing = ingress(&ns, "legacy", CLASS, &[("shared.example", "/", "legacy", 80)]);
    apply(
        &c.cluster_api::<k8s_openapi::api::networking::v1::IngressClass>(),
        &ingress_class(),
    )
    .await;
    apply(&c.api::<Ingress>(), &ing).await;

    wait_served_by(&g, WAIT, "gw.example", "/app/x", "web").await;
    wait_served_by(&g, WAIT, "gw.example", "/other", "web").await;
    // The header match is more specific than a plain path: it takes its requests, on the route's
    // own hosts and on the Ingress's host alike.
    for host in ["gw.example", "shared.example"] {
        let (status, body) = get_with(&g, host, "/other", &[("x-canary", "yes")])
            .await
            .unwrap();
        assert_eq!(
            (status, body["service"].as_str()),
            (200, Some("canary")),
            "{host}"
        );
    }
    // Ingress first: the Ingress keeps the host and path it shares with the route.
    wait_served_by(&g, WAIT, "shared.example", "/other", "legacy").await;
    let (status, body) = get_with(&g, "shared.example", "/app/x", &[]).await.unwrap();
    assert_eq!(
        (status, body["service"].as_str()),
        (200, Some("web")),
        "a longer path of the route"
    );

    // Status: class accepted; the Gateway accepted with one listener not valid (its port is not
    // Gantry's), reached at the published address; the route accepted and resolved.
    let class_name = format!("gantry-{ns}");
    let class = eventually(&g, WAIT, "GatewayClass Accepted", || async {
        let gc = c
            .cluster_api::<GatewayClass>()
            .get(&class_name)
            .await
            .map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&gc.status).unwrap();
        if has(&s["conditions"], "Accepted", "True", "Accepted") {
            Ok(s)
        } else {
            Err(format!("{s}"))
        }
    })
    .await;
    assert_eq!(class["conditions"][0]["observedGeneration"], 1);

    let gw = eventually(&g, WAIT, "Gateway status", || async {
        let gw = c.api::<Gateway>().get("gw").await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&gw.status).unwrap();
        let http = s["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == "http"))
            .cloned();
        match http {
            Some(l) if l["attachedRoutes"] == 1 => Ok(s),
            _ => Err(format!("{s}")),
        }
    })
    .await;
    assert!(
        has(&gw["conditions"], "Accepted", "True", "ListenersNotValid"),
        "{gw:#}"
    );
    assert!(
        has(&gw["conditions"], "Programmed", "True", "Programmed"),
        "{gw:#}"
    );
    assert_eq!(
        gw["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": address}])
    );
    let listeners = gw["listeners"].as_array().unwrap();
    let http = listeners.iter().find(|l| l["name"] == "http").unwrap();
    assert!(
        has(&http["conditions"], "Programmed", "True", "Programmed"),
        "{http:#}"
    );
    let elsewhere = listeners.iter().find(|l| l["name"] == "elsewhere").unwrap();
    assert!(
        has(&elsewhere["conditions"], "Accepted", "False", "PortUnavailable"),
        "{elsewhere:#}"
    );
    assert_eq!(elsewhere["attachedRoutes"], 0);

    let route = eventually(&g, WAIT, "HTTPRoute status", || async {
        let r = c.api::<HttpRoute>().get("web").await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&r.status).unwrap();
        if s["parents"].as_array().is_some_and(|p| p.len() == 1) {
            Ok(s)
        } else {
            Err(format!("no parents: {s}"))
        }
    })
    .await;
    let parent = &route["parents"][0];
    assert_eq!(parent["controllerName"], "gantry.dev/gateway-controller");
    assert_eq!(parent["parentRef"]["sectionName"], "http");
    assert!(
        has(&parent["conditions"], "Accepted", "True", "Accepted"),
        "{parent:#}"
    );
    assert!(
        has(&parent["conditions"], "ResolvedRefs", "True", "ResolvedRefs"),
        "{parent:#}"
    );

    // Problems are Events on the objects they are about.
    let events = c.api::<k8s_openapi::api::events::v1::Event>();
    for (kind, name, reason) in [
        ("HTTPRoute", "web", "RouteConflict"),
        ("Gateway", "gw", "PortUnavailable"),
    ] {
        eventually(&g, WAIT, &format!("{reason} Event on {kind} {name}"), || async {
            let list = events
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().is_some_and(|r| {
                            r.kind.as_deref() == Some(kind)
                                && r.name.as_deref() == Some(name)
                                && r.uid.is_some()
                        })
                })
                .then_some(())
                .ok_or_else(|| format!("{} events, none matching", list.items.len()))
        })
        .await;
    }

    // A backend that does not exist: the route stays accepted, its rule answers 500, and the
    // status says why.
    let mut broken: HttpRoute = c.api::<HttpRoute>().get("web").await.unwrap();
    let rules = broken.spec.rules.as_mut().unwrap();
    rules[0].backend_refs.as_mut().unwrap()[0].name = "nothing-here".into();
    broken.metadata.managed_fields = None;
    broken.status = None;
    apply(&c.api::<HttpRoute>(), &broken).await;
    wait_status(&g, WAIT, "gw.example", "/app/x", 500).await;
    eventually(&g, WAIT, "ResolvedRefs False BackendNotFound", || async {
        let r = c.api::<HttpRoute>().get("web").await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&r.status).unwrap();
        if has(
            &s["parents"][0]["conditions"],
            "ResolvedRefs",
            "False",
            "BackendNotFound",
        ) {
            Ok(())
        } else {
            Err(format!("{s}"))
        }
    })
    .await;
}

/// Applies a GatewayClass for this test's namespace (cluster-scoped, so named after it).
async fn gateway_class(c: &Cluster) -> String {
    let name = format!("gantry-{}", c.ns);
    apply(
        &c.cluster_api::<GatewayClass>(),
        &from_yaml(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {name}}}\nspec: {{controllerName: gantry.dev/gateway-controller}}\n"
        )),
    )
    .await;
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_in_another_namespace_is_served_only_once_a_reference_grant_allows_it() {
    let env = TestEnv::start_async().await.expect("control plane");
    env.install_gateway_api_crds().expect("Gateway API CRDs");
    let c = Cluster::new(&env, "gw-tls").await;
    let certs_ns = env.new_namespace("gw-certs").await;
    let ns = c.ns.clone();
    let g = gantry!()
        .cluster(&env)
        .args(["--gateway-https-port", "443"])
        .start()
        .await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(c.client.clone(), &certs_ns);
    apply(
        &secrets,
        &tls_secret(&certs_ns, "secure-cert", &["secure.example"]),
    )
    .await;
    let class = gateway_class(&c).await;
    apply(
        &c.api::<Gateway>(),
        &from_yaml(&format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tls, namespace: {ns}}}
spec:
  gatewayClassName: {class}
  listeners:
  - name: https
    protocol: HTTPS
    port: 443
    hostname: secure.example
    tls: {{certificateRefs: [{{name: secure-cert, namespace: {certs_ns}}}]}}
"#
        )),
    )
    .await;
    apply(
        &c.api::<HttpRoute>(),
        &from_yaml(&format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secure, namespace: {ns}}}
spec:
  parentRefs: [{{name: tls}}]
  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
"#
        )),
    )
    .await;

    // Without a grant: the listener says why, and nothing is served with that certificate.
    let listener = |want: &'static str| {
        let api = c.api::<Gateway>();
        async move {
            let gw = api.get("tls").await.map_err(|e| e.to_string())?;
            let s = serde_json::to_value(&gw.status).unwrap();
            let l = s["listeners"][0].clone();
            if conditions(&l["conditions"])
                .iter()
                .any(|(t, _, r)| t == "ResolvedRefs" && r == want)
            {
                Ok(l)
            } else {
                Err(format!("{s}"))
            }
        }
    };
    let l = eventually(&g, WAIT, "RefNotPermitted", || listener("RefNotPermitted")).await;
    assert!(has(&l["conditions"], "Programmed", "False", "Invalid"), "{l:#}");
    let client = gantry_testkit::tls_client("secure.example", g.https, false);
    let r = client
        .get("https://secure.example/")
        .send()
        .await
        .expect("TLS still answers");
    assert!(!gantry_testkit::served_cert_names(&r).contains(&"secure.example".to_string()));
    assert_eq!(r.status(), 404, "the route has no valid listener to attach to");

    // The grant in the Secret's namespace: the certificate is served and so is the route.
    apply(
        &kube::Api::<gantry::gateway::api::ReferenceGrant>::namespaced(c.client.clone(), &certs_ns),
        &from_yaml(&format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: gateways-in-{ns}, namespace: {certs_ns}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: {ns}}}]
  to: [{{group: "", kind: Secret, name: secure-cert}}]
"#
        )),
    )
    .await;
    let l = eventually(&g, WAIT, "ResolvedRefs", || listener("ResolvedRefs")).await;
    assert!(has(&l["conditions"], "Programmed", "True", "Programmed"), "{l:#}");
    eventually(&g, WAIT, "secure.example served with its certificate", || async {
        let client = gantry_testkit::tls_client("secure.example", g.https, false);
        let r = client
            .get("https://secure.example/")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let names = gantry_testkit::served_cert_names(&r);
        match (r.status().as_u16(), names.contains(&"secure.example".to_string())) {
            (200, true) => Ok(()),
            other => Err(format!("{other:?} {names:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_route_changed_under_load_fails_no_request() {
    let env = TestEnv::start_async().await.expect("control plane");
    env.install_gateway_api_crds().expect("Gateway API CRDs");
    let c = Cluster::new(&env, "gw-load").await;
    let ns = c.ns.clone();
    let g = gantry!()
        .cluster(&env)
        .args(["--gateway-http-port", "80"])
        .start()
        .await;
    let blue = pod("blue").await;
    let green = pod("green").await;
    c.backend("blue", &[blue.addr]).await;
    c.backend("green", &[green.addr]).await;
    let class = gateway_class(&c).await;
    apply(
        &c.api::<Gateway>(),
        &from_yaml(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {ns}}}\nspec:\n  gatewayClassName: {class}\n  listeners: [{{name: http, protocol: HTTP, port: 80}}]\n"
        )),
    )
    .await;
    let route = |blue: i32, green: i32| -> HttpRoute {
        from_yaml(&format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: {ns}}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [app.example]
  rules:
  - backendRefs: [{{name: blue, port: 80, weight: {blue}}}, {{name: green, port: 80, weight: {green}}}]
"#
        ))
    };
    apply(&c.api::<HttpRoute>(), &route(1, 0)).await;
    wait_served_by(&g, WAIT, "app.example", "/", "blue").await;

    // Four clients keep requesting while the split moves from blue to green and back, ten times.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), g.url("/"));
        clients.push(tokio::spawn(async move {
            let client = gantry_testkit::plain_client();
            let (mut ok, mut failed) = (0u32, Vec::new());
            let started = std::time::Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(60)
            {
                match client.get(&url).header("host", "app.example").send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    for i in 0..10 {
        let (b, gr) = if i % 2 == 0 { (0, 1) } else { (1, 1) };
        apply(&c.api::<HttpRoute>(), &route(b, gr)).await;
        let want = if i % 2 == 0 { "green" } else { "blue" };
        if want == "green" {
            wait_served_by(&g, WAIT, "app.example", "/", "green").await;
        } else {
            // 1:1 — wait until blue is seen again.
            wait_served_by(&g, WAIT, "app.example", "/", "blue").await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "the clients kept sending ({ok} requests)");
    assert!(
        blue.hits.load(std::sync::atomic::Ordering::Relaxed) > 0
            && green.hits.load(std::sync::atomic::Ordering::Relaxed) > 0
    );
}
