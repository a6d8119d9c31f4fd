//! The trainer's identity: a ServiceAccount bound to a Role that can read this one
//! MegatronFineTune and patch its status, and nothing else.

use k8s_openapi::api::{
    core::v1::ServiceAccount,
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};

use super::{Names, metadata};
use crate::job::JobView;

/// API group of MegatronFineTune.
const GROUP: &str = "megatron.dev";

/// The ServiceAccount rank pods run as.
pub fn service_account(job: &JobView) -> ServiceAccount {
    let mut meta = metadata(job, Names::trainer_identity(job));
    if !job.pod.service_account_annotations.is_empty() {
        meta.annotations = Some(job.pod.service_account_annotations.clone());
    }
    ServiceAccount {
        metadata: meta,
        ..ServiceAccount::default()
    }
}

/// `get` on the object, `get`/`patch` on its status, limited by `resourceNames` to this object.
pub fn role(job: &JobView) -> Role {
    let rule = |resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![GROUP.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        resource_names: Some(vec![job.name.clone()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    Role {
        metadata: metadata(job, Names::trainer_identity(job)),
        rules: Some(vec![
            rule("megatronfinetunes", &["get"]),
            rule("megatronfinetunes/status", &["get", "patch"]),
        ]),
    }
}

/// Binds the Role to the ServiceAccount.
pub fn role_binding(job: &JobView) -> RoleBinding {
    let name = Names::trainer_identity(job);
    RoleBinding {
        metadata: metadata(job, name.clone()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: Some(job.namespace.clone()),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    #[test]
    fn role_is_limited_to_this_object() {
        let role = role(&fixtures::job());
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 2);
        for rule in &rules {
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(&["squad".to_owned()][..])
            );
            assert_eq!(
                rule.api_groups.as_deref(),
                Some(&["megatron.dev".to_owned()][..])
            );
        }
        assert_eq!(rules[0].verbs, ["get"]);
        assert_eq!(
            rules[1].resources.as_deref(),
            Some(&["megatronfinetunes/status".to_owned()][..])
        );
        assert_eq!(rules[1].verbs, ["get", "patch"]);
    }
}
