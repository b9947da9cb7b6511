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
    Nginx,
    Haproxy,
}

impl ProxyKind {
    pub const ALL: [ProxyKind; 3] = [ProxyKind::Gantry, ProxyKind::Nginx, ProxyKind::Haproxy];

    /// The name used in the report (`"gantry"`, `"nginx"`, `"haproxy"`).
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Gantry => "gantry",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "haproxy",
        }
    }

    /// The name for people (tables, plots).
    pub fn display(self) -> &'static str {
        match self {
            ProxyKind::Gantry => "Gantry",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "HAProxy",
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
}
