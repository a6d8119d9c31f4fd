//! Benchmark (ignored by default): fetching, verifying and loading a published model's weights
//! (issue 11), side by side with doing it by hand. A 345M-sized Megatron-LM weights file (hidden
//! 1024, 16 heads, 24 layers, FFN 4096, 512 positions, vocab 30522; written by
//! e2e/tests/python/tiny_megatron_bert.py, which writes float32 only: ~1.34 GB, where NGC's
//! megatron_bert_345m file is fp16, ~0.7 GB) is uploaded to an S3 "mirror" prefix of the e2e
//! cluster's S3 server in NGC's layout, with a `.sha256` sidecar. Then, twice each, interleaved:
//!
//! - ours: `pretrained::resolve` (S3 mirror -> a fresh local directory, sha256 checked against
//!   the sidecar, no shared cache) then `checkpoint::megatron::load(file, 1, 0)`, in this
//!   process; the peak RSS of each phase from `VmHWM` (reset before it);
//! - reference (tests/python/published_bench.py): `aws s3 cp` (AWS CLI, default settings),
//!   `sha256sum`, and a fresh Python's `torch.load(file, weights_only=False)`, each its own
//!   process, peak RSS from its rusage.
//!
//! The best (smallest) of the 2 runs is reported per row. NGC's BERT weights are single .pt
//! files (no archive), so neither side unzips. Needs the e2e cluster (`e2e/cluster/up`), the
//! AWS CLI on PATH and ~6 GB of free disk. Run:
//! `cargo test --release -p megatron-trainer --test benches -- published --ignored --nocapture`

use crate::support::common;
use crate::support::storage_util;
use crate::support::temp_dir::TempDir;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crds::PretrainedModel;
use crds::published::Published;
use megatron_trainer::checkpoint::megatron;
use megatron_trainer::pretrained::{Remote, Request, Sources, file_digest, resolve};
use megatron_trainer::storage::{Store, TransferOptions};
use storage_util::{MIB, TEST_BUCKET};

const RUNS: usize = 2;

fn published() -> &'static Published {
    PretrainedModel::MegatronBert345mUncased
        .published_files()
        .unwrap()
}

/// Writes the 345M-sized checkpoint under `dir`; returns its one weights file.
fn generate(dir: &Path) -> PathBuf {
    let script = storage_util::e2e_dir().join("tests/python/tiny_megatron_bert.py");
    let out = Command::new(common::python())
        .arg(&script)
        .arg(dir)
        .args([
            "--tp", "1", "--hidden", "1024", "--heads", "16", "--layers", "24",
        ])
        .args([
            "--ffn",
            "4096",
            "--max-positions",
            "512",
            "--vocab",
            "30522",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("iter_0000100/mp_rank_00/model_optim_rng.pt")
}

/// Deletes the mirror's objects even when the benchmark fails half-way.
struct DeleteOnDrop(Store);
impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(storage_util::delete_all(&self.0));
    }
}

struct Ours {
    fetch_s: f64,
    fetch_rss: u64,
    load_s: f64,
    load_rss: u64,
    /// RSS of this process when the fetch starts (libtorch loaded, nothing else).
    base_rss: u64,
}

fn ours(rt: &tokio::runtime::Runtime, mirror: &Store, local_root: &Path, sha: &str) -> Ours {
    let sources = Sources {
        mirror: Some(Remote::Store {
            store: mirror.clone(),
        }),
        ..Sources::default()
    };
    let request = Request {
        published: published(),
        local_root: local_root.to_path_buf(),
        leader: true,
        wait: std::time::Duration::from_secs(30),
    };
    let base_rss = storage_util::proc_status_bytes("VmRSS");
    storage_util::reset_peak_rss();
    let t = Instant::now();
    let resolved = rt
        .block_on(resolve(&sources, &request, &mut |_| {}))
        .unwrap();
    let fetch_s = t.elapsed().as_secs_f64();
    let fetch_rss = storage_util::proc_status_bytes("VmHWM");
    assert!(resolved.source.starts_with("s3://"), "{}", resolved.source);
    assert_eq!(resolved.manifest.files[0].sha256, sha);
    let path = resolved.dir.join(published().weights().path);

    storage_util::reset_peak_rss();
    let t = Instant::now();
    let (config, state, _) = megatron::load(&path, 1, 0).unwrap();
    let load_s = t.elapsed().as_secs_f64();
    let load_rss = storage_util::proc_status_bytes("VmHWM");
    assert_eq!((config.hidden_size, config.num_layers), (1024, 24));
    let params: i64 = state.values().map(|t| t.numel() as i64).sum();
    assert!(params > 330_000_000, "{params} parameters");
    drop(state);
    std::fs::remove_dir_all(local_root).unwrap();
    Ours {
        fetch_s,
        fetch_rss,
        load_s,
        load_rss,
        base_rss,
    }
}

