//! Gantry's custom resource: `ProxyConfig` (`gantry.dev/v1alpha1`, cluster-scoped), the class-wide
//! settings an IngressClass points to through `spec.parameters`.
//!
//! These types are the source of the CRD: the `crdgen` binary prints [`crd_yaml`], which is checked in
//! under `crds/` and shipped by the chart, and a test fails when the two drift.
//!
//! Every field is optional; an absent field leaves the flag's value in force. The schema refuses what
//! it can (patterns, bounds, enums, CEL rules), so the API server rejects most mistakes at
//! `kubectl apply`. What it cannot see (file mode has no API server, and an object may predate a
//! stricter schema) is checked again by translation, which reports a diagnostic and keeps the value
//! in force for that field (see `translate::settings`).

use std::{borrow::Cow, fmt, time::Duration};

use kube::{CustomResource, CustomResourceExt};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// The API group of Gantry's resources, and the `apiGroup` of an IngressClass's `spec.parameters`.
pub const GROUP: &str = "gantry.dev";
/// The version of [`ProxyConfig`].
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "gantry.dev/v1alpha1";
/// The kind, as named in `spec.parameters.kind`.
pub const KIND: &str = "ProxyConfig";

/// Bounds (inclusive) of `maxHeaderBytes`: hyper needs an 8 KiB read buffer; 1 MiB of headers is
/// already an attack, not a request.
pub const MAX_HEADER_BYTES: (u32, u32) = (8192, 1 << 20);
/// Bounds (inclusive) of `maxHeaders`.
pub const MAX_HEADERS: (u32, u32) = (1, 10_000);
/// Bounds (inclusive) of `http2MaxConcurrentStreams`.
pub const HTTP2_MAX_CONCURRENT_STREAMS: (u32, u32) = (1, 10_000);
/// The HSTS max-age when the hsts block gives none: one year, as browsers' preload lists expect.
pub const HSTS_DEFAULT_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Class-wide settings of the Gantry data path. Flags give the defaults; the ProxyConfig named by
/// the IngressClass's `spec.parameters` overrides them, and a change is applied by the next routing
/// snapshot without a restart.
// Several print columns repeat `type_ = "string"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "ProxyConfig",
    shortname = "gpc",
    category = "gantry",
    doc = "Class-wide settings of the Gantry data path (timeouts, limits, load balancing, backend mode, \
           TLS, HSTS, access log). An IngressClass refers to it with spec.parameters (apiGroup \
           gantry.dev, kind ProxyConfig, scope Cluster). Absent fields keep the controller's flag values.",
    printcolumn(name = "Balancer", type_ = "string", json_path = ".spec.balancer"),
    printcolumn(name = "Backend-Mode", type_ = "string", json_path = ".spec.backendMode"),
    printcolumn(
        name = "Response-Timeout",
        type_ = "string",
        json_path = ".spec.upstreamResponseTimeout"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfigSpec {
    /// Time a client has to send a complete request head, and a TLS handshake to finish
    /// (flag --header-read-timeout, default 30s). Applies to new connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_read_timeout: Option<GoDuration>,

    /// A client connection with no request in flight and no bytes moving is closed after this
    /// (flag --idle-timeout, default 60s). Applies to new connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<GoDuration>,

    /// Time to open a TCP connection to an endpoint; on expiry the next endpoint is tried once, then
    /// 502 (flag --upstream-connect-timeout, default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_connect_timeout: Option<GoDuration>,

    /// Time from sending a request upstream to its response head; on expiry 504. Does not bound the
    /// response body (flag --upstream-response-timeout, default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_response_timeout: Option<GoDuration>,

    /// Largest request head (request line and headers) in bytes; beyond it 431
    /// (flag --max-header-bytes, default 61440). Applies to new connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MAX_HEADER_BYTES.0, max = MAX_HEADER_BYTES.1))]
    pub max_header_bytes: Option<u32>,

    /// Most request headers; beyond it 431 (flag --max-headers, default 100). Applies to new
    /// connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MAX_HEADERS.0, max = MAX_HEADERS.1))]
    pub max_headers: Option<u32>,

    /// Streams one HTTP/2 client connection may have open (flag --http2-max-concurrent-streams,
    /// default 250). Applies to new connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = HTTP2_MAX_CONCURRENT_STREAMS.0, max = HTTP2_MAX_CONCURRENT_STREAMS.1))]
    pub http2_max_concurrent_streams: Option<u32>,

    /// How a backend picks one of its endpoints (flag --load-balance, default RoundRobin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<Balancer>,

    /// Where requests are forwarded: pod IPs from EndpointSlices, or the Service's nodePort on every
    /// ready Node (flag --backend-mode, default Endpoints). The Ingress annotation
    /// gantry.dev/backend-mode still wins. NodePort needs the controller to watch Nodes, which it
    /// does when started with --backend-mode=node-port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_mode: Option<BackendMode>,

    /// The oldest TLS version a client may use (default "1.2"). Applies to new connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<TlsMinVersion>,

    /// The kubernetes.io/tls Secret served when SNI is absent or names no configured host
    /// (flag --default-ssl-certificate; default a self-signed certificate generated at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_certificate: Option<SecretRef>,

    /// Strict-Transport-Security on HTTPS responses that do not set it themselves (default off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<HstsSpec>,

    /// One line per request on stdout (flag --access-log, default on, JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogSpec>,

    /// Every connection to the traffic listeners opens with a PROXY protocol header (v1 or v2)
    /// naming the client; one without is closed (flag --proxy-protocol, default false;
    /// ingress-nginx's use-proxy-protocol). Applies to new connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<bool>,

    /// CIDRs of proxies in front of Gantry whose X-Forwarded-For and X-Forwarded-Proto/-Host/-Port
    /// are believed (flag --trusted-proxies; ingress-nginx's use-forwarded-headers with
    /// proxy-real-ip-cidr). An invalid entry is reported and the last good list kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,

    /// Tracing (W3C Trace Context, spans over OTLP to the collector of flag --otlp-endpoint):
    /// which routes are traced and what share of their requests is sampled. Absent fields keep
    /// the flags' values (--tracing, --trace-sampling-ratio, --trace-parent-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
}

// Class-wide tracing.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// Trace every route unless its Ingress says enable-opentelemetry "false" (ingress-nginx's
    /// enable-opentelemetry ConfigMap key); without it only Ingresses that say "true" are traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The share of a traced route's requests that is sampled, 0 to 1 (ingress-nginx's
    /// otel-sampler-ratio; flag default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling_ratio: Option<f64>,
    /// A request whose trusted traceparent is sampled is sampled whatever the ratio
    /// (ingress-nginx's otel-sampler-parent-based; default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_based: Option<bool>,
}

