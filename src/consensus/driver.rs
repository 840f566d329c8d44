//! The raft driver: a raft-rs `RawNode` that does no IO of its own.
//!
//! Each [`Driver::drive`] turns one raft-rs `Ready` into [`Action`]s in raft-rs's required
//! order and hands them to the caller's executor, which does the IO (WAL appends, fdatasync,
//! sending to peers, applying to the state machine). Invariants the order encodes:
//! - [`Action::Send`] messages may leave before anything is persisted (they are the leader's
//!   appends and heartbeats, which raft allows in parallel with its own append);
//! - [`Action::SendPersisted`] messages (votes, follower acks) leave only after the
//!   [`Action::Sync`] that made this Ready's entries and hard state durable;
//! - committed entries are handed over in index order, each exactly once.
//!
//! The executor gets `&mut S`, the log store raft reads from, so an append is visible to raft
//! before the driver advances. Tests drive it with raft-rs's `MemStorage` and assert the
//! actions; the server drives it with the WAL-backed `RaftStore` on its raft thread.

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message, Snapshot,
};
use raft::{RawNode, ReadState, SnapshotStatus, StateRole, Storage};

/// Election and heartbeat timing, in ticks. Defaults: heartbeat every tick, election after 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticks {
    /// Ticks without a leader before a follower campaigns (raft-rs randomises in
    /// `[election, 2 × election)`).
    pub election: usize,
    /// Ticks between a leader's heartbeats (< `election`).
    pub heartbeat: usize,
}

impl Default for Ticks {
    fn default() -> Self {
        Ticks {
            election: 10,
            heartbeat: 3,
        }
    }
}

/// One thing the executor must do. Actions come in the order they must be carried out.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send to peers now, without waiting for persistence.
    Send(Vec<Message>),
    /// Install a snapshot from the leader into the log store.
    InstallSnapshot(Snapshot),
    /// Apply committed entries to the state machine, in index order.
    Apply(Vec<Entry>),
    /// Append entries to the log store (later entries at an existing index replace it).
    Append(Vec<Entry>),
    /// Record the hard state (term, vote, commit).
    SetHardState(HardState),
    /// Make every record above durable (fdatasync) before any action below.
    Sync,
    /// Send to peers, only after the preceding [`Action::Sync`] (when this Ready wrote nothing,
    /// as for pre-vote requests, there is none and they may leave at once).
    SendPersisted(Vec<Message>),
    /// Record a commit index raft learned after the append.
    SetCommit(u64),
    /// Linearizable reads raft confirmed: each may be served once the state machine has
    /// applied `index` (`request_ctx` is the context given to [`Driver::read_index`]).
    ReadStates(Vec<ReadState>),
    /// Record the membership that results from a committed conf change the driver just
    /// applied (after the [`Action::Apply`] that carried it).
    SetConfState(ConfState),
}

/// What [`Driver::status`] reports: this node's view of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// This node's raft id.
    pub id: u64,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of (0: none).
    pub leader: u64,
    /// This node's role.
    pub role: StateRole,
    /// The highest index known committed.
    pub committed: u64,
    /// The highest index applied to the state machine.
    pub applied: u64,
    /// The last index in the log.
    pub last_index: u64,
}

/// A conf change entry's body (raft entry type 1 or 2) in words, e.g.
/// `add_node 661303901168997864`, for `muster-wal`; `None` for other entry types, and a reason
/// when it does not decode.
pub fn describe_conf_change(entry_type: i32, data: &[u8]) -> Option<String> {
    let change = |kind: raft::eraftpb::ConfChangeType, id: u64| {
        let kind = match kind {
            raft::eraftpb::ConfChangeType::AddNode => "add_node",
            raft::eraftpb::ConfChangeType::RemoveNode => "remove_node",
            raft::eraftpb::ConfChangeType::AddLearnerNode => "add_learner",
        };
        format!("{kind} {id}")
    };
    match entry_type {
        1 => Some(match ConfChange::parse_from_bytes(data) {
            Ok(cc) => change(cc.get_change_type(), cc.node_id),
            Err(e) => format!("undecodable conf change: {e}"),
        }),
        2 => Some(match ConfChangeV2::parse_from_bytes(data) {
            Ok(cc) if cc.get_changes().is_empty() => "leave_joint".to_string(),
            Ok(cc) => cc
                .get_changes()
                .iter()
                .map(|c| change(c.get_change_type(), c.node_id))
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("undecodable conf change: {e}"),
        }),
        _ => None,
    }
}