fn reference(uri: &str, dest: &Path, sha: &str) -> serde_json::Value {
    let env = storage_util::cluster_env();
    std::fs::create_dir_all(dest).unwrap();
    let out = Command::new(common::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/published_bench.py"
        ))
        .arg("fetch")
        .arg(uri)
        .arg(dest)
        .arg(sha)
        .env("ENDPOINT", &env["MEGATRON_S3_ENDPOINT"])
        .env("AWS_ACCESS_KEY_ID", &env["AWS_ACCESS_KEY_ID"])
        .env("AWS_SECRET_ACCESS_KEY", &env["AWS_SECRET_ACCESS_KEY"])
        .env("AWS_DEFAULT_REGION", &env["AWS_REGION"])
        .env("AWS_REGION", &env["AWS_REGION"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(dest).unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn min(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn bench_fetch_verify_load() {
    let dir = TempDir::new("published-bench");
    let t = Instant::now();
    let file = generate(&dir.path().join("generated"));
    let generate_s = t.elapsed().as_secs_f64();
    let digest = file_digest(&file).unwrap();

    storage_util::ensure_bucket(TEST_BUCKET);
    let prefix = format!("{}/mirror", storage_util::unique_prefix("published-bench"));
    let mirror = Store::s3(storage_util::s3_config(&prefix, &[])).unwrap();
    let _cleanup = DeleteOnDrop(mirror.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = published().weights().path;
    rt.block_on(mirror.upload_file(&file, key, &TransferOptions::default()))
        .unwrap();
    rt.block_on(
        mirror.put_bytes(
            &format!("{key}.sha256"),
            format!("{}  model_optim_rng.pt\n", digest.sha256)
                .into_bytes()
                .into(),
        ),
    )
    .unwrap();
    std::fs::remove_dir_all(dir.path().join("generated")).unwrap();
    let uri = format!("s3://{TEST_BUCKET}/{prefix}/{key}");

    let mut our_runs = Vec::new();
    let mut ref_runs = Vec::new();
    for run in 0..RUNS {
        our_runs.push(ours(
            &rt,
            &mirror,
            &dir.path().join(format!("ours-{run}")),
            &digest.sha256,
        ));
        ref_runs.push(reference(
            &uri,
            &dir.path().join(format!("reference-{run}")),
            &digest.sha256,
        ));
    }
    drop(_cleanup);
    drop(dir);

    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    let o_fetch = min(our_runs.iter().map(|r| r.fetch_s));
    let o_load = min(our_runs.iter().map(|r| r.load_s));
    let o_total = min(our_runs.iter().map(|r| r.fetch_s + r.load_s));
    let o_fetch_rss = min(our_runs.iter().map(|r| r.fetch_rss as f64));
    let o_load_rss = min(our_runs.iter().map(|r| r.load_rss as f64));
    let o_total_rss = min(our_runs.iter().map(|r| r.fetch_rss.max(r.load_rss) as f64));
    let r_cp = min(ref_runs.iter().map(|r| f(r, "cp_s")));
    let r_sum = min(ref_runs.iter().map(|r| f(r, "sha256sum_s")));
    let r_fetch = min(ref_runs.iter().map(|r| f(r, "cp_s") + f(r, "sha256sum_s")));
    let r_load = min(ref_runs.iter().map(|r| f(r, "torch_load_s")));
    let r_start = min(ref_runs
        .iter()
        .map(|r| f(r, "load_process_s") - f(r, "torch_load_s")));
    let r_total = min(ref_runs
        .iter()
        .map(|r| f(r, "cp_s") + f(r, "sha256sum_s") + f(r, "torch_load_s")));
    let r_total_start = min(ref_runs
        .iter()
        .map(|r| f(r, "cp_s") + f(r, "sha256sum_s") + f(r, "load_process_s")));
    let r_cp_rss = min(ref_runs.iter().map(|r| f(r, "cp_rss")));
    let r_sum_rss = min(ref_runs.iter().map(|r| f(r, "sha256sum_rss")));
    let r_fetch_rss = min(ref_runs
        .iter()
        .map(|r| f(r, "cp_rss").max(f(r, "sha256sum_rss"))));
    let r_import_rss = min(ref_runs.iter().map(|r| f(r, "import_rss")));
    let o_base_rss = min(our_runs.iter().map(|r| r.base_rss as f64));
    let r_load_rss = min(ref_runs.iter().map(|r| f(r, "load_rss")));
    let r_total_rss = min(ref_runs.iter().map(|r| {
        f(r, "cp_rss")
            .max(f(r, "sha256sum_rss"))
            .max(f(r, "load_rss"))
    }));

    println!(
        "weights file: {:.0} MB ({} bytes, float32: the generator has no dtype option; NGC's is \
         fp16, ~0.7 GB), generated in {generate_s:.0} s; S3 mirror {uri}",
        digest.size as f64 / 1e6,
        digest.size
    );
    println!(
        "reference: aws s3 cp + sha256sum + fresh python torch.load(weights_only=False); no unzip \
         step: NGC's BERT weights are one torch.save .pt file, not a zip archive"
    );
    println!("best of {RUNS} runs per row (smallest time, smallest peak RSS); RSS in MiB");
    let mib = |b: f64| b / MIB as f64;
    let s = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let m = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}", mib(v)));
    let ratio = |a: Option<f64>, b: f64| a.map_or("-".to_owned(), |a| format!("{:.2}", a / b));
    println!(
        "| phase | ours s | reference s | ratio | ours peak RSS MiB | reference peak RSS MiB | RSS ratio |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (phase, o, r, orss, rrss) in [
        (
            "fetch + sha256 (resolve / aws s3 cp + sha256sum)",
            Some(o_fetch),
            r_fetch,
            Some(o_fetch_rss),
            r_fetch_rss,
        ),
        ("  reference: aws s3 cp", None, r_cp, None, r_cp_rss),
        (
            "  reference: sha256sum (ours: while downloading)",
            None,
            r_sum,
            None,
            r_sum_rss,
        ),
        (
            "load (megatron::load / torch.load)",
            Some(o_load),
            r_load,
            Some(o_load_rss),
            r_load_rss,
        ),
        (
            "  reference: python start + import torch",
            None,
            r_start,
            None,
            r_import_rss,
        ),
        (
            "total (reference without python start)",
            Some(o_total),
            r_total,
            Some(o_total_rss),
            r_total_rss,
        ),
        (
            "total (reference with python start)",
            Some(o_total),
            r_total_start,
            Some(o_total_rss),
            r_total_rss,
        ),
    ] {
        println!(
            "| {phase} | {} | {r:.2} | {} | {} | {:.0} | {} |",
            s(o),
            ratio(o, r),
            m(orss),
            mib(rrss),
            ratio(orss, rrss)
        );
    }
    println!(
        "process RSS before the work: ours {:.0} MiB (the test binary, libtorch loaded), \
         reference {:.0} MiB (python with torch imported)",
        mib(o_base_rss),
        mib(r_import_rss)
    );
    let tensors = ref_runs[0]["tensors"].as_i64().unwrap();
    println!("reference loaded {tensors} tensors (the file's model dict)");
}
