//! Processor 6: the Gateway API (`gateway.networking.k8s.io`, standard channel of v1.6) → routes in
//! the same table as the Ingresses, plus the status Gantry should write on each object.
//!
//! - **GatewayClasses** whose `controllerName` is Gantry's are accepted (their `parametersRef`, if
//!   any, must name an existing cluster-scoped `gantry.dev` ProxyConfig, else `InvalidParameters`).
//! - **Gateways** of an accepted class: each listener is judged on its own (protocol, port, TLS
//!   certificates, allowed route kinds, conflicts with its siblings) and reported with the spec's
//!   reasons. Gantry serves every Gateway of its classes on its own two listeners: an `HTTP`
//!   listener must use the port clients reach Gantry's plain listener on
//!   ([`GatewayOptions::http_port`], 80 by default), an `HTTPS` one the TLS port
//!   ([`GatewayOptions::https_port`]); any other port is `PortUnavailable`.
//! - **HTTPRoutes**, oldest first (then namespace and name, the spec's tie-break), attach to the
//!   listeners their `parentRefs` select when the listener allows the route's kind and namespace and
//!   the hostnames intersect. Each match of each rule becomes one [`Route`] per hostname, with its
//!   method, header and query conditions and the listener kind (plain or TLS) as
//!   [`RequestConditions`]; filters become the same typed [`Policies`] the ingress-nginx
//!   annotations compile to.
//!
//! **One table, Ingress first.** The Ingress processors run before this one, so where an Ingress
//! and an HTTPRoute claim the very same host, path and conditions, the Ingress keeps it and the
//! HTTPRoute gets a `RouteConflict` diagnostic (an Event). This keeps a migration safe: adding an
//! HTTPRoute never silently takes traffic from an Ingress that serves it today. An HTTPRoute match
//! with headers, query parameters or a method is more specific than an Ingress path and takes the
//! requests it matches, as the Gateway API's precedence says.
//!
//! **Hostnames.** A wildcard listener `hostname` or route `hostnames` entry, `*.example.com`, is a
//! suffix match as the Gateway API says: it matches `a.example.com` and `a.b.example.com`, never
//! `example.com` ([`HostMatch::WildcardAnyDepth`]; an Ingress's `*.example.com` matches one label,
//! as Ingress v1 says). A route serves on a listener the intersection of their hostnames
//! ([`intersect`]).
//!
//! Differences from the specification, stated where they apply:
//! - Every Gateway of Gantry's classes shares Gantry's listeners: two Gateways whose routes claim
//!   the same host and path share one table, and the older route keeps the claim.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use gantry_proxy::{
    policy::{
        Cors, CorsMode, CorsOrigin, HeaderModifier, Mirror, PathModifier, RedirectScheme, RequestConditions,
        RequestRedirect, UpstreamTls, UrlRewrite, ValueMatch, WeightedBackends,
    },
    Backend, BackendId, HostMatch, PathMatch, Policies, Route, RouteError, RouteSource, SourceKind, TlsCert,
};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Serialize;

use super::{
    backends::resolve_service_port,
    hosts::{host_spelling, parse_host},
    tls, Build, Problem,
};
use crate::{
    diagnostic::{ObjectKind, ObjectRef},
    gateway::api::{
        gateways::{GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From_},
        httproutes::{
            HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFilters, HttpRouteRulesFiltersType,
            HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType,
            HttpRouteRulesMatchesQueryParamsType,
        },
        Gateway, GrpcRoute, HttpRoute,
    },
    store::ObjectKey,
};

/// The API group of every Gateway API kind.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// How Gantry takes part in the Gateway API. Fixed for the life of the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayOptions {
    /// The `spec.controllerName` of GatewayClasses that are Gantry's.
    pub controller_name: String,
    /// The port clients reach Gantry's plain HTTP listener on (the Service port): the port an
    /// `HTTP` listener must use.
    pub http_port: u16,
    /// The port clients reach Gantry's TLS listener on: the port an `HTTPS` listener must use.
    pub https_port: u16,
    /// `--gateway-address-pool`: every Gateway gets an address of its own from it.
    pub address_pool: Option<ipnet::IpNet>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            controller_name: "gantry.dev/gateway-controller".into(),
            http_port: 80,
            https_port: 443,
            address_pool: None,
        }
    }
}

/// One status condition as Gantry means it; the status writer adds `lastTransitionTime` and
/// `observedGeneration`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// What Gantry should write in one object's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GatewayApiStatus {
    pub classes: Vec<ClassStatus>,
    pub gateways: Vec<GatewayStatus>,
    pub routes: Vec<RouteStatus>,
    pub policies: Vec<PolicyStatus>,
}

/// A BackendTLSPolicy's status: one entry per Gateway of ours whose accepted routes send traffic
/// to a Service the policy targets (its "ancestors"), each with the same conditions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyStatus {
    pub key: ObjectKey,
    pub generation: i64,
    pub ancestors: Vec<ObjectKey>,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassStatus {
    pub name: String,
    pub generation: i64,
    pub conditions: Vec<Condition>,
    /// `status.supportedFeatures`: [`SUPPORTED_FEATURES`] for an accepted class, else none.
    pub supported_features: Vec<&'static str>,
}

/// The Gateway API features Gantry implements, as the conformance suite names them
/// (`sigs.k8s.io/gateway-api/pkg/features`), in the alphabetical order the spec asks for. Published
/// in the `status.supportedFeatures` of every accepted GatewayClass; the conformance suite runs
/// the tests of exactly these (conformance/README.md has the report). A feature is listed only
/// when its conformance tests pass on the rig.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "BackendTLSPolicy",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "Gateway",
    "GatewayHTTPListenerIsolation",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayStatus {
    pub key: ObjectKey,
    pub generation: i64,
    /// The Gateway's own addresses (`--gateway-address-pool`); `None`: Gantry's published ones.
    pub addresses: Option<Vec<IpAddr>>,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub attached_routes: i32,
    /// Route kinds (group `gateway.networking.k8s.io`) the listener takes.
    pub supported_kinds: Vec<&'static str>,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    pub kind: &'static str,
    pub key: ObjectKey,
    pub generation: i64,
    /// One per `parentRef` that names a Gateway of Gantry's classes.
    pub parents: Vec<ParentStatus>,
}

/// A `parentRef` as written, with the conditions for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ParentStatus {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<i32>,
    pub conditions: Vec<Condition>,
}

/// A listener protocol Gantry serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http,
    Https,
}

/// One listener of one of our Gateways, as judged.
struct Listener {
    name: String,
    port: i32,
    /// `None` when the protocol is not one Gantry serves.
    protocol: Option<Protocol>,
    hostname: HostMatch,
    from: From_,
    /// `matchLabels` of a `Selector` (`matchExpressions` are refused by `valid`).
    selector: BTreeMap<String, String>,
    kinds: Vec<&'static str>,
    /// Routes may attach (the listener is accepted: a protocol Gantry serves, no conflict). They
    /// count in `attachedRoutes` even when the listener cannot be served (a missing certificate),
    /// as the spec says attachment depends only on `allowedRoutes` and the `parentRefs`.
    attachable: bool,
    /// The listener is served (attachable, its references resolved, the Gateway has an address).
    valid: bool,
    attached: i32,
    conditions: Vec<Condition>,
}

struct OurGateway {
    key: ObjectKey,
    generation: i64,
    /// Its own addresses (`--gateway-address-pool`), or `None`: Gantry's shared listeners.
    addresses: Option<Vec<IpAddr>>,
    listeners: Vec<Listener>,
    conditions: Vec<Condition>,
}

/// The processor: reads every Gateway API object of the store, adds the routes to the table, and
/// returns the status to write.
pub(super) fn gateway_api(b: &mut Build<'_>) -> GatewayApiStatus {
    let Some(opts) = b.opts.gateway.clone() else {
        return GatewayApiStatus::default();
    };
    let mut out = GatewayApiStatus::default();
    let classes = classes(b, &opts, &mut out);
    let mut gateways: BTreeMap<ObjectKey, OurGateway> = BTreeMap::new();
    let mut ordered: Vec<(&ObjectKey, &Gateway)> = b
        .store
        .gateways()
        .iter()
        .filter(|(_, g)| classes.contains(&g.spec.gateway_class_name))
        .collect();
    ordered.sort_by(|a, b| age(&a.1.metadata, a.0).cmp(&age(&b.1.metadata, b.0)));
    // Addresses of the pool held or given: first those in the Gateways' status, so that an
    // address stays with its Gateway when an older one appears.
    let mut taken = held_addresses(&opts, &ordered);
    for (key, gw) in ordered {
        let g = judge_gateway(b, &opts, key, gw, &mut taken);
        // Listener isolation in a Gateway's own table: each listener hostname is a host entry
        // even without routes, so its hosts never reach a broader listener's routes.
        for address in g.addresses.iter().flatten() {
            for l in g
                .listeners
                .iter()
                .filter(|l| l.valid && l.hostname != HostMatch::Any)
            {
                b.routes_at(Some(*address)).reserve_host(l.hostname.clone());
            }
        }
        gateways.insert(key.clone(), g);
    }

    let mut routes: Vec<(&ObjectKey, &HttpRoute)> = b.store.http_routes().iter().collect();
    routes.sort_by(|a, b| age(&a.1.metadata, a.0).cmp(&age(&b.1.metadata, b.0)));
    for (key, route) in routes {
        if let Some(status) = http_route(b, &mut gateways, key, route, SourceKind::HttpRoute) {
            out.routes.push(status);
        }
    }
    let mut grpc: Vec<(&ObjectKey, &GrpcRoute)> = b.store.grpc_routes().iter().collect();
    grpc.sort_by(|a, b| age(&a.1.metadata, a.0).cmp(&age(&b.1.metadata, b.0)));
    for (key, route) in grpc {
        match grpc_as_http(route) {
            Ok(route) => {
                if let Some(status) = http_route(b, &mut gateways, key, &route, SourceKind::GrpcRoute) {
                    out.routes.push(status);
                }
            }
            Err(why) => b.report(
                &ObjectRef::of(ObjectKind::GrpcRoute, key, &route.metadata),
                Problem::GatewayApi {
                    reason: "UnsupportedValue",
                    message: why,
                },
            ),
        }
    }

    out.policies = backend_tls_policy_status(b, &out.routes);

    for g in gateways.into_values() {
        out.gateways.push(GatewayStatus {
            key: g.key,
            generation: g.generation,
            addresses: g.addresses,
            conditions: g.conditions,
            listeners: g
                .listeners
                .into_iter()
                .map(|l| ListenerStatus {
                    name: l.name,
                    attached_routes: l.attached,
                    supported_kinds: l.kinds,
                    conditions: l.conditions,
                })
                .collect(),
        });
    }
    out
}

