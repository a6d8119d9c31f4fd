//! Starting weights: `train --checkpoint` starts from a real Megatron-LM
//! checkpoint: one written at tensor-parallel size 2 (iteration directory
//! found through `latest_checkpointed_iteration.txt`) is resharded to this
//! run's TP=1, and with learning rate 0 the final .nemo's encoder equals the
//! checkpoint's weights exactly. Published names (`pretrained:
//! megatron-bert-345m-uncased`) are downloaded by the real download code from
//! a local server in NGC's shape (tests/support/cli_util/ngc_server.rs) serving a
//! generated model with the 345M model's key names at tiny shapes: from an
//! HTTP mirror, an S3 mirror and the shared cache; resumed, verified, and
//! never replaced by random weights.

use crate::support::cli_util;
use crate::support::storage_util;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cli_util::ngc_server::NgcServer;
use cli_util::{Task, run, spec_yaml, temp_dir, text, trainer, write};
use crds::PretrainedModel;
use crds::published::Published;
use megatron_trainer::checkpoint::megatron::{SaveOptions, save};
use megatron_trainer::checkpoint::nemo::read_nemo;
use megatron_trainer::model::{BertConfig, BertTaskModel, HeadConfig, StateDict};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::pretrained::{
    ATTEMPTS, MANIFEST, PretrainedError, Remote, Request, Resolved, Sources, file_digest, resolve,
};
use megatron_trainer::storage::{Store, TransferOptions};
use megatron_trainer::tokenizer::BuiltinVocab;

fn tiny_config() -> BertConfig {
    let mut c = BertConfig::megatron_345m(30522);
    c.hidden_size = 32;
    c.num_attention_heads = 4;
    c.num_layers = 2;
    c.ffn_hidden_size = 128;
    c.max_position_embeddings = 64;
    c.hidden_dropout = 0.0;
    c.attention_dropout = 0.0;
    c.padded_vocab_size = c.padded_vocab_for(1);
    c
}

/// The encoder of a freshly initialised tiny model (seeded), without its head.
fn tiny_encoder(config: &BertConfig, seed: i64) -> StateDict {
    tch::manual_seed(seed);
    let model = BertTaskModel::new(
        config,
        &HeadConfig::sequence_classification(5),
        &TpGroup::single(),
        tch::Device::Cpu,
    )
    .unwrap();
    model
        .state_dict()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("classifier."))
        .collect()
}

