//! Cookie session affinity (`affinity: cookie`): a client that was served by one endpoint keeps
//! being served by it, through a cookie Gantry sets.
//!
//! Behaviour follows ingress-nginx (`rootfs/etc/nginx/lua/balancer/sticky*.lua`):
//!
//! - The cookie value is `<upstream key>|<backend key>`. The backend key is
//!   `md5hex(md5hex(name) + name)` of the backend's ingress-nginx upstream name
//!   (`namespace-service-port`); it tells which backend (main or canary) the session belongs to.
//! - `persistent` mode: the upstream key is `md5hex(name + "ip:port")` of the endpoint, exactly as
//!   ingress-nginx's `util/nodemap.lua` makes it, so a session survives a restart of Gantry, holds
//!   across replicas, and even survives a move from ingress-nginx. A key naming an endpoint that is
//!   gone gets a new endpoint (picked by the route's balancer) and a new cookie. The address is
//!   never sent verbatim; the hash is not a secret either (the salt is the Service's name), as in
//!   ingress-nginx.
//! - `balanced` mode (the default): the upstream key is random and is mapped to an endpoint by
//!   consistent hashing over the backend's current endpoints (rendezvous hashing, see `hash`;
//!   ingress-nginx uses a ketama ring): when the Deployment scales up, about (n-c)/n of the sessions
//!   move to the new endpoints, which is what this mode is for; when an endpoint goes, only its
//!   own sessions move. New sessions are spread at random, as in ingress-nginx.
//! - A cookie of another backend, or one that cannot be parsed, is a new session.
//! - `Set-Cookie` attributes, in lua-resty-cookie's order: `Expires` (nginx's cookie time format),
//!   `Max-Age`, `Domain`, `Path` (`session-cookie-path`, else the route's path as written),
//!   `Secure` (`session-cookie-secure`, or always on HTTPS), `HttpOnly`, `SameSite` (left out for
//!   the user agents that mishandle `None` when `session-cookie-conditional-samesite-none`).
//! - `session-cookie-change-on-failure`: Gantry's upstream client moves to another endpoint when
//!   one cannot be reached; with this on, the cookie is then re-issued for the endpoint that did
//!   answer. Off (the default), the cookie keeps naming the endpoint it named.

use std::{
    borrow::Cow,
    fmt::Write as _,
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use http::{header, HeaderMap, HeaderValue};
use md5::{Digest as _, Md5};

use super::hash;
use crate::backend::{Backend, BackendId, Endpoint};

/// The cookie name when `session-cookie-name` is not set.
pub const DEFAULT_COOKIE_NAME: &str = "INGRESSCOOKIE";

/// Session affinity of a route (or of its canary backend).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Affinity {
    /// `affinity-mode`.
    pub mode: AffinityMode,
    /// `session-cookie-name`; a cookie token.
    pub cookie_name: String,
    /// `session-cookie-path`; `None`: the route's path as written.
    pub path: Option<String>,
    /// `session-cookie-domain`.
    pub domain: Option<String>,
    /// `session-cookie-samesite`.
    pub same_site: Option<SameSite>,
    /// `session-cookie-conditional-samesite-none`: no `SameSite=None` for user agents known to
    /// reject it or to take it for `Strict`.
    pub conditional_same_site_none: bool,
    /// `session-cookie-secure`: `Secure` even on plain HTTP (it is always set on HTTPS).
    pub secure: bool,
    /// `session-cookie-expires`: seconds from now, sent as `Expires`.
    pub expires: Option<i64>,
    /// `session-cookie-max-age`: seconds, sent as `Max-Age`.
    pub max_age: Option<i64>,
    /// `session-cookie-change-on-failure`.
    pub change_on_failure: bool,
}

/// `affinity-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AffinityMode {
    /// Sessions are rebalanced when endpoints are added (some move to the new ones).
    #[default]
    Balanced,
    /// A session stays on its endpoint as long as it exists.
    Persistent,
}

/// The cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