/// Creation time, then namespace and name: the Gateway API's order of precedence between objects.
fn age<'a>(meta: &'a ObjectMeta, key: &'a ObjectKey) -> (Option<&'a Time>, &'a ObjectKey) {
    (meta.creation_timestamp.as_ref(), key)
}

/// Our GatewayClasses: every one with Gantry's controller name gets a status; the accepted ones
/// are returned by name.
fn classes(b: &mut Build<'_>, opts: &GatewayOptions, out: &mut GatewayApiStatus) -> BTreeSet<String> {
    let mut accepted = BTreeSet::new();
    for (key, class) in b.store.gateway_classes() {
        if class.spec.controller_name != opts.controller_name {
            continue;
        }
        let condition = match &class.spec.parameters_ref {
            None => Condition::new(
                "Accepted",
                true,
                "Accepted",
                "Gantry serves the Gateways of this class",
            ),
            Some(p) if p.group == crate::crd::GROUP && p.kind == crate::crd::KIND => {
                if b.store.proxy_config(&p.name).is_some() {
                    Condition::new(
                        "Accepted",
                        true,
                        "Accepted",
                        format!(
                            "Gantry serves the Gateways of this class; parameters: ProxyConfig {}",
                            p.name
                        ),
                    )
                } else {
                    Condition::new(
                        "Accepted",
                        false,
                        "InvalidParameters",
                        format!("parametersRef names ProxyConfig {}, which does not exist", p.name),
                    )
                }
            }
            Some(p) => Condition::new(
                "Accepted",
                false,
                "InvalidParameters",
                format!(
                    "parametersRef {}/{} {} is not supported: only {} ProxyConfig",
                    p.group,
                    p.kind,
                    p.name,
                    crate::crd::GROUP
                ),
            ),
        };
        if condition.status {
            accepted.insert(key.name.clone());
        } else {
            b.report(
                &ObjectRef::of(ObjectKind::GatewayClass, key, &class.metadata),
                Problem::GatewayApi {
                    reason: condition.reason,
                    message: condition.message.clone(),
                },
            );
        }
        out.classes.push(ClassStatus {
            name: key.name.clone(),
            generation: class.metadata.generation.unwrap_or_default(),
            supported_features: if condition.status {
                SUPPORTED_FEATURES.to_vec()
            } else {
                Vec::new()
            },
            conditions: vec![condition],
        });
    }
    accepted
}

fn judge_gateway(
    b: &mut Build<'_>,
    opts: &GatewayOptions,
    key: &ObjectKey,
    gw: &Gateway,
    taken: &mut BTreeMap<IpAddr, ObjectKey>,
) -> OurGateway {
    let label = ObjectRef::of(ObjectKind::Gateway, key, &gw.metadata);
    let mut listeners: Vec<Listener> = gw
        .spec
        .listeners
        .iter()
        .map(|l| judge_listener(b, opts, key, &label, l))
        .collect();
    conflicts(&mut listeners);
    for l in &mut listeners {
        let accepted = l.conditions.iter().all(|c| c.type_ != "Accepted" || c.status)
            && l.conditions.iter().all(|c| c.type_ != "Conflicted" || !c.status);
        let resolved = l.conditions.iter().all(|c| c.type_ != "ResolvedRefs" || c.status);
        l.attachable = accepted && l.protocol.is_some();
        l.valid = l.attachable && resolved;
        l.conditions.push(if l.valid {
            Condition::new("Programmed", true, "Programmed", "served on Gantry's listener")
        } else {
            Condition::new(
                "Programmed",
                false,
                "Invalid",
                "the listener is not valid; see its other conditions",
            )
        });
    }
    let valid = listeners.iter().filter(|l| l.valid).count();
    let mut conditions = Vec::new();
    let addresses = assign_addresses(opts, key, gw, taken);
    let own = match &addresses {
        Addresses::Unsupported(why) => {
            conditions.push(Condition::new(
                "Accepted",
                false,
                "UnsupportedAddress",
                why.clone(),
            ));
            conditions.push(Condition::new(
                "Programmed",
                false,
                "AddressNotAssigned",
                why.clone(),
            ));
            for l in &mut listeners {
                l.valid = false;
                l.attachable = false;
            }
            None
        }
        Addresses::NotUsable(why) | Addresses::NotAssigned(why) => {
            let reason = match addresses {
                Addresses::NotUsable(_) => "AddressNotUsable",
                _ => "AddressNotAssigned",
            };
            conditions.push(if valid > 0 {
                Condition::new("Accepted", true, "Accepted", "the Gateway is valid")
            } else {
                Condition::new("Accepted", false, "ListenersNotValid", "no listener is valid")
            });
            conditions.push(Condition::new("Programmed", false, reason, why.clone()));
            // Routes still attach (and count); nothing is served without an address.
            for l in &mut listeners {
                l.valid = false;
            }
            None
        }
        Addresses::Shared => None,
        Addresses::Own(a) => Some(a.clone()),
    };
    if !conditions.is_empty() {
        // The addresses decided.
    } else if valid == listeners.len() {
        conditions.push(Condition::new(
            "Accepted",
            true,
            "Accepted",
            "every listener is valid",
        ));
        conditions.push(Condition::new(
            "Programmed",
            true,
            "Programmed",
            "served by Gantry",
        ));
    } else if valid > 0 {
        conditions.push(Condition::new(
            "Accepted",
            true,
            "ListenersNotValid",
            format!(
                "{} of {} listeners are not valid",
                listeners.len() - valid,
                listeners.len()
            ),
        ));
        conditions.push(Condition::new(
            "Programmed",
            true,
            "Programmed",
            "the valid listeners are served by Gantry",
        ));
    } else {
        conditions.push(Condition::new(
            "Accepted",
            false,
            "ListenersNotValid",
            "no listener is valid",
        ));
        conditions.push(Condition::new(
            "Programmed",
            false,
            "Invalid",
            "no listener is valid",
        ));
    }
    for c in conditions.iter().filter(|c| !c.status) {
        b.report(
            &label,
            Problem::GatewayApi {
                reason: c.reason,
                message: c.message.clone(),
            },
        );
    }
    OurGateway {
        key: key.clone(),
        generation: gw.metadata.generation.unwrap_or_default(),
        listeners,
        addresses: own,
        conditions,
    }
}

/// What a Gateway's addresses come to.
enum Addresses {
    /// No pool and no `spec.addresses`: Gantry's shared listeners and published addresses.
    Shared,
    /// Its own, from the pool.
    Own(Vec<IpAddr>),
    /// `spec.addresses` that Gantry cannot honour at all (a type other than `IPAddress`, or any
    /// address without a pool): `Accepted=False/UnsupportedAddress`.
    Unsupported(String),
    /// A requested address outside the pool, or held by an older Gateway:
    /// `Programmed=False/AddressNotUsable`.
    NotUsable(String),
    /// The pool has no free address: `Programmed=False/AddressNotAssigned`.
    NotAssigned(String),
}

/// The pool addresses in the status of Gateways that ask for none (oldest first, the first holder
/// of an address keeping it): the status is where an assignment is remembered, across restarts
/// and by every replica, since all read the same status.
fn held_addresses(opts: &GatewayOptions, ordered: &[(&ObjectKey, &Gateway)]) -> BTreeMap<IpAddr, ObjectKey> {
    let mut held = BTreeMap::new();
    let Some(pool) = opts.address_pool else {
        return held;
    };
    for (key, gw) in ordered {
        if gw.spec.addresses.as_deref().is_some_and(|a| !a.is_empty()) {
            continue;
        }
        let first = gw
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|a| a.r#type.as_deref().is_none_or(|t| t == "IPAddress"))
            .filter_map(|a| a.value.parse::<IpAddr>().ok())
            .find(|ip| pool.contains(ip) && !held.contains_key(ip));
        if let Some(ip) = first {
            held.insert(ip, (*key).clone());
        }
    }
    held
}

/// The addresses of one Gateway, judged oldest first. With a pool: the requested
/// `spec.addresses` (each must be in the pool and not another Gateway's), else the pool address
/// its status holds (see [`held_addresses`]), else the lowest free one.
fn assign_addresses(
    opts: &GatewayOptions,
    key: &ObjectKey,
    gw: &Gateway,
    taken: &mut BTreeMap<IpAddr, ObjectKey>,
) -> Addresses {
    let requested = gw.spec.addresses.as_deref().unwrap_or_default();
    let Some(pool) = opts.address_pool else {
        if requested.is_empty() {
            return Addresses::Shared;
        }
        return Addresses::Unsupported(
            "spec.addresses needs --gateway-address-pool: without it, Gateways are reached at Gantry's own addresses"
                .into(),
        );
    };
    // `hosts()` leaves out the network and broadcast addresses of an IPv4 pool; so does this.
    let in_pool = |ip: &IpAddr| {
        pool.contains(ip)
            && match pool {
                ipnet::IpNet::V4(n) if n.prefix_len() < 31 => {
                    *ip != IpAddr::V4(n.network()) && *ip != IpAddr::V4(n.broadcast())
                }
                _ => true,
            }
    };
    if !requested.is_empty() {
        let mut wanted = Vec::new();
        for a in requested {
            if a.r#type.as_deref().is_some_and(|t| t != "IPAddress") {
                return Addresses::Unsupported(format!(
                    "address type {:?} is not supported: only IPAddress",
                    a.r#type.as_deref().unwrap_or_default()
                ));
            }
            let value = a.value.as_deref().unwrap_or_default();
            let Ok(ip) = value.parse::<IpAddr>() else {
                // An IPAddress that is not one is invalid input, not an unusable address.
                return Addresses::Unsupported(format!("{value:?} is not an IP address"));
            };
            wanted.push(ip);
        }
        for ip in &wanted {
            if !in_pool(ip) {
                return Addresses::NotUsable(format!("{ip} is not in the address pool {pool}"));
            }
            if let Some(holder) = taken.get(ip).filter(|holder| *holder != key) {
                return Addresses::NotUsable(format!("{ip} is Gateway {holder}'s"));
            }
        }
        for ip in &wanted {
            taken.insert(*ip, key.clone());
        }
        return Addresses::Own(wanted);
    }
    let held = taken
        .iter()
        .find(|(ip, holder)| *holder == key && in_pool(ip))
        .map(|(ip, _)| *ip);
    let chosen = held.or_else(|| pool.hosts().find(|ip| !taken.contains_key(ip)));
    match chosen {
        Some(ip) => {
            taken.insert(ip, key.clone());
            Addresses::Own(vec![ip])
        }
        None => Addresses::NotAssigned(format!("the address pool {pool} has no free address")),
    }
}

