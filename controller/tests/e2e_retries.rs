//! `proxy-next-upstream*`, `default-backend` and `custom-http-errors`, end to end: the real
//! `gantry` binary on a folder of manifests, with loopback backends that answer fixed statuses.
//!
//! Endpoints are chosen round robin from a random start per worker, so each test sends a bounded
//! number of requests and asserts on what every one of them got and on what each backend saw.

use std::{net::SocketAddr, time::Duration};

use gantry_testkit::{gantry, objects::*, *};

/// Requests per scenario: enough for round robin to start on each endpoint several times.
const ROUNDS: usize = 6;

/// An echo backend answering `status` (or the N of a `/status/N` path); it counts the requests it
/// got.
async fn status_backend(name: &str, status: u16) -> Echo {
    Echo::builder(name).status(status).start().await
}

/// An address nothing listens on.
fn refusing() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

async fn serve(manifests: &[String]) -> Gantry {
    gantry!()
        .yaml(manifests)
        .args(["--worker-threads", "1"])
        .start()
        .await
}

/// Sends a request and returns its status and what answered, within 10 s: `<backend> <status>` when
/// an echo backend answered, otherwise the body.
async fn send(g: &Gantry, method: &str, host: &str, path: &str, body: Option<&'static str>) -> (u16, String) {
    let client = plain_client();
    let mut req = client
        .request(method.parse().unwrap(), g.url(path))
        .header("host", host);
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
        .await
        .expect("answered within 10 s")
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    match serde_json::from_str::<Seen>(&text) {
        Ok(seen) => (status, format!("{} {status}", seen.service)),
        Err(_) => (status, text),
    }
}

/// The statuses of `ROUNDS` requests.
async fn statuses(g: &Gantry, method: &str, host: &str, body: Option<&'static str>) -> Vec<u16> {
    let mut out = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        out.push(send(g, method, host, "/", body).await.0);
    }
    out
}

/// `gantry_upstream_retries_total{reason}` from the admin port.
async fn retries(g: &Gantry, reason: &str) -> u64 {
    g.metric_series(&format!("gantry_upstream_retries_total{{reason=\"{reason}\"}}"))
        .await
        .unwrap_or(0.0) as u64
}

fn retry_ingress(name: &str, host: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: Vec<(String, &str)> = annotations
        .iter()
        .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), *v))
        .collect();
    let refs: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    ingress_yaml(name, &refs, &[(host, "/", "Prefix", service, 80)])
}

#[tokio::test]
async fn a_503_is_retried_on_the_healthy_endpoint_unless_tries_is_1() {
    let bad = status_backend("bad", 503).await;
    let good = status_backend("good", 200).await;
    let g = serve(&[
        service_yaml("app", 80, None, &[bad.addr, good.addr]),
        retry_ingress(
            "retry",
            "retry.example",
            "app",
            &[("proxy-next-upstream", "error timeout http_503")],
        ),
        retry_ingress(
            "once",
            "once.example",
            "app",
            &[
                ("proxy-next-upstream", "error timeout http_503"),
                ("proxy-next-upstream-tries", "1"),
            ],
        ),
    ])
    .await;
    assert_eq!(statuses(&g, "GET", "retry.example", None).await, [200; ROUNDS]);
    // Round robin started on the bad endpoint about half the time; each of those was retried.
    let bad_hits = bad.hits();
    assert!(bad_hits >= 1, "the 503 endpoint was never tried first");
    assert_eq!(good.hits(), ROUNDS);
    assert_eq!(retries(&g, "http_503").await, bad_hits as u64);

    let got = statuses(&g, "GET", "once.example", None).await;
    let fails = got.iter().filter(|s| **s == 503).count();
    assert!(
        fails >= 1,
        "with one try, a request that starts on the bad endpoint gets its 503: {got:?}"
    );
    assert_eq!(
        fails,
        bad.hits() - bad_hits,
        "every 503 came from the bad endpoint, unretried"
    );
    assert_eq!(
        retries(&g, "http_503").await,
        bad_hits as u64,
        "no retry with one try"
    );
}

#[tokio::test]
async fn a_post_whose_body_was_sent_is_not_retried_and_a_bodiless_one_only_with_non_idempotent() {
    let bad = status_backend("bad", 503).await;
    let good = status_backend("good", 200).await;
    let g = serve(&[
        service_yaml("app", 80, None, &[bad.addr, good.addr]),
        retry_ingress(
            "plain",
            "plain.example",
            "app",
            &[("proxy-next-upstream", "error timeout http_503")],
        ),
        retry_ingress(
            "nonidem",
            "nonidem.example",
            "app",
            &[("proxy-next-upstream", "error timeout http_503 non_idempotent")],
        ),
    ])
    .await;
    for host in ["plain.example", "nonidem.example"] {
        let before = bad.hits();
        let got = statuses(&g, "POST", host, Some("order=1")).await;
        let fails = got.iter().filter(|s| **s == 503).count();
        assert!(
            fails >= 1,
            "{host}: some POSTs start on the bad endpoint: {got:?}"
        );
        assert_eq!(
            fails,
            bad.hits() - before,
            "{host}: a POST with a body is never resent"
        );
    }
    // Without a body, non_idempotent allows the resend; without the flag it does not.
    let got = statuses(&g, "POST", "nonidem.example", Some("")).await;
    assert_eq!(got, [200; ROUNDS]);
    let got = statuses(&g, "POST", "plain.example", Some("")).await;
    assert!(got.contains(&503), "{got:?}");
    // An idempotent PUT whose body was read ahead whole is resent.
    let got = statuses(&g, "PUT", "plain.example", Some("x=1")).await;
    assert_eq!(got, [200; ROUNDS]);
}

