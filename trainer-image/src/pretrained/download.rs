//! Downloading one file into place: streamed to `<dest>.part`, resumed with a `Range`
//! request after a broken connection, checked for size and sha256, renamed into place only
//! when it is right. A digest mismatch throws the bytes away and starts again, a few times,
//! before failing; nothing unverified is ever left at `dest`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::error::{PretrainedError, Result};
use super::progress::Meter;
use super::remote::{Remote, http_error};
use crate::storage::{FileDigest, TransferOptions};

/// Whole downloads (a digest mismatch starts a new one).
pub const ATTEMPTS: usize = 3;
/// Resumptions of one download after broken connections.
const RESUMES: usize = 8;
/// First wait before a resumption; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Downloads `path` from `remote` to `dest`. `expected`: the sha256 the bytes must have.
/// None when the source does not have the file.
pub async fn fetch_file(
    remote: &Remote,
    path: &str,
    dest: &Path,
    expected: Option<&str>,
    meter: &mut Meter<'_>,
) -> Result<Option<FileDigest>> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| PretrainedError::io(format!("creating {}", parent.display()), e))?;
    }
    let uri = remote.uri(path);
    let mut last_digest = String::new();
    for attempt in 1..=ATTEMPTS {
        let digest = match remote {
            Remote::Http { client, .. } => {
                match http_download(client, &uri, &part_path(dest), meter).await? {
                    Some(d) => d,
                    None => return Ok(None),
                }
            }
            Remote::Store { store } => {
                let info = match store.head(path).await {
                    Ok(info) => info,
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                meter.set_total(Some(info.size));
                meter.reset(0);
                meter.report();
                let d = store
                    .download_file(path, &part_path(dest), &TransferOptions::default())
                    .await?;
                meter.add(d.size);
                d
            }
        };
        meter.report();
        if expected.is_none_or(|e| e.eq_ignore_ascii_case(&digest.sha256)) {
            std::fs::rename(part_path(dest), dest)
                .map_err(|e| PretrainedError::io(format!("renaming into {}", dest.display()), e))?;
            return Ok(Some(digest));
        }
        tracing::warn!(
            uri,
            attempt,
            got = digest.sha256,
            expected,
            "sha256 mismatch: downloading again"
        );
        let _ = std::fs::remove_file(part_path(dest));
        last_digest = digest.sha256;
    }
    Err(PretrainedError::Corrupt {
        uri,
        expected: expected.unwrap_or_default().to_owned(),
        got: last_digest,
        attempts: ATTEMPTS,
    })
}

/// `<dest>.part`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Streams `uri` into `part`, resuming from what `part` already holds; returns the digest of
/// the whole file, or None for a 404.
async fn http_download(
    client: &reqwest::Client,
    uri: &str,
    part: &Path,
    meter: &mut Meter<'_>,
) -> Result<Option<FileDigest>> {
    let mut failures = 0;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let offset = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        match http_stream(client, uri, part, offset, meter).await {
            Ok(Stream::Missing) => return Ok(None),
            Ok(Stream::Complete(total)) => {
                let digest = file_digest(part)?;
                if digest.size != total {
                    return Err(PretrainedError::Truncated {
                        uri: uri.to_owned(),
                        expected: total,
                        got: digest.size,
                    });
                }
                return Ok(Some(digest));
            }
            // Nothing received yet (an unreachable host): give up sooner.
            Err(e) if failures < resumes_allowed(part) && retryable(&e) => {
                failures += 1;
                let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
                tracing::warn!(uri, error = %e, bytes = have, "download interrupted: resuming");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

fn resumes_allowed(part: &Path) -> usize {
    if std::fs::metadata(part).is_ok_and(|m| m.len() > 0) {
        RESUMES
    } else {
        2
    }
}

enum Stream {
    /// 404/403: the source does not have the file.
    Missing,
    /// Every byte received; the file's total size.
    Complete(u64),
}

async fn http_stream(
    client: &reqwest::Client,
    uri: &str,
    part: &Path,
    offset: u64,
    meter: &mut Meter<'_>,
) -> Result<Stream> {
    let mut request = client.get(uri);
    if offset > 0 {
        request = request.header("Range", format!("bytes={offset}-"));
    }
    let mut response = request.send().await.map_err(|e| http_error(uri, e))?;
    let status = response.status().as_u16();
    let (start, total) = match status {
        404 | 403 if offset == 0 => return Ok(Stream::Missing),
        200 => (0, response.content_length()),
        206 => {
            let total = content_range_total(&response);
            (offset, total)
        }
        // The part already holds every byte.
        416 if offset > 0 => return Ok(Stream::Complete(offset)),
        s => {
            return Err(PretrainedError::Http {
                uri: uri.to_owned(),
                message: format!("HTTP {s}"),
            });
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(start > 0)
        .truncate(start == 0)
        .open(part)
        .map_err(|e| PretrainedError::io(format!("opening {}", part.display()), e))?;
    meter.set_total(total);
    meter.reset(start);
    meter.report();
    let mut received = start;
    while let Some(chunk) = response.chunk().await.map_err(|e| http_error(uri, e))? {
        file.write_all(&chunk)
            .map_err(|e| PretrainedError::io(format!("writing {}", part.display()), e))?;
        received += chunk.len() as u64;
        meter.add(chunk.len() as u64);
    }
    file.flush()
        .map_err(|e| PretrainedError::io(format!("writing {}", part.display()), e))?;
    match total {
        Some(t) if received < t => Err(PretrainedError::Truncated {
            uri: uri.to_owned(),
            expected: t,
            got: received,
        }),
        Some(t) => Ok(Stream::Complete(t)),
        None => Ok(Stream::Complete(received)),
    }
}

/// The total of `Content-Range: bytes a-b/total`.
fn content_range_total(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get("content-range")?.to_str().ok()?;
    value.rsplit('/').next()?.trim().parse().ok()
}

/// Connection failures and short bodies are worth resuming; HTTP errors are not.
fn retryable(e: &PretrainedError) -> bool {
    match e {
        PretrainedError::Truncated { .. } => true,
        PretrainedError::Http { message, .. } => !message.starts_with("HTTP "),
        _ => false,
    }
}

/// Size and sha256 of a local file.
pub fn file_digest(path: &Path) -> Result<FileDigest> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| PretrainedError::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| PretrainedError::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileDigest {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}
