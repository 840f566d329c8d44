//! Instance endpoints: register, deregister, update, patch, detail, list, beat, metadata batch
//! and manual health (`InstanceController`, `HealthController`).

use bytes::Bytes;

use super::{Answer, Ctx};
use crate::clock::wall_ms;
use crate::error::{ApiError, ApiResult};
use crate::naming::instance::{check_ip, parse_port, InstanceSpec};
use crate::naming::params::{parse_int, to_boolean};
use crate::naming::push::{agent_can_push, target_addr, Subscription, PUSH_CACHE_MILLIS};
use crate::naming::registry::BEAT_OK;
use crate::naming::service::{
    check_instance_params, check_metadata, check_service_name_chars, parse_metadata, ServiceKey,
    DEFAULT_CLUSTER,
};
use crate::naming::view::{render_missing, ListQuery};
use crate::naming::write::{Durability, Patch, Reply, Target, Write};

/// `cacheMillis` for clients that are not push targets (Nacos `defaultCacheMillis`).
pub const CACHE_MILLIS: u64 = 3000;

/// `clusterName`, else `cluster`, else `DEFAULT`.
fn cluster_param<'a>(ctx: &'a Ctx<'_>) -> &'a str {
    ctx.params
        .optional("clusterName")
        .or_else(|| ctx.params.optional("cluster"))
        .unwrap_or(DEFAULT_CLUSTER)
}

/// `parseInstance`: ip, port, cluster, weight, healthy, enabled|enable, ephemeral, metadata, app.
fn instance_spec(ctx: &Ctx<'_>, key: &ServiceKey) -> ApiResult<InstanceSpec> {
    let p = &ctx.params;
    let ip = p.required("ip")?;
    let port = parse_port(p.required("port")?)?;
    let cluster = cluster_param(ctx);
    let enabled = match p.optional("enabled") {
        Some(v) => to_boolean(v),
        None => p.lenient_bool("enable", true),
    };
    let metadata = match p.optional("metadata") {
        Some(m) => parse_metadata(m)?,
        None => Default::default(),
    };
    let spec = InstanceSpec {
        ip: ip.to_string(),
        port,
        cluster: cluster.to_string(),
        weight: p.f64_or("weight", 1.0)?,
        healthy: p.lenient_bool("healthy", true),
        enabled,
        ephemeral: p.lenient_bool("ephemeral", true),
        metadata,
        app: p.optional_or("app", "DEFAULT").to_string(),
    };
    check_spec(key, &spec)?;
    Ok(spec)
}

/// Validation shared by every write that carries a whole instance.
fn check_spec(key: &ServiceKey, spec: &InstanceSpec) -> ApiResult<()> {
    check_instance_params(&key.grouped, &spec.cluster)?;
    check_service_name_chars(&key.grouped)?;
    spec.validate()
}

/// `POST /nacos/v1/ns/instance` → `ok`.
pub async fn register(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let key = ctx.service_key()?;
    let spec = instance_spec(ctx, &key)?;
    ctx.shard.execute(key, Write::Register(spec)).await?;
    Ok(Answer::ok())
}

/// `DELETE /nacos/v1/ns/instance` → `ok`, even when nothing matches.
pub async fn deregister(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let ip = p.required("ip")?;
    let port = parse_port(p.required("port")?)?;
    let key = ctx.service_key()?;
    let write = Write::Deregister {
        ip: ip.to_string(),
        port,
        cluster: cluster_param(ctx).to_string(),
        durability: Durability::from_ephemeral(p.lenient_bool("ephemeral", true)),
    };
    ctx.shard.execute(key, write).await?;
    Ok(Answer::ok())
}

/// `PUT /nacos/v1/ns/instance`: strict update for Java ≥ 1.0.0, upsert for everyone else.
pub async fn update(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let key = ctx.service_key()?;
    let spec = instance_spec(ctx, &key)?;
    let strict = ctx.java_1x();
    ctx.shard
        .execute(key, Write::Update { spec, strict })
        .await?;
    Ok(Answer::ok())
}

