//! External authentication at run time: the subrequest to the auth service on hyper-util's
//! pooled client (HTTP/1.1, HTTPS through rustls), within a deadline, and the bounded cache of
//! auth results. The policy itself, and what each answer means, is
//! [`crate::policy::ext_auth`].
//!
//! One [`ExtAuthRuntime`] serves the whole data plane, beside the pipeline (like the rate
//! limiters): its pools and cache are keyed by values, so they survive snapshot swaps. Only
//! routes with external authentication ever touch it.

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Version};
use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use lru::LruCache;

use crate::policy::ext_auth::{Decision, ExternalAuth, Keepalive, Vars, Verdict};

/// Auth results kept at most (all routes together). nginx's `auth_cache` zone of 10 MB holds
/// about 80,000 keys; a result here is a few hundred bytes.
const CACHE_ENTRIES: usize = 10_000;
/// Bytes of an auth response body read (and dropped) so that its connection can be reused; a
/// longer body closes the connection instead.
const MAX_DRAIN: usize = 64 * 1024;

/// Header bytes of one cached result at most: the cache's memory stays bounded by
/// `CACHE_ENTRIES` times this; a larger answer is used but not cached.
const MAX_CACHED_BYTES: usize = 16 * 1024;

type AuthClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The clients (one per keep-alive setting, each with its pool) and the result cache.
pub struct ExtAuthRuntime {
    clients: Mutex<HashMap<Keepalive, AuthClient>>,
    cache: Mutex<LruCache<[u8; 32], Cached>>,
    /// TLS to HTTPS auth services: the Mozilla roots, verified against the URL's host. `None`
    /// if it could not be built (rustls with ring always can): every auth subrequest then
    /// answers 500, never forwarded.
    tls: Option<rustls::ClientConfig>,
}

impl std::fmt::Debug for ExtAuthRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtAuthRuntime").finish_non_exhaustive()
    }
}

impl Default for ExtAuthRuntime {
    fn default() -> Self {
        Self::new()
    }
}

/// A cached auth result (never one with cookies: such answers are not cached).
#[derive(Clone, Debug)]
struct Cached {
    decision: Decision,
    expires: Instant,
}

