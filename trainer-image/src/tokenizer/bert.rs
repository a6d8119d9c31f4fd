//! [`BertTokenizer`]: BertNormalizer + BertPreTokenizer + WordPiece + the BERT
//! `[CLS] A [SEP] (B [SEP])` post-processor, configured like Hugging Face
//! `BertTokenizerFast(vocab_file, do_lower_case)`.

use ahash::AHashMap;
use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, EncodeInput, Encoding, InputSequence, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use super::{BuiltinVocab, TokenizerError};

/// The special tokens BERT vocabularies carry; all but `[MASK]` are required.
const REQUIRED_SPECIALS: [&str; 4] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
/// Words longer than this many characters become `[UNK]` (as in BERT).
pub const MAX_INPUT_CHARS_PER_WORD: usize = 100;

/// One encoded text or text pair. Offsets are character (not byte) offsets
/// into the input that produced each token (`(0, 0)` for special tokens),
/// exactly what `BertTokenizerFast(..., return_offsets_mapping=True)` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Token strings.
    pub tokens: Vec<String>,
    /// Segment ids (0 for the first text and its special tokens, 1 for the second).
    pub type_ids: Vec<u32>,
    /// Character offsets into the text each token came from.
    pub offsets: Vec<(usize, usize)>,
    /// Which input each token came from (`None` for special tokens).
    pub sequence_ids: Vec<Option<usize>>,
    /// Which word each token came from (pre-tokenized input: the word index).
    pub word_ids: Vec<Option<u32>>,
}

impl Encoded {
    fn from_encoding(e: &Encoding) -> Self {
        Self {
            ids: e.get_ids().to_vec(),
            tokens: e.get_tokens().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            offsets: e.get_offsets().to_vec(),
            sequence_ids: e.get_sequence_ids(),
            word_ids: e.get_word_ids().to_vec(),
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A BERT WordPiece tokenizer built from a vocabulary (one token per line).
#[derive(Clone)]
pub struct BertTokenizer {
    inner: Tokenizer,
    lowercase: bool,
    vocab_size: usize,
    cls_id: u32,
    sep_id: u32,
    pad_id: u32,
    unk_id: u32,
}

impl std::fmt::Debug for BertTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertTokenizer")
            .field("lowercase", &self.lowercase)
            .field("vocab_size", &self.vocab_size)
            .finish()
    }
}

fn enc_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Encode(e.to_string())
}

impl BertTokenizer {
    /// Builds the tokenizer for a name (`megatron-bert-uncased`, ...): see [`BuiltinVocab`].
    pub fn from_name(name: &str) -> Result<Self, TokenizerError> {
        Self::from_builtin(BuiltinVocab::from_name(name)?)
    }

    /// Builds the tokenizer over a built-in vocabulary.
    pub fn from_builtin(vocab: BuiltinVocab) -> Result<Self, TokenizerError> {
        Self::from_vocab_text(vocab.text(), vocab.lowercase(), vocab.label())
    }

    /// Builds the tokenizer from a `vocab.txt` file.
    pub fn from_vocab_file(path: &Path, lowercase: bool) -> Result<Self, TokenizerError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::ReadVocab {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_vocab_text(&text, lowercase, &path.display().to_string())
    }

