//! Writing .nemo archives: one pass into a gzip tar stream; each rank's
//! `model_weights.ckpt` is written to a scratch file beside the output (a
//! tar member's size must precede its bytes) and streamed into the archive,
//! so at most one rank's tensors are in memory at a time.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Map, Value as Json};
use torch_pickle::{Dict, Value};

use super::model_config::{self, ArtifactRefs, ConfigInput};
use super::{NEMO_CHECKPOINT_VERSION, artifact, encoder_config, keys, shapes};
use crate::checkpoint::error::{CheckpointError, Result};
use crate::checkpoint::megatron::reshard_repad;
use crate::model::{BertConfig, HeadConfig, StateDict, merge_shards, shard_state_dict};

/// The weights to write.
#[derive(Clone, Copy, Debug)]
pub enum NemoWeights<'a> {
    /// The full model (TP=1 layout, canonical names), cut into
    /// [`NemoContents::tp_size`] shards.
    Full(&'a StateDict),
    /// Every tensor-parallel rank's shard, in rank order (canonical names).
    Shards(&'a [StateDict]),
}

/// Everything a .nemo holds.
#[derive(Clone, Debug)]
pub struct NemoContents<'a> {
    pub config: &'a BertConfig,
    /// The task head (decides the NeMo model class).
    pub head: &'a HeadConfig,
    pub weights: NemoWeights<'a>,
    /// Tensor-parallel size of the archive (`mp_rank_NN` directories when > 1).
    pub tp_size: i64,
    /// NeMo's `language_model.pretrained_model_name` (e.g.
    /// `megatron-bert-345m-uncased`; `megatron-bert-uncased` for others).
    pub pretrained_model_name: &'a str,
    /// The tokenizer's `vocab.txt`.
    pub vocab_file: &'a Path,
    pub do_lower_case: bool,
    /// Label names in id order (token classification: written as
    /// `label_ids` and `label_ids.csv`; text classification: the class
    /// labels file).
    pub label_names: Option<&'a [String]>,
    /// Extra `dataset` settings for `model_config.yaml` (max_seq_length,
    /// doc_stride, ...).
    pub dataset: Map<String, Json>,
    /// Also write `bert_model.language_model.pooler.*`. NeMo 1.x task
    /// models have no pooler and restore strictly, so leave this off for
    /// archives NeMo should load.
    pub include_pooler: bool,
    /// gzip level 0-9 (NeMo 1.x uses Python's default, 9). Trained fp32
    /// weights shrink only ~7% at any level >= 2, and higher levels only cost
    /// time, so [`DEFAULT_COMPRESSION`] is 2 (zlib-rs's level 1 uses static
    /// Huffman codes that make weights ~5% larger than raw).
    pub compression_level: u32,
}

/// What was written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NemoWritten {
    pub path: PathBuf,
    /// Member names in archive order.
    pub members: Vec<String>,
    /// Canonical names not written (pretraining heads; the pooler unless asked).
    pub dropped: Vec<String>,
    pub bytes: u64,
}

/// Default gzip level of [`NemoContents::compression_level`].
pub const DEFAULT_COMPRESSION: u32 = 2;

/// Fixed member modification time, so the same model gives the same bytes.
const MTIME: u64 = 1_600_000_000;

