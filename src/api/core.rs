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
fn member_json(addr: std::net::SocketAddr, state: MemberState, fails: u32, last_ok: u64) -> Value {
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

/// Every member, sorted by address, as Nacos `Member` objects.
pub fn members(ctx: &Ctx<'_>) -> Vec<Value> {
    match &ctx.shard.shared.members {
        None => vec![member_json(
            this_addr(ctx),
            MemberState::Up,
            0,
            crate::clock::wall_ms(),
        )],
        Some(ms) => ms
            .all()
            .iter()
            .map(|m| {
                let last = if m.addr == ms.this() {
                    crate::clock::wall_ms()
                } else {
                    m.last_ok_ms()
                };
                member_json(m.addr, m.state(), m.fails(), last)
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
