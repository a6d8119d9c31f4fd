//! Shared test utilities: multi-process rank tests and the Python reference.
//!
//! # Running N ranks of a test
//! A multi-rank test re-runs its own test binary once per rank, filtered to
//! the same test (`<name> --exact`), with torchrun's variables set
//! (`MASTER_ADDR=127.0.0.1`, a free `MASTER_PORT`, `RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `LOCAL_WORLD_SIZE`). In the children [`rank_child`] returns
//! `Some`; the rank's body runs there, and a panic fails that rank:
//!
//! ```ignore
//! use crate::support::common;
//!
//! #[test]
//! fn tp2_forward_matches() {
//!     if let Some(child) = common::rank_child() {
//!         let topo = megatron_trainer::comm::init_from_env(2).unwrap();
//!         // ... run this rank's shard, compare, then report values:
//!         common::emit("loss", format!("{:.9}", 1.5));
//!         let _ = child.rank;
//!         return;
//!     }
//!     // Parent: start 2 ranks, fail with every rank's output if one fails.
//!     let outs = common::Ranks::new(module_path!(), "tp2_forward_matches", 2).run_ok();
//!     assert_eq!(outs[0].value("loss"), outs[1].value("loss"));
//! }
//! ```
//!
//! [`Ranks::new`] takes the caller's `module_path!()` and the test's name:
//! together they give the test's path inside its area binary
//! (`collectives::barrier_waits_for_the_last_rank`), which the children are
//! filtered to with `--exact`.
//! [`Ranks::run`] returns every rank's [`RankOutput`] (exit status, stdout,
//! stderr, and the `key=value` pairs sent with [`emit`]) without judging;
//! [`Ranks::run_ok`] panics with every rank's output when any rank fails.
//! Children that run past the timeout (default 300 s) are killed and
//! reported as timed out. [`Ranks::only`] starts a subset of the ranks (to
//! test a rank that never shows up), [`Ranks::env`] / [`Ranks::rank_env`]
//! add variables.
//!
//! # Tests that need the process to themselves
//! libtorch's default generator (`tch::manual_seed`) is process-global, and
//! tests of one binary run on parallel threads. A test whose result depends
//! on the generator's stream either runs its body in a child of its own with
//! [`alone`] (one rank of [`Ranks`]), or, where every such test of a binary
//! is in-process, holds [`rng_lock`] throughout.
//!
//! # Python reference
//! [`python`] returns `$MEGATRON_PYTHON` (set by `eval "$(scripts/torch-env)"`)
//! and panics with that hint when it is unset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Variable that marks a child process started by [`Ranks`].
pub const CHILD_VAR: &str = "MEGATRON_TEST_RANK_CHILD";
/// Prefix of the lines [`emit`] writes.
const EMIT_PREFIX: &str = "@@rank-value ";

/// The reference Python interpreter (`$MEGATRON_PYTHON`).
pub fn python() -> PathBuf {
    match std::env::var_os("MEGATRON_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "MEGATRON_PYTHON is not set: run `eval \"$(scripts/torch-env)\"` in the repository \
             root before `cargo test`"
        ),
    }
}

/// A free port for a server a test starts later ([`e2e::port::free_port`]).
pub fn free_port() -> u16 {
    e2e::port::free_port().expect("a free port in 10000-19999")
}

/// The libtest path of test `name` in `module` (the crate name dropped).
fn test_path(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, inner)) => format!("{inner}::{name}"),
        None => name.to_string(),
    }
}

/// Serialises the in-process tests of one binary that depend on the stream
/// of libtorch's process-global default generator.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed test poisons the lock; the others still run.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `body` in a fresh process of this test binary (filtered to this one
/// test), so no other test's use of the process-global generator can shift
/// its stream; in the parent, waits for it and fails with its output.
pub fn alone(module: &str, name: &str, body: impl FnOnce()) {
    if rank_child().is_some() {
        body();
        return;
    }
    Ranks::new(module, name, 1).run_ok();
}

/// Identity of a rank child process.
#[derive(Clone, Copy, Debug)]
pub struct ChildRank {
    /// `RANK`.
    pub rank: usize,
    /// `WORLD_SIZE`.
    pub world: usize,
}

/// `Some` inside a rank child started by [`Ranks`]; `None` in the parent test.
pub fn rank_child() -> Option<ChildRank> {
    std::env::var_os(CHILD_VAR)?;
    let num = |k: &str| -> usize {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("rank child without a numeric {k}"))
    };
    Some(ChildRank {
        rank: num("RANK"),
        world: num("WORLD_SIZE"),
    })
}

/// Reports `key=value` from a rank child to the parent (one line on stdout).
pub fn emit(key: &str, value: impl std::fmt::Display) {
    let value = value.to_string().replace('\n', "\\n");
    // libtest prints `test NAME ... ` without a newline first; start a fresh line.
    println!("\n{EMIT_PREFIX}{key}={value}");
}

/// What one rank process did.
#[derive(Clone, Debug)]
pub struct RankOutput {
    /// `RANK` of the process.
    pub rank: usize,
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its exit code (`None` when killed by a signal or the timeout).
    pub code: Option<i32>,
    /// Whether it was killed for running past the timeout.
    pub timed_out: bool,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// The `key=value` pairs it sent with [`emit`] (last one wins).
    pub values: BTreeMap<String, String>,
}

impl RankOutput {
    /// The value sent under `key`, if any.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value sent under `key`; panics with the rank's output when missing.
    pub fn expect_value(&self, key: &str) -> &str {
        self.value(key).unwrap_or_else(|| {
            panic!(
                "rank {} did not report {key:?}\n{}",
                self.rank,
                self.describe()
            )
        })
    }

