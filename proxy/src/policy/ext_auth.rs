//! External authentication (`auth-url` and its family): every request of a route is first sent,
//! without its body, to an authentication service, whose answer decides.
//!
//! This module is the typed value and the pure parts of ingress-nginx's behaviour (its
//! `nginx.tmpl` auth location and the `ngx_http_auth_request` module): which headers the
//! subrequest carries, what each answer becomes, the sign-in redirect, the cache's keys and
//! lifetimes. The I/O (the pooled client, the timeout, the cache itself) is in
//! [`crate::ext_auth`], beside the pipeline.
//!
//! ingress-nginx writes user text into its nginx configuration, where `$variables` are expanded.
//! Gantry never templates text: a [`Template`] is parsed once, at translation time, into literal
//! parts and [`Var`]s it knows, and an unknown variable is an error there, never at request time.
//!
//! What ingress-nginx does, and so Gantry (the choices where its docs and e2e tests disagree are
//! marked):
//!
//! - The subrequest has the method `auth-method`, else GET (nginx subrequests are GET), no body,
//!   and the client's headers minus hop-by-hop, `Content-Length` and `X-Forwarded-Proto`, then:
//!   `Host` (the URL's host, without port), `X-Original-URL` (`$scheme://$http_host$request_uri`),
//!   `X-Original-Method`, `X-Sent-From: nginx-ingress-controller`, `X-Real-IP` and
//!   `X-Forwarded-For` (both the client's address), `X-Auth-Request-Redirect`
//!   (`auth-request-redirect`, else `$request_uri`), `X-Request-ID`, and with `auth-method`
//!   also `X-Original-URI` and `X-Scheme`; last the headers of `auth-proxy-set-headers`.
//! - 2xx lets the request through: each header of `auth-response-headers` is removed from the
//!   request sent upstream and set to the auth response's value, if it has one (the e2e test
//!   "should overwrite Foo header with auth response"). 401 answers 401 with the auth response's
//!   `WWW-Authenticate`, or with `auth-signin` a 302 to the sign-in URL carrying
//!   `rd=$scheme://$http_host$escaped_request_uri` (the e2e tests' exact `Location`). 403
//!   answers 403. Any other status, an unreachable service or a timeout answers 500: the request
//!   is never forwarded unauthenticated.
//! - The auth response's `Set-Cookie` goes on the client's response when its status is 200, 201,
//!   204, 206, 301, 302, 303, 304, 307 or 308 (nginx's `add_header` without `always`), or on
//!   every response with `auth-always-set-cookie` (its e2e test: the cookie on a 503).
//! - `auth-cache-key` caches results per server (the request's host), location (the route's
//!   path) and key, for the statuses and times of `auth-cache-duration` (default `200 202 401
//!   5m`; a rule without status codes is nginx's 200, 301 and 302). As nginx's `proxy_cache`
//!   does, an answer with `Set-Cookie`, or `Cache-Control: no-cache`, `no-store` or `private`,
//!   is not cached.

use std::{fmt, net::IpAddr, time::Duration};

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest as _, Sha256};

use super::{local_response, LocalResponse};

/// `X-Sent-From`, as ingress-nginx sends it (auth services such as oauth2-proxy may look at it).
pub const SENT_FROM: &str = "nginx-ingress-controller";
/// ingress-nginx's default `auth-signin-redirect-param`.
pub const DEFAULT_REDIRECT_PARAM: &str = "rd";
/// ingress-nginx's default `auth-cache-duration`.
pub const DEFAULT_CACHE_DURATION: &str = "200 202 401 5m";
/// nginx's `proxy_cache_valid` without status codes.
const DEFAULT_CACHED_STATUSES: [u16; 3] = [200, 301, 302];
/// Statuses whose response gets the auth service's cookie without `auth-always-set-cookie`
/// (nginx's `add_header` without `always`).
const COOKIE_STATUSES: [u16; 10] = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// The external authentication of one route. Plain data, compared by value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalAuth {
    /// Where the subrequest goes.
    pub url: AuthUrl,
    /// `auth-method`; `None` is GET, and no `X-Original-URI`/`X-Scheme` headers (as nginx).
    pub method: Option<Method>,
    /// `auth-signin`: where a 401 redirects to instead.
    pub signin: Option<Signin>,
    /// `auth-response-headers`: copied from a 2xx auth response into the request sent upstream.
    pub response_headers: Vec<HeaderName>,
    /// `auth-request-redirect`: the `X-Auth-Request-Redirect` value; `None` is `$request_uri`.
    pub request_redirect: Option<Template>,
    /// `auth-proxy-set-headers`: extra headers of the subrequest (an empty rendered value removes
    /// the header, as nginx's `proxy_set_header` does).
    pub proxy_set_headers: Vec<(HeaderName, Template)>,
    /// `auth-cache-key` and `auth-cache-duration`.
    pub cache: Option<AuthCache>,
    /// `auth-keepalive*`: the pool of connections to the auth service.
    pub keepalive: Keepalive,
    /// `auth-always-set-cookie`.
    pub always_set_cookie: bool,
}

/// The auth service's URL: its scheme, and the authority and path (with query) as templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthUrl {
    pub https: bool,
    /// `host[:port]`.
    pub authority: Template,
    /// Starts with `/`.
    pub path_and_query: Template,
}

