//! Rendezvous and the world / tensor-parallel / data-parallel groups.

use std::sync::Arc;
use std::time::Instant;

use super::config::CommConfig;
use super::connect::host_port;
use super::group::{CommError, ProcessGroup, SingleProcess};
use super::listener::Acceptor;
use super::rank_group::RankGroup;
use super::ring::Ring;
use super::store::{StoreClient, StoreServer};

/// This rank's place in the job and its groups.
///
/// Megatron layout: tensor-parallel groups are consecutive ranks
/// (`tp_rank = rank % tp_size`, `dp_rank = rank / tp_size`); a data-parallel
/// group holds the ranks with the same `tp_rank`. Keep the `Topology` alive
/// until training ends: on rank 0 it hosts the rendezvous store.
#[derive(Clone, Debug)]
pub struct Topology {
    /// All ranks.
    pub world: Arc<dyn ProcessGroup>,
    /// This rank's tensor-parallel group.
    pub tp: Arc<dyn ProcessGroup>,
    /// This rank's data-parallel group.
    pub dp: Arc<dyn ProcessGroup>,
    /// Global rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rank within the tensor-parallel group.
    pub tp_rank: usize,
    /// Tensor-parallel size.
    pub tp_size: usize,
    /// Rank within the data-parallel group.
    pub dp_rank: usize,
    /// Data-parallel size.
    pub dp_size: usize,
    /// Rank on this node (picks the GPU).
    pub local_rank: usize,
    /// Ranks on this node.
    pub local_world_size: usize,
    rendezvous: Option<Arc<Rendezvous>>,
}

/// Keeps the store (server on rank 0, client everywhere) and the listener alive.
#[derive(Debug)]
struct Rendezvous {
    _server: Option<StoreServer>,
    store: Arc<StoreClient>,
    _acceptor: Acceptor,
}

impl Topology {
    /// One process: every group is [`SingleProcess`].
    pub fn single() -> Self {
        let one: Arc<dyn ProcessGroup> = Arc::new(SingleProcess);
        Self {
            world: one.clone(),
            tp: one.clone(),
            dp: one,
            rank: 0,
            world_size: 1,
            tp_rank: 0,
            tp_size: 1,
            dp_rank: 0,
            dp_size: 1,
            local_rank: 0,
            local_world_size: 1,
            rendezvous: None,
        }
    }

    /// The device this rank should compute on: `cuda:LOCAL_RANK` when CUDA is
    /// available, else the CPU.
    pub fn device(&self) -> tch::Device {
        if tch::Cuda::is_available() {
            tch::Device::Cuda(self.local_rank)
        } else {
            tch::Device::Cpu
        }
    }

    /// The rendezvous store (absent for a single process), e.g. to share small values.
    pub fn store(&self) -> Option<&StoreClient> {
        self.rendezvous.as_deref().map(|r| &*r.store)
    }
}

/// Global ranks of tensor-parallel group `g`.
pub fn tp_group_members(world_size: usize, tp_size: usize, g: usize) -> Vec<usize> {
    debug_assert!(g < world_size / tp_size);
    (g * tp_size..(g + 1) * tp_size).collect()
}

/// Global ranks of data-parallel group `j` (the ranks with `tp_rank == j`).
pub fn dp_group_members(world_size: usize, tp_size: usize, j: usize) -> Vec<usize> {
    (j..world_size).step_by(tp_size).collect()
}

/// [`init`] from torchrun's environment variables; a single process when
/// `RANK` and `WORLD_SIZE` are unset.
pub fn init_from_env(tp_size: usize) -> Result<Topology, CommError> {
    match CommConfig::from_env(tp_size)? {
        None if tp_size == 1 => Ok(Topology::single()),
        None => Err(CommError::Config(format!(
            "tensor-parallel size {tp_size} needs {tp_size} processes, but RANK and WORLD_SIZE \
             are not set: launch with torchrun-style variables (MASTER_ADDR, MASTER_PORT, RANK, \
             WORLD_SIZE)"
        ))),
        Some(cfg) => init(&cfg),
    }
}

