//! What an evaluation produces ([`Evaluation`], [`Predictions`]), the
//! evaluation forward loop shared by the tasks, and the task losses.
//!
//! Parallelism: every rank of a tensor-parallel group runs the same forward
//! on the same batches and gets the same (replicated) logits. Data-parallel
//! replicas split the batches between them and exchange the outputs
//! ([`super::eval_shards`]). Either way every rank computes the same
//! predictions and metrics, and callers let rank 0 write the files.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use crds::Split;
use tch::{Device, Kind, Tensor};

use crate::comm::ProcessGroup;
use crate::data::{Batch, BatchItem, PaddedBatch, Padding};
use crate::model::{
    BertTaskModel, HeadOutput, question_answering_loss, sequence_classification_loss,
    token_classification_loss,
};
use crate::scores::{ClassScores, ClassificationReport};
use crate::train::{TrainError, TrainResult};

use super::errors::data_error;
use super::eval_shards;
use super::files::metric_prefix;

/// The predictions of one split, by task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predictions {
    /// Question answering: answer text by question id.
    Answers(BTreeMap<String, String>),
    /// Token classification: one label id per word of each sentence, in input order.
    WordLabels(Vec<Vec<usize>>),
    /// Text classification and relation extraction: one class id per example.
    Classes(Vec<usize>),
}

/// The result of evaluating one split.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The split evaluated.
    pub split: Split,
    /// Metrics by name: `val_*` for the validation split, `test_*` for the
    /// test split (e.g. `val_loss`, `val_f1`); empty when the split has no labels.
    pub metrics: BTreeMap<String, f64>,
    /// A scikit-learn style classification report (classification tasks).
    pub report: Option<String>,
    /// The predictions.
    pub predictions: Predictions,
    /// Batches this rank ran through the model (its data-parallel replica's
    /// share; 0 when scoring given predictions).
    pub batches_run: usize,
}

/// What [`forward_all`] did besides visiting the outputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Forwarded {
    /// The split's mean loss, when it has labels.
    pub loss: Option<f64>,
    /// Batches this rank ran through the model.
    pub batches_run: usize,
}

impl Evaluation {
    /// A classification task's evaluation: with a `scored` report and the
    /// average it reports (macro or micro), `{prefix}_accuracy`,
    /// `_precision`, `_recall` and `_f1` (x100) and the text report; without
    /// one (an unlabeled split) only the predictions.
    pub(crate) fn classification(
        split: Split,
        predictions: Predictions,
        scored: Option<(ClassificationReport, ClassScores)>,
    ) -> Self {
        let mut metrics = BTreeMap::new();
        let report = scored.map(|(r, avg)| {
            let p = metric_prefix(split);
            metrics.insert(format!("{p}_accuracy"), pct(r.accuracy));
            metrics.insert(format!("{p}_precision"), pct(avg.precision));
            metrics.insert(format!("{p}_recall"), pct(avg.recall));
            metrics.insert(format!("{p}_f1"), pct(avg.f1));
            r.to_text(4)
        });
        Self {
            split,
            metrics,
            report,
            predictions,
            batches_run: 0,
        }
    }

    /// Adds the split's mean loss (`val_loss` / `test_loss`) when computed,
    /// and how many batches this rank ran.
    pub(crate) fn with_forward(mut self, forwarded: Forwarded) -> Self {
        if let Some(l) = forwarded.loss {
            self.metrics
                .insert(format!("{}_loss", metric_prefix(self.split)), l);
        }
        self.batches_run = forwarded.batches_run;
        self
    }
}

