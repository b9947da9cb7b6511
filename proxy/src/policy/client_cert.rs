//! Client certificate authentication (ingress-nginx's `auth-tls-*`): whether a request may pass,
//! judged from what its connection's handshake learnt ([`ClientCertSession`]), and the
//! `ssl-client-*` headers sent upstream.
//!
//! Behaviour, from nginx (`ngx_http_process_request`, `ngx_http_set_virtual_server`) and
//! ingress-nginx's template and e2e tests (`test/e2e/annotations/authtls.go`):
//!
//! | verify-client | no certificate | certificate of the CA | other certificate |
//! |---|---|---|---|
//! | `on` (default) | 400 | passes, `SUCCESS` | 400 |
//! | `optional` | passes, `NONE` | passes, `SUCCESS` | 400 |
//! | `optional_no_ca` | passes, `NONE` | passes, `SUCCESS` | passes, `FAILED:<reason>` when the only problem is the issuer; 400 otherwise (expired, revoked, ...) |
//! | `off` | passes, `NONE` (no certificate is requested) | — | — |
//!
//! ingress-nginx's user guide says `optional` lets an invalid certificate through and reports it;
//! nginx (and so ingress-nginx) answers 400 for it, which is what Gantry does. With
//! `auth-tls-error-page`, the 400s become a 302 to the page (nginx's `error_page 495 496 = URL`,
//! as the e2e test "should 302 redirect to error page" expects).
//!
//! `auth-tls-match-cn` then matches its regex (the value as written, `CN=` included) against the
//! subject DN in RFC 2253 form (`CN=client,O=Org,C=US`), unanchored, as nginx's
//! `if ($ssl_client_s_dn !~ "CN=...")` does: no match, or no certificate, is 403. The user guide
//! calls it a match on the CN; the template (and so the e2e tests' `CN=authtls`,
//! `CN=(a|b|authtls)`) matches the whole DN, and so does Gantry.
//!
//! A request is only judged by the certificate its connection presented *for this route's CA*:
//!
//! - a TLS connection whose handshake requested the certificate for another CA, or none (its SNI
//!   named another host, or it opened before this host had client authentication), is answered
//!   421 Misdirected Request when the client sent SNI, as nginx does when SNI and Host name
//!   different servers and the Host's has `ssl_verify_client`: the client retries on a new
//!   connection, whose handshake asks for the right certificate. Without SNI there is nothing to
//!   retry with, and the request is judged as having no certificate (nginx's 400 for `on`).
//! - hosts whose bundles are equal (the same `ca.crt`, `ca.crl` and depth) share the verification:
//!   a connection verified for one may ask for another, whose own verify mode and match-cn apply.
//! - a plain-HTTP request has no certificate: judged as such (400 for `on`), after the HTTPS
//!   redirect had its chance. nginx checks nothing on plain HTTP and would serve it; Gantry fails
//!   closed instead.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{local_response, LocalResponse};
use crate::{
    client_auth::{ClientCa, PeerCert},
    conn::ConnInfo,
};

pub static SSL_CLIENT_VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
pub static SSL_CLIENT_SUBJECT_DN: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
pub static SSL_CLIENT_ISSUER_DN: HeaderName = HeaderName::from_static("ssl-client-issuer-dn");
pub static SSL_CLIENT_CERT: HeaderName = HeaderName::from_static("ssl-client-cert");

/// `auth-tls-verify-client`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VerifyClient {
    /// A certificate of the CA is required (ingress-nginx's default).
    #[default]
    On,
    /// No certificate passes; a certificate must be of the CA.
    Optional,
    /// No certificate passes; a certificate whose only fault is its issuer passes too, reported
    /// upstream as `FAILED:...`.
    OptionalNoCa,
    /// No certificate is requested; the headers say `NONE`.
    Off,
}

impl VerifyClient {
    /// The annotation's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Optional => "optional",
            Self::OptionalNoCa => "optional_no_ca",
            Self::Off => "off",
        }
    }

    /// Parses the annotation's value (exactly one of the four, as ingress-nginx's
    /// `^(on|off|optional|optional_no_ca)$`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "on" => Self::On,
            "optional" => Self::Optional,
            "optional_no_ca" => Self::OptionalNoCa,
            "off" => Self::Off,
            _ => return None,
        })
    }

    /// Whether the handshake requests a certificate.
    pub fn requests_certificate(self) -> bool {
        self != Self::Off
    }
}

