//! Processor 4: `spec.tls` → the SNI certificate table, and the default certificate.
//!
//! A host's certificate comes from the oldest of our Ingresses that lists the host with a usable
//! Secret. When an Ingress's Secret is missing or broken, its hosts that no other Ingress serves
//! keep the certificate they had in the previous snapshot: deleting or botching a Secret must not
//! turn working HTTPS into a certificate error for every client at once.

use std::sync::Arc;

use gantry_proxy::{
    tls::{ClientCaTable, SniCerts},
    RouteTable, TlsCert,
};
use k8s_openapi::api::core::v1::Secret;

use super::{class::IngressFacts, hosts::host_spelling, Build, OurIngress, Problem};
use crate::{
    diagnostic::{ObjectKind, ObjectRef},
    manifests::TLS_SECRET_TYPE,
    store::{ObjectKey, ObjectStore},
};

/// Why a Secret gave no certificate.
#[derive(Clone, Debug)]
pub(super) enum SecretError {
    NotFound,
    Invalid(String),
}

/// A `spec.tls` entry whose Secret gave no certificate, waiting for the carry-over pass.
struct Failed<'a> {
    object: &'a ObjectRef,
    secret: ObjectKey,
    error: SecretError,
    hosts: Vec<String>,
}

/// The last build's certificates by SNI name, with what they were made from: the facts of every
/// Ingress with `spec.tls` entries, oldest first. Kept only from a build where every entry's
/// Secret gave a certificate (then the previous snapshot's certificates played no part).
pub(super) struct SniInputs {
    ingresses: Vec<Arc<IngressFacts>>,
    sni: Arc<SniCerts>,
}

pub(super) fn certificates(b: &mut Build<'_>, ours: &[OurIngress<'_>]) {
    let mut with_tls = Vec::new();
    for ing in ours {
        if ing.facts.tls_entries.is_empty() {
            continue;
        }
        with_tls.push(ing.facts.clone());
        for entry in &ing.facts.tls_entries {
            for (host, why) in &entry.invalid {
                b.report(
                    ing.object(),
                    Problem::InvalidHost {
                        host: host.clone(),
                        why,
                        skipped: "the TLS host",
                    },
                );
            }
        }
    }
    // The same entries in the same order, and no Secret changed: the same certificates by name.
    let last = b.cache.sni.take();
    if let Some(last) = last.filter(|last| {
        b.unchanged.secrets
            && b.cache.certs.may_skip_stamps()
            && last.ingresses.len() == with_tls.len()
            && last
                .ingresses
                .iter()
                .zip(&with_tls)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a.tls_entries == b.tls_entries)
    }) {
        // The certificates are held by the table; their cache entries are kept unlooked-at.
        b.cache.certs.skip_stamps();
        b.certs.set_sni(last.sni.clone());
        b.cache.sni = Some(SniInputs {
            ingresses: with_tls,
            sni: last.sni,
        });
        default_certificate(b);
        return;
    }

    let mut failed = Vec::new();
    // Pass 1, oldest Ingress first: every usable certificate. The first one for a host keeps it.
    for ing in ours {
        for entry in &ing.facts.tls_entries {
            // Without a Secret, the hosts are served the default certificate (nothing to insert).
            let Some(secret) = &entry.secret else {
                continue;
            };
            if entry.hosts.is_empty() {
                continue;
            }
            match b.certificate(secret) {
                Ok(cert) => {
                    for host in &entry.hosts {
                        b.certs.insert(host, cert.clone());
                    }
                }
                Err(error) => failed.push(Failed {
                    object: ing.object(),
                    secret: secret.clone(),
                    error,
                    hosts: entry.hosts.clone(),
                }),
            }
        }
    }

    if failed.is_empty() {
        b.cache.sni = Some(SniInputs {
            ingresses: with_tls,
            sni: b.certs.sni().clone(),
        });
    }

    // Pass 2: hosts of broken entries that no usable certificate claimed keep their last good one.
    for Failed {
        object,
        secret,
        error,
        hosts,
    } in failed
    {
        let (mut kept, mut served, mut default) = (Vec::new(), Vec::new(), Vec::new());
        for host in hosts {
            if b.certs.get(&host).is_some() {
                served.push(host);
            } else if let Some(previous) = b.previous.certs.get(&host) {
                b.certs.insert(&host, previous.clone());
                kept.push(host);
            } else {
                default.push(host);
            }
        }
        let mut outcome = Vec::new();
        if !kept.is_empty() {
            outcome.push(format!("{} keep(s) the last good certificate", kept.join(", ")));
        }
        if !served.is_empty() {
            outcome.push(format!(
                "{} use(s) another Ingress's certificate",
                served.join(", ")
            ));
        }
        if !default.is_empty() {
            outcome.push(format!("{} get(s) the default certificate", default.join(", ")));
        }
        let outcome = outcome.join("; ");
        let secret = secret.to_string();
        let problem = match error {
            SecretError::NotFound => Problem::TlsSecretNotFound { secret, outcome },
            SecretError::Invalid(error) => Problem::TlsSecretInvalid {
                secret,
                error,
                outcome,
            },
        };
        b.report(object, problem);
    }

    default_certificate(b);
}

