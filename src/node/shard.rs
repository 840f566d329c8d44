//! A shard: one pinned glommio executor that owns a disjoint set of services.
//!
//! Writes for a service owned here are applied directly; writes for another shard's service are
//! sent over that shard's bounded inbox and answered once the owner has applied and published
//! them. Reads never hop: they are served from the shared [`ReadView`].

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{wall_ms, Clock, SystemClock};
use crate::error::{ApiError, ApiResult};
use crate::naming::op::PersistentOp;
use crate::naming::push::{Outgoing, Push, MAX_ACK_BYTES};
use crate::naming::registry::Registry;
use crate::naming::service::ServiceKey;
use crate::naming::view::ReadView;
use crate::naming::write::{Outcome, Reply};
use crate::node::mailbox::{Message, Op};
use crate::node::metrics::{Metrics, ShardMetrics};
use crate::node::Error;
use crate::settings::Config;

/// Most envelopes an owner applies before publishing and answering them as one batch.
const INBOX_BATCH: usize = 256;
/// How long a sender waits for room in a full inbox before answering 503.
const INBOX_WAIT: Duration = Duration::from_secs(2);
/// Lease tick period.
const TICK: Duration = Duration::from_millis(100);

/// Hands the heap's free pages back to the OS (glibc `malloc_trim`), after a shard removed many
/// services: without it, 200,000 services created and removed left ~690 MB resident, free but
/// held by the allocator (`perf/ANALYSIS.md`). It walks every arena, so it costs the calling
/// shard a few ms at such a moment; it runs at most once per [`crate::naming::registry::COMPACT_AFTER_REMOVALS`]
/// removed services.
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only returns free pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}
/// Most probes one shard runs at once.
const MAX_PROBES: usize = 512;
/// Most probes one shard starts per tick (100 ms): a budget of 2000 probes/s per shard, so a
/// fleet of unreachable persistent instances cannot starve client traffic. With more persistent
/// instances than that per probe interval, each is probed less often.
const PROBES_PER_TICK: usize = 200;
/// Most new persistent instances the prober starts tracking per tick: after a restore of a
/// million, tracking (first probes are due 2–7 s later anyway) is spread over a few seconds of
/// ticks instead of holding up the shard in one.
const TRACK_PER_TICK: usize = 50_000;
/// How often an instance that cannot be probed (NONE/MYSQL checker, host name, marked) is
/// looked at again, in ms.
const IDLE_PROBE_RECHECK_MS: u64 = 2000;
/// Push upkeep (re-sends, target expiry) runs every this many ticks.
const PUSH_SWEEP_TICKS: u32 = 5;
/// A Distro verify round (cluster mode) runs every this many ticks: 2 s.
const VERIFY_TICKS: u32 = 20;

/// Process-wide state shared by every shard.
#[derive(Debug)]
pub struct Shared {
    /// Resolved configuration.
    pub config: Config,
    /// The address actually bound (port 0 resolved).
    pub listen: SocketAddr,
    /// Published services.
    pub view: Arc<ReadView>,
    /// Metrics of every shard.
    pub metrics: Arc<Metrics>,
    /// Each shard's inbox, indexed by shard id.
    pub inboxes: Vec<flume::Sender<Message>>,
    /// Who owns each service (member and shard).
    pub ownership: crate::node::ownership::Ownership,
    /// The cluster's members and their states; `None` when standalone.
    pub members: Option<Arc<crate::cluster::Members>>,
    /// Links to the other members (calls to them, the handler of theirs); `None` standalone.
    pub peers: Option<crate::node::peer::Peers>,
    /// One Distro replication outbox per other member (none standalone).
    pub outboxes: crate::node::outbox::Outboxes,
    /// Whether the server is ready to serve (readiness probe): recovered and not stopping.
    pub ready: AtomicBool,
    /// Persistent state has been recovered: the naming API is open (Nacos's status gate).
    pub recovered: AtomicBool,
    /// Cluster mode: the startup load from a peer is done (or no peer answered in time).
    /// Always true standalone. Readiness and the naming API wait for it too.
    pub loaded: AtomicBool,
    /// Open connections across all shards: the connection cap and the per-IP share.
    pub connections: crate::http::Admission,
    /// Shards still draining at shutdown.
    pub draining: AtomicUsize,
    /// Persistent changes to the raft thread.
    pub proposals: flume::Sender<crate::node::raft::Proposal>,
    /// Linearizable-read barriers to the raft thread.
    pub reads: flume::Sender<crate::node::raft::ReadBarrier>,
    /// Raft's transport to the other members (`None` standalone).
    pub transport: Option<crate::node::transport::Transport>,
    /// This node's raft state as the raft thread last published it.
    pub raft: crate::node::raft::RaftView,
    /// Set once every shard has stopped: the raft thread finishes what is queued and ends.
    pub stopping: AtomicBool,
    /// The config center: its state, proposal queue and change notices.
    pub configs: crate::node::config::ConfigHub,
}

