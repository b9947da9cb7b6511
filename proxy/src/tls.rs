//! TLS data: certificates parsed from PEM and the per-snapshot SNI table. The resolver that reads
//! the current snapshot on every handshake belongs to the listeners (`server`).

use std::{collections::HashMap, fmt, sync::Arc};

use rustls::{crypto::ring::sign::any_supported_type, sign::CertifiedKey};
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
    exact: HashMap<String, TlsCert>,
    /// `*.example.com` stored under `example.com`.
    wildcard: HashMap<String, TlsCert>,
    default: Option<TlsCert>,
}

// === impl CertTable ===

impl CertTable {
    /// Adds a certificate for a host as written in `spec.tls[].hosts` (`foo.example.com` or
    /// `*.example.com`, any case). The first certificate for a name wins; returns false when the name
    /// was already taken.
    pub fn insert(&mut self, host: &str, cert: TlsCert) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let (map, key) = match host.strip_prefix("*.") {
            Some(parent) => (&mut self.wildcard, parent.to_string()),
            None => (&mut self.exact, host),
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
            Some(parent) => self.wildcard.get(parent),
            None => self.exact.get(&host),
        }
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
        if let Some(c) = self.exact.get(name) {
            return Some(c);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }

    /// Names with a certificate (`*.` prefix for wildcards), sorted, for `/debug/routes`.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.exact.keys().cloned().collect();
        v.extend(self.wildcard.keys().map(|k| format!("*.{k}")));
        v.sort();
        v
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
