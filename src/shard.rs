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
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::command::{Command, Envelope, Reply};
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::hash::owner_shard;
use crate::metrics::{Metrics, ShardMetrics};
use crate::registry::Registry;
use crate::service::ServiceKey;
use crate::view::ReadView;

/// Most envelopes an owner applies before publishing and answering them as one batch.
const INBOX_BATCH: usize = 256;
/// How long a sender waits for room in a full inbox before answering 503.
const INBOX_WAIT: Duration = Duration::from_secs(2);
/// Lease tick period.
const TICK: Duration = Duration::from_millis(100);

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
    pub inboxes: Vec<flume::Sender<Envelope>>,
    /// Whether the server is ready to serve (readiness probe).
    pub ready: AtomicBool,
    /// Open connections across all shards (for the connection cap).
    pub connections: AtomicUsize,
    /// Shards still draining at shutdown.
    pub draining: AtomicUsize,
}

/// One shard's state. Lives on its executor thread only.
pub struct Shard {
    /// Shard id, `0..shards`.
    pub id: usize,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Services this shard owns.
    pub registry: RefCell<Registry>,
    /// Monotonic clock for leases.
    pub clock: SystemClock,
}

impl Shard {
    /// A shard with an empty registry.
    pub fn new(id: usize, shared: Arc<Shared>, clock: SystemClock) -> Shard {
        let registry = Registry::new(shared.config.lifecycle, shared.view.clone(), clock.now_ms());
        Shard {
            id,
            shared,
            registry: RefCell::new(registry),
            clock,
        }
    }

    /// This shard's metrics.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.shared.metrics.shards[self.id]
    }

    /// The shard that owns `key`.
    pub fn owner_of(&self, key: &ServiceKey) -> usize {
        owner_shard(&key.namespace, &key.grouped, self.shared.inboxes.len())
    }

    /// Applies `command` to `key` on its owner shard and returns the owner's answer.
    ///
    /// Local writes apply and publish synchronously. Remote writes wait for room in the owner's
    /// inbox for at most [`INBOX_WAIT`], then answer 503.
    pub async fn execute(&self, key: ServiceKey, command: Command) -> ApiResult<Reply> {
        let owner = self.owner_of(&key);
        if owner == self.id {
            let now = self.clock.now_ms();
            let mut reg = self.registry.borrow_mut();
            let r = reg.apply(&key, command, now);
            reg.flush(now);
            self.metrics().set_registry(reg.stats());
            return r;
        }
        let (tx, rx) = flume::bounded(1);
        let env = Envelope {
            key,
            command,
            reply: tx,
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
                    return Err(ApiError::unavailable(format!(
                        "server is busy: shard {owner}'s inbox is full, please try again later"
                    )));
                }
            }
            Err(flume::TrySendError::Disconnected(_)) => {
                return Err(ApiError::unavailable(format!(
                    "shard {owner} is shutting down, please try again later"
                )))
            }
        }
        rx.recv_async().await.unwrap_or_else(|_| {
            Err(ApiError::server(format!(
                "shard {owner} dropped the write without answering"
            )))
        })
    }

    /// Applies envelopes from other shards in batches: apply all, publish once, answer all.
    pub async fn run_inbox(self: Rc<Self>, rx: flume::Receiver<Envelope>) {
        let mut batch: Vec<(flume::Sender<ApiResult<Reply>>, ApiResult<Reply>)> = Vec::new();
        while let Ok(first) = rx.recv_async().await {
            self.metrics()
                .inbox_depth
                .store(rx.len() as u64, Ordering::Relaxed);
            let now = self.clock.now_ms();
            {
                let mut reg = self.registry.borrow_mut();
                let mut next = Some(first);
                while let Some(env) = next.take() {
                    let r = reg.apply(&env.key, env.command, now);
                    batch.push((env.reply, r));
                    if batch.len() < INBOX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                reg.flush(now);
                self.metrics().set_registry(reg.stats());
            }
            for (reply, r) in batch.drain(..) {
                let _ = reply.send(r);
            }
            glommio::executor().yield_if_needed().await;
        }
    }

    /// Advances leases every [`TICK`] until `stop` is set.
    pub async fn run_ticks(self: Rc<Self>, stop: Rc<std::cell::Cell<bool>>) {
        while !stop.get() {
            glommio::timer::sleep(TICK).await;
            let now = self.clock.now_ms();
            let mut reg = self.registry.borrow_mut();
            reg.tick(now);
            reg.flush(now);
            self.metrics().set_registry(reg.stats());
        }
    }
}
