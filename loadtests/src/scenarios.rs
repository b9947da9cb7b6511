//! The scenario catalog: names (as they appear in the report), what each measures, and the plan the
//! runner follows (load generator and its parameters, routes, TLS policy, backend, churn).

use std::time::Duration;

use crate::config::{Routes, IDLE_CONNS, LARGE_BODY};
use crate::loadgen::WrkScript;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScenarioId {
    Http1Keepalive,
    Http1TlsKeepalive,
    TlsHandshakeFull,
    TlsHandshakeResumed,
    H2Tls,
    LargeDownload,
    LargeUpload,
    ManyRoutes,
    RouteChurn,
    EndpointChurn,
    IdleConnections,
    Websocket,
    PolicyMix,
}

/// How a scenario loads the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Load {
    /// wrk, HTTP/1.1 keep-alive, `conns` connections.
    Wrk {
        conns: usize,
        tls: bool,
        path: &'static str,
        script: WrkScript,
    },
    /// h2load over TLS: `clients` connections × `streams` concurrent streams.
    H2load { clients: usize, streams: usize },
    /// oha over TLS, a new connection (full or resumed handshake) per request.
    Oha { conns: usize },
    /// `conns` keep-alive connections opened, one request each, then held idle.
    Idle { conns: usize },
    /// `conns` WebSocket connections, each echoing one message at a time.
    Ws { conns: usize },
}

/// What the routing table or endpoint list does during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Churn {
    /// One route added and one removed every `every` (Gantry: rewrite a manifest; nginx: rewrite
    /// and `HUP`; HAProxy: rewrite the map and reload through the master CLI).
    Routes { every: Duration },
    /// The active endpoint set (2 of 3) rotates every `every` (Gantry: rewrite the EndpointSlice;
    /// nginx: rewrite and `HUP`; HAProxy: runtime API `set server … state`).
    Endpoints { every: Duration },
}

/// The headline throughput unit of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// requests per second
    Rps,
    /// megabytes (10^6) per second of response bodies (download) or request bodies (upload)
    MBps { upload: bool },
    /// WebSocket messages echoed per second
    MsgsPerSec,
    /// no throughput: memory per idle connection is the headline
    KibPerConn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    /// nginx, one worker, on `endpoints` loopback addresses (127.0.0.1, .2, .3) sharing one port.
    Nginx { endpoints: usize },
    /// The WebSocket echo server of this crate.
    WsEcho,
}

/// Everything the runner needs to run one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub load: Load,
    pub tls_resumption: bool,
    pub upstream_keepalive: usize,
    pub routes: Routes,
    pub backend: BackendKind,
    pub churn: Option<Churn>,
    pub unit: Unit,
    /// Start every proxy afresh before each round (memory measurements: a proxy's allocator keeps
    /// what the previous round freed, so a second round in the same process would measure ~0).
    pub fresh_proxy_each_round: bool,
    /// The main route carries the policy mix (`config::policy_mix`).
    pub policy_mix: bool,
    /// Shown under the scenario's table.
    pub notes: Vec<String>,
}

impl ScenarioId {
    pub const ALL: [ScenarioId; 13] = [
        ScenarioId::Http1Keepalive,
        ScenarioId::Http1TlsKeepalive,
        ScenarioId::TlsHandshakeFull,
        ScenarioId::TlsHandshakeResumed,
        ScenarioId::H2Tls,
        ScenarioId::LargeDownload,
        ScenarioId::LargeUpload,
        ScenarioId::ManyRoutes,
        ScenarioId::RouteChurn,
        ScenarioId::EndpointChurn,
        ScenarioId::IdleConnections,
        ScenarioId::Websocket,
        ScenarioId::PolicyMix,
    ];

