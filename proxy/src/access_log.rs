//! One JSON line per request, written by a background thread so the data path never blocks on
//! stdout. When the writer falls behind, lines are dropped and counted rather than slowing traffic.

use std::{
    io::Write,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::{Duration, SystemTime},
};

use http::{header, Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::forward::ConnInfo;

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 65_536;

#[derive(Debug)]
pub struct AccessLog {
    tx: mpsc::SyncSender<AccessRecord>,
    dropped: Arc<AtomicU64>,
}

/// The fields of one access-log line.
#[derive(Debug, Serialize)]
pub struct AccessRecord {
    #[serde(serialize_with = "rfc3339")]
    time: SystemTime,
    client: SocketAddr,
    method: String,
    host: String,
    path: String,
    protocol: &'static str,
    status: u16,
    /// The response's Content-Length; null when the body is streamed without one.
    bytes: Option<u64>,
    duration_ms: f64,
    upstream: Option<SocketAddr>,
    request_id: Option<String>,
    user_agent: Option<String>,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

// === impl AccessLog ===

impl AccessLog {
    /// A log that writes to stdout from its own thread.
    pub fn stdout() -> Self {
        let (tx, rx) = mpsc::sync_channel::<AccessRecord>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
                while let Ok(rec) = rx.recv() {
                    let _ = serde_json::to_writer(&mut out, &rec);
                    let _ = out.write_all(b"\n");
                    // Flush when the queue is drained, so lines appear promptly at low rates and
                    // batch at high rates.
                    while let Ok(rec) = rx.try_recv() {
                        let _ = serde_json::to_writer(&mut out, &rec);
                        let _ = out.write_all(b"\n");
                    }
                    let _ = out.flush();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access-log thread; access log is off");
        }
        Self { tx, dropped }
    }

    pub fn write(&self, rec: AccessRecord) {
        if self.tx.try_send(rec).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

// === impl AccessRecord ===

impl AccessRecord {
    pub fn start<B>(req: &Request<B>, conn: &ConnInfo) -> Self {
        let h = req.headers();
        let text = |name| {
            h.get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        Self {
            time: SystemTime::now(),
            client: conn.client,
            method: String::new(),
            host: String::new(),
            path: req.uri().path().to_string(),
            protocol: match req.version() {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            status: 0,
            bytes: None,
            duration_ms: 0.0,
            upstream: None,
            request_id: text(header::HeaderName::from_static("x-request-id")),
            user_agent: text(header::USER_AGENT),
        }
    }

    /// The host and path as matched, once normalized.
    pub fn set_target(&mut self, host: &str, path: &str) {
        self.host = host.to_string();
        self.path = path.to_string();
    }

    /// The request id as forwarded (the client's, or the one generated for it).
    pub fn set_request_id(&mut self, id: Option<&http::HeaderValue>) {
        if self.request_id.is_none() {
            self.request_id = id.and_then(|v| v.to_str().ok()).map(str::to_string);
        }
    }

    pub fn finish<B>(
        &mut self,
        method: &Method,
        status: StatusCode,
        resp: &Response<B>,
        elapsed: Duration,
        upstream: Option<SocketAddr>,
    ) {
        self.method = method.to_string();
        self.status = status.as_u16();
        self.bytes = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        self.duration_ms = elapsed.as_secs_f64() * 1000.0;
        self.upstream = upstream;
    }
}
