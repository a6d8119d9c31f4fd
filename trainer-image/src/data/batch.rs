//! Collating features into padded batches: a pure-Rust [`PaddedBatch`] (flat
//! `i64` buffers, testable without libtorch) and its tensor form [`Batch`].

use super::DataError;

/// The training target a feature carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// No target (prediction).
    None,
    /// One class for the sequence (text classification, relation extraction).
    Class(usize),
    /// Answer span token positions (SQuAD); `(0, 0)` = `[CLS]` (no answer in window).
    Span {
        /// Start token.
        start: usize,
        /// End token (inclusive).
        end: usize,
    },
    /// A label per token and whether it counts in the loss (token classification).
    Tokens {
        /// Label id per token.
        labels: &'a [usize],
        /// Whether each token's label counts in the loss.
        loss_mask: &'a [bool],
    },
}

/// Something that can be put in a batch: the model inputs and the target.
pub trait BatchItem {
    /// Token ids, `[CLS] ... [SEP]`.
    fn input_ids(&self) -> &[u32];
    /// Segment ids, same length.
    fn token_type_ids(&self) -> &[u32];
    /// The target.
    fn target(&self) -> Target<'_>;
}

/// How far to pad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// To the longest sequence of the batch.
    Longest,
    /// To a fixed length (`max_seq_length`); a longer feature is an error.
    Fixed(usize),
}

/// A batch as flat row-major `i64` buffers of shape `[batch, seq_len]`
/// (labels of class targets: `[batch]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedBatch {
    /// Number of sequences.
    pub batch_size: usize,
    /// Padded length.
    pub seq_len: usize,
    /// Token ids, `[PAD]` after the end.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Segment ids, 0 on padding.
    pub token_type_ids: Vec<i64>,
    /// Class ids `[batch]` or token label ids `[batch, seq_len]` (0 on padding).
    pub labels: Option<Vec<i64>>,
    /// Answer start tokens `[batch]`.
    pub start_positions: Option<Vec<i64>>,
    /// Answer end tokens `[batch]`.
    pub end_positions: Option<Vec<i64>>,
    /// 1 where a token label counts in the loss `[batch, seq_len]`.
    pub loss_mask: Option<Vec<i64>>,
}

impl PaddedBatch {
    /// Pads and stacks the items; all must carry the same kind of target.
    pub fn collate<T: BatchItem>(
        items: &[&T],
        pad_id: u32,
        padding: Padding,
    ) -> Result<Self, DataError> {
        if items.is_empty() {
            return Err(DataError::Config("cannot build an empty batch".into()));
        }
        let longest = items.iter().map(|f| f.input_ids().len()).max().unwrap_or(0);
        let seq_len = match padding {
            Padding::Longest => longest,
            Padding::Fixed(n) if longest > n => {
                return Err(DataError::Config(format!(
                    "a feature has {longest} tokens, more than the padding length {n}"
                )));
            }
            Padding::Fixed(n) => n,
        };
        let b = items.len();
        let mut out = Self {
            batch_size: b,
            seq_len,
            input_ids: vec![i64::from(pad_id); b * seq_len],
            attention_mask: vec![0; b * seq_len],
            token_type_ids: vec![0; b * seq_len],
            labels: None,
            start_positions: None,
            end_positions: None,
            loss_mask: None,
        };
        let kind = |t: &Target<'_>| match t {
            Target::None => 0u8,
            Target::Class(_) => 1,
            Target::Span { .. } => 2,
            Target::Tokens { .. } => 3,
        };
        let first_kind = kind(&items[0].target());
        for (i, item) in items.iter().enumerate() {
            let ids = item.input_ids();
            let types = item.token_type_ids();
            if types.len() != ids.len() {
                return Err(DataError::Config(format!(
                    "feature {i} has {} token ids but {} segment ids",
                    ids.len(),
                    types.len()
                )));
            }
            let row = i * seq_len;
            for (j, (&id, &ty)) in ids.iter().zip(types).enumerate() {
                out.input_ids[row + j] = i64::from(id);
                out.token_type_ids[row + j] = i64::from(ty);
                out.attention_mask[row + j] = 1;
            }
            let target = item.target();
            if kind(&target) != first_kind {
                return Err(DataError::Config(
                    "a batch mixes features of different tasks".into(),
                ));
            }
            match target {
                Target::None => {}
                Target::Class(c) => out
                    .labels
                    .get_or_insert_with(|| Vec::with_capacity(b))
                    .push(c as i64),
                Target::Span { start, end } => {
                    out.start_positions
                        .get_or_insert_with(|| Vec::with_capacity(b))
                        .push(start as i64);
                    out.end_positions
                        .get_or_insert_with(|| Vec::with_capacity(b))
                        .push(end as i64);
                }
                Target::Tokens { labels, loss_mask } => {
                    if labels.len() != ids.len() || loss_mask.len() != ids.len() {
                        return Err(DataError::Config(format!(
                            "feature {i} has {} tokens but {} labels and {} loss-mask entries",
                            ids.len(),
                            labels.len(),
                            loss_mask.len()
                        )));
                    }
                    let l = out.labels.get_or_insert_with(|| vec![0; b * seq_len]);
                    let m = out.loss_mask.get_or_insert_with(|| vec![0; b * seq_len]);
                    for j in 0..ids.len() {
                        l[row + j] = labels[j] as i64;
                        m[row + j] = i64::from(loss_mask[j]);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The batch as `i64` tensors on `device`.
    pub fn to_tensors(&self, device: tch::Device) -> Batch {
        let shape = [self.batch_size as i64, self.seq_len as i64];
        let mat = |v: &[i64]| tch::Tensor::from_slice(v).reshape(shape).to_device(device);
        let vec = |v: &[i64]| tch::Tensor::from_slice(v).to_device(device);
        let labels = self.labels.as_ref().map(|l| {
            if l.len() == self.batch_size {
                vec(l)
            } else {
                mat(l)
            }
        });
        Batch {
            input_ids: mat(&self.input_ids),
            attention_mask: mat(&self.attention_mask),
            token_type_ids: mat(&self.token_type_ids),
            labels,
            start_positions: self.start_positions.as_deref().map(vec),
            end_positions: self.end_positions.as_deref().map(vec),
            loss_mask: self.loss_mask.as_deref().map(mat),
        }
    }
}

/// A batch of `i64` tensors: inputs `[batch, seq]`, targets as the task needs.
#[derive(Debug)]
pub struct Batch {
    /// Token ids.
    pub input_ids: tch::Tensor,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: tch::Tensor,
    /// Segment ids.
    pub token_type_ids: tch::Tensor,
    /// Class ids `[batch]` or token labels `[batch, seq]`.
    pub labels: Option<tch::Tensor>,
    /// Answer start tokens `[batch]`.
    pub start_positions: Option<tch::Tensor>,
    /// Answer end tokens `[batch]`.
    pub end_positions: Option<tch::Tensor>,
    /// Token-label loss mask `[batch, seq]`.
    pub loss_mask: Option<tch::Tensor>,
}
