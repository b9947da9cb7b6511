//! The runner: setup, then for each scenario start the backend and every proxy, run the rounds
//! (A B C A B C …), aggregate, print, and write the report after every scenario (a partial run still
//! leaves a report). A proxy that fails records why and the run goes on.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::churn;
use crate::cli::{ProxyKind, RunArgs};
use crate::config::{churn_hosts, CertFiles, Endpoint, Routes, Topology, LARGE_BODY};
use crate::idle;
use crate::loadgen::{self, Measured, WrkScript};
use crate::net::{free_port, local};
use crate::procs::{interrupted, pinned, run_bounded, sample_tree, LineChild, Pinning};
use crate::proxy::{Backend, Env, ProxyInstance};
use crate::report::{self, Failure, ProxyResult, Report, RoundResult, ScenarioReport, Settings};
use crate::scenarios::{self, BackendKind, Churn, Load, ScenarioId, Unit};
use crate::setup::{self, GantryBin, Tools};
use crate::svg;
use crate::ws::WsLoadResult;

/// Everything a scenario run needs, fixed for the whole run.
struct Ctx {
    tools: Tools,
    oha: Result<PathBuf, String>,
    gantry: Result<GantryBin, String>,
    cert: CertFiles,
    cert_pem: String,
    key_pem: String,
    pinning: Pinning,
    proxies: Vec<ProxyKind>,
    rounds: u32,
    duration: Duration,
    warmup: Duration,
    run_dir: PathBuf,
    self_exe: PathBuf,
    as_root: bool,
}

impl Ctx {
    fn env(&self) -> Env<'_> {
        Env {
            tools: &self.tools,
            gantry: self.gantry.as_ref().ok(),
            pinning: &self.pinning,
            self_exe: &self.self_exe,
            cert_pem: &self.cert_pem,
            key_pem: &self.key_pem,
            as_root: self.as_root,
        }
    }
}

/// Rough wall time of a run, for the banner.
fn estimate(scenarios: &[ScenarioId], proxies: usize, rounds: u32, duration: Duration) -> Duration {
    // Measured on this machine: ~0.5 s per run besides the load (spawn, samples, stub_status),
    // ~2 s to start a scenario's processes, one 1 s warm-up per proxy.
    let per_run = duration.as_secs_f64() + 0.5;
    let total: f64 = scenarios
        .iter()
        .map(|s| {
            let startup = match s {
                ScenarioId::ManyRoutes => 30.0,
                _ => 2.0,
            };
            let run = match s {
                ScenarioId::IdleConnections => 10.0,
                _ => per_run,
            };
            startup + proxies as f64 * (f64::from(rounds) * run + 1.3)
        })
        .sum();
    Duration::from_secs_f64(total)
}

