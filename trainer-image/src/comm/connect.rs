//! Connecting to a peer with retries until a deadline: the peer's DNS name may
//! not resolve yet (a Kubernetes pod that is still starting) and its port may
//! not be listening yet.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Connects to `host:port`, retrying name resolution and connection with a
/// capped exponential backoff until `deadline`. On failure returns the last
/// error seen (resolution or connection), for the caller to wrap with the
/// peer's identity.
pub(crate) fn connect_with_retry(
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<TcpStream, String> {
    let mut backoff = Duration::from_millis(20);
    let mut last_error;
    loop {
        match (host, port).to_socket_addrs() {
            Err(e) => last_error = format!("cannot resolve {host:?}: {e}"),
            Ok(addrs) => {
                let addrs: Vec<_> = addrs.collect();
                last_error = format!("{host:?} resolved to no address");
                for addr in addrs {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let attempt = left.clamp(Duration::from_millis(10), Duration::from_secs(5));
                    match TcpStream::connect_timeout(&addr, attempt) {
                        Ok(s) => {
                            // Latency matters more than packet count for collectives.
                            let _ = s.set_nodelay(true);
                            return Ok(s);
                        }
                        Err(e) => last_error = format!("connecting to {addr}: {e}"),
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
