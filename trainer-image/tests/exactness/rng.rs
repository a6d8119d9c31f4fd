//! Generator states and Megatron's model-parallel RNG tracker against PyTorch
//! (`tests/python/exactness_rng.py`): the same bytes as `torch.get_rng_state()`,
//! the same draws, round trips through `state()`/`set_state()`, and clear
//! errors for states that cannot be restored.
//!
//! The default generators are process-wide, so the tests of this binary run
//! one at a time (`common::rng_lock()`).

use crate::support::common;
use crate::support::model_util;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use megatron_trainer::model::StateDict;
use megatron_trainer::parallel::random::{
    self, ModelParallelRng, RngError, cpu_rng_state, cuda_rng_state, set_cpu_rng_state,
};
use tch::{Device, Kind, Tensor};

const SEEDS: [i64; 3] = [0, 42, 1_234_567];
const TP: i64 = 2;
const RAND_LEN: i64 = 16;

/// PyTorch's states and draws (the Python helper runs once per test binary;
/// tensors are not `Sync`, so the file's bytes are what is kept).
fn reference() -> StateDict {
    static REF: OnceLock<Vec<u8>> = OnceLock::new();
    let dir = std::env::temp_dir().join(format!("megatron-exactness-rng-{}", std::process::id()));
    let file = dir.join("reference.safetensors");
    let data = REF.get_or_init(|| {
        std::fs::create_dir_all(&dir).unwrap();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/exactness_rng.py");
        let out = Command::new(common::python())
            .arg(&script)
            .arg(&file)
            .arg("--seeds")
            .args(SEEDS.map(|s| s.to_string()))
            .args(["--tp", &TP.to_string()])
            .output()
            .expect("running the Python reference");
        assert!(
            out.status.success(),
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&file).unwrap()
    });
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&file, data).unwrap();
    let sd = model_util::read(&file);
    let _ = std::fs::remove_dir_all(&dir);
    sd
}

fn bytes(t: &Tensor) -> Vec<u8> {
    Vec::<u8>::try_from(t.to_kind(Kind::Uint8).flatten(0, -1)).unwrap()
}

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn cpu_state_after_manual_seed_is_torchs() {
    let _g = common::rng_lock();
    let r = &reference();
    for s in SEEDS {
        tch::manual_seed(s);
        let state = cpu_rng_state();
        assert_eq!(state.kind(), Kind::Uint8);
        assert_eq!(
            bytes(&state),
            bytes(&r[&format!("state_{s}")]),
            "seed {s}: state after manual_seed differs from torch.get_rng_state()"
        );
        let draw = Tensor::rand([RAND_LEN], (Kind::Float, Device::Cpu));
        assert_eq!(
            floats(&draw),
            floats(&r[&format!("rand_{s}")]),
            "seed {s}: draws"
        );
        assert_eq!(
            bytes(&cpu_rng_state()),
            bytes(&r[&format!("state_after_{s}")]),
            "seed {s}: state after a draw"
        );
        assert_eq!(random::initial_seed(Device::Cpu).unwrap(), s as u64);
    }
}

