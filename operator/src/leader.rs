//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas can run and only one reconciles.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};

/// Where the Lease lives and how long a holder keeps it without renewing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease object name.
    pub name: String,
    /// Namespace of the Lease (normally the operator's own).
    pub namespace: String,
    /// This replica's identity (the pod name in a cluster).
    pub identity: String,
    /// Seconds a lock stays valid after the last renewal.
    pub duration: Duration,
    /// Seconds before expiry at which the holder renews.
    pub grace: Duration,
}

/// A running election: `is_leader` flips as the lock is won or lost.
pub struct Election {
    /// Current lock state of this replica.
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Election {
    /// Joins the election; the background task keeps trying to take or renew the lock.
    pub async fn start(client: Client, config: &LeaseConfig) -> Result<Self, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            // One field manager per replica: the lock is a server-side apply of
            // holderIdentity, and only distinct managers make a concurrent
            // acquisition conflict (409) instead of silently overwriting, which
            // let two replicas both believe they led until the next renewal.
            .with_field_manager(field_manager(&config.identity))
            .with_duration(config.duration.as_secs().max(2))
            .with_grace(config.grace.as_secs().max(1))
            .build()
            .await?;
        let (is_leader, task) = manager.watch().await;
        Ok(Self { is_leader, task })
    }

    /// Waits until this replica holds the lock. Returns `false` if the election task ended first.
    pub async fn wait_for_leadership(&mut self) -> bool {
        self.is_leader.wait_for(|leader| *leader).await.is_ok()
    }

    /// Resolves when leadership is lost (or the election task died).
    pub async fn lost(&mut self) {
        let _ = self.is_leader.wait_for(|leader| !*leader).await;
    }

    /// Steps down: closes the channel, which makes the task release the Lease, and waits for it.
    pub async fn resign(self) {
        drop(self.is_leader);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(error)) => tracing::warn!(%error, "could not release the leader lease"),
            Err(error) => tracing::warn!(%error, "leader election task failed"),
        }
    }
}

/// This replica's field manager for the Lease (Kubernetes allows 128 characters).
fn field_manager(identity: &str) -> String {
    format!("megatron-operator-leader-{identity}")
        .chars()
        .take(128)
        .collect()
}
