//! Per-client rate and concurrency limits (`limit-rps`, `limit-rpm`, `limit-connections`,
//! `limit-burst-multiplier`, `limit-whitelist`).
//!
//! The semantics of ingress-nginx's generated configuration (`buildRateLimit` and
//! `buildRateLimitZones` in `template.go`):
//!
//! - `limit-rps: r` is `limit_req zone=... burst=r*multiplier nodelay` on a zone of rate `r r/s`
//!   keyed by the client address; `limit-rpm` the same per minute. nginx lets a fresh client
//!   through with an empty bucket and refuses a request only when the excess *after* it would
//!   pass the burst, so a client can send `r*multiplier + 1` requests at once, then one every
//!   `1/r`. The same is a GCRA (governor) with a capacity of `r*multiplier + 1` cells, one cell
//!   replenished every `1/r`.
//! - `limit-connections: n` is `limit_conn ... n`: at most `n` requests of a client in flight at
//!   once (nginx counts requests, HTTP/2 streams included, not TCP connections).
//! - `limit-whitelist` (`limit-allowlist`) clients are keyed by the empty string, which nginx does
//!   not count: they skip every limit of the Ingress.
//! - A refused request gets `limit-req-status-code` / `limit-conn-status-code`, 503 by default.
//! - nginx runs `limit_req` before `limit_conn` (its preaccess handlers run in reverse module
//!   order), so the rate is checked first and a request refused by it takes no connection slot;
//!   `rps` is checked before `rpm` (the order of the generated `limit_req` lines). ingress-nginx's
//!   docs say "`limit-connections`, `limit-rpm`, `limit-rps`"; the generated configuration is what
//!   runs. One difference remains: nginx charges none of a location's `limit_req` zones when one
//!   of them refuses, while here a request that passes `rps` and is refused by `rpm` has used an
//!   `rps` cell (governor cannot give one back); it only matters when both are set, and then the
//!   client was over its per-minute limit anyway.
//! - 0 for a rate or a connection count means no such limit, as in ingress-nginx.
//!
//! Addresses are keyed as they are written in the lists: an IPv4-mapped IPv6 address (what a
//! dual-stack listener reports for an IPv4 client) counts as its IPv4 address.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::Quota;
use http::StatusCode;
use ipnet::IpNet;

use super::access::canonical;
use super::{local_response, LocalResponse};

/// The limits of one Ingress's routes, per client address. ingress-nginx keys its zones by
/// Ingress, so two Ingresses with the same numbers still count separately: `zone` says whose.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Whose limits these are (`namespace/name` of the Ingress).
    pub zone: Arc<str>,
    /// Requests per second per client, with a burst of `rps * burst_multiplier` answered at once.
    pub rps: Option<u32>,
    /// Requests per minute per client, with a burst of `rpm * burst_multiplier`.
    pub rpm: Option<u32>,
    /// Default 5.
    pub burst_multiplier: u32,
    /// Requests in flight at once per client.
    pub connections: Option<u32>,
    /// Clients never limited (`limit-whitelist`).
    pub exempt: Vec<IpNet>,
    /// Status of a refused request; 503 by default (`limit-req-status-code`).
    pub status: StatusCode,
}

impl RateLimit {
    /// Whether `client` skips every limit (`limit-whitelist`).
    pub fn is_exempt(&self, client: IpAddr) -> bool {
        let client = canonical(client);
        self.exempt.iter().any(|net| net.contains(&client))
    }

    /// Whether this limits anything at all (a rate or a connection count above 0).
    pub fn limits_anything(&self) -> bool {
        [self.rps, self.rpm, self.connections]
            .iter()
            .any(|n| n.is_some_and(|n| n > 0))
    }
}

/// The runtime state of every rate limit: token buckets and in-flight counts per zone and client.
/// Shared by all workers (a limit is per Gantry process, as ingress-nginx's zones are per nginx
/// instance) and kept across snapshot swaps while a limit's value is unchanged.
///
/// Limiters are keyed by the whole [`RateLimit`] value: a snapshot with an equal value (even in a
/// new `Arc`) finds the same buckets, a changed one (numbers, exemptions, status or zone) starts
/// fresh. The registry's lock is held only to find or insert a limiter, never during a check;
/// the per-client state is concurrent (governor's keyed state on a `DashMap`).
///
/// Memory: each limiter remembers every client it has seen until [`RateLimiters::sweep`] forgets
/// those whose bucket is full again; the pipeline calls it periodically. Limiters of limits no
/// route uses any more are dropped by [`RateLimiters::retain`].
#[derive(Default)]
pub struct RateLimiters {
    limiters: Mutex<HashMap<Arc<RateLimit>, Arc<Limiter>>>,
    clock: LimitClock,
    /// Moves whenever `retain` drops limiters, so that no worker keeps using a dropped one.
    generation: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for RateLimiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiters")
            .field("limits", &self.len())
            .finish()
    }
}

