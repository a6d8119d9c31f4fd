//! [`TrainerStatus`]: the status fields the trainer owns, and the
//! server-side-apply body that carries only them.

use std::collections::BTreeMap;

use crds::{Artifacts, CheckpointStatus, MetricsStatus, Progress, TrainerResult};
use kube::Resource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Longest `result.reason` the CRD accepts.
const MAX_REASON: usize = 128;
/// Longest `result.message` the CRD accepts.
const MAX_MESSAGE: usize = 4096;

/// The trainer's part of `MegatronFineTuneStatus` (docs/operator.md, "Status:
/// who owns what"). Operator-owned fields are absent by construction, so an
/// apply of this never touches them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainerStatus {
    /// Training progress (lastStepTime feeds the operator's hang detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Latest training, validation and test metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsStatus>,
    /// Newest complete checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_checkpoint: Option<CheckpointStatus>,
    /// Best checkpoint by the monitored metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_checkpoint: Option<CheckpointStatus>,
    /// Output files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,
    /// The final report of this attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TrainerResult>,
}

impl TrainerStatus {
    /// Fills fields this process has not set yet from what an earlier attempt
    /// left in the object's status, so the first apply of a restarted gang keeps
    /// them (latestCheckpoint decides whether a restart counts). An earlier
    /// attempt's result is not carried over.
    pub fn inherit(&mut self, earlier: TrainerStatus) {
        if self.progress.is_none() {
            self.progress = earlier.progress;
        }
        if self.metrics.is_none() {
            self.metrics = earlier.metrics;
        }
        if self.latest_checkpoint.is_none() {
            self.latest_checkpoint = earlier.latest_checkpoint;
        }
        if self.best_checkpoint.is_none() {
            self.best_checkpoint = earlier.best_checkpoint;
        }
        if self.artifacts.is_none() {
            self.artifacts = earlier.artifacts;
        }
    }

    /// The trainer's fields of a status as read from the API server, field by
    /// field: one that does not parse (written by another version) is left
    /// out and named in the returned list, the others are kept.
    pub fn from_status(status: &Value) -> (Self, Vec<String>) {
        fn field<T: serde::de::DeserializeOwned>(
            status: &Value,
            key: &str,
            bad: &mut Vec<String>,
        ) -> Option<T> {
            let value = status.get(key)?;
            match serde_json::from_value(value.clone()) {
                Ok(v) => Some(v),
                Err(e) => {
                    bad.push(format!("{key}: {e}"));
                    None
                }
            }
        }
        let mut bad = Vec::new();
        let parsed = Self {
            progress: field(status, "progress", &mut bad),
            metrics: field(status, "metrics", &mut bad),
            latest_checkpoint: field(status, "latestCheckpoint", &mut bad),
            best_checkpoint: field(status, "bestCheckpoint", &mut bad),
            artifacts: field(status, "artifacts", &mut bad),
            result: field(status, "result", &mut bad),
        };
        (parsed, bad)
    }

    /// The apply body for object `name`: apiVersion, kind, metadata.name and
    /// the trainer's fields. JSON has no NaN or infinity, so non-finite numbers
    /// are left out; reason and message are cut to the CRD's limits.
    pub fn apply_body(&self, name: &str) -> Value {
        let mut status = self.clone();
        if let Some(p) = &mut status.progress {
            for v in [
                &mut p.percent,
                &mut p.epoch,
                &mut p.samples_per_second,
                &mut p.tokens_per_second,
            ] {
                keep_finite(v);
            }
        }
        if let Some(m) = &mut status.metrics {
            for v in [
                &mut m.train_loss,
                &mut m.learning_rate,
                &mut m.grad_norm,
                &mut m.loss_scale,
            ] {
                keep_finite(v);
            }
            retain_finite(&mut m.validation);
            retain_finite(&mut m.test);
        }
        for c in [&mut status.latest_checkpoint, &mut status.best_checkpoint]
            .into_iter()
            .flatten()
        {
            keep_finite(&mut c.metric);
        }
        if let Some(r) = &mut status.result {
            truncate(&mut r.reason, MAX_REASON);
            truncate(&mut r.message, MAX_MESSAGE);
        }
        json!({
            "apiVersion": crds::MegatronFineTune::api_version(&()),
            "kind": crds::MegatronFineTune::kind(&()),
            "metadata": { "name": name },
            "status": status,
        })
    }
}

