//! Command-line flags. Every flag also reads an environment variable (`GANTRY_<FLAG>`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

use crate::{store::ObjectKey, translate::BackendMode};

/// Gantry: a Kubernetes Ingress controller. Serves Ingress objects from a folder of manifests
/// (`--manifests`), the bundled demo (`--demo`), or, without either, the cluster (cluster mode).
#[derive(Debug, Parser)]
#[command(name = "gantry", version)]
pub struct Args {
    /// Without a subcommand, Gantry serves.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Serve the Kubernetes manifests (.yaml, .yml, .json) found below DIR instead of a cluster.
    /// Changes to the folder are applied within a second, without a restart.
    #[arg(long, env = "GANTRY_MANIFESTS", value_name = "DIR", conflicts_with = "demo")]
    pub manifests: Option<PathBuf>,

    /// Run the bundled demo: start demo backends on 127.0.0.1:9101-9103 and serve the bundled example
    /// manifests (hosts demo.localhost and *.apps.localhost, plus a default backend).
    #[arg(long, env = "GANTRY_DEMO")]
    pub demo: bool,

    /// Plain-HTTP listener.
    #[arg(long, env = "GANTRY_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// HTTPS listener (TLS 1.2 and 1.3; ALPN h2 and http/1.1).
    #[arg(long, env = "GANTRY_HTTPS_ADDR", default_value = "0.0.0.0:8443")]
    pub https_addr: SocketAddr,

    /// Admin listener: /healthz, /readyz, /metrics, /debug/routes.
    #[arg(long, env = "GANTRY_ADMIN_ADDR", default_value = "0.0.0.0:10254")]
    pub admin_addr: SocketAddr,

    /// The IngressClass name this controller serves (also matched against `spec.ingressClassName`
    /// and the legacy `kubernetes.io/ingress.class` annotation).
    #[arg(long, env = "GANTRY_INGRESS_CLASS", default_value = "gantry")]
    pub ingress_class: String,

