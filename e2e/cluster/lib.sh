# shellcheck shell=bash
# Shared helpers of up, down, restart-s3 and smoke: state paths, ports, process
# start/stop by pid file, and health probes. Sourced, never run.
# shellcheck disable=SC2034  # variables are used by the scripts that source this file

# shellcheck source=versions.sh
source "$(dirname "${BASH_SOURCE[0]}")/versions.sh"

STATE=$CLUSTER_STATE_DIR
PKI=$STATE/pki
RUN=$STATE/run
LOGS=$STATE/logs
DATA=$STATE/data
PORTS_FILE=$STATE/ports.env
S3_CREDENTIALS_FILE=$STATE/s3-credentials.env
S3_CONFIG=$STATE/s3-identities.json
ADMIN_KUBECONFIG=$STATE/admin.kubeconfig
ENV_FILE=$STATE/env
S3_REGION=us-east-1

# The address plan: every address of the test cluster is inside 198.18.0.0/15 (the
# benchmarking range: nothing outside this machine has it). The host's end of the pod
# bridge is the node's address, where the API server, the S3 server and the registry
# listen, so pods reach them; pods get addresses from the rest of POD_SUBNET and a
# route to 198.18.0.0/15 only (no default route, no masquerade).
CLUSTER_RANGE=198.18.0.0/15
NODE_IP=198.18.0.1
BRIDGE=mgt0
POD_SUBNET=198.18.0.0/16
POD_RANGE_START=198.18.16.1
SERVICE_CLUSTER_IP_RANGE=198.19.0.0/16
KUBERNETES_SERVICE_IP=198.19.0.1
CLUSTER_DNS_IP=198.19.0.10
CLUSTER_DOMAIN=cluster.local
# The node is named by its address: the API server reaches kubelets by hostname
# first, and an IP-literal name is never sent to the host's resolver.
NODE_NAME=$NODE_IP
# Bumped when the state's layout changes (addresses, certificates): up recreates it.
STATE_LAYOUT=2

# Components in start order; down stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler s3 registry containerd kubelet kube-proxy)
# Port variables written to ports.env.
PORT_NAMES=(ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT CONTROLLER_MANAGER_PORT SCHEDULER_PORT
  S3_PORT S3_GRPC_PORT WEED_MASTER_PORT WEED_MASTER_GRPC_PORT WEED_VOLUME_PORT WEED_VOLUME_GRPC_PORT
  WEED_FILER_PORT WEED_FILER_GRPC_PORT REGISTRY_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT
  KUBE_PROXY_HEALTHZ_PORT KUBE_PROXY_METRICS_PORT CONTAINERD_METRICS_PORT)

