//! Client certificates (mutual TLS, ingress-nginx's `auth-tls-*`): the CA bundle a host's clients
//! are verified against, and what one connection's handshake learnt about its client.
//!
//! Like nginx, Gantry never fails a handshake because of the client's certificate chain: the
//! certificate is *requested* (for the SNI names of hosts with a CA, see
//! [`crate::tls::CertTable::client_ca`]), rustls checks that the client holds its key (the
//! `CertificateVerify` signature is always verified), and the chain is validated once per
//! connection right after the handshake ([`ClientCa::verify`]). The result is kept with the
//! connection ([`ClientCertSession`]) and judged per request by the route's
//! [`ClientCertAuth`](crate::policy::ClientCertAuth), which answers 400 (or redirects to the error
//! page) as nginx does for its 495 and 496, so that the client gets an HTTP answer instead of a
//! TLS alert.
//!
//! What nginx sends upstream is reproduced byte for byte where it matters to applications:
//! `ssl-client-subject-dn` and `ssl-client-issuer-dn` are OpenSSL's RFC 2253 rendering
//! (`X509_NAME_print_ex` with `XN_FLAG_RFC2253`, nginx's `$ssl_client_s_dn`), `ssl-client-verify`
//! is `SUCCESS`, `NONE` or `FAILED:<reason>` with OpenSSL's reason texts for the common failures,
//! and `ssl-client-cert` is the leaf's PEM, URL-escaped (`$ssl_client_escaped_cert`).

use std::{
    fmt,
    hash::{Hash, Hasher},
    sync::Arc,
};

use http::HeaderValue;
use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;

/// nginx's `ssl_verify_depth` default, and ingress-nginx's `auth-tls-verify-depth` default.
pub const DEFAULT_CLIENT_VERIFY_DEPTH: u32 = 1;

/// Why a CA bundle or CRL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientCaError {
    /// `ca.crt` holds no `CERTIFICATE` block, or one that is not a usable trust anchor.
    #[error("ca.crt: {0}")]
    Ca(String),
    /// `ca.crl` holds a block that is not a CRL webpki can read.
    #[error("ca.crl: {0}")]
    Crl(String),
}

/// The CA certificates (and revocation lists) a host's client certificates must lead to, with the
/// most intermediate certificates allowed between a client certificate and a CA
/// (`auth-tls-verify-depth`, OpenSSL's `verify_depth` as nginx sets it; the same reading as
/// `proxy-ssl-verify-depth` for backends).
///
/// Compared by value (the DER bytes and the depth), so that an identical rebuild of the snapshot
/// keeps connections that verified against the old copy valid. `key` makes the comparison cheap
/// when two differ.
pub struct ClientCa {
    ca: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    depth: u32,
    key: u64,
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    parsed_crls: Vec<webpki::CertRevocationList<'static>>,
    hints: Vec<DistinguishedName>,
}

impl PartialEq for ClientCa {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
            || (self.key == other.key
                && self.depth == other.depth
                && self.ca == other.ca
                && self.crls == other.crls)
    }
}

impl Eq for ClientCa {}

impl fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCa")
            .field("ca_certs", &self.ca.len())
            .field("crls", &self.crls.len())
            .field("depth", &self.depth)
            .finish()
    }
}