fn judge_listener(
    b: &mut Build<'_>,
    opts: &GatewayOptions,
    gw_key: &ObjectKey,
    label: &ObjectRef,
    l: &GatewayListeners,
) -> Listener {
    let mut conditions = Vec::new();
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    let protocol = match l.protocol.as_str() {
        "HTTP" => Some(Protocol::Http),
        "HTTPS" => Some(Protocol::Https),
        _ => None,
    };
    let hostname = match gateway_host(l.hostname.as_deref()) {
        Ok(h) => h,
        Err(why) => {
            problems.push(("UnsupportedValue", format!("hostname {:?} {why}", l.hostname)));
            HostMatch::Any
        }
    };
    let allowed = l.allowed_routes.as_ref();
    let from = allowed
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.clone())
        .unwrap_or(From_::Same);
    let selector_spec = allowed
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.selector.as_ref());
    let selector = selector_spec
        .and_then(|s| s.match_labels.clone())
        .unwrap_or_default();
    if from == From_::Selector
        && selector_spec.is_some_and(|s| s.match_expressions.as_ref().is_some_and(|e| !e.is_empty()))
    {
        problems.push((
            "UnsupportedValue",
            "allowedRoutes.namespaces.selector.matchExpressions is not supported; use matchLabels".into(),
        ));
    }

    // Accepted: protocol and port.
    let expected_port = match protocol {
        Some(Protocol::Http) => Some(opts.http_port),
        Some(Protocol::Https) => Some(opts.https_port),
        None => None,
    };
    match (protocol, expected_port) {
        (None, _) => conditions.push(Condition::new(
            "Accepted",
            false,
            "UnsupportedProtocol",
            format!(
                "protocol {} is not supported: Gantry serves HTTP and HTTPS",
                l.protocol
            ),
        )),
        (Some(_), Some(port)) if i32::from(port) != l.port => conditions.push(Condition::new(
            "Accepted",
            false,
            "PortUnavailable",
            format!(
                "port {} is not one Gantry listens on for {} (it serves {} on port {port})",
                l.port, l.protocol, l.protocol
            ),
        )),
        _ => {}
    }
    if let Some((reason, message)) = problems.first() {
        conditions.push(Condition::new("Accepted", false, reason, message.clone()));
    }
    if !conditions.iter().any(|c| c.type_ == "Accepted") {
        conditions.push(Condition::new(
            "Accepted",
            true,
            "Accepted",
            "the listener is valid",
        ));
    }

    // ResolvedRefs: route kinds, then certificates.
    let mut kinds = Vec::new();
    let mut resolved: Option<Condition> = None;
    match allowed.and_then(|a| a.kinds.as_ref()) {
        Some(list) => {
            for k in list {
                let group_ok = k.group.as_deref().is_none_or(|g| g == GROUP);
                match (group_ok, k.kind.as_str()) {
                    (true, "HTTPRoute") => kinds.push("HTTPRoute"),
                    (true, "GRPCRoute") => kinds.push("GRPCRoute"),
                    _ => {
                        resolved.get_or_insert_with(|| {
                            Condition::new(
                                "ResolvedRefs",
                                false,
                                "InvalidRouteKinds",
                                format!(
                                    "route kind {}/{} is not supported: HTTPRoute and GRPCRoute are",
                                    k.group.as_deref().unwrap_or(GROUP),
                                    k.kind
                                ),
                            )
                        });
                    }
                }
            }
            kinds.dedup();
        }
        None if protocol.is_some() => kinds = vec!["HTTPRoute", "GRPCRoute"],
        None => {}
    }
    if protocol == Some(Protocol::Https) {
        if let Some(c) = certificates(b, gw_key, l, &hostname) {
            resolved.get_or_insert(c);
        }
    }
    conditions.push(resolved.unwrap_or_else(|| {
        Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "every reference is resolved",
        )
    }));
    for c in conditions.iter().filter(|c| !c.status) {
        b.report(
            label,
            Problem::GatewayApi {
                reason: c.reason,
                message: format!("listener {}: {}", l.name, c.message),
            },
        );
    }
    Listener {
        name: l.name.clone(),
        port: l.port,
        protocol,
        hostname,
        from,
        selector,
        kinds,
        attachable: false,
        valid: false,
        attached: 0,
        conditions,
    }
}

/// Loads an HTTPS listener's certificates into the SNI table; `Some` is the failed
/// `ResolvedRefs` condition.
fn certificates(
    b: &mut Build<'_>,
    gw_key: &ObjectKey,
    l: &GatewayListeners,
    host: &HostMatch,
) -> Option<Condition> {
    let tls = l.tls.as_ref();
    if tls.and_then(|t| t.mode.as_ref()).is_some_and(|m| {
        matches!(
            m,
            crate::gateway::api::gateways::GatewayListenersTlsMode::Passthrough
        )
    }) {
        return Some(Condition::new(
            "ResolvedRefs",
            false,
            "InvalidCertificateRef",
            "TLS passthrough is not supported on HTTPS listeners",
        ));
    }
    let refs = tls
        .and_then(|t| t.certificate_refs.as_deref())
        .unwrap_or_default();
    if refs.is_empty() {
        return Some(Condition::new(
            "ResolvedRefs",
            false,
            "InvalidCertificateRef",
            "an HTTPS listener needs tls.certificateRefs",
        ));
    }
    let mut first: Option<TlsCert> = None;
    for r in refs {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        if !group.is_empty() || kind != "Secret" {
            return Some(Condition::new(
                "ResolvedRefs",
                false,
                "InvalidCertificateRef",
                format!("certificateRef {group}/{kind} {} is not a Secret", r.name),
            ));
        }
        let namespace = r.namespace.clone().unwrap_or_else(|| gw_key.namespace.clone());
        if namespace != gw_key.namespace
            && !granted(b, "Gateway", &gw_key.namespace, "", "Secret", &namespace, &r.name)
        {
            return Some(Condition::new(
                "ResolvedRefs",
                false,
                "RefNotPermitted",
                format!(
                    "Secret {namespace}/{} is in another namespace and no ReferenceGrant there allows it",
                    r.name
                ),
            ));
        }
        match b.certificate(&ObjectKey::new(namespace.as_str(), r.name.as_str())) {
            Ok(cert) => {
                first.get_or_insert(cert);
            }
            Err(e) => {
                let why = match e {
                    tls::SecretError::NotFound => "not found".to_string(),
                    tls::SecretError::Invalid(why) => why,
                };
                return Some(Condition::new(
                    "ResolvedRefs",
                    false,
                    "InvalidCertificateRef",
                    format!("Secret {namespace}/{}: {why}", r.name),
                ));
            }
        }
    }
    if let Some(cert) = first {
        match host_spelling(host) {
            // The Ingress processors ran first: a host an Ingress has a certificate for keeps it.
            Some(name) => {
                b.certs.insert(&name, cert);
            }
            // A listener without hostname: its certificate answers SNI names nothing else has,
            // unless a default certificate was configured.
            None if b.settings.default_ssl_certificate.is_none() => b.certs.set_default(cert),
            None => {}
        }
    }
    None
}

/// Listeners on the same port: a different protocol is a `ProtocolConflict`, the same protocol
/// and hostname a `HostnameConflict`.
fn conflicts(listeners: &mut [Listener]) {
    let n = listeners.len();
    let mut conflicted: Vec<Option<(&'static str, String)>> = vec![None; n];
    for i in 0..n {
        for j in 0..n {
            if i == j || listeners[i].port != listeners[j].port {
                continue;
            }
            if listeners[i].protocol != listeners[j].protocol {
                conflicted[i].get_or_insert((
                    "ProtocolConflict",
                    format!(
                        "listener {} uses port {} with another protocol",
                        listeners[j].name, listeners[j].port
                    ),
                ));
            } else if listeners[i].hostname == listeners[j].hostname {
                conflicted[i].get_or_insert((
                    "HostnameConflict",
                    format!("listener {} uses the same port and hostname", listeners[j].name),
                ));
            }
        }
    }
    for (l, c) in listeners.iter_mut().zip(conflicted) {
        l.conditions.push(match c {
            Some((reason, message)) => Condition::new("Conflicted", true, reason, message),
            None => Condition::new(
                "Conflicted",
                false,
                "NoConflicts",
                "no conflict with other listeners",
            ),
        });
    }
}

/// Whether a ReferenceGrant in `to_ns` lets `from_kind` objects of `from_ns` refer to the
/// `to_group`/`to_kind` object `to_name`.
fn granted(
    b: &Build<'_>,
    from_kind: &str,
    from_ns: &str,
    to_group: &str,
    to_kind: &str,
    to_ns: &str,
    to_name: &str,
) -> bool {
    b.store
        .reference_grants()
        .iter()
        .filter(|(k, _)| k.namespace == to_ns)
        .any(|(_, g)| {
            g.spec
                .from
                .iter()
                .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n.is_empty() || n == to_name)
                })
        })
}

