//! HTTP basic authentication against an htpasswd list (`auth-type: basic`).
//!
//! SKELETON: types and signatures are the contract with the controller; the verification is being
//! written (bcrypt, apr1, SHA-1, as the `htpasswd` tool writes them).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode};

use super::{local_response, LocalResponse};

/// Basic authentication of one route: a request without valid credentials gets 401 with
/// `WWW-Authenticate: Basic realm="<realm>"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    /// `WWW-Authenticate` value, built once.
    challenge: HeaderValue,
    pub users: Arc<Htpasswd>,
}

impl BasicAuth {
    /// `realm` is shown by browsers in the login prompt; a quote or control character in it is
    /// refused (the controller reports it).
    pub fn new(realm: &str, users: Arc<Htpasswd>) -> Result<Self, HtpasswdError> {
        if realm.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return Err(HtpasswdError::BadRealm);
        }
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .map_err(|_| HtpasswdError::BadRealm)?;
        Ok(Self { challenge, users })
    }

    /// `None` when the request carries valid credentials, else the 401.
    pub fn apply(&self, headers: &HeaderMap) -> Option<LocalResponse> {
        let _ = headers;
        let mut resp = local_response(StatusCode::UNAUTHORIZED);
        resp.headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, self.challenge.clone());
        Some(resp)
    }
}

/// The users of an htpasswd file (or of an `auth-map` Secret), with their password hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Htpasswd {
    entries: Vec<(String, String)>,
}

/// Why an htpasswd list cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HtpasswdError {
    #[error("line {line}: {why}")]
    Line { line: usize, why: String },
    #[error("no users")]
    Empty,
    #[error("the realm may not contain quotes, backslashes or control characters")]
    BadRealm,
}

impl Htpasswd {
    /// Parses an htpasswd file (`user:hash` per line).
    pub fn parse(text: &str) -> Result<Self, HtpasswdError> {
        let _ = text;
        Err(HtpasswdError::Empty)
    }

    /// Users from `(user, hash)` pairs (an `auth-map` Secret: one key per user).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, HtpasswdError> {
        let _ = pairs.into_iter().count();
        Err(HtpasswdError::Empty)
    }

    /// Whether `user` exists and `password` matches its hash.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let _ = (user, password, &self.entries);
        false
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
