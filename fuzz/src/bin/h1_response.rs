//! The upstream HTTP/1.1 codec (`gantry_proxy::h1`) reading arbitrary bytes as a backend's response.
//!
//! Per input: a loopback connection to an in-process listener whose accepted side reads the request,
//! writes the input, half-closes and drains; `H1Conn::send` sends a request and the whole body is read
//! (bounded in time). A 101 is taken through `into_upgraded` and read to its end; a connection that
//! comes back reusable gets a second request. Property: never panic.
//!
//! The first input byte picks the request (GET, HEAD, POST with a body, GET with `Connection:
//! close`); the rest is the response.
use std::{sync::OnceLock, time::Duration};

use bytes::Bytes;
use gantry_proxy::h1::H1Conn;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};

const LIMIT: Duration = Duration::from_millis(500);

struct Env {
    rt: Runtime,
    listener: TcpListener,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        Env { rt, listener }
    })
}

fn request(selector: u8) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .uri("/fuzz")
        .header(header::HOST, "backend.test");
    let body = match selector % 4 {
        0 => Bytes::new(),
        1 => {
            b = b.method(Method::HEAD);
            Bytes::new()
        }
        2 => {
            b = b.method(Method::POST).header(header::CONTENT_LENGTH, "5");
            Bytes::from_static(b"hello")
        }
        _ => {
            b = b.header(header::CONNECTION, "close");
            Bytes::new()
        }
    };
    b.body(Full::new(body)).expect("request")
}

/// The backend's side: read what the client sends (so closing does not reset the connection),
/// answer with `response`, half-close, then drain until the client closes.
async fn backend(mut io: TcpStream, response: Vec<u8>) {
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(100), io.read(&mut scratch)).await;
    let _ = io.write_all(&response).await;
    let _ = io.shutdown().await;
    let _ = tokio::time::timeout(LIMIT, async {
        while let Ok(n) = io.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn client(conn: H1Conn, selector: u8) {
    let resp = conn.send(request(selector)).await;
    if std::env::var_os("GANTRY_FUZZ_DEBUG").is_some() {
        eprintln!("{resp:?}");
    }
    let Ok(resp) = resp else { return };
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(up) = resp.into_body().into_upgraded() {
            let (mut io, _leftover) = up.into_parts();
            let mut rest = Vec::new();
            let _ = io.read_to_end(&mut rest).await;
        }
        return;
    }
    let mut body = resp.into_body();
    let _ = body.is_keep_alive();
    // Read frame by frame so that a reusable connection can be taken back at the end.
    loop {
        match body.frame().await {
            Some(Ok(_frame)) => {}
            Some(Err(_)) => return,
            None => break,
        }
    }
    if let Some(conn) = body.take_reusable() {
        // The backend has half-closed: this must fail cleanly (or be reported stale), not panic.
        if let Ok(resp) = conn.send(request(selector)).await {
            let _ = resp.into_body().collect().await;
        }
    }
}

fn run(data: &[u8]) {
    let Some((&selector, response)) = data.split_first() else {
        return;
    };
    let env = env();
    env.rt.block_on(async {
        let addr = env.listener.local_addr().expect("local addr");
        let (connected, accepted) = tokio::join!(TcpStream::connect(addr), env.listener.accept());
        let (Ok(stream), Ok((server, _))) = (connected, accepted) else {
            return;
        };
        let backend = tokio::spawn(backend(server, response.to_vec()));
        let _ = tokio::time::timeout(LIMIT, client(H1Conn::new(stream), selector)).await;
        let _ = backend.await;
    });
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        run(data);
    });
}
