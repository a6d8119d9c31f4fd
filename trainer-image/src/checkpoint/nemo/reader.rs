//! Reading .nemo archives (ours and NeMo 1.x's, gzip or plain tar) in one
//! pass over the stream: the small members are kept in memory, and this
//! rank's weights member is copied to a scratch file (the torch.save reader
//! needs a file); then the shard is loaded, checked against the config and
//! converted to the canonical QKV order. When the archive's tensor-parallel
//! size differs from the run's, a second pass extracts every rank's weights
//! and they are resharded.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use tch::Tensor;
use torch_pickle::PickleError;

use super::model_config::{self, NemoTask, Parsed};
use super::{NemoModel, artifact, keys, shapes};
use crate::checkpoint::error::{CheckpointError, Result};
use crate::checkpoint::megatron::{model_entry, qkv, reshard_repad};
use crate::model::{BertConfig, HeadConfig, StateDict, merge_shards, shard_state_dict};

/// How to read an archive.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// Where to extract the weights and artifacts (default: the system
    /// temporary directory). Needs room for the whole model.
    pub scratch_dir: Option<PathBuf>,
}

/// Members larger than this that are not weights are skipped.
const SMALL_MEMBER_LIMIT: u64 = 64 << 20;

/// Reads rank `tp_rank` of `target_tp` from the .nemo at `path`.
pub fn read_nemo(path: &Path, target_tp: i64, tp_rank: i64) -> Result<NemoModel> {
    read_nemo_with(path, target_tp, tp_rank, &ReadOptions::default())
}

/// [`read_nemo`] with options.
pub fn read_nemo_with(
    path: &Path,
    target_tp: i64,
    tp_rank: i64,
    opts: &ReadOptions,
) -> Result<NemoModel> {
    if target_tp < 1 || tp_rank < 0 || tp_rank >= target_tp {
        return Err(CheckpointError::invalid(
            path,
            format!("tensor-parallel rank {tp_rank} of size {target_tp} is not a valid rank"),
        ));
    }
    let scratch = scratch_dir(opts)?;
    let (scan, weight_files) = extract(path, scratch.path(), target_tp, tp_rank)?;
    let source_tp = weight_files.len() as i64;
    let Described {
        parsed,
        version,
        vocab,
        mut config,
        labels,
        do_lower_case,
    } = describe(path, &scan.small)?;
    let vocab_file = write_vocabulary(scratch.path(), vocab.as_ref())?;
    check_divisible(path, &config, source_tp)?;
    let wanted: Vec<usize> = if source_tp == target_tp {
        vec![tp_rank as usize]
    } else {
        (0..source_tp as usize).collect()
    };
    let (shards, ignored) = load_shards(path, &weight_files, &wanted, &config, version)?;
    // The tensors are in memory now; free the scratch space.
    for (_, file) in &weight_files {
        let _ = std::fs::remove_file(file);
    }
    let first_member = &weight_files[wanted[0]].0;
    config.padded_vocab_size = vocabulary_rows(path, first_member, &shards[0], &config, source_tp)?;
    let head = head_of(path, first_member, &parsed, &shards[0], config.hidden_size)?;
    let state = reshard(path, shards, &mut config, source_tp, target_tp, tp_rank)?;
    Ok(NemoModel {
        path: path.to_path_buf(),
        task: parsed.task,
        config,
        head: head.config,
        has_head_weights: head.from_weights,
        state_dict: state,
        tensor_parallel_size: source_tp,
        checkpoint_version: version,
        vocab_file,
        do_lower_case,
        labels,
        pretrained_model_name: parsed.pretrained_model_name,
        dataset: parsed.dataset,
        ignored_keys: ignored,
        scratch,
    })
}

