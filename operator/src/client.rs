//! Builds the operator's API client with the write-counting layer.

use std::sync::Arc;

use kube::{Client, Config, client::ClientBuilder};

use crate::{api_writes, metrics::Metrics};

/// A client from `config` whose non-read requests are counted in `metrics.api_writes`.
pub fn build(config: Config, metrics: Arc<Metrics>) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&api_writes::layer(metrics))
        .build())
}

/// The same, from the ambient configuration (in-cluster or KUBECONFIG).
pub async fn infer(metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    let config = Config::infer().await?;
    Ok(build(config, metrics)?)
}