#[tokio::test]
async fn off_never_retries_and_the_default_retries_a_failed_connect() {
    let good = status_backend("good", 200).await;
    let down = refusing();
    let g = serve(&[
        service_yaml("app", 80, None, &[down, good.addr]),
        retry_ingress("default", "default.example", "app", &[]),
        retry_ingress("off", "off.example", "app", &[("proxy-next-upstream", "off")]),
    ])
    .await;
    // A POST with a body too: nothing reached the refusing endpoint.
    assert_eq!(
        statuses(&g, "POST", "default.example", Some("a=1")).await,
        [200; ROUNDS]
    );
    let got = statuses(&g, "GET", "off.example", None).await;
    assert!(
        got.contains(&502),
        "off: a refused connect is the client's 502: {got:?}"
    );
    assert!(got.iter().all(|s| *s == 502 || *s == 200), "{got:?}");
}

#[tokio::test]
async fn a_route_without_endpoints_serves_the_default_backend() {
    let fallback = Echo::start("fallback").await;
    let g = serve(&[
        service_yaml("empty", 80, None, &[]),
        service_yaml("fallback", 8080, None, &[fallback.addr]),
        retry_ingress(
            "default-backend",
            "db.example",
            "empty",
            &[("default-backend", "fallback")],
        ),
    ])
    .await;
    let resp = plain_client()
        .get(g.url("/alma/armud"))
        .header("host", "db.example")
        .header("x-request-id", "something-unique")
        .send()
        .await
        .unwrap();
    // ingress-nginx's e2e test (default_backend.go): the default backend's own answer, with
    // X-Code 503 and the route's names.
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["service"], "fallback");
    assert_eq!(body["path"], "/alma/armud");
    let h = &body["headers"];
    assert_eq!(h["x-code"], "503");
    assert_eq!(h["x-ingress-name"], "default-backend");
    assert_eq!(h["x-service-name"], "empty");
    assert_eq!(h["x-service-port"], "80");
    assert_eq!(h["x-namespace"], "default");
    assert_eq!(h["x-request-id"], "something-unique");
}

#[tokio::test]
async fn custom_http_errors_get_the_error_backend_s_response_with_its_own_status() {
    let app = status_backend("app", 200).await;
    let errors = Echo::start("errors").await;
    let g = serve(&[
        service_yaml("app", 80, None, &[app.addr]),
        service_yaml("errors", 8080, None, &[errors.addr]),
        service_yaml("broken", 8080, None, &[refusing()]),
        retry_ingress(
            "pages",
            "pages.example",
            "app",
            &[("custom-http-errors", "404,503"), ("default-backend", "errors")],
        ),
        retry_ingress(
            "passthrough",
            "pass.example",
            "app",
            &[
                ("custom-http-errors", "404"),
                ("disable-proxy-intercept-errors", "true"),
                ("default-backend", "errors"),
            ],
        ),
        retry_ingress(
            "failing",
            "failing.example",
            "app",
            &[("custom-http-errors", "404"), ("default-backend", "broken")],
        ),
    ])
    .await;
    for code in [404u16, 503] {
        let resp = plain_client()
            .get(g.url(&format!("/status/{code}?q=1")))
            .header("host", "pages.example")
            .header("accept", "application/json")
            .header("x-request-id", "req-1")
            .send()
            .await
            .unwrap();
        // As ingress-nginx's docs and e2e test say: the error backend's response is not changed,
        // so an echo server's 200 reaches the client (a real error backend answers with X-Code).
        assert_eq!(resp.status().as_u16(), 200, "the error backend's own status");
        let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(body["service"], "errors", "the error backend's body");
        assert_eq!(body["method"], "GET");
        assert_eq!(body["path"], "/");
        let h = &body["headers"];
        assert_eq!(h["x-code"], code.to_string());
        assert_eq!(h["x-original-uri"], format!("/status/{code}?q=1"));
        assert_eq!(h["x-service-name"], "app");
        assert_eq!(h["x-service-port"], "80");
        assert_eq!(h["x-ingress-name"], "pages");
        assert_eq!(h["x-namespace"], "default");
        assert_eq!(h["x-format"], "application/json");
        assert_eq!(h["x-request-id"], "req-1");
        assert_eq!(h["host"], "pages.example");
    }
    // Not listed, or a success: the backend's own answer.
    assert_eq!(
        send(&g, "GET", "pages.example", "/status/500", None).await,
        (500, "app 500".into())
    );
    assert_eq!(
        send(&g, "GET", "pages.example", "/", None).await,
        (200, "app 200".into())
    );
    // disable-proxy-intercept-errors: the backend's 404 passes through.
    assert_eq!(
        send(&g, "GET", "pass.example", "/status/404", None).await,
        (404, "app 404".into())
    );
    // An error backend that cannot be reached: the original response.
    assert_eq!(
        send(&g, "GET", "failing.example", "/status/404", None).await,
        (404, "app 404".into())
    );
    // A POST gets its page too (as a GET to the error backend).
    let (status, body) = send(&g, "POST", "pages.example", "/status/404", Some("x")).await;
    assert_eq!(status, 200, "the error backend's own status");
    assert_eq!(body, "errors 200", "the error backend's body");
}