/// Why an [`Affinity`] cannot be used (the controller refuses it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AffinityError {
    #[error("invalid session cookie name {0:?}")]
    Name(String),
    #[error("invalid session cookie {what} {value:?}")]
    Attribute { what: &'static str, value: String },
}

impl Default for Affinity {
    fn default() -> Self {
        Self {
            mode: AffinityMode::Balanced,
            cookie_name: DEFAULT_COOKIE_NAME.into(),
            path: None,
            domain: None,
            same_site: None,
            conditional_same_site_none: false,
            secure: false,
            expires: None,
            max_age: None,
            change_on_failure: false,
        }
    }
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Lax => "Lax",
            Self::Strict => "Strict",
        }
    }
}

impl AffinityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Balanced => "balanced",
            Self::Persistent => "persistent",
        }
    }
}

// === impl Affinity ===

impl Affinity {
    /// Checks that the cookie can be sent as configured: the name is a cookie token, the path and
    /// domain have no `;`, control characters or spaces. The data path never sends a cookie that
    /// fails this.
    pub fn validate(&self) -> Result<(), AffinityError> {
        let token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b);
        if self.cookie_name.is_empty() || !self.cookie_name.bytes().all(token) {
            return Err(AffinityError::Name(self.cookie_name.clone()));
        }
        let attr = |what: &'static str, value: &Option<String>| match value {
            Some(v) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() && b != b';') => {
                Err(AffinityError::Attribute {
                    what,
                    value: v.clone(),
                })
            }
            _ => Ok(()),
        };
        attr("path", &self.path)?;
        attr("domain", &self.domain)
    }

    /// Where a request goes within `backend`, whose [`StickyIndex`] is `index`: the endpoint its
    /// cookie names, or a new one. `pick` is the route's balancer (used for new persistent
    /// sessions). `None` when the backend has no endpoints.
    pub fn choose(
        self: &Arc<Self>,
        backend: &Arc<Backend>,
        index: &StickyIndex,
        headers: &HeaderMap,
        pick: impl FnOnce() -> Option<usize>,
    ) -> Option<(usize, StickySession)> {
        let endpoints = &backend.endpoints;
        let kept = request_cookie(headers, &self.cookie_name, false)
            .and_then(|cookie| index.find(self.mode, cookie, endpoints));
        let (i, new_key) = match kept {
            Some(i) => (i, None),
            None => match self.mode {
                AffinityMode::Persistent => {
                    let i = pick().filter(|&i| i < endpoints.len())?;
                    (i, Some(index.persistent_key(i)))
                }
                AffinityMode::Balanced => {
                    let key = format!("{:016x}", fastrand::u64(..));
                    let i = hash::rendezvous(hash::stable_hash(key.as_bytes()), endpoints)?;
                    (i, Some(key))
                }
            },
        };
        let omit_same_site = self.conditional_same_site_none
            && self.same_site == Some(SameSite::None)
            && !same_site_none_compatible(headers.get(header::USER_AGENT));
        let session = StickySession {
            affinity: self.clone(),
            backend: backend.clone(),
            backend_key: index.backend_key.clone(),
            endpoint: endpoints[i].addr,
            new_key,
            omit_same_site,
        };
        Some((i, session))
    }

    /// Whether the request carries this affinity's cookie for the backend of `index` (whatever
    /// endpoint it names): such a request stays with that backend when a canary is decided. The
    /// index is only looked up when the request has the cookie.
    pub fn is_affinitized(&self, headers: &HeaderMap, index: impl FnOnce() -> Arc<StickyIndex>) -> bool {
        request_cookie(headers, &self.cookie_name, false).is_some_and(|c| index().is_affinitized(c))
    }
}

/// What sticky sessions need of one backend, computed once per backend and worker when its
/// endpoints change (kept by the per-worker state), so that a request finds its endpoint with one
/// binary search instead of hashing every endpoint.
#[derive(Debug)]
pub struct StickyIndex {
    /// The cookie's backend part.
    backend_key: Arc<str>,
    /// `md5(salt + "ip:port")` of each endpoint, by position.
    digests: Box<[[u8; 16]]>,
    /// The same digests with their position, sorted by digest.
    sorted: Box<[([u8; 16], u32)]>,
}

