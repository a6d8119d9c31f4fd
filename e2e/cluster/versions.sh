# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Pinned versions of every component the local e2e cluster runs, and where their
# finished binaries live in the cache. Sourced by install, up, down, smoke.

# Must match the k8s-openapi feature the workspace uses (v1_37).
KUBERNETES_VERSION=v1.37.2
# Gang scheduling through the scheduling.k8s.io/v1beta1 PodGroup (KEP-4671; beta in 1.37, off
# by default): the gate on the API server, controller manager and scheduler, and the API group.
FEATURE_GATES=GenericWorkload=true
RUNTIME_CONFIG=scheduling.k8s.io/v1beta1=true
# Latest 3.6 patch on the Go module proxy (`go list -m -versions go.etcd.io/etcd/server/v3`).
ETCD_VERSION=v3.6.16
# Latest Helm 3 release on the Go module proxy.
HELM_VERSION=v3.22.0
# SeaweedFS tags ("3.xx") are not semver, so the proxy serves pseudo-versions only;
# this is the newest commit the proxy resolved for `@latest` when pinned.
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6

# The node: a real kubelet and kube-proxy (built with the control plane above) on
# containerd 2.x and runc, CNI bridge networking, CoreDNS, and a local OCI registry
# the node pulls the project's images from (newest tags the Go module proxy served;
# no go.mod of these has replace directives, so each is `go install`ed).
CONTAINERD_VERSION=v2.2.10
CNI_PLUGINS_VERSION=v1.10.0
COREDNS_VERSION=v1.15.0
CRI_TOOLS_VERSION=v1.37.0
DISTRIBUTION_VERSION=v3.1.2
# crane (go-containerregistry) pushes the images made by scripts/images to the registry.
GGCR_VERSION=v0.22.1
# Kueue: the newest release the Go module proxy serves (`go list -m -versions
# sigs.k8s.io/kueue`); no replace directives, so `go install`ed; its Helm chart comes
# from the same module.
KUEUE_VERSION=v0.17.0

CLUSTER_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_SCRIPTS_DIR/../.." && pwd)"
CACHE_DIR="$("$REPO_ROOT/scripts/cache-dir")"
BIN_CACHE="$CACHE_DIR/bin"

KUBERNETES_BIN="$BIN_CACHE/kubernetes-$KUBERNETES_VERSION"
ETCD_BIN="$BIN_CACHE/etcd-$ETCD_VERSION"
HELM_BIN="$BIN_CACHE/helm-$HELM_VERSION"
SEAWEEDFS_BIN="$BIN_CACHE/seaweedfs-$SEAWEEDFS_VERSION"
CONTAINERD_BIN="$BIN_CACHE/containerd-$CONTAINERD_VERSION"
CNI_BIN="$BIN_CACHE/cni-plugins-$CNI_PLUGINS_VERSION"
COREDNS_BIN="$BIN_CACHE/coredns-$COREDNS_VERSION"
CRI_TOOLS_BIN="$BIN_CACHE/cri-tools-$CRI_TOOLS_VERSION"
REGISTRY_BIN="$BIN_CACHE/distribution-$DISTRIBUTION_VERSION"
CRANE_BIN="$BIN_CACHE/crane-$GGCR_VERSION"
KUEUE_BIN="$BIN_CACHE/kueue-$KUEUE_VERSION"
# The pause binary (the kubelet's sandbox image), compiled from the Kubernetes source.
PAUSE_BIN="$BIN_CACHE/pause-$KUBERNETES_VERSION"

# Runtime state of a started cluster (ignored by git via /e2e/.cluster/).
CLUSTER_STATE_DIR="$REPO_ROOT/e2e/.cluster"