/// Whether a namespace's labels match a listener's `Selector`.
fn namespace_selected(b: &Build<'_>, namespace: &str, selector: &BTreeMap<String, String>) -> bool {
    let Some(ns) = b.store.namespaces().get(&ObjectKey::cluster(namespace)) else {
        return false;
    };
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A Gateway API hostname (listener `hostname`, route `hostnames` entry): read and checked as an
/// Ingress host is, but a wildcard `*.example.com` is the Gateway API's suffix match, one or more
/// labels ([`HostMatch::WildcardAnyDepth`]), not the Ingress's one label.
fn gateway_host(host: Option<&str>) -> Result<HostMatch, &'static str> {
    parse_host(host).map(|h| match h {
        HostMatch::Wildcard(parent) => HostMatch::WildcardAnyDepth(parent),
        h => h,
    })
}

/// Whether `name` is under `parent` on a label boundary with at least one label more:
/// `a.b.example.com` is under `example.com`; `example.com` and `aexample.com` are not.
fn is_under(name: &str, parent: &str) -> bool {
    name.strip_suffix(parent)
        .and_then(|rest| rest.strip_suffix('.'))
        .is_some_and(|labels| !labels.is_empty())
}

/// The hostnames a route serves on a listener: the intersection of the listener's hostname and
/// the route's, as `HTTPRoute.spec.hostnames` defines it (both are [`gateway_host`]s, wildcards
/// any depth). Empty when they do not intersect.
///
/// - A listener without hostname takes the route's hostnames; a route without hostnames takes
///   the listener's.
/// - An exact hostname intersects an equal one, and a wildcard it is under (any depth):
///   listener `*.bar.com` ∩ route `a.b.bar.com` and listener `foo.bar.com` ∩ route `*.bar.com`
///   are both the exact hostname.
/// - Two wildcards intersect when one's parent is the other's or under it: the more specific
///   (`*.bar.com` ∩ `*.foo.bar.com` is `*.foo.bar.com`). `example.com` is never under
///   `*.example.com`.
fn intersect(listener: &HostMatch, route: &[HostMatch]) -> Vec<HostMatch> {
    if route.is_empty() {
        return vec![listener.clone()];
    }
    let mut out = Vec::new();
    for h in route {
        if let Some(both) = intersect_one(listener, h) {
            if !out.contains(&both) {
                out.push(both);
            }
        }
    }
    out
}

/// Whether every host `inner` matches is also matched by `outer`.
fn within(inner: &HostMatch, outer: &HostMatch) -> bool {
    intersect_one(outer, inner).as_ref() == Some(inner)
}

/// The intersection of one listener hostname and one route hostname (see [`intersect`]).
fn intersect_one(listener: &HostMatch, route: &HostMatch) -> Option<HostMatch> {
    use HostMatch::{Any, Exact, WildcardAnyDepth as Wild};
    match (listener, route) {
        (Any, h) | (h, Any) => Some(h.clone()),
        (Exact(l), Exact(r)) => (l == r).then(|| route.clone()),
        (Wild(parent), Exact(name)) | (Exact(name), Wild(parent)) => {
            is_under(name, parent).then(|| Exact(name.clone()))
        }
        (Wild(l), Wild(r)) if l == r || is_under(r, l) => Some(route.clone()),
        (Wild(l), Wild(r)) if is_under(l, r) => Some(listener.clone()),
        // Two wildcards on unrelated parents; Ingress wildcards are never Gateway API hostnames.
        _ => None,
    }
}

/// Where an accepted route is served: each (address, host) with the listener kinds that take it.
#[derive(Default)]
struct Placement {
    /// (A Gateway's own address, or `None` for the shared table; host) → (plain HTTP, TLS).
    hosts: BTreeMap<(Option<IpAddr>, HostMatch), (bool, bool)>,
}

fn http_route(
    b: &mut Build<'_>,
    gateways: &mut BTreeMap<ObjectKey, OurGateway>,
    key: &ObjectKey,
    route: &HttpRoute,
    kind: SourceKind,
) -> Option<RouteStatus> {
    let label = ObjectRef::of(kind, key, &route.metadata);
    let mut hostnames = Vec::new();
    let mut bad_hostname = None;
    for h in route.spec.hostnames.as_deref().unwrap_or_default() {
        match gateway_host(Some(h)) {
            Ok(HostMatch::Any) => {}
            Ok(h) => hostnames.push(h),
            Err(why) => bad_hostname = Some(format!("hostname {h:?} {why}")),
        }
    }
    let mut parents = Vec::new();
    let mut placement = Placement::default();
    for p in route.spec.parent_refs.as_deref().unwrap_or_default() {
        if p.group.as_deref().is_some_and(|g| g != GROUP) || p.kind.as_deref().is_some_and(|k| k != "Gateway")
        {
            continue;
        }
        let gw_key = ObjectKey::new(
            p.namespace.clone().unwrap_or_else(|| key.namespace.clone()),
            p.name.as_str(),
        );
        let Some(gw) = gateways.get_mut(&gw_key) else {
            continue;
        };
        let condition = attach(
            b,
            gw,
            key,
            kind.as_str(),
            &hostnames,
            p.section_name.as_deref(),
            p.port,
            &mut placement,
        );
        let condition = match (&bad_hostname, condition) {
            (Some(why), _) => Condition::new("Accepted", false, "UnsupportedValue", why.clone()),
            (None, c) => c,
        };
        parents.push(ParentStatus {
            group: p.group.clone(),
            kind: p.kind.clone(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            section_name: p.section_name.clone(),
            port: p.port,
            conditions: vec![condition],
        });
    }
    if parents.is_empty() {
        return None;
    }
    let source = RouteSource {
        kind,
        namespace: Arc::from(key.namespace.as_str()),
        name: Arc::from(key.name.as_str()),
    };
    let mut unresolved: Option<Condition> = None;
    let accepted = parents.iter().any(|p| p.conditions[0].status) && bad_hostname.is_none();
    for (i, rule) in route.spec.rules.as_deref().unwrap_or_default().iter().enumerate() {
        let place = match &rule.name {
            Some(name) => format!("rule {name}"),
            None => format!("rule {}", i + 1),
        };
        let compiled = compile_rule(b, key, &label, kind, rule, &place, &mut unresolved);
        if !accepted {
            continue;
        }
        let matches: Vec<HttpRouteRulesMatches> = match rule.matches.as_deref() {
            Some(m) if !m.is_empty() => m.to_vec(),
            _ => vec![HttpRouteRulesMatches {
                headers: None,
                method: None,
                path: None,
                query_params: None,
            }],
        };
        for m in &matches {
            let (path, conditions) = match match_of(m) {
                Ok(x) => x,
                Err(why) => {
                    b.report(
                        &label,
                        Problem::GatewayApi {
                            reason: "UnsupportedValue",
                            message: format!("{place}: {why}; the match is skipped"),
                        },
                    );
                    continue;
                }
            };
            let policies = Arc::new(compiled.policies_for(&path));
            for ((address, host), (plain, tls)) in &placement.hosts {
                let mut conditions = conditions.clone();
                conditions.tls = match (plain, tls) {
                    (true, false) => Some(false),
                    (false, true) => Some(true),
                    _ => None,
                };
                let conditions = shared_conditions(conditions);
                let r = Route {
                    path: path.clone(),
                    conditions,
                    backend: compiled.backend.clone(),
                    source: source.clone(),
                    policies: policies.clone(),
                };
                if let Err(e) = b.routes_at(*address).add(host.clone(), r) {
                    let message = match e {
                        // The host as the route spells it (`*.example.com`, not the table's
                        // `**.example.com`); `*` for a route without hostnames.
                        RouteError::Conflict { path, existing, .. } => format!(
                            "{place}: {} {path:?} with the same conditions is already routed by {existing}; this match is not served there",
                            host_spelling(host).unwrap_or_else(|| host.to_string())
                        ),
                        RouteError::InvalidPath { path, reason } => {
                            format!("{place}: path {path:?} {reason}; the match is skipped")
                        }
                    };
                    b.report(
                        &label,
                        Problem::GatewayApi {
                            reason: "RouteConflict",
                            message,
                        },
                    );
                }
            }
        }
    }
    let resolved = unresolved.unwrap_or_else(|| {
        Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "every backend reference is resolved",
        )
    });
    for p in &mut parents {
        p.conditions.push(resolved.clone());
        for c in p.conditions.iter().filter(|c| !c.status) {
            b.diagnostics.push(crate::diagnostic::Diagnostic {
                object: label.clone(),
                reason: c.reason.to_string(),
                message: c.message.clone(),
            });
        }
    }
    Some(RouteStatus {
        kind: kind.as_str(),
        key: key.clone(),
        generation: route.metadata.generation.unwrap_or_default(),
        parents,
    })
}

/// Attaches a route to the listeners of one Gateway that a parentRef selects; the `Accepted`
/// condition for that parentRef.
#[allow(clippy::too_many_arguments)]
fn attach(
    b: &Build<'_>,
    gw: &mut OurGateway,
    route_key: &ObjectKey,
    route_kind: &str,
    hostnames: &[HostMatch],
    section: Option<&str>,
    port: Option<i32>,
    placement: &mut Placement,
) -> Condition {
    let mut selected = 0;
    let mut allowed = 0;
    let mut attached = 0;
    // Listener isolation: a host belongs to the most specific listener (of the same port) whose
    // hostname matches it, so a route attached to a broader listener does not serve it.
    let siblings: Vec<(i32, HostMatch)> = gw
        .listeners
        .iter()
        .filter(|l| l.valid)
        .map(|l| (l.port, l.hostname.clone()))
        .collect();
    for l in &mut gw.listeners {
        if section.is_some_and(|s| s != l.name) || port.is_some_and(|p| p != l.port) {
            continue;
        }
        selected += 1;
        if !l.attachable || !l.kinds.contains(&route_kind) {
            continue;
        }
        let ns_ok = match l.from {
            From_::All => true,
            From_::Same => route_key.namespace == gw.key.namespace,
            From_::Selector => namespace_selected(b, &route_key.namespace, &l.selector),
        };
        if !ns_ok {
            continue;
        }
        allowed += 1;
        let hosts = intersect(&l.hostname, hostnames);
        if hosts.is_empty() {
            continue;
        }
        attached += 1;
        l.attached += 1;
        if !l.valid {
            // Attached (and counted), but the listener is not served.
            continue;
        }
        let addresses: Vec<Option<IpAddr>> = match &gw.addresses {
            Some(own) => own.iter().copied().map(Some).collect(),
            None => vec![None],
        };
        let narrower: Vec<&HostMatch> = siblings
            .iter()
            .filter(|(port, h)| *port == l.port && *h != l.hostname && within(h, &l.hostname))
            .map(|(_, h)| h)
            .collect();
        for h in hosts {
            if narrower.iter().any(|n| within(&h, n)) {
                // These hosts are a more specific listener's.
                continue;
            }
            for address in &addresses {
                let e = placement.hosts.entry((*address, h.clone())).or_default();
                match l.protocol {
                    Some(Protocol::Https) => e.1 = true,
                    _ => e.0 = true,
                }
            }
        }
    }
    if selected == 0 {
        Condition::new(
            "Accepted",
            false,
            "NoMatchingParent",
            "the Gateway has no listener with this sectionName and port",
        )
    } else if allowed == 0 {
        Condition::new(
            "Accepted",
            false,
            "NotAllowedByListeners",
            "no listener of the Gateway allows this route (its kind or namespace), or none is valid",
        )
    } else if attached == 0 {
        Condition::new(
            "Accepted",
            false,
            "NoMatchingListenerHostname",
            "the route's hostnames match no listener's hostname",
        )
    } else {
        Condition::new(
            "Accepted",
            true,
            "Accepted",
            format!("attached to {attached} listener(s)"),
        )
    }
}

