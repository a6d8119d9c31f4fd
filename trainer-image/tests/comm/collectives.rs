//! Multi-process collectives on loopback: every rank is a separate process
//! (see `common`), results are checked against the same reduction computed
//! in one process and must be bit-identical on all ranks.

use crate::support::common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{RankOutput, Ranks, emit, rank_child};
use megatron_trainer::comm::{self, ProcessGroup, ring_sum_reference};
use tch::{Kind, Tensor};

const DTYPES: [Kind; 6] = [
    Kind::Float,
    Kind::Double,
    Kind::BFloat16,
    Kind::Half,
    Kind::Int64,
    Kind::Int,
];
/// 1 element, fewer elements than ranks, not divisible by the world size, and
/// chunks longer than one 256 KiB segment.
const NUMELS: [i64; 6] = [1, 2, 3, 1001, 65_537, 300_007];

/// FNV-1a of a tensor's bytes: equal on two ranks means bit-identical.
fn fingerprint(t: &Tensor) -> String {
    let t = t.contiguous();
    let n = t.numel() * t.kind().elt_size_in_bytes();
    let mut bytes = vec![0u8; n];
    t.view_dtype(Kind::Uint8)
        .reshape([-1])
        .copy_data_u8(&mut bytes, n);
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Deterministic input of global rank `r`, the same on every process.
fn input(seed: i64, r: usize, shape: &[i64], kind: Kind) -> Tensor {
    tch::manual_seed(seed * 1000 + r as i64);
    match kind {
        Kind::Int64 | Kind::Int => {
            Tensor::randint_low(-1000, 1000, shape, (kind, tch::Device::Cpu))
        }
        Kind::Bool => {
            Tensor::randint(2, shape, (Kind::Int64, tch::Device::Cpu)).to_kind(Kind::Bool)
        }
        _ => (Tensor::randn(shape, (Kind::Float, tch::Device::Cpu)) * 3.0).to_kind(kind),
    }
}

/// Runs all collectives on `g` (whose members are the global ranks `members`)
/// and checks each against a one-process computation; emits fingerprints
/// under `label`.
fn check_group(g: &dyn ProcessGroup, members: &[usize], label: &str) {
    assert_eq!(g.size(), members.len());
    let me = g.rank();
    for (ki, kind) in DTYPES.into_iter().enumerate() {
        for (ni, numel) in NUMELS.into_iter().enumerate() {
            let seed = (ki * 10 + ni) as i64;
            let inputs: Vec<Tensor> = members
                .iter()
                .map(|r| input(seed, *r, &[numel], kind))
                .collect();
            let mut mine = inputs[me].copy();
            g.all_reduce_sum(&mut mine).unwrap();
            let expected = ring_sum_reference(&inputs);
            assert!(
                mine.equal(&expected),
                "{label}: all_reduce {kind:?}[{numel}] differs from the one-process ring order"
            );
            // And it is the sum: exact for integers, close for floats.
            let naive = inputs
                .iter()
                .skip(1)
                .fold(inputs[0].to_kind(Kind::Double), |a, b| {
                    a + b.to_kind(Kind::Double)
                });
            let tol = match kind {
                Kind::BFloat16 => 0.1,
                Kind::Half => 0.02,
                Kind::Float => 1e-5,
                _ => 0.0,
            };
            let err = (mine.to_kind(Kind::Double) - &naive)
                .abs()
                .max()
                .double_value(&[]);
            let scale = naive.abs().max().double_value(&[]).max(1.0);
            assert!(
                err <= tol * scale,
                "{label}: all_reduce {kind:?}[{numel}] off by {err}"
            );
            emit(
                &format!("{label}/all_reduce/{kind:?}/{numel}"),
                fingerprint(&mine),
            );
        }
    }
    // All-gather along each dim, including a negative one, for several dtypes.
    for (i, kind) in [Kind::Float, Kind::BFloat16, Kind::Int64, Kind::Bool]
        .into_iter()
        .enumerate()
    {
        let inputs: Vec<Tensor> = members
            .iter()
            .map(|r| input(100 + i as i64, *r, &[3, 5, 2], kind))
            .collect();
        for dim in [0i64, 1, -1] {
            let got = g.all_gather_cat(&inputs[me], dim).unwrap();
            assert!(
                got.equal(&Tensor::cat(&inputs, dim)),
                "{label}: all_gather {kind:?} dim {dim}"
            );
            emit(
                &format!("{label}/all_gather/{kind:?}/{dim}"),
                fingerprint(&got),
            );
        }
    }
    // Broadcast from every root; a non-contiguous tensor too.
    for root in 0..g.size() {
        let inputs: Vec<Tensor> = members
            .iter()
            .map(|r| input(200, *r, &[70_001], Kind::Float))
            .collect();
        let mut t = inputs[me].copy();
        g.broadcast(&mut t, root).unwrap();
        assert!(t.equal(&inputs[root]), "{label}: broadcast from {root}");
        let mats: Vec<Tensor> = members
            .iter()
            .map(|r| input(300, *r, &[4, 6], Kind::Double))
            .collect();
        let mut tr = mats[me].copy().transpose(0, 1);
        assert!(!tr.is_contiguous());
        g.broadcast(&mut tr, root).unwrap();
        assert!(
            tr.equal(&mats[root].transpose(0, 1)),
            "{label}: non-contiguous broadcast from {root}"
        );
    }
    let mats: Vec<Tensor> = members
        .iter()
        .map(|r| input(400, *r, &[5, 7], Kind::Float))
        .collect();
    let mut tr = mats[me].copy().transpose(0, 1);
    g.all_reduce_sum(&mut tr).unwrap();
    // The ring sums the transposed view's elements in their logical order.
    let transposed: Vec<Tensor> = mats
        .iter()
        .map(|m| m.transpose(0, 1).contiguous())
        .collect();
    assert!(
        tr.equal(&ring_sum_reference(&transposed)),
        "{label}: non-contiguous all_reduce"
    );
    g.barrier().unwrap();
}

/// Asserts that ranks in the same group reported the same fingerprints for
/// every key under `prefix`.
fn assert_same(outs: &[&RankOutput], prefix: &str) {
    let pick = |o: &RankOutput| -> BTreeMap<String, String> {
        o.values
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let first = pick(outs[0]);
    assert!(
        first.len() > 10,
        "rank {} reported too few results under {prefix}",
        outs[0].rank
    );
    for o in &outs[1..] {
        assert_eq!(
            pick(o),
            first,
            "ranks {} and {} differ under {prefix}",
            outs[0].rank,
            o.rank
        );
    }
}

fn world_test(name: &str, world: usize) {
    if rank_child().is_some() {
        let topo = comm::init_from_env(1).unwrap();
        assert_eq!(topo.world_size, world);
        let members: Vec<usize> = (0..world).collect();
        check_group(topo.world.as_ref(), &members, "world");
        return;
    }
    let outs = Ranks::new(module_path!(), name, world).run_ok();
    assert_same(&outs.iter().collect::<Vec<_>>(), "world/");
}

#[test]
fn world2_collectives() {
    world_test("world2_collectives", 2);
}

#[test]
fn world3_collectives() {
    world_test("world3_collectives", 3);
}

#[test]
fn world4_collectives() {
    world_test("world4_collectives", 4);
}

#[test]
fn world4_tp2_subgroups() {
    if let Some(child) = rank_child() {
        let topo = comm::init_from_env(2).unwrap();
        let r = child.rank;
        assert_eq!(
            (topo.tp_size, topo.dp_size, topo.tp_rank, topo.dp_rank),
            (2, 2, r % 2, r / 2)
        );
        assert_eq!((topo.tp.rank(), topo.dp.rank()), (r % 2, r / 2));
        let tp_members = comm::tp_group_members(4, 2, r / 2);
        let dp_members = comm::dp_group_members(4, 2, r % 2);
        check_group(topo.tp.as_ref(), &tp_members, "tp");
        check_group(topo.dp.as_ref(), &dp_members, "dp");
        // The groups really are different: a rank-valued sum tells them apart.
        let mut v = Tensor::from_slice(&[r as i64]);
        topo.tp.all_reduce_sum(&mut v).unwrap();
        emit("tp_sum", v.int64_value(&[0]));
        let mut v = Tensor::from_slice(&[r as i64]);
        topo.dp.all_reduce_sum(&mut v).unwrap();
        emit("dp_sum", v.int64_value(&[0]));
        let mut v = Tensor::from_slice(&[r as i64]);
        topo.world.all_reduce_sum(&mut v).unwrap();
        emit("world_sum", v.int64_value(&[0]));
        return;
    }
    let outs = Ranks::new(module_path!(), "world4_tp2_subgroups", 4).run_ok();
    // TP groups {0,1}, {2,3}; DP groups {0,2}, {1,3}.
    let sums: Vec<(&str, &str, &str)> = outs
        .iter()
        .map(|o| {
            (
                o.expect_value("tp_sum"),
                o.expect_value("dp_sum"),
                o.expect_value("world_sum"),
            )
        })
        .collect();
    assert_eq!(
        sums,
        vec![
            ("1", "2", "6"),
            ("1", "4", "6"),
            ("5", "2", "6"),
            ("5", "4", "6")
        ]
    );
    assert_same(&[&outs[0], &outs[1]], "tp/");
    assert_same(&[&outs[2], &outs[3]], "tp/");
    assert_same(&[&outs[0], &outs[2]], "dp/");
    assert_same(&[&outs[1], &outs[3]], "dp/");
}

#[test]
fn ten_million_elements_world3() {
    const NUMEL: i64 = 10_000_000; // not divisible by 3
    if let Some(child) = rank_child() {
        let topo = comm::init_from_env(1).unwrap();
        let inputs: Vec<Tensor> = (0..3).map(|r| input(7, r, &[NUMEL], Kind::Float)).collect();
        let mut mine = inputs[child.rank].copy();
        topo.world.all_reduce_sum(&mut mine).unwrap();
        assert!(mine.equal(&ring_sum_reference(&inputs)));
        emit("sum", fingerprint(&mine));
        let mut b = if child.rank == 1 {
            inputs[1].copy()
        } else {
            Tensor::zeros([NUMEL], (Kind::Float, tch::Device::Cpu))
        };
        topo.world.broadcast(&mut b, 1).unwrap();
        assert!(b.equal(&inputs[1]));
        let g = topo
            .world
            .all_gather_cat(&inputs[child.rank].narrow(0, 0, 3_000_001), 0)
            .unwrap();
        assert!(
            g.equal(&Tensor::cat(
                &inputs
                    .iter()
                    .map(|t| t.narrow(0, 0, 3_000_001))
                    .collect::<Vec<_>>(),
                0
            ))
        );
        return;
    }
    let outs = Ranks::new(module_path!(), "ten_million_elements_world3", 3).run_ok();
    assert_eq!(outs[0].value("sum"), outs[1].value("sum"));
    assert_eq!(outs[0].value("sum"), outs[2].value("sum"));
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Rank 0 (the store host) starts last, so the others retry connecting; the
/// barrier releases nobody before the last rank arrives.
#[test]
fn barrier_waits_for_the_last_rank() {
    if let Some(child) = rank_child() {
        if child.rank == 0 {
            std::thread::sleep(Duration::from_millis(1500));
        }
        let topo = comm::init_from_env(1).unwrap();
        std::thread::sleep(Duration::from_millis(400 * child.rank as u64));
        emit("enter", unix_ms());
        topo.world.barrier().unwrap();
        emit("exit", unix_ms());
        return;
    }
    let outs = Ranks::new(module_path!(), "barrier_waits_for_the_last_rank", 3).run_ok();
    let ms = |o: &RankOutput, k: &str| o.expect_value(k).parse::<u128>().unwrap();
    let last_enter = outs.iter().map(|o| ms(o, "enter")).max().unwrap();
    let first_exit = outs.iter().map(|o| ms(o, "exit")).min().unwrap();
    assert!(
        first_exit >= last_enter,
        "a rank left the barrier at {first_exit} before the last entered at {last_enter}"
    );
}
