//! Client certificate authentication (ingress-nginx's `auth-tls-*`), end to end: the real `gantry`
//! binary on a folder of manifests, certificates made by rcgen (a CA, a client certificate it
//! signed, one signed by another CA), real TLS clients (reqwest with a client identity, and
//! tokio-rustls where the test must see whether the server asked for a certificate at all).
//!
//! Expected answers are ingress-nginx's, from `test/e2e/annotations/authtls.go`: 400 without a
//! certificate or with one of another CA, 200 with the CA's, `ssl-client-*` headers upstream, 302
//! to `auth-tls-error-page`, 403 for a `auth-tls-match-cn` that does not match.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use gantry_testkit::{
    gantry,
    objects::*,
    tls::{new_ca, Ca},
    *,
};
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        ResolvesClientCert,
    },
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    sign::CertifiedKey,
    DigitallySignedStruct, SignatureScheme,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client certificate: PEM certificate, PEM key.
struct ClientCert {
    cert_pem: String,
    key_pem: String,
}

impl ClientCert {
    fn new(issuer: &Ca, cn: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Gantry Tests");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert_pem, self.key_pem).as_bytes()).unwrap()
    }
}

/// An Ingress for one host, `/` to Service `web`, listed in `spec.tls` with the Secret `tls`.
fn tls_ingress(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n"
    );
    if !annotations.is_empty() {
        s += "  annotations:\n";
        for (k, v) in annotations {
            s += &format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n");
        }
    }
    s += &format!(
        "spec:\n  ingressClassName: gantry\n  tls:\n  - hosts: [\"{host}\"]\n    secretName: tls\n  rules:\n  - host: \"{host}\"\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {{ name: web, port: {{ number: 80 }} }}\n"
    );
    s
}

const HOSTS: &[&str] = &[
    "secure.example",
    "optional.example",
    "noca.example",
    "pass.example",
    "cn.example",
    "errpage.example",
    "open.example",
    "missing.example",
    "other.example",
];

/// The certificates, and Gantry serving one host per behaviour.
struct Setup {
    good: ClientCert,
    wrong: ClientCert,
    g: Gantry,
    _backend: Echo,
}

async fn setup() -> Setup {
    let (root, other) = (new_ca("Gantry Test CA"), new_ca("Another CA"));
    let good = ClientCert::new(&root, "authtls");
    let wrong = ClientCert::new(&other, "authtls");
    let backend = Echo::start("web").await;
    let ca_secret = [("auth-tls-secret", "default/ca-secret")];
    let manifests = [
        service_yaml("web", 80, None, &[backend.addr]),
        tls_secret_yaml("tls", HOSTS),
        secret_yaml("ca-secret", "Opaque", &[("ca.crt", &root.pem())]),
        secret_yaml("other-ca-secret", "Opaque", &[("ca.crt", &other.pem())]),
        tls_ingress(
            "other",
            "other.example",
            &[("auth-tls-secret", "default/other-ca-secret")],
        ),
        tls_ingress("secure", "secure.example", &ca_secret),
        tls_ingress(
            "optional",
            "optional.example",
            &[
                ("auth-tls-secret", "default/ca-secret"),
                ("auth-tls-verify-client", "optional"),
            ],
        ),
        tls_ingress(
            "noca",
            "noca.example",
            &[
                ("auth-tls-secret", "default/ca-secret"),
                ("auth-tls-verify-client", "optional_no_ca"),
            ],
        ),
        tls_ingress(
            "pass",
            "pass.example",
            &[
                ("auth-tls-secret", "default/ca-secret"),
                ("auth-tls-pass-certificate-to-upstream", "true"),
            ],
        ),
        tls_ingress(
            "cn",
            "cn.example",
            &[
                ("auth-tls-secret", "default/ca-secret"),
                ("auth-tls-verify-client", "on"),
                ("auth-tls-match-cn", "CN=notgonnamatch"),
            ],
        ),
        tls_ingress(
            "errpage",
            "errpage.example",
            &[
                ("auth-tls-secret", "default/ca-secret"),
                ("auth-tls-error-page", "http://errors.example/error"),
            ],
        ),
        tls_ingress("open", "open.example", &[]),
        tls_ingress(
            "missing",
            "missing.example",
            &[("auth-tls-secret", "default/no-such-secret")],
        ),
    ];
    let g = gantry!().yaml(&manifests).start().await;
    g.wait_routes("every host routed", |r| {
        let text = r.to_string();
        HOSTS.iter().all(|h| text.contains(h))
    })
    .await;
    Setup {
        good,
        wrong,
        g,
        _backend: backend,
    }
}

/// A reqwest client for `host` on Gantry's HTTPS port, with a client certificate or without.
fn client(host: &str, addr: SocketAddr, cert: Option<&ClientCert>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .resolve(host, addr)
        .timeout(Duration::from_secs(10))
        .http1_only();
    if let Some(cert) = cert {
        b = b.identity(cert.identity());
    }
    b.build().unwrap()
}

async fn get(s: &Setup, host: &str, cert: Option<&ClientCert>) -> reqwest::Response {
    client(host, s.g.https, cert)
        .get(format!("https://{host}/"))
        .send()
        .await
        .unwrap()
}

