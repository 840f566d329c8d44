//! Distro forwarding: a naming write for a service that another live member is responsible for
//! (`cluster::Members::responsible`) goes to that member once, over the peer link, and the client
//! gets that member's answer. The member that receives it applies it on its owner shard without
//! asking again, so a write is never forwarded twice (even when two members briefly disagree
//! about who is responsible).
//!
//! Not built yet: replication of the responsible member's changes to the others, verify and
//! repair, the startup load (issue 14). Until then each service's instances live on its
//! responsible member only, and reads on the other members do not see them.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::naming::service::ServiceKey;
use crate::naming::write::{Reply, Write};
use crate::node::mailbox::{Message, Op};
use crate::node::peer::{Call, Handler, CALL_TIMEOUT};
use crate::node::shard::Shared;
use crate::node::Error;

/// A forwarded write, as it travels (JSON).
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
    let body = serde_json::to_vec(&Forwarded {
        namespace: key.namespace.to_string(),
        grouped: key.grouped.to_string(),
        write,
    })
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

fn serve(shared: &Shared, body: &[u8]) -> Answer {
    let f: Forwarded = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("a forwarded write does not decode: {e}")))?;
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
