//! Container logs in the CRI format the kubelet reads (what containerd and CRI-O write):
//! one entry per line, `<RFC3339Nano time> <stdout|stderr> <F|P> <content>`, where `P` marks a
//! partial line (a line longer than [`MAX_LINE`] is split; the last piece is `F`).
//!
//! The writing side ([`capture`]) reads a container's stdout and stderr pipes in a task of its
//! own, so output keeps flowing while the agent is busy, and appends entries to
//! `<state>/pods/<uid>/<container>.log` (all restarts of the container go to the same file; there
//! is no rotation: rig processes are short-lived). The timestamps let a reader honour
//! `sinceTime`/`sinceSeconds` as the kubelet does.

use std::io::Write;

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
        // (stream, tag, content length) of each entry.
        let entries: Vec<(&[u8], &[u8], usize)> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&[u8]> = l.splitn(4, |&b| b == b' ').collect();
                (f[1], f[2], f[3].len())
            })
            .collect();
        let p: &[u8] = b"stderr";
        assert_eq!(
            entries,
            [
                (p, &b"P"[..], MAX_LINE),
                (p, &b"P"[..], MAX_LINE),
                (p, &b"F"[..], 10)
            ]
        );
        // A line of exactly MAX_LINE bytes with its newline in the same read is one full entry.
        let mut out2 = Vec::new();
        let mut s2 = Splitter::new("stdout");
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        s2.push(&exact, now, &mut out2);
        assert_eq!(out2.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(out2.starts_with(b"2026-01-02T03:04:05Z stdout F yyy"));
    }
}