/// Why an auth URL, template or setting cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtAuthError {
    #[error("the scheme must be http or https")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("invalid URL host")]
    BadHost,
    #[error("user information (user@host) is not supported in the URL")]
    UserInfo,
    #[error("a fragment (#) is not allowed in the URL")]
    Fragment,
    #[error("unknown variable ${0}: supported are {KNOWN_VARIABLES}")]
    UnknownVariable(String),
    #[error("a $ that starts no variable name")]
    BareDollar,
    #[error("not a valid URL")]
    BadUrl,
}

impl AuthUrl {
    /// Parses `scheme://authority/path?query`, where the authority and the rest may hold
    /// variables. Literal authorities are checked here (an invalid one is refused up front, as
    /// ingress-nginx's `could not parse auth-url annotation: invalid url host`).
    pub fn parse(url: &str) -> Result<Self, ExtAuthError> {
        let (scheme, rest) = url.split_once("://").ok_or(ExtAuthError::Scheme)?;
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(ExtAuthError::Scheme);
        };
        if rest.contains('#') {
            return Err(ExtAuthError::Fragment);
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.is_empty() {
            return Err(ExtAuthError::NoHost);
        }
        if authority.contains('@') {
            return Err(ExtAuthError::UserInfo);
        }
        if authority.contains("..") || authority.starts_with('.') || authority.starts_with(':') {
            return Err(ExtAuthError::BadHost);
        }
        let authority = Template::parse(authority)?;
        if let Some(literal) = authority.as_literal() {
            parse_authority(literal).ok_or(ExtAuthError::BadHost)?;
        }
        // nginx would send the subrequest's own URI for a URL without path; `/` is what a user
        // writing `http://auth-service` means.
        let tail = if tail.starts_with('?') || tail.is_empty() {
            format!("/{tail}")
        } else {
            tail.to_string()
        };
        let path_and_query = Template::parse(&tail)?;
        if let Some(literal) = path_and_query.as_literal() {
            literal
                .parse::<http::uri::PathAndQuery>()
                .map_err(|_| ExtAuthError::BadUrl)?;
        }
        Ok(Self {
            https,
            authority,
            path_and_query,
        })
    }

    /// The URL for one request. `None` when the variables make it invalid (then the request is
    /// refused with 500, never forwarded).
    pub fn render(&self, vars: &Vars<'_>) -> Option<(http::Uri, HeaderValue)> {
        let authority = parse_authority(&self.authority.render(vars))?;
        let pq: http::uri::PathAndQuery = self.path_and_query.render(vars).parse().ok()?;
        let uri = http::Uri::builder()
            .scheme(if self.https { "https" } else { "http" })
            .authority(authority.clone())
            .path_and_query(pq)
            .build()
            .ok()?;
        // ingress-nginx sends `Host` with the URL's host name, without the port.
        let host = HeaderValue::from_str(authority.host()).ok()?;
        Some((uri, host))
    }
}

/// `host[:port]` with a port that fits 16 bits (`http::uri::Authority` takes any digits), and no
/// user information: a variable's value (`$http_x`) cannot smuggle `user@other-host` in.
fn parse_authority(text: &str) -> Option<http::uri::Authority> {
    if text.contains('@') {
        return None;
    }
    let authority: http::uri::Authority = text.parse().ok()?;
    if authority.host().is_empty() {
        return None;
    }
    match authority.as_str()[authority.host().len()..].strip_prefix(':') {
        None => Some(authority),
        Some(port) => port.parse::<u16>().ok().map(|_| authority),
    }
}

/// `auth-signin` and `auth-signin-redirect-param`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signin {
    pub url: Template,
    /// What joins `param=...` to the URL: `?` or `&`; `None` when the URL's query already has
    /// the parameter (ingress-nginx's `buildAuthSignURL` then uses the URL as it is).
    joiner: Option<char>,
    pub param: Box<str>,
}

impl Signin {
    /// `param` empty is the default `rd`.
    pub fn new(url: &str, param: &str) -> Result<Self, ExtAuthError> {
        let param = if param.is_empty() {
            DEFAULT_REDIRECT_PARAM
        } else {
            param
        };
        // The URL must be one (its variables aside); it is checked again once rendered.
        AuthUrl::parse(url)?;
        let query = url.split_once('?').map(|(_, q)| q);
        let joiner = match query {
            None | Some("") => Some('?'),
            Some(q) => {
                let has = q.split('&').any(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    k == param && !v.is_empty()
                });
                (!has).then_some('&')
            }
        };
        Ok(Self {
            url: Template::parse(url)?,
            joiner,
            param: param.into(),
        })
    }

    /// The `Location` of the redirect for a request (`None` when it is not a valid header
    /// value: then 500).
    pub fn location(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        let mut out = self.url.render(vars);
        if let Some(joiner) = self.joiner {
            out.push(joiner);
            out.push_str(&self.param);
            out.push('=');
            out.push_str(vars.pass_access_scheme());
            out.push_str("://");
            out.push_str(vars.http_host());
            out.extend(utf8_percent_encode(vars.request_uri, URI_COMPONENT));
        }
        HeaderValue::from_str(&out).ok()
    }
}

/// `auth-cache-key` and `auth-cache-duration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthCache {
    pub key: Template,
    pub rules: Vec<CacheRule>,
}

/// One `proxy_cache_valid` rule: these statuses are cached this long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheRule {
    pub statuses: Vec<u16>,
    pub ttl: Duration,
}

impl AuthCache {
    /// How long an answer with `status` is kept, if at all: the first rule naming it.
    pub fn ttl(&self, status: u16) -> Option<Duration> {
        self.rules
            .iter()
            .find(|r| r.statuses.contains(&status))
            .map(|r| r.ttl)
            .filter(|ttl| !ttl.is_zero())
    }

