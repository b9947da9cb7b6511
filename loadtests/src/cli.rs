//! Command line: `run` for people, hidden helper commands for the processes the runner starts
//! (they run as separate processes so that `taskset` can pin them to the load generator's CPUs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "loadtests",
    about = "Gantry side by side with nginx and HAProxy on this machine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the scenarios against each proxy and write target/loadtests/report.{json,md} and plots.
    Run(RunArgs),
    /// List the scenarios with what each measures.
    List,
    /// Soak test: Gantry alone under mixed, rate-limited traffic with route and endpoint churn for
    /// `--duration`, sampling its memory and file descriptors; memory probes first. Writes
    /// report.{md,json}, samples.csv and soak.svg; exits non-zero on FAIL.
    Soak(SoakArgs),
    /// (helper) WebSocket echo backend.
    #[command(hide = true)]
    WsEcho(WsEchoArgs),
    /// (helper) WebSocket ping-pong load over many connections; prints one JSON line.
    #[command(hide = true)]
    WsLoad(WsLoadArgs),
    /// (helper) Opens idle keep-alive connections and holds them; prints JSON lines.
    #[command(hide = true)]
    IdleClient(IdleArgs),
}

/// The proxies compared, in the order each round visits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    Gantry,
    /// Gantry again, with the same routes written as Gateway API objects (GatewayClass, Gateway,
    /// HTTPRoutes) instead of Ingresses. Not in the default set; ask for it with
    /// `--proxies gantry,gantry-gateway`.
    #[serde(rename = "gantry-gateway")]
    #[value(name = "gantry-gateway")]
    GantryGateway,
    /// Gantry with tracing on for every route, 1% of requests sampled, spans exported over
    /// OTLP/HTTP to a sink in the harness that accepts and drops them (`otlp_sink`).
    #[serde(rename = "gantry-trace1")]
    #[value(name = "gantry-trace1")]
    GantryTrace1,
    /// As `gantry-trace1`, every request sampled.
    #[serde(rename = "gantry-trace100")]
    #[value(name = "gantry-trace100")]
    GantryTrace100,
    Nginx,
    Haproxy,
}

impl ProxyKind {
    /// The default comparison (`--proxies` unset).
    pub const ALL: [ProxyKind; 3] = [ProxyKind::Gantry, ProxyKind::Nginx, ProxyKind::Haproxy];

    /// The name used in the report (`"gantry"`, `"gantry-gateway"`, `"nginx"`, `"haproxy"`).
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Gantry => "gantry",
            ProxyKind::GantryGateway => "gantry-gateway",
            ProxyKind::GantryTrace1 => "gantry-trace1",
            ProxyKind::GantryTrace100 => "gantry-trace100",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "haproxy",
        }
    }

    /// The name for people (tables, plots).
    pub fn display(self) -> &'static str {
        match self {
            ProxyKind::Gantry => "Gantry",
            ProxyKind::GantryGateway => "Gantry (Gateway API)",
            ProxyKind::GantryTrace1 => "Gantry (tracing, 1%)",
            ProxyKind::GantryTrace100 => "Gantry (tracing, 100%)",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "HAProxy",
        }
    }

    /// Either rendering of Gantry: the same binary, started the same way.
    pub fn is_gantry(self) -> bool {
        matches!(
            self,
            ProxyKind::Gantry
                | ProxyKind::GantryGateway
                | ProxyKind::GantryTrace1
                | ProxyKind::GantryTrace100
        )
    }

    /// The sampling ratio of a tracing rendering of Gantry.
    pub fn trace_ratio(self) -> Option<&'static str> {
        match self {
            ProxyKind::GantryTrace1 => Some("0.01"),
            ProxyKind::GantryTrace100 => Some("1"),
            _ => None,
        }
    }
}

