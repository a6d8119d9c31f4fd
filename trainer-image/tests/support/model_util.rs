//! Helpers for the model tests: the Hugging Face reference run
//! (`tests/python/model_reference.py`), safetensors loading and comparisons.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use megatron_trainer::model::{BertConfig, StateDict};
use tch::Tensor;

/// A reference output directory, removed on drop.
pub struct RefDir(PathBuf);

impl std::ops::Deref for RefDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for RefDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the reference script for `arch` ("megatron" or "bert") into a fresh
/// directory (unique per call, so concurrent tests don't share one).
pub fn hf_reference(python: &Path, arch: &str) -> RefDir {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "megatron-model-ref-{arch}-{}-{n}",
        std::process::id()
    ));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/model_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .args(["--arch", arch, "--out"])
        .arg(&dir)
        .output()
        .expect("running the Python reference");
    let dir = RefDir(dir);
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Reads a safetensors file into a state dict.
pub fn read(path: impl AsRef<Path>) -> StateDict {
    let path = path.as_ref();
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// The reference's config.
pub fn config(dir: &Path) -> BertConfig {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// Max |a - b| over positions where `mask` (broadcastable) is nonzero.
pub fn max_abs_diff_masked(a: &Tensor, b: &Tensor, mask: Option<&Tensor>) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    let d = (a - b).abs();
    let d = match mask {
        Some(m) => d * m.to_kind(tch::Kind::Float),
        None => d,
    };
    d.max().double_value(&[])
}

/// Gradient mismatch, to be compared with a relative tolerance such as 1e-5:
/// max |a - b| / max |b| for ordinary gradients. Gradients that are
/// analytically zero (max |b| < 1e-4: the bias of per-position QA logits and
/// of the LayerNorm right before them, since softmax rows sum to one) hold
/// only rounding noise of about 1e-8, so they are measured as
/// max |a - b| / 1e-2, i.e. a tolerance of 1e-5 means an absolute 1e-7.
pub fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    let scale = b.abs().max().double_value(&[]);
    let scale = if scale < 1e-4 { 1e-2 } else { scale };
    (a - b).abs().max().double_value(&[]) / scale
}

/// Entries of `sd` whose names start with `prefix.`, with the prefix removed.
pub fn strip_prefix(sd: &StateDict, prefix: &str) -> StateDict {
    let p = format!("{prefix}.");
    sd.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(&p)
                .map(|k| (k.to_string(), v.shallow_clone()))
        })
        .collect()
}
