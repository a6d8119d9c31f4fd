//! SQuAD features: `[CLS] question [SEP] context-window [SEP]`.
//!
//! The question (left-stripped, as Hugging Face `run_qa` does) is first cut
//! to `max_query_length` tokens (NeMo's setting). Then only the context is
//! truncated to `max_seq_length` and overflows into further windows that
//! overlap by `doc_stride` context tokens (`truncation="only_second",
//! return_overflowing_tokens=True, stride=doc_stride`). Start/end positions
//! are the first/last token covering the first answer, or `[CLS]` (0, 0)
//! when the answer is not wholly inside the window.

use super::super::{BatchItem, DataError, Target};
use super::SquadExample;
use crate::tokenizer::{BertTokenizer, PairWindows};

/// Windowing settings (NeMo's QA defaults: 384 / 128 / 64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SquadConfig {
    /// Tokens per window including `[CLS]` and the two `[SEP]`s.
    pub max_seq_length: usize,
    /// Context tokens shared by consecutive windows.
    pub doc_stride: usize,
    /// Question tokens kept.
    pub max_query_length: usize,
}

impl Default for SquadConfig {
    fn default() -> Self {
        Self {
            max_seq_length: 384,
            doc_stride: 128,
            max_query_length: 64,
        }
    }
}

/// One window of one example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquadFeature {
    /// Index of the example (in the slice given to the featurizer).
    pub example_index: usize,
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Segment ids (1 on the context and its closing `[SEP]`).
    pub token_type_ids: Vec<u32>,
    /// Character span in the context of each context token; `None` elsewhere.
    pub context_offsets: Vec<Option<(usize, usize)>>,
    /// Answer start token (0 = `[CLS]`: not in this window or no answer).
    pub start_position: usize,
    /// Answer end token, inclusive.
    pub end_position: usize,
}

impl BatchItem for SquadFeature {
    fn input_ids(&self) -> &[u32] {
        &self.input_ids
    }
    fn token_type_ids(&self) -> &[u32] {
        &self.token_type_ids
    }
    fn target(&self) -> Target<'_> {
        Target::Span {
            start: self.start_position,
            end: self.end_position,
        }
    }
}

/// Turns examples into windowed features.
#[derive(Clone)]
pub struct SquadFeaturizer {
    tokenizer: BertTokenizer,
    windows: PairWindows,
    config: SquadConfig,
}

impl SquadFeaturizer {
    /// Checks the settings: every window must hold at least one context token
    /// more than the stride.
    pub fn new(tokenizer: &BertTokenizer, config: SquadConfig) -> Result<Self, DataError> {
        let room = config
            .max_seq_length
            .saturating_sub(config.max_query_length + 3);
        if config.max_query_length == 0 || room <= config.doc_stride {
            return Err(DataError::Config(format!(
                "SQuAD windows: max_seq_length {} leaves {room} context tokens after a {}-token question and 3 special tokens; \
                 that must exceed doc_stride {} (lower doc_stride or max_query_length, or raise max_seq_length)",
                config.max_seq_length, config.max_query_length, config.doc_stride
            )));
        }
        Ok(Self {
            tokenizer: tokenizer.clone(),
            windows: tokenizer.pair_windows(config.max_seq_length, config.doc_stride)?,
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> SquadConfig {
        self.config
    }

    /// The question text as used: left-stripped, cut after `max_query_length` tokens.
    pub fn question_text<'q>(&self, question: &'q str) -> Result<&'q str, DataError> {
        let q = question.trim_start();
        let enc = self.tokenizer.encode(q, false)?;
        if enc.len() <= self.config.max_query_length {
            return Ok(q);
        }
        let end_char = enc.offsets[self.config.max_query_length - 1].1;
        let end_byte = q.char_indices().nth(end_char).map_or(q.len(), |(b, _)| b);
        Ok(&q[..end_byte])
    }

    /// The windows of one example; `example_index` is stored in each.
    pub fn featurize(
        &self,
        example_index: usize,
        example: &SquadExample,
    ) -> Result<Vec<SquadFeature>, DataError> {
        let question = self.question_text(&example.question)?;
        let windows = self.windows.encode(question, &example.context)?;
        let answer = example
            .answers
            .first()
            .map(|a| (a.start_char, a.start_char + a.text.chars().count()));
        let mut out = Vec::with_capacity(windows.len());
        for w in windows {
            let context_offsets: Vec<Option<(usize, usize)>> = w
                .sequence_ids
                .iter()
                .zip(&w.offsets)
                .map(|(s, o)| (*s == Some(1)).then_some(*o))
                .collect();
            let (start_position, end_position) = match answer {
                Some((s, e)) => answer_tokens(&context_offsets, s, e),
                None => (0, 0),
            };
            out.push(SquadFeature {
                example_index,
                input_ids: w.ids,
                token_type_ids: w.type_ids,
                context_offsets,
                start_position,
                end_position,
            });
        }
        Ok(out)
    }

    /// Features of all examples in order, tokenised on `threads` threads
    /// (1 = on the calling thread).
    pub fn featurize_all(
        &self,
        examples: &[SquadExample],
        threads: usize,
    ) -> Result<Vec<SquadFeature>, DataError> {
        let threads = threads.clamp(1, examples.len().max(1));
        if threads == 1 {
            let mut out = Vec::new();
            for (i, ex) in examples.iter().enumerate() {
                out.extend(self.featurize(i, ex)?);
            }
            return Ok(out);
        }
        let chunk = examples.len().div_ceil(threads);
        let parts: Vec<Result<Vec<SquadFeature>, DataError>> = std::thread::scope(|s| {
            let handles: Vec<_> = examples
                .chunks(chunk)
                .enumerate()
                .map(|(c, exs)| {
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for (i, ex) in exs.iter().enumerate() {
                            out.extend(self.featurize(c * chunk + i, ex)?);
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(DataError::Config("a tokenizer thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut out = Vec::new();
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }
}

/// First and last context token covering characters `start..end`, or (0, 0)
/// when the window does not hold the whole span (Hugging Face `run_qa`).
fn answer_tokens(offsets: &[Option<(usize, usize)>], start: usize, end: usize) -> (usize, usize) {
    let Some(first) = offsets.iter().position(Option::is_some) else {
        return (0, 0);
    };
    let Some(last) = offsets.iter().rposition(Option::is_some) else {
        return (0, 0);
    };
    let (Some(fo), Some(lo)) = (offsets[first], offsets[last]) else {
        return (0, 0);
    };
    if !(fo.0 <= start && lo.1 >= end) {
        return (0, 0);
    }
    let mut s = first;
    while s <= last && offsets[s].is_some_and(|o| o.0 <= start) {
        s += 1;
    }
    let mut e = last;
    while e >= first && offsets[e].is_some_and(|o| o.1 >= end) {
        if e == 0 {
            break;
        }
        e -= 1;
    }
    (s - 1, e + 1)
}