    /// Builds the tokenizer from vocabulary text; `origin` names it in errors.
    pub fn from_vocab_text(
        text: &str,
        lowercase: bool,
        origin: &str,
    ) -> Result<Self, TokenizerError> {
        let bad = |problem: String| TokenizerError::BadVocab {
            origin: origin.to_string(),
            problem,
        };
        let mut vocab: AHashMap<String, u32> = AHashMap::new();
        let body = text.strip_suffix('\n').unwrap_or(text);
        for (i, line) in body.split('\n').enumerate() {
            let token = line.strip_suffix('\r').unwrap_or(line);
            if token.is_empty() {
                return Err(bad(format!(
                    "line {} is empty; every line must hold one token",
                    i + 1
                )));
            }
            if let Some(prev) = vocab.insert(token.to_string(), i as u32) {
                return Err(bad(format!(
                    "line {} repeats token {token:?} of line {}; token ids are line numbers, so each token may appear once",
                    i + 1,
                    prev + 1
                )));
            }
        }
        if text.is_empty() {
            return Err(bad("the file is empty".into()));
        }
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| bad(format!("special token {t} is missing; BERT vocabularies hold [PAD], [UNK], [CLS], [SEP] and [MASK]")))
        };
        let (pad_id, unk_id, cls_id, sep_id) =
            (id("[PAD]")?, id("[UNK]")?, id("[CLS]")?, id("[SEP]")?);
        let specials: Vec<AddedToken> = REQUIRED_SPECIALS
            .iter()
            .chain(std::iter::once(&"[MASK]"))
            .filter(|t| vocab.contains_key(**t))
            .map(|t| AddedToken::from(*t, true))
            .collect();
        let vocab_size = vocab.len();
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(MAX_INPUT_CHARS_PER_WORD)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let mut inner = Tokenizer::new(model);
        // clean_text, handle_chinese_chars, strip_accents = None (follows lowercase), lowercase
        inner.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep_id),
            ("[CLS]".into(), cls_id),
        )));
        inner.with_decoder(Some(WordPieceDecoder::default()));
        inner.add_special_tokens(&specials);
        Ok(Self {
            inner,
            lowercase,
            vocab_size,
            cls_id,
            sep_id,
            pad_id,
            unk_id,
        })
    }

    /// Encodes one text (with `[CLS]`/`[SEP]` when `add_special_tokens`).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Encoded, TokenizerError> {
        let e = self
            .inner
            .encode_char_offsets(text, add_special_tokens)
            .map_err(enc_err)?;
        Ok(Encoded::from_encoding(&e))
    }

    /// Encodes a pair as `[CLS] a [SEP] b [SEP]`.
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<Encoded, TokenizerError> {
        let e = self
            .inner
            .encode_char_offsets((a, b), true)
            .map_err(enc_err)?;
        Ok(Encoded::from_encoding(&e))
    }

    /// Encodes one text as `[CLS] text [SEP]`, cut to at most `max_len` tokens
    /// (the end of the text is dropped, like `truncation=True`).
    pub fn encode_truncated(&self, text: &str, max_len: usize) -> Result<Encoded, TokenizerError> {
        let tk = self.with_truncation(max_len, 0, TruncationStrategy::LongestFirst)?;
        let e = tk.encode_char_offsets(text, true).map_err(enc_err)?;
        Ok(Encoded::from_encoding(&e))
    }

    /// Encodes already split words (no special tokens); `word_ids` says which
    /// word each token came from. A word that yields no token (only control
    /// characters, say) has no entry in `word_ids`.
    pub fn encode_words(&self, words: &[&str]) -> Result<Encoded, TokenizerError> {
        let input = EncodeInput::Single(InputSequence::from(words.to_vec()));
        let e = self
            .inner
            .encode_char_offsets(input, false)
            .map_err(enc_err)?;
        Ok(Encoded::from_encoding(&e))
    }

    /// Token strings of `text`, without special tokens.
    pub fn tokenize(&self, text: &str) -> Result<Vec<String>, TokenizerError> {
        Ok(self.encode(text, false)?.tokens)
    }

    /// A windowing encoder for `[CLS] a [SEP] b [SEP]` pairs where only `b` is
    /// cut, into windows of `max_len` tokens overlapping by `stride` tokens of
    /// `b` (Hugging Face `truncation="only_second", return_overflowing_tokens=True, stride=...`).
    pub fn pair_windows(
        &self,
        max_len: usize,
        stride: usize,
    ) -> Result<PairWindows, TokenizerError> {
        Ok(PairWindows {
            inner: self.with_truncation(max_len, stride, TruncationStrategy::OnlySecond)?,
        })
    }

    fn with_truncation(
        &self,
        max_length: usize,
        stride: usize,
        strategy: TruncationStrategy,
    ) -> Result<Tokenizer, TokenizerError> {
        let mut tk = self.inner.clone();
        tk.with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy,
            stride,
        }))
        .map_err(enc_err)?;
        Ok(tk)
    }

    /// Whether input is lower-cased and accent-stripped.
    pub fn lowercase(&self) -> bool {
        self.lowercase
    }
    /// Number of vocabulary entries (before any Megatron padding of the embedding).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    /// Id of `[CLS]`.
    pub fn cls_id(&self) -> u32 {
        self.cls_id
    }
    /// Id of `[SEP]`.
    pub fn sep_id(&self) -> u32 {
        self.sep_id
    }
    /// Id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    /// Id of `[UNK]`.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }
    /// The id of a token, if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// Encodes question/context pairs into overlapping windows; see
/// [`BertTokenizer::pair_windows`].
#[derive(Clone)]
pub struct PairWindows {
    inner: Tokenizer,
}

impl PairWindows {
    /// All windows of `[CLS] a [SEP] b [SEP]`, first window first.
    pub fn encode(&self, a: &str, b: &str) -> Result<Vec<Encoded>, TokenizerError> {
        let mut e = self
            .inner
            .encode_char_offsets((a, b), true)
            .map_err(enc_err)?;
        let rest = e.take_overflowing();
        let mut out = Vec::with_capacity(1 + rest.len());
        out.push(Encoded::from_encoding(&e));
        out.extend(rest.iter().map(Encoded::from_encoding));
        Ok(out)
    }
}
