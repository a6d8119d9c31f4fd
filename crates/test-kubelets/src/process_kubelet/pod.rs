//! One pod on the process kubelet: its directory, volumes, service-account credentials and
//! environment, one supervised process per container with the kubelet's restart policy and
//! back-off, the pod status reported through the API, and graceful termination on deletion.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use k8s_openapi::{
    api::core::v1::{Container, Pod},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use tokio::{
    sync::{Mutex, watch},
    task::JoinSet,
};

use super::{
    ProcessKubeletConfig,
    env::{self, EnvList, Sources},
    process::{self, Exit, ProcessSpec},
    volumes::{self, Mounts, SERVICE_ACCOUNT_MOUNT, Volumes},
};
use crate::kubelet::{
    confirm_deletion, now_time, pod_conditions, running_state, terminated_state, waiting_state,
};

/// Why a pod's containers are being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The pod is being deleted: stop with this grace, then confirm the deletion.
    Delete(Duration),
    /// The kubelet shuts down (or the pod vanished): stop with this grace, touch nothing.
    Shutdown(Duration),
}

impl Stop {
    fn grace(self) -> Duration {
        match self {
            Stop::Delete(g) | Stop::Shutdown(g) => g,
        }
    }
}

/// What the kubelet keeps about a supervised pod.
pub struct PodHandle {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The pod's directory.
    pub dir: PathBuf,
    /// Sends the stop request.
    pub stop: watch::Sender<Option<Stop>>,
    /// The supervisor task.
    pub task: tokio::task::JoinHandle<()>,
    /// Live pids and current log file per container.
    pub live: Arc<std::sync::Mutex<BTreeMap<String, LiveContainer>>>,
    /// When this kubelet took the pod on.
    pub since: Instant,
}

/// A container's current process and log.
#[derive(Clone, Debug)]
pub struct LiveContainer {
    /// Pid (and process group) of the running instance; None between instances.
    pub pid: Option<u32>,
    /// Log file of the current (or last) instance.
    pub log: PathBuf,
}

/// The status of one container as reported.
#[derive(Clone, Debug)]
struct Record {
    name: String,
    image: String,
    restart_count: i32,
    state: Value,
    last_state: Option<Value>,
    ready: bool,
    started: bool,
    container_id: String,
    /// Terminated for good (no restart coming).
    done: Option<i32>,
    /// Has run at least once.
    ever_started: bool,
}

impl Record {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
        });
        if !self.container_id.is_empty() {
            v["containerID"] = json!(self.container_id);
        }
        if let Some(last) = &self.last_state {
            v["lastState"] = last.clone();
        }
        v
    }
}

/// The pod-wide status board; publishing holds its lock, so patches go out in order.
struct Board {
    pods: Api<Pod>,
    name: String,
    records: Vec<Record>,
    start_time: Time,
}

impl Board {
    fn phase(&self) -> &'static str {
        if self.records.iter().all(|r| r.done.is_some()) {
            if self.records.iter().all(|r| r.done == Some(0)) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if self.records.iter().any(|r| r.ever_started) {
            "Running"
        } else {
            "Pending"
        }
    }

    async fn publish(&self) {
        let ready = self.records.iter().all(|r| r.ready);
        let patch = json!({
            "status": {
                "phase": self.phase(),
                "hostIP": "127.0.0.1",
                "hostIPs": [{ "ip": "127.0.0.1" }],
                "podIP": "127.0.0.1",
                "podIPs": [{ "ip": "127.0.0.1" }],
                "startTime": self.start_time,
                "conditions": pod_conditions(ready),
                "containerStatuses": self.records.iter().map(Record::to_json).collect::<Vec<_>>(),
            }
        });
        if let Err(e) = self
            .pods
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            // A pod deleted meanwhile has nothing left to report to.
            if !matches!(&e, kube::Error::Api(s) if s.is_not_found()) {
                eprintln!(
                    "process-kubelet: reporting status of pod {}: {e}",
                    self.name
                );
            }
        }
    }
}

/// Everything one container needs to (re)start.
struct Prepared {
    index: usize,
    spec: ProcessSpec,
    logs: PathBuf,
    termination_file: PathBuf,
    fallback_to_logs: bool,
}

/// The pod's directory: `<root>/<namespace>_<name>_<uid>`.
pub fn pod_dir(root: &Path, pod: &Pod) -> PathBuf {
    root.join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
}

