//! The starting point of a run, from `spec.model` and `spec.tokenizer`: the
//! architecture ([`BertConfig`], vocabulary padded for this run's
//! tensor-parallel size), the tokenizer, and the weights of this rank's shard:
//!
//! | spec.model | weights |
//! | --- | --- |
//! | `nemo` | the archive's (encoder and head), resharded ([`read_nemo`]) |
//! | `checkpoint` (Megatron-LM dir) | [`megatron::load_with`], resharded to this TP |
//! | `checkpoint` (HF safetensors dir) | [`huggingface::load`] |
//! | published `pretrained` only | downloaded and verified ([`published_weights`]); none found: exit 2 |
//! | `initialization: Random` (`--random-init`) | random (warned) |

use std::path::{Path, PathBuf};

use crds::MegatronFineTuneSpec;
use crds::published::{FileRole, Published};

use super::error::{JobError, JobResult};
use super::inputs::Inputs;
use super::published_weights::{self, FetchContext};
use crate::checkpoint::nemo::{NemoModel, read_nemo};
use crate::checkpoint::{huggingface, megatron};
use crate::model::{Activation, Architecture, BertConfig, StateDict};
use crate::pretrained::Resolved;
use crate::tokenizer::{BertTokenizer, BuiltinVocab};

/// Where the initial weights come from.
#[derive(Debug)]
pub enum Weights {
    /// Random initialisation (seeded).
    Random,
    /// A pretrained encoder shard (the task head starts random).
    Pretrained(StateDict),
    /// A task model from a .nemo (encoder and, when present, head).
    Nemo(Box<NemoModel>),
}

/// Everything needed to build this rank's model and tokenizer.
#[derive(Debug)]
pub struct StartingPoint {
    /// The architecture, `padded_vocab_size` for this run's TP size.
    pub config: BertConfig,
    /// The weights.
    pub weights: Weights,
    /// The tokenizer.
    pub tokenizer: BertTokenizer,
    /// The vocabulary file (embedded in the written .nemo).
    pub vocab_file: PathBuf,
    /// Whether the tokenizer lower-cases.
    pub do_lower_case: bool,
    /// Name recorded in the .nemo (`pretrained_model_name`).
    pub pretrained_name: String,
    /// Where the weights came from, for logs.
    pub description: String,
}

/// Reads the starting point for tensor-parallel rank `tp_rank` of `tp_size`.
/// `work_dir` receives extracted files (the built-in vocabulary, the .nemo's
/// artifacts); `external_weights`: the weights will be loaded from elsewhere
/// afterwards (`evaluate --training-checkpoint`), so random ones do.
pub fn starting_point(
    spec: &MegatronFineTuneSpec,
    inputs: &Inputs,
    tp_size: i64,
    tp_rank: i64,
    work_dir: &Path,
    external_weights: bool,
) -> JobResult<StartingPoint> {
    let shard = Shard { tp_size, tp_rank };
    if let Some(nemo_uri) = &spec.model.nemo {
        return from_nemo(inputs, nemo_uri, shard);
    }
    let random = spec.model.is_random() || external_weights;
    let published = published_files(spec, inputs, random)?;
    let vocab = published
        .as_ref()
        .and_then(|(r, p)| r.file(p, FileRole::Vocabulary));
    let (tokenizer, vocab_file, do_lower_case) =
        tokenizer(spec, inputs, work_dir, vocab.as_deref())?;
    let start = Start {
        pretrained_name: spec
            .model
            .pretrained
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| default_name(do_lower_case)),
        tokenizer,
        vocab_file,
        do_lower_case,
        shard,
    };
    let spec_config = spec_architecture(spec, inputs, start.tokenizer.vocab_size() as i64)?;
    match checkpoint_location(spec, inputs, published.as_ref())? {
        Some((path, label)) => from_checkpoint(spec, start, spec_config, &path, label),
        None => from_random(start, spec_config, random, external_weights),
    }
}

