//! `process-kubelet`: runs the pods bound to one Node of the local control plane as local
//! processes (see `test_kubelets::process_kubelet`). Stops on SIGINT or SIGTERM: the pods' processes get
//! SIGTERM and a grace period, and the Node is deleted.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use test_kubelets::process_kubelet::{ProcessKubelet, ProcessKubeletConfig};

#[derive(Parser)]
#[command(
    name = "process-kubelet",
    about = "Run the pods of one node as local processes"
)]
struct Args {
    /// Node name to register.
    #[arg(long, default_value = "process-node")]
    node: String,
    /// Kubeconfig of the control plane (admin: the kubelet reads Secrets and requests tokens).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Where pod directories (volumes, logs) go.
    #[arg(long, default_value = "e2e/.cluster/process-kubelet")]
    root: PathBuf,
    /// Directory searched first for a container's command (repeatable), e.g. target/debug.
    #[arg(long = "bin-dir", default_value = "target/debug")]
    bin_dirs: Vec<PathBuf>,
    /// More variables of this environment handed to every container (repeatable).
    #[arg(long = "host-env")]
    host_env: Vec<String>,
    /// First restart back-off in seconds (doubles per restart, up to 300).
    #[arg(long, default_value_t = 10)]
    restart_backoff_seconds: u64,
    /// Grace period for the pods' processes when this kubelet stops.
    #[arg(long, default_value_t = 10)]
    shutdown_grace_seconds: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let absolute = |p: PathBuf| -> Result<PathBuf> {
        Ok(if p.is_absolute() {
            p
        } else {
            std::env::current_dir()?.join(p)
        })
    };
    let bin_dirs = args
        .bin_dirs
        .into_iter()
        .map(absolute)
        .collect::<Result<Vec<_>>>()?;
    let mut config =
        ProcessKubeletConfig::new(&args.node, absolute(args.root)?, bin_dirs, &args.kubeconfig)?;
    config.host_env.extend(args.host_env);
    config.restart_backoff = Duration::from_secs(args.restart_backoff_seconds.max(1));
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(client_config)?;
    let kubelet = ProcessKubelet::start(client, config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("process-kubelet: stopping the pods and deleting the node");
    kubelet
        .shutdown(Duration::from_secs(args.shutdown_grace_seconds))
        .await;
    Ok(())
}
