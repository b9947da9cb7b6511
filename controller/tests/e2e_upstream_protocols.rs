//! Upstream protocols end to end, driven by ingress-nginx's annotations as a user writes them:
//! `backend-protocol` (`GRPC`, `GRPCS`, `HTTPS`, `H2C`) and `proxy-ssl-verify`, `proxy-ssl-secret`,
//! `proxy-ssl-name`, `proxy-ssl-server-name`, against the real `gantry` binary, a real gRPC server
//! (tonic's health service), an HTTPS backend (hyper on tokio-rustls) and an h2c-only backend.
//! (`H2C` is Gantry's own value for plain HTTP/2 backends; ingress-nginx has none.)
//!
//! The data plane half is proven by `proxy/tests/upstream_protocols.rs`; here the controller
//! compiles the annotations into `UpstreamRequest::protocol` and `UpstreamRequest::tls`
//! (`controller/src/annotations/upstream.rs`).

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic_health::{
    pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest},
    server::HealthReporter,
};

type Ca = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

fn new_ca(name: &str) -> Ca {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `names` signed by `ca`: (certificate PEM, key PEM).
fn issue(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A Secret with the given PEM entries (`tls.crt`, `tls.key`, `ca.crt`).
fn secret_yaml(name: &str, ty: &str, data: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}, namespace: default }}\ntype: {ty}\ndata:\n"
    );
    for (k, v) in data {
        s += &format!("  {k}: {}\n", base64_encode(v.as_bytes()));
    }
    s
}

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

async fn serve(dir: &Path, manifests: &[String]) -> Gantry {
    write_manifest(dir, "all.yaml", &manifests.join("---\n"));
    Gantry::start(dir, &[]).await
}

const PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";

/// tonic's gRPC health service ("" serving), in cleartext or with TLS (`(cert, key)` PEM).
async fn grpc_backend(tls: Option<(&str, &str)>) -> (SocketAddr, HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .unwrap();
    }
    let router = builder.add_service(service);
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    (addr, reporter)
}

/// Answers with the HTTP version and `:authority`/Host the backend saw, as text.
async fn describe(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let text = format!("{:?} {authority} {}", req.version(), req.uri().path());
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// An HTTPS backend speaking HTTP/1.1 that records the SNI of each handshake.
async fn https_backend(cert_pem: &str, key_pem: &str) -> (SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sni = Arc::new(Mutex::new(Vec::new()));
    let seen = sni.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                seen.lock()
                    .unwrap()
                    .push(tls.get_ref().1.server_name().map(str::to_owned));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service_fn(describe))
                    .await;
            });
        }
    });
    (addr, sni)
}

/// A backend that speaks HTTP/2 with prior knowledge only.
async fn h2c_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service_fn(describe))
                    .await;
            });
        }
    });
    addr
}

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
    let (backend, reporter) = grpc_backend(None).await;
    let ca = new_ca("front ca");
    let (cert, key) = issue(&ca, &["grpc.example"]);
    let dir = tempfile::tempdir().unwrap();
    let g = serve(
        dir.path(),
        &[
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
        ],
    )
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
    let (backend, _reporter) = grpc_backend(Some((&backend_cert, &backend_key))).await;
    let dir = tempfile::tempdir().unwrap();
    let g = serve(
        dir.path(),
        &[
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
        ],
    )
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
    let (backend, sni) = https_backend(&cert, &key).await;
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
    let dir = tempfile::tempdir().unwrap();
    let g = serve(
        dir.path(),
        &[
            service_yaml("secure", 80, None, &[backend]),
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
        ],
    )
    .await;
    let get = |host: &'static str| {
        let url = g.url("/path");
        async move { plain_client().get(url).header("host", host).send().await.unwrap() }
    };

    let resp = get("off.example").await;
    assert_eq!(resp.status(), 200, "{}", g.log_text());
    assert_eq!(resp.text().await.unwrap(), "HTTP/1.1 off.example /path");

    let resp = get("on.example").await;
    assert_eq!(resp.status(), 200, "{}", g.log_text());
    assert_eq!(resp.text().await.unwrap(), "HTTP/1.1 on.example /path");
    assert!(
        sni.lock()
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
    let backend = h2c_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let g = serve(
        dir.path(),
        &[
            service_yaml("h2c", 80, None, &[backend]),
            ingress("h2c", "h2c.example", "h2c", &[(PROTOCOL, "H2C")], None),
        ],
    )
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
    assert_eq!(resp.text().await.unwrap(), "HTTP/2.0 h2c.example /hello");
}

/// A GatewayClass, a Gateway with a plain HTTP listener, and `routes` (YAML documents).
fn gateway_yaml() -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: gantry }\nspec: { controllerName: gantry.dev/gateway-controller }\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: gw, namespace: default }\nspec:\n  gatewayClassName: gantry\n  listeners: [{ name: http, protocol: HTTP, port: 80 }]\n".to_string()
}

#[tokio::test]
async fn a_grpc_route_routes_by_method_to_h2c_and_to_a_verified_tls_backend() {
    let (plain, _r1) = grpc_backend(None).await;
    let backend_ca = new_ca("backend ca");
    let (backend_cert, backend_key) = issue(&backend_ca, &["grpc.internal"]);
    let (tls, _r2) = grpc_backend(Some((&backend_cert, &backend_key))).await;
    let indented_ca: String = backend_ca.pem().lines().map(|l| format!("    {l}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let g = serve(
        dir.path(),
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
