//! The places published files are read from, all in NGC's layout (`<base>/<NGC path>`):
//! an HTTP(S) base URL (NGC itself or a mirror) or an object store prefix (an S3 mirror, a
//! directory).

use std::time::Duration;

use crate::storage::Store;

use super::error::{PretrainedError, Result};

/// One source of published files.
pub enum Remote {
    /// An HTTP(S) base URL ending in `/`.
    Http {
        /// The base URL.
        base: String,
        /// The client (redirects followed, as NGC redirects to signed URLs).
        client: reqwest::Client,
    },
    /// A prefix of an object store.
    Store {
        /// The store, rooted at the prefix.
        store: Store,
    },
}

/// Longest wait for a connection or for the next bytes of a response.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

impl Remote {
    /// An HTTP(S) source at `base`.
    pub fn http(variable: &'static str, base: &str) -> Result<Self> {
        // URLs reach logs and status.model: credentials must not ride in them.
        let authority = base.split("://").nth(1).unwrap_or(base);
        let authority = authority.split('/').next().unwrap_or(authority);
        if authority.contains('@') || base.contains('?') {
            return Err(PretrainedError::BadSetting {
                variable,
                value: "<redacted: the URL carries credentials or a query>".into(),
                why: "give a base URL without user:password@ or ?query (it would be logged and \
                      written to status); serve the mirror without credentials inside the cluster, \
                      or use an s3:// mirror, read with the job's S3 credentials"
                    .into(),
            });
        }
        let base = if base.ends_with('/') {
            base.to_owned()
        } else {
            format!("{base}/")
        };
        let client = reqwest::Client::builder()
            .connect_timeout(IO_TIMEOUT)
            .read_timeout(IO_TIMEOUT)
            .build()
            .map_err(|e| PretrainedError::BadSetting {
                variable,
                value: base.clone(),
                why: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(Self::Http { base, client })
    }

    /// The full URI of `path` at this source, for messages and status.
    pub fn uri(&self, path: &str) -> String {
        match self {
            Self::Http { base, .. } => format!("{base}{path}"),
            Self::Store { store } => store.uri(path),
        }
    }

    /// A small text file (a `.sha256` sidecar); None when the source does not have it.
    pub async fn text(&self, path: &str) -> Result<Option<String>> {
        match self {
            Self::Http { client, .. } => {
                let uri = self.uri(path);
                let response = client
                    .get(&uri)
                    .send()
                    .await
                    .map_err(|e| http_error(&uri, e))?;
                match response.status().as_u16() {
                    404 | 403 => Ok(None),
                    200 => response
                        .text()
                        .await
                        .map(Some)
                        .map_err(|e| http_error(&uri, e)),
                    s => Err(PretrainedError::Http {
                        uri,
                        message: format!("HTTP {s}"),
                    }),
                }
            }
            Self::Store { store } => match store.get_bytes(path).await {
                Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// The expected sha256 of `path` from its `<path>.sha256` sidecar (`sha256sum` format:
    /// the first word), when the source publishes one.
    pub async fn sidecar_sha256(&self, path: &str) -> Result<Option<String>> {
        let text = self.text(&format!("{path}.sha256")).await?;
        Ok(text
            .and_then(|t| t.split_whitespace().next().map(str::to_ascii_lowercase))
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())))
    }
}

/// An HTTP failure with the URL and every cause (reqwest hides the OS error in its sources).
pub fn http_error(uri: &str, error: reqwest::Error) -> PretrainedError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    PretrainedError::Http {
        uri: uri.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_credentials_are_refused_without_echoing_them() {
        for url in [
            "https://user:secret@mirror.example/ngc/",
            "https://mirror.example/ngc/?token=secret",
        ] {
            let Err(e) = Remote::http("MEGATRON_MODEL_MIRROR", url) else {
                panic!("{url} accepted");
            };
            let message = e.to_string();
            assert!(!message.contains("secret"), "{message}");
            assert!(message.contains("MEGATRON_MODEL_MIRROR"), "{message}");
        }
        let ok = Remote::http("MEGATRON_MODEL_MIRROR", "http://198.18.0.1:8080/ngc").unwrap();
        assert_eq!(ok.uri("a/b.pt"), "http://198.18.0.1:8080/ngc/a/b.pt");
    }
}
