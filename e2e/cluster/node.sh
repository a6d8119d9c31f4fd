# shellcheck shell=bash
# The real node of the local cluster: the pod network (a Linux bridge), containerd
# with runc, the kubelet, kube-proxy and the local OCI registry the node pulls from.
# Sourced by up and down after lib.sh, never run. Every change this makes to the host
# (bridge, sysctls, iptables rules, mounts, directories, cgroups) is listed here and
# undone by node_clean.
# shellcheck disable=SC2034  # variables are used by the scripts that source this file

NODE_STATE=$STATE/node
CONTAINERD_ROOT=$NODE_STATE/containerd
CONTAINERD_SOCKET=$RUN/containerd.sock
KUBELET_ROOT=$NODE_STATE/kubelet
CNI_CONF_DIR=$NODE_STATE/cni/net.d
REGISTRY_DATA=$DATA/registry
# The registry as the node (and a user's `docker push`) names it.
SYSCTLS_SAVED=$NODE_STATE/host-sysctls.orig
# The kubelet sets these (protectKernelDefaults: false); forwarding and bridge
# netfilter are ours: a pod reaching a Service backed by another pod is routed by the
# host, and the reply must pass conntrack on the bridge to be un-DNATed.
HOST_SYSCTLS=(net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables vm/overcommit_memory
  kernel/panic kernel/panic_on_oops)
# A raw-table rule, before anything kube-proxy or the kubelet add: packets from the
# pod bridge to anything outside 198.18.0.0/15 are dropped.
GUARD_RULE=(PREROUTING -i "$BRIDGE" ! -d "$CLUSTER_RANGE" -m comment --comment megatron-e2e-no-egress -j DROP)
# Directories the kubelet, containerd and libcni create outside the state dir.
HOST_DIRS=(/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/containerd
  /var/lib/containerd /opt/cni)

# The node's addresses, bridge and name are fixed: one cluster per machine. This file
# names the state dir of the cluster that holds them.
NODE_OWNER_FILE=/run/megatron-e2e-node.owner

registry_host() { echo "$NODE_IP:$REGISTRY_PORT"; }

# Fails when another checkout's cluster holds the node (its kubelet is alive).
claim_node() {
  local owner pid
  owner=$(cat "$NODE_OWNER_FILE" 2>/dev/null || true)
  if [[ -n $owner && $owner != "$STATE" && -d $owner ]]; then
    pid=$(cat "$owner/run/kubelet.pid" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ && -e /proc/$pid ]]; then
      die "another cluster ($owner) holds the node $NODE_IP; stop it first: ${owner%/e2e/.cluster}/e2e/cluster/down"
    fi
  fi
  echo "$STATE" >"$NODE_OWNER_FILE"
}
release_node() {
  [[ $(cat "$NODE_OWNER_FILE" 2>/dev/null) == "$STATE" ]] && rm -f "$NODE_OWNER_FILE"
  return 0
}

# --- the pod network ------------------------------------------------------------
node_network_up() {
  mkdir -p "$NODE_STATE"
  claim_node
  record_host_dirs
  if [[ ! -f $SYSCTLS_SAVED ]]; then
    local key
    for key in "${HOST_SYSCTLS[@]}"; do
      [[ -e /proc/sys/$key ]] && echo "$key=$(<"/proc/sys/$key")"
    done >"$SYSCTLS_SAVED"
  fi
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating the pod bridge $BRIDGE ($NODE_IP on $POD_SUBNET)"
    ip link add "$BRIDGE" type bridge
  fi
  ip addr show dev "$BRIDGE" | grep -qF " $NODE_IP/" || ip addr add "$NODE_IP/${POD_SUBNET#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Host-side traffic to Service addresses goes onto the bridge (kube-proxy's DNAT
  # rewrites it there), never towards the default route.
  ip route replace "$SERVICE_CLUSTER_IP_RANGE" dev "$BRIDGE"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  iptables -t raw -C "${GUARD_RULE[@]}" 2>/dev/null || iptables -t raw -I "${GUARD_RULE[@]:0:1}" 1 "${GUARD_RULE[@]:1}"
}

