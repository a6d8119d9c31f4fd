//! Where the published Megatron-BERT weights live: one table, the same for the trainer (which
//! downloads them) and the operator (which names the sources in messages).
//!
//! Source: NVIDIA NeMo 1.x, `nemo/collections/nlp/modules/common/megatron/megatron_utils.py`,
//! `MEGATRON_CONFIG_MAP`: each name's `checkpoint` URL (one `torch.save` file on NGC, not an
//! archive), its `vocab` URL and `do_lower_case`. The two megatron-bert-345m vocabularies are
//! Hugging Face's bert-large-(un)cased files, which the trainer carries built in; BioMegatron's
//! are their own files on NGC. NeMo's source publishes no sizes or digests, so `sha256` is
//! `None` here: a mirror may publish `<file>.sha256` next to each file, and the digest computed
//! on the first download is recorded in the shared cache and checked on every later read.

use crate::model::PretrainedModel;

/// Base URL of NGC's model files API; every [`PublishedFile::path`] is relative to it.
pub const NGC_BASE_URL: &str = "https://api.ngc.nvidia.com/v2/models/";

/// What a file of a published model is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    /// The encoder's weights: a Megatron-LM `torch.save` file (`model_optim_rng.pt` layout).
    Weights,
    /// The WordPiece vocabulary, one token per line.
    Vocabulary,
}

/// One file of a published model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishedFile {
    /// What the file holds.
    pub role: FileRole,
    /// Path relative to [`NGC_BASE_URL`]; a mirror keeps the same relative path.
    pub path: &'static str,
    /// Hex sha256 of the published file, when known.
    pub sha256: Option<&'static str>,
}

/// The downloadable files of a published name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The name, as in `spec.model.pretrained`.
    pub name: PretrainedModel,
    /// NGC's version of the model (names the shared cache's directory).
    pub version: &'static str,
    /// Weights first, then the vocabulary when it is not the built-in BERT one.
    pub files: &'static [PublishedFile],
}

const fn weights(path: &'static str) -> PublishedFile {
    PublishedFile {
        role: FileRole::Weights,
        path,
        sha256: None,
    }
}

const fn vocabulary(path: &'static str) -> PublishedFile {
    PublishedFile {
        role: FileRole::Vocabulary,
        path,
        sha256: None,
    }
}

const TABLE: [Published; 4] = [
    Published {
        name: PretrainedModel::MegatronBert345mUncased,
        version: "v0.0",
        files: &[weights(
            "nvidia/megatron_bert_345m/versions/v0.0/files/release/mp_rank_00/model_optim_rng.pt",
        )],
    },
    Published {
        name: PretrainedModel::MegatronBert345mCased,
        version: "v0.1_cased",
        files: &[weights(
            "nvidia/megatron_bert_345m/versions/v0.1_cased/files/release/mp_rank_00/model_optim_rng.pt",
        )],
    },
    Published {
        name: PretrainedModel::BioMegatronBert345mUncased,
        version: "0",
        files: &[
            weights("nvidia/biomegatron345muncased/versions/0/files/MegatronBERT.pt"),
            vocabulary("nvidia/biomegatron345muncased/versions/0/files/vocab.txt"),
        ],
    },
    Published {
        name: PretrainedModel::BioMegatronBert345mCased,
        version: "0",
        files: &[
            weights("nvidia/biomegatron345mcased/versions/0/files/MegatronBERT.pt"),
            vocabulary("nvidia/biomegatron345mcased/versions/0/files/vocab.txt"),
        ],
    },
];

impl PretrainedModel {
    /// The published files of this name (None for the generic names, which have no weights).
    pub fn published_files(self) -> Option<&'static Published> {
        TABLE.iter().find(|p| p.name == self)
    }
}

impl Published {
    /// The weights file.
    pub fn weights(&self) -> &'static PublishedFile {
        self.files
            .iter()
            .find(|f| f.role == FileRole::Weights)
            .unwrap_or(&self.files[0])
    }

    /// The vocabulary file, when the model has its own.
    pub fn vocabulary(&self) -> Option<&'static PublishedFile> {
        self.files.iter().find(|f| f.role == FileRole::Vocabulary)
    }

    /// Where the shared cache keeps this model, relative to the job bucket's prefix.
    pub fn cache_dir(&self) -> String {
        format!("{CACHE_PREFIX}/{}/{}", self.name.as_str(), self.version)
    }
}

/// The shared model cache's prefix inside `spec.storage`'s bucket and prefix. A namespace name
/// cannot contain `_`, so it never collides with a job's `<namespace>/<name>/` outputs.
pub const CACHE_PREFIX: &str = "_cache/models";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_published_345m_name_has_weights_and_generic_names_have_none() {
        for name in PretrainedModel::ALL {
            let files = name.published_files();
            assert_eq!(files.is_some(), !name.is_generic(), "{name}");
            if let Some(p) = files {
                assert!(p.weights().path.ends_with(".pt"), "{name}");
                assert!(
                    p.weights()
                        .path
                        .contains(&format!("/versions/{}/", p.version))
                );
                assert!(p.cache_dir().starts_with("_cache/models/"));
            }
        }
        // BioMegatron brings its own vocabulary; megatron-bert-345m uses the built-in BERT one.
        let bio = PretrainedModel::BioMegatronBert345mCased.published_files();
        assert!(bio.and_then(|p| p.vocabulary()).is_some());
        let bert = PretrainedModel::MegatronBert345mUncased.published_files();
        assert!(bert.and_then(|p| p.vocabulary()).is_none());
    }
}