pub fn run(args: RunArgs) -> Result<()> {
    crate::procs::install_signal_handler()?;
    let t0 = Instant::now();
    let scenarios = scenarios::select(&args.scenarios, args.quick).map_err(anyhow::Error::msg)?;
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 3 });
    let duration = args
        .duration
        .unwrap_or(Duration::from_secs(if args.quick { 3 } else { 10 }));
    if duration > Duration::from_secs(120) {
        bail!("--duration is at most 120s");
    }
    let mut proxies: Vec<ProxyKind> = Vec::new();
    for p in &args.proxies {
        if !proxies.contains(p) {
            proxies.push(*p);
        }
    }
    let (root, target) = setup::workspace_dirs();
    let out = args.out.clone().unwrap_or_else(|| target.join("loadtests"));
    let logs = out.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let cpus = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pinning = Pinning::new(usize::from(args.proxy_cpus), cpus);
    let est = estimate(&scenarios, proxies.len(), rounds, duration);
    eprintln!(
        "loadtests: {} scenario(s) x {} proxies x {rounds} round(s) of {:.0?}; expected about {:.1} min after setup",
        scenarios.len(),
        proxies.len(),
        duration,
        est.as_secs_f64() / 60.0
    );
    eprintln!(
        "loadtests: proxy on CPU {}, load generator + backend on CPU {}{}",
        pinning.proxy,
        pinning.load,
        if pinning.shared {
            " (shared: this machine cannot separate them)"
        } else {
            ""
        }
    );

    let tools = setup::ensure_tools(args.no_install, &logs)?;
    let needs_oha = scenarios
        .iter()
        .any(|s| matches!(s.plan().load, Load::Oha { .. }));
    let oha = if needs_oha {
        setup::ensure_oha(args.no_install, &logs)
    } else {
        Err("not needed".into())
    };
    if let (true, Err(e)) = (needs_oha, &oha) {
        eprintln!("loadtests: oha unavailable, handshake scenarios will be skipped: {e}");
    }
    let gantry = if proxies.iter().any(|p| p.is_gantry()) {
        setup::gantry(
            &root,
            &target,
            args.no_build || args.gantry_bin.is_some(),
            args.gantry_bin.as_deref(),
            &logs,
        )
    } else {
        Err("not selected".into())
    };
    match &gantry {
        Ok(g) if !g.access_log_flag => {
            eprintln!("loadtests: gantry has no --access-log flag; its access log stays on")
        }
        Ok(_) => {}
        Err(e) if proxies.iter().any(|p| p.is_gantry()) => eprintln!("loadtests: gantry not available: {e}"),
        Err(_) => {}
    }
    let cert = setup::ensure_cert(&tools.openssl, &out.join("certs"))?;
    let machine = setup::machine(&tools, oha.as_ref().ok().map(PathBuf::as_path), &root);
    let mut notes = vec![
        "Medians over rounds; errors are summed over rounds; peak RSS is the largest VmHWM summed over the \
         proxy's processes (nginx and HAProxy masters included)."
            .to_string(),
        "CPU = utime+stime of the proxy's process tree during one run (reaped children included); \
         CPU us/req = CPU / requests."
            .to_string(),
        "Upstream conns = new connections the backend accepted during one run (nginx stub_status): \
         near zero means upstream keep-alive holds."
            .to_string(),
        "Requests carry Host: localhost (SNI localhost over TLS); nginx sets proxy_set_header Host $host, \
         HAProxy and Gantry forward the Host header unchanged; none adds an access log."
            .to_string(),
    ];
    if pinning.shared {
        notes.push(format!(
            "--proxy-cpus {}: proxy and load generator share CPUs {} (a {cpus}-core machine cannot separate \
             them); CPU figures include contention.",
            args.proxy_cpus, pinning.load
        ));
    }
    if let Ok(g) = &gantry {
        if !g.access_log_flag {
            notes.push("gantry has no --access-log flag: its access log stayed at its default.".into());
        }
    }
    let ctx = Ctx {
        cert_pem: fs::read_to_string(&cert.cert)?,
        key_pem: fs::read_to_string(&cert.key)?,
        tools,
        oha,
        gantry,
        cert,
        pinning: pinning.clone(),
        proxies: proxies.clone(),
        rounds,
        duration,
        warmup: Duration::from_secs(1),
        run_dir: out.join("run"),
        self_exe: std::env::current_exe()?,
        as_root: setup::is_root(),
    };
    let mut report = Report {
        machine,
        proxy_cpus: args.proxy_cpus,
        scenarios: Vec::new(),
        settings: Settings {
            quick: args.quick,
            rounds,
            duration_s: duration.as_secs_f64(),
            proxies,
            proxy_cpu_list: pinning.proxy.clone(),
            load_cpu_list: pinning.load.clone(),
            shared_cpus: pinning.shared,
            workers: pinning.proxy_cpu_count,
        },
        generated_at: setup::utc_now(),
        elapsed_s: 0.0,
        notes,
    };
    let mut units: Vec<(String, Unit)> = Vec::new();
    for id in scenarios {
        if interrupted() {
            break;
        }
        let started = Instant::now();
        let (sr, unit) = run_scenario(&ctx, id);
        print!("{}", report::console_table(&sr, unit));
        eprintln!("   ({:.0} s)", started.elapsed().as_secs_f64());
        units.push((sr.name.clone(), unit));
        report.scenarios.push(sr);
        report.elapsed_s = t0.elapsed().as_secs_f64();
        write_outputs(&out, &report, &units)?;
    }
    println!(
        "\nReport: {}  {}",
        out.join("report.md").display(),
        out.join("report.json").display()
    );
    println!(
        "Plots:  {}  {}  (+ one per scenario)",
        out.join("throughput.svg").display(),
        out.join("latency.svg").display()
    );
    println!("Total time {:.1} min", t0.elapsed().as_secs_f64() / 60.0);
    Ok(())
}

