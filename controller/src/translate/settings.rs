//! Processor 0: the class-wide settings. Flags give the defaults; the `ProxyConfig` that our
//! IngressClass names in `spec.parameters` overrides them for this snapshot.
//!
//! **Which IngressClass.** The data path has one configuration, so one class decides. Among our
//! IngressClasses (by `spec.controller`) that have `spec.parameters`, the first of:
//! 1. the class named by `--ingress-class`;
//! 2. a class marked as the cluster's default class;
//! 3. the others, by name.
//!
//! Every other class of ours whose parameters name something else gets a `ParametersIgnored`
//! diagnostic that names the class that decided.
//!
//! **When the reference does not work** (wrong apiGroup or kind, namespace scope, no such
//! ProxyConfig) the class gets a diagnostic and the flags apply: removing the ProxyConfig is taken
//! as meaning it.
//!
//! **Invalid values.** The CRD's schema refuses almost every bad value at the API server; what
//! still arrives (file mode has no API server; objects written under an older schema) is checked
//! here field by field. A bad field costs a diagnostic on the ProxyConfig and keeps the value that
//! field has in the snapshot being replaced (its last good value; the flag's before the first
//! build), while the valid fields apply. Per field rather than all-or-nothing because one typo
//! should not hold back an urgent, valid change next to it, and because the backend mode and
//! default certificate are not recorded in a snapshot to fall back to.

use std::{sync::Arc, time::Duration};

use gantry_proxy::{
    config::{AccessLogFormat, Hsts, TlsVersion},
    Balancer, ProxyConfig,
};
use k8s_openapi::api::networking::v1::IngressClass;

use super::{class::is_our_class, BackendMode, Build, Problem, TranslateOptions, ANNOTATION_DEFAULT_CLASS};
use crate::{
    crd::{self, GoDuration, ProxyConfigSpec},
    diagnostic::{ObjectKind, ObjectRef},
    store::{ObjectKey, ObjectStore},
};

/// The settings in force for one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Settings {
    pub config: Arc<ProxyConfig>,
    /// For Ingresses without the `gantry.dev/backend-mode` annotation.
    pub backend_mode: BackendMode,
    pub default_ssl_certificate: Option<ObjectKey>,
}

// === impl Settings ===

impl Settings {
    /// The flags' settings, untouched.
    pub fn from_flags(opts: &TranslateOptions) -> Self {
        Self {
            config: opts.proxy_config.clone(),
            backend_mode: opts.backend_mode,
            default_ssl_certificate: opts.default_ssl_certificate.clone(),
        }
    }
}

/// Resolves the settings for this build and reports what is wrong with the classes and the
/// ProxyConfig involved.
pub(super) fn resolve(b: &mut Build<'_>) -> Settings {
    let flags = Settings::from_flags(b.opts);
    let Some((class_name, deciding)) = deciding_class(b.store, b.opts) else {
        return gateway_class_settings(b, flags);
    };
    let class_object = ObjectRef::of(
        ObjectKind::IngressClass,
        &ObjectKey::cluster(&class_name),
        &deciding.metadata,
    );
    let params = deciding
        .spec
        .as_ref()
        .and_then(|s| s.parameters.as_ref())
        .expect("deciding_class only returns classes with parameters");

    // Other classes of ours that point elsewhere: their parameters do not apply.
    for (key, class) in b.store.ingress_classes() {
        if key.name == class_name || !is_our_class(class, b.opts) {
            continue;
        }
        let Some(other) = class.spec.as_ref().and_then(|s| s.parameters.as_ref()) else {
            continue;
        };
        if other != params {
            b.report(
                &ObjectRef::of(ObjectKind::IngressClass, key, &class.metadata),
                Problem::ParametersIgnored {
                    parameters: describe(other),
                    winner: class_name.clone(),
                },
            );
        }
    }

    let supported = params.api_group.as_deref() == Some(crd::GROUP)
        && params.kind == crd::KIND
        && params.scope.as_deref().is_none_or(|s| s == "Cluster")
        && params.namespace.is_none();
    if !supported {
        b.report(
            &class_object,
            Problem::UnsupportedParameters {
                parameters: describe(params),
            },
        );
        return flags;
    }
    let Some(pc) = b.store.proxy_config(&params.name) else {
        b.report(
            &class_object,
            Problem::ProxyConfigNotFound {
                name: params.name.clone(),
            },
        );
        return flags;
    };
    let object = proxy_config_object(&params.name, pc);
    let last = last_config(b);
    let mut bad = Vec::new();
    let settings = apply(&pc.spec, &flags, &last, &mut bad);
    for problem in bad {
        b.report(&object, problem);
    }
    settings
}

