//! Request and response headers as they cross the proxy: the Host a request is for, hop-by-hop
//! headers removed, and the forwarding headers set. Pure functions over header maps.

use std::net::IpAddr;

use http::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    Request, Version,
};
use ipnet::IpNet;

use crate::{conn::ConnInfo, error::ProxyError, policy::SERVER};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// The h2c upgrade's settings (RFC 7540 3.2); meaningless past the first hop.
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The Host the request is for: `Host` in HTTP/1, `:authority` (or `Host`) in HTTP/2. Missing,
/// repeated, or disagreeing with the request target: 400. Borrowed from the request.
pub fn request_host<B>(req: &Request<B>) -> Result<&str, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadHost("more than one Host header"));
    }
    let header = match header {
        Some(v) => Some(v.to_str().map_err(|_| ProxyError::BadHost("Host is not ASCII"))?),
        None => None,
    };
    let authority = req.uri().authority().map(|a| a.as_str());
    match (header, authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => {
            Err(ProxyError::BadHost("Host disagrees with the request target"))
        }
        (Some(h), _) => Ok(h),
        (None, Some(a)) => Ok(a),
        (None, None) => Err(ProxyError::BadHost("missing Host")),
    }
}

/// Strict request framing (RFC 9112 6.1, 6.3): the only transfer coding Gantry accepts is one
/// `chunked`, last; anything else is refused before any upstream work. An unknown coding
/// (`identity`, `gzip` as a transfer coding) is 501; `chunked` twice, `chunked` not last, or
/// Transfer-Encoding together with Content-Length is 400 (the classic smuggling shapes).
pub fn check_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    if !headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(());
    }
    let mut codings = Vec::new();
    for v in headers.get_all(header::TRANSFER_ENCODING) {
        let v = v
            .to_str()
            .map_err(|_| ProxyError::BadFraming("Transfer-Encoding is not ASCII"))?;
        codings.extend(v.split(',').map(str::trim).filter(|t| !t.is_empty()));
    }
    let chunked = |t: &str| t.eq_ignore_ascii_case("chunked");
    if codings.iter().filter(|t| chunked(t)).count() > 1 {
        return Err(ProxyError::BadFraming("chunked more than once"));
    }
    if !codings.last().is_some_and(|t| chunked(t)) {
        return Err(ProxyError::BadFraming("chunked is not the final transfer coding"));
    }
    if codings.len() > 1 {
        return Err(ProxyError::UnsupportedTransferCoding);
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Err(ProxyError::BadFraming(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    Ok(())
}

/// Whether the request asks for an upgrade that Gantry tunnels: HTTP/1.1 with `Connection:
/// upgrade` and `Upgrade: websocket`. Every other upgrade (above all `h2c`, which would give the
/// client a raw HTTP/2 session to the backend past routing, forwarding headers and the access log)
/// is not forwarded: its `Upgrade` header is removed with the other hop-by-hop headers.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && connection_has(req.headers(), "upgrade")
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers: the fixed list and whatever `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &HTTP2_SETTINGS,
    ] {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The client a trusted proxy forwarded the request for (nginx's `real_ip_recursive`): when the peer
/// is in `trusted`, the right-most address of `X-Forwarded-For` that is not itself trusted (or the
/// left-most, when all are). `None` when the peer is not trusted, no proxy is trusted, or the list
/// holds something that is not an address (then the peer stands: a list that cannot be read
/// cannot be believed).
pub fn real_client(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
    if trusted.is_empty() || !is_trusted(canonical_ip(peer)) {
        return None;
    }
    let mut last = None;
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        for entry in value.to_str().ok()?.rsplit(',') {
            let ip = canonical_ip(entry.trim().parse::<IpAddr>().ok()?);
            if !is_trusted(ip) {
                return Some(ip);
            }
            last = Some(ip);
        }
    }
    last
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Sets the forwarding headers of a request going upstream. `real_client` is the address a
/// trusted proxy forwarded for (see [`real_client`]): then `X-Real-IP` names it, the proxy's own
/// `X-Forwarded-Proto`, `-Host` and `-Port` are kept, and the peer is appended to
/// `X-Forwarded-For` as always.
pub fn rewrite_request_headers(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    host: HeaderValue,
    upgrade: bool,
    real_client: Option<IpAddr>,
) {
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(headers);
    if let Some(v) = upgrade_value {
        headers.insert(header::UPGRADE, v);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let xff = match headers.get(&X_FORWARDED_FOR) {
        None => conn.client_ip.clone(),
        Some(_) => {
            let prior: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let ip = conn.client_ip.to_str().unwrap_or("unknown");
            HeaderValue::from_str(&format!("{}, {ip}", prior.join(", ")))
                .unwrap_or_else(|_| conn.client_ip.clone())
        }
    };
    headers.insert(&X_FORWARDED_FOR, xff);
    let proto = if conn.tls { "https" } else { "http" };
    if headers.contains_key(&FORWARDED) {
        set_forwarded(headers, conn, &host, proto);
    }
    let trusted = real_client.is_some();
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        headers.insert(&X_FORWARDED_HOST, host.clone());
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PORT)) {
        headers.insert(&X_FORWARDED_PORT, conn.local_port_value.clone());
    }
    let real_ip = real_client
        .and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok())
        .unwrap_or_else(|| conn.client_ip.clone());
    headers.insert(&X_REAL_IP, real_ip);
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(&X_REQUEST_ID, new_request_id());
    }
    headers.insert(header::HOST, host);
}

/// `Forwarded` (RFC 7239) is kept consistent with `X-Forwarded-For`: when a request carries one,
/// Gantry appends one element for this hop (`for` the client's address, `proto`, `host`), so the
/// last element is always Gantry's, and earlier ones are the client's claims, exactly as
/// untrusted as the earlier entries of `X-Forwarded-For`. A request without one gets none (as
/// from nginx): a backend that reads `Forwarded` then sees nothing rather than a client's
/// forgery. A client's value that is not visible ASCII is dropped rather than carried on.
fn set_forwarded(headers: &mut HeaderMap, conn: &ConnInfo, host: &HeaderValue, proto: &str) {
    use std::fmt::Write;
    let mut value = String::with_capacity(64);
    for prior in headers.get_all(&FORWARDED).iter().filter_map(|v| v.to_str().ok()) {
        if !prior.trim().is_empty() {
            value.push_str(prior.trim());
            value.push_str(", ");
        }
    }
    // IPv6 addresses are quoted and bracketed (RFC 7239 6); the host is always quoted, so any
    // character a Host header may hold is safe in it.
    match conn.client.ip() {
        std::net::IpAddr::V4(ip) => {
            let _ = write!(value, "for={ip}");
        }
        std::net::IpAddr::V6(ip) => {
            let _ = write!(value, "for=\"[{ip}]\"");
        }
    }
    let host = host.to_str().unwrap_or("");
    let _ = write!(value, ";proto={proto}");
    if !host.is_empty() && !host.contains(['"', '\\']) {
        let _ = write!(value, ";host=\"{host}\"");
    }
    match HeaderValue::from_str(&value) {
        Ok(v) => {
            headers.insert(&FORWARDED, v);
        }
        Err(_) => {
            headers.remove(&FORWARDED);
        }
    }
}

pub fn rewrite_response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    if !headers.contains_key(header::SERVER) {
        headers.insert(header::SERVER, SERVER.clone());
    }
}

/// 32 lowercase hex digits of randomness.
pub(crate) fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..);
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((n >> (i * 4)) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnInfo {
        ConnInfo::new("10.1.2.3:5555".parse().unwrap(), 8443, true)
    }

    #[test]
    fn missing_repeated_or_disagreeing_hosts_are_refused() {
        let r = Request::get("/").body(()).unwrap();
        assert!(matches!(
            request_host(&r),
            Err(ProxyError::BadHost("missing Host"))
        ));
        let r = Request::get("/")
            .header("host", "a")
            .header("host", "b")
            .body(())
            .unwrap();
        assert!(matches!(
            request_host(&r),
            Err(ProxyError::BadHost("more than one Host header"))
        ));
        let r = Request::get("http://a.example/x")
            .header("host", "b.example")
            .body(())
            .unwrap();
        assert!(matches!(request_host(&r), Err(ProxyError::BadHost(_))));
        let r = Request::get("http://A.example/x")
            .header("host", "a.example")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r).unwrap(), "a.example");
        let r = Request::get("https://h2.example/x").body(()).unwrap();
        assert_eq!(request_host(&r).unwrap(), "h2.example");
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed_and_forwarding_headers_set() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        rewrite_request_headers(
            &mut h,
            &conn(),
            HeaderValue::from_static("a.example:8443"),
            false,
            None,
        );
        for gone in ["connection", "x-secret", "keep-alive", "te", "upgrade"] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example:8443");
        assert_eq!(h["x-forwarded-port"], "8443");
        assert_eq!(h["x-real-ip"], "10.1.2.3");
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(h["host"], "a.example:8443");
    }

    #[test]
    fn a_request_id_is_generated_when_absent() {
        let mut h = HeaderMap::new();
        rewrite_request_headers(&mut h, &conn(), HeaderValue::from_static("a"), false, None);
        let id = h["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn forwarded_gets_this_hop_appended_consistently_with_x_forwarded_for() {
        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_static("for=192.0.2.60;proto=http"));
        rewrite_request_headers(
            &mut h,
            &conn(),
            HeaderValue::from_static("a.example:8443"),
            false,
            None,
        );
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.60;proto=http, for=10.1.2.3;proto=https;host=\"a.example:8443\""
        );
        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_static("for=unknown"));
        let v6 = ConnInfo::new("[2001:db8::1]:443".parse().unwrap(), 80, false);
        rewrite_request_headers(&mut h, &v6, HeaderValue::from_static("b"), false, None);
        assert_eq!(
            h["forwarded"],
            "for=unknown, for=\"[2001:db8::1]\";proto=http;host=\"b\""
        );
        let mut h = HeaderMap::new();
        rewrite_request_headers(&mut h, &conn(), HeaderValue::from_static("b"), false, None);
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn transfer_encoding_is_strict() {
        let check = |te: &[&str], cl: bool| {
            let mut h = HeaderMap::new();
            for v in te {
                h.append("transfer-encoding", HeaderValue::from_str(v).unwrap());
            }
            if cl {
                h.insert("content-length", HeaderValue::from_static("5"));
            }
            check_framing(&h).map_err(|e| e.status().as_u16())
        };
        assert_eq!(check(&[], true), Ok(()));
        assert_eq!(check(&["chunked"], false), Ok(()));
        assert_eq!(check(&["Chunked"], false), Ok(()));
        assert_eq!(check(&["identity, chunked"], false), Err(501));
        assert_eq!(check(&["gzip", "chunked"], false), Err(501));
        assert_eq!(check(&["chunked, chunked"], false), Err(400));
        assert_eq!(check(&["chunked", "chunked"], false), Err(400));
        assert_eq!(check(&["chunked, gzip"], false), Err(400));
        assert_eq!(check(&["identity"], false), Err(400));
        assert_eq!(check(&["chunked"], true), Err(400));
    }

    #[test]
    fn only_websocket_upgrades_are_tunnelled_and_h2c_is_stripped() {
        let req = |upgrade: &str| {
            Request::get("/")
                .header("connection", "Upgrade, HTTP2-Settings")
                .header("upgrade", upgrade)
                .header("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")
                .body(())
                .unwrap()
        };
        assert!(is_upgrade(&req("websocket")));
        assert!(is_upgrade(&req("WebSocket")));
        assert!(!is_upgrade(&req("h2c")));
        assert!(!is_upgrade(&req("h2c, websocket")));
        let mut r = req("h2c");
        let upgrade = is_upgrade(&r);
        rewrite_request_headers(
            r.headers_mut(),
            &conn(),
            HeaderValue::from_static("a"),
            upgrade,
            None,
        );
        for gone in ["upgrade", "http2-settings", "connection"] {
            assert!(
                !r.headers().contains_key(gone),
                "{gone} must not reach the backend"
            );
        }
        // Even when Connection does not list it.
        let mut h = HeaderMap::new();
        h.insert("http2-settings", HeaderValue::from_static("AAMAAABk"));
        rewrite_request_headers(&mut h, &conn(), HeaderValue::from_static("a"), false, None);
        assert!(!h.contains_key("http2-settings"));
    }

    #[test]
    fn upgrade_headers_survive_for_upgrade_requests() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        rewrite_request_headers(&mut h, &conn(), HeaderValue::from_static("a"), true, None);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn responses_get_a_server_header_only_when_absent() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        rewrite_response_headers(&mut h);
        assert_eq!(h["server"], "gantry");
        assert!(!h.contains_key("transfer-encoding"));
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("echo"));
        rewrite_response_headers(&mut h);
        assert_eq!(h["server"], "echo");
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_keeps_its_forwarding_headers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("1.2.3.4, 203.0.113.9, 10.1.1.1"),
        );
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        // Right to left: 10.1.1.1 is trusted, 203.0.113.9 is the first that is not.
        assert_eq!(
            real_client(&h, peer, &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            real_client(&h, "192.0.2.1".parse().unwrap(), &trusted),
            None,
            "untrusted peer"
        );
        assert_eq!(real_client(&h, peer, &[]), None, "nothing trusted");
        let mut all = HeaderMap::new();
        all.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2, 10.0.0.3"));
        assert_eq!(
            real_client(&all, peer, &trusted),
            Some("10.0.0.2".parse().unwrap())
        );
        let mut junk = HeaderMap::new();
        junk.insert(&X_FORWARDED_FOR, HeaderValue::from_static("evil, 203.0.113.9"));
        assert_eq!(
            real_client(&junk, peer, &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
        junk.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2, evil"));
        assert_eq!(
            real_client(&junk, peer, &trusted),
            None,
            "unreadable before an untrusted entry"
        );

        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        rewrite_request_headers(
            &mut h,
            &conn(),
            HeaderValue::from_static("a"),
            false,
            Some("203.0.113.9".parse().unwrap()),
        );
        assert_eq!(h[&X_REAL_IP], "203.0.113.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https", "kept from the trusted proxy");
        let mut untrusted = HeaderMap::new();
        untrusted.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("spoofed"));
        rewrite_request_headers(
            &mut untrusted,
            &conn(),
            HeaderValue::from_static("a"),
            false,
            None,
        );
        assert_ne!(
            untrusted[&X_FORWARDED_PROTO], "spoofed",
            "an untrusted client's claim is replaced"
        );
    }
}
