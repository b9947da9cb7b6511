//! Request normalization: the `Host` header and the request path, each normalized once per request
//! before routing.
//!
//! Both functions take whatever a client sent and must never panic. The result is canonical:
//! two spellings that mean the same resource normalize to the same string. That lets the route
//! table compare plain strings. The route table normalizes rule paths with the same function.
//!
//! - [`normalize_path`] applies RFC 3986 §6.2.2: it decodes percent-encoded unreserved characters,
//!   uppercases the hex of the other percent-encodings, percent-encodes raw bytes that are not
//!   allowed in a path (spaces, `{`, non-ASCII, ...), and removes `.`/`..` segments (also
//!   when they are written `%2e`). `%2F` stays encoded and is not a separator. Consecutive slashes
//!   (`//`) are **not** merged: RFC 3986 gives an empty segment a meaning, and backends disagree
//!   on what it means, so routing keeps it as it is (Prefix `/a` still matches `/a//b`).
//! - [`normalize_host`] strips the port and one trailing dot, lowercases the name and checks its
//!   characters.
//!
//! Both return [`Cow::Borrowed`] and do not allocate when the input is already canonical, which
//! is the usual case.

use std::{borrow::Cow, net::Ipv6Addr};

/// Why a request path was refused. Each of these is the client's fault (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty or does not start with `/`. Only origin-form targets are routed; the
    /// caller rejects `*` and authority-form before it gets here.
    #[error("path does not start with '/'")]
    NotAbsolute,
    /// A `..` segment climbs above the root (`/../x`, `/a/../../x`, `/%2e%2e/x`).
    #[error("path escapes the root with '..'")]
    EscapesRoot,
    /// A `%` that is not followed by two hex digits (`%zz`, `%4`), at byte offset `at`.
    #[error("invalid percent-encoding at byte {at}")]
    InvalidPercentEncoding { at: usize },
    /// A NUL byte, raw or written as `%00`, at byte offset `at`.
    #[error("NUL byte at byte {at}")]
    Nul { at: usize },
    /// A raw ASCII control character (other than NUL) or DEL, at byte offset `at`. Encoded
    /// controls (`%0A`) are allowed and stay encoded.
    #[error("control character at byte {at}")]
    ControlCharacter { at: usize },
}

impl PathError {
    /// A short, static description (without the offset), e.g. for `RouteError::InvalidPath`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAbsolute => "path does not start with '/'",
            Self::EscapesRoot => "path escapes the root with '..'",
            Self::InvalidPercentEncoding { .. } => "invalid percent-encoding",
            Self::Nul { .. } => "NUL byte",
            Self::ControlCharacter { .. } => "control character",
        }
    }
}

/// Why a `Host` header or `:authority` was refused. Each of these is the client's fault (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No host name (empty value, only a port such as `:80`, or only a dot).
    #[error("empty host")]
    Empty,
    /// The value contains userinfo (`user@host`), which is not allowed in `Host` or `:authority`.
    #[error("userinfo is not allowed in the host")]
    UserInfo,
    /// The port is not a decimal number up to 65535.
    #[error("invalid port")]
    InvalidPort,
    /// A bracketed IPv6 literal that is unterminated, malformed or followed by junk.
    #[error("invalid IPv6 literal")]
    InvalidIpv6,
    /// A character other than ASCII letters, digits, `-`, `.` and `_`, at byte offset `at`.
    #[error("invalid character in host at byte {at}")]
    InvalidCharacter { at: usize },
    /// An empty label (`a..b`, `.a`).
    #[error("empty label in host")]
    EmptyLabel,
    /// The name is longer than 253 bytes or one of its labels is longer than 63.
    #[error("host name too long")]
    TooLong,
}

// === path ===

