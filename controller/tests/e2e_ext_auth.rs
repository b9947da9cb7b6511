//! External authentication (`auth-url` and its family), end to end: the real `gantry` binary on
//! a folder of manifests, a real backend, and a real auth service (a hyper server started here)
//! that answers 200, 401, 403 or 500 depending on the request's `Authorization`. Everything is on
//! loopback; every wait is bounded.
//!
//! Expected answers are ingress-nginx's, from its template and `test/e2e/annotations/auth.go`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use gantry_testkit::{gantry, objects::*, *};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

const P: &str = "nginx.ingress.kubernetes.io/";

/// One request the auth service saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body_len: usize,
}

/// The auth service: `Bearer good` → 200 with `X-User: alice` and a cookie; `Bearer cached` →
/// 200 with `X-User: bob` and no cookie (cacheable); `Bearer forbidden` → 403; `Bearer broken`
/// → 500; anything else → 401 with a `WWW-Authenticate` challenge and a cookie.
struct AuthService {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AuthService {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (hits.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, s) = (h.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        answer(s.clone(), req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .http1()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            hits,
            seen,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the auth service saw a request")
    }
}

async fn answer(
    seen: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body_len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(usize::MAX);
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts.headers.clone(),
        body_len,
    });
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut resp = Response::builder();
    resp = match auth {
        "Bearer good" => resp
            .status(StatusCode::OK)
            .header("x-user", "alice")
            .header("set-cookie", "alma=armud"),
        "Bearer cached" => resp.status(StatusCode::OK).header("x-user", "bob"),
        "Bearer forbidden" => resp.status(StatusCode::FORBIDDEN),
        "Bearer broken" => resp.status(StatusCode::INTERNAL_SERVER_ERROR),
        _ => resp
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Bearer realm=\"test\"")
            .header("set-cookie", "tried=1"),
    };
    Ok(resp
        .body(Full::new(Bytes::from_static(b"auth says hi\n")))
        .unwrap())
}

struct Setup {
    gantry: Gantry,
    auth: AuthService,
    backend: Echo,
    _dir: tempfile::TempDir,
    /// Accepts connections and never answers.
    _silent: TcpListener,
}

async fn setup() -> Setup {
    let backend = Echo::start("app").await;
    let auth = AuthService::start().await;
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let verify = auth.url("/verify");
    let ann = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut v = vec![(format!("{P}auth-url"), verify.clone())];
        v.extend(extra.iter().map(|(k, val)| (format!("{P}{k}"), val.clone())));
        v
    };
    let ing = |name: &str, anns: Vec<(String, String)>, rules: &[(&str, &str)], svc: &str| {
        let anns: Vec<(&str, &str)> = anns.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let rules: Vec<(&str, &str, &str, &str, u16)> =
            rules.iter().map(|(h, p)| (*h, *p, "Prefix", svc, 80)).collect();
        ingress_yaml(name, &anns, &rules)
    };
    let manifests = [
        service_yaml("app", 80, None, &[backend.addr]),
        // A Service without endpoints: Gantry answers 503 itself.
        service_yaml("nowhere", 80, None, &[]),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: auth-headers, namespace: default }\ndata:\n  My-Custom-Header: \"42\"\n  X-Client: \"$remote_addr\"\n".to_string(),
        ing(
            "protected",
            ann(&[
                ("auth-response-headers", "X-User, Foo".into()),
                ("auth-proxy-set-headers", "auth-headers".into()),
            ]),
            &[("a.example", "/")],
            "app",
        ),
        ing(
            "signin",
            ann(&[("auth-signin", "http://$host/auth/start".into())]),
            &[("s.example", "/")],
            "app",
        ),
        ing(
            "signin-orig",
            ann(&[
                ("auth-signin", "http://$host/auth/start".into()),
                ("auth-signin-redirect-param", "orig".into()),
            ]),
            &[("o.example", "/")],
            "app",
        ),
        ing(
            "cached",
            ann(&[
                ("auth-cache-key", "$http_authorization".into()),
                ("auth-cache-duration", "200 202 30m".into()),
            ]),
            &[("c.example", "/foo"), ("c.example", "/bar")],
            "app",
        ),
        ing(
            "down",
            vec![(format!("{P}auth-url"), format!("http://{closed}/verify"))],
            &[("d.example", "/")],
            "app",
        ),
        ing(
            "silent",
            vec![
                (format!("{P}auth-url"), format!("http://{}/verify", silent.local_addr().unwrap())),
                (format!("{P}proxy-connect-timeout"), "1".into()),
                (format!("{P}proxy-read-timeout"), "1".into()),
            ],
            &[("t.example", "/")],
            "app",
        ),
        ing(
            "broken",
            vec![(format!("{P}auth-url"), "https://invalid..auth.url".into())],
            &[("b.example", "/")],
            "app",
        ),
        ing("cookie-default", ann(&[]), &[("k.example", "/")], "nowhere"),
        ing(
            "cookie-always",
            ann(&[("auth-always-set-cookie", "true".into())]),
            &[("k2.example", "/")],
            "nowhere",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    write_manifest(dir.path(), "all.yaml", &manifests.join("---\n"));
    let gantry = gantry!().manifests(dir.path()).start().await;
    Setup {
        gantry,
        auth,
        backend,
        _dir: dir,
        _silent: silent,
    }
}