    /// The `spec.controller` value of IngressClasses this controller serves.
    #[arg(
        long,
        env = "GANTRY_CONTROLLER_NAME",
        default_value = "gantry.dev/ingress-controller"
    )]
    pub controller_name: String,

    /// The Gateway API: the `spec.controllerName` of GatewayClasses this controller serves. Their
    /// Gateways, HTTPRoutes and ReferenceGrants are read (cluster mode: when the Gateway API CRDs
    /// are installed) and compiled into the same routes as the Ingresses. `off` ignores the
    /// Gateway API.
    #[arg(
        long,
        env = "GANTRY_GATEWAY_CONTROLLER_NAME",
        default_value = "gantry.dev/gateway-controller"
    )]
    pub gateway_controller_name: String,

    /// The Gateway API: the port clients reach Gantry's plain HTTP listener on (the port of the
    /// Service in front of it). A Gateway's `HTTP` listeners must use it.
    #[arg(long, env = "GANTRY_GATEWAY_HTTP_PORT", default_value_t = 80)]
    pub gateway_http_port: u16,

    /// The Gateway API: the port clients reach Gantry's TLS listener on. A Gateway's `HTTPS`
    /// listeners must use it.
    #[arg(long, env = "GANTRY_GATEWAY_HTTPS_PORT", default_value_t = 443)]
    pub gateway_https_port: u16,

    /// The Gateway API: give every Gateway an address of its own from this CIDR (IPv4 or IPv6),
    /// published in its status, and serve its routes only to connections made to that address
    /// (a Gateway's `spec.addresses` may ask for one in the pool). Gantry's listeners must receive
    /// traffic for the pool's addresses: a local route on the node (`ip route add local CIDR dev
    /// lo`) or a load balancer that keeps the destination address. Without it, every Gateway is
    /// served on every address, with the Ingresses, and publishes Gantry's addresses.
    #[arg(long, env = "GANTRY_GATEWAY_ADDRESS_POOL", value_name = "CIDR")]
    pub gateway_address_pool: Option<ipnet::IpNet>,

    /// Where to forward: pod IPs from EndpointSlices (`endpoints`), or the Service's nodePort on
    /// every ready Node (`node-port`). An Ingress may override it with the annotation
    /// `gantry.dev/backend-mode`.
    #[arg(long, env = "GANTRY_BACKEND_MODE", value_enum, default_value_t = BackendModeArg::Endpoints)]
    pub backend_mode: BackendModeArg,

    /// The kubernetes.io/tls Secret (NAMESPACE/NAME) served when SNI is absent or matches no host.
    /// Without it, a self-signed certificate is generated at start.
    #[arg(long, env = "GANTRY_DEFAULT_SSL_CERTIFICATE", value_name = "NAMESPACE/NAME", value_parser = parse_object_key)]
    pub default_ssl_certificate: Option<ObjectKey>,

    /// How endpoints are chosen: `round-robin`, or `least-request` (power of two choices on requests
    /// in flight).
    #[arg(long, env = "GANTRY_LOAD_BALANCE", value_enum, default_value_t = BalancerArg::RoundRobin)]
    pub load_balance: BalancerArg,

    /// Time a client has to send a request head (and finish a TLS handshake).
    #[arg(long, env = "GANTRY_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Time to connect to an endpoint; another endpoint is tried once, then 502.
    #[arg(long, env = "GANTRY_UPSTREAM_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// Time from sending a request to the backend's response head; then 504.
    #[arg(long, env = "GANTRY_UPSTREAM_RESPONSE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub upstream_response_timeout: Duration,

    /// A client connection with no request in flight and no traffic is closed after this.
    #[arg(long, env = "GANTRY_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// After SIGTERM, how long in-flight requests get to finish before the process exits.
    #[arg(long, env = "GANTRY_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Largest request head in bytes (431 beyond it). At least 8192.
    #[arg(long, env = "GANTRY_MAX_HEADER_BYTES", default_value_t = 60 * 1024)]
    pub max_header_bytes: usize,

    /// Most request headers (431 beyond it).
    #[arg(long, env = "GANTRY_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,

    /// Concurrent streams per HTTP/2 client connection.
    #[arg(long, env = "GANTRY_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 250)]
    pub http2_max_concurrent_streams: u32,

    /// One JSON line per request on stdout (`--access-log=false` turns it off).
    #[arg(long, env = "GANTRY_ACCESS_LOG", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub access_log: bool,

    /// TLS session resumption (session cache and TLS 1.3 tickets); `=false` makes every new
    /// connection do a full handshake.
    #[arg(long, env = "GANTRY_TLS_SESSION_RESUMPTION", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls_session_resumption: bool,

    /// Open client connections allowed across the HTTP and HTTPS listeners (0: no limit). Beyond
    /// it, new connections are closed at once and counted in `gantry_connections_refused_total`;
    /// the admin listener is not counted, so health checks keep answering.
    #[arg(long, env = "GANTRY_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Expect a PROXY protocol header (v1 or v2) at the start of every connection to the HTTP and
    /// HTTPS listeners, and take the client's address from it (ingress-nginx's
    /// `use-proxy-protocol`). A connection without one is closed.
    #[arg(long, env = "GANTRY_PROXY_PROTOCOL", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub proxy_protocol: bool,

    /// Proxies in front of Gantry (comma-separated CIDRs) whose `X-Forwarded-For` and
    /// `X-Forwarded-Proto/-Host/-Port` are believed: for their requests the client is the
    /// right-most untrusted `X-Forwarded-For` address, and allow-lists and rate limits judge that
    /// address (ingress-nginx's `use-forwarded-headers` with `proxy-real-ip-cidr`).
    #[arg(
        long,
        env = "GANTRY_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR,..."
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Tracing: the OpenTelemetry collector that spans are sent to over OTLP
    /// (`http://HOST:4317` for gRPC, `http://HOST:4318/v1/traces` for HTTP). Without it nothing
    /// is traced. Spans of sampled requests wait in a bounded queue; when the collector is slow or
    /// down they are dropped and counted (`gantry_trace_spans_dropped_total`), and requests never
    /// wait.
    #[arg(long, env = "GANTRY_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Tracing: OTLP over `grpc` or `http` (protobuf).
    #[arg(long, env = "GANTRY_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocolArg::Grpc)]
    pub otlp_protocol: OtlpProtocolArg,

    /// Tracing: trace every route unless its Ingress says `enable-opentelemetry: "false"`
    /// (ingress-nginx's `enable-opentelemetry` ConfigMap key). Without it, only routes whose
    /// Ingress says `enable-opentelemetry: "true"` are traced.
    #[arg(long, env = "GANTRY_TRACING", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tracing: bool,

    /// Tracing: the share of a traced route's requests that is sampled, 0 to 1 (ingress-nginx's
    /// `otel-sampler-ratio`).
    #[arg(long, env = "GANTRY_TRACE_SAMPLING_RATIO", default_value_t = 0.01, value_parser = parse_ratio)]
    pub trace_sampling_ratio: f64,

    /// Tracing: a request whose trusted `traceparent` is sampled is sampled whatever the ratio
    /// (ingress-nginx's `otel-sampler-parent-based`).
    #[arg(long, env = "GANTRY_TRACE_PARENT_BASED", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub trace_parent_based: bool,

    /// Format of Gantry's own log lines on stderr.
    #[arg(long, env = "GANTRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Threads serving traffic, each with its own event loop and listening sockets (SO_REUSEPORT);
    /// default: one per CPU. The control plane runs on a thread of its own.
    #[arg(long, env = "GANTRY_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Cluster mode: the kubeconfig to use. Without it, `KUBECONFIG` (or `~/.kube/config`) is read
    /// when present, and the in-cluster service account is used otherwise.
    #[arg(long, env = "GANTRY_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Cluster mode: watch Ingresses, Services, EndpointSlices and Secrets in this namespace only.
    /// Repeat the flag (or separate with commas) for several; default: every namespace.
    #[arg(
        long = "watch-namespace",
        env = "GANTRY_WATCH_NAMESPACE",
        value_name = "NAMESPACE",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,

    /// Cluster mode: write the load-balancer addresses of this Service (NAMESPACE/NAME) into the
    /// status of every Ingress served. For a NodePort Service, the addresses of the Nodes (ExternalIP,
    /// else InternalIP) are written instead.
    #[arg(
        long,
        env = "GANTRY_PUBLISH_SERVICE",
        value_name = "NAMESPACE/NAME",
        value_parser = parse_object_key,
        conflicts_with = "publish_status_address"
    )]
    pub publish_service: Option<ObjectKey>,

    /// Cluster mode: write these IP addresses or host names (comma-separated) into the status of
    /// every Ingress served.
    #[arg(
        long,
        env = "GANTRY_PUBLISH_STATUS_ADDRESS",
        value_name = "ADDRESS",
        value_delimiter = ','
    )]
    pub publish_status_address: Vec<String>,

    /// Cluster mode: the name of the coordination.k8s.io Lease that elects the one replica writing
    /// Ingress status and Events (every replica serves traffic).
    #[arg(long, env = "GANTRY_ELECTION_ID", default_value = "gantry-leader")]
    pub election_id: String,

    /// Cluster mode: the namespace of the election Lease; default: `POD_NAMESPACE`, else `default`.
    #[arg(long, env = "GANTRY_ELECTION_NAMESPACE")]
    pub election_namespace: Option<String>,

    /// Cluster mode: this replica's identity in the election Lease and in Events; default:
    /// `POD_NAME`, else the host name and process id.
    #[arg(long, env = "GANTRY_POD_NAME")]
    pub pod_name: Option<String>,
}