fn write_outputs(out: &Path, report: &Report, units: &[(String, Unit)]) -> Result<()> {
    fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    fs::write(out.join("report.md"), report::markdown(report, units))?;
    fs::write(
        out.join("throughput.svg"),
        svg::throughput_overview(report, units),
    )?;
    fs::write(out.join("latency.svg"), svg::latency_overview(report))?;
    for (s, (_, unit)) in report.scenarios.iter().zip(units) {
        fs::write(out.join(format!("{}.svg", s.name)), svg::scenario_chart(s, *unit))?;
    }
    Ok(())
}

fn run_scenario(ctx: &Ctx, id: ScenarioId) -> (ScenarioReport, Unit) {
    let plan = id.plan();
    let mut sr = ScenarioReport {
        name: id.name().to_string(),
        description: id.describe().to_string(),
        unit: report::unit_label(plan.unit).to_string(),
        results: Vec::new(),
        failures: Vec::new(),
        skipped: None,
        notes: plan.notes.clone(),
        ratios: Vec::new(),
    };
    if ctx.proxies.contains(&ProxyKind::GantryGateway) && !plan.policy_mix {
        sr.notes.push(match plan.routes {
            Routes::Many { hosts, paths } => format!(
                "Gantry (Gateway API): the same routes as {hosts} HTTPRoutes (one per host, {paths} \
                 PathPrefix rules each) attached to one Gateway."
            ),
            Routes::Single => "Gantry (Gateway API): the same routes as HTTPRoutes attached to one Gateway \
                               (HTTP listener 80, HTTPS listener 443)."
                .into(),
        });
    }
    eprintln!("\nloadtests: {} …", id.name());
    if let (Load::Oha { .. }, Err(e)) = (&plan.load, &ctx.oha) {
        sr.skipped = Some(format!("oha is not available ({e})"));
        return (sr, plan.unit);
    }
    let dir = ctx.run_dir.join(id.name());
    let _ = fs::remove_dir_all(&dir);
    if let Err(e) = fs::create_dir_all(&dir) {
        sr.skipped = Some(format!("cannot create {}: {e}", dir.display()));
        return (sr, plan.unit);
    }
    let env = ctx.env();
    let mut backend = match Backend::start(&plan.backend, &dir.join("backend"), &env) {
        Ok(b) => b,
        Err(e) => {
            sr.skipped = Some(format!("backend did not start: {e:#}"));
            return (sr, plan.unit);
        }
    };

    let mut instances: Vec<ProxyInstance> = Vec::new();
    for &kind in &ctx.proxies {
        if plan.policy_mix && kind == ProxyKind::Haproxy {
            // The comparison the issue asks for is with nginx (ingress-nginx's engine) running
            // the same annotations' nginx equivalents.
            continue;
        }
        if kind == ProxyKind::GantryGateway && plan.policy_mix {
            // Said in the report rather than dropped silently: the annotations have no Gateway
            // API form, so there is nothing equivalent to measure.
            sr.failures.push(Failure {
                proxy: kind,
                error: "not offered: the policy mix is ingress-nginx annotations (regex path with \
                        rewrite-target, CORS, whitelist-source-range, limit-rps) that have no Gateway \
                        API form"
                    .into(),
            });
            continue;
        }
        if kind.is_gantry() {
            if let Err(why) = &ctx.gantry {
                sr.failures.push(Failure {
                    proxy: kind,
                    error: format!("not available: {why}"),
                });
                continue;
            }
        }
        let started = start_proxy(ctx, &env, kind, id, &plan, &backend, &dir);
        match started {
            Ok(inst) => instances.push(inst),
            Err(e) => {
                eprintln!("   {kind}: did not start: {e:#}");
                sr.failures.push(Failure {
                    proxy: kind,
                    error: format!("did not start: {e:#}"),
                });
            }
        }
    }

    if matches!(plan.load, Load::Oha { .. }) {
        resumption_notes(ctx, &plan, &instances, &dir, &mut sr.notes);
    }

    let mut per: BTreeMap<ProxyKind, Vec<RoundResult>> = BTreeMap::new();
    let mut dead: HashSet<ProxyKind> = HashSet::new();
    for round in 0..ctx.rounds {
        if plan.fresh_proxy_each_round && round > 0 && !interrupted() {
            for inst in std::mem::take(&mut instances) {
                let kind = inst.kind;
                inst.stop();
                match start_proxy(ctx, &env, kind, id, &plan, &backend, &dir) {
                    Ok(i) => instances.push(i),
                    Err(e) => {
                        sr.failures.push(Failure {
                            proxy: kind,
                            error: format!("round {}: did not start: {e:#}", round + 1),
                        });
                        dead.insert(kind);
                    }
                }
            }
        }
        for inst in instances.iter_mut() {
            if dead.contains(&inst.kind) || interrupted() {
                continue;
            }
            if round == 0 && !matches!(plan.load, Load::Idle { .. }) {
                let tag = format!("{}-warmup", inst.kind);
                let _ = run_load(
                    ctx,
                    &plan.load,
                    inst.topo.http,
                    inst.topo.https,
                    inst.pid(),
                    &dir,
                    &tag,
                    ctx.warmup,
                );
            }
            match measure(ctx, &plan, inst, &mut backend, &dir, round) {
                Ok(r) => {
                    let rate = match plan.unit {
                        Unit::Rps | Unit::MBps { .. } => format!("{} req/s", report::fmt_num(r.rps)),
                        Unit::MsgsPerSec => format!("{} msg/s", report::fmt_num(r.rps)),
                        Unit::KibPerConn => format!("{} conns", r.requests),
                    };
                    let extra = r.mb_s.map(|v| format!("  {v:.0} MB/s")).unwrap_or_default()
                        + &r.mem_per_conn_kb
                            .map(|v| format!("  {v:.1} KiB/conn"))
                            .unwrap_or_default();
                    eprintln!(
                        "   round {} {:<8} {rate:>16}  p99 {:>7} ms  errors {:<5} cpu {:.2} s{extra}",
                        round + 1,
                        inst.kind.name(),
                        report::fmt_ms(r.p99_ms),
                        r.errors,
                        r.cpu_s,
                    );
                    per.entry(inst.kind).or_default().push(r);
                }
                Err(e) => {
                    let tail = inst.log_tail(5);
                    eprintln!("   round {} {}: failed: {e:#}", round + 1, inst.kind);
                    let mut error = format!("round {}: {e:#}", round + 1);
                    if !tail.trim().is_empty() {
                        error.push_str(&format!(" (log tail: {})", tail.trim()));
                    }
                    sr.failures.push(Failure {
                        proxy: inst.kind,
                        error,
                    });
                    dead.insert(inst.kind);
                }
            }
        }
    }
    for &kind in &ctx.proxies {
        if let Some(r) = ProxyResult::from_rounds(kind, per.remove(&kind).unwrap_or_default()) {
            sr.results.push(r);
        }
    }
    sr.ratios = report::ratios(&sr.results, plan.unit);
    for inst in instances {
        inst.stop();
    }
    backend.stop();
    (sr, plan.unit)
}

