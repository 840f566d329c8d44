//! Distro forwarding: a naming write for a service that another live member is responsible for
//! (`cluster::Members::responsible`) goes to that member once, over the peer link, and the client
//! gets that member's answer. The member that receives it applies it on its owner shard without
//! asking again, so a write is never forwarded twice (even when two members briefly disagree
//! about who is responsible).
//!
//! Replication: after the owner shard of the responsible member publishes a change, it sends
//! the service's ephemeral instances under a new Distro version to every other member
//! ([`replicate`]), which applies them when the version is higher than the one it holds
//! (`Registry::receive_replica`), publishes them and pushes to its own subscribers. A member
//! that becomes responsible for a replica adopts it with fresh leases.
//!
//! Repair and split brain: verify rounds ([`verify`], answered by [`check`]) compare versions
//! and digests; what a peer lacks is sent again, and what it holds newer or different is
//! merged by the responsible member (`Registry::merge_replica`). Copies a member took writes
//! for while it was (or thought it was) responsible go to the member now responsible
//! ([`hand_over`]) to be merged.
//!
//! Startup: a starting member loads everything a peer holds, page by page ([`load`]).
//!
//! A verify round first sends a [`Summary`] (digests summed into [`VERIFY_BUCKETS`] buckets),
//! then the per-service digests of the buckets that differ only.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::naming::registry::Replica;
use crate::naming::service::ServiceKey;
use crate::naming::write::{Reply, Write};
use crate::node::mailbox::{Message, Op};
use crate::node::outbox::{Outbox, Outboxes};
use crate::node::ownership::Member;
use crate::node::peer::{Call, Handler, Peers, CALL_TIMEOUT};
use crate::node::shard::Shared;
use crate::node::Error;

/// What one member asks of another (JSON on the peer link).
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Apply this write: the receiver is responsible for its service.
    Forward(Forwarded),
    /// The sender's replicas of services it is responsible for.
    Replicate(Vec<Replica>),
    /// The first step of a verify round: digests of the sender's services summed into
    /// buckets. The answer lists the buckets whose sum differs here (`Vec<u32>`).
    Summary(Summary),
    /// The second step, for the buckets that differ: each service's digest. The answer is a
    /// [`Checked`].
    Verify(Vec<Digest>),
    /// A starting member's load, one page at a time: the answer is a [`Page`] of the
    /// services the receiver holds, as replicas at their versions, or an error while the
    /// receiver is still loading itself.
    Snapshot(PageAsk),
    /// Copies of services the sender took writes for and the receiver is now responsible
    /// for, to merge into its own. The answer says, per copy, whether it was merged.
    Handover(Vec<Replica>),
}

/// Which page of a snapshot a starting member asks for. The services are split into
/// `pages` pages by `stable_hash % pages`; `pages` 0 asks the receiver to choose it (so that
/// a page holds about its `load_page_instances` instances) and answers page 0.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PageAsk {
    /// The page, `0..pages`.
    pub page: u32,
    /// How many pages (0: the receiver chooses).
    pub pages: u32,
}

/// A page of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct Page {
    /// How many pages the snapshot has: ask for the rest with this.
    pub pages: u32,
    /// The services of this page.
    pub replicas: Vec<Replica>,
}

/// Most pages a snapshot is split into.
pub const MAX_PAGES: u32 = 4096;

/// One service in a verify round: `(namespace, grouped, version, digest)`, the digest being
/// `ServiceView::distro_digest`.
pub type Digest = (String, String, u64, u64);

/// How many buckets a verify round's summary has: a round costs one small message per peer
/// when nothing differs, and the services of the differing buckets when something does.
pub const VERIFY_BUCKETS: usize = 256;

/// A verify round's summary: the sender (member `from`, shard `shard` of `shards`) sums the
/// `(service, version, digest)` of every service it is responsible for into
/// [`VERIFY_BUCKETS`] buckets by stable hash; the receiver sums the same over the services
/// it holds whose responsible member and shard are the sender's, and answers the buckets
/// that differ.
#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    /// The sender's member address.
    pub from: SocketAddr,
    /// The sender's shard count.
    pub shards: u32,
    /// The sender's shard.
    pub shard: u32,
    /// The sum (XOR of mixed hashes) of each bucket.
    pub buckets: Vec<u64>,
}

/// The bucket of a service and its contribution to the bucket's sum.
fn summand(namespace: &str, grouped: &str, version: u64, digest: u64) -> (usize, u64) {
    let bucket = (crate::hash::stable_hash(namespace, grouped) % VERIFY_BUCKETS as u64) as usize;
    let mut h = crate::hash::Digest::default();
    h.part(namespace.as_bytes());
    h.part(grouped.as_bytes());
    h.part(&version.to_le_bytes());
    h.part(&digest.to_le_bytes());
    (bucket, h.finish())
}

