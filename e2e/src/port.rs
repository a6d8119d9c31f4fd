//! Ports for servers a test starts later (rank 0's rendezvous store, proxies).

use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};

/// A TCP port free on every interface a moment ago, from 10000-19999: below the kernel's ephemeral
/// range (so no outgoing connection, nor one to itself, takes it before a server binds it) and
/// the local cluster's 20000-31999 (e2e/cluster/lib.sh). Calls in one process walk the range
/// from a random start and never return the same port twice (tests run in parallel threads).
pub fn free_port() -> std::io::Result<u16> {
    static NEXT: AtomicU64 = AtomicU64::new(u64::MAX);
    let _ = NEXT.compare_exchange(
        u64::MAX,
        RandomState::new().hash_one(std::process::id()) % 10_000,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    (0..10_000)
        .map(|_| 10_000 + (NEXT.fetch_add(1, Ordering::SeqCst) % 10_000) as u16)
        // Bound as rank 0's store binds: all interfaces, IPv6 first.
        .find(|&port| {
            TcpListener::bind(("::", port))
                .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
                .is_ok()
        })
        .ok_or_else(|| std::io::Error::other("no free port in 10000-19999"))
}