/// How [`normalize_path`] treats one raw byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// ALPHA DIGIT `-` `.` `_` `~`: kept raw; decoded when percent-encoded.
    Unreserved,
    /// Sub-delims, `:` and `@`: allowed raw in a path, kept as they are.
    Keep,
    Slash,
    Percent,
    /// Not allowed raw in a path (space, `"`, `{`, non-ASCII, ...): percent-encoded.
    Encode,
    Control,
    Nul,
}

const CLASS: [Class; 256] = {
    let mut table = [Class::Encode; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = match c {
            0 => Class::Nul,
            0x01..=0x1f | 0x7f => Class::Control,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => Class::Unreserved,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' => {
                Class::Keep
            }
            b'/' => Class::Slash,
            b'%' => Class::Percent,
            _ => Class::Encode,
        };
        b += 1;
    }
    table
};

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Normalizes an origin-form request path (the query already split off) for routing.
///
/// Returns `Cow::Borrowed` without allocating when the path has no `%`, no byte that needs
/// encoding and no `.`/`..` segment. `//` is kept (see the module docs). A `..` that would climb
/// above the root is an error rather than being clamped to `/`: no honest client sends one.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical_path(bytes) {
        return Ok(Cow::Borrowed(raw));
    }
    normalize_path_slow(bytes).map(Cow::Owned)
}

/// True when the path has only bytes that stay as they are and no dot segment. Everything else
/// (including every error) is left to the slow path.
fn is_canonical_path(bytes: &[u8]) -> bool {
    let mut segment_start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match CLASS[b as usize] {
            Class::Unreserved | Class::Keep => {}
            Class::Slash => {
                if is_dot_segment(&bytes[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            Class::Percent | Class::Encode | Class::Control | Class::Nul => return false,
        }
    }
    !is_dot_segment(&bytes[segment_start..])
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_encoded(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xf)] as char);
}

/// Writes the path segment by segment. Each segment is normalized as it is appended, so a dot
/// segment is recognized after decoding (`%2e` is `.`). The output holds only ASCII.
fn normalize_path_slow(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len() + 8);
    // `bytes[0]` is the leading `/`; `i` always points at the first byte of a segment.
    let mut i = 1;
    loop {
        let segment_start = out.len();
        out.push('/');
        while i < bytes.len() && bytes[i] != b'/' {
            let b = bytes[i];
            match CLASS[b as usize] {
                Class::Unreserved | Class::Keep => {
                    out.push(b as char);
                    i += 1;
                }
                Class::Percent => {
                    let hi = bytes.get(i + 1).copied().and_then(hex_value);
                    let lo = bytes.get(i + 2).copied().and_then(hex_value);
                    let (Some(hi), Some(lo)) = (hi, lo) else {
                        return Err(PathError::InvalidPercentEncoding { at: i });
                    };
                    let decoded = hi << 4 | lo;
                    match CLASS[decoded as usize] {
                        Class::Nul => return Err(PathError::Nul { at: i }),
                        Class::Unreserved => out.push(decoded as char),
                        _ => push_encoded(&mut out, decoded),
                    }
                    i += 3;
                }
                Class::Encode => {
                    push_encoded(&mut out, b);
                    i += 1;
                }
                Class::Control => return Err(PathError::ControlCharacter { at: i }),
                Class::Nul => return Err(PathError::Nul { at: i }),
                Class::Slash => unreachable!("the loop stops at '/'"),
            }
        }
        let last = i >= bytes.len();
        let dot_segment = match &out[segment_start + 1..] {
            "." => {
                out.truncate(segment_start);
                true
            }
            ".." => {
                out.truncate(segment_start);
                // Drop the previous segment with its leading '/'; there is none above the root.
                let Some(previous) = out.rfind('/') else {
                    return Err(PathError::EscapesRoot);
                };
                out.truncate(previous);
                true
            }
            _ => false,
        };
        if last {
            // A path ending in a dot segment names a directory: `/a/b/..` is `/a/`.
            if dot_segment {
                out.push('/');
            }
            break;
        }
        i += 1;
    }
    Ok(out)
}

// === host ===