fn grace_of(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

/// The grace period for stopping `pod` now.
pub fn deletion_stop(pod: &Pod) -> Stop {
    Stop::Delete(grace_of(pod))
}

/// Logs, once per pod, what the process kubelet cannot emulate.
fn note_ignored(pod: &Pod, c: &Container, program: &Path) {
    let who = format!(
        "{}/{} {}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        c.name
    );
    if let Some(image) = &c.image {
        eprintln!(
            "process-kubelet: {who}: image {image} ignored, runs {}",
            program.display()
        );
    }
    if c.resources
        .as_ref()
        .is_some_and(|r| r.limits.is_some() || r.requests.is_some())
    {
        eprintln!("process-kubelet: {who}: resource requests/limits not enforced");
    }
    if c.security_context.is_some()
        || pod
            .spec
            .as_ref()
            .is_some_and(|s| s.security_context.is_some())
    {
        eprintln!("process-kubelet: {who}: securityContext ignored (runs as the kubelet's user)");
    }
    if c.readiness_probe.is_some() || c.liveness_probe.is_some() || c.startup_probe.is_some() {
        eprintln!("process-kubelet: {who}: probes ignored (ready once running)");
    }
    if c.lifecycle.is_some() {
        eprintln!("process-kubelet: {who}: lifecycle hooks ignored");
    }
    for port in c.ports.clone().unwrap_or_default() {
        eprintln!(
            "process-kubelet: {who}: containerPort {} is a port of this host (pods share its network)",
            port.container_port
        );
    }
}

/// Finds `command` in the bin dirs, then in `path`.
fn resolve_program(
    command: &str,
    mounts: &Mounts,
    bin_dirs: &[PathBuf],
    path: &str,
) -> Result<PathBuf> {
    if command.contains('/') {
        let host = mounts
            .rewrite(command)
            .unwrap_or_else(|| command.to_owned());
        return Ok(PathBuf::from(host));
    }
    let candidates = bin_dirs
        .iter()
        .cloned()
        .chain(std::env::split_paths(path))
        .map(|d| d.join(command));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(not_found(command, bin_dirs))
}

/// `command` (as the pod spec writes it) was found nowhere.
fn not_found(command: &str, bin_dirs: &[PathBuf]) -> anyhow::Error {
    let dirs: Vec<String> = bin_dirs.iter().map(|d| d.display().to_string()).collect();
    anyhow::anyhow!(
        "executable {command:?} is in none of the bin dirs [{}] nor on PATH: build it \
         (e.g. `cargo build -p megatron-trainer`) or pass its directory with --bin-dir",
        dirs.join(", ")
    )
}

/// Rewrites a command-line argument naming a mounted path (`/etc/x` or `--flag=/etc/x`).
fn rewrite_arg(arg: &str, mounts: &Mounts) -> String {
    if let Some(r) = mounts.rewrite(arg) {
        return r;
    }
    if let Some((flag, value)) = arg.split_once('=')
        && let Some(r) = mounts.rewrite(value)
    {
        return format!("{flag}={r}");
    }
    arg.to_owned()
}

fn write_kubeconfig(
    path: &Path,
    config: &ProcessKubeletConfig,
    token_file: &Path,
    namespace: &str,
) -> Result<()> {
    let mut cluster = json!({ "server": config.api.server });
    if let Some(ca) = &config.api.certificate_authority_data {
        cluster["certificate-authority-data"] = json!(ca);
    }
    if let Some(ca) = &config.api.certificate_authority {
        cluster["certificate-authority"] = json!(ca);
    }
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "local", "cluster": cluster }],
        "users": [{ "name": "pod", "user": { "tokenFile": token_file } }],
        "contexts": [{ "name": "pod", "context": { "cluster": "local", "user": "pod", "namespace": namespace } }],
        "current-context": "pod",
    });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(&kubeconfig)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Builds the process of container `index`: environment, mounts, program and arguments.