/// A raft node that returns what to persist and send instead of doing it.
pub struct Driver<S: Storage> {
    node: RawNode<S>,
}

impl<S: Storage> Driver<S> {
    /// A voter with `id` over `store`, whose state machine holds every entry up to `applied`.
    /// Pre-vote and check-quorum are on, so a healed node cannot depose a working leader.
    pub fn new(id: u64, store: S, applied: u64, ticks: Ticks) -> Result<Self, raft::Error> {
        let cfg = raft::Config {
            id,
            election_tick: ticks.election,
            heartbeat_tick: ticks.heartbeat,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        Ok(Driver {
            node: RawNode::new(&cfg, store, &logger)?,
        })
    }

    /// Starts an election now (a one-member group elects itself on its next Ready).
    pub fn campaign(&mut self) -> Result<(), raft::Error> {
        self.node.campaign()
    }

    /// Advances raft's logical clock by one tick.
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// Proposes `data`; `context` comes back on the committed entry. Fails when not leader.
    pub fn propose(&mut self, context: Vec<u8>, data: Vec<u8>) -> Result<(), raft::Error> {
        self.node.propose(context, data)
    }

    /// Feeds a message from a peer. Used by the tests now and by the peer transport once the
    /// group has more than one member (cluster part 2).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn step(&mut self, msg: Message) -> Result<(), raft::Error> {
        self.node.step(msg)
    }

    /// True while this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The leader this node knows of, 0 when none.
    pub fn leader(&self) -> u64 {
        self.node.raft.leader_id
    }

    /// Term, leader, role and indexes as this node sees them.
    pub fn status(&self) -> Status {
        let r = &self.node.raft;
        Status {
            id: r.id,
            term: r.term,
            leader: r.leader_id,
            role: r.state,
            committed: r.raft_log.committed,
            applied: r.raft_log.applied,
            last_index: r.raft_log.last_index(),
        }
    }

    /// Proposes a membership change (one at a time: raft refuses a second while one is
    /// uncommitted, dropping it silently, so callers check [`Driver::conf_change_pending`]).
    pub fn propose_conf_change(
        &mut self,
        context: Vec<u8>,
        cc: ConfChangeV2,
    ) -> Result<(), raft::Error> {
        self.node.propose_conf_change(context, cc)
    }

    /// Asks the leader to hand leadership to `to` (ignored on a follower).
    pub fn transfer_leader(&mut self, to: u64) {
        self.node.transfer_leader(to)
    }

    /// True while a proposed conf change is not yet applied.
    pub fn conf_change_pending(&self) -> bool {
        self.node.raft.pending_conf_index > self.node.raft.raft_log.applied
    }

    /// Asks for a linearizable read point; it comes back as an [`Action::ReadStates`] entry
    /// carrying `ctx` once a quorum confirmed this leader (forwarded to the leader on a follower).
    pub fn read_index(&mut self, ctx: Vec<u8>) {
        self.node.read_index(ctx)
    }

    /// Tells raft a message to `id` could not be delivered (it slows probing down).
    pub fn report_unreachable(&mut self, id: u64) {
        self.node.report_unreachable(id)
    }

