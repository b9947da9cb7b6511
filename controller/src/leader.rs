//! Leader election over a coordination.k8s.io Lease: one replica writes Ingress status and Events;
//! every replica serves traffic whether it leads or not.
//!
//! A small module of our own rather than a crate: `kube-leader-election` is built on kube 4, and
//! `kube-lease-manager` keeps reporting the last known state while renewals fail, where a writer
//! must stop at once.
//!
//! The protocol is client-go's:
//! - A replica that does not hold the Lease reads it every [`LeaseSettings::retry_every`] and takes
//!   it over when it is free or when its record (seen through `resourceVersion`) has not changed for
//!   `leaseDurationSeconds` **as measured by this replica's own clock**, so clock skew between nodes
//!   does not matter.
//! - The holder renews every [`LeaseSettings::renew_every`].
//! - Every write is an update with the `resourceVersion` just read, so of two replicas racing for a
//!   free Lease exactly one wins; the other gets a conflict.
//! - The holder counts itself leader only until `renew start + lease duration - retry period`
//!   ([`Leadership::is_leading`] checks the clock, not just a flag), and steps down at once when a
//!   renewal fails or takes longer than the renewal period. Another replica cannot take over before
//!   a full lease duration after it last saw the record change, which is after the old holder's
//!   deadline.
//! - On shutdown the holder releases the Lease (empty holder), so a rolling update hands over
//!   without waiting out the lease duration.

use std::time::Duration;

use crate::metrics::Metrics;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api, Client};
use tokio::{sync::watch, time::Instant};

/// Why one election round failed; the round is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or did not answer a Lease read or write.
    #[error("Lease {lease}: {source}")]
    Api {
        lease: String,
        #[source]
        source: kube::Error,
    },
    /// The call took longer than the renewal period.
    #[error("Lease {lease}: no answer within {limit:?}")]
    Timeout { lease: String, limit: Duration },
}

/// Where and how to elect.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's `holderIdentity`.
    pub identity: String,
    /// `leaseDurationSeconds`: how long a silent holder keeps the Lease. Default 15 s.
    pub lease_duration: Duration,
    /// How often the holder renews. Default 5 s.
    pub renew_every: Duration,
    /// How often the others try to acquire. Default 2 s.
    pub retry_every: Duration,
}

impl LeaseSettings {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// Whether this replica leads, as the writers see it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    /// `Some(deadline)` while leading: the renewal that set it started less than a lease duration
    /// before the deadline.
    rx: watch::Receiver<Option<Instant>>,
}

// === impl Leadership ===

impl Leadership {
    /// True while this replica holds the Lease and its last renewal is recent enough that no other
    /// replica can have taken over.
    pub fn is_leading(&self) -> bool {
        self.rx.borrow().is_some_and(|deadline| Instant::now() < deadline)
    }

    /// Resolves when leadership may have changed (gained, renewed, or lost); never resolves after the
    /// election task ended.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Starts the election; it runs until `shutdown` turns true, then releases the Lease if held.
pub fn run(
    client: Client,
    settings: LeaseSettings,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut elector = Elector::new(client, settings);
        loop {
            let started = Instant::now();
            let limit = elector.settings.renew_every;
            let round = match tokio::time::timeout(limit, elector.round()).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    lease: elector.label(),
                    limit,
                }),
            };
            let was_leading = tx.borrow().is_some();
            let next = match round {
                Ok(true) => {
                    let s = &elector.settings;
                    tx.send_replace(Some(started + s.lease_duration.saturating_sub(s.retry_every)));
                    if !was_leading {
                        tracing::info!(lease = %elector.label(), identity = %s.identity, "became leader: writing Ingress status and Events");
                    }
                    metrics.leader.set(1);
                    s.renew_every
                }
                Ok(false) => {
                    if was_leading {
                        tracing::warn!(lease = %elector.label(), "lost the Lease to another replica; no longer writing");
                    }
                    tx.send_replace(None);
                    metrics.leader.set(0);
                    elector.settings.retry_every
                }
                Err(e) => {
                    if was_leading {
                        tracing::warn!(error = %e, "cannot renew the Lease; no longer writing");
                    } else {
                        tracing::debug!(error = %e, "election round failed");
                    }
                    tx.send_replace(None);
                    metrics.leader.set(0);
                    elector.settings.retry_every
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(started + next) => {}
                _ = gantry_proxy::shutdown_requested(&mut shutdown) => {
                    let was_leading = tx.borrow().is_some();
                    tx.send_replace(None);
                    metrics.leader.set(0);
                    if was_leading {
                        match tokio::time::timeout(Duration::from_secs(2), elector.release()).await {
                            Ok(Ok(())) => tracing::info!(lease = %elector.label(), "released the Lease"),
                            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the Lease"),
                            Err(_) => tracing::warn!(lease = %elector.label(), "could not release the Lease in time"),
                        }
                    }
                    return;
                }
            }
        }
    });
    (Leadership { rx }, task)
}

/// One replica's view of the Lease.
struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The Lease's `resourceVersion` when last read, and when (by our clock) it last changed.
    observed: Option<(String, Instant)>,
}

// === impl Elector ===

impl Elector {
    fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.settings.namespace, self.settings.name)
    }

    fn api_error(&self, source: kube::Error) -> Error {
        Error::Api {
            lease: self.label(),
            source,
        }
    }

    /// One round: create, renew or take over the Lease. Returns whether we hold it now.
    async fn round(&mut self) -> Result<bool, Error> {
        let now = MicroTime(Timestamp::now());
        let duration_secs = i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.settings.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(e) => Err(self.api_error(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() != Some(self.settings.identity.as_str()) {
            let version = lease.metadata.resource_version.clone().unwrap_or_default();
            let observed_at = match &self.observed {
                Some((v, at)) if *v == version => *at,
                _ => {
                    let at = Instant::now();
                    self.observed = Some((version, at));
                    at
                }
            };
            let their_duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.settings.lease_duration);
            if holder.is_some() && observed_at.elapsed() < their_duration {
                return Ok(false);
            }
            // Free or expired: take it over.
            spec.holder_identity = Some(self.settings.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(duration_secs);
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// Gives the Lease up, if we still hold it, so that another replica takes over at once.
    async fn release(&mut self) -> Result<(), Error> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(()),
            Err(e) => Err(self.api_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leadership_ends_at_its_deadline_even_without_news() {
        let (tx, rx) = watch::channel(Some(Instant::now() + Duration::from_secs(13)));
        let leadership = Leadership { rx };
        assert!(leadership.is_leading());
        tokio::time::advance(Duration::from_secs(12)).await;
        assert!(leadership.is_leading());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            !leadership.is_leading(),
            "a stuck renewal must not extend leadership"
        );
        tx.send_replace(None);
        assert!(!leadership.is_leading());
    }
}