async fn send(g: &Gantry, host: &str, path: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut req = plain_client().get(g.url(path)).header("host", host);
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.send().await.unwrap()
}

fn backend_hits(s: &Setup) -> usize {
    s.backend.hits.load(Ordering::SeqCst)
}

#[tokio::test]
async fn the_auth_service_decides_and_its_headers_reach_the_backend() {
    let s = setup().await;
    let g = &s.gantry;

    // 2xx: through, with the listed headers copied (a forged X-User overwritten, Foo removed
    // because the auth service sent none: ingress-nginx's "should overwrite Foo header").
    let resp = plain_client()
        .post(g.url("/some/path?q=1"))
        .header("host", "a.example")
        .header("authorization", "Bearer good")
        .header("x-user", "mallory")
        .header("foo", "bar")
        .body("a request body the auth service never sees")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, ["alma=armud"], "the auth cookie on a 200");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["service"], "app");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["headers"]["x-user"], "alice");
    assert!(body["headers"].get("foo").is_none(), "{body}");

    // What the auth service saw: GET without a body, ingress-nginx's headers.
    let seen = s.auth.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/verify");
    assert_eq!(seen.body_len, 0);
    assert!(!seen.headers.contains_key("content-length") || seen.headers["content-length"] == "0");
    let h = &seen.headers;
    assert_eq!(h["x-original-url"], "http://a.example/some/path?q=1");
    assert_eq!(h["x-original-method"], "POST");
    assert_eq!(h["x-auth-request-redirect"], "/some/path?q=1");
    assert_eq!(h["x-sent-from"], "nginx-ingress-controller");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["host"], "127.0.0.1");
    assert_eq!(h["authorization"], "Bearer good");
    assert_eq!(h["my-custom-header"], "42", "auth-proxy-set-headers");
    assert_eq!(h["x-client"], "127.0.0.1", "a variable in auth-proxy-set-headers");
    assert!(!h.contains_key("x-forwarded-proto"));
    // The auth service and the backend see the same request id.
    assert_eq!(
        h["x-request-id"].to_str().unwrap(),
        body["headers"]["x-request-id"].as_str().unwrap()
    );
    assert_eq!(backend_hits(&s), 1);

    // 401 is passed with the challenge; 403 is passed; anything else is 500. None reaches the
    // backend, and the 401's cookie is not set (nginx's add_header without always).
    let resp = send(g, "a.example", "/", None).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"test\"");
    assert!(resp.headers().get("set-cookie").is_none());
    assert_eq!(send(g, "a.example", "/", Some("nope")).await.status(), 401);
    assert_eq!(send(g, "a.example", "/", Some("forbidden")).await.status(), 403);
    assert_eq!(send(g, "a.example", "/", Some("broken")).await.status(), 500);
    assert_eq!(backend_hits(&s), 1, "denied requests never reach the backend");
}

