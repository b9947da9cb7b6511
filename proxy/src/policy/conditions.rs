//! Request conditions beyond host and path: the Gateway API's `HTTPRouteMatch` (method, headers,
//! query parameters) and the listener a route is attached to (plain HTTP or TLS).
//!
//! A route whose [`Route::conditions`](crate::Route) are `None` takes every request of its host and
//! path (every Ingress route). Routes that share a host and path are tried in the Gateway API's
//! precedence within that path (see [`RequestConditions::rank`]); a request that none of them
//! accepts goes on to the next path that matches (a shorter prefix), as the Gateway API's matching
//! is over whole matches, not paths alone.

use http::{HeaderMap, HeaderName, Method};

/// How a header or query parameter value is matched.
#[derive(Clone, Debug)]
pub enum ValueMatch {
    /// The whole value, case-sensitive.
    Exact(String),
    /// A regular expression that must match the whole value (`^(?:...)$` is added when compiled).
    /// Compared by the expression as written.
    Regex { source: String, regex: regex::Regex },
}

impl PartialEq for ValueMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Regex { source: a, .. }, Self::Regex { source: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for ValueMatch {}

impl ValueMatch {
    /// A regular expression matched against the whole value.
    pub fn regex(source: &str) -> Result<Self, regex::Error> {
        let regex = regex::Regex::new(&format!("^(?:{source})$"))?;
        Ok(Self::Regex {
            source: source.to_owned(),
            regex,
        })
    }

    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(want) => want.as_bytes() == value,
            Self::Regex { regex, .. } => std::str::from_utf8(value).is_ok_and(|v| regex.is_match(v)),
        }
    }
}

/// Conditions a request must meet, besides host and path, to take a route. All must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestConditions {
    /// The request method.
    pub method: Option<Method>,
    /// Headers by name (names are case-insensitive); the first value of a repeated header is
    /// compared, as the Gateway API allows.
    pub headers: Vec<(HeaderName, ValueMatch)>,
    /// Query parameters by exact (case-sensitive) name; the first occurrence is compared.
    pub query: Vec<(String, ValueMatch)>,
    /// `Some(true)`: only on TLS connections (a route attached only to HTTPS listeners);
    /// `Some(false)`: only on plain HTTP.
    pub tls: Option<bool>,
}

/// What [`RequestConditions`] are judged on: borrowed from the request, nothing copied.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'r> {
    pub method: &'r Method,
    pub headers: &'r HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<&'r str>,
    /// Whether the request came over TLS.
    pub tls: bool,
}

impl<'r> RequestFacts<'r> {
    /// A plain-HTTP `GET` with these headers and no query.
    pub fn get(headers: &'r HeaderMap) -> Self {
        Self {
            method: &Method::GET,
            headers,
            query: None,
            tls: false,
        }
    }
}

impl RequestConditions {
    /// [`Self::matches`] on the facts of a request.
    #[inline]
    pub fn accepts(&self, facts: &RequestFacts<'_>) -> bool {
        self.matches(facts.method, facts.headers, facts.query, facts.tls)
    }

    /// The conditions in a short form for `/debug/routes` and explain: `GET, header version=two,
    /// query animal~wh.*, TLS only` (`=` an exact value, `~` a regular expression).
    pub fn describe(&self) -> String {
        fn value(v: &ValueMatch) -> String {
            match v {
                ValueMatch::Exact(s) => format!("={s}"),
                ValueMatch::Regex { source, .. } => format!("~{source}"),
            }
        }
        let mut parts = Vec::new();
        if let Some(m) = &self.method {
            parts.push(m.to_string());
        }
        for (name, v) in &self.headers {
            parts.push(format!("header {name}{}", value(v)));
        }
        for (name, v) in &self.query {
            parts.push(format!("query {name}{}", value(v)));
        }
        match self.tls {
            Some(true) => parts.push("TLS only".into()),
            Some(false) => parts.push("plain HTTP only".into()),
            None => {}
        }
        if parts.is_empty() {
            return "any request".into();
        }
        parts.join(", ")
    }

