//! How a route talks to its backend: the protocol ([`UpstreamProtocol`], ingress-nginx's
//! `backend-protocol`) and TLS to the backend ([`UpstreamTls`], ingress-nginx's `proxy-ssl-*`).
//!
//! Both are plain values that compare by value. The rustls client configuration an
//! [`UpstreamTls`] needs is built once, the first time a connection needs it, and kept inside the
//! value (ignored by equality), so routes that share one `Arc<UpstreamTls>` share one
//! configuration and its TLS session cache.

use std::{
    fmt,
    hash::{Hash, Hasher},
    sync::{Arc, OnceLock},
};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor, verify_server_name,
    },
    crypto::{ring::sign::any_supported_type, CryptoProvider, WebPkiSupportedAlgorithms},
    server::ParsedCertificate,
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The protocol Gantry speaks to a route's endpoints (ingress-nginx's
/// `nginx.ingress.kubernetes.io/backend-protocol`).
///
/// | ingress-nginx value | protocol |
/// |---|---|
/// | `HTTP` (the default) | [`UpstreamProtocol::Http1`] |
/// | `HTTPS` | [`UpstreamProtocol::Https`] |
/// | `GRPC` | [`UpstreamProtocol::H2c`] (nginx's `grpc_pass grpc://`) |
/// | `GRPCS` | [`UpstreamProtocol::H2`] (nginx's `grpc_pass grpcs://`) |
/// | `H2C` (Gantry's own) | [`UpstreamProtocol::H2c`] |
///
/// `H2C` is not an ingress-nginx value (its validation accepts `AUTO_HTTP`, `HTTP`, `HTTPS`,
/// `GRPC`, `GRPCS` and `FCGI`, `internal/ingress/annotations/backendprotocol/main.go`); it names
/// plain HTTP/2 backends that are not gRPC, which `GRPC` reaches the same way. `AUTO_HTTP` (the
/// client's own scheme) and `FCGI` are not supported; whether a route that asks for them is
/// refused or served as `HTTP` is the controller's decision.
///
/// The client's HTTP version is independent of this one: an HTTP/1.1 client can reach an h2c
/// backend, and an HTTP/2 client an HTTP/1.1 one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over plain TCP, with pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`), with pooled keep-alive connections.
    Https,
    /// HTTP/2 over plain TCP with prior knowledge (h2c): one multiplexed connection per worker and
    /// endpoint, shared by concurrent requests. gRPC without TLS.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`), multiplexed as [`UpstreamProtocol::H2c`]. gRPC with TLS.
    H2,
}

impl UpstreamProtocol {
    /// Whether connections to the backend are TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::H2)
    }

    /// Whether requests go to the backend as HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Self::H2c | Self::H2)
    }

    /// A short name for logs and `/debug/explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http/1.1",
            Self::Https => "http/1.1 over tls",
            Self::H2c => "h2c",
            Self::H2 => "h2 over tls",
        }
    }
}

impl fmt::Display for UpstreamProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name a backend's certificate is checked against (and sent as SNI, when SNI is on) when no
/// `proxy-ssl-name` is given.
///
/// nginx's `proxy_ssl_name` defaults to `$proxy_host`, "the host part of the proxy_pass URL"
/// (<https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_ssl_name>), and ingress-nginx
/// always proxies to `https://upstream_balancer` (`buildProxyPass` in
/// `internal/ingress/controller/template/template.go`). So an ingress-nginx route with
/// `proxy-ssl-verify: "on"` and no `proxy-ssl-name` verifies the backend's certificate against
/// the name `upstream_balancer`, which fails for any real certificate, and with
/// `proxy-ssl-server-name: "on"` sends `upstream_balancer` as SNI. Gantry does the same, so that
/// such an Ingress behaves the same (502) instead of silently verifying something else.
pub const DEFAULT_SSL_NAME: &str = "upstream_balancer";

