//! Connecting to a peer with retries until a deadline: the peer's DNS name may
//! not resolve yet (a Kubernetes pod that is still starting) and its port may
//! not be listening yet.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The last failure before the deadline of [`connect_with_retry`]; the caller
/// reports it inside its timeout error, next to the peer's identity.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The name did not resolve (DNS not ready, or a wrong address).
    #[error("cannot resolve {host:?}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    /// The name resolved, but to nothing.
    #[error("{host:?} resolved to no address")]
    NoAddress { host: String },
    /// An address refused or did not answer the connection.
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Connects to `host:port`, retrying name resolution and connection with a
/// capped exponential backoff until `deadline`. On failure returns the last
/// error seen (resolution or connection), for the caller to wrap with the
/// peer's identity.
pub(crate) fn connect_with_retry(
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<TcpStream, ConnectError> {
    let mut backoff = Duration::from_millis(20);
    let mut last_error;
    loop {
        match (host, port).to_socket_addrs() {
            Err(source) => {
                last_error = ConnectError::Resolve {
                    host: host.to_string(),
                    source,
                }
            }
            Ok(addrs) => {
                let addrs: Vec<_> = addrs.collect();
                last_error = ConnectError::NoAddress {
                    host: host.to_string(),
                };
                for addr in addrs {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let attempt = left.clamp(Duration::from_millis(10), Duration::from_secs(5));
                    match TcpStream::connect_timeout(&addr, attempt) {
                        Ok(s) => {
                            // Latency matters more than packet count for collectives.
                            let _ = s.set_nodelay(true);
                            return Ok(s);
                        }
                        Err(source) => last_error = ConnectError::Connect { addr, source },
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(last_error);
        }
        std::thread::sleep(backoff.min(deadline - now));
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Formats `host:port`, bracketing IPv6 literals.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