/// `PATCH /nacos/v1/ns/instance`: metadata, app, weight, enabled of an existing instance.
pub async fn patch(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let key = ctx.service_key()?;
    let ip = p.required("ip")?;
    let port = parse_port(p.required("port")?)?;
    let cluster = cluster_param(ctx);
    let metadata = match p.optional("metadata") {
        Some(m) => Some(parse_metadata(m)?),
        None => None,
    };
    let weight = match p.optional("weight") {
        Some(w) => Some(crate::naming::params::parse_f64(w)?),
        None => None,
    };
    let patch = Patch {
        ip: ip.to_string(),
        port,
        cluster: cluster.to_string(),
        metadata,
        app: p.optional("app").map(str::to_string),
        weight,
        enabled: p.optional("enabled").map(to_boolean),
    };
    ctx.shard.execute(key, Write::Patch(patch)).await?;
    Ok(Answer::ok())
}

/// `GET /nacos/v1/ns/instance`: one instance's details (the `cluster` param is not read).
pub fn detail(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let key = ctx.service_key()?;
    let cluster = p.optional_or("clusterName", DEFAULT_CLUSTER);
    let ip = p.required("ip")?;
    let port = parse_port(p.required("port")?)?;
    let Some(view) = ctx.shard.shared.view.get(key.as_ref()) else {
        return Err(ApiError::server(format!(
            "no service {} found!",
            key.grouped
        )));
    };
    let in_cluster: Vec<_> = view
        .instances
        .iter()
        .filter(|i| *i.key.cluster == *cluster)
        .collect();
    if in_cluster.is_empty() {
        return Err(ApiError::server(format!(
            "no ips found for cluster {cluster} in service {}",
            key.grouped
        )));
    }
    let Some(inst) = in_cluster
        .iter()
        .find(|i| *i.key.ip == *ip && i.key.port == port)
    else {
        return Err(ApiError::server("no matched ip found!"));
    };
    Ok(Answer::json(&inst.detail_json(&key.grouped)))
}

/// `GET /nacos/v1/ns/instance/list` (and legacy `srvIPXT`, whose `dom` is pre-grouped).
pub async fn list(ctx: &Ctx<'_>, legacy_grouped: Option<String>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let key = match legacy_grouped {
        Some(g) => ServiceKey::new(ctx.namespace()?, &g),
        None => ctx.service_key()?,
    };
    // Muster's extension: a linearizable read (`Shard::read_barrier`).
    if p.get("linearizable") == Some("true") {
        ctx.shard.read_barrier(Some(&key)).await?;
    }
    let clusters_raw = p.optional_or("clusters", "");
    let udp_port = p.int_or("udpPort", 0)?;
    if !(0..=65535).contains(&udp_port) {
        return Err(ApiError::bad_request(format!(
            "Param 'udpPort' is illegal: {udp_port} is not in 0-65535"
        )));
    }
    let push_cfg = ctx.shard.shared.config.push;
    let mut pushed = udp_port > 0 && push_cfg.enabled && agent_can_push(ctx.agent);
    if pushed {
        let sub = Subscription {
            addr: target_addr(p.optional("clientIP"), ctx.peer.ip(), udp_port as u16),
            clusters: clusters_raw.to_string(),
            agent: ctx.agent.to_string(),
            grouped: ctx.java_1x(),
            app: p.optional_or("app", "").to_string(),
        };
        // Registered on the owner before the reply is rendered (as Nacos adds its push client
        // before answering), so any change after this reply reaches the subscriber. A full
        // owner inbox or a full target table only skips the registration: the client is told
        // the pull interval, as Nacos does when adding its push client fails, and its next
        // poll retries.
        let r = ctx
            .shard
            .execute(key.clone(), crate::node::mailbox::Op::Subscribe(sub))
            .await;
        pushed = matches!(r, Ok(Reply::Subscribed(true)));
    }
    let q = ListQuery {
        clusters_raw,
        clusters: clusters_raw
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect(),
        healthy_only: p.strict_bool("healthyOnly", false),
        grouped: ctx.java_1x(),
        cache_millis: if pushed {
            PUSH_CACHE_MILLIS
        } else {
            CACHE_MILLIS
        },
        env: p.optional_or("env", ""),
        is_check: p.strict_bool("isCheck", false),
        now_wall_ms: wall_ms(),
    };
    match ctx.shard.shared.view.get(key.as_ref()) {
        None => Ok(Answer::json_bytes(render_missing(&key.grouped, &q))),
        Some(view) => Ok(Answer::json_chunks(view.render_list(&q)?)),
    }
}

