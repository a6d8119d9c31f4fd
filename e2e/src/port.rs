//! Ports for servers a test starts later (rank 0's rendezvous store, proxies).

use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;

/// A TCP port free on 127.0.0.1 a moment ago, from 10000-19999: below the kernel's ephemeral
/// range (so no outgoing connection, nor one to itself, takes it before a server binds it) and
/// the local cluster's 20000-31999 (e2e/cluster/lib.sh).
pub fn free_port() -> std::io::Result<u16> {
    let start = RandomState::new().hash_one(std::process::id()) % 10_000;
    (0..10_000)
        .map(|i| 10_000 + ((start + i) % 10_000) as u16)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .ok_or_else(|| std::io::Error::other("no free port on 127.0.0.1 in 10000-19999"))
}
