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
use crate::node::ownership::Member;
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
    /// The sender's verify round: `(namespace, grouped, version)` of the services it is
    /// responsible for. The answer lists those the receiver lacks or holds at a lower version.
    Verify(Vec<(String, String, u64)>),
    /// A starting member's load: the answer is every service the receiver holds, as replicas
    /// at their versions, or an error while the receiver is still loading itself.
    Snapshot,
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
    match shared.ownership.owner(key).member {
        Member::This => None,
        Member::Peer(addr) => Some(addr),
    }
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
        let Some(shared) = shared.upgrade() else {
            let answer: Answer = Err(Error::ShuttingDown("shutting down".into()).into());
            return serde_json::to_vec(&answer).unwrap_or_default();
        };
        match serde_json::from_slice::<Request>(&body) {
            Ok(Request::Verify(list)) => serde_json::to_vec(&stale(&shared, list)),
            Ok(Request::Snapshot) => serde_json::to_vec(&snapshot(&shared)),
            Ok(req) => serde_json::to_vec(&serve(&shared, req)),
            Err(e) => serde_json::to_vec(&Answer::Err(ApiError::bad_request(format!(
                "a peer request does not decode: {e}"
            )))),
        }
        .unwrap_or_default()
    })
}

/// The services of a verify round that this member lacks or holds at a lower version, read
/// from the published view (no shard is asked).
fn stale(shared: &Shared, list: Vec<(String, String, u64)>) -> Vec<(String, String)> {
    list.into_iter()
        .filter(|(ns, grouped, version)| {
            let key = ServiceKey::new(ns, grouped);
            shared
                .view
                .get(key.as_ref())
                .is_none_or(|v| v.version < *version)
        })
        .map(|(ns, grouped, _)| (ns, grouped))
        .collect()
}

/// A verify round of one shard: sends `versions` (services it is responsible for) to every
/// other member and returns, per member, the services it lacks or holds at a lower version.
/// Members that do not answer are left out (their round comes again).
pub async fn verify(
    shared: &Shared,
    versions: &[(ServiceKey, u64)],
) -> Vec<(SocketAddr, Vec<ServiceKey>)> {
    let Some(peers) = &shared.peers else {
        return Vec::new();
    };
    let list: Vec<(String, String, u64)> = versions
        .iter()
        .map(|(k, v)| (k.namespace.to_string(), k.grouped.to_string(), *v))
        .collect();
    let Ok(body) = serde_json::to_vec(&Request::Verify(list)) else {
        return Vec::new();
    };
    let mut asked = Vec::new();
    for (addr, link) in peers.all() {
        let (tx, rx) = flume::bounded(1);
        if link
            .try_send(Call {
                body: body.clone(),
                reply: tx,
            })
            .is_ok()
        {
            asked.push((addr, rx));
        }
    }
    let mut out = Vec::new();
    for (addr, rx) in asked {
        let answer = glommio::timer::timeout(CALL_TIMEOUT + Duration::from_secs(1), async {
            Ok(rx.recv_async().await)
        })
        .await;
        let Ok(Ok(Ok(bytes))) = answer else { continue };
        let Ok(missing) = serde_json::from_slice::<Vec<(String, String)>>(&bytes) else {
            continue;
        };
        if !missing.is_empty() {
            let keys = missing
                .iter()
                .map(|(ns, g)| ServiceKey::new(ns, g))
                .collect();
            out.push((addr, keys));
        }
    }
    out
}

/// Every service this member holds (its own and replicas), from the published view, for a
/// starting peer. An error while this member has not loaded yet itself.
fn snapshot(shared: &Shared) -> Result<Vec<Replica>, String> {
    if !shared.loaded.load(std::sync::atomic::Ordering::Acquire) {
        return Err("still loading".into());
    }
    Ok(shared
        .view
        .all()
        .iter()
        .map(|v| Replica::of(&v.key, v.version, v.instances.iter()))
        .collect())
}