impl std::fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Fewer scenarios, 2 rounds of 3 s: finishes in under 3 minutes once tools are installed and
    /// Gantry is built.
    #[arg(long)]
    pub quick: bool,
    /// CPUs for each proxy: 1 = proxy on CPU 0, load generator and backend on CPU 1;
    /// 2 = proxy on CPUs 0-1 sharing them with the load generator (a 2-core machine cannot
    /// separate them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub proxy_cpus: u8,
    /// Comma-separated scenario names (see `loadtests list`); default: all (or the quick set).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Rounds per scenario; each round runs every proxy once, in turn (default 3, quick 2).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: Option<u32>,
    /// Measured time of one run, e.g. `10s` (default 10s, quick 3s; at most 120s).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Comma-separated proxies to compare.
    #[arg(long, value_delimiter = ',', default_value = "gantry,nginx,haproxy")]
    pub proxies: Vec<ProxyKind>,
    /// Output directory (default: <cargo target dir>/loadtests).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not apt-get install or cargo install anything; use what is on PATH.
    #[arg(long)]
    pub no_install: bool,
    /// Do not run `cargo build --release -p gantry`; use the binary that is there.
    #[arg(long)]
    pub no_build: bool,
    /// Use this gantry binary instead of <target>/release/gantry (implies --no-build).
    #[arg(long)]
    pub gantry_bin: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long the mixed traffic runs, e.g. `30m`, `40s` (at most 60m).
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    pub duration: Duration,
    /// Output directory (default: <cargo target dir>/loadtests/soak).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not apt-get install or cargo install anything; use what is on PATH.
    #[arg(long)]
    pub no_install: bool,
    /// Do not run `cargo build --release -p gantry`; use the binary that is there.
    #[arg(long)]
    pub no_build: bool,
    /// Use this gantry binary instead of <target>/release/gantry (implies --no-build).
    #[arg(long)]
    pub gantry_bin: Option<PathBuf>,
    /// One change every this long, alternating: route churn (an Ingress host added and one
    /// removed), then endpoint churn (the active 2 of 3 endpoints rotate).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub churn_every: Duration,
    /// Sample Gantry's RSS, file descriptors, threads and open connections every this long.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub sample_every: Duration,
    /// Connections each memory probe opens (slow readers; idle HTTP/2 over TLS).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub probe_conns: u32,
    /// FAIL when RSS grows by this many percent or more between the warm-up sample and the end.
    #[arg(long, default_value_t = 10.0)]
    pub max_rss_growth_pct: f64,
    /// FAIL when open file descriptors grow by this many or more between warm-up and the end.
    #[arg(long, default_value_t = 50)]
    pub max_fd_growth: i64,
}

#[derive(Debug, Clone, Args)]
pub struct WsEchoArgs {
    #[arg(long)]
    pub addr: SocketAddr,
    /// Exit after this many seconds whatever happens.
    #[arg(long, default_value_t = 3600)]
    pub max_seconds: u64,
}