/// A rule's backends and filters, compiled once for all of its matches.
struct CompiledRule {
    backend: Arc<Backend>,
    policies: Policies,
    /// `ReplacePrefixMatch` of URLRewrite or RequestRedirect needs the match's path: the
    /// replacement, and whether it is the redirect's.
    prefix_replacement: Option<(String, bool)>,
}

impl CompiledRule {
    fn policies_for(&self, path: &PathMatch) -> Policies {
        let mut p = self.policies.clone();
        if let Some((replacement, redirect)) = &self.prefix_replacement {
            let matched = match path {
                PathMatch::Prefix(m)
                | PathMatch::Exact(m)
                | PathMatch::Regex(m)
                | PathMatch::FullRegex(m) => m.clone(),
            };
            let modifier = PathModifier::Prefix {
                matched: matched.trim_end_matches('/').to_owned(),
                replacement: replacement.clone(),
            };
            if *redirect {
                if let Some(r) = &p.request_redirect {
                    let mut r = (**r).clone();
                    r.path = Some(modifier);
                    p.request_redirect = Some(Arc::new(r));
                }
            } else if let Some(u) = &p.upstream.url_rewrite {
                let mut u = (**u).clone();
                u.path = Some(modifier);
                p.upstream.url_rewrite = Some(Arc::new(u));
            }
        }
        p
    }
}

/// One rule of route `route_key` (`label` in diagnostics).
fn compile_rule(
    b: &mut Build<'_>,
    route_key: &ObjectKey,
    label: &ObjectRef,
    kind: SourceKind,
    rule: &HttpRouteRules,
    place: &str,
    unresolved: &mut Option<Condition>,
) -> CompiledRule {
    let mut policies = Policies::default();
    let mut prefix_replacement = None;
    let mut broken: Option<String> = None;
    for f in rule.filters.as_deref().unwrap_or_default() {
        if let Err(why) = filter(b, route_key, label, f, &mut policies, &mut prefix_replacement) {
            broken.get_or_insert(why);
        }
    }
    if let Some(t) = &rule.timeouts {
        for (field, value, slot) in [
            ("request", &t.request, &mut policies.timeouts.request),
            (
                "backendRequest",
                &t.backend_request,
                &mut policies.timeouts.backend_request,
            ),
        ] {
            if let Some(v) = value {
                match parse_duration(v) {
                    Ok(d) => *slot = d,
                    Err(why) => {
                        broken.get_or_insert(format!("timeouts.{field} {v:?}: {why}"));
                    }
                }
            }
        }
    }
    let refs = rule.backend_refs.as_deref().unwrap_or_default();
    let mut weighted: Vec<(u32, Arc<Backend>)> = Vec::new();
    // The BackendTLSPolicy of each resolved backend (`None`: plain text).
    let mut tls: Vec<Option<Arc<UpstreamTls>>> = Vec::new();
    // The `appProtocol` of each resolved backend's Service port.
    let mut app_protocols: Vec<Option<String>> = Vec::new();
    for r in refs {
        let weight = r.weight.unwrap_or(1).max(0) as u32;
        let mut backend = backend_ref(b, route_key, label, r, unresolved);
        match backend_ref_headers(r) {
            Ok(None) => {}
            Ok(Some(m)) => {
                let mut with = (*backend).clone();
                with.request_headers = Some(Arc::new(m));
                backend = Arc::new(with);
            }
            Err(why) => {
                broken.get_or_insert(why);
            }
        }
        if !backend.invalid {
            let namespace = r.namespace.as_deref().unwrap_or(&route_key.namespace);
            app_protocols.push(
                b.store
                    .service(namespace, &r.name)
                    .and_then(|s| s.ports.iter().find(|p| Some(p.port) == r.port))
                    .and_then(|p| p.app_protocol.as_deref().map(str::to_string)),
            );
            match backend_tls(b, namespace, &r.name, r.port.unwrap_or_default()) {
                Ok(t) => tls.push(t),
                Err(why) => {
                    broken.get_or_insert(why);
                }
            }
        }
        weighted.push((weight, backend));
    }
    // `appProtocol: kubernetes.io/h2c` (KEP-3726): the backends speak HTTP/2 in clear text. One rule
    // speaks one protocol to its backends, so all of them must say it.
    app_protocols.dedup();
    let h2c = match app_protocols.as_slice() {
        [Some(p)] => p == "kubernetes.io/h2c",
        [] | [_] => false,
        _ if app_protocols
            .iter()
            .any(|p| p.as_deref() == Some("kubernetes.io/h2c")) =>
        {
            b.report(
                label,
                Problem::GatewayApi {
                    reason: "UnsupportedValue",
                    message: format!(
                        "{place}: only some backends have appProtocol kubernetes.io/h2c; HTTP/1.1 is spoken to all of them"
                    ),
                },
            );
            false
        }
        _ => false,
    };
    if h2c && kind == SourceKind::HttpRoute {
        policies.upstream.protocol = gantry_proxy::policy::UpstreamProtocol::H2c;
    }
    tls.dedup();
    match tls.as_slice() {
        [] | [None] => {}
        [Some(t)] => {
            policies.upstream.protocol = if kind == SourceKind::GrpcRoute {
                gantry_proxy::policy::UpstreamProtocol::H2
            } else {
                gantry_proxy::policy::UpstreamProtocol::Https
            };
            policies.upstream.tls = Some(t.clone());
        }
        _ => {
            broken.get_or_insert(
                "the backends of this rule differ in their BackendTLSPolicy (one rule speaks one protocol to its backends)"
                    .into(),
            );
        }
    }
    let id = BackendId {
        namespace: Arc::from(route_key.namespace.as_str()),
        service: Arc::from(format!("({place})")),
        port: Arc::from(""),
    };
    let backend = if let Some(why) = &broken {
        b.report(
            label,
            Problem::GatewayApi {
                reason: "UnsupportedValue",
                message: format!("{place}: {why}; its requests get 500"),
            },
        );
        Arc::new(Backend::invalid(id, why.clone()))
    } else if weighted.is_empty() {
        Arc::new(Backend::invalid(id, "the rule has no backendRefs"))
    } else if weighted.iter().all(|(w, _)| *w == 0) {
        Arc::new(Backend::invalid(id, "every backendRef has weight 0"))
    } else if weighted.len() == 1 {
        weighted[0].1.clone()
    } else {
        let first = weighted.iter().find(|(w, _)| *w > 0).map(|(_, b)| b.clone());
        policies.split = Some(Arc::new(WeightedBackends { backends: weighted }));
        first.unwrap_or_else(|| Arc::new(Backend::invalid(id, "every backendRef has weight 0")))
    };
    if broken.is_some() {
        // Nothing of a rule that cannot be honoured is applied: it answers 500, closed.
        policies = Policies::default();
        prefix_replacement = None;
    }
    if kind == SourceKind::GrpcRoute && policies.upstream.tls.is_none() {
        // gRPC backends speak HTTP/2; without TLS (BackendTLSPolicy) that is h2c.
        policies.upstream.protocol = gantry_proxy::policy::UpstreamProtocol::H2c;
    }
    CompiledRule {
        backend,
        policies,
        prefix_replacement,
    }
}

/// A match's conditions as a route holds them: `None` for none, and one `Arc` shared by every
/// route whose only condition is its listener's (`tls`), the common case: a table of 100,000
/// such routes then holds two sets of conditions, not 100,000.
fn shared_conditions(conditions: RequestConditions) -> Option<Arc<RequestConditions>> {
    static LISTENER_ONLY: std::sync::LazyLock<[Arc<RequestConditions>; 2]> = std::sync::LazyLock::new(|| {
        [false, true].map(|tls| {
            Arc::new(RequestConditions {
                tls: Some(tls),
                ..RequestConditions::default()
            })
        })
    });
    let listener_only = RequestConditions {
        tls: conditions.tls,
        ..RequestConditions::default()
    };
    match conditions.tls {
        None if conditions == RequestConditions::default() => None,
        Some(tls) if conditions == listener_only => Some(LISTENER_ONLY[usize::from(tls)].clone()),
        _ => Some(Arc::new(conditions)),
    }
}

