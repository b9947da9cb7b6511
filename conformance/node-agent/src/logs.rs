//! Container logs in the CRI format the kubelet reads (what containerd and CRI-O write):
//! one entry per line, `<RFC3339Nano time> <stdout|stderr> <F|P> <content>`, where `P` marks a
//! partial line (a line longer than [`MAX_LINE`] is split; the last piece is `F`).
//!
//! The writing side ([`capture`]) reads a container's stdout and stderr pipes in a task of its
//! own, so output keeps flowing while the agent is busy, and appends entries to
//! `<state>/pods/<uid>/<container>.log` (all restarts of the container go to the same file; there
//! is no rotation: rig processes are short-lived). The reading side ([`Query`], [`Selector`])
//! is what `GET /containerLogs/…` of the kubelet API needs: `sinceTime`/`sinceSeconds`,
//! `tailLines`, `limitBytes` and `timestamps`, with the kubelet's output format.

use std::io::{BufRead, Write};

use jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The longest line kept in one entry; longer lines become `P` entries of this size, so a
/// process that never writes a newline costs at most this much memory per stream.
pub const MAX_LINE: usize = 16 * 1024;

/// Splits one stream's bytes into CRI log entries.
pub struct Splitter {
    stream: &'static str,
    buf: Vec<u8>,
}

impl Splitter {
    pub fn new(stream: &'static str) -> Splitter {
        Splitter {
            stream,
            buf: Vec::new(),
        }
    }

    /// Appends to `out` the entries that `data` completes, stamped `now`.
    pub fn push(&mut self, mut data: &[u8], now: Timestamp, out: &mut Vec<u8>) {
        while !data.is_empty() {
            let room = MAX_LINE - self.buf.len();
            match data.iter().position(|&b| b == b'\n') {
                Some(i) if i <= room => {
                    self.buf.extend_from_slice(&data[..i]);
                    self.emit(now, 'F', out);
                    data = &data[i + 1..];
                }
                _ => {
                    let take = data.len().min(room);
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.buf.len() == MAX_LINE {
                        self.emit(now, 'P', out);
                    }
                }
            }
        }
    }

    /// The stream ended: an unterminated last line is written as a full one (as containerd does).
    pub fn finish(&mut self, now: Timestamp, out: &mut Vec<u8>) {
        if !self.buf.is_empty() {
            self.emit(now, 'F', out);
        }
    }

    fn emit(&mut self, now: Timestamp, tag: char, out: &mut Vec<u8>) {
        let _ = write!(out, "{now} {} {tag} ", self.stream);
        out.extend_from_slice(&self.buf);
        out.push(b'\n');
        self.buf.clear();
    }
}

/// Copies a container's stdout and stderr into `log` as CRI entries until both pipes close
/// (the process and everything it forked exited). Each batch of entries is one append.
pub async fn capture(
    mut stdout: impl AsyncRead + Unpin,
    mut stderr: impl AsyncRead + Unpin,
    mut log: tokio::fs::File,
) {
    let (mut out_split, mut err_split) = (Splitter::new("stdout"), Splitter::new("stderr"));
    let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
    let (mut out_open, mut err_open) = (true, true);
    let mut entries = Vec::new();
    while out_open || err_open {
        // `read` is cancel-safe: the branch that loses the race has read nothing.
        tokio::select! {
            r = stdout.read(&mut out_buf), if out_open => match r {
                Ok(n) if n > 0 => out_split.push(&out_buf[..n], Timestamp::now(), &mut entries),
                _ => {
                    out_open = false;
                    out_split.finish(Timestamp::now(), &mut entries);
                }
            },
            r = stderr.read(&mut err_buf), if err_open => match r {
                Ok(n) if n > 0 => err_split.push(&err_buf[..n], Timestamp::now(), &mut entries),
                _ => {
                    err_open = false;
                    err_split.finish(Timestamp::now(), &mut entries);
                }
            },
        }
        if !entries.is_empty() {
            // Written and flushed at once, so a reader of the file sees whole entries promptly.
            if let Err(e) = async {
                log.write_all(&entries).await?;
                log.flush().await
            }
            .await
            {
                tracing::warn!("writing a container log: {e}");
            }
            entries.clear();
        }
    }
}

/// One parsed entry of a CRI log file (a line without its newline).
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The timestamp as written (the kubelet prints it back with `timestamps=true`).
    pub time_text: &'a str,
    pub time: Timestamp,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses `<time> <stream> <tag> <content>`; `None` for a malformed line.
pub fn parse(line: &[u8]) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time_text = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    // Tags may carry more flags after ':' in future CRI versions; `P` is the partial flag.
    let partial = tag.split(|&b| b == b':').next()? == b"P";
    Some(Entry {
        time_text,
        time: time_text.parse().ok()?,
        stream,
        partial,
        content,
    })
}