    /// Parses ingress-nginx's `auth-cache-duration`: comma-separated rules, each status codes
    /// then a time (`200 202 10m, 401 5m`). A rule without codes is nginx's 200, 301 and 302.
    /// ingress-nginx's check lets several times through (`1h 30m`) and nginx reads them as one
    /// time when they are one argument: they are added up. Anything else in a rule (a word that
    /// is neither, a code after the time) is an error, where ingress-nginx's check skips it and
    /// nginx would then refuse the whole configuration.
    pub fn parse_rules(value: &str) -> Result<Vec<CacheRule>, String> {
        let mut rules = Vec::new();
        for rule in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let mut statuses = Vec::new();
            let mut ttl: Option<Duration> = None;
            for word in rule.split(' ').filter(|w| !w.is_empty()) {
                if word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit()) {
                    if ttl.is_some() {
                        return Err(format!("{rule:?}: a status code after the time"));
                    }
                    let code: u16 = word.parse().map_err(|_| format!("{word:?} is not a status"))?;
                    if !(100..=599).contains(&code) {
                        return Err(format!("{word:?} is not an HTTP status"));
                    }
                    statuses.push(code);
                } else if let Some(d) = nginx_time(word) {
                    ttl = Some(ttl.unwrap_or_default().saturating_add(d));
                } else {
                    return Err(format!(
                        "{rule:?}: {word:?} is neither a status code nor a time (like 30s, 5m, 1h)"
                    ));
                }
            }
            let Some(ttl) = ttl else {
                return Err(format!("{rule:?} has no time (like 5m)"));
            };
            if statuses.is_empty() {
                statuses.extend(DEFAULT_CACHED_STATUSES);
            }
            rules.push(CacheRule { statuses, ttl });
        }
        if rules.is_empty() {
            return Self::parse_rules(DEFAULT_CACHE_DURATION);
        }
        Ok(rules)
    }
}

/// One nginx time (`^\d+(ms|s|m|h|d|w|M|y)$`), as nginx's `ngx_parse_time` reads it.
fn nginx_time(word: &str) -> Option<Duration> {
    let split = word.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = word.split_at(split);
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let secs = |factor: u64| n.checked_mul(factor).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "w" => secs(7 * 86_400),
        "M" => secs(30 * 86_400),
        "y" => secs(365 * 86_400),
        _ => None,
    }
}

/// The pool of connections to the auth service (`auth-keepalive`, `auth-keepalive-timeout`).
///
/// ingress-nginx keeps no connection by default (`auth-keepalive: 0`, because nginx's
/// `auth_request` cannot); Gantry pools by default, and an explicit `auth-keepalive: 0` (or a
/// negative value, which ingress-nginx turns into 0) keeps none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Keepalive {
    /// Idle connections kept per auth host.
    pub max_idle: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            max_idle: DEFAULT_KEEPALIVE,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Idle connections kept per auth host without `auth-keepalive`.
pub const DEFAULT_KEEPALIVE: usize = 32;

// === templates ===

/// The variables a [`Template`] may name, as the error message lists them.
pub const KNOWN_VARIABLES: &str = "$host, $http_host, $scheme, $pass_access_scheme, $request_uri, \
    $escaped_request_uri, $uri, $args, $query_string, $is_args, $request_method, $remote_addr, \
    $remote_user, $http_<header>, $cookie_<name>, $arg_<name>";

/// Text with nginx variables, parsed into parts once. Rendering never re-reads the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    parts: Box<[Part]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    Var(Var),
}

/// A request variable Gantry knows, by nginx's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Var {
    /// `$host`: the request's host, lowercase, without port.
    Host,
    /// `$http_host`: the `Host` header as sent.
    HttpHost,
    /// `$scheme`: `http` or `https` of the client's connection.
    Scheme,
    /// `$pass_access_scheme`: the scheme, or a trusted proxy's `X-Forwarded-Proto`.
    PassAccessScheme,
    /// `$request_uri`: the request target as sent (path and query).
    RequestUri,
    /// `$escaped_request_uri`: the same, percent-encoded as a URL component.
    EscapedRequestUri,
    /// `$uri`: the normalized path.
    Uri,
    /// `$args`, `$query_string`: the query, without `?`.
    Args,
    /// `$is_args`: `?` when there is a query.
    IsArgs,
    /// `$request_method`.
    RequestMethod,
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// `$remote_user`: the user of `Authorization: Basic`.
    RemoteUser,
    /// `$http_<name>`: a request header (`_` for `-`, any case); several are joined with `, `.
    Http(HeaderName),
    /// `$cookie_<name>`.
    Cookie(Box<str>),
    /// `$arg_<name>`: a query argument, as sent (not decoded).
    Arg(Box<str>),
}

