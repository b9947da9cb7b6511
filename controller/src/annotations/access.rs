//! Access control and authentication: `allowlist-source-range` (and its older name
//! `whitelist-source-range`), `denylist-source-range`, `auth-type: basic` with `auth-secret`,
//! `auth-secret-type` and `auth-realm`, and `satisfy`.
//!
//! Every problem here is a security problem: the catalogue marks these annotations `security`, so
//! an `Invalid` or `Refused` outcome makes the Ingress fail closed (see `Parser::finish`).

use std::{collections::BTreeMap, sync::Arc};

use gantry_proxy::policy::{BasicAuth, Htpasswd, SourceRanges};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Secret;

use super::{
    values::{is_basic_chars, is_chars_with_space, parse_cidrs, split_key},
    Outcome, Parser, ReferenceKind, ReferenceProblem, References,
};

/// The htpasswd key of an `auth-file` Secret.
const AUTH_KEY: &str = "auth";

pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) {
    let allow = source_ranges(p, "allowlist-source-range", Some("whitelist-source-range"));
    let deny = source_ranges(p, "denylist-source-range", None);
    if !allow.is_empty() || !deny.is_empty() {
        p.out.policies.source_ranges = Some(Arc::new(SourceRanges { allow, deny }));
    }
    basic_auth(p);
    satisfy(p);
}

/// One address list. ingress-nginx reads the alias only when the annotation itself is absent or
/// empty; a list that is present but empty, or has one item that is not an address or CIDR, denies
/// the location (503), which is what failing closed does here too.
fn source_ranges<R: References>(
    p: &mut Parser<'_, R>,
    name: &'static str,
    alias: Option<&'static str>,
) -> Vec<IpNet> {
    let main = p.raw(name);
    let alias_value = alias.and_then(|a| p.raw(a).map(|v| (a, v)));
    let (used, value) = match (main, alias_value) {
        (Some(v), alias_value) if !v.is_empty() => {
            if let Some((a, _)) = alias_value {
                p.report(
                    a,
                    Outcome::Ignored(format!("{name} takes precedence, as in ingress-nginx")),
                );
            }
            (name, v)
        }
        (main, Some((a, v))) if !v.is_empty() => {
            if main.is_some() {
                p.report(
                    name,
                    Outcome::Ignored(format!("empty value: {a} applies, as in ingress-nginx")),
                );
            }
            (a, v)
        }
        (None, None) => return Vec::new(),
        (main, alias_value) => {
            // Present, and empty (both, if both are there).
            let why = "empty value: ingress-nginx denies every request (503), and so does Gantry";
            if main.is_some() {
                p.report(name, Outcome::Invalid(why.into()));
            }
            if let Some((a, _)) = alias_value {
                p.report(a, Outcome::Invalid(why.into()));
            }
            return Vec::new();
        }
    };
    match parse_cidrs(value) {
        Ok(nets) => {
            p.report(used, Outcome::Honoured);
            nets
        }
        Err(e) => {
            p.report(
                used,
                Outcome::Invalid(format!("{e}; expected comma-separated IP addresses or CIDRs")),
            );
            Vec::new()
        }
    }
}