impl StickyIndex {
    pub fn new(backend: &Backend) -> Self {
        let salt = upstream_name(&backend.id);
        let backend_key = {
            let inner = hex(&Md5::digest(salt.as_bytes()));
            let mut h = Md5::new();
            h.update(inner.as_bytes());
            h.update(salt.as_bytes());
            hex(&h.finalize()).into()
        };
        let digests: Box<[[u8; 16]]> = backend
            .endpoints
            .iter()
            .map(|e| endpoint_digest(&salt, e.addr))
            .collect();
        let mut sorted: Vec<([u8; 16], u32)> =
            digests.iter().enumerate().map(|(i, d)| (*d, i as u32)).collect();
        sorted.sort_unstable();
        Self {
            backend_key,
            digests,
            sorted: sorted.into(),
        }
    }

    /// The cookie's backend part for this backend.
    pub fn backend_key(&self) -> &Arc<str> {
        &self.backend_key
    }

    /// Whether a cookie value belongs to this backend.
    pub fn is_affinitized(&self, cookie: &[u8]) -> bool {
        split_cookie(cookie).1 == Some(self.backend_key.as_bytes())
    }

    /// The endpoint a cookie value of this backend names among `endpoints` (the list this index
    /// was built from), or `None`.
    pub fn find(&self, mode: AffinityMode, cookie: &[u8], endpoints: &[Endpoint]) -> Option<usize> {
        let (key, backend) = split_cookie(cookie);
        if backend != Some(self.backend_key.as_bytes()) || key.is_empty() {
            return None;
        }
        match mode {
            AffinityMode::Persistent => {
                let digest = unhex16(key)?;
                let at = self.sorted.binary_search_by(|(d, _)| d.cmp(&digest)).ok()?;
                let i = self.sorted[at].1 as usize;
                (i < endpoints.len()).then_some(i)
            }
            AffinityMode::Balanced => hash::rendezvous(hash::stable_hash(key), endpoints),
        }
    }

    /// The persistent-mode key of the endpoint at `i`.
    fn persistent_key(&self, i: usize) -> String {
        hex(&self.digests[i])
    }
}

/// A sticky session of one request, from choosing its endpoint to the response: what the response
/// phase needs to set the cookie.
#[derive(Debug)]
pub struct StickySession {
    affinity: Arc<Affinity>,
    backend: Arc<Backend>,
    backend_key: Arc<str>,
    /// The endpoint chosen for the request.
    endpoint: SocketAddr,
    /// The upstream key of a cookie to set; `None` when the request's cookie stands.
    new_key: Option<String>,
    /// `SameSite=None` is left out for this user agent.
    omit_same_site: bool,
}

impl StickySession {
    /// Whether anything may have to be said in the response (a new cookie, or a re-issued one if
    /// another endpoint answers).
    pub fn needs_response(&self) -> bool {
        self.new_key.is_some() || self.affinity.change_on_failure
    }

