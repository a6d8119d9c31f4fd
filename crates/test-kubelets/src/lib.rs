//! Node agents for tests against the local control plane, which has no kubelet of its own
//! where a test wants to drive pod states itself:
//! * [`kubelet`]: the Node and Lease heartbeat shared by both agents, and [`kubelet::FakeKubelet`],
//!   which reports pods as Running without running anything (the operator lifecycle tests);
//! * [`process_kubelet`]: runs each pod's containers as host processes (the trainer's paths
//!   without an image rebuild per change).
//!
//! The real node (`e2e/cluster/up`: containerd, runc, the real kubelet) is what the product
//! tests run on; these are stand-ins, named as such.

pub mod kubelet;
pub mod process_kubelet;
