//! Stable hashing for choosing an endpoint by a key: `upstream-hash-by` and the balanced mode of
//! session affinity.
//!
//! The same key must reach the same endpoint in every Gantry process (every replica, after a
//! restart, after an upgrade), so nothing here depends on a per-process seed or on std's
//! `DefaultHasher`, whose algorithm may change between Rust releases. The functions are defined
//! here, bit for bit, and never change.
//!
//! The endpoint for a key is chosen by rendezvous (highest random weight) hashing: every endpoint
//! gets a score from the key and its address, the highest score wins. ingress-nginx uses a ketama
//! ring (`resty.chash`) for the same purpose; rendezvous hashing has the same property that
//! matters (when an endpoint is added or removed, only the keys that it gains or loses move, about
//! 1/n of them), needs no ring to build per backend, and costs one multiply-xorshift per endpoint
//! per request. A jump consistent hash (O(log n)) was not used: it numbers endpoints by position,
//! and endpoint lists are sorted by address, so removing one in the middle would move the keys of
//! every endpoint after it.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http::{HeaderMap, HeaderName, Uri};

use crate::backend::Endpoint;

/// What `upstream-hash-by` hashes: one request variable, as nginx names it. A missing header,
/// cookie or argument hashes as the empty string (nginx's empty variable), so all such requests
/// go to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HashBy {
    /// `$request_uri`: the path and query as the client sent them.
    RequestUri,
    /// `$remote_addr`: the client address (after the PROXY protocol, when on).
    RemoteAddr,
    /// `$http_<name>`: the first value of a request header.
    Header(HeaderName),
    /// `$cookie_<name>`: a request cookie (name compared without case, as nginx does).
    Cookie(Arc<str>),
    /// `$arg_<name>`: a query argument, raw (not percent-decoded; name compared without case).
    Arg(Arc<str>),
}

impl HashBy {
    /// The key of a request: a stable hash of the variable's value.
    pub fn key(&self, uri: &Uri, headers: &HeaderMap, client: IpAddr) -> u64 {
        match self {
            Self::RequestUri => {
                let pq = uri.path_and_query().map_or("", |pq| pq.as_str());
                stable_hash(pq.as_bytes())
            }
            Self::RemoteAddr => match client {
                IpAddr::V4(ip) => stable_hash(&ip.octets()),
                IpAddr::V6(ip) => stable_hash(&ip.octets()),
            },
            Self::Header(name) => stable_hash(headers.get(name).map_or(&[][..], |v| v.as_bytes())),
            Self::Cookie(name) => {
                stable_hash(super::affinity::request_cookie(headers, name, true).unwrap_or(b""))
            }
            Self::Arg(name) => stable_hash(query_arg(uri.query().unwrap_or(""), name).as_bytes()),
        }
    }

    /// As ingress-nginx's annotation spells it (for `/debug/explain`).
    pub fn variable(&self) -> String {
        match self {
            Self::RequestUri => "$request_uri".into(),
            Self::RemoteAddr => "$remote_addr".into(),
            Self::Header(name) => format!("$http_{}", name.as_str().replace('-', "_")),
            Self::Cookie(name) => format!("$cookie_{name}"),
            Self::Arg(name) => format!("$arg_{name}"),
        }
    }
}

/// The raw value of the first query argument called `name` (compared without case, as nginx's
/// `$arg_` does), or `""`.
fn query_arg<'q>(query: &'q str, name: &str) -> &'q str {
    query
        .split('&')
        .find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            k.eq_ignore_ascii_case(name).then_some(v)
        })
        .unwrap_or("")
}

/// A 64-bit hash of `bytes` that is the same in every process and release: FNV-1a, then the
/// SplitMix64 finalizer so that every input bit reaches every output bit.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    mix(h)
}