    /// The `Set-Cookie` header for the response, if one is due. `answered` is the endpoint that
    /// answered (when one did), `tls` whether the request came over HTTPS, `location` the route's
    /// path as written.
    pub fn set_cookie(
        &self,
        answered: Option<SocketAddr>,
        tls: bool,
        location: &str,
        now: SystemTime,
    ) -> Option<HeaderValue> {
        let moved = answered.filter(|a| *a != self.endpoint);
        let key: Cow<'_, str> = match (&self.new_key, moved) {
            (Some(key), None) => Cow::Borrowed(key),
            // A new session whose first endpoint could not be reached: name the one that answered.
            (Some(key), Some(a)) => self.key_for(a).map_or(Cow::Borrowed(key.as_str()), Cow::Owned),
            (None, Some(a)) if self.affinity.change_on_failure => Cow::Owned(self.key_for(a)?),
            (None, _) => return None,
        };
        self.affinity.validate().ok()?;
        let a = &*self.affinity;
        let mut c = String::with_capacity(128);
        let _ = write!(c, "{}={}|{}", a.cookie_name, key, self.backend_key);
        if let Some(secs) = a.expires {
            let _ = write!(c, "; Expires={}", cookie_time(now, secs));
        }
        if let Some(secs) = a.max_age {
            let _ = write!(c, "; Max-Age={secs}");
        }
        if let Some(domain) = &a.domain {
            let _ = write!(c, "; Domain={domain}");
        }
        let path = a.path.as_deref().unwrap_or(location);
        if !path.is_empty() && path.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
            let _ = write!(c, "; Path={path}");
        }
        if a.secure || tls {
            c.push_str("; Secure");
        }
        c.push_str("; HttpOnly");
        if let Some(same_site) = a.same_site.filter(|_| !self.omit_same_site) {
            let _ = write!(c, "; SameSite={}", same_site.as_str());
        }
        HeaderValue::from_str(&c).ok()
    }

    /// The upstream key naming `addr` in this session's backend, if it is one of its endpoints.
    fn key_for(&self, addr: SocketAddr) -> Option<String> {
        let endpoints = &self.backend.endpoints;
        let i = endpoints.binary_search(&Endpoint { addr }).ok()?;
        match self.affinity.mode {
            AffinityMode::Persistent => Some(hex(&endpoint_digest(&upstream_name(&self.backend.id), addr))),
            AffinityMode::Balanced => {
                // A random key that maps to `addr`; each try hits with probability 1/n. Failing
                // that, one that at least avoids the endpoint that failed (as ingress-nginx's
                // `pick_new_upstream` does).
                let mut fallback = None;
                for _ in 0..64 {
                    let key = format!("{:016x}", fastrand::u64(..));
                    let at = hash::rendezvous(hash::stable_hash(key.as_bytes()), endpoints)?;
                    if at == i {
                        return Some(key);
                    }
                    if fallback.is_none() && endpoints[at].addr != self.endpoint {
                        fallback = Some(key);
                    }
                }
                fallback
            }
        }
    }
}

/// The name ingress-nginx gives a backend (`upstreamName`): `namespace-service-port`.
fn upstream_name(id: &BackendId) -> String {
    format!("{}-{}-{}", id.namespace, id.service, id.port)
}

/// `md5(salt + "ip:port")`, the address as ingress-nginx writes it (IPv6 in brackets).
fn endpoint_digest(salt: &str, addr: SocketAddr) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(salt.as_bytes());
    h.update(addr.to_string().as_bytes());
    h.finalize().into()
}

/// `(upstream key, backend key)` of a cookie value `key|backend`.
fn split_cookie(value: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut parts = value.split(|&b| b == b'|');
    let key = parts.next().unwrap_or_default();
    (key, parts.next())
}

/// The value of the first cookie called `name` in the request's `Cookie` headers. nginx's
/// `$cookie_` variables compare names without case (`ignore_case`); the sticky balancer's cookie
/// library does not.
pub(crate) fn request_cookie<'h>(headers: &'h HeaderMap, name: &str, ignore_case: bool) -> Option<&'h [u8]> {
    let name = name.as_bytes();
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let k = pair[..eq].trim_ascii();
            let matches = k == name || (ignore_case && k.eq_ignore_ascii_case(name));
            matches.then(|| pair[eq + 1..].trim_ascii())
        })
}

/// Whether a user agent handles `SameSite=None` (ingress-nginx's `util/same_site.lua`, after
/// <https://www.chromium.org/updates/same-site/incompatible-clients>).
fn same_site_none_compatible(user_agent: Option<&HeaderValue>) -> bool {
    let Some(ua) = user_agent.and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let has = |s: &str| ua.contains(s);
    !(has("Chrome/4")
        || has("Chrome/5")
        || has("Chrome/6")
        || has("CPU iPhone OS 12")
        || has("iPad; CPU OS 12")
        || (has("Macintosh") && has("Intel Mac OS X 10_14") && has("Safari") && !has("Chrome")))
}

