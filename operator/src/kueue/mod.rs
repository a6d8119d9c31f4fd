//! Kueue admission for jobs labelled `kueue.x-k8s.io/queue-name` (operator flag `--kueue`).
//!
//! Kueue's Go job framework cannot serve a Rust operator, so the operator owns each queued
//! job's `Workload` (`kueue.x-k8s.io/v1beta2`) the way Kueue's external frameworks do:
//! 1. create it: one pod set (the rank pods' count and template), the priority of the job's
//!    `kueue.x-k8s.io/priority-class` WorkloadPriorityClass; the gang stays at zero
//!    (phase Queued);
//! 2. once admitted, run the gang with the admitted flavors' node labels and tolerations;
//! 3. write `PodsReady` (with `waitForPodsReady`, Kueue evicts a Workload without it);
//! 4. when evicted, stop the gang (re-admitted, it resumes from its latest checkpoint), then
//!    release the quota (`status.admission` cleared, `QuotaReserved=False`) so Kueue queues
//!    it again;
//! 5. once the job finished, mark the Workload `Finished`, which frees the quota;
//!
//! and publish the latest checkpoint's step and time on the Workload, for whoever picks the
//! job that loses least to a preemption.

pub mod admission;
pub mod status;
pub mod sync;
pub mod workload;

use crds::MegatronFineTune;
use kube::ResourceExt;

/// The job label naming the LocalQueue (Kueue's own label for every job kind).
pub const QUEUE_NAME_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// The job label naming a WorkloadPriorityClass.
pub const PRIORITY_CLASS_LABEL: &str = "kueue.x-k8s.io/priority-class";
/// Workload annotation: step of the job's newest complete checkpoint.
pub const CHECKPOINT_STEP_ANNOTATION: &str = "megatron.dev/last-checkpoint-step";
/// Workload annotation: when that checkpoint was written (RFC 3339).
pub const CHECKPOINT_TIME_ANNOTATION: &str = "megatron.dev/last-checkpoint-time";

/// The LocalQueue a job asks for, if it asks Kueue at all.
pub fn queue_name(job: &MegatronFineTune) -> Option<&str> {
    job.labels()
        .get(QUEUE_NAME_LABEL)
        .map(String::as_str)
        .filter(|q| !q.is_empty())
}

/// The WorkloadPriorityClass a job names.
pub fn priority_class(job: &MegatronFineTune) -> Option<&str> {
    job.labels()
        .get(PRIORITY_CLASS_LABEL)
        .map(String::as_str)
        .filter(|p| !p.is_empty())
}