# The CNI network every pod joins: the bridge, addresses from host-local, a route to
# the cluster range only (isDefaultGateway false, ipMasq false).
write_cni_config() {
  mkdir -p "$CNI_CONF_DIR" "$NODE_STATE/cni/ipam"
  cat >"$CNI_CONF_DIR/10-megatron-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "megatron-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE_STATE/cni/ipam",
        "ranges": [[{ "subnet": "$POD_SUBNET", "rangeStart": "$POD_RANGE_START", "gateway": "$NODE_IP" }]],
        "routes": [{ "dst": "$CLUSTER_RANGE" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true }, "snat": false }
  ]
}
EOF
}

# --- containerd -------------------------------------------------------------------
write_containerd_config() {
  local dir
  # The local registry speaks plain HTTP on the node's address. Every other registry name
  # (_default: docker.io, ghcr.io, ...) is served by the same local registry too, so an
  # image named for a remote registry fails to pull here instead of leaving the machine.
  for dir in "$(registry_host)" _default; do
    mkdir -p "$CONTAINERD_ROOT/certs.d/$dir"
    cat >"$CONTAINERD_ROOT/certs.d/$dir/hosts.toml" <<EOF
server = "http://$(registry_host)"
[host."http://$(registry_host)"]
  capabilities = ["pull", "resolve"]
EOF
  done
  cat >"$CONTAINERD_ROOT/config.toml" <<EOF
version = 3
root = "$CONTAINERD_ROOT/root"
state = "$CONTAINERD_ROOT/state"
[grpc]
  address = "$CONTAINERD_SOCKET"
[metrics]
  address = "127.0.0.1:$CONTAINERD_METRICS_PORT"
[plugins."io.containerd.cri.v1.runtime"]
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower a sandbox's oom_score_adj to
  # -998 ("failed to update /proc/self/oom_score_adj: Permission denied"), so scores
  # are clamped to what the process may set.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc || echo /usr/sbin/runc)"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$CNI_CONF_DIR"
[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$(registry_host)/e2e/pause:$KUBERNETES_VERSION"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "$CONTAINERD_ROOT/certs.d"
EOF
}

launch_containerd() {
  write_cni_config
  write_containerd_config
  start_process containerd env PATH="$CONTAINERD_BIN:$PATH" "$CONTAINERD_BIN/containerd" \
    --config "$CONTAINERD_ROOT/config.toml" --log-level warn
}
containerd_ready() { "$CONTAINERD_BIN/ctr" --address "$CONTAINERD_SOCKET" version; }
crictl_node() { "$CRI_TOOLS_BIN/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCKET" "$@"; }

# --- the registry -----------------------------------------------------------------
launch_registry() {
  mkdir -p "$REGISTRY_DATA"
  cat >"$NODE_STATE/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGISTRY_DATA
  delete:
    enabled: true
http:
  addr: $(registry_host)
EOF
  start_process registry env OTEL_TRACES_EXPORTER=none "$REGISTRY_BIN/registry" serve "$NODE_STATE/registry.yml"
}
registry_ready() { curl -fsS --max-time 3 "http://$(registry_host)/v2/" -o /dev/null; }

# --- the kubelet --------------------------------------------------------------------
write_kubelet_config() {
  mkdir -p "$KUBELET_ROOT"
  : >"$NODE_STATE/resolv.conf"
  cat >"$NODE_STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host mounts cgroup v1 controllers. The kubelet refuses cgroup v1 since v1.35
# unless failCgroupV1 is false (KubeletConfiguration.FailCgroupV1, KEP-5573, in
# pkg/kubelet/apis/config/types.go of v1.37.2).
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCKET
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $PKI/ca.crt }
authorization:
  mode: Webhook
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: $CLUSTER_DOMAIN
# Pods get the cluster DNS only: nothing is forwarded to the host's resolver.
resolvConf: $NODE_STATE/resolv.conf
failSwapOn: false
podLogsDir: $NODE_STATE/pod-logs
# The e2e machine's disk is shared with builds: evict only when nearly full.
evictionHard: { memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2% }
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
serializeImagePulls: false
maxPods: 60
EOF
}