impl Var {
    fn parse(name: &str) -> Result<Self, ExtAuthError> {
        let unknown = || ExtAuthError::UnknownVariable(name.to_string());
        let var = match name {
            "host" => Self::Host,
            "http_host" => Self::HttpHost,
            "scheme" => Self::Scheme,
            "pass_access_scheme" => Self::PassAccessScheme,
            "request_uri" => Self::RequestUri,
            "escaped_request_uri" => Self::EscapedRequestUri,
            "uri" | "document_uri" => Self::Uri,
            "args" | "query_string" => Self::Args,
            "is_args" => Self::IsArgs,
            "request_method" => Self::RequestMethod,
            "remote_addr" => Self::RemoteAddr,
            "remote_user" => Self::RemoteUser,
            _ => {
                if let Some(h) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                    let h = h.replace('_', "-").to_ascii_lowercase();
                    Self::Http(HeaderName::from_bytes(h.as_bytes()).map_err(|_| unknown())?)
                } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                    Self::Cookie(c.into())
                } else if let Some(a) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    Self::Arg(a.into())
                } else {
                    return Err(unknown());
                }
            }
        };
        Ok(var)
    }

    fn name(&self) -> String {
        match self {
            Self::Host => "host".into(),
            Self::HttpHost => "http_host".into(),
            Self::Scheme => "scheme".into(),
            Self::PassAccessScheme => "pass_access_scheme".into(),
            Self::RequestUri => "request_uri".into(),
            Self::EscapedRequestUri => "escaped_request_uri".into(),
            Self::Uri => "uri".into(),
            Self::Args => "args".into(),
            Self::IsArgs => "is_args".into(),
            Self::RequestMethod => "request_method".into(),
            Self::RemoteAddr => "remote_addr".into(),
            Self::RemoteUser => "remote_user".into(),
            Self::Http(h) => format!("http_{}", h.as_str().replace('-', "_")),
            Self::Cookie(c) => format!("cookie_{c}"),
            Self::Arg(a) => format!("arg_{a}"),
        }
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl fmt::Display for Template {
    /// The template as nginx would write it (`${name}` form for variables).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in self.parts.iter() {
            match part {
                Part::Literal(s) => f.write_str(s)?,
                Part::Var(v) => write!(f, "${{{}}}", v.name())?,
            }
        }
        Ok(())
    }
}

impl Template {
    /// Parses `$name` and `${name}` variables (names of letters, digits and `_`, as nginx);
    /// everything else is literal text. An unknown variable, or a `$` that starts no name, is an
    /// error.
    pub fn parse(text: &str) -> Result<Self, ExtAuthError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            literal.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (name, next) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced.find('}').ok_or(ExtAuthError::BareDollar)?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ExtAuthError::BareDollar);
            }
            let var = Var::parse(name)?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal).into()));
            }
            parts.push(Part::Var(var));
            rest = next;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal.into()));
        }
        Ok(Self { parts: parts.into() })
    }

    /// The text, when there is no variable.
    pub fn as_literal(&self) -> Option<&str> {
        match &*self.parts {
            [] => Some(""),
            [Part::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// Whether the template names any variable.
    pub fn has_variables(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Var(_)))
    }

    /// The text with each variable's value for this request (a missing one is empty, as nginx).
    pub fn render(&self, vars: &Vars<'_>) -> String {
        let mut out = String::new();
        for part in self.parts.iter() {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(v) => vars.push(v, &mut out),
            }
        }
        out
    }
}

/// `set_escape_uri` (nginx's `NGX_ESCAPE_URI_COMPONENT`): everything but letters, digits and
/// `-._~` is percent-encoded.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What variables are read from: one request, as the client sent it.
#[derive(Debug)]
pub struct Vars<'r> {
    pub headers: &'r HeaderMap,
    pub method: &'r Method,
    /// The request target as sent: path and query.
    pub request_uri: &'r str,
    /// Lowercase, without port.
    pub host: &'r str,
    /// The `Host` header as sent (with port).
    pub http_host: &'r HeaderValue,
    /// The normalized path.
    pub path: &'r str,
    pub tls: bool,
    /// The client's address (a trusted proxy's client, when there is one).
    pub client: IpAddr,
    /// True when `client` came from a trusted proxy (then its `X-Forwarded-Proto` is believed).
    pub via_trusted_proxy: bool,
}

impl Vars<'_> {
    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// ingress-nginx's `$pass_access_scheme`: a trusted proxy's `X-Forwarded-Proto` (http or
    /// https), else the connection's scheme.
    pub fn pass_access_scheme(&self) -> &'static str {
        if self.via_trusted_proxy {
            match self.headers.get(&X_FORWARDED_PROTO).map(HeaderValue::as_bytes) {
                Some(p) if p.eq_ignore_ascii_case(b"https") => return "https",
                Some(p) if p.eq_ignore_ascii_case(b"http") => return "http",
                _ => {}
            }
        }
        self.scheme()
    }

    pub fn http_host(&self) -> &str {
        self.http_host.to_str().unwrap_or(self.host)
    }

    fn query(&self) -> Option<&str> {
        self.request_uri.split_once('?').map(|(_, q)| q)
    }

    fn push(&self, var: &Var, out: &mut String) {
        use std::fmt::Write as _;
        match var {
            Var::Host => out.push_str(self.host),
            Var::HttpHost => out.push_str(self.http_host()),
            Var::Scheme => out.push_str(self.scheme()),
            Var::PassAccessScheme => out.push_str(self.pass_access_scheme()),
            Var::RequestUri => out.push_str(self.request_uri),
            Var::EscapedRequestUri => out.extend(utf8_percent_encode(self.request_uri, URI_COMPONENT)),
            Var::Uri => out.push_str(self.path),
            Var::Args => out.push_str(self.query().unwrap_or("")),
            Var::IsArgs => {
                if self.query().is_some() {
                    out.push('?');
                }
            }
            Var::RequestMethod => out.push_str(self.method.as_str()),
            Var::RemoteAddr => {
                let _ = write!(out, "{}", super::access::canonical(self.client));
            }
            Var::RemoteUser => {
                if let Some(user) = super::basic_auth::basic_user(self.headers) {
                    out.push_str(&user);
                }
            }
            Var::Http(name) => {
                let mut first = true;
                for v in self.headers.get_all(name) {
                    if let Ok(v) = v.to_str() {
                        if !first {
                            out.push_str(", ");
                        }
                        out.push_str(v);
                        first = false;
                    }
                }
            }
            Var::Cookie(name) => {
                let found = self
                    .headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .filter_map(|kv| kv.trim().split_once('='))
                    .find(|(k, _)| *k == &**name);
                if let Some((_, v)) = found {
                    out.push_str(v);
                }
            }
            Var::Arg(name) => {
                let found = self
                    .query()
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
                    .find(|(k, _)| k.eq_ignore_ascii_case(name));
                if let Some((_, v)) = found {
                    out.push_str(v);
                }
            }
        }
    }
}