/// `--default-ssl-certificate` (or the ProxyConfig's `defaultCertificate`) when it loads, else the
/// fallback certificate generated at start.
fn default_certificate(b: &mut Build<'_>) {
    let mut cert = b.opts.fallback_certificate.clone();
    if let Some(key) = &b.settings.default_ssl_certificate.clone() {
        let secret = key.to_string();
        let outcome = "the generated fallback certificate is the default certificate".to_string();
        let uid = b.store.secrets().get(key).and_then(|s| s.metadata.uid.as_deref());
        let object = ObjectRef::new(ObjectKind::Secret, key, uid);
        match b.certificate(key) {
            Ok(named) => cert = named,
            Err(SecretError::NotFound) => b.report(&object, Problem::TlsSecretNotFound { secret, outcome }),
            Err(SecretError::Invalid(error)) => b.report(
                &object,
                Problem::TlsSecretInvalid {
                    secret,
                    error,
                    outcome,
                },
            ),
        }
    }
    b.certs.set_default(cert);
}

/// The certificate in a `kubernetes.io/tls` Secret. Reads `data`, and `stringData` as the API
/// server would have merged it (hand-written files use it; it wins over `data`).
pub(super) fn load(store: &ObjectStore, key: &ObjectKey) -> Result<TlsCert, SecretError> {
    let secret = store
        .secret(&key.namespace, &key.name)
        .ok_or(SecretError::NotFound)?;
    let ty = secret.type_.as_deref().unwrap_or("Opaque");
    if ty != TLS_SECRET_TYPE {
        return Err(SecretError::Invalid(format!(
            "type is {ty}, not {TLS_SECRET_TYPE}"
        )));
    }
    let cert = field(secret, "tls.crt").ok_or_else(|| SecretError::Invalid("no tls.crt".into()))?;
    let key = field(secret, "tls.key").ok_or_else(|| SecretError::Invalid("no tls.key".into()))?;
    TlsCert::from_pem(cert, key).map_err(|e| SecretError::Invalid(e.to_string()))
}

fn field<'s>(secret: &'s Secret, name: &str) -> Option<&'s [u8]> {
    let string = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(name))
        .map(String::as_bytes);
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(name))
        .map(|b| b.0.as_slice());
    string.or(data).filter(|v| !v.is_empty())
}

/// Which SNI names request a client certificate, and for which CA: every host of the route table
/// (aliases included) with the CA of its routes' client certificate authentication, when it asks
/// for a certificate (`auth-tls-verify-client` other than `off`), else none. Every route of a host
/// carries the same (`rules` applies it per host), except routes that fail closed, which carry
/// none and answer 503 anyway. The data plane keeps the table only when some host has a CA.
pub(super) fn client_cas(routes: &RouteTable) -> ClientCaTable {
    let mut table = ClientCaTable::default();
    let requests = |route: &gantry_proxy::Route| {
        route
            .policies
            .client_cert
            .as_ref()
            .is_some_and(|c| c.verify.requests_certificate())
    };
    // The data plane keeps only a table where some host requests a certificate
    // (`CertTable::set_client_cas`); without one, there is nothing to list.
    if !routes.iter_unordered().any(|(_, route)| requests(route)) {
        return table;
    }
    for (host, route) in routes.iter_unordered() {
        let ca = route
            .policies
            .client_cert
            .as_ref()
            .filter(|c| c.verify.requests_certificate())
            .map(|c| c.ca.clone());
        table.insert(host_spelling(host).as_deref(), ca);
    }
    table
}