/// One backendRef → its backend: an invalid reference answers 500 and sets `unresolved`.
fn backend_ref(
    b: &mut Build<'_>,
    route_key: &ObjectKey,
    label: &ObjectRef,
    r: &HttpRouteRulesBackendRefs,
    unresolved: &mut Option<Condition>,
) -> Arc<Backend> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Service");
    let namespace = r.namespace.clone().unwrap_or_else(|| route_key.namespace.clone());
    let port = r.port.unwrap_or_default();
    let id = BackendId {
        namespace: Arc::from(namespace.as_str()),
        service: Arc::from(r.name.as_str()),
        port: Arc::from(port.to_string()),
    };
    let mut fail = |reason: &'static str, message: String| {
        unresolved.get_or_insert_with(|| Condition::new("ResolvedRefs", false, reason, message.clone()));
        Arc::new(Backend::invalid(id.clone(), message))
    };
    if !group.is_empty() || kind != "Service" {
        return fail(
            "InvalidKind",
            format!("backendRef {group}/{kind} {} is not a Service", r.name),
        );
    }
    if namespace != route_key.namespace
        && !granted(
            b,
            "HTTPRoute",
            &route_key.namespace,
            "",
            "Service",
            &namespace,
            &r.name,
        )
    {
        return fail(
            "RefNotPermitted",
            format!(
                "Service {namespace}/{} is in another namespace and no ReferenceGrant there allows it",
                r.name
            ),
        );
    }
    if r.port.is_none() {
        return fail(
            "UnsupportedValue",
            format!("backendRef Service {} has no port", r.name),
        );
    }
    if b.store.service(&namespace, &r.name).is_none() {
        return fail(
            "BackendNotFound",
            format!("Service {namespace}/{} not found", r.name),
        );
    }
    let mode = b.settings.backend_mode;
    let (backend, problem) = resolve_service_port(b, &namespace, &r.name, port, mode);
    if let Some(problem) = problem {
        b.report(label, problem);
    }
    backend
}

/// The filters of one `backendRef`: its `RequestHeaderModifier` (applied to the requests sent to
/// it, after the rule's). `Err` for the filters Gantry cannot apply per backend; the rule then
/// answers 500 (a filter is never silently dropped).
fn backend_ref_headers(r: &HttpRouteRulesBackendRefs) -> Result<Option<HeaderModifier>, String> {
    use crate::gateway::api::httproutes::HttpRouteRulesBackendRefsFiltersType as T;
    let mut out = None;
    for f in r.filters.as_deref().unwrap_or_default() {
        match f.r#type {
            T::RequestHeaderModifier => {
                let m = f
                    .request_header_modifier
                    .as_ref()
                    .ok_or("RequestHeaderModifier without its field")?;
                let set = m
                    .set
                    .iter()
                    .flatten()
                    .map(|h| (h.name.as_str(), h.value.as_str()));
                let add = m
                    .add
                    .iter()
                    .flatten()
                    .map(|h| (h.name.as_str(), h.value.as_str()));
                if out.is_some() {
                    return Err("a backendRef may have one RequestHeaderModifier".into());
                }
                out = Some(header_modifier(set, add, m.remove.iter().flatten())?);
            }
            ref other => {
                return Err(format!(
                    "the {other:?} filter on a backendRef is not supported (only RequestHeaderModifier)"
                ))
            }
        }
    }
    Ok(out)
}

/// The status of every BackendTLSPolicy that applies behind one of our Gateways.
///
/// - Ancestors: the Gateways that accepted a route with a backendRef to a Service the policy
///   targets.
/// - `ResolvedRefs`: every `caCertificateRef` is a ConfigMap (else `InvalidKind`) with a `ca.crt`
///   (else `InvalidCACertificateRef`).
/// - `Accepted`: `False/NoValidCACertificate` when no reference is usable; `False/Conflicted` when
///   an older policy targets the same Service and `sectionName` (the older one applies, as
///   [`backend_tls`] chooses); else `True`.
fn backend_tls_policy_status(b: &mut Build<'_>, routes: &[RouteStatus]) -> Vec<PolicyStatus> {
    // Service (namespace, name) → the Gateways whose accepted routes reach it.
    let mut reached: BTreeMap<(String, String), BTreeSet<ObjectKey>> = BTreeMap::new();
    for r in routes {
        let gateways: Vec<ObjectKey> = r
            .parents
            .iter()
            .filter(|p| p.conditions.iter().any(|c| c.type_ == "Accepted" && c.status))
            .map(|p| {
                ObjectKey::new(
                    p.namespace.clone().unwrap_or_else(|| r.key.namespace.clone()),
                    p.name.as_str(),
                )
            })
            .collect();
        if gateways.is_empty() {
            continue;
        }
        let refs: Vec<(Option<String>, String)> = match r.kind {
            "GRPCRoute" => b
                .store
                .grpc_routes()
                .get(&r.key)
                .and_then(|g| grpc_as_http(g).ok())
                .map(|h| backend_names(&h.spec))
                .unwrap_or_default(),
            _ => b
                .store
                .http_routes()
                .get(&r.key)
                .map(|h| backend_names(&h.spec))
                .unwrap_or_default(),
        };
        for (namespace, name) in refs {
            let namespace = namespace.unwrap_or_else(|| r.key.namespace.clone());
            reached
                .entry((namespace, name))
                .or_default()
                .extend(gateways.iter().cloned());
        }
    }
    let mut policies: Vec<(&ObjectKey, &crate::gateway::api::BackendTlsPolicy)> =
        b.store.backend_tls_policies().iter().collect();
    policies.sort_by(|a, b| age(&a.1.metadata, a.0).cmp(&age(&b.1.metadata, b.0)));
    let mut claimed: BTreeMap<(String, String, Option<String>), ObjectKey> = BTreeMap::new();
    let mut out = Vec::new();
    for (key, policy) in policies {
        let services: Vec<_> = policy
            .spec
            .target_refs
            .iter()
            .filter(|t| t.group.is_empty() && t.kind == "Service")
            .collect();
        let ancestors: BTreeSet<ObjectKey> = services
            .iter()
            .filter_map(|t| reached.get(&(key.namespace.clone(), t.name.clone())))
            .flatten()
            .cloned()
            .collect();
        let mut conflicted_with = None;
        for t in &services {
            let target = (key.namespace.clone(), t.name.clone(), t.section_name.clone());
            match claimed.get(&target) {
                Some(older) => {
                    conflicted_with.get_or_insert_with(|| older.clone());
                }
                None => {
                    claimed.insert(target, key.clone());
                }
            }
        }
        if ancestors.is_empty() {
            continue;
        }
        let refs = policy
            .spec
            .validation
            .ca_certificate_refs
            .as_deref()
            .unwrap_or_default();
        let mut bad_kind = None;
        let mut bad_ref = None;
        let mut usable = 0;
        for r in refs {
            if !r.group.is_empty() || r.kind != "ConfigMap" {
                bad_kind.get_or_insert(format!(
                    "caCertificateRef {}/{} {} is not a ConfigMap",
                    r.group, r.kind, r.name
                ));
                continue;
            }
            let ca = b
                .store
                .config_map(&key.namespace, &r.name)
                .and_then(|cm| cm.data.as_ref())
                .and_then(|d| d.get("ca.crt"));
            // Usable when it holds a certificate the upstream TLS accepts (as `backend_tls` reads it).
            match ca.map(|pem| UpstreamTls::new().with_ca_pem(pem.as_bytes())) {
                Some(Ok(_)) => usable += 1,
                Some(Err(e)) => {
                    bad_ref.get_or_insert(format!(
                        "ca.crt of ConfigMap {}/{} is not a usable certificate: {e}",
                        key.namespace, r.name
                    ));
                }
                None => {
                    bad_ref.get_or_insert(format!(
                        "ConfigMap {}/{} does not exist or has no ca.crt",
                        key.namespace, r.name
                    ));
                }
            }
        }
        let resolved = match (&bad_kind, &bad_ref) {
            (Some(why), _) => Condition::new("ResolvedRefs", false, "InvalidKind", why.clone()),
            (None, Some(why)) => {
                Condition::new("ResolvedRefs", false, "InvalidCACertificateRef", why.clone())
            }
            (None, None) => Condition::new(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "every CA certificate reference is resolved",
            ),
        };
        let accepted = if usable == 0 && policy.spec.validation.well_known_ca_certificates.is_none() {
            Condition::new(
                "Accepted",
                false,
                "NoValidCACertificate",
                "no caCertificateRef is usable; requests to the targeted Services answer 500",
            )
        } else if let Some(older) = conflicted_with {
            Condition::new(
                "Accepted",
                false,
                "Conflicted",
                format!("BackendTLSPolicy {older} is older and targets the same Service and sectionName"),
            )
        } else {
            Condition::new("Accepted", true, "Accepted", "applied to the targeted Services")
        };
        for c in [&accepted, &resolved].into_iter().filter(|c| !c.status) {
            b.report(
                &ObjectRef::of(ObjectKind::BackendTlsPolicy, key, &policy.metadata),
                Problem::GatewayApi {
                    reason: c.reason,
                    message: c.message.clone(),
                },
            );
        }
        out.push(PolicyStatus {
            key: key.clone(),
            generation: policy.metadata.generation.unwrap_or_default(),
            ancestors: ancestors.into_iter().collect(),
            conditions: vec![accepted, resolved],
        });
    }
    out
}

/// The Services (namespace as written, name) a route's rules send to: `backendRefs` of kind
/// Service in the core group.
fn backend_names(spec: &crate::gateway::api::httproutes::HttpRouteSpec) -> Vec<(Option<String>, String)> {
    spec.rules
        .iter()
        .flatten()
        .flat_map(|r| r.backend_refs.iter().flatten())
        .filter(|r| {
            r.group.as_deref().unwrap_or("").is_empty() && r.kind.as_deref().unwrap_or("Service") == "Service"
        })
        .map(|r| (r.namespace.clone(), r.name.clone()))
        .collect()
}

/// A BackendTLSPolicy that targets a Service: whether it targets the whole Service (a port's wins),
/// its age, and the policy.
type Candidate<'a> = (
    bool,
    (Option<&'a Time>, &'a ObjectKey),
    &'a crate::gateway::api::BackendTlsPolicy,
);

