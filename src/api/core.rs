//! The cluster API (`NacosClusterController`, base `/nacos/v1/core/cluster`): this node and the
//! members as it sees them, in Nacos's `{"code":200,"message":null,"data":…}` envelope and
//! `Member` shape. Standalone, the only member is this node.

use serde_json::{json, Value};

use super::{Answer, Ctx};
use crate::cluster::MemberState;
use crate::error::ApiResult;

/// The Nacos version Muster reports for itself and its members.
const NACOS_VERSION: &str = super::operator::NACOS_VERSION;

/// One member in Nacos's `Member` shape.
fn member_json(
    addr: std::net::SocketAddr,
    state: MemberState,
    fails: u32,
    last_ok: u64,
    raft: (Value, Value),
) -> Value {
    let ip = addr.ip().to_string();
    json!({
        "ip": ip,
        "port": addr.port(),
        "state": state.as_str(),
        "extendInfo": {
            "raftPort": addr.port().saturating_sub(crate::cluster::PEER_PORT_OFFSET).to_string(),
            "site": "unknow",
            "adWeight": "0",
            "weight": "1",
            "version": NACOS_VERSION,
            "lastRefreshTime": last_ok,
            "raftMetaData": raft.0,
            "raft": raft.1,
        },
        "address": addr.to_string(),
        "failAccessCnt": fails,
    })
}

/// This node's member address: the configured one in a cluster; standalone, the listen address
/// with the IP the request arrived on when listening on a wildcard.
fn this_addr(ctx: &Ctx<'_>) -> std::net::SocketAddr {
    match &ctx.shard.shared.members {
        Some(m) => m.this(),
        None => {
            let listen = ctx.shard.shared.listen;
            let ip = if listen.ip().is_unspecified() {
                ctx.local.ip()
            } else {
                listen.ip()
            };
            std::net::SocketAddr::new(ip, listen.port())
        }
    }
}

/// The raft group as this node sees it, in Nacos's `raftMetaData` shape (the same for every
/// member: `{"metaDataMap":{"naming_persistent_service":{"leader","raftGroupMember","term"}}}`,
/// addresses at the raft port), and the raft part of member `id`'s `extendInfo.raft`: its id,
/// whether it is a voter, its role (this node's own; for another member `LEADER` when it is the
/// leader this node knows, else `FOLLOWER`, or `NONE` when it is no voter), and for this node
/// its term, leader, and committed and applied index.
fn raft_json(ctx: &Ctx<'_>, id: u64, this: bool) -> (Value, Value) {
    let view = &ctx.shard.shared.raft;
    let raft_addr = |id: u64| -> Value {
        let addr = match &ctx.shard.shared.members {
            Some(ms) => ms.by_raft_id(id).map(|m| m.addr),
            None => (id == 1).then(|| this_addr(ctx)),
        };
        addr.map_or(Value::Null, |a| {
            let port = a.port().saturating_sub(crate::cluster::PEER_PORT_OFFSET);
            json!(format!("{}:{port}", a.ip()))
        })
    };
    let term = view.term.load(std::sync::atomic::Ordering::Relaxed);
    let leader = view.leader.load(std::sync::atomic::Ordering::Relaxed);
    let voters = view
        .voters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let meta = json!({"metaDataMap": {"naming_persistent_service": {
        "leader": raft_addr(leader),
        "raftGroupMember": voters.iter().map(|&v| raft_addr(v)).collect::<Vec<_>>(),
        "term": term,
    }}});
    let voter = voters.contains(&id);
    let mut mine = json!({"id": id.to_string(), "voter": voter});
    if this {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        mine["role"] = json!(view.role_name());
        mine["term"] = json!(term);
        mine["leader"] = raft_addr(leader);
        mine["committedIndex"] = json!(load(&view.committed));
        mine["appliedIndex"] = json!(load(&view.applied));
    } else {
        mine["role"] = json!(match (voter, id == leader) {
            (_, true) => "LEADER",
            (true, false) => "FOLLOWER",
            (false, false) => "NONE",
        });
    }
    (meta, mine)
}

