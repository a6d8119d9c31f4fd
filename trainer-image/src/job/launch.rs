//! The local launcher: when a node runs several ranks (`NPROC_PER_NODE` > 1,
//! or `--nproc-per-node`), this process spawns one child per rank running
//! the same command with torchrun's variables (`RANK`, `LOCAL_RANK`,
//! `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) and
//! supervises them like torchrun's agent without elasticity:
//!
//! * SIGTERM/SIGINT are forwarded to every child (a pod being deleted stops
//!   its ranks, which then exit as they decide: 0 after a finished run, 143
//!   after saving a checkpoint mid-run); no deadline is set then, since that
//!   checkpoint may take long and the kubelet's grace period bounds it; a
//!   second signal SIGKILLs them;
//! * when a child fails, the others get SIGTERM, then SIGKILL after
//!   `MEGATRON_KILL_GRACE_SECS` (default 10), and the launcher exits with the
//!   failed child's code (2, invalid input, stays 2; death by signal N gives
//!   128 + N);
//! * children get `PR_SET_PDEATHSIG`: if the launcher itself is killed,
//!   the kernel kills them, so no rank outlives it.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::error::{JobError, JobResult};
use super::rank::LaunchLayout;

/// Runs `layout.nproc` children of this executable with this process's
/// arguments and returns the exit code the launcher should exit with.
pub fn launch(layout: &LaunchLayout) -> JobResult<i32> {
    let exe = std::env::current_exe()
        .map_err(|e| JobError::io("finding this executable to spawn the ranks", e))?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| JobError::io("starting the launcher's runtime", e))?;
    runtime.block_on(supervise(layout, exe, args))
}

async fn supervise(
    layout: &LaunchLayout,
    exe: std::path::PathBuf,
    args: Vec<std::ffi::OsString>,
) -> JobResult<i32> {
    let port = match layout.master_port {
        Some(p) => p,
        None => free_port()?,
    };
    let grace = std::env::var("MEGATRON_KILL_GRACE_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(Duration::from_secs(10));
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| JobError::io("installing the SIGTERM handler", e))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| JobError::io("installing the SIGINT handler", e))?;

    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, std::io::Result<ExitStatus>)>();
    let mut pids: Vec<Option<u32>> = Vec::new();
    for local in 0..layout.nproc {
        let rank = layout.first_rank + local;
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("WORLD_SIZE", layout.world_size.to_string())
            .env("LOCAL_WORLD_SIZE", layout.nproc.to_string())
            .env("MASTER_ADDR", &layout.master_addr)
            .env("MASTER_PORT", port.to_string())
            .stdin(std::process::Stdio::null());
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs
        // between fork and exec.
        unsafe {
            let parent = libc::getpid();
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The launcher died between fork and prctl: do not run orphaned.
                if libc::getppid() != parent {
                    libc::_exit(137);
                }
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                signal_all(&pids, libc::SIGKILL);
                return Err(JobError::io(
                    format!("spawning rank {rank} ({})", exe.display()),
                    e,
                ));
            }
        };
        pids.push(child.id());
        let tx = tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send((local, status));
        });
    }
    drop(tx);
    tracing::info!(
        ranks = layout.nproc,
        first_rank = layout.first_rank,
        world_size = layout.world_size,
        master = %format!("{}:{port}", layout.master_addr),
        "launched local ranks"
    );

    let mut running = layout.nproc;
    let mut failure: Option<(usize, i32)> = None;
    let mut stopping = false;
    let mut kill_deadline: Option<tokio::time::Instant> = None;
    let mut worst_on_stop = 0;
    while running > 0 {
        let deadline = kill_deadline;
        tokio::select! {
            Some((local, status)) = rx.recv() => {
                running -= 1;
                pids[local] = None;
                let code = match status {
                    Ok(s) => exit_code(s),
                    Err(e) => {
                        tracing::error!(rank = layout.first_rank + local, "waiting for the rank: {e}");
                        1
                    }
                };
                if code != 0 {
                    tracing::warn!(rank = layout.first_rank + local, code, "rank exited");
                }
                if stopping {
                    if worst_on_stop == 0 { worst_on_stop = code; }
                } else if code != 0 && failure.is_none() {
                    failure = Some((layout.first_rank + local, code));
                    tracing::error!(
                        rank = layout.first_rank + local, code,
                        "a rank failed: stopping the others"
                    );
                    signal_all(&pids, libc::SIGTERM);
                    kill_deadline = Some(tokio::time::Instant::now() + grace);
                }
            }
            _ = term.recv() => {
                stopping = forward_stop(&pids, libc::SIGTERM, stopping);
            }
            _ = int.recv() => {
                stopping = forward_stop(&pids, libc::SIGINT, stopping);
            }
            _ = sleep_until(deadline) => {
                tracing::warn!("ranks still running after {grace:?}: SIGKILL");
                signal_all(&pids, libc::SIGKILL);
                kill_deadline = None;
            }
        }
    }
    Ok(match failure {
        Some((_, code)) => code,
        None => worst_on_stop,
    })
}

/// Forwards the first stop signal to the ranks (they checkpoint and exit);
/// a second one kills them. Returns that the launcher is stopping.
fn forward_stop(pids: &[Option<u32>], signal: libc::c_int, already_stopping: bool) -> bool {
    if already_stopping {
        tracing::warn!(signal, "second stop signal: SIGKILL to the ranks");
        signal_all(pids, libc::SIGKILL);
    } else {
        tracing::info!(signal, "stop signal: forwarding to the ranks");
        signal_all(pids, signal);
    }
    true
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn signal_all(pids: &[Option<u32>], sig: libc::c_int) {
    for pid in pids.iter().flatten() {
        // SAFETY: kill(2) on a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(*pid as libc::pid_t, sig);
        }
    }
}

/// The shell convention: the exit code, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn free_port() -> JobResult<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| JobError::io("finding a free rendezvous port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| JobError::io("finding a free rendezvous port", e))
}