    /// `--quick`: the core data-path numbers plus one churn scenario.
    pub const QUICK: [ScenarioId; 5] = [
        ScenarioId::Http1Keepalive,
        ScenarioId::Http1TlsKeepalive,
        ScenarioId::H2Tls,
        ScenarioId::TlsHandshakeFull,
        ScenarioId::RouteChurn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ScenarioId::Http1Keepalive => "http1-keepalive",
            ScenarioId::Http1TlsKeepalive => "http1-tls-keepalive",
            ScenarioId::TlsHandshakeFull => "tls-handshake-full",
            ScenarioId::TlsHandshakeResumed => "tls-handshake-resumed",
            ScenarioId::H2Tls => "h2-tls",
            ScenarioId::LargeDownload => "large-download-1mib",
            ScenarioId::LargeUpload => "large-upload-1mib",
            ScenarioId::ManyRoutes => "many-routes",
            ScenarioId::RouteChurn => "route-churn",
            ScenarioId::EndpointChurn => "endpoint-churn",
            ScenarioId::IdleConnections => "idle-connections",
            ScenarioId::Websocket => "websocket",
            ScenarioId::PolicyMix => "policy-mix",
        }
    }

    pub fn from_name(name: &str) -> Option<ScenarioId> {
        Self::ALL.into_iter().find(|s| s.name() == name.trim())
    }

    pub fn describe(self) -> &'static str {
        match self {
            ScenarioId::Http1Keepalive => "HTTP/1.1 keep-alive, wrk 64 connections, 3-byte response",
            ScenarioId::Http1TlsKeepalive => "HTTP/1.1 over TLS keep-alive, wrk 64 connections",
            ScenarioId::TlsHandshakeFull => {
                "new TLS connection per request, full handshakes (resumption off), oha 32 connections"
            }
            ScenarioId::TlsHandshakeResumed => {
                "new TLS connection per request, resumed handshakes (cache/tickets on), oha 32 connections"
            }
            ScenarioId::H2Tls => "HTTP/2 over TLS, h2load 16 connections x 32 streams",
            ScenarioId::LargeDownload => "1 MiB responses, wrk 16 connections, MB/s",
            ScenarioId::LargeUpload => "1 MiB request bodies, wrk 16 connections, MB/s",
            ScenarioId::ManyRoutes => {
                "10,000 hosts x 10 paths, requests spread over hosts (wrk, rotating Host), 64 connections"
            }
            ScenarioId::RouteChurn => "http1-keepalive while a route is added and one removed 20 times/s",
            ScenarioId::EndpointChurn => "http1-keepalive while the endpoint list (2 of 3) rotates 5 times/s",
            ScenarioId::IdleConnections => "9,000 idle keep-alive connections: memory per connection",
            ScenarioId::Websocket => "1,000 WebSocket connections echoing one message at a time, messages/s",
            ScenarioId::PolicyMix => {
                "http1-keepalive through a regex path with a rewrite, CORS, an allow-list and a rate limit (Gantry and nginx)"
            }
        }
    }

    /// The plan of this scenario (the same in quick and full runs; only rounds and duration change).
    pub fn plan(self) -> Plan {
        let wrk = |conns, tls, path, script| Load::Wrk {
            conns,
            tls,
            path,
            script,
        };
        let base = Plan {
            load: wrk(64, false, "/", WrkScript::Plain),
            tls_resumption: true,
            upstream_keepalive: 64,
            routes: Routes::Single,
            backend: BackendKind::Nginx { endpoints: 1 },
            churn: None,
            unit: Unit::Rps,
            fresh_proxy_each_round: false,
            policy_mix: false,
            notes: Vec::new(),
        };
        match self {
            ScenarioId::Http1Keepalive => base,
            ScenarioId::Http1TlsKeepalive => Plan { load: wrk(64, true, "/", WrkScript::Plain), ..base },
            ScenarioId::TlsHandshakeFull => Plan {
                load: Load::Oha { conns: 32 },
                tls_resumption: false,
                notes: vec![
                    "Resumption is off on nginx (ssl_session_cache off, ssl_session_tickets off) and HAProxy \
                     (tune.ssl.cachesize 0, no-tls-tickets), and on Gantry \
                     (--tls-session-resumption=false)."
                        .into(),
                ],
                ..base
            },
            ScenarioId::TlsHandshakeResumed => Plan {
                load: Load::Oha { conns: 32 },
                notes: vec![
                    "Session cache and tickets on (nginx shared:SSL:10m + tickets, HAProxy defaults, \
                     Gantry defaults); oha resumes sessions on reconnect (checked once against nginx with \
                     $ssl_session_reused: 39 of 40 new connections resumed)."
                        .into(),
                ],
                ..base
            },
            ScenarioId::H2Tls => Plan {
                load: Load::H2load { clients: 16, streams: 32 },
                upstream_keepalive: 1024,
                notes: vec!["nginx upstream keepalive 1024 (64 makes it open ~15k upstream connections/s).".into()],
                ..base
            },
            ScenarioId::LargeDownload => Plan {
                load: wrk(16, false, crate::config::backend::DOWNLOAD_PATH, WrkScript::Plain),
                unit: Unit::MBps { upload: false },
                ..base
            },
            ScenarioId::LargeUpload => Plan {
                load: wrk(16, false, crate::config::backend::UPLOAD_PATH, WrkScript::Upload { size: LARGE_BODY }),
                unit: Unit::MBps { upload: true },
                notes: vec!["Request bodies are streamed by every proxy (nginx proxy_request_buffering off).".into()],
                ..base
            },
            ScenarioId::ManyRoutes => Plan {
                load: wrk(64, false, "/", WrkScript::RotateHosts { hosts: 10_000, paths: 10 }),
                routes: Routes::Many { hosts: 10_000, paths: 10 },
                notes: vec![
                    "Gantry: 10,000 Ingresses (one per host, 10 Prefix paths each); nginx: one server block \
                     per host with 10 prefix locations; HAProxy: one map file keyed host/first-segment \
                     (exact-match tree). wrk's Lua request rotation costs client CPU on every request."
                        .into(),
                ],
                ..base
            },
            ScenarioId::RouteChurn => Plan {
                churn: Some(Churn::Routes { every: Duration::from_millis(50) }),
                notes: vec![
                    "Every 50 ms one host is added and one removed (a window of 10 extra hosts). Gantry: \
                     the Ingress manifest is rewritten (no reload); nginx: config rewritten + HUP \
                     (nginx -s reload); HAProxy: map rewritten + reload through the master CLI, one at a \
                     time (HAProxy 2.6 drops a reload requested during another), so it may apply fewer \
                     changes than the others: see the change counts."
                        .into(),
                ],
                ..base
            },
            ScenarioId::EndpointChurn => Plan {
                backend: BackendKind::Nginx { endpoints: 3 },
                churn: Some(Churn::Endpoints { every: Duration::from_millis(200) }),
                notes: vec![
                    "Three endpoints (127.0.0.1-3, same port); every 200 ms one leaves the list and another \
                     comes back, all stay up. Gantry: EndpointSlice rewritten; nginx: config rewritten + \
                     HUP (open-source nginx cannot change upstreams otherwise); HAProxy: runtime API \
                     set server state (no reload)."
                        .into(),
                ],
                ..base
            },
            ScenarioId::IdleConnections => Plan {
                load: Load::Idle { conns: IDLE_CONNS },
                unit: Unit::KibPerConn,
                fresh_proxy_each_round: true,
                notes: vec![
                    "9,000, not 10,000: ulimit -n is capped at 20,000 here and HAProxy needs two descriptors \
                     per connection (its maxconn is 9,900). Each connection sends one request, reads \
                     the response and stays open. Memory per connection = (RSS with connections - RSS before) / connections (nginx allocates its \
                     connection table for worker_connections at start, so part of its cost is in the \
                     baseline); latency columns are those first requests while connections ramp up."
                        .into(),
                ],
                ..base
            },
            ScenarioId::PolicyMix => Plan {
                load: wrk(64, false, "/", WrkScript::Origin(crate::config::policy_mix::ORIGIN)),
                policy_mix: true,
                notes: vec![
                    "Gantry: annotations use-regex, rewrite-target /$1 on path /(.*), enable-cors with one \
                     allowed origin, whitelist-source-range 127.0.0.0/8, limit-rps 1000000; nginx: what \
                     ingress-nginx generates for them (a ~* location, rewrite ... break, the CORS ifs and \
                     add_header, allow/deny, limit_req with burst and nodelay). Every request carries the \
                     allowed Origin. HAProxy is not part of this one. Compare with http1-keepalive of the \
                     same run."
                        .into(),
                ],
                ..base
            },
            ScenarioId::Websocket => Plan {
                load: Load::Ws { conns: 1000 },
                backend: BackendKind::WsEcho,
                unit: Unit::MsgsPerSec,
                notes: vec![
                    "Backend: the WebSocket echo server of the loadtests crate (tokio-tungstenite), on the \
                     load CPU. Latency = message round trip."
                        .into(),
                ],
                ..base
            },
        }
    }
}

