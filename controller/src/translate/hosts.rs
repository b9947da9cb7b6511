//! Reading an Ingress's hosts and paths into route-table matches.

use std::net::Ipv4Addr;

use gantry_proxy::{HostMatch, PathMatch};

/// A rule's host as a match: lowercase; `*.example.com` → `Wildcard("example.com")`; no host (or
/// `""`) → `Any`. Refuses what the API server would refuse (so a hand-written file fails the same
/// way a `kubectl apply` would): ports, `*` anywhere but as the whole first label, IP addresses and
/// anything that is not a DNS-1123 subdomain.
pub(crate) fn parse_host(host: Option<&str>) -> Result<HostMatch, &'static str> {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Ok(HostMatch::Any);
    };
    let host = host.to_ascii_lowercase();
    if host.contains(':') {
        return Err("has a port or is an IPv6 address; a host is a DNS name without port");
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(parent) => (true, parent),
        None => (false, host.as_str()),
    };
    if name.contains('*') {
        return Err("has '*' other than as the whole first label");
    }
    if name.parse::<Ipv4Addr>().is_ok() {
        return Err("is an IP address; a host is a DNS name");
    }
    if !is_dns_subdomain(name) {
        return Err("is not a valid DNS name");
    }
    Ok(if wildcard {
        HostMatch::Wildcard(name.to_string())
    } else {
        HostMatch::Exact(name.to_string())
    })
}

/// The host as an Ingress spells it (`a.example`, `*.example`), `None` for `Any`. This is the form
/// `spec.tls[].hosts` uses, so it is also what decides `ssl_redirect`. A Gateway API wildcard
/// (any depth) is spelled as its object writes it, `*.example`.
pub(crate) fn host_spelling(host: &HostMatch) -> Option<String> {
    match host {
        HostMatch::Exact(h) => Some(h.clone()),
        HostMatch::Wildcard(parent) | HostMatch::WildcardAnyDepth(parent) => Some(format!("*.{parent}")),
        HostMatch::Any => None,
    }
}

/// Whether a host has TLS, given which names some `spec.tls` lists (`listed`, lowercase, as
/// spelled there: `*.example` for a wildcard). A rule without host has no name to have a
/// certificate for.
pub(super) fn is_tls_host(host: &HostMatch, listed: impl Fn(&str) -> bool) -> bool {
    match host {
        HostMatch::Exact(h) => listed(h),
        HostMatch::Any => false,
        _ => host_spelling(host).is_some_and(|h| listed(&h)),
    }
}

/// The host for messages.
pub(super) fn host_label(host: &HostMatch) -> String {
    host_spelling(host).unwrap_or_else(|| "(any host)".to_string())
}

/// A rule path as a match. A missing or empty path is `/` (what the API defaults it to).
/// `ImplementationSpecific` is read as `Prefix`: Gantry has no matching of its own, and Prefix is
/// what most controllers do with it. An empty `pathType` (the API requires one; a hand-written file
/// may omit it) is read as `ImplementationSpecific`.
pub(super) fn parse_path(path: Option<&str>, path_type: &str) -> Result<PathMatch, String> {
    let path = path.filter(|p| !p.is_empty()).unwrap_or("/");
    if !path.starts_with('/') {
        return Err("does not start with '/'".to_string());
    }
    match path_type {
        "Exact" => Ok(PathMatch::Exact(path.to_string())),
        "Prefix" | "ImplementationSpecific" | "" => Ok(PathMatch::Prefix(path.to_string())),
        other => Err(format!(
            "has unknown pathType {other:?} (Exact, Prefix or ImplementationSpecific)"
        )),
    }
}

/// `Prefix /foo`, for messages.
pub(super) fn path_label(path: &PathMatch) -> String {
    match path {
        PathMatch::Exact(p) => format!("Exact {p}"),
        PathMatch::Prefix(p) => format!("Prefix {p}"),
        PathMatch::Regex(p) => format!("Regex {p}"),
        PathMatch::FullRegex(p) => format!("RegularExpression {p}"),
    }
}

/// RFC 1123 subdomain, as Kubernetes validates hosts: at most 253 characters, dot-separated labels of
/// 1 to 63 `[a-z0-9-]` that start and end with a letter or digit.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            (1..=63).contains(&bytes.len())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_lowercased_and_wildcards_keep_their_parent_domain() {
        let cases: &[(Option<&str>, HostMatch)] = &[
            (None, HostMatch::Any),
            (Some(""), HostMatch::Any),
            (
                Some("Foo.Example.COM"),
                HostMatch::Exact("foo.example.com".into()),
            ),
            (Some("*.example.com"), HostMatch::Wildcard("example.com".into())),
            (Some("*.Example.com"), HostMatch::Wildcard("example.com".into())),
            (Some("localhost"), HostMatch::Exact("localhost".into())),
            (Some("a-1.b2.example"), HostMatch::Exact("a-1.b2.example".into())),
        ];
        for (input, want) in cases {
            assert_eq!(parse_host(*input).as_ref(), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn invalid_hosts_are_refused_with_a_reason() {
        let cases = [
            ("foo.example.com:8080", "port"),
            ("[::1]", "port"),
            ("*", "'*'"),
            ("*.", "not a valid DNS name"),
            ("a.*.example.com", "'*'"),
            ("*.*.example.com", "'*'"),
            ("foo*.example.com", "'*'"),
            ("10.0.0.1", "IP address"),
            ("-a.example", "not a valid DNS name"),
            ("a-.example", "not a valid DNS name"),
            ("a..example", "not a valid DNS name"),
            ("a.example.", "not a valid DNS name"),
            ("under_score.example", "not a valid DNS name"),
            ("spa ce.example", "not a valid DNS name"),
            ("bücher.example", "not a valid DNS name"),
        ];
        for (input, why) in cases {
            let err = parse_host(Some(input)).expect_err(input);
            assert!(err.contains(why), "{input}: {err}");
        }
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(parse_host(Some(&long_label)).is_err());
    }

    #[test]
    fn path_types_map_to_exact_or_prefix_and_missing_paths_are_the_root() {
        let cases: &[(Option<&str>, &str, Result<PathMatch, &str>)] = &[
            (Some("/foo"), "Exact", Ok(PathMatch::Exact("/foo".into()))),
            (Some("/foo"), "Prefix", Ok(PathMatch::Prefix("/foo".into()))),
            (
                Some("/foo"),
                "ImplementationSpecific",
                Ok(PathMatch::Prefix("/foo".into())),
            ),
            (Some("/foo"), "", Ok(PathMatch::Prefix("/foo".into()))),
            (None, "Prefix", Ok(PathMatch::Prefix("/".into()))),
            (Some(""), "Exact", Ok(PathMatch::Exact("/".into()))),
            (Some("foo"), "Prefix", Err("does not start with '/'")),
            (Some("/foo"), "Regex", Err("unknown pathType \"Regex\"")),
        ];
        for (path, ty, want) in cases {
            let got = parse_path(*path, ty);
            match want {
                Ok(m) => assert_eq!(got.as_ref(), Ok(m), "{path:?} {ty}"),
                Err(why) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(why)),
                    "{path:?} {ty}: {got:?}"
                ),
            }
        }
    }
}