/// nginx's `proxy_ssl_verify_depth` default (and ingress-nginx's `proxy-ssl-verify-depth`).
pub const DEFAULT_VERIFY_DEPTH: u32 = 1;

/// TLS to a route's backend: ingress-nginx's `proxy-ssl-*` annotations, with nginx's defaults.
///
/// | annotation | here | default |
/// |---|---|---|
/// | `proxy-ssl-verify` | [`UpstreamTls::with_verify`] | off: any certificate is accepted (the handshake itself is still checked) |
/// | `proxy-ssl-secret` `ca.crt` | [`UpstreamTls::with_ca_pem`] | none; with verification on and no CA, nothing is trusted |
/// | `proxy-ssl-secret` `tls.crt`, `tls.key` | [`UpstreamTls::with_client_cert_pem`] | no client certificate |
/// | `proxy-ssl-name` | [`UpstreamTls::with_name`] | [`DEFAULT_SSL_NAME`] |
/// | `proxy-ssl-server-name` | [`UpstreamTls::with_sni`] | off: no SNI is sent |
/// | `proxy-ssl-verify-depth` | [`UpstreamTls::with_verify_depth`] | 1 |
///
/// ingress-nginx writes `proxy_ssl_verify` into nginx's configuration only when the route has a
/// `proxy-ssl-secret` (`nginx.tmpl`), so `proxy-ssl-verify: "on"` without a Secret is
/// verification off there; the controller is expected to mirror that rather than turn
/// verification on with nothing trusted.
///
/// Verification checks the chain up to one of the CA certificates, the certificate's validity
/// period, that it is for server authentication, that it names [`UpstreamTls::name`] (DNS name or
/// IP address in its subject alternative names), and that there are at most `verify_depth`
/// intermediate certificates between it and the CA (OpenSSL's `verify_depth`, which nginx sets).
///
/// The same settings apply to HTTP/2 over TLS ([`UpstreamProtocol::H2`], `GRPCS`). ingress-nginx
/// proxies GRPCS with `grpc_pass`, for which its `proxy_ssl_*` directives have no effect (nginx
/// reads `grpc_ssl_*` instead, and defaults them as above), so there these annotations change
/// nothing for gRPC; in Gantry they do what they say for every TLS protocol.
///
/// Construct with [`UpstreamTls::new`] and the `with_*` methods. Equality, hashing and
/// [`UpstreamTls::key`] cover the settings only, never the cached client configuration.
pub struct UpstreamTls {
    verify: bool,
    ca: Vec<CertificateDer<'static>>,
    client_cert: Option<ClientCert>,
    name: ServerName<'static>,
    sni: bool,
    verify_depth: u32,
    /// A hash of the settings, the identity of the connections made with them in the per-worker
    /// pools (which still compare the settings themselves on a match).
    key: u64,
    /// The client configurations, built on first use: ALPN `http/1.1` and ALPN `h2`.
    configs: [OnceLock<Arc<ClientConfig>>; 2],
}

/// A client certificate chain and its key, for backends that ask for one (mTLS).
struct ClientCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for ClientCert {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Why a `proxy-ssl-*` setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    /// The CA bundle or the client certificate holds no `CERTIFICATE` block, or one that does not
    /// parse.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The client key holds no PKCS#1, PKCS#8 or SEC1 key, or is not RSA, ECDSA or Ed25519.
    #[error("private key: {0}")]
    PrivateKey(String),
    /// The client key does not belong to the client certificate.
    #[error("the private key does not match the client certificate")]
    KeyMismatch,
    /// `proxy-ssl-name` is neither a DNS name nor an IP address.
    #[error("invalid server name {0:?}")]
    Name(String),
}

/// Which client configuration: the ALPN protocol offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2`.
    H2,
}

// === impl UpstreamTls ===

