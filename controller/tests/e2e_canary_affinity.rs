//! Canaries and session affinity end to end: the real `gantry` binary on a folder of manifests
//! written as for ingress-nginx (a main Ingress, a second Ingress with `canary: "true"` for the same
//! host and path; `affinity: cookie`), real backends, real clients.
//!
//! Expected answers are ingress-nginx's, from its user guide and `test/e2e/annotations/canary.go`
//! and `affinity.go`.

use std::collections::BTreeMap;

use gantry_testkit::{gantry, objects::*, *};

const P: &str = "nginx.ingress.kubernetes.io/";

async fn serve(manifests: &[String]) -> Gantry {
    gantry!().yaml(manifests).start().await
}

/// Annotations with the ingress-nginx prefix.
fn anns<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(String, &'a str)> {
    pairs.iter().map(|(k, v)| (format!("{P}{k}"), *v)).collect()
}

/// An Ingress for `host` `/` to `svc`, with ingress-nginx annotations (names without prefix).
fn ing(name: &str, host: &str, svc: &str, pairs: &[(&str, &str)]) -> String {
    let annotations = anns(pairs);
    let annotations: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    ingress_yaml(name, &annotations, &[(host, "/", "Prefix", svc, 80)])
}

/// One request: (the answering backend's `service`, its `pod`, the `Set-Cookie` pair if any).
async fn call(
    client: &reqwest::Client,
    g: &Gantry,
    host: &str,
    headers: &[(&str, &str)],
) -> (String, String, Option<String>) {
    let mut req = client.get(g.url("/info")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{host} {headers:?}\n{}", g.log_text());
    let cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().trim().to_string());
    let body: serde_json::Value = resp.json().await.unwrap();
    (
        body["service"].as_str().unwrap().to_string(),
        body["pod"].as_str().unwrap().to_string(),
        cookie,
    )
}

#[tokio::test]
async fn a_canary_weight_splits_requests_within_a_99_percent_binomial_bound() {
    let (main, canary) = (Echo::start("main").await, Echo::start("canary").await);
    let g = serve(&[
        service_yaml("main", 80, None, &[main.addr]),
        service_yaml("canary", 80, None, &[canary.addr]),
        ing("foo", "foo.example", "main", &[]),
        ing(
            "foo-canary",
            "foo.example",
            "canary",
            &[("canary", "true"), ("canary-weight", "30")],
        ),
    ])
    .await;
    let client = plain_client();
    let n = 400u32;
    let mut to_canary = 0u32;
    for _ in 0..n {
        let (service, _, _) = call(&client, &g, "foo.example", &[]).await;
        match service.as_str() {
            "canary" => to_canary += 1,
            "main" => {}
            other => panic!("unexpected backend {other}"),
        }
    }
    // p = 0.3 over 400 draws: mean 120, sd 9.17; 99% two-sided: 2.576 sd.
    let (mean, sd) = (f64::from(n) * 0.3, (f64::from(n) * 0.3 * 0.7).sqrt());
    assert!(
        (f64::from(to_canary) - mean).abs() <= 2.576 * sd,
        "{to_canary} of {n} went to the canary (expected {mean} ± {:.1})",
        2.576 * sd
    );
    // The canary Ingress is no route of its own (no PathConflict, no second route).
    let routes = g.routes().await.to_string();
    assert!(!routes.contains("PathConflict"), "{routes}");
}

#[tokio::test]
async fn canary_by_header_and_cookie_always_and_never_win_over_the_weight() {
    let (main, canary) = (Echo::start("main").await, Echo::start("canary").await);
    let g = serve(&[
        service_yaml("main", 80, None, &[main.addr]),
        service_yaml("canary", 80, None, &[canary.addr]),
        ing("foo", "foo.example", "main", &[]),
        // Weight 50: without a header or cookie either backend may answer.
        ing(
            "foo-canary",
            "foo.example",
            "canary",
            &[
                ("canary", "true"),
                ("canary-by-header", "CanaryByHeader"),
                ("canary-by-cookie", "CanaryByCookie"),
                ("canary-weight", "50"),
            ],
        ),
        // canary.go "when canaried by header with value": only that value goes to the canary.
        ing("bar", "bar.example", "main", &[]),
        ing(
            "bar-canary",
            "bar.example",
            "canary",
            &[
                ("canary", "true"),
                ("canary-by-header", "CanaryByHeader"),
                ("canary-by-header-value", "DoCanary"),
            ],
        ),
    ])
    .await;
    let client = plain_client();
    // (host, request headers, the backend that must answer)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("foo.example", &[("CanaryByHeader", "always")], "canary"),
        ("foo.example", &[("CanaryByHeader", "never")], "main"),
        // The header comes first: never beats the cookie's always.
        (
            "foo.example",
            &[("CanaryByHeader", "never"), ("cookie", "CanaryByCookie=always")],
            "main",
        ),
        ("foo.example", &[("cookie", "CanaryByCookie=always")], "canary"),
        ("foo.example", &[("cookie", "a=b; CanaryByCookie=never")], "main"),
        ("bar.example", &[("CanaryByHeader", "DoCanary")], "canary"),
        ("bar.example", &[("CanaryByHeader", "always")], "main"),
        ("bar.example", &[], "main"),
    ];
    for (host, headers, want) in cases {
        for _ in 0..20 {
            let (service, _, _) = call(&client, &g, host, headers).await;
            assert_eq!(service, *want, "{host} {headers:?}");
        }
    }
}

