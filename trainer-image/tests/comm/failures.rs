//! Failure behaviour: missing, unreachable, stalled and dying ranks give clear
//! errors naming the peer instead of hanging.

use crate::support::common;

use std::time::{Duration, Instant};

use common::{Ranks, emit, free_port, rank_child};
use megatron_trainer::comm::{self, CommConfig, CommError};
use tch::{Kind, Tensor};

#[test]
fn missing_rank_times_out_naming_it() {
    if rank_child().is_some() {
        // Rank 1 starts late (as a pod scheduled later would): its clock runs past rank 0's,
        // which hosts the store and must stay up until rank 1 has timed out too.
        if let Ok(ms) = std::env::var("TEST_START_DELAY_MS") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
        }
        let err = comm::init_from_env(1).unwrap_err();
        emit("error", &err);
        return;
    }
    let outs = Ranks::new(module_path!(), "missing_rank_times_out_naming_it", 3)
        .only([0, 1])
        .env("MEGATRON_RENDEZVOUS_TIMEOUT_SECS", 3)
        .rank_env(1, "TEST_START_DELAY_MS", 1500)
        .run_ok();
    for o in &outs {
        let e = o.expect_value("error");
        assert!(
            e.contains("rank(s) [2] of WORLD_SIZE=3 did not join"),
            "rank {}: {e}",
            o.rank
        );
        assert!(e.contains("MASTER_ADDR:MASTER_PORT"), "{e}");
    }
}

#[test]
fn unreachable_store_names_rank0_and_the_variables() {
    let port = free_port();
    let mut cfg = CommConfig::new("127.0.0.1", port, 1, 2, 1);
    cfg.rendezvous_timeout = Duration::from_millis(1500);
    let start = Instant::now();
    let e = comm::init(&cfg).unwrap_err().to_string();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(e.contains(&format!("rank 0 at 127.0.0.1:{port}")), "{e}");
    assert!(e.contains("MASTER_ADDR and MASTER_PORT"), "{e}");
    assert!(
        e.contains("Connection refused") || e.contains("connection refused"),
        "{e}"
    );
}

#[test]
fn unresolvable_master_addr_is_retried_then_reported() {
    let mut cfg = CommConfig::new("pod-0.no-such-service.invalid", 29500, 1, 2, 1);
    cfg.rendezvous_timeout = Duration::from_millis(1000);
    let e = comm::init(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("cannot resolve \"pod-0.no-such-service.invalid\""),
        "{e}"
    );
    assert!(e.contains("MASTER_ADDR"), "{e}");
}

/// A rank that is alive but never joins the collective: the per-operation
/// timeout names it.
#[test]
fn stalled_rank_times_out_naming_it() {
    if let Some(child) = rank_child() {
        let topo = comm::init_from_env(1).unwrap();
        if child.rank == 1 {
            // Alive well past rank 0's timeout, even on a loaded machine.
            std::thread::sleep(Duration::from_secs(8));
            return;
        }
        let mut t = Tensor::ones([1000], (Kind::Float, tch::Device::Cpu));
        let start = Instant::now();
        let e = topo.world.all_reduce_sum(&mut t).unwrap_err();
        assert!(matches!(e, CommError::Timeout { .. }), "{e}");
        emit("error", &e);
        emit("elapsed_ms", start.elapsed().as_millis());
        // The group stays broken afterwards.
        let again = topo.world.barrier().unwrap_err();
        assert!(matches!(again, CommError::Broken(_)), "{again}");
        return;
    }
    let outs = Ranks::new(module_path!(), "stalled_rank_times_out_naming_it", 2)
        .env("MEGATRON_COMM_TIMEOUT_SECS", 1.5)
        .run_ok();
    let e = outs[0].expect_value("error");
    assert!(e.contains("all_reduce_sum #1 in group world: timed out after 1.5s waiting for rank 1 at 127.0.0.1:"), "{e}");
    let ms: u64 = outs[0].expect_value("elapsed_ms").parse().unwrap();
    assert!(
        (1400..7000).contains(&ms),
        "timed out after {ms} ms, expected about 1500"
    );
}

