//! Upstream protocols end to end, driven by ingress-nginx's annotations as a user writes them:
//! `backend-protocol` (`GRPC`, `GRPCS`, `HTTPS`, `H2C`) and `proxy-ssl-verify`, `proxy-ssl-secret`,
//! `proxy-ssl-name`, `proxy-ssl-server-name`, against the real `gantry` binary, a real gRPC server
//! (tonic's health service), an HTTPS backend (hyper on tokio-rustls) and an h2c-only backend.
//! (`H2C` is Gantry's own value for plain HTTP/2 backends; ingress-nginx has none.)
//!
//! The data plane half is proven by `proxy/tests/upstream_protocols.rs`; here the controller
//! compiles the annotations into `UpstreamRequest::protocol` and `UpstreamRequest::tls`
//! (`controller/src/annotations/upstream.rs`).

use std::time::Duration;

use gantry_testkit::{
    gantry, grpc,
    objects::*,
    tls::{issue, new_ca, server_config, Ca},
    *,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// An Ingress for one host and `/`, with annotations and optionally TLS with `tls_secret`.
fn ingress(
    name: &str,
    host: &str,
    svc: &str,
    annotations: &[(&str, &str)],
    tls_secret: Option<&str>,
) -> String {
    let mut s = ingress_yaml(name, annotations, &[(host, "/", "Prefix", svc, 80)]);
    if let Some(secret) = tls_secret {
        s += &format!("  tls:\n  - hosts: [\"{host}\"]\n    secretName: {secret}\n");
    }
    s
}

async fn serve(manifests: &[String]) -> Gantry {
    gantry!().yaml(manifests).start().await
}

/// The HTTP version and `:authority`/Host the echo backend saw, and the path:
/// `HTTP/2.0 h2c.example /hello`.
async fn described(resp: reqwest::Response) -> String {
    let seen: Seen = resp.json().await.unwrap();
    let authority = seen.authority.or(seen.host).unwrap_or_default();
    format!("{} {authority} {}", seen.proto, seen.path)
}

const PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";

/// A tonic channel to Gantry's plain listener (h2c with prior knowledge), for `host`.
async fn h2c_channel(g: &Gantry, host: &str) -> tonic::transport::Channel {
    Endpoint::from_shared(format!("http://{}", g.http))
        .unwrap()
        .origin(format!("http://{host}").parse().unwrap())
        .connect()
        .await
        .unwrap()
}

/// A tonic channel to Gantry's HTTPS listener (TLS, ALPN h2), trusting `ca`, for `host`.
async fn tls_channel(g: &Gantry, host: &str, ca: &Ca) -> tonic::transport::Channel {
    Endpoint::from_shared(format!("https://{}", g.https))
        .unwrap()
        .origin(format!("https://{host}").parse().unwrap())
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca.pem()))
                .domain_name(host.to_string()),
        )
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

