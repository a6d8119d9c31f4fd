//! Ring collectives over persistent TCP connections: each rank sends to the
//! next rank of its group and receives from the previous one.
//!
//! All-reduce is the bandwidth-optimal ring (reduce-scatter, then all-gather):
//! the buffer is split into `size` chunks and each rank sends and receives
//! `2 * (size - 1) / size` of it. Chunks are cut into segments of at most
//! [`SEGMENT_BYTES`], which pipeline through the ring; the only extra memory
//! is one segment-sized receive buffer per group, whatever the tensor size.
//!
//! **Summation order** (deterministic): chunk `c` (see [`chunk_range`]) ends
//! as `((x[c] + x[c+1]) + x[c+2]) + ... + x[c+size-1]` (ranks modulo `size`,
//! each addition rounded to the dtype), computed once on rank `c-1` and copied
//! to the others, so every rank ends with bit-identical bytes and repeated runs
//! give the same bits. [`crate::comm::ring_sum_reference`] computes the same
//! order in one process.
//!
//! Every operation starts with a 40-byte header (op, dtype, sequence number,
//! size) that the receiver checks, so ranks that disagree about the collective
//! fail with a clear error instead of exchanging garbage. After any failure the
//! ring closes both connections: neighbours see the connection drop and fail
//! too, so a dead rank makes the whole group fail fast instead of hanging.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tch::Kind;

use super::connect::connect_with_retry;
use super::group::CommError;
use super::listener::{Acceptor, send_hello};
use super::reduce::add_into;

/// Largest piece of a chunk sent as one unit; a multiple of every element size.
pub const SEGMENT_BYTES: usize = 256 << 10;
const HEADER_BYTES: usize = 40;
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
const HEADER_MAGIC: u64 = 0x4d54_5243_4845_4144; // "MTRCHEAD"

/// Element range `[start, end)` of chunk `c` when `numel` elements are split
/// into `parts` chunks: the first `numel % parts` chunks hold one extra element.
pub fn chunk_range(numel: usize, parts: usize, c: usize) -> Range<usize> {
    let base = numel / parts;
    let rem = numel % parts;
    let start = c * base + c.min(rem);
    start..start + base + usize::from(c < rem)
}

/// The collective an operation performs (part of the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    AllReduce = 1,
    AllGather = 2,
    Broadcast = 3,
    Barrier = 4,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::AllReduce => "all_reduce_sum",
            Op::AllGather => "all_gather_cat",
            Op::Broadcast => "broadcast",
            Op::Barrier => "barrier",
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        [Op::AllReduce, Op::AllGather, Op::Broadcast, Op::Barrier]
            .into_iter()
            .find(|o| *o as u8 == v)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// Received bytes replace the local ones.
    Copy,
    /// Received bytes are added to the local ones.
    Reduce,
}

/// How far one collective has got on each side of the ring.
struct Cursor {
    /// Header bytes written to the next rank.
    hdr_sent: usize,
    /// Header bytes read from the previous rank.
    hdr_got: usize,
    /// The chunk being written and the bytes of it written.
    send_idx: usize,
    send_off: usize,
    /// The chunk being read and the bytes of it read.
    recv_idx: usize,
    recv_off: usize,
    /// The previous rank's header.
    in_header: [u8; HEADER_BYTES],
}

impl Default for Cursor {
    fn default() -> Self {
        Self {
            hdr_sent: 0,
            hdr_got: 0,
            send_idx: 0,
            send_off: 0,
            recv_idx: 0,
            recv_off: 0,
            in_header: [0; HEADER_BYTES],
        }
    }
}

impl Cursor {
    /// The next chunk to send exists and is ready: within the plan's lead of
    /// what has been received (a reduced chunk is sent on after it arrived).
    fn send_ready(&self, plan: &Plan) -> bool {
        self.send_idx < plan.send.len()
            && (self.send_idx < plan.lead || self.recv_idx > self.send_idx - plan.lead)
    }