/// Extracts the small members and this rank's `mp_rank_NN` weights; all of
/// them only when resharding needs them. Returns the weights files by source rank.
fn extract(
    path: &Path,
    scratch: &Path,
    target_tp: i64,
    tp_rank: i64,
) -> Result<(Scan, Vec<(String, PathBuf)>)> {
    let mut scan = scan(path, scratch, Some(tp_rank as usize))?;
    let mut files = weight_files(path, &scan.weights, &scan.rank_dirs)?;
    let source_tp = files.len() as i64;
    if source_tp != target_tp && files.iter().any(|(_, f)| f.as_os_str().is_empty()) {
        scan = self::scan(path, scratch, None)?;
        files = weight_files(path, &scan.weights, &scan.rank_dirs)?;
    }
    Ok((scan, files))
}

/// The archive's vocabulary as a file the tokenizer (and a written .nemo) can use.
fn write_vocabulary(scratch: &Path, vocab: Option<&Vocab>) -> Result<Option<PathBuf>> {
    let Some(v) = vocab else {
        return Ok(None);
    };
    let p = scratch.join("vocab.txt");
    std::fs::write(&p, &v.bytes).map_err(|e| CheckpointError::io(&p, e))?;
    Ok(Some(p))
}

/// The heads and the MLP split evenly over the archive's ranks.
fn check_divisible(path: &Path, config: &BertConfig, source_tp: i64) -> Result<()> {
    let heads = config.num_attention_heads;
    if heads % source_tp != 0 || config.ffn_hidden_size % source_tp != 0 {
        return Err(CheckpointError::invalid(
            path,
            format!(
                "{source_tp} mp_rank directories do not divide the {heads} attention heads and \
                 the MLP width {}",
                config.ffn_hidden_size
            ),
        ));
    }
    Ok(())
}

/// Loads the `wanted` source shards in canonical names (QKV in canonical
/// order), checking their shapes; also returns the keys that are not encoder
/// or head parameters.
fn load_shards(
    path: &Path,
    weight_files: &[(String, PathBuf)],
    wanted: &[usize],
    config: &BertConfig,
    version: Option<f64>,
) -> Result<(Vec<StateDict>, Vec<String>)> {
    let source_tp = weight_files.len() as i64;
    let heads = config.num_attention_heads;
    let expected = shapes::encoder_shapes(config, source_tp);
    let version = version.unwrap_or(super::NEMO_CHECKPOINT_VERSION);
    let mut shards = Vec::with_capacity(wanted.len());
    let mut ignored = Vec::new();
    for &r in wanted {
        let (member, file) = &weight_files[r];
        let (value, _) = torch_pickle::load(file).map_err(|e| rename_error(e, path, member))?;
        let mut shard = StateDict::new();
        model_entry(&value).visit_tensors("", &mut |key, t: &Tensor| match keys::canonical(key) {
            Some(name) => {
                shard.insert(name, t.shallow_clone());
            }
            None => {
                if r == wanted[0] {
                    ignored.push(key.to_string());
                }
            }
        });
        check_shard(path, member, &shard, &expected, config, source_tp)?;
        if version < 2.0 {
            let head_dim = config.hidden_size / heads;
            for (name, t) in shard.iter_mut() {
                if name.contains(".query_key_value.") {
                    *t = qkv::to_canonical(t, version, heads / source_tp, head_dim).map_err(
                        |source| CheckpointError::Qkv {
                            path: path.to_path_buf(),
                            tensor: format!("{member}: {name}"),
                            source: Box::new(source),
                        },
                    )?;
                }
            }
        }
        shards.push(shard);
    }
    Ok((shards, ignored))
}

/// The padded vocabulary of the archive's embedding (all ranks), which must
/// hold the vocabulary.
fn vocabulary_rows(
    path: &Path,
    member: &str,
    shard: &StateDict,
    config: &BertConfig,
    source_tp: i64,
) -> Result<i64> {
    let rows = shard[WORD_EMBEDDINGS].size()[0] * source_tp;
    if config.vocab_size > rows {
        return Err(CheckpointError::invalid(
            path,
            format!(
                "{member}: {WORD_EMBEDDINGS} has {rows} rows in all, fewer than the vocabulary \
                 ({}); the vocabulary does not belong to these weights",
                config.vocab_size
            ),
        ));
    }
    Ok(rows)
}