/// One shard's state. Lives on its executor thread only.
pub struct Shard {
    /// Shard id, `0..shards`.
    pub id: usize,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Services this shard owns.
    pub registry: RefCell<Registry>,
    /// Push targets of the services this shard owns.
    pub push: RefCell<Push>,
    /// The socket pushes leave from and acks arrive on.
    pub udp: glommio::net::UdpSocket,
    /// Monotonic clock for leases.
    pub clock: SystemClock,
    /// Probe schedules of persistent instances this shard owns.
    pub prober: RefCell<crate::naming::probe::Prober>,
    /// This shard's open HTTP connections.
    pub connections: crate::http::Connections,
    datagrams: std::cell::Cell<u64>,
    probes_running: std::cell::Cell<usize>,
    /// The mass-expiry guard was on at the last flush (for logging its changes).
    expiry_paused: std::cell::Cell<bool>,
    /// A Distro verify round is running (one at a time).
    verifying: std::cell::Cell<bool>,
    /// Config long polls held on this shard.
    pub config_polls: RefCell<crate::config::listen::Holds>,
}

impl Shared {
    /// Ready to serve: recovered, loaded from a peer (cluster), not stopping.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.loaded.load(Ordering::Relaxed)
    }
}

impl Shard {
    /// A shard with an empty registry, pushing from `udp`.
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        clock: SystemClock,
        udp: glommio::net::UdpSocket,
    ) -> Shard {
        let mut registry =
            Registry::new(shared.config.lifecycle, shared.view.clone(), clock.now_ms());
        registry.set_distro(shared.members.is_some());
        let push = Push::new(shared.config.push, wall_ms());
        Shard {
            id,
            shared,
            registry: RefCell::new(registry),
            push: RefCell::new(push),
            udp,
            clock,
            prober: RefCell::new(crate::naming::probe::Prober::new(clock.now_ms())),
            connections: Default::default(),
            datagrams: std::cell::Cell::new(0),
            probes_running: std::cell::Cell::new(0),
            expiry_paused: std::cell::Cell::new(false),
            verifying: std::cell::Cell::new(false),
            config_polls: Default::default(),
        }
    }

    /// Does `op` to a service this shard owns (no publish). A persistent write comes back as
    /// [`Outcome::Propose`]: nothing changed yet.
    fn apply_local(&self, key: &ServiceKey, op: Op, now: u64) -> ApiResult<Outcome> {
        let reply = match op {
            Op::Write(write) => return self.registry.borrow_mut().apply(key, write, now),
            Op::Subscribe(sub) => {
                Reply::Subscribed(self.push.borrow_mut().subscribe(key, sub, now))
            }
            Op::Subscribers => Reply::Subscribers(self.push.borrow().subscribers(key, now)),
            Op::Committed(op) => {
                self.registry.borrow_mut().apply_committed(key, op, now)?;
                Reply::Ok
            }
            Op::Restore(r) => {
                self.registry.borrow_mut().restore(key, *r, now);
                Reply::Ok
            }
            Op::Replica(r) => {
                let responsible = crate::node::distro::elsewhere(&self.shared, key).is_none();
                self.registry
                    .borrow_mut()
                    .receive_replica(*r, responsible, now);
                Reply::Ok
            }
            Op::Handover(r) => {
                if let Some(member) = crate::node::distro::elsewhere(&self.shared, key) {
                    return Err(ApiError::unavailable(format!(
                        "not responsible for {}: {member} is",
                        key.grouped
                    )));
                }
                self.registry.borrow_mut().merge_replica(*r, true, now);
                Reply::Ok
            }
        };
        Ok(Outcome::Applied(reply))
    }

    /// Publishes what changed and starts push rounds for it.
    fn flush(self: &Rc<Self>, now: u64) {
        let changed = self.registry.borrow_mut().flush(now);
        if self.shared.members.is_some() && !changed.is_empty() {
            self.replicate(&changed);
        }
        let at = Instant::now();
        for key in changed {
            let start = self.push.borrow_mut().changed(&key, at);
            if start {
                glommio::spawn_local(self.clone().push_rounds(key, at)).detach();
            }
        }
        let m = self.metrics();
        let stats = self.registry.borrow().stats();
        let paused = stats.expiry_paused(self.shared.config.lifecycle.expiry_guard_percent);
        if paused != self.expiry_paused.replace(paused) {
            if paused {
                tracing::warn!(
                    shard = self.id,
                    unhealthy = stats.ephemeral_sick,
                    ephemeral = stats.ephemeral,
                    percent = self.shared.config.lifecycle.expiry_guard_percent,
                    "mass-expiry guard on: too many ephemeral instances missed their beats at once; holding back removals until beats come back"
                );
            } else {
                tracing::info!(
                    shard = self.id,
                    unhealthy = stats.ephemeral_sick,
                    ephemeral = stats.ephemeral,
                    "mass-expiry guard off: removals resume"
                );
            }
        }
        m.set_registry(stats, paused);
        m.set_push(self.push.borrow().stats());
    }

    /// Distro: sends the services in `changed` that this member changed itself (not replicas
    /// it applied) to every other member, one batch per peer. Its own changes are the writes
    /// forwarded to it as the responsible member and its lease checks, which run only for
    /// services it is responsible for; asking the member view again here would drop a write
    /// applied while the views briefly differ.
    fn replicate(&self, changed: &[ServiceKey]) {
        let now = self.clock.now_ms();
        let reg = self.registry.borrow();
        let batch: Vec<_> = changed
            .iter()
            .filter(|k| !reg.flushed_by_raft_only(k))
            .filter_map(|k| reg.replica_now(k, now))
            .collect();
        drop(reg);
        if !batch.is_empty() {
            crate::node::distro::replicate(&self.shared, batch);
        }
    }

    /// One Distro verify round:
    /// - tells every other member the version and digest of each service this shard is
    ///   responsible for, sends each member the ones it lacks or holds older, and merges the
    ///   copies a member holds newer or different (both sides of a partition took writes);
    /// - hands the copies this shard took writes for, of services another member is now
    ///   responsible for, to that member to merge, and keeps them as replicas once merged.
    ///
    /// A member that missed replicas (a failed call, a cut link, a restart) is repaired, and
    /// a healed partition converges, within a round or two.
    async fn verify_round(self: Rc<Self>) {
        let shared = self.shared.clone();
        let responsible = |k: &ServiceKey| crate::node::distro::elsewhere(&shared, k).is_none();
        let digests: Vec<crate::node::distro::Digest> = self
            .registry
            .borrow()
            .versions()
            .into_iter()
            .filter(|(k, _)| responsible(k))
            .filter_map(|(k, _)| {
                let v = shared.view.get(k.as_ref())?;
                Some((
                    k.namespace.to_string(),
                    k.grouped.to_string(),
                    v.version,
                    v.distro_digest(),
                ))
            })
            .collect();
        if !digests.is_empty() {
            let shards = shared.inboxes.len();
            for answer in crate::node::distro::verify(&shared, self.id, shards, digests).await {
                let now = self.clock.now_ms();
                let mut reg = self.registry.borrow_mut();
                for r in answer.ahead {
                    let key = ServiceKey::new(&r.namespace, &r.grouped);
                    if responsible(&key) && shared.ownership.shard(&key) == self.id {
                        reg.merge_replica(r, true, now);
                    }
                }
                let batch: Vec<_> = answer
                    .lacking
                    .iter()
                    .filter_map(|k| reg.replica_now(k, now))
                    .collect();
                drop(reg);
                if !batch.is_empty() {
                    crate::node::distro::replicate_to(&shared, answer.member, batch);
                }
            }
        }
        let now = self.clock.now_ms();
        let copies = self.registry.borrow().handovers(&responsible, now);
        if !copies.is_empty() {
            let released = crate::node::distro::hand_over(&shared, copies).await;
            let mut reg = self.registry.borrow_mut();
            for (key, version) in released {
                reg.release(&key, version);
            }
        }
        self.verifying.set(false);
    }

    /// Sends rounds for `key` until no change arrived during the last one.
    async fn push_rounds(self: Rc<Self>, key: ServiceKey, mut changed_at: Instant) {
        loop {
            let view = self.shared.view.get(key.as_ref());
            let out = self.push.borrow_mut().prepare(
                &key,
                view.as_deref(),
                self.clock.now_ms(),
                wall_ms(),
            );
            self.send_all(out, Some(changed_at)).await;
            let again = self.push.borrow_mut().round_done(&key);
            match again {
                Some(t) => changed_at = t,
                None => break,
            }
        }
        self.metrics().set_push(self.push.borrow().stats());
    }

    /// Sends datagrams; `changed_at` (for first sends) feeds the apply-to-send histogram.
    ///
    /// Datagrams to live sockets go out in batches of one non-blocking `sendmmsg` each (a round
    /// to 100 subscribers is a couple of system calls, not 100); only what a full socket buffer
    /// refuses is sent one by one, waiting on io_uring.
    async fn send_all(&self, out: Vec<Outgoing>, changed_at: Option<Instant>) {
        use std::os::fd::AsRawFd;
        let mut batch: Vec<&Outgoing> =
            Vec::with_capacity(out.len().min(crate::node::udp::SEND_BATCH));
        let mut i = 0;
        while i < out.len() {
            batch.clear();
            while i < out.len() && batch.len() < crate::node::udp::SEND_BATCH {
                let o = &out[i];
                i += 1;
                let n = self.datagrams.get().wrapping_add(1);
                self.datagrams.set(n);
                if self.push.borrow().drops(n) {
                    self.push.borrow_mut().record_send(false, o.resend);
                } else {
                    batch.push(o);
                }
            }
            let sent = crate::node::udp::send_batch(self.udp.as_raw_fd(), &batch);
            for (k, o) in batch.iter().enumerate() {
                let ok = if k < sent {
                    true
                } else {
                    match crate::node::udp::send_now(self.udp.as_raw_fd(), &o.packet, o.addr) {
                        Some(r) => r.is_ok(),
                        None => self.udp.send_to(&o.packet, o.addr).await.is_ok(),
                    }
                };
                self.push.borrow_mut().record_send(ok, o.resend);
                if let (true, false, Some(at)) = (ok, o.resend, changed_at) {
                    self.metrics()
                        .record_push_latency(at.elapsed().as_micros() as u64);
                }
            }
        }
    }

    /// Starts the probes that are due (at most [`MAX_PROBES`] running at once).
    fn start_probes(self: &Rc<Self>, now: u64) {
        use crate::naming::registry::ProbeTarget;
        let new = self
            .registry
            .borrow_mut()
            .take_new_persistent(TRACK_PER_TICK);
        let mut prober = self.prober.borrow_mut();
        prober.reserve(new.len());
        for id in new {
            prober.track(id, now);
        }
        let room = MAX_PROBES
            .saturating_sub(self.probes_running.get())
            .min(PROBES_PER_TICK);
        for id in prober.due(now, room) {
            let target = self.registry.borrow().probe_target(&id.0, &id.1);
            let p = match target {
                ProbeTarget::Gone => {
                    prober.forget(&id);
                    continue;
                }
                ProbeTarget::Idle => {
                    prober.later(id, now, IDLE_PROBE_RECHECK_MS);
                    continue;
                }
                ProbeTarget::Probe(p) => p,
            };
            self.probes_running.set(self.probes_running.get() + 1);
            let me = self.clone();
            glommio::spawn_local(async move {
                let outcome = crate::node::probe::run(&p).await;
                me.probes_running.set(me.probes_running.get() - 1);
                let now = me.clock.now_ms();
                let health = me.registry.borrow().health_of(&p.service, &p.key);
                let Some(healthy) = health else {
                    me.prober.borrow_mut().forget(&(p.service.clone(), p.key.clone()));
                    return;
                };
                let flip = me.prober.borrow_mut().record(&p, outcome, healthy, now);
                if let Some(h) = flip {
                    tracing::info!(service = %p.service.grouped, ip = %p.key.ip, port = p.key.port, healthy = h, ?outcome, "probe flipped instance health");
                    me.registry.borrow_mut().set_probe_health(&p.service, &p.key, h);
                    me.flush(now);
                }
            })
            .detach();
        }
    }

    /// Reads acks (and junk) from the push socket forever.
    pub async fn run_acks(self: Rc<Self>) {
        let mut buf = vec![0u8; MAX_ACK_BYTES + 1];
        loop {
            match self.udp.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    self.push.borrow_mut().ack(from, &buf[..n]);
                }
                Err(e) => {
                    tracing::debug!(shard = self.id, error = %e, "push socket receive failed");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Proposes the persistent changes an owner's registry asked for, in order, and waits
    /// until the owner has applied every one of them after raft committed it (the answer then
    /// reads its own write). Called by the owner only. A proposal queue full for
    /// [`INBOX_WAIT`] answers 503; ops already queued before that still commit.
    async fn propose(&self, key: ServiceKey, ops: Vec<PersistentOp>) -> ApiResult<()> {
        let mut applied = Vec::with_capacity(ops.len());
        for op in ops {
            let (tx, rx) = flume::bounded(1);
            let p = crate::node::raft::Proposal {
                key: key.clone(),
                op,
                reply: tx,
            };
            let sent = glommio::timer::timeout(INBOX_WAIT, async {
                Ok(self.shared.proposals.send_async(p).await.is_ok())
            })
            .await;
            if !matches!(sent, Ok(true)) {
                return Err(Error::Busy {
                    queue: "the raft proposal queue".into(),
                }
                .into());
            }
            applied.push(rx);
        }
        for rx in applied {
            rx.recv_async().await.unwrap_or_else(|_| {
                Err(
                    Error::Dropped("the raft thread stopped before the write was committed".into())
                        .into(),
                )
            })?;
        }
        Ok(())
    }

    /// Finishes an owner's outcome: the answer now, or after its proposals are applied.
    async fn settle(&self, key: ServiceKey, outcome: Outcome) -> ApiResult<Reply> {
        match outcome {
            Outcome::Applied(reply) => Ok(reply),
            Outcome::Propose { ops, reply } => {
                self.propose(key, ops).await?;
                Ok(reply)
            }
        }
    }

    /// This shard's metrics.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.shared.metrics.shards[self.id]
    }

    /// The shard of this member that holds `key`.
    pub fn owner_of(&self, key: &ServiceKey) -> usize {
        self.shared.ownership.shard(key)
    }

    /// Does `op` (a naming [`crate::naming::write::Write`], or a push subscription) to `key`
    /// on its owner shard and returns the owner's answer. This is the one write path: the
    /// owner checks the preconditions and applies an ephemeral write at once, or proposes a
    /// persistent one and answers once it has applied the committed change.
    ///
    /// Local work applies and publishes synchronously. Remote work waits for room in the
    /// owner's inbox for at most [`INBOX_WAIT`], then answers 503.
    pub async fn execute(self: &Rc<Self>, key: ServiceKey, op: impl Into<Op>) -> ApiResult<Reply> {
        let op = op.into();
        if let Op::Write(write) = op {
            let elsewhere = if write.names_persistent_instance() {
                None
            } else {
                crate::node::distro::elsewhere(&self.shared, &key)
            };
            if let Some(to) = elsewhere {
                return crate::node::distro::forward(&self.shared, to, key, write).await;
            }
            return self.execute_here(key, Op::Write(write)).await;
        }
        self.execute_here(key, op).await
    }

    /// A linearizable read point (`linearizable=true`): waits until this member has applied
    /// everything a quorum had committed when it was asked (raft's ReadIndex through the
    /// leader), and, for a service, until its owner shard here has applied and published it
    /// (a barrier through the owner's inbox, which carries committed ops in order). A local
    /// read after it sees every write acknowledged before the request began, on any member.
    /// 503 `caused: no raft leader …;` when no quorum confirms it in time.
    pub async fn read_barrier(&self, key: Option<&ServiceKey>) -> ApiResult<()> {
        let (tx, rx) = flume::bounded(1);
        let barrier = crate::node::raft::ReadBarrier { reply: tx };
        self.shared
            .reads
            .try_send(barrier)
            .map_err(|_| Error::Busy {
                queue: "the raft read queue".into(),
            })?;
        rx.recv_async().await.unwrap_or_else(|_| {
            Err(
                Error::Dropped("the raft thread stopped before the read was confirmed".into())
                    .into(),
            )
        })?;
        let Some(key) = key else {
            return Ok(());
        };
        let owner = self.owner_of(key);
        let (tx, rx) = flume::bounded(1);
        self.shared.inboxes[owner]
            .send_async(Message::Barrier { reply: tx })
            .await
            .map_err(|_| Error::ShuttingDown("shutting down".into()))?;
        rx.recv_async()
            .await
            .map_err(|_| Error::ShuttingDown("shutting down".into()).into())
    }

    /// [`Shard::execute`] on this member: on the owner shard here, never forwarded.
    async fn execute_here(self: &Rc<Self>, key: ServiceKey, op: Op) -> ApiResult<Reply> {
        let owner = self.owner_of(&key);
        if owner == self.id {
            let now = self.clock.now_ms();
            let r = self.apply_local(&key, op, now);
            self.flush(now);
            return self.settle(key, r?).await;
        }
        let (tx, rx) = flume::bounded(1);
        let env = Message::Apply {
            key,
            op,
            reply: Some(tx),
        };
        let inbox = &self.shared.inboxes[owner];
        self.metrics()
            .cross_shard_sent
            .fetch_add(1, Ordering::Relaxed);
        match inbox.try_send(env) {
            Ok(()) => {}
            Err(flume::TrySendError::Full(env)) => {
                let sent = glommio::timer::timeout(INBOX_WAIT, async {
                    Ok(inbox.send_async(env).await.is_ok())
                })
                .await;
                if !matches!(sent, Ok(true)) {
                    self.metrics()
                        .cross_shard_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Error::Busy {
                        queue: format!("shard {owner}'s inbox"),
                    }
                    .into());
                }
            }
            Err(flume::TrySendError::Disconnected(_)) => {
                return Err(Error::ShuttingDown(format!(
                    "shard {owner} is shutting down, please try again later"
                ))
                .into())
            }
        }
        rx.recv_async().await.unwrap_or_else(|_| {
            Err(Error::Dropped(format!("shard {owner} dropped the write without answering")).into())
        })
    }

    /// Applies messages from other shards and the raft thread in batches: apply all, publish
    /// once, answer all.
    pub async fn run_inbox(self: Rc<Self>, rx: flume::Receiver<Message>) {
        let mut batch: Vec<(flume::Sender<ApiResult<Reply>>, ApiResult<Reply>)> = Vec::new();
        let mut barriers: Vec<flume::Sender<()>> = Vec::new();
        while let Ok(first) = rx.recv_async().await {
            self.metrics()
                .inbox_depth
                .store(rx.len() as u64, Ordering::Relaxed);
            let now = self.clock.now_ms();
            let mut next = Some(first);
            let mut applied = 0;
            while let Some(msg) = next.take() {
                match msg {
                    // Answered after this batch is applied and published, with everything
                    // queued before it.
                    Message::Barrier { reply } => barriers.push(reply),
                    Message::Apply { key, op, reply } => {
                        // A panic while applying one write answers 500 and leaves the shard
                        // running.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.apply_local(&key, op, now)
                        }))
                        .unwrap_or_else(|_| {
                            tracing::error!(
                                shard = self.id,
                                "applying a write panicked; answering 500"
                            );
                            Err(ApiError::server("internal error while applying the write"))
                        });
                        match r {
                            Ok(Outcome::Applied(r)) => {
                                if let Some(reply) = reply {
                                    batch.push((reply, Ok(r)));
                                }
                            }
                            Err(e) => {
                                if let Some(reply) = reply {
                                    batch.push((reply, Err(e)));
                                }
                            }
                            // Answered by a task once raft committed it and this shard applied
                            // it (the commit comes back through this inbox).
                            Ok(outcome) => {
                                let me = self.clone();
                                glommio::spawn_local(async move {
                                    let r = me.settle(key, outcome).await;
                                    if let Some(reply) = reply {
                                        let _ = reply.send(r);
                                    }
                                })
                                .detach();
                            }
                        }
                    }
                }
                applied += 1;
                if applied < INBOX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.flush(now);
            for (reply, r) in batch.drain(..) {
                let _ = reply.send(r);
            }
            for reply in barriers.drain(..) {
                let _ = reply.send(());
            }
            glommio::executor().yield_if_needed().await;
        }
    }

    /// Advances leases every [`TICK`] until `stop` is set.
    pub async fn run_ticks(self: Rc<Self>, stop: Rc<std::cell::Cell<bool>>) {
        let mut ticks = 0u32;
        while !stop.get() {
            glommio::timer::sleep(TICK).await;
            let now = self.clock.now_ms();
            if self.shared.members.is_some() {
                let shared = &self.shared;
                self.registry.borrow_mut().tick_with(now, &|k| {
                    crate::node::distro::elsewhere(shared, k).is_none()
                });
            } else {
                self.registry.borrow_mut().tick(now);
            }
            self.flush(now);
            if self.registry.borrow_mut().compact(now) {
                self.shared.view.shrink();
                release_free_heap();
            }
            self.start_probes(now);
            ticks = ticks.wrapping_add(1);
            if self.shared.members.is_some()
                && ticks.is_multiple_of(VERIFY_TICKS)
                && !self.verifying.replace(true)
            {
                glommio::spawn_local(self.clone().verify_round()).detach();
            }
            if ticks.is_multiple_of(PUSH_SWEEP_TICKS) {
                let resend = self.push.borrow_mut().sweep(now);
                self.send_all(resend, None).await;
                self.metrics().set_push(self.push.borrow().stats());
            }
        }
    }
}