    fn wants_send(&self, plan: &Plan) -> bool {
        self.hdr_sent < HEADER_BYTES || self.send_ready(plan)
    }

    fn wants_recv(&self, plan: &Plan) -> bool {
        self.hdr_got < HEADER_BYTES || self.recv_idx < plan.recv.len()
    }

    /// Counts `k` bytes written (the header first, then the current chunk).
    fn sent(&mut self, k: usize, plan: &Plan) {
        if self.hdr_sent < HEADER_BYTES {
            self.hdr_sent += k;
        } else {
            self.send_off += k;
            if self.send_off == plan.send[self.send_idx].len() {
                self.send_idx += 1;
                self.send_off = 0;
            }
        }
    }
}

/// Where received bytes go: the collective's buffer, or the scratch space a
/// reduced chunk arrives in before it is added to the buffer.
struct Target<'a> {
    buf: &'a mut [u8],
    scratch: &'a mut [u8],
    kind: Kind,
}

/// Byte ranges to send to the next rank and receive from the previous one,
/// in stream order. Send item `j >= lead` carries the bytes produced by
/// receive item `j - lead`, so it waits for that item.
struct Plan {
    send: Vec<Range<usize>>,
    recv: Vec<(Range<usize>, Recv)>,
    lead: usize,
}

fn segments(bytes: Range<usize>, out: &mut Vec<Range<usize>>) {
    let mut s = bytes.start;
    while s < bytes.end {
        let e = (s + SEGMENT_BYTES).min(bytes.end);
        out.push(s..e);
        s = e;
    }
}

fn chunk_bytes(numel: usize, n: usize, c: usize, esize: usize) -> Range<usize> {
    let r = chunk_range(numel, n, c);
    r.start * esize..r.end * esize
}

fn all_reduce_plan(numel: usize, esize: usize, n: usize, r: usize) -> Plan {
    // Reduce-scatter step s sends chunk r-s and receives chunk r-s-1; the
    // all-gather then circulates each rank's finished chunk r+1.
    let u = |s: usize| {
        let mut v = Vec::new();
        segments(chunk_bytes(numel, n, (r + n * 2 - s) % n, esize), &mut v);
        v
    };
    let w = |s: usize| {
        let mut v = Vec::new();
        segments(
            chunk_bytes(numel, n, (r + 1 + n * 2 - s) % n, esize),
            &mut v,
        );
        v
    };
    let mut send = Vec::new();
    let mut recv = Vec::new();
    for s in 0..n - 1 {
        send.extend(u(s));
    }
    for s in 0..n - 1 {
        send.extend(w(s));
    }
    for s in 1..n {
        recv.extend(u(s).into_iter().map(|x| (x, Recv::Reduce)));
    }
    for s in 1..n {
        recv.extend(w(s).into_iter().map(|x| (x, Recv::Copy)));
    }
    Plan {
        lead: u(0).len(),
        send,
        recv,
    }
}

fn all_gather_plan(block: usize, n: usize, r: usize) -> Plan {
    let w = |s: usize| {
        let b = (r + n - s) % n;
        let mut v = Vec::new();
        segments(b * block..(b + 1) * block, &mut v);
        v
    };
    Plan {
        lead: w(0).len(),
        send: (0..n - 1).flat_map(w).collect(),
        recv: (1..n).flat_map(w).map(|x| (x, Recv::Copy)).collect(),
    }
}

fn broadcast_plan(bytes: usize, n: usize, r: usize, root: usize) -> Plan {
    let mut segs = Vec::new();
    segments(0..bytes, &mut segs);
    let pos = (r + n - root) % n;
    if pos == 0 {
        Plan {
            lead: segs.len(),
            send: segs,
            recv: Vec::new(),
        }
    } else {
        let recv = segs.iter().map(|s| (s.clone(), Recv::Copy)).collect();
        Plan {
            lead: 0,
            send: if pos == n - 1 { Vec::new() } else { segs },
            recv,
        }
    }
}

fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::Uint8 => 0,
        Kind::Int8 => 1,
        Kind::Int16 => 2,
        Kind::Int => 3,
        Kind::Int64 => 4,
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::Double => 7,
        Kind::Bool => 11,
        Kind::BFloat16 => 15,
        _ => 255,
    }
}

struct Header {
    op: u8,
    kind: u8,
    seq: u64,
    bytes: u64,
    aux: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..8].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        h[8] = self.op;
        h[9] = self.kind;
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.bytes.to_le_bytes());
        h[32..40].copy_from_slice(&self.aux.to_le_bytes());
        h
    }
    fn decode(h: &[u8; HEADER_BYTES]) -> Option<Self> {
        let u = |r: Range<usize>| u64::from_le_bytes(h[r].try_into().unwrap_or_default());
        (u(0..8) == HEADER_MAGIC).then(|| Header {
            op: h[8],
            kind: h[9],
            seq: u(16..24),
            bytes: u(24..32),
            aux: u(32..40),
        })
    }
    fn describe(&self) -> String {
        let op = Op::from_u8(self.op).map_or("an unknown op", Op::name);
        format!(
            "{op} #{} over {} bytes (dtype code {}, root/dim {})",
            self.seq, self.bytes, self.kind, self.aux
        )
    }
}

struct RingIo {
    next: TcpStream,
    prev: TcpStream,
    seq: u64,
    broken: Option<String>,
    scratch: Vec<u64>,
}