/// The kubelet's `PodLogOptions` query parameters that the node agent honours.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// From `sinceTime` (RFC 3339) or `sinceSeconds`: entries before it are left out.
    pub since: Option<Timestamp>,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub timestamps: bool,
    pub follow: bool,
    pub previous: bool,
}

impl Query {
    /// Parses a URL query string; `now` anchors `sinceSeconds`. Unknown parameters are ignored,
    /// as the kubelet does (e.g. `container`, `insecureSkipTLSVerifyBackend`).
    pub fn parse(query: &str, now: Timestamp) -> Result<Query, String> {
        let mut q = Query::default();
        let mut since_seconds = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key}={value:?}: not a non-negative integer"))
            };
            let flag = || match value.as_str() {
                "" | "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(format!("{key}={value:?}: not a boolean")),
            };
            match key {
                "sinceTime" => {
                    q.since = Some(value.parse().map_err(|e| format!("sinceTime={value:?}: {e}"))?)
                }
                "sinceSeconds" => since_seconds = Some(number()?),
                "tailLines" => q.tail_lines = Some(number()?),
                "limitBytes" => q.limit_bytes = Some(number()?),
                "timestamps" => q.timestamps = flag()?,
                "follow" => q.follow = flag()?,
                "previous" => q.previous = flag()?,
                _ => {}
            }
        }
        if let (None, Some(s)) = (q.since, since_seconds) {
            let secs = i64::try_from(s).unwrap_or(i64::MAX);
            q.since = Some(
                now.checked_sub(jiff::SignedDuration::from_secs(secs))
                    .unwrap_or(Timestamp::MIN),
            );
        }
        Ok(q)
    }
}

/// Decodes `%XX` and `+` of a query value; invalid escapes stay as written.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns stored entries into the kubelet's output for one [`Query`]: feed it the file's lines
/// (without newlines) after skipping the ones `tailLines` leaves out ([`tail_skip`]).
pub struct Selector<'q> {
    query: &'q Query,
    /// Bytes still allowed by `limitBytes`.
    budget: Option<u64>,
}

