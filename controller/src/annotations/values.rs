//! Value parsers with ingress-nginx's rules (Go's `strconv` and the regexes of its
//! `annotations/parser/validators.go`), written out as character tests: no annotation text ever
//! reaches anything but these functions.

use std::net::IpAddr;

use ipnet::IpNet;

/// Go's `strconv.ParseBool`, which ingress-nginx uses for every boolean annotation. Surrounding
/// whitespace is forgiven.
pub(super) fn parse_bool(value: &str) -> Option<bool> {
    match value.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether a value turns a feature off: a false boolean, or nginx's `off`.
pub(super) fn is_off(value: &str) -> bool {
    parse_bool(value) == Some(false) || value.trim().eq_ignore_ascii_case("off")
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits. Surrounding whitespace is forgiven.
pub(super) fn parse_int(value: &str) -> Option<i64> {
    let v = value.trim();
    // Rust's parser also takes the sign; it refuses everything else Atoi refuses.
    if v.len() > 20 {
        return None;
    }
    v.parse::<i64>().ok()
}

/// A whole number in `min..=max`.
pub(super) fn parse_in_range(value: &str, min: i64, max: i64) -> Option<i64> {
    parse_int(value).filter(|n| (min..=max).contains(n))
}

/// An nginx size (`SizeRegex`: `^\d+[bkmg]?$`, case-insensitive, spaces removed) in bytes.
/// `None` when it does not parse or does not fit in 64 bits.
pub(super) fn parse_size(value: &str) -> Option<u64> {
    let v: String = value.chars().filter(|c| *c != ' ').collect();
    let (digits, unit) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], c.to_ascii_lowercase()),
        _ => (v.as_str(), 'b'),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit {
        'b' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// A comma-separated list of CIDRs and addresses (ingress-nginx's `net.ParseIPNets`: every item,
/// trimmed, must be one; an empty item is an error, as in Go). Networks are truncated to their
/// prefix (`10.0.0.1/24` is `10.0.0.0/24`, as Go's `ParseCIDR` does); an address is a host network.
pub(super) fn parse_cidrs(value: &str) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        let net = if item.contains('/') {
            item.parse::<IpNet>().map(|n| n.trunc()).ok()
        } else {
            item.parse::<IpAddr>().ok().map(IpNet::from)
        };
        match net {
            Some(net) => nets.push(net),
            None if item.is_empty() => {
                return Err("an empty item (two commas in a row, or a comma at an end)".into())
            }
            None => return Err(format!("{:?} is not an IP address or CIDR", shorten(item, 60))),
        }
    }
    nets.sort();
    nets.dedup();
    Ok(nets)
}

/// `RegexPathWithCapture`: `^/?[-._~a-zA-Z0-9/:$]*$`, without CR or LF (ingress-nginx's check for
/// `rewrite-target`, `app-root` and `x-forwarded-prefix`).
pub(super) fn is_path_with_captures(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/:$".contains(&b))
}

/// `URLIsValidRegex`: `^[-._~a-zA-Z0-9/:,?&=]*$` (ingress-nginx's check for redirect locations).
/// `%` (escapes) and `$` are accepted too: `$` so that a location with nginx variables can be
/// reported as such rather than as garbage.
pub(super) fn is_url_chars(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/:,?&=%$".contains(&b))
}

/// `BasicCharsRegex`: `^[/-._~a-zA-Z0-9:]*$` (names like `namespace/name`).
pub(super) fn is_basic_chars(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/:".contains(&b))
}

/// `CharsWithSpace`: basic characters and the space (`auth-realm`).
pub(super) fn is_chars_with_space(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/: ".contains(&b))
}

/// `namespace/name` or `name` (client-go's `SplitMetaNamespaceKey`): `(namespace, name)`, the
/// namespace `None` when not given. More than one `/`, or an empty name, is an error.
pub(super) fn split_key(value: &str) -> Option<(Option<&str>, &str)> {
    let value = value.trim();
    let (ns, name) = match value.split_once('/') {
        Some((ns, name)) => (Some(ns).filter(|ns| !ns.is_empty()), name),
        None => (None, value),
    };
    if name.is_empty()
        || name.contains('/')
        || !is_dns_subdomain(name)
        || ns.is_some_and(|ns| !is_dns_label(ns))
    {
        return None;
    }
    Some((ns, name))
}

/// An object name: a DNS-1123 subdomain.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A namespace: a DNS-1123 label.
fn is_dns_label(name: &str) -> bool {
    !name.contains('.') && is_dns_subdomain(name)
}