/// Checks which proxies resume TLS 1.3 sessions and says so (Gantry has no setting for it).
fn resumption_notes(
    ctx: &Ctx,
    plan: &scenarios::Plan,
    instances: &[ProxyInstance],
    dir: &Path,
    notes: &mut Vec<String>,
) {
    let mut parts = Vec::new();
    for inst in instances {
        let verdict = match crate::proxy::tls13_resumes(
            &ctx.tools.openssl,
            inst.topo.https,
            &dir.join(inst.kind.name()),
        ) {
            Ok(true) => "resumes".to_string(),
            Ok(false) => "does not resume".to_string(),
            Err(e) => format!("check failed ({e:#})"),
        };
        let note = "Gantry resumed a TLS 1.3 session although resumption is off on nginx and HAProxy: its \
                    figure here counts resumed handshakes.";
        if inst.kind.is_gantry()
            && !plan.tls_resumption
            && verdict == "resumes"
            && !notes.iter().any(|n| n == note)
        {
            notes.push(note.into());
        }
        parts.push(format!("{} {verdict}", inst.kind.display()));
    }
    if !parts.is_empty() {
        notes.push(format!(
            "TLS 1.3 resumption check (openssl s_client -sess_out/-sess_in): {}.",
            parts.join(", ")
        ));
    }
}

