//! Thread per core: the data path runs on N worker threads, each with its own single-threaded
//! runtime and its own listening sockets (SO_REUSEPORT, so the kernel spreads new connections).
//!
//! Why: a request touches the client connection, the upstream connection and their tasks. On one
//! thread those hand-offs are plain function calls and local wake-ups; on a work-stealing runtime
//! each is an atomic wake-up that may cross cores. Measured on the 1-core benchmark, the
//! single-threaded runtime cut the proxy's CPU per request by about a fifth. Upstream connection
//! pools and the rest of the runtime state are per worker for the same reason (see `state`).

use std::{io, net::SocketAddr, sync::Arc, thread::JoinHandle, time::Duration};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::{
    pipeline::Pipeline,
    server::{serve, ListenerKind, TlsConfigs},
    state,
};

/// How often each worker closes upstream connections that stayed idle past their timeout.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Opens a listening socket that other workers may bind to the same address (SO_REUSEPORT).
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// A set of listening sockets for one address, one per worker. Bound up front, so an address that
/// is taken is an error at start, not in a worker.
fn bind_all(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_reuseport(addr)?;
    // With port 0 the first socket picks the port; the others must share it.
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(bind_reuseport(addr)?);
    }
    Ok(all)
}

/// The running worker threads.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
}

impl Workers {
    /// Binds the listeners and starts `n` workers serving them until `shutdown` turns true; each
    /// then drains its connections (see [`serve`]).
    pub fn start(
        pipeline: Arc<Pipeline>,
        n: usize,
        http: SocketAddr,
        https: SocketAddr,
        tls: TlsConfigs,
        shutdown: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let n = n.max(1);
        let https_listeners = bind_all(https, n)?;
        let http_listeners = bind_all(http, n)?;
        let http_addr = http_listeners[0].local_addr()?;
        let https_addr = https_listeners[0].local_addr()?;
        let mut threads = Vec::with_capacity(n);
        for (i, (h, s)) in http_listeners.into_iter().zip(https_listeners).enumerate() {
            let (pipeline, tls, shutdown) = (pipeline.clone(), tls.clone(), shutdown.clone());
            let thread = std::thread::Builder::new()
                .name(format!("gantry-worker-{i}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(worker = i, error = %e, "cannot start a worker runtime");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let (h, s) = match (
                            tokio::net::TcpListener::from_std(h),
                            tokio::net::TcpListener::from_std(s),
                        ) {
                            (Ok(h), Ok(s)) => (h, s),
                            (Err(e), _) | (_, Err(e)) => {
                                tracing::error!(worker = i, error = %e, "cannot register listeners");
                                return;
                            }
                        };
                        let sweeper = tokio::spawn(sweep(pipeline.clone()));
                        tokio::join!(
                            serve(pipeline.clone(), h, ListenerKind::Http, None, shutdown.clone()),
                            serve(pipeline, s, ListenerKind::Https, Some(tls), shutdown),
                        );
                        sweeper.abort();
                    });
                })?;
            threads.push(thread);
        }
        Ok(Self {
            threads,
            http_addr,
            https_addr,
        })
    }

    /// Waits for every worker to finish draining.
    pub async fn join(self) {
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Closes this worker's idle upstream connections once they outlive the upstream idle timeout.
async fn sweep(pipeline: Arc<Pipeline>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let timeout = pipeline.snapshots.load().config.upstream_idle_timeout;
        state::with(|s| s.sweep(timeout));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_of_all_workers_share_one_port_even_when_it_is_picked_by_the_kernel() {
        let all = bind_all("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = all.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|p| *p == ports[0] && *p != 0), "{ports:?}");
    }

    #[test]
    fn a_port_taken_without_reuseport_is_an_error_at_start() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(bind_all(taken.local_addr().unwrap(), 2).is_err());
    }
}
