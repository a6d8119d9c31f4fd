//! Our own retry around a whole operation (e.g. one ranged read including its
//! body), on top of object_store's per-request retries.

use std::future::Future;
use std::time::Duration;

/// True for errors that a later attempt may not hit (server errors, dropped
/// connections); false for missing objects, denied access and bad requests.
pub(crate) fn is_transient(err: &object_store::Error) -> bool {
    !matches!(
        err,
        object_store::Error::NotFound { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::NotImplemented { .. }
    )
}

/// Runs `op` up to `attempts` times, sleeping `first_backoff`, then twice as
/// long, between attempts that failed with a transient error.
pub(crate) async fn with_backoff<T, F, Fut>(
    attempts: usize,
    first_backoff: Duration,
    mut op: F,
) -> Result<T, object_store::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, object_store::Error>>,
{
    let mut backoff = first_backoff;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < attempts && is_transient(&e) => {
                tracing::warn!(attempt, error = %super::error::Redacted(&e),
                    "storage operation failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