/// A `tracing` field that cannot be used: its name, why, and the value kept instead.
pub type TracingProblem = (&'static str, String, String);

// === impl TracingSpec ===

impl TracingSpec {
    /// The settings this spec makes of the flags' (`base`); a field that is out of range keeps its
    /// value in `last` and is reported.
    pub fn apply(
        &self,
        base: gantry_proxy::trace::TraceSettings,
        last: gantry_proxy::trace::TraceSettings,
        bad: &mut Vec<TracingProblem>,
    ) -> gantry_proxy::trace::TraceSettings {
        let mut t = base;
        if let Some(enabled) = self.enabled {
            t.enabled = enabled;
        }
        match self.sampling_ratio {
            None => {}
            Some(r) if (0.0..=1.0).contains(&r) => t.sampling_per_million = crate::cli::per_million(r),
            Some(r) => {
                t.sampling_per_million = last.sampling_per_million;
                let kept = f64::from(last.sampling_per_million) / 1_000_000.0;
                bad.push((
                    "tracing.samplingRatio",
                    format!("{r} is outside 0..=1"),
                    kept.to_string(),
                ));
            }
        }
        if let Some(parent_based) = self.parent_based {
            t.parent_based = parent_based;
        }
        t
    }
}

// How a backend picks one of its endpoints. (Plain comments on these types: a doc comment would
// replace the field's description in the schema.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Balancer {
    /// Each endpoint in turn.
    RoundRobin,
    /// Power of two choices on requests in flight.
    LeastRequest,
}

// Where a backend's endpoints come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum BackendMode {
    /// Pod IPs and ports from the Service's EndpointSlices.
    Endpoints,
    /// Every ready Node's address with the Service port's nodePort.
    NodePort,
}