#[tokio::test]
async fn grpc_backend_through_the_plain_and_the_tls_listener() {
    let (backend, reporter) = grpc::health_backend(None).await;
    let ca = new_ca("front ca");
    let (cert, key) = issue(&ca, &["grpc.example"]);
    let g = serve(&[
        service_yaml("grpc", 80, None, &[backend]),
        secret_yaml(
            "grpc-tls",
            "kubernetes.io/tls",
            &[("tls.crt", &cert), ("tls.key", &key)],
        ),
        ingress(
            "grpc",
            "grpc.example",
            "grpc",
            // The host has TLS; plain h2c is still served rather than redirected.
            &[
                (PROTOCOL, "GRPC"),
                ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ],
            Some("grpc-tls"),
        ),
    ])
    .await;

    for (what, channel) in [
        ("h2c", h2c_channel(&g, "grpc.example").await),
        ("tls", tls_channel(&g, "grpc.example", &ca).await),
    ] {
        let mut client = HealthClient::new(channel);
        // Unary.
        let resp = client
            .check(check(""))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", g.log_text()));
        assert_eq!(resp.into_inner().status(), ServingStatus::Serving, "{what}");
        // The gRPC status of a failed call (in a trailers-only response) arrives.
        let err = client.check(check("no-such-service")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{what}: {err}");
        // Server streaming: the current status, then each change.
        let mut watch = client.watch(check("")).await.unwrap().into_inner();
        assert_eq!(
            watch.message().await.unwrap().unwrap().status(),
            ServingStatus::Serving
        );
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        assert_eq!(
            watch.message().await.unwrap().unwrap().status(),
            ServingStatus::NotServing
        );
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        assert_eq!(
            watch.message().await.unwrap().unwrap().status(),
            ServingStatus::Serving
        );
    }
}

#[tokio::test]
async fn grpcs_backend_with_tls() {
    let backend_ca = new_ca("backend ca");
    let (backend_cert, backend_key) = issue(&backend_ca, &["grpc.internal"]);
    let (backend, _reporter) = grpc::health_backend(Some((&backend_cert, &backend_key))).await;
    let g = serve(&[
        service_yaml("grpcs", 80, None, &[backend]),
        // proxy-ssl-verify is off by default: the backend's certificate is not checked.
        ingress("grpcs", "grpcs.example", "grpcs", &[(PROTOCOL, "GRPCS")], None),
        secret_yaml("grpcs-ca", "Opaque", &[("ca.crt", &backend_ca.pem())]),
        ingress(
            "grpcs-verified",
            "verified.example",
            "grpcs",
            &[
                (PROTOCOL, "GRPCS"),
                ("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on"),
                ("nginx.ingress.kubernetes.io/proxy-ssl-secret", "default/grpcs-ca"),
                ("nginx.ingress.kubernetes.io/proxy-ssl-name", "grpc.internal"),
                ("nginx.ingress.kubernetes.io/proxy-ssl-server-name", "on"),
            ],
            None,
        ),
    ])
    .await;
    for host in ["grpcs.example", "verified.example"] {
        let mut client = HealthClient::new(h2c_channel(&g, host).await);
        let resp = client
            .check(check(""))
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}\n{}", g.log_text()));
        assert_eq!(resp.into_inner().status(), ServingStatus::Serving, "{host}");
    }
}

#[tokio::test]
async fn https_backend_with_and_without_verification() {
    let ca = new_ca("backend ca");
    let (cert, key) = issue(&ca, &["backend.internal"]);
    let backend = Echo::builder("secure")
        .http1_only()
        .tls(server_config(&cert, &key, None, &[b"http/1.1"]))
        .start()
        .await;
    let verify = |name: &'static str| {
        vec![
            (PROTOCOL, "HTTPS"),
            ("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on"),
            (
                "nginx.ingress.kubernetes.io/proxy-ssl-secret",
                "default/backend-ca",
            ),
            ("nginx.ingress.kubernetes.io/proxy-ssl-name", name),
            ("nginx.ingress.kubernetes.io/proxy-ssl-server-name", "on"),
        ]
    };
    let g = serve(&[
        service_yaml("secure", 80, None, &[backend.addr]),
        secret_yaml("backend-ca", "Opaque", &[("ca.crt", &ca.pem())]),
        ingress(
            "off",
            "off.example",
            "secure",
            &[
                (PROTOCOL, "HTTPS"),
                ("nginx.ingress.kubernetes.io/proxy-ssl-verify", "off"),
            ],
            None,
        ),
        ingress("on", "on.example", "secure", &verify("backend.internal"), None),
        ingress(
            "wrong",
            "wrong.example",
            "secure",
            &verify("wrong.internal"),
            None,
        ),
    ])
    .await;
    let get = |host: &'static str| {
        let url = g.url("/path");
        async move { plain_client().get(url).header("host", host).send().await.unwrap() }
    };

    let resp = get("off.example").await;
    assert_eq!(resp.status(), 200, "{}", g.log_text());
    assert_eq!(described(resp).await, "HTTP/1.1 off.example /path");

    let resp = get("on.example").await;
    assert_eq!(resp.status(), 200, "{}", g.log_text());
    assert_eq!(described(resp).await, "HTTP/1.1 on.example /path");
    assert!(
        backend
            .sni
            .lock()
            .unwrap()
            .contains(&Some("backend.internal".to_string())),
        "proxy-ssl-server-name sends proxy-ssl-name as SNI"
    );

    // The certificate does not name `wrong.internal`: 502, never the backend's answer.
    let resp = get("wrong.example").await;
    assert_eq!(resp.status(), 502);
}