/// The upstream TLS that a BackendTLSPolicy asks for a Service port: `Ok(None)` when no policy
/// targets it, `Err` when the policy cannot be honoured (the rule then answers 500: a backend that
/// asked for verified TLS is never reached in plain text or unverified).
///
/// A policy targets a Service (group `""`, kind `Service`), optionally one port by name
/// (`sectionName`); one naming the port wins over one for the whole Service, then the oldest.
/// The CA comes from `ca.crt` of each ConfigMap in `caCertificateRefs`; `validation.hostname` is
/// both the SNI and the name the certificate must carry.
fn backend_tls(
    b: &mut Build<'_>,
    namespace: &str,
    service: &str,
    port: i32,
) -> Result<Option<Arc<UpstreamTls>>, String> {
    let port_name = b
        .store
        .service(namespace, service)
        .and_then(|s| s.ports.iter().find(|p| p.port == port))
        .and_then(|p| p.name.as_deref().map(str::to_string));
    let mut candidates: Vec<Candidate<'_>> = b
        .store
        .backend_tls_policies()
        .iter()
        .filter(|(k, _)| k.namespace == namespace)
        .filter_map(|(k, p)| {
            let target = p.spec.target_refs.iter().find(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name == service
                    && t.section_name
                        .as_ref()
                        .is_none_or(|s| Some(s) == port_name.as_ref())
            })?;
            Some((target.section_name.is_none(), age(&p.metadata, k), p))
        })
        .collect();
    candidates.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let Some((_, (_, key), policy)) = candidates.first() else {
        return Ok(None);
    };
    let key = (*key).clone();
    let v = &policy.spec.validation;
    let fail = |why: String| Err(format!("BackendTLSPolicy {key}: {why}"));
    if v.well_known_ca_certificates.is_some() {
        return fail("wellKnownCACertificates is not supported; name the CA in caCertificateRefs".into());
    }
    if v.subject_alt_names.as_ref().is_some_and(|s| !s.is_empty()) {
        return fail(
            "subjectAltNames is not supported yet; the certificate is checked against validation.hostname"
                .into(),
        );
    }
    let refs = v.ca_certificate_refs.as_deref().unwrap_or_default();
    if refs.is_empty() {
        return fail("no caCertificateRefs".into());
    }
    let mut pem = Vec::new();
    for r in refs {
        if !r.group.is_empty() || r.kind != "ConfigMap" {
            return fail(format!(
                "caCertificateRef {}/{} {} is not a ConfigMap",
                r.group, r.kind, r.name
            ));
        }
        let Some(cm) = b.store.config_map(namespace, &r.name) else {
            return fail(format!("ConfigMap {namespace}/{} not found", r.name));
        };
        let Some(ca) = cm.data.as_ref().and_then(|d| d.get("ca.crt")) else {
            return fail(format!("ConfigMap {namespace}/{} has no ca.crt", r.name));
        };
        pem.extend_from_slice(ca.as_bytes());
        pem.push(b'\n');
    }
    let tls = UpstreamTls::new()
        .with_verify(true)
        .with_ca_pem(&pem)
        .and_then(|t| t.with_name(&v.hostname))
        .map(|t| t.with_sni(true));
    match tls {
        Ok(t) => Ok(Some(Arc::new(t))),
        Err(e) => fail(e.to_string()),
    }
}

/// One filter into the rule's policies. `Err` is why the filter cannot be honoured.
fn filter(
    b: &mut Build<'_>,
    route_key: &ObjectKey,
    label: &ObjectRef,
    f: &HttpRouteRulesFilters,
    p: &mut Policies,
    prefix_replacement: &mut Option<(String, bool)>,
) -> Result<(), String> {
    match f.r#type {
        HttpRouteRulesFiltersType::RequestHeaderModifier => {
            let m = f
                .request_header_modifier
                .as_ref()
                .ok_or("RequestHeaderModifier without its field")?;
            let set = m
                .set
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str()));
            let add = m
                .add
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str()));
            p.upstream.headers = Some(Arc::new(header_modifier(set, add, m.remove.iter().flatten())?));
        }
        HttpRouteRulesFiltersType::ResponseHeaderModifier => {
            let m = f
                .response_header_modifier
                .as_ref()
                .ok_or("ResponseHeaderModifier without its field")?;
            let set = m
                .set
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str()));
            let add = m
                .add
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str()));
            p.response_header_modifier =
                Some(Arc::new(header_modifier(set, add, m.remove.iter().flatten())?));
        }
        HttpRouteRulesFiltersType::RequestRedirect => {
            let r = f
                .request_redirect
                .as_ref()
                .ok_or("RequestRedirect without its field")?;
            let status = StatusCode::from_u16(r.status_code.unwrap_or(302).clamp(0, 999) as u16)
                .map_err(|_| "invalid redirect statusCode".to_string())?;
            let scheme = match r.scheme.as_ref().map(|s| serde_json::to_value(s).ok()) {
                None => None,
                Some(Some(serde_json::Value::String(s))) if s == "http" => Some(RedirectScheme::Http),
                Some(Some(serde_json::Value::String(s))) if s == "https" => Some(RedirectScheme::Https),
                Some(_) => return Err("redirect scheme must be http or https".into()),
            };
            let mut path = None;
            if let Some(pm) = &r.path {
                use crate::gateway::api::httproutes::HttpRouteRulesFiltersRequestRedirectPathType as T;
                match pm.r#type {
                    T::ReplaceFullPath => {
                        path = Some(PathModifier::Full(
                            pm.replace_full_path.clone().unwrap_or_else(|| "/".into()),
                        ))
                    }
                    T::ReplacePrefixMatch => {
                        *prefix_replacement = Some((
                            pm.replace_prefix_match.clone().unwrap_or_else(|| "/".into()),
                            true,
                        ))
                    }
                }
            }
            let port = match r.port {
                None => None,
                Some(port) => {
                    Some(u16::try_from(port).map_err(|_| format!("redirect port {port} is out of range"))?)
                }
            };
            p.request_redirect = Some(Arc::new(RequestRedirect {
                scheme,
                hostname: r.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
                path,
                port,
                status,
            }));
        }
        HttpRouteRulesFiltersType::UrlRewrite => {
            let u = f.url_rewrite.as_ref().ok_or("URLRewrite without its field")?;
            let hostname = match &u.hostname {
                Some(h) => Some(
                    HeaderValue::from_str(h)
                        .map_err(|_| format!("URLRewrite hostname {h:?} is not a header value"))?,
                ),
                None => None,
            };
            let mut path = None;
            if let Some(pm) = &u.path {
                use crate::gateway::api::httproutes::HttpRouteRulesFiltersUrlRewritePathType as T;
                match pm.r#type {
                    T::ReplaceFullPath => {
                        path = Some(PathModifier::Full(
                            pm.replace_full_path.clone().unwrap_or_else(|| "/".into()),
                        ))
                    }
                    T::ReplacePrefixMatch => {
                        *prefix_replacement = Some((
                            pm.replace_prefix_match.clone().unwrap_or_else(|| "/".into()),
                            false,
                        ))
                    }
                }
            }
            p.upstream.url_rewrite = Some(Arc::new(UrlRewrite { hostname, path }));
        }
        HttpRouteRulesFiltersType::RequestMirror => {
            let m = f
                .request_mirror
                .as_ref()
                .ok_or("RequestMirror without its field")?;
            let r = &m.backend_ref;
            let as_ref = HttpRouteRulesBackendRefs {
                filters: None,
                group: r.group.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
                namespace: r.namespace.clone(),
                port: r.port,
                weight: None,
            };
            let mut unresolved = None;
            let backend = backend_ref(b, route_key, label, &as_ref, &mut unresolved);
            if let Some(c) = unresolved {
                return Err(format!("RequestMirror: {}", c.message));
            }
            let per_million = match (&m.fraction, m.percent) {
                (Some(fr), _) => {
                    let den = i64::from(fr.denominator.unwrap_or(100).max(1));
                    (i64::from(fr.numerator.max(0)) * 1_000_000 / den).min(1_000_000) as u32
                }
                (None, Some(pct)) => (i64::from(pct.clamp(0, 100)) * 10_000) as u32,
                (None, None) => 1_000_000,
            };
            let mut mirrors: Vec<Mirror> = p.mirrors.as_deref().map(<[Mirror]>::to_vec).unwrap_or_default();
            mirrors.push(Mirror { backend, per_million });
            p.mirrors = Some(mirrors.into());
        }
        HttpRouteRulesFiltersType::Cors => {
            let c = f.cors.as_ref().ok_or("CORS without its field")?;
            let mut cors = Cors {
                mode: CorsMode::GatewayApi,
                ..Cors::default()
            };
            let origins: Vec<CorsOrigin> = c
                .allow_origins
                .iter()
                .flatten()
                .filter_map(|o| CorsOrigin::parse(o).ok())
                .map(CorsOrigin::any_depth)
                .collect();
            // Only the valid origins; none (all invalid, or none listed) allows no origin at all,
            // so a filter Gantry cannot read never opens a route to every site.
            cors.origins = origins;
            let join = |v: &Option<Vec<String>>| {
                v.as_ref()
                    .filter(|v| !v.is_empty())
                    .and_then(|v| HeaderValue::from_str(&v.join(", ")).ok())
            };
            if let Some(m) = join(&c.allow_methods) {
                cors.allow_methods = m;
            }
            if let Some(h) = join(&c.allow_headers) {
                cors.allow_headers = h;
            }
            cors.expose_headers = join(&c.expose_headers);
            cors.allow_credentials = c.allow_credentials.unwrap_or(false);
            cors.max_age = c.max_age.map_or(5, |a| a.max(0) as u32);
            p.cors = Some(Arc::new(cors));
        }
        HttpRouteRulesFiltersType::ExtensionRef => {
            return Err("ExtensionRef filters are not supported".into());
        }
    }
    Ok(())
}

fn header_modifier<'a>(
    set: impl Iterator<Item = (&'a str, &'a str)>,
    add: impl Iterator<Item = (&'a str, &'a str)>,
    remove: impl Iterator<Item = &'a String>,
) -> Result<HeaderModifier, String> {
    let pair = |(n, v): (&str, &str)| -> Result<(HeaderName, HeaderValue), String> {
        let name =
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("header name {n:?} is invalid"))?;
        let value = HeaderValue::from_str(v).map_err(|_| format!("header {n}: value {v:?} is invalid"))?;
        Ok((name, value))
    };
    Ok(HeaderModifier {
        set: set.map(pair).collect::<Result<_, _>>()?,
        add: add.map(pair).collect::<Result<_, _>>()?,
        remove: remove
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("header name {n:?} is invalid"))
            })
            .collect::<Result<_, _>>()?,
    })
}

