//! The data-plane listener: one per process. Peers connect, say which group
//! and rank they are, and wait in a table until the group setup takes them.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::group::CommError;
use super::wire::{read_string, read_u64, write_bytes, write_u64};

const HELLO_MAGIC: u64 = 0x4d54_5243_5249_4e47; // "MTRCRING"

type Pending = HashMap<(String, usize), TcpStream>;

/// Accepts ring connections on a background thread.
#[derive(Debug)]
pub(crate) struct Acceptor {
    port: u16,
    pending: Arc<(Mutex<Pending>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Acceptor {
    /// Listens on all interfaces at `port` (0 = any free port).
    pub(crate) fn bind(port: u16) -> Result<Self, CommError> {
        let listener = TcpListener::bind(("::", port))
            .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
            .map_err(|source| CommError::Io {
                context: format!("cannot listen for collective connections on port {port}"),
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| CommError::Io {
                context: "reading the collective listener's address".into(),
                source,
            })?
            .port();
        let pending: Arc<(Mutex<Pending>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2) = (pending.clone(), stop.clone());
        std::thread::Builder::new()
            .name("comm-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let p3 = p2.clone();
                    // Read the hello off the accept thread so a slow peer cannot stall others.
                    let _ =
                        std::thread::Builder::new()
                            .name("comm-hello".into())
                            .spawn(move || {
                                if let Ok((group, rank)) = read_hello(&conn) {
                                    let (lock, cv) = &*p3;
                                    lock.lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .insert((group, rank), conn);
                                    cv.notify_all();
                                }
                            });
                }
            })
            .map_err(|source| CommError::Io {
                context: "starting the accept thread".into(),
                source,
            })?;
        Ok(Self {
            port,
            pending,
            stop,
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Takes the connection that global rank `from` opened for `group`,
    /// waiting until `deadline`.
    pub(crate) fn take(&self, group: &str, from: usize, deadline: Instant) -> Option<TcpStream> {
        let (lock, cv) = &*self.pending;
        let mut map = lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = (group.to_string(), from);
        loop {
            if let Some(s) = map.remove(&key) {
                return Some(s);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            map = cv
                .wait_timeout(map, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(200),
        );
    }
}

fn read_hello(mut conn: &TcpStream) -> io::Result<(String, usize)> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    if read_u64(&mut conn)? != HELLO_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a ring hello",
        ));
    }
    let group = read_string(&mut conn, 1024)?;
    let rank = read_u64(&mut conn)? as usize;
    conn.set_read_timeout(None)?;
    Ok((group, rank))
}

/// Introduces this process (global `rank`) on a fresh connection for `group`.
pub(crate) fn send_hello(mut conn: &TcpStream, group: &str, rank: usize) -> io::Result<()> {
    let mut buf = Vec::new();
    write_u64(&mut buf, HELLO_MAGIC)?;
    write_bytes(&mut buf, group.as_bytes())?;
    write_u64(&mut buf, rank as u64)?;
    conn.write_all(&buf)
}
