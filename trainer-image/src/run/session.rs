//! The setup every rank does before training or evaluating: threads,
//! process groups, device and seed; then the tokenizer, the task's data and
//! the model with its starting weights.

use std::path::{Path, PathBuf};

use crate::comm::{self, CommConfig, Topology};
use crate::job::{
    Inputs, JobConfig, JobError, JobResult, RankIdentity, StartingPoint, Weights, rank,
    starting_point,
};
use crate::model::BertTaskModel;
use crate::parallel::TpGroup;
use crate::task::TaskData;
use crds::MegatronFineTuneSpec;
use tch::Device;

/// A connected rank.
pub struct Session {
    pub config: JobConfig,
    pub identity: RankIdentity,
    pub topo: Topology,
    pub device: Device,
    pub inputs: Inputs,
}

/// The model and data of a rank.
pub struct Loaded {
    pub start: StartingPoint,
    pub task: TaskData,
    pub model: BertTaskModel,
    pub tp: TpGroup,
}

/// Threads, rendezvous, device and seed of rank `identity`.
pub fn connect(
    config: JobConfig,
    identity: RankIdentity,
    cache_dir: PathBuf,
) -> JobResult<Session> {
    let threads = rank::intra_op_threads(identity.local_world_size);
    tch::set_num_threads(threads as i32);
    let spec = &config.spec;
    let tp = spec.parallelism.tensor_parallel_size as usize;
    let device = device(spec, identity.local_rank)?;
    let topo = if identity.world_size == 1 && tp == 1 {
        Topology::single()
    } else {
        let cfg = CommConfig::from_lookup(tp, |k| identity.comm_var(k))?
            .ok_or_else(|| JobError::invalid("RANK and WORLD_SIZE are needed for several ranks"))?;
        comm::init(&cfg)?
    };
    tracing::info!(
        rank = topo.rank,
        world_size = topo.world_size,
        tp_rank = topo.tp_rank,
        dp_rank = topo.dp_rank,
        ?device,
        threads,
        "rank ready"
    );
    // One seed for every rank, as Megatron-LM's default (no
    // `--data-parallel-random-init`): the data-parallel replicas must start
    // from the same weights (the task head and a random-init encoder are drawn
    // here), or they stay different models that average the same gradients,
    // and a checkpoint (one replica's weights) resumes into another run.
    tch::manual_seed(spec.training.seed);
    let inputs = Inputs::new(spec.storage.as_ref(), cache_dir)?;
    Ok(Session {
        config,
        identity,
        topo,
        device,
        inputs,
    })
}

fn device(spec: &MegatronFineTuneSpec, local_rank: usize) -> JobResult<Device> {
    match spec.parallelism.device {
        crds::Device::CPU => Ok(Device::Cpu),
        crds::Device::GPU => {
            let visible = if tch::Cuda::is_available() {
                tch::Cuda::device_count() as usize
            } else {
                0
            };
            if local_rank < visible {
                Ok(Device::Cuda(local_rank))
            } else {
                Err(JobError::NoGpu {
                    local_rank,
                    visible,
                })
            }
        }
    }
}

/// Reads the starting point and the data, and builds this rank's model.
/// `external_weights`: the caller loads the weights afterwards.
pub fn load(session: &Session, work_dir: &Path, external_weights: bool) -> JobResult<Loaded> {
    let spec = &session.config.spec;
    let topo = &session.topo;
    let start = starting_point(
        spec,
        &session.inputs,
        topo.tp_size as i64,
        topo.tp_rank as i64,
        work_dir,
        external_weights,
    )?;
    tracing::info!(source = start.description, "starting model");
    let files = session.inputs.split_files(spec)?;
    let mut task = TaskData::load(spec, &files, start.tokenizer.clone())?;
    task.shard_evaluation(topo.dp.clone());
    let head = task.head_config();
    let tp = TpGroup::new(topo.tp.clone());
    let mut model = BertTaskModel::new(&start.config, &head, &tp, session.device)?;
    match &start.weights {
        Weights::Random => {}
        Weights::Pretrained(sd) => {
            let unused = model.load_pretrained(sd)?;
            if !unused.is_empty() {
                tracing::info!(
                    count = unused.len(),
                    "checkpoint tensors the task model does not use (pretraining heads)"
                );
            }
        }
        Weights::Nemo(nemo) => {
            if nemo.head == head && nemo.has_head_weights {
                nemo.load_into(&mut model)?;
            } else {
                if nemo.has_head_weights {
                    tracing::warn!(
                        "the .nemo's task head ({:?}, {} outputs) differs from spec.task's ({:?}, {} outputs): \
                         fine-tuning its encoder with a new head",
                        nemo.head.task,
                        nemo.head.num_classes,
                        head.task,
                        head.num_classes
                    );
                }
                let encoder: crate::model::StateDict = nemo
                    .state_dict
                    .iter()
                    .filter(|(k, _)| !k.starts_with("classifier."))
                    .map(|(k, v)| (k.clone(), v.shallow_clone()))
                    .collect();
                model.load_pretrained(&encoder)?;
            }
        }
    }
    Ok(Loaded {
        start,
        task,
        model,
        tp,
    })
}
