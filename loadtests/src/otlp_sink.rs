//! An OTLP/HTTP receiver that accepts every export and drops it, for measuring what tracing costs
//! Gantry (`--proxies gantry-trace1,gantry-trace100`) without a collector's own CPU use in the
//! numbers. It reads each request body whole and answers `200` with an empty
//! `ExportTraceServiceResponse` (an empty protobuf message is zero bytes). It runs on a thread of
//! its own in the harness process, started on first use, and listens on 127.0.0.1 only.

use std::{convert::Infallible, net::SocketAddr, sync::OnceLock};

use anyhow::{anyhow, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

static SINK: OnceLock<Result<SocketAddr, String>> = OnceLock::new();

/// The sink's address, starting it on first use.
pub fn addr() -> Result<SocketAddr> {
    SINK.get_or_init(|| start().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("OTLP sink: {e}"))
}

fn start() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("otlp-sink".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the OTLP sink");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("the sink's listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let svc = service_fn(|req: Request<Incoming>| async move {
                            let _ = req.into_body().collect().await;
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            resp.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/x-protobuf"),
                            );
                            Ok::<_, Infallible>(resp)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        })?;
    Ok(addr)
}