/// Without an IngressClass of ours that names parameters, the class-wide settings may come from a
/// GatewayClass of ours whose `parametersRef` names an existing ProxyConfig (the first by name):
/// there is one data path, so one ProxyConfig decides. A GatewayClass whose parameters are invalid
/// is reported by the Gateway API processor (`InvalidParameters`).
fn gateway_class_settings(b: &mut Build<'_>, flags: Settings) -> Settings {
    let Some(gateway) = &b.opts.gateway else {
        return flags;
    };
    let chosen = b
        .store
        .gateway_classes()
        .values()
        .filter(|c| c.spec.controller_name == gateway.controller_name)
        .filter_map(|c| c.spec.parameters_ref.as_ref())
        .filter(|p| p.group == crd::GROUP && p.kind == crd::KIND)
        .find_map(|p| b.store.proxy_config(&p.name).map(|pc| (p.name.clone(), pc)));
    let Some((name, pc)) = chosen else {
        return flags;
    };
    let last = last_config(b);
    let mut bad = Vec::new();
    let settings = apply(&pc.spec, &flags, &last, &mut bad);
    let object = proxy_config_object(&name, pc);
    for problem in bad {
        b.report(&object, problem);
    }
    settings
}

/// ProxyConfig `name`, as its diagnostics name it.
fn proxy_config_object(name: &str, pc: &crd::ProxyConfig) -> ObjectRef {
    ObjectRef::of(ObjectKind::ProxyConfig, &ObjectKey::cluster(name), &pc.metadata)
}

/// The value each field has now: the snapshot being replaced, or the flags before the first build
/// (the empty snapshot's settings are not necessarily the flags').
fn last_config(b: &Build<'_>) -> std::sync::Arc<gantry_proxy::ProxyConfig> {
    if b.previous.generation == 0 {
        b.opts.proxy_config.clone()
    } else {
        b.previous.config.clone()
    }
}