impl Default for UpstreamTls {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for UpstreamTls {
    /// A copy of the settings with an empty configuration cache.
    fn clone(&self) -> Self {
        Self {
            verify: self.verify,
            ca: self.ca.clone(),
            client_cert: self.client_cert.clone(),
            name: self.name.clone(),
            sni: self.sni,
            verify_depth: self.verify_depth,
            key: self.key,
            configs: Default::default(),
        }
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
            || (self.key == other.key
                && self.verify == other.verify
                && self.sni == other.sni
                && self.verify_depth == other.verify_depth
                && self.name == other.name
                && self.ca == other.ca
                && client_cert_eq(self.client_cert.as_ref(), other.client_cert.as_ref()))
    }
}

impl Eq for UpstreamTls {}

impl Hash for UpstreamTls {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.key);
    }
}

fn client_cert_eq(a: Option<&ClientCert>, b: Option<&ClientCert>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.chain == b.chain && a.key.secret_der() == b.key.secret_der(),
        _ => false,
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("verify", &self.verify)
            .field("ca_certs", &self.ca.len())
            .field("client_cert", &self.client_cert.is_some())
            .field("name", &self.name.to_str())
            .field("sni", &self.sni)
            .field("verify_depth", &self.verify_depth)
            .finish()
    }
}

impl UpstreamTls {
    /// nginx's defaults: no verification, no SNI, the name [`DEFAULT_SSL_NAME`], depth 1, no
    /// client certificate.
    pub fn new() -> Self {
        let mut tls = Self {
            verify: false,
            ca: Vec::new(),
            client_cert: None,
            name: ServerName::try_from(DEFAULT_SSL_NAME).expect("a valid DNS name"),
            sni: false,
            verify_depth: DEFAULT_VERIFY_DEPTH,
            key: 0,
            configs: Default::default(),
        };
        tls.rekey();
        tls
    }

