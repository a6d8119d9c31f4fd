//! `megatron-operator`: reconciles MegatronFineTune objects into gangs of rank pods.

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use megatron_operator::{Metrics, Operator, OperatorConfig, client, telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "Kubernetes operator for Megatron-LM BERT fine-tuning jobs (MegatronFineTune)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(Box<OperatorConfig>),
    /// Print the MegatronFineTune CustomResourceDefinition as YAML.
    Crd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", megatron_operator::api::crd_yaml()?);
            Ok(())
        }
        Command::Run(config) => {
            telemetry::init(config.log_format);
            let metrics = Arc::new(Metrics::default());
            let client = client::infer(metrics.clone())
                .await
                .context("connecting to the Kubernetes API")?;
            Operator::new(client, *config, metrics)
                .run(shutdown_signal(), None)
                .await
                .context("megatron-operator stopped")
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