/// What else `gantry` can do besides serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a folder of manifests (`--manifests`), else the cluster of `--kubeconfig`, without
    /// serving it: for every Ingress of the class, what each
    /// ingress-nginx annotation becomes (honoured, honoured with a difference, ignored, refused,
    /// invalid, unknown), which Ingresses fail closed, and every other problem. Exit status 0 when
    /// no annotation is refused or invalid, 1 otherwise, 2 on usage or I/O errors.
    Check(CheckArgs),
    /// Which Ingress, rule, path and policies serve a URL, and why each other rule for that host
    /// did not match: from a folder of manifests (`--manifests`), or asked of a running Gantry
    /// (`--admin`, its `/debug/explain`). Exit status 0 when a route serves the URL, 1 when it
    /// would get 404, 2 on usage or I/O errors.
    Explain(ExplainArgs),
}

/// `gantry explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The URL to explain: `http://host/path`, `https://host/path` or `host/path`.
    pub url: String,

    /// The folder of manifests to translate (as `--manifests` serves it).
    #[arg(long, value_name = "DIR", conflicts_with = "admin")]
    pub manifests: Option<PathBuf>,

    /// Ask a running Gantry instead: the address of its admin listener (`host:port`).
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<SocketAddr>,

    /// The class of the Ingresses, instead of `--ingress-class` (with `--manifests`).
    #[arg(long, value_name = "CLASS")]
    pub ingress_class: Option<String>,

    /// The request's method, for routes that match on it (Gateway API).
    #[arg(long, default_value = "GET")]
    pub method: String,

    /// A request header `NAME:VALUE`, for routes that match on headers (Gateway API); repeat for
    /// several.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,

    /// `text` for people, `json` for programs (the `/debug/explain` document).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `gantry check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The folder of manifests to check (.yaml, .yml, .json; Ingresses with the Services, Secrets
    /// and ConfigMaps they name). Without it, the cluster of `--kubeconfig` is read (Ingresses,
    /// Services and EndpointSlices of `--watch-namespace`, and the Secrets and ConfigMaps the
    /// class's Ingresses name).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// `text` for people, `json` for programs (one document; its shape is documented in
    /// `gantry::check`).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// The class of the Ingresses to check, instead of `--ingress-class` (`nginx` for manifests
    /// written for ingress-nginx).
    #[arg(long, value_name = "CLASS")]
    pub ingress_class: Option<String>,

    /// Print the table of every ingress-nginx annotation and what Gantry does with it (Markdown),
    /// and exit.
    #[arg(long)]
    pub annotations_table: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendModeArg {
    Endpoints,
    NodePort,
}