/// One rank's side of a ring: a connection to the next and one from the
/// previous member of its group.
pub(crate) struct Ring {
    group: String,
    rank: usize,
    size: usize,
    /// Global ranks of the members, by group rank.
    members: Vec<usize>,
    /// Data-plane addresses of the members, by group rank.
    addrs: Vec<String>,
    timeout: Duration,
    io: Mutex<RingIo>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("group", &self.group)
            .field("rank", &self.rank)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Opens this rank's connections: dials the next member's listener and
    /// takes the previous member's connection from `acceptor`.
    pub(crate) fn connect(
        group: &str,
        members: Vec<usize>,
        addrs: Vec<String>,
        rank: usize,
        acceptor: &Acceptor,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Self, CommError> {
        let size = members.len();
        let (next, prev) = ((rank + 1) % size, (rank + size - 1) % size);
        let setup = format!("connecting group {group}");
        let (host, port) = split_addr(&addrs[next]);
        let next_conn =
            connect_with_retry(host, port, deadline).map_err(|last| CommError::Timeout {
                op: setup.clone(),
                peer_rank: members[next].to_string(),
                peer_addr: addrs[next].clone(),
                after: timeout,
                hint: Some(format!(
                    "last error: {last}; check that pods can reach each other \
                     (MEGATRON_COMM_ADDR overrides the advertised address)"
                )),
            })?;
        send_hello(&next_conn, group, members[rank]).map_err(|source| CommError::Peer {
            op: setup.clone(),
            peer_rank: members[next].to_string(),
            peer_addr: addrs[next].clone(),
            source,
        })?;
        let prev_conn = acceptor
            .take(group, members[prev], deadline)
            .ok_or_else(|| CommError::Timeout {
                op: setup.clone(),
                peer_rank: members[prev].to_string(),
                peer_addr: addrs[prev].clone(),
                after: deadline.saturating_duration_since(Instant::now()),
                hint: Some("the rank never connected: check its logs".into()),
            })?;
        for (c, peer) in [(&next_conn, next), (&prev_conn, prev)] {
            set_socket_buffers(c);
            c.set_nodelay(true)
                .and_then(|()| c.set_nonblocking(true))
                .map_err(|source| CommError::Peer {
                    op: setup.clone(),
                    peer_rank: members[peer].to_string(),
                    peer_addr: addrs[peer].clone(),
                    source,
                })?;
        }
        Ok(Self {
            group: group.to_string(),
            rank,
            size,
            members,
            addrs,
            timeout,
            io: Mutex::new(RingIo {
                next: next_conn,
                prev: prev_conn,
                seq: 0,
                broken: None,
                scratch: vec![0u64; SEGMENT_BYTES / 8],
            }),
        })
    }

    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Sums `buf` (elements of `kind`) over the group, in place.
    pub(crate) fn all_reduce(
        &self,
        buf: &mut [u8],
        kind: Kind,
        esize: usize,
    ) -> Result<(), CommError> {
        let plan = all_reduce_plan(buf.len() / esize, esize, self.size, self.rank);
        self.run(Op::AllReduce, buf, kind, 0, &plan)
    }

    /// `out` holds `size` blocks; this rank's block (index `rank`) is filled
    /// in; the others are received.
    pub(crate) fn all_gather(&self, out: &mut [u8], kind: Kind, dim: u64) -> Result<(), CommError> {
        let plan = all_gather_plan(out.len() / self.size, self.size, self.rank);
        self.run(Op::AllGather, out, kind, dim, &plan)
    }

    /// Copies `root`'s `buf` into every rank's `buf`.
    pub(crate) fn broadcast(
        &self,
        buf: &mut [u8],
        kind: Kind,
        root: usize,
    ) -> Result<(), CommError> {
        let plan = broadcast_plan(buf.len(), self.size, self.rank, root);
        self.run(Op::Broadcast, buf, kind, root as u64, &plan)
    }

    /// Returns once every member entered the barrier (a one-element all-reduce).
    pub(crate) fn barrier(&self) -> Result<(), CommError> {
        let mut one = [0u64; 1];
        // SAFETY: viewing a u64 array as bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(one.as_mut_ptr().cast::<u8>(), 8) };
        let plan = all_reduce_plan(1, 8, self.size, self.rank);
        self.run(Op::Barrier, buf, Kind::Int64, 0, &plan)
    }

    fn peer(&self, group_rank: usize) -> (String, String) {
        (
            self.members[group_rank].to_string(),
            self.addrs[group_rank].clone(),
        )
    }

    fn run(
        &self,
        op: Op,
        buf: &mut [u8],
        kind: Kind,
        aux: u64,
        plan: &Plan,
    ) -> Result<(), CommError> {
        let mut io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &io.broken {
            return Err(CommError::Broken(format!("group {}: {why}", self.group)));
        }
        io.seq += 1;
        let header = Header {
            op: op as u8,
            kind: kind_code(kind),
            seq: io.seq,
            bytes: buf.len() as u64,
            aux,
        };
        let result = self.transfer(&mut io, op, buf, kind, &header, plan);
        if let Err(e) = &result {
            // Closing both sides makes the neighbours fail now instead of timing out.
            let _ = io.next.shutdown(Shutdown::Both);
            let _ = io.prev.shutdown(Shutdown::Both);
            io.broken = Some(e.to_string());
        }
        result
    }

    /// Moves one collective's bytes around the ring: writes what the socket
    /// takes, reads what has arrived (reducing into `buf` where the plan says),
    /// and polls when neither moved, until the plan is done or the deadline passes.
    fn transfer(
        &self,
        io: &mut RingIo,
        op: Op,
        buf: &mut [u8],
        kind: Kind,
        header: &Header,
        plan: &Plan,
    ) -> Result<(), CommError> {
        let op_name = format!("{} #{} in group {}", op.name(), header.seq, self.group);
        let deadline = Instant::now() + self.timeout;
        let out_header = header.encode();
        let mut cursor = Cursor::default();
        let RingIo {
            next: next_conn,
            prev: prev_conn,
            scratch,
            ..
        } = io;
        // SAFETY: viewing the u64 scratch buffer as bytes (8-byte aligned for any dtype).
        let scratch: &mut [u8] = unsafe {
            std::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast::<u8>(), scratch.len() * 8)
        };
        loop {
            let sent =
                self.write_ready(next_conn, &op_name, &out_header, buf, plan, &mut cursor)?;
            let got = self.read_arrived(
                prev_conn,
                &op_name,
                header,
                Target { buf, scratch, kind },
                plan,
                &mut cursor,
            )?;
            let (want_send, want_recv) = (cursor.wants_send(plan), cursor.wants_recv(plan));
            if !want_send && !want_recv {
                debug_assert_eq!(cursor.send_idx, plan.send.len());
                return Ok(());
            }
            if sent || got {
                continue;
            }
            self.wait(
                &op_name,
                deadline,
                (next_conn.as_raw_fd(), want_send),
                (prev_conn.as_raw_fd(), want_recv),
            )?;
        }
    }

