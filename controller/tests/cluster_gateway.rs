//! Cluster mode, the Gateway API: the real `gantry` binary and a real kube-apiserver with the
//! Gateway API v1.6 standard CRDs installed; GatewayClass, Gateway and HTTPRoute objects made
//! through the API, real backends on the test's own network namespace.

mod cluster_common;
mod common;
#[path = "support/envtest.rs"]
mod envtest;

use std::time::Duration;

use cluster_common::*;
use envtest::TestEnv;
use gantry::gateway::api::{Gateway, GatewayClass, HttpRoute};
use k8s_openapi::api::networking::v1::Ingress;

const WAIT: Duration = Duration::from_secs(30);

fn from_yaml<K: serde::de::DeserializeOwned>(yaml: &str) -> K {
    serde_norway::from_str(yaml).expect("test manifest")
}

/// A GET with extra request headers; the status and the JSON body.
async fn get_with(
    g: &common::Gantry,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, serde_json::Value), String> {
    let mut req = common::plain_client().get(g.url(path)).header("host", host);
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
    let g = start_gantry(
        &env,
        &["--publish-status-address", &address, "--gateway-http-port", "80"],
    )
    .await;

    let web = Pod::start("web").await;
    let canary = Pod::start("canary").await;
    let legacy = Pod::start("legacy").await;
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