impl ClientCa {
    /// The PEM bundle of a Secret's `ca.crt` (one or more `CERTIFICATE` blocks, each a trust
    /// anchor), the PEM of its optional `ca.crl` (one or more `X509 CRL` blocks), and the depth.
    pub fn from_pem(ca_pem: &[u8], crl_pem: Option<&[u8]>, depth: u32) -> Result<Self, ClientCaError> {
        let ca = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientCaError::Ca(e.to_string()))?;
        if ca.is_empty() {
            return Err(ClientCaError::Ca("no CERTIFICATE block found".into()));
        }
        let crls = match crl_pem {
            Some(pem) => {
                let crls = CertificateRevocationListDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ClientCaError::Crl(e.to_string()))?;
                if crls.is_empty() {
                    return Err(ClientCaError::Crl("no X509 CRL block found".into()));
                }
                crls
            }
            None => Vec::new(),
        };
        Self::new(ca, crls, depth)
    }

    fn new(
        ca: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        depth: u32,
    ) -> Result<Self, ClientCaError> {
        let mut anchors = Vec::with_capacity(ca.len());
        let mut store = RootCertStore::empty();
        for cert in &ca {
            let anchor = webpki::anchor_from_trusted_cert(cert)
                .map_err(|e| ClientCaError::Ca(format!("not a usable CA certificate: {e}")))?
                .to_owned();
            anchors.push(anchor);
            let _ = store.add(cert.clone());
        }
        let mut parsed_crls = Vec::with_capacity(crls.len());
        for crl in &crls {
            let owned = webpki::OwnedCertRevocationList::from_der(crl.as_ref())
                .map_err(|e| ClientCaError::Crl(e.to_string()))?;
            parsed_crls.push(webpki::CertRevocationList::Owned(owned));
        }
        // `DefaultHasher::new()` has fixed keys: the same bundle has the same key in every
        // snapshot.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ca.hash(&mut h);
        crls.iter().map(|c| c.as_ref()).for_each(|c| c.hash(&mut h));
        depth.hash(&mut h);
        Ok(Self {
            ca,
            crls,
            depth,
            key: h.finish(),
            anchors,
            parsed_crls,
            hints: store.subjects(),
        })
    }

    pub fn depth(&self) -> u32 {
        self.depth
    }

    pub fn ca_len(&self) -> usize {
        self.ca.len()
    }

    pub fn crl_len(&self) -> usize {
        self.crls.len()
    }

    /// A hash of the bundle, CRLs and depth: equal bundles have equal keys.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The rustls verifier of handshakes that request a certificate for this CA: it asks for a
    /// certificate (naming the CAs, so a client with several picks the right one), never requires
    /// one, accepts any chain (judged later by [`ClientCa::verify`]) and always checks the
    /// handshake signature, so a client cannot present a certificate whose key it does not hold.
    pub fn handshake_verifier(&self, algorithms: WebPkiSupportedAlgorithms) -> Arc<dyn ClientCertVerifier> {
        Arc::new(DeferredVerifier {
            hints: self.hints.clone(),
            algorithms,
        })
    }

    /// Validates the chain a client presented (leaf first) against the CA certificates, for client
    /// authentication, at `now`, within the depth, against the CRLs when there are any. Never
    /// fails: the outcome is in the session.
    pub fn verify(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> PeerCert {
        let Some((leaf, intermediates)) = chain.split_first() else {
            // rustls reports an empty Certificate message as no certificate; this is a guard.
            return PeerCert::unreadable("no certificate");
        };
        let verified = self.validate(leaf, intermediates, now);
        PeerCert::describe(leaf, verified)
    }

    fn validate(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), VerifyFailure> {
        let ee = webpki::EndEntityCert::try_from(leaf).map_err(VerifyFailure::from_webpki)?;
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        let depth = usize::try_from(self.depth).unwrap_or(usize::MAX);
        let within = |path: &webpki::VerifiedPath<'_>| {
            if path.intermediate_certificates().count() <= depth {
                Ok(())
            } else {
                Err(webpki::Error::MaximumPathDepthExceeded)
            }
        };
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = self.parsed_crls.iter().collect();
        // As nginx's `ssl_crl` (OpenSSL's CRL_CHECK | CRL_CHECK_ALL): every certificate of the
        // chain is checked, a certificate whose issuer has no CRL is refused, and so is an expired
        // CRL.
        let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(webpki::RevocationCheckDepth::Chain)
                .with_status_policy(webpki::UnknownStatusPolicy::Deny)
                .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
                .build()
        });
        ee.verify_for_usage(
            algorithms.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            revocation,
            Some(&within),
        )
        .map(|_| ())
        .map_err(VerifyFailure::from_webpki)
    }
}

/// Requests a client certificate and defers the chain's judgement (see [`ClientCa::handshake_verifier`]).
#[derive(Debug)]
struct DeferredVerifier {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DeferredVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// Never: a client without a certificate gets its answer over HTTP (400 with
    /// `auth-tls-verify-client: on`), as from nginx.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain is validated after the handshake (`ClientCa::verify`), so that a bad one is an
        // HTTP 400 and not a TLS alert. Possession of the key is still proven: rustls calls the
        // signature checks below with this certificate's public key.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why a client's chain did not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The chain leads to no CA of the bundle (and nothing else is wrong that was checked first):
    /// what `auth-tls-verify-client: optional_no_ca` lets through (nginx's
    /// `ngx_ssl_verify_error_optional`: unknown issuer, self-signed).
    pub unknown_issuer: bool,
    /// OpenSSL's text for the error (`X509_verify_cert_error_string`), as in nginx's
    /// `$ssl_client_verify` (`FAILED:<reason>`).
    pub reason: &'static str,
}