/// The task head: as model_config.yaml describes it, checked against the
/// classifier weights when the archive has them.
struct Head {
    config: HeadConfig,
    from_weights: bool,
}

fn head_of(
    path: &Path,
    member: &str,
    parsed: &Parsed,
    shard: &StateDict,
    hidden_size: i64,
) -> Result<Head> {
    let invalid = |m: String| CheckpointError::invalid(path, m);
    let mut head = parsed.head.clone();
    let Some((layers, classes)) = shapes::head_from_weights(shard) else {
        return Ok(Head {
            config: head,
            from_weights: false,
        });
    };
    if parsed.task == NemoTask::TextClassification && head.num_classes == 0 {
        head.num_classes = classes;
    }
    if (layers, classes) != (head.num_layers, head.num_classes) {
        return Err(invalid(format!(
            "{member}: the classifier weights have {layers} layer(s) and {classes} classes but \
             model_config.yaml describes {} layer(s) and {} classes",
            head.num_layers, head.num_classes
        )));
    }
    for (k, want) in shapes::head_shapes(hidden_size, &head) {
        let name = || keys::nemo_key(&k).unwrap_or(k.clone());
        match shard.get(&k) {
            None => return Err(invalid(format!("{member}: {} is missing", name()))),
            Some(t) if t.size() != want => {
                return Err(invalid(format!(
                    "{member}: {} has shape {:?}, expected {want:?}",
                    name(),
                    t.size()
                )));
            }
            Some(_) => {}
        }
    }
    Ok(Head {
        config: head,
        from_weights: true,
    })
}

/// This rank's shard at `target_tp` (merged and re-split, the vocabulary
/// re-padded, when the archive's size differs).
fn reshard(
    path: &Path,
    mut shards: Vec<StateDict>,
    config: &mut BertConfig,
    source_tp: i64,
    target_tp: i64,
    tp_rank: i64,
) -> Result<StateDict> {
    if source_tp == target_tp {
        return shards
            .pop()
            .ok_or_else(|| CheckpointError::invalid(path, "the archive holds no weights shard"));
    }
    let torch = |e| CheckpointError::torch(format!("{}: resharding", path.display()), e);
    let model_err =
        |e: crate::model::ModelError| CheckpointError::invalid(path, format!("resharding: {e}"));
    let mut full = merge_shards(&shards).map_err(model_err)?;
    drop(shards);
    let target_padded = config.padded_vocab_for(target_tp);
    full.insert(
        WORD_EMBEDDINGS.into(),
        reshard_repad(&full[WORD_EMBEDDINGS], target_padded).map_err(torch)?,
    );
    config.padded_vocab_size = target_padded;
    shard_state_dict(&full, target_tp, tp_rank).map_err(model_err)
}

/// The word embedding's canonical name.
const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// A .nemo described without building its model (`inspect`): what the small
/// members say, parsed as [`read_nemo`] parses them, and rank 0's weights
/// member as stored (tensors in memory, names as in the archive).
#[derive(Debug)]
pub struct NemoArchive {
    pub path: PathBuf,
    /// gzip-compressed (else a plain tar).
    pub gzip: bool,
    /// Every file member, in archive order.
    pub members: Vec<String>,
    pub task: NemoTask,
    /// The head as `model_config.yaml` describes it (text classification
    /// without `dataset.num_classes`: 0 classes).
    pub head: HeadConfig,
    /// The architecture; `padded_vocab_size` as the config states it (the
    /// word embeddings' rows are the truth).
    pub config: BertConfig,
    /// The weights members in rank order (`model_weights.ckpt`, or
    /// `mp_rank_NN/model_weights.ckpt`): the tensor-parallel size.
    pub weights_members: Vec<String>,
    /// From `megatron_checkpoint_version.json` (None when absent).
    pub checkpoint_version: Option<f64>,
    /// The tokenizer vocabulary member and its token count.
    pub vocab: Option<(String, i64)>,
    pub do_lower_case: Option<bool>,
    /// Label names in id order.
    pub labels: Option<Vec<String>>,
    pub pretrained_model_name: Option<String>,
    /// The NeMo release that saved it, when recorded.
    pub nemo_version: Option<String>,
    /// `model_config.yaml`'s `dataset` section.
    pub dataset: serde_json::Map<String, serde_json::Value>,
    /// Rank 0's weights member as loaded (the `torch.save` object).
    pub rank0: torch_pickle::Value,
}

