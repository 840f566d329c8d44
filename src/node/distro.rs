//! Distro forwarding: a naming write for a service that another live member is responsible for
//! (`cluster::Members::responsible`) goes to that member once, over the peer link, and the client
//! gets that member's answer. The member that receives it applies it on its owner shard without
//! asking again, so a write is never forwarded twice (even when two members briefly disagree
//! about who is responsible).
//!
//! Replication: after the owner shard of the responsible member publishes a change, it sends
//! the service's ephemeral instances under a new Distro version to every other member
//! ([`replicate`]), which applies them when the version is higher than the one it holds
//! (`Registry::apply_replica`), publishes them and pushes to its own subscribers. A member
//! that becomes responsible for a replica adopts it with fresh leases.
//!
//! Not built yet (issue 14): retries of failed replication, verify and repair, tombstones for
//! deletions, the startup load. A member that missed a replica is repaired by the next change.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::naming::registry::Replica;
use crate::naming::service::ServiceKey;
use crate::naming::write::{Reply, Write};
use crate::node::mailbox::{Message, Op};
use crate::node::peer::{Call, Handler, CALL_TIMEOUT};
use crate::node::shard::Shared;
use crate::node::Error;

/// What one member asks of another (JSON on the peer link).
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Apply this write: the receiver is responsible for its service.
    Forward(Forwarded),
    /// The sender's replicas of services it is responsible for.
    Replicate(Vec<Replica>),
}

/// A forwarded write, as it travels.
#[derive(Debug, Serialize, Deserialize)]
struct Forwarded {
    namespace: String,
    grouped: String,
    write: Write,
}

/// The answer to a forwarded write, as it travels back (JSON).
type Answer = Result<Reply, ApiError>;

/// The member responsible for `key`, when it is not this one (always `None` standalone).
pub fn elsewhere(shared: &Shared, key: &ServiceKey) -> Option<SocketAddr> {
    let members = shared.members.as_ref()?;
    let to = members.responsible(&key.namespace, &key.grouped);
    (to != members.this()).then_some(to)
}

/// Sends `write` to member `to` and returns its answer. A full link queue is a 503 at once; no
/// answer within [`CALL_TIMEOUT`] (plus a second) is a 503 naming the member.
pub async fn forward(
    shared: &Shared,
    to: SocketAddr,
    key: ServiceKey,
    write: Write,
) -> ApiResult<Reply> {
    let unreachable = |why: String| -> ApiError { Error::Unreachable { member: to, why }.into() };
    let link = shared
        .peers
        .as_ref()
        .and_then(|p| p.link(to))
        .ok_or_else(|| unreachable("not a member".into()))?;
    let body = serde_json::to_vec(&Request::Forward(Forwarded {
        namespace: key.namespace.to_string(),
        grouped: key.grouped.to_string(),
        write,
    }))
    .map_err(|e| ApiError::server(format!("cannot encode a forwarded write: {e}")))?;
    let (tx, rx) = flume::bounded(1);
    link.try_send(Call { body, reply: tx }).map_err(|_| {
        ApiError::from(Error::Busy {
            queue: format!("the peer link to {to}"),
        })
    })?;
    let answer = glommio::timer::timeout(CALL_TIMEOUT + Duration::from_secs(1), async {
        Ok(rx.recv_async().await)
    })
    .await;
    let bytes = match answer {
        Ok(Ok(Ok(bytes))) => bytes,
        Ok(Ok(Err(why))) => return Err(unreachable(why)),
        Ok(Err(_)) => return Err(unreachable("the peer link stopped".into())),
        Err(_) => return Err(unreachable("no answer in time".into())),
    };
    let answer: Answer = serde_json::from_slice(&bytes)
        .map_err(|e| unreachable(format!("an answer that does not decode: {e}")))?;
    answer
}

/// The handler of writes forwarded by peers: each goes to this member's owner shard of its
/// service, and the peer connection's thread waits for the answer (at most [`CALL_TIMEOUT`]).
pub fn handler(shared: Weak<Shared>) -> Handler {
    Arc::new(move |body: Vec<u8>| {
        let answer = match shared.upgrade() {
            Some(shared) => serve(&shared, &body),
            None => Err(Error::ShuttingDown("shutting down".into()).into()),
        };
        serde_json::to_vec(&answer).unwrap_or_else(|_| b"{\"Err\":null}".to_vec())
    })
}

/// Queues `batch` (replicas of services this member is responsible for) to every other
/// member. Fire and forget: a full link queue or a failed call drops it for that member
/// (not built yet: retries with backoff, and the verify round that repairs what was lost).
pub fn replicate(shared: &Shared, batch: Vec<Replica>) {
    let Some(peers) = &shared.peers else {
        return;
    };
    let Ok(body) = serde_json::to_vec(&Request::Replicate(batch)) else {
        return;
    };
    for link in peers.links() {
        let (tx, _rx) = flume::bounded(1);
        let _ = link.try_send(Call {
            body: body.clone(),
            reply: tx,
        });
    }
}

fn serve(shared: &Shared, body: &[u8]) -> Answer {
    let req: Request = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("a peer request does not decode: {e}")))?;
    let f = match req {
        Request::Forward(f) => f,
        Request::Replicate(batch) => {
            for r in batch {
                let key = ServiceKey::new(&r.namespace, &r.grouped);
                let owner = shared.ownership.owner(&key).shard;
                let msg = Message::Apply {
                    key,
                    op: Op::Replica(Box::new(r)),
                    reply: None,
                };
                // Bounded wait: a replica that cannot be queued is repaired by a later one.
                let _ = shared.inboxes[owner].send_timeout(msg, CALL_TIMEOUT / 4);
            }
            return Ok(Reply::Ok);
        }
    };
    let key = ServiceKey::new(&f.namespace, &f.grouped);
    let owner = shared.ownership.owner(&key).shard;
    let (tx, rx) = flume::bounded(1);
    let msg = Message::Apply {
        key,
        op: Op::Write(f.write),
        reply: Some(tx),
    };
    shared.inboxes[owner]
        .send_timeout(msg, CALL_TIMEOUT / 2)
        .map_err(|_| {
            ApiError::from(Error::Busy {
                queue: format!("shard {owner}'s inbox"),
            })
        })?;
    rx.recv_timeout(CALL_TIMEOUT - Duration::from_millis(200))
        .unwrap_or_else(|_| {
            Err(Error::Dropped(format!("shard {owner} did not answer the forwarded write")).into())
        })
}