#[tokio::test]
async fn sticky_sessions_hold_across_a_snapshot_swap() {
    let (a, b) = (Echo::start("web").await, Echo::start("web").await);
    let other = Echo::start("other").await;
    let g = serve(&[
        service_yaml("web", 80, None, &[a.addr, b.addr]),
        ing("balanced", "balanced.example", "web", &[("affinity", "cookie")]),
        ing(
            "persistent",
            "persistent.example",
            "web",
            &[
                ("affinity", "cookie"),
                ("affinity-mode", "persistent"),
                ("session-cookie-name", "SERVERID"),
            ],
        ),
    ])
    .await;
    let client = plain_client();
    let hosts = ["balanced.example", "persistent.example"];

    // New sessions are spread over both endpoints, each with its cookie.
    let mut sessions: Vec<(&str, String, String)> = Vec::new();
    let mut pods_seen: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for host in hosts {
        for _ in 0..16 {
            let (_, pod, cookie) = call(&client, &g, host, &[]).await;
            let cookie = cookie.unwrap_or_else(|| panic!("{host}: a new session gets a cookie"));
            let name = if host.starts_with("persistent") {
                "SERVERID="
            } else {
                "INGRESSCOOKIE="
            };
            assert!(cookie.starts_with(name), "{cookie}");
            pods_seen.entry(host).or_default().push(pod.clone());
            sessions.push((host, cookie, pod));
        }
    }
    for (host, pods) in &pods_seen {
        let distinct: std::collections::BTreeSet<_> = pods.iter().collect();
        assert_eq!(
            distinct.len(),
            2,
            "{host}: new sessions reach both endpoints: {pods:?}"
        );
    }

    let check = |sessions: Vec<(&'static str, String, String)>| {
        let (client, g) = (&client, &g);
        async move {
            for (host, cookie, pod) in sessions {
                for _ in 0..5 {
                    let (_, got, set) = call(client, g, host, &[("cookie", &cookie)]).await;
                    assert_eq!(got, pod, "{host}: {cookie} keeps its endpoint");
                    assert_eq!(set, None, "{host}: a kept session gets no new cookie");
                }
            }
        }
    };
    check(sessions.clone()).await;

    // An unrelated manifest changes: a new snapshot (generation) is published...
    let before = g.generation().await;
    g.write_manifest(
        "other.yaml",
        &[
            service_yaml("other", 80, None, &[other.addr]),
            ing("other", "other.example", "other", &[]),
        ]
        .join("---\n"),
    );
    g.wait_routes("a new generation", |r| {
        r["generation"].as_u64().is_some_and(|n| n > before)
    })
    .await;
    let (service, _, _) = call(&client, &g, "other.example", &[]).await;
    assert_eq!(service, "other");
    // ...and every session still reaches its endpoint.
    check(sessions.clone()).await;

    // Once more, rewriting the unrelated file again.
    let before = g.generation().await;
    g.write_manifest("other.yaml", &ing("other", "other2.example", "other", &[]));
    g.wait_routes("another generation", |r| {
        r["generation"].as_u64().is_some_and(|n| n > before)
    })
    .await;
    check(sessions).await;
}

#[tokio::test]
async fn a_user_the_canary_served_stays_on_the_canary() {
    // canary.go "always routes traffic to canary if first request was affinitized to canary
    // (default behavior)".
    let (main, canary) = (Echo::start("main").await, Echo::start("canary").await);
    let g = serve(&[
        service_yaml("main", 80, None, &[main.addr]),
        service_yaml("canary", 80, None, &[canary.addr]),
        ing(
            "foo",
            "foo.example",
            "main",
            &[("affinity", "cookie"), ("session-cookie-name", "aff")],
        ),
        ing(
            "foo-canary",
            "foo.example",
            "canary",
            &[
                ("canary", "true"),
                ("canary-by-header", "ForceCanary"),
                ("canary-by-header-value", "yes"),
                ("canary-weight", "1"),
            ],
        ),
    ])
    .await;
    let client = plain_client();
    let (service, _, cookie) = call(&client, &g, "foo.example", &[("ForceCanary", "yes")]).await;
    assert_eq!(service, "canary");
    let cookie = cookie.expect("the canary sets the main route's affinity cookie");
    assert!(cookie.starts_with("aff="), "{cookie}");
    for _ in 0..50 {
        let (service, _, _) = call(&client, &g, "foo.example", &[("cookie", &cookie)]).await;
        assert_eq!(service, "canary", "the canary's session stays there");
    }
    // A session of the main backend never goes to the canary.
    let (service, _, cookie) = call(&client, &g, "foo.example", &[("ForceCanary", "no")]).await;
    let cookie = match service.as_str() {
        "main" => cookie.expect("a main session"),
        // The 1% weight drew the canary: take a main session another way.
        _ => loop {
            let (s, _, c) = call(&client, &g, "foo.example", &[]).await;
            if s == "main" {
                break c.expect("a main session");
            }
        },
    };
    for _ in 0..20 {
        let (service, _, _) = call(
            &client,
            &g,
            "foo.example",
            &[("cookie", &cookie), ("ForceCanary", "yes")],
        )
        .await;
        assert_eq!(
            service, "main",
            "the main route's cookie keeps the request off the canary"
        );
    }
}