fn start_proxy(
    ctx: &Ctx,
    env: &Env<'_>,
    kind: ProxyKind,
    id: ScenarioId,
    plan: &scenarios::Plan,
    backend: &Backend,
    dir: &Path,
) -> Result<ProxyInstance> {
    let n = backend.endpoints.len();
    let topo = Topology {
        workers: ctx.pinning.proxy_cpu_count,
        http: local(free_port()?),
        https: local(free_port()?),
        admin: local(free_port()?),
        tls_resumption: plan.tls_resumption,
        upstream_keepalive: plan.upstream_keepalive,
        routes: plan.routes.clone(),
        churn_hosts: if matches!(plan.churn, Some(Churn::Routes { .. })) {
            churn_hosts(0)
        } else {
            Vec::new()
        },
        websocket: plan.backend == BackendKind::WsEcho,
        policy_mix: plan.policy_mix,
        endpoints: backend
            .endpoints
            .iter()
            .enumerate()
            // Endpoint churn starts with all but the last one.
            .map(|(i, a)| Endpoint {
                addr: *a,
                active: n < 2 || i + 1 < n,
            })
            .collect(),
        ws_route: None,
        cert: ctx.cert.clone(),
        as_root: ctx.as_root,
    };
    let mut inst = ProxyInstance::start(kind, topo, &dir.join(kind.name()), env)?;
    let timeout = if id == ScenarioId::ManyRoutes {
        Duration::from_secs(180)
    } else {
        Duration::from_secs(30)
    };
    let t = Instant::now();
    inst.wait_ready(timeout)?;
    eprintln!("   {kind}: serving after {:.1} s", t.elapsed().as_secs_f64());
    Ok(inst)
}

/// One measured run of one proxy.
fn measure(
    ctx: &Ctx,
    plan: &scenarios::Plan,
    inst: &mut ProxyInstance,
    backend: &mut Backend,
    dir: &Path,
    round: u32,
) -> Result<RoundResult> {
    inst.check_alive()?;
    backend.check_alive().context("backend")?;
    let pid = inst.pid();
    let inst_kind = inst.kind;
    let (http, https) = (inst.topo.http, inst.topo.https);
    let accepts_before = backend.accepts();
    let before = sample_tree(pid);
    let stop = AtomicBool::new(false);
    let (outcome, churn_stats) = thread::scope(|s| {
        let churn = plan.churn.map(|c| {
            let until = Instant::now() + ctx.duration + Duration::from_secs(30);
            let inst = &mut *inst;
            let stop = &stop;
            s.spawn(move || churn::drive(c, inst, stop, until))
        });
        let tag = format!("{}-round{}", inst_kind, round + 1);
        let outcome = run_load(ctx, &plan.load, http, https, pid, dir, &tag, ctx.duration);
        stop.store(true, Ordering::Relaxed);
        let stats = churn.map(|h| h.join().unwrap_or_default());
        (outcome, stats)
    });
    let after = sample_tree(pid);
    let accepts_after = backend.accepts();
    let outcome = outcome?;
    let m = &outcome.measured;
    let mut churn_stats = churn_stats;
    if let (Some(stats), Some(Churn::Routes { .. })) = (churn_stats.as_mut(), plan.churn) {
        stats.propagation_ms = churn::propagation(inst, Duration::from_secs(5));
        stats.propagation_timed_out = stats.propagation_ms.is_none();
    }
    let mb_s = match plan.unit {
        Unit::MBps { upload: false } => Some(m.bytes_read as f64 / m.duration_s.max(1e-9) / 1e6),
        Unit::MBps { upload: true } => {
            Some(m.requests as f64 * LARGE_BODY as f64 / m.duration_s.max(1e-9) / 1e6)
        }
        _ => None,
    };
    Ok(RoundResult {
        round,
        requests: m.requests,
        duration_s: m.duration_s,
        rps: if plan.unit == Unit::KibPerConn {
            0.0
        } else {
            m.rps()
        },
        p50_ms: m.p50_ms,
        p99_ms: m.p99_ms,
        p999_ms: m.p999_ms,
        errors: m.errors,
        error_detail: m.error_detail.clone(),
        cpu_s: (after.cpu_s - before.cpu_s).max(0.0),
        peak_rss_kb: after.hwm_kb,
        pss_kb: after.pss_kb,
        mb_s,
        upstream_conns_opened: match (accepts_before, accepts_after) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a + 1)),
            _ => None,
        },
        mem_per_conn_kb: outcome.mem_per_conn_kb,
        conns_held: outcome.conns_held,
        churn: churn_stats,
    })
}