/// This rank's place in the tensor-parallel group.
#[derive(Clone, Copy)]
struct Shard {
    tp_size: i64,
    tp_rank: i64,
}

/// What every non-.nemo starting point shares: the tokenizer and the names.
struct Start {
    tokenizer: BertTokenizer,
    vocab_file: PathBuf,
    do_lower_case: bool,
    pretrained_name: String,
    shard: Shard,
}

/// A .nemo restores everything: architecture, weights (encoder and head) and tokenizer.
fn from_nemo(inputs: &Inputs, nemo_uri: &crds::Uri, shard: Shard) -> JobResult<StartingPoint> {
    let path = inputs.file("spec.model.nemo", nemo_uri)?;
    let nemo = read_nemo(&path, shard.tp_size, shard.tp_rank)?;
    let vocab_file = nemo.vocab_file.clone().ok_or_else(|| {
        JobError::invalid(format!(
            "spec.model.nemo: {nemo_uri} carries no tokenizer vocabulary"
        ))
    })?;
    let do_lower_case = nemo.do_lower_case.unwrap_or(false);
    let tokenizer = BertTokenizer::from_vocab_file(&vocab_file, do_lower_case)?;
    let pretrained_name = nemo
        .pretrained_model_name
        .clone()
        .unwrap_or_else(|| default_name(do_lower_case));
    Ok(StartingPoint {
        config: nemo.config.clone(),
        description: format!(
            "{nemo_uri} (tensor-parallel size {})",
            nemo.tensor_parallel_size
        ),
        weights: Weights::Nemo(Box::new(nemo)),
        tokenizer,
        vocab_file,
        do_lower_case,
        pretrained_name,
    })
}

/// A published name's verified files (resolved already by `train` before any
/// rank started: then this finds the pod's copy at once).
fn published_files(
    spec: &MegatronFineTuneSpec,
    inputs: &Inputs,
    random: bool,
) -> JobResult<Option<(Resolved, &'static Published)>> {
    if random {
        return Ok(None);
    }
    let resolved = published_weights::fetch(spec, inputs.cache_dir(), &FetchContext::local())?;
    Ok(resolved.zip(published_weights::needed(spec)))
}

/// The architecture the spec gives (None: only the checkpoint knows it).
fn spec_architecture(
    spec: &MegatronFineTuneSpec,
    inputs: &Inputs,
    vocab: i64,
) -> JobResult<Option<BertConfig>> {
    let m = &spec.model;
    if let Some(file) = &m.config_file {
        let path = inputs.file("spec.model.configFile", file)?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            JobError::io(
                format!("reading spec.model.configFile {}", path.display()),
                e,
            )
        })?;
        let mut cfg = BertConfig::from_json_or_yaml_with_vocab(&text, vocab)
            .map_err(|e| JobError::invalid(format!("spec.model.configFile {file}: {e}")))?;
        apply_dropouts(spec, &mut cfg);
        return Ok(Some(cfg));
    }
    match m.architecture(vocab) {
        Ok(a) => Ok(Some(from_architecture(&a))),
        Err(crds::ArchitectureError::Unknown) => Ok(None),
        Err(e) => Err(JobError::invalid(e.to_string())),
    }
}

