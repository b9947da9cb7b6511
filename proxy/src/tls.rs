//! TLS data: certificates parsed from PEM and the per-snapshot SNI table. The resolver that reads
//! the current snapshot on every handshake belongs to the listeners (`server`).

use std::{collections::HashMap, fmt, sync::Arc};

use rustls::{crypto::ring::sign::any_supported_type, sign::CertifiedKey};

use crate::client_auth::ClientCa;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate PEM holds no `CERTIFICATE` block or does not parse.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The key PEM holds no PKCS#1, PKCS#8 or SEC1 key, or does not parse.
    #[error("private key: {0}")]
    PrivateKey(String),
    /// The key type is not RSA, ECDSA or Ed25519.
    #[error("unsupported private key: {0}")]
    UnsupportedKey(#[source] rustls::Error),
    /// The key does not belong to the certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// Generating the fallback certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate chain with its signing key, ready for handshakes.
#[derive(Clone)]
pub struct TlsCert {
    pub key: Arc<CertifiedKey>,
}

/// Two certificates are equal when their chains are: a key that did not match its certificate was
/// refused when parsed, so the same chain means the same key.
impl PartialEq for TlsCert {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.key, &other.key) || self.key.cert == other.key.cert
    }
}

impl Eq for TlsCert {}

impl fmt::Debug for TlsCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCert")
            .field("chain_len", &self.key.cert.len())
            .finish()
    }
}

// === impl TlsCert ===

impl TlsCert {
    /// Parses a PEM chain (leaf first) and a PEM private key (PKCS#1, PKCS#8 or SEC1; RSA, ECDSA or
    /// Ed25519), as found in a `kubernetes.io/tls` Secret's `tls.crt` and `tls.key`.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        if chain.is_empty() {
            return Err(TlsError::Certificate("no CERTIFICATE block found".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::PrivateKey(e.to_string()))?;
        let signer = any_supported_type(&key).map_err(TlsError::UnsupportedKey)?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            Ok(()) => {}
            // Keys whose public half rustls cannot extract are accepted as they are.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => return Err(TlsError::KeyMismatch),
        }
        Ok(Self {
            key: Arc::new(certified),
        })
    }

    /// The leaf certificate's `notAfter` as a Unix time; `None` when it does not parse as X.509
    /// (rustls took it as opaque bytes).
    pub fn not_after(&self) -> Option<i64> {
        let leaf = self.key.cert.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    /// A self-signed ECDSA P-256 certificate for the given names, used when no default certificate
    /// is configured.
    pub fn self_signed(names: &[&str]) -> Result<Self, TlsError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)?;
        let key = PrivateKeyDer::try_from(signing_key.serialize_der())
            .map_err(|e| TlsError::PrivateKey(e.to_string()))?;
        let signer = any_supported_type(&key).map_err(TlsError::UnsupportedKey)?;
        Ok(Self {
            key: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)),
        })
    }
}

/// SNI name → certificate for one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertTable {
    /// Shared with the next snapshot when its certificates for SNI names are the same
    /// ([`CertTable::sni`], [`CertTable::set_sni`]): a build where no `spec.tls` entry and no
    /// Secret changed hands the last table on instead of filling ten thousand entries again.
    sni: Arc<SniCerts>,
    default: Option<TlsCert>,
    /// Which handshakes request a client certificate, and for which CA.
    client_cas: ClientCaTable,
}

/// SNI name → the CA bundle a client certificate is requested for (`auth-tls-secret`), per host as
/// in ingress-nginx (its `ssl_verify_client` is a directive of the nginx server, one per host).
///
/// Empty unless some host has client authentication: then the listeners never look at it and every
/// handshake is exactly what it is without the feature. When some host has it, the table mirrors
/// the route table's hosts, each with its CA or `None`, and is looked up the way a request's host
/// is routed (exact name, then the wildcard for its parent domain, then the rules without host):
/// so an exact host without client authentication below a wildcard with it never asks for a
/// certificate. A handshake without SNI is judged by the rules without host.
///
/// The table only decides what the handshake asks for. Whether a request may pass is decided per
/// request by the route's `ClientCertAuth`, which also refuses a request whose connection was
/// verified for another CA (see `policy::client_cert`), so a mistake here can cost a
/// CertificateRequest, never a check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCaTable {
    exact: HashMap<String, Option<Arc<ClientCa>>>,
    wildcard: HashMap<String, Option<Arc<ClientCa>>>,
    any: Option<Arc<ClientCa>>,
}

