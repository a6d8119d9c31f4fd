//! Artifact files inside a .nemo: NeMo >= 1.0 stores each registered file at
//! the archive root as `<32 hex>_<basename>` and refers to it from
//! `model_config.yaml` as `nemo:<32 hex>_<basename>`.

use sha2::{Digest, Sha256};

/// The `nemo:` prefix of artifact references in `model_config.yaml`.
pub const REF_PREFIX: &str = "nemo:";

/// The archive member name of an artifact: NeMo uses a random `uuid4().hex`;
/// we use the first 32 hex digits of the content's SHA-256 so that the same
/// model always produces the same archive.
pub fn member_name(basename: &str, content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    format!("{}_{basename}", &hex::encode(digest)[..32])
}

/// The member an artifact reference points to: `nemo:abc_vocab.txt` ->
/// `abc_vocab.txt`; a plain path is reduced to its file name (how NeMo
/// restores archives whose config still holds the original path).
pub fn member_of_ref(reference: &str) -> &str {
    let name = reference.strip_prefix(REF_PREFIX).unwrap_or(reference);
    name.rsplit('/').next().unwrap_or(name)
}

/// An archive member name without its leading `./` (NeMo's `tar.add(dir,
/// arcname=".")` writes `./model_config.yaml`).
pub fn normalize(name: &str) -> &str {
    let mut n = name;
    while let Some(rest) = n.strip_prefix("./") {
        n = rest;
    }
    n.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_refs() {
        let m = member_name("vocab.txt", b"[PAD]\n");
        assert_eq!(m.len(), 32 + 1 + "vocab.txt".len());
        assert!(m.ends_with("_vocab.txt"));
        assert_eq!(member_name("vocab.txt", b"[PAD]\n"), m);
        assert_eq!(member_of_ref(&format!("nemo:{m}")), m);
        assert_eq!(member_of_ref("/tmp/x/label_ids.csv"), "label_ids.csv");
        assert_eq!(
            normalize("./mp_rank_00/model_weights.ckpt"),
            "mp_rank_00/model_weights.ckpt"
        );
        assert_eq!(normalize("./mp_rank_01/"), "mp_rank_01");
        assert_eq!(normalize("."), ".");
    }
}