// === the subrequest and its answer ===

pub static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
pub static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
pub static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
pub static X_SCHEME: HeaderName = HeaderName::from_static("x-scheme");
pub static X_SENT_FROM: HeaderName = HeaderName::from_static("x-sent-from");
pub static X_AUTH_REQUEST_REDIRECT: HeaderName = HeaderName::from_static("x-auth-request-redirect");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that belong to one connection or frame a body: never sent to the auth service
/// (nginx's proxy module drops or replaces each of them).
const NOT_FORWARDED: [HeaderName; 10] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::EXPECT,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("http2-settings"),
];

impl ExternalAuth {
    /// The method of the subrequest.
    pub fn method(&self) -> Method {
        self.method.clone().unwrap_or(Method::GET)
    }

    /// The headers of the subrequest for a request with `vars`, given the `X-Request-ID` the
    /// request goes on with and the auth `host` (see the module's list).
    pub fn subrequest_headers(
        &self,
        vars: &Vars<'_>,
        request_id: &HeaderValue,
        host: HeaderValue,
    ) -> HeaderMap {
        let mut h = vars.headers.clone();
        // Whatever `Connection` names is hop-by-hop too.
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named.iter().chain(NOT_FORWARDED.iter()) {
            h.remove(name);
        }
        h.remove(&X_FORWARDED_PROTO);
        h.insert(&X_REQUEST_ID, request_id.clone());
        let value = |s: &str| HeaderValue::from_str(s).ok();
        if self.method.is_some() {
            if let Some(v) = value(vars.request_uri) {
                h.insert(&X_ORIGINAL_URI, v);
            }
            h.insert(&X_SCHEME, HeaderValue::from_static(vars.pass_access_scheme()));
        }
        h.insert(header::HOST, host);
        let original = format!("{}://{}{}", vars.scheme(), vars.http_host(), vars.request_uri);
        if let Some(v) = value(&original) {
            h.insert(&X_ORIGINAL_URL, v);
        }
        if let Some(v) = value(vars.method.as_str()) {
            h.insert(&X_ORIGINAL_METHOD, v);
        }
        h.insert(&X_SENT_FROM, HeaderValue::from_static(SENT_FROM));
        let client = super::access::canonical(vars.client).to_string();
        if let Some(v) = value(&client) {
            h.insert(&X_REAL_IP, v.clone());
            h.insert(&X_FORWARDED_FOR, v);
        }
        let redirect = match &self.request_redirect {
            Some(t) => t.render(vars),
            None => vars.request_uri.to_string(),
        };
        match value(&redirect) {
            Some(v) if !redirect.is_empty() => {
                h.insert(&X_AUTH_REQUEST_REDIRECT, v);
            }
            _ => {
                h.remove(&X_AUTH_REQUEST_REDIRECT);
            }
        }
        for (name, template) in &self.proxy_set_headers {
            let rendered = template.render(vars);
            match value(&rendered) {
                Some(v) if !rendered.is_empty() => {
                    h.insert(name, v);
                }
                _ => {
                    h.remove(name);
                }
            }
        }
        h
    }

    /// What the auth service's answer (`status`, `headers`) means for the request.
    pub fn verdict(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        let cookies: Vec<HeaderValue> = headers.get_all(header::SET_COOKIE).iter().cloned().collect();
        let decision = if status.is_success() {
            let copy = self
                .response_headers
                .iter()
                .map(|name| (name.clone(), headers.get_all(name).iter().cloned().collect()))
                .collect();
            Decision::Allow(copy)
        } else if status == StatusCode::UNAUTHORIZED {
            Decision::Unauthorized(
                headers
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .cloned()
                    .collect(),
            )
        } else if status == StatusCode::FORBIDDEN {
            Decision::Forbidden
        } else {
            Decision::Error
        };
        Verdict { decision, cookies }
    }

    /// The response for a decision other than [`Decision::Allow`].
    pub fn respond(&self, decision: &Decision, vars: &Vars<'_>) -> Option<LocalResponse> {
        let resp = match decision {
            Decision::Allow(_) => return None,
            Decision::Unauthorized(challenges) => match &self.signin {
                Some(signin) => match signin.location(vars) {
                    Some(location) => {
                        let mut r = local_response(StatusCode::FOUND);
                        r.headers_mut().insert(header::LOCATION, location);
                        r
                    }
                    None => local_response(StatusCode::INTERNAL_SERVER_ERROR),
                },
                None => {
                    let mut r = local_response(StatusCode::UNAUTHORIZED);
                    for c in challenges {
                        r.headers_mut().append(header::WWW_AUTHENTICATE, c.clone());
                    }
                    r
                }
            },
            Decision::Forbidden => local_response(StatusCode::FORBIDDEN),
            Decision::Error => local_response(StatusCode::INTERNAL_SERVER_ERROR),
        };
        Some(resp)
    }