async fn headers_seen(resp: reqwest::Response) -> serde_json::Value {
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    v["headers"].clone()
}

#[tokio::test]
async fn verify_client_on_optional_and_optional_no_ca_answer_as_ingress_nginx() {
    let s = setup().await;

    // on: the CA's certificate reaches the backend, with nginx's headers.
    let h = headers_seen(get(&s, "secure.example", Some(&s.good)).await).await;
    assert_eq!(h["ssl-client-verify"], "SUCCESS");
    assert_eq!(h["ssl-client-subject-dn"], "CN=authtls,O=Gantry Tests");
    assert_eq!(h["ssl-client-issuer-dn"], "CN=Gantry Test CA");
    assert!(h.get("ssl-client-cert").is_none(), "only with pass-certificate");
    // Without a certificate, or with another CA's: 400, and the backend is not reached.
    assert_eq!(get(&s, "secure.example", None).await.status(), 400);
    assert_eq!(get(&s, "secure.example", Some(&s.wrong)).await.status(), 400);
    // The same over HTTP/2 (ALPN h2): the verdict belongs to the connection, not the protocol.
    for (cert, want) in [(Some(&s.good), 200), (None, 400)] {
        let mut b = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .resolve("secure.example", s.g.https)
            .timeout(Duration::from_secs(10))
            .http2_prior_knowledge();
        if let Some(cert) = cert {
            b = b.identity(cert.identity());
        }
        let r = b
            .build()
            .unwrap()
            .get("https://secure.example/")
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), want);
    }

    // optional: no certificate passes (NONE); another CA's is still refused, as nginx does.
    let h = headers_seen(get(&s, "optional.example", None).await).await;
    assert_eq!(h["ssl-client-verify"], "NONE");
    assert!(h.get("ssl-client-subject-dn").is_none());
    assert_eq!(get(&s, "optional.example", Some(&s.wrong)).await.status(), 400);
    let h = headers_seen(get(&s, "optional.example", Some(&s.good)).await).await;
    assert_eq!(h["ssl-client-verify"], "SUCCESS");

    // optional_no_ca: another CA's certificate passes and is reported.
    let h = headers_seen(get(&s, "noca.example", Some(&s.wrong)).await).await;
    assert_eq!(
        h["ssl-client-verify"],
        "FAILED:unable to get local issuer certificate"
    );
    assert_eq!(h["ssl-client-issuer-dn"], "CN=Another CA");

    // A client cannot forge the headers on a protected host.
    let resp = client("optional.example", s.g.https, None)
        .get("https://optional.example/")
        .header("ssl-client-verify", "SUCCESS")
        .header("ssl-client-subject-dn", "CN=admin")
        .send()
        .await
        .unwrap();
    let h = headers_seen(resp).await;
    assert_eq!(h["ssl-client-verify"], "NONE");
    assert!(h.get("ssl-client-subject-dn").is_none());
}

