//! Raft's transport: the raft thread's messages to the other members, and theirs to it, over
//! the authenticated peer links (`node/peer.rs`, frame kind `RAFT`).
//!
//! Outgoing: [`Transport::send`] never blocks the raft thread. Each member has a bounded queue
//! ([`QUEUE`] messages) drained by its own thread over its own [`Channel`], so messages to a
//! member leave in raft's order and never wait behind Distro calls. The thread sends what is
//! queued as one batch (at most [`MAX_BATCH`] messages or [`MAX_BATCH_BYTES`]); a full queue
//! or a failed batch drops the messages (raft resends what matters) and tells raft the member
//! is unreachable, which slows its probing down.
//!
//! Snapshots stream in chunks of [`CHUNK`] bytes, each with its CRC32 and the first with the
//! CRC32 of the whole image, at most `rate` bytes per second per member. The receiver
//! assembles one snapshot per sender in memory, checks every checksum, and only then hands
//! the whole message to raft, which installs it atomically (`RaftStore::apply_snapshot`: file
//! written to a temporary name, fsynced, renamed). The sender reports the outcome to raft
//! (`report_snapshot`), so a failed stream is retried.
//!
//! Wire format of a `RAFT` frame body (after the peer layer's request number):
//! - batch: `1`, count (u32 LE), then per message its length (u32 LE) and protobuf bytes;
//! - removal notice: `3`, the removed member's raft id (u64 LE): the leader tells a member it
//!   removed from the group, which then refuses persistent writes saying why;
//! - snapshot chunk: `2`, sender id, snapshot index, offset, total length (u64 LE each),
//!   CRC32 of the whole image, CRC32 of this chunk, length of the metadata (u32 LE each), the
//!   metadata (the protobuf `MsgSnapshot` without its data; only in the chunk at offset 0),
//!   then the chunk's bytes.
//!
//! The answer is `ok`, or a reason the receiver refused the frame.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use crate::cluster::Members;
use crate::node::peer::{Channel, Handler, PeerSettings};

/// Most messages waiting for one member; beyond that new ones are dropped (and counted).
pub const QUEUE: usize = 8192;
/// Most messages in one batch frame.
pub const MAX_BATCH: usize = 4096;
/// About the most bytes in one batch frame (a batch stops growing past it).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Snapshot chunk size in bytes.
pub const CHUNK: usize = 1 << 20;
/// Largest snapshot a member accepts, in bytes.
pub const MAX_SNAPSHOT: u64 = 16 << 30;
/// Most snapshots being received at once (one per sending member).
pub const MAX_ASSEMBLIES: usize = 8;
/// A snapshot not finished this long after its first chunk is dropped.
const ASSEMBLY_TTL: Duration = Duration::from_secs(600);
/// How long a batch or a chunk may take to be answered.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

const BATCH: u8 = 1;
const SNAP_CHUNK: u8 = 2;
const REMOVED: u8 = 3;
const CHUNK_HEADER: usize = 1 + 8 * 4 + 4 * 3;

/// What reaches the raft thread from the transport.
#[derive(Debug)]
pub enum Inbound {
    /// A message from another member, to step into raft.
    Message(Box<Message>),
    /// Messages to this member could not be delivered.
    Unreachable(u64),
    /// The leader removed the member with this raft id from the group.
    Removed(u64),
    /// A snapshot sent to this member arrived whole (`ok`) or did not.
    SnapshotSent {
        /// The member's raft id.
        to: u64,
        /// Whether it arrived.
        ok: bool,
    },
}

/// Counters of the transport (`/metrics`).
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Messages handed to a member's thread.
    pub sent: AtomicU64,
    /// Messages dropped: a full queue or a failed batch.
    pub dropped: AtomicU64,
    /// Messages received from members.
    pub received: AtomicU64,
    /// Snapshot bytes streamed out.
    pub snapshot_bytes: AtomicU64,
}

/// The raft thread's outgoing side: one queue per other member (members join and leave at
/// run time: [`Transport::add`], [`Transport::remove`]).
#[derive(Debug)]
pub struct Transport {
    queues: RwLock<HashMap<u64, flume::Sender<Message>>>,
    /// Counters.
    pub stats: Arc<TransportStats>,
    inbound: flume::Sender<Inbound>,
    this: SocketAddr,
    settings: PeerSettings,
    stop: Arc<AtomicBool>,
    rate: u64,
}