#[derive(Debug, Clone, Args)]
pub struct WsLoadArgs {
    /// Where to connect (the proxy's plain HTTP listener).
    #[arg(long)]
    pub addr: SocketAddr,
    /// Host header of the upgrade request.
    #[arg(long, default_value = "localhost")]
    pub host: String,
    #[arg(long, default_value = "/ws")]
    pub path: String,
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Payload size of each message, bytes.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Each connection waits this many milliseconds after an echo before sending the next message
    /// (0: ping-pong as fast as the proxy answers; the soak test rate-limits with it).
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[arg(long)]
    pub addr: SocketAddr,
    #[arg(long, default_value = "localhost")]
    pub host: String,
    #[arg(long, default_value_t = 10_000)]
    pub conns: usize,
    /// Give up holding after this long even if stdin stays open.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub max_hold: Duration,
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {s:?}: use ms, s or m")),
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_millis_minutes_and_bare_numbers() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn run_flags_parse_as_documented() {
        let cli = Cli::try_parse_from([
            "loadtests",
            "run",
            "--quick",
            "--proxy-cpus",
            "2",
            "--scenarios",
            "http1-keepalive,h2-tls",
            "--rounds",
            "4",
            "--duration",
            "5s",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert!(args.quick);
        assert_eq!(args.proxy_cpus, 2);
        assert_eq!(args.scenarios, ["http1-keepalive", "h2-tls"]);
        assert_eq!(args.rounds, Some(4));
        assert_eq!(args.duration, Some(Duration::from_secs(5)));
        assert_eq!(args.proxies, ProxyKind::ALL);
        assert!(Cli::try_parse_from(["loadtests", "run", "--proxy-cpus", "3"]).is_err());
    }

    #[test]
    fn gantry_gateway_is_selectable_by_its_report_name() {
        let cli = Cli::try_parse_from(["loadtests", "run", "--proxies", "gantry,gantry-gateway"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.proxies, [ProxyKind::Gantry, ProxyKind::GantryGateway]);
        assert_eq!(ProxyKind::GantryGateway.name(), "gantry-gateway");
        assert_eq!(
            serde_json::to_string(&ProxyKind::GantryGateway).unwrap(),
            "\"gantry-gateway\""
        );
        assert!(ProxyKind::GantryGateway.is_gantry() && !ProxyKind::Nginx.is_gantry());
        assert!(!ProxyKind::ALL.contains(&ProxyKind::GantryGateway));
    }

    fn soak(args: &[&str]) -> Result<SoakArgs, clap::Error> {
        let cli = Cli::try_parse_from(["loadtests", "soak"].iter().chain(args))?;
        let Command::Soak(a) = cli.command else {
            panic!("not soak")
        };
        Ok(a)
    }

    #[test]
    fn soak_defaults_to_thirty_minutes_sampled_every_five_seconds() {
        let a = soak(&[]).unwrap();
        assert_eq!(a.duration, Duration::from_secs(30 * 60));
        assert_eq!(a.churn_every, Duration::from_secs(5));
        assert_eq!(a.sample_every, Duration::from_secs(5));
        assert_eq!(a.probe_conns, 1000);
        assert_eq!(a.max_rss_growth_pct, 10.0);
        assert_eq!(a.max_fd_growth, 50);
        assert!(a.out.is_none() && a.gantry_bin.is_none() && !a.no_install && !a.no_build);
    }

    #[test]
    fn soak_ci_mode_flags_parse_and_the_duration_is_capped_at_an_hour() {
        let a = soak(&[
            "--duration",
            "40s",
            "--churn-every",
            "2s",
            "--sample-every",
            "2s",
            "--probe-conns",
            "200",
            "--max-rss-growth-pct",
            "25",
            "--gantry-bin",
            "target/debug/gantry",
            "--no-install",
            "--out",
            "/tmp/soak",
        ])
        .unwrap();
        assert_eq!(a.duration, Duration::from_secs(40));
        assert_eq!(
            (a.churn_every, a.sample_every),
            (Duration::from_secs(2), Duration::from_secs(2))
        );
        assert_eq!(a.probe_conns, 200);
        assert_eq!(a.max_rss_growth_pct, 25.0);
        assert_eq!(
            a.gantry_bin.as_deref(),
            Some(std::path::Path::new("target/debug/gantry"))
        );
        assert!(a.no_install && !a.no_build);
        assert_eq!(a.out.as_deref(), Some(std::path::Path::new("/tmp/soak")));
        assert_eq!(
            soak(&["--duration", "60m"]).unwrap().duration,
            Duration::from_secs(3600)
        );
        assert!(soak(&["--duration", "61m"]).is_err());
        assert!(soak(&["--probe-conns", "0"]).is_err());
        assert!(soak(&["--probe-conns", "5001"]).is_err());
    }

    #[test]
    fn ws_load_pauses_only_when_asked() {
        let parse = |extra: &[&str]| {
            let base = ["loadtests", "ws-load", "--addr", "127.0.0.1:1"];
            let cli = Cli::try_parse_from(base.iter().chain(extra)).unwrap();
            let Command::WsLoad(a) = cli.command else {
                panic!("not ws-load")
            };
            a.pause_ms
        };
        assert_eq!(parse(&[]), 0);
        assert_eq!(parse(&["--pause-ms", "100"]), 100);
    }
}