/// `auth-tls-match-cn`: a regex over the subject DN, compared by its source.
#[derive(Clone, Debug)]
pub struct MatchDn {
    source: Arc<str>,
    regex: regex::Regex,
}

impl PartialEq for MatchDn {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for MatchDn {}

impl MatchDn {
    /// Compiles `pattern` (the annotation's value, `CN=` included) with a bounded program size.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .dfa_size_limit(1 << 20)
            .build()?;
        Ok(Self {
            source: pattern.into(),
            regex,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, dn: &str) -> bool {
        self.regex.is_match(dn)
    }
}

/// Client certificate authentication of a host's routes (`auth-tls-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertAuth {
    /// `auth-tls-secret`'s `ca.crt` (and `ca.crl`), with `auth-tls-verify-depth`.
    pub ca: Arc<ClientCa>,
    pub verify: VerifyClient,
    /// `auth-tls-error-page`: where a client whose certificate is missing or refused is redirected
    /// (302) instead of the 400.
    pub error_page: Option<HeaderValue>,
    /// `auth-tls-pass-certificate-to-upstream`: send the PEM as `ssl-client-cert`.
    pub pass_certificate: bool,
    /// `auth-tls-match-cn`.
    pub match_dn: Option<MatchDn>,
}

/// What the connection presented, as far as this route is concerned.
enum Presented<'a> {
    Certificate(&'a PeerCert),
    Nothing,
    /// The handshake was for another host's CA: 421.
    Misdirected,
}

impl ClientCertAuth {
    pub fn new(ca: Arc<ClientCa>, verify: VerifyClient) -> Self {
        Self {
            ca,
            verify,
            error_page: None,
            pass_certificate: false,
            match_dn: None,
        }
    }