async fn prepare_container(
    config: &ProcessKubeletConfig,
    sources: &mut Sources,
    pod: &Pod,
    dir: &Path,
    volumes: &Volumes,
    index: usize,
    c: &Container,
) -> Result<Prepared> {
    let who = format!(
        "{}/{} {}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        c.name
    );
    let cdir = dir.join("containers").join(&c.name);
    std::fs::create_dir_all(&cdir)?;
    let mut mounts = volumes::container_mounts(c, volumes)?;
    let termination_file = cdir.join("termination-log");
    let termination_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    mounts.add(&termination_path, termination_file.clone());

    let mut base = EnvList::default();
    for name in &config.host_env {
        if let Ok(value) = std::env::var(name) {
            base.set(name, value, false);
        }
    }
    // The bin dirs play the image's PATH: its programs come first.
    let host_path = base.get("PATH").unwrap_or("/usr/bin:/bin").to_owned();
    let path = std::env::join_paths(
        config
            .bin_dirs
            .iter()
            .cloned()
            .chain(std::env::split_paths(&host_path)),
    )?;
    base.set("PATH", path.to_string_lossy().into_owned(), false);
    base.set("HOSTNAME", pod.name_any(), false);
    // The trainer's override of /dev/termination-log, which a process cannot have to itself.
    base.set(
        "MEGATRON_TERMINATION_LOG",
        termination_file.display().to_string(),
        false,
    );
    let tmp = cdir.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    base.set("TMPDIR", tmp.display().to_string(), false);
    if let Some(sa) = mounts.host_of(SERVICE_ACCOUNT_MOUNT) {
        let kubeconfig = cdir.join("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            config,
            &sa.join("token"),
            &pod.namespace().unwrap_or_default(),
        )?;
        base.set("KUBECONFIG", kubeconfig.display().to_string(), false);
    } else {
        // An empty config, so a client in the pod cannot fall back to the host's ~/.kube/config.
        let kubeconfig = cdir.join("kubeconfig");
        std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n")?;
        base.set("KUBECONFIG", kubeconfig.display().to_string(), false);
        eprintln!(
            "process-kubelet: {who}: no service-account token mounted, so an empty KUBECONFIG (no API access)"
        );
    }
    let mut env = env::resolve(sources, pod, c, base).await?;
    for var in &mut env.0 {
        if var.secret {
            continue;
        }
        if let Some(r) = mounts.rewrite(&var.value) {
            var.value = r;
        } else if let Some(r) = env::rewrite_cluster_dns(&var.value) {
            // Only the name: a value may embed an expanded secret ($(VAR)).
            eprintln!(
                "process-kubelet: {who}: {}: cluster DNS names rewritten to this host",
                var.name
            );
            var.value = r;
        }
    }
    let vars = env.map();
    let mut argv: Vec<String> = c
        .command
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain(c.args.clone().unwrap_or_default())
        .map(|a| rewrite_arg(&env::expand(&a, &vars), &mounts))
        .collect();
    if c.command.as_ref().is_none_or(|cmd| cmd.is_empty()) {
        bail!(
            "container {:?} has no command: the process kubelet cannot read the image's entrypoint",
            c.name
        );
    }
    let command = argv.remove(0);
    let path = env.get("PATH").unwrap_or("/usr/bin:/bin").to_owned();
    // Errors name the command as written: its expansion may hold a secret's value.
    let written = c
        .command
        .as_ref()
        .and_then(|cmd| cmd.first())
        .map_or("", String::as_str);
    let program = resolve_program(&command, &mounts, &config.bin_dirs, &path)
        .map_err(|_| not_found(written, &config.bin_dirs))?;
    note_ignored(pod, c, &program);
    let cwd = match c.working_dir.as_deref() {
        Some(wd) => match mounts.rewrite(wd) {
            Some(r) => PathBuf::from(r),
            None => {
                eprintln!(
                    "process-kubelet: {who}: workingDir {wd} is not under a mount; using {}",
                    cdir.join("work").display()
                );
                cdir.join("work")
            }
        },
        None => cdir.join("work"),
    };
    let logs = dir.join("logs").join(&c.name);
    Ok(Prepared {
        index,
        spec: ProcessSpec {
            program,
            args: argv,
            env: env.0.into_iter().map(|e| (e.name, e.value)).collect(),
            cwd,
            log: logs.join("0.log"),
        },
        logs,
        termination_file,
        fallback_to_logs: c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"),
    })
}