    /// Writes as much as the next rank's socket takes: the header, then the
    /// plan's chunks as far as they are ready. True when anything was written.
    fn write_ready(
        &self,
        conn: &mut TcpStream,
        op_name: &str,
        out_header: &[u8; HEADER_BYTES],
        buf: &[u8],
        plan: &Plan,
        c: &mut Cursor,
    ) -> Result<bool, CommError> {
        let next = (self.rank + 1) % self.size;
        let mut progress = false;
        loop {
            let data: &[u8] = if c.hdr_sent < HEADER_BYTES {
                &out_header[c.hdr_sent..]
            } else if c.send_ready(plan) {
                &buf[plan.send[c.send_idx].clone()][c.send_off..]
            } else {
                return Ok(progress);
            };
            match conn.write(data) {
                Ok(0) => {
                    return Err(self.peer_error(op_name, next, io::ErrorKind::WriteZero.into()));
                }
                Ok(k) => {
                    progress = true;
                    c.sent(k, plan);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.peer_error(op_name, next, e)),
            }
        }
    }

    /// Reads whatever the previous rank has sent: the header (checked), then
    /// the plan's chunks, copied or reduced into `buf`. True when anything arrived.
    fn read_arrived(
        &self,
        conn: &mut TcpStream,
        op_name: &str,
        header: &Header,
        target: Target<'_>,
        plan: &Plan,
        c: &mut Cursor,
    ) -> Result<bool, CommError> {
        let prev = (self.rank + self.size - 1) % self.size;
        let Target { buf, scratch, kind } = target;
        let mut progress = false;
        loop {
            let into: &mut [u8] = if c.hdr_got < HEADER_BYTES {
                &mut c.in_header[c.hdr_got..]
            } else if c.recv_idx < plan.recv.len() {
                let (range, mode) = &plan.recv[c.recv_idx];
                match mode {
                    Recv::Copy => &mut buf[range.clone()][c.recv_off..],
                    Recv::Reduce => &mut scratch[c.recv_off..range.len()],
                }
            } else {
                return Ok(progress);
            };
            match conn.read(into) {
                Ok(0) => {
                    let closed = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the rank closed the connection (it exited, failed, \
                         or saw a failure further along the ring)",
                    );
                    return Err(self.peer_error(op_name, prev, closed));
                }
                Ok(k) if c.hdr_got < HEADER_BYTES => {
                    progress = true;
                    c.hdr_got += k;
                    if c.hdr_got == HEADER_BYTES {
                        self.check_header(op_name, header, &c.in_header, prev)?;
                    }
                }
                Ok(k) => {
                    progress = true;
                    c.recv_off += k;
                    let (range, mode) = &plan.recv[c.recv_idx];
                    if c.recv_off == range.len() {
                        if *mode == Recv::Reduce {
                            add_into(kind, &mut buf[range.clone()], &scratch[..range.len()]);
                        }
                        c.recv_idx += 1;
                        c.recv_off = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.peer_error(op_name, prev, e)),
            }
        }
    }