    fn presented<'c>(&self, conn: &'c ConnInfo) -> Presented<'c> {
        if !conn.tls || self.verify == VerifyClient::Off {
            return Presented::Nothing;
        }
        let Some(session) = &conn.client_cert else {
            // A TLS connection accepted while no host had client authentication: its handshake
            // asked for nothing and did not record its SNI. A new connection will.
            return Presented::Misdirected;
        };
        match &session.ca {
            Some(ca) if Arc::ptr_eq(ca, &self.ca) || **ca == *self.ca => session
                .cert
                .as_ref()
                .map_or(Presented::Nothing, Presented::Certificate),
            _ if session.sni => Presented::Misdirected,
            _ => Presented::Nothing,
        }
    }

    /// `None` when the request may pass, else the answer: 400 (or the error page's 302), 403 for
    /// `auth-tls-match-cn`, 421 for a connection whose handshake was for another host.
    pub fn apply(&self, conn: &ConnInfo) -> Option<LocalResponse> {
        let cert = match self.presented(conn) {
            Presented::Misdirected => return Some(local_response(StatusCode::MISDIRECTED_REQUEST)),
            Presented::Nothing if self.verify == VerifyClient::On => return Some(self.refuse()),
            Presented::Nothing => None,
            Presented::Certificate(cert) => match (&cert.verified, self.verify) {
                (Ok(()), _) => Some(cert),
                (Err(f), VerifyClient::OptionalNoCa) if f.unknown_issuer => Some(cert),
                (Err(_), _) => return Some(self.refuse()),
            },
        };
        if let Some(m) = &self.match_dn {
            let dn = cert.map_or("", |c| c.subject_dn.as_str());
            if !m.is_match(dn) {
                return Some(local_response(StatusCode::FORBIDDEN));
            }
        }
        None
    }

    /// nginx's 495/496 (both sent as 400), or the error page.
    fn refuse(&self) -> LocalResponse {
        match &self.error_page {
            Some(location) => {
                let mut resp = local_response(StatusCode::FOUND);
                resp.headers_mut().insert(header::LOCATION, location.clone());
                resp
            }
            None => local_response(StatusCode::BAD_REQUEST),
        }
    }

    /// Sets the `ssl-client-*` headers of a request going upstream (removing whatever the client
    /// sent under those names): `ssl-client-verify` always (`SUCCESS`, `FAILED:<reason>` or
    /// `NONE`), the subject and issuer DNs when there is a certificate, and its escaped PEM as
    /// `ssl-client-cert` with `auth-tls-pass-certificate-to-upstream`.
    pub fn upstream_headers(&self, conn: &ConnInfo, headers: &mut HeaderMap) {
        for name in [
            &SSL_CLIENT_VERIFY,
            &SSL_CLIENT_SUBJECT_DN,
            &SSL_CLIENT_ISSUER_DN,
            &SSL_CLIENT_CERT,
        ] {
            headers.remove(name);
        }
        let Presented::Certificate(cert) = self.presented(conn) else {
            headers.insert(&SSL_CLIENT_VERIFY, HeaderValue::from_static("NONE"));
            return;
        };
        headers.insert(&SSL_CLIENT_VERIFY, cert.verify_header.clone());
        if let Some(v) = &cert.subject_header {
            headers.insert(&SSL_CLIENT_SUBJECT_DN, v.clone());
        }
        if let Some(v) = &cert.issuer_header {
            headers.insert(&SSL_CLIENT_ISSUER_DN, v.clone());
        }
        if self.pass_certificate {
            if let Some(v) = &cert.escaped_pem {
                headers.insert(&SSL_CLIENT_CERT, v.clone());
            }
        }
    }

    /// One line for `/debug/explain`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "client certificate: verify {} against {} CA certificate(s), depth {}",
            self.verify.as_str(),
            self.ca.ca_len(),
            self.ca.depth()
        );
        if self.ca.crl_len() > 0 {
            s.push_str(&format!(", {} CRL(s)", self.ca.crl_len()));
        }
        if let Some(m) = &self.match_dn {
            s.push_str(&format!(", subject must match {}", m.as_str()));
        }
        if self.pass_certificate {
            s.push_str(", certificate passed upstream");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_auth::{
        tests::{ca, client, Issuer},
        ClientCertSession,
    };

    struct Fixture {
        root: Issuer,
        ca: Arc<ClientCa>,
    }

    fn fixture() -> Fixture {
        let root = ca("Test Root");
        let ca = Arc::new(ClientCa::from_pem(root.pem().as_bytes(), None, 1).unwrap());
        Fixture { root, ca }
    }

    fn conn(session: Option<ClientCertSession>) -> ConnInfo {
        let mut c = ConnInfo::new("127.0.0.1:5000".parse().unwrap(), 8443, true);
        c.client_cert = session.map(Arc::new);
        c
    }

    fn with_cert(ca: &Arc<ClientCa>, issuer: &Issuer, cn: &str) -> ConnInfo {
        let (leaf, _) = client(issuer, cn);
        conn(Some(ClientCertSession::verified(
            ca.clone(),
            true,
            &[leaf.der().clone()],
        )))
    }

    fn without_cert(ca: &Arc<ClientCa>) -> ConnInfo {
        conn(Some(ClientCertSession::verified(ca.clone(), true, &[])))
    }

    fn status(auth: &ClientCertAuth, conn: &ConnInfo) -> u16 {
        auth.apply(conn).map_or(200, |r| r.status().as_u16())
    }

    #[test]
    fn each_verify_mode_answers_as_nginx_does() {
        let f = fixture();
        let other = ca("Other Root");
        let good = with_cert(&f.ca, &f.root, "authtls");
        let wrong = with_cert(&f.ca, &other, "authtls");
        let none = without_cert(&f.ca);
        // (mode, no certificate, good certificate, other CA's certificate)
        let table = [
            (VerifyClient::On, 400, 200, 400),
            (VerifyClient::Optional, 200, 200, 400),
            (VerifyClient::OptionalNoCa, 200, 200, 200),
        ];
        for (mode, no_cert, good_cert, wrong_cert) in table {
            let auth = ClientCertAuth::new(f.ca.clone(), mode);
            assert_eq!(status(&auth, &none), no_cert, "{mode:?} without certificate");
            assert_eq!(status(&auth, &good), good_cert, "{mode:?} good certificate");
            assert_eq!(status(&auth, &wrong), wrong_cert, "{mode:?} other CA");
        }
        // off asks for nothing and lets everything through.
        let off = ClientCertAuth::new(f.ca.clone(), VerifyClient::Off);
        assert_eq!(status(&off, &none), 200);
        assert_eq!(status(&off, &conn(None)), 200);
    }

    #[test]
    fn the_error_page_replaces_the_400_with_a_302() {
        let f = fixture();
        let mut auth = ClientCertAuth::new(f.ca.clone(), VerifyClient::On);
        auth.error_page = Some(HeaderValue::from_static("http://errors.example/error"));
        let resp = auth.apply(&without_cert(&f.ca)).unwrap();
        assert_eq!(resp.status(), 302);
        assert_eq!(resp.headers()["location"], "http://errors.example/error");
    }

    #[test]
    fn match_cn_is_matched_against_the_subject_dn() {
        let f = fixture();
        let good = with_cert(&f.ca, &f.root, "authtls");
        for (pattern, want) in [
            ("CN=authtls", 200),
            ("CN=(itwillmatch|withthenextoption|authtls)", 200),
            ("CN=notgonnamatch", 403),
            // Anywhere in the DN, as nginx's !~ matches.
            ("O=Acme", 200),
            ("^CN=auth$", 403),
        ] {
            let mut auth = ClientCertAuth::new(f.ca.clone(), VerifyClient::On);
            auth.match_dn = Some(MatchDn::new(pattern).unwrap());
            assert_eq!(status(&auth, &good), want, "{pattern}");
        }
        // optional without a certificate: the empty DN does not match either.
        let mut auth = ClientCertAuth::new(f.ca.clone(), VerifyClient::Optional);
        auth.match_dn = Some(MatchDn::new("CN=authtls").unwrap());
        assert_eq!(status(&auth, &without_cert(&f.ca)), 403);
    }

    #[test]
    fn a_connection_verified_for_another_host_is_misdirected_and_plain_http_has_no_certificate() {
        let f = fixture();
        let auth = ClientCertAuth::new(f.ca.clone(), VerifyClient::On);
        // SNI of a host without client authentication: no certificate was requested.
        assert_eq!(status(&auth, &conn(Some(ClientCertSession::none(true)))), 421);
        // Another CA's handshake, even with a certificate that would verify here.
        let other = Arc::new(ClientCa::from_pem(ca("Other").pem().as_bytes(), None, 1).unwrap());
        assert_eq!(status(&auth, &with_cert(&other, &f.root, "authtls")), 421);
        // A connection from before client authentication existed.
        assert_eq!(status(&auth, &conn(None)), 421);
        // No SNI: judged as no certificate.
        assert_eq!(status(&auth, &conn(Some(ClientCertSession::none(false)))), 400);
        // Plain HTTP.
        let plain = ConnInfo::new("127.0.0.1:5000".parse().unwrap(), 8080, false);
        assert_eq!(status(&auth, &plain), 400);
        let optional = ClientCertAuth::new(f.ca.clone(), VerifyClient::Optional);
        assert_eq!(status(&optional, &plain), 200);
        // An equal bundle from a rebuilt snapshot is the same CA.
        let rebuilt = Arc::new(ClientCa::from_pem(f.root.pem().as_bytes(), None, 1).unwrap());
        assert_eq!(status(&auth, &with_cert(&rebuilt, &f.root, "authtls")), 200);
    }

    #[test]
    fn upstream_headers_replace_the_client_s_and_carry_the_certificate() {
        let f = fixture();
        let mut auth = ClientCertAuth::new(f.ca.clone(), VerifyClient::Optional);
        let mut h = HeaderMap::new();
        h.insert("ssl-client-verify", HeaderValue::from_static("SUCCESS"));
        h.insert("ssl-client-subject-dn", HeaderValue::from_static("CN=admin"));
        auth.upstream_headers(&without_cert(&f.ca), &mut h);
        assert_eq!(h["ssl-client-verify"], "NONE");
        assert!(
            !h.contains_key("ssl-client-subject-dn"),
            "the client's forgery is gone"
        );

        let good = with_cert(&f.ca, &f.root, "authtls");
        let mut h = HeaderMap::new();
        auth.upstream_headers(&good, &mut h);
        assert_eq!(h["ssl-client-verify"], "SUCCESS");
        assert_eq!(h["ssl-client-subject-dn"], "CN=authtls,O=Acme\\, Inc.,C=US");
        assert_eq!(h["ssl-client-issuer-dn"], "CN=Test Root");
        assert!(!h.contains_key("ssl-client-cert"));
        auth.pass_certificate = true;
        auth.upstream_headers(&good, &mut h);
        let pem = h["ssl-client-cert"].to_str().unwrap();
        assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
    }
}