    /// Exit status and both streams, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "---- rank {} (exit {:?}{}) stdout:\n{}\n---- rank {} stderr:\n{}",
            self.rank,
            self.code,
            if self.timed_out {
                ", killed after the timeout"
            } else {
                ""
            },
            self.stdout,
            self.rank,
            self.stderr
        )
    }
}

/// Starts rank processes of the current test binary.
#[derive(Clone, Debug)]
pub struct Ranks {
    test: String,
    world: usize,
    only: Option<Vec<usize>>,
    env: Vec<(String, String)>,
    rank_env: Vec<(usize, String, String)>,
    timeout: Duration,
}

impl Ranks {
    /// `world` ranks of the test `name` defined in `module` (the caller's
    /// `module_path!()`, whose first segment is the test binary's crate).
    pub fn new(module: &str, name: &str, world: usize) -> Self {
        Self {
            test: test_path(module, name),
            world,
            only: None,
            env: Vec::new(),
            rank_env: Vec::new(),
            timeout: Duration::from_secs(300),
        }
    }

    /// Starts only these ranks (`WORLD_SIZE` stays `world`).
    pub fn only(mut self, ranks: impl IntoIterator<Item = usize>) -> Self {
        self.only = Some(ranks.into_iter().collect());
        self
    }

    /// Sets a variable in every rank.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets a variable in one rank.
    pub fn rank_env(mut self, rank: usize, key: &str, value: impl ToString) -> Self {
        self.rank_env
            .push((rank, key.to_string(), value.to_string()));
        self
    }

    /// Kills ranks still running after `timeout` (default 300 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the ranks to completion and returns their outputs, by rank.
    pub fn run(&self) -> Vec<RankOutput> {
        let exe = std::env::current_exe().expect("locating the test binary");
        let port = free_port();
        let ranks = self
            .only
            .clone()
            .unwrap_or_else(|| (0..self.world).collect());
        let mut children: Vec<(usize, Child)> = Vec::new();
        for &rank in &ranks {
            let mut cmd = Command::new(&exe);
            cmd.args([&self.test, "--exact", "--nocapture", "--include-ignored"])
                .args(["--test-threads", "1"])
                .env(CHILD_VAR, &self.test)
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", self.world.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("LOCAL_WORLD_SIZE", self.world.to_string())
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            for (r, k, v) in &self.rank_env {
                if *r == rank {
                    cmd.env(k, v);
                }
            }
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("starting rank {rank} ({}): {e}", exe.display()));
            children.push((rank, child));
        }
        let deadline = Instant::now() + self.timeout;
        let mut outputs: Vec<RankOutput> = children
            .into_iter()
            .map(|(rank, mut child)| {
                // Drain both pipes on threads so a chatty child never blocks.
                let read = |s: Option<Box<dyn Read + Send>>| {
                    std::thread::spawn(move || {
                        let mut buf = String::new();
                        if let Some(mut s) = s {
                            let mut bytes = Vec::new();
                            let _ = s.read_to_end(&mut bytes);
                            buf = String::from_utf8_lossy(&bytes).into_owned();
                        }
                        buf
                    })
                };
                let out = read(
                    child
                        .stdout
                        .take()
                        .map(|s| Box::new(s) as Box<dyn Read + Send>),
                );
                let err = read(
                    child
                        .stderr
                        .take()
                        .map(|s| Box::new(s) as Box<dyn Read + Send>),
                );
                (rank, child, out, err)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(rank, mut child, out, err)| {
                let mut timed_out = false;
                let status = loop {
                    if let Some(st) = child.try_wait().expect("waiting for a rank") {
                        break Some(st);
                    }
                    if Instant::now() >= deadline {
                        timed_out = true;
                        let _ = child.kill();
                        break child.wait().ok();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                let stdout = out.join().unwrap_or_default();
                let stderr = err.join().unwrap_or_default();
                let values = stdout
                    .lines()
                    .filter_map(|l| l.split_once(EMIT_PREFIX)?.1.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.replace("\\n", "\n")))
                    .collect();
                RankOutput {
                    rank,
                    success: !timed_out && status.is_some_and(|s| s.success()),
                    code: if timed_out {
                        None
                    } else {
                        status.and_then(|s| s.code())
                    },
                    timed_out,
                    stdout,
                    stderr,
                    values,
                }
            })
            .collect();
        outputs.sort_by_key(|o| o.rank);
        // A path that matches no test would make every child pass without running anything.
        if let Some(idle) = outputs
            .iter()
            .find(|o| o.stdout.contains("running 0 tests"))
        {
            panic!(
                "rank {} ran no test: {:?} names no test of this binary (Ranks::new takes the \
                 caller's module_path!() and the test's name)",
                idle.rank, self.test
            );
        }
        outputs
    }

    /// Like [`Ranks::run`], but panics with every rank's output when any fails.
    pub fn run_ok(&self) -> Vec<RankOutput> {
        let outs = self.run();
        if outs.iter().any(|o| !o.success) {
            let failed: Vec<usize> = outs.iter().filter(|o| !o.success).map(|o| o.rank).collect();
            let all: Vec<String> = outs.iter().map(RankOutput::describe).collect();
            panic!(
                "test {:?}: rank(s) {failed:?} of {} failed\n{}",
                self.test,
                self.world,
                all.join("\n")
            );
        }
        outs
    }
}