/// The RsInfo beat JSON, read leniently (numbers may arrive as strings).
pub(crate) struct BeatInfo {
    ip: Option<String>,
    port: Option<u16>,
    cluster: Option<String>,
    weight: f64,
    ephemeral: bool,
    metadata: crate::naming::service::Metadata,
}

/// Longest `beat` parameter accepted, in bytes: the largest metadata
/// ([`crate::naming::service::MAX_METADATA_RAW_LEN`]) plus 8 KiB for the other fields (ip, cluster and
/// service name are all bounded well below that). Checked before parsing.
pub const MAX_BEAT_LEN: usize = crate::naming::service::MAX_METADATA_RAW_LEN + (8 << 10);

pub(crate) fn parse_beat(raw: &str) -> ApiResult<BeatInfo> {
    if raw.len() > MAX_BEAT_LEN {
        return Err(ApiError::bad_request(format!(
            "Param 'beat' is illegal, the param length should not exceed {MAX_BEAT_LEN}."
        )));
    }
    let v: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("Param 'beat' is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("Param 'beat' must be a JSON object"));
    }
    let text = |k: &str| match v.get(k) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    };
    let port = match text("port") {
        Some(p) => Some(parse_port(&p)?),
        None => None,
    };
    let weight = match text("weight") {
        Some(w) => crate::naming::params::parse_f64(&w)?,
        None => 1.0,
    };
    let metadata = match v.get("metadata") {
        None | Some(serde_json::Value::Null) => Default::default(),
        Some(m) => parse_metadata(&m.to_string())?,
    };
    Ok(BeatInfo {
        ip: text("ip"),
        port,
        cluster: text("cluster").filter(|c| !c.trim().is_empty()),
        weight,
        ephemeral: text("ephemeral").map(|e| to_boolean(&e)).unwrap_or(true),
        metadata,
    })
}

/// `PUT /nacos/v1/ns/instance/beat` (and legacy `clientBeat`, whose `dom` is pre-grouped).
pub async fn beat(ctx: &Ctx<'_>, legacy_grouped: Option<String>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let info = match p.optional("beat") {
        Some(raw) => Some(parse_beat(raw)?),
        None => None,
    };
    let mut cluster = p.optional_or("clusterName", DEFAULT_CLUSTER).to_string();
    let mut ip = p.optional_or("ip", "").to_string();
    let mut port = parse_port(p.optional_or("port", "0"))?;
    let key = match legacy_grouped {
        Some(g) => ServiceKey::new(ctx.namespace()?, &g),
        None => ctx.service_key()?,
    };
    let register = match info {
        None => None,
        Some(b) => {
            if let Some(c) = b.cluster {
                cluster = c;
            }
            ip = b.ip.unwrap_or_default();
            port = b.port.unwrap_or(0);
            let spec = InstanceSpec {
                ip: ip.clone(),
                port,
                cluster: cluster.clone(),
                weight: b.weight,
                healthy: true,
                enabled: true,
                ephemeral: b.ephemeral,
                metadata: b.metadata,
                app: "DEFAULT".into(),
            };
            check_spec(&key, &spec)?;
            Some(spec)
        }
    };
    if register.is_none() {
        check_ip(&ip)?;
    }
    let reply = ctx
        .shard
        .execute(
            key,
            Write::Beat {
                ip,
                port,
                cluster,
                register,
            },
        )
        .await?;
    let Reply::Beat { code, interval_ms } = reply else {
        return Err(ApiError::server("beat produced an unexpected reply"));
    };
    let body = if code == BEAT_OK {
        format!(
            "{{\"clientBeatInterval\":{interval_ms},\"code\":{code},\"lightBeatEnabled\":true}}"
        )
    } else {
        format!("{{\"clientBeatInterval\":{interval_ms},\"code\":{code}}}")
    };
    Ok(Answer::json_bytes(Bytes::from(body)))
}

