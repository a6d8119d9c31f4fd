//! Agreement between the ranks of a save or a resume: every rank learns what
//! every other rank's file upload or verification did, so all of them take
//! the same branch (commit or fail, use a set or fall back).

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use crate::comm::ProcessGroup;
use crate::storage::ManifestFile;
use crate::train::{RngStates, TrainError, TrainResult};

/// What one rank did with its file of a set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RankFile {
    /// The rank writes no file (a data-parallel replica other than 0).
    None,
    /// Written (or verified): tensor-parallel rank, size and sha256.
    Ok {
        tp_rank: usize,
        size: u64,
        sha256: [u8; 32],
    },
    /// Writing or verifying failed on this rank (its own error says why).
    Failed { tp_rank: usize },
}

const WIDTH: usize = 7;

impl RankFile {
    /// The record for an uploaded file.
    pub fn uploaded(tp_rank: usize, file: &ManifestFile) -> Self {
        let mut sha256 = [0u8; 32];
        match hex::decode(&file.sha256) {
            Ok(b) if b.len() == 32 => sha256.copy_from_slice(&b),
            _ => return RankFile::Failed { tp_rank },
        }
        RankFile::Ok {
            tp_rank,
            size: file.size,
            sha256,
        }
    }

    fn encode(&self) -> [i64; WIDTH] {
        let mut r = [0i64; WIDTH];
        match self {
            RankFile::None => {}
            RankFile::Ok {
                tp_rank,
                size,
                sha256,
            } => {
                r[0] = 1;
                r[1] = *tp_rank as i64;
                r[2] = *size as i64;
                for (i, chunk) in sha256.chunks(8).enumerate() {
                    r[3 + i] = i64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                }
            }
            RankFile::Failed { tp_rank } => {
                r[0] = 2;
                r[1] = *tp_rank as i64;
            }
        }
        r
    }

    fn decode(r: &[i64]) -> Self {
        match r[0] {
            1 => {
                let mut sha256 = [0u8; 32];
                for i in 0..4 {
                    sha256[i * 8..i * 8 + 8].copy_from_slice(&r[3 + i].to_le_bytes());
                }
                RankFile::Ok {
                    tp_rank: r[1] as usize,
                    size: r[2] as u64,
                    sha256,
                }
            }
            2 => RankFile::Failed {
                tp_rank: r[1] as usize,
            },
            _ => RankFile::None,
        }
    }
}

/// The ranks' collectives for checkpointing, on the world group.
#[derive(Clone, Debug)]
pub struct Consensus {
    world: Arc<dyn ProcessGroup>,
    device: Device,
}

impl Consensus {
    /// Collectives on `world` with tensors on `device` (the group's device:
    /// CUDA for NCCL groups, CPU for the TCP ring).
    pub fn new(world: Arc<dyn ProcessGroup>, device: Device) -> Self {
        Self { world, device }
    }

    /// Global rank.
    pub fn rank(&self) -> usize {
        self.world.rank()
    }

    /// Every rank's record, by global rank.
    pub fn gather(&self, mine: &RankFile) -> TrainResult<Vec<RankFile>> {
        let t = Tensor::from_slice(&mine.encode()).to_device(self.device);
        let all = self.world.all_gather_cat(&t, 0)?.to_device(Device::Cpu);
        let v: Vec<i64> = Vec::<i64>::try_from(&all.to_kind(Kind::Int64))?;
        Ok(v.chunks(WIDTH).map(RankFile::decode).collect())
    }

    /// True on every rank when `ok` is true on every rank.
    pub fn all_ok(&self, ok: bool) -> TrainResult<bool> {
        let mut t = Tensor::from_slice(&[i64::from(!ok)]).to_device(self.device);
        self.world.all_reduce_sum(&mut t)?;
        Ok(t.to_device(Device::Cpu).int64_value(&[0]) == 0)
    }
}

impl Consensus {
    /// Every rank's `value`, by global rank.
    pub fn gather_i64(&self, value: i64) -> TrainResult<Vec<i64>> {
        let t = Tensor::from_slice(&[value]).to_device(self.device);
        let all = self.world.all_gather_cat(&t, 0)?.to_device(Device::Cpu);
        Ok(Vec::<i64>::try_from(&all.to_kind(Kind::Int64))?)
    }
}

impl Consensus {
    /// Every rank's bytes, by global rank (lengths may differ).
    pub fn gather_bytes(&self, data: &[u8]) -> TrainResult<Vec<Vec<u8>>> {
        let lens = self.gather_i64(data.len() as i64)?;
        let max = lens.iter().copied().max().unwrap_or(0).max(1) as usize;
        let mut padded = data.to_vec();
        padded.resize(max, 0);
        let t = Tensor::from_slice(&padded).to_device(self.device);
        let all = self.world.all_gather_cat(&t, 0)?.to_device(Device::Cpu);
        let all = Vec::<u8>::try_from(&all.to_kind(Kind::Uint8))?;
        Ok(all
            .chunks(max)
            .zip(lens)
            .map(|(c, n)| c[..n as usize].to_vec())
            .collect())
    }

    /// The generator states of every data-parallel replica of this rank's
    /// tensor-parallel rank, by dp rank (a world all-gather of a few KB).
    pub fn replica_rng(
        &self,
        tp_rank: usize,
        dp_rank: usize,
        mine: &RngStates,
    ) -> TrainResult<Vec<RngStates>> {
        let id = (tp_rank as i64) << 32 | dp_rank as i64;
        let ids = self.gather_i64(id)?;
        let states = self.gather_bytes(&rng_to_bytes(mine)?)?;
        let mut out: Vec<(i64, RngStates)> = Vec::new();
        for (id, bytes) in ids.into_iter().zip(states) {
            if id >> 32 == tp_rank as i64 {
                out.push((id & 0xffff_ffff, rng_from_bytes(&bytes)?));
            }
        }
        out.sort_by_key(|(dp, _)| *dp);
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }
}

/// Three slots (cpu, cuda, model-parallel), each an i64 length (-1: absent)
/// and the uint8 state.
fn rng_to_bytes(rng: &RngStates) -> TrainResult<Vec<u8>> {
    let mut out = Vec::new();
    for slot in [&rng.cpu, &rng.cuda, &rng.model_parallel] {
        match slot {
            None => out.extend_from_slice(&(-1i64).to_le_bytes()),
            Some(t) => {
                let b =
                    Vec::<u8>::try_from(&t.to_device(Device::Cpu).to_kind(Kind::Uint8).view([-1]))?;
                out.extend_from_slice(&(b.len() as i64).to_le_bytes());
                out.extend_from_slice(&b);
            }
        }
    }
    Ok(out)
}

fn rng_from_bytes(mut b: &[u8]) -> TrainResult<RngStates> {
    let bad = || TrainError::RanksDisagree("malformed generator state from a peer".into());
    let mut slots = Vec::new();
    for _ in 0..3 {
        if b.len() < 8 {
            return Err(bad());
        }
        let n = i64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        b = &b[8..];
        if n < 0 {
            slots.push(None);
            continue;
        }
        let n = n as usize;
        if b.len() < n {
            return Err(bad());
        }
        slots.push(Some(Tensor::from_slice(&b[..n])));
        b = &b[n..];
    }
    let model_parallel = slots.pop().flatten();
    let cuda = slots.pop().flatten();
    let cpu = slots.pop().flatten();
    Ok(RngStates {
        cpu,
        cuda,
        model_parallel,
    })
}
