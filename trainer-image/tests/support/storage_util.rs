//! Shared helpers of the storage tests: the local e2e S3 server's settings,
//! test data files, and memory measurement.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use megatron_trainer::storage::{RetryPolicy, S3Config, Store};
use sha2::{Digest, Sha256};

/// Bucket all storage tests share (each test uses its own prefix).
pub const TEST_BUCKET: &str = "megatron-storage-tests";

/// Variables of `e2e/.cluster/env` (written by `e2e/cluster/up`). Panics,
/// never skips, when the cluster is not up.
pub fn cluster_env() -> HashMap<String, String> {
    let path = e2e_dir().join(".cluster/env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): the storage tests need the local S3 server; \
             run e2e/cluster/up first",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// The repository's `e2e/` directory (symlinks resolved).
pub fn e2e_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e");
    dir.canonicalize().unwrap_or(dir)
}

/// S3 settings for the e2e server under a fresh prefix, with `overrides`
/// replacing variables of the env file.
pub fn s3_config(prefix: &str, overrides: &[(&str, &str)]) -> S3Config {
    let mut env = cluster_env();
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    S3Config::from_lookup(TEST_BUCKET, prefix, |k| env.get(k).cloned()).expect("S3 config")
}

/// A unique prefix for one test.
pub fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// A store on the e2e S3 server under a unique prefix, the bucket created.
pub async fn s3_store(test: &str) -> Store {
    let store = Store::s3(s3_config(&unique_prefix(test), &[])).expect("S3 store");
    store.create_bucket().await.expect("create the test bucket");
    store
}

/// A retry policy that gives up within seconds (outage tests): `max_retries`
/// tries, 100 ms to 1 s apart, 5 s in all.
pub fn quick_retries(max_retries: usize) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        retry_timeout: Duration::from_secs(5),
        init_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    }
}

/// Held by a test that stops the S3 server: the `s3_outages` binary holds only
/// such tests, and they take turns.
pub fn outage() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `e2e/cluster/restart-s3 ARG` (stops and/or starts the S3 server).
pub fn restart_s3(arg: &str) {
    let script = e2e_dir().join("cluster/restart-s3");
    let status = std::process::Command::new(&script)
        .arg(arg)
        .status()
        .unwrap_or_else(|e| panic!("running {} {arg}: {e}", script.display()));
    assert!(
        status.success(),
        "{} {arg} failed: {status}",
        script.display()
    );
}

/// Starts the S3 server again even when an assertion fails mid-test.
pub struct StartOnDrop;
impl Drop for StartOnDrop {
    fn drop(&mut self) {
        restart_s3("--start-only");
    }
}

/// Creates `bucket` on the e2e S3 server (done when it exists): a test that
/// hands the bucket to a child process must not rely on another test having
/// created it, since a fresh cluster has none.
pub fn ensure_bucket(bucket: &str) {
    let env = cluster_env();
    let config = S3Config::from_lookup(bucket, "", |k| env.get(k).cloned()).expect("S3 config");
    let store = Store::s3(config).expect("S3 store");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.create_bucket())
        .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e}"));
}

/// Writes `size` pseudo-random (incompressible) bytes derived from `seed`
/// in 1 MiB chunks; returns the sha256 (hex).
pub fn write_random_file(path: &Path, size: u64, seed: u64) -> String {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
    hex::encode(hasher.finalize())
}

/// sha256 (hex) of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

/// A `VmRSS`/`VmHWM` value of this process from /proc/self/status, in bytes.
pub fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Resets the peak-RSS counter (`VmHWM`) so it measures from now on.
pub fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via /proc/self/clear_refs");
}

pub const MIB: u64 = 1024 * 1024;

/// Deletes every object under the store's root (tests clean up their prefix).
pub async fn delete_all(store: &Store) {
    for obj in store.list("").await.expect("list for cleanup") {
        store.delete(&obj.key).await.expect("delete for cleanup");
    }
}
