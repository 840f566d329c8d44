//! Service, catalog and cluster endpoints (`ServiceController`, `CatalogController`,
//! `ClusterController`). Reads come from the read view; writes go to the owner shard.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{Answer, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::naming::service::ServiceSettings;
use crate::naming::service::{
    check_service_name_chars, group_of, name_of, parse_metadata, parse_selector, ClusterMeta,
    Metadata, DEFAULT_GROUP,
};
use crate::naming::view::ServiceView;
use crate::naming::write::Write;

fn settings(ctx: &Ctx<'_>, threshold_required: bool) -> ApiResult<ServiceSettings> {
    let p = &ctx.params;
    let raw = if threshold_required {
        p.required("protectThreshold")?
    } else {
        p.optional_or("protectThreshold", "0.0")
    };
    let t = crate::naming::params::parse_f64(raw)?;
    if !(0.0..=1.0).contains(&t) {
        return Err(ApiError::bad_request(format!(
            "Param 'protectThreshold' is illegal: {t} is not in 0.0-1.0"
        )));
    }
    let metadata = match p.optional("metadata") {
        Some(m) => parse_metadata(m)?,
        None => Metadata::new(),
    };
    Ok(ServiceSettings {
        protect_threshold: t as f32,
        metadata,
        selector: parse_selector(p.optional("selector"))?,
    })
}

/// `POST /nacos/v1/ns/service` → `ok`; an existing service is a 400.
pub async fn create(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let key = ctx.service_key()?;
    check_service_name_chars(&key.grouped)?;
    let settings = settings(ctx, false)?;
    ctx.shard
        .execute(key, Write::CreateService(settings))
        .await?;
    Ok(Answer::ok())
}

/// `DELETE /nacos/v1/ns/service` → `ok`; a missing service is a 400, and so is one that still
/// has instances (`specified service has instances, serviceName : <name>`), changing nothing.
///
/// The refusal is Nacos 1.0–1.1's `easyRemoveService` (and 2.x refuses too); Nacos 1.2–1.4
/// dropped the check and delete the instances with the service, persistent ones included.
/// We keep the refusal: deleting registered instances as a side effect loses data.
pub async fn delete(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let key = ctx.service_key()?;
    ctx.shard.execute(key, Write::DeleteService).await?;
    Ok(Answer::ok())
}

/// `PUT /nacos/v1/ns/service`: replaces threshold, metadata and selector → `ok`.
pub async fn update(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let key = ctx.service_key()?;
    let settings = settings(ctx, true)?;
    ctx.shard
        .execute(key, Write::UpdateService(settings))
        .await?;
    Ok(Answer::ok())
}

fn clusters_json(view: &ServiceView) -> Vec<Value> {
    view.meta
        .clusters
        .iter()
        .map(|(name, c)| {
            json!({"name": &**name, "healthChecker": c.health_checker, "metadata": c.metadata})
        })
        .collect()
}

/// `GET /nacos/v1/ns/service`: settings and clusters; a missing service is a 500.
pub fn detail(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let key = ctx.service_key()?;
    let Some(view) = ctx.shard.shared.view.get(key.as_ref()) else {
        return Err(ApiError::server(format!(
            "service {} is not found!",
            key.grouped
        )));
    };
    Ok(Answer::json(&json!({
        "name": key.name(),
        "namespaceId": &*key.namespace,
        "protectThreshold": float_json(view.meta.protect_threshold),
        "metadata": view.meta.metadata,
        "selector": view.meta.selector,
        "groupName": key.group(),
        "clusters": clusters_json(&view),
    })))
}