/// Reads the .nemo at `path` for a description: its small members and rank
/// 0's weights member (the other ranks are not extracted); no model is built
/// and the weights are not converted.
pub fn open_nemo(path: &Path, opts: &ReadOptions) -> Result<NemoArchive> {
    let scratch = scratch_dir(opts)?;
    let scan = scan(path, scratch.path(), Some(0))?;
    // The config first: a tar that is no .nemo says so.
    let described = describe(path, &scan.small)?;
    let weight_files = weight_files(path, &scan.weights, &scan.rank_dirs)?;
    let (member, file) = &weight_files[0];
    let (rank0, _) = torch_pickle::load(file).map_err(|e| rename_error(e, path, member))?;
    let parsed = described.parsed;
    Ok(NemoArchive {
        path: path.to_path_buf(),
        gzip: scan.gzip,
        members: scan.members,
        task: parsed.task,
        head: parsed.head,
        config: described.config,
        weights_members: weight_files.into_iter().map(|(m, _)| m).collect(),
        checkpoint_version: described.version,
        vocab: described.vocab.map(|v| (v.member, v.size)),
        do_lower_case: described.do_lower_case,
        labels: described.labels,
        pretrained_model_name: parsed.pretrained_model_name,
        nemo_version: parsed.nemo_version,
        dataset: parsed.dataset,
        rank0,
    })
}

fn scratch_dir(opts: &ReadOptions) -> Result<tempfile::TempDir> {
    match &opts.scratch_dir {
        Some(d) => tempfile::Builder::new().prefix("nemo-").tempdir_in(d),
        None => tempfile::Builder::new().prefix("nemo-").tempdir(),
    }
    .map_err(|e| CheckpointError::io(opts.scratch_dir.clone().unwrap_or_default(), e))
}

/// The vocabulary member of an archive.
#[derive(Clone, Debug)]
struct Vocab {
    member: String,
    bytes: Vec<u8>,
    /// Tokens (non-empty lines).
    size: i64,
}

/// What an archive's small members say: `model_config.yaml`, the Megatron
/// checkpoint version, the vocabulary, the architecture and the labels.
struct Described {
    parsed: model_config::Parsed,
    version: Option<f64>,
    vocab: Option<Vocab>,
    /// `padded_vocab_size` as the config states it (the weights decide).
    config: BertConfig,
    labels: Option<Vec<String>>,
    do_lower_case: Option<bool>,
}