#[test]
fn megatron_checkpoint_is_loaded_and_resharded() {
    let dir = temp_dir("pretrained");
    let config = tiny_config();
    let encoder = tiny_encoder(&config, 77);
    let root = dir.join("megatron");
    save(
        &root,
        &config,
        &encoder,
        &SaveOptions {
            tp: 2,
            iteration: Some(100),
        },
    )
    .unwrap();

    let spec = spec_yaml(Task::TextClassification, 1, 1)
        .replace("learningRate: 0.001", "learningRate: 0.0")
        .replace(
            "validationIntervalSteps: 1",
            "validationIntervalSteps: 1\n  gradientClipNorm: 0.0",
        );
    let spec_file = write(&dir, "spec.yaml", &spec);
    let out_dir = dir.join("out");
    let out = run(trainer()
        .args(["train", "--config"])
        .arg(&spec_file)
        .arg("--checkpoint")
        .arg(&root)
        .arg("--output-dir")
        .arg(&out_dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pretrained Megatron-LM checkpoint loaded"),
        "{}",
        text(&out)
    );
    assert!(!stderr.contains("RANDOMLY INITIALISED"), "{}", text(&out));

    let nemo = read_nemo(&out_dir.join("artifacts/model.nemo"), 1, 0).unwrap();
    let mut compared = 0;
    for (name, saved) in &encoder {
        let Some(got) = nemo.state_dict.get(name) else {
            continue;
        };
        assert_eq!(got.size(), saved.size(), "{name}");
        assert!(got.equal(saved), "{name} differs from the checkpoint");
        compared += 1;
    }
    assert!(
        compared >= encoder.len() - 2,
        "only {compared} of {} tensors compared",
        encoder.len()
    );
}

/// A Hugging Face `MegatronBertModel` saved with `save_pretrained`
/// (safetensors, by tests/python/ckpt_hf.py) is the starting encoder.
#[test]
fn hugging_face_checkpoint_is_loaded() {
    let dir = temp_dir("pretrained-hf");
    let python = std::env::var("MEGATRON_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ckpt_hf.py");
    let out = run(std::process::Command::new(&python)
        .arg(&script)
        .arg("make")
        .arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let hf = dir.join("megatron_bert");
    let reference = tch::Tensor::read_safetensors(hf.join("reference.safetensors")).unwrap();
    // The checkpoint's 100-token vocabulary: special tokens, then words.
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    vocab.extend((vocab.len()..100).map(|i| format!("w{i}")));
    let vocab_file = write(&dir, "vocab.txt", &(vocab.join("\n") + "\n"));

    let spec = spec_yaml(Task::TextClassification, 1, 1)
        .replace("maxSeqLength: 48", "maxSeqLength: 32")
        .replace(
            "config: {hiddenSize: 32, numAttentionHeads: 4, numLayers: 2, maxPositionEmbeddings: 64,",
            &format!(
                "checkpoint: {{location: {}}}\n  config: {{hiddenSize: 16, numAttentionHeads: 4, numLayers: 2, maxPositionEmbeddings: 32,",
                hf.display()
            ),
        )
        .replace("learningRate: 0.001", "learningRate: 0.0")
        + &format!("tokenizer: {{vocabFile: {}, doLowerCase: true}}\n", vocab_file.display());
    let spec_file = write(&dir, "spec.yaml", &spec);
    let out_dir = dir.join("out");
    let out = run(trainer()
        .args(["train", "--config"])
        .arg(&spec_file)
        .arg("--output-dir")
        .arg(&out_dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("RANDOMLY INITIALISED"),
        "{}",
        text(&out)
    );

    let nemo = read_nemo(&out_dir.join("artifacts/model.nemo"), 1, 0).unwrap();
    let mut compared = 0;
    for (name, want) in &reference {
        let Some(got) = nemo.state_dict.get(name) else {
            continue;
        };
        // The word embedding is padded to a multiple of 128 rows.
        let got = if got.size()[0] != want.size()[0] {
            got.narrow(0, 0, want.size()[0])
        } else {
            got.shallow_clone()
        };
        assert!(
            got.allclose(want, 0.0, 0.0, false),
            "{name} differs from the checkpoint"
        );
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} tensors compared");
}

const UNCASED: PretrainedModel = PretrainedModel::MegatronBert345mUncased;

fn published() -> &'static Published {
    UNCASED.published_files().unwrap()
}

/// A directory in NGC's layout holding megatron-bert-345m-uncased's weights file: a tiny
/// model (2 layers, hidden 32) saved with the Megatron-LM key names and args, and its
/// `.sha256` sidecar. Returns the root and the weights' sha256.
fn ngc_tree(dir: &Path) -> (PathBuf, String) {
    ngc_tree_for(dir, UNCASED)
}

/// [`ngc_tree`] for `name`; a model with its own vocabulary (BioMegatron) gets the uncased
/// BERT vocabulary as that file, with its sidecar.
fn ngc_tree_for(dir: &Path, name: PretrainedModel) -> (PathBuf, String) {
    let published = name.published_files().unwrap();
    let config = tiny_config();
    let encoder = tiny_encoder(&config, 5);
    let saved = dir.join("saved");
    save(
        &saved,
        &config,
        &encoder,
        &SaveOptions {
            tp: 1,
            iteration: None,
        },
    )
    .unwrap();
    let root = dir.join("ngc");
    let weights = root.join(published.weights().path);
    std::fs::create_dir_all(weights.parent().unwrap()).unwrap();
    std::fs::copy(
        saved.join("release/mp_rank_00/model_optim_rng.pt"),
        &weights,
    )
    .unwrap();
    let sha = with_sidecar(&weights);
    if let Some(vocab) = published.vocabulary() {
        let path = root.join(vocab.path);
        std::fs::write(&path, BuiltinVocab::BertUncased.text()).unwrap();
        with_sidecar(&path);
    }
    (root, sha)
}

/// Writes `<file>.sha256` (sha256sum's format) and returns the digest.
fn with_sidecar(file: &Path) -> String {
    let sha = file_digest(file).unwrap().sha256;
    let name = file.file_name().unwrap().to_string_lossy();
    std::fs::write(
        format!("{}.sha256", file.display()),
        format!("{sha}  {name}\n"),
    )
    .unwrap();
    sha
}

fn request(local_root: PathBuf, leader: bool) -> Request<'static> {
    Request {
        published: published(),
        local_root,
        leader,
        wait: Duration::from_secs(30),
    }
}

fn http(url: &str) -> Remote {
    Remote::http("MEGATRON_MODEL_MIRROR", url).unwrap()
}

fn resolve_now(sources: &Sources, request: &Request<'_>) -> Result<Resolved, PretrainedError> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut statuses = Vec::new();
    let result = rt.block_on(resolve(sources, request, &mut |s| statuses.push(s.clone())));
    // A download ends with a report of every byte.
    if let Some(last) = statuses.last() {
        let d = last.download.as_ref().expect("with bytes");
        assert_eq!(d.bytes, d.total_bytes.unwrap(), "{last:?}");
    }
    result
}

/// From an HTTP mirror into the shared cache; a second job (another pod's
/// cache dir) reads the shared cache and sends no request to the server.
#[test]
fn http_mirror_then_the_shared_cache() {
    let dir = temp_dir("published-http");
    let (root, sha) = ngc_tree(&dir);
    let server = NgcServer::start(root);
    let shared = Store::local(dir.join("bucket")).unwrap();
    let sources = Sources {
        shared_cache: Some(shared.clone()),
        mirror: Some(http(&server.url(""))),
        ngc: None,
    };
    let first = resolve_now(&sources, &request(dir.join("pod-a"), true)).unwrap();
    assert!(
        first.source.starts_with(&server.url("")),
        "{}",
        first.source
    );
    assert!(first.status(published()).sha256.is_some());
    assert_eq!(first.manifest.files[0].sha256, sha);
    assert_eq!(server.count("model_optim_rng.pt"), 1);
    let entry = dir.join("bucket").join(published().cache_dir());
    assert!(entry.join(MANIFEST).is_file());
    assert_eq!(
        file_digest(&entry.join(published().weights().path))
            .unwrap()
            .sha256,
        sha
    );

    let before = server.seen().len();
    let second = resolve_now(&sources, &request(dir.join("pod-b"), false)).unwrap();
    assert_eq!(server.seen().len(), before, "{:?}", server.seen());
    assert!(second.source.contains("_cache/models"), "{}", second.source);
    assert_eq!(second.manifest, first.manifest);
    // The same pod again: its own copy, no request anywhere.
    let third = resolve_now(&Sources::default(), &request(dir.join("pod-b"), true)).unwrap();
    assert_eq!(third.source, second.source);
    assert_eq!(server.seen().len(), before);
}

/// A connection cut in the middle of the weights is resumed with a Range request.
#[test]
fn truncated_download_is_resumed() {
    let dir = temp_dir("published-resume");
    let (root, sha) = ngc_tree(&dir);
    let server = NgcServer::start(root);
    server.truncate_once("model_optim_rng.pt");
    let sources = Sources {
        mirror: Some(http(&server.url(""))),
        ..Sources::default()
    };
    let resolved = resolve_now(&sources, &request(dir.join("pod"), true)).unwrap();
    assert_eq!(resolved.manifest.files[0].sha256, sha);
    let gets: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("model_optim_rng.pt"))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    let range = gets[1]
        .range
        .as_deref()
        .expect("the second request resumes");
    let offset: u64 = range["bytes=".len()..range.len() - 1].parse().unwrap();
    assert!(offset > 0, "{range}");
}