/// The scenarios to run: `names` if given (validated), else all or the quick set.
pub fn select(names: &[String], quick: bool) -> Result<Vec<ScenarioId>, String> {
    if names.is_empty() {
        return Ok(if quick {
            ScenarioId::QUICK.to_vec()
        } else {
            ScenarioId::ALL.to_vec()
        });
    }
    let mut out = Vec::new();
    for n in names.iter().filter(|n| !n.trim().is_empty()) {
        let id = ScenarioId::from_name(n).ok_or_else(|| {
            let all: Vec<&str> = ScenarioId::ALL.iter().map(|s| s.name()).collect();
            format!("unknown scenario {n:?}; known: {}", all.join(", "))
        })?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut names: Vec<&str> = ScenarioId::ALL.iter().map(|s| s.name()).collect();
        for s in ScenarioId::ALL {
            assert_eq!(ScenarioId::from_name(s.name()), Some(s));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ScenarioId::ALL.len());
    }

    #[test]
    fn selection_defaults_to_all_or_quick_and_rejects_unknown_names() {
        assert_eq!(select(&[], false).unwrap().len(), 13);
        assert_eq!(select(&[], true).unwrap(), ScenarioId::QUICK.to_vec());
        let picked = select(
            &["h2-tls".into(), "http1-keepalive".into(), "h2-tls".into()],
            false,
        )
        .unwrap();
        assert_eq!(picked, [ScenarioId::H2Tls, ScenarioId::Http1Keepalive]);
        assert!(select(&["nope".into()], false)
            .unwrap_err()
            .contains("http1-keepalive"));
    }

    #[test]
    fn full_handshakes_turn_resumption_off_and_h2_gets_a_big_upstream_pool() {
        assert!(!ScenarioId::TlsHandshakeFull.plan().tls_resumption);
        assert!(ScenarioId::TlsHandshakeResumed.plan().tls_resumption);
        assert_eq!(ScenarioId::H2Tls.plan().upstream_keepalive, 1024);
        assert_eq!(ScenarioId::Http1Keepalive.plan().upstream_keepalive, 64);
        assert!(matches!(
            ScenarioId::EndpointChurn.plan().backend,
            BackendKind::Nginx { endpoints: 3 }
        ));
    }
}
