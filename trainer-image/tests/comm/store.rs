//! The rendezvous key-value store, in one process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use megatron_trainer::comm::{StoreClient, StoreServer};

fn connect(server: &StoreServer) -> StoreClient {
    StoreClient::connect(
        "127.0.0.1",
        server.port(),
        Duration::from_secs(5),
        Duration::from_secs(5),
    )
    .unwrap()
}

#[test]
fn set_get_add_wait() {
    let server = StoreServer::bind(0).unwrap();
    let a = connect(&server);
    let b = connect(&server);
    a.set("k", b"value").unwrap();
    assert_eq!(
        b.get("k", Duration::from_secs(1)).unwrap().as_deref(),
        Some(&b"value"[..])
    );
    // A missing key times out with None after about the timeout.
    let start = Instant::now();
    assert_eq!(b.get("missing", Duration::from_millis(300)).unwrap(), None);
    assert!(start.elapsed() >= Duration::from_millis(250));
    // get waits for a key set later by another client.
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        a.set("late", b"x").unwrap();
        a
    });
    assert_eq!(
        b.get("late", Duration::from_secs(5)).unwrap().as_deref(),
        Some(&b"x"[..])
    );
    let a = t.join().unwrap();
    assert_eq!(a.add("n", 5).unwrap(), 5);
    assert_eq!(b.add("n", -2).unwrap(), 3);
    let missing = a
        .wait(
            &["k".into(), "nope".into(), "late".into()],
            Duration::from_millis(100),
        )
        .unwrap();
    assert_eq!(missing, vec!["nope".to_string()]);
}

#[test]
fn counters_are_atomic_and_barrier_releases_all() {
    let server = StoreServer::bind(0).unwrap();
    let clients: Vec<Arc<StoreClient>> = (0..6).map(|_| Arc::new(connect(&server))).collect();
    let hs: Vec<_> = clients
        .iter()
        .cloned()
        .map(|c| {
            std::thread::spawn(move || {
                let v = c.add("ctr", 1).unwrap();
                c.barrier("b1", 6, Duration::from_secs(10)).unwrap();
                v
            })
        })
        .collect();
    let mut got: Vec<i64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, vec![1, 2, 3, 4, 5, 6]);
    // A barrier that not everyone reaches times out and says how many came.
    let e = clients[0]
        .barrier("b2", 2, Duration::from_millis(200))
        .unwrap_err()
        .to_string();
    assert!(e.contains("only 1 of 2 arrived"), "{e}");
}