// The oldest TLS version accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TlsMinVersion {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

// Access-log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// The nginx/Apache combined style.
    Text,
}

// A Secret in a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct SecretRef {
    /// The Secret's namespace.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: String,
    /// The Secret's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

// HTTP Strict Transport Security.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HstsSpec {
    /// Whether the header is added; default true when the hsts block is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// max-age, as a duration (whole seconds are sent); default 8760h (one year). 0s tells browsers
    /// to forget the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<HstsMaxAge>,
    /// Adds includeSubDomains; default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_sub_domains: Option<bool>,
    /// Adds preload; default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<bool>,
}

// The access log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogSpec {
    /// One line per request on stdout; default: the flag --access-log (on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Line format; default json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AccessLogFormat>,
}

/// The Go-style duration pattern: one or more decimal numbers, each with a unit (`ms`, `s`, `m`,
/// `h`), e.g. `1m30s`, `1.5s`, `250ms`. It is the subset of Go's `time.ParseDuration` that makes
/// sense for these settings, so the API server's CEL `duration()` reads every value it admits.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// Long enough for any sensible duration; CEL needs a bound to estimate the cost of its rules.
const DURATION_MAX_LENGTH: u32 = 32;

/// A duration written the Go way (`30s`, `1m30s`, `1.5s`, `250ms`), greater than zero. Kept as text
/// so that a value the schema does not catch reaches translation and costs a diagnostic, not the
/// whole object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct GoDuration(pub String);

/// Like [`GoDuration`], and zero is allowed (HSTS `max-age=0` tells browsers to forget a host).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct HstsMaxAge(pub GoDuration);

/// Why a duration cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text does not match [`DURATION_PATTERN`].
    #[error("{0:?} is not a duration like 30s, 1m30s, 1.5s or 250ms")]
    Syntax(String),
    /// The value does not fit.
    #[error("{0:?} is too long a duration")]
    Overflow(String),
    /// Zero where a timeout is meant: it would fail every request.
    #[error("{0:?} must be greater than zero")]
    Zero(String),
}

// === impl GoDuration ===

impl GoDuration {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The duration, which must be greater than zero.
    pub fn parse(&self) -> Result<Duration, DurationError> {
        let d = parse_go_duration(&self.0)?;
        if d.is_zero() {
            return Err(DurationError::Zero(self.0.clone()));
        }
        Ok(d)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for GoDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": DURATION_MAX_LENGTH,
            "x-kubernetes-validations": [{
                "rule": "duration(self) > duration('0s')",
                "message": "must be greater than zero",
            }],
        })
    }
}

// === impl HstsMaxAge ===

impl HstsMaxAge {
    pub fn new(s: impl Into<String>) -> Self {
        Self(GoDuration::new(s))
    }

    /// The duration; zero is fine.
    pub fn parse(&self) -> Result<Duration, DurationError> {
        parse_go_duration(&self.0 .0)
    }
}

impl JsonSchema for HstsMaxAge {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "HstsMaxAge".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": DURATION_MAX_LENGTH,
        })
    }
}