    /// The cache key of a request on the route with `path` (its `Debug` form), if the route
    /// caches: a SHA-256 of the server, the location, the auth URL and the rendered key, each
    /// length-prefixed so that no two different lists of parts give the same bytes.
    pub fn cache_key(&self, vars: &Vars<'_>, location: &str) -> Option<[u8; 32]> {
        let cache = self.cache.as_ref()?;
        let key = cache.key.render(vars);
        let url = format!(
            "{}://{}{}",
            self.url.https, self.url.authority, self.url.path_and_query
        );
        let mut hasher = Sha256::new();
        for part in [vars.host, location, &url, &key] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        Some(hasher.finalize().into())
    }

    /// How long an answer may be cached (`None`: not at all): its status must be listed, and, as
    /// nginx's `proxy_cache`, it may not set a cookie or say `no-cache`, `no-store` or `private`.
    pub fn cache_ttl(&self, status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
        let cache = self.cache.as_ref()?;
        if headers.contains_key(header::SET_COOKIE) {
            return None;
        }
        let uncacheable = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|d| d.trim().split('=').next().unwrap_or("").to_ascii_lowercase())
            .any(|d| d == "no-cache" || d == "no-store" || d == "private");
        if uncacheable {
            return None;
        }
        cache.ttl(status.as_u16())
    }
}

/// What the auth service decided, and the cookies it set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// The auth response's `Set-Cookie` values.
    pub cookies: Vec<HeaderValue>,
}

/// The four outcomes of an auth subrequest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// 2xx: the headers of `auth-response-headers` to set on the request sent upstream (each
    /// removed from it first; no value leaves it removed).
    Allow(Vec<(HeaderName, Vec<HeaderValue>)>),
    /// 401, with the auth service's `WWW-Authenticate` values.
    Unauthorized(Vec<HeaderValue>),
    /// 403.
    Forbidden,
    /// Anything else, an unreachable service or a timeout: 500.
    Error,
}

impl Decision {
    /// Bytes of the header names and values it holds.
    pub fn size(&self) -> usize {
        let values = |v: &[HeaderValue]| v.iter().map(HeaderValue::len).sum::<usize>();
        match self {
            Decision::Allow(copy) => copy.iter().map(|(n, v)| n.as_str().len() + values(v)).sum(),
            Decision::Unauthorized(challenges) => values(challenges),
            Decision::Forbidden | Decision::Error => 0,
        }
    }

    /// Sets the copied headers on the request sent upstream.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Decision::Allow(copy) = self {
            for (name, values) in copy {
                headers.remove(name);
                for v in values {
                    headers.append(name, v.clone());
                }
            }
        }
    }
}

/// The auth service's cookies, kept for the response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthCookies {
    pub values: Vec<HeaderValue>,
    pub always: bool,
}