launch_kubelet() {
  write_kubelet_config
  start_process kubelet env PATH="$CONTAINERD_BIN:$PATH" "$KUBERNETES_BIN/kubelet" \
    --config "$NODE_STATE/kubelet.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
    --root-dir "$KUBELET_ROOT" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --v 1
}
node_ready() {
  [[ $(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# --- kube-proxy ---------------------------------------------------------------------
launch_kube-proxy() {
  cat >"$NODE_STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $STATE/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_SUBNET
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
# Leave the host's conntrack table sizes alone.
conntrack: { maxPerCore: 0, min: 0 }
EOF
  start_process kube-proxy "$KUBERNETES_BIN/kube-proxy" --config "$NODE_STATE/kube-proxy.yaml"
}
kube_proxy_healthy() { curl -fsS --max-time 3 "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz" -o /dev/null; }

# --- cleaning the host --------------------------------------------------------------
# Kills every container of the node (their shims outlive containerd by design).
kill_node_containers() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCKET" || true); do
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
  local runc_root
  for runc_root in /run/containerd/runc/k8s.io "$CONTAINERD_ROOT/state/runc/k8s.io"; do
    [[ -d $runc_root ]] || continue
    for pid in $(runc --root "$runc_root" list -q 2>/dev/null); do
      runc --root "$runc_root" kill "$pid" KILL 2>/dev/null || true
      runc --root "$runc_root" delete --force "$pid" 2>/dev/null || true
    done
  done
}

# Unmounts everything mounted below DIR, deepest first.
unmount_below() {
  local dir=$1 mnt
  [[ -d $dir ]] || return 0
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done || true
}

# Deletes the kube chains the kubelet and kube-proxy made, in every iptables table,
# their nftables tables, and our guard rule. (Callers run with pipefail: a grep that
# finds nothing must not end the script, hence the `|| true`s.)
remove_kube_rules() {
  local table chain rules chains rule
  for table in filter nat mangle raw; do
    rules=$(iptables -t "$table" -S 2>/dev/null | grep -E '^-A .*(-j|--jump) KUBE-' || true)
    while read -r rule; do
      [[ -n $rule ]] || continue
      # shellcheck disable=SC2086  # iptables-save syntax, word-split on purpose
      eval iptables -t "$table" "-D ${rule#-A }" 2>/dev/null || true
    done <<<"$rules"
    chains=$(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }' || true)
    for chain in $chains; do iptables -t "$table" -F "$chain" 2>/dev/null || true; done
    for chain in $chains; do iptables -t "$table" -X "$chain" 2>/dev/null || true; done
  done
  iptables -t raw -D "${GUARD_RULE[@]}" 2>/dev/null || true
  if command -v nft >/dev/null; then
    nft list tables 2>/dev/null | awk '$3 ~ /^kube/ { print $2, $3 }' | while read -r family name; do
      nft delete table "$family" "$name" 2>/dev/null || true
    done || true
  fi
}

# Removes the kubepods and k8s.io cgroups (empty once the containers are gone).
remove_node_cgroups() {
  local controller dir
  for controller in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    for dir in "$controller"kubepods "$controller"k8s.io; do
      [[ -d $dir ]] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done
  return 0
}

restore_sysctls() {
  [[ -f $SYSCTLS_SAVED ]] || return 0
  local key value
  while IFS='=' read -r key value; do
    [[ -e /proc/sys/$key ]] && echo "$value" >"/proc/sys/$key" 2>/dev/null
  done <"$SYSCTLS_SAVED"
  rm -f "$SYSCTLS_SAVED"
}

# Undoes every host change of the node (after its processes stopped).
node_clean() {
  local owner
  owner=$(cat "$NODE_OWNER_FILE" 2>/dev/null || true)
  if [[ -n $owner && $owner != "$STATE" ]]; then
    log "the node belongs to the cluster in $owner: its host changes are left to its down"
    return 0
  fi
  kill_node_containers
  unmount_below "$NODE_STATE"
  unmount_below /run/containerd
  unmount_below /var/lib/kubelet
  remove_kube_rules
  # Pods' network namespaces (containerd names them cni-*); their veths go with them.
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ { print $1 }'); do
    ip netns del "$ns" 2>/dev/null || true
  done
  ip route del "$SERVICE_CLUSTER_IP_RANGE" dev "$BRIDGE" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  remove_node_cgroups
  restore_sysctls
  remove_host_dirs
  # Containers and address leases are not kept between ups; pulled images (containerd's
  # root) and the registry's images in data/ are.
  rm -rf "$CONTAINERD_ROOT/state" "$KUBELET_ROOT" "$NODE_STATE/cni/ipam"
  release_node
}

# Records which HOST_DIRS existed before the node first ran, so that clean removes
# only what the node made.
record_host_dirs() {
  [[ -f $NODE_STATE/host-dirs.pre ]] && return 0
  local dir
  for dir in "${HOST_DIRS[@]}"; do [[ -e $dir ]] && echo "$dir"; done >"$NODE_STATE/host-dirs.pre"
  return 0
}
remove_host_dirs() {
  [[ -f $NODE_STATE/host-dirs.pre ]] || return 0
  local dir
  for dir in "${HOST_DIRS[@]}"; do
    grep -qxF "$dir" "$NODE_STATE/host-dirs.pre" || rm -rf "$dir"
  done
  rm -f "$NODE_STATE/host-dirs.pre"
}

# --- the node's own images ----------------------------------------------------------
crane_local() { "$CRANE_BIN/crane" --insecure "$@"; }
image_in_registry() { crane_local digest "$(registry_host)/$1" >/dev/null 2>&1; }

# build_and_push REPO:TAG oci-image ARGS...: unless the registry has it already.
build_and_push() {
  local ref=$1 dir
  shift
  image_in_registry "$ref" && return 0
  dir=$NODE_STATE/images/${ref//[:\/]/_}
  log "building image $ref"
  "$REPO_ROOT/scripts/oci-image" --out "$dir" "$@" >&2
  crane_local push "$dir" "$(registry_host)/$ref" >/dev/null 2>"$dir.log" ||
    { cat "$dir.log" >&2; die "pushing $ref to the registry failed"; }
  rm -f "$dir.log"
  rm -rf "$dir"
}

# The sandbox image (pinned in containerd's config) and CoreDNS, as static binaries.
push_node_images() {
  build_and_push "e2e/pause:$KUBERNETES_VERSION" --add "$PAUSE_BIN/pause:/pause" \
    --entrypoint '["/pause"]' --user 65535:65535
  build_and_push "e2e/coredns:$COREDNS_VERSION" --add "$COREDNS_BIN/coredns:/coredns" \
    --entrypoint '["/coredns"]' --user 65532:65532
}

# --- cluster DNS ----------------------------------------------------------------------
apply_coredns() {
  sed -e "s#@IMAGE@#$(registry_host)/e2e/coredns:$COREDNS_VERSION#" \
    -e "s#@CLUSTER_DNS_IP@#$CLUSTER_DNS_IP#" -e "s#@CLUSTER_DOMAIN@#$CLUSTER_DOMAIN#" \
    "$CLUSTER_SCRIPTS_DIR/manifests/coredns.yaml" | kubectl_admin apply -f - >/dev/null
}
# Ready = the cluster DNS Service answers `kubernetes.default.svc` with the kubernetes
# Service's address, asked from the host through kube-proxy's rules (a real DNS query).
coredns_ready() {
  python3 - "$CLUSTER_DNS_IP" "kubernetes.default.svc.$CLUSTER_DOMAIN" "$KUBERNETES_SERVICE_IP" <<'EOF'
import socket, struct, sys
server, name, want = sys.argv[1:]
query = struct.pack(">HHHHHH", 0x4d45, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
query += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(query, (server, 53))
reply = s.recv(512)
sys.exit(0 if socket.inet_aton(want) in reply[len(query):] else 1)
EOF
}