impl VerifyFailure {
    fn from_webpki(e: webpki::Error) -> Self {
        use webpki::Error as E;
        let (unknown_issuer, reason) = match e {
            E::UnknownIssuer => (true, "unable to get local issuer certificate"),
            E::CertExpired { .. } => (false, "certificate has expired"),
            E::CertNotValidYet { .. } => (false, "certificate is not yet valid"),
            E::CertRevoked => (false, "certificate revoked"),
            E::UnknownRevocationStatus => (false, "unable to get certificate CRL"),
            E::CrlExpired { .. } => (false, "CRL has expired"),
            E::MaximumPathDepthExceeded => (false, "certificate chain too long"),
            #[allow(deprecated)]
            E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => {
                (false, "unsupported certificate purpose")
            }
            E::InvalidSignatureForPublicKey | E::InvalidCrlSignatureForPublicKey => {
                (false, "certificate signature failure")
            }
            E::BadDer | E::BadDerTime | E::TrailingData(_) => (false, "unable to decode issuer public key"),
            _ => (false, "certificate verify failed"),
        };
        Self {
            unknown_issuer,
            reason,
        }
    }
}

/// The certificate a client presented, judged, with the header values sent upstream.
#[derive(Clone, Debug)]
pub struct PeerCert {
    pub verified: Result<(), VerifyFailure>,
    /// `ssl-client-verify`: `SUCCESS` or `FAILED:<reason>`.
    pub verify_header: HeaderValue,
    /// The subject in RFC 2253 form (nginx's `$ssl_client_s_dn`): `auth-tls-match-cn` is matched
    /// against it, and it is `ssl-client-subject-dn`. Empty when the certificate cannot be read.
    pub subject_dn: String,
    pub subject_header: Option<HeaderValue>,
    /// `ssl-client-issuer-dn`.
    pub issuer_header: Option<HeaderValue>,
    /// `ssl-client-cert`: the leaf certificate's PEM, URL-escaped (nginx's
    /// `$ssl_client_escaped_cert`).
    pub escaped_pem: Option<HeaderValue>,
}

impl PeerCert {
    fn unreadable(why: &'static str) -> Self {
        let failure = VerifyFailure {
            unknown_issuer: false,
            reason: why,
        };
        Self {
            verify_header: failure_header(&failure),
            verified: Err(failure),
            subject_dn: String::new(),
            subject_header: None,
            issuer_header: None,
            escaped_pem: None,
        }
    }

    fn describe(leaf: &CertificateDer<'_>, verified: Result<(), VerifyFailure>) -> Self {
        let verify_header = match &verified {
            Ok(()) => HeaderValue::from_static("SUCCESS"),
            Err(f) => failure_header(f),
        };
        let (subject_dn, issuer_dn) = match x509_parser::parse_x509_certificate(leaf.as_ref()) {
            Ok((_, cert)) => (rfc2253(cert.subject()), rfc2253(cert.issuer())),
            Err(_) => (String::new(), String::new()),
        };
        let header = |s: &str| (!s.is_empty()).then(|| HeaderValue::from_str(s).ok()).flatten();
        Self {
            subject_header: header(&subject_dn),
            issuer_header: header(&issuer_dn),
            subject_dn,
            verify_header,
            verified,
            escaped_pem: HeaderValue::from_str(&escaped_pem(leaf.as_ref())).ok(),
        }
    }
}

fn failure_header(f: &VerifyFailure) -> HeaderValue {
    HeaderValue::from_str(&format!("FAILED:{}", f.reason)).unwrap_or(HeaderValue::from_static("FAILED"))
}

/// What one TLS connection's handshake learnt about its client's certificate. Kept with the
/// connection (`ConnInfo::client_cert`); `None` there means a plain-text connection.
#[derive(Clone, Debug)]
pub struct ClientCertSession {
    /// The CA bundle the certificate was requested for; `None` when none was requested (the SNI
    /// named a host without client authentication, or no host has any).
    pub ca: Option<Arc<ClientCa>>,
    /// Whether the client sent SNI. A request for a protected host on a connection whose handshake
    /// was for another name is then misdirected (421), as from nginx.
    pub sni: bool,
    /// The certificate presented, if any, judged against `ca`.
    pub cert: Option<PeerCert>,
}

impl ClientCertSession {
    /// The session of a handshake that requested no certificate.
    pub fn none(sni: bool) -> Self {
        Self {
            ca: None,
            sni,
            cert: None,
        }
    }