impl Transport {
    /// Starts one sender thread per other member. `inbound` is the raft thread's inbox (reports
    /// go there); `rate` caps snapshot streaming per member, in bytes per second.
    pub fn start(
        members: &Members,
        settings: &PeerSettings,
        stop: Arc<AtomicBool>,
        inbound: flume::Sender<Inbound>,
        rate: u64,
    ) -> std::io::Result<Transport> {
        let t = Transport {
            queues: RwLock::default(),
            stats: Arc::default(),
            inbound,
            this: members.this(),
            settings: settings.clone(),
            stop,
            rate: rate.max(1),
        };
        for peer in members.peers() {
            t.add(peer.addr)?;
        }
        Ok(t)
    }

    /// Starts the sender thread of a member that joined the list (nothing if it has one).
    pub fn add(&self, to: SocketAddr) -> std::io::Result<()> {
        let id = Members::raft_id(to);
        let mut queues = self.queues.write().unwrap_or_else(|e| e.into_inner());
        if queues.contains_key(&id) {
            return Ok(());
        }
        let (tx, rx) = flume::bounded(QUEUE);
        let sender = Sender {
            to,
            to_id: id,
            channel: Channel::raft(self.this, to, self.settings.clone()),
            inbound: self.inbound.clone(),
            stats: self.stats.clone(),
            rate: self.rate,
            ping: self.settings.ping,
        };
        let stop = self.stop.clone();
        std::thread::Builder::new()
            .name(format!("muster-raft-{to}"))
            .spawn(move || sender.run(rx, &stop))?;
        queues.insert(id, tx);
        Ok(())
    }