#[test]
fn cpu_state_round_trips() {
    let _g = common::rng_lock();
    let r = &reference();
    // Restoring PyTorch's saved state reproduces PyTorch's next draws.
    tch::manual_seed(999);
    set_cpu_rng_state(&r["state_42"]).unwrap();
    let draw = Tensor::rand([RAND_LEN], (Kind::Float, Device::Cpu));
    assert_eq!(floats(&draw), floats(&r["rand_42"]));
    // And our own state: save, draw, restore, draw again.
    let saved = cpu_rng_state();
    let a = Tensor::randn([64], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([64], (Kind::Float, Device::Cpu));
    assert_ne!(floats(&a), floats(&b), "the stream advances");
    set_cpu_rng_state(&saved).unwrap();
    let again = Tensor::randn([64], (Kind::Float, Device::Cpu));
    assert_eq!(
        floats(&a),
        floats(&again),
        "restored state replays the draws"
    );
    // The saved copy is a snapshot, not a view of the live generator.
    assert_eq!(
        bytes(&saved),
        bytes(&{
            set_cpu_rng_state(&saved).unwrap();
            cpu_rng_state()
        })
    );
}

#[test]
fn tracker_streams_are_megatrons_and_leave_the_default_stream_alone() {
    let _g = common::rng_lock();
    let r = &reference();
    for s in SEEDS {
        for rank in 0..TP {
            tch::manual_seed(s);
            let rng = ModelParallelRng::new(s, rank, Device::Cpu).unwrap();
            assert_eq!(rng.seed(), (s + 2718 + rank) as u64);
            // Interleave default draws and forks: each stream sees only its own draws.
            let d1 = Tensor::rand([RAND_LEN / 2], (Kind::Float, Device::Cpu));
            let t1 = rng
                .fork(|| Tensor::rand([RAND_LEN], (Kind::Float, Device::Cpu)))
                .unwrap();
            let d2 = Tensor::rand([RAND_LEN / 2], (Kind::Float, Device::Cpu));
            let t2 = rng
                .fork(|| Tensor::rand([RAND_LEN], (Kind::Float, Device::Cpu)))
                .unwrap();
            assert_eq!(
                floats(&Tensor::cat(&[t1, t2], 0)),
                floats(&r[&format!("tracker_{s}_{rank}")]),
                "seed {s} rank {rank}: the tracker must draw torch.manual_seed(seed + 2718 + rank)'s stream"
            );
            assert_eq!(
                floats(&Tensor::cat(&[d1, d2], 0)),
                floats(&r[&format!("rand_{s}")]),
                "seed {s} rank {rank}: forks must not disturb the default stream"
            );
            // Dropout (what attention dropout runs) inside a fork.
            let fresh = ModelParallelRng::from_default_seed(rank, Device::Cpu).unwrap();
            assert_eq!(
                fresh.seed(),
                rng.seed(),
                "from_default_seed after manual_seed({s})"
            );
            let ones = Tensor::ones([2, 3, 5, 5], (Kind::Float, Device::Cpu));
            let dropped = fresh.fork(|| ones.dropout(0.5, true)).unwrap();
            assert_eq!(
                floats(&dropped),
                floats(&r[&format!("dropout_{s}_{rank}")]),
                "seed {s} rank {rank}: dropout mask in the fork"
            );
            // Re-seeding an existing tracker (and its clones) restarts the stream.
            let clone = rng.clone();
            clone.manual_seed(s).unwrap();
            assert_eq!(rng.seed(), (s + 2718 + rank) as u64);
            assert_eq!(rng.tp_rank(), rank);
            let t1 = rng
                .fork(|| Tensor::rand([RAND_LEN], (Kind::Float, Device::Cpu)))
                .unwrap();
            assert_eq!(
                floats(&t1),
                floats(&r[&format!("tracker_{s}_{rank}")].narrow(0, 0, RAND_LEN)),
                "seed {s} rank {rank}: after manual_seed"
            );
        }
    }
}

#[test]
fn tracker_state_round_trips() {
    let _g = common::rng_lock();
    let rng = ModelParallelRng::new(7, 1, Device::Cpu).unwrap();
    let draw = || {
        rng.fork(|| Tensor::randn([32], (Kind::Float, Device::Cpu)))
            .unwrap()
    };
    let _ = draw();
    let saved = rng.state();
    let a = draw();
    let b = draw();
    assert_ne!(floats(&a), floats(&b));
    rng.set_state(&saved).unwrap();
    assert_eq!(
        floats(&draw()),
        floats(&a),
        "restored tracker replays its draws"
    );
    // Clones share the tracker; a tracker restored from another's state follows it.
    let other = ModelParallelRng::new(123, 0, Device::Cpu).unwrap();
    other.set_state(&saved).unwrap();
    assert_eq!(
        floats(
            &other
                .fork(|| Tensor::randn([32], (Kind::Float, Device::Cpu)))
                .unwrap()
        ),
        floats(&a)
    );
    let clone = rng.clone();
    clone.set_state(&saved).unwrap();
    assert_eq!(floats(&draw()), floats(&a), "clones share one state");
}

#[test]
fn fork_restores_the_default_state_when_the_closure_panics() {
    let _g = common::rng_lock();
    tch::manual_seed(5);
    let before = cpu_rng_state();
    let rng = ModelParallelRng::new(5, 0, Device::Cpu).unwrap();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rng.fork(|| {
            let _ = Tensor::rand([8], (Kind::Float, Device::Cpu));
            panic!("inside the fork")
        })
    }));
    assert!(res.is_err());
    assert_eq!(bytes(&cpu_rng_state()), bytes(&before));
    // The tracker is usable again afterwards.
    rng.fork(|| ()).unwrap();
}

