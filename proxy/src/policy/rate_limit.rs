//! Per-client rate and concurrency limits (`limit-rps`, `limit-rpm`, `limit-connections`,
//! `limit-burst-multiplier`, `limit-whitelist`).
//!
//! SKELETON: types and signatures are the contract with the controller and the pipeline.

use std::net::IpAddr;
use std::sync::Arc;

use http::StatusCode;
use ipnet::IpNet;

use super::LocalResponse;

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

/// The runtime state of every rate limit: token buckets and in-flight counts per zone and client.
/// Shared by all workers (a limit is per Gantry process, as ingress-nginx's zones are per nginx
/// instance) and kept across snapshot swaps while a limit's value is unchanged.
#[derive(Debug, Default)]
pub struct RateLimiters {}

/// Held while a request counted by `limit-connections` is in flight.
#[derive(Debug)]
pub struct InFlight {}

impl RateLimiters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request of `client` against `limit`: `Ok` with the in-flight guard (when the
    /// limit counts concurrency) to hold until the request ends, or `Err` with the refusal.
    pub fn check(&self, limit: &Arc<RateLimit>, client: IpAddr) -> Result<Option<InFlight>, LocalResponse> {
        let _ = (limit, client);
        Ok(None)
    }
}