struct LoadOutcome {
    measured: Measured,
    mem_per_conn_kb: Option<f64>,
    conns_held: Option<u64>,
}

impl From<Measured> for LoadOutcome {
    fn from(measured: Measured) -> Self {
        LoadOutcome {
            measured,
            mem_per_conn_kb: None,
            conns_held: None,
        }
    }
}

/// Runs the load generator once against `http`/`https` for `duration`. Its raw output is kept in
/// `dir/raw/<tag>.txt` for reading afterwards.
#[allow(clippy::too_many_arguments)]
fn run_load(
    ctx: &Ctx,
    load: &Load,
    http: std::net::SocketAddr,
    https: std::net::SocketAddr,
    proxy_pid: u32,
    dir: &Path,
    tag: &str,
    duration: Duration,
) -> Result<LoadOutcome> {
    let raw_dir = dir.join("raw");
    let _ = fs::create_dir_all(&raw_dir);
    let keep = |out: &crate::procs::Output| {
        let _ = fs::write(
            raw_dir.join(format!("{tag}.txt")),
            format!("{}\n--- stderr ---\n{}", out.stdout, out.stderr),
        );
    };
    let cpus = &ctx.pinning.load;
    let threads = ctx.pinning.load_cpu_count;
    let bound = duration + Duration::from_secs(30);
    let host = crate::config::MAIN_HOST;
    match load {
        Load::Wrk {
            conns,
            tls,
            path,
            script,
        } => {
            let lua = dir.join(match script {
                WrkScript::Plain => "wrk-plain.lua",
                WrkScript::Upload { .. } => "wrk-upload.lua",
                WrkScript::RotateHosts { .. } => "wrk-rotate.lua",
                WrkScript::Origin(_) => "wrk-origin.lua",
            });
            fs::write(&lua, loadgen::wrk_lua(script))?;
            let url = if *tls {
                format!("https://{host}:{}{path}", https.port())
            } else {
                format!("http://{host}:{}{path}", http.port())
            };
            let mut cmd = pinned(cpus, &ctx.tools.wrk);
            cmd.args(loadgen::wrk_args(threads, *conns, duration, &lua, &url));
            let out = run_bounded("wrk", cmd, bound)?;
            keep(&out);
            if !out.status.success() {
                bail!(
                    "wrk failed ({}): {}",
                    out.status,
                    crate::procs::last_lines(&out.stderr, 3)
                );
            }
            Ok(loadgen::parse_wrk(&out.stdout)?.into())
        }
        Load::H2load { clients, streams } => {
            let log = dir.join("h2load-requests.log");
            let _ = fs::remove_file(&log);
            let url = format!("https://{host}:{}/", https.port());
            let mut cmd = pinned(cpus, &ctx.tools.h2load);
            cmd.args(loadgen::h2load_args(
                threads, *clients, *streams, duration, &log, &url,
            ));
            let out = run_bounded("h2load", cmd, bound)?;
            keep(&out);
            let log_text = fs::read_to_string(&log).unwrap_or_default();
            let head: Vec<&str> = log_text.lines().take(200).collect();
            let _ = fs::write(
                raw_dir.join(format!("{tag}-h2load-log-head.txt")),
                head.join("\n") + "\n",
            );
            let _ = fs::remove_file(&log);
            if !out.status.success() {
                bail!(
                    "h2load failed ({}): {}",
                    out.status,
                    crate::procs::last_lines(&out.stderr, 3)
                );
            }
            Ok(loadgen::parse_h2load(&out.stdout, &log_text)?.into())
        }
        Load::Oha { conns } => {
            let oha = ctx
                .oha
                .as_ref()
                .map_err(|e| anyhow::anyhow!("oha unavailable: {e}"))?;
            let url = format!("https://{host}:{}/", https.port());
            let mut cmd = pinned(cpus, oha);
            cmd.args(loadgen::oha_args(*conns, duration, &url));
            let out = run_bounded("oha", cmd, bound)?;
            keep(&out);
            if !out.status.success() {
                bail!(
                    "oha failed ({}): {}",
                    out.status,
                    crate::procs::last_lines(&out.stderr, 3)
                );
            }
            Ok(loadgen::parse_oha(&out.stdout)?.into())
        }
        Load::Ws { conns } => {
            let cmd = crate::ws::load_command(
                cpus,
                &ctx.self_exe,
                &crate::cli::WsLoadArgs {
                    addr: http,
                    host: host.into(),
                    path: "/ws".into(),
                    conns: *conns,
                    duration,
                    size: 32,
                    pause_ms: 0,
                },
            );
            let out = run_bounded("ws-load", cmd, bound + Duration::from_secs(60))?;
            keep(&out);
            if !out.status.success() {
                bail!(
                    "ws-load failed ({}): {}",
                    out.status,
                    crate::procs::last_lines(&out.stderr, 3)
                );
            }
            let r: WsLoadResult =
                serde_json::from_str(out.stdout.trim()).context("parsing ws-load output")?;
            let errors = r.errors + r.connect_failed;
            Ok(Measured {
                requests: r.messages,
                duration_s: r.duration_s,
                bytes_read: 0,
                p50_ms: r.p50_ms,
                p99_ms: r.p99_ms,
                p999_ms: r.p999_ms,
                errors,
                error_detail: if errors > 0 {
                    format!(
                        "{} connections failed to open, {} broke: {}",
                        r.connect_failed,
                        r.errors,
                        r.first_error.unwrap_or_default()
                    )
                } else {
                    String::new()
                },
            }
            .into())
        }
        Load::Idle { conns } => run_idle(ctx, *conns, http, proxy_pid),
    }
}