/// Bytes that do not match the published sha256 are downloaded again, then
/// refused: a clear error, nothing in the shared cache, nothing local.
#[test]
fn corrupt_download_is_retried_then_refused() {
    let dir = temp_dir("published-corrupt");
    let (root, sha) = ngc_tree(&dir);
    let server = NgcServer::start(root);
    server.corrupt("model_optim_rng.pt");
    let sources = Sources {
        shared_cache: Some(Store::local(dir.join("bucket")).unwrap()),
        mirror: Some(http(&server.url(""))),
        ngc: None,
    };
    let err = resolve_now(&sources, &request(dir.join("pod"), true)).unwrap_err();
    assert!(matches!(err, PretrainedError::Corrupt { .. }), "{err}");
    assert!(err.is_invalid_input());
    let message = err.to_string();
    assert!(message.contains(&format!("expected {sha}")), "{message}");
    assert!(message.contains("nothing was cached"), "{message}");
    assert_eq!(server.count("model_optim_rng.pt"), ATTEMPTS);
    assert!(
        !dir.join("bucket")
            .join(published().cache_dir())
            .join(MANIFEST)
            .exists()
    );
    let local = dir
        .join("pod")
        .join(UNCASED.as_str())
        .join(published().version);
    assert!(!local.join(published().weights().path).exists());
    assert!(!local.join(MANIFEST).exists());
}

