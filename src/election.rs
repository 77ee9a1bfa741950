//! Leader election on a Lease: kube-lease-manager's lock, plus a fast takeover of a Lease its
//! holder released.
//!
//! kube-lease-manager's standby sleeps until the Lease it saw expires before it looks again
//! (`LeaseManager::changed`, `watcher_step`), so a leader that releases the Lease on SIGTERM
//! would still be replaced only at the expiry of its last renewal. Here the standby also reads
//! the Lease every [`POLL`] (a GET, no write) and, when nobody holds it, starts a fresh
//! manager, which takes it at once. The lock itself (server-side apply ownership of
//! `holderIdentity`, renewals, expiry) stays the crate's.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use crate::{Error, Result};

/// How often a standby reads the Lease for a release.
pub const POLL: Duration = Duration::from_millis(500);

/// Who takes part, and the Lease's timings in whole seconds.
#[derive(Clone)]
pub struct Election {
    pub client: Client,
    pub lease: String,
    pub namespace: String,
    pub identity: String,
    pub duration: u64,
    pub grace: u64,
}

/// A running election: whether this replica leads, and how to leave.
pub struct Running {
    pub leader: watch::Receiver<bool>,
    release: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Release the Lease (if held) and stop taking part. Call only once whatever the Lease
    /// guards has stopped.
    pub async fn release(self, timeout: Duration) {
        let _ = self.release.send(());
        match tokio::time::timeout(timeout, self.task).await {
            Ok(_) => {}
            Err(_) => warn!("the lease release did not finish in {}s", timeout.as_secs()),
        }
    }
}

impl Election {
    /// Start taking part; the first manager is built (and the Lease created if missing)
    /// before this returns.
    pub async fn start(self) -> Result<Running> {
        let manager = self.manager().await?;
        let (tx, leader) = watch::channel(false);
        let (release, released) = oneshot::channel();
        let task = tokio::spawn(self.run(manager, tx, released));
        Ok(Running {
            leader,
            release,
            task,
        })
    }

    async fn manager(&self) -> Result<LeaseManager> {
        LeaseManagerBuilder::new(self.client.clone(), &self.lease)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(self.duration)
            .with_grace(self.grace)
            .build()
            .await
            .map_err(|e| Error::Lease(e.to_string()))
    }

    /// Whether nobody holds the Lease now.
    async fn is_free(&self) -> bool {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        match api.get_opt(&self.lease).await {
            Ok(Some(lease)) => lease.spec.and_then(|s| s.holder_identity).is_none(),
            Ok(None) => true,
            Err(error) => {
                debug!(%error, "could not read the lease");
                false
            }
        }
    }

    async fn run(
        self,
        mut manager: LeaseManager,
        tx: watch::Sender<bool>,
        mut released: oneshot::Receiver<()>,
    ) {
        let mut leading = false;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // One `changed()` stays in flight across polls: dropping it mid-lock would leave
            // the manager's idea of the Lease stale.
            let next = {
                let changed = manager.changed();
                tokio::pin!(changed);
                loop {
                    tokio::select! {
                        result = &mut changed => break Step::Changed(result),
                        _ = &mut released => break Step::Release,
                        _ = poll.tick(), if !leading => {
                            if self.is_free().await {
                                break Step::Free;
                            }
                        }
                    }
                }
            };
            match next {
                Step::Changed(Ok(state)) => {
                    leading = state;
                    if tx.send(state).is_err() {
                        break;
                    }
                }
                Step::Changed(Err(error)) => {
                    warn!(%error, "leader election: retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Step::Free => {
                    debug!("the lease is free: taking it now");
                    match self.manager().await {
                        Ok(fresh) => manager = fresh,
                        Err(error) => warn!(%error, "leader election: retrying"),
                    }
                }
                Step::Release => break,
            }
        }
        if leading {
            let _ = tx.send(false);
        }
        match manager.release().await {
            Ok(()) => info!(identity = %self.identity, "lease released"),
            Err(error) => warn!(%error, "could not release the lease"),
        }
    }
}

enum Step {
    Changed(kube_lease_manager::Result<bool>),
    Free,
    Release,
}