/// Every member, sorted by address, as Nacos `Member` objects.
pub fn members(ctx: &Ctx<'_>) -> Vec<Value> {
    match &ctx.shard.shared.members {
        None => vec![member_json(
            this_addr(ctx),
            MemberState::Up,
            0,
            crate::clock::wall_ms(),
            raft_json(ctx, 1, true),
        )],
        Some(ms) => ms
            .all()
            .iter()
            .map(|m| {
                let this = m.addr == ms.this();
                let last = if this {
                    crate::clock::wall_ms()
                } else {
                    m.last_ok_ms()
                };
                let id = crate::cluster::Members::raft_id(m.addr);
                member_json(m.addr, m.state(), m.fails(), last, raft_json(ctx, id, this))
            })
            .collect(),
    }
}

fn envelope(data: Value) -> Answer {
    Answer::json(&json!({"code": 200, "message": null, "data": data}))
}

/// `GET /nacos/v1/core/cluster/self`.
pub fn this(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let me = this_addr(ctx).to_string();
    let found = members(ctx)
        .into_iter()
        .find(|m| m["address"] == me.as_str())
        .unwrap_or(Value::Null);
    Ok(envelope(found))
}

/// `GET /nacos/v1/core/cluster/nodes[?keyword=]`: members whose address starts with
/// `keyword`, sorted.
pub fn nodes(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let keyword = ctx.params.optional_or("keyword", "");
    let list: Vec<Value> = members(ctx)
        .into_iter()
        .filter(|m| {
            m["address"]
                .as_str()
                .is_some_and(|a| a.starts_with(keyword))
        })
        .collect();
    Ok(envelope(Value::Array(list)))
}

/// `GET /nacos/v1/core/cluster/simple/nodes`: the member addresses.
pub fn simple_nodes(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let list: Vec<Value> = members(ctx)
        .into_iter()
        .map(|m| m["address"].clone())
        .collect();
    Ok(envelope(Value::Array(list)))
}

/// `GET /nacos/v1/core/cluster/health`: this node's state (always `UP` while it answers).
pub fn health(_ctx: &Ctx<'_>) -> ApiResult<Answer> {
    Ok(envelope(json!(MemberState::Up.as_str())))
}

/// The header that carries the cluster secret to [`set_members`].
pub const SECRET_HEADER: &str = "Muster-Cluster-Secret";

/// `PUT /nacos/v1/core/cluster/members` (Muster's admin endpoint): makes `members` (a
/// `cluster.conf`-style list, this node included) this node's member list, as SIGHUP does with
/// `cluster.conf` (`node/membership.rs`). Only with the cluster secret in the
/// `Muster-Cluster-Secret` header: 403 without it. Answers what changed.
pub fn set_members(ctx: &Ctx<'_>, req: &crate::http::Request<'_>) -> ApiResult<Answer> {
    let shared = &ctx.shard.shared;
    let Some(cluster) = &shared.config.cluster else {
        return Err(crate::error::ApiError::bad_request(
            "this node is standalone: it has no member list",
        ));
    };
    if !req
        .header(SECRET_HEADER)
        .is_some_and(|s| cluster.secret.matches(s.trim().as_bytes()))
    {
        return Err(crate::error::ApiError::forbidden(format!(
            "changing the member list needs the cluster secret in the {SECRET_HEADER} header"
        )));
    }
    let text = ctx.params.required("members")?;
    let list = crate::cluster::parse_members(text)
        .map_err(|e| crate::error::ApiError::bad_request(format!("members: {e}")))?;
    let change = crate::node::membership::apply(shared, &list).map_err(|e| match e {
        crate::node::membership::MembershipError::List(e) => {
            crate::error::ApiError::bad_request(format!("members: {e}"))
        }
        e => crate::error::ApiError::server(e.to_string()),
    })?;
    let addrs = |v: &[std::net::SocketAddr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    Ok(envelope(json!({
        "added": addrs(&change.added),
        "removed": addrs(&change.removed),
    })))
}
