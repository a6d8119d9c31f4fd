//! A deterministic shuffling sampler with data-parallel sharding, resumable
//! from a [`DataPosition`].
//!
//! Like `torch.utils.data.DistributedSampler(drop_last=False)`: each epoch's
//! order is a permutation of `0..len` seeded by `(seed, epoch)` (ChaCha8, so
//! it is the same on every rank and every run, but not the same permutation
//! torch would draw); it is padded by repeating its own start until its
//! length divides by the number of replicas, and rank `r` reads positions
//! `r, r + n, r + 2n, ...`. So every rank sees `ceil(len / n)` samples per
//! epoch, the shards are disjoint except for the (at most `n - 1`) padding
//! repeats, and every sample is seen at least once per epoch.

use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::DataError;

/// Where a rank is in its stream of samples: `index` samples of epoch
/// `epoch` already consumed. All ranks move in step, so one position
/// describes the whole data-parallel group; checkpoints store it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataPosition {
    /// The epoch (0-based).
    pub epoch: u64,
    /// Samples of this rank's shard consumed in that epoch.
    pub index: usize,
}

/// Sample order for one data-parallel rank.
#[derive(Debug, Clone)]
pub struct DistributedSampler {
    len: usize,
    num_replicas: usize,
    rank: usize,
    shuffle: bool,
    seed: u64,
}

impl DistributedSampler {
    /// A sampler over `len` samples for `rank` of `num_replicas`.
    pub fn new(
        len: usize,
        num_replicas: usize,
        rank: usize,
        shuffle: bool,
        seed: u64,
    ) -> Result<Self, DataError> {
        if num_replicas == 0 || rank >= num_replicas {
            return Err(DataError::Config(format!(
                "data-parallel rank {rank} is out of range for {num_replicas} replicas"
            )));
        }
        if len == 0 {
            return Err(DataError::Config(
                "the data set is empty: there is nothing to sample".into(),
            ));
        }
        Ok(Self {
            len,
            num_replicas,
            rank,
            shuffle,
            seed,
        })
    }

    /// Samples this rank reads per epoch: `ceil(len / num_replicas)`.
    pub fn num_samples(&self) -> usize {
        self.len.div_ceil(self.num_replicas)
    }

    /// This rank's sample indices for `epoch`, in reading order.
    pub fn epoch_indices(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            let stream = self.seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream);
            order.shuffle(&mut rng);
        }
        let total = self.num_samples() * self.num_replicas;
        let mut i = 0;
        while order.len() < total {
            order.push(order[i]);
            i += 1;
        }
        order
            .into_iter()
            .skip(self.rank)
            .step_by(self.num_replicas)
            .collect()
    }

    /// Batches of at most `batch_size` indices from `start` on, crossing into
    /// later epochs without end; each comes with the position after it (what
    /// a checkpoint taken after that batch stores). The last batch of an
    /// epoch may be short.
    pub fn batches_from(
        &self,
        start: DataPosition,
        batch_size: usize,
    ) -> impl Iterator<Item = (Vec<usize>, DataPosition)> + '_ {
        let batch_size = batch_size.max(1);
        let per_epoch = self.num_samples();
        let mut pos = if start.index >= per_epoch {
            DataPosition {
                epoch: start.epoch + 1,
                index: 0,
            }
        } else {
            start
        };
        let mut cache: Option<(u64, Vec<usize>)> = None;
        std::iter::from_fn(move || {
            if cache.as_ref().is_none_or(|(e, _)| *e != pos.epoch) {
                cache = Some((pos.epoch, self.epoch_indices(pos.epoch)));
            }
            let order = &cache.as_ref()?.1;
            let end = (pos.index + batch_size).min(per_epoch);
            let batch = order[pos.index..end].to_vec();
            pos = if end == per_epoch {
                DataPosition {
                    epoch: pos.epoch + 1,
                    index: 0,
                }
            } else {
                DataPosition {
                    epoch: pos.epoch,
                    index: end,
                }
            };
            Some((batch, pos))
        })
    }
}
