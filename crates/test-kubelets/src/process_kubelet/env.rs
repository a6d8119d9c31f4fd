//! A container's environment, resolved as the kubelet does: `envFrom` first, then `env` in
//! order (later entries win), values from `fieldRef` (downward API), `resourceFieldRef`,
//! `secretKeyRef` and `configMapKeyRef` read through the API, and `$(VAR)` references expanded.
//!
//! Then the process-kubelet rewrites: a value naming a path under a volume mount is pointed at
//! the materialised directory, and a cluster DNS name (`<pod>.<svc>.<ns>.svc...`) becomes
//! 127.0.0.1 (every pod of this node runs on this host). Secret values are never rewritten or
//! logged.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Container, EnvVarSource, ObjectFieldSelector, Pod, Secret},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{Api, Client, ResourceExt};

/// One resolved variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvValue {
    /// Variable name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Whether it came from a Secret (never logged, never rewritten).
    pub secret: bool,
}

/// Variables in definition order; setting a name again replaces its value in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvList(pub Vec<EnvValue>);

impl EnvList {
    /// Sets `name`, replacing an earlier value.
    pub fn set(&mut self, name: &str, value: String, secret: bool) {
        match self.0.iter_mut().find(|e| e.name == name) {
            Some(slot) => {
                slot.value = value;
                slot.secret = secret;
            }
            None => self.0.push(EnvValue {
                name: name.to_owned(),
                value,
                secret,
            }),
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.as_str())
    }

    /// The variables as a map (for `$(VAR)` expansion).
    pub fn map(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    }
}

/// Reads Secrets and ConfigMaps of one namespace, each once per pod start.
pub struct Sources {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    secret_cache: BTreeMap<String, Option<Secret>>,
    config_map_cache: BTreeMap<String, Option<ConfigMap>>,
}

impl Sources {
    /// Sources of `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            secret_cache: BTreeMap::new(),
            config_map_cache: BTreeMap::new(),
        }
    }

    /// Secret `name`, or None when it does not exist.
    pub async fn secret(&mut self, name: &str) -> Result<Option<Secret>> {
        if !self.secret_cache.contains_key(name) {
            let secret = self
                .secrets
                .get_opt(name)
                .await
                .with_context(|| format!("reading Secret {name}"))?;
            self.secret_cache.insert(name.to_owned(), secret);
        }
        Ok(self.secret_cache[name].clone())
    }

    /// ConfigMap `name`, or None when it does not exist.
    pub async fn config_map(&mut self, name: &str) -> Result<Option<ConfigMap>> {
        if !self.config_map_cache.contains_key(name) {
            let cm = self
                .config_maps
                .get_opt(name)
                .await
                .with_context(|| format!("reading ConfigMap {name}"))?;
            self.config_map_cache.insert(name.to_owned(), cm);
        }
        Ok(self.config_map_cache[name].clone())
    }
}

/// The string data of a Secret (`data` decoded, `stringData` is folded in by the API server).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// The data of a ConfigMap (`data` and `binaryData`).
pub fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .binary_data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in cm.data.clone().unwrap_or_default() {
        out.insert(k, v.into_bytes());
    }
    out
}

/// A downward-API field of `pod` (`metadata.name`, `metadata.labels['k']`, `status.podIP`, ...).
pub fn field_value(pod: &Pod, selector: &ObjectFieldSelector) -> Result<String> {
    let path = selector.field_path.as_str();
    let spec = pod.spec.clone().unwrap_or_default();
    let keyed = |prefix: &str, map: &BTreeMap<String, String>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.get(key).cloned().unwrap_or_default())
    };
    if let Some(v) = keyed("metadata.labels['", pod.labels()) {
        return Ok(v);
    }
    if let Some(v) = keyed("metadata.annotations['", pod.annotations()) {
        return Ok(v);
    }
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" | "status.podIP" => "127.0.0.1".to_owned(),
        "status.hostIPs" | "status.podIPs" => "127.0.0.1".to_owned(),
        other => bail!(
            "fieldRef {other:?} is not supported (use metadata.name, metadata.namespace, \
             metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, \
             spec.serviceAccountName, status.podIP or status.hostIP)"
        ),
    })
}

/// A `resourceFieldRef` value: the container's limit or request as written (divisor 1 only).
pub fn resource_value(container: &Container, resource: &str, divisor: Option<&Quantity>) -> String {
    let resources = container.resources.clone().unwrap_or_default();
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let map = if kind == "requests" {
        resources.requests
    } else {
        resources.limits
    }
    .unwrap_or_default();
    if divisor.is_some_and(|d| d.0 != "1") {
        eprintln!(
            "process-kubelet: resourceFieldRef {resource}: divisors are ignored, the quantity is passed as written"
        );
    }
    map.get(name).map(|q| q.0.clone()).unwrap_or_default()
}