/// `PUT|DELETE /nacos/v1/ns/instance/metadata/batch` → `{"updated":[...]}`.
pub async fn metadata_batch(ctx: &Ctx<'_>, delete: bool) -> ApiResult<Answer> {
    let p = &ctx.params;
    let key = ctx.service_key()?;
    let metadata = parse_metadata(p.required("metadata")?)?;
    check_metadata(&metadata)?;
    let consistency = p.optional_or("consistencyType", "");
    let (targets, ephemeral) = match consistency {
        "ephemeral" => (None, true),
        "persist" => (None, false),
        _ => (Some(parse_targets(p.optional_or("instances", "[]"))?), true),
    };
    let write = Write::BatchMetadata {
        targets,
        durability: Durability::from_ephemeral(ephemeral),
        metadata,
        delete,
    };
    let updated = match ctx.shard.execute(key, write).await? {
        Reply::Updated(u) => u,
        _ => {
            return Err(ApiError::server(
                "metadata batch produced an unexpected reply",
            ))
        }
    };
    Ok(Answer::json(&serde_json::json!({ "updated": updated })))
}

/// The `instances` parameter: a JSON array of `{ip, port, ephemeral, clusterName}`.
fn parse_targets(raw: &str) -> ApiResult<Vec<Target>> {
    let v: Vec<serde_json::Value> = serde_json::from_str(raw).map_err(|e| {
        ApiError::bad_request(format!("Param 'instances' is not a JSON array: {e}"))
    })?;
    let mut out = Vec::with_capacity(v.len());
    for item in v {
        let s = |k: &str| match item.get(k) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        };
        let ip = s("ip")
            .ok_or_else(|| ApiError::bad_request("Param 'instances': an entry has no ip"))?;
        let port = parse_port(&s("port").unwrap_or_default())?;
        out.push(Target {
            ip,
            port,
            cluster: Some(
                s("clusterName")
                    .filter(|c| !c.trim().is_empty())
                    .unwrap_or_else(|| DEFAULT_CLUSTER.to_string()),
            ),
            durability: Durability::from_ephemeral(
                s("ephemeral").map(|e| to_boolean(&e)).unwrap_or(true),
            ),
        });
    }
    Ok(out)
}

/// `PUT /nacos/v1/ns/health[/instance]`: set health by hand; the cluster's checker must be NONE.
pub async fn set_health(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let healthy = match p.optional("healthy").or_else(|| p.optional("valid")) {
        Some(v) => to_boolean(v),
        None => return Err(ApiError::required("healthy")),
    };
    let key = ctx.service_key()?;
    let ip = p.required("ip")?;
    let port = parse_int(p.required("port")?)?;
    let port = u16::try_from(port)
        .map_err(|_| ApiError::bad_request(format!("Param 'port' is illegal: {port}")))?;
    let cluster = p.optional_or("clusterName", DEFAULT_CLUSTER);
    ctx.shard
        .execute(
            key,
            Write::SetHealth {
                ip: ip.to_string(),
                port,
                cluster: cluster.to_string(),
                healthy,
            },
        )
        .await?;
    Ok(Answer::ok())
}