#[test]
fn bad_states_and_devices_give_clear_errors() {
    let _g = common::rng_lock();
    tch::manual_seed(3);
    let before = cpu_rng_state();
    let float = Tensor::zeros([5056], (Kind::Float, Device::Cpu));
    let e = set_cpu_rng_state(&float).unwrap_err();
    assert!(matches!(e, RngError::InvalidState { .. }), "{e}");
    assert!(e.to_string().contains("uint8"), "{e}");
    let short = Tensor::zeros([10], (Kind::Uint8, Device::Cpu));
    let e = set_cpu_rng_state(&short).unwrap_err();
    assert!(matches!(e, RngError::Torch { .. }), "{e}");
    println!("wrong-size CPU state: {e}");
    assert_eq!(
        bytes(&cpu_rng_state()),
        bytes(&before),
        "failed sets change nothing"
    );

    let rng = ModelParallelRng::new(3, 0, Device::Cpu).unwrap();
    let e = rng.set_state(&short).unwrap_err();
    assert!(e.to_string().contains("expected 5056 bytes, got 10"), "{e}");
    let nested = rng.fork(|| rng.fork(|| ())).unwrap();
    assert!(matches!(nested, Err(RngError::NestedFork)));
    rng.fork(|| ())
        .expect("the tracker recovers after a refused nested fork");

    let e = cuda_rng_state(Device::Cpu).unwrap_err();
    assert!(matches!(e, RngError::UnsupportedDevice(Device::Cpu)), "{e}");
    if !tch::Cuda::is_available() {
        let e = cuda_rng_state(Device::Cuda(0)).unwrap_err();
        assert!(e.to_string().contains("CUDA is not available"), "{e}");
        let e = ModelParallelRng::new(1, 0, Device::Cuda(0)).unwrap_err();
        assert!(e.to_string().contains("CUDA is not available"), "{e}");
        println!("CUDA on a CPU-only machine: {e}");
    }
}

/// On a machine with a GPU: the CUDA generator's state round trips and the
/// tracker's CUDA stream is `torch.cuda.manual_seed(seed + 2718 + rank)`'s.
#[test]
fn cuda_state_round_trips_when_a_gpu_is_present() {
    let _g = common::rng_lock();
    if !tch::Cuda::is_available() {
        println!("no CUDA device: skipped");
        return;
    }
    let dev = Device::Cuda(0);
    tch::manual_seed(11);
    let saved = cuda_rng_state(dev).unwrap();
    assert_eq!(saved.kind(), Kind::Uint8);
    let a = Tensor::rand([64], (Kind::Float, dev));
    random::set_cuda_rng_state(dev, &saved).unwrap();
    let b = Tensor::rand([64], (Kind::Float, dev));
    assert_eq!(floats(&a.to(Device::Cpu)), floats(&b.to(Device::Cpu)));
    let rng = ModelParallelRng::new(11, 1, dev).unwrap();
    let t = rng.fork(|| Tensor::rand([64], (Kind::Float, dev))).unwrap();
    tch::manual_seed(11 + 2718 + 1);
    let expect = Tensor::rand([64], (Kind::Float, dev));
    assert_eq!(floats(&t.to(Device::Cpu)), floats(&expect.to(Device::Cpu)));
}