/// Two jobs starting at once both download (there is no cross-job lock) and
/// the shared cache stays consistent: one complete entry with the right digest.
#[test]
fn two_jobs_at_once_leave_one_consistent_cache_entry() {
    let dir = temp_dir("published-race");
    let (root, sha) = ngc_tree(&dir);
    let server = NgcServer::start(root);
    let url = server.url("");
    let bucket = dir.join("bucket");
    let jobs: Vec<_> = ["job-a", "job-b"]
        .into_iter()
        .map(|name| {
            let (url, bucket, local) = (url.clone(), bucket.clone(), dir.join(name));
            std::thread::spawn(move || {
                let sources = Sources {
                    shared_cache: Some(Store::local(bucket).unwrap()),
                    mirror: Some(http(&url)),
                    ngc: None,
                };
                resolve_now(&sources, &request(local, true)).unwrap()
            })
        })
        .collect();
    for job in jobs {
        assert_eq!(job.join().unwrap().manifest.files[0].sha256, sha);
    }
    let entry = bucket.join(published().cache_dir());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join(MANIFEST)).unwrap()).unwrap();
    assert_eq!(manifest["files"][0]["sha256"], sha.as_str());
    assert_eq!(
        file_digest(&entry.join(published().weights().path))
            .unwrap()
            .sha256,
        sha
    );
    assert!(server.count("model_optim_rng.pt") >= 1);
}

/// An S3 mirror (the e2e S3 server): the shared cache is filled, and a second
/// job reads it without touching NGC (a local server standing for it).
#[test]
fn s3_mirror_then_the_shared_cache() {
    let dir = temp_dir("published-s3");
    let (root, sha) = ngc_tree(&dir);
    let ngc = NgcServer::start(root.clone());
    let bucket = "megatron-cli-tests";
    storage_util::ensure_bucket(bucket);
    let prefix = storage_util::unique_prefix("published");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mirror = Store::s3(storage_util::s3_config(&format!("{prefix}/mirror"), &[])).unwrap();
    let path = published().weights().path;
    rt.block_on(mirror.upload_file(&root.join(path), path, &TransferOptions::default()))
        .unwrap();
    let shared = Store::s3(storage_util::s3_config(
        &format!("{prefix}/job-bucket"),
        &[],
    ))
    .unwrap();
    let sources = Sources {
        shared_cache: Some(shared),
        mirror: Some(Remote::Store { store: mirror }),
        ngc: Some(http(&ngc.url(""))),
    };
    let first = resolve_now(&sources, &request(dir.join("pod-a"), true)).unwrap();
    assert!(first.source.starts_with("s3://"), "{}", first.source);
    assert!(first.source.contains("/mirror/"), "{}", first.source);
    assert_eq!(first.manifest.files[0].sha256, sha);
    let second = resolve_now(&sources, &request(dir.join("pod-b"), false)).unwrap();
    assert!(second.source.contains("_cache/models"), "{}", second.source);
    assert_eq!(ngc.seen(), vec![], "NGC was contacted");
}

fn published_spec(dir: &Path) -> PathBuf {
    published_spec_for(dir, UNCASED)
}

fn published_spec_for(dir: &Path, name: PretrainedModel) -> PathBuf {
    let spec = spec_yaml(Task::TextClassification, 1, 1)
        .replace(
            "pretrained: megatron-bert-uncased\n  config: {hiddenSize: 32, numAttentionHeads: 4, numLayers: 2, maxPositionEmbeddings: 64, hiddenDropout: 0.0, attentionDropout: 0.0}",
            &format!("pretrained: {name}\n  config: {{hiddenDropout: 0.0, attentionDropout: 0.0}}"),
        )
        .replace("learningRate: 0.001", "learningRate: 0.0");
    assert!(spec.contains(name.as_str()), "{spec}");
    write(dir, "spec.yaml", &spec)
}

