//! One topology, three renderings. A [`Topology`] says what every proxy must do in a scenario (its
//! listeners, routes, TLS policy, upstream endpoints); [`nginx`], [`haproxy`] and [`gantry`] turn it
//! into files, and [`backend`] renders the shared backend. All pure: topology in, `(file, text)` out,
//! so the equivalence of the three configurations can be read and tested in one place.
//!
//! Churn scenarios change the topology (`churn_hosts`, `Endpoint::active`) and render again; the
//! runner writes only the files whose text changed and pokes the proxy (nginx HUP, HAProxy reload or
//! runtime API, Gantry nothing: it watches its directory).

pub mod backend;
pub mod gantry;
pub mod gantry_gateway;
pub mod haproxy;
pub mod nginx;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The host every single-host scenario uses. `localhost` resolves to 127.0.0.1 without touching
/// /etc/hosts, and wrk sends the URL's host as TLS SNI, so the certificate and the Ingress use it.
pub const MAIN_HOST: &str = "localhost";

/// Host and path of the second service of the soak test, the WebSocket echo server
/// ([`Topology::ws_route`]).
pub const WS_HOST: &str = "ws.localhost";
pub const WS_PATH: &str = "/ws";

/// Body size of the large download and upload scenarios.
pub const LARGE_BODY: usize = 1 << 20;

/// Upper bound for client connections each proxy must accept. `ulimit -n` is capped at 20,000 here
/// (root cannot raise it) and HAProxy reserves two descriptors per connection (client and server
/// side) and refuses to start when `2 * maxconn` does not fit, so 9,900 is the most it can take.
pub const MAX_CLIENT_CONNS: usize = 9_900;

/// Connections the idle-connections scenario holds (fits [`MAX_CLIENT_CONNS`] with room to spare).
pub const IDLE_CONNS: usize = 9_000;

/// Routing table of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routes {
    /// `localhost` → backend, path `/` (Prefix).
    Single,
    /// `localhost` plus `h{0..hosts}.example`, each with Prefix paths `/p{0..paths}/`.
    Many { hosts: usize, paths: usize },
}

/// One upstream endpoint (a "pod").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// In the endpoint list right now (endpoint churn rotates this).
    pub active: bool,
}

/// The certificate every proxy serves: ECDSA P-256, SAN `localhost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// cert + key in one file (HAProxy's `crt`).
    pub combined: PathBuf,
}

/// What every proxy must do in one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// nginx `worker_processes`, HAProxy `nbthread`, `GANTRY_WORKER_THREADS`.
    pub workers: usize,
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// Gantry's admin listener (readiness).
    pub admin: SocketAddr,
    /// Session cache and tickets on (true) or both off (false, for full-handshake counts).
    pub tls_resumption: bool,
    /// Idle upstream connections nginx keeps per worker (64; 1024 for HTTP/2 clients).
    pub upstream_keepalive: usize,
    pub routes: Routes,
    /// Extra hosts routed to the backend; route churn rewrites this list 20 times a second.
    pub churn_hosts: Vec<String>,
    /// WebSocket upgrade on `/` (the backend is the echo server).
    pub websocket: bool,
    /// The main route carries the policy mix of [`POLICY_MIX`]: a regex path with a rewrite, CORS
    /// for one origin, an allow-list and a per-client rate limit far above the load.
    pub policy_mix: bool,
    pub endpoints: Vec<Endpoint>,
    /// A second service next to the backend: the WebSocket echo server at this address, routed
    /// from [`WS_HOST`] path [`WS_PATH`]. Used by the soak test, which runs Gantry alone: only the
    /// Gantry rendering has it (nginx and HAProxy ignore it).
    pub ws_route: Option<SocketAddr>,
    pub cert: CertFiles,
    /// True when the runner runs as root (nginx then runs its workers as root too, so they can
    /// read and write the run directory).
    pub as_root: bool,
}

impl Topology {
    pub fn active_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.active)
    }
}

/// A generated file: path relative to the proxy's run directory, and its text.
pub type File = (String, String);

/// Quotes a path for nginx and HAProxy configs (both accept double quotes).
pub(crate) fn q(p: &Path) -> String {
    format!(
        "\"{}\"",
        p.display().to_string().replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// The policy mix, as both proxies must apply it.
pub mod policy_mix {
    /// The only origin CORS allows; the load sends it on every request.
    pub const ORIGIN: &str = "https://app.example";
    /// The allow-list (the load comes from loopback).
    pub const ALLOW: &str = "127.0.0.0/8";
    /// Requests per second per client: far above what one machine can send, so nothing is refused
    /// and the cost measured is the check itself.
    pub const RPS: u32 = 1_000_000;
    /// A regex path whose capture is sent upstream unchanged (`/$1`).
    pub const PATH: &str = "/(.*)";
}

/// Host names of the many-routes table.
pub fn many_host(i: usize) -> String {
    format!("h{i}.example")
}

/// Hosts of route churn step `step`: a sliding window of 10, so every step adds one route and
/// removes one.
pub fn churn_hosts(step: u64) -> Vec<String> {
    (step..step + 10).map(|i| format!("churn-{i}.example")).collect()
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn topology() -> Topology {
        Topology {
            workers: 1,
            http: "127.0.0.1:18080".parse().unwrap(),
            https: "127.0.0.1:18443".parse().unwrap(),
            admin: "127.0.0.1:18090".parse().unwrap(),
            tls_resumption: true,
            upstream_keepalive: 64,
            routes: Routes::Single,
            churn_hosts: Vec::new(),
            websocket: false,
            policy_mix: false,
            endpoints: vec![Endpoint {
                addr: "127.0.0.1:19000".parse().unwrap(),
                active: true,
            }],
            ws_route: None,
            cert: CertFiles {
                cert: "/run/lt/cert.pem".into(),
                key: "/run/lt/key.pem".into(),
                combined: "/run/lt/combined.pem".into(),
            },
            as_root: true,
        }
    }

    pub fn file<'a>(files: &'a [File], name: &str) -> &'a str {
        &files
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no file {name}"))
            .1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_windows_slide_by_one_host() {
        let a = churn_hosts(5);
        let b = churn_hosts(6);
        assert_eq!(a.len(), 10);
        assert_eq!(a[0], "churn-5.example");
        assert_eq!(&a[1..], &b[..9]);
        assert_eq!(b[9], "churn-15.example");
    }

    #[test]
    fn quoting_keeps_paths_with_spaces_in_one_token() {
        assert_eq!(q(Path::new("/a b/c\"d")), "\"/a b/c\\\"d\"");
    }
}
