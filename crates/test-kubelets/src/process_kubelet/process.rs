//! One container instance as a local process: spawned in its own process group (the
//! "container"), stdout and stderr appended to a log file, stopped with SIGTERM, a grace
//! period and SIGKILL to the whole group, and its termination message read afterwards.

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::process::{Child, Command};

/// Everything needed to start one container instance.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// Resolved program path.
    pub program: PathBuf,
    /// Arguments after the program.
    pub args: Vec<String>,
    /// The full environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Log file (stdout and stderr, appended).
    pub log: PathBuf,
}

/// A running container process.
pub struct Running {
    child: Child,
    /// Its pid, also its process group id.
    pub pid: u32,
}

/// How a container instance ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code; 128 + signal number when killed by a signal (as container runtimes report).
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
}

impl Exit {
    fn from_status(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self { code, signal: None },
            (None, Some(sig)) => Self {
                code: 128 + sig,
                signal: Some(sig),
            },
            (None, None) => Self {
                code: 1,
                signal: None,
            },
        }
    }
}

/// Starts `spec` in a new process group.
pub fn spawn(spec: &ProcessSpec) -> Result<Running> {
    if let Some(parent) = spec.log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::create_dir_all(&spec.cwd)
        .with_context(|| format!("creating the working directory {}", spec.cwd.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening the log {}", spec.log.display()))?;
    let err = log.try_clone()?;
    let child = Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("starting {}", spec.program.display()))?;
    let pid = child
        .id()
        .context("the process exited before its pid was read")?;
    Ok(Running { child, pid })
}

impl Running {
    /// Waits for the main process to exit, then kills what is left of its group (a container's
    /// processes end with its main process).
    pub async fn wait(&mut self) -> Result<Exit> {
        let status = self.child.wait().await?;
        self.signal_group(Signal::SIGKILL);
        Ok(Exit::from_status(status))
    }

    /// Sends `signal` to the whole process group (ignoring a group already gone).
    pub fn signal_group(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.pid as i32), signal);
    }

    /// SIGTERM to the group, up to `grace` for the main process to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Result<Exit> {
        self.signal_group(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                self.signal_group(Signal::SIGKILL);
                Ok(Exit::from_status(status?))
            }
            Err(_) => {
                self.signal_group(Signal::SIGKILL);
                Ok(Exit::from_status(self.child.wait().await?))
            }
        }
    }
}

/// Largest termination message the kubelet keeps (bytes).
const MAX_MESSAGE_BYTES: usize = 4096;
/// Log tail used by `FallbackToLogsOnError`: at most 80 lines and 2048 bytes, like the kubelet.
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;

/// The termination message: the termination-log file, else (policy `FallbackToLogsOnError` and a
/// failed exit) the tail of this instance's log.
pub fn termination_message(
    file: &Path,
    log: &Path,
    log_start: u64,
    fallback_to_logs: bool,
    failed: bool,
) -> String {
    let from_file = std::fs::read(file).unwrap_or_default();
    if !from_file.is_empty() {
        let end = from_file.len().min(MAX_MESSAGE_BYTES);
        return String::from_utf8_lossy(&from_file[..end]).into_owned();
    }
    if !(fallback_to_logs && failed) {
        return String::new();
    }
    let bytes = std::fs::read(log).unwrap_or_default();
    let start = (log_start as usize).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(FALLBACK_LINES)..].join("\n");
    let cut = tail.len().saturating_sub(FALLBACK_BYTES);
    let cut = (cut..=tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(tail.len());
    tail[cut..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, dir: &Path) -> ProcessSpec {
        ProcessSpec {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: vec![("X".into(), "42".into())],
            cwd: dir.to_path_buf(),
            log: dir.join("log"),
        }
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pk-proc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn exit_code_log_and_clean_environment() {
        let dir = temp("exit");
        let mut p = spawn(&sh("echo x=$X home=${HOME:-unset}; exit 3", &dir)).unwrap();
        let exit = p.wait().await.unwrap();
        assert_eq!(
            exit,
            Exit {
                code: 3,
                signal: None
            }
        );
        let log = std::fs::read_to_string(dir.join("log")).unwrap();
        assert_eq!(log, "x=42 home=unset\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_for_the_whole_group() {
        let dir = temp("stop");
        // Ignores SIGTERM and leaves a grandchild behind in the group.
        let mut p = spawn(&sh("trap '' TERM; sleep 300 & echo $! > child; wait", &dir)).unwrap();
        let child_file = dir.join("child");
        for _ in 0..100 {
            if std::fs::read_to_string(&child_file).is_ok_and(|s| s.ends_with('\n')) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let grandchild: i32 = std::fs::read_to_string(&child_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let started = std::time::Instant::now();
        let exit = p.stop(Duration::from_millis(300)).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            exit,
            Exit {
                code: 137,
                signal: Some(9)
            }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The grandchild is gone too (reaped by init or a zombie no more signalable as alive).
        let alive = std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "the group's other processes were killed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn termination_message_prefers_the_file_and_falls_back_to_the_log_tail() {
        let dir = temp("msg");
        let file = dir.join("termination-log");
        let log = dir.join("log");
        let lines: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, format!("old run\n{lines}")).unwrap();
        let start = "old run\n".len() as u64;
        let tail = termination_message(&file, &log, start, true, true);
        assert!(tail.starts_with("line 20\n"), "{tail}");
        assert!(tail.ends_with("line 99"));
        assert_eq!(termination_message(&file, &log, start, true, false), "");
        assert_eq!(termination_message(&file, &log, start, false, true), "");
        std::fs::write(&file, "bad input: data.train").unwrap();
        assert_eq!(
            termination_message(&file, &log, start, true, true),
            "bad input: data.train"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
