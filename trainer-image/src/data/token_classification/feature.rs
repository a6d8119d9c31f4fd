//! Token classification features: each word's sub-tokens, the first carrying
//! the word's label (the rest are masked out of the loss). A sentence longer
//! than `max_seq_length - 2` tokens is split at word boundaries into several
//! windows so no word is lost (a single word longer than a window keeps its
//! first sub-tokens); a word that yields no token at all (only control
//! characters) is given one `[UNK]` so it still gets a prediction.

use super::super::{BatchItem, DataError, Target};
use super::{LabelIds, TokenExample};
use crate::tokenizer::BertTokenizer;

/// One window of one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFeature {
    /// Index of the sentence.
    pub example_index: usize,
    /// Index of the window's first word in the sentence.
    pub first_word: usize,
    /// Token ids, `[CLS] ... [SEP]`.
    pub input_ids: Vec<u32>,
    /// All zeros.
    pub token_type_ids: Vec<u32>,
    /// Label id per token (the pad label, 0, where not a word's first sub-token).
    pub labels: Vec<usize>,
    /// True on each word's first sub-token when the sentence has labels.
    pub loss_mask: Vec<bool>,
    /// Token position of the first sub-token of each word of the window, in word order.
    pub word_starts: Vec<usize>,
}

impl BatchItem for TokenFeature {
    fn input_ids(&self) -> &[u32] {
        &self.input_ids
    }
    fn token_type_ids(&self) -> &[u32] {
        &self.token_type_ids
    }
    fn target(&self) -> Target<'_> {
        Target::Tokens {
            labels: &self.labels,
            loss_mask: &self.loss_mask,
        }
    }
}

/// Builds token classification features.
#[derive(Debug, Clone)]
pub struct TokenClassificationFeaturizer {
    tokenizer: BertTokenizer,
    max_seq_length: usize,
}

impl TokenClassificationFeaturizer {
    /// `max_seq_length` counts `[CLS]` and `[SEP]`; it must be at least 3.
    pub fn new(tokenizer: &BertTokenizer, max_seq_length: usize) -> Result<Self, DataError> {
        if max_seq_length < 3 {
            return Err(DataError::Config(format!(
                "max_seq_length {max_seq_length} is below 3"
            )));
        }
        Ok(Self {
            tokenizer: tokenizer.clone(),
            max_seq_length,
        })
    }

    /// Sub-token ids of each word.
    fn word_tokens(&self, words: &[String]) -> Result<Vec<Vec<u32>>, DataError> {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let enc = self.tokenizer.encode_words(&refs)?;
        let mut per_word = vec![Vec::new(); words.len()];
        for (id, w) in enc.ids.iter().zip(&enc.word_ids) {
            if let Some(w) = w {
                per_word[*w as usize].push(*id);
            }
        }
        for t in &mut per_word {
            if t.is_empty() {
                t.push(self.tokenizer.unk_id());
            }
        }
        Ok(per_word)
    }

    /// The windows of one sentence. Labels must be known to `label_ids`
    /// (an unknown one is an error naming it).
    pub fn featurize(
        &self,
        example_index: usize,
        example: &TokenExample,
        label_ids: &LabelIds,
    ) -> Result<Vec<TokenFeature>, DataError> {
        let label_of = |w: usize| -> Result<Option<usize>, DataError> {
            let Some(labels) = &example.labels else {
                return Ok(None);
            };
            label_ids.id(&labels[w]).map(Some).ok_or_else(|| {
                DataError::Config(format!(
                    "sentence {} word {} ({:?}) has label {:?}, which is not in label_ids ({}); \
                     add it to label_ids or fix the labels file",
                    example_index + 1,
                    w + 1,
                    example.words[w],
                    labels[w],
                    label_ids.names().join(", ")
                ))
            })
        };
        let per_word = self.word_tokens(&example.words)?;
        let budget = self.max_seq_length - 2;
        let mut out = Vec::new();
        let mut w = 0;
        loop {
            let mut f = TokenFeature {
                example_index,
                first_word: w,
                input_ids: vec![self.tokenizer.cls_id()],
                token_type_ids: Vec::new(),
                labels: vec![0],
                loss_mask: vec![false],
                word_starts: Vec::new(),
            };
            while w < per_word.len() {
                let toks = &per_word[w];
                let used = f.input_ids.len() - 1;
                if used > 0 && used + toks.len() > budget {
                    break;
                }
                let take = toks.len().min(budget);
                let label = label_of(w)?;
                f.word_starts.push(f.input_ids.len());
                for (k, &t) in toks[..take].iter().enumerate() {
                    f.input_ids.push(t);
                    f.labels.push(if k == 0 { label.unwrap_or(0) } else { 0 });
                    f.loss_mask.push(k == 0 && label.is_some());
                }
                w += 1;
            }
            f.input_ids.push(self.tokenizer.sep_id());
            f.labels.push(0);
            f.loss_mask.push(false);
            f.token_type_ids = vec![0; f.input_ids.len()];
            out.push(f);
            if w >= per_word.len() {
                return Ok(out);
            }
        }
    }

    /// Features of all sentences in order.
    pub fn featurize_all(
        &self,
        examples: &[TokenExample],
        label_ids: &LabelIds,
    ) -> Result<Vec<TokenFeature>, DataError> {
        let mut out = Vec::new();
        for (i, ex) in examples.iter().enumerate() {
            out.extend(self.featurize(i, ex, label_ids)?);
        }
        Ok(out)
    }
}

/// One predicted label id per word of each sentence, from per-token
/// predictions (`token_predictions[i]` for `features[i]`, any padding
/// after the feature's tokens is ignored): each word takes the prediction
/// at its first sub-token. `num_examples` sentences are returned (an empty
/// sentence gets an empty list).
pub fn word_predictions(
    features: &[TokenFeature],
    token_predictions: &[Vec<usize>],
    num_examples: usize,
) -> Result<Vec<Vec<usize>>, DataError> {
    let mut out: Vec<Vec<(usize, usize)>> = vec![Vec::new(); num_examples];
    for (f, preds) in features.iter().zip(token_predictions) {
        let slot = out.get_mut(f.example_index).ok_or_else(|| {
            DataError::Config(format!(
                "feature of sentence {} but only {num_examples} sentences",
                f.example_index
            ))
        })?;
        for (k, &pos) in f.word_starts.iter().enumerate() {
            let p = *preds.get(pos).ok_or_else(|| {
                DataError::Config(format!(
                    "predictions for a feature are shorter ({}) than its tokens",
                    preds.len()
                ))
            })?;
            slot.push((f.first_word + k, p));
        }
    }
    Ok(out
        .into_iter()
        .map(|mut v| {
            v.sort_by_key(|(w, _)| *w);
            v.into_iter().map(|(_, p)| p).collect()
        })
        .collect())
}
