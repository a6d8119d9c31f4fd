//! The local launcher: `train` with tensor/data parallelism spawns one
//! process per rank (torchrun's variables), propagates a failed rank's exit
//! code (2 stays 2), stops the other ranks when one dies or on SIGTERM, and
//! leaves no process behind.

use crate::support::cli_util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cli_util::{Task, datasets, metrics, run, spec_yaml, temp_dir, text, trainer, write};

/// Direct children of `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == pid {
            out.push(p);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; count only running processes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    None
}

fn wait_for_ranks(launcher: &Child, n: usize) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let kids = children_of(launcher.id());
        if kids.len() == n {
            return kids;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "ranks did not start: {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn long_run(dir: &Path) -> Child {
    let spec = write(
        dir,
        "spec.yaml",
        &spec_yaml(Task::TextClassification, 100_000, 2),
    );
    trainer()
        .env("MEGATRON_KILL_GRACE_SECS", "3")
        .args(["train", "--random-init", "--config"])
        .arg(&spec)
        .arg("--output-dir")
        .arg(dir.join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn tensor_parallel_run_through_the_launcher() {
    let dir = temp_dir("launch-tp2");
    let spec = write(
        &dir,
        "spec.yaml",
        &spec_yaml(Task::TextClassification, 3, 2),
    );
    let out_dir = dir.join("out");
    // As the operator starts a pod: NPROC_PER_NODE ranks of POD_INDEX.
    let out = run(trainer()
        .env("NPROC_PER_NODE", "2")
        .env("POD_INDEX", "0")
        .env("WORLD_SIZE", "2")
        .env("TENSOR_PARALLEL_SIZE", "2")
        .env("DATA_PARALLEL_SIZE", "1")
        .args(["train", "--random-init", "--config"])
        .arg(&spec)
        .arg("--output-dir")
        .arg(&out_dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("launched local ranks"), "{}", text(&out));
    assert!(
        stderr.contains("rank{rank=1}"),
        "rank 1 ran: {}",
        text(&out)
    );
    // Both tensor-parallel shards are checkpointed.
    for r in ["mp_rank_00", "mp_rank_01"] {
        assert!(
            out_dir
                .join("checkpoints/step-000000000003")
                .join(r)
                .is_dir(),
            "{r}"
        );
    }
    // The .nemo keeps TP=2; evaluating it merged at TP=1 reproduces the test metrics.
    let nemo = out_dir.join("artifacts/model.nemo");
    let eval = dir.join("eval.json");
    let out = run(trainer()
        .args(["evaluate", "--config"])
        .arg(&spec)
        .arg("--nemo")
        .arg(&nemo)
        .arg("--output")
        .arg(&eval));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let trained = metrics(&out_dir.join("artifacts/test_metrics.json"));
    let evaluated = metrics(&eval);
    for (k, v) in &trained {
        assert!(
            (v - evaluated[k]).abs() <= 1e-4 * v.abs().max(1.0),
            "{k}: {v} vs {}",
            evaluated[k]
        );
    }
    // The last training checkpoint (both shards, merged) holds the same model.
    let from_ckpt = dir.join("eval-ckpt.json");
    let out = run(trainer()
        .args(["evaluate", "--random-init", "--config"])
        .arg(&spec)
        .arg("--training-checkpoint")
        .arg(out_dir.join("checkpoints/step-000000000003"))
        .arg("--output")
        .arg(&from_ckpt));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let evaluated = metrics(&from_ckpt);
    for (k, v) in &trained {
        assert!(
            (v - evaluated[k]).abs() <= 1e-4 * v.abs().max(1.0),
            "{k}: {v} vs {}",
            evaluated[k]
        );
    }
}

#[test]
fn data_parallel_run_with_nproc_flag() {
    let dir = temp_dir("launch-dp2");
    let spec_text = spec_yaml(Task::TokenClassification, 2, 1).replace(
        "tensorParallelSize: 1",
        "tensorParallelSize: 1, dataParallelSize: 2",
    );
    let spec = write(&dir, "spec.yaml", &spec_text);
    let out = run(trainer()
        .args([
            "train",
            "--random-init",
            "--nproc-per-node",
            "2",
            "--config",
        ])
        .arg(&spec)
        .arg("--output-dir")
        .arg(dir.join("out")));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(dir.join("out/artifacts/model.nemo").is_file());
}

#[test]
fn invalid_input_in_a_rank_exits_2() {
    let dir = temp_dir("launch-invalid");
    let mut rows: Vec<String> =
        std::fs::read_to_string(datasets().join("text_classification/train.tsv"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
    rows[3] = "no label here".into();
    let bad = write(&dir, "bad.tsv", &(rows.join("\n") + "\n"));
    let spec = write(
        &dir,
        "spec.yaml",
        &spec_yaml(Task::TextClassification, 2, 2),
    );
    let out = run(trainer()
        .args(["train", "--random-init", "--config"])
        .arg(&spec)
        .arg("--train-data")
        .arg(&bad)
        .arg("--output-dir")
        .arg(dir.join("out")));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{}:4", bad.display())),
        "{}",
        text(&out)
    );
}

#[test]
fn a_killed_rank_stops_the_job_and_leaves_no_orphan() {
    let dir = temp_dir("launch-kill");
    let mut launcher = long_run(&dir);
    let ranks = wait_for_ranks(&launcher, 2);
    // Let them reach training, then kill one.
    std::thread::sleep(Duration::from_secs(3));
    unsafe { libc::kill(ranks[1] as i32, libc::SIGKILL) };
    let status =
        wait_with_timeout(&mut launcher, Duration::from_secs(60)).expect("the launcher exits");
    assert!(!status.success(), "{status:?}");
    let start = Instant::now();
    while ranks.iter().any(|p| alive(*p)) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !ranks.iter().any(|p| alive(*p)),
        "orphan rank left: {ranks:?}"
    );
}

#[test]
fn sigterm_is_forwarded_to_the_ranks() {
    let dir = temp_dir("launch-term");
    let mut launcher = long_run(&dir);
    let ranks = wait_for_ranks(&launcher, 2);
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
    let status =
        wait_with_timeout(&mut launcher, Duration::from_secs(30)).expect("the launcher exits");
    assert!(
        status.code().is_some(),
        "the launcher exits normally: {status:?}"
    );
    assert!(!ranks.iter().any(|p| alive(*p)), "ranks left: {ranks:?}");
}

#[test]
fn killing_the_launcher_kills_its_ranks() {
    let dir = temp_dir("launch-pdeathsig");
    let mut launcher = long_run(&dir);
    let ranks = wait_for_ranks(&launcher, 2);
    launcher.kill().unwrap(); // SIGKILL: no chance to forward anything
    launcher.wait().unwrap();
    let start = Instant::now();
    while ranks.iter().any(|p| alive(*p)) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!ranks.iter().any(|p| alive(*p)), "orphan ranks: {ranks:?}");
}

/// Kubernetes stops a pod (a Kueue preemption, `suspend`) with SIGTERM: the
/// ranks agree on a step, save a checkpoint there and exit 143, and the next
/// run resumes from it and ends exactly where an uninterrupted run does, with
/// tensor and data parallelism (4 ranks, TP2 x DP2).
#[test]
fn sigterm_saves_a_checkpoint_and_the_resumed_run_ends_like_an_uninterrupted_one() {
    let dir = temp_dir("launch-stop");
    let spec_text = spec_yaml(Task::TextClassification, 200, 2).replace(
        "tensorParallelSize: 2",
        "tensorParallelSize: 2, dataParallelSize: 2",
    );
    let spec = write(&dir, "spec.yaml", &spec_text);
    let train = |out: &str| {
        let mut cmd = trainer();
        cmd.args([
            "train",
            "--random-init",
            "--nproc-per-node",
            "4",
            "--config",
        ])
        .arg(&spec)
        .arg("--output-dir")
        .arg(dir.join(out));
        cmd
    };
    let whole = run(&mut train("whole"));
    assert_eq!(whole.status.code(), Some(0), "{}", text(&whole));

    // Stop a second run a few steps in.
    let log = dir.join("stopped.log");
    let mut launcher = train("stopped")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("training progress step=5 ")
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no step 5: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
    let status =
        wait_with_timeout(&mut launcher, Duration::from_secs(60)).expect("the launcher exits");
    let stopped_log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(143), "{stopped_log}");
    // Every rank saved at the same step.
    let marker = "stopped by a signal after saving the checkpoint of step ";
    let steps: BTreeSet<u64> = stopped_log
        .lines()
        .filter_map(|l| l.split(marker).nth(1))
        .map(|rest| rest.split(';').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        stopped_log.matches(marker).count(),
        4,
        "all ranks stop: {stopped_log}"
    );
    assert_eq!(steps.len(), 1, "one step for all ranks: {steps:?}");
    let step = *steps.first().unwrap();
    assert!((5..200).contains(&step), "{step}");
    let set = dir
        .join("stopped/checkpoints")
        .join(format!("step-{step:012}"));
    assert!(set.join("manifest.json").is_file(), "{stopped_log}");
    assert!(
        !dir.join("stopped/artifacts/model.nemo").exists(),
        "a stopped run exports nothing"
    );

    // The next run resumes there and ends exactly as the uninterrupted one.
    let resumed = run(&mut train("stopped"));
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains(&format!("resuming step={step}")),
        "{}",
        text(&resumed)
    );
    assert_eq!(
        metrics(&dir.join("stopped/artifacts/test_metrics.json")),
        metrics(&dir.join("whole/artifacts/test_metrics.json")),
        "resumed after a stop at step {step} vs uninterrupted"
    );
}