impl AuthCookies {
    /// Adds the cookies to a response with `status`: always, or for nginx's `add_header`
    /// statuses.
    pub fn apply(&self, status: StatusCode, headers: &mut HeaderMap) {
        if self.always || COOKIE_STATUSES.contains(&status.as_u16()) {
            for v in &self.values {
                headers.append(header::SET_COOKIE, v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(headers: &'a HeaderMap, host_header: &'a HeaderValue, uri: &'a str) -> Vars<'a> {
        static GET: Method = Method::GET;
        Vars {
            headers,
            method: &GET,
            request_uri: uri,
            host: "app.example",
            http_host: host_header,
            path: uri.split('?').next().unwrap_or("/"),
            tls: false,
            client: "10.1.2.3".parse().unwrap(),
            via_trusted_proxy: false,
        }
    }

    fn auth(url: &str) -> ExternalAuth {
        ExternalAuth {
            url: AuthUrl::parse(url).unwrap(),
            method: None,
            signin: None,
            response_headers: vec![],
            request_redirect: None,
            proxy_set_headers: vec![],
            cache: None,
            keepalive: Keepalive::default(),
            always_set_cookie: false,
        }
    }

    #[test]
    fn urls_parse_into_typed_parts_and_bad_ones_are_refused() {
        let u = AuthUrl::parse("http://auth.ns.svc:8080/verify?x=1").unwrap();
        assert!(!u.https);
        assert_eq!(u.authority.as_literal(), Some("auth.ns.svc:8080"));
        assert_eq!(u.path_and_query.as_literal(), Some("/verify?x=1"));
        assert_eq!(
            AuthUrl::parse("https://auth")
                .unwrap()
                .path_and_query
                .as_literal(),
            Some("/")
        );
        let v = AuthUrl::parse("https://$host/oauth2/auth").unwrap();
        assert!(v.authority.has_variables());
        // A variable's value is checked once rendered: no user information, a valid port.
        let u = AuthUrl::parse("http://$http_x_auth_host/check").unwrap();
        let mut h = HeaderMap::new();
        let hh = HeaderValue::from_static("app.example");
        h.insert("x-auth-host", HeaderValue::from_static("auth.internal:8080"));
        let (uri, host) = u.render(&vars(&h, &hh, "/")).unwrap();
        assert_eq!(uri, "http://auth.internal:8080/check");
        assert_eq!(host, "auth.internal");
        for evil in ["me@evil.example", "auth:70000", "", "a b"] {
            h.insert("x-auth-host", HeaderValue::from_str(evil).unwrap());
            assert!(u.render(&vars(&h, &hh, "/")).is_none(), "{evil}");
        }
        for (bad, err) in [
            ("https://invalid..auth.url", ExtAuthError::BadHost),
            ("ftp://auth/x", ExtAuthError::Scheme),
            ("auth/x", ExtAuthError::Scheme),
            ("http:///x", ExtAuthError::NoHost),
            ("http://u:p@auth/x", ExtAuthError::UserInfo),
            ("http://auth/x#f", ExtAuthError::Fragment),
            ("http://auth/$foo", ExtAuthError::UnknownVariable("foo".into())),
            ("http://auth/$", ExtAuthError::BareDollar),
            ("http://auth:99999999/x", ExtAuthError::BadHost),
        ] {
            assert_eq!(AuthUrl::parse(bad), Err(err), "{bad}");
        }
    }

    #[test]
    fn templates_render_known_variables_and_refuse_unknown_ones() {
        let t = Template::parse("$remote_user${http_authorization}-$cookie_sid-$arg_a-$host").unwrap();
        assert_eq!(
            t.to_string(),
            "${remote_user}${http_authorization}-${cookie_sid}-${arg_a}-${host}"
        );
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Basic dXNlcjpwYXNz"));
        h.insert("cookie", HeaderValue::from_static("a=1; sid=xyz"));
        let hh = HeaderValue::from_static("App.Example:8080");
        let v = vars(&h, &hh, "/p?a=b&c=d");
        assert_eq!(t.render(&v), "userBasic dXNlcjpwYXNz-xyz-b-app.example");
        assert_eq!(Template::parse("fixed").unwrap().render(&v), "fixed");
        assert!(matches!(
            Template::parse("$request_body"),
            Err(ExtAuthError::UnknownVariable(n)) if n == "request_body"
        ));
        assert_eq!(Template::parse("${host"), Err(ExtAuthError::BareDollar));
        assert_eq!(Template::parse("a$-b"), Err(ExtAuthError::BareDollar));
    }

    #[test]
    fn the_subrequest_carries_ingress_nginx_s_headers() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("app.example:8080"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("content-length", HeaderValue::from_static("12"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("connection", HeaderValue::from_static("x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        let hh = HeaderValue::from_static("app.example:8080");
        let v = vars(&h, &hh, "/a/b?c=d");
        let a = auth("http://auth.svc:9000/check");
        let id = HeaderValue::from_static("rid");
        let out = a.subrequest_headers(&v, &id, HeaderValue::from_static("auth.svc"));
        assert_eq!(out["host"], "auth.svc");
        assert_eq!(out["authorization"], "Bearer t");
        assert_eq!(out["x-original-url"], "http://app.example:8080/a/b?c=d");
        assert_eq!(out["x-original-method"], "GET");
        assert_eq!(out["x-sent-from"], "nginx-ingress-controller");
        assert_eq!(out["x-real-ip"], "10.1.2.3");
        assert_eq!(out["x-forwarded-for"], "10.1.2.3");
        assert_eq!(out["x-auth-request-redirect"], "/a/b?c=d");
        assert_eq!(out["x-request-id"], "rid");
        for gone in [
            "content-length",
            "x-forwarded-proto",
            "connection",
            "x-secret",
            "x-original-uri",
        ] {
            assert!(!out.contains_key(gone), "{gone}");
        }
        // With auth-method, X-Original-URI and X-Scheme; set headers override and empty removes.
        let mut a = a;
        a.method = Some(Method::POST);
        a.request_redirect = Some(Template::parse("https://$host/back").unwrap());
        a.proxy_set_headers = vec![
            (
                HeaderName::from_static("x-custom"),
                Template::parse("42-$remote_addr").unwrap(),
            ),
            (
                HeaderName::from_static("authorization"),
                Template::parse("$http_x_none").unwrap(),
            ),
        ];
        let out = a.subrequest_headers(&v, &id, HeaderValue::from_static("auth.svc"));
        assert_eq!(out["x-original-uri"], "/a/b?c=d");
        assert_eq!(out["x-scheme"], "http");
        assert_eq!(out["x-auth-request-redirect"], "https://app.example/back");
        assert_eq!(out["x-custom"], "42-10.1.2.3");
        assert!(!out.contains_key("authorization"));
    }

    #[test]
    fn answers_map_to_ingress_nginx_s_statuses() {
        let mut a = auth("http://auth/");
        a.response_headers = vec![HeaderName::from_static("x-user"), HeaderName::from_static("foo")];
        let h = HeaderMap::new();
        let hh = HeaderValue::from_static("app.example");
        let v = vars(&h, &hh, "/?a=b&c=d");
        let mut resp = HeaderMap::new();
        resp.insert("x-user", HeaderValue::from_static("alice"));
        resp.append("set-cookie", HeaderValue::from_static("s=1"));
        resp.insert("www-authenticate", HeaderValue::from_static("Bearer"));
        let ok = a.verdict(StatusCode::NO_CONTENT, &resp);
        assert_eq!(ok.cookies, vec![HeaderValue::from_static("s=1")]);
        assert!(a.respond(&ok.decision, &v).is_none());
        let mut upstream = HeaderMap::new();
        upstream.insert("foo", HeaderValue::from_static("client"));
        upstream.insert("x-user", HeaderValue::from_static("forged"));
        ok.decision.apply(&mut upstream);
        assert_eq!(upstream["x-user"], "alice");
        assert!(!upstream.contains_key("foo"), "the client's Foo is overwritten");

        let r = a
            .respond(&a.verdict(StatusCode::UNAUTHORIZED, &resp).decision, &v)
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let r = a
            .respond(&a.verdict(StatusCode::FORBIDDEN, &resp).decision, &v)
            .unwrap();
        assert_eq!(r.status(), 403);
        for other in [302, 404, 500, 502, 503] {
            let s = StatusCode::from_u16(other).unwrap();
            let r = a.respond(&a.verdict(s, &resp).decision, &v).unwrap();
            assert_eq!(r.status(), 500, "{other}");
        }
    }

    #[test]
    fn signin_redirects_carry_the_escaped_original_url() {
        let h = HeaderMap::new();
        let hh = HeaderValue::from_static("auth");
        let mut v = vars(&h, &hh, "/?a=b&c=d");
        v.host = "auth";
        // ingress-nginx's e2e test: http://auth/auth/start?rd=http://auth%2F%3Fa%3Db%26c%3Dd
        let s = Signin::new("http://$host/auth/start", "").unwrap();
        assert_eq!(
            s.location(&v).unwrap(),
            "http://auth/auth/start?rd=http://auth%2F%3Fa%3Db%26c%3Dd"
        );
        let s = Signin::new("http://$host/auth/start", "orig").unwrap();
        assert_eq!(
            s.location(&v).unwrap(),
            "http://auth/auth/start?orig=http://auth%2F%3Fa%3Db%26c%3Dd"
        );
        let s = Signin::new("https://login.example/start?x=1", "").unwrap();
        assert_eq!(
            s.location(&v).unwrap(),
            "https://login.example/start?x=1&rd=http://auth%2F%3Fa%3Db%26c%3Dd"
        );
        // The parameter already there: the URL as it is (oauth2-proxy's documented form).
        let s = Signin::new("https://$host/oauth2/start?rd=$escaped_request_uri", "").unwrap();
        assert_eq!(
            s.location(&v).unwrap(),
            "https://auth/oauth2/start?rd=%2F%3Fa%3Db%26c%3Dd"
        );
        assert!(Signin::new("https://$nope/start", "").is_err());
    }

    #[test]
    fn cookies_follow_add_header_statuses_unless_always() {
        let c = AuthCookies {
            values: vec![HeaderValue::from_static("alma=armud")],
            always: false,
        };
        let mut h = HeaderMap::new();
        c.apply(StatusCode::SERVICE_UNAVAILABLE, &mut h);
        assert!(!h.contains_key("set-cookie"));
        c.apply(StatusCode::OK, &mut h);
        assert_eq!(h["set-cookie"], "alma=armud");
        let always = AuthCookies { always: true, ..c };
        let mut h = HeaderMap::new();
        always.apply(StatusCode::SERVICE_UNAVAILABLE, &mut h);
        assert_eq!(h["set-cookie"], "alma=armud");
    }

    #[test]
    fn cache_durations_parse_as_proxy_cache_valid() {
        let rules = AuthCache::parse_rules("200 202 10m, 401 5m").unwrap();
        assert_eq!(
            rules,
            vec![
                CacheRule {
                    statuses: vec![200, 202],
                    ttl: Duration::from_secs(600)
                },
                CacheRule {
                    statuses: vec![401],
                    ttl: Duration::from_secs(300)
                },
            ]
        );
        assert_eq!(
            AuthCache::parse_rules("").unwrap(),
            vec![CacheRule {
                statuses: vec![200, 202, 401],
                ttl: Duration::from_secs(300)
            }]
        );
        assert_eq!(
            AuthCache::parse_rules("1h 30m").unwrap(),
            vec![CacheRule {
                statuses: vec![200, 301, 302],
                ttl: Duration::from_secs(5400)
            }]
        );
        for bad in ["200 202", "5m 200", "200 soon 5m", "200 5x", "999 5m", "200,5m"] {
            assert!(AuthCache::parse_rules(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_listed_statuses_without_cookies_or_no_cache_are_cached() {
        let mut a = auth("http://auth/");
        assert_eq!(a.cache_ttl(StatusCode::OK, &HeaderMap::new()), None);
        a.cache = Some(AuthCache {
            key: Template::parse("$http_authorization").unwrap(),
            rules: AuthCache::parse_rules("200 401 30m").unwrap(),
        });
        let none = HeaderMap::new();
        assert_eq!(
            a.cache_ttl(StatusCode::OK, &none),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            a.cache_ttl(StatusCode::UNAUTHORIZED, &none),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(a.cache_ttl(StatusCode::FORBIDDEN, &none), None);
        assert_eq!(a.cache_ttl(StatusCode::INTERNAL_SERVER_ERROR, &none), None);
        let mut cookie = HeaderMap::new();
        cookie.insert("set-cookie", HeaderValue::from_static("a=b"));
        assert_eq!(a.cache_ttl(StatusCode::OK, &cookie), None);
        let mut private = HeaderMap::new();
        private.insert("cache-control", HeaderValue::from_static("max-age=5, Private"));
        assert_eq!(a.cache_ttl(StatusCode::OK, &private), None);

        // Keys differ by credentials, host and location.
        let mut h1 = HeaderMap::new();
        h1.insert("authorization", HeaderValue::from_static("Bearer a"));
        let mut h2 = HeaderMap::new();
        h2.insert("authorization", HeaderValue::from_static("Bearer b"));
        let hh = HeaderValue::from_static("app.example");
        let k1 = a.cache_key(&vars(&h1, &hh, "/"), "Prefix(\"/\")").unwrap();
        let k2 = a.cache_key(&vars(&h2, &hh, "/"), "Prefix(\"/\")").unwrap();
        let k3 = a.cache_key(&vars(&h1, &hh, "/"), "Prefix(\"/bar\")").unwrap();
        assert_ne!(k1, k2);
        assert_ne!(k1, k3);
        assert_eq!(k1, a.cache_key(&vars(&h1, &hh, "/x"), "Prefix(\"/\")").unwrap());
    }
}