/// A Gateway API duration (GEP-2257: `1h`, `30s`, `500ms`, `1m30s`); `0s` means no timeout.
fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err("expected 1 to 5 digits then h, m, s or ms".into());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| "bad number".to_string())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err("expected a unit: h, m, s or ms".into());
        };
        total += unit * n as u32;
        rest = &rest[len..];
    }
    Ok((!total.is_zero()).then_some(total))
}

/// A GRPCRoute as the HTTPRoute that routes the same requests: a method match is the path
/// `/service/method` (Exact), `/service` (PathPrefix, every method of the service), or a
/// RegularExpression path over the two segments where a part is missing (any service with this
/// method) or is itself a regular expression; header matches, filters and backendRefs have the
/// same shape in both kinds.
fn grpc_as_http(route: &GrpcRoute) -> Result<HttpRoute, String> {
    let mut rules = Vec::new();
    for rule in route.spec.rules.as_deref().unwrap_or_default() {
        let mut matches = Vec::new();
        for m in rule.matches.as_deref().unwrap_or_default() {
            let path = match &m.method {
                None => serde_json::json!({"type": "PathPrefix", "value": "/"}),
                Some(method) => {
                    let regex = method
                        .r#type
                        .as_ref()
                        .is_some_and(|t| serde_json::to_value(t).ok() == Some("RegularExpression".into()));
                    // A segment of the gRPC path: `/package.Service/Method`.
                    let segment = |part: Option<&str>| match part {
                        None | Some("") => "[^/]+".to_owned(),
                        Some(p) if regex => format!("(?:{p})"),
                        Some(p) => regex::escape(p),
                    };
                    let service = method.service.as_deref().filter(|s| !s.is_empty());
                    let name = method.method.as_deref().filter(|m| !m.is_empty());
                    match (regex, service, name) {
                        (false, Some(svc), Some(m)) => {
                            serde_json::json!({"type": "Exact", "value": format!("/{svc}/{m}")})
                        }
                        (false, Some(svc), None) => {
                            serde_json::json!({"type": "PathPrefix", "value": format!("/{svc}")})
                        }
                        _ => serde_json::json!({
                            "type": "RegularExpression",
                            "value": format!("/{}/{}", segment(service), segment(name)),
                        }),
                    }
                }
            };
            matches.push(serde_json::json!({"path": path, "headers": m.headers}));
        }
        rules.push(serde_json::json!({
            "name": rule.name,
            "matches": matches,
            "filters": rule.filters,
            "backendRefs": rule.backend_refs,
        }));
    }
    let value = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": route.metadata,
        "spec": {
            "hostnames": route.spec.hostnames,
            "parentRefs": route.spec.parent_refs,
            "rules": rules,
        },
    });
    serde_json::from_value(strip_nulls(value)).map_err(|e| format!("cannot read the GRPCRoute: {e}"))
}

/// JSON without `null` members (the generated types treat a missing field and `null` alike, but
/// not every enum does).
fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, strip_nulls(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(a) => a.into_iter().map(strip_nulls).collect(),
        other => other,
    }
}

/// One `HTTPRouteMatch` → its path and conditions.
fn match_of(m: &HttpRouteRulesMatches) -> Result<(PathMatch, RequestConditions), String> {
    let (ty, value) = match &m.path {
        Some(p) => (
            p.r#type
                .clone()
                .unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix),
            p.value.clone().unwrap_or_else(|| "/".into()),
        ),
        None => (HttpRouteRulesMatchesPathType::PathPrefix, "/".into()),
    };
    if !value.starts_with('/') {
        return Err(format!("path {value:?} does not start with '/'"));
    }
    let path = match ty {
        HttpRouteRulesMatchesPathType::Exact => PathMatch::Exact(value),
        HttpRouteRulesMatchesPathType::PathPrefix => PathMatch::Prefix(value),
        HttpRouteRulesMatchesPathType::RegularExpression => PathMatch::FullRegex(value),
    };
    path.validate().map_err(|e| e.to_string())?;
    let mut c = RequestConditions::default();
    if let Some(method) = &m.method {
        let name = serde_json::to_value(method)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or("unknown method")?;
        c.method =
            Some(Method::from_bytes(name.as_bytes()).map_err(|_| format!("method {name} is invalid"))?);
    }
    let mut seen = std::collections::HashSet::new();
    for h in m.headers.iter().flatten() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("header name {:?} is invalid", h.name))?;
        // The spec: a repeated name (case-insensitive) counts once, the first one.
        if !seen.insert(name.clone()) {
            continue;
        }
        let value = match h
            .r#type
            .clone()
            .unwrap_or(HttpRouteRulesMatchesHeadersType::Exact)
        {
            HttpRouteRulesMatchesHeadersType::Exact => ValueMatch::Exact(h.value.clone()),
            HttpRouteRulesMatchesHeadersType::RegularExpression => {
                ValueMatch::regex(&h.value).map_err(|e| format!("header {} regex: {e}", h.name))?
            }
        };
        c.headers.push((name, value));
    }
    let mut seen = BTreeSet::new();
    for q in m.query_params.iter().flatten() {
        if !seen.insert(q.name.clone()) {
            continue;
        }
        let value = match q
            .r#type
            .clone()
            .unwrap_or(HttpRouteRulesMatchesQueryParamsType::Exact)
        {
            HttpRouteRulesMatchesQueryParamsType::Exact => ValueMatch::Exact(q.value.clone()),
            HttpRouteRulesMatchesQueryParamsType::RegularExpression => {
                ValueMatch::regex(&q.value).map_err(|e| format!("query {} regex: {e}", q.name))?
            }
        };
        c.query.push((q.name.clone(), value));
    }
    Ok((path, c))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn durations_follow_gep_2257() {
        assert_eq!(parse_duration("10s"), Ok(Some(Duration::from_secs(10))));
        assert_eq!(parse_duration("1m30s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_duration("500ms"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(parse_duration("1h"), Ok(Some(Duration::from_secs(3600))));
        assert_eq!(parse_duration("0s"), Ok(None));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("123456s").is_err());
    }

    #[test]
    fn hostnames_intersect_as_the_spec_says() {
        let any = HostMatch::Any;
        let exact = |h: &str| HostMatch::Exact(h.into());
        let wild = |h: &str| HostMatch::WildcardAnyDepth(h.into());
        assert_eq!(intersect(&any, &[]), vec![any.clone()]);
        assert_eq!(
            intersect(&exact("a.example.com"), &[]),
            vec![exact("a.example.com")]
        );
        assert_eq!(intersect(&wild("example.com"), &[]), vec![wild("example.com")]);
        assert_eq!(intersect(&any, &[exact("a.b")]), vec![exact("a.b")]);
        assert_eq!(intersect(&any, &[wild("b.com")]), vec![wild("b.com")]);
        // A wildcard listener: exact route hostnames under it, at any depth; never its parent.
        assert_eq!(
            intersect(
                &wild("example.com"),
                &[
                    exact("a.example.com"),
                    exact("a.other.com"),
                    exact("a.b.example.com"),
                    exact("example.com"),
                    exact("aexample.com"),
                ]
            ),
            vec![exact("a.example.com"), exact("a.b.example.com")]
        );
        // An exact listener: route wildcards it is under, at any depth.
        assert_eq!(
            intersect(&exact("a.example.com"), &[wild("example.com")]),
            vec![exact("a.example.com")]
        );
        assert_eq!(
            intersect(&exact("foo.bar.com"), &[wild("bar.com")]),
            vec![exact("foo.bar.com")]
        );
        assert_eq!(
            intersect(
                &exact("very.specific.com"),
                &[exact("non.matching.com"), wild("specific.com")]
            ),
            vec![exact("very.specific.com")]
        );
        assert!(intersect(&exact("bar.com"), &[wild("bar.com")]).is_empty());
        assert!(intersect(&exact("a.example.com"), &[exact("b.example.com")]).is_empty());
        // Two wildcards: the more specific when one is under the other, else none.
        assert_eq!(
            intersect(&wild("bar.com"), &[wild("bar.com")]),
            vec![wild("bar.com")]
        );
        assert_eq!(
            intersect(&wild("bar.com"), &[wild("foo.bar.com")]),
            vec![wild("foo.bar.com")]
        );
        assert_eq!(
            intersect(&wild("foo.bar.com"), &[wild("bar.com")]),
            vec![wild("foo.bar.com")]
        );
        assert!(intersect(&wild("bar.com"), &[wild("foobar.com"), wild("baz.com")]).is_empty());
        assert!(intersect(&wild("wildcard.io"), &[wild("nonmatchingwildcard.io")]).is_empty());
        // Duplicates collapse.
        assert_eq!(
            intersect(&wild("bar.com"), &[exact("a.bar.com"), exact("a.bar.com")]),
            vec![exact("a.bar.com")]
        );
    }

    #[test]
    fn gateway_hostnames_are_any_depth_wildcards() {
        assert_eq!(
            gateway_host(Some("*.Bar.com")),
            Ok(HostMatch::WildcardAnyDepth("bar.com".into()))
        );
        assert_eq!(
            gateway_host(Some("foo.bar.com")),
            Ok(HostMatch::Exact("foo.bar.com".into()))
        );
        assert_eq!(gateway_host(None), Ok(HostMatch::Any));
        assert!(gateway_host(Some("a.*.com")).is_err());
        // The Ingress reading stays one label.
        assert_eq!(
            parse_host(Some("*.bar.com")),
            Ok(HostMatch::Wildcard("bar.com".into()))
        );
    }

    #[test]
    fn listener_only_conditions_are_shared_and_others_are_kept() {
        let listener = |tls| RequestConditions {
            tls,
            ..RequestConditions::default()
        };
        assert_eq!(shared_conditions(listener(None)), None);
        let (a, b) = (
            shared_conditions(listener(Some(false))).unwrap(),
            shared_conditions(listener(Some(false))).unwrap(),
        );
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*a, listener(Some(false)));
        assert_eq!(
            *shared_conditions(listener(Some(true))).unwrap(),
            listener(Some(true))
        );
        let put = RequestConditions {
            method: Some(http::Method::PUT),
            ..listener(Some(true))
        };
        assert_eq!(*shared_conditions(put.clone()).unwrap(), put);
    }
}
