//! Pod volumes materialised as directories of a per-pod directory, and the map from a
//! container's mount paths to them.
//!
//! Supported: `configMap`, `secret`, `emptyDir`, `downwardAPI`, `projected` (service-account
//! token through the TokenRequest API, ConfigMap, Secret, downward API) and `hostPath` (used in
//! place). Files are written once when the pod starts (no live updates).

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use k8s_openapi::{
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, Client, ResourceExt, api::PostParams};

use super::env::{Sources, config_map_data, field_value, resource_value, secret_data};

/// Where the service-account admission plugin mounts the API credentials.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A container's mount paths and the host paths behind them, longest mount path first.
#[derive(Clone, Debug, Default)]
pub struct Mounts(Vec<(String, PathBuf)>);

impl Mounts {
    /// Adds `mount_path` backed by `host`.
    pub fn add(&mut self, mount_path: &str, host: PathBuf) {
        let mount = mount_path.trim_end_matches('/').to_owned();
        if mount.is_empty() {
            eprintln!("process-kubelet: a mount at / cannot be emulated; ignored");
            return;
        }
        self.0.push((mount, host));
        self.0.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
    }

    /// The host path behind container path `path`, when it lies under a mount.
    pub fn rewrite(&self, path: &str) -> Option<String> {
        self.0.iter().find_map(|(mount, host)| {
            let rest = path.strip_prefix(mount.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| format!("{}{rest}", host.display()))
        })
    }

    /// The host path of mount `mount_path`.
    pub fn host_of(&self, mount_path: &str) -> Option<&Path> {
        let mount = mount_path.trim_end_matches('/');
        self.0
            .iter()
            .find(|(m, _)| m == mount)
            .map(|(_, h)| h.as_path())
    }
}

/// Token files written for projected `serviceAccountToken` sources, to renew later.
#[derive(Clone, Debug)]
pub struct TokenFile {
    /// Where the token lives.
    pub path: PathBuf,
    /// Audiences asked for (empty = the API server's).
    pub audiences: Vec<String>,
    /// Requested lifetime.
    pub expiration_seconds: i64,
}

/// The pod's volumes: name → host directory (or file for hostPath files).
#[derive(Clone, Debug, Default)]
pub struct Volumes {
    /// Host path of each volume.
    pub paths: BTreeMap<String, PathBuf>,
    /// Service-account tokens to renew.
    pub tokens: Vec<TokenFile>,
}

fn write_file(dir: &Path, rel: &str, bytes: &[u8], mode: Option<i32>) -> Result<()> {
    if rel.starts_with('/') || rel.split('/').any(|p| p == "..") {
        bail!("item path {rel:?} must be relative and must not contain '..'");
    }
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Replace a read-only file from an earlier start.
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    if let Some(mode) = mode {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode as u32 & 0o777))?;
    }
    Ok(())
}

/// Writes `data` (all keys, or `items`) into `dir`.
fn write_keys(
    dir: &Path,
    what: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<()> {
    match items {
        None => {
            for (key, bytes) in data {
                write_file(dir, key, bytes, default_mode)?;
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => write_file(dir, &item.path, bytes, item.mode.or(default_mode))?,
                    None if optional => {}
                    None => bail!("{what} has no key {:?}", item.key),
                }
            }
        }
    }
    Ok(())
}

fn write_downward(
    dir: &Path,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
) -> Result<()> {
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            field_value(pod, field)?
        } else if let Some(r) = &item.resource_field_ref {
            let spec = pod.spec.clone().unwrap_or_default();
            let container = spec
                .containers
                .iter()
                .find(|c| Some(&c.name) == r.container_name.as_ref())
                .or(spec.containers.first())
                .cloned()
                .unwrap_or_default();
            resource_value(&container, &r.resource, r.divisor.as_ref())
        } else {
            bail!("downwardAPI item {:?} names no field", item.path);
        };
        write_file(
            dir,
            &item.path,
            value.as_bytes(),
            item.mode.or(default_mode),
        )?;
    }
    Ok(())
}

