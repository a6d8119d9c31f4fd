//! Upload/download throughput of one large file to an S3-compatible server:
//! this crate's storage layer vs. a reference client (the AWS CLI), side by
//! side, plus the peak RSS growth of our upload.
//!
//! ```text
//! e2e/cluster/up && trainer-image/examples/bench_s3_awscli.sh   # once
//! cargo run --release -p megatron-trainer --example bench_s3 -- --size-mib 1536
//! ```
//! Settings come from `e2e/.cluster/env` (or the process environment when
//! `MEGATRON_S3_ENDPOINT` is set); the AWS CLI from `$AWS_CLI` or
//! `/tmp/megatron-awscli/bin/aws`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use megatron_trainer::storage::{S3Config, Store, TransferOptions};

#[derive(Parser)]
struct Args {
    /// File size in MiB.
    #[arg(long, default_value_t = 1536)]
    size_mib: u64,
    /// Multipart part / ranged-read size in MiB.
    #[arg(long, default_value_t = 16)]
    part_mib: usize,
    /// Parts in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value = "megatron-bench")]
    bucket: String,
    /// Directory for the test files.
    #[arg(long, default_value = "/tmp/megatron-bench-s3")]
    work_dir: PathBuf,
    /// Reference client executable.
    #[arg(long, env = "AWS_CLI", default_value = "/tmp/megatron-awscli/bin/aws")]
    aws_cli: PathBuf,
    /// Repetitions of each measurement; the best (fastest) run is reported.
    #[arg(long, default_value_t = 2)]
    runs: usize,
}

fn env_vars() -> anyhow::Result<HashMap<String, String>> {
    if std::env::var("MEGATRON_S3_ENDPOINT").is_ok() {
        return Ok(std::env::vars().collect());
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/.cluster/env");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}: run e2e/cluster/up first", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        * 1024
}

fn write_file(path: &Path, size: u64) -> anyhow::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == size) {
        return Ok(());
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn aws(args: &Args, env: &HashMap<String, String>, cmd: &[&str]) -> anyhow::Result<f64> {
    let start = Instant::now();
    let status = Command::new(&args.aws_cli)
        .args(cmd)
        .arg("--only-show-errors")
        .env("AWS_ACCESS_KEY_ID", &env["AWS_ACCESS_KEY_ID"])
        .env("AWS_SECRET_ACCESS_KEY", &env["AWS_SECRET_ACCESS_KEY"])
        .env(
            "AWS_REGION",
            env.get("AWS_REGION").map_or("us-east-1", |s| s),
        )
        .env("AWS_ENDPOINT_URL", &env["MEGATRON_S3_ENDPOINT"])
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .status()
        .with_context(|| {
            format!(
                "running {} (install it with trainer-image/examples/bench_s3_awscli.sh)",
                args.aws_cli.display()
            )
        })?;
    if !status.success() {
        bail!("{} {cmd:?} failed: {status}", args.aws_cli.display());
    }
    Ok(start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let env = env_vars()?;
    let config = S3Config::from_lookup(&args.bucket, "bench", |k| env.get(k).cloned())?;
    let store = Store::s3(config)?;
    store.create_bucket().await?;
    std::fs::create_dir_all(&args.work_dir)?;
    let size = args.size_mib * 1024 * 1024;
    let src = args.work_dir.join("src.bin");
    write_file(&src, size)?;
    let opts = TransferOptions {
        part_size: args.part_mib * 1024 * 1024,
        concurrency: args.concurrency,
        ..TransferOptions::default()
    };
    let mib = size as f64 / (1024.0 * 1024.0);
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);

    let (mut ours_up, mut ours_down, mut ref_up, mut ref_down) = (vec![], vec![], vec![], vec![]);
    let mut peak_growth = 0;
    let dest = args.work_dir.join("ours.bin");
    let ref_dest = args.work_dir.join("ref.bin");
    let ref_url = format!("s3://{}/bench/ref.bin", args.bucket);
    for run in 0..args.runs {
        let rss = proc_status_bytes("VmRSS");
        std::fs::write("/proc/self/clear_refs", "5")?; // reset VmHWM
        let t = Instant::now();
        let up = store.upload_file(&src, "ours.bin", &opts).await?;
        ours_up.push(t.elapsed().as_secs_f64());
        peak_growth = peak_growth.max(proc_status_bytes("VmHWM").saturating_sub(rss));
        let t = Instant::now();
        let down = store.download_file("ours.bin", &dest, &opts).await?;
        ours_down.push(t.elapsed().as_secs_f64());
        if up != down {
            bail!("round trip changed the bytes: {up:?} vs {down:?}");
        }
        ref_up.push(aws(
            &args,
            &env,
            &["s3", "cp", src.to_str().unwrap(), &ref_url],
        )?);
        ref_down.push(aws(
            &args,
            &env,
            &["s3", "cp", &ref_url, ref_dest.to_str().unwrap()],
        )?);
        eprintln!(
            "run {run}: ours up {:.2}s down {:.2}s | aws-cli up {:.2}s down {:.2}s",
            ours_up[run], ours_down[run], ref_up[run], ref_down[run]
        );
        let _ = std::fs::remove_file(&dest);
        let _ = std::fs::remove_file(&ref_dest);
    }
    let (ou, od, ru, rd) = (
        best(&ours_up),
        best(&ours_down),
        best(&ref_up),
        best(&ref_down),
    );
    println!(
        "file {mib:.0} MiB, part {} MiB x {} in flight, best of {} runs",
        args.part_mib, args.concurrency, args.runs
    );
    println!(
        "upload:   ours {:7.1} MiB/s  aws-cli {:7.1} MiB/s  ratio {:.2}x",
        mib / ou,
        mib / ru,
        ru / ou
    );
    println!(
        "download: ours {:7.1} MiB/s  aws-cli {:7.1} MiB/s  ratio {:.2}x",
        mib / od,
        mib / rd,
        rd / od
    );
    println!(
        "peak RSS growth during upload: {:.1} MiB (goal < 256 MiB)",
        peak_growth as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
