//! The raft thread: drives the consensus [`Driver`] over the WAL-backed store, carries out its
//! actions (append, fdatasync, apply, snapshot) and hands committed ops to the owner shards.
//!
//! Persistent writes go propose → persist → commit → apply → answer: a shard sends a
//! [`Proposal`]; this thread proposes it, appends and fdatasyncs the Ready's entries (one sync
//! per Ready: group commit), and once raft commits the entry it folds the op into the [`StateMachine`]
//! and hands it to the owner shard, which applies it to the registry and answers the client.
//! Only this thread touches the WAL, so no shard ever waits on its IO.
//!
//! Standalone Muster runs a one-member group (node id 1). A cluster member runs one voter of
//! the group ([`crate::hash::raft_id`] of its member address), exchanging messages through
//! [`Transport`]. Any member takes persistent writes: raft forwards a follower's proposal to
//! the leader (raft-rs's `MsgPropose`), and the entry's context (this node's id and a local id)
//! lets the proposing member answer its client once it has applied the entry itself, so it
//! reads its own write. A write waits at most [`LEADER_WAIT`] for a leader to be known and
//! [`COMMIT_WAIT`] to be applied, then fails with 503 `no raft leader …`; it is never
//! acknowledged before it is committed and applied here.
//!
//! A storage failure fails every pending proposal with 500 and reopens the store from disk,
//! so nothing unsynced is ever acknowledged and writes resume once the cause (e.g. a full
//! disk) is gone.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_storage::raft_store::RaftStore;
use muster_storage::wal::Options;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry};
use raft::StateRole;

use crate::clock::wall_ms;
use crate::consensus;
use crate::consensus::driver::{Action, Driver, Ticks};
use crate::consensus::recover::{fold, Recovery};
use crate::consensus::state_machine::{Change, StateMachine};
use crate::error::{ApiError, ApiResult};
use crate::naming::op::PersistentOp;
use crate::naming::service::ServiceKey;
use crate::naming::write::{Reply, Restore};
use crate::node::mailbox::{Message, Op};
use crate::node::shard::Shared;
use crate::node::transport::Inbound;
use crate::node::Error;

/// Most proposals taken into one Ready (one fdatasync).
const MAX_BATCH: usize = 4096;
/// How long a persistent write waits for a leader to be known before it fails with 503.
pub const LEADER_WAIT: Duration = Duration::from_millis(1500);
/// How long a proposed write waits to be committed and applied here before it fails with 503
/// (whether it commits later is unknown to its client). With [`LEADER_WAIT`], a write is
/// answered within 4 s, inside a forwarding peer's 4 s wait.
pub const COMMIT_WAIT: Duration = Duration::from_millis(2500);
/// Entries kept behind a snapshot in a cluster, so a briefly lagging follower catches up from
/// the log instead of a snapshot.
const KEEP_BEHIND_SNAPSHOT: u64 = 1024;

/// A persistent change waiting for consensus.
#[derive(Debug)]
pub struct Proposal {
    /// The service.
    pub key: ServiceKey,
    /// The change.
    pub op: PersistentOp,
    /// Answered by the owner shard after it applied the committed change.
    pub reply: flume::Sender<ApiResult<Reply>>,
}

/// A linearizable read: answered `Ok` once this node has applied everything a quorum had
/// committed when the read arrived (raft's ReadIndex), so a read served locally afterwards
/// sees every write acknowledged before it began.
#[derive(Debug)]
pub struct ReadBarrier {
    /// Where the answer goes.
    pub reply: flume::Sender<ApiResult<()>>,
}

/// Settings of the raft thread.
#[derive(Debug, Clone, Copy)]
pub struct RaftSettings {
    /// Take a snapshot (and truncate the log behind it) every this many applied entries, or
    /// every as many entries as the persistent state has records, whichever is more.
    pub snapshot_entries: u64,
    /// This node's raft id (1 standalone).
    pub id: u64,
    /// Raft's tick period.
    pub tick: Duration,
    /// Election and heartbeat ticks.
    pub ticks: Ticks,
}

/// What the raft thread reads from besides proposals.
pub struct Inputs {
    /// Naming proposals from the shards.
    pub proposals: flume::Receiver<Proposal>,
    /// Linearizable-read barriers.
    pub reads: flume::Receiver<ReadBarrier>,
    /// Messages and reports from the transport (none standalone).
    pub inbound: flume::Receiver<Inbound>,
}

