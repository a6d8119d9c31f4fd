//! Tests that stop the e2e cluster's S3 server in the middle of a transfer. Their own
//! binary, so no other test's S3 traffic meets the outage; they take turns
//! (`storage_util::outage`).

#[path = "../support/mod.rs"]
mod support;

mod checkpoint_commit;
mod resume_upload;
