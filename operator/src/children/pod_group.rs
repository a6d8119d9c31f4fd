//! The PodGroup that makes kube-scheduler place a gang all at once or not at all
//! (`--gang-scheduling pod-group`; `scheduling.k8s.io/v1beta1`, KEP-4671).
//!
//! Each gang attempt gets its own PodGroup, so pods of a replaced attempt that are still
//! terminating never count toward the new attempt's quorum; older attempts' PodGroups are
//! deleted once the current one exists.

use k8s_openapi::api::{
    core::v1::PodSchedulingGroup,
    scheduling::v1beta1::{GangSchedulingPolicy, PodGroup, PodGroupSchedulingPolicy, PodGroupSpec},
};

use super::{ATTEMPT_LABEL, metadata};
use crate::job::JobView;

/// Name of the PodGroup of gang `attempt`.
pub fn name(job: &JobView, attempt: u32) -> String {
    format!("{}-gang-{attempt}", job.name)
}

/// The PodGroup of gang `attempt`: a gang policy over all of the job's pods.
pub fn build(job: &JobView, attempt: u32) -> PodGroup {
    let mut meta = metadata(job, name(job, attempt));
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(ATTEMPT_LABEL.to_owned(), attempt.to_string());
    PodGroup {
        metadata: meta,
        spec: PodGroupSpec {
            scheduling_policy: PodGroupSchedulingPolicy {
                gang: Some(GangSchedulingPolicy {
                    min_count: i32::try_from(job.pods()).unwrap_or(i32::MAX),
                }),
                basic: None,
            },
            priority_class_name: job.pod.priority_class_name.clone(),
            ..PodGroupSpec::default()
        },
        status: None,
    }
}

/// The pod template's reference to the PodGroup of gang `attempt`.
pub fn scheduling_group(job: &JobView, attempt: u32) -> PodSchedulingGroup {
    PodSchedulingGroup {
        pod_group_name: Some(name(job, attempt)),
    }
}

/// Whether `group` belongs to an attempt other than `attempt` (so it can go).
pub fn is_stale(group: &PodGroup, attempt: u32) -> bool {
    let label = group
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ATTEMPT_LABEL));
    label != Some(&attempt.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    #[test]
    fn gang_policy_covers_every_pod_of_the_attempt() {
        let job = fixtures::job();
        let group = build(&job, 3);
        assert_eq!(group.metadata.name.as_deref(), Some("squad-gang-3"));
        let gang = group
            .spec
            .scheduling_policy
            .gang
            .clone()
            .expect("gang policy");
        assert_eq!(gang.min_count, i32::try_from(job.pods()).unwrap());
        assert!(group.spec.scheduling_policy.basic.is_none());
        assert_eq!(
            scheduling_group(&job, 3).pod_group_name.as_deref(),
            Some("squad-gang-3")
        );
        assert!(!is_stale(&group, 3));
        assert!(is_stale(&group, 4));
        assert_eq!(
            group.metadata.owner_references,
            Some(vec![job.owner.clone()])
        );
    }
}