    /// The session of a handshake that requested a certificate for `ca`, with the chain the client
    /// presented (empty: none).
    pub fn verified(ca: Arc<ClientCa>, sni: bool, chain: &[CertificateDer<'_>]) -> Self {
        let cert = (!chain.is_empty()).then(|| ca.verify(chain, UnixTime::now()));
        Self {
            ca: Some(ca),
            sni,
            cert,
        }
    }
}

/// A distinguished name as OpenSSL prints it with `XN_FLAG_RFC2253` (what nginx's
/// `$ssl_client_s_dn` and `$ssl_client_i_dn` are since nginx 1.11.6): RDNs in reverse order
/// separated by `,`, multi-valued RDNs joined by `+`, attributes by their short names (`CN`, `O`,
/// ...) or dotted OID, values escaped as RFC 2253 says, every byte beyond ASCII and every control
/// character as `\XX` (so the result is always a valid header value), and values of unknown
/// attributes or of non-string types as `#` and the hex of their DER.
pub fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            let short = short_name(&oid);
            out.push_str(short.unwrap_or(&oid));
            out.push('=');
            let value = atv.attr_value();
            match (short, string_value(value)) {
                (Some(_), Some(text)) => escape_2253(&text, &mut out),
                _ => {
                    use x509_parser::der_parser::asn1_rs::ToDer;
                    out.push('#');
                    match value.to_der_vec() {
                        Ok(der) => der.iter().for_each(|b| out.push_str(&format!("{b:02X}"))),
                        Err(_) => value
                            .as_bytes()
                            .iter()
                            .for_each(|b| out.push_str(&format!("{b:02X}"))),
                    }
                }
            }
        }
    }
    out
}

/// OpenSSL's short names for the attributes found in certificate names.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// The text of a string-typed value, converted to UTF-8 as OpenSSL's `ASN1_STRFLGS_UTF8_CONVERT`
/// does (T61String is read as Latin-1, BMPString as UCS-2, UniversalString as UCS-4).
fn string_value(value: &x509_parser::der_parser::asn1_rs::Any<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let data = value.as_bytes();
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => {
            std::str::from_utf8(data).ok().map(str::to_string)
        }
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = data.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return None;
            }
            data.chunks(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// OpenSSL's `ESC_2253 | ESC_CTRL | ESC_MSB` escaping of one value.
fn escape_2253(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let last = bytes.len().saturating_sub(1);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b if !(0x20..0x7f).contains(&b) => out.push_str(&format!("\\{b:02X}")),
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b'#' if i == 0 => out.push_str("\\#"),
            b' ' if i == 0 || i == last => out.push_str("\\ "),
            b => out.push(char::from(b)),
        }
    }
}

