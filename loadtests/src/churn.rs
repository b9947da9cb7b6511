//! Churn drivers: change a running proxy's routes or endpoints at a fixed rate while the load runs,
//! and measure how long a new route takes to be served.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::{churn_hosts, Endpoint};
use crate::net::http_get;
use crate::procs::interrupted;
use crate::proxy::ProxyInstance;
use crate::report::ChurnStats;
use crate::scenarios::Churn;

/// The endpoint set of endpoint-churn step `step`: all but one, the one left out rotating.
pub fn endpoint_set(endpoints: &mut [Endpoint], step: u64) {
    let n = endpoints.len();
    if n < 2 {
        return;
    }
    let out = ((step + n as u64 - 1) % n as u64) as usize;
    for (i, e) in endpoints.iter_mut().enumerate() {
        e.active = i != out;
    }
}

/// Applies `churn` to `inst` at its rate until `stop` is set or `until` passes (whichever first).
/// Ticks are on a fixed schedule; a change slower than the period makes the next one start late
/// rather than piling up.
pub fn drive(churn: Churn, inst: &mut ProxyInstance, stop: &AtomicBool, until: Instant) -> ChurnStats {
    let every = match churn {
        Churn::Routes { every } | Churn::Endpoints { every } => every,
    };
    drive_cycle(&[churn], every, inst, stop, until)
}

/// Like [`drive`], one change every `every`, taking the kinds of change in `cycle` in turn (the
/// soak test alternates route and endpoint churn). The `every` inside each [`Churn`] is ignored.
pub fn drive_cycle(
    cycle: &[Churn],
    every: Duration,
    inst: &mut ProxyInstance,
    stop: &AtomicBool,
    until: Instant,
) -> ChurnStats {
    let mut stats = ChurnStats::default();
    let mut next = Instant::now() + every;
    let mut tick = 0usize;
    while !cycle.is_empty() && !stop.load(Ordering::Relaxed) && !interrupted() && Instant::now() < until {
        // Sleep in small slices so that a stop (or the end) is seen quickly.
        while Instant::now() < next.min(until) && !stop.load(Ordering::Relaxed) {
            thread::sleep((next.min(until) - Instant::now()).min(Duration::from_millis(10)));
        }
        if stop.load(Ordering::Relaxed) || Instant::now() >= until {
            break;
        }
        match apply(cycle[tick % cycle.len()], inst) {
            Ok(()) => stats.changes += 1,
            Err(e) => {
                stats.failed += 1;
                stats.last_error = Some(format!("{e:#}"));
            }
        }
        tick += 1;
        next = (next + every).max(Instant::now());
    }
    stats
}

/// One change of kind `churn`: the next churn-host window, or the next endpoint set.
pub fn apply(churn: Churn, inst: &mut ProxyInstance) -> anyhow::Result<()> {
    inst.churn_step += 1;
    match churn {
        Churn::Routes { .. } => {
            inst.topo.churn_hosts = churn_hosts(inst.churn_step);
            inst.apply_routes()
        }
        Churn::Endpoints { .. } => {
            let before = inst.topo.endpoints.clone();
            endpoint_set(&mut inst.topo.endpoints, inst.churn_step);
            inst.apply_endpoints(&before)
        }
    }
}

/// Adds a route for a host never used before and returns how long until the proxy answers 200 for
/// it (`None` when not within `timeout`).
pub fn propagation(inst: &mut ProxyInstance, timeout: Duration) -> Option<f64> {
    // Far from the steps the churn loop uses, so the host is new.
    inst.churn_step += 1_000_000;
    let hosts = churn_hosts(inst.churn_step);
    let newest = hosts.last()?.clone();
    inst.topo.churn_hosts = hosts;
    let t = Instant::now();
    inst.apply_routes().ok()?;
    let http = inst.topo.http;
    while t.elapsed() < timeout && !interrupted() {
        if let Ok((200, _)) = http_get(http, &newest, "/", Duration::from_secs(1)) {
            return Some(t.elapsed().as_secs_f64() * 1000.0);
        }
        thread::sleep(Duration::from_millis(5));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_sets_keep_two_of_three_and_rotate_the_one_left_out() {
        let mut eps: Vec<Endpoint> = (1..=3)
            .map(|i| Endpoint {
                addr: format!("127.0.0.{i}:80").parse().unwrap(),
                active: true,
            })
            .collect();
        let mut left_out = Vec::new();
        for step in 0..6 {
            endpoint_set(&mut eps, step);
            assert_eq!(eps.iter().filter(|e| e.active).count(), 2);
            left_out.push(eps.iter().position(|e| !e.active).unwrap());
        }
        assert_eq!(left_out, [2, 0, 1, 2, 0, 1]);
    }
}