/// Asks the API server for a token of the pod's ServiceAccount, bound to the pod.
pub async fn request_token(
    client: &Client,
    pod: &Pod,
    audiences: &[String],
    expiration_seconds: i64,
) -> Result<String> {
    let namespace = pod.namespace().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let request = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: Some(TokenRequestSpec {
            attestations: None,
            audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
        }),
        status: None,
    };
    let response = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .with_context(|| {
            format!(
                "requesting a token for ServiceAccount {namespace}/{account} (TokenRequest API)"
            )
        })?;
    response
        .status
        .and_then(|s| s.token)
        .context("the TokenRequest answer has no token")
}

/// Re-requests every token of `volumes` and rewrites its file.
pub async fn renew_tokens(client: &Client, pod: &Pod, volumes: &Volumes) -> Result<()> {
    for token in &volumes.tokens {
        let value = request_token(client, pod, &token.audiences, token.expiration_seconds).await?;
        let dir = token.path.parent().unwrap_or(Path::new("."));
        let name = token
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        write_file(dir, &name, value.as_bytes(), Some(0o600))?;
    }
    Ok(())
}

async fn materialise_one(
    client: &Client,
    sources: &mut Sources,
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
    tokens: &mut Vec<TokenFile>,
) -> Result<Option<PathBuf>> {
    if let Some(host) = &volume.host_path {
        return Ok(Some(PathBuf::from(&host.path)));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(empty) = &volume.empty_dir {
        if empty.medium.as_deref() == Some("Memory") || empty.size_limit.is_some() {
            eprintln!(
                "process-kubelet: volume {}: emptyDir medium/sizeLimit ignored (a plain directory)",
                volume.name
            );
        }
    } else if let Some(cm) = &volume.config_map {
        let optional = cm.optional == Some(true);
        match sources.config_map(&cm.name).await? {
            Some(found) => write_keys(
                dir,
                &format!("ConfigMap {:?}", cm.name),
                &config_map_data(&found),
                cm.items.as_ref(),
                cm.default_mode.or(Some(0o644)),
                optional,
            )?,
            None if optional => {}
            None => bail!("ConfigMap {:?} does not exist", cm.name),
        }
    } else if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let optional = secret.optional == Some(true);
        match sources.secret(&name).await? {
            Some(found) => write_keys(
                dir,
                &format!("Secret {name:?}"),
                &secret_data(&found),
                secret.items.as_ref(),
                secret.default_mode.or(Some(0o644)),
                optional,
            )?,
            None if optional => {}
            None => bail!("Secret {name:?} does not exist"),
        }
    } else if let Some(downward) = &volume.downward_api {
        write_downward(
            dir,
            pod,
            downward.items.as_deref().unwrap_or_default(),
            downward.default_mode,
        )?;
    } else if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.or(Some(0o644));
        for source in projected.sources.clone().unwrap_or_default() {
            if let Some(token) = &source.service_account_token {
                let audiences: Vec<String> = token.audience.clone().into_iter().collect();
                let expiration = token.expiration_seconds.unwrap_or(3607);
                let value = request_token(client, pod, &audiences, expiration).await?;
                write_file(dir, &token.path, value.as_bytes(), Some(0o600))?;
                tokens.push(TokenFile {
                    path: dir.join(&token.path),
                    audiences,
                    expiration_seconds: expiration,
                });
            }
            if let Some(cm) = &source.config_map {
                let optional = cm.optional == Some(true);
                match sources.config_map(&cm.name).await? {
                    Some(found) => write_keys(
                        dir,
                        &format!("ConfigMap {:?}", cm.name),
                        &config_map_data(&found),
                        cm.items.as_ref(),
                        mode,
                        optional,
                    )?,
                    None if optional => {}
                    None => bail!("ConfigMap {:?} does not exist", cm.name),
                }
            }
            if let Some(secret) = &source.secret {
                let optional = secret.optional == Some(true);
                match sources.secret(&secret.name).await? {
                    Some(found) => write_keys(
                        dir,
                        &format!("Secret {:?}", secret.name),
                        &secret_data(&found),
                        secret.items.as_ref(),
                        mode,
                        optional,
                    )?,
                    None if optional => {}
                    None => bail!("Secret {:?} does not exist", secret.name),
                }
            }
            if let Some(downward) = &source.downward_api {
                write_downward(
                    dir,
                    pod,
                    downward.items.as_deref().unwrap_or_default(),
                    mode,
                )?;
            }
            if source.cluster_trust_bundle.is_some() || source.pod_certificate.is_some() {
                eprintln!(
                    "process-kubelet: volume {}: clusterTrustBundle/podCertificate sources ignored",
                    volume.name
                );
            }
        }
    } else {
        let kind = serde_json::to_value(volume)
            .ok()
            .and_then(|v| {
                v.as_object()
                    .and_then(|o| o.keys().find(|k| *k != "name").cloned())
            })
            .unwrap_or_else(|| "unknown".into());
        bail!(
            "{kind} volumes are not supported by the process kubelet (use configMap, secret, \
             emptyDir, downwardAPI, projected or hostPath)"
        );
    }
    Ok(Some(dir.to_path_buf()))
}