/// `now + secs` in nginx's cookie time format (`ngx_http_cookie_time`):
/// `Thu, 18-Nov-10 11:27:35 GMT`, with a four-digit year after 2037.
fn cookie_time(now: SystemTime, secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let base = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    // Bounded to year 9999, so the date arithmetic below cannot overflow.
    let t = base.saturating_add(secs).clamp(0, 253_402_300_799);
    let (days, rem) = (t / 86_400, t % 86_400);
    let (year, month, day) = civil_from_days(days);
    let year = if year > 2037 { year } else { year % 100 };
    format!(
        "{}, {:02}-{}-{:02} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month (1..=12) and day of a day count since 1970-01-01 (not negative), from Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex16(s: &[u8]) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::BackendId;

    fn backend(service: &str, addrs: &[&str]) -> Arc<Backend> {
        let id = BackendId {
            namespace: "default".into(),
            service: service.into(),
            port: "80".into(),
        };
        let endpoints = addrs
            .iter()
            .map(|a| Endpoint {
                addr: a.parse().unwrap(),
            })
            .collect();
        Arc::new(Backend::new(id, endpoints))
    }

    fn cookie_headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        h
    }

    /// The `name=value` part of a `Set-Cookie`.
    fn pair(set_cookie: &HeaderValue) -> String {
        set_cookie.to_str().unwrap().split(';').next().unwrap().to_owned()
    }

    const THREE: [&str; 3] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];

    #[test]
    fn the_cookie_is_ingress_nginx_s_and_hides_the_address() {
        let b = backend("web", &THREE);
        let index = StickyIndex::new(&b);
        // ngx.md5(ngx.md5(name) .. name) and ngx.md5(name .. "ip:port"), name = "default-web-80".
        let inner = hex(&Md5::digest(b"default-web-80"));
        assert_eq!(
            &**index.backend_key(),
            hex(&Md5::digest(format!("{inner}default-web-80"))).as_str()
        );
        assert_eq!(
            index.persistent_key(0),
            hex(&Md5::digest(b"default-web-8010.0.0.1:80"))
        );
        let affinity = Arc::new(Affinity {
            mode: AffinityMode::Persistent,
            ..Affinity::default()
        });
        let (i, s) = affinity
            .choose(&b, &index, &HeaderMap::new(), || Some(1))
            .unwrap();
        assert_eq!(i, 1);
        let v = s.set_cookie(None, false, "/", SystemTime::now()).unwrap();
        assert!(!v.to_str().unwrap().contains("10.0.0"), "{v:?}");
        assert_eq!(
            pair(&v),
            format!(
                "INGRESSCOOKIE={}|{}",
                index.persistent_key(1),
                index.backend_key()
            )
        );
    }

    #[test]
    fn a_cookie_round_trips_in_both_modes() {
        let b = backend("web", &THREE);
        let index = StickyIndex::new(&b);
        for mode in [AffinityMode::Persistent, AffinityMode::Balanced] {
            let affinity = Arc::new(Affinity {
                mode,
                ..Affinity::default()
            });
            for first in 0..3 {
                let (i, s) = affinity
                    .choose(&b, &index, &HeaderMap::new(), || Some(first))
                    .unwrap();
                let set = s.set_cookie(Some(b.endpoints[i].addr), false, "/", SystemTime::now());
                let headers = cookie_headers(&format!("other=1; {}; x=y", pair(&set.unwrap())));
                assert!(affinity.is_affinitized(&headers, || Arc::new(StickyIndex::new(&b))));
                for _ in 0..5 {
                    let (again, s) = affinity
                        .choose(&b, &index, &headers, || panic!("not picked again"))
                        .unwrap();
                    assert_eq!(again, i, "{mode:?}");
                    assert!(!s.needs_response());
                    assert!(s
                        .set_cookie(Some(b.endpoints[i].addr), false, "/", SystemTime::now())
                        .is_none());
                }
            }
        }
    }

    #[test]
    fn a_cookie_naming_a_removed_endpoint_gets_a_new_one() {
        let before = backend("web", &THREE);
        let affinity = Arc::new(Affinity {
            mode: AffinityMode::Persistent,
            ..Affinity::default()
        });
        let index = StickyIndex::new(&before);
        let (_, s) = affinity
            .choose(&before, &index, &HeaderMap::new(), || Some(1))
            .unwrap();
        let old = pair(&s.set_cookie(None, false, "/", SystemTime::now()).unwrap());
        let headers = cookie_headers(&old);

        // 10.0.0.2 is gone; 10.0.0.4 is new.
        let after = backend("web", &["10.0.0.1:80", "10.0.0.3:80", "10.0.0.4:80"]);
        let index = StickyIndex::new(&after);
        assert!(
            affinity.is_affinitized(&headers, || Arc::new(StickyIndex::new(&after))),
            "still this backend's session"
        );
        let (i, s) = affinity.choose(&after, &index, &headers, || Some(2)).unwrap();
        assert_eq!(after.endpoints[i].addr.to_string(), "10.0.0.4:80");
        let new = pair(&s.set_cookie(None, false, "/", SystemTime::now()).unwrap());
        assert_ne!(new, old);
        assert_eq!(
            new,
            format!(
                "INGRESSCOOKIE={}|{}",
                index.persistent_key(2),
                index.backend_key()
            )
        );

        // The kept endpoints keep their keys in the new snapshot.
        let (_, s) = affinity
            .choose(&before, &StickyIndex::new(&before), &HeaderMap::new(), || Some(2))
            .unwrap();
        let kept = cookie_headers(&pair(&s.set_cookie(None, false, "/", SystemTime::now()).unwrap()));
        let (i, _) = affinity.choose(&after, &index, &kept, || panic!()).unwrap();
        assert_eq!(after.endpoints[i].addr.to_string(), "10.0.0.3:80");
    }

    #[test]
    fn balanced_sessions_stay_unless_their_endpoint_goes_or_new_ones_come() {
        let three = backend("web", &THREE);
        let affinity = Arc::new(Affinity::default());
        let index = StickyIndex::new(&three);
        let cookies: Vec<HeaderMap> = (0..300)
            .map(|_| {
                let (_, s) = affinity
                    .choose(&three, &index, &HeaderMap::new(), || None)
                    .unwrap();
                cookie_headers(&pair(&s.set_cookie(None, false, "/", SystemTime::now()).unwrap()))
            })
            .collect();
        let four = backend(
            "web",
            &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"],
        );
        let index4 = StickyIndex::new(&four);
        let mut moved = 0;
        for c in &cookies {
            let (a, s) = affinity.choose(&three, &index, c, || None).unwrap();
            assert!(!s.needs_response());
            let (b, s) = affinity.choose(&four, &index4, c, || None).unwrap();
            assert!(!s.needs_response(), "a balanced cookie always maps somewhere");
            if three.endpoints[a] != four.endpoints[b] {
                assert_eq!(four.endpoints[b].addr.to_string(), "10.0.0.4:80");
                moved += 1;
            }
        }
        // About a quarter move to the new endpoint.
        assert!((30..=130).contains(&moved), "{moved}");
    }

    #[test]
    fn foreign_or_broken_cookies_are_new_sessions() {
        let web = backend("web", &THREE);
        let api = backend("api", &THREE);
        let affinity = Arc::new(Affinity {
            mode: AffinityMode::Persistent,
            ..Affinity::default()
        });
        let (web_index, api_index) = (StickyIndex::new(&web), StickyIndex::new(&api));
        let (_, s) = affinity
            .choose(&api, &api_index, &HeaderMap::new(), || Some(0))
            .unwrap();
        let api_cookie = pair(&s.set_cookie(None, false, "/", SystemTime::now()).unwrap());
        for cookie in [
            api_cookie.as_str(),
            "INGRESSCOOKIE=",
            "INGRESSCOOKIE=|",
            "INGRESSCOOKIE=zz|zz",
            "INGRESSCOOKIE=\u{7f}",
            "ingresscookie=abc",
            "INGRESSCOOKIE",
            ";;=;",
        ] {
            let Ok(v) = HeaderValue::from_str(cookie) else {
                continue;
            };
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, v);
            assert!(
                !affinity.is_affinitized(&h, || Arc::new(StickyIndex::new(&web))),
                "{cookie}"
            );
            let (i, s) = affinity.choose(&web, &web_index, &h, || Some(2)).unwrap();
            assert_eq!(i, 2);
            assert!(s.set_cookie(None, false, "/", SystemTime::now()).is_some());
        }
        // Non-UTF-8 bytes in a cookie are no panic either.
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"INGRESSCOOKIE=\xff\xfe|\xff").unwrap(),
        );
        assert!(affinity.choose(&web, &web_index, &h, || Some(0)).is_some());
        // No endpoints: nothing to choose.
        let empty = backend("web", &[]);
        assert!(affinity
            .choose(&empty, &StickyIndex::new(&empty), &h, || None)
            .is_none());
        let balanced = Arc::new(Affinity::default());
        assert!(balanced
            .choose(&empty, &StickyIndex::new(&empty), &h, || None)
            .is_none());
    }

    #[test]
    fn cookie_attributes_follow_ingress_nginx() {
        let b = backend("web", &THREE);
        let index = StickyIndex::new(&b);
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // Tue, 14 Nov 2023 22:13:20
        let set = |a: Affinity, tls: bool, ua: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(ua) = ua {
                h.insert(header::USER_AGENT, HeaderValue::from_str(ua).unwrap());
            }
            let (_, s) = Arc::new(a).choose(&b, &index, &h, || Some(0)).unwrap();
            let v = s.set_cookie(None, tls, "/something", now).unwrap();
            let v = v.to_str().unwrap().to_owned();
            v[v.find(';').unwrap()..].to_owned()
        };
        assert_eq!(
            set(Affinity::default(), false, None),
            "; Path=/something; HttpOnly"
        );
        assert_eq!(
            set(Affinity::default(), true, None),
            "; Path=/something; Secure; HttpOnly",
            "always Secure over HTTPS"
        );
        let full = Affinity {
            cookie_name: "SERVERID".into(),
            path: Some("/foo/bar".into()),
            domain: Some("foo.bar".into()),
            same_site: Some(SameSite::None),
            conditional_same_site_none: true,
            secure: true,
            expires: Some(172_800),
            max_age: Some(259_200),
            ..Affinity::default()
        };
        assert_eq!(
            set(full.clone(), false, Some("Mozilla/5.0 Firefox/120.0")),
            "; Expires=Thu, 16-Nov-23 22:13:20 GMT; Max-Age=259200; Domain=foo.bar; \
             Path=/foo/bar; Secure; HttpOnly; SameSite=None"
        );
        assert_eq!(
            set(
                full.clone(),
                false,
                Some("Mozilla/5.0 Chrome/51.0.2704.103 Safari/537.36")
            ),
            "; Expires=Thu, 16-Nov-23 22:13:20 GMT; Max-Age=259200; Domain=foo.bar; \
             Path=/foo/bar; Secure; HttpOnly",
            "no SameSite=None for a browser that rejects it"
        );
        let lax = Affinity {
            same_site: Some(SameSite::Lax),
            ..full
        };
        assert!(set(lax, false, Some("Chrome/51")).ends_with("; SameSite=Lax"));

        // An invalid configuration sends no cookie at all, rather than a broken one.
        let bad = Arc::new(Affinity {
            domain: Some("a; Secure=no".into()),
            ..Affinity::default()
        });
        assert!(bad.validate().is_err());
        let (_, s) = bad.choose(&b, &index, &HeaderMap::new(), || Some(0)).unwrap();
        assert!(s.set_cookie(None, false, "/", now).is_none());
        let bad = Affinity {
            cookie_name: "a b".into(),
            ..Affinity::default()
        };
        assert!(bad.validate().is_err());
        assert!(Affinity::default().validate().is_ok());
    }

    #[test]
    fn cookie_time_is_nginx_s() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(cookie_time(at(0), 0), "Thu, 01-Jan-70 00:00:00 GMT");
        assert_eq!(cookie_time(at(951_782_400), 0), "Tue, 29-Feb-00 00:00:00 GMT");
        assert_eq!(cookie_time(at(1_700_000_000), 0), "Tue, 14-Nov-23 22:13:20 GMT");
        assert_eq!(cookie_time(at(2_240_611_200), 0), "Tue, 01-Jan-2041 00:00:00 GMT");
        assert_eq!(cookie_time(at(10), -100), "Thu, 01-Jan-70 00:00:00 GMT");
        // Absurd values are clamped, never a panic.
        assert!(cookie_time(at(10), i64::MAX).ends_with("9999 23:59:59 GMT"));
        assert!(cookie_time(at(10), i64::MIN).starts_with("Thu, 01-Jan-70"));
    }

    #[test]
    fn change_on_failure_renames_the_endpoint_that_answered() {
        let b = backend("web", &THREE);
        let index = StickyIndex::new(&b);
        for mode in [AffinityMode::Persistent, AffinityMode::Balanced] {
            let on = Arc::new(Affinity {
                mode,
                change_on_failure: true,
                ..Affinity::default()
            });
            let (i, s) = on.choose(&b, &index, &HeaderMap::new(), || Some(0)).unwrap();
            let cookie = cookie_headers(&pair(&s.set_cookie(None, false, "/", SystemTime::now()).unwrap()));
            let (kept, s) = on.choose(&b, &index, &cookie, || panic!()).unwrap();
            assert_eq!(kept, i);
            assert!(s
                .set_cookie(Some(b.endpoints[i].addr), false, "/", SystemTime::now())
                .is_none());
            let other = b.endpoints[(i + 1) % 3].addr;
            let renamed = s.set_cookie(Some(other), false, "/", SystemTime::now()).unwrap();
            let (j, _) = on
                .choose(&b, &index, &cookie_headers(&pair(&renamed)), || panic!())
                .unwrap();
            assert_eq!(b.endpoints[j].addr, other, "{mode:?}");

            let off = Arc::new(Affinity {
                mode,
                ..Affinity::default()
            });
            let (_, s) = off.choose(&b, &index, &cookie, || panic!()).unwrap();
            assert!(s.set_cookie(Some(other), false, "/", SystemTime::now()).is_none());
        }
    }

    #[test]
    fn request_cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1;b = 2 "));
        h.append(header::COOKIE, HeaderValue::from_static("Canary=always; a=3"));
        assert_eq!(request_cookie(&h, "a", false), Some(&b"1"[..]));
        assert_eq!(request_cookie(&h, "b", false), Some(&b"2"[..]));
        assert_eq!(request_cookie(&h, "canary", false), None);
        assert_eq!(request_cookie(&h, "canary", true), Some(&b"always"[..]));
        assert_eq!(request_cookie(&h, "c", true), None);
    }

    #[test]
    fn same_site_none_compatibility_follows_the_chromium_list() {
        let ua = |s: &'static str| same_site_none_compatible(Some(&HeaderValue::from_static(s)));
        assert!(same_site_none_compatible(None));
        assert!((ua("Mozilla/5.0 Chrome/120.0 Safari/537.36")));
        assert!(!(ua("Mozilla/5.0 Chrome/66.0 Safari/537.36")));
        assert!(!(ua("Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X) Safari")));
        assert!(!(ua("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_0) Version/12.0 Safari/605.1.15")));
        assert!((ua("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_0) Chrome/120 Safari/605.1.15")));
    }
}