async fn prepare(
    client: &Client,
    config: &ProcessKubeletConfig,
    pod: &Pod,
    dir: &Path,
) -> Result<(Vec<Prepared>, Volumes)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        eprintln!("process-kubelet: init containers are not run (not supported); ignored");
    }
    let mut sources = Sources::new(client.clone(), &pod.namespace().unwrap_or_default());
    let volumes = volumes::materialise(client, &mut sources, pod, &dir.join("volumes")).await?;
    let mut prepared = Vec::new();
    for (index, c) in spec.containers.iter().enumerate() {
        prepared.push(
            prepare_container(config, &mut sources, pod, dir, &volumes, index, c)
                .await
                .with_context(|| format!("container {:?}", c.name))?,
        );
    }
    Ok((prepared, volumes))
}

fn restarts(policy: &str, exit: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit != 0,
        _ => true,
    }
}

/// Runs pod `pod` until it is stopped.
pub async fn supervise(
    client: Client,
    config: Arc<ProcessKubeletConfig>,
    pod: Pod,
    dir: PathBuf,
    mut stop: watch::Receiver<Option<Stop>>,
    live: Arc<std::sync::Mutex<BTreeMap<String, LiveContainer>>>,
) {
    let namespace = pod.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let spec = pod.spec.clone().unwrap_or_default();
    let previous = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let records = spec
        .containers
        .iter()
        .map(|c| {
            // A pod this kubelet ran before it restarted: its containers are gone, so they start again.
            let old = previous.iter().find(|s| s.name == c.name);
            Record {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                restart_count: old.map_or(0, |s| s.restart_count + 1),
                state: waiting_state("ContainerCreating", ""),
                last_state: old.and_then(|s| serde_json::to_value(&s.state).ok()),
                ready: false,
                started: false,
                container_id: String::new(),
                done: None,
                ever_started: false,
            }
        })
        .collect();
    let board = Arc::new(Mutex::new(Board {
        pods: pods.clone(),
        name: pod.name_any(),
        records,
        start_time: now_time(),
    }));
    let who = format!("{namespace}/{}", pod.name_any());

    // Volumes, credentials and environment; a missing Secret or ConfigMap is retried like the
    // kubelet does (CreateContainerConfigError).
    let (prepared, volumes) = loop {
        match prepare(&client, &config, &pod, &dir).await {
            Ok(p) => break p,
            Err(e) => {
                let message = format!("{e:#}");
                eprintln!("process-kubelet: {who}: cannot start: {message}");
                {
                    let mut b = board.lock().await;
                    for r in &mut b.records {
                        r.state = waiting_state("CreateContainerConfigError", &message);
                    }
                    b.publish().await;
                }
                let why = tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3)) => continue,
                    why = stop.wait_for(Option::is_some) => why.ok().and_then(|w| *w),
                };
                finish(&pods, &pod, &dir, why).await;
                return;
            }
        }
    };

    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let mut set = JoinSet::new();
    for p in prepared {
        set.spawn(run_container(
            p,
            board.clone(),
            stop.clone(),
            live.clone(),
            policy.clone(),
            config.clone(),
            who.clone(),
        ));
    }
    // Renew service-account tokens at 80 % of their lifetime, as the kubelet does.
    let renew_every = volumes
        .tokens
        .iter()
        .map(|t| Duration::from_secs((t.expiration_seconds.max(60) as u64) * 4 / 5))
        .min()
        .unwrap_or(Duration::from_secs(3600));
    let mut renew =
        tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
    loop {
        tokio::select! {
            joined = set.join_next() => if joined.is_none() { break },
            _ = renew.tick() => {
                if let Err(e) = volumes::renew_tokens(&client, &pod, &volumes).await {
                    eprintln!("process-kubelet: {who}: renewing tokens: {e:#}");
                }
            }
        }
    }
    // Every container is done: either stopped, or terminated for good under its restart policy.
    if stop.borrow().is_none() {
        let _ = stop.wait_for(Option::is_some).await;
    }
    let why = *stop.borrow();
    finish(&pods, &pod, &dir, why).await;
}

/// After the containers stopped: confirm a deletion and drop the materialised volumes (they may
/// hold Secrets); the logs stay.
async fn finish(pods: &Api<Pod>, pod: &Pod, dir: &Path, why: Option<Stop>) {
    let _ = std::fs::remove_dir_all(dir.join("volumes"));
    if let Some(Stop::Delete(_)) = why
        && let Err(e) = confirm_deletion(pods, pod).await
    {
        eprintln!("process-kubelet: {e:#}");
    }
}

