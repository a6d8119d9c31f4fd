//! Reads `e2e/.cluster/env`, the file `e2e/cluster/up` writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Variables exported by `e2e/.cluster/env` (KUBECONFIG, S3 endpoint and keys, PATH).
#[derive(Clone, Debug)]
pub struct ClusterEnv {
    /// Every `export NAME=VALUE`, with `$VAR`/`${VAR}` expanded from earlier lines or the
    /// process environment.
    pub vars: BTreeMap<String, String>,
}

impl ClusterEnv {
    /// Path of the env file inside the workspace.
    pub fn path() -> PathBuf {
        crate::workspace_root().join("e2e/.cluster/env")
    }

    /// Loads the env file, failing with a clear message when the cluster was never started.
    pub fn load() -> anyhow::Result<Self> {
        let path = Self::path();
        if !path.exists() {
            bail!(
                "{} does not exist: the local cluster is not running. Start it with \
                 `e2e/cluster/install && e2e/cluster/up` from the workspace root, then rerun the tests",
                path.display()
            );
        }
        Self::parse_file(&path)
    }

    /// Parses an env file.
    pub fn parse_file(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self::parse(&text))
    }

    /// Parses `export NAME=VALUE` lines (quotes stripped); other lines are ignored.
    pub fn parse(text: &str) -> Self {
        let mut vars = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("export ") else {
                continue;
            };
            let Some((name, value)) = rest.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').trim_matches('\'');
            let expanded = expand(value, &vars);
            vars.insert(name.trim().to_owned(), expanded);
        }
        Self { vars }
    }

    /// A variable, or an error naming it.
    pub fn get(&self, name: &str) -> anyhow::Result<&str> {
        self.vars.get(name).map(String::as_str).with_context(|| {
            format!(
                "{} does not export {name}; rerun e2e/cluster/up",
                Self::path().display()
            )
        })
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> anyhow::Result<PathBuf> {
        Ok(PathBuf::from(self.get("KUBECONFIG")?))
    }

    /// The S3 endpoint URL of the local object store.
    pub fn s3_endpoint(&self) -> anyhow::Result<&str> {
        self.get("MEGATRON_S3_ENDPOINT")
    }
}

fn expand(value: &str, vars: &BTreeMap<String, String>) -> String {
    let lookup = |name: &str| {
        vars.get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .unwrap_or_default()
    };
    let mut out = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut name = String::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                name.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
        }
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&lookup(&name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exports_and_expands_variables() {
        let env = ClusterEnv::parse(
            "# comment\nexport KUBECONFIG=/x/admin.kubeconfig\nexport A=\"1\"\nexport PATH=/bin/k8s:$A:${A}\n",
        );
        assert_eq!(env.get("KUBECONFIG").unwrap(), "/x/admin.kubeconfig");
        assert_eq!(env.get("PATH").unwrap(), "/bin/k8s:1:1");
        assert!(
            env.get("MISSING")
                .unwrap_err()
                .to_string()
                .contains("MISSING")
        );
    }
}