fn describe(path: &Path, small: &BTreeMap<String, Vec<u8>>) -> Result<Described> {
    let invalid = |m: String| CheckpointError::invalid(path, m);
    let model_config_error = |context: &str, source| CheckpointError::ModelConfig {
        path: path.to_path_buf(),
        context: context.to_string(),
        source: Box::new(source),
    };
    let cfg_text = small
        .get("model_config.yaml")
        .ok_or_else(|| invalid("model_config.yaml is missing: not a .nemo archive".into()))?;
    let cfg_text = std::str::from_utf8(cfg_text)
        .map_err(|_| invalid("model_config.yaml is not UTF-8 text".into()))?;
    let parsed =
        model_config::parse(cfg_text).map_err(|source| CheckpointError::NemoModelConfig {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
    let member_text = |reference: &str, what: &str| -> Result<Vec<u8>> {
        let member = artifact::member_of_ref(reference);
        small.get(member).cloned().ok_or_else(|| {
            invalid(format!(
                "{member} (the {what} that model_config.yaml names as {reference}) is missing"
            ))
        })
    };

    // Megatron checkpoint version: the QKV row order of the saved weights.
    let version = match small
        .iter()
        .find(|(k, _)| k.ends_with("megatron_checkpoint_version.json"))
    {
        None => None,
        Some((member, bytes)) => {
            let v: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| invalid(format!("{member}: not JSON: {e}")))?;
            match v.get("checkpoint_version") {
                None | Some(serde_json::Value::Null) => None,
                Some(x) => Some(x.as_f64().ok_or_else(|| {
                    invalid(format!("{member}: checkpoint_version {x} is not a number"))
                })?),
            }
        }
    };

    // Vocabulary.
    let vocab = match &parsed.vocab_ref {
        Some(r) => {
            let bytes = member_text(r, "tokenizer vocabulary")?;
            let size = String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count() as i64;
            Some(Vocab {
                member: artifact::member_of_ref(r).to_string(),
                bytes,
                size,
            })
        }
        None => None,
    };
    let vocab_size = vocab.as_ref().map(|v| v.size);

    // Architecture: encoder config file, inline config, or a published name.
    let mut encoder_json: Option<serde_json::Value> = None;
    let config = if let Some(r) = &parsed.encoder_config_ref {
        let text = member_text(r, "encoder config")?;
        let text = String::from_utf8_lossy(&text).to_string();
        encoder_json = serde_json::from_str(&text).ok();
        parse_config(&text, vocab_size)
            .map_err(|e| model_config_error(artifact::member_of_ref(r), e))?
    } else if let Some(inline) = &parsed.inline_encoder_config {
        parse_config(&inline.to_string(), vocab_size)
            .map_err(|e| model_config_error("model_config.yaml language_model.config", e))?
    } else if let Some(name) = &parsed.pretrained_model_name {
        let mut c = BertConfig::pretrained(name)
            .map_err(|e| model_config_error("model_config.yaml language_model", e))?;
        if let Some(v) = vocab_size {
            c.vocab_size = v;
        }
        c
    } else {
        return Err(invalid(
            "model_config.yaml has no language_model.config_file, language_model.config or \
             pretrained_model_name: the architecture is unknown"
                .into(),
        ));
    };

    // Labels.
    let labels = match (&parsed.label_ids, &parsed.labels_ref) {
        (Some(l), _) => Some(l.clone()),
        (None, Some(r)) => {
            let text = member_text(r, "class labels file")?;
            Some(
                String::from_utf8_lossy(&text)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            )
        }
        (None, None) => None,
    };

    let do_lower_case = parsed
        .dataset
        .get("do_lower_case")
        .and_then(serde_json::Value::as_bool)
        .or_else(|| {
            encoder_json
                .as_ref()
                .and_then(|j| j.get("tokenizer_type"))
                .and_then(serde_json::Value::as_str)
                .map(|t| t.contains("LowerCase"))
        })
        .or_else(|| {
            parsed
                .pretrained_model_name
                .as_ref()
                .map(|n| n.contains("uncased"))
        });

    Ok(Described {
        parsed,
        version,
        vocab,
        config,
        labels,
        do_lower_case,
    })
}

fn parse_config(text: &str, vocab_size: Option<i64>) -> crate::model::Result<BertConfig> {
    match vocab_size {
        Some(v) => BertConfig::from_json_or_yaml_with_vocab(text, v),
        None => BertConfig::from_json_or_yaml(text),
    }
}

/// What one pass over the archive found.
struct Scan {
    /// Small members by normalized name.
    small: BTreeMap<String, Vec<u8>>,
    /// Weights members (normalized name) and where they were extracted.
    weights: Vec<(String, PathBuf)>,
    /// Ranks of the `mp_rank_NN` directory entries.
    rank_dirs: Vec<usize>,
    /// The archive is gzip-compressed (else a plain tar).
    gzip: bool,
    /// Every file member (normalized name), in archive order.
    members: Vec<String>,
}

fn is_weights(name: &str) -> bool {
    name == "model_weights.ckpt" || rank_part(name).is_some()
}

/// `NN` of `mp_rank_NN/model_weights.ckpt`.
fn rank_part(name: &str) -> Option<&str> {
    name.strip_prefix("mp_rank_")?
        .strip_suffix("/model_weights.ckpt")
}

/// Reads the archive once: small members into memory, weights members extracted to `scratch`
/// (of the `mp_rank_NN` ones only rank `only_rank`'s, when given: the others are listed with an
/// empty path).
fn scan(path: &Path, scratch: &Path, only_rank: Option<usize>) -> Result<Scan> {
    let fmt = |m: String| CheckpointError::format(path, m);
    let gzip = read_head(path, 2).map_err(|e| CheckpointError::io(path, e))? == GZIP_MAGIC;
    let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let buffered = BufReader::with_capacity(1 << 20, file);
    let reader: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(reader);
    let mut small = BTreeMap::new();
    let mut weights = Vec::new();
    let mut rank_dirs = Vec::new();
    let mut members = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| fmt(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| fmt(format!("reading the archive: {e}")))?;
        if entry.header().entry_type().is_dir() {
            let raw = entry.path().map(|p| p.to_string_lossy().to_string());
            if let Some(r) = raw.ok().and_then(|n| {
                artifact::normalize(&n)
                    .strip_prefix("mp_rank_")
                    .and_then(|r| r.parse::<usize>().ok())
            }) {
                rank_dirs.push(r);
            }
            continue;
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry
            .path()
            .map_err(|e| fmt(format!("member name: {e}")))?
            .to_string_lossy()
            .to_string();
        let name = artifact::normalize(&raw).to_string();
        members.push(name.clone());
        if is_weights(&name)
            && only_rank.is_some_and(|k| {
                rank_part(&name).is_some_and(|r| r.parse::<usize>().ok() != Some(k))
            })
        {
            weights.push((name, PathBuf::new()));
        } else if is_weights(&name) {
            let dest = scratch.join(format!("{}.ckpt", weights.len()));
            let mut out = std::io::BufWriter::with_capacity(
                1 << 20,
                File::create(&dest).map_err(|e| CheckpointError::io(&dest, e))?,
            );
            std::io::copy(&mut entry, &mut out)
                .map_err(|e| fmt(format!("{name}: extracting: {e}")))?;
            out.into_inner()
                .map_err(|e| CheckpointError::io(&dest, e.into_error()))?;
            weights.push((name, dest));
        } else if entry.size() <= SMALL_MEMBER_LIMIT {
            let mut buf = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut buf)
                .map_err(|e| fmt(format!("{name}: reading: {e}")))?;
            small.insert(name, buf);
        }
    }
    Ok(Scan {
        small,
        weights,
        rank_dirs,
        gzip,
        members,
    })
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Up to the first `n` bytes of the file at `path`.
fn read_head(path: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    File::open(path)?.take(n).read_to_end(&mut head)?;
    Ok(head)
}

/// Whether `path` is a file that looks like a .nemo: a gzip stream, or a tar
/// archive (`ustar` magic in the first header). The contents are checked
/// when it is read.
pub fn is_nemo_archive(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    match read_head(path, 512) {
        Ok(head) => head.starts_with(&GZIP_MAGIC) || head.get(257..262) == Some(b"ustar"),
        Err(_) => false,
    }
}

/// The weights files in rank order, checking that every rank is there.
fn weight_files(
    path: &Path,
    found: &[(String, PathBuf)],
    rank_dirs: &[usize],
) -> Result<Vec<(String, PathBuf)>> {
    let invalid = |m: String| CheckpointError::invalid(path, m);
    let mut ranks: Vec<(usize, String, PathBuf)> = Vec::new();
    let mut single = None;
    for (name, file) in found {
        if name == "model_weights.ckpt" {
            single = Some((name.clone(), file.clone()));
        } else {
            let r = rank_part(name).expect("filtered by is_weights");
            let r: usize = r.parse().map_err(|_| {
                invalid(format!(
                    "{name}: pipeline-parallel or unknown rank directories are not supported"
                ))
            })?;
            ranks.push((r, name.clone(), file.clone()));
        }
    }
    if ranks.is_empty() && rank_dirs.is_empty() {
        return single.map(|s| vec![s]).ok_or_else(|| {
            invalid(
                "model_weights.ckpt is missing (neither ./model_weights.ckpt nor \
                 ./mp_rank_NN/model_weights.ckpt)"
                    .into(),
            )
        });
    }
    ranks.sort();
    let n = ranks
        .last()
        .map(|r| r.0)
        .into_iter()
        .chain(rank_dirs.iter().copied())
        .max()
        .map_or(0, |m| m + 1);
    for i in 0..n {
        if ranks.get(i).map(|r| r.0) != Some(i) {
            return Err(invalid(format!(
                "mp_rank_{i:02}/model_weights.ckpt is missing (the archive has mp_rank_00..mp_rank_{:02})",
                n - 1
            )));
        }
    }
    Ok(ranks.into_iter().map(|(_, n, f)| (n, f)).collect())
}

/// Checks that `shard` holds exactly the encoder parameters with the right
/// shapes; errors name the member and the NeMo key.
fn check_shard(
    path: &Path,
    member: &str,
    shard: &StateDict,
    expected: &BTreeMap<String, Vec<i64>>,
    config: &BertConfig,
    tp: i64,
) -> Result<()> {
    let invalid = |m: String| CheckpointError::invalid(path, format!("{member}: {m}"));
    let key = |k: &str| keys::nemo_key(k).unwrap_or_else(|| k.to_string());
    let word = "embeddings.word_embeddings.weight";
    match shard.get(word) {
        None => return Err(invalid(format!("{} is missing", key(word)))),
        Some(t) => {
            let s = t.size();
            if s.len() != 2 || s[1] != config.hidden_size || s[0] < 1 {
                return Err(invalid(format!(
                    "{} has shape {s:?}, expected [vocabulary rows / {tp}, {}]",
                    key(word),
                    config.hidden_size
                )));
            }
        }
    }
    for (name, want) in expected {
        match shard.get(name) {
            None => {
                return Err(invalid(format!(
                    "{} is missing (the config has {} layers)",
                    key(name),
                    config.num_layers
                )));
            }
            Some(t) if &t.size() != want => {
                return Err(invalid(format!(
                    "{} has shape {:?}, expected {want:?} for the config in model_config.yaml at \
                     tensor-parallel size {tp}",
                    key(name),
                    t.size()
                )));
            }
            Some(_) => {}
        }
    }
    for name in shard.keys() {
        if name.starts_with("encoder.") && !expected.contains_key(name) {
            return Err(invalid(format!(
                "{} is not part of the configured model ({} layers)",
                key(name),
                config.num_layers
            )));
        }
    }
    Ok(())
}

/// Puts the archive member into errors from reading an extracted file
/// (I/O errors keep naming the scratch file that failed).
fn rename_error(e: PickleError, archive: &Path, member: &str) -> CheckpointError {
    if e.is_io() {
        e.into()
    } else {
        CheckpointError::format(archive, format!("{member}: {}", e.message()))
    }
}