// === impl ClientCaTable ===

impl ClientCaTable {
    /// [`CertTable::set_client_cas`] stores only active tables, so a non-empty one is active.
    #[inline]
    fn is_active_fast(&self) -> bool {
        self.any.is_some() || !self.exact.is_empty() || !self.wildcard.is_empty()
    }

    /// Adds a routed host as `HostMatch` spells it: `foo.example.com`, `*.example.com`, or `None`
    /// for the rules without host, with its CA or `None` (the host requests no certificate). The
    /// first CA given for a host stays; `None` never replaces one (a host's routes that fail
    /// closed carry none).
    pub fn insert(&mut self, host: Option<&str>, ca: Option<Arc<ClientCa>>) {
        let Some(host) = host else {
            if self.any.is_none() {
                self.any = ca;
            }
            return;
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let (map, key) = match host.strip_prefix("*.") {
            Some(parent) => (&mut self.wildcard, parent.to_string()),
            None => (&mut self.exact, host),
        };
        let entry = map.entry(key).or_insert(None);
        if entry.is_none() {
            *entry = ca;
        }
    }

    /// Whether any host requests a certificate.
    pub fn is_active(&self) -> bool {
        self.any.is_some()
            || self.exact.values().any(Option::is_some)
            || self.wildcard.values().any(Option::is_some)
    }

    /// The CA a handshake with this SNI (lowercase, without trailing dot) requests a certificate
    /// for, if any.
    pub fn lookup(&self, sni: Option<&str>) -> Option<&Arc<ClientCa>> {
        let Some(name) = sni else {
            return self.any.as_ref();
        };
        if let Some(entry) = self.exact.get(name) {
            return entry.as_ref();
        }
        if let Some((label, parent)) = name.split_once('.') {
            if !label.is_empty() {
                if let Some(entry) = self.wildcard.get(parent) {
                    return entry.as_ref();
                }
            }
        }
        self.any.as_ref()
    }
}

/// The certificates of a [`CertTable`] by SNI name.
#[derive(Clone, Debug, Default, Eq)]
pub struct SniCerts {
    exact: HashMap<String, TlsCert>,
    /// `*.example.com` stored under `example.com`.
    wildcard: HashMap<String, TlsCert>,
}

impl PartialEq for SniCerts {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other) || (self.exact == other.exact && self.wildcard == other.wildcard)
    }
}

// === impl CertTable ===