    /// Tells raft whether a snapshot sent to `id` arrived.
    pub fn report_snapshot(&mut self, id: u64, ok: bool) {
        let status = if ok {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.node.report_snapshot(id, status)
    }

    /// The log store raft reads from.
    #[cfg(test)]
    pub fn store(&self) -> &S {
        self.node.store()
    }

    /// Pins raft's randomised election timeout to `ticks` (in `[election, 2 × election)`) until
    /// raft's next role or term change draws a new one. The deterministic harness uses it so a
    /// seed fixes every election; raft-rs draws from the thread RNG otherwise.
    #[cfg(test)]
    pub fn set_randomized_election_timeout(&mut self, ticks: usize) {
        self.node.raft.set_randomized_election_timeout(ticks)
    }

    /// The log store, for the executor's own maintenance (snapshots, compaction).
    pub fn store_mut(&mut self) -> &mut S {
        self.node.mut_store()
    }

    /// The current membership.
    pub fn conf_state(&self) -> raft::eraftpb::ConfState {
        self.node.raft.prs().conf().to_conf_state()
    }

    /// Runs every pending Ready through `exec`, in order, advancing raft after each; stops at
    /// the first error (the caller then treats the store as failed). Returns whether anything
    /// was ready.
    pub fn drive<E>(
        &mut self,
        mut exec: impl FnMut(&mut S, Action) -> Result<(), E>,
    ) -> Result<bool, E> {
        let mut any = false;
        // A one-member group commits right after its own append, which is another Ready: keep
        // going until raft has nothing more (bounded: each round applies or persists something).
        for _ in 0..64 {
            if !self.node.has_ready() {
                break;
            }
            any = true;
            let mut ready = self.node.ready();
            let store = self.node.mut_store();
            if !ready.messages().is_empty() {
                exec(store, Action::Send(ready.take_messages()))?;
            }
            if !ready.snapshot().is_empty() {
                exec(store, Action::InstallSnapshot(ready.snapshot().clone()))?;
            }
            let committed = ready.take_committed_entries();
            let reads = ready.take_read_states();
            self.apply(committed, &mut exec)?;
            let store = self.node.mut_store();
            if !reads.is_empty() {
                exec(store, Action::ReadStates(reads))?;
            }
            let mut wrote = false;
            if !ready.entries().is_empty() {
                exec(store, Action::Append(ready.take_entries()))?;
                wrote = true;
            }
            if let Some(hs) = ready.hs() {
                exec(store, Action::SetHardState(hs.clone()))?;
                wrote = true;
            }
            if wrote {
                exec(store, Action::Sync)?;
            }
            if !ready.persisted_messages().is_empty() {
                exec(
                    store,
                    Action::SendPersisted(ready.take_persisted_messages()),
                )?;
            }
            let mut light = self.node.advance(ready);
            let store = self.node.mut_store();
            if let Some(commit) = light.commit_index() {
                exec(store, Action::SetCommit(commit))?;
            }
            if !light.messages().is_empty() {
                exec(store, Action::Send(light.take_messages()))?;
            }
            let committed = light.take_committed_entries();
            self.apply(committed, &mut exec)?;
            self.node.advance_apply();
        }
        Ok(any)
    }

    /// A leader that just removed (or demoted) itself steps down, in its own term (as etcd's
    /// `StepDownOnRemoval`). raft-rs leaves it leading: it keeps the remaining voters' lease
    /// with heartbeats, so they never elect another, and its next persisted append or append
    /// response unwraps its own, now missing, progress and panics. In the same term no other
    /// leader can exist, so stepping down needs no new vote; once its heartbeats stop, the
    /// remaining voters elect a leader among themselves. What it sent as leader while applying
    /// this batch goes now (raft refuses a follower's leftover messages at `advance`).
    fn step_down<E>(
        &mut self,
        exec: &mut impl FnMut(&mut S, Action) -> Result<(), E>,
    ) -> Result<(), E> {
        let term = self.node.raft.term;
        self.node.raft.become_follower(term, raft::INVALID_ID);
        let msgs = std::mem::take(&mut self.node.raft.msgs);
        if !msgs.is_empty() {
            exec(self.node.mut_store(), Action::Send(msgs))?;
        }
        Ok(())
    }

    /// Hands committed entries to the executor, then applies the conf changes among them to
    /// raft and has the executor record each resulting membership. An unreadable conf change
    /// is skipped (raft wrote it, so it cannot be; it is logged).
    fn apply<E>(
        &mut self,
        committed: Vec<Entry>,
        exec: &mut impl FnMut(&mut S, Action) -> Result<(), E>,
    ) -> Result<(), E> {
        if committed.is_empty() {
            return Ok(());
        }
        let changes: Vec<(u64, EntryType, Vec<u8>)> = committed
            .iter()
            .filter(|e| e.get_entry_type() != EntryType::EntryNormal)
            .map(|e| (e.index, e.get_entry_type(), e.data.to_vec()))
            .collect();
        exec(self.node.mut_store(), Action::Apply(committed))?;
        for (index, kind, data) in changes {
            let applied = match kind {
                EntryType::EntryConfChange => ConfChange::parse_from_bytes(&data)
                    .map_err(|e| e.to_string())
                    .and_then(|cc| self.node.apply_conf_change(&cc).map_err(|e| e.to_string())),
                _ => ConfChangeV2::parse_from_bytes(&data)
                    .map_err(|e| e.to_string())
                    .and_then(|cc| self.node.apply_conf_change(&cc).map_err(|e| e.to_string())),
            };
            match applied {
                Ok(cs) => {
                    let id = self.node.raft.id;
                    let removed = !cs.voters.contains(&id) && !cs.voters_outgoing.contains(&id);
                    let removed_leader = removed && self.is_leader();
                    exec(self.node.mut_store(), Action::SetConfState(cs))?;
                    if removed_leader {
                        self.step_down(exec)?;
                    }
                }
                Err(why) => tracing::error!(index, "skipped an unreadable conf change: {why}"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{ConfState, MessageType};
    use raft::storage::MemStorage;

    /// Carries out actions on a `MemStorage` the way the server's executor does on the WAL,
    /// and records a compact trace of them.
    fn exec(trace: &mut Vec<String>) -> impl FnMut(&mut MemStorage, Action) -> Result<(), ()> + '_ {
        move |store, a| {
            trace.push(match &a {
                Action::Send(m) => format!("send {}", describe(m)),
                Action::SendPersisted(m) => format!("send-persisted {}", describe(m)),
                Action::InstallSnapshot(s) => format!("install {}", s.get_metadata().index),
                Action::Apply(es) => format!("apply {}", indexes(es)),
                Action::Append(es) => format!("append {}", indexes(es)),
                Action::SetHardState(h) => {
                    format!(
                        "hardstate term={} vote={} commit={}",
                        h.term, h.vote, h.commit
                    )
                }
                Action::Sync => "sync".into(),
                Action::SetCommit(c) => format!("commit {c}"),
                Action::ReadStates(r) => format!("read {}", r.len()),
                Action::SetConfState(cs) => format!("conf {:?}", cs.voters),
            });
            match a {
                Action::Append(es) => store.wl().append(&es).unwrap(),
                Action::SetHardState(h) => store.wl().set_hardstate(h),
                Action::SetCommit(c) => store.wl().mut_hard_state().commit = c,
                _ => {}
            }
            Ok(())
        }
    }

    fn indexes(es: &[Entry]) -> String {
        let v: Vec<String> = es
            .iter()
            .map(|e| {
                if e.data.is_empty() {
                    format!("{}(empty)", e.index)
                } else {
                    format!("{}({})", e.index, String::from_utf8_lossy(&e.data))
                }
            })
            .collect();
        v.join(",")
    }

    fn describe(ms: &[Message]) -> String {
        let v: Vec<String> = ms
            .iter()
            .map(|m| format!("{:?}->{}", m.get_msg_type(), m.to))
            .collect();
        v.join(",")
    }

    fn store(voters: Vec<u64>) -> MemStorage {
        MemStorage::new_with_conf_state(ConfState::from((voters, vec![])))
    }

    /// A one-member group: the campaign elects it, and a proposal is appended, synced, then
    /// committed and applied exactly once, in that order, with nothing sent.
    #[test]
    fn one_member_group_persists_before_it_applies() {
        let mut d = Driver::new(1, store(vec![1]), 0, Ticks::default()).unwrap();
        d.campaign().unwrap();
        let mut trace = Vec::new();
        assert!(d.drive(exec(&mut trace)).unwrap());
        assert!(d.is_leader());
        assert_eq!(
            trace,
            [
                "append 1(empty)",
                "hardstate term=1 vote=1 commit=0",
                "sync",
                "commit 1",
                "apply 1(empty)",
            ],
            "the leader's empty entry is appended and synced before it commits"
        );
        trace.clear();
        d.propose(b"ctx".to_vec(), b"x".to_vec()).unwrap();
        assert!(d.drive(exec(&mut trace)).unwrap());
        assert_eq!(trace, ["append 2(x)", "sync", "commit 2", "apply 2(x)"]);
        assert_eq!(d.store().rl().hard_state().commit, 2);
        trace.clear();
        assert!(!d.drive(exec(&mut trace)).unwrap(), "nothing more is ready");
        assert!(trace.is_empty());
    }

    /// In a three-member group the candidate's pre-vote requests leave with nothing to sync, the real vote
    /// requests only after the new term and self-vote are synced, and nothing is applied
    /// before a quorum answers.
    #[test]
    fn votes_leave_only_after_the_hard_state_is_synced() {
        let mut d = Driver::new(1, store(vec![1, 2, 3]), 0, Ticks::default()).unwrap();
        d.campaign().unwrap();
        let mut trace = Vec::new();
        d.drive(exec(&mut trace)).unwrap();
        assert_eq!(
            trace,
            ["send-persisted MsgRequestPreVote->2,MsgRequestPreVote->3"],
            "pre-vote: no term change, so nothing to persist before the requests leave"
        );
        assert!(!d.is_leader());
        // Node 2 grants the pre-vote: node 1 starts the real election.
        let mut grant = Message::default();
        grant.set_msg_type(MessageType::MsgRequestPreVoteResponse);
        grant.from = 2;
        grant.to = 1;
        grant.term = 1;
        d.step(grant).unwrap();
        trace.clear();
        d.drive(exec(&mut trace)).unwrap();
        assert_eq!(
            trace,
            [
                "hardstate term=1 vote=1 commit=0",
                "sync",
                "send-persisted MsgRequestVote->2,MsgRequestVote->3",
            ]
        );
        // Node 3 grants the vote: node 1 leads, replicates its empty entry while appending it,
        // and applies nothing until a follower acknowledges it.
        let mut vote = Message::default();
        vote.set_msg_type(MessageType::MsgRequestVoteResponse);
        vote.from = 3;
        vote.to = 1;
        vote.term = 1;
        d.step(vote).unwrap();
        trace.clear();
        d.drive(exec(&mut trace)).unwrap();
        assert!(d.is_leader());
        assert_eq!(
            trace,
            ["send MsgAppend->2,MsgAppend->3", "append 1(empty)", "sync"]
        );
        let mut ack = Message::default();
        ack.set_msg_type(MessageType::MsgAppendResponse);
        ack.from = 2;
        ack.to = 1;
        ack.term = 1;
        ack.index = 1;
        d.step(ack).unwrap();
        trace.clear();
        d.drive(exec(&mut trace)).unwrap();
        assert_eq!(
            trace,
            [
                "send MsgAppend->2",
                "apply 1(empty)",
                "hardstate term=1 vote=1 commit=1",
                "sync"
            ],
            "a quorum (1 and 2) holds entry 1: it commits, is applied, and the new commit index \
             goes to the follower that acknowledged (3 is still being probed)"
        );
    }
}