/// Writes the metrics as one JSON object (`{"val_f1": 87.5, ...}`).
pub fn write_metrics_json(evaluation: &Evaluation, path: &Path) -> TrainResult<()> {
    let text = serde_json::to_string_pretty(&evaluation.metrics)
        .map_err(|e| TrainError::Scores(format!("encoding metrics: {e}")))?;
    std::fs::write(path, text + "\n").map_err(|source| TrainError::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

/// The loss of a micro batch for the head's output (the model's task losses).
pub(crate) fn task_loss(output: &HeadOutput, batch: &Batch) -> TrainResult<Tensor> {
    let missing = |what: &str| {
        TrainError::InvalidInput(format!(
            "the batch carries no {what}: this split has no labels to compute a loss from"
        ))
    };
    Ok(match output {
        HeadOutput::Span {
            start_logits,
            end_logits,
        } => question_answering_loss(
            start_logits,
            end_logits,
            batch
                .start_positions
                .as_ref()
                .ok_or_else(|| missing("answer positions"))?,
            batch
                .end_positions
                .as_ref()
                .ok_or_else(|| missing("answer positions"))?,
        )?,
        HeadOutput::TokenLogits(logits) => token_classification_loss(
            logits,
            batch.labels.as_ref().ok_or_else(|| missing("labels"))?,
            batch.loss_mask.as_ref(),
            -100,
        )?,
        HeadOutput::SequenceLogits(logits) => sequence_classification_loss(
            logits,
            batch.labels.as_ref().ok_or_else(|| missing("labels"))?,
        )?,
    })
}

/// How many terms a batch's mean loss averages: scored tokens (token
/// classification) or sequences.
fn loss_terms(batch: &Batch, batch_size: usize) -> f64 {
    match &batch.loss_mask {
        Some(mask) => mask.sum(Kind::Double).double_value(&[]),
        None => batch_size as f64,
    }
}

/// Collates `items` into a batch on `device`, padded to the longest.
pub(crate) fn collate<F: BatchItem>(
    items: &[&F],
    pad_id: u32,
    device: Device,
) -> TrainResult<Batch> {
    Ok(PaddedBatch::collate(items, pad_id, Padding::Longest)
        .map_err(data_error)?
        .to_tensors(device))
}

/// Runs the model in eval mode without gradients over `features` in
/// batches of `batch_size`, calling `visit(range, output)` with each batch's
/// feature range and its head output on the CPU, in order. With `labeled`,
/// the result holds the mean loss over the whole split (each batch's mean
/// weighted by its number of loss terms, so it does not depend on the batch
/// size). With more than one replica in `dp`, each runs its share of the
/// batches and the outputs are exchanged ([`super::eval_shards`]); every
/// replica must call this with the same features.
pub(crate) fn forward_all<F: BatchItem>(
    model: &BertTaskModel,
    features: &[F],
    batch_size: usize,
    pad_id: u32,
    labeled: bool,
    dp: &dyn ProcessGroup,
    mut visit: impl FnMut(Range<usize>, HeadOutput) -> TrainResult<()>,
) -> TrainResult<Forwarded> {
    let _no_grad = tch::no_grad_guard();
    let device = model.vs.device();
    let batch_size = batch_size.max(1);
    let ranges: Vec<Range<usize>> = (0..features.len())
        .step_by(batch_size)
        .map(|start| start..(start + batch_size).min(features.len()))
        .collect();
    let sharded = dp.size() > 1;
    // (loss × terms, terms) of each batch, summed in batch order at the end.
    let mut losses = vec![(0.0f64, 0.0f64); ranges.len()];
    let mut own = Vec::new();
    for (b, range) in ranges.iter().enumerate() {
        if !eval_shards::owns(b, dp) {
            continue;
        }
        let items: Vec<&F> = features[range.clone()].iter().collect();
        let batch = collate(&items, pad_id, device)?;
        let output = model.forward(
            &batch.input_ids,
            Some(&batch.token_type_ids),
            Some(&batch.attention_mask),
            false,
        )?;
        if labeled {
            let n = loss_terms(&batch, items.len());
            if n > 0.0 {
                let loss = task_loss(&output, &batch)?.double_value(&[]);
                losses[b] = (loss * n, n);
            }
        }
        if sharded {
            own.push((b, to_cpu(output)));
        } else {
            visit(range.clone(), to_cpu(output))?;
        }
    }
    let batches_run = if sharded { own.len() } else { ranges.len() };
    if sharded {
        let outputs = eval_shards::exchange(dp, device, ranges.len(), own, &mut losses)?;
        for (range, output) in ranges.into_iter().zip(outputs) {
            visit(range, output)?;
        }
    }
    let (mut loss_sum, mut terms) = (0.0f64, 0.0f64);
    for (l, n) in losses {
        loss_sum += l;
        terms += n;
    }
    Ok(Forwarded {
        loss: (labeled && terms > 0.0).then(|| loss_sum / terms),
        batches_run,
    })
}

fn to_cpu(output: HeadOutput) -> HeadOutput {
    let cpu = |t: Tensor| t.to_device(Device::Cpu).to_kind(Kind::Float);
    match output {
        HeadOutput::Span {
            start_logits,
            end_logits,
        } => HeadOutput::Span {
            start_logits: cpu(start_logits),
            end_logits: cpu(end_logits),
        },
        HeadOutput::TokenLogits(t) => HeadOutput::TokenLogits(cpu(t)),
        HeadOutput::SequenceLogits(t) => HeadOutput::SequenceLogits(cpu(t)),
    }
}

/// Row `i` of a 2-D float tensor as a vector.
pub(crate) fn row_f32(t: &Tensor, i: usize) -> TrainResult<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.get(i as i64).contiguous())?)
}

/// Argmax over the last dimension as nested vectors (`[b, s]` or `[b]` ids).
pub(crate) fn argmax_last(t: &Tensor) -> TrainResult<Tensor> {
    Ok(t.f_argmax(-1, false)?)
}

/// A flat i64 tensor as ids.
pub(crate) fn ids(t: &Tensor) -> TrainResult<Vec<usize>> {
    Ok(Vec::<i64>::try_from(t.flatten(0, -1).contiguous())?
        .into_iter()
        .map(|v| v.max(0) as usize)
        .collect())
}

/// Scales a fraction to percent (the metrics are reported x100).
pub(crate) fn pct(x: f64) -> f64 {
    100.0 * x
}