impl<'q> Selector<'q> {
    pub fn new(query: &'q Query) -> Selector<'q> {
        Selector {
            query,
            budget: query.limit_bytes,
        }
    }

    /// Appends the output for one stored line to `out`; `false` once `limitBytes` is used up
    /// (the caller stops there). Malformed lines and entries before `since` give nothing.
    pub fn line(&mut self, raw: &[u8], out: &mut Vec<u8>) -> bool {
        if self.budget == Some(0) {
            return false;
        }
        let Some(entry) = parse(raw) else { return true };
        if self.query.since.is_some_and(|since| entry.time < since) {
            return true;
        }
        let start = out.len();
        if self.query.timestamps {
            out.extend_from_slice(entry.time_text.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(entry.content);
        if !entry.partial {
            out.push(b'\n');
        }
        if let Some(budget) = self.budget.as_mut() {
            let written = (out.len() - start) as u64;
            if written >= *budget {
                out.truncate(start + *budget as usize);
                *budget = 0;
                return false;
            }
            *budget -= written;
        }
        true
    }
}

/// How many lines of a log to skip so that `tail` remain (the kubelet counts stored entries).
pub fn tail_skip(log: impl BufRead, tail: u64) -> std::io::Result<u64> {
    let mut lines = 0u64;
    for chunk in log.split(b'\n') {
        chunk?;
        lines += 1;
    }
    Ok(lines.saturating_sub(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn splitter_writes_full_and_partial_entries() {
        let now = ts("2026-01-02T03:04:05.123456789Z");
        let mut s = Splitter::new("stdout");
        let mut out = Vec::new();
        s.push(b"one\ntw", now, &mut out);
        assert_eq!(out, b"2026-01-02T03:04:05.123456789Z stdout F one\n");
        out.clear();
        s.push(b"o\n\n", now, &mut out);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "2026-01-02T03:04:05.123456789Z stdout F two\n2026-01-02T03:04:05.123456789Z stdout F \n"
        );
        out.clear();
        s.push(b"tail", now, &mut out);
        assert!(out.is_empty());
        s.finish(now, &mut out);
        assert_eq!(out, b"2026-01-02T03:04:05.123456789Z stdout F tail\n");
    }

    #[test]
    fn long_lines_are_split_into_bounded_partial_entries() {
        let now = ts("2026-01-02T03:04:05Z");
        let mut s = Splitter::new("stderr");
        let mut out = Vec::new();
        let line = vec![b'x'; MAX_LINE * 2 + 10];
        // In small chunks, as pipes deliver them; the buffer never exceeds MAX_LINE.
        for chunk in line.chunks(1000) {
            s.push(chunk, now, &mut out);
            assert!(s.buf.len() < MAX_LINE);
        }
        s.push(b"\n", now, &mut out);
        let entries: Vec<Entry> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse(l).unwrap())
            .collect();
        assert_eq!(entries.len(), 3);
        assert!(entries[0].partial && entries[1].partial && !entries[2].partial);
        assert_eq!(entries[0].content.len(), MAX_LINE);
        assert_eq!(entries[2].content.len(), 10);
        assert!(entries.iter().all(|e| e.stream == "stderr"));
        // A line of exactly MAX_LINE bytes with its newline in the same read is one full entry.
        let mut out2 = Vec::new();
        let mut s2 = Splitter::new("stdout");
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        s2.push(&exact, now, &mut out2);
        assert_eq!(out2.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(!parse(&out2[..out2.len() - 1]).unwrap().partial);
    }

    #[test]
    fn parses_cri_lines() {
        let e = parse(b"2026-01-02T03:04:05.5Z stdout F hello world").unwrap();
        assert_eq!(e.time, ts("2026-01-02T03:04:05.5Z"));
        assert_eq!(e.time_text, "2026-01-02T03:04:05.5Z");
        assert_eq!(
            (e.stream, e.partial, e.content),
            ("stdout", false, &b"hello world"[..])
        );
        let e = parse(b"2026-01-02T03:04:05+01:00 stderr P ").unwrap();
        assert!(e.partial && e.content.is_empty());
        assert_eq!(e.time, ts("2026-01-02T02:04:05Z"));
        assert!(parse(b"2026-01-02T03:04:05Z stdout F")
            .unwrap()
            .content
            .is_empty());
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"2026-01-02T03:04:05Z other F x"), None);
        assert_eq!(parse(b"yesterday stdout F x"), None);
    }

    #[test]
    fn query_parameters() {
        let now = ts("2026-01-02T03:04:05Z");
        let q = Query::parse(
            "container=echo&sinceTime=2026-01-02T03%3A00%3A00Z&tailLines=5&limitBytes=100&timestamps=true&follow=false",
            now,
        )
        .unwrap();
        assert_eq!(
            q,
            Query {
                since: Some(ts("2026-01-02T03:00:00Z")),
                tail_lines: Some(5),
                limit_bytes: Some(100),
                timestamps: true,
                follow: false,
                previous: false,
            }
        );
        let q = Query::parse("sinceSeconds=65&previous=true", now).unwrap();
        assert_eq!(q.since, Some(ts("2026-01-02T03:03:00Z")));
        assert!(q.previous);
        assert_eq!(Query::parse("", now).unwrap(), Query::default());
        assert!(Query::parse("tailLines=-1", now).is_err());
        assert!(Query::parse("sinceTime=soon", now).is_err());
        assert!(Query::parse("timestamps=maybe", now).is_err());
        assert_eq!(percent_decode("a%3Ab+c%zz%4"), "a:b c%zz%4");
    }

    const LOG: &str = "2026-01-02T03:00:00Z stdout F first\n\
                       2026-01-02T03:00:01.5Z stderr F second\n\
                       bad line\n\
                       2026-01-02T03:00:02Z stdout P thi\n\
                       2026-01-02T03:00:02.1Z stdout F rd\n";

    fn select(q: &Query) -> String {
        let skip = match q.tail_lines {
            Some(t) => tail_skip(LOG.as_bytes(), t).unwrap(),
            None => 0,
        };
        let mut sel = Selector::new(q);
        let mut out = Vec::new();
        for line in LOG.lines().skip(skip as usize) {
            if !sel.line(line.as_bytes(), &mut out) {
                break;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn selects_like_the_kubelet() {
        assert_eq!(select(&Query::default()), "first\nsecond\nthird\n");
        let since = Query {
            since: Some(ts("2026-01-02T03:00:01Z")),
            ..Query::default()
        };
        assert_eq!(select(&since), "second\nthird\n");
        let stamped = Query {
            timestamps: true,
            since: Some(ts("2026-01-02T03:00:01.5Z")),
            ..Query::default()
        };
        assert_eq!(
            select(&stamped),
            "2026-01-02T03:00:01.5Z second\n2026-01-02T03:00:02Z thi2026-01-02T03:00:02.1Z rd\n"
        );
        let tail = Query {
            tail_lines: Some(2),
            ..Query::default()
        };
        assert_eq!(select(&tail), "third\n");
        let tail = Query {
            tail_lines: Some(4),
            ..Query::default()
        };
        assert_eq!(select(&tail), "second\nthird\n");
        let limited = Query {
            limit_bytes: Some(9),
            ..Query::default()
        };
        assert_eq!(select(&limited), "first\nsec");
        let exact = Query {
            limit_bytes: Some(6),
            ..Query::default()
        };
        assert_eq!(select(&exact), "first\n");
    }

    #[test]
    fn timestamps_are_rfc3339_nano() {
        // What the writer stamps must parse back to the same instant.
        let now = Timestamp::now();
        let mut out = Vec::new();
        let mut s = Splitter::new("stdout");
        s.push(b"x\n", now, &mut out);
        assert_eq!(parse(&out[..out.len() - 1]).unwrap().time, now);
    }
}