/// Parses [`DURATION_PATTERN`] text: `<number>[.<fraction>]<unit>` repeated. Fractions below a
/// nanosecond are dropped, as Go does.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_string());
    let overflow = || DurationError::Overflow(text.to_string());
    if text.is_empty() {
        return Err(syntax());
    }
    let mut rest = text.as_bytes();
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let n = digits(rest);
        if n == 0 {
            return Err(syntax());
        }
        let (whole, tail) = rest.split_at(n);
        let (fraction, tail) = match tail.split_first() {
            Some((b'.', t)) => {
                let f = digits(t);
                if f == 0 {
                    return Err(syntax());
                }
                t.split_at(f)
            }
            _ => (&[][..], tail),
        };
        let (unit_nanos, tail): (u128, &[u8]) = if let Some(t) = tail.strip_prefix(b"ms") {
            (1_000_000, t)
        } else if let Some(t) = tail.strip_prefix(b"s") {
            (1_000_000_000, t)
        } else if let Some(t) = tail.strip_prefix(b"m") {
            (60_000_000_000, t)
        } else if let Some(t) = tail.strip_prefix(b"h") {
            (3_600_000_000_000, t)
        } else {
            return Err(syntax());
        };
        // 20 digits already exceed what a Duration holds in any unit; stop before u128 could overflow.
        if whole.len() > 20 {
            return Err(overflow());
        }
        let whole: u128 = std::str::from_utf8(whole)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(syntax)?;
        let mut nanos = whole * unit_nanos;
        // Only the first 18 fraction digits can matter (units are at most 3.6e12 ns).
        let mut scale = unit_nanos;
        for &d in fraction.iter().take(18) {
            scale /= 10;
            nanos += u128::from(d - b'0') * scale;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// The CustomResourceDefinition of every Gantry resource, as multi-document YAML with a header
/// saying where it comes from. This is what `crdgen` prints and what `crds/` holds.
pub fn crd_yaml() -> String {
    let mut out = String::from(
        "# Generated by `cargo run -p gantry --bin crdgen` from controller/src/crd.rs; do not edit.\n",
    );
    out.push_str("---\n");
    out.push_str(&serde_norway::to_string(&ProxyConfig::crd()).expect("a CRD serializes to YAML"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_with_units_fractions_and_sequences() {
        let cases = [
            ("30s", Duration::from_secs(30)),
            ("250ms", Duration::from_millis(250)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("2h", Duration::from_secs(7200)),
            ("0.001s", Duration::from_millis(1)),
            ("1h1m1s1ms", Duration::new(3661, 1_000_000)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn malformed_or_huge_durations_are_errors() {
        for text in ["", "30", "s", "1.s", ".5s", "1d", "-1s", "1 s", "1sx", "1µs"] {
            assert!(
                matches!(parse_go_duration(text), Err(DurationError::Syntax(_))),
                "{text}"
            );
        }
        for text in ["99999999999999999999999h", "6000000000000000h"] {
            assert!(
                matches!(parse_go_duration(text), Err(DurationError::Overflow(_))),
                "{text}"
            );
        }
        assert_eq!(
            GoDuration::new("0ms").parse(),
            Err(DurationError::Zero("0ms".into()))
        );
        assert_eq!(HstsMaxAge::new("0s").parse(), Ok(Duration::ZERO));
    }

    #[test]
    fn the_crd_is_cluster_scoped_with_bounds_enums_and_duration_rules() {
        let crd = serde_json::to_value(ProxyConfig::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "proxyconfigs.gantry.dev");
        assert_eq!(crd["spec"]["scope"], "Cluster");
        let spec =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["maxHeaderBytes"]["minimum"].as_f64(), Some(8192.0));
        assert_eq!(
            spec["balancer"]["enum"],
            serde_json::json!(["RoundRobin", "LeastRequest"])
        );
        assert_eq!(spec["tlsMinVersion"]["enum"], serde_json::json!(["1.2", "1.3"]));
        assert_eq!(spec["upstreamResponseTimeout"]["pattern"], DURATION_PATTERN);
        assert_eq!(
            spec["upstreamResponseTimeout"]["x-kubernetes-validations"][0]["rule"],
            "duration(self) > duration('0s')"
        );
        assert_eq!(
            spec["accessLog"]["properties"]["format"]["enum"],
            serde_json::json!(["json", "text"])
        );
    }

    #[test]
    fn tracing_spec_overrides_the_flags_and_keeps_the_last_good_ratio() {
        use gantry_proxy::trace::TraceSettings;
        let flags = TraceSettings::default();
        let last = TraceSettings {
            sampling_per_million: 50_000,
            ..flags
        };
        let mut bad = Vec::new();
        let spec = TracingSpec {
            enabled: Some(true),
            sampling_ratio: Some(1.0),
            parent_based: Some(true),
        };
        let t = spec.apply(flags, last, &mut bad);
        assert!(t.enabled && t.parent_based && bad.is_empty());
        assert_eq!(t.sampling_per_million, 1_000_000);
        assert_eq!(TracingSpec::default().apply(flags, last, &mut bad), flags);
        let spec = TracingSpec {
            sampling_ratio: Some(2.0),
            ..Default::default()
        };
        let t = spec.apply(flags, last, &mut bad);
        assert_eq!(t.sampling_per_million, 50_000);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, "tracing.samplingRatio");
    }
}