impl From<BackendModeArg> for BackendMode {
    fn from(m: BackendModeArg) -> Self {
        match m {
            BackendModeArg::Endpoints => BackendMode::Endpoints,
            BackendModeArg::NodePort => BackendMode::NodePort,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BalancerArg {
    RoundRobin,
    LeastRequest,
}

/// How spans reach the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocolArg {
    Grpc,
    Http,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a number from 0 to 1")),
    }
}

/// A sampling ratio (0 to 1) as requests per million.
pub fn per_million(ratio: f64) -> u32 {
    (ratio.clamp(0.0, 1.0) * 1_000_000.0).round() as u32
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 30s, 500ms, 2m)"))
}

fn parse_object_key(s: &str) -> Result<ObjectKey, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjectKey::new(ns, name))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {s:?}")),
    }
}

impl Args {
    /// How Gantry takes part in the Gateway API; `None` with `--gateway-controller-name off`.
    pub fn gateway_options(&self) -> Option<crate::translate::gateway::GatewayOptions> {
        (self.gateway_controller_name != "off").then(|| crate::translate::gateway::GatewayOptions {
            controller_name: self.gateway_controller_name.clone(),
            http_port: self.gateway_http_port,
            https_port: self.gateway_https_port,
            address_pool: self.gateway_address_pool,
        })
    }