/// This node's raft state as the raft thread last published it (`/v1/core/cluster/nodes`,
/// `/metrics`). Each field is read on its own; together they may be a moment apart.
#[derive(Debug, Default)]
pub struct RaftView {
    /// This node's raft id.
    pub id: AtomicU64,
    /// 0 follower, 1 candidate, 2 leader, 3 pre-candidate.
    pub role: AtomicU8,
    /// Current term.
    pub term: AtomicU64,
    /// The leader's raft id (0: none known).
    pub leader: AtomicU64,
    /// Highest committed index.
    pub committed: AtomicU64,
    /// Highest applied index.
    pub applied: AtomicU64,
    /// Voters of the current membership.
    pub voters: Mutex<Vec<u64>>,
}

impl RaftView {
    /// The role's name as Nacos spells raft roles.
    pub fn role_name(&self) -> &'static str {
        match self.role.load(Ordering::Relaxed) {
            2 => "LEADER",
            1 => "CANDIDATE",
            3 => "PRE_CANDIDATE",
            _ => "FOLLOWER",
        }
    }

    /// Renders (Prometheus text) this node's raft state and, in a cluster, the raft transport's counters.
    pub fn render(&self, s: &mut String, transport: Option<&crate::node::transport::Transport>) {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let view = self;
        let voters = view.voters.lock().unwrap_or_else(|e| e.into_inner()).len();
        let gauges: [(&str, &str, u64); 6] = [
            (
                "muster_raft_term",
                "The current raft term.",
                view.term.load(Relaxed),
            ),
            (
                "muster_raft_is_leader",
                "1 while this node leads the raft group.",
                u64::from(view.role.load(Relaxed) == 2),
            ),
            (
                "muster_raft_leader_known",
                "1 while this node knows a raft leader.",
                u64::from(view.leader.load(Relaxed) != 0),
            ),
            (
                "muster_raft_committed_index",
                "Highest committed raft index.",
                view.committed.load(Relaxed),
            ),
            (
                "muster_raft_applied_index",
                "Highest applied raft index.",
                view.applied.load(Relaxed),
            ),
            (
                "muster_raft_voters",
                "Voters in the raft membership.",
                voters as u64,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let Some(t) = transport else {
            return;
        };
        let counters: [(&str, &str, u64); 4] = [
            (
                "muster_raft_messages_sent_total",
                "Raft messages handed to a member's sender.",
                t.stats.sent.load(Relaxed),
            ),
            (
                "muster_raft_messages_dropped_total",
                "Raft messages dropped (full queue or failed batch; raft resends).",
                t.stats.dropped.load(Relaxed),
            ),
            (
                "muster_raft_messages_received_total",
                "Raft messages received from members.",
                t.stats.received.load(Relaxed),
            ),
            (
                "muster_raft_snapshot_bytes_sent_total",
                "Snapshot bytes streamed to members.",
                t.stats.snapshot_bytes.load(Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
    }

    /// Stores the driver's status; the voters too when `voters` (they allocate: once a tick).
    fn publish(&self, node: &Node, voters: bool) {
        let st = node.status();
        self.id.store(st.id, Ordering::Relaxed);
        self.role.store(
            match st.role {
                StateRole::Follower => 0,
                StateRole::Candidate => 1,
                StateRole::Leader => 2,
                StateRole::PreCandidate => 3,
            },
            Ordering::Relaxed,
        );
        self.term.store(st.term, Ordering::Relaxed);
        self.leader.store(st.leader, Ordering::Relaxed);
        self.committed.store(st.committed, Ordering::Relaxed);
        self.applied.store(st.applied, Ordering::Relaxed);
        if !voters {
            return;
        }
        let voters = node.conf_state().voters;
        let mut v = self.voters.lock().unwrap_or_else(|e| e.into_inner());
        if *v != voters {
            *v = voters;
        }
    }
}

/// Starts the raft thread: replays recovered state to the owner shards, marks the server
/// ready once they applied it, then serves proposals until every sender is gone.
pub fn spawn(
    rec: Recovery,
    shared: Arc<Shared>,
    inputs: Inputs,
    settings: RaftSettings,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("muster-raft".into())
        .spawn(move || run(rec, shared, inputs, settings))
}

/// Sends `op` for `key` to its owner shard's mailbox (blocking while the inbox is full: the
/// raft thread never drops committed work). A stopped shard answers `reply` with 503.
fn dispatch(
    shared: &Shared,
    key: ServiceKey,
    op: Op,
    reply: Option<flume::Sender<ApiResult<Reply>>>,
) {
    let owner = shared.ownership.shard(&key);
    if let Err(e) = shared.inboxes[owner].send(Message::Apply { key, op, reply }) {
        if let Message::Apply { reply: Some(r), .. } = e.into_inner() {
            let _ = r.send(Err(Error::ShuttingDown("shutting down".into()).into()));
        }
    }
}

/// A write this node proposed, waiting for its entry to be applied here.
enum Waiter {
    Naming(flume::Sender<ApiResult<Reply>>),
    Config,
    Read(flume::Sender<ApiResult<()>>),
}

/// A change that waits for a leader to be known before it is proposed.
enum Held {
    Naming(Proposal),
    Config(crate::node::config::ConfigProposal),
}

/// The raft thread's state besides the driver.
struct Thread {
    shared: Arc<Shared>,
    settings: RaftSettings,
    sm: StateMachine,
    /// Proposals and reads in flight by local id (the entry context carries this node's id
    /// and it), with the instant they give up.
    pending: HashMap<u64, (Waiter, Instant)>,
    /// Local ids in the order they expire.
    deadlines: VecDeque<(Instant, u64)>,
    /// Reads confirmed at an index this node has not applied yet: (index, local id).
    reads_due: Vec<(u64, u64)>,
    /// Changes waiting for a leader, with the instant they give up.
    held: VecDeque<(Instant, Held)>,
    since_snapshot: u64,
    /// Local ids start at the wall clock in µs, so an entry proposed by an earlier run of this
    /// node never matches a waiter of this one.
    next_id: u64,
    /// When the last membership change was proposed.
    last_change: Option<Instant>,
    /// A conf change was applied since the last snapshot: take one now, and compact the
    /// whole log behind it.
    membership_changed: bool,
    /// The leader told this member it removed it from the group.
    removed: bool,
    /// Every member address seen in the list, by raft id (a removed member is told so even
    /// after it left the list).
    known: HashMap<u64, std::net::SocketAddr>,
}

fn run(rec: Recovery, shared: Arc<Shared>, inputs: Inputs, settings: RaftSettings) {
    let Recovery {
        store,
        sm,
        tail,
        dir,
        segment_bytes,
    } = rec;
    let Inputs {
        proposals,
        reads,
        inbound,
    } = inputs;
    // Rebuild the owners' registries, one message per service, then wait until every shard
    // has applied them.
    let restoring = Instant::now();
    tracing::info!(
        services = sm.naming.service_count(),
        instances = sm.naming.instance_count(),
        applied = sm.applied,
        "recovered persistent state"
    );
    for (key, s) in sm.naming.services() {
        let restore = Restore {
            settings: s.settings.clone(),
            clusters: s
                .clusters
                .iter()
                .map(|(n, m)| (n.clone(), m.clone()))
                .collect(),
            instances: s.instances().cloned().collect(),
        };
        dispatch(&shared, key.clone(), Op::Restore(Box::new(restore)), None);
    }
    let mut barriers = Vec::new();
    for shard in 0..shared.inboxes.len() {
        let (tx, rx) = flume::bounded(1);
        let _ = shared.inboxes[shard].send(Message::Barrier { reply: tx });
        barriers.push(rx);
    }
    for b in barriers {
        let _ = b.recv();
    }
    tracing::info!(
        restore_ms = restoring.elapsed().as_millis() as u64,
        "the shards hold the recovered state"
    );
    let mut node = match new_node(store, sm.applied, &settings) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("cannot start the raft node: {e}");
            return;
        }
    };
    let mut t = Thread {
        shared: shared.clone(),
        settings,
        sm,
        pending: HashMap::new(),
        deadlines: VecDeque::new(),
        reads_due: Vec::new(),
        held: VecDeque::new(),
        // Entries replayed from the log count towards the next snapshot, so a long log left
        // by the last run is folded into one soon after startup (never before ready:
        // snapshots are taken only in the serving loop).
        since_snapshot: tail,
        next_id: wall_ms().saturating_mul(1000),
        last_change: None,
        membership_changed: false,
        removed: false,
        known: HashMap::new(),
    };
    // A one-voter group elects itself on its first Ready: become leader before opening the
    // gate, so the first write after readiness does not meet "no leader yet". A member of a
    // larger group opens at once: reads are local, and writes wait for a leader.
    for _ in 0..100 {
        if node.is_leader() || node.conf_state().voters != [settings.id] {
            break;
        }
        if let Err(e) = t.on_ready(&mut node) {
            tracing::error!("raft failed while electing itself: {e}");
            return;
        }
        if !node.is_leader() {
            node.tick();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    shared.raft.publish(&node, true);
    shared.recovered.store(true, Ordering::SeqCst);
    shared.ready.store(true, Ordering::SeqCst);
    tracing::info!(id = settings.id, "persistent state is ready");

    let mut last_tick = Instant::now();
    let mut batch = Vec::new();
    let mut config_batch = Vec::new();
    let mut read_batch = Vec::new();
    let mut messages = Vec::new();
    loop {
        let wait = settings.tick.saturating_sub(last_tick.elapsed());
        // Naming and config proposals share the Ready (one fdatasync for both).
        let mut selector = flume::Selector::new()
            .recv(&proposals, |r| r.map(|p| batch.push(p)))
            .recv(&shared.configs.rx, |r| r.map(|p| config_batch.push(p)))
            .recv(&reads, |r| r.map(|p| read_batch.push(p)));
        // Standalone has no transport, so nothing ever sends on `inbound`: a disconnected
        // receiver is always ready, and selecting on it would spin this thread at 100% CPU.
        if !inbound.is_disconnected() {
            selector = selector.recv(&inbound, |r| r.map(|p| messages.push(p)));
        }
        let got = selector.wait_timeout(wait);
        match got {
            Ok(Ok(())) => {
                // Take whatever else is queued, up to a Ready's worth each.
                batch.extend(proposals.try_iter().take(MAX_BATCH));
                config_batch.extend(shared.configs.rx.try_iter().take(MAX_BATCH));
                read_batch.extend(reads.try_iter().take(MAX_BATCH));
                messages.extend(inbound.try_iter().take(MAX_BATCH));
            }
            Err(flume::select::SelectError::Timeout) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
            }
            // The shards are gone (every proposal sender dropped): stop.
            Ok(Err(flume::RecvError::Disconnected)) => {
                if proposals.is_disconnected() || shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
            }
        }
        // Once per tick, not per wake-up: the membership is moved towards the list and the
        // voters published (both allocate and read the member list).
        let ticked = last_tick.elapsed() >= settings.tick;
        if ticked {
            node.tick();
            last_tick = Instant::now();
        }
        for m in messages.drain(..) {
            match m {
                Inbound::Message(m) => {
                    // A message from a member this node does not know, or a stale one, is
                    // refused by raft; nothing to do.
                    let _ = node.step(*m);
                }
                Inbound::Unreachable(id) => node.report_unreachable(id),
                Inbound::Removed(id) if id == settings.id && !t.removed => {
                    tracing::warn!(
                        id,
                        "the raft leader removed this member from the group: it takes no \
                         persistent writes (add it to the member list again to rejoin)"
                    );
                    t.removed = true;
                    // Remembered across a restart: the log's membership lacks this member.
                    let mut cs = node.conf_state();
                    cs.voters.retain(|&v| v != settings.id);
                    let store = node.store_mut();
                    if let Err(e) = store.set_conf_state(&cs).and_then(|()| store.sync()) {
                        tracing::warn!("cannot record the removal in the log: {e}");
                    }
                }
                Inbound::Removed(_) => {}
                Inbound::SnapshotSent { to, ok } => node.report_snapshot(to, ok),
            }
        }
        t.propose(&mut node, batch.drain(..).map(Held::Naming));
        t.propose(&mut node, config_batch.drain(..).map(Held::Config));
        for r in read_batch.drain(..) {
            let id = t.next();
            node.read_index(t.context(id));
            t.wait(id, Waiter::Read(r.reply), COMMIT_WAIT);
        }
        if ticked {
            t.reconcile(&mut node);
        }
        let step = t
            .on_ready(&mut node)
            .and_then(|()| t.maybe_snapshot(&mut node));
        match step {
            Ok(()) => {
                t.expire(&node);
                shared.raft.publish(&node, ticked);
            }
            Err(e) => {
                if e.is_disk_failure() {
                    stop_on_disk_failure(&dir, &e);
                }
                tracing::error!(dir = %dir.display(), "{e}; failing pending writes and reopening the log");
                t.fail_all(&Error::storage(&e).into());
                // The old store holds the directory lock: drop it before reopening.
                let old = node;
                drop(old);
                match reopen(&dir, segment_bytes, &mut t.sm, &shared, &settings) {
                    Ok(n) => node = n,
                    Err(e) => {
                        tracing::error!(
                            "cannot reopen the write-ahead log: {e}; persistent writes stop"
                        );
                        shared.ready.store(false, Ordering::SeqCst);
                        fail_forever(&proposals, &e.to_string());
                        return;
                    }
                }
            }
        }
    }
}

impl Thread {
    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// An entry's context: this node's raft id and the local id of its waiter.
    fn context(&self, id: u64) -> Vec<u8> {
        let mut c = self.settings.id.to_le_bytes().to_vec();
        c.extend_from_slice(&id.to_le_bytes());
        c
    }

    /// The local id in an entry's context when this node proposed it (a standalone log from
    /// before contexts named the node carries the id alone).
    fn local(&self, context: &[u8]) -> Option<u64> {
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        match context.len() {
            16 if word(&context[..8]) == self.settings.id => Some(word(&context[8..])),
            8 => Some(word(context)),
            _ => None,
        }
    }

    fn wait(&mut self, id: u64, w: Waiter, within: Duration) {
        let until = Instant::now() + within;
        self.pending.insert(id, (w, until));
        self.deadlines.push_back((until, id));
    }

    /// Proposes changes, or holds them while no leader is known (at most [`LEADER_WAIT`]).
    /// A member that is not a voter refuses them.
    fn propose(&mut self, node: &mut Node, changes: impl Iterator<Item = Held>) {
        let mut changes = changes.peekable();
        if changes.peek().is_none() {
            return;
        }
        let voter = !self.removed && node.conf_state().voters.contains(&self.settings.id);
        for c in changes {
            if !voter {
                let why = if self.removed {
                    "the leader removed it".to_string()
                } else if node.conf_state().voters.is_empty() {
                    "waiting to be added by the leader".to_string()
                } else {
                    format!("raft id {} is not among the voters", self.settings.id)
                };
                c.fail(&Error::NotVoter(why).into());
                continue;
            }
            if node.leader() == 0 {
                self.held.push_back((Instant::now() + LEADER_WAIT, c));
                continue;
            }
            self.propose_one(node, c);
        }
    }

    fn propose_one(&mut self, node: &mut Node, c: Held) {
        let id = self.next();
        let ctx = self.context(id);
        let (ev, waiter) = match c {
            Held::Naming(p) => {
                let ev = Change::Naming {
                    key: p.key.clone(),
                    op: p.op,
                }
                .to_event(wall_ms());
                (ev, Waiter::Naming(p.reply))
            }
            Held::Config(p) => {
                let ev = Change::Config(p.op).to_event(wall_ms());
                self.shared.configs.proposed(id, p.reply);
                (ev, Waiter::Config)
            }
        };
        match node.propose(ctx, ev.encode()) {
            Ok(()) => self.wait(id, waiter, COMMIT_WAIT),
            Err(e) => {
                let err: ApiError = match e {
                    raft::Error::ProposalDropped => {
                        Error::NoLeader("took the write (a leader change is under way)".into())
                    }
                    e => Error::Rejected(e.to_string()),
                }
                .into();
                self.answer(id, waiter, Err(err));
            }
        }
    }

    /// Answers a waiter that will not be applied here.
    fn answer(&self, id: u64, w: Waiter, r: ApiResult<()>) {
        match (w, r) {
            (Waiter::Naming(reply), r) => {
                let _ = reply.send(r.map(|()| Reply::Ok));
            }
            (Waiter::Config, Ok(())) => {}
            (Waiter::Config, Err(e)) => self.shared.configs.expire(id, &e),
            (Waiter::Read(reply), r) => {
                let _ = reply.send(r);
            }
        }
    }

    /// Fails what waited too long: held changes with no leader in sight, and proposals and
    /// reads not applied within [`COMMIT_WAIT`]. Proposes held changes once a leader is known.
    fn expire(&mut self, node: &Node) {
        let now = Instant::now();
        while let Some((until, id)) = self.deadlines.front().copied() {
            if until > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some((w, _)) = self.pending.remove(&id) {
                let leader = node.leader();
                let why = if leader == 0 {
                    format!("is elected (waited {} ms)", COMMIT_WAIT.as_millis())
                } else {
                    format!(
                        "committed the write within {} ms (leader {}); whether it commits \
                         later is unknown",
                        COMMIT_WAIT.as_millis(),
                        self.leader_name(leader)
                    )
                };
                self.answer(id, w, Err(Error::NoLeader(why).into()));
            }
        }
        while let Some((until, _)) = self.held.front() {
            if *until > now {
                break;
            }
            let (_, c) = self.held.pop_front().expect("front");
            let why = format!("elected within {} ms", LEADER_WAIT.as_millis());
            c.fail(&Error::NoLeader(why).into());
        }
    }

    /// On the leader: moves the raft membership one change at a time towards the member list.
    /// A listed member that is not a voter is added once its peer link is UP (adding an
    /// unreachable one could cost the quorum); then a voter that is no longer listed is
    /// removed. This member never removes itself: a leader taken off the list hands
    /// leadership over first. At most one change is in flight, and one is tried per second.
    fn reconcile(&mut self, node: &mut Node) {
        let Some(members) = self.shared.members.clone() else {
            return;
        };
        if !node.is_leader()
            || node.conf_change_pending()
            || self
                .last_change
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        for m in members.all().iter() {
            self.known
                .insert(crate::cluster::Members::raft_id(m.addr), m.addr);
        }
        let voters = node.conf_state().voters;
        let listed = members.raft_ids();
        let all = members.all();
        let add = all.iter().find(|m| {
            let id = crate::cluster::Members::raft_id(m.addr);
            !voters.contains(&id)
                && (m.addr == members.this() || m.state() == crate::cluster::MemberState::Up)
        });
        let (kind, id, what) = if let Some(m) = add {
            (
                ConfChangeType::AddNode,
                crate::cluster::Members::raft_id(m.addr),
                m.addr.to_string(),
            )
        } else if let Some(&gone) = voters.iter().find(|v| !listed.contains(v)) {
            if gone == self.settings.id {
                if let Some(&next) = voters.iter().find(|&&v| v != gone && listed.contains(&v)) {
                    tracing::info!(
                        to = next,
                        "this member left the member list: handing raft leadership over"
                    );
                    node.transfer_leader(next);
                    self.last_change = Some(Instant::now());
                }
                return;
            }
            (ConfChangeType::RemoveNode, gone, format!("raft id {gone}"))
        } else {
            return;
        };
        self.last_change = Some(Instant::now());
        let mut cc = ConfChangeV2::default();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(kind);
        single.node_id = id;
        cc.mut_changes().push(single);
        match node.propose_conf_change(Vec::new(), cc) {
            Ok(()) => {
                tracing::info!(change = ?kind, member = %what, id, "proposed a raft membership change")
            }
            Err(e) => {
                tracing::warn!(change = ?kind, member = %what, "raft refused a membership change: {e}")
            }
        }
    }

    /// Proposes the held changes once a leader is known.
    fn release_held(&mut self, node: &mut Node) {
        if node.leader() == 0 || self.held.is_empty() {
            return;
        }
        let held: Vec<Held> = self.held.drain(..).map(|(_, c)| c).collect();
        for c in held {
            self.propose_one(node, c);
        }
    }

    fn leader_name(&self, id: u64) -> String {
        self.shared
            .members
            .as_ref()
            .and_then(|m| m.by_raft_id(id))
            .map_or_else(|| format!("id {id}"), |m| m.addr.to_string())
    }

    /// Fails everything waiting (the log failed: nothing unsynced was acknowledged).
    fn fail_all(&mut self, err: &ApiError) {
        for (id, (w, _)) in std::mem::take(&mut self.pending) {
            self.answer(id, w, Err(err.clone()));
        }
        self.deadlines.clear();
        self.reads_due.clear();
        for (_, c) in std::mem::take(&mut self.held) {
            c.fail(err);
        }
        self.shared.configs.fail_pending(err);
    }

    /// Carries out everything raft has ready, in the driver's order: messages go to the
    /// transport, committed entries to the owner shards, appends and the hard state are
    /// synced once per Ready (group commit).
    fn on_ready(&mut self, node: &mut Node) -> Result<(), consensus::Error> {
        self.release_held(node);
        let before = node.conf_state().voters;
        let leader = node.is_leader();
        node.drive(|store, action| match action {
            Action::Send(msgs) | Action::SendPersisted(msgs) => {
                if let Some(t) = &self.shared.transport {
                    t.send(msgs);
                }
                Ok(())
            }
            Action::InstallSnapshot(snap) => {
                store.apply_snapshot(&snap)?;
                self.install(&snap)
            }
            Action::Apply(entries) => self.apply_entries(entries),
            Action::Append(entries) => Ok(store.append(&entries)?),
            Action::SetHardState(hs) => Ok(store.set_hardstate(&hs)?),
            Action::Sync => Ok(store.sync()?),
            Action::SetCommit(commit) => Ok(store.set_commit(commit)?),
            Action::SetConfState(cs) => {
                tracing::info!(voters = ?cs.voters, "raft membership changed");
                if leader {
                    self.tell_removed(&before, &cs.voters);
                }
                // The next snapshot carries the new membership and the log behind it goes:
                // a member added now starts from that snapshot (raft-rs refuses one whose
                // membership lacks it), never from entries that predate its membership.
                self.membership_changed = true;
                Ok(store.set_conf_state(&cs)?)
            }
            Action::ReadStates(states) => {
                for rs in states {
                    if let Some(id) = self.local(&rs.request_ctx) {
                        self.reads_due.push((rs.index, id));
                    }
                }
                self.answer_reads();
                Ok(())
            }
        })
        .map(|_| ())
    }

    /// Tells every member the applied membership dropped that it was removed.
    fn tell_removed(&self, before: &[u64], after: &[u64]) {
        let Some(t) = &self.shared.transport else {
            return;
        };
        for id in before.iter().filter(|id| !after.contains(id)) {
            if *id == self.settings.id {
                continue;
            }
            match self.known.get(id) {
                Some(&addr) => t.tell_removed(addr, *id),
                None => tracing::warn!(id, "removed a member whose address is unknown here"),
            }
        }
    }

    /// Answers the reads whose index this node has applied.
    fn answer_reads(&mut self) {
        let applied = self.sm.applied;
        let mut i = 0;
        while i < self.reads_due.len() {
            if self.reads_due[i].0 <= applied {
                let (_, id) = self.reads_due.swap_remove(i);
                if let Some((w, _)) = self.pending.remove(&id) {
                    self.answer(id, w, Ok(()));
                }
            } else {
                i += 1;
            }
        }
    }

    /// Replaces the state machine with a snapshot from the leader (already installed in the
    /// log store): the owner shards apply the difference as committed ops, and listeners of
    /// every config either state held are told.
    fn install(&mut self, snap: &raft::eraftpb::Snapshot) -> Result<(), consensus::Error> {
        let index = snap.get_metadata().index;
        let started = Instant::now();
        let new = StateMachine::decode(&snap.data).map_err(|source| consensus::Error::Decode {
            what: format!("snapshot at index {index} from the leader"),
            dir: node_dir(&self.shared),
            source,
        })?;
        let ops = self.sm.naming.diff(&new.naming);
        let changed = ops.len();
        for (key, op) in ops {
            dispatch(&self.shared, key, Op::Committed(op), None);
        }
        let keys = self.sm.config.replace_with(&new.config);
        self.shared.configs.changed(&keys);
        self.sm.naming = new.naming;
        self.sm.applied = index;
        self.since_snapshot = 0;
        tracing::info!(
            index,
            naming_changes = changed,
            configs = keys.len(),
            ms = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        self.answer_reads();
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), consensus::Error> {
        for e in entries {
            let id = self.local(&e.context);
            let waiter = id.and_then(|id| self.pending.remove(&id)).map(|(w, _)| w);
            self.since_snapshot += 1;
            match fold(&mut self.sm, e.index, e.get_entry_type() as i32, &e.data) {
                Ok(Some(Change::Naming { key, op })) => {
                    let reply = match waiter {
                        Some(Waiter::Naming(r)) => Some(r),
                        _ => None,
                    };
                    dispatch(&self.shared, key, Op::Committed(op), reply)
                }
                Ok(Some(Change::Config(op))) => self.shared.configs.committed(id, &op),
                Ok(None) => {
                    if let (Some(w), Some(id)) = (waiter, id) {
                        self.answer(id, w, Ok(()));
                    }
                }
                Err(source) => {
                    if let (Some(w), Some(id)) = (waiter, id) {
                        let err = Error::Unreadable {
                            index: e.index,
                            why: source.to_string(),
                        };
                        self.answer(id, w, Err(err.into()));
                    }
                    return Err(consensus::Error::Decode {
                        what: format!("committed entry {}", e.index),
                        dir: node_dir(&self.shared),
                        source,
                    });
                }
            }
        }
        self.answer_reads();
        Ok(())
    }

    /// Takes a snapshot and truncates the log behind it when enough entries were applied since
    /// the last one: at least `snapshot_entries`, and at least half as many as the state holds
    /// records. A snapshot costs O(state), so the second bound keeps that O(1) per entry
    /// (about 0.7 µs of encoding per entry at 1M records) while the log a restart replays
    /// after the snapshot stays under half the state (recovery folds a logged op about 3×
    /// slower than a snapshotted record). A cluster member keeps
    /// [`KEEP_BEHIND_SNAPSHOT`] entries behind it for followers that lag a little.
    fn maybe_snapshot(&mut self, node: &mut Node) -> Result<(), consensus::Error> {
        let min = self.settings.snapshot_entries.max(1);
        let records = self.sm.records();
        let forced = self.membership_changed;
        if !forced && (self.since_snapshot < min || self.since_snapshot < records / 2) {
            return Ok(());
        }
        self.since_snapshot = 0;
        self.membership_changed = false;
        let started = Instant::now();
        let applied = self.sm.applied;
        let cs = node.conf_state();
        node.store_mut().sync()?;
        let image = self.sm.encode();
        let encoded = started.elapsed();
        match node.store_mut().create_snapshot(applied, &cs, image) {
            Ok(()) => {
                let keep = if self.shared.transport.is_some() && !forced {
                    KEEP_BEHIND_SNAPSHOT
                } else {
                    0
                };
                let removed = node.store_mut().compact(applied.saturating_sub(keep))?;
                tracing::info!(
                    index = applied,
                    segments_removed = removed,
                    encode_ms = encoded.as_millis() as u64,
                    total_ms = started.elapsed().as_millis() as u64,
                    "snapshot taken"
                );
            }
            Err(e) => tracing::warn!("snapshot at {applied} skipped: {e}"),
        }
        Ok(())
    }
}

impl Held {
    /// Fails a change that was never proposed (nothing changed).
    fn fail(self, err: &ApiError) {
        match self {
            Held::Naming(p) => {
                let _ = p.reply.send(Err(err.clone()));
            }
            Held::Config(p) => {
                let _ = p.reply.send(Err(err.clone()));
            }
        }
    }
}

/// The disk failed a write or a sync (row S8): exit with [`EXIT_DISK_FAILED`] at once. Nothing
/// unsynced was acknowledged, and the writes in flight never will be (their connections close
/// with the process). A failed fsync is never retried and the log is not reopened in this
/// process, since the page cache may no longer match the disk; the restart recovers from disk.
fn stop_on_disk_failure(dir: &Path, e: &consensus::Error) -> ! {
    tracing::error!(dir = %dir.display(), "{e}: the disk failed; stopping (exit {EXIT_DISK_FAILED})");
    std::process::exit(EXIT_DISK_FAILED)
}

/// Exit status after a disk failure on the log (`EX_IOERR`).
pub const EXIT_DISK_FAILED: i32 = 74;

/// Answers every further proposal with 500 after an unrecoverable storage failure.
fn fail_forever(proposals: &flume::Receiver<Proposal>, why: &str) {
    while let Ok(p) = proposals.recv() {
        let _ = p
            .reply
            .send(Err(Error::StorageGone(why.to_string()).into()));
    }
}

/// The raft driver over `store`: campaigning at once when this node is the only voter.
fn new_node(
    store: RaftStore,
    applied: u64,
    settings: &RaftSettings,
) -> Result<Node, consensus::Error> {
    let mut node = Driver::new(settings.id, store, applied, settings.ticks)?;
    if node.conf_state().voters == [settings.id] {
        node.campaign()?;
    }
    Ok(node)
}

type Node = Driver<RaftStore>;

/// Reopens the store after a failure: unsynced bytes are dropped by recovery, and entries that
/// are committed on disk but not yet folded are applied now.
fn reopen(
    dir: &Path,
    segment_bytes: u64,
    sm: &mut StateMachine,
    shared: &Shared,
    settings: &RaftSettings,
) -> Result<Node, consensus::Error> {
    let opts = Options {
        segment_size: segment_bytes,
        ..Options::default()
    };
    let store = RaftStore::open(dir, opts).map_err(|source| consensus::Error::Open {
        dir: dir.to_path_buf(),
        source,
    })?;
    let st = store.wal().state();
    for e in &st.entries {
        if e.index > sm.applied && e.index <= st.hard_state.commit {
            let folded = fold(sm, e.index, i32::from(e.entry_type), &e.data).map_err(|source| {
                consensus::Error::Decode {
                    what: format!("entry {}", e.index),
                    dir: dir.to_path_buf(),
                    source,
                }
            })?;
            match folded {
                Some(Change::Naming { key, op }) => dispatch(shared, key, Op::Committed(op), None),
                Some(Change::Config(op)) => shared.configs.committed(None, &op),
                None => {}
            }
        }
    }
    new_node(store, sm.applied, settings)
}

/// The WAL directory, for errors that name it.
fn node_dir(shared: &Shared) -> std::path::PathBuf {
    shared.config.data_dir.join("raft")
}