    /// Tells the member at `to` that the group no longer has raft id `id` (sent from its own
    /// short-lived thread, at most 3 tries: the member may have left the list already, so it
    /// has no sender thread).
    pub fn tell_removed(&self, to: SocketAddr, id: u64) {
        let mut channel = Channel::raft(self.this, to, self.settings.clone());
        let mut body = vec![REMOVED];
        body.extend_from_slice(&id.to_le_bytes());
        let spawned = std::thread::Builder::new()
            .name(format!("muster-raft-removed-{to}"))
            .spawn(move || {
                for _ in 0..3 {
                    if channel.call(&body, CALL_TIMEOUT).is_ok_and(|a| a == b"ok") {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                tracing::warn!(member = %to, "could not tell a removed member it was removed");
            });
        if let Err(e) = spawned {
            tracing::warn!(member = %to, "cannot start a thread to tell a removed member: {e}");
        }
    }

    /// Ends the sender thread of a member that left the list (once its queue is drained).
    pub fn remove(&self, to: SocketAddr) {
        self.queues
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Members::raft_id(to));
    }

    /// Queues messages for their members without blocking. A message to a member with a full
    /// queue is dropped (a snapshot's failure is reported to raft at once).
    pub fn send(&self, msgs: Vec<Message>) {
        let queues = self.queues.read().unwrap_or_else(|e| e.into_inner());
        for m in msgs {
            let to = m.to;
            let Some(q) = queues.get(&to) else {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            match q.try_send(m) {
                Ok(()) => {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    let _ = self.inbound.try_send(if snapshot {
                        Inbound::SnapshotSent { to, ok: false }
                    } else {
                        Inbound::Unreachable(to)
                    });
                }
            }
        }
    }
}

/// One member's sender thread.
struct Sender {
    to: SocketAddr,
    to_id: u64,
    channel: Channel,
    inbound: flume::Sender<Inbound>,
    stats: Arc<TransportStats>,
    rate: u64,
    ping: Duration,
}

impl Sender {
    fn run(mut self, rx: flume::Receiver<Message>, stop: &AtomicBool) {
        let mut batch: Vec<Message> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(self.ping) {
                Ok(m) => batch.push(m),
                Err(flume::RecvTimeoutError::Timeout) => {
                    // Keeps the connection warm, so the next heartbeat does not dial.
                    let _ = self.channel.ping();
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => return,
            }
            let mut bytes = 0;
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(m) => {
                        bytes += m.compute_size() as usize;
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            // Snapshots go alone, in their place in the order.
            let mut plain = Vec::new();
            for m in batch.drain(..) {
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    self.send_batch(std::mem::take(&mut plain));
                    let ok = self.send_snapshot(m);
                    let _ = self
                        .inbound
                        .send(Inbound::SnapshotSent { to: self.to_id, ok });
                } else {
                    plain.push(m);
                }
            }
            self.send_batch(plain);
        }
    }

    fn send_batch(&mut self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let body = encode_batch(&msgs);
        match self.channel.call(&body, CALL_TIMEOUT) {
            Ok(answer) if answer == b"ok" => {}
            outcome => {
                tracing::debug!(peer = %self.to, ?outcome, dropped = msgs.len(), "raft batch not delivered");
                self.stats
                    .dropped
                    .fetch_add(msgs.len() as u64, Ordering::Relaxed);
                let _ = self.inbound.try_send(Inbound::Unreachable(self.to_id));
            }
        }
    }

    /// Streams one snapshot message in checksummed chunks at most `rate` bytes per second.
    /// True when the receiver took the whole of it.
    fn send_snapshot(&mut self, mut m: Message) -> bool {
        let data = std::mem::take(&mut m.mut_snapshot().data);
        let index = m.get_snapshot().get_metadata().index;
        let meta = m.write_to_bytes().unwrap_or_default();
        let whole = crc32fast::hash(&data);
        let started = Instant::now();
        let total = data.len();
        let mut offset = 0;
        tracing::info!(peer = %self.to, index, bytes = total, "streaming a snapshot");
        loop {
            let end = (offset + CHUNK).min(total);
            let chunk = &data[offset..end];
            let body = encode_chunk(
                ChunkHead {
                    from: m.from,
                    index,
                    offset: offset as u64,
                    total: total as u64,
                    whole,
                },
                if offset == 0 { &meta } else { &[] },
                chunk,
            );
            match self.channel.call(&body, CALL_TIMEOUT) {
                Ok(answer) if answer == b"ok" => {}
                outcome => {
                    tracing::warn!(peer = %self.to, index, offset, ?outcome, "snapshot stream failed; raft retries it");
                    return false;
                }
            }
            self.stats
                .snapshot_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            offset = end;
            if offset >= total {
                break;
            }
            // Rate cap: never ahead of `rate` bytes per second since the start.
            let due = Duration::from_secs_f64(offset as f64 / self.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        tracing::info!(peer = %self.to, index, bytes = total, ms = started.elapsed().as_millis() as u64, "snapshot streamed");
        true
    }
}

fn encode_batch(msgs: &[Message]) -> Vec<u8> {
    let mut out = vec![BATCH];
    out.extend_from_slice(&(msgs.len() as u32).to_le_bytes());
    for m in msgs {
        let b = m.write_to_bytes().unwrap_or_default();
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(&b);
    }
    out
}

/// A snapshot chunk's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChunkHead {
    from: u64,
    index: u64,
    offset: u64,
    total: u64,
    whole: u32,
}

fn encode_chunk(h: ChunkHead, meta: &[u8], chunk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHUNK_HEADER + meta.len() + chunk.len());
    out.push(SNAP_CHUNK);
    for v in [h.from, h.index, h.offset, h.total] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [h.whole, crc32fast::hash(chunk), meta.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(meta);
    out.extend_from_slice(chunk);
    out
}

/// Why a raft frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes do not parse.
    #[error("malformed raft frame: {0}")]
    Malformed(String),
    /// A chunk's or a whole snapshot's checksum does not match.
    #[error("snapshot {index} from {from}: {what} checksum mismatch")]
    Checksum {
        /// The sender's raft id.
        from: u64,
        /// The snapshot index.
        index: u64,
        /// `chunk at N` or `image`.
        what: String,
    },
    /// A chunk that does not continue the snapshot being assembled.
    #[error("snapshot {index} from {from}: chunk at {offset} does not follow ({have} bytes held)")]
    OutOfOrder {
        /// The sender's raft id.
        from: u64,
        /// The snapshot index.
        index: u64,
        /// The chunk's offset.
        offset: u64,
        /// Bytes assembled so far.
        have: u64,
    },
}

fn malformed(why: impl Into<String>) -> FrameError {
    FrameError::Malformed(why.into())
}

/// A snapshot being received from one member.
struct Assembly {
    started: Instant,
    index: u64,
    total: u64,
    whole: u32,
    meta: Message,
    data: Vec<u8>,
}

/// The receiving side: decodes frames, assembles snapshots per sender, and hands whole
/// messages to the raft thread.
#[derive(Default)]
pub struct Receiver {
    assemblies: Mutex<HashMap<u64, Assembly>>,
}

impl Receiver {
    /// Decodes one frame body into the messages it completes (none for a snapshot chunk that
    /// is not the last).
    pub fn accept(&self, body: &[u8]) -> Result<Vec<Message>, FrameError> {
        match body.first() {
            Some(&BATCH) => decode_batch(&body[1..]),
            Some(&SNAP_CHUNK) => self.chunk(body).map(|m| m.into_iter().collect()),
            Some(k) => Err(malformed(format!("unknown raft frame tag {k}"))),
            None => Err(malformed("empty raft frame")),
        }
    }

    fn chunk(&self, body: &[u8]) -> Result<Option<Message>, FrameError> {
        if body.len() < CHUNK_HEADER {
            return Err(malformed("snapshot chunk shorter than its header"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8"));
        let u32_at = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().expect("4"));
        let (from, index, offset, total) = (u64_at(1), u64_at(9), u64_at(17), u64_at(25));
        let (whole, crc, meta_len) = (u32_at(33), u32_at(37), u32_at(41) as usize);
        let rest = &body[CHUNK_HEADER..];
        if meta_len > rest.len() {
            return Err(malformed("snapshot chunk metadata overruns the frame"));
        }
        let (meta, chunk) = rest.split_at(meta_len);
        if crc32fast::hash(chunk) != crc {
            return Err(FrameError::Checksum {
                from,
                index,
                what: format!("chunk at {offset}"),
            });
        }
        if total > MAX_SNAPSHOT {
            return Err(malformed(format!(
                "snapshot of {total} bytes is over the {MAX_SNAPSHOT} byte cap"
            )));
        }
        let mut all = self.assemblies.lock().unwrap_or_else(|e| e.into_inner());
        if offset == 0 {
            let meta = Message::parse_from_bytes(meta)
                .map_err(|e| malformed(format!("snapshot metadata: {e}")))?;
            // A sender that stopped mid-stream leaves its assembly behind: drop stale ones,
            // and hold at most MAX_ASSEMBLIES at once (the sender id is the frame's word, so a
            // member could otherwise open any number).
            all.retain(|_, a| a.started.elapsed() < ASSEMBLY_TTL);
            if !all.contains_key(&from) && all.len() >= MAX_ASSEMBLIES {
                return Err(malformed(format!(
                    "{MAX_ASSEMBLIES} snapshots are being received already"
                )));
            }
            all.insert(
                from,
                Assembly {
                    index,
                    total,
                    whole,
                    meta,
                    data: Vec::with_capacity(total.min(4 * CHUNK as u64) as usize),
                    started: Instant::now(),
                },
            );
        }
        let a = match all.get_mut(&from) {
            Some(a) if a.index == index && a.data.len() as u64 == offset => a,
            other => {
                let have = other.map_or(0, |a| a.data.len() as u64);
                all.remove(&from);
                return Err(FrameError::OutOfOrder {
                    from,
                    index,
                    offset,
                    have,
                });
            }
        };
        if a.data.len() as u64 + chunk.len() as u64 > a.total {
            all.remove(&from);
            return Err(malformed("snapshot chunk runs past the announced length"));
        }
        a.data.extend_from_slice(chunk);
        if (a.data.len() as u64) < a.total {
            return Ok(None);
        }
        let a = all.remove(&from).expect("present");
        if crc32fast::hash(&a.data) != a.whole {
            return Err(FrameError::Checksum {
                from,
                index,
                what: "image".into(),
            });
        }
        let mut m = a.meta;
        m.mut_snapshot().data = a.data.into();
        Ok(Some(m))
    }
}

fn decode_batch(b: &[u8]) -> Result<Vec<Message>, FrameError> {
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8], FrameError> {
        let end = at + n;
        let part = b
            .get(at..end)
            .ok_or_else(|| malformed("raft batch cut short"))?;
        at = end;
        Ok(part)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
    if count > MAX_BATCH {
        return Err(malformed(format!("raft batch of {count} messages")));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        let m = Message::parse_from_bytes(take(len)?)
            .map_err(|e| malformed(format!("raft message: {e}")))?;
        out.push(m);
    }
    if at != b.len() {
        return Err(malformed(format!(
            "{} bytes after the batch's {count} messages",
            b.len() - at
        )));
    }
    Ok(out)
}

/// The peer handler of `RAFT` frames: decoded messages go to the raft thread's inbox without
/// blocking (a full inbox drops them; raft resends), a whole snapshot waits up to 1 s for room.
/// Answers `ok`, or why the frame was refused.
pub fn handler(
    receiver: Arc<Receiver>,
    inbox: flume::Sender<Inbound>,
    stats: Arc<TransportStats>,
) -> Handler {
    Arc::new(move |body: Vec<u8>| {
        if let Some(id) = removal(&body) {
            return match inbox.send_timeout(Inbound::Removed(id), Duration::from_secs(1)) {
                Ok(()) => b"ok".to_vec(),
                Err(_) => b"raft inbox full".to_vec(),
            };
        }
        serve(&receiver, &inbox, &stats, &body)
    })
}

/// The raft id a removal notice names, if `body` is one.
fn removal(body: &[u8]) -> Option<u64> {
    match body {
        [REMOVED, id @ ..] if id.len() == 8 => Some(u64::from_le_bytes(id.try_into().ok()?)),
        _ => None,
    }
}

fn serve(
    receiver: &Receiver,
    inbox: &flume::Sender<Inbound>,
    stats: &TransportStats,
    body: &[u8],
) -> Vec<u8> {
    match receiver.accept(body) {
        Ok(msgs) => {
            for m in msgs {
                stats.received.fetch_add(1, Ordering::Relaxed);
                let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
                let item = Inbound::Message(Box::new(m));
                if snapshot {
                    if inbox.send_timeout(item, Duration::from_secs(1)).is_err() {
                        return b"raft inbox full".to_vec();
                    }
                } else {
                    let _ = inbox.try_send(item);
                }
            }
            b"ok".to_vec()
        }
        Err(e) => {
            tracing::warn!("refused a raft frame: {e}");
            e.to_string().into_bytes()
        }
    }
}

/// Fuzz entry: feeds `frames` in order to one [`Receiver`], as one peer connection's `RAFT`
/// frame bodies arrive (so snapshot chunks assemble across frames); a removal notice is taken
/// out first, as [`handler`] does. Returns how many messages (and notices) reached raft.
///
/// Checks besides not panicking: an accepted batch holds at most [`MAX_BATCH`] messages and
/// re-encodes (`encode_batch`, what a sender writes) to as many bytes, and a second round
/// trip gives the same messages; a frame yields at most one snapshot, whose image is no
/// larger than the chunk bytes fed so far; and the receiver holds at most one assembly per
/// sender id seen.
#[doc(hidden)]
pub fn decode_for_fuzz(frames: &[&[u8]]) -> usize {
    let r = Receiver::default();
    let mut delivered = 0;
    let mut fed = 0usize;
    let mut senders = std::collections::HashSet::new();
    for body in frames {
        fed += body.len();
        if removal(body).is_some() {
            delivered += 1;
            continue;
        }
        if body.first() == Some(&SNAP_CHUNK) && body.len() >= CHUNK_HEADER {
            senders.insert(u64::from_le_bytes(body[1..9].try_into().expect("8")));
        }
        let Ok(msgs) = r.accept(body) else {
            continue;
        };
        if body.first() == Some(&BATCH) {
            assert!(msgs.len() <= MAX_BATCH, "a batch of {}", msgs.len());
            // Not `again == msgs`: a parsed message can hold an empty but present unknown-field
            // map (a merged submessage cleared by a later one) that encodes to nothing, so the
            // structs differ while the bytes agree. What must hold: the re-encoding has the
            // same length (unknown fields may come out in another order) and one more round
            // trip changes nothing.
            let bytes = encode_batch(&msgs);
            let again = decode_batch(&bytes[1..]).expect("a re-encoded batch");
            let bytes2 = encode_batch(&again);
            assert_eq!(
                bytes.len(),
                bytes2.len(),
                "a batch changed length through a round trip"
            );
            let third = decode_batch(&bytes2[1..]).expect("a twice re-encoded batch");
            assert_eq!(third, again, "a batch changed through encode and decode");
        } else {
            assert!(msgs.len() <= 1, "{} messages from one chunk", msgs.len());
            for m in &msgs {
                let image = m.get_snapshot().get_data().len();
                assert!(image <= fed, "a snapshot of {image} bytes from {fed} fed");
            }
        }
        delivered += msgs.len();
    }
    let held = r.assemblies.lock().unwrap_or_else(|e| e.into_inner()).len();
    assert!(
        held <= senders.len(),
        "{held} assemblies for {} senders",
        senders.len()
    );
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_msg(data: Vec<u8>) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = 7;
        m.to = 9;
        m.term = 3;
        let s = m.mut_snapshot();
        s.mut_metadata().index = 42;
        s.mut_metadata().term = 3;
        s.data = data.into();
        m
    }

    fn chunks(m: &Message, size: usize) -> Vec<Vec<u8>> {
        let mut meta = m.clone();
        let data = std::mem::take(&mut meta.mut_snapshot().data).to_vec();
        let metab = meta.write_to_bytes().unwrap();
        let whole = crc32fast::hash(&data);
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            let end = (off + size).min(data.len());
            let head = ChunkHead {
                from: m.from,
                index: 42,
                offset: off as u64,
                total: data.len() as u64,
                whole,
            };
            out.push(encode_chunk(
                head,
                if off == 0 { &metab } else { &[] },
                &data[off..end],
            ));
            off = end;
            if off >= data.len() {
                return out;
            }
        }
    }

    /// A batch decodes to the same messages, in order.
    #[test]
    fn batches_round_trip() {
        let mut a = Message::default();
        a.set_msg_type(MessageType::MsgAppend);
        a.from = 1;
        a.to = 2;
        a.index = 5;
        let e = raft::eraftpb::Entry {
            data: b"payload".to_vec().into(),
            context: vec![1, 2, 3].into(),
            ..Default::default()
        };
        a.entries = vec![e].into();
        let mut b = Message::default();
        b.set_msg_type(MessageType::MsgHeartbeat);
        let body = encode_batch(&[a.clone(), b.clone()]);
        let got = Receiver::default().accept(&body).unwrap();
        assert_eq!(got, vec![a, b]);
        assert!(Receiver::default().accept(&body[..body.len() - 1]).is_err());
        let mut long = body.clone();
        long.push(0);
        assert!(
            Receiver::default().accept(&long).is_err(),
            "bytes after the counted messages"
        );
    }

    /// At most MAX_ASSEMBLIES senders stream snapshots at once; a further one is refused until
    /// one finishes.
    #[test]
    fn snapshot_assemblies_are_capped() {
        let r = Receiver::default();
        let data = vec![7u8; 100];
        for from in 0..MAX_ASSEMBLIES as u64 + 1 {
            let mut m = snapshot_msg(data.clone());
            m.from = 100 + from;
            let first = chunks(&m, 10).remove(0);
            let got = r.accept(&first);
            if from < MAX_ASSEMBLIES as u64 {
                assert!(got.unwrap().is_empty());
            } else {
                assert!(got.is_err(), "the ninth sender is refused");
            }
        }
    }

    /// A snapshot arrives whole only after its last chunk, byte for byte; a damaged chunk, a
    /// chunk out of order or a wrong whole-image checksum is refused and nothing reaches raft.
    #[test]
    fn snapshots_assemble_from_checked_chunks() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let m = snapshot_msg(data.clone());
        let parts = chunks(&m, 3000);
        assert_eq!(parts.len(), 4);
        let r = Receiver::default();
        for p in &parts[..3] {
            assert!(r.accept(p).unwrap().is_empty());
        }
        let got = r.accept(&parts[3]).unwrap();
        assert_eq!(got, vec![m.clone()]);

        // A flipped byte in a chunk's data.
        let r = Receiver::default();
        let mut bad = parts[1].clone();
        *bad.last_mut().unwrap() ^= 1;
        r.accept(&parts[0]).unwrap();
        assert!(matches!(r.accept(&bad), Err(FrameError::Checksum { .. })));

        // A chunk skipped.
        let r = Receiver::default();
        r.accept(&parts[0]).unwrap();
        assert!(matches!(
            r.accept(&parts[2]),
            Err(FrameError::OutOfOrder { .. })
        ));

        // The chunks are fine but the whole image's checksum is not.
        let r = Receiver::default();
        let mut first = parts[0].clone();
        first[33] ^= 1;
        for p in std::iter::once(&first).chain(&parts[1..3]) {
            r.accept(p).unwrap();
        }
        assert!(matches!(
            r.accept(&parts[3]),
            Err(FrameError::Checksum { .. })
        ));
    }
}
