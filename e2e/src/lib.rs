//! Test harness: connects to the local cluster started by `e2e/cluster/up` (control plane,
//! S3 server, registry and a real node).
//!
//! Tests fail loudly when the cluster is not running: CI always starts it first
//! (`e2e/cluster/install && e2e/cluster/up`).

pub mod cluster;
pub mod crd;
pub mod env;
pub mod namespace;
pub mod node;
pub mod port;

pub use cluster::Cluster;
pub use env::ClusterEnv;
pub use namespace::TestNamespace;
pub use test_kubelets::{kubelet, process_kubelet};

/// The workspace root (parent of the `e2e` crate).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives inside the workspace")
        .to_path_buf()
}
