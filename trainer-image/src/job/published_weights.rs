//! A published name's weights for this job: the sources from the environment the operator
//! sets (`MEGATRON_MODEL_MIRROR`, `MEGATRON_MODEL_NGC_URL`) and the spec's bucket, resolved
//! before any rank builds a model ([`crate::pretrained`] has the order and the checks).

use std::path::Path;
use std::time::Duration;

use crds::MegatronFineTuneSpec;
use crds::published::Published;

use super::error::{JobError, JobResult, STORAGE_FIX};
use super::s3::s3_store;
use crate::model::BertConfig;
use crate::pretrained::{PretrainedError, Remote, Request, Resolved, Sources, resolve};
use crate::progress::{JobRef, ModelStatusWriter};
use crate::storage::Store;

/// The cluster's mirror: `s3://bucket/prefix` (read with the job's S3 settings), an
/// `http(s)://` base URL, or a local directory; NGC's layout below it.
pub const MIRROR_VAR: &str = "MEGATRON_MODEL_MIRROR";
/// NGC's model files API (default [`crds::published::NGC_BASE_URL`]; empty: never contact it).
pub const NGC_VAR: &str = "MEGATRON_MODEL_NGC_URL";
/// Seconds the other pods wait for the first pod to fill the shared cache (default 3600).
pub const WAIT_VAR: &str = "MEGATRON_MODEL_WAIT_SECONDS";

/// Who resolves, and what it may use.
#[derive(Clone, Debug, Default)]
pub struct FetchContext {
    /// The job's first pod (it downloads from outside; the others wait on the shared cache).
    pub leader: bool,
    /// Use the job bucket's shared cache (outputs in S3, i.e. under the operator).
    pub shared_cache: bool,
    /// Write `status.model` of this job.
    pub job: Option<JobRef>,
}

impl FetchContext {
    /// A single local process: no shared cache, no status.
    pub fn local() -> Self {
        Self {
            leader: true,
            ..Self::default()
        }
    }
}

/// The published model whose weights `spec` needs, if any: a published name without
/// `checkpoint` or `nemo`, and initialization not Random.
pub fn needed(spec: &MegatronFineTuneSpec) -> Option<&'static Published> {
    let m = &spec.model;
    if m.checkpoint.is_some() || m.nemo.is_some() || m.is_random() {
        return None;
    }
    m.published().and_then(|p| p.published_files())
}

/// Resolves the weights `spec` needs into `<cache_dir>/models/` (None when it needs none).
pub fn fetch(
    spec: &MegatronFineTuneSpec,
    cache_dir: &Path,
    context: &FetchContext,
) -> JobResult<Option<Resolved>> {
    let Some(published) = needed(spec) else {
        return Ok(None);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| JobError::io("starting the download runtime", e))?;
    let resolved = runtime.block_on(fetch_async(spec, published, cache_dir, context))?;
    Ok(Some(resolved))
}

async fn fetch_async(
    spec: &MegatronFineTuneSpec,
    published: &'static Published,
    cache_dir: &Path,
    context: &FetchContext,
) -> JobResult<Resolved> {
    let sources = sources(spec, context, |k| std::env::var(k).ok())?;
    let request = Request {
        published,
        local_root: cache_dir.join("models"),
        leader: context.leader,
        wait: wait(),
    };
    let writer = match (&context.job, context.leader) {
        (Some(job), true) => ModelStatusWriter::start(job).await,
        _ => None,
    };
    let mut observe = |status: &crds::ModelStatus| {
        if let Some(w) = &writer {
            w.update(status);
        }
    };
    let result = resolve(&sources, &request, &mut observe).await;
    if let Ok(resolved) = &result {
        observe(&resolved.status(published));
        tracing::info!(
            name = published.name.as_str(),
            source = resolved.source,
            cache = resolved.cache,
            sha256 = resolved
                .manifest
                .file(published.weights().path)
                .map(|f| f.sha256.as_str()),
            "pretrained weights ready"
        );
    }
    if let Some(w) = writer {
        w.finish(Duration::from_secs(20)).await;
    }
    Ok(result?)
}

/// The sources of this job, in order.
pub fn sources(
    spec: &MegatronFineTuneSpec,
    context: &FetchContext,
    env: impl Fn(&str) -> Option<String>,
) -> JobResult<Sources> {
    let shared_cache = match (&spec.storage, context.shared_cache) {
        (Some(storage), true) => Some(s3_store(storage, &storage.bucket, &storage.prefix)?),
        _ => None,
    };
    let mirror = match env(MIRROR_VAR)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(v) => Some(mirror(spec, &v)?),
    };
    let ngc = match env(NGC_VAR) {
        Some(v) if v.trim().is_empty() => None,
        Some(v) => Some(Remote::http(NGC_VAR, v.trim())?),
        None => Some(Remote::http(NGC_VAR, crds::published::NGC_BASE_URL)?),
    };
    Ok(Sources {
        shared_cache,
        mirror,
        ngc,
    })
}