/// Writes a .nemo archive at `path` (to a temporary name first, renamed
/// when complete).
pub fn write_nemo(path: &Path, contents: &NemoContents<'_>) -> Result<NemoWritten> {
    let c = contents;
    let invalid = |m: String| CheckpointError::invalid(path, m);
    if !shapes::is_megatron(c.config) {
        return Err(invalid(
            "only Megatron-BERT (pre-LN) models can be written as a NeMo Megatron-BERT .nemo"
                .into(),
        ));
    }
    let tp = c.tp_size;
    c.config
        .validate(1)
        .map_err(|e| invalid(format!("model config: {e}")))?;
    if tp < 1 || c.config.num_attention_heads % tp != 0 || c.config.ffn_hidden_size % tp != 0 {
        return Err(invalid(format!(
            "tensor-parallel size {tp} must divide the attention heads ({}) and the MLP width ({})",
            c.config.num_attention_heads, c.config.ffn_hidden_size
        )));
    }
    let vocab = std::fs::read(c.vocab_file).map_err(|e| CheckpointError::io(c.vocab_file, e))?;
    let (shards, dropped) = prepare_shards(path, c)?;

    // Small members.
    let vocab_member = artifact::member_name("vocab.txt", &vocab);
    let vocab_ref = format!("{}{vocab_member}", artifact::REF_PREFIX);
    let enc_json = encoder_config::to_json(c.config, &vocab_ref, c.do_lower_case);
    let enc_member = artifact::member_name(
        &encoder_config::basename(c.pretrained_model_name),
        enc_json.as_bytes(),
    );
    let version_json = format!("{{\"checkpoint_version\": {NEMO_CHECKPOINT_VERSION:.1}}}");
    let version_member =
        artifact::member_name("megatron_checkpoint_version.json", version_json.as_bytes());
    let labels_text = c.label_names.map(|l| l.join("\n"));
    let labels_member = labels_text
        .as_ref()
        .map(|t| artifact::member_name("label_ids.csv", t.as_bytes()));
    let refs = ArtifactRefs {
        encoder_config: format!("{}{enc_member}", artifact::REF_PREFIX),
        vocab: vocab_ref,
        checkpoint_version: format!("{}{version_member}", artifact::REF_PREFIX),
        labels: labels_member
            .as_ref()
            .map(|m| format!("{}{m}", artifact::REF_PREFIX)),
    };
    let cfg = model_config::build(
        &ConfigInput {
            head: c.head,
            pretrained_model_name: c.pretrained_model_name,
            do_lower_case: c.do_lower_case,
            labels: c.label_names,
            dataset: &c.dataset,
        },
        &refs,
    );
    let yaml = serde_yaml::to_string(&cfg)
        .map_err(|e| invalid(format!("serializing model_config.yaml: {e}")))?;
    let mut small: Vec<(String, Vec<u8>)> = vec![
        (enc_member, enc_json.into_bytes()),
        (vocab_member, vocab),
        (version_member, version_json.into_bytes()),
    ];
    if let (Some(m), Some(t)) = (labels_member, labels_text) {
        small.push((m, t.into_bytes()));
    }
    small.sort();

    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".nemo-write-")
        .tempdir_in(dir)
        .map_err(|e| CheckpointError::io(dir, e))?;
    let tmp_path = scratch.path().join("archive.nemo");
    let io = |e: std::io::Error| CheckpointError::io(&tmp_path, e);
    let file = File::create(&tmp_path).map_err(io)?;
    let gz = GzEncoder::new(
        BufWriter::with_capacity(1 << 20, file),
        Compression::new(c.compression_level.min(9)),
    );
    let mut tar = tar::Builder::new(gz);
    let mut members = Vec::new();
    append_dir(&mut tar, ".").map_err(io)?;
    members.push(".".to_string());
    for (name, bytes) in &small {
        let name = format!("./{name}");
        append_bytes(&mut tar, &name, bytes).map_err(io)?;
        members.push(name);
    }
    append_bytes(&mut tar, "./model_config.yaml", yaml.as_bytes()).map_err(io)?;
    members.push("./model_config.yaml".into());
    let weights_file = scratch.path().join("model_weights.ckpt");
    for (rank, shard) in shards.into_iter().enumerate() {
        let name = if tp == 1 {
            "./model_weights.ckpt".to_string()
        } else {
            let d = format!("./mp_rank_{rank:02}");
            append_dir(&mut tar, &d).map_err(io)?;
            members.push(d.clone());
            format!("{d}/model_weights.ckpt")
        };
        torch_pickle::save(&weights_file, &weights_value(shard)?)?;
        append_file(&mut tar, &name, &weights_file).map_err(io)?;
        std::fs::remove_file(&weights_file).map_err(|e| CheckpointError::io(&weights_file, e))?;
        members.push(name);
    }
    let gz = tar.into_inner().map_err(io)?;
    let mut out = gz.finish().map_err(io)?;
    out.flush().map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let bytes = file.metadata().map_err(io)?.len();
    drop(file);
    std::fs::rename(&tmp_path, path).map_err(|e| CheckpointError::io(path, e))?;
    Ok(NemoWritten {
        path: path.to_path_buf(),
        members,
        dropped,
        bytes,
    })
}