    /// Polls the two sockets for what is wanted (at most a second at a time);
    /// past the deadline, names the rank waited for: the sender if data is
    /// due, else the receiver.
    fn wait(
        &self,
        op_name: &str,
        deadline: Instant,
        (next_fd, want_send): (std::os::fd::RawFd, bool),
        (prev_fd, want_recv): (std::os::fd::RawFd, bool),
    ) -> Result<(), CommError> {
        let now = Instant::now();
        if now >= deadline {
            let n = self.size;
            let peer = if want_recv {
                (self.rank + n - 1) % n
            } else {
                (self.rank + 1) % n
            };
            let (peer_rank, peer_addr) = self.peer(peer);
            return Err(CommError::Timeout {
                op: op_name.to_owned(),
                peer_rank,
                peer_addr,
                after: self.timeout,
                hint: Some(
                    "the rank stopped answering: it may have crashed, hung, or be running a \
                     different collective; check its logs (MEGATRON_COMM_TIMEOUT_SECS sets the limit)"
                        .into(),
                ),
            });
        }
        let mut fds = [
            libc::pollfd {
                fd: next_fd,
                events: if want_send { libc::POLLOUT } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: prev_fd,
                events: if want_recv { libc::POLLIN } else { 0 },
                revents: 0,
            },
        ];
        let wait_ms = (deadline - now).as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: `fds` is a valid array of two pollfd structs for the call's duration.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(CommError::Io {
                    context: format!("{op_name}: poll"),
                    source: e,
                });
            }
        }
        Ok(())
    }

    /// A socket error on the connection to ring position `peer`.
    fn peer_error(&self, op_name: &str, peer: usize, source: io::Error) -> CommError {
        let (peer_rank, peer_addr) = self.peer(peer);
        CommError::Peer {
            op: op_name.to_owned(),
            peer_rank,
            peer_addr,
            source,
        }
    }

    fn check_header(
        &self,
        op_name: &str,
        ours: &Header,
        theirs: &[u8; HEADER_BYTES],
        prev: usize,
    ) -> Result<(), CommError> {
        let peer_rank = self.members[prev].to_string();
        let Some(h) = Header::decode(theirs) else {
            return Err(CommError::Protocol {
                op: op_name.to_string(),
                peer_rank,
                message: "received bytes that are not a collective header (stray data on the ring)"
                    .into(),
            });
        };
        if (h.op, h.kind, h.seq, h.bytes, h.aux)
            != (ours.op, ours.kind, ours.seq, ours.bytes, ours.aux)
        {
            return Err(CommError::Protocol {
                op: op_name.to_string(),
                peer_rank,
                message: format!(
                    "it called {}, this rank called {}: every rank of a group must call the same \
                     collectives in the same order with the same shapes and dtypes",
                    h.describe(),
                    ours.describe()
                ),
            });
        }
        Ok(())
    }
}

/// Asks for socket buffers of a few segments, so a sender rarely waits for
/// the receiver's wake-up (the kernel may cap the sizes; failures are harmless).
fn set_socket_buffers(c: &TcpStream) {
    let size: libc::c_int = SOCKET_BUFFER_BYTES as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on a valid socket with a pointer to a c_int of the given length.
        unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Splits `host:port` (IPv6 hosts in brackets).
fn split_addr(addr: &str) -> (&str, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse().unwrap_or(0),
        ),
        None => (addr, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_everything_once() {
        for numel in [0usize, 1, 2, 3, 7, 100] {
            for parts in 1..6 {
                let mut next = 0;
                for c in 0..parts {
                    let r = chunk_range(numel, parts, c);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, numel);
            }
        }
    }

    #[test]
    fn all_reduce_send_items_follow_receives() {
        for n in 2..6 {
            for r in 0..n {
                let p = all_reduce_plan(1_000_003, 4, n, r);
                for (j, s) in p.send.iter().enumerate().skip(p.lead) {
                    assert_eq!(s, &p.recv[j - p.lead].0);
                }
            }
        }
    }
}
