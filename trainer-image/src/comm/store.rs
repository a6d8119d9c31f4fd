//! A small TCP key-value store for rendezvous, like c10d's `TCPStore`: rank 0
//! hosts it on `MASTER_PORT`, every rank connects to `MASTER_ADDR:MASTER_PORT`.
//! Operations: set, get (waits until the key exists), add (atomic counter),
//! wait (for several keys) and a barrier built on add + get.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::connect::{connect_with_retry, host_port};
use super::group::CommError;
use super::wire::{read_bytes, read_string, read_u8, read_u64, write_bytes, write_u8, write_u64};

const OP_SET: u8 = 1;
const OP_GET: u8 = 2;
const OP_ADD: u8 = 3;
const OP_WAIT: u8 = 4;
const STATUS_OK: u8 = 0;
const STATUS_TIMEOUT: u8 = 1;
const MAX_KEY: usize = 4096;
const MAX_VALUE: usize = 64 << 20;
const MAX_KEYS: u64 = 1 << 20;

#[derive(Default)]
struct Table {
    map: Mutex<HashMap<String, Vec<u8>>>,
    changed: Condvar,
}

impl Table {
    /// Waits until every key exists or the timeout passes; returns the missing keys.
    fn wait_for(&self, keys: &[String], timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let missing: Vec<String> = keys
                .iter()
                .filter(|k| !map.contains_key(*k))
                .cloned()
                .collect();
            let now = Instant::now();
            if missing.is_empty() || now >= deadline {
                return missing;
            }
            map = self
                .changed
                .wait_timeout(map, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The store server. Runs on background threads until dropped.
#[derive(Debug)]
pub struct StoreServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl StoreServer {
    /// Listens on all interfaces at `port` (0 picks a free port).
    pub fn bind(port: u16) -> Result<Self, CommError> {
        let listener = TcpListener::bind(("::", port))
            .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
            .map_err(|source| CommError::Io {
                context: format!(
                    "rank 0 cannot listen for the rendezvous store on port {port} \
                     (MASTER_PORT): is another process using it?"
                ),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| CommError::Io {
            context: "reading the store listener's address".into(),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let table = Arc::new(Table::default());
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("comm-store".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let table = table.clone();
                    let _ = std::thread::Builder::new()
                        .name("comm-store-conn".into())
                        .spawn(move || {
                            let _ = serve(conn, &table);
                        });
                }
            })
            .map_err(|source| CommError::Io {
                context: "starting the store thread".into(),
                source,
            })?;
        Ok(Self { addr, stop })
    }

    /// The port the store listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the stop flag.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.addr.port())),
            Duration::from_millis(200),
        );
    }
}

fn serve(conn: TcpStream, table: &Table) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = BufWriter::new(conn);
    loop {
        let op = match read_u8(&mut r) {
            Ok(op) => op,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        match op {
            OP_SET => {
                let key = read_string(&mut r, MAX_KEY)?;
                let value = read_bytes(&mut r, MAX_VALUE)?;
                table
                    .map
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, value);
                table.changed.notify_all();
                write_u8(&mut w, STATUS_OK)?;
            }
            OP_GET => {
                let key = read_string(&mut r, MAX_KEY)?;
                let timeout = Duration::from_millis(read_u64(&mut r)?);
                let missing = table.wait_for(std::slice::from_ref(&key), timeout);
                if missing.is_empty() {
                    let map = table.map.lock().unwrap_or_else(|p| p.into_inner());
                    write_u8(&mut w, STATUS_OK)?;
                    write_bytes(&mut w, &map[&key])?;
                } else {
                    write_u8(&mut w, STATUS_TIMEOUT)?;
                }
            }
            OP_ADD => {
                let key = read_string(&mut r, MAX_KEY)?;
                let delta = read_u64(&mut r)? as i64;
                let value = {
                    let mut map = table.map.lock().unwrap_or_else(|p| p.into_inner());
                    let cur = map
                        .get(&key)
                        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                        .map(i64::from_le_bytes)
                        .unwrap_or(0);
                    let next = cur.wrapping_add(delta);
                    map.insert(key, next.to_le_bytes().to_vec());
                    next
                };
                table.changed.notify_all();
                write_u8(&mut w, STATUS_OK)?;
                write_u64(&mut w, value as u64)?;
            }
            OP_WAIT => {
                let n = read_u64(&mut r)?;
                if n > MAX_KEYS {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "too many keys"));
                }
                let keys = (0..n)
                    .map(|_| read_string(&mut r, MAX_KEY))
                    .collect::<io::Result<Vec<_>>>()?;
                let timeout = Duration::from_millis(read_u64(&mut r)?);
                let missing = table.wait_for(&keys, timeout);
                if missing.is_empty() {
                    write_u8(&mut w, STATUS_OK)?;
                } else {
                    write_u8(&mut w, STATUS_TIMEOUT)?;
                    write_u64(&mut w, missing.len() as u64)?;
                    for k in &missing {
                        write_bytes(&mut w, k.as_bytes())?;
                    }
                }
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown store op {other}"),
                ));
            }
        }
        w.flush()?;
    }
}

/// A connection to the store. Calls are serialized; share it behind an `Arc`.
#[derive(Debug)]
pub struct StoreClient {
    conn: Mutex<TcpStream>,
    /// `host:port` of the store, for error messages.
    addr: String,
    /// Deadline for requests that do not wait for keys.
    timeout: Duration,
}

