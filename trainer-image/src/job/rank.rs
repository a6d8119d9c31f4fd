//! Who this process is: its global rank, local rank and the launch layout,
//! from torchrun-style variables (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`), the
//! operator's (`POD_INDEX`, `NPROC_PER_NODE`, `WORLD_SIZE`,
//! `TENSOR_PARALLEL_SIZE`, `DATA_PARALLEL_SIZE`) or, with neither, a local run
//! of the spec's whole world on this machine.

use crds::MegatronFineTuneSpec;

use super::error::{JobError, JobResult};

/// How this process takes part in the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// One rank: run the work.
    Rank(RankIdentity),
    /// Spawn `nproc` local ranks of this program and supervise them.
    Launcher(LaunchLayout),
}

/// A rank's place in the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankIdentity {
    /// Global rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rank on this node (the GPU index).
    pub local_rank: usize,
    /// Ranks on this node.
    pub local_world_size: usize,
    /// `MASTER_ADDR` (absent for a single process).
    pub master_addr: Option<String>,
    /// `MASTER_PORT`.
    pub master_port: Option<u16>,
}

/// What a launcher spawns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchLayout {
    /// Ranks to spawn on this node.
    pub nproc: usize,
    /// Global rank of the first local rank (`POD_INDEX * nproc`).
    pub first_rank: usize,
    /// Number of ranks of the job.
    pub world_size: usize,
    /// Rendezvous host (`MASTER_ADDR`, default 127.0.0.1).
    pub master_addr: String,
    /// Rendezvous port (`MASTER_PORT`, default: a free port).
    pub master_port: Option<u16>,
}

impl RankIdentity {
    /// The single process of a local TP=DP=1 run.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            master_addr: None,
            master_port: None,
        }
    }

    /// True on global rank 0 (writes results and artifacts).
    pub fn is_rank0(&self) -> bool {
        self.rank == 0
    }

    /// The variables [`crate::comm::CommConfig::from_lookup`] reads.
    pub fn comm_var(&self, key: &str) -> Option<String> {
        match key {
            "RANK" => Some(self.rank.to_string()),
            "WORLD_SIZE" => Some(self.world_size.to_string()),
            "LOCAL_RANK" => Some(self.local_rank.to_string()),
            "LOCAL_WORLD_SIZE" => Some(self.local_world_size.to_string()),
            "MASTER_ADDR" => self.master_addr.clone(),
            "MASTER_PORT" => self.master_port.map(|p| p.to_string()),
            other => std::env::var(other).ok(),
        }
    }
}

/// Decides the role from the environment (`get`), the spec and
/// `--nproc-per-node`.
pub fn role(
    spec: &MegatronFineTuneSpec,
    nproc_flag: Option<usize>,
    get: impl Fn(&str) -> Option<String>,
) -> JobResult<Role> {
    let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
    let num = |k: &'static str| -> JobResult<Option<usize>> {
        get(k)
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    JobError::invalid(format!(
                        "environment variable {k}={v:?} is not a non-negative integer"
                    ))
                })
            })
            .transpose()
    };
    let tp = spec.parallelism.tensor_parallel_size as usize;
    let dp = spec.parallelism.data_parallel_size as usize;
    let spec_world = tp * dp;
    for (var, expected) in [
        ("WORLD_SIZE", spec_world),
        ("TENSOR_PARALLEL_SIZE", tp),
        ("DATA_PARALLEL_SIZE", dp),
    ] {
        if let Some(v) = num(var)?
            && v != expected
        {
            return Err(JobError::invalid(format!(
                "environment variable {var}={v} disagrees with spec.parallelism (tensorParallelSize \
                 {tp} x dataParallelSize {dp} = {spec_world} ranks)"
            )));
        }
    }
    let master_addr = get("MASTER_ADDR");
    let master_port = match num("MASTER_PORT")? {
        None => None,
        Some(p) => Some(u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
            JobError::invalid(format!(
                "environment variable MASTER_PORT={p} is not a TCP port"
            ))
        })?),
    };
    // A rank started by a launcher (ours or torchrun).
    if let Some(rank) = num("RANK")? {
        let world_size = num("WORLD_SIZE")?.unwrap_or(spec_world);
        let local_world_size = num("LOCAL_WORLD_SIZE")?.unwrap_or(1);
        let local_rank = num("LOCAL_RANK")?.unwrap_or(0);
        if rank >= world_size || local_rank >= local_world_size.max(1) {
            return Err(JobError::invalid(format!(
                "RANK={rank}/LOCAL_RANK={local_rank} must be below WORLD_SIZE={world_size}/\
                 LOCAL_WORLD_SIZE={local_world_size}"
            )));
        }
        return Ok(Role::Rank(RankIdentity {
            rank,
            world_size,
            local_rank,
            local_world_size,
            master_addr,
            master_port,
        }));
    }
    let operator_nproc = num("NPROC_PER_NODE")?;
    let nproc = nproc_flag.or(operator_nproc).unwrap_or(spec_world);
    if nproc == 0 {
        return Err(JobError::invalid(
            "NPROC_PER_NODE (or --nproc-per-node) must be at least 1",
        ));
    }
    let pod_index = num("POD_INDEX")?.unwrap_or(0);
    let first_rank = pod_index * nproc;
    if first_rank + nproc > spec_world || !spec_world.is_multiple_of(nproc) {
        return Err(JobError::invalid(format!(
            "{nproc} ranks per node at POD_INDEX={pod_index} do not fit the world of {spec_world} \
             ranks (spec.parallelism): use --nproc-per-node dividing {spec_world}"
        )));
    }
    if nproc_flag.is_some() && operator_nproc.is_none() && nproc != spec_world {
        return Err(JobError::invalid(format!(
            "--nproc-per-node {nproc} on a single machine must equal the world size {spec_world} \
             (spec.parallelism tensorParallelSize x dataParallelSize)"
        )));
    }
    if nproc == 1 {
        return Ok(Role::Rank(RankIdentity {
            rank: first_rank,
            world_size: spec_world,
            local_rank: 0,
            local_world_size: 1,
            master_addr,
            master_port,
        }));
    }
    Ok(Role::Launcher(LaunchLayout {
        nproc,
        first_rank,
        world_size: spec_world,
        master_addr: master_addr.unwrap_or_else(|| "127.0.0.1".to_owned()),
        master_port,
    }))
}

