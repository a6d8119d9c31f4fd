//! Builds the operator's API client with the write-counting layer.

use std::sync::Arc;

use kube::{Client, Config, client::ClientBuilder};

use crate::{api_writes, metrics::Metrics};

/// Installs ring as rustls's process-wide crypto provider. When several providers are compiled
/// in (the workspace's S3 client brings aws-lc-rs), rustls cannot choose one by itself.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client from `config` whose non-read requests are counted in `metrics.api_writes`.
pub fn build(config: Config, metrics: Arc<Metrics>) -> Result<Client, kube::Error> {
    install_crypto_provider();
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&api_writes::layer(metrics))
        .build())
}

/// The same, from the ambient configuration (in-cluster or KUBECONFIG).
pub async fn infer(metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    let config = Config::infer().await?;
    Ok(build(config, metrics)?)
}
