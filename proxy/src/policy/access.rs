//! Access by client address, and routes that fail closed.

use std::{net::IpAddr, sync::Arc};

use http::StatusCode;
use ipnet::IpNet;

use super::{local_response, LocalResponse};

/// A route whose access or authentication policy could not be honoured (invalid, or not supported
/// by Gantry): every request is refused with `status` (503), never served without the protection
/// its author asked for. The reason is in the diagnostics (`gantry check`, Events), not in the
/// response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// Why, for logs and `/debug/explain`.
    pub reason: Arc<str>,
}

impl Refusal {
    pub fn new(reason: impl Into<Arc<str>>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: reason.into(),
        }
    }

    pub fn apply(&self) -> LocalResponse {
        local_response(self.status)
    }
}

/// Client address lists (`whitelist-source-range` / `allowlist-source-range`,
/// `denylist-source-range`). A client in `deny` is refused; when `allow` is not empty, a client
/// outside it is refused too. Refused requests get 403, as nginx's `deny` gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceRanges {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl SourceRanges {
    /// Whether `client` may pass. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack
    /// listener reports for IPv4 clients) are judged as the IPv4 address they carry.
    pub fn allows(&self, client: IpAddr) -> bool {
        let client = canonical(client);
        if self.deny.iter().any(|n| n.contains(&client)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&client))
    }

    /// `None` when `client` may pass, else the 403.
    pub fn apply(&self, client: IpAddr) -> Option<LocalResponse> {
        (!self.allows(client)).then(|| local_response(StatusCode::FORBIDDEN))
    }
}

/// The address as the lists are written: IPv4 for an IPv4-mapped IPv6 address.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn allow_list_admits_only_its_ranges() {
        let r = SourceRanges {
            allow: nets(&["10.0.0.0/24", "172.16.0.0/16", "2001:db8::/32"]),
            deny: vec![],
        };
        assert!(r.allows("10.0.0.7".parse().unwrap()));
        assert!(r.allows("172.16.200.1".parse().unwrap()));
        assert!(r.allows("2001:db8::1".parse().unwrap()));
        assert!(!r.allows("10.0.1.7".parse().unwrap()));
        assert!(!r.allows("::1".parse().unwrap()));
        assert_eq!(r.apply("192.168.0.1".parse().unwrap()).unwrap().status(), 403);
        assert!(r.apply("10.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn deny_wins_over_allow_and_an_empty_allow_list_admits_the_rest() {
        let r = SourceRanges {
            allow: nets(&["10.0.0.0/8"]),
            deny: nets(&["10.1.0.0/16"]),
        };
        assert!(r.allows("10.2.0.1".parse().unwrap()));
        assert!(!r.allows("10.1.0.1".parse().unwrap()));
        let deny_only = SourceRanges {
            allow: vec![],
            deny: nets(&["127.0.0.1/32"]),
        };
        assert!(!deny_only.allows("127.0.0.1".parse().unwrap()));
        assert!(deny_only.allows("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_clients_are_judged_as_ipv4() {
        let r = SourceRanges {
            allow: nets(&["127.0.0.1/32"]),
            deny: vec![],
        };
        assert!(r.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!r.allows("::ffff:127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn refusals_are_503() {
        assert_eq!(Refusal::new("x").apply().status(), 503);
    }
}