/// Materialises every volume of `pod` under `root` (one directory per volume).
pub async fn materialise(
    client: &Client,
    sources: &mut Sources,
    pod: &Pod,
    root: &Path,
) -> Result<Volumes> {
    let mut out = Volumes::default();
    for volume in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
    {
        let dir = root.join(&volume.name);
        let path = materialise_one(client, sources, pod, &volume, &dir, &mut out.tokens)
            .await
            .with_context(|| format!("volume {:?}", volume.name))?;
        if let Some(path) = path {
            out.paths.insert(volume.name.clone(), path);
        }
    }
    Ok(out)
}

/// The mounts of `container` over the materialised `volumes`.
pub fn container_mounts(container: &Container, volumes: &Volumes) -> Result<Mounts> {
    let mut mounts = Mounts::default();
    for mount in container.volume_mounts.clone().unwrap_or_default() {
        let base = volumes.paths.get(&mount.name).with_context(|| {
            format!(
                "container {:?} mounts volume {:?}, which the pod does not define",
                container.name, mount.name
            )
        })?;
        let host = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                    bail!(
                        "volumeMount {:?}: subPath {sub:?} must be relative",
                        mount.name
                    );
                }
                base.join(sub)
            }
            None => base.clone(),
        };
        mounts.add(&mount.mount_path, host);
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_paths_under_the_longest_mount() {
        let mut m = Mounts::default();
        m.add("/etc/megatron", PathBuf::from("/p/config"));
        m.add("/etc/megatron/extra/", PathBuf::from("/p/extra"));
        m.add("/dev/shm", PathBuf::from("/p/dshm"));
        assert_eq!(
            m.rewrite("/etc/megatron/spec.yaml").as_deref(),
            Some("/p/config/spec.yaml")
        );
        assert_eq!(
            m.rewrite("/etc/megatron/extra/a").as_deref(),
            Some("/p/extra/a")
        );
        assert_eq!(m.rewrite("/etc/megatron").as_deref(), Some("/p/config"));
        assert_eq!(m.rewrite("/etc/megatronx"), None);
        assert_eq!(m.rewrite("relative/etc/megatron"), None);
        assert_eq!(m.host_of("/dev/shm/"), Some(Path::new("/p/dshm")));
    }

    #[test]
    fn item_paths_stay_inside_the_volume() {
        let dir = std::env::temp_dir().join(format!("pk-vol-{}", std::process::id()));
        assert!(write_file(&dir, "../x", b"a", None).is_err());
        assert!(write_file(&dir, "/x", b"a", None).is_err());
        write_file(&dir, "a/b.txt", b"hi", Some(0o444)).unwrap();
        // A second start replaces the read-only file.
        write_file(&dir, "a/b.txt", b"ho", Some(0o444)).unwrap();
        assert_eq!(std::fs::read(dir.join("a/b.txt")).unwrap(), b"ho");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
