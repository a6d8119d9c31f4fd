//! A tower layer around the operator's API client that counts every non-read request,
//! so tests and `/metrics` can prove that a steady-state reconcile writes nothing.

use std::sync::Arc;

use http::{Method, Request};
use tower::util::MapRequestLayer;

use crate::metrics::{Metrics, WriteLabels};

/// The layer: counts writes into `megatron_operator_api_writes_total{verb,resource}`.
pub fn layer<B>(
    metrics: Arc<Metrics>,
) -> MapRequestLayer<impl Fn(Request<B>) -> Request<B> + Clone> {
    MapRequestLayer::new(move |req: Request<B>| {
        if let Some(labels) = classify(req.method(), req.uri().path()) {
            metrics.api_writes.get_or_create(&labels).inc();
        }
        req
    })
}

/// Maps a request to its Kubernetes verb and resource; `None` for reads (GET, HEAD, watches).
pub fn classify(method: &Method, path: &str) -> Option<WriteLabels> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    // Skip "/api/v1" or "/apis/<group>/<version>".
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..)?,
        Some(&"apis") => segments.get(3..)?,
        _ => return None,
    };
    let rest = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        &rest[2..]
    } else {
        rest
    };
    let resource = match (rest.first(), rest.get(2)) {
        (Some(plural), Some(sub)) => format!("{plural}/{sub}"),
        (Some(plural), None) => (*plural).to_owned(),
        (None, _) => return None,
    };
    let named = rest.len() >= 2;
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return None,
    };
    Some(WriteLabels {
        verb: verb.to_owned(),
        resource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, path: &str) -> Option<(String, String)> {
        classify(&method, path).map(|l| (l.verb, l.resource))
    }

    #[test]
    fn reads_are_not_writes() {
        assert_eq!(c(Method::GET, "/api/v1/namespaces/a/pods"), None);
        assert_eq!(c(Method::GET, "/apis/apps/v1/statefulsets"), None);
    }

    #[test]
    fn writes_name_verb_and_resource() {
        assert_eq!(
            c(Method::PATCH, "/apis/apps/v1/namespaces/a/statefulsets/x"),
            Some(("patch".into(), "statefulsets".into()))
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/megatron.dev/v1alpha1/namespaces/a/megatronfinetunes/x/status"
            ),
            Some(("patch".into(), "megatronfinetunes/status".into()))
        );
        assert_eq!(
            c(Method::POST, "/api/v1/namespaces/a/events"),
            Some(("create".into(), "events".into()))
        );
        assert_eq!(
            c(Method::DELETE, "/api/v1/namespaces/a/pods/p"),
            Some(("delete".into(), "pods".into()))
        );
        assert_eq!(
            c(Method::DELETE, "/api/v1/namespaces/a/pods"),
            Some(("deletecollection".into(), "pods".into()))
        );
        assert_eq!(
            c(Method::POST, "/api/v1/namespaces"),
            Some(("create".into(), "namespaces".into()))
        );
        assert_eq!(
            c(Method::DELETE, "/api/v1/namespaces/a"),
            Some(("delete".into(), "namespaces".into()))
        );
        assert_eq!(
            c(Method::PATCH, "/api/v1/nodes/n/status"),
            Some(("patch".into(), "nodes/status".into()))
        );
    }
}