    /// The namespace of the election Lease: the flag, else `POD_NAMESPACE`, else `default`.
    pub fn election_namespace(&self) -> String {
        self.election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| crate::store::DEFAULT_NAMESPACE.to_string())
    }

    /// This replica's identity: the flag, else `POD_NAME`, else `<host name>-<process id>`. The
    /// process id keeps two replicas on one host (outside a cluster) from sharing an identity, and
    /// so from both believing they hold the Lease.
    pub fn identity(&self) -> String {
        self.pod_name
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME")
                    .ok()
                    .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "gantry".to_string());
                format!("{host}-{}", std::process::id())
            })
    }

    /// The data-path settings, validated.
    pub fn proxy_config(&self) -> Result<gantry_proxy::ProxyConfig, gantry_proxy::config::ConfigError> {
        gantry_proxy::ProxyConfig {
            header_read_timeout: self.header_read_timeout,
            upstream_connect_timeout: self.upstream_connect_timeout,
            upstream_response_timeout: self.upstream_response_timeout,
            idle_timeout: self.idle_timeout,
            shutdown_grace: self.shutdown_grace,
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
            balancer: match self.load_balance {
                BalancerArg::RoundRobin => gantry_proxy::Balancer::RoundRobin,
                BalancerArg::LeastRequest => gantry_proxy::Balancer::LeastRequest,
            },
            access_log: self.access_log,
            tls_session_resumption: self.tls_session_resumption,
            max_connections: self.max_connections,
            proxy_protocol: self.proxy_protocol,
            trusted_proxies: self.trusted_proxies.clone(),
            tracing: gantry_proxy::trace::TraceSettings {
                enabled: self.tracing,
                sampling_per_million: per_million(self.trace_sampling_ratio),
                parent_based: self.trace_parent_based,
            },
            ..Default::default()
        }
        .validate()
    }

    /// Where spans are exported, when `--otlp-endpoint` is set.
    pub fn otlp(&self) -> Option<gantry_proxy::trace::ExportConfig> {
        let protocol = match self.otlp_protocol {
            OtlpProtocolArg::Grpc => gantry_proxy::trace::OtlpProtocol::Grpc,
            OtlpProtocolArg::Http => gantry_proxy::trace::OtlpProtocol::Http,
        };
        let endpoint = self.otlp_endpoint.as_ref().filter(|e| !e.is_empty())?;
        Some(gantry_proxy::trace::ExportConfig::new(endpoint.clone(), protocol))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_flags_make_the_settings_and_the_exporter() {
        let a = Args::try_parse_from(["gantry", "--manifests", "/tmp/x"]).unwrap();
        assert_eq!(a.otlp(), None, "no endpoint, no exporter");
        let t = a.proxy_config().unwrap().tracing;
        assert!(!t.enabled && !t.parent_based);
        assert_eq!(t.sampling_per_million, 10_000);
        let a = Args::try_parse_from([
            "gantry",
            "--otlp-endpoint",
            "http://collector:4318/v1/traces",
            "--otlp-protocol",
            "http",
            "--tracing",
            "--trace-sampling-ratio",
            "0.25",
            "--trace-parent-based",
        ])
        .unwrap();
        let export = a.otlp().unwrap();
        assert_eq!(export.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(export.protocol, gantry_proxy::trace::OtlpProtocol::Http);
        let t = a.proxy_config().unwrap().tracing;
        assert!(t.enabled && t.parent_based);
        assert_eq!(t.sampling_per_million, 250_000);
        for bad in ["1.5", "-0.1", "often"] {
            assert!(
                Args::try_parse_from(["gantry", "--trace-sampling-ratio", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_match_the_documented_interface() {
        let a = Args::try_parse_from(["gantry", "--manifests", "/tmp/x"]).unwrap();
        assert_eq!(a.http_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(a.https_addr.to_string(), "0.0.0.0:8443");
        assert_eq!(a.admin_addr.to_string(), "0.0.0.0:10254");
        assert_eq!(a.ingress_class, "gantry");
        assert_eq!(a.controller_name, "gantry.dev/ingress-controller");
        assert_eq!(a.backend_mode, BackendModeArg::Endpoints);
        assert!(a.access_log);
        assert!(a.proxy_config().is_ok());
    }

    #[test]
    fn durations_object_keys_and_booleans_parse_as_documented() {
        let a = Args::try_parse_from([
            "gantry",
            "--demo",
            "--upstream-response-timeout",
            "500ms",
            "--default-ssl-certificate",
            "ingress/default-cert",
            "--access-log=false",
            "--backend-mode",
            "node-port",
        ])
        .unwrap();
        assert_eq!(a.upstream_response_timeout, Duration::from_millis(500));
        assert_eq!(
            a.default_ssl_certificate,
            Some(ObjectKey::new("ingress", "default-cert"))
        );
        assert!(!a.access_log);
        assert_eq!(a.backend_mode, BackendModeArg::NodePort);
        assert!(Args::try_parse_from(["gantry", "--default-ssl-certificate", "nope"]).is_err());
        assert!(Args::try_parse_from(["gantry", "--idle-timeout", "soon"]).is_err());
        let a = Args::try_parse_from(["gantry", "--max-header-bytes", "100"]).unwrap();
        assert!(a.proxy_config().is_err());
    }

    #[test]
    fn check_is_a_subcommand_and_serving_needs_none() {
        let a = Args::try_parse_from(["gantry", "--manifests", "/tmp/x"]).unwrap();
        assert!(a.command.is_none());
        let a =
            Args::try_parse_from(["gantry", "check", "--manifests", "/tmp/y", "--output", "json"]).unwrap();
        let Some(Command::Check(c)) = a.command else {
            panic!("{:?}", a.command)
        };
        assert_eq!(c.manifests.as_deref(), Some(std::path::Path::new("/tmp/y")));
        assert_eq!(c.output, OutputFormat::Json);
        assert!(!c.annotations_table);
        let a = Args::try_parse_from([
            "gantry",
            "--ingress-class",
            "x",
            "check",
            "--ingress-class",
            "nginx",
        ])
        .unwrap();
        assert_eq!(a.ingress_class, "x");
        let Some(Command::Check(c)) = a.command else {
            unreachable!()
        };
        assert_eq!(c.ingress_class.as_deref(), Some("nginx"));
        assert!(Args::try_parse_from(["gantry", "check", "--output", "yaml"]).is_err());
        assert!(Args::try_parse_from(["gantry", "chek"]).is_err());
    }

    #[test]
    fn cluster_flags_repeat_split_on_commas_and_exclude_each_other() {
        let a = Args::try_parse_from([
            "gantry",
            "--watch-namespace",
            "a",
            "--watch-namespace=b,c",
            "--publish-status-address",
            "10.0.0.1,lb.example.com",
            "--election-namespace",
            "ingress",
            "--pod-name",
            "gantry-0",
        ])
        .unwrap();
        assert_eq!(a.watch_namespaces, ["a", "b", "c"]);
        assert_eq!(a.publish_status_address, ["10.0.0.1", "lb.example.com"]);
        assert_eq!(a.election_id, "gantry-leader");
        assert_eq!(a.election_namespace(), "ingress");
        assert_eq!(a.identity(), "gantry-0");
        let a = Args::try_parse_from(["gantry", "--publish-service", "ingress/gantry"]).unwrap();
        assert_eq!(a.publish_service, Some(ObjectKey::new("ingress", "gantry")));
        assert!(Args::try_parse_from([
            "gantry",
            "--publish-service",
            "ingress/gantry",
            "--publish-status-address",
            "10.0.0.1"
        ])
        .is_err());
    }
}