/// Held while a request counted by `limit-connections` is in flight; dropping it gives the slot
/// back.
pub struct InFlight {
    counts: Arc<InFlightCounts>,
    client: IpAddr,
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight").field("client", &self.client).finish()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counts.release(self.client);
    }
}

impl RateLimiters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request of `client` against `limit`: `Ok` with the in-flight guard (when the
    /// limit counts concurrency) to hold until the request ends, or `Err` with the refusal.
    // The refusal is the response itself, as the pipeline's other phases return theirs; it is
    // built only on the refusal path, so its size costs the passing requests nothing.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, limit: &Arc<RateLimit>, client: IpAddr) -> Result<Option<InFlight>, LocalResponse> {
        let client = canonical(client);
        if !limit.limits_anything() || limit.exempt.iter().any(|net| net.contains(&client)) {
            return Ok(None);
        }
        let limiter = self.limiter(limit);
        let refused = || local_response(limit.status);
        for rate in [&limiter.rps, &limiter.rpm].into_iter().flatten() {
            if rate.check_key(&client).is_err() {
                return Err(refused());
            }
        }
        match &limiter.in_flight {
            Some(counts) => counts.acquire(client).map(Some).ok_or_else(refused),
            None => Ok(None),
        }
    }

    /// Keeps the limiters of the limits for which `keep` is true and drops the others with their
    /// state (requests in flight still give their slot back to the dropped counts).
    pub fn retain(&self, keep: impl Fn(&RateLimit) -> bool) {
        let mut limiters = self.lock();
        let before = limiters.len();
        limiters.retain(|limit, _| keep(limit));
        if limiters.len() != before {
            self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// How many limits have state.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the clients whose buckets are full again (indistinguishable from a client never
    /// seen), with governor's `retain_recent`, and gives back the memory. The state of the keyed
    /// limiters grows with every distinct client address; the pipeline calls this periodically
    /// to bound it. In-flight counts need no sweeping: a client's entry goes with its last
    /// request.
    pub fn sweep(&self) {
        let limiters: Vec<Arc<Limiter>> = self.lock().values().cloned().collect();
        for limiter in limiters {
            for rate in [&limiter.rps, &limiter.rpm].into_iter().flatten() {
                rate.retain_recent();
                rate.shrink_to_fit();
            }
        }
    }

    /// How many client addresses the rate limiters remember, over all limits (for metrics).
    pub fn tracked_clients(&self) -> usize {
        let limiters: Vec<Arc<Limiter>> = self.lock().values().cloned().collect();
        limiters
            .iter()
            .flat_map(|l| [&l.rps, &l.rpm])
            .flatten()
            .map(|rate| rate.len())
            .sum()
    }

    /// The limiter of `limit`, made on first use. Each worker thread remembers the limiters of
    /// the `RateLimit` values it has met (by pointer, holding them, so an address is never reused
    /// while remembered): a request costs one short scan there, not a hash of the whole value and
    /// a lock shared by every worker. The shared map is only read on a thread's first request
    /// for a value, e.g. after a snapshot swap.
    fn limiter(&self, limit: &Arc<RateLimit>) -> Arc<Limiter> {
        type Seen = (usize, u64, Arc<RateLimit>, Arc<Limiter>);
        thread_local! {
            static SEEN: std::cell::RefCell<Vec<Seen>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        /// Limits remembered per worker; past it the list starts over.
        const SEEN_MAX: usize = 64;
        // Which registry and which of its generations an entry came from.
        let registry = self as *const Self as usize;
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if let Some(hit) = SEEN.with(|seen| {
            seen.borrow()
                .iter()
                .find(|(r, g, l, _)| *r == registry && *g == generation && Arc::ptr_eq(l, limit))
                .map(|(_, _, _, limiter)| limiter.clone())
        }) {
            return hit;
        }
        let limiter = self.shared_limiter(limit);
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            seen.retain(|(r, g, _, _)| *r != registry || *g == generation);
            if seen.len() >= SEEN_MAX {
                seen.clear();
            }
            seen.push((registry, generation, limit.clone(), limiter.clone()));
        });
        limiter
    }

    /// The limiter of `limit` from the shared map. The lock is held only for the lookup.
    fn shared_limiter(&self, limit: &Arc<RateLimit>) -> Arc<Limiter> {
        let mut limiters = self.lock();
        if let Some(limiter) = limiters.get(&**limit) {
            return limiter.clone();
        }
        let limiter = Arc::new(Limiter::new(limit, &self.clock));
        limiters.insert(limit.clone(), limiter.clone());
        limiter
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<RateLimit>, Arc<Limiter>>> {
        // Nothing can be left half-done under this lock: a poisoned one is still consistent.
        self.limiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn with_clock(clock: governor::clock::FakeRelativeClock) -> Self {
        Self {
            limiters: Mutex::default(),
            clock: LimitClock(ClockSource::Fake(clock)),
            generation: Default::default(),
        }
    }
}

type KeyedLimiter =
    governor::RateLimiter<IpAddr, DashMapStateStore<IpAddr>, LimitClock, NoOpMiddleware<Nanos>>;

/// The state of one [`RateLimit`].
struct Limiter {
    rps: Option<KeyedLimiter>,
    rpm: Option<KeyedLimiter>,
    in_flight: Option<Arc<InFlightCounts>>,
}

impl Limiter {
    fn new(limit: &RateLimit, clock: &LimitClock) -> Self {
        let rate = |per: Option<u32>, period: Duration| {
            let per = per.filter(|&n| n > 0)?;
            let quota = quota(per, period, limit.burst_multiplier);
            Some(governor::RateLimiter::new(
                quota,
                DashMapStateStore::default(),
                clock.clone(),
            ))
        };
        Self {
            rps: rate(limit.rps, Duration::from_secs(1)),
            rpm: rate(limit.rpm, Duration::from_secs(60)),
            in_flight: limit
                .connections
                .filter(|&n| n > 0)
                .map(|max| Arc::new(InFlightCounts::new(max))),
        }
    }
}

/// `rate` requests per `period`, with nginx's `burst = rate * multiplier` and `nodelay`: a
/// capacity of `burst + 1` requests at once, one more every `period / rate`.
fn quota(rate: u32, period: Duration, multiplier: u32) -> Quota {
    // At least 1 ns: governor's resolution (and a rate above 10^9/s is no limit anyway).
    let interval_ns = (period.as_nanos() / u128::from(rate)).max(1);
    let interval = Duration::from_nanos(u64::try_from(interval_ns).unwrap_or(u64::MAX));
    let burst = u64::from(rate)
        .saturating_mul(u64::from(multiplier))
        .saturating_add(1);
    // governor keeps `interval * (capacity - 1)` in u64 nanoseconds, and adds times to it: keep
    // that product far from overflowing (a capacity this large is no limit in practice).
    let max_burst = (u128::from(u64::MAX / 4) / interval_ns).clamp(1, u128::from(u32::MAX));
    let burst = u32::try_from(u128::from(burst).min(max_burst)).unwrap_or(u32::MAX);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

/// Requests in flight per client for one limit, in shards so that workers seldom wait on each
/// other. A client's entry is removed with its last request.
struct InFlightCounts {
    max: u32,
    hasher: RandomState,
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
}

const SHARDS: usize = 16;

impl InFlightCounts {
    fn new(max: u32) -> Self {
        Self {
            max,
            hasher: RandomState::new(),
            shards: Default::default(),
        }
    }

    fn shard(&self, client: IpAddr) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        let index = (self.hasher.hash_one(client) % SHARDS as u64) as usize;
        // Nothing is left half-done under these locks either.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for one more request of `client`, or `None` when it has `max` in flight.
    fn acquire(self: &Arc<Self>, client: IpAddr) -> Option<InFlight> {
        let mut shard = self.shard(client);
        let count = shard.entry(client).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        drop(shard);
        Some(InFlight {
            counts: self.clone(),
            client,
        })
    }

    fn release(&self, client: IpAddr) {
        let mut shard = self.shard(client);
        if let Some(count) = shard.get_mut(&client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(&client);
            }
        }
    }

    #[cfg(test)]
    fn in_flight(&self, client: IpAddr) -> u32 {
        self.shard(client).get(&client).copied().unwrap_or(0)
    }
}

/// The time source of the limiters: monotonic time since the registry was made, in governor's
/// nanoseconds; tests drive a fake one.
#[derive(Clone, Debug)]
struct LimitClock(ClockSource);

#[derive(Clone, Debug)]
enum ClockSource {
    Real(Instant),
    #[cfg(test)]
    Fake(governor::clock::FakeRelativeClock),
}

impl Default for LimitClock {
    fn default() -> Self {
        Self(ClockSource::Real(Instant::now()))
    }
}

impl Clock for LimitClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match &self.0 {
            ClockSource::Real(start) => {
                Nanos::new(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
            }
            #[cfg(test)]
            ClockSource::Fake(clock) => clock.now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limit(zone: &str) -> RateLimit {
        RateLimit {
            zone: zone.into(),
            rps: None,
            rpm: None,
            burst_multiplier: 5,
            connections: None,
            exempt: vec![],
            status: StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// How many of `n` requests at the same instant pass; every refusal is checked to carry
    /// `status`.
    fn passed(limiters: &RateLimiters, limit: &Arc<RateLimit>, client: IpAddr, n: usize) -> usize {
        (0..n)
            .filter(|_| match limiters.check(limit, client) {
                Ok(_) => true,
                Err(resp) => {
                    assert_eq!(resp.status(), limit.status);
                    false
                }
            })
            .count()
    }

    fn setup() -> (RateLimiters, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimiters::with_clock(clock.clone()), clock)
    }

    #[test]
    fn a_burst_passes_rps_times_multiplier_plus_one_as_nginx_does() {
        let (limiters, _clock) = setup();
        let l = Arc::new(RateLimit {
            rps: Some(2),
            ..limit("ns/a")
        });
        // burst = 2 * 5 = 10: nginx's nodelay lets the 11th through too (excess 10 <= burst)
        // and refuses from the 12th.
        let client = ip("192.0.2.1");
        assert_eq!(passed(&limiters, &l, client, 11), 11);
        let refused = limiters.check(&l, client).unwrap_err();
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["server"], "gantry");
        assert_eq!(passed(&limiters, &l, client, 5), 0);
        // Another client has its own bucket.
        assert_eq!(passed(&limiters, &l, ip("192.0.2.2"), 12), 11);
        assert_eq!(passed(&limiters, &l, ip("2001:db8::1"), 12), 11);
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let (limiters, clock) = setup();
        let l = Arc::new(RateLimit {
            rps: Some(2),
            burst_multiplier: 1,
            ..limit("ns/a")
        });
        let client = ip("192.0.2.1");
        assert_eq!(passed(&limiters, &l, client, 10), 3);
        clock.advance(Duration::from_millis(499));
        assert_eq!(passed(&limiters, &l, client, 1), 0);
        clock.advance(Duration::from_millis(1));
        assert_eq!(passed(&limiters, &l, client, 10), 1);
        clock.advance(Duration::from_secs(10));
        assert_eq!(passed(&limiters, &l, client, 10), 3);
    }

    #[test]
    fn rpm_counts_per_minute() {
        let (limiters, clock) = setup();
        let l = Arc::new(RateLimit {
            rpm: Some(6),
            burst_multiplier: 1,
            ..limit("ns/a")
        });
        let client = ip("192.0.2.1");
        assert_eq!(passed(&limiters, &l, client, 20), 7);
        clock.advance(Duration::from_secs(9));
        assert_eq!(passed(&limiters, &l, client, 1), 0);
        clock.advance(Duration::from_secs(1));
        assert_eq!(passed(&limiters, &l, client, 5), 1);
    }

    #[test]
    fn rps_and_rpm_together_the_stricter_wins() {
        let (limiters, clock) = setup();
        let l = Arc::new(RateLimit {
            rps: Some(10),
            rpm: Some(1),
            burst_multiplier: 2,
            ..limit("ns/a")
        });
        let client = ip("192.0.2.1");
        // rpm: 1 * 2 + 1 = 3 at once, though rps would allow 21.
        assert_eq!(passed(&limiters, &l, client, 30), 3);
        clock.advance(Duration::from_secs(60));
        assert_eq!(passed(&limiters, &l, client, 30), 1);
    }

    #[test]
    fn multiplier_zero_is_one_request_at_a_time() {
        let (limiters, _clock) = setup();
        let l = Arc::new(RateLimit {
            rps: Some(100),
            burst_multiplier: 0,
            ..limit("ns/a")
        });
        assert_eq!(passed(&limiters, &l, ip("192.0.2.1"), 5), 1);
    }

    #[test]
    fn exempt_clients_are_never_limited() {
        let (limiters, _clock) = setup();
        let l = Arc::new(RateLimit {
            rps: Some(1),
            connections: Some(1),
            exempt: vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
            ..limit("ns/a")
        });
        let mut guards = Vec::new();
        for client in ["10.1.2.3", "::ffff:10.9.9.9", "2001:db8::7"] {
            for _ in 0..100 {
                let guard = limiters.check(&l, ip(client)).unwrap();
                assert!(guard.is_none(), "exempt clients hold no slot");
                guards.push(guard);
            }
        }
        assert!(l.is_exempt(ip("::ffff:10.0.0.1")));
        assert!(!l.is_exempt(ip("11.0.0.1")));
        // Everyone else is.
        assert_eq!(passed(&limiters, &l, ip("11.0.0.1"), 1), 1);
    }

    #[test]
    fn ipv4_mapped_clients_count_as_ipv4() {
        let (limiters, _clock) = setup();
        let l = Arc::new(RateLimit {
            rps: Some(1),
            burst_multiplier: 1,
            ..limit("ns/a")
        });
        assert_eq!(passed(&limiters, &l, ip("192.0.2.1"), 1), 1);
        assert_eq!(passed(&limiters, &l, ip("::ffff:192.0.2.1"), 1), 1);
        assert_eq!(passed(&limiters, &l, ip("192.0.2.1"), 1), 0);
        assert_eq!(passed(&limiters, &l, ip("::ffff:192.0.2.1"), 1), 0);
    }

    #[test]
    fn connections_are_counted_while_in_flight_and_released_on_drop() {
        let (limiters, _clock) = setup();
        let l = Arc::new(RateLimit {
            connections: Some(2),
            status: StatusCode::TOO_MANY_REQUESTS,
            ..limit("ns/a")
        });
        let client = ip("192.0.2.1");
        let first = limiters.check(&l, client).unwrap().expect("a guard");
        let second = limiters.check(&l, client).unwrap().expect("a guard");
        assert_eq!(limiters.check(&l, client).unwrap_err().status(), 429);
        // Another client has its own count.
        let other = limiters.check(&l, ip("192.0.2.2")).unwrap().expect("a guard");
        drop(first);
        let third = limiters.check(&l, client).unwrap().expect("a slot again");
        assert_eq!(limiters.check(&l, client).unwrap_err().status(), 429);
        let counts = limiters.limiter(&l).in_flight.clone().unwrap();
        assert_eq!(counts.in_flight(client), 2);
        drop((second, third, other));
        assert_eq!(counts.in_flight(client), 0);
        // Entries go with the last request.
        assert!(counts.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }

    #[test]
    fn connections_like_the_e2e_test() {
        // test/e2e/annotations/limitconnections.go: 20 concurrent requests, limit 8.
        let (limiters, _clock) = setup();
        let l = Arc::new(RateLimit {
            connections: Some(8),
            ..limit("ns/a")
        });
        let results: Vec<_> = (0..20)
            .map(|_| {
                limiters
                    .check(&l, ip("192.0.2.1"))
                    .map_err(|refusal| refusal.status())
            })
            .collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(StatusCode::SERVICE_UNAVAILABLE)))
            .count();
        assert_eq!((ok, refused), (8, 12));
    }

    #[test]
    fn a_request_refused_by_the_rate_takes_no_connection_slot() {
        let (limiters, _clock) = setup();
        let l = Arc::new(RateLimit {
            rps: Some(1),
            burst_multiplier: 0,
            connections: Some(1),
            ..limit("ns/a")
        });
        let client = ip("192.0.2.1");
        let guard = limiters.check(&l, client).unwrap();
        assert!(guard.is_some());
        drop(guard);
        assert!(limiters.check(&l, client).is_err());
        let counts = limiters.limiter(&l).in_flight.clone().unwrap();
        assert_eq!(counts.in_flight(client), 0);
    }

    #[test]
    fn an_unchanged_limit_keeps_its_state_across_swaps() {
        let (limiters, _clock) = setup();
        let old = Arc::new(RateLimit {
            rps: Some(1),
            burst_multiplier: 1,
            ..limit("ns/a")
        });
        let client = ip("192.0.2.1");
        assert_eq!(passed(&limiters, &old, client, 2), 2);
        // The next snapshot compiles an equal value into a new Arc.
        let same = Arc::new((*old).clone());
        assert!(!Arc::ptr_eq(&old, &same));
        assert_eq!(passed(&limiters, &same, client, 1), 0);
        assert_eq!(limiters.len(), 1);
        // Another Ingress with the same numbers counts separately.
        let other_zone = Arc::new(RateLimit {
            zone: "ns/b".into(),
            ..(*old).clone()
        });
        assert_eq!(passed(&limiters, &other_zone, client, 2), 2);
        // So does a changed limit of the same Ingress: it starts fresh.
        let changed = Arc::new(RateLimit {
            rps: Some(2),
            ..(*old).clone()
        });
        assert_eq!(passed(&limiters, &changed, client, 10), 3);
        assert_eq!(limiters.len(), 3);
    }

    #[test]
    fn retain_drops_limits_no_route_uses() {
        let (limiters, _clock) = setup();
        let a = Arc::new(RateLimit {
            rps: Some(1),
            burst_multiplier: 0,
            ..limit("ns/a")
        });
        let b = Arc::new(RateLimit {
            connections: Some(1),
            ..limit("ns/b")
        });
        let client = ip("192.0.2.1");
        assert_eq!(passed(&limiters, &a, client, 1), 1);
        let in_flight = limiters.check(&b, client).unwrap();
        assert_eq!(limiters.len(), 2);
        limiters.retain(|l| l.zone.as_ref() == "ns/b");
        assert_eq!(limiters.len(), 1);
        // `a` comes back fresh if a route uses it again.
        assert_eq!(passed(&limiters, &a, client, 2), 1);
        limiters.retain(|_| false);
        assert!(limiters.is_empty());
        // A request in flight on a dropped limit still releases its slot safely.
        drop(in_flight);
    }

    #[test]
    fn limits_that_limit_nothing_keep_no_state() {
        let (limiters, _clock) = setup();
        for l in [
            limit("ns/a"),
            RateLimit {
                rps: Some(0),
                rpm: Some(0),
                connections: Some(0),
                ..limit("ns/a")
            },
        ] {
            let l = Arc::new(l);
            assert!(!l.limits_anything());
            for _ in 0..100 {
                assert!(limiters.check(&l, ip("192.0.2.1")).unwrap().is_none());
            }
        }
        assert!(limiters.is_empty());
    }

    #[test]
    fn sweep_forgets_clients_whose_bucket_is_full_again() {
        let (limiters, clock) = setup();
        let l = Arc::new(RateLimit {
            rps: Some(10),
            rpm: Some(600),
            ..limit("ns/a")
        });
        for i in 0..50u8 {
            assert_eq!(passed(&limiters, &l, IpAddr::from([192, 0, 2, i]), 1), 1);
        }
        assert_eq!(limiters.tracked_clients(), 100);
        limiters.sweep();
        assert_eq!(limiters.tracked_clients(), 100, "still within their burst window");
        clock.advance(Duration::from_secs(3600));
        limiters.sweep();
        assert_eq!(limiters.tracked_clients(), 0);
        // And they start afresh.
        assert_eq!(passed(&limiters, &l, ip("192.0.2.0"), 100), 51);
    }

    #[test]
    fn extreme_numbers_do_not_panic() {
        let (limiters, clock) = setup();
        for (rps, rpm, multiplier) in [
            (Some(u32::MAX), None, u32::MAX),
            (None, Some(1), u32::MAX),
            (Some(1), Some(u32::MAX), 0),
            (Some(u32::MAX), Some(u32::MAX), 1),
        ] {
            let l = Arc::new(RateLimit {
                rps,
                rpm,
                burst_multiplier: multiplier,
                connections: Some(u32::MAX),
                ..limit("ns/a")
            });
            assert!(limiters.check(&l, ip("192.0.2.1")).is_ok());
            clock.advance(Duration::from_secs(1));
            assert!(limiters.check(&l, ip("192.0.2.1")).is_ok());
        }
        limiters.sweep();
    }

    #[test]
    fn workers_share_the_buckets() {
        let (limiters, _clock) = setup();
        let limiters = Arc::new(limiters);
        let l = Arc::new(RateLimit {
            rps: Some(20),
            ..limit("ns/a")
        });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (limiters, l) = (limiters.clone(), l.clone());
                std::thread::spawn(move || passed(&limiters, &l, ip("192.0.2.1"), 50))
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 101);
    }
}