/// How long a starting member tries its peers for a snapshot before it starts empty.
pub const LOAD_WAIT: Duration = Duration::from_secs(5);

/// The startup load (cluster mode; blocks a thread): asks the peers in turn for everything
/// they hold, applies the first answer on the owner shards, waits until they have applied
/// it, then opens the gate ([`Shared::loaded`]). When no peer answers within [`LOAD_WAIT`]
/// (the whole cluster is starting), the member starts empty. Nothing expires meanwhile: the
/// member holds nothing, and replicas are not expired by a member that is not responsible.
pub fn load(shared: &Shared) {
    let Some(peers) = &shared.peers else {
        return;
    };
    let started = std::time::Instant::now();
    let mut loaded_from = None;
    'rounds: while started.elapsed() < LOAD_WAIT {
        for (addr, link) in peers.all() {
            let (tx, rx) = flume::bounded(1);
            let Ok(body) = serde_json::to_vec(&Request::Snapshot) else {
                break 'rounds;
            };
            if link.try_send(Call { body, reply: tx }).is_err() {
                continue;
            }
            let Ok(Ok(bytes)) = rx.recv_timeout(CALL_TIMEOUT + Duration::from_secs(1)) else {
                continue;
            };
            let Ok(Ok(all)) = serde_json::from_slice::<Result<Vec<Replica>, String>>(&bytes) else {
                continue;
            };
            let services = all.len();
            for r in all {
                hand_over(shared, r, None);
            }
            for inbox in &shared.inboxes {
                let (tx, rx) = flume::bounded(1);
                if inbox.send(Message::Barrier { reply: tx }).is_ok() {
                    let _ = rx.recv();
                }
            }
            loaded_from = Some((addr, services));
            break 'rounds;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    match loaded_from {
        Some((peer, services)) => {
            tracing::info!(%peer, services, "loaded the cluster's ephemeral state from a peer")
        }
        None => tracing::warn!(
            wait_ms = LOAD_WAIT.as_millis() as u64,
            "no peer answered the startup load; starting empty (is the whole cluster starting?)"
        ),
    }
    shared
        .loaded
        .store(true, std::sync::atomic::Ordering::Release);
}

/// Sends replicas to one member (a verify round's repair).
pub fn replicate_to(shared: &Shared, to: SocketAddr, batch: Vec<Replica>) {
    let Some(link) = shared.peers.as_ref().and_then(|p| p.link(to)) else {
        return;
    };
    let Ok(body) = serde_json::to_vec(&Request::Replicate(batch)) else {
        return;
    };
    let (tx, _rx) = flume::bounded(1);
    let _ = link.try_send(Call { body, reply: tx });
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

/// Queues a replica on the owner shard of its service; waits for room at most `wait` (`None`:
/// as long as it takes).
fn hand_over(shared: &Shared, r: Replica, wait: Option<Duration>) {
    let key = ServiceKey::new(&r.namespace, &r.grouped);
    let inbox = &shared.inboxes[shared.ownership.shard(&key)];
    let msg = Message::Apply {
        key,
        op: Op::Replica(Box::new(r)),
        reply: None,
    };
    let _ = match wait {
        Some(w) => inbox.send_timeout(msg, w).is_ok(),
        None => inbox.send(msg).is_ok(),
    };
}

fn serve(shared: &Shared, req: Request) -> Answer {
    let f = match req {
        Request::Forward(f) => f,
        Request::Replicate(batch) => {
            for r in batch {
                // Bounded wait: a replica that cannot be queued is repaired by a verify round.
                hand_over(shared, r, Some(CALL_TIMEOUT / 4));
            }
            return Ok(Reply::Ok);
        }
        Request::Verify(_) | Request::Snapshot => {
            return Err(ApiError::bad_request("answered elsewhere"))
        }
    };
    let key = ServiceKey::new(&f.namespace, &f.grouped);
    let owner = shared.ownership.shard(&key);
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