/// How the store's address is described in errors.
const STORE_HINT: &str = "check MASTER_ADDR and MASTER_PORT, and that rank 0 is running";

impl StoreClient {
    /// Connects to the store at `host:port`, retrying resolution and connection
    /// until `connect_timeout` passes. `timeout` bounds each later request.
    pub fn connect(
        host: &str,
        port: u16,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, CommError> {
        let addr = host_port(host, port);
        let conn =
            connect_with_retry(host, port, Instant::now() + connect_timeout).map_err(|last| {
                CommError::Timeout {
                    op: "rendezvous: connecting to the store".into(),
                    peer_rank: "0".into(),
                    peer_addr: addr.clone(),
                    after: connect_timeout,
                    hint: Some(format!("{STORE_HINT}; last error: {last}")),
                }
            })?;
        Ok(Self {
            conn: Mutex::new(conn),
            addr,
            timeout,
        })
    }

    /// The local address of the connection: the IP this host uses to reach rank 0.
    pub fn local_addr(&self) -> Result<SocketAddr, CommError> {
        self.lock()
            .local_addr()
            .map_err(|source| self.io_err("store", source))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TcpStream> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io_err(&self, op: &str, source: io::Error) -> CommError {
        let closed = matches!(
            source.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
        );
        CommError::Peer {
            op: if closed {
                format!(
                    "store {op} (rank 0 closed the store: it exited or gave up; its log says why)"
                )
            } else {
                format!("store {op}")
            },
            peer_rank: "0 (store host)".into(),
            peer_addr: self.addr.clone(),
            source,
        }
    }

    /// Sends a request and reads the reply under one lock, bounding the wait.
    fn request<T>(
        &self,
        op: &str,
        wait: Duration,
        write: impl FnOnce(&mut BufWriter<&TcpStream>) -> io::Result<()>,
        read: impl FnOnce(&mut BufReader<&TcpStream>) -> io::Result<T>,
    ) -> Result<T, CommError> {
        let conn = self.lock();
        let run = || -> io::Result<T> {
            // The server answers within `wait`; allow for scheduling delays.
            conn.set_read_timeout(Some(wait + Duration::from_secs(30)))?;
            let mut w = BufWriter::new(&*conn);
            write(&mut w)?;
            w.flush()?;
            drop(w);
            read(&mut BufReader::with_capacity(64, &*conn))
        };
        run().map_err(|e| self.io_err(op, e))
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), CommError> {
        self.request(
            "set",
            self.timeout,
            |w| {
                write_u8(w, OP_SET)?;
                write_bytes(w, key.as_bytes())?;
                write_bytes(w, value)
            },
            |r| expect_ok(read_u8(r)?),
        )
    }

    /// Returns `key`'s value, waiting up to `timeout` for it to be set;
    /// `None` on timeout.
    pub fn get(&self, key: &str, timeout: Duration) -> Result<Option<Vec<u8>>, CommError> {
        self.request(
            "get",
            timeout,
            |w| {
                write_u8(w, OP_GET)?;
                write_bytes(w, key.as_bytes())?;
                write_u64(w, timeout.as_millis() as u64)
            },
            |r| match read_u8(r)? {
                STATUS_OK => Ok(Some(read_bytes(r, MAX_VALUE)?)),
                _ => Ok(None),
            },
        )
    }

    /// Atomically adds `delta` to the counter `key` (0 when unset) and returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64, CommError> {
        self.request(
            "add",
            self.timeout,
            |w| {
                write_u8(w, OP_ADD)?;
                write_bytes(w, key.as_bytes())?;
                write_u64(w, delta as u64)
            },
            |r| {
                expect_ok(read_u8(r)?)?;
                Ok(read_u64(r)? as i64)
            },
        )
    }

    /// Waits up to `timeout` for every key to exist; returns the keys still missing.
    pub fn wait(&self, keys: &[String], timeout: Duration) -> Result<Vec<String>, CommError> {
        self.request(
            "wait",
            timeout,
            |w| {
                write_u8(w, OP_WAIT)?;
                write_u64(w, keys.len() as u64)?;
                for k in keys {
                    write_bytes(w, k.as_bytes())?;
                }
                write_u64(w, timeout.as_millis() as u64)
            },
            |r| match read_u8(r)? {
                STATUS_OK => Ok(Vec::new()),
                _ => {
                    let n = read_u64(r)?.min(MAX_KEYS);
                    (0..n).map(|_| read_string(r, MAX_KEY)).collect()
                }
            },
        )
    }

    /// Returns once `world` participants called `barrier` with the same `name`
    /// (use a fresh name per barrier). On timeout the error says how many arrived.
    pub fn barrier(&self, name: &str, world: usize, timeout: Duration) -> Result<(), CommError> {
        let arrived = self.add(&format!("barrier/{name}/count"), 1)?;
        let done = format!("barrier/{name}/done");
        if arrived as usize == world {
            self.set(&done, b"1")?;
        }
        if self.get(&done, timeout)?.is_some() {
            return Ok(());
        }
        let seen = self.add(&format!("barrier/{name}/count"), 0)?;
        Err(CommError::Timeout {
            op: format!("store barrier {name:?}"),
            peer_rank: format!("(only {seen} of {world} arrived)"),
            peer_addr: self.addr.clone(),
            after: timeout,
            hint: Some("a rank is missing or slow; check every rank's logs".into()),
        })
    }

    /// `host:port` of the store.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

fn expect_ok(status: u8) -> io::Result<()> {
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("store replied with status {status}"),
        ))
    }
}
