//! A shard's mailbox: the work other shards and the raft thread send to the owner of a service.
//!
//! Each shard has one bounded inbox of [`Message`]s. A message that targets a service carries
//! its key; the barrier, which targets none, carries none. The owner applies a batch of them,
//! publishes once, then answers each.

use crate::error::ApiResult;
use crate::naming::op::PersistentOp;
use crate::naming::push::Subscription;
use crate::naming::service::ServiceKey;
use crate::naming::write::{Reply, Restore, Write};

/// What the owner of a service does to it.
#[derive(Debug)]
pub enum Op {
    /// A registry write (register, beat, update, …).
    Write(Write),
    /// An `instance/list` with `udpPort > 0`: register or refresh a push target before the
    /// list answer is rendered.
    Subscribe(Subscription),
    /// `GET /service/subscribers`: the live push targets.
    Subscribers,
    /// A committed persistent change, applied after raft committed it.
    Committed(PersistentOp),
    /// Another member's replica of a service's ephemeral instances (Distro).
    Replica(Box<crate::naming::registry::Replica>),
    /// Another member's copy of a service this member is now responsible for (Distro hand-
    /// over): merged, or refused when this member is not responsible.
    Handover(Box<crate::naming::registry::Replica>),
    /// A service's recovered persistent state, applied once at startup before the server is
    /// ready (one message per service instead of one per instance).
    Restore(Box<Restore>),
}

impl From<Write> for Op {
    fn from(c: Write) -> Op {
        Op::Write(c)
    }
}

/// One message in a shard's inbox.
#[derive(Debug)]
pub enum Message {
    /// Do `op` to service `key`; answer `reply` (if any) once it is applied and published.
    /// `None` for work nobody waits on (committed ops replayed after a log reopen, restores).
    Apply {
        /// The service.
        key: ServiceKey,
        /// What to do.
        op: Op,
        /// Where the answer goes.
        reply: Option<flume::Sender<ApiResult<Reply>>>,
    },
    /// Answered once everything queued before it on this inbox has been applied.
    Barrier {
        /// Where the acknowledgement goes.
        reply: flume::Sender<()>,
    },
}