/// A Java `float` as Jackson prints it: the shortest decimal that reads back as the same f32
/// (`0.3`, not `0.30000001192092896`).
fn float_json(f: f32) -> Value {
    f.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// `NumberUtils.toInt`: a bad number is 0.
fn to_int(s: &str) -> i64 {
    s.trim().parse::<i32>().map(i64::from).unwrap_or(0)
}

/// A label selector `INSTANCE.metadata.k = 'v'` or `SERVICE.metadata.k = 'v'`.
fn selector_matches(view: &ServiceView, selector: &str) -> ApiResult<bool> {
    let v: Value = serde_json::from_str(selector)
        .map_err(|e| ApiError::bad_request(format!("selector is not valid JSON: {e}")))?;
    if v.get("type").and_then(Value::as_str) != Some("label") {
        return Ok(true);
    }
    let expr: String = v
        .get("expression")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let Some((lhs, rhs)) = expr.split_once('=') else {
        return Ok(true);
    };
    let want = rhs.trim_matches(|c| c == '\'' || c == '"');
    let parts: Vec<&str> = lhs.splitn(3, '.').collect();
    if parts.len() != 3 || parts[1] != "metadata" {
        return Ok(true);
    }
    Ok(match parts[0] {
        "INSTANCE" => view
            .instances
            .iter()
            .any(|i| i.metadata.get(parts[2]).map(String::as_str) == Some(want)),
        "SERVICE" => view.meta.metadata.get(parts[2]).map(String::as_str) == Some(want),
        _ => true,
    })
}

/// `GET /nacos/v1/ns/service/list` → `{"doms":[...],"count":N}`: sorted by grouped name,
/// filtered by group (`*` = all) and selector, paged `[(pageNo-1)*pageSize, +pageSize)`.
pub fn list(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let page_no = to_int(p.required("pageNo")?);
    let page_size = to_int(p.required("pageSize")?);
    let ns = ctx.namespace()?;
    let group = p.optional_or("groupName", DEFAULT_GROUP);
    let selector = p.optional("selector");
    let mut names = Vec::new();
    for view in ctx.shard.shared.view.in_namespace(ns) {
        if group != "*" && group_of(&view.key.grouped) != group {
            continue;
        }
        if let Some(sel) = selector {
            if !selector_matches(&view, sel)? {
                continue;
            }
        }
        names.push(view.key.grouped.clone());
    }
    let count = names.len();
    let start = ((page_no - 1).max(0) * page_size.max(0)) as usize;
    let doms: Vec<&str> = names
        .iter()
        .skip(start)
        .take(page_size.max(0) as usize)
        .map(|g| name_of(g))
        .collect();
    Ok(Answer::json(&json!({"doms": doms, "count": count})))
}

/// `GET /nacos/v1/ns/service/names` → `{"services":{ns:[names]},"count":<namespaces>}`.
pub fn names(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let only_ns = p.optional("namespaceId");
    let expr = p.optional_or("expr", "");
    let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for view in ctx.shard.shared.view.all() {
        if only_ns.is_some_and(|n| n != &*view.key.namespace) {
            continue;
        }
        if !view.key.grouped.contains(expr) {
            continue;
        }
        by_ns
            .entry(view.key.namespace.to_string())
            .or_default()
            .push(name_of(&view.key.grouped).to_string());
    }
    for v in by_ns.values_mut() {
        v.sort();
    }
    let count = by_ns.len();
    Ok(Answer::json(&json!({"services": by_ns, "count": count})))
}

/// Legacy `GET /nacos/v1/ns/api/allDomNames` → `{"count":N,"doms":{ns:[names]}}`.
pub fn all_dom_names(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for view in ctx.shard.shared.view.all() {
        by_ns
            .entry(view.key.namespace.to_string())
            .or_default()
            .push(name_of(&view.key.grouped).to_string());
    }
    let count: usize = by_ns.values().map(Vec::len).sum();
    for v in by_ns.values_mut() {
        v.sort();
    }
    Ok(Answer::json(&json!({"count": count, "doms": by_ns})))
}

/// `GET /nacos/v1/ns/catalog/services`: the console's service table.
///
/// `serviceNameParam` and `groupNameParam` are substring filters, `hasIpCount` drops empty
/// services, `instance` filters by `ip` or `ip:port`. With `withInstances=true` the answer is
/// a bare array and, as in Nacos 1.4.6, page `pageNo` starts at item `pageNo * pageSize`.
pub fn catalog_services(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let page_no = crate::naming::params::parse_int(p.required("pageNo")?)?;
    let page_size = crate::naming::params::parse_int(p.required("pageSize")?)?.max(0) as usize;
    let ns = ctx.namespace()?;
    let with_instances = p.strict_bool("withInstances", false);
    let name_q = p.optional_or("serviceNameParam", "");
    let group_q = p.optional_or("groupNameParam", "");
    let has_ip_count = p.strict_bool("hasIpCount", false);
    let inst_q = p.optional_or("instance", "");
    let matched: Vec<Arc<ServiceView>> = ctx
        .shard
        .shared
        .view
        .in_namespace(ns)
        .into_iter()
        .filter(|v| {
            name_of(&v.key.grouped).contains(name_q) && group_of(&v.key.grouped).contains(group_q)
        })
        .filter(|v| with_instances || !has_ip_count || !v.instances.is_empty())
        .filter(|v| {
            with_instances
                || inst_q.is_empty()
                || v.instances.iter().any(|i| {
                    *i.key.ip == *inst_q || format!("{}:{}", i.key.ip, i.key.port) == inst_q
                })
        })
        .collect();
    let total = matched.len();
    let start_page = if with_instances { page_no } else { page_no - 1 }.max(0) as usize;
    let page: Vec<&Arc<ServiceView>> = if page_size >= total {
        matched.iter().collect()
    } else {
        matched
            .iter()
            .skip(start_page * page_size)
            .take(page_size)
            .collect()
    };
    if with_instances {
        let arr: Vec<Value> = page
            .iter()
            .map(|v| {
                let mut clusters: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
                for name in v.meta.clusters.keys() {
                    clusters.entry(name).or_default();
                }
                for i in &v.instances {
                    clusters.entry(&i.key.cluster).or_default().push(json!({
                        "valid": i.healthy, "metadata": &*i.metadata, "port": i.key.port,
                        "ip": &*i.key.ip, "weight": i.weight, "enabled": i.enabled,
                    }));
                }
                let cluster_map: serde_json::Map<String, Value> = clusters
                    .into_iter()
                    .map(|(k, hosts)| (k.to_string(), json!({"hosts": hosts})))
                    .collect();
                json!({
                    "serviceName": name_of(&v.key.grouped),
                    "groupName": group_of(&v.key.grouped),
                    "clusterMap": cluster_map,
                    "metadata": v.meta.metadata,
                })
            })
            .collect();
        return Ok(Answer::json(&Value::Array(arr)));
    }
    if page.is_empty() {
        return Ok(Answer::json(&json!({"serviceList": [], "count": 0})));
    }
    let list: Vec<Value> = page
        .iter()
        .map(|v| {
            let total = v.instances.len();
            let healthy = v.healthy_count();
            let trigger = total > 0 && (healthy as f32 / total as f32) <= v.meta.protect_threshold;
            json!({
                "name": name_of(&v.key.grouped),
                "groupName": group_of(&v.key.grouped),
                "clusterCount": v.meta.clusters.len(),
                "ipCount": total,
                "healthyInstanceCount": healthy,
                "triggerFlag": if trigger { "true" } else { "false" },
            })
        })
        .collect();
    Ok(Answer::json(&json!({"serviceList": list, "count": total})))
}

/// `GET /nacos/v1/ns/catalog/instances` → `{"list":[instance],"count":N}` for one cluster.
pub fn catalog_instances(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let key = ctx.service_key()?;
    let cluster = p.required("clusterName")?;
    let page_no = crate::naming::params::parse_int(p.required("pageNo")?)?.max(1) as usize;
    let page_size = crate::naming::params::parse_int(p.required("pageSize")?)?.max(0) as usize;
    let Some(view) = ctx.shard.shared.view.get(key.as_ref()) else {
        return Err(ApiError::server(format!(
            "service {} is not found!",
            key.grouped
        )));
    };
    if !view.meta.clusters.contains_key(cluster) {
        return Err(ApiError::server(format!("cluster {cluster} is not found!")));
    }
    let all: Vec<Value> = view
        .instances
        .iter()
        .filter(|i| *i.key.cluster == *cluster)
        .map(|i| i.full_json(&key.grouped))
        .collect();
    let count = all.len();
    let page: Vec<Value> = all
        .into_iter()
        .skip((page_no - 1) * page_size)
        .take(page_size)
        .collect();
    Ok(Answer::json(&json!({"list": page, "count": count})))
}

/// `GET /nacos/v1/ns/catalog/service` → `{"service":{...},"clusters":[...]}`.
pub fn catalog_service(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let key = ctx.service_key()?;
    let Some(view) = ctx.shard.shared.view.get(key.as_ref()) else {
        return Err(ApiError::server(format!(
            "service {} is not found!",
            key.grouped
        )));
    };
    let clusters: Vec<Value> = view
        .meta
        .clusters
        .iter()
        .map(|(name, c)| {
            json!({
                "serviceName": &*key.grouped,
                "name": &**name,
                "healthChecker": c.health_checker,
                "defaultPort": 80,
                "defaultCheckPort": c.check_port,
                "useIPPort4Check": c.use_instance_port,
                "metadata": c.metadata,
            })
        })
        .collect();
    Ok(Answer::json(&json!({
        "service": {
            "name": &*key.grouped,
            "protectThreshold": float_json(view.meta.protect_threshold),
            "groupName": key.group(),
            "selector": view.meta.selector,
            "metadata": view.meta.metadata,
        },
        "clusters": clusters,
    })))
}

/// `GET /nacos/v1/ns/service/subscribers` → `{"subscribers":[...],"count":N}`, paged with
/// `pageNo` (default 1) and `pageSize` (default 1000).
pub async fn subscribers(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let key = ctx.service_key()?;
    let page_no = crate::naming::params::parse_int(p.optional_or("pageNo", "1"))?.max(1) as usize;
    let page_size =
        crate::naming::params::parse_int(p.optional_or("pageSize", "1000"))?.max(0) as usize;
    let subs = match ctx
        .shard
        .execute(key.clone(), crate::node::mailbox::Op::Subscribers)
        .await?
    {
        crate::naming::write::Reply::Subscribers(s) => s,
        _ => Vec::new(),
    };
    let count = subs.len();
    let list: Vec<Value> = subs
        .iter()
        .skip((page_no - 1) * page_size)
        .take(page_size)
        .map(|s| {
            json!({
                "addrStr": s.addr.to_string(),
                "agent": s.agent,
                "app": s.app,
                "ip": s.addr.ip().to_string(),
                "port": s.addr.port(),
                "namespaceId": &*key.namespace,
                "serviceName": &*key.grouped,
                "cluster": s.clusters,
            })
        })
        .collect();
    Ok(Answer::json(&json!({"subscribers": list, "count": count})))
}

/// `PUT /nacos/v1/ns/cluster`: a cluster's checker, check port and metadata → `ok`.
pub async fn update_cluster(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let p = &ctx.params;
    let key = ctx.service_key()?;
    let cluster = p.required("clusterName")?;
    let check_port = crate::naming::params::parse_int(p.required("checkPort")?)?;
    let use_instance_port = crate::naming::params::to_boolean(p.required("useInstancePort4Check")?);
    let checker_raw = p.required("healthChecker")?;
    let checker: Value = serde_json::from_str(checker_raw).map_err(|e| {
        ApiError::bad_request(format!("Param 'healthChecker' is not valid JSON: {e}"))
    })?;
    match checker.get("type").and_then(Value::as_str) {
        Some("TCP" | "HTTP" | "MYSQL" | "NONE") => {}
        _ => {
            return Err(ApiError::bad_request(format!(
                "Param 'healthChecker' has an unknown type: {checker_raw}"
            )))
        }
    }
    let metadata = match p.optional("metadata") {
        Some(m) => parse_metadata(m)?,
        None => Metadata::new(),
    };
    let meta = ClusterMeta {
        health_checker: checker,
        check_port,
        use_instance_port,
        metadata,
    };
    crate::naming::service::check_cluster_name(cluster)?;
    let write = Write::UpdateCluster {
        cluster: cluster.to_string(),
        meta,
    };
    ctx.shard.execute(key, write).await?;
    Ok(Answer::ok())
}
