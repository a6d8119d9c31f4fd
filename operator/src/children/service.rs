//! The headless Service that gives every rank pod a stable DNS name.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};

use super::{Names, metadata, selector_labels};
use crate::job::JobView;

/// Headless, publishing not-ready addresses: ranks must resolve each other before they are Ready.
pub fn build(job: &JobView, master_port: u16) -> Service {
    Service {
        metadata: metadata(job, Names::service(job)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(job)),
            ports: Some(vec![ServicePort {
                name: Some("rendezvous".into()),
                port: master_port.into(),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    #[test]
    fn headless_and_publishes_not_ready() {
        let svc = build(&fixtures::job(), 29500);
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.selector.unwrap()["megatron.dev/job-name"], "squad");
        assert_eq!(
            svc.metadata.owner_references.unwrap()[0].controller,
            Some(true)
        );
    }
}