/// Threads for libtorch's intra-op pool: the CPUs this process may use
/// (cgroup quota aware) divided among the node's ranks; `OMP_NUM_THREADS`
/// or `MEGATRON_NUM_THREADS` win when set.
pub fn intra_op_threads(local_world_size: usize) -> usize {
    for var in ["MEGATRON_NUM_THREADS", "OMP_NUM_THREADS"] {
        if let Some(n) = std::env::var(var)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            && n > 0
        {
            return n;
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus / local_world_size.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec(tp: i64, dp: i64) -> MegatronFineTuneSpec {
        let mut s: MegatronFineTuneSpec = serde_yaml::from_str(
            "task: {type: QuestionAnswering}\nmodel: {pretrained: megatron-bert-345m-uncased}\n\
             data: {train: /d/t.json}\ntraining: {maxSteps: 1, globalBatchSize: 4, microBatchSize: 1}\n\
             storage: {bucket: bkt, credentialsSecretRef: {name: s}}\n",
        )
        .unwrap();
        s.parallelism.tensor_parallel_size = tp;
        s.parallelism.data_parallel_size = dp;
        s
    }

    fn role_of(
        s: &MegatronFineTuneSpec,
        flag: Option<usize>,
        vars: &[(&str, &str)],
    ) -> JobResult<Role> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        role(s, flag, |k| m.get(k).cloned())
    }

    #[test]
    fn local_runs_launch_the_whole_world() {
        assert_eq!(
            role_of(&spec(1, 1), None, &[]).unwrap(),
            Role::Rank(RankIdentity::single())
        );
        let Role::Launcher(l) = role_of(&spec(2, 1), None, &[]).unwrap() else {
            panic!()
        };
        assert_eq!((l.nproc, l.first_rank, l.world_size), (2, 0, 2));
        assert!(role_of(&spec(2, 1), Some(3), &[]).is_err());
    }

    #[test]
    fn operator_env_places_the_pod() {
        let vars = [
            ("POD_INDEX", "1"),
            ("NPROC_PER_NODE", "2"),
            ("WORLD_SIZE", "4"),
            ("MASTER_ADDR", "j-0.j"),
            ("MASTER_PORT", "29500"),
        ];
        let Role::Launcher(l) = role_of(&spec(2, 2), None, &vars).unwrap() else {
            panic!()
        };
        assert_eq!(
            (l.nproc, l.first_rank, l.master_addr.as_str(), l.master_port),
            (2, 2, "j-0.j", Some(29500))
        );
        let one = [
            ("POD_INDEX", "3"),
            ("NPROC_PER_NODE", "1"),
            ("WORLD_SIZE", "4"),
        ];
        let Role::Rank(r) = role_of(&spec(2, 2), None, &one).unwrap() else {
            panic!()
        };
        assert_eq!((r.rank, r.world_size, r.local_rank), (3, 4, 0));
        let e = role_of(&spec(2, 2), None, &[("WORLD_SIZE", "8")]).unwrap_err();
        assert!(e.to_string().contains("WORLD_SIZE=8"), "{e}");
    }

    #[test]
    fn torchrun_children_are_ranks() {
        let vars = [
            ("RANK", "1"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("WORLD_SIZE", "2"),
        ];
        let Role::Rank(r) = role_of(&spec(2, 1), None, &vars).unwrap() else {
            panic!()
        };
        assert_eq!((r.rank, r.local_rank, r.local_world_size), (1, 1, 2));
    }
}