/// Where pretrained weights are: `spec.model.checkpoint`, else the published
/// name's weights file; with a label for logs.
fn checkpoint_location(
    spec: &MegatronFineTuneSpec,
    inputs: &Inputs,
    published: Option<&(Resolved, &'static Published)>,
) -> JobResult<Option<(PathBuf, String)>> {
    if let Some(ckpt) = &spec.model.checkpoint {
        let path = inputs.checkpoint("spec.model.checkpoint.location", ckpt)?;
        return Ok(Some((path, ckpt.location.to_string())));
    }
    Ok(published.and_then(|(resolved, p)| {
        let file = resolved.file(p, FileRole::Weights)?;
        Some((file, resolved.source.clone()))
    }))
}

/// Pretrained encoder weights from a Megatron-LM or Hugging Face checkpoint,
/// resharded to this run's tensor-parallel size (the task head starts random).
fn from_checkpoint(
    spec: &MegatronFineTuneSpec,
    start: Start,
    spec_config: Option<BertConfig>,
    path: &Path,
    label: String,
) -> JobResult<StartingPoint> {
    let Shard { tp_size, tp_rank } = start.shard;
    let (mut config, shard) = if huggingface::is_hf_checkpoint(path) {
        let (config, shard, _) = huggingface::load(path, tp_size, tp_rank)?;
        (config, shard)
    } else {
        let vocab = start.tokenizer.vocab_size() as i64;
        let opts = megatron::LoadOptions {
            vocab_size: Some(spec_config.as_ref().map_or(vocab, |c| c.vocab_size)),
            config: spec_config,
            include_pretraining_heads: false,
        };
        let (config, shard, info) = megatron::load_with(path, tp_size, tp_rank, &opts)?;
        tracing::info!(
            checkpoint = label,
            iteration = ?info.iteration,
            tensor_parallel_size = info.tensor_parallel_size,
            checkpoint_version = info.checkpoint_version,
            "pretrained Megatron-LM checkpoint loaded"
        );
        (config, shard)
    };
    apply_dropouts(spec, &mut config);
    finish(start, config, Weights::Pretrained(shard), label)
}

/// Random weights: only when the spec asks (or the caller loads weights afterwards).
fn from_random(
    start: Start,
    spec_config: Option<BertConfig>,
    random: bool,
    external_weights: bool,
) -> JobResult<StartingPoint> {
    let Some(config) = spec_config else {
        return Err(JobError::invalid(
            "spec.model: no architecture: set spec.model.pretrained, spec.model.config or spec.model.configFile",
        ));
    };
    if !random {
        return Err(JobError::invalid(
            "spec.model has an architecture but no weights: set spec.model.checkpoint (or \
             spec.model.initialization: Random, i.e. --random-init, to train from scratch, for tests)",
        ));
    }
    let why = if external_weights {
        "the weights are loaded afterwards"
    } else {
        "spec.model.initialization: Random"
    };
    finish(
        start,
        config,
        Weights::Random,
        format!("random initialisation ({why})"),
    )
}

/// Checks the tokenizer fits the embedding and the architecture fits the
/// tensor-parallel size (random weights get the vocabulary padded for it).
fn finish(
    start: Start,
    mut config: BertConfig,
    weights: Weights,
    description: String,
) -> JobResult<StartingPoint> {
    let tp_size = start.shard.tp_size;
    if weights_is_random(&weights) {
        config.padded_vocab_size = config.padded_vocab_for(tp_size);
    }
    if (start.tokenizer.vocab_size() as i64) > config.padded_vocab_size {
        return Err(JobError::invalid(format!(
            "the tokenizer has {} tokens but the model's embedding only {} rows: use the \
             model's own vocabulary (spec.tokenizer) or a matching vocabSize",
            start.tokenizer.vocab_size(),
            config.padded_vocab_size
        )));
    }
    config
        .validate(tp_size)
        .map_err(|e| JobError::invalid(format!("spec.model: {e}")))?;
    Ok(StartingPoint {
        config,
        weights,
        tokenizer: start.tokenizer,
        vocab_file: start.vocab_file,
        do_lower_case: start.do_lower_case,
        pretrained_name: start.pretrained_name,
        description,
    })
}

/// Warns loudly that a run fine-tunes a randomly initialised encoder (call
/// it once the weights are known not to come from a resumed checkpoint).
pub fn warn_random_init(start: &StartingPoint) {
    if weights_is_random(&start.weights) {
        tracing::warn!(
            "!!! the encoder is RANDOMLY INITIALISED ({}): fine-tuning results will be far below              a pretrained model !!!",
            start.description
        );
    }
}

fn weights_is_random(w: &Weights) -> bool {
    matches!(w, Weights::Random)
}

fn default_name(lower: bool) -> String {
    if lower {
        "megatron-bert-uncased"
    } else {
        "megatron-bert-cased"
    }
    .to_owned()
}

fn apply_dropouts(spec: &MegatronFineTuneSpec, cfg: &mut BertConfig) {
    if let Some(c) = &spec.model.config {
        if let Some(d) = c.hidden_dropout {
            cfg.hidden_dropout = d;
        }
        if let Some(d) = c.attention_dropout {
            cfg.attention_dropout = d;
        }
    }
}

/// A complete spec architecture as the model's config (padded for TP = 1).
pub fn from_architecture(a: &crds::Architecture) -> BertConfig {
    let mut cfg = BertConfig {
        vocab_size: a.vocab_size,
        padded_vocab_size: 0,
        hidden_size: a.hidden_size,
        num_layers: a.num_layers,
        num_attention_heads: a.num_attention_heads,
        ffn_hidden_size: a.ffn_hidden_size,
        max_position_embeddings: a.max_position_embeddings,
        type_vocab_size: a.type_vocab_size,
        layernorm_epsilon: a.layer_norm_epsilon,
        activation: match a.activation {
            crds::Activation::Gelu => Activation::Gelu,
            crds::Activation::GeluTanh => Activation::GeluTanh,
        },
        hidden_dropout: a.hidden_dropout,
        attention_dropout: a.attention_dropout,
        make_vocab_size_divisible_by: a.make_vocab_size_divisible_by,
        architecture: Architecture::MegatronPreLn,
    };
    cfg.padded_vocab_size = cfg.padded_vocab_for(1);
    cfg
}

/// The tokenizer of a spec without a .nemo, its vocabulary file and casing.
/// `published_vocab`: the vocabulary downloaded with a published model's weights, used
/// unless `spec.tokenizer.vocabFile` names another.
pub fn tokenizer(
    spec: &MegatronFineTuneSpec,
    inputs: &Inputs,
    work_dir: &Path,
    published_vocab: Option<&Path>,
) -> JobResult<(BertTokenizer, PathBuf, bool)> {
    let lower = spec.do_lower_case();
    if let Some(file) = spec.tokenizer.as_ref().and_then(|t| t.vocab_file.as_ref()) {
        let path = inputs.file("spec.tokenizer.vocabFile", file)?;
        let lower = lower.unwrap_or(false);
        return Ok((BertTokenizer::from_vocab_file(&path, lower)?, path, lower));
    }
    if let Some(path) = published_vocab {
        let lower = lower.unwrap_or(false);
        return Ok((
            BertTokenizer::from_vocab_file(path, lower)?,
            path.to_path_buf(),
            lower,
        ));
    }
    let name = spec.tokenizer_name().ok_or_else(|| {
        JobError::invalid(
            "no tokenizer: set spec.tokenizer.name (megatron-bert-uncased or megatron-bert-cased) \
             or spec.tokenizer.vocabFile",
        )
    })?;
    let vocab = match name {
        crds::TokenizerName::MegatronBertUncased => BuiltinVocab::BertUncased,
        crds::TokenizerName::MegatronBertCased => BuiltinVocab::BertCased,
    };
    let lower = lower.unwrap_or(vocab.lowercase());
    let tokenizer = BertTokenizer::from_vocab_text(vocab.text(), lower, vocab.label())?;
    std::fs::create_dir_all(work_dir)
        .map_err(|e| JobError::io(format!("creating {}", work_dir.display()), e))?;
    let path = work_dir.join(format!(
        "{}-vocab.txt",
        vocab.label().trim_start_matches("built-in ")
    ));
    std::fs::write(&path, vocab.text())
        .map_err(|e| JobError::io(format!("writing {}", path.display()), e))?;
    Ok((tokenizer, path, lower))
}
