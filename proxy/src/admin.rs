//! The admin listener: health, readiness, metrics, the route dump, and the status page.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};

use prometheus_client::registry::Registry;

pub use crate::status_page::{RouteDump, RouteEntry};
use crate::{
    metrics,
    routes::{HostMatch, PathMatch},
    snapshot::{Snapshot, SnapshotHandle},
    status_page,
};

/// A section the embedding program adds to `/debug/routes` (the controller adds its
/// diagnostics): a name and a function that renders it as JSON when asked.
pub type DebugSection = (&'static str, Arc<dyn Fn() -> serde_json::Value + Send + Sync>);

/// What the admin endpoints read.
pub struct Admin {
    pub snapshots: SnapshotHandle,
    pub readiness: Arc<Readiness>,
    pub registry: Arc<Registry>,
    pub sections: Vec<DebugSection>,
    /// The data plane's metrics, for the status page's request counts.
    pub metrics: metrics::Metrics,
    /// Samples of the request counters, for the status page's recent error rates.
    pub window: status_page::ErrorWindow,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// Whether traffic should be sent here: true once the first snapshot serves, false again from the
/// start of shutdown.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    shutting_down: AtomicBool,
}

impl Readiness {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }
}

/// Serves the admin endpoints until `shutdown` turns true. The admin listener keeps answering
/// while traffic drains (so `/readyz` can say 503); it stops with the process.
pub async fn serve_admin(admin: Arc<Admin>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let mut sample = tokio::time::interval(status_page::SAMPLE_EVERY);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stream = tokio::select! {
            _ = crate::shutdown_requested(&mut shutdown) => return,
            _ = sample.tick() => {
                admin.window.sample(&admin.metrics.route_index);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = admin_response(&admin, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn admin_response(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let readiness = &admin.readiness;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/" => status_page(admin),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if readiness.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => {
            let mut r = text(StatusCode::OK, metrics::encode(&admin.registry));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/debug/explain" => explain(admin, req.uri().query().unwrap_or("")),
        "/debug/routes" => {
            let mut dump =
                serde_json::to_value(RouteDump::from(&*admin.snapshots.load())).unwrap_or_default();
            if let Some(map) = dump.as_object_mut() {
                for (name, section) in &admin.sections {
                    map.insert((*name).to_string(), section());
                }
            }
            let body = serde_json::to_vec_pretty(&dump).unwrap_or_default();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The status page. Its policy allows only the page's own inline style and script, requests to
/// the admin port itself (the explain form), and no framing.
fn status_page(admin: &Admin) -> Response<Full<Bytes>> {
    let diagnostics = admin
        .sections
        .iter()
        .find(|(name, _)| *name == "diagnostics")
        .map(|(_, section)| section());
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let inputs = status_page::PageInputs {
        ready: admin.readiness.is_ready(),
        index: &admin.metrics.route_index,
        window: &admin.window,
        diagnostics,
        unix_now,
    };
    let page = status_page::render(&admin.snapshots.load(), &inputs);
    let mut r = Response::new(Full::new(Bytes::from(page)));
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `/debug/explain?url=http://host/path` (or `?host=..&path=..`): which route serves that URL and
/// why each other rule of the host did not. `method=POST` and `header=name:value` (repeated) give
/// the request's method and headers, for routes with conditions; by default a `GET` without
/// headers.
fn explain(admin: &Admin, query: &str) -> Response<Full<Bytes>> {
    // An empty value is no value: the status page's form sends every field, filled or not.
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name && !v.is_empty()).then(|| percent_decode(v))
        })
    };
    let url = match (param("url"), param("host")) {
        (Some(url), _) => url,
        (None, Some(host)) => format!("http://{host}{}", param("path").unwrap_or_else(|| "/".into())),
        (None, None) => {
            return text(
                StatusCode::BAD_REQUEST,
                "give ?url=http://host/path or ?host=..&path=..\n",
            )
        }
    };
    let method = match param("method").map(|m| http::Method::from_bytes(m.as_bytes())) {
        None => http::Method::GET,
        Some(Ok(m)) => m,
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "invalid method\n"),
    };
    let mut headers = http::HeaderMap::new();
    for kv in query.split('&') {
        let Some(("header", v)) = kv.split_once('=').filter(|(_, v)| !v.is_empty()) else {
            continue;
        };
        let v = percent_decode(v);
        let parsed = v.split_once(':').and_then(|(n, v)| {
            let name = http::HeaderName::from_bytes(n.trim().as_bytes()).ok()?;
            let value = http::HeaderValue::from_str(v.trim()).ok()?;
            Some((name, value))
        });
        match parsed {
            Some((name, value)) => {
                headers.append(name, value);
            }
            None => return text(StatusCode::BAD_REQUEST, "give header=name:value\n"),
        }
    }
    let address = match param("address").map(|a| a.parse::<std::net::IpAddr>()) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "invalid address\n"),
    };
    match explain_request_at(&admin.snapshots.load(), &url, &method, &headers, address) {
        Ok(body) => {
            let mut r = text(StatusCode::OK, format!("{body:#}\n"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

/// Why `url` (`http://host/path`, or `host/path`) goes where it goes in `snapshot`: the host entry,
/// the route with its policies, and every other rule of the host with the reason it lost. The host
/// and path are normalized as a request's are. For `/debug/explain` and `gantry explain`.
pub fn explain_url(snapshot: &Snapshot, url: &str) -> Result<serde_json::Value, String> {
    explain_request(snapshot, url, &http::Method::GET, &http::HeaderMap::new())
}

/// [`explain_url`] for a request with this method and these headers (the query is the URL's, and
/// an `https://` URL stands for a request over TLS), as routes with conditions judge them.
pub fn explain_request(
    snapshot: &Snapshot,
    url: &str,
    method: &http::Method,
    headers: &http::HeaderMap,
) -> Result<serde_json::Value, String> {
    explain_request_at(snapshot, url, method, headers, None)
}

/// [`explain_request`] for a connection to local address `address` (a Gateway's own address);
/// `None` is the shared table.
pub fn explain_request_at(
    snapshot: &Snapshot,
    url: &str,
    method: &http::Method,
    headers: &http::HeaderMap,
    address: Option<std::net::IpAddr>,
) -> Result<serde_json::Value, String> {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|_| format!("{url:?} is not a valid URL"))?;
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    let host = crate::normalize::normalize_host(host).map_err(|_| "invalid host".to_string())?;
    let path = crate::normalize::normalize_path(uri.path()).map_err(|e| format!("invalid path: {e}"))?;
    let facts = crate::policy::RequestFacts {
        method,
        headers,
        query: uri.query(),
        tls: uri.scheme_str() == Some("https"),
    };
    let table = match address {
        Some(a) => snapshot.routes_for(a.to_canonical()),
        None => &snapshot.routes,
    };
    let e = table.explain(&host, &path, &facts);
    let describe = |host: Option<&HostMatch>, r: &crate::Route| {
        serde_json::json!({
            "host": host.map(|h| h.to_string()),
            "path": path_text(&r.path).0,
            "pathType": path_text(&r.path).1,
            "ingress": format!("{}/{}", r.source.namespace, r.source.name),
            "source": r.source.to_string(),
            "conditions": r.conditions.as_ref().map(|c| c.describe()),
            "backend": r.backend.id.to_string(),
            "endpoints": r.backend.endpoints.len(),
            "policies": r.policies.describe(),
        })
    };
    Ok(serde_json::json!({
        "host": &*host,
        "path": &*path,
        "matchedHost": e.host_entry.as_ref().map(|h| h.to_string()),
        "route": e.chosen.as_deref().map(|r| describe(if e.by_default { None } else { e.host_entry.as_ref() }, r)),
        "defaultBackend": e.by_default,
        "answer": match (&e.chosen, e.by_default) {
            (None, _) => "404: no rule of the host matches and there is no default backend".to_owned(),
            (Some(_), true) => "the default backend: no rule of the host matches".to_owned(),
            (Some(_), false) => "the route above".to_owned(),
        },
        "notChosen": e.not_chosen.iter().map(|n| {
            let mut v = describe(Some(&n.host), &n.route);
            v["why"] = serde_json::Value::String(n.why.clone());
            v
        }).collect::<Vec<_>>(),
    }))
}

fn path_text(p: &PathMatch) -> (&str, &'static str) {
    match p {
        PathMatch::Exact(p) => (p, "Exact"),
        PathMatch::Prefix(p) => (p, "Prefix"),
        PathMatch::Regex(p) => (p, "Regex"),
        PathMatch::FullRegex(p) => (p, "RegularExpression"),
    }
}

/// `%XX` and `+` in a query parameter.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        policy::{RequestConditions, ValueMatch},
        Backend, BackendId, HostMatch, Route, RouteSource, RouteTableBuilder,
    };

    fn route(name: &str, conditions: Option<RequestConditions>) -> Route {
        let id = BackendId {
            namespace: "gw".into(),
            service: name.into(),
            port: "80".into(),
        };
        Route {
            path: PathMatch::Prefix("/".into()),
            conditions: conditions.map(Arc::new),
            backend: Arc::new(Backend::new(id, vec![])),
            source: RouteSource {
                kind: crate::SourceKind::HttpRoute,
                namespace: "gw".into(),
                name: name.into(),
            },
            policies: Default::default(),
        }
    }

    #[test]
    fn explain_judges_conditions_on_the_given_method_and_headers() {
        let v2 = RequestConditions {
            headers: vec![(
                http::HeaderName::from_static("version"),
                ValueMatch::Exact("two".into()),
            )],
            ..RequestConditions::default()
        };
        let mut b = RouteTableBuilder::new();
        let host = || HostMatch::Exact("a.test".into());
        b.add(host(), route("plain", None)).unwrap();
        b.add(host(), route("v2", Some(v2))).unwrap();
        let snapshot = Snapshot {
            routes: b.build(),
            address_routes: Vec::new(),
            ..Snapshot::default()
        };
        let plain = explain_url(&snapshot, "a.test/x").unwrap();
        assert_eq!(plain["route"]["source"], "HTTPRoute gw/plain");
        let why = plain["notChosen"][0]["why"].as_str().unwrap();
        assert!(why.contains("header version=two"), "{why}");
        let mut headers = http::HeaderMap::new();
        headers.insert("version", http::HeaderValue::from_static("two"));
        let v2 = explain_request(&snapshot, "a.test/x", &http::Method::GET, &headers).unwrap();
        assert_eq!(v2["route"]["source"], "HTTPRoute gw/v2");
        assert_eq!(v2["route"]["conditions"], "header version=two");
    }
}