/// One container: start, wait, report, restart under the policy with back-off, until stopped.
async fn run_container(
    p: Prepared,
    board: Arc<Mutex<Board>>,
    mut stop: watch::Receiver<Option<Stop>>,
    live: Arc<std::sync::Mutex<BTreeMap<String, LiveContainer>>>,
    policy: String,
    config: Arc<ProcessKubeletConfig>,
    who: String,
) {
    let name = board.lock().await.records[p.index].name.clone();
    let mut backoff = config.restart_backoff;
    loop {
        if stop.borrow().is_some() {
            return;
        }
        let restart_count = board.lock().await.records[p.index].restart_count;
        let mut spec = p.spec.clone();
        spec.log = p.logs.join(format!("{restart_count}.log"));
        let _ = std::fs::remove_file(&p.termination_file);
        let log_start = std::fs::metadata(&spec.log).map(|m| m.len()).unwrap_or(0);
        let started_at = now_time();
        let began = Instant::now();
        let outcome = match process::spawn(&spec) {
            Ok(mut running) => {
                let container_id = format!("process://{}", running.pid);
                eprintln!(
                    "process-kubelet: {who} {name}: started pid {} (restart {restart_count}), log {}",
                    running.pid,
                    spec.log.display()
                );
                live.lock().expect("live map").insert(
                    name.clone(),
                    LiveContainer {
                        pid: Some(running.pid),
                        log: spec.log.clone(),
                    },
                );
                {
                    let mut b = board.lock().await;
                    let r = &mut b.records[p.index];
                    r.state = running_state(&started_at);
                    r.ready = true;
                    r.started = true;
                    r.ever_started = true;
                    r.container_id = container_id.clone();
                    b.publish().await;
                }
                let ended = tokio::select! {
                    exit = running.wait() => Ok(exit),
                    why = stop.wait_for(Option::is_some) => {
                        Err(why.ok().and_then(|w| *w).map(Stop::grace).unwrap_or_default())
                    }
                };
                let exit = match ended {
                    Ok(exit) => exit,
                    Err(grace) => running.stop(grace).await,
                };
                let exit = exit.unwrap_or(Exit {
                    code: 1,
                    signal: None,
                });
                if let Some(l) = live.lock().expect("live map").get_mut(&name) {
                    l.pid = None;
                }
                let message = process::termination_message(
                    &p.termination_file,
                    &spec.log,
                    log_start,
                    p.fallback_to_logs,
                    exit.code != 0,
                );
                eprintln!(
                    "process-kubelet: {who} {name}: exited with code {}{}",
                    exit.code,
                    exit.signal
                        .map(|s| format!(" (signal {s})"))
                        .unwrap_or_default()
                );
                (
                    terminated_state(
                        exit.code,
                        exit.signal,
                        &message,
                        &started_at,
                        &now_time(),
                        &container_id,
                    ),
                    exit.code,
                )
            }
            Err(e) => {
                let message = format!("{e:#}");
                eprintln!("process-kubelet: {who} {name}: {message}");
                let mut state = terminated_state(128, None, &message, &started_at, &now_time(), "");
                state["terminated"]["reason"] = json!("StartError");
                (state, 128)
            }
        };
        let (state, code) = outcome;
        let stopping = stop.borrow().is_some();
        let again = !stopping && restarts(&policy, code);
        {
            let mut b = board.lock().await;
            let r = &mut b.records[p.index];
            r.state = state.clone();
            r.ready = false;
            r.started = false;
            if !again {
                r.done = Some(code);
            }
            b.publish().await;
        }
        if !again {
            return;
        }
        if began.elapsed() > Duration::from_secs(600) {
            backoff = config.restart_backoff;
        }
        {
            let mut b = board.lock().await;
            let r = &mut b.records[p.index];
            r.last_state = Some(state);
            r.state = waiting_state(
                "CrashLoopBackOff",
                &format!(
                    "back-off {}s restarting failed container={name}",
                    backoff.as_secs()
                ),
            );
            b.publish().await;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(Option::is_some) => return,
        }
        backoff = (backoff * 2).min(config.max_restart_backoff);
        board.lock().await.records[p.index].restart_count += 1;
    }
}
