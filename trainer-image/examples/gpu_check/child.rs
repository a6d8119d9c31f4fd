//! Child processes of this binary (tensor-parallel ranks, NCCL ranks, batch
//! probes): each runs a subcommand, its output is captured, and one that runs
//! past its deadline is killed, so a hang costs seconds, not the device lease.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::error::{GpuCheckError, Result, io};

/// What a finished (or killed) child left.
#[derive(Debug)]
pub struct Finished {
    pub success: bool,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The last lines of stderr (for error messages).
    pub fn stderr_tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }
}

/// Starts this binary with `args` and extra environment `env`.
pub fn spawn(args: &[String], env: &[(&str, String)]) -> Result<Child> {
    let exe = std::env::current_exe().map_err(io("locating this executable"))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .map_err(io(format!("starting a child: {}", args.join(" "))))
}

/// Waits for every child until `deadline`, killing the ones still running then.
pub fn wait_all(children: Vec<Child>, limit: Duration) -> Result<Vec<Finished>> {
    let deadline = Instant::now() + limit;
    // Drain the pipes on threads, so a chatty child never blocks on a full pipe.
    let mut pending = Vec::new();
    for mut c in children {
        let out = c.stdout.take().map(drain);
        let err = c.stderr.take().map(drain);
        pending.push((c, out, err));
    }
    let mut done = Vec::new();
    for (mut c, out, err) in pending {
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = c.try_wait().map_err(io("waiting for a child"))? {
                break s;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                let _ = c.kill();
                break c.wait().map_err(io("reaping a killed child"))?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let join = |h: Option<std::thread::JoinHandle<String>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        done.push(Finished {
            success: status.success() && !timed_out,
            timed_out,
            stdout: join(out),
            stderr: join(err),
        });
    }
    Ok(done)
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// An error naming the child and quoting its stderr.
pub fn failed(what: &str, f: &Finished) -> GpuCheckError {
    GpuCheckError::Child {
        what: what.into(),
        detail: if f.timed_out {
            format!("killed after its time limit; stderr:\n{}", f.stderr_tail())
        } else {
            format!("failed; stderr:\n{}", f.stderr_tail())
        },
    }
}

/// A free TCP port on loopback (for a rendezvous store).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(io("finding a free port"))?;
    Ok(l.local_addr().map_err(io("finding a free port"))?.port())
}
