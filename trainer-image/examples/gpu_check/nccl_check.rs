//! Step 2: the project's NCCL path (see [`super::project_nccl`]) at world
//! size 1: communicator init through the rendezvous store, all-reduce,
//! all-gather and broadcast checked against their inputs, and the time of an
//! in-place sum all-reduce of `--mib` MiB of float32 (each call waits for
//! the stream, as the library does). Then two ranks on the one GPU, to
//! record what NCCL says to that (it refuses duplicate devices).

use std::ffi::c_int;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use megatron_trainer::comm::{StoreClient, StoreServer};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use super::error::{GpuCheckError, Result};
use super::project_nccl::nccl::{NcclComm, nccl_available, nccl_dtype};
use super::{child, cuda};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub device: String,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    pub mib: i64,
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Limit for the two-ranks-on-one-GPU attempt.
    #[arg(long, default_value_t = 30)]
    pub dup_timeout_s: u64,
}

/// One rank of the two-ranks-on-one-GPU attempt.
#[derive(clap::Args, Debug)]
pub struct DupArgs {
    #[arg(long)]
    pub store_port: u16,
    #[arg(long)]
    pub rank: usize,
}

const TIMEOUT: Duration = Duration::from_secs(60);

fn float() -> Result<c_int> {
    nccl_dtype(Kind::Float).ok_or_else(|| GpuCheckError::Arg("NCCL has no float32?".into()))
}

pub fn run(a: &Args) -> Result<Value> {
    if a.device == "cpu" {
        return Ok(json!({"skipped": "skipped: no CUDA"}));
    }
    let device = cuda::device(&a.device)?;
    nccl_available()?;
    let server = StoreServer::bind(0)?;
    let store = StoreClient::connect("127.0.0.1", server.port(), TIMEOUT, TIMEOUT)?;
    let f32 = float()?;
    let t0 = Instant::now();
    let mut comm = NcclComm::init(&store, "gpu-check/world1", 0, 1, 0, TIMEOUT)?;
    let x = Tensor::f_arange(1024, (Kind::Float, device))?;
    let y = x.copy();
    comm.all_reduce(y.data_ptr(), 1024, f32)?;
    let init_s = t0.elapsed().as_secs_f64();
    let gathered = Tensor::f_empty([1024], (Kind::Float, device))?;
    comm.all_gather(x.data_ptr(), gathered.data_ptr(), 1024, f32)?;
    let b = x.copy();
    comm.broadcast(b.data_ptr(), 1024, f32, 0)?;
    let checks = (y.equal(&x), gathered.equal(&x), b.equal(&x));

    let n = a.mib * (1 << 20) / 4;
    let big = Tensor::f_ones([n], (Kind::Float, device))?;
    cuda::sync(device);
    for _ in 0..3 {
        comm.all_reduce(big.data_ptr(), n as usize, f32)?;
    }
    let mut times = Vec::with_capacity(a.iters);
    for _ in 0..a.iters {
        let t = Instant::now();
        comm.all_reduce(big.data_ptr(), n as usize, f32)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let ones_kept = big.f_eq(1.0)?.f_all()?.int64_value(&[]) == 1;
    drop(comm);
    Ok(json!({
        "init_s": init_s,
        "all_reduce_ok": checks.0 && ones_kept,
        "all_gather_ok": checks.1,
        "broadcast_ok": checks.2,
        "allreduce_bytes": n * 4,
        "allreduce_s_median": super::median(&times),
        "allreduce_s": times,
        "two_ranks_one_gpu": two_ranks_one_gpu(&server, a.dup_timeout_s)?,
    }))
}

/// Starts two ranks that both try NCCL on GPU 0; returns what happened.
fn two_ranks_one_gpu(server: &StoreServer, limit_s: u64) -> Result<String> {
    let children = (0..2)
        .map(|r| {
            let args = [
                "nccl-dup-rank".to_string(),
                "--store-port".into(),
                server.port().to_string(),
                "--rank".into(),
                r.to_string(),
            ];
            child::spawn(&args, &[])
        })
        .collect::<Result<Vec<_>>>()?;
    let done = child::wait_all(children, Duration::from_secs(limit_s))?;
    if done.iter().any(|f| f.timed_out) {
        return Ok(format!("hung: killed after {limit_s} s"));
    }
    let said: Vec<String> = done
        .iter()
        .map(|f| {
            let line = f.stdout.lines().last().unwrap_or("").trim().to_string();
            if line.is_empty() {
                format!("crashed: {}", f.stderr_tail())
            } else {
                line
            }
        })
        .collect();
    Ok(if said.iter().all(|s| s == "ok") {
        "accepted (both ranks ran an all-reduce)".into()
    } else {
        format!("refused: {}", said.join(" | "))
    })
}

/// A rank of the duplicate-device attempt: prints `ok` or the error.
pub fn dup_rank(a: &DupArgs) -> Result<()> {
    let _ = cuda::device("cuda")?;
    let store = StoreClient::connect("127.0.0.1", a.store_port, TIMEOUT, TIMEOUT)?;
    let attempt = || -> Result<()> {
        let mut comm = NcclComm::init(
            &store,
            "gpu-check/dup",
            a.rank,
            2,
            0,
            Duration::from_secs(20),
        )?;
        let t = Tensor::f_ones([16], (Kind::Float, Device::Cuda(0)))?;
        comm.all_reduce(t.data_ptr(), 16, float()?)?;
        Ok(())
    };
    match attempt() {
        Ok(()) => println!("ok"),
        Err(e) => println!("rank {}: {e}", a.rank),
    }
    Ok(())
}
