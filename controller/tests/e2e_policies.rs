//! ingress-nginx annotations, end to end: the real `gantry` binary on a folder of manifests, real
//! backends, real clients, and password files written by the real `htpasswd` tool.
//!
//! Each test starts the backends and the Gantry it needs. Expected answers are ingress-nginx's,
//! from its user guide and its e2e tests (`test/e2e/annotations/*.go`).

use std::{process::Command, time::Duration};

use gantry_testkit::{gantry, objects::*, *};

/// Gantry serving `manifests` (joined as one file), after waiting for `host` `path` to route.
async fn serve(manifests: &[String]) -> Gantry {
    gantry!().yaml(manifests).start().await
}

async fn get(g: &Gantry, host: &str, path: &str) -> reqwest::Response {
    plain_client()
        .get(g.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

async fn json_of(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// `htpasswd -n <flag> -b user password`: one line as the Apache tool writes it.
fn htpasswd_line(flag: &str, user: &str, password: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-n", flag, "-b", user, password])
        .output()
        .expect("the htpasswd tool (apache2-utils) is installed");
    assert!(out.status.success(), "htpasswd failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn basic_auth_accepts_bcrypt_apr1_and_sha1_users_written_by_htpasswd() {
    let backend = Echo::start("secret").await;
    let file = [
        htpasswd_line("-B", "bcrypt-user", "pw-b"),
        htpasswd_line("-m", "apr1-user", "pw-m"),
        htpasswd_line("-s", "sha-user", "pw-s"),
    ]
    .join("\n")
        + "\n";
    let g = serve(&[
        service_yaml("secret", 80, None, &[backend.addr]),
        secret_yaml("basic-auth", "Opaque", &[("auth", &file)]),
        ingress_yaml(
            "auth",
            &[
                ("nginx.ingress.kubernetes.io/auth-type", "basic"),
                ("nginx.ingress.kubernetes.io/auth-secret", "basic-auth"),
                (
                    "nginx.ingress.kubernetes.io/auth-realm",
                    "Authentication Required - foo",
                ),
            ],
            &[("auth.example", "/", "Prefix", "secret", 80)],
        ),
    ])
    .await;
    let client = plain_client();
    let url = g.url("/");

    let resp = client
        .get(&url)
        .header("host", "auth.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"Authentication Required - foo\""
    );
    for (user, pw) in [
        ("bcrypt-user", "pw-b"),
        ("apr1-user", "pw-m"),
        ("sha-user", "pw-s"),
    ] {
        let ok = client
            .get(&url)
            .header("host", "auth.example")
            .basic_auth(user, Some(pw))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{user}");
        let wrong = client
            .get(&url)
            .header("host", "auth.example")
            .basic_auth(user, Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{user} with a wrong password");
    }
    let unknown = client
        .get(&url)
        .header("host", "auth.example")
        .basic_auth("nobody", Some("pw-b"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    // Only the authenticated requests reached the backend.
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn broken_auth_and_access_annotations_fail_closed_while_other_ingresses_keep_serving() {
    let backend = Echo::start("app").await;
    let g = serve(&[
        service_yaml("app", 80, None, &[backend.addr]),
        // The Secret it names does not exist.
        ingress_yaml(
            "missing-secret",
            &[
                ("nginx.ingress.kubernetes.io/auth-type", "basic"),
                ("nginx.ingress.kubernetes.io/auth-secret", "nope"),
            ],
            &[("a.example", "/", "Prefix", "app", 80)],
        ),
        // Not a CIDR.
        ingress_yaml(
            "bad-cidr",
            &[(
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "10.0.0.0/33",
            )],
            &[("b.example", "/", "Prefix", "app", 80)],
        ),
        // An auth URL that is not one (ingress-nginx's e2e test: "with invalid auth-url should
        // deny whole location").
        ingress_yaml(
            "ext-auth",
            &[(
                "nginx.ingress.kubernetes.io/auth-url",
                "https://invalid..auth.url",
            )],
            &[("c.example", "/", "Prefix", "app", 80)],
        ),
        // An access rule inside a snippet: never executed, so never served open either.
        ingress_yaml(
            "snippet",
            &[("nginx.ingress.kubernetes.io/configuration-snippet", "deny all;")],
            &[("d.example", "/", "Prefix", "app", 80)],
        ),
        ingress_yaml("fine", &[], &[("ok.example", "/", "Prefix", "app", 80)]),
    ])
    .await;
    for host in ["a.example", "b.example", "c.example", "d.example"] {
        let resp = get(&g, host, "/").await;
        assert_eq!(resp.status(), 503, "{host} must fail closed");
    }
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(get(&g, "ok.example", "/").await.status(), 200);
}

#[tokio::test]
async fn source_ranges_allow_and_deny_by_client_address() {
    let backend = Echo::start("app").await;
    let g = serve(&[
        service_yaml("app", 80, None, &[backend.addr]),
        ingress_yaml(
            "outside",
            &[(
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "18.0.0.0/8, 56.0.0.1",
            )],
            &[("outside.example", "/", "Prefix", "app", 80)],
        ),
        ingress_yaml(
            "inside",
            &[(
                "nginx.ingress.kubernetes.io/allowlist-source-range",
                "10.0.0.0/8,127.0.0.1/32",
            )],
            &[("inside.example", "/", "Prefix", "app", 80)],
        ),
        ingress_yaml(
            "denied",
            &[("nginx.ingress.kubernetes.io/denylist-source-range", "127.0.0.0/8")],
            &[("denied.example", "/", "Prefix", "app", 80)],
        ),
    ])
    .await;
    assert_eq!(get(&g, "outside.example", "/").await.status(), 403);
    assert_eq!(get(&g, "inside.example", "/").await.status(), 200);
    assert_eq!(get(&g, "denied.example", "/").await.status(), 403);
}

#[tokio::test]
async fn limit_rps_answers_503_beyond_the_burst() {
    let backend = Echo::start("app").await;
    let g = serve(&[
        service_yaml("app", 80, None, &[backend.addr]),
        ingress_yaml(
            "limited",
            &[
                ("nginx.ingress.kubernetes.io/limit-rps", "1"),
                ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "5"),
            ],
            &[("limited.example", "/", "Prefix", "app", 80)],
        ),
    ])
    .await;
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..20 {
        match get(&g, "limited.example", "/").await.status().as_u16() {
            200 => ok += 1,
            503 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    // rate 1/s with a burst of 5 (nodelay): the first requests pass at once, then one per second.
    // The loop takes well under a second or two, so at most a couple more pass.
    assert!((5..=8).contains(&ok), "{ok} passed, {limited} limited");
    assert_eq!(ok + limited, 20);
}

#[tokio::test]
async fn cors_preflight_is_answered_by_gantry_and_responses_carry_the_headers() {
    let backend = Echo::start("app").await;
    let g = serve(&[
        service_yaml("app", 80, None, &[backend.addr]),
        ingress_yaml(
            "cors",
            &[
                ("nginx.ingress.kubernetes.io/enable-cors", "true"),
                (
                    "nginx.ingress.kubernetes.io/cors-allow-origin",
                    "https://origin.cors.com:8080, https://*.apps.example",
                ),
            ],
            &[("cors.example", "/", "Prefix", "app", 80)],
        ),
    ])
    .await;
    let client = plain_client();
    let preflight = client
        .request(reqwest::Method::OPTIONS, g.url("/api"))
        .header("host", "cors.example")
        .header("origin", "https://origin.cors.com:8080")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://origin.cors.com:8080");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "1728000");
    assert_eq!(
        backend.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "preflight answered by Gantry"
    );

    let sub = client
        .get(g.url("/api"))
        .header("host", "cors.example")
        .header("origin", "https://team.apps.example")
        .send()
        .await
        .unwrap();
    assert_eq!(sub.status(), 200);
    assert_eq!(
        sub.headers()["access-control-allow-origin"],
        "https://team.apps.example"
    );

    let stranger = client
        .get(g.url("/api"))
        .header("host", "cors.example")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 200);
    assert!(!stranger.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn regex_paths_with_rewrite_target_send_the_captured_path_upstream() {
    let backend = Echo::start("app").await;
    let g = serve(&[
        service_yaml("app", 80, None, &[backend.addr]),
        // docs/examples/rewrite: /something(/|$)(.*) → /$2
        ingress_yaml(
            "rewrite",
            &[
                ("nginx.ingress.kubernetes.io/use-regex", "true"),
                ("nginx.ingress.kubernetes.io/rewrite-target", "/$2"),
            ],
            &[(
                "rewrite.example",
                "/something(/|$)(.*)",
                "ImplementationSpecific",
                "app",
                80,
            )],
        ),
    ])
    .await;
    for (request, upstream) in [
        ("/something", "/"),
        ("/something/", "/"),
        ("/something/new", "/new"),
        ("/SOMETHING/a/b", "/a/b"),
    ] {
        let resp = get(&g, "rewrite.example", request).await;
        assert_eq!(resp.status(), 200, "{request}");
        assert_eq!(json_of(resp).await["path"], upstream, "{request}");
    }
    let with_query = json_of(get(&g, "rewrite.example", "/something/q?x=1").await).await;
    assert_eq!(with_query["path"], "/q");
    assert_eq!(with_query["query"], "x=1");
    assert_eq!(get(&g, "rewrite.example", "/other").await.status(), 404);
}

#[tokio::test]
async fn redirects_answer_without_the_backend() {
    let backend = Echo::start("app").await;
    let g = serve(&[
        service_yaml("app", 80, None, &[backend.addr]),
        ingress_yaml(
            "permanent",
            &[(
                "nginx.ingress.kubernetes.io/permanent-redirect",
                "http://redirect.example.com",
            )],
            &[("perm.example", "/something", "Prefix", "app", 80)],
        ),
        ingress_yaml(
            "permanent-code",
            &[
                (
                    "nginx.ingress.kubernetes.io/permanent-redirect",
                    "http://redirect.example.com",
                ),
                ("nginx.ingress.kubernetes.io/permanent-redirect-code", "308"),
            ],
            &[("perm308.example", "/", "Prefix", "app", 80)],
        ),
        ingress_yaml(
            "temporal",
            &[(
                "nginx.ingress.kubernetes.io/temporal-redirect",
                "http://tmp.example.com/x",
            )],
            &[("temp.example", "/", "Prefix", "app", 80)],
        ),
        ingress_yaml(
            "approot",
            &[("nginx.ingress.kubernetes.io/app-root", "/foo")],
            &[("approot.bar.com", "/", "Prefix", "app", 80)],
        ),
    ])
    .await;
    let r = get(&g, "perm.example", "/something").await;
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "http://redirect.example.com");
    let r = get(&g, "perm308.example", "/").await;
    assert_eq!(r.status(), 308);
    let r = get(&g, "temp.example", "/a").await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://tmp.example.com/x");
    let r = get(&g, "approot.bar.com", "/").await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://approot.bar.com/foo");
    // Only the root is redirected.
    assert_eq!(get(&g, "approot.bar.com", "/foo").await.status(), 200);
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn from_to_www_redirect_sends_the_twin_host_to_the_ingress_s_own_over_http_and_https() {
    // ingress-nginx's fromtowwwredirect.go, both of its cases.
    let backend = Echo::start("app").await;
    let www = [("nginx.ingress.kubernetes.io/from-to-www-redirect", "true")];
    let mut tls_ingress = ingress_yaml("tls", &www, &[("secure.example", "/", "Prefix", "app", 80)]);
    tls_ingress += "  tls:\n  - hosts: [secure.example, www.secure.example]\n    secretName: both\n";
    let g = serve(&[
        service_yaml("app", 80, None, &[backend.addr]),
        ingress_yaml(
            "plain",
            &www,
            &[("fromtowwwredirect.bar.com", "/", "Prefix", "app", 80)],
        ),
        tls_secret_yaml("both", &["secure.example", "www.secure.example"]),
        tls_ingress,
    ])
    .await;
    let r = get(&g, "www.fromtowwwredirect.bar.com", "/foo").await;
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "http://fromtowwwredirect.bar.com:80/foo");
    // The Ingress's own host is served.
    assert_eq!(get(&g, "fromtowwwredirect.bar.com", "/foo").await.status(), 200);
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Over TLS, with the certificate naming both: `/` goes to `https://host:port` (the port the
    // client addressed), and the host itself is not redirected.
    let port = g.https.port();
    let r = tls_client("www.secure.example", g.https, false)
        .get(format!("https://www.secure.example:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://secure.example:{port}").as_str()
    );
    let r = tls_client("secure.example", g.https, false)
        .get(format!("https://secure.example:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn service_upstream_sends_to_the_service_s_cluster_ip_instead_of_its_endpoints() {
    // The "ClusterIP" is a loopback address where a backend of its own listens (kube-proxy's part);
    // the EndpointSlice names another backend, which only the Ingress without the annotation uses.
    let via_ip = Echo::start("cluster-ip").await;
    let pods = Echo::start("pods").await;
    let mut service = service_yaml("app", via_ip.addr.port(), None, &[pods.addr]);
    service = service.replacen(
        "  type: NodePort\n",
        "  type: ClusterIP\n  clusterIP: 127.0.0.1\n",
        1,
    );
    let g = serve(&[
        service,
        ingress_yaml(
            "via-ip",
            &[("nginx.ingress.kubernetes.io/service-upstream", "true")],
            &[("ip.example", "/", "Prefix", "app", via_ip.addr.port())],
        ),
        ingress_yaml(
            "via-pods",
            &[],
            &[("pods.example", "/", "Prefix", "app", via_ip.addr.port())],
        ),
    ])
    .await;
    assert_eq!(
        json_of(get(&g, "ip.example", "/").await).await["service"],
        "cluster-ip"
    );
    assert_eq!(
        json_of(get(&g, "pods.example", "/").await).await["service"],
        "pods"
    );
}

#[tokio::test]
async fn proxy_body_size_refuses_larger_bodies_with_413_declared_or_streamed() {
    let backend = Echo::start("app").await;
    let g = serve(&[
        service_yaml("app", 80, None, &[backend.addr]),
        ingress_yaml(
            "small",
            &[("nginx.ingress.kubernetes.io/proxy-body-size", "1k")],
            &[("small.example", "/", "Prefix", "app", 80)],
        ),
    ])
    .await;
    let client = plain_client();
    let post = |body: reqwest::Body| {
        client
            .post(g.url("/upload"))
            .header("host", "small.example")
            .body(body)
            .send()
    };
    let ok = post(reqwest::Body::from(vec![b'a'; 1000])).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1000");
    let big = post(reqwest::Body::from(vec![b'a'; 2048])).await.unwrap();
    assert_eq!(big.status(), 413);
    // Chunked, so the size is only known as it streams.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..4).map(|_| Ok(vec![b'b'; 600])).collect();
    let streamed = post(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);
}

#[tokio::test]
async fn upstream_vhost_forwarded_prefix_and_custom_headers() {
    let backend = Echo::start("app").await;
    let g = serve(&[
        service_yaml("app", 80, None, &[backend.addr]),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: extra-headers, namespace: default }\n\
             data:\n  X-Custom-One: \"one\"\n  X-Custom-Two: \"two words\"\n"
            .to_string(),
        ingress_yaml(
            "headers",
            &[
                ("nginx.ingress.kubernetes.io/upstream-vhost", "internal.svc"),
                ("nginx.ingress.kubernetes.io/x-forwarded-prefix", "/api"),
                (
                    "nginx.ingress.kubernetes.io/custom-headers",
                    "default/extra-headers",
                ),
            ],
            &[("headers.example", "/", "Prefix", "app", 80)],
        ),
    ])
    .await;
    let resp = get(&g, "headers.example", "/x").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-custom-one"], "one");
    assert_eq!(resp.headers()["x-custom-two"], "two words");
    let seen = json_of(resp).await;
    assert_eq!(seen["host"], "internal.svc");
    assert_eq!(seen["headers"]["x-forwarded-host"], "headers.example");
    assert_eq!(seen["headers"]["x-forwarded-prefix"], "/api");
}

#[tokio::test]
async fn per_route_read_timeout_turns_a_slow_backend_into_504() {
    let backend = Echo::start("app").await;
    let g = serve(&[
        service_yaml("app", 80, None, &[backend.addr]),
        ingress_yaml(
            "impatient",
            &[("nginx.ingress.kubernetes.io/proxy-read-timeout", "1")],
            &[("impatient.example", "/", "Prefix", "app", 80)],
        ),
        ingress_yaml("patient", &[], &[("patient.example", "/", "Prefix", "app", 80)]),
    ])
    .await;
    let started = std::time::Instant::now();
    assert_eq!(get(&g, "impatient.example", "/sleep/2500").await.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(2400));
    assert_eq!(get(&g, "patient.example", "/sleep/1500").await.status(), 200);
}

/// Sends `prefix` then a GET for `host` on a raw connection; returns the whole answer.
async fn raw_get(addr: std::net::SocketAddr, prefix: &[u8], host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = prefix.to_vec();
    req.extend_from_slice(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes());
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_proxy_protocol_v1_and_v2_names_the_client_for_headers_and_allow_lists() {
    let backend = Echo::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        "all.yaml",
        &[
            service_yaml("app", 80, None, &[backend.addr]),
            ingress_yaml("open", &[], &[("pp.example", "/", "Prefix", "app", 80)]),
            ingress_yaml(
                "only-doc-net",
                &[(
                    "nginx.ingress.kubernetes.io/whitelist-source-range",
                    "203.0.113.0/24",
                )],
                &[("allow.example", "/", "Prefix", "app", 80)],
            ),
        ]
        .join("---\n"),
    );
    let g = gantry!()
        .manifests(dir.path())
        .args(["--proxy-protocol"])
        .start()
        .await;

    let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 80\r\n";
    let answer = raw_get(g.http, v1, "pp.example").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let seen: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["headers"]["x-real-ip"], "203.0.113.7");
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.7");

    // v2: signature, version 2 + PROXY, TCP over IPv4, 12 address bytes.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    v2.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1]);
    v2.extend_from_slice(&40001u16.to_be_bytes());
    v2.extend_from_slice(&80u16.to_be_bytes());
    let answer = raw_get(g.http, &v2, "pp.example").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("198.51.100.9"), "{answer}");

    // The allow-list judges the address from the header, not the balancer's.
    assert!(raw_get(g.http, v1, "allow.example")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(raw_get(g.http, &v2, "allow.example")
        .await
        .starts_with("HTTP/1.1 403"));

    // Without a header the connection is closed unanswered.
    assert_eq!(raw_get(g.http, b"", "pp.example").await, "");
}

#[tokio::test]
async fn trusted_proxies_name_the_client_and_untrusted_clients_cannot() {
    let backend = Echo::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        "all.yaml",
        &[
            service_yaml("app", 80, None, &[backend.addr]),
            ingress_yaml(
                "only-doc-net",
                &[(
                    "nginx.ingress.kubernetes.io/whitelist-source-range",
                    "203.0.113.0/24",
                )],
                &[("allow.example", "/", "Prefix", "app", 80)],
            ),
            ingress_yaml("open", &[], &[("open.example", "/", "Prefix", "app", 80)]),
        ]
        .join("---\n"),
    );
    let send = |g: &Gantry, host: &'static str, xff: &'static str| {
        plain_client()
            .get(g.url("/"))
            .header("host", host)
            .header("x-forwarded-for", xff)
            .header("x-forwarded-proto", "https")
            .send()
    };
    // Loopback is the trusted proxy: its X-Forwarded-For names the client.
    let g = gantry!()
        .manifests(dir.path())
        .args(["--trusted-proxies", "127.0.0.0/8,10.0.0.0/8"])
        .start()
        .await;
    assert_eq!(
        send(&g, "allow.example", "198.51.100.1, 203.0.113.7, 10.0.0.5")
            .await
            .unwrap()
            .status(),
        200
    );
    let seen = json_of(send(&g, "open.example", "203.0.113.7").await.unwrap()).await;
    assert_eq!(seen["headers"]["x-real-ip"], "203.0.113.7");
    assert_eq!(
        seen["headers"]["x-forwarded-proto"], "https",
        "the trusted proxy's scheme is kept"
    );
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    drop(g);

    // Without trust, the same header is just a claim: the allow-list judges the peer.
    let g = gantry!().manifests(dir.path()).start().await;
    assert_eq!(
        send(&g, "allow.example", "203.0.113.7").await.unwrap().status(),
        403
    );
    let seen = json_of(send(&g, "open.example", "203.0.113.7").await.unwrap()).await;
    assert_eq!(seen["headers"]["x-real-ip"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
}
