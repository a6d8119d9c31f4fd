# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Pinned versions of every component the local e2e cluster runs, and where their
# finished binaries live in the cache. Sourced by install, up, down, smoke.

# Must match the k8s-openapi feature the workspace uses (v1_37).
KUBERNETES_VERSION=v1.37.2
# Latest 3.6 patch on the Go module proxy (`go list -m -versions go.etcd.io/etcd/server/v3`).
ETCD_VERSION=v3.6.16
# Latest Helm 3 release on the Go module proxy.
HELM_VERSION=v3.22.0
# SeaweedFS tags ("3.xx") are not semver, so the proxy serves pseudo-versions only;
# this is the newest commit the proxy resolved for `@latest` when pinned.
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6

CLUSTER_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_SCRIPTS_DIR/../.." && pwd)"
CACHE_DIR="$("$REPO_ROOT/scripts/cache-dir")"
BIN_CACHE="$CACHE_DIR/bin"

KUBERNETES_BIN="$BIN_CACHE/kubernetes-$KUBERNETES_VERSION"
ETCD_BIN="$BIN_CACHE/etcd-$ETCD_VERSION"
HELM_BIN="$BIN_CACHE/helm-$HELM_VERSION"
SEAWEEDFS_BIN="$BIN_CACHE/seaweedfs-$SEAWEEDFS_VERSION"

# Runtime state of a started cluster (ignored by git via /e2e/.cluster/).
CLUSTER_STATE_DIR="$REPO_ROOT/e2e/.cluster"
