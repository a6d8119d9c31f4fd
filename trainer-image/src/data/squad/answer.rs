//! Choosing answers from start/end logits (Hugging Face
//! `postprocess_qa_predictions` for SQuAD v1.1): per window, the `n_best`
//! highest start and end logits are paired; pairs outside the context, with
//! end before start, or longer than `max_answer_length` tokens are skipped;
//! the candidates of all windows of an example are ranked by start + end
//! logit, and the answer text is cut from the ORIGINAL context characters.

use std::collections::HashMap;

use super::{SquadExample, SquadFeature};

/// One window of an example with its start and end logits.
pub type WindowLogits<'a> = (&'a SquadFeature, &'a [f32], &'a [f32]);

/// Answer selection settings (NeMo/Hugging Face defaults: 20 / 30).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnswerConfig {
    /// Start and end candidates taken per window.
    pub n_best: usize,
    /// Longest answer in tokens.
    pub max_answer_length: usize,
}

impl Default for AnswerConfig {
    fn default() -> Self {
        Self {
            n_best: 20,
            max_answer_length: 30,
        }
    }
}

/// One candidate answer.
#[derive(Debug, Clone, PartialEq)]
pub struct NBestAnswer {
    /// Text cut from the context.
    pub text: String,
    /// Start logit + end logit.
    pub score: f32,
    /// Softmax of `score` over the example's n-best list.
    pub probability: f32,
    /// First character in the context.
    pub start_char: usize,
    /// One past the last character.
    pub end_char: usize,
}

fn top_indices(logits: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(n);
    idx
}

/// The n-best answers of one example, best first. `windows` pairs each of the
/// example's features with its start and end logits (any length; positions
/// past the feature or outside the context are never chosen). Empty when no
/// window has a valid span (the predicted answer is then "").
pub fn best_answers(
    example: &SquadExample,
    windows: &[WindowLogits<'_>],
    config: AnswerConfig,
) -> Vec<NBestAnswer> {
    let mut cands: Vec<(f32, usize, usize)> = Vec::new();
    for (feature, start_logits, end_logits) in windows {
        let offsets = &feature.context_offsets;
        let ctx = |i: usize| offsets.get(i).copied().flatten();
        for &s in &top_indices(start_logits, config.n_best) {
            for &e in &top_indices(end_logits, config.n_best) {
                let (Some(so), Some(eo)) = (ctx(s), ctx(e)) else {
                    continue;
                };
                if e < s || e - s + 1 > config.max_answer_length {
                    continue;
                }
                cands.push((start_logits[s] + end_logits[e], so.0, eo.1));
            }
        }
    }
    cands.sort_by(|a, b| b.0.total_cmp(&a.0));
    cands.truncate(config.n_best);
    let max = cands.first().map_or(0.0, |c| c.0);
    let exps: Vec<f32> = cands.iter().map(|c| (c.0 - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let char_to_byte: Vec<usize> = example
        .context
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(example.context.len()))
        .collect();
    cands
        .iter()
        .zip(exps)
        .map(|(&(score, start_char, end_char), ex)| {
            let (b0, b1) = (
                char_to_byte[start_char],
                char_to_byte[end_char.max(start_char)],
            );
            NBestAnswer {
                text: example.context[b0..b1].to_string(),
                score,
                probability: ex / sum,
                start_char,
                end_char,
            }
        })
        .collect()
}

/// The predictions file content (`question id -> answer text`) for all
/// examples, from features in any order and their logits
/// (`logits[i]` belongs to `features[i]`).
pub fn predictions_by_id(
    examples: &[SquadExample],
    features: &[SquadFeature],
    logits: &[(Vec<f32>, Vec<f32>)],
    config: AnswerConfig,
) -> HashMap<String, String> {
    let mut by_example: Vec<Vec<WindowLogits<'_>>> = vec![Vec::new(); examples.len()];
    for (f, (s, e)) in features.iter().zip(logits) {
        if let Some(slot) = by_example.get_mut(f.example_index) {
            slot.push((f, s.as_slice(), e.as_slice()));
        }
    }
    examples
        .iter()
        .zip(by_example)
        .map(|(ex, wins)| {
            let text = best_answers(ex, &wins, config)
                .into_iter()
                .next()
                .map(|a| a.text)
                .unwrap_or_default();
            (ex.id.clone(), text)
        })
        .collect()
}