    /// `proxy-ssl-verify`: verify the backend's certificate against the CA certificates and the
    /// name.
    pub fn with_verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self.rekey();
        self
    }

    /// `proxy-ssl-secret`'s `ca.crt`: the certificates a backend's chain must lead to (PEM, one
    /// or more `CERTIFICATE` blocks). Replaces any set before.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, UpstreamTlsError> {
        let certs = parse_certs(pem)?;
        // Each must be usable as a trust anchor.
        for cert in &certs {
            webpki::anchor_from_trusted_cert(cert)
                .map_err(|e| UpstreamTlsError::Certificate(e.to_string()))?;
        }
        self.ca = certs;
        self.rekey();
        Ok(self)
    }

    /// `proxy-ssl-secret`'s `tls.crt` and `tls.key`: the certificate chain (leaf first) and key
    /// Gantry presents to a backend that asks for a client certificate.
    pub fn with_client_cert_pem(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, UpstreamTlsError> {
        let chain = parse_certs(cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| UpstreamTlsError::PrivateKey(e.to_string()))?;
        let signer = any_supported_type(&key).map_err(|e| UpstreamTlsError::PrivateKey(e.to_string()))?;
        match rustls::sign::CertifiedKey::new(chain.clone(), signer).keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => return Err(UpstreamTlsError::KeyMismatch),
        }
        self.client_cert = Some(ClientCert { chain, key });
        self.rekey();
        Ok(self)
    }

    /// `proxy-ssl-name`: the name the certificate must carry, and the SNI sent when SNI is on. A
    /// DNS name or an IP address.
    pub fn with_name(mut self, name: &str) -> Result<Self, UpstreamTlsError> {
        let name = name.trim().trim_end_matches('.');
        self.name = ServerName::try_from(name)
            .map_err(|_| UpstreamTlsError::Name(name.to_string()))?
            .to_owned();
        self.rekey();
        Ok(self)
    }

    /// `proxy-ssl-server-name`: send the name as SNI (never for an IP address, as nginx).
    pub fn with_sni(mut self, sni: bool) -> Self {
        self.sni = sni;
        self.rekey();
        self
    }

    /// `proxy-ssl-verify-depth`: the most intermediate certificates allowed between the
    /// backend's certificate and a CA certificate.
    pub fn with_verify_depth(mut self, depth: u32) -> Self {
        self.verify_depth = depth;
        self.rekey();
        self
    }

    pub fn verify(&self) -> bool {
        self.verify
    }

    pub fn name(&self) -> &ServerName<'static> {
        &self.name
    }

    pub fn sni(&self) -> bool {
        self.sni
    }

    pub fn verify_depth(&self) -> u32 {
        self.verify_depth
    }

    /// The number of CA certificates.
    pub fn ca_len(&self) -> usize {
        self.ca.len()
    }

    pub fn has_client_cert(&self) -> bool {
        self.client_cert.is_some()
    }

    /// A hash of the settings: the same in every snapshot for the same settings, and the key of
    /// the per-worker connection pools.
    #[inline]
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The rustls client configuration for these settings and ALPN protocol, built on the first
    /// call and shared by every later one.
    pub fn client_config(&self, alpn: Alpn) -> Arc<ClientConfig> {
        let slot = match alpn {
            Alpn::Http1 => &self.configs[0],
            Alpn::H2 => &self.configs[1],
        };
        slot.get_or_init(|| Arc::new(self.build(alpn))).clone()
    }

    fn build(&self, alpn: Alpn) -> ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(BackendVerifier::new(self, &provider));
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client_cert {
            Some(c) => builder
                .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
                // Checked when the certificate was set.
                .expect("a client key checked by with_client_cert_pem"),
            None => builder.with_no_client_auth(),
        };
        config.enable_sni = self.sni;
        config.alpn_protocols = match alpn {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
        };
        config
    }

    fn rekey(&mut self) {
        // `DefaultHasher::new()` has fixed keys: the same settings get the same key in every
        // snapshot, so pooled connections survive a swap.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.verify.hash(&mut h);
        self.sni.hash(&mut h);
        self.verify_depth.hash(&mut h);
        self.name.hash(&mut h);
        self.ca.hash(&mut h);
        if let Some(c) = &self.client_cert {
            c.chain.hash(&mut h);
            c.key.secret_der().hash(&mut h);
        }
        self.key = h.finish();
        self.configs = Default::default();
    }
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, UpstreamTlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UpstreamTlsError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(UpstreamTlsError::Certificate("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// The certificate check of one [`UpstreamTls`]: none at all when verification is off (as
/// nginx's `proxy_ssl_verify off`), or webpki against its CA certificates, its name and its depth.
/// The handshake's own signatures are always checked, so the backend holds the certificate's key.
#[derive(Debug)]
struct BackendVerifier {
    /// `None` when verification is off.
    roots: Option<RootCertStore>,
    depth: usize,
    algorithms: WebPkiSupportedAlgorithms,
}

impl BackendVerifier {
    fn new(tls: &UpstreamTls, provider: &CryptoProvider) -> Self {
        let roots = tls.verify.then(|| {
            let mut roots = RootCertStore::empty();
            for cert in &tls.ca {
                // Each was checked by `with_ca_pem`.
                let _ = roots.add(cert.clone());
            }
            roots
        });
        Self {
            roots,
            depth: usize::try_from(tls.verify_depth).unwrap_or(usize::MAX),
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for BackendVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, self.algorithms.all)?;
        verify_server_name(&cert, server_name)?;
        // A chain that cannot have more intermediates than allowed needs no second look; a longer
        // one must have a path within the depth (a server may send certificates it does not need).
        if intermediates.len() > self.depth {
            let ee = webpki::EndEntityCert::try_from(end_entity)
                .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
            let depth = self.depth;
            let within = |path: &webpki::VerifiedPath<'_>| {
                if path.intermediate_certificates().count() <= depth {
                    Ok(())
                } else {
                    Err(webpki::Error::MaximumPathDepthExceeded)
                }
            };
            ee.verify_for_usage(
                self.algorithms.all,
                &roots.roots,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                Some(&within),
            )
            .map_err(|_| {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    DepthExceeded(depth),
                ))))
            })?;
        }
        Ok(ServerCertVerified::assertion())
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