/// The stable hash of an endpoint address (its IP octets, then the port, big-endian).
pub fn endpoint_hash(addr: SocketAddr) -> u64 {
    let mut buf = [0u8; 18];
    let len = match addr.ip() {
        IpAddr::V4(ip) => {
            buf[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            buf[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    buf[len..len + 2].copy_from_slice(&addr.port().to_be_bytes());
    stable_hash(&buf[..len + 2])
}

/// The index of the endpoint that `key` maps to (rendezvous hashing), `None` when there are none.
/// Ties (practically impossible) go to the first endpoint, so the answer only depends on the set
/// of endpoints, which is sorted.
pub fn rendezvous(key: u64, endpoints: &[Endpoint]) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (i, e) in endpoints.iter().enumerate() {
        let score = mix(key ^ endpoint_hash(e.addr));
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

/// SplitMix64's finalizer: a bijection on `u64` with full avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u8) -> Vec<Endpoint> {
        (1..=n)
            .map(|i| Endpoint {
                addr: SocketAddr::from(([10, 0, 0, i], 8080)),
            })
            .collect()
    }

    #[test]
    fn hashes_are_fixed_forever() {
        // Cookies and hash keys must map the same way in every release: these values never
        // change.
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(stable_hash(b"a"), stable_hash(b"a"));
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
        let e = endpoints(3);
        let picks: Vec<_> = (0..8u64).map(|k| rendezvous(k, &e).unwrap()).collect();
        assert_eq!(
            picks,
            (0..8u64).map(|k| rendezvous(k, &e).unwrap()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn rendezvous_spreads_keys_evenly_and_moves_few_on_a_change() {
        let five = endpoints(5);
        let mut counts = [0usize; 5];
        let keys: Vec<u64> = (0..10_000u64).map(|i| stable_hash(&i.to_be_bytes())).collect();
        for &k in &keys {
            counts[rendezvous(k, &five).unwrap()] += 1;
        }
        for c in counts {
            // 2000 expected each; 6 standard deviations (40 each) is far more than enough.
            assert!((1760..=2240).contains(&c), "{counts:?}");
        }
        // Removing endpoint 3 (in the middle) moves only its own keys.
        let four: Vec<Endpoint> = five.iter().copied().filter(|e| e.addr != five[2].addr).collect();
        for &k in &keys {
            let before = five[rendezvous(k, &five).unwrap()].addr;
            let after = four[rendezvous(k, &four).unwrap()].addr;
            if before != five[2].addr {
                assert_eq!(before, after);
            }
        }
        // Adding a sixth moves about 1/6 of the keys, all to the new endpoint.
        let six = endpoints(6);
        let mut moved = 0;
        for &k in &keys {
            let before = five[rendezvous(k, &five).unwrap()].addr;
            let after = six[rendezvous(k, &six).unwrap()].addr;
            if before != after {
                assert_eq!(after, six[5].addr);
                moved += 1;
            }
        }
        assert!((1400..=1950).contains(&moved), "{moved}");
        assert_eq!(rendezvous(1, &[]), None);
    }

    #[test]
    fn hash_keys_read_the_request_variable() {
        let uri: Uri = "/a/b?x=1&Session=abc&y".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "42".parse().unwrap());
        headers.insert("cookie", "a=1; SID=zz".parse().unwrap());
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let key = |h: HashBy| h.key(&uri, &headers, client);
        assert_eq!(key(HashBy::RequestUri), stable_hash(b"/a/b?x=1&Session=abc&y"));
        assert_eq!(key(HashBy::RemoteAddr), stable_hash(&[192, 0, 2, 1]));
        assert_eq!(
            key(HashBy::Header(HeaderName::from_static("x-user"))),
            stable_hash(b"42")
        );
        assert_eq!(
            key(HashBy::Header(HeaderName::from_static("x-none"))),
            stable_hash(b"")
        );
        assert_eq!(key(HashBy::Cookie("sid".into())), stable_hash(b"zz"));
        assert_eq!(key(HashBy::Arg("session".into())), stable_hash(b"abc"));
        assert_eq!(key(HashBy::Arg("y".into())), stable_hash(b""));
        assert_eq!(key(HashBy::Arg("z".into())), stable_hash(b""));
        assert_eq!(
            HashBy::Header(HeaderName::from_static("x-user")).variable(),
            "$http_x_user"
        );
    }
}
