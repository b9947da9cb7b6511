//! Graceful shutdown: SIGTERM while long requests are in flight.

use std::time::Duration;

use gantry_testkit::{gantry, objects::*, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_refuses_new_connections_and_exits_zero() {
    let slow = Echo::start("slow").await;
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
    let mut g = gantry!()
        .manifests(dir.path())
        .args(["--shutdown-grace", "10s"])
        // Frame by frame, for the log printed when a stream fails.
        .env("GANTRY_LOG", "info,h2=debug")
        .start()
        .await;

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
    // Five HTTP/2 streams on one TLS connection, from curl (libcurl with nghttp2). Not reqwest:
    // its HTTP/2 client (hyper's) has failed one of the five streams here with "stream closed
    // because of a broken pipe" (once in CI, once in 250 runs on a dev VM) while the server's log
    // showed all five responses, HEADERS and END_STREAM DATA, written before its GOAWAY and
    // close; compare hyperium/hyper#2500. What is under test is the server's drain.
    let port = g.https.port();
    let mut curl = std::process::Command::new("curl");
    curl.args([
        "--silent",
        "--no-progress-meter",
        "--insecure",
        "--http2",
        "--parallel",
        "--max-time",
        "10",
    ])
    .arg("--resolve")
    .arg(format!("slow.example:{port}:127.0.0.1"))
    .args([
        "--write-out",
        "\nSTREAM %{http_code} %{http_version} %{num_connects}\n",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    for _ in 0..5 {
        curl.arg(format!("https://slow.example:{port}/sleep/1500"));
    }
    let mut curl = curl.spawn().expect("curl runs");
    // All ten are at the backend (each waits there 1.5 s) before the signal.
    wait_for_hits(&slow, 10).await;
    g.sigterm();

    // Draining: not ready, new connections refused, the admin listener still answers; all while
    // the ten requests are still in flight.
    let admin = plain_client();
    let mut ready = None;
    for _ in 0..100 {
        let status = admin
            .get(format!("http://{}/readyz", g.admin))
            .send()
            .await
            .expect("the admin listener answers while draining")
            .status();
        ready = Some(status);
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        ready.map(|s| s.as_u16()),
        Some(503),
        "readyz turns 503 on SIGTERM"
    );
    for (listener, addr) in [("plain", g.http), ("TLS", g.https)] {
        let mut refused = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "new {listener} connections are refused while draining");
    }
    assert!(
        inflight.iter().all(|t| !t.is_finished()) && matches!(curl.try_wait(), Ok(None)),
        "the drain began while every request was still in flight"
    );

    for t in inflight {
        let status = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("in-flight request completes: {e:?}; log:\n{}", g.log_text()));
        assert_eq!(status, 200);
    }
    let out = tokio::task::spawn_blocking(move || curl.wait_with_output())
        .await
        .unwrap()
        .expect("curl ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let streams: Vec<&str> = stdout.lines().filter(|l| l.starts_with("STREAM ")).collect();
    // One new connection among the five transfers: the other four were streams on it.
    let mut want = vec!["STREAM 200 2 0"; 4];
    want.push("STREAM 200 2 1");
    let mut got = streams.clone();
    got.sort_unstable();
    assert_eq!(
        got,
        want,
        "every HTTP/2 stream in flight completes; curl: {}; log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        g.log_text()
    );
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
    let slow = Echo::start("slow").await;
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        "all.yaml",
        &(service_yaml("slow", 80, None, &[slow.addr])
            + "---\n"
            + &ingress_yaml("slow", &[], &[("", "/", "Prefix", "slow", 80)])),
    );
    let mut g = gantry!()
        .manifests(dir.path())
        .args(["--shutdown-grace", "500ms"])
        .start()
        .await;
    let c = plain_client();
    let url = g.url("/sleep/8000");
    let long = tokio::spawn(async move { c.get(url).header("host", "x").send().await.map(|r| r.status()) });
    wait_for_hits(&slow, 1).await;
    g.sigterm();
    // The backend holds the request for 8 s: an exit within 5 s is the grace ending, not the
    // request.
    let code = g.wait_exit(Duration::from_secs(5));
    assert_eq!(
        code,
        Some(0),
        "gantry exits when the grace ends; log:\n{}",
        g.log_text()
    );
    assert!(long.await.unwrap().is_err(), "the request past the grace is cut");
}

/// Waits (at most 5 s) until `backend` has received `n` requests.
async fn wait_for_hits(backend: &Echo, n: usize) {
    for _ in 0..500 {
        if backend.hits.load(std::sync::atomic::Ordering::Relaxed) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the backend never received {n} requests");
}