/// The certificate as PEM (64-character lines, as OpenSSL writes it), URL-escaped the way nginx's
/// `ngx_escape_uri(NGX_ESCAPE_URI_COMPONENT)` does for the characters PEM has: `-` stays, space,
/// newline, `+`, `/` and `=` become `%20`, `%0A`, `%2B`, `%2F` and `%3D`.
fn escaped_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(&pem, COMPONENT).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) type Issuer = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

    pub(crate) fn ca(name: &str) -> Issuer {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    pub(crate) fn intermediate(issuer: &Issuer, name: &str) -> Issuer {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        rcgen::CertifiedIssuer::signed_by(params, rcgen::KeyPair::generate().unwrap(), issuer).unwrap()
    }

    /// A client certificate with this subject (C, O, CN in that order in the certificate).
    pub(crate) fn client(issuer: &Issuer, cn: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CountryName, "US");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(rcgen::SerialNumber::from(7u64));
        let key = rcgen::KeyPair::generate().unwrap();
        (params.signed_by(&key, issuer).unwrap(), key)
    }

    fn bundle(cas: &[&Issuer], depth: u32) -> ClientCa {
        let pem: String = cas.iter().map(|c| c.pem()).collect();
        ClientCa::from_pem(pem.as_bytes(), None, depth).unwrap()
    }

    #[test]
    fn a_client_certificate_of_the_ca_verifies_and_is_described_as_nginx_does() {
        let root = ca("Test Root");
        let (leaf, _) = client(&root, "authtls");
        let s = ClientCertSession::verified(Arc::new(bundle(&[&root], 1)), true, &[leaf.der().clone()]);
        let cert = s.cert.unwrap();
        assert_eq!(cert.verified, Ok(()));
        assert_eq!(cert.verify_header, "SUCCESS");
        // Reversed, no spaces, the comma in the organization escaped.
        assert_eq!(cert.subject_dn, "CN=authtls,O=Acme\\, Inc.,C=US");
        assert_eq!(cert.issuer_header.unwrap(), "CN=Test Root");
        let pem = cert.escaped_pem.unwrap();
        let pem = pem.to_str().unwrap();
        assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
        assert!(pem.ends_with("-----END%20CERTIFICATE-----%0A"), "{pem}");
        assert!(!pem.contains(['/', '+', '=', ' ', '\n']), "{pem}");
        let decoded = percent_encoding::percent_decode_str(pem).decode_utf8().unwrap();
        assert_eq!(decoded, leaf.pem().replace("\r\n", "\n"));
    }

    #[test]
    fn another_ca_s_certificate_is_an_unknown_issuer() {
        let (root, other) = (ca("Test Root"), ca("Other Root"));
        let (leaf, _) = client(&other, "intruder");
        let cert = bundle(&[&root], 1).verify(&[leaf.der().clone()], UnixTime::now());
        let failure = cert.verified.unwrap_err();
        assert!(failure.unknown_issuer);
        assert_eq!(
            cert.verify_header,
            "FAILED:unable to get local issuer certificate"
        );
        // Still described: optional_no_ca reports it upstream.
        assert_eq!(cert.subject_dn, "CN=intruder,O=Acme\\, Inc.,C=US");
    }

    #[test]
    fn the_depth_counts_intermediates_between_the_certificate_and_the_ca() {
        let root = ca("Test Root");
        let mid = intermediate(&root, "Mid");
        let (leaf, _) = client(&mid, "deep");
        let chain = [leaf.der().clone(), mid.der().clone()];
        let at = |depth| bundle(&[&root], depth).verify(&chain, UnixTime::now()).verified;
        assert_eq!(at(1), Ok(()));
        let too_deep = at(0).unwrap_err();
        assert_eq!(too_deep.reason, "certificate chain too long");
        assert!(!too_deep.unknown_issuer);
        // The intermediate in ca.crt is a trust anchor itself: depth 0 is enough then.
        assert_eq!(
            bundle(&[&mid], 0).verify(&chain[..1], UnixTime::now()).verified,
            Ok(())
        );
    }

    #[test]
    fn an_expired_certificate_fails_even_for_optional_no_ca() {
        let root = ca("Test Root");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "old");
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &root).unwrap();
        let failure = bundle(&[&root], 1)
            .verify(&[leaf.der().clone()], UnixTime::now())
            .verified
            .unwrap_err();
        assert_eq!(failure.reason, "certificate has expired");
        assert!(!failure.unknown_issuer);
    }

    #[test]
    fn a_revoked_certificate_fails_and_a_crl_is_read_from_pem() {
        let root = ca("Test Root");
        let (leaf, _) = client(&root, "revoked");
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(7u64),
                revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&root)
        .unwrap();
        let ca = ClientCa::from_pem(root.pem().as_bytes(), Some(crl.pem().unwrap().as_bytes()), 1).unwrap();
        assert_eq!(ca.crl_len(), 1);
        let failure = ca
            .verify(&[leaf.der().clone()], UnixTime::now())
            .verified
            .unwrap_err();
        assert_eq!(failure.reason, "certificate revoked");
        assert!(ClientCa::from_pem(root.pem().as_bytes(), Some(b"junk"), 1).is_err());
    }

    #[test]
    fn bundles_compare_by_value_and_garbage_is_refused() {
        let root = ca("Test Root");
        assert_eq!(bundle(&[&root], 1), bundle(&[&root], 1));
        assert_eq!(bundle(&[&root], 1).key(), bundle(&[&root], 1).key());
        assert_ne!(bundle(&[&root], 1), bundle(&[&root], 2));
        assert!(ClientCa::from_pem(b"", None, 1).is_err());
        assert!(ClientCa::from_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            None,
            1
        )
        .is_err());
    }

    #[test]
    fn names_are_escaped_as_openssl_does() {
        let mut out = String::new();
        escape_2253(" #a,b+c\"d\\e<f>g;h= é\u{1} ", &mut out);
        assert_eq!(out, "\\ #a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h= \\C3\\A9\\01\\ ");
        let mut out = String::new();
        escape_2253("#x", &mut out);
        assert_eq!(out, "\\#x");
    }
}