fn keep_finite(value: &mut Option<f64>) {
    if value.is_some_and(|v| !v.is_finite()) {
        *value = None;
    }
}

fn retain_finite(values: &mut BTreeMap<String, f64>) {
    values.retain(|_, v| v.is_finite());
}

fn truncate(text: &mut String, max_chars: usize) {
    if let Some((cut, _)) = text.char_indices().nth(max_chars) {
        text.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{Outcome, uri::Uri};

    #[test]
    fn body_carries_only_trainer_fields_and_finite_numbers() {
        let mut metrics = MetricsStatus {
            train_loss: Some(f64::NAN),
            learning_rate: Some(1e-4),
            ..Default::default()
        };
        metrics.validation.insert("val_f1".into(), 88.5);
        metrics.validation.insert("val_loss".into(), f64::INFINITY);
        let status = TrainerStatus {
            progress: Some(Progress::at(5, Some(10))),
            metrics: Some(metrics),
            result: Some(TrainerResult {
                outcome: Outcome::Failed,
                attempt: 1,
                reason: "R".repeat(200),
                message: "é".repeat(5000),
                step: Some(5),
                time: None,
            }),
            ..Default::default()
        };
        let body = status.apply_body("squad");
        assert_eq!(body["apiVersion"], "megatron.dev/v1alpha1");
        assert_eq!(body["kind"], "MegatronFineTune");
        assert_eq!(body["metadata"], json!({"name": "squad"}));
        let fields: Vec<&String> = body["status"].as_object().unwrap().keys().collect();
        assert_eq!(fields, ["metrics", "progress", "result"]);
        assert_eq!(
            body["status"]["metrics"],
            json!({"learningRate": 1e-4, "validation": {"val_f1": 88.5}})
        );
        assert_eq!(
            body["status"]["result"]["reason"].as_str().unwrap().len(),
            128
        );
        assert_eq!(
            body["status"]["result"]["message"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            4096
        );
    }

    #[test]
    fn reads_what_parses_field_by_field() {
        let status = json!({
            "phase": "Running",
            "restarts": 1,
            "latestCheckpoint": {"step": 7, "uri": "s3://b/c/step_00000007"},
            "result": {"outcome": "Exploded", "attempt": 0, "reason": "X"},
        });
        let (parsed, bad) = TrainerStatus::from_status(&status);
        assert_eq!(parsed.latest_checkpoint.map(|c| c.step), Some(7));
        assert_eq!(parsed.result, None);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("result: "), "{bad:?}");
    }

    #[test]
    fn inherits_checkpoints_but_not_the_result() {
        let checkpoint = CheckpointStatus {
            step: 100,
            uri: Uri::new("s3://b/ckpt/step_00000100"),
            time: None,
            metric_name: None,
            metric: None,
            duration_seconds: None,
        };
        let earlier = TrainerStatus {
            latest_checkpoint: Some(checkpoint.clone()),
            progress: Some(Progress::at(130, Some(200))),
            result: Some(TrainerResult {
                outcome: Outcome::Succeeded,
                attempt: 0,
                reason: "Completed".into(),
                message: String::new(),
                step: Some(200),
                time: None,
            }),
            ..Default::default()
        };
        let mut now = TrainerStatus {
            progress: Some(Progress::at(101, Some(200))),
            ..Default::default()
        };
        now.inherit(earlier);
        assert_eq!(now.latest_checkpoint, Some(checkpoint));
        assert_eq!(now.progress.unwrap().step, 101);
        assert_eq!(now.result, None);
    }
}
