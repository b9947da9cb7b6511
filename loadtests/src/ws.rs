//! WebSocket: the echo backend (`loadtests ws-echo`) and the load client (`loadtests ws-load`), both
//! single-threaded tokio processes that the runner pins to the load CPUs.
//!
//! The echo backend is deliberately not gantry-testkit's `Echo`: it is part of what the load test
//! measures, so it stays a minimal process of its own (no HTTP routing, JSON or request recording,
//! nothing but the handshake and the echo), pinned like the other load processes, and the same for
//! every proxy compared.
//!
//! The client opens `conns` connections through the proxy (100 handshakes at a time), then every
//! connection sends one text message, waits for the echo, and repeats until the deadline: messages/s
//! and round-trip percentiles, printed as one JSON line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::cli::{WsEchoArgs, WsLoadArgs};
use crate::idle::open_in_batches;
use crate::loadgen::percentiles3;

pub fn echo_main(args: WsEchoArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("binding {}", args.addr))?;
        let serve = async {
            loop {
                let (s, _) = listener.accept().await?;
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = echo_conn(s).await;
                });
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(args.max_seconds), serve).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    })
}

async fn echo_conn(s: TcpStream) -> Result<()> {
    let mut ws = tokio_tungstenite::accept_async(s).await?;
    while let Some(msg) = ws.next().await {
        match msg? {
            m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await?,
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}

/// What `ws-load` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WsLoadResult {
    pub connected: u64,
    pub connect_failed: u64,
    pub messages: u64,
    pub duration_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Connections that broke during the run (send/receive error or a 5 s wait for an echo).
    pub errors: u64,
    pub first_error: Option<String>,
}

const CONNECT_BATCH: usize = 100;
const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

/// The `ws-load` helper process for `args`, pinned to `cpus`.
pub fn load_command(cpus: &str, self_exe: &std::path::Path, args: &WsLoadArgs) -> std::process::Command {
    let mut cmd = crate::procs::pinned(cpus, self_exe);
    cmd.args(["ws-load", "--addr", &args.addr.to_string(), "--host", &args.host])
        .args(["--path", &args.path, "--conns", &args.conns.to_string()])
        .args(["--duration", &format!("{}ms", args.duration.as_millis().max(1))])
        .args([
            "--size",
            &args.size.to_string(),
            "--pause-ms",
            &args.pause_ms.to_string(),
        ]);
    cmd
}

pub fn load_main(args: WsLoadArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(run_load(args))?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

type Ws = WebSocketStream<TcpStream>;

async fn connect_one(addr: SocketAddr, host: &str, path: &str) -> Result<Ws> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let req = format!("ws://{host}{path}").into_client_request()?;
    let (ws, _resp) = tokio_tungstenite::client_async(req, tcp).await?;
    Ok(ws)
}

async fn run_load(args: WsLoadArgs) -> Result<WsLoadResult> {
    let opened = open_in_batches(
        args.conns,
        CONNECT_BATCH,
        Duration::from_secs(10),
        Duration::from_secs(60),
        || connect_one(args.addr, &args.host, &args.path),
    )
    .await;
    let conns = opened.conns;
    let mut result = WsLoadResult {
        connected: conns.len() as u64,
        connect_failed: opened.failed,
        first_error: opened.first_error.map(|e| format!("connect: {e}")),
        ..WsLoadResult::default()
    };
    if conns.is_empty() {
        bail!(
            "no WebSocket connection could be opened: {}",
            result.first_error.unwrap_or_default()
        );
    }
    let payload: Utf8Bytes = "x".repeat(args.size.max(1)).into();
    let start = Instant::now();
    let deadline = start + args.duration;
    let pause = Duration::from_millis(args.pause_ms);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|ws| tokio::spawn(ping_pong(ws, deadline, pause, payload.clone())))
        .collect();
    let mut lat_ms: Vec<f64> = Vec::new();
    for t in join_all(tasks).await {
        match t {
            Ok((lat, err)) => {
                lat_ms.extend(lat);
                if let Some(e) = err {
                    result.errors += 1;
                    result.first_error.get_or_insert(e);
                }
            }
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| format!("task: {e}"));
            }
        }
    }
    result.duration_s = start.elapsed().as_secs_f64();
    result.messages = lat_ms.len() as u64;
    (result.p50_ms, result.p99_ms, result.p999_ms) = percentiles3(&mut lat_ms);
    Ok(result)
}

/// One connection's loop: send, wait for the echo, wait `pause`, repeat until `deadline`.
async fn ping_pong(
    mut ws: Ws,
    deadline: Instant,
    pause: Duration,
    payload: Utf8Bytes,
) -> (Vec<f64>, Option<String>) {
    let mut lat = Vec::new();
    let mut err = None;
    while Instant::now() < deadline {
        let t = Instant::now();
        if let Err(e) = ws.send(Message::Text(payload.clone())).await {
            err = Some(format!("send: {e}"));
            break;
        }
        let echoed = tokio::time::timeout(ECHO_TIMEOUT, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => return Ok(()),
                    Some(Ok(Message::Close(_))) | None => return Err("closed by peer".to_string()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(format!("receive: {e}")),
                }
            }
        })
        .await;
        match echoed {
            Ok(Ok(())) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
            Ok(Err(e)) => {
                err = Some(e);
                break;
            }
            Err(_) => {
                err = Some("no echo within 5 s".into());
                break;
            }
        }
        if !pause.is_zero() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    (lat, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn the_load_command_parses_back_to_its_arguments() {
        let args = WsLoadArgs {
            addr: "127.0.0.1:18080".parse().unwrap(),
            host: "ws.localhost".into(),
            path: "/ws".into(),
            conns: 50,
            duration: Duration::from_millis(59_500),
            size: 32,
            pause_ms: 100,
        };
        let cmd = load_command("1", std::path::Path::new("/bin/loadtests"), &args);
        let argv: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let at = argv
            .iter()
            .position(|a| a == "ws-load")
            .expect("ws-load in the command");
        assert_eq!(argv[at - 1], "/bin/loadtests");
        let cli =
            Cli::try_parse_from(std::iter::once("loadtests").chain(argv[at..].iter().map(String::as_str)))
                .unwrap();
        let Command::WsLoad(back) = cli.command else {
            panic!("not ws-load")
        };
        assert_eq!(
            (
                back.addr,
                back.host,
                back.path,
                back.conns,
                back.duration,
                back.size,
                back.pause_ms
            ),
            (
                args.addr,
                args.host,
                args.path,
                args.conns,
                args.duration,
                args.size,
                args.pause_ms
            )
        );
    }
}