fn mirror(spec: &MegatronFineTuneSpec, value: &str) -> JobResult<Remote> {
    let bad = |why: &str| {
        JobError::from(PretrainedError::BadSetting {
            variable: MIRROR_VAR,
            value: value.to_owned(),
            why: why.to_owned(),
        })
    };
    if value.starts_with("http://") || value.starts_with("https://") {
        return Ok(Remote::http(MIRROR_VAR, value)?);
    }
    if let Some(rest) = value.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("name a bucket: s3://bucket/prefix"));
        }
        let storage = spec
            .storage
            .as_ref()
            .ok_or_else(|| JobError::StorageRequired {
                needed_by: format!("{MIRROR_VAR}={value}"),
                fix: format!(
                    "{STORAGE_FIX}, or give the mirror as an http(s):// URL or a directory"
                ),
            })?;
        let store = s3_store(storage, bucket, prefix.trim_end_matches('/'))?;
        return Ok(Remote::Store { store });
    }
    if value.starts_with('/') {
        let store = Store::local(value).map_err(JobError::from)?;
        return Ok(Remote::Store { store });
    }
    Err(bad(
        "expected an s3://bucket/prefix, an http(s):// base URL or an absolute directory, each with NGC's layout below it",
    ))
}

fn wait() -> Duration {
    let secs = std::env::var(WAIT_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(3600);
    Duration::from_secs(secs)
}

/// Rank 0, once the model is built: `status.model` with the architecture the weights were
/// loaded with. A failure to write is logged, never fatal.
pub fn report_loaded(
    spec: &MegatronFineTuneSpec,
    cache_dir: &Path,
    job: &JobRef,
    config: &BertConfig,
) {
    let Some(published) = needed(spec) else {
        return;
    };
    let resolved = match fetch(spec, cache_dir, &FetchContext::local()) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "status.model: the local copy is gone");
            return;
        }
    };
    let mut status = resolved.status(published);
    status.config = Some(format!(
        "{} layers, hidden {}, {} heads, FFN {}, vocabulary {} (padded {}), {} positions",
        config.num_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.ffn_hidden_size,
        config.vocab_size,
        config.padded_vocab_size,
        config.max_position_embeddings
    ));
    let job = job.clone();
    let write = async move {
        if let Some(w) = ModelStatusWriter::start(&job).await {
            w.update(&status);
            w.finish(Duration::from_secs(20)).await;
        }
    };
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(write),
        Err(e) => tracing::warn!(error = %e, "status.model: no runtime"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MegatronFineTuneSpec {
        let text = include_str!("../../../examples/squad-qa-megatron-345m-uncased.yaml");
        serde_yaml::from_str::<crds::MegatronFineTune>(text)
            .unwrap()
            .spec
    }

    #[test]
    fn a_published_name_without_a_checkpoint_needs_its_weights_unless_random() {
        let mut s = spec();
        assert!(needed(&s).is_some());
        s.model.initialization = Some(crds::Initialization::Random);
        assert!(needed(&s).is_none());
    }

    #[test]
    fn sources_come_from_the_environment() {
        let s = spec();
        let local = FetchContext::local();
        let env = |mirror: &'static str, ngc: Option<&'static str>| {
            move |k: &str| match k {
                MIRROR_VAR => Some(mirror.to_owned()),
                NGC_VAR => ngc.map(str::to_owned),
                _ => None,
            }
        };
        let default = sources(&s, &local, env("", None)).unwrap();
        assert!(default.mirror.is_none() && default.shared_cache.is_none());
        let Some(Remote::Http { base, .. }) = default.ngc else {
            panic!("NGC is the default");
        };
        assert_eq!(base, crds::published::NGC_BASE_URL);

        let air_gapped = sources(&s, &local, env("/models", Some(""))).unwrap();
        assert!(air_gapped.ngc.is_none());
        assert!(matches!(air_gapped.mirror, Some(Remote::Store { .. })));

        let Err(e) = sources(&s, &local, env("ftp://mirror/ngc", None)) else {
            panic!("ftp accepted");
        };
        assert!(e.is_invalid_input(), "{e}");
        assert!(e.to_string().contains("MEGATRON_MODEL_MIRROR"), "{e}");
    }
}