/// BioMegatron's files include its own vocabulary: the tokenizer and the final .nemo use the
/// downloaded one, verified like the weights.
#[test]
fn biomegatron_brings_its_own_vocabulary() {
    let name = PretrainedModel::BioMegatronBert345mUncased;
    let dir = temp_dir("published-bio");
    let (root, _) = ngc_tree_for(&dir, name);
    let server = NgcServer::start(root);
    let spec = published_spec_for(&dir, name);
    let out = run(trainer()
        .args(["train", "--config"])
        .arg(&spec)
        .arg("--output-dir")
        .arg(dir.join("out"))
        .env("MEGATRON_MODEL_MIRROR", server.url(""))
        .env("MEGATRON_MODEL_NGC_URL", ""));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(server.count("MegatronBERT.pt"), 1);
    assert_eq!(server.count("vocab.txt"), 1);
    assert_eq!(server.count("vocab.txt.sha256"), 1);
    let nemo = read_nemo(&dir.join("out/artifacts/model.nemo"), 1, 0).unwrap();
    let vocab = std::fs::read_to_string(nemo.vocab_file.unwrap()).unwrap();
    assert_eq!(vocab, BuiltinVocab::BertUncased.text());
    assert_eq!(nemo.pretrained_model_name.as_deref(), Some(name.as_str()));
}

/// `train` with a published name fine-tunes from the mirror's weights (with
/// learning rate 0 the final .nemo's encoder is exactly the published one);
/// a second run in the same cache directory sends no request.
#[test]
fn train_fine_tunes_a_published_name_from_the_mirror() {
    let dir = temp_dir("published-train");
    let (root, _) = ngc_tree(&dir);
    let server = NgcServer::start(root.clone());
    let spec = published_spec(&dir);
    let cache = dir.join("cache");
    let train = |out: &str| {
        run(trainer()
            .args(["train", "--config"])
            .arg(&spec)
            .arg("--output-dir")
            .arg(dir.join(out))
            .arg("--cache-dir")
            .arg(&cache)
            .env("MEGATRON_MODEL_MIRROR", server.url(""))
            .env("MEGATRON_MODEL_NGC_URL", ""))
    };
    let out = train("out-1");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pretrained weights ready"),
        "{}",
        text(&out)
    );
    assert!(!stderr.contains("RANDOMLY INITIALISED"), "{}", text(&out));
    assert_eq!(server.count("model_optim_rng.pt"), 1);

    let (_, published_encoder, _) =
        megatron_trainer::checkpoint::megatron::load(&root.join(published().weights().path), 1, 0)
            .unwrap();
    let nemo = read_nemo(&dir.join("out-1/artifacts/model.nemo"), 1, 0).unwrap();
    let word = "embeddings.word_embeddings.weight";
    assert!(nemo.state_dict[word].equal(&published_encoder[word]));

    let before = server.seen().len();
    let out = train("out-2");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(server.seen().len(), before, "{:?}", server.seen());
}

/// No source has the weights: exit code 2 before any rank builds a model,
/// naming every place tried and the fix; never a randomly initialised encoder.
#[test]
fn unreachable_weights_fail_with_exit_2_before_any_model() {
    let dir = temp_dir("published-none");
    let spec = published_spec(&dir);
    let out = run(trainer()
        .args(["train", "--config"])
        .arg(&spec)
        .arg("--output-dir")
        .arg(dir.join("out"))
        // A port nothing listens on.
        .env("MEGATRON_MODEL_MIRROR", "http://127.0.0.1:9/mirror/")
        .env("MEGATRON_MODEL_NGC_URL", ""));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        "spec.model.pretrained megatron-bert-345m-uncased: the weights were found nowhere",
        "http://127.0.0.1:9/mirror/nvidia/megatron_bert_345m/versions/v0.0/files/release/mp_rank_00/model_optim_rng.pt",
        "NGC: disabled",
        "Fix: set spec.model.checkpoint",
    ] {
        assert!(stderr.contains(want), "missing {want:?}:\n{}", text(&out));
    }
    for never in ["rank ready", "starting model", "RANDOMLY INITIALISED"] {
        assert!(
            !stderr.contains(never),
            "{never:?} appeared:\n{}",
            text(&out)
        );
    }
}
