//! All-reduce bus bandwidth of the TCP ring vs torch.distributed's Gloo, for
//! 4 ranks on loopback, float32 tensors of 1 KiB .. 64 MiB.
//!
//! ```text
//! eval "$(scripts/torch-env)"
//! cargo run --release -p megatron-trainer --example bench_allreduce [-- WORLD]
//! ```
//! Bus bandwidth = bytes * 2 (n-1) / n / time (nccl-tests' definition);
//! `ratio` = ring bus bandwidth / Gloo bus bandwidth (> 1: the ring is faster).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use megatron_trainer::comm;
use tch::{Kind, Tensor};

const SIZES: [usize; 9] = [
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
];

/// Same iteration counts as the Python script.
fn iterations(nbytes: usize) -> usize {
    ((64 << 20) * 4 / nbytes.max(1)).clamp(5, 200)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// One rank: prints `ring <bytes> <seconds>` lines on rank 0.
fn rank_main() -> anyhow::Result<()> {
    let topo = comm::init_from_env(1)?;
    for nbytes in SIZES {
        let mut t = Tensor::ones([(nbytes / 4) as i64], (Kind::Float, tch::Device::Cpu));
        for _ in 0..2 {
            topo.world.all_reduce_sum(&mut t)?;
        }
        let iters = iterations(nbytes);
        topo.world.barrier()?;
        let start = Instant::now();
        for _ in 0..iters {
            topo.world.all_reduce_sum(&mut t)?;
        }
        let secs = start.elapsed().as_secs_f64() / iters as f64;
        if topo.rank == 0 {
            println!("ring {nbytes} {secs:.9}");
        }
    }
    topo.world.barrier()?;
    Ok(())
}

fn parse(out: &str, tag: &str) -> Vec<(usize, f64)> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == tag).then_some(())?;
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("BENCH_ALLREDUCE_CHILD").is_some() {
        return rank_main();
    }
    let world: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(4);
    let exe = std::env::current_exe()?;
    let port = free_port()?;
    let children: Vec<_> = (0..world)
        .map(|r| {
            Command::new(&exe)
                .env("BENCH_ALLREDUCE_CHILD", "1")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut ring_out = String::new();
    for (r, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output()?;
        if !o.status.success() {
            bail!("ring rank {r} failed: {}", o.status);
        }
        ring_out.push_str(&String::from_utf8_lossy(&o.stdout));
    }

    let python = std::env::var("MEGATRON_PYTHON")
        .context("MEGATRON_PYTHON is not set: run `eval \"$(scripts/torch-env)\"` first")?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/bench_allreduce_gloo.py"
    );
    let mut args = vec![
        script.to_string(),
        world.to_string(),
        free_port()?.to_string(),
    ];
    args.extend(SIZES.iter().map(|s| s.to_string()));
    let o = Command::new(&python)
        .args(&args)
        .stderr(Stdio::inherit())
        .output()?;
    if !o.status.success() {
        bail!("the Gloo benchmark failed: {}", o.status);
    }
    let gloo_out = String::from_utf8_lossy(&o.stdout).into_owned();

    let ring = parse(&ring_out, "ring");
    let gloo = parse(&gloo_out, "gloo");
    let factor = 2.0 * (world as f64 - 1.0) / world as f64;
    println!("all-reduce, float32, {world} ranks on loopback; busbw = bytes*2(n-1)/n/time");
    println!(
        "{:>10} {:>12} {:>12} {:>12} {:>12} {:>7}",
        "bytes", "ring us", "ring GB/s", "gloo us", "gloo GB/s", "ratio"
    );
    for ((bytes, rt), (_, gt)) in ring.iter().zip(&gloo) {
        let (rbw, gbw) = (
            *bytes as f64 * factor / rt / 1e9,
            *bytes as f64 * factor / gt / 1e9,
        );
        println!(
            "{bytes:>10} {:>12.1} {rbw:>12.3} {:>12.1} {gbw:>12.3} {:>7.2}",
            rt * 1e6,
            gt * 1e6,
            rbw / gbw
        );
    }
    Ok(())
}
