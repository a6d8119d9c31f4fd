//! Installs the MegatronFineTune CRD from the committed YAML and waits until it is served.

use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::cluster::Cluster;

/// Field manager the harness applies the CRD with.
pub const FIELD_MANAGER: &str = "megatron-e2e";

/// The committed CRD (crds/megatron.dev_megatronfinetunes.yaml).
pub fn committed_crd() -> anyhow::Result<CustomResourceDefinition> {
    serde_yaml::from_str(crds::crd::COMMITTED_CRD_YAML).context("parsing the committed CRD YAML")
}

impl Cluster {
    /// Server-side applies the committed CRD (forcing ownership) and waits for Established.
    pub async fn install_crd(&self) -> anyhow::Result<CustomResourceDefinition> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crd = committed_crd()?;
        api.patch(
            crds::CRD_NAME,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .context("applying the MegatronFineTune CRD")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let current = api.get(crds::CRD_NAME).await?;
            let established = current
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                return Ok(current);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the MegatronFineTune CRD was not Established within 60s: {:?}",
                    current.status
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