/// Sums `digests` into buckets.
fn sums<'a>(digests: impl IntoIterator<Item = (&'a str, &'a str, u64, u64)>) -> Vec<u64> {
    let mut buckets = vec![0u64; VERIFY_BUCKETS];
    for (ns, g, version, digest) in digests {
        let (b, x) = summand(ns, g, version, digest);
        buckets[b] ^= x;
    }
    buckets
}

/// The buckets of a peer's summary that differ here, from the published view.
fn compare(shared: &Shared, s: &Summary) -> Vec<u32> {
    let (Some(members), Ok(shards)) = (&shared.members, usize::try_from(s.shards)) else {
        return Vec::new();
    };
    if s.buckets.len() != VERIFY_BUCKETS || shards == 0 {
        return (0..VERIFY_BUCKETS as u32).collect();
    }
    let all = shared.view.all();
    let mine = all.iter().filter(|v| {
        members.responsible(&v.key.namespace, &v.key.grouped) == s.from
            && crate::hash::owner_shard(&v.key.namespace, &v.key.grouped, shards)
                == s.shard as usize
    });
    let here = sums(mine.map(|v| {
        (
            &*v.key.namespace,
            &*v.key.grouped,
            v.version,
            v.distro_digest(),
        )
    }));
    (0..VERIFY_BUCKETS)
        .filter(|&b| here[b] != s.buckets[b])
        .map(|b| b as u32)
        .collect()
}

/// The answer to a verify round.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Checked {
    /// Services the receiver lacks or holds at a lower version: the sender sends them.
    pub lacking: Vec<(String, String)>,
    /// The receiver's copies of services it holds at a higher version, or at the same
    /// version with another digest (two sides of a partition took writes): the sender merges
    /// them into its own and publishes the result above both versions.
    pub ahead: Vec<Replica>,
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
    if let Some(o) = outbox(shared, to) {
        o.traffic
            .forwards
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
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
            Ok(Request::Summary(summary)) => serde_json::to_vec(&compare(&shared, &summary)),
            Ok(Request::Verify(list)) => serde_json::to_vec(&check(&shared, list)),
            Ok(Request::Snapshot(ask)) => serde_json::to_vec(&snapshot(&shared, ask)),
            Ok(Request::Handover(copies)) => {
                serde_json::to_vec(&Ok::<_, String>(take_over(&shared, copies)))
            }
            Ok(req) => serde_json::to_vec(&serve(&shared, req)),
            Err(e) => serde_json::to_vec(&Answer::Err(ApiError::bad_request(format!(
                "a peer request does not decode: {e}"
            )))),
        }
        .unwrap_or_default()
    })
}

/// Checks a peer's verify round against the published view (no shard is asked): what this
/// member lacks or holds older, and its own copies of those it holds newer or different.
fn check(shared: &Shared, list: Vec<Digest>) -> Checked {
    let mut out = Checked::default();
    for (ns, grouped, version, digest) in list {
        let key = ServiceKey::new(&ns, &grouped);
        match shared.view.get(key.as_ref()) {
            Some(v)
                if v.version > version || (v.version == version && v.distro_digest() != digest) =>
            {
                out.ahead
                    .push(Replica::of(&v.key, v.version, v.instances.iter()));
            }
            Some(v) if v.version == version => {}
            _ => out.lacking.push((ns, grouped)),
        }
    }
    out
}

/// What one peer answered to a verify round.
pub struct Verified {
    /// The peer.
    pub member: SocketAddr,
    /// Services it lacks or holds older: send them.
    pub lacking: Vec<ServiceKey>,
    /// Its copies that are newer or differ: merge them.
    pub ahead: Vec<Replica>,
}

