//! A connection to the local cluster: a kube Client and a kubectl with the right environment.

use std::process::Command;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::env::ClusterEnv;

/// The running local cluster.
#[derive(Clone)]
pub struct Cluster {
    /// Variables from `e2e/.cluster/env`.
    pub env: ClusterEnv,
    /// Admin client.
    pub client: kube::Client,
}

impl Cluster {
    /// Reads `e2e/.cluster/env`, builds an admin client and checks the apiserver answers.
    pub async fn connect() -> anyhow::Result<Self> {
        // ring, explicitly: the workspace also compiles aws-lc-rs (object_store), and rustls
        // refuses to guess. An error means a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let env = ClusterEnv::load()?;
        let path = env.kubeconfig()?;
        let kubeconfig = Kubeconfig::read_from(&path)
            .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading the kubeconfig {}", path.display()))?;
        let client = kube::Client::try_from(config).context("building a kube client")?;
        client.apiserver_version().await.with_context(|| {
            format!(
                "the apiserver in {} does not answer: the local cluster is down. Run e2e/cluster/up",
                path.display()
            )
        })?;
        Ok(Self { env, client })
    }

    /// `kubectl` from the cluster's PATH, with KUBECONFIG and the S3 variables set.
    pub fn kubectl(&self) -> Command {
        let path = self.env.vars.get("PATH").cloned().unwrap_or_default();
        let program = std::env::split_paths(&path)
            .map(|dir| dir.join("kubectl"))
            .find(|p| p.is_file())
            .map(|p| p.into_os_string())
            .unwrap_or_else(|| "kubectl".into());
        let mut cmd = Command::new(program);
        cmd.envs(&self.env.vars);
        cmd
    }

    /// Runs kubectl with `args`; returns stdout, or an error with stderr.
    pub fn kubectl_output(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .kubectl()
            .args(args)
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            anyhow::bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