impl ExtAuthRuntime {
    pub fn new() -> Self {
        Self::with_roots(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
    }

    /// With these trust anchors for HTTPS auth services instead of the Mozilla roots (tests).
    pub(crate) fn with_roots(roots: rustls::RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => Some(b.with_root_certificates(roots).with_no_client_auth()),
            Err(e) => {
                tracing::error!(error = %e, "no TLS for external authentication: HTTPS auth URLs answer 500");
                None
            }
        };
        Self {
            clients: Mutex::new(HashMap::new()),
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            )),
            tls,
        }
    }

    /// The client with this keep-alive setting (its pool), made on first use; `None` without
    /// TLS (see `tls`).
    fn client(&self, keepalive: Keepalive) -> Option<AuthClient> {
        let tls = self.tls.as_ref()?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let client = clients.entry(keepalive).or_insert_with(|| {
            let mut http = HttpConnector::new();
            // The connector takes https:// too: rustls wraps it.
            http.enforce_http(false);
            http.set_nodelay(true);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(keepalive.idle_timeout)
                .pool_max_idle_per_host(keepalive.max_idle)
                .build(connector)
        });
        Some(client.clone())
    }

    /// Asks the auth service about the request `vars` (on the route whose path is `location`),
    /// or answers from the cache. Never waits longer than `deadline`: a timeout, like an
    /// unreachable service, is [`Decision::Error`].
    pub async fn check(
        &self,
        auth: &ExternalAuth,
        vars: &Vars<'_>,
        location: &str,
        request_id: &HeaderValue,
        deadline: Duration,
    ) -> Verdict {
        self.check_traced(auth, vars, location, request_id, deadline, None)
            .await
    }

    /// [`Self::check`] for a sampled request: the subrequest carries the trace context, with
    /// `span` (the external auth span) as the parent.
    pub async fn check_traced(
        &self,
        auth: &ExternalAuth,
        vars: &Vars<'_>,
        location: &str,
        request_id: &HeaderValue,
        deadline: Duration,
        trace: Option<(&crate::trace::RequestTrace, &crate::trace::ChildSpan)>,
    ) -> Verdict {
        let key = auth.cache_key(vars, location);
        if let Some(decision) = key.as_ref().and_then(|k| self.cached(k)) {
            return Verdict {
                decision,
                cookies: Vec::new(),
            };
        }
        let error = Verdict {
            decision: Decision::Error,
            cookies: Vec::new(),
        };
        let Some((uri, host)) = auth.url.render(vars) else {
            tracing::debug!("external auth: the auth URL is not valid for this request");
            return error;
        };
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.method_mut() = auth.method();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = auth.subrequest_headers(vars, request_id, host);
        if let Some((trace, span)) = trace {
            trace.inject(span, req.headers_mut());
        }
        let Some(client) = self.client(auth.keepalive) else {
            return error;
        };
        let exchange = async move {
            let resp = client.request(req).await?;
            let (parts, mut body) = resp.into_parts();
            // Read the body so that the connection can go back to the pool; a long one is cut.
            let mut read = 0usize;
            while read <= MAX_DRAIN {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                    Some(Err(_)) | None => break,
                }
            }
            Ok::<_, hyper_util::client::legacy::Error>(parts)
        };
        let parts = match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, source = ?std::error::Error::source(&e), "external auth: subrequest failed");
                return error;
            }
            Err(_) => {
                tracing::debug!(?deadline, "external auth: subrequest timed out");
                return error;
            }
        };
        let verdict = auth.verdict(parts.status, &parts.headers);
        let ttl = auth
            .cache_ttl(parts.status, &parts.headers)
            .filter(|_| verdict.decision.size() <= MAX_CACHED_BYTES);
        if let (Some(key), Some(ttl)) = (key, ttl) {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.put(
                key,
                Cached {
                    decision: verdict.decision.clone(),
                    expires: Instant::now() + ttl,
                },
            );
        }
        verdict
    }

    /// A live cached result.
    fn cached(&self, key: &[u8; 32]) -> Option<Decision> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(key) {
            Some(c) if c.expires > Instant::now() => Some(c.decision.clone()),
            Some(_) => {
                cache.pop(key);
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ext_auth::{AuthCache, AuthUrl, Template};
    use http::{HeaderMap, Method};

    fn auth(url: &str) -> ExternalAuth {
        ExternalAuth {
            url: AuthUrl::parse(url).unwrap(),
            method: None,
            signin: None,
            response_headers: vec![],
            request_redirect: None,
            proxy_set_headers: vec![],
            cache: None,
            keepalive: Keepalive::default(),
            always_set_cookie: false,
        }
    }

    fn vars<'a>(h: &'a HeaderMap, hh: &'a HeaderValue) -> Vars<'a> {
        static GET: Method = Method::GET;
        Vars {
            headers: h,
            method: &GET,
            request_uri: "/",
            host: "app.example",
            http_host: hh,
            path: "/",
            tls: false,
            client: "127.0.0.1".parse().unwrap(),
            via_trusted_proxy: false,
        }
    }

    #[tokio::test]
    async fn an_unreachable_service_or_a_silent_one_is_an_error_within_the_deadline() {
        let rt = ExtAuthRuntime::new();
        let (h, hh) = (HeaderMap::new(), HeaderValue::from_static("app.example"));
        let id = HeaderValue::from_static("id");
        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let a = auth(&format!("http://127.0.0.1:{port}/auth"));
        let v = rt
            .check(&a, &vars(&h, &hh), "/", &id, Duration::from_secs(5))
            .await;
        assert_eq!(v.decision, Decision::Error);
        // A service that accepts and never answers: the deadline decides.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = auth(&format!("http://{}/auth", silent.local_addr().unwrap()));
        let start = Instant::now();
        let v = rt
            .check(&a, &vars(&h, &hh), "/", &id, Duration::from_millis(300))
            .await;
        assert_eq!(v.decision, Decision::Error);
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    /// An HTTPS auth service on 127.0.0.1 with a certificate for `localhost`, answering `status`
    /// to every request; returns its port.
    async fn https_service(status: u16) -> (u16, rustls::pki_types::CertificateDer<'static>) {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![der.clone()], key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            // At most a few connections per test; each answers one request and closes.
            for _ in 0..8 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let resp =
                        format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, der)
    }

    #[tokio::test]
    async fn https_auth_services_must_present_a_trusted_certificate() {
        let (h, hh) = (HeaderMap::new(), HeaderValue::from_static("app.example"));
        let id = HeaderValue::from_static("id");
        let deadline = Duration::from_secs(5);
        let (port, cert) = https_service(200).await;
        let a = auth(&format!("https://localhost:{port}/auth"));
        // Trusted: allowed.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let trusting = ExtAuthRuntime::with_roots(roots);
        let v = trusting.check(&a, &vars(&h, &hh), "/", &id, deadline).await;
        assert_eq!(v.decision, Decision::Allow(vec![]));
        // The Mozilla roots do not know a self-signed certificate: 500, never forwarded.
        let v = ExtAuthRuntime::new()
            .check(&a, &vars(&h, &hh), "/", &id, deadline)
            .await;
        assert_eq!(v.decision, Decision::Error);
        // The certificate is for localhost, not 127.0.0.1.
        let a = auth(&format!("https://127.0.0.1:{port}/auth"));
        let v = trusting.check(&a, &vars(&h, &hh), "/", &id, deadline).await;
        assert_eq!(v.decision, Decision::Error);
    }

    #[tokio::test]
    async fn cached_results_answer_without_a_subrequest_until_they_expire() {
        let rt = ExtAuthRuntime::new();
        let (h, hh) = (HeaderMap::new(), HeaderValue::from_static("app.example"));
        let mut a = auth("http://127.0.0.1:1/auth");
        a.cache = Some(AuthCache {
            key: Template::parse("fixed").unwrap(),
            rules: AuthCache::parse_rules("200 5m").unwrap(),
        });
        let key = a.cache_key(&vars(&h, &hh), "/").unwrap();
        rt.cache.lock().unwrap().put(
            key,
            Cached {
                decision: Decision::Allow(vec![]),
                expires: Instant::now() + Duration::from_secs(60),
            },
        );
        let id = HeaderValue::from_static("id");
        // Port 1 refuses connections: only the cache can allow this.
        let v = rt
            .check(&a, &vars(&h, &hh), "/", &id, Duration::from_secs(5))
            .await;
        assert_eq!(v.decision, Decision::Allow(vec![]));
        // Another location has its own keyspace.
        let v = rt
            .check(&a, &vars(&h, &hh), "/other", &id, Duration::from_secs(5))
            .await;
        assert_eq!(v.decision, Decision::Error);
        // Expired: asked again (and refused).
        rt.cache.lock().unwrap().put(
            key,
            Cached {
                decision: Decision::Allow(vec![]),
                expires: Instant::now(),
            },
        );
        let v = rt
            .check(&a, &vars(&h, &hh), "/", &id, Duration::from_secs(5))
            .await;
        assert_eq!(v.decision, Decision::Error);
    }
}