/// A verify round of shard `shard` (of `shards`): sends a [`Summary`] of `digests` (the
/// services it is responsible for) to every other member, then each member's differing
/// buckets' digests to that member, and returns each member's answer that asks for something.
/// Members that do not answer are left out (their round comes again).
pub async fn verify(
    shared: &Shared,
    shard: usize,
    shards: usize,
    digests: Vec<Digest>,
) -> Vec<Verified> {
    let (Some(peers), Some(members)) = (&shared.peers, &shared.members) else {
        return Vec::new();
    };
    let summary = Summary {
        from: members.this(),
        shards: shards as u32,
        shard: shard as u32,
        buckets: sums(digests.iter().map(|(ns, g, v, d)| (&**ns, &**g, *v, *d))),
    };
    let Ok(body) = serde_json::to_vec(&Request::Summary(summary)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (member, bytes) in call_all(peers.all(), body).await {
        let Ok(differ) = serde_json::from_slice::<Vec<u32>>(&bytes) else {
            continue;
        };
        if differ.is_empty() {
            continue;
        }
        let list: Vec<Digest> = digests
            .iter()
            .filter(|(ns, g, v, d)| differ.contains(&(summand(ns, g, *v, *d).0 as u32)))
            .cloned()
            .collect();
        let Some(link) = peers.link(member) else {
            continue;
        };
        let Ok(body) = serde_json::to_vec(&Request::Verify(list)) else {
            continue;
        };
        for (member, bytes) in call_all([(member, link)], body).await {
            let Ok(checked) = serde_json::from_slice::<Checked>(&bytes) else {
                continue;
            };
            if checked.lacking.is_empty() && checked.ahead.is_empty() {
                continue;
            }
            if let Some(o) = outbox(shared, member) {
                o.traffic.mismatches.fetch_add(
                    (checked.lacking.len() + checked.ahead.len()) as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            out.push(Verified {
                member,
                lacking: checked
                    .lacking
                    .iter()
                    .map(|(ns, g)| ServiceKey::new(ns, g))
                    .collect(),
                ahead: checked.ahead,
            });
        }
    }
    out
}

/// Sends `body` to each of `links` at once and collects the answers that arrive within
/// [`CALL_TIMEOUT`] (plus a second) each; a full link queue or a failed call is left out.
async fn call_all(
    links: impl IntoIterator<Item = (SocketAddr, flume::Sender<Call>)>,
    body: Vec<u8>,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut asked = Vec::new();
    for (addr, link) in links {
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
        if let Ok(Ok(Ok(bytes))) = answer {
            out.push((addr, bytes));
        }
    }
    out
}

/// Hands `copies` (services this member took writes for, that other members are now
/// responsible for) to their responsible members to merge. Returns the `(service, version)`
/// of each copy that was merged: those become replicas here. A copy not merged (no answer,
/// or the receiver does not think it is responsible yet) is handed over in a later round.
pub async fn hand_over(shared: &Shared, copies: Vec<Replica>) -> Vec<(ServiceKey, u64)> {
    let Some(peers) = &shared.peers else {
        return Vec::new();
    };
    let mut by_member: Vec<(SocketAddr, Vec<Replica>)> = Vec::new();
    for r in copies {
        let key = ServiceKey::new(&r.namespace, &r.grouped);
        let Some(to) = elsewhere(shared, &key) else {
            continue;
        };
        match by_member.iter_mut().find(|(m, _)| *m == to) {
            Some((_, batch)) => batch.push(r),
            None => by_member.push((to, vec![r])),
        }
    }
    let mut released = Vec::new();
    for (to, batch) in by_member {
        let Some(link) = peers.link(to) else { continue };
        let keys: Vec<(ServiceKey, u64)> = batch
            .iter()
            .map(|r| (ServiceKey::new(&r.namespace, &r.grouped), r.version))
            .collect();
        let Ok(body) = serde_json::to_vec(&Request::Handover(batch)) else {
            continue;
        };
        for (_, bytes) in call_all([(to, link)], body).await {
            let Ok(Ok(merged)) = serde_json::from_slice::<Result<Vec<bool>, String>>(&bytes) else {
                continue;
            };
            released.extend(
                keys.iter()
                    .zip(merged)
                    .filter(|(_, merged)| *merged)
                    .map(|(k, _)| k.clone()),
            );
        }
    }
    released
}

/// Merges handed-over copies on their owner shards, each answered once merged and
/// published; `false` for a copy that could not be queued, was not answered within
/// [`CALL_TIMEOUT`], or that this member is not responsible for.
fn take_over(shared: &Shared, copies: Vec<Replica>) -> Vec<bool> {
    let mut waiting = Vec::with_capacity(copies.len());
    for r in copies {
        let key = ServiceKey::new(&r.namespace, &r.grouped);
        let inbox = &shared.inboxes[shared.ownership.shard(&key)];
        let (tx, rx) = flume::bounded(1);
        let msg = Message::Apply {
            key,
            op: Op::Handover(Box::new(r)),
            reply: Some(tx),
        };
        waiting.push(
            inbox
                .send_timeout(msg, CALL_TIMEOUT / 4)
                .is_ok()
                .then_some(rx),
        );
    }
    let deadline = std::time::Instant::now() + CALL_TIMEOUT - Duration::from_millis(200);
    waiting
        .into_iter()
        .map(|rx| {
            rx.is_some_and(|rx| {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                matches!(rx.recv_timeout(left), Ok(Ok(_)))
            })
        })
        .collect()
}

/// One page of everything this member holds (its own services and replicas), from the
/// published view, for a starting peer. An error while this member has not loaded yet itself.
fn snapshot(shared: &Shared, ask: PageAsk) -> Result<Page, String> {
    if !shared.loaded.load(std::sync::atomic::Ordering::Acquire) {
        return Err("still loading".into());
    }
    let all = shared.view.all();
    let pages = if ask.pages == 0 {
        let instances: usize = all.iter().map(|v| v.instances.len()).sum();
        let per_page = shared
            .config
            .cluster
            .as_ref()
            .map_or(20_000, |c| c.load_page_instances)
            .max(1);
        (instances / per_page + 1).min(MAX_PAGES as usize) as u32
    } else {
        ask.pages.min(MAX_PAGES)
    };
    let replicas = all
        .iter()
        .filter(|v| {
            crate::hash::stable_hash(&v.key.namespace, &v.key.grouped) % u64::from(pages)
                == u64::from(ask.page)
        })
        .map(|v| Replica::of(&v.key, v.version, v.instances.iter()))
        .collect();
    Ok(Page { pages, replicas })
}

/// How long a starting member tries its peers for a snapshot before it starts empty.
pub const LOAD_WAIT: Duration = Duration::from_secs(5);
/// The longest a startup load may take once a peer answered: after that the member opens with
/// what it has (verify rounds bring the rest).
pub const LOAD_MAX: Duration = Duration::from_secs(120);

/// The startup load (cluster mode; blocks a thread): asks the peers in turn for everything
/// they hold, page by page ([`PageAsk`]), applies each page on the owner shards, waits until
/// they have applied it, then opens the gate ([`Shared::loaded`]). A peer that stops answering
/// mid-way is left for the next one (pages apply by version, so a page applied twice changes
/// nothing). When no peer answers within [`LOAD_WAIT`] (the whole cluster is starting), the
/// member starts empty; a load is cut at [`LOAD_MAX`]. Nothing expires meanwhile: replicas are
/// not expired by a member that is not responsible, and the gate keeps writes out.
pub fn load(shared: &Shared) {
    let Some(peers) = &shared.peers else {
        return;
    };
    let started = std::time::Instant::now();
    let mut loaded_from = None;
    'rounds: while started.elapsed() < LOAD_WAIT {
        for (addr, link) in peers.all() {
            let Some(first) = fetch_page(&link, PageAsk { page: 0, pages: 0 }) else {
                continue;
            };
            let pages = first.pages.max(1);
            let mut services = apply_page(shared, first);
            let mut complete = true;
            for page in 1..pages {
                match fetch_page(&link, PageAsk { page, pages }) {
                    Some(p) if started.elapsed() < LOAD_MAX => services += apply_page(shared, p),
                    _ => {
                        complete = false;
                        break;
                    }
                }
            }
            for inbox in &shared.inboxes {
                let (tx, rx) = flume::bounded(1);
                if inbox.send(Message::Barrier { reply: tx }).is_ok() {
                    let _ = rx.recv();
                }
            }
            if complete || started.elapsed() >= LOAD_MAX {
                loaded_from = Some((addr, services, pages, complete));
                break 'rounds;
            }
            tracing::warn!(peer = %addr, services, "a peer stopped answering the startup load; trying the next");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    match loaded_from {
        Some((peer, services, pages, complete)) => tracing::info!(
            %peer,
            services,
            pages,
            complete,
            ms = started.elapsed().as_millis() as u64,
            "loaded the cluster's ephemeral state from a peer"
        ),
        None => tracing::warn!(
            wait_ms = LOAD_WAIT.as_millis() as u64,
            "no peer answered the startup load; starting empty (is the whole cluster starting?)"
        ),
    }
    shared
        .loaded
        .store(true, std::sync::atomic::Ordering::Release);
}

/// Asks a peer for one snapshot page (blocking, at most [`CALL_TIMEOUT`] plus a second).
fn fetch_page(link: &flume::Sender<Call>, ask: PageAsk) -> Option<Page> {
    let body = serde_json::to_vec(&Request::Snapshot(ask)).ok()?;
    let (tx, rx) = flume::bounded(1);
    link.try_send(Call { body, reply: tx }).ok()?;
    let bytes = rx
        .recv_timeout(CALL_TIMEOUT + Duration::from_secs(1))
        .ok()?
        .ok()?;
    serde_json::from_slice::<Result<Page, String>>(&bytes)
        .ok()?
        .ok()
}

/// Queues a page's replicas on their owner shards; returns how many services it held.
fn apply_page(shared: &Shared, page: Page) -> usize {
    let n = page.replicas.len();
    for r in page.replicas {
        enqueue(shared, r, None);
    }
    n
}

/// Queues replicas for one member (a verify round's repair) in its outbox.
pub fn replicate_to(shared: &Shared, to: SocketAddr, batch: Vec<Replica>) {
    let batch: Vec<Arc<Replica>> = batch.into_iter().map(Arc::new).collect();
    if let Some(outbox) = outbox(shared, to) {
        outbox.push(&batch);
    }
}

/// Queues `batch` (replicas of services this member is responsible for) in every other
/// member's outbox ([`crate::node::outbox`]: coalesced per service, sent in batches, retried
/// with backoff). Never waits on a peer.
pub fn replicate(shared: &Shared, batch: Vec<Replica>) {
    let batch: Vec<Arc<Replica>> = batch.into_iter().map(Arc::new).collect();
    for outbox in shared.outboxes.all() {
        outbox.push(&batch);
    }
}

/// The body of a `Replicate` request, from shared replicas (the same JSON as
/// `Request::Replicate`).
fn encode_replicas(batch: &[Arc<Replica>]) -> Option<Vec<u8>> {
    #[derive(Serialize)]
    enum Outgoing<'a> {
        Replicate(Vec<&'a Replica>),
    }
    serde_json::to_vec(&Outgoing::Replicate(batch.iter().map(|r| &**r).collect())).ok()
}

/// Starts one replication outbox per other member.
pub fn outboxes(peers: &Peers) -> std::io::Result<Outboxes> {
    let all = peers
        .all()
        .into_iter()
        .map(|(member, link)| Outbox::start(member, link, Box::new(encode_replicas)))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(Outboxes::new(all))
}

/// Starts the outbox of a member that joined the list.
pub fn add_outbox(
    shared: &Shared,
    member: SocketAddr,
    link: flume::Sender<Call>,
) -> std::io::Result<()> {
    let o = Outbox::start(member, link, Box::new(encode_replicas))?;
    shared.outboxes.add(o);
    Ok(())
}

/// The outbox (and counters) of member `to`.
fn outbox(shared: &Shared, to: SocketAddr) -> Option<Arc<Outbox>> {
    shared.outboxes.get(to)
}

/// Queues a replica on the owner shard of its service; waits for room at most `wait` (`None`:
/// as long as it takes).
fn enqueue(shared: &Shared, r: Replica, wait: Option<Duration>) {
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
                enqueue(shared, r, Some(CALL_TIMEOUT / 4));
            }
            return Ok(Reply::Ok);
        }
        Request::Summary(_) | Request::Verify(_) | Request::Snapshot(_) | Request::Handover(_) => {
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

/// Fuzz entry (`muster::fuzz::peer`): decodes `body` as the handler decodes a peer request, and
/// as a requester decodes a forwarded write's or a verify round's answer. Whether it was a request.
#[doc(hidden)]
pub fn decode_for_fuzz(body: &[u8]) -> bool {
    let _ = serde_json::from_slice::<Answer>(body);
    let _ = serde_json::from_slice::<Checked>(body);
    let _ = serde_json::from_slice::<Vec<u32>>(body);
    serde_json::from_slice::<Request>(body).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_sums_ignore_order_and_a_change_shows_in_its_bucket_only() {
        let services: Vec<(String, String, u64, u64)> = (0..1000)
            .map(|i| ("public".into(), format!("DEFAULT_GROUP@@s{i}"), i, i * 7))
            .collect();
        let view = |list: &[(String, String, u64, u64)]| {
            sums(list.iter().map(|(n, g, v, d)| (&**n, &**g, *v, *d)))
        };
        let a = view(&services);
        let mut reversed = services.clone();
        reversed.reverse();
        assert_eq!(a, view(&reversed));
        // One service at another version, and one missing: exactly their buckets differ.
        let mut b = services.clone();
        b[10].2 += 1;
        let gone = b.remove(500);
        let differ: Vec<usize> = (0..VERIFY_BUCKETS)
            .filter(|&i| a[i] != view(&b)[i])
            .collect();
        let mut want = vec![
            summand(&services[10].0, &services[10].1, 0, 0).0,
            summand(&gone.0, &gone.1, 0, 0).0,
        ];
        want.sort_unstable();
        want.dedup();
        assert_eq!(differ, want);
    }
}