#[tokio::test]
async fn a_401_redirects_to_the_signin_url_with_the_original_url() {
    let s = setup().await;
    let g = &s.gantry;
    // ingress-nginx's e2e test: Location http://auth/auth/start?rd=http://auth + QueryEscape("/?a=b&c=d").
    let resp = send(g, "s.example", "/?a=b&c=d", None).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "http://s.example/auth/start?rd=http://s.example%2F%3Fa%3Db%26c%3Dd"
    );
    // The auth service's cookie goes with the redirect (ingress-nginx's sign-in location).
    assert_eq!(resp.headers()["set-cookie"], "tried=1");
    let resp = send(g, "o.example", "/?a=b&c=d", None).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "http://o.example/auth/start?orig=http://o.example%2F%3Fa%3Db%26c%3Dd"
    );
    // Signed in: served.
    assert_eq!(send(g, "s.example", "/", Some("good")).await.status(), 200);
    assert_eq!(backend_hits(&s), 1);
}

#[tokio::test]
async fn an_unreachable_or_silent_auth_service_answers_500_and_never_forwards() {
    let s = setup().await;
    let g = &s.gantry;
    assert_eq!(send(g, "d.example", "/", Some("good")).await.status(), 500);
    // A service that never answers: the route's connect (1 s) plus read (1 s) timeout bounds it.
    let start = Instant::now();
    assert_eq!(send(g, "t.example", "/", Some("good")).await.status(), 500);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(backend_hits(&s), 0);
}

#[tokio::test]
async fn cached_results_spare_the_subrequest_per_location() {
    let s = setup().await;
    let g = &s.gantry;
    assert_eq!(send(g, "c.example", "/foo", Some("cached")).await.status(), 200);
    assert_eq!(s.auth.hits(), 1);
    let resp = send(g, "c.example", "/foo/x", Some("cached")).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["service"], "app");
    assert_eq!(s.auth.hits(), 1, "the second request was answered from the cache");
    // Another key, another location: asked again (ingress-nginx's "should deny login for
    // different location on same server").
    assert_eq!(send(g, "c.example", "/foo", Some("good")).await.status(), 200);
    assert_eq!(
        s.auth.hits(),
        2,
        "an answer with Set-Cookie is asked for, and not cached"
    );
    assert_eq!(send(g, "c.example", "/bar", Some("cached")).await.status(), 200);
    assert_eq!(s.auth.hits(), 3);
    // 401 is not in "200 202 30m": never cached.
    assert_eq!(send(g, "c.example", "/foo", None).await.status(), 401);
    assert_eq!(send(g, "c.example", "/foo", None).await.status(), 401);
    assert_eq!(s.auth.hits(), 5);
    assert_eq!(send(g, "c.example", "/foo", Some("good")).await.status(), 200);
    assert_eq!(s.auth.hits(), 6);
    assert_eq!(backend_hits(&s), 5);
}

#[tokio::test]
async fn a_broken_auth_url_fails_closed_and_cookies_follow_always_set_cookie() {
    let s = setup().await;
    let g = &s.gantry;
    assert_eq!(send(g, "b.example", "/", Some("good")).await.status(), 503);
    assert_eq!(s.auth.hits(), 0);
    let routes = g.routes().await.to_string();
    assert!(routes.contains("could not parse auth-url"), "{routes}");

    // The backend has no endpoint: Gantry's own 503. The auth cookie is set on it only with
    // auth-always-set-cookie (ingress-nginx's "user with annotated ingress retains cookie").
    let resp = send(g, "k.example", "/", Some("good")).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("set-cookie").is_none());
    let resp = send(g, "k2.example", "/", Some("good")).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["set-cookie"], "alma=armud");
    assert_eq!(backend_hits(&s), 0);
}