/// Resolves one `valueFrom`; `Ok(None)` when an optional source is missing.
async fn value_from(
    sources: &mut Sources,
    pod: &Pod,
    container: &Container,
    var: &str,
    from: &EnvVarSource,
) -> Result<Option<(String, bool)>> {
    if let Some(field) = &from.field_ref {
        return Ok(Some((field_value(pod, field)?, false)));
    }
    if let Some(r) = &from.resource_field_ref {
        return Ok(Some((
            resource_value(container, &r.resource, r.divisor.as_ref()),
            false,
        )));
    }
    if let Some(sel) = &from.secret_key_ref {
        let optional = sel.optional == Some(true);
        let Some(secret) = sources.secret(&sel.name).await? else {
            if optional {
                return Ok(None);
            }
            bail!(
                "env {var}: Secret {:?} does not exist in namespace {} (create it, or mark the reference optional)",
                sel.name,
                pod.namespace().unwrap_or_default()
            );
        };
        let Some(bytes) = secret_data(&secret).remove(&sel.key) else {
            if optional {
                return Ok(None);
            }
            bail!("env {var}: Secret {:?} has no key {:?}", sel.name, sel.key);
        };
        let value = String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "env {var}: Secret {:?} key {:?} is not UTF-8",
                sel.name,
                sel.key
            )
        })?;
        return Ok(Some((value, true)));
    }
    if let Some(sel) = &from.config_map_key_ref {
        let optional = sel.optional == Some(true);
        let Some(cm) = sources.config_map(&sel.name).await? else {
            if optional {
                return Ok(None);
            }
            bail!(
                "env {var}: ConfigMap {:?} does not exist in namespace {}",
                sel.name,
                pod.namespace().unwrap_or_default()
            );
        };
        let Some(bytes) = config_map_data(&cm).remove(&sel.key) else {
            if optional {
                return Ok(None);
            }
            bail!(
                "env {var}: ConfigMap {:?} has no key {:?}",
                sel.name,
                sel.key
            );
        };
        return Ok(Some((String::from_utf8_lossy(&bytes).into_owned(), false)));
    }
    bail!("env {var}: valueFrom names no source")
}

/// The container's own environment (`envFrom`, then `env`), with `$(VAR)` expanded; `base`
/// holds variables defined before (lowest precedence, visible to expansion).
pub async fn resolve(
    sources: &mut Sources,
    pod: &Pod,
    container: &Container,
    base: EnvList,
) -> Result<EnvList> {
    let mut env = base;
    for from in container.env_from.clone().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_map(&r.name).await? {
                Some(cm) => {
                    for (k, v) in config_map_data(&cm) {
                        env.set(
                            &format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                            false,
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => bail!("envFrom: ConfigMap {:?} does not exist", r.name),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secret(&r.name).await? {
                Some(secret) => {
                    for (k, v) in secret_data(&secret) {
                        env.set(
                            &format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                            true,
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => bail!("envFrom: Secret {:?} does not exist", r.name),
            }
        }
    }
    for var in container.env.clone().unwrap_or_default() {
        if let Some(from) = &var.value_from {
            if let Some((value, secret)) =
                value_from(sources, pod, container, &var.name, from).await?
            {
                env.set(&var.name, value, secret);
            }
        } else {
            let raw = var.value.as_deref().unwrap_or_default();
            let value = expand(raw, &env.map());
            // A value built from a secret variable is a secret too.
            let secret = env
                .0
                .iter()
                .any(|v| v.secret && raw.contains(&format!("$({})", v.name)));
            env.set(&var.name, value, secret);
        }
    }
    Ok(env)
}

/// Expands `$(VAR)` from `vars` as the kubelet does: `$$` is a literal `$`, unknown references
/// stay as written.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Whether `host` is a cluster DNS name (`<...>.svc` or `<...>.svc.cluster.local`).
fn is_cluster_dns_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let stem = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"));
    stem.is_some_and(|s| {
        s.contains('.')
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    })
}

/// `value` with a cluster DNS host name (alone, as `host:port`, or in a URL) replaced by
/// 127.0.0.1; None when it names none.
pub fn rewrite_cluster_dns(value: &str) -> Option<String> {
    let (scheme, rest) = match value.find("://") {
        Some(i) => value.split_at(i + 3),
        None => ("", value),
    };
    let end = rest.find([':', '/']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(end);
    is_cluster_dns_name(host).then(|| format!("{scheme}127.0.0.1{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_the_kubelet() {
        let vars = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    #[test]
    fn rewrites_cluster_dns_names_only() {
        assert_eq!(
            rewrite_cluster_dns("job-0.job.ns.svc").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            rewrite_cluster_dns("job-0.job.ns.svc.cluster.local:29500").as_deref(),
            Some("127.0.0.1:29500")
        );
        assert_eq!(
            rewrite_cluster_dns("http://minio.store.svc:9000/b").as_deref(),
            Some("http://127.0.0.1:9000/b")
        );
        assert_eq!(rewrite_cluster_dns("example.com"), None);
        assert_eq!(rewrite_cluster_dns("/etc/megatron/spec.yaml"), None);
        assert_eq!(rewrite_cluster_dns("svc"), None);
        assert_eq!(rewrite_cluster_dns("a.svc"), None);
    }

    #[test]
    fn later_definitions_replace_earlier_ones_in_place() {
        let mut env = EnvList::default();
        env.set("A", "1".into(), false);
        env.set("B", "2".into(), false);
        env.set("A", "3".into(), true);
        assert_eq!(env.0.len(), 2);
        assert_eq!(env.get("A"), Some("3"));
        assert!(env.0[0].secret);
    }
}