/// Shards in rank order with NeMo keys (module order), vocabulary padded
/// for the archive's tensor-parallel size; returns the dropped names too.
fn prepare_shards(path: &Path, c: &NemoContents<'_>) -> Result<(Vec<StateDict>, Vec<String>)> {
    let tp = c.tp_size;
    let padded = c.config.padded_vocab_for(tp);
    let invalid = |m: String| CheckpointError::invalid(path, m);
    let model_err = |e: crate::model::ModelError| invalid(e.to_string());
    let word = "embeddings.word_embeddings.weight";
    let full_rows = |sd: &[StateDict]| -> Result<i64> {
        let mut rows = 0;
        for (r, s) in sd.iter().enumerate() {
            rows += s
                .get(word)
                .ok_or_else(|| invalid(format!("the weights of rank {r} have no {word}")))?
                .size()[0];
        }
        Ok(rows)
    };
    let shards: Vec<StateDict> = match c.weights {
        NemoWeights::Shards(s) if s.len() as i64 == tp && full_rows(s)? == padded => {
            s.iter().map(shallow).collect()
        }
        weights => {
            let mut full = match weights {
                NemoWeights::Full(f) => shallow(f),
                NemoWeights::Shards(s) => merge_shards(s).map_err(model_err)?,
            };
            let rows = full_rows(std::slice::from_ref(&full))?;
            if rows < c.config.vocab_size {
                return Err(invalid(format!(
                    "{word} has {rows} rows, fewer than the vocabulary ({})",
                    c.config.vocab_size
                )));
            }
            let t = reshard_repad(&full[word], padded)
                .map_err(|e| CheckpointError::torch(format!("padding {word}"), e))?;
            full.insert(word.to_string(), t);
            (0..tp)
                .map(|r| shard_state_dict(&full, tp, r).map_err(model_err))
                .collect::<Result<_>>()?
        }
    };
    check_shards(path, c, &shards)?;
    let mut dropped = Vec::new();
    let mut out = Vec::with_capacity(shards.len());
    for shard in shards {
        let mut renamed = StateDict::new();
        for (name, t) in shard {
            if name.starts_with("pooler.") && !c.include_pooler
                || name.starts_with("lm_head.")
                || name.starts_with("binary_head.")
            {
                if !dropped.contains(&name) {
                    dropped.push(name);
                }
                continue;
            }
            if keys::nemo_key(&name).is_none() {
                return Err(invalid(format!(
                    "{name} has no place in a NeMo Megatron-BERT task model"
                )));
            }
            renamed.insert(name, t);
        }
        out.push(renamed);
    }
    Ok((out, dropped))
}

/// Every rank must hold the whole encoder (and, when it has head weights,
/// the whole head) with the shapes of the config at the archive's size.
fn check_shards(path: &Path, c: &NemoContents<'_>, shards: &[StateDict]) -> Result<()> {
    let encoder = shapes::encoder_shapes(c.config, c.tp_size);
    let head = shapes::head_shapes(c.config.hidden_size, c.head);
    for (rank, shard) in shards.iter().enumerate() {
        let has_head = shard.keys().any(|k| k.starts_with(keys::HEAD_PREFIX));
        let wanted = encoder.iter().chain(head.iter().filter(|_| has_head));
        for (name, want) in wanted {
            let problem = match shard.get(name) {
                None => "is missing".to_string(),
                Some(t) if &t.size() != want => {
                    format!("has shape {:?}, expected {want:?}", t.size())
                }
                Some(_) => continue,
            };
            return Err(CheckpointError::invalid(
                path,
                format!(
                    "rank {rank} of {}: {name} {problem} for the given config and head",
                    c.tp_size
                ),
            ));
        }
    }
    Ok(())
}

fn shallow(sd: &StateDict) -> StateDict {
    sd.iter()
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect()
}

/// A shard as the ordered dict NeMo's `torch.save(model.state_dict())` writes.
fn weights_value(shard: StateDict) -> Result<Value> {
    let mut names: Vec<String> = shard.keys().cloned().collect();
    names.sort_by_key(|n| shapes::module_order(n));
    let mut shard = shard;
    let mut d = Dict::new(true);
    for name in names {
        let key = keys::nemo_key(&name).expect("checked by prepare_shards");
        let t = shard.remove(&name).expect("listed above");
        d.insert(key, Value::Tensor(t));
    }
    Ok(Value::Dict(d))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Appends a member named exactly `name` (`./x` as Python's `tar.add(dir,
/// arcname=".")` writes it; the tar crate would drop the `./`). Names of 100
/// bytes or more go through the crate's GNU long-name path.
fn append<W: Write, R: std::io::Read>(
    tar: &mut tar::Builder<W>,
    mut h: tar::Header,
    name: &str,
    data: R,
) -> std::io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.len() < 100 {
        let raw = &mut h.as_old_mut().name;
        raw.fill(0);
        raw[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        tar.append(&h, data)
    } else {
        tar.append_data(&mut h, name, data)
    }
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> std::io::Result<()> {
    append(
        tar,
        header(tar::EntryType::Directory, 0o755, 0),
        name,
        std::io::empty(),
    )
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    append(tar, h, name, bytes)
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    file: &Path,
) -> std::io::Result<()> {
    let f = File::open(file)?;
    let size = f.metadata()?.len();
    let h = header(tar::EntryType::Regular, 0o644, size);
    append(tar, h, name, std::io::BufReader::with_capacity(1 << 20, f))
}