/// `auth-type: basic`. ingress-nginx reads the htpasswd list from the Secret `auth-secret`
/// (`name` or `namespace/name`, the namespace only the Ingress's own unless the admin allowed
/// cross-namespace references, which is off by default): key `auth` for `auth-file` (default), one
/// key per user for `auth-map`. A missing or broken Secret denies the location (503 in its e2e
/// tests), and so does Gantry. An `auth` key that has no valid line is a 401 for everybody in
/// ingress-nginx (its e2e test "invalid content"); Gantry fails closed with 503 and says why.
fn basic_auth<R: References>(p: &mut Parser<'_, R>) {
    const NAMES: [&str; 3] = ["auth-secret", "auth-secret-type", "auth-realm"];
    let auth_type = p.value("auth-type");
    match auth_type {
        Some("basic") => {}
        Some("digest") => {
            p.report(
                "auth-type",
                Outcome::Refused("digest authentication is not supported: use auth-type: basic".into()),
            );
            p.report_all(&NAMES, || Outcome::Ignored("auth-type is refused".into()));
            return;
        }
        Some(_) => {
            p.report("auth-type", Outcome::Invalid("expected basic or digest".into()));
            p.report_all(&NAMES, || Outcome::Ignored("auth-type is invalid".into()));
            return;
        }
        None => {
            // ingress-nginx applies no authentication without auth-type. A Secret of passwords
            // named without it is taken as a protection asked for and not understood: it fails
            // closed rather than be served open. The realm and type alone are harmless.
            if p.is_present("auth-secret") {
                p.report(
                    "auth-secret",
                    Outcome::Invalid("auth-secret without auth-type: basic; the Ingress fails closed rather than serve without the passwords it names".into()),
                );
            }
            p.report_all(&["auth-secret-type", "auth-realm"], || {
                Outcome::Ignored("has no effect without auth-type, as in ingress-nginx".into())
            });
            return;
        }
    }
    let map = match p.value("auth-secret-type") {
        None => false,
        Some("auth-file") => {
            p.report("auth-secret-type", Outcome::Honoured);
            false
        }
        Some("auth-map") => {
            p.report("auth-secret-type", Outcome::Honoured);
            true
        }
        Some(_) => {
            p.report(
                "auth-secret-type",
                Outcome::Invalid("expected auth-file or auth-map".into()),
            );
            p.report_all(&["auth-secret", "auth-realm"], || {
                Outcome::Ignored("auth-secret-type is invalid".into())
            });
            return;
        }
    };

    // The realm: ingress-nginx's `CharsWithSpace`; none is an empty realm.
    let realm = match p.raw("auth-realm") {
        None => "",
        Some(v) if is_chars_with_space(v) => {
            p.report("auth-realm", Outcome::Honoured);
            v
        }
        Some(_) => {
            p.report(
                "auth-realm",
                Outcome::Invalid("expected letters, digits, spaces and -._~/:".into()),
            );
            p.report_all(&["auth-secret"], || {
                Outcome::Ignored("auth-realm is invalid".into())
            });
            return;
        }
    };

    let Some(value) = p.raw("auth-secret").filter(|v| !v.is_empty()) else {
        if p.is_present("auth-secret") {
            p.report(
                "auth-secret",
                Outcome::Invalid("empty value: auth-type: basic needs a Secret".into()),
            );
        } else {
            p.report(
                "auth-type",
                Outcome::Invalid("auth-type: basic without auth-secret".into()),
            );
        }
        return;
    };
    p.report("auth-type", Outcome::Honoured);
    let own = p.namespace();
    let Some((ns, name)) = split_key(value).filter(|_| is_basic_chars(value)) else {
        p.report(
            "auth-secret",
            Outcome::Invalid("expected a Secret name or namespace/name".into()),
        );
        return;
    };
    let ns = ns.unwrap_or(own);
    if ns != own {
        p.report(
            "auth-secret",
            Outcome::Refused(format!(
                "the Secret is in namespace {ns}, not the Ingress's ({own}): cross-namespace Secrets are not allowed (ingress-nginx's default)"
            )),
        );
        return;
    }
    let object = format!("{ns}/{name}");
    let Some(secret) = p.refs.secret(ns, name) else {
        p.report_reference(
            "auth-secret",
            format!("Secret {object} not found"),
            ReferenceProblem {
                kind: ReferenceKind::Secret,
                object,
                missing: true,
            },
        );
        return;
    };
    let users = if map { auth_map(secret) } else { auth_file(secret) };
    let auth = users
        .and_then(|users| BasicAuth::new(realm, Arc::new(users)).map_err(|e| format!("auth-realm: {e}")));
    match auth {
        Ok(auth) => {
            p.report("auth-secret", Outcome::Honoured);
            p.out.policies.basic_auth = Some(Arc::new(auth));
        }
        Err(why) => p.report_reference(
            "auth-secret",
            format!("Secret {object}: {why}"),
            ReferenceProblem {
                kind: ReferenceKind::Secret,
                object,
                missing: false,
            },
        ),
    }
}

/// An `auth-file` Secret: an htpasswd file in the key `auth`.
fn auth_file(secret: &Secret) -> Result<Htpasswd, String> {
    let entries = secret_entries(secret);
    let Some(bytes) = entries.get(AUTH_KEY) else {
        return Err(format!(
            "no key {AUTH_KEY:?} (auth-secret-type auth-file wants an htpasswd file there)"
        ));
    };
    let text = std::str::from_utf8(bytes).map_err(|_| format!("key {AUTH_KEY:?} is not UTF-8 text"))?;
    Htpasswd::parse(text).map_err(|e| format!("key {AUTH_KEY:?}: {e}"))
}

/// An `auth-map` Secret: one key per user, each value a password hash.
fn auth_map(secret: &Secret) -> Result<Htpasswd, String> {
    let entries = secret_entries(secret);
    let mut pairs = Vec::with_capacity(entries.len());
    for (user, hash) in &entries {
        let hash =
            std::str::from_utf8(hash).map_err(|_| format!("the hash of user {user:?} is not UTF-8 text"))?;
        pairs.push((user.as_str(), hash));
    }
    Htpasswd::from_pairs(pairs).map_err(|e| e.to_string())
}

/// A Secret's keys and values, `stringData` over `data` (what the API server would store; a
/// manifest file may still carry `stringData`).
pub(super) fn secret_entries(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut entries: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        entries.insert(k.clone(), v.as_bytes().to_vec());
    }
    entries
}

/// `satisfy`: ingress-nginx's default is nginx's `all`. Gantry always checks every access policy;
/// `any` is only a difference when there are two to choose between.
fn satisfy<R: References>(p: &mut Parser<'_, R>) {
    let Some(v) = p.value("satisfy") else { return };
    let both = p.out.policies.source_ranges.is_some() && p.out.policies.basic_auth.is_some();
    let outcome = match v {
        "all" => Outcome::Honoured,
        "any" if both => Outcome::Difference(
            "applied as all, which is stricter: a client must pass both the address list and the password"
                .into(),
        ),
        "any" => Outcome::Honoured,
        _ => Outcome::Invalid("expected any or all".into()),
    };
    p.report("satisfy", outcome);
}