log() { printf '[%s] %s\n' "${SCRIPT_NAME:-cluster}" "$*" >&2; }
die() {
  printf '[%s] ERROR: %s\n' "${SCRIPT_NAME:-cluster}" "$*" >&2
  exit 1
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Loads ports.env, or picks free loopback ports (outside the ephemeral range) and
# writes it, so every restart of a component reuses the same port.
load_or_pick_ports() {
  if [[ -f $PORTS_FILE ]]; then
    # shellcheck source=/dev/null
    source "$PORTS_FILE"
    return
  fi
  local name port taken=" "
  mkdir -p "$STATE"
  : >"$PORTS_FILE.tmp"
  for name in "${PORT_NAMES[@]}"; do
    while :; do
      port=$((20000 + RANDOM % 12000))
      [[ $taken == *" $port "* ]] && continue
      port_in_use "$port" && continue
      break
    done
    taken+="$port "
    printf '%s=%s\n' "$name" "$port" >>"$PORTS_FILE.tmp"
  done
  mv "$PORTS_FILE.tmp" "$PORTS_FILE"
  # shellcheck source=/dev/null
  source "$PORTS_FILE"
}

pid_file() { echo "$RUN/$1.pid"; }

# Pid of COMPONENT when its recorded process is alive and is ours (its command
# line names this cluster's state dir, which guards against pid reuse).
running_pid() {
  local file pid
  file=$(pid_file "$1")
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$STATE" || return 1
  echo "$pid"
}

# Starts COMMAND... as COMPONENT in its own session, logging to logs/COMPONENT.log.
start_process() {
  local component=$1
  shift
  mkdir -p "$RUN" "$LOGS"
  log "starting $component"
  # The child writes its own pid, then execs, so the pid file names the server itself.
  # shellcheck disable=SC2016  # $$ and $@ expand in the child shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$(pid_file "$component")" "$@" \
    >>"$LOGS/$component.log" 2>&1 </dev/null 9>&- &
  local i
  for i in $(seq 50); do
    [[ -s $(pid_file "$component") ]] && return 0
    sleep 0.1
  done
  die "$component did not start (see $LOGS/$component.log)"
}

# Stops COMPONENT by its pid file: SIGNAL (default TERM), then SIGKILL after 20 s.
stop_process() {
  local component=$1 signal=${2:-TERM} pid i
  if pid=$(running_pid "$component"); then
    log "stopping $component (pid $pid, SIG$signal)"
    kill "-$signal" "$pid" 2>/dev/null || true
    for i in $(seq 200); do
      [[ -e /proc/$pid ]] || break
      sleep 0.1
    done
    if [[ -e /proc/$pid ]]; then
      log "$component did not exit after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while [[ -e /proc/$pid ]]; do sleep 0.1; done
    fi
  fi
  rm -f "$(pid_file "$component")"
}

# wait_for COMPONENT TIMEOUT WHAT CHECK...: polls CHECK until it succeeds.
# Returns 1 when COMPONENT's process exits meanwhile, 2 on timeout.
wait_for() {
  local component=$1 timeout=$2 what=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    running_pid "$component" >/dev/null || return 1
    ((SECONDS < deadline)) || return 2
    sleep 0.5
  done
}

# wait_until COMPONENT TIMEOUT WHAT CHECK...: wait_for, failing with the log tail.
wait_until() {
  local rc=0
  wait_for "$@" || rc=$?
  ((rc == 0)) && return 0
  tail -n 30 "$LOGS/$1.log" >&2 || true
  ((rc == 1)) && die "$1 exited while waiting for $3 (log: $LOGS/$1.log)"
  die "$1: timed out after ${2}s waiting for $3 (log: $LOGS/$1.log)"
}

# curl as the cluster admin (client certificate) against the API server.
admin_curl() {
  curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://$NODE_IP:$APISERVER_PORT$1"
}

# SHA-256 of the request body named in curl args (-T FILE or --data-binary @FILE;
# empty body otherwise). curl 7.88 does not send x-amz-content-sha256 itself, but
# signs a given one, and S3 servers check the body against it.
payload_sha256() {
  local body=/dev/null
  while (($#)); do
    case $1 in
    -T) body=$2 ;;
    --data-binary) [[ $2 == @* ]] && body=${2#@} ;;
    esac
    shift
  done
  sha256sum <"$body" | cut -d' ' -f1
}

# SigV4-signed S3 request: s3_signed PATH [curl args...] (credentials in the args).
s3_signed() {
  local path=$1
  shift
  curl -sS --max-time 30 --aws-sigv4 "aws:amz:$S3_REGION:s3" \
    -H "x-amz-content-sha256: $(payload_sha256 "$@")" "$@" "http://$NODE_IP:$S3_PORT$path"
}

# Signed S3 request as the admin identity, failing on HTTP errors: s3_curl PATH [curl args...].
s3_curl() {
  # shellcheck source=/dev/null
  source "$S3_CREDENTIALS_FILE"
  s3_signed "$1" -f --user "$S3_ADMIN_ACCESS_KEY_ID:$S3_ADMIN_SECRET_ACCESS_KEY" "${@:2}"
}

# Ready = the master is raft leader, it knows every volume on disk (else reads of
# existing objects fail with "volume N not found" for a while after a restart),
# and the S3 gateway answers a signed ListBuckets.
s3_healthy() {
  local master="http://$NODE_IP:$WEED_MASTER_PORT" on_disk known
  curl -fsS --max-time 3 "$master/cluster/status" | grep -q '"IsLeader":true' || return 1
  on_disk=$(find "$DATA/s3" -maxdepth 1 -name '*.dat' | wc -l)
  known=$(curl -fsS --max-time 3 "$master/dir/status" | grep -o '"Volumes":[0-9]*' | awk -F: '{ n += $2 } END { print n + 0 }')
  ((${known:-0} >= on_disk)) || return 1
  s3_curl / -o /dev/null
}

# Starts the SeaweedFS server (master, volume, filer, S3 gateway) and waits for it.
start_s3() {
  launch_s3
  wait_until s3 120 "the S3 gateway to answer signed requests" s3_healthy
}

# Starts the SeaweedFS server (master, volume, filer, S3 gateway) on its ports.
launch_s3() {
  mkdir -p "$DATA/s3"
  # Each bucket is a collection that grows 7 volumes at once by default; 2 keep the
  # volume count (bounded by free disk / volume size) fitting hundreds of buckets.
  # minFreeSpace: the default (1% of the disk, 2.5 GB on a 250 GB disk shared with
  # other machines) turns every volume read-only and each PUT into a 500 while the
  # disk still has room for the few hundred MB the tests write.
  start_process s3 env WEED_MASTER_VOLUME_GROWTH_COPY_1=2 "$SEAWEEDFS_BIN/weed" server \
    -dir="$DATA/s3" -ip="$NODE_IP" -ip.bind="$NODE_IP" \
    -master.port="$WEED_MASTER_PORT" -master.port.grpc="$WEED_MASTER_GRPC_PORT" \
    -master.telemetry=false -master.volumeSizeLimitMB=128 -master.electionTimeout=1s \
    -volume.port="$WEED_VOLUME_PORT" -volume.port.grpc="$WEED_VOLUME_GRPC_PORT" \
    -volume.max=0 -volume.preStopSeconds=0 -volume.minFreeSpace=256MiB \
    -filer -filer.port="$WEED_FILER_PORT" -filer.port.grpc="$WEED_FILER_GRPC_PORT" \
    -filer.localSocket="$RUN/weed-filer.sock" \
    -s3 -s3.port="$S3_PORT" -s3.port.grpc="$S3_GRPC_PORT" \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.localSocket="$RUN/weed-s3.sock" \
    -s3.config="$S3_CONFIG"
}

# Serialises up, down and restart-s3 (e.g. parallel test binaries calling up).
# Servers are started with fd 9 closed so they never hold the lock.
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock 9
}