/// A rank that exits in the middle of a stream of collectives: the others
/// fail within seconds (the operation timeout is 120 s) with errors naming
/// a peer.
#[test]
fn dying_rank_fails_the_others_quickly() {
    if let Some(child) = rank_child() {
        let topo = comm::init_from_env(1).unwrap();
        if child.rank == 2 {
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                std::process::exit(3);
            });
        }
        let start = Instant::now();
        let mut t = Tensor::ones([1 << 20], (Kind::Float, tch::Device::Cpu));
        let err = loop {
            if let Err(e) = topo.world.all_reduce_sum(&mut t) {
                break e;
            }
            let _ = t.fill_(1.0);
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no failure after 60 s"
            );
        };
        emit("error", &err);
        emit("elapsed_ms", start.elapsed().as_millis());
        return;
    }
    let outs = Ranks::new(module_path!(), "dying_rank_fails_the_others_quickly", 3)
        .env("MEGATRON_COMM_TIMEOUT_SECS", 120)
        .timeout(Duration::from_secs(90))
        .run();
    assert_eq!(outs[2].code, Some(3), "{}", outs[2].describe());
    for o in &outs[..2] {
        assert!(o.success, "{}", o.describe());
        let e = o.expect_value("error");
        eprintln!("rank {}: {e}", o.rank);
        assert!(
            e.contains("all_reduce_sum #") && e.contains("rank "),
            "rank {}: {e}",
            o.rank
        );
        let ms: u64 = o.expect_value("elapsed_ms").parse().unwrap();
        assert!(ms < 15_000, "rank {} failed only after {ms} ms", o.rank);
    }
}

fn thread_ranks<T: Send + 'static>(
    world: usize,
    timeout: Duration,
    f: impl Fn(usize, Result<comm::Topology, CommError>) -> T + Send + Sync + Copy + 'static,
) -> Vec<T> {
    let port = free_port();
    let handles: Vec<_> = (0..world)
        .map(|r| {
            std::thread::spawn(move || {
                let mut cfg = CommConfig::new("127.0.0.1", port, r, world, 1);
                cfg.rendezvous_timeout = timeout;
                cfg.op_timeout = timeout;
                f(r, comm::init(&cfg))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Ranks that disagree about a collective's shape fail with a protocol error
/// instead of exchanging garbage (ranks as threads of one process).
#[test]
fn mismatched_collectives_are_reported() {
    let errs = thread_ranks(2, Duration::from_secs(20), |r, topo| {
        let topo = topo.unwrap();
        let mut t = Tensor::zeros([10 + r as i64], (Kind::Float, tch::Device::Cpu));
        topo.world.all_reduce_sum(&mut t).unwrap_err().to_string()
    });
    for e in errs {
        eprintln!("{e}");
        assert!(
            e.contains("protocol mismatch") || e.contains("closed the connection"),
            "{e}"
        );
    }
}

#[test]
fn world_size_mismatch_and_bad_tensors_are_reported() {
    // Unsupported dtype and bad arguments come back as errors, not panics.
    let results = thread_ranks(2, Duration::from_secs(20), |_r, topo| {
        let topo = topo.unwrap();
        let mut b = Tensor::ones([3], (Kind::Bool, tch::Device::Cpu));
        let sum_bool = topo.world.all_reduce_sum(&mut b).unwrap_err().to_string();
        let bad_dim = topo
            .world
            .all_gather_cat(&Tensor::ones([2], (Kind::Float, tch::Device::Cpu)), 1)
            .unwrap_err()
            .to_string();
        let mut t = Tensor::ones([2], (Kind::Float, tch::Device::Cpu));
        let bad_root = topo.world.broadcast(&mut t, 2).unwrap_err().to_string();
        // The group still works after argument errors.
        topo.world.all_reduce_sum(&mut t).unwrap();
        (sum_bool, bad_dim, bad_root, t.double_value(&[0]))
    });
    for (sum_bool, bad_dim, bad_root, v) in results {
        assert!(sum_bool.contains("Bool cannot be summed"), "{sum_bool}");
        assert!(bad_dim.contains("dim 1 is out of range"), "{bad_dim}");
        assert!(bad_root.contains("root 2 is out of range"), "{bad_root}");
        assert_eq!(v, 2.0);
    }
}

#[test]
fn duplicate_rank_is_reported() {
    let port = free_port();
    let spawn = |r: usize| {
        std::thread::spawn(move || {
            let mut cfg = CommConfig::new("127.0.0.1", port, r, 3, 1);
            cfg.rendezvous_timeout = Duration::from_secs(10);
            comm::init(&cfg).map(|_| ()).map_err(|e| e.to_string())
        })
    };
    let hs = [spawn(0), spawn(1), spawn(1)];
    let errs: Vec<String> = hs
        .into_iter()
        .filter_map(|h| h.join().unwrap().err())
        .collect();
    assert!(
        errs.iter()
            .any(|e| e.contains("two processes started with RANK=1")),
        "{errs:?}"
    );
}

/// Without CUDA the NCCL backend reports itself unavailable (no panic); with
/// CUDA it loads.
#[test]
fn nccl_availability_is_an_error_not_a_panic() {
    match (tch::Cuda::is_available(), comm::nccl_available()) {
        (false, Err(e)) => assert!(e.to_string().contains("CUDA is not available"), "{e}"),
        (false, Ok(())) => panic!("NCCL reported available without CUDA"),
        (true, r) => r.unwrap(),
    }
}