#[tokio::test]
async fn pass_certificate_match_cn_error_page_and_a_missing_ca_secret() {
    let s = setup().await;

    // pass-certificate-to-upstream: the URL-escaped PEM, as the e2e test checks.
    let h = headers_seen(get(&s, "pass.example", Some(&s.good)).await).await;
    let pem = h["ssl-client-cert"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
    let decoded = percent_decode(pem);
    assert_eq!(decoded.trim(), s.good.cert_pem.replace("\r\n", "\n").trim());
    assert_eq!(get(&s, "pass.example", None).await.status(), 400);

    // match-cn that does not match: 403 with a valid certificate.
    assert_eq!(get(&s, "cn.example", Some(&s.good)).await.status(), 403);

    // error page: 302 instead of 400; a good certificate still passes.
    let r = get(&s, "errpage.example", None).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://errors.example/error");
    assert_eq!(get(&s, "errpage.example", Some(&s.good)).await.status(), 200);

    // A missing CA Secret: the Ingress fails closed.
    assert_eq!(get(&s, "missing.example", Some(&s.good)).await.status(), 503);
    assert_eq!(get(&s, "missing.example", None).await.status(), 503);
    let routes = s.g.routes().await.to_string();
    assert!(
        routes.contains("no-such-secret"),
        "the diagnostic names the Secret"
    );

    // Plain HTTP to a protected host is redirected to HTTPS first (ssl-redirect).
    let r = plain_client()
        .get(s.g.url("/"))
        .header("host", "secure.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Accepts any server certificate (the test's are self-signed), checking handshake signatures.
#[derive(Debug)]
struct AnyServerCert;

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(m, c, d, &algs)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(m, c, d, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Presents a client certificate (or none) and records whether the server asked for one.
#[derive(Debug)]
struct Recorder {
    asked: AtomicBool,
    key: Option<Arc<CertifiedKey>>,
}

impl ResolvesClientCert for Recorder {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::SeqCst);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// One HTTP/1.1 request over a fresh TLS connection with this SNI (none when `None`) and Host:
/// the status code, and whether the handshake asked for a client certificate.
async fn raw_request(
    addr: SocketAddr,
    sni: Option<&str>,
    host: &str,
    cert: Option<&ClientCert>,
) -> (u16, bool) {
    let key = cert.map(|c| {
        let chain = vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
        Arc::new(CertifiedKey::new(chain, signer))
    });
    let recorder = Arc::new(Recorder {
        asked: AtomicBool::new(false),
        key,
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert))
        .with_client_cert_resolver(recorder.clone());
    config.enable_sni = sni.is_some();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // Without SNI rustls still needs a name for the verifier; an IP address sends no SNI.
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        // Bounded: the server closes after one response (Connection: close); read at most 1 MiB.
        let mut buf = [0u8; 16 * 1024];
        while resp.len() < 1 << 20 {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => resp.extend_from_slice(&buf[..n]),
            }
        }
        resp
    };
    let resp = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the exchange finishes within 10 s");
    let head = String::from_utf8_lossy(&resp);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (status, recorder.asked.load(Ordering::SeqCst))
}

#[tokio::test]
async fn only_protected_hosts_ask_for_a_certificate_and_sni_cannot_bypass_the_check() {
    let s = setup().await;
    let addr = s.g.https;

    // The protected host asks; the unprotected one on the same listener does not.
    let (status, asked) = raw_request(addr, Some("secure.example"), "secure.example", Some(&s.good)).await;
    assert_eq!((status, asked), (200, true));
    let (status, asked) = raw_request(addr, Some("open.example"), "open.example", None).await;
    assert_eq!(
        (status, asked),
        (200, false),
        "an unprotected host sends no CertificateRequest"
    );
    // A host whose CA Secret is missing asks for nothing either (it answers 503).
    let (status, asked) = raw_request(addr, Some("missing.example"), "missing.example", None).await;
    assert_eq!((status, asked), (503, false));

    // SNI of the unprotected host, Host of the protected one: misdirected, as nginx answers.
    let (status, asked) = raw_request(addr, Some("open.example"), "secure.example", Some(&s.good)).await;
    assert_eq!((status, asked), (421, false));
    // Verified for one protected host, then asking for a host with another CA: misdirected too,
    // even with a certificate that host would accept.
    let (status, _) = raw_request(addr, Some("secure.example"), "other.example", Some(&s.wrong)).await;
    assert_eq!(status, 421);
    let (status, asked) = raw_request(addr, Some("other.example"), "other.example", Some(&s.wrong)).await;
    assert_eq!((status, asked), (200, true));
    // A host with the same CA bundle shares the verification, and applies its own match-cn.
    let (status, _) = raw_request(addr, Some("secure.example"), "cn.example", Some(&s.good)).await;
    assert_eq!(status, 403);
    // No SNI at all: no certificate was requested, so the protected host answers 400.
    let (status, asked) = raw_request(addr, None, "secure.example", Some(&s.good)).await;
    assert_eq!((status, asked), (400, false));
    let (status, _) = raw_request(addr, None, "open.example", None).await;
    assert_eq!(status, 200);
}

/// Client authentication added to a host while a client holds a keep-alive connection to it: that
/// connection's handshake asked for no certificate, so its next request is misdirected (421), never
/// served unchecked; a new connection is asked for the certificate.
#[tokio::test]
async fn a_connection_from_before_the_host_was_protected_is_not_served_unchecked() {
    let root = new_ca("Gantry Test CA");
    let good = ClientCert::new(&root, "authtls");
    let backend = Echo::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let base = [
        service_yaml("web", 80, None, &[backend.addr]),
        tls_secret_yaml("tls", &["late.example"]),
        secret_yaml("ca-secret", "Opaque", &[("ca.crt", &root.pem())]),
    ];
    let write = |annotations: &[(&str, &str)]| {
        let mut all = base.to_vec();
        all.push(tls_ingress("late", "late.example", annotations));
        write_manifest(dir.path(), "all.yaml", &all.join("---\n"));
    };
    write(&[]);
    let g = gantry!().manifests(dir.path()).start().await;
    g.wait_routes("late.example routed", |r| r.to_string().contains("late.example"))
        .await;
    let old = client("late.example", g.https, Some(&good));
    let r = old.get("https://late.example/").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;

    let generation = g.generation().await;
    write(&[("auth-tls-secret", "default/ca-secret")]);
    g.wait_routes("the new snapshot", |r| {
        r["generation"].as_u64().is_some_and(|n| n > generation)
    })
    .await;

    // The kept-alive connection: 421 (reqwest reuses its pooled connection).
    let r = old.get("https://late.example/").send().await.unwrap();
    assert_eq!(r.status(), 421);
    // A new connection is asked for the certificate and passes with it, fails without.
    let h = headers_seen(get_at(g.https, "late.example", Some(&good)).await).await;
    assert_eq!(h["ssl-client-verify"], "SUCCESS");
    assert_eq!(get_at(g.https, "late.example", None).await.status(), 400);
}

async fn get_at(addr: SocketAddr, host: &str, cert: Option<&ClientCert>) -> reqwest::Response {
    client(host, addr, cert)
        .get(format!("https://{host}/"))
        .send()
        .await
        .unwrap()
}