const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Normalizes a `Host` header or `:authority` value to a lowercase host without port and without
/// a trailing dot: `Example.COM.:8080` → `example.com`, `[::1]:443` → `[::1]`.
///
/// Host names may hold ASCII letters, digits, `-`, `.` and `_` (underscores appear in real
/// internal names). IPv6 literals must be in brackets and are kept in brackets, lowercased but
/// not otherwise rewritten. An empty port (`example.com:`) is allowed and dropped, as RFC 3986
/// §6.2.3 says. Returns `Cow::Borrowed` unless the name has to be lowercased.
pub fn normalize_host(raw: &str) -> Result<Cow<'_, str>, HostError> {
    if raw.contains('@') {
        return Err(HostError::UserInfo);
    }
    let host = if raw.starts_with('[') {
        let end = raw.find(']').ok_or(HostError::InvalidIpv6)?;
        match &raw[end + 1..] {
            "" => {}
            rest => check_port(rest.strip_prefix(':').ok_or(HostError::InvalidIpv6)?)?,
        }
        raw[1..end]
            .parse::<Ipv6Addr>()
            .map_err(|_| HostError::InvalidIpv6)?;
        &raw[..=end]
    } else {
        let host = match raw.split_once(':') {
            Some((host, port)) => {
                check_port(port)?;
                host
            }
            None => raw,
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        check_name(host)?;
        host
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(host))
    }
}

fn check_port(port: &str) -> Result<(), HostError> {
    if port.is_empty() {
        return Ok(());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::InvalidPort);
    }
    port.parse::<u16>().map(drop).map_err(|_| HostError::InvalidPort)
}