impl CertTable {
    /// Adds a certificate for a host as written in `spec.tls[].hosts` (`foo.example.com` or
    /// `*.example.com`, any case). The first certificate for a name wins; returns false when the name
    /// was already taken.
    pub fn insert(&mut self, host: &str, cert: TlsCert) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let sni = Arc::make_mut(&mut self.sni);
        let (map, key) = match host.strip_prefix("*.") {
            Some(parent) => (&mut sni.wildcard, parent.to_string()),
            None => (&mut sni.exact, host),
        };
        match map.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(cert);
                true
            }
        }
    }

    /// The certificate stored for a host exactly as it was inserted (`*.example.com` for a
    /// wildcard), to carry a last good certificate over into the next snapshot.
    pub fn get(&self, host: &str) -> Option<&TlsCert> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match host.strip_prefix("*.") {
            Some(parent) => self.sni.wildcard.get(parent),
            None => self.sni.exact.get(&host),
        }
    }

    /// The certificates by SNI name, to hand on to the next table when they stay the same.
    pub fn sni(&self) -> &Arc<SniCerts> {
        &self.sni
    }

    /// Replaces the certificates by SNI name with `sni` (another table's, see [`Self::sni`]).
    pub fn set_sni(&mut self, sni: Arc<SniCerts>) {
        self.sni = sni;
    }

    /// The certificate served when SNI is absent or names no configured host.
    pub fn set_default(&mut self, cert: TlsCert) {
        self.default = Some(cert);
    }

    pub fn default_cert(&self) -> Option<&TlsCert> {
        self.default.as_ref()
    }

    /// Whether a host (lowercase, as in the Host header) has a certificate of its own, exact or
    /// wildcard.
    pub fn has_host(&self, host: &str) -> bool {
        self.lookup(host).is_some()
    }

    /// The certificate for an SNI name: exact first, then the wildcard for its parent domain.
    pub fn lookup(&self, name: &str) -> Option<&TlsCert> {
        if let Some(c) = self.sni.exact.get(name) {
            return Some(c);
        }
        let (_, parent) = name.split_once('.')?;
        self.sni.wildcard.get(parent)
    }

    /// Names with a certificate (`*.` prefix for wildcards), sorted, for `/debug/routes`.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.sni.exact.keys().cloned().collect();
        v.extend(self.sni.wildcard.keys().map(|k| format!("*.{k}")));
        v.sort();
        v
    }

    /// Every name with its certificate (`*.` prefix for wildcards), in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (String, &TlsCert)> + '_ {
        let exact = self.sni.exact.iter().map(|(k, c)| (k.clone(), c));
        exact.chain(self.sni.wildcard.iter().map(|(k, c)| (format!("*.{k}"), c)))
    }

    pub fn len(&self) -> usize {
        self.sni.exact.len() + self.sni.wildcard.len()
    }

    /// Sets which handshakes request a client certificate. A table with no CA is stored empty, so
    /// that [`CertTable::client_auth_active`] is false.
    pub fn set_client_cas(&mut self, table: ClientCaTable) {
        self.client_cas = if table.is_active() {
            table
        } else {
            ClientCaTable::default()
        };
    }

    /// Whether any host requests a client certificate: when not, the listeners accept TLS exactly
    /// as without the feature.
    #[inline]
    pub fn client_auth_active(&self) -> bool {
        self.client_cas.is_active_fast()
    }

    /// The CA a handshake with this SNI requests a client certificate for (see [`ClientCaTable`]).
    pub fn client_ca(&self, sni: Option<&str>) -> Option<&Arc<ClientCa>> {
        self.client_cas.lookup(sni)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(name: &str) -> Arc<ClientCa> {
        let root = crate::client_auth::tests::ca(name);
        Arc::new(ClientCa::from_pem(root.pem().as_bytes(), None, 1).unwrap())
    }

    #[test]
    fn client_cas_are_looked_up_as_hosts_are_routed() {
        let (wild, exact, any) = (ca("wild"), ca("exact"), ca("any"));
        let mut t = ClientCaTable::default();
        t.insert(Some("*.example.com"), Some(wild.clone()));
        t.insert(Some("Secure.Example.org"), Some(exact.clone()));
        // An exact host without client authentication below the wildcard with it.
        t.insert(Some("open.example.com"), None);
        let mut certs = CertTable::default();
        certs.set_client_cas(t.clone());
        assert!(certs.client_auth_active());
        assert_eq!(certs.client_ca(Some("a.example.com")), Some(&wild));
        assert_eq!(certs.client_ca(Some("secure.example.org")), Some(&exact));
        assert_eq!(certs.client_ca(Some("open.example.com")), None);
        assert_eq!(certs.client_ca(Some("example.com")), None);
        assert_eq!(certs.client_ca(None), None);
        // Rules without host: SNI-less handshakes and unknown names.
        t.insert(None, Some(any.clone()));
        certs.set_client_cas(t);
        assert_eq!(certs.client_ca(None), Some(&any));
        assert_eq!(certs.client_ca(Some("unknown.test")), Some(&any));
        assert_eq!(certs.client_ca(Some("open.example.com")), None);
    }

    #[test]
    fn a_table_without_any_ca_is_not_active() {
        let mut t = ClientCaTable::default();
        t.insert(Some("a.example"), None);
        t.insert(None, None);
        let mut certs = CertTable::default();
        certs.set_client_cas(t);
        assert!(!certs.client_auth_active());
        assert_eq!(certs, CertTable::default());
    }
}