/// `s` cut to at most `max` characters, with `…` when cut.
pub(super) fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A comma-separated list of tokens, each `[A-Za-z]+` (`alpha`) or `[A-Za-z0-9_-]+|*` (header
/// names for `expose`), with optional single spaces after commas: ingress-nginx's
/// `^([A-Za-z]+,?\s?)+$` and `^(([A-Za-z0-9\-\_]+|\*),?\s?)+$`.
pub(super) fn is_token_list(value: &str, token: fn(&str) -> bool) -> bool {
    let mut rest = value;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let end = rest.find([',', ' ', '\t']).unwrap_or(rest.len());
        if !token(&rest[..end]) {
            return false;
        }
        rest = &rest[end..];
        // `,?\s?`: at most one comma, then at most one whitespace.
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        }
        if let Some(r) = rest.strip_prefix([' ', '\t']) {
            rest = r;
        }
    }
    true
}

pub(super) fn is_alpha_token(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphabetic())
}

pub(super) fn is_header_token(t: &str) -> bool {
    t == "*"
        || (!t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_follow_go() {
        for t in ["true", "True", "TRUE", "t", "T", "1", " true "] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "False", "FALSE", "f", "F", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["yes", "no", "on", "tRUE", "", "2"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
        assert!(is_off("off") && is_off("OFF") && is_off("false") && !is_off("on"));
    }

    #[test]
    fn integers_follow_atoi() {
        assert_eq!(parse_int("42"), Some(42));
        assert_eq!(parse_int("+7"), Some(7));
        assert_eq!(parse_int("-3"), Some(-3));
        for bad in ["", "4.5", "30s", "50k", "0x10", "1 2", "99999999999999999999999"] {
            assert_eq!(parse_int(bad), None, "{bad}");
        }
        assert_eq!(parse_in_range("308", 300, 308), Some(308));
        assert_eq!(parse_in_range("309", 300, 308), None);
    }

    #[test]
    fn sizes_follow_nginx() {
        let cases = [
            ("0", Some(0)),
            ("1000", Some(1000)),
            ("8m", Some(8 << 20)),
            ("8M", Some(8 << 20)),
            ("1k", Some(1024)),
            ("1K", Some(1024)),
            ("2g", Some(2 << 30)),
            ("10b", Some(10)),
            (" 8 m ", Some(8 << 20)),
            ("15r", None),
            ("m", None),
            ("", None),
            ("-1", None),
            ("1.5m", None),
            ("99999999999999999999g", None),
            ("18446744073709551615g", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), want, "{input:?}");
        }
    }

    #[test]
    fn cidr_lists_take_networks_and_addresses_of_both_families() {
        let nets = parse_cidrs("18.0.0.0/8, 56.0.0.0/8,10.0.0.1/24 ,192.168.1.7,2001:db8::/32,::1").unwrap();
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "10.0.0.0/24",
                "18.0.0.0/8",
                "56.0.0.0/8",
                "192.168.1.7/32",
                "::1/128",
                "2001:db8::/32"
            ]
        );
        for bad in [
            "",
            "10.0.0.0/8,",
            "10.0.0.0/33",
            "300.1.1.1",
            "example.com",
            "10.0.0.0/8,,1.1.1.1",
            "fe80::1%eth0",
        ] {
            assert!(parse_cidrs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_name_or_namespace_slash_name() {
        assert_eq!(split_key("basic-auth"), Some((None, "basic-auth")));
        assert_eq!(split_key("other/basic-auth"), Some((Some("other"), "basic-auth")));
        assert_eq!(split_key("/basic-auth"), Some((None, "basic-auth")));
        for bad in ["", "a/b/c", "ns/", "Upper", "a b", "ns.x/name", "-a"] {
            assert_eq!(split_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn token_lists_follow_ingress_nginx_regexes() {
        assert!(is_token_list("GET, PUT, POST", is_alpha_token));
        assert!(is_token_list("GET,PUT", is_alpha_token));
        assert!(is_token_list("GET", is_alpha_token));
        assert!(!is_token_list("GET,,PUT", is_alpha_token));
        assert!(!is_token_list("GET;PUT", is_alpha_token));
        assert!(!is_token_list("", is_alpha_token));
        assert!(!is_token_list(", GET", is_alpha_token));
        assert!(is_token_list("*, X-CustomResponseHeader", is_header_token));
        assert!(!is_token_list("X-$var", is_header_token));
    }

    #[test]
    fn shortening_respects_characters() {
        assert_eq!(shorten("abcdef", 3), "abc…");
        assert_eq!(shorten("ab", 3), "ab");
        assert_eq!(shorten("äöüß", 2), "äö…");
    }
}
