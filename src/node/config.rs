//! The config center's plumbing between the shards and the raft thread: the proposal queue,
//! the replies to proposers, and the change notices that wake held long polls.
//!
//! A config write goes: shard → [`ConfigHub::propose`] (bounded queue) → the raft thread
//! proposes it as a `config` entry, fdatasyncs, commits and folds it into the shared
//! [`ConfigState`] → [`ConfigHub::committed`] answers the proposer and sends the config's
//! group key to every shard ([`run_notices`]), which wakes its held polls for that key. Reads
//! take the state's read lock on the accepting shard: no hop.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::listen::Listened;
use crate::consensus::config::{ConfigKey, ConfigOp, ConfigState};
use crate::error::{ApiError, ApiResult};
use crate::node::shard::Shard;
use crate::node::Error;

/// How long a shard waits for room in the proposal queue before answering 503.
const PROPOSE_WAIT: Duration = Duration::from_secs(2);

/// A config change waiting for consensus.
#[derive(Debug)]
pub struct ConfigProposal {
    /// The change.
    pub op: ConfigOp,
    /// Answered by the raft thread once the change is committed and applied.
    pub reply: flume::Sender<ApiResult<()>>,
}

/// Process-wide config-center state (one per process, in `Shared`).
#[derive(Debug)]
pub struct ConfigHub {
    /// The replicated config state (the raft thread's state machine holds the same data).
    pub state: ConfigState,
    tx: flume::Sender<ConfigProposal>,
    /// The raft thread's end of the proposal queue.
    pub(crate) rx: flume::Receiver<ConfigProposal>,
    /// Proposals waiting for their entry to apply, by the entry's context id. Only the raft
    /// thread locks it (a mutex only because `Shared` is shared).
    pending: Mutex<HashMap<u64, flume::Sender<ApiResult<()>>>>,
    /// Each shard's notice queue: group keys of changed configs.
    notices: Vec<flume::Sender<String>>,
    /// The receiving ends, taken once by each shard at start.
    notice_rx: Mutex<Vec<Option<flume::Receiver<String>>>>,
    /// Held long polls over all shards (`/metrics`).
    pub held: AtomicU64,
    /// Long polls answered because a listened config changed (`/metrics`).
    pub woken: AtomicU64,
}

impl ConfigHub {
    /// A hub for `shards` shards over recovered `state`; queues hold `capacity` items.
    pub fn new(shards: usize, state: ConfigState, capacity: usize) -> ConfigHub {
        let (tx, rx) = flume::bounded(capacity);
        let mut notices = Vec::with_capacity(shards);
        let mut notice_rx = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (t, r) = flume::bounded(capacity);
            notices.push(t);
            notice_rx.push(Some(r));
        }
        ConfigHub {
            state,
            tx,
            rx,
            pending: Mutex::new(HashMap::new()),
            notices,
            notice_rx: Mutex::new(notice_rx),
            held: AtomicU64::new(0),
            woken: AtomicU64::new(0),
        }
    }

    /// Sends `op` through raft and waits until it is applied. 503 when the queue stays full
    /// for 2 s; 500 when the log cannot be written (nothing changed then).
    pub async fn propose(&self, op: ConfigOp) -> ApiResult<()> {
        let (tx, rx) = flume::bounded(1);
        let p = ConfigProposal { op, reply: tx };
        let sent = glommio::timer::timeout(PROPOSE_WAIT, async {
            Ok(self.tx.send_async(p).await.is_ok())
        })
        .await;
        if !matches!(sent, Ok(true)) {
            return Err(Error::Busy {
                queue: "the raft proposal queue".into(),
            }
            .into());
        }
        rx.recv_async().await.unwrap_or_else(|_| {
            Err(
                Error::Dropped("the raft thread stopped before the write was committed".into())
                    .into(),
            )
        })
    }

    /// Raft thread: a proposal with context `id` is in the log, waiting to commit.
    pub(crate) fn proposed(&self, id: u64, reply: flume::Sender<ApiResult<()>>) {
        self.lock_pending().insert(id, reply);
    }

    /// Raft thread: the entry with context `id` (if it was proposed here) carrying `op` has
    /// been applied to the state. Answers its proposer and tells every shard which config
    /// changed (blocking while a shard's notice queue is full: committed work is never
    /// dropped).
    pub(crate) fn committed(&self, id: Option<u64>, op: &ConfigOp) {
        if let Some(reply) = id.and_then(|id| self.lock_pending().remove(&id)) {
            let _ = reply.send(Ok(()));
        }
        self.changed(op.config_keys());
    }

    /// Raft thread: tells every shard that these configs changed (blocking while a shard's
    /// notice queue is full: committed work is never dropped).
    pub(crate) fn changed<'a>(&self, keys: impl IntoIterator<Item = &'a ConfigKey>) {
        for key in keys {
            let gk = key.group_key();
            for n in &self.notices {
                let _ = n.send(gk.clone());
            }
        }
    }

    /// Raft thread: the proposal with context `id`, if still waiting, fails with `err` (its
    /// entry may still commit; the proposer is told it is unknown).
    pub(crate) fn expire(&self, id: u64, err: &ApiError) {
        if let Some(reply) = self.lock_pending().remove(&id) {
            let _ = reply.send(Err(err.clone()));
        }
    }

    /// Raft thread: the log failed; every pending proposal fails with `err` (nothing it
    /// carried was acknowledged).
    pub(crate) fn fail_pending(&self, err: &ApiError) {
        for (_, reply) in self.lock_pending().drain() {
            let _ = reply.send(Err(err.clone()));
        }
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, flume::Sender<ApiResult<()>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes shard `id`'s notice queue (once).
    pub fn take_notices(&self, id: usize) -> Option<flume::Receiver<String>> {
        self.notice_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)?
            .take()
    }

    /// Prometheus lines of the config center.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP muster_config_held_polls Config long polls held open.\n\
             # TYPE muster_config_held_polls gauge\n\
             muster_config_held_polls {}\n\
             # HELP muster_config_polls_woken_total Config long polls answered because a listened config changed.\n\
             # TYPE muster_config_polls_woken_total counter\n\
             muster_config_polls_woken_total {}\n",
            self.held.load(Ordering::Relaxed),
            self.woken.load(Ordering::Relaxed)
        )
    }
}

/// The group key of a listened entry (what notices carry).
pub fn listened_key(l: &Listened) -> String {
    ConfigKey::new(&l.tenant, &l.group, &l.data_id).group_key()
}

/// Wakes this shard's held polls for each changed config the raft thread reports, until the
/// queue closes.
pub async fn run_notices(shard: Rc<Shard>, rx: flume::Receiver<String>) {
    while let Ok(gk) = rx.recv_async().await {
        let woken = {
            let data = shard.shared.configs.state.read();
            shard
                .config_polls
                .borrow_mut()
                .changed(&gk, listened_key, |l, ip, tag| {
                    let key = ConfigKey::new(&l.tenant, &l.group, &l.data_id);
                    data.md5_for(&key, ip, tag) != l.md5
                })
        };
        shard
            .shared
            .configs
            .woken
            .fetch_add(woken as u64, Ordering::Relaxed);
        glommio::executor().yield_if_needed().await;
    }
}

/// Answers every poll held on this shard at once (shutdown).
pub fn release_polls(shard: &Shard) {
    shard.config_polls.borrow_mut().release_all();
}