fn check_name(host: &str) -> Result<(), HostError> {
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    let mut label_len = 0;
    for (at, b) in host.bytes().enumerate() {
        match b {
            b'.' if label_len == 0 => return Err(HostError::EmptyLabel),
            b'.' => label_len = 0,
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => {
                label_len += 1;
                if label_len > MAX_LABEL_LEN {
                    return Err(HostError::TooLong);
                }
            }
            _ => return Err(HostError::InvalidCharacter { at }),
        }
    }
    // The one trailing dot was stripped by the caller, so a second one is an empty label.
    if label_len == 0 {
        return Err(HostError::EmptyLabel);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_as_rfc_3986_says() {
        // (input, expected, borrowed)
        let cases: &[(&str, &str, bool)] = &[
            ("/", "/", true),
            ("/foo/bar", "/foo/bar", true),
            ("/foo/bar/", "/foo/bar/", true),
            ("/foo//bar", "/foo//bar", true),
            ("//", "//", true),
            ("/.hidden/..dots/.../a.b", "/.hidden/..dots/.../a.b", true),
            ("/a;b=c:d@e!$&'()*+,", "/a;b=c:d@e!$&'()*+,", true),
            ("/a/./b", "/a/b", false),
            ("/a/../b", "/b", false),
            ("/a/b/..", "/a/", false),
            ("/a/b/.", "/a/b/", false),
            ("/a/b/./", "/a/b/", false),
            ("/.", "/", false),
            ("/./", "/", false),
            ("/a/..", "/", false),
            ("/a/../", "/", false),
            ("/./a", "/a", false),
            ("/a//..", "/a/", false),
            ("//..", "/", false),
            ("/%2e/a", "/a", false),
            ("/a/%2E%2e/b", "/b", false),
            ("/a/.%2e", "/", false),
            ("/%7Euser", "/~user", false),
            ("/%7euser", "/~user", false),
            ("/%41%62%2D%5f", "/Ab-_", false),
            ("/a%2fb", "/a%2Fb", false),
            ("/a%2Fb/../c", "/c", false),
            ("/a%2f..", "/a%2F..", false),
            ("/caf%c3%a9", "/caf%C3%A9", false),
            ("/café", "/caf%C3%A9", false),
            ("/a b", "/a%20b", false),
            ("/a{b}", "/a%7Bb%7D", false),
            ("/%0a", "/%0A", false),
            ("/%25", "/%25", true),
            ("/a//.", "/a//", false),
        ];
        for &(input, want, borrowed) in cases {
            let got = normalize_path(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got, want, "normalize_path({input:?})");
            // `%` never takes the fast path, even when the result is unchanged.
            let want_borrowed = borrowed && !input.contains('%');
            assert_eq!(
                matches!(got, Cow::Borrowed(_)),
                want_borrowed,
                "borrowed for {input:?}"
            );
        }
    }

    #[test]
    fn bad_paths_are_refused_with_the_reason() {
        let cases: &[(&str, PathError)] = &[
            ("", PathError::NotAbsolute),
            ("foo", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("example.com:443", PathError::NotAbsolute),
            ("/..", PathError::EscapesRoot),
            ("/../x", PathError::EscapesRoot),
            ("/a/../../x", PathError::EscapesRoot),
            ("/%2e%2e/x", PathError::EscapesRoot),
            ("/./..", PathError::EscapesRoot),
            ("/%zz", PathError::InvalidPercentEncoding { at: 1 }),
            ("/%4", PathError::InvalidPercentEncoding { at: 1 }),
            ("/a%", PathError::InvalidPercentEncoding { at: 2 }),
            ("/%%41", PathError::InvalidPercentEncoding { at: 1 }),
            ("/%é", PathError::InvalidPercentEncoding { at: 1 }),
            ("/a\0b", PathError::Nul { at: 2 }),
            ("/a%00", PathError::Nul { at: 2 }),
            ("/a\tb", PathError::ControlCharacter { at: 2 }),
            ("/a\r\n", PathError::ControlCharacter { at: 2 }),
            ("/\x7f", PathError::ControlCharacter { at: 1 }),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize_path(input).as_ref(),
                Err(want),
                "normalize_path({input:?})"
            );
        }
    }

    #[test]
    fn hosts_normalize_to_lowercase_without_port_or_trailing_dot() {
        // (input, expected, borrowed)
        let cases: &[(&str, &str, bool)] = &[
            ("example.com", "example.com", true),
            ("example.com:8080", "example.com", true),
            ("example.com.", "example.com", true),
            ("example.com.:443", "example.com", true),
            ("example.com:", "example.com", true),
            ("localhost", "localhost", true),
            ("my_host-1.internal", "my_host-1.internal", true),
            ("10.0.0.1:80", "10.0.0.1", true),
            ("Example.COM", "example.com", false),
            ("EXAMPLE.com.:443", "example.com", false),
            ("[::1]", "[::1]", true),
            ("[::1]:8080", "[::1]", true),
            ("[::ffff:10.0.0.1]:80", "[::ffff:10.0.0.1]", true),
            ("[2001:DB8::1]", "[2001:db8::1]", false),
        ];
        for &(input, want, borrowed) in cases {
            let got = normalize_host(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got, want, "normalize_host({input:?})");
            assert_eq!(
                matches!(got, Cow::Borrowed(_)),
                borrowed,
                "borrowed for {input:?}"
            );
        }
    }

    #[test]
    fn bad_hosts_are_refused_with_the_reason() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = ["abcdefghi"; 26].join(".");
        let cases: &[(&str, HostError)] = &[
            ("", HostError::Empty),
            (":80", HostError::Empty),
            (".", HostError::Empty),
            ("user@example.com", HostError::UserInfo),
            ("user:pass@example.com:80", HostError::UserInfo),
            ("example.com:http", HostError::InvalidPort),
            ("example.com:65536", HostError::InvalidPort),
            ("example.com:-1", HostError::InvalidPort),
            ("example.com:+80", HostError::InvalidPort),
            ("example.com:8080:1", HostError::InvalidPort),
            ("::1", HostError::InvalidPort),
            ("[::1", HostError::InvalidIpv6),
            ("[]", HostError::InvalidIpv6),
            ("[zz::1]", HostError::InvalidIpv6),
            ("[::1]x", HostError::InvalidIpv6),
            ("[::1]:x", HostError::InvalidPort),
            ("[fe80::1%25eth0]", HostError::InvalidIpv6),
            ("exa mple.com", HostError::InvalidCharacter { at: 3 }),
            ("*.example.com", HostError::InvalidCharacter { at: 0 }),
            ("exämple.com", HostError::InvalidCharacter { at: 2 }),
            ("a/b", HostError::InvalidCharacter { at: 1 }),
            ("a..b", HostError::EmptyLabel),
            (".a", HostError::EmptyLabel),
            ("a..", HostError::EmptyLabel),
            (&long_label, HostError::TooLong),
            (&long_name, HostError::TooLong),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize_host(input).as_ref(),
                Err(want),
                "normalize_host({input:?})"
            );
        }
    }

    #[test]
    fn normalized_paths_are_fixed_points() {
        for input in ["/a/./b/../c%7e/%2e%2E/d%2f", "/café/..", "/x/%7B%7d/.", "/a//b/"] {
            let once = normalize_path(input).unwrap();
            let twice = normalize_path(&once).unwrap();
            assert!(
                matches!(twice, Cow::Borrowed(_)) || once.contains('%'),
                "{input:?} → {once:?} → {twice:?}"
            );
            assert_eq!(once, twice);
        }
    }

    fn nasty_inputs() -> Vec<String> {
        let mut inputs: Vec<String> = [
            "",
            "/",
            "%",
            "%%",
            "%%%",
            "/%",
            "/%e",
            "/%%",
            "/%\u{e9}",
            "/%e\u{e9}",
            "/\u{e9}%",
            "/.",
            "/..",
            "/...",
            "/.%",
            "/%2",
            "/%2e%",
            "/%2e%2",
            "[",
            "]",
            "[]",
            "[:",
            "[::1]:",
            "[::1]]",
            "[[::1]",
            ":",
            "::::",
            ":65535",
            "a:99999999999999999999",
            "@",
            "é",
            "\u{0}",
            "\u{7f}",
            "\u{feff}",
            "/\u{10ffff}",
            "\u{10ffff}",
            ".",
            "..",
            "a.",
            "a..",
            "-",
            "_",
            "[\u{e9}]",
            "[::1\u{e9}]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        inputs.extend([
            "a".repeat(100_000),
            "/".repeat(10_000),
            "/..".repeat(1_000),
            "/a".repeat(1_000) + &"/..".repeat(1_000),
            "/%2e%2e".repeat(1_000),
            "/%".repeat(1_000),
            "é".repeat(1_000),
            ".".repeat(1_000),
            "[".repeat(100) + &":".repeat(100),
        ]);
        // Every short string over an alphabet of troublemakers.
        let alphabet = [
            "/", ".", "%", "2", "e", "E", "0", "a", ":", "[", "]", "@", "é", "\0", " ",
        ];
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    for d in alphabet {
                        inputs.push([a, b, c, d].concat());
                    }
                }
            }
        }
        inputs
    }

    #[test]
    fn normalization_never_panics_on_nasty_inputs() {
        for input in nasty_inputs() {
            if let Ok(path) = normalize_path(&input) {
                assert!(path.starts_with('/'), "{input:?} → {path:?}");
                assert!(path.is_ascii(), "{input:?} → {path:?}");
                assert_eq!(
                    normalize_path(&path).as_deref(),
                    Ok(&*path),
                    "not a fixed point: {input:?}"
                );
            }
            if let Ok(host) = normalize_host(&input) {
                assert!(
                    !host.is_empty() && !host.bytes().any(|b| b.is_ascii_uppercase()),
                    "{input:?}"
                );
                assert_eq!(
                    normalize_host(&host).as_deref(),
                    Ok(&*host),
                    "not a fixed point: {input:?}"
                );
            }
        }
    }
}
