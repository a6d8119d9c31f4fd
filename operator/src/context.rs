//! What every reconciliation shares: the client, settings, metrics, the Event recorder and
//! the informer caches.

use std::sync::Arc;

use kube::{Client, runtime::events::Recorder};

use crate::{config::OperatorConfig, metrics::Metrics, stores::Stores};

/// Shared state of all reconciliations.
pub struct Context {
    /// API client (with the write-counting layer).
    pub client: Client,
    /// Operator settings.
    pub config: Arc<OperatorConfig>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Informer caches.
    pub stores: Stores,
}
