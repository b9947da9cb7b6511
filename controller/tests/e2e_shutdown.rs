//! Graceful shutdown: SIGTERM while long requests are in flight.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_refuses_new_connections_and_exits_zero() {
    let slow = TestBackend::start("slow").await;
    let dir = tempfile::tempdir().unwrap();
    let m = [
        service_yaml("slow", 80, None, &[slow.addr]),
        tls_secret_yaml("cert", &["slow.example"]),
        ingress_yaml(
            "slow",
            &[("nginx.ingress.kubernetes.io/ssl-redirect", "false")],
            &[("slow.example", "/", "Prefix", "slow", 80)],
        ),
    ]
    .join("---\n");
    write_manifest(dir.path(), "all.yaml", &m);
    let mut g = Gantry::start(dir.path(), &["--shutdown-grace", "10s"]).await;

    // Five HTTP/1.1 requests on their own connections and five HTTP/2 streams on one connection,
    // each taking 1.5 s at the backend.
    let mut inflight = Vec::new();
    for _ in 0..5 {
        let c = reqwest::Client::builder()
            .http1_only()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = g.url("/sleep/1500");
        inflight.push(tokio::spawn(async move {
            c.get(url)
                .header("host", "slow.example")
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    let h2 = tls_client("slow.example", g.https, true);
    for _ in 0..5 {
        let c = h2.clone();
        inflight.push(tokio::spawn(async move {
            c.get("https://slow.example/sleep/1500")
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    g.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Draining: not ready, new connections refused, the admin listener still answers.
    let ready = plain_client()
        .get(format!("http://{}/readyz", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "readyz turns 503 on SIGTERM");
    let refused = tokio::net::TcpStream::connect(g.http).await;
    assert!(
        refused.is_err(),
        "new plain connections are refused while draining"
    );
    let refused = tokio::net::TcpStream::connect(g.https).await;
    assert!(refused.is_err(), "new TLS connections are refused while draining");

    for t in inflight {
        let status = t.await.unwrap().expect("in-flight request completes");
        assert_eq!(status, 200);
    }
    let code = g.wait_exit(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "gantry exits 0 after draining; log:\n{}",
        g.log_text()
    );
    assert_eq!(slow.hits.load(std::sync::atomic::Ordering::Relaxed), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_still_running_when_the_grace_ends_are_cut_and_the_process_exits() {
    let slow = TestBackend::start("slow").await;
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        "all.yaml",
        &(service_yaml("slow", 80, None, &[slow.addr])
            + "---\n"
            + &ingress_yaml("slow", &[], &[("", "/", "Prefix", "slow", 80)])),
    );
    let mut g = Gantry::start(dir.path(), &["--shutdown-grace", "500ms"]).await;
    let c = plain_client();
    let url = g.url("/sleep/8000");
    let long = tokio::spawn(async move { c.get(url).header("host", "x").send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    g.sigterm();
    let code = g.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "exited after the grace, not after the request"
    );
    assert!(long.await.unwrap().is_err(), "the request past the grace is cut");
}
