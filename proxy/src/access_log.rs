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

use crate::{config::AccessLogFormat, conn::ConnInfo};

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 65_536;

#[derive(Debug)]
pub struct AccessLog {
    tx: mpsc::SyncSender<(AccessRecord, AccessLogFormat)>,
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
        let (tx, rx) = mpsc::sync_channel::<(AccessRecord, AccessLogFormat)>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
                while let Ok(first) = rx.recv() {
                    // Write what is queued, then flush once: lines appear promptly at low rates and
                    // are batched at high rates.
                    let mut next = Some(first);
                    while let Some((rec, format)) = next {
                        let _ = rec.write_line(&mut out, format);
                        next = rx.try_recv().ok();
                    }
                    let _ = out.flush();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access-log thread; access log is off");
        }
        Self { tx, dropped }
    }

    pub fn write(&self, rec: AccessRecord, format: AccessLogFormat) {
        if self.tx.try_send((rec, format)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

// === impl AccessRecord ===

impl AccessRecord {
    /// Writes the record as one line in the given format.
    pub fn write_line(&self, out: &mut impl Write, format: AccessLogFormat) -> std::io::Result<()> {
        match format {
            AccessLogFormat::Json => {
                serde_json::to_writer(&mut *out, self)?;
            }
            AccessLogFormat::Text => {
                // Combined-log style; every field that came from the client is quoted with the
                // quote and control characters escaped, so a request cannot forge a log line.
                write!(
                    out,
                    "{} - - [{}] \"{} {}{} {}\" {} {} \"{}\" {:.3}ms {} {}",
                    self.client.ip(),
                    humantime::format_rfc3339_millis(self.time),
                    self.method,
                    escape(&self.host),
                    escape(&self.path),
                    self.protocol,
                    self.status,
                    self.bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
                    escape(self.user_agent.as_deref().unwrap_or("-")),
                    self.duration_ms,
                    self.upstream.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
                    escape(self.request_id.as_deref().unwrap_or("-")),
                )?;
            }
        }
        out.write_all(b"\n")
    }

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

/// Escapes quotes, backslashes and anything not printable ASCII as `\xNN`.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            time: SystemTime::UNIX_EPOCH,
            client: "10.0.0.1:4000".parse().unwrap(),
            method: "GET".into(),
            host: "a.example".into(),
            path: "/x\"\n".into(),
            protocol: "HTTP/1.1",
            status: 200,
            bytes: Some(3),
            duration_ms: 1.5,
            upstream: Some("10.1.0.1:80".parse().unwrap()),
            request_id: Some("abc".into()),
            user_agent: Some("curl".into()),
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let mut out = Vec::new();
        record().write_line(&mut out, AccessLogFormat::Json).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for k in [
            "time",
            "method",
            "host",
            "path",
            "status",
            "bytes",
            "duration_ms",
            "upstream",
            "request_id",
        ] {
            assert!(!v[k].is_null(), "{k} missing in {line}");
        }
        assert_eq!(v["path"], "/x\"\n");
    }

    #[test]
    fn text_lines_escape_what_the_client_sent() {
        let mut out = Vec::new();
        record().write_line(&mut out, AccessLogFormat::Text).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line.matches('\n').count(),
            1,
            "a newline in the path cannot start a new line: {line}"
        );
        assert!(
            line.contains("GET a.example/x\\x22\\x0a HTTP/1.1\" 200 3"),
            "{line}"
        );
    }
}