/// Runs the rendezvous and connects this rank's groups. Every rank of the
/// job must call it; it returns once this rank's rings are connected.
pub fn init(cfg: &CommConfig) -> Result<Topology, CommError> {
    cfg.validate()?;
    let (rank, world, tp) = (cfg.rank, cfg.world_size, cfg.tp_size);
    if world == 1 {
        let mut t = Topology::single();
        t.local_rank = cfg.local_rank;
        t.local_world_size = cfg.local_world_size;
        return Ok(t);
    }
    let deadline = Instant::now() + cfg.rendezvous_timeout;
    let server = if rank == 0 {
        Some(StoreServer::bind(cfg.master_port)?)
    } else {
        None
    };
    let store = Arc::new(StoreClient::connect(
        &cfg.master_addr,
        cfg.master_port,
        cfg.rendezvous_timeout,
        cfg.op_timeout,
    )?);
    let acceptor = Acceptor::bind(cfg.data_port)?;
    let ip = match cfg.advertise_addr {
        Some(ip) => ip,
        None => store.local_addr()?.ip(),
    };
    let my_addr = host_port(&ip.to_string(), acceptor.port());

    if store.add(&format!("rank/{rank}/claims"), 1)? > 1 {
        return Err(CommError::Config(format!(
            "two processes started with RANK={rank}: give every process a distinct RANK below WORLD_SIZE={world}"
        )));
    }
    if rank == 0 {
        store.set("job/sizes", format!("{world}/{tp}").as_bytes())?;
    }
    store.set(&format!("addr/{rank}"), my_addr.as_bytes())?;

    let keys: Vec<String> = (0..world).map(|r| format!("addr/{r}")).collect();
    let left = deadline.saturating_duration_since(Instant::now());
    let missing = store.wait(&keys, left)?;
    if !missing.is_empty() {
        let mut missing: Vec<usize> = missing
            .iter()
            .filter_map(|k| k.strip_prefix("addr/")?.parse().ok())
            .collect();
        missing.sort_unstable();
        // Rank 0 hosts the store: it stays up until the ranks that joined have timed out too
        // (each started its clock at its own start), so each of them reports the missing
        // ranks rather than a lost connection.
        let _ = store.set(&format!("rank/{rank}/gave-up"), b"1");
        if rank == 0 {
            let joined: Vec<String> = (1..world)
                .filter(|r| missing.binary_search(r).is_err())
                .map(|r| format!("rank/{r}/gave-up"))
                .collect();
            let _ = store.wait(&joined, cfg.rendezvous_timeout);
        }
        return Err(CommError::RendezvousIncomplete {
            store: store.addr().to_string(),
            missing,
            world,
            after: cfg.rendezvous_timeout,
        });
    }
    let sizes = store.get("job/sizes", cfg.op_timeout)?.unwrap_or_default();
    let expected = format!("{world}/{tp}");
    if sizes != expected.as_bytes() {
        return Err(CommError::Config(format!(
            "rank 0 runs with WORLD_SIZE/tensor-parallel size {}, this rank with {expected}: \
             every rank must use the same values",
            String::from_utf8_lossy(&sizes)
        )));
    }
    let mut addrs = Vec::with_capacity(world);
    for k in &keys {
        let v = store.get(k, cfg.op_timeout)?.unwrap_or_default();
        addrs.push(String::from_utf8_lossy(&v).into_owned());
    }

    let group = |name: String, members: Vec<usize>| -> Result<Arc<dyn ProcessGroup>, CommError> {
        if members.len() == 1 {
            return Ok(Arc::new(SingleProcess));
        }
        let me = members
            .iter()
            .position(|m| *m == rank)
            .expect("rank is a member");
        let member_addrs = members.iter().map(|m| addrs[*m].clone()).collect();
        let ring = Ring::connect(
            &name,
            members.clone(),
            member_addrs,
            me,
            &acceptor,
            deadline,
            cfg.op_timeout,
        )?;
        Ok(Arc::new(RankGroup::new(
            name,
            ring,
            members,
            store.clone(),
            cfg.op_timeout,
        )))
    };
    let (tp_rank, dp_rank, dp) = (rank % tp, rank / tp, world / tp);
    let world_group = group("world".into(), (0..world).collect())?;
    let tp_group = group(format!("tp{dp_rank}"), tp_group_members(world, tp, dp_rank))?;
    let dp_group = group(format!("dp{tp_rank}"), dp_group_members(world, tp, tp_rank))?;
    Ok(Topology {
        world: world_group,
        tp: tp_group,
        dp: dp_group,
        rank,
        world_size: world,
        tp_rank,
        tp_size: tp,
        dp_rank,
        dp_size: dp,
        local_rank: cfg.local_rank,
        local_world_size: cfg.local_world_size,
        rendezvous: Some(Arc::new(Rendezvous {
            _server: server,
            store,
            _acceptor: acceptor,
        })),
    })
}