/// `spec` over the flags' settings; a field that does not validate keeps its value in `last` and
/// adds a problem to `bad`.
fn apply(spec: &ProxyConfigSpec, flags: &Settings, last: &ProxyConfig, bad: &mut Vec<Problem>) -> Settings {
    let base = &*flags.config;
    let mut c = base.clone();
    let mut invalid = |field: &'static str, error: String, kept: String| {
        bad.push(Problem::InvalidProxyConfig { field, error, kept });
    };

    let mut timeout =
        |field: &'static str, value: &Option<GoDuration>, flag: Duration, last: Duration| match value
            .as_ref()
            .map(GoDuration::parse)
        {
            None => flag,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                invalid(field, e.to_string(), humantime::format_duration(last).to_string());
                last
            }
        };
    c.header_read_timeout = timeout(
        "headerReadTimeout",
        &spec.header_read_timeout,
        base.header_read_timeout,
        last.header_read_timeout,
    );
    c.idle_timeout = timeout(
        "idleTimeout",
        &spec.idle_timeout,
        base.idle_timeout,
        last.idle_timeout,
    );
    c.upstream_connect_timeout = timeout(
        "upstreamConnectTimeout",
        &spec.upstream_connect_timeout,
        base.upstream_connect_timeout,
        last.upstream_connect_timeout,
    );
    c.upstream_response_timeout = timeout(
        "upstreamResponseTimeout",
        &spec.upstream_response_timeout,
        base.upstream_response_timeout,
        last.upstream_response_timeout,
    );

    let mut limit =
        |field: &'static str, value: Option<u32>, (min, max): (u32, u32), flag: u32, last: u32| match value {
            None => flag,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                invalid(field, format!("{v} is outside {min}..={max}"), last.to_string());
                last
            }
        };
    let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    c.max_header_bytes = limit(
        "maxHeaderBytes",
        spec.max_header_bytes,
        crd::MAX_HEADER_BYTES,
        as_u32(base.max_header_bytes),
        as_u32(last.max_header_bytes),
    ) as usize;
    c.max_headers = limit(
        "maxHeaders",
        spec.max_headers,
        crd::MAX_HEADERS,
        as_u32(base.max_headers),
        as_u32(last.max_headers),
    ) as usize;
    c.http2_max_concurrent_streams = limit(
        "http2MaxConcurrentStreams",
        spec.http2_max_concurrent_streams,
        crd::HTTP2_MAX_CONCURRENT_STREAMS,
        base.http2_max_concurrent_streams,
        last.http2_max_concurrent_streams,
    );

    if let Some(balancer) = spec.balancer {
        c.balancer = match balancer {
            crd::Balancer::RoundRobin => Balancer::RoundRobin,
            crd::Balancer::LeastRequest => Balancer::LeastRequest,
        };
    }
    if let Some(v) = spec.tls_min_version {
        c.tls_min_version = match v {
            crd::TlsMinVersion::Tls12 => TlsVersion::Tls12,
            crd::TlsMinVersion::Tls13 => TlsVersion::Tls13,
        };
    }
    if let Some(log) = &spec.access_log {
        if let Some(enabled) = log.enabled {
            c.access_log = enabled;
        }
        if let Some(format) = log.format {
            c.access_log_format = match format {
                crd::AccessLogFormat::Json => AccessLogFormat::Json,
                crd::AccessLogFormat::Text => AccessLogFormat::Text,
            };
        }
    }
    if let Some(on) = spec.proxy_protocol {
        c.proxy_protocol = on;
    }
    if let Some(list) = &spec.trusted_proxies {
        let parsed: Result<Vec<ipnet::IpNet>, String> = list
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{s:?} is not a CIDR or an IP address"))
            })
            .collect();
        match parsed {
            Ok(nets) => c.trusted_proxies = nets,
            Err(e) => {
                c.trusted_proxies = last.trusted_proxies.clone();
                invalid("trustedProxies", e, format!("{:?}", last.trusted_proxies));
            }
        }
    }
    if let Some(tracing) = &spec.tracing {
        let mut problems = Vec::new();
        c.tracing = tracing.apply(base.tracing, last.tracing, &mut problems);
        for (field, error, kept) in problems {
            invalid(field, error, kept);
        }
    }
    if let Some(hsts) = &spec.hsts {
        c.hsts = match hsts.enabled {
            Some(false) => None,
            // The block itself turns HSTS on.
            Some(true) | None => {
                let max_age = match hsts.max_age.as_ref().map(crd::HstsMaxAge::parse) {
                    None => crd::HSTS_DEFAULT_MAX_AGE,
                    Some(Ok(d)) => d,
                    Some(Err(e)) => {
                        let kept = last
                            .hsts
                            .as_ref()
                            .map_or(crd::HSTS_DEFAULT_MAX_AGE, |h| h.max_age);
                        invalid(
                            "hsts.maxAge",
                            e.to_string(),
                            humantime::format_duration(kept).to_string(),
                        );
                        kept
                    }
                };
                Some(Hsts {
                    max_age,
                    include_subdomains: hsts.include_sub_domains.unwrap_or(false),
                    preload: hsts.preload.unwrap_or(false),
                })
            }
        };
    }

    let backend_mode = match spec.backend_mode {
        None => flags.backend_mode,
        Some(crd::BackendMode::Endpoints) => BackendMode::Endpoints,
        Some(crd::BackendMode::NodePort) => BackendMode::NodePort,
    };
    let default_ssl_certificate = match &spec.default_certificate {
        None => flags.default_ssl_certificate.clone(),
        Some(r) if !r.namespace.is_empty() && !r.name.is_empty() => {
            Some(ObjectKey::new(&r.namespace, &r.name))
        }
        Some(_) => {
            let kept = flags.default_ssl_certificate.as_ref().map_or_else(
                || "the flag's (none)".to_string(),
                |k| format!("the flag's ({k})"),
            );
            invalid(
                "defaultCertificate",
                "namespace and name are both required".into(),
                kept,
            );
            flags.default_ssl_certificate.clone()
        }
    };

    // Every field was checked above; this only guards against the two lists of rules drifting apart.
    let config = match c.validate() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            invalid("spec", e.to_string(), "the previous settings".into());
            Arc::new(last.clone())
        }
    };
    Settings {
        config,
        backend_mode,
        default_ssl_certificate,
    }
}

/// The IngressClass whose parameters decide (see the module documentation), with its name.
fn deciding_class<'a>(store: &'a ObjectStore, opts: &TranslateOptions) -> Option<(String, &'a IngressClass)> {
    store
        .ingress_classes()
        .iter()
        .filter(|(_, c)| is_our_class(c, opts) && c.spec.as_ref().is_some_and(|s| s.parameters.is_some()))
        .min_by_key(|(key, c)| {
            let is_default = c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_DEFAULT_CLASS))
                .is_some_and(|v| v == "true");
            (key.name != opts.ingress_class, !is_default, &key.name)
        })
        .map(|(key, c)| (key.name.clone(), c))
}

/// `ProxyConfig name (gantry.dev)`, or whatever else the parameters name.
fn describe(p: &k8s_openapi::api::networking::v1::IngressClassParametersReference) -> String {
    let group = p.api_group.as_deref().unwrap_or("core");
    let mut s = format!("{} {} ({group}", p.kind, p.name);
    match (p.scope.as_deref(), p.namespace.as_deref()) {
        (Some("Namespace"), Some(ns)) | (None, Some(ns)) => s.push_str(&format!(", namespace {ns}")),
        (Some("Namespace"), None) => s.push_str(", namespace scope"),
        _ => {}
    }
    s.push(')');
    s
}