    /// The Gateway API's precedence among matches on the same path, greatest first: a method
    /// match, then more header matches, then more query parameter matches.
    pub fn rank(&self) -> (bool, usize, usize) {
        (self.method.is_some(), self.headers.len(), self.query.len())
    }

    /// Whether a request meets every condition. `query` is the raw query string, without `?`.
    pub fn matches(&self, method: &Method, headers: &HeaderMap, query: Option<&str>, tls: bool) -> bool {
        if self.tls.is_some_and(|want| want != tls) {
            return false;
        }
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        for (name, want) in &self.headers {
            match headers.get(name) {
                Some(v) if want.matches(v.as_bytes()) => {}
                _ => return false,
            }
        }
        for (name, want) in &self.query {
            let found = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                .find(|(k, _)| percent_decoded_eq(k, name));
            match found {
                Some((_, v)) if want.matches(percent_decode(v).as_bytes()) => {}
                _ => return false,
            }
        }
        true
    }
}

/// Query names and values are compared as decoded text (`a%20b` is `a b`; `+` stays `+`).
fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy()
}

fn percent_decoded_eq(raw: &str, name: &str) -> bool {
    percent_decode(raw) == name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn every_condition_must_hold() {
        let c = RequestConditions {
            method: Some(Method::POST),
            headers: vec![(
                HeaderName::from_static("version"),
                ValueMatch::Exact("two".into()),
            )],
            query: vec![("animal".into(), ValueMatch::regex("wh.*").unwrap())],
            tls: None,
        };
        let h = headers(&[("Version", "two")]);
        assert!(c.matches(&Method::POST, &h, Some("animal=whale"), false));
        assert!(!c.matches(&Method::GET, &h, Some("animal=whale"), false));
        assert!(!c.matches(
            &Method::POST,
            &headers(&[("version", "Two")]),
            Some("animal=whale"),
            false
        ));
        assert!(!c.matches(&Method::POST, &h, Some("animal=dolphin"), false));
        // A regex matches the whole value.
        assert!(!c.matches(&Method::POST, &h, Some("animal=awhale"), false));
        assert!(!c.matches(&Method::POST, &h, None, false));
        assert!(c.matches(&Method::POST, &h, Some("x=1&animal=wh%61le"), false));
    }

    #[test]
    fn describe_is_short_and_in_a_fixed_order() {
        let c = RequestConditions {
            method: Some(Method::GET),
            headers: vec![(
                HeaderName::from_static("version"),
                ValueMatch::Exact("two".into()),
            )],
            query: vec![("animal".into(), ValueMatch::regex("wh.*").unwrap())],
            tls: Some(true),
        };
        assert_eq!(
            c.describe(),
            "GET, header version=two, query animal~wh.*, TLS only"
        );
        assert_eq!(RequestConditions::default().describe(), "any request");
    }

    #[test]
    fn the_listener_condition_separates_tls_from_plain_http() {
        let c = RequestConditions {
            tls: Some(true),
            ..Default::default()
        };
        assert!(c.matches(&Method::GET, &HeaderMap::new(), None, true));
        assert!(!c.matches(&Method::GET, &HeaderMap::new(), None, false));
    }

    #[test]
    fn precedence_is_method_then_headers_then_query() {
        let method = RequestConditions {
            method: Some(Method::GET),
            ..Default::default()
        };
        let two_headers = RequestConditions {
            headers: vec![
                (HeaderName::from_static("a"), ValueMatch::Exact("1".into())),
                (HeaderName::from_static("b"), ValueMatch::Exact("1".into())),
            ],
            ..Default::default()
        };
        assert!(method.rank() > two_headers.rank());
        assert!(two_headers.rank() > RequestConditions::default().rank());
    }
}