/// Idle connections: RSS before, open `conns` (each with one request), settle, RSS after.
fn run_idle(ctx: &Ctx, conns: usize, http: std::net::SocketAddr, proxy_pid: u32) -> Result<LoadOutcome> {
    // Settle first so that allocator caches from earlier rounds do not count.
    thread::sleep(Duration::from_millis(500));
    let before = sample_tree(proxy_pid);
    let mut cmd = pinned(&ctx.pinning.load, &ctx.self_exe);
    cmd.args([
        "idle-client",
        "--addr",
        &http.to_string(),
        "--host",
        crate::config::MAIN_HOST,
    ])
    .args(["--conns", &conns.to_string(), "--max-hold", "120s"]);
    let mut child = LineChild::start("idle-client", cmd)?;
    let line = child.next_line(Duration::from_secs(120))?;
    let ready: idle::Ready =
        serde_json::from_str(line.strip_prefix("READY ").context("expected READY line")?)?;
    thread::sleep(Duration::from_secs(2));
    let during = sample_tree(proxy_pid);
    child.close_stdin();
    let done_line = child.next_line(Duration::from_secs(30))?;
    let done: idle::Done =
        serde_json::from_str(done_line.strip_prefix("DONE ").context("expected DONE line")?)?;
    drop(child);
    let opened = ready.opened.max(1);
    let delta_kb = during.rss_kb.saturating_sub(before.rss_kb) as f64;
    let errors = ready.failed + done.closed_by_peer;
    Ok(LoadOutcome {
        measured: Measured {
            requests: ready.opened,
            duration_s: ready.elapsed_s,
            bytes_read: 0,
            p50_ms: ready.p50_ms,
            p99_ms: ready.p99_ms,
            p999_ms: ready.p999_ms,
            errors,
            error_detail: if errors > 0 {
                format!(
                    "{} failed to open ({}), {} closed by the proxy while idle",
                    ready.failed,
                    ready.first_error.unwrap_or_default(),
                    done.closed_by_peer
                )
            } else {
                String::new()
            },
        },
        mem_per_conn_kb: Some(delta_kb / opened as f64),
        conns_held: Some(done.still_open),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_runs_are_estimated_under_three_minutes() {
        let est = estimate(&ScenarioId::QUICK, 3, 2, Duration::from_secs(3));
        assert!(est < Duration::from_secs(150), "{est:?}");
        let full = estimate(&ScenarioId::ALL, 3, 3, Duration::from_secs(10));
        assert!(full < Duration::from_secs(40 * 60), "{full:?}");
    }
}
