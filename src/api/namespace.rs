//! Namespaces (`/nacos/v1/console/namespaces`, Nacos 1.4.6 `NamespaceController`), shared by
//! naming and config. `public` (id `""`) always exists and is not stored; custom namespaces are
//! `config` domain entries in the raft log.
//!
//! Naming does not check its `namespaceId` against this registry (Nacos 1.x never did, and
//! clients configured with an id nobody created keep working). Instead a namespace that holds
//! naming services but was never created here is listed too, as an *implicit* entry: `type` 2,
//! its id as its name, no description, and `checkNamespaceIdExist` still `false` for it, so
//! that creating it gives it a name. Deleting a namespace removes only its registry entry (its
//! configs and services stay, as in Nacos); one that still holds services stays listed as
//! implicit. Config tenants are listed only when created, exactly as Nacos does.

use bytes::Bytes;

use crate::api::{Answer, Ctx};
use crate::config::params::valid_namespace_id;
use crate::consensus::config::{ConfigData, ConfigOp, Namespace};
use crate::error::ApiResult;
use crate::naming::service::DEFAULT_NAMESPACE;

fn boolean(b: bool) -> Answer {
    Answer::json_bytes(Bytes::from_static(if b { b"true" } else { b"false" }))
}

/// Namespaces naming uses that the registry does not hold (`public` aside), sorted by id.
fn implicit_namespaces(ctx: &Ctx<'_>, data: &ConfigData) -> Vec<String> {
    ctx.shard
        .shared
        .view
        .census
        .namespaces()
        .into_iter()
        .map(|(id, _)| id.to_string())
        .filter(|id| id != DEFAULT_NAMESPACE && !id.is_empty() && !data.namespaces.contains_key(id))
        .collect()
}

/// The list entry of namespace `id` (`show=all` adds `namespaceDesc`).
fn entry(
    data: &ConfigData,
    quota: usize,
    id: &str,
    name: &str,
    desc: Option<&str>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "namespace": id, "namespaceShowName": name, "quota": quota,
        "configCount": config_count(data, id), "type": 2,
    });
    if let Some(d) = desc {
        v["namespaceDesc"] = serde_json::Value::String(d.to_string());
    }
    v
}

fn config_count(data: &ConfigData, tenant: &str) -> usize {
    let start = crate::consensus::config::ConfigKey::new(tenant, "", "");
    data.configs
        .range(start..)
        .take_while(|(k, _)| k.tenant == tenant)
        .count()
}

/// `GET`: the list in Nacos's envelope; `?show=all&namespaceId=` one namespace in full;
/// `?checkNamespaceIdExist=true&customNamespaceId=` whether an id is taken.
pub fn get(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let data = ctx.shard.shared.configs.state.read();
    let quota = ctx.shard.shared.config.config_max_per_namespace;
    if ctx.params.get("checkNamespaceIdExist") == Some("true") {
        let id = ctx.params.get("customNamespaceId").unwrap_or("").trim();
        return Ok(boolean(!id.is_empty() && data.namespaces.contains_key(id)));
    }
    if ctx.params.get("show") == Some("all") {
        let id = ctx.params.get("namespaceId").unwrap_or("").trim();
        let v = if id.is_empty() {
            serde_json::json!({
                "namespace": "", "namespaceShowName": "Public", "quota": quota,
                "configCount": config_count(&data, ""), "type": 0,
                "namespaceDesc": "Public Namespace",
            })
        } else {
            match data.namespaces.get(id) {
                Some(n) => entry(&data, quota, &n.id, &n.name, Some(&n.desc)),
                None if ctx.shard.shared.view.census.in_namespace(id) > 0 => {
                    entry(&data, quota, id, id, Some(""))
                }
                None => serde_json::Value::Null,
            }
        };
        return Ok(Answer::json(&v));
    }
    let mut list = vec![serde_json::json!({
        "namespace": "", "namespaceShowName": "public", "quota": quota,
        "configCount": config_count(&data, ""), "type": 0,
    })];
    for n in data.namespaces.values() {
        list.push(entry(&data, quota, &n.id, &n.name, None));
    }
    for id in implicit_namespaces(ctx, &data) {
        list.push(entry(&data, quota, &id, &id, None));
    }
    Ok(Answer::json(&serde_json::json!({
        "code": 200, "message": null, "data": list,
    })))
}

/// A random id for a namespace created without one (a UUID v4 in its usual spelling).
fn random_id() -> ApiResult<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| {
        crate::error::ApiError::server(format!("cannot draw a random namespace id: {e}"))
    })?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// `POST customNamespaceId, namespaceName, namespaceDesc`: `true`, or `false` for a bad or
/// taken id (nothing changed). A blank id gets a random UUID.
pub async fn create(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let id = ctx.params.get("customNamespaceId").unwrap_or("").trim();
    let name = ctx.params.get("namespaceName").ok_or_else(|| {
        crate::error::ApiError::bad_request(
            "Required String parameter 'namespaceName' is not present",
        )
    })?;
    let desc = ctx.params.get("namespaceDesc").unwrap_or("");
    let id = if id.is_empty() {
        random_id()?
    } else {
        if !valid_namespace_id(id) || namespace_exists(ctx, id) {
            return Ok(boolean(false));
        }
        id.to_string()
    };
    let op = ConfigOp::PutNamespace {
        namespace: Namespace {
            id,
            name: name.to_string(),
            desc: desc.to_string(),
        },
    };
    ctx.shard.shared.configs.propose(op).await?;
    Ok(boolean(true))
}

/// `PUT namespace, namespaceShowName, namespaceDesc`: renames; `true` (also for an unknown id,
/// which changes nothing, as Nacos's update of no row).
pub async fn update(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let need = |k: &str| {
        ctx.params.get(k).ok_or_else(|| {
            crate::error::ApiError::bad_request(format!(
                "Required String parameter '{k}' is not present"
            ))
        })
    };
    let id = need("namespace")?.trim();
    let name = need("namespaceShowName")?;
    let desc = ctx.params.get("namespaceDesc").unwrap_or("");
    if !namespace_exists(ctx, id) {
        return Ok(boolean(true));
    }
    let op = ConfigOp::PutNamespace {
        namespace: Namespace {
            id: id.to_string(),
            name: name.to_string(),
            desc: desc.to_string(),
        },
    };
    ctx.shard.shared.configs.propose(op).await?;
    Ok(boolean(true))
}

/// Whether the replicated state holds namespace `id`.
fn namespace_exists(ctx: &Ctx<'_>, id: &str) -> bool {
    ctx.shard
        .shared
        .configs
        .state
        .read()
        .namespaces
        .contains_key(id)
}

/// `DELETE namespaceId`: removes a custom namespace (its configs stay, as in Nacos); `true`.
pub async fn delete(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let id = ctx
        .params
        .get("namespaceId")
        .ok_or_else(|| {
            crate::error::ApiError::bad_request(
                "Required String parameter 'namespaceId' is not present",
            )
        })?
        .trim();
    if !namespace_exists(ctx, id) {
        return Ok(boolean(true));
    }
    let op = ConfigOp::DeleteNamespace { id: id.to_string() };
    ctx.shard.shared.configs.propose(op).await?;
    Ok(boolean(true))
}