/// The backend's chain needs more intermediates than `proxy-ssl-verify-depth` allows.
#[derive(Debug)]
struct DepthExceeded(usize);

impl fmt::Display for DepthExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate chain needs more than {} intermediate certificate(s) (proxy-ssl-verify-depth)",
            self.0
        )
    }
}

impl std::error::Error for DepthExceeded {}

#[cfg(test)]
mod tests {
    use super::*;

    type Ca = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

    fn ca_params(name: &str) -> rcgen::CertificateParams {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params
    }

    fn ca() -> Ca {
        rcgen::CertifiedIssuer::self_signed(ca_params("test ca"), rcgen::KeyPair::generate().unwrap())
            .unwrap()
    }

    fn intermediate(issuer: &Ca) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertifiedIssuer::signed_by(ca_params("test intermediate"), key, issuer).unwrap()
    }

    fn leaf(names: &[&str], issuer: &Ca) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        (params.signed_by(&key, issuer).unwrap(), key)
    }

    fn verify(tls: &UpstreamTls, chain: &[&CertificateDer<'static>]) -> Result<(), rustls::Error> {
        let provider = rustls::crypto::ring::default_provider();
        let v = BackendVerifier::new(tls, &provider);
        v.verify_server_cert(
            chain[0],
            &chain[1..].iter().map(|c| (*c).clone()).collect::<Vec<_>>(),
            tls.name(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
    }

    fn verifying(ca: &Ca, name: &str) -> UpstreamTls {
        UpstreamTls::new()
            .with_verify(true)
            .with_ca_pem(ca.pem().as_bytes())
            .unwrap()
            .with_name(name)
            .unwrap()
    }

    #[test]
    fn defaults_are_nginx_s() {
        let tls = UpstreamTls::new();
        assert!(!tls.verify());
        assert!(!tls.sni());
        assert_eq!(tls.verify_depth(), 1);
        assert_eq!(tls.name().to_str(), "upstream_balancer");
        assert!(!tls.has_client_cert());
        assert_eq!(UpstreamProtocol::default(), UpstreamProtocol::Http1);
    }

    #[test]
    fn settings_compare_and_key_by_value_and_ignore_the_cache() {
        let a = verifying(&ca(), "api.internal");
        let b = a.clone();
        let _ = a.client_config(Alpn::H2);
        assert_eq!(a, b);
        assert_eq!(a.key(), b.key());
        let c = b.clone().with_sni(true);
        assert_ne!(a, c);
        assert_ne!(a.key(), c.key());
        assert_ne!(UpstreamTls::new(), UpstreamTls::new().with_verify_depth(2));
        assert_eq!(UpstreamTls::new(), UpstreamTls::default());
        assert_eq!(UpstreamTls::new().key(), UpstreamTls::new().key());
    }

    #[test]
    fn configs_are_built_once_and_offer_the_protocol_s_alpn() {
        let tls = UpstreamTls::new().with_sni(true);
        let h1 = tls.client_config(Alpn::Http1);
        assert!(Arc::ptr_eq(&h1, &tls.client_config(Alpn::Http1)));
        assert_eq!(h1.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(h1.enable_sni);
        let h2 = tls.client_config(Alpn::H2);
        assert_eq!(h2.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(!UpstreamTls::new().client_config(Alpn::H2).enable_sni);
    }

    #[test]
    fn bad_settings_are_refused_when_set() {
        assert!(matches!(
            UpstreamTls::new().with_ca_pem(b"not pem"),
            Err(UpstreamTlsError::Certificate(_))
        ));
        assert!(matches!(
            UpstreamTls::new().with_name("not a name!"),
            Err(UpstreamTlsError::Name(_))
        ));
        assert!(UpstreamTls::new().with_name("10.0.0.1").is_ok());
        let ca = ca();
        let (cert, key) = leaf(&["client"], &ca);
        let other = rcgen::KeyPair::generate().unwrap();
        assert!(matches!(
            UpstreamTls::new().with_client_cert_pem(cert.pem().as_bytes(), other.serialize_pem().as_bytes()),
            Err(UpstreamTlsError::KeyMismatch)
        ));
        let mtls = UpstreamTls::new()
            .with_client_cert_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .unwrap();
        assert!(mtls.has_client_cert());
        assert!(mtls
            .client_config(Alpn::Http1)
            .client_auth_cert_resolver
            .has_certs());
    }

    #[test]
    fn verification_off_accepts_any_certificate() {
        let (cert, _) = leaf(&["elsewhere.example"], &ca());
        assert!(verify(&UpstreamTls::new(), &[cert.der()]).is_ok());
    }

    #[test]
    fn verification_on_checks_the_ca_and_the_name() {
        let ca = ca();
        let (cert, _) = leaf(&["api.internal"], &ca);
        assert!(verify(&verifying(&ca, "api.internal"), &[cert.der()]).is_ok());
        let wrong_name = verify(&verifying(&ca, "other.internal"), &[cert.der()]).unwrap_err();
        assert!(
            matches!(
                wrong_name,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{wrong_name:?}"
        );
        // (Same subject name, other key: the signature is what fails.)
        let wrong_ca = verify(&verifying(&self::ca(), "api.internal"), &[cert.der()]).unwrap_err();
        assert!(
            matches!(
                wrong_ca,
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature
                )
            ),
            "{wrong_ca:?}"
        );
        // The default name is ingress-nginx's upstream name, which no real certificate carries.
        let default_name = UpstreamTls::new()
            .with_verify(true)
            .with_ca_pem(ca.pem().as_bytes())
            .unwrap();
        assert!(verify(&default_name, &[cert.der()]).is_err());
        // Verification on with no CA trusts nothing.
        let no_ca = UpstreamTls::new()
            .with_verify(true)
            .with_name("api.internal")
            .unwrap();
        assert!(verify(&no_ca, &[cert.der()]).is_err());
    }

    #[test]
    fn verify_depth_counts_intermediates_between_the_leaf_and_the_ca() {
        let root = ca();
        let mid1 = intermediate(&root);
        let mid2 = intermediate(&mid1);
        let (deep, _) = leaf(&["deep.internal"], &mid2);
        let tls = |depth| verifying(&root, "deep.internal").with_verify_depth(depth);
        assert!(verify(&tls(1), &[deep.der(), mid2.der(), mid1.der()]).is_err());
        assert!(verify(&tls(2), &[deep.der(), mid2.der(), mid1.der()]).is_ok());
        // The default depth (1) allows one intermediate.
        let (one, _) = leaf(&["deep.internal"], &mid1);
        assert!(verify(&tls(DEFAULT_VERIFY_DEPTH), &[one.der(), mid1.der()]).is_ok());
        // A certificate the server sends but the path does not need does not count.
        assert!(verify(&tls(1), &[one.der(), mid1.der(), mid2.der()]).is_ok());
        // Depth 0: signed by the CA itself.
        let (direct, _) = leaf(&["deep.internal"], &root);
        assert!(verify(&tls(0), &[direct.der()]).is_ok());
        assert!(verify(&tls(0), &[one.der(), mid1.der()]).is_err());
    }

    #[test]
    fn protocols_know_their_transport() {
        use UpstreamProtocol::*;
        assert!(!Http1.is_tls() && !Http1.is_http2());
        assert!(Https.is_tls() && !Https.is_http2());
        assert!(!H2c.is_tls() && H2c.is_http2());
        assert!(H2.is_tls() && H2.is_http2());
    }
}