#[tokio::test]
async fn h2c_backend_from_an_http1_client() {
    let backend = Echo::builder("h2c").http2_only().start().await;
    let g = serve(&[
        service_yaml("h2c", 80, None, &[backend.addr]),
        ingress("h2c", "h2c.example", "h2c", &[(PROTOCOL, "H2C")], None),
    ])
    .await;
    let resp = tokio::time::timeout(
        Duration::from_secs(15),
        plain_client()
            .get(g.url("/hello"))
            .header("host", "h2c.example")
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 200, "{}", g.log_text());
    assert_eq!(described(resp).await, "HTTP/2.0 h2c.example /hello");
}

/// A GatewayClass, a Gateway with a plain HTTP listener, and `routes` (YAML documents).
fn gateway_yaml() -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: gantry }\nspec: { controllerName: gantry.dev/gateway-controller }\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: gw, namespace: default }\nspec:\n  gatewayClassName: gantry\n  listeners: [{ name: http, protocol: HTTP, port: 80 }]\n".to_string()
}

#[tokio::test]
async fn a_grpc_route_routes_by_method_to_h2c_and_to_a_verified_tls_backend() {
    let (plain, _r1) = grpc::health_backend(None).await;
    let backend_ca = new_ca("backend ca");
    let (backend_cert, backend_key) = issue(&backend_ca, &["grpc.internal"]);
    let (tls, _r2) = grpc::health_backend(Some((&backend_cert, &backend_key))).await;
    let indented_ca: String = backend_ca.pem().lines().map(|l| format!("    {l}\n")).collect();
    let g = serve(
        &[
            service_yaml("grpc", 80, None, &[plain]),
            service_yaml("grpcs", 80, None, &[tls]),
            gateway_yaml(),
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: health, namespace: default }
spec:
  parentRefs: [{ name: gw }]
  hostnames: [grpc.example]
  rules:
    - matches: [{ method: { service: grpc.health.v1.Health, method: Check } }]
      backendRefs: [{ name: grpc, port: 80 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: secure, namespace: default }
spec:
  parentRefs: [{ name: gw }]
  hostnames: [secure.example]
  rules:
    - matches: [{ method: { service: grpc.health.v1.Health } }]
      backendRefs: [{ name: grpcs, port: 80 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: { name: grpcs, namespace: default }
spec:
  targetRefs: [{ group: "", kind: Service, name: grpcs }]
  validation:
    hostname: grpc.internal
    caCertificateRefs: [{ group: "", kind: ConfigMap, name: grpcs-ca }]
"#
            .to_string(),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: grpcs-ca, namespace: default }}\ndata:\n  ca.crt: |\n{indented_ca}"),
        ],
    )
    .await;

    // The exact method is routed over h2c; another method of the service is not (404, which gRPC
    // clients read as Unimplemented).
    let mut client = HealthClient::new(h2c_channel(&g, "grpc.example").await);
    let resp = client
        .check(check(""))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", g.log_text()));
    assert_eq!(resp.into_inner().status(), ServingStatus::Serving);
    // A streaming call learns it at its first message (the answer is a plain HTTP 404 head).
    let err = match client.watch(check("")).await {
        Err(e) => e,
        Ok(stream) => stream.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");

    // Every method of the service, over TLS verified against the policy's CA and hostname.
    let mut client = HealthClient::new(h2c_channel(&g, "secure.example").await);
    let resp = client
        .check(check(""))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", g.log_text()));
    assert_eq!(resp.into_inner().status(), ServingStatus::Serving);
    let mut watch = client.watch(check("")).await.unwrap().into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
}
