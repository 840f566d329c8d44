//! The config API (`/nacos/v1/cs`): get, publish and delete a config (with beta and tag
//! copies), search, history, and long-poll listeners; Nacos 1.4.6's `ConfigController`,
//! `ConfigServletInner`, `LongPollingService` and `HistoryController`.
//!
//! Reads take the config state's read lock on the accepting shard. Writes go through raft
//! (`ConfigHub::propose`) and answer once fdatasynced and applied. Every parameter error is a
//! 400 that changes nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;

use crate::api::{Answer, Ctx, TEXT};
use crate::clock::wall_ms;
use crate::config::listen::{self, Listened, Wake};
use crate::config::params::{self, ParamError};
use crate::consensus::config::{
    ConfigData, ConfigItem, ConfigKey, ConfigOp, ConfigSpec, HistoryRecord, Retention, Variant,
};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::http::{Chunks, Request};
use crate::node::config::listened_key;

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl From<listen::ListenError> for ApiError {
    fn from(e: listen::ListenError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

/// Spring's `@RequestParam` (required, no default): missing → 400
/// `Required String parameter '<k>' is not present`. The value is not trimmed.
fn spring_required<'c>(ctx: &'c Ctx<'_>, key: &str) -> ApiResult<&'c str> {
    ctx.params.get(key).ok_or_else(|| {
        ApiError::bad_request(format!("Required String parameter '{key}' is not present"))
    })
}

/// A parameter with Spring's `defaultValue = ""`.
fn or_empty<'c>(ctx: &'c Ctx<'_>, key: &str) -> &'c str {
    ctx.params.get(key).unwrap_or("")
}

/// `RequestUtil.getRemoteIp`: the first `X-Forwarded-For` address, else `X-Real-IP`, else the
/// peer.
pub fn client_ip(req: &Request<'_>, ctx: &Ctx<'_>) -> String {
    if let Some(f) = req.header("X-Forwarded-For").filter(|v| !v.is_empty()) {
        return f.split(',').next().unwrap_or(f).trim().to_string();
    }
    if let Some(r) = req.header("X-Real-IP").filter(|v| !v.is_empty()) {
        return r.to_string();
    }
    ctx.peer.ip().to_string()
}

/// `Expires: 0` as Tomcat writes a date header (`http::imf_fixdate(0)`, a test checks).
const EPOCH_DATE: &str = "Thu, 01 Jan 1970 00:00:00 GMT";

/// The no-cache headers of config answers.
fn no_cache(headers: &mut Vec<(&'static str, String)>) {
    headers.push(("Pragma", "no-cache".into()));
    headers.push(("Expires", EPOCH_DATE.into()));
    headers.push(("Cache-Control", "no-cache,no-store".into()));
}

/// A body that shares a config's content (no copy of a large config per read).
struct Content(Arc<ConfigItem>);

impl AsRef<[u8]> for Content {
    fn as_ref(&self) -> &[u8] {
        self.0.spec.content.as_bytes()
    }
}

fn json_answer(v: &serde_json::Value) -> Answer {
    Answer::json(v)
}

fn true_answer() -> Answer {
    Answer::json_bytes(Bytes::from_static(b"true"))
}

fn not_found() -> Answer {
    Answer {
        status: 404,
        content_type: TEXT,
        body: Chunks::one(Bytes::from_static(b"config data not exist\n")),
        headers: Vec::new(),
    }
}

/// `GET /nacos/v1/cs/configs`: by `search`, `beta`, or the config itself.
pub fn get(ctx: &Ctx<'_>, req: &Request<'_>) -> ApiResult<Answer> {
    match ctx.params.get("search") {
        Some("accurate") => return search(ctx, false),
        Some("blur") => return search(ctx, true),
        _ => {}
    }
    if ctx.params.get("beta") == Some("true") {
        return query_beta(ctx);
    }
    if ctx.params.get("export") == Some("true") {
        return crate::api::transfer::export(ctx, false);
    }
    if ctx.params.get("exportV2") == Some("true") {
        return crate::api::transfer::export(ctx, true);
    }
    let data_id = spring_required(ctx, "dataId")?;
    let group = spring_required(ctx, "group")?;
    let tenant = params::normalize_tenant(ctx.params.get("tenant"));
    params::check_tenant(tenant)?;
    params::check_key(data_id, group)?;
    let tag = or_empty(ctx, "tag");
    params::check_tag(tag)?;
    let key = ConfigKey::new(tenant, group, data_id);
    let data = ctx.shard.shared.configs.state.read();
    // The client's address matters only for a config with a beta copy (most have none).
    let beta = data.betas.get(&key).and_then(|(item, ips)| {
        let ip = client_ip(req, ctx);
        ips.split(',').any(|i| i.trim() == ip).then(|| item.clone())
    });
    let auto_tag = req.header("Vipserver-Tag").unwrap_or("");
    let tagged = |t: &str| data.tags.get(&key).and_then(|m| m.get(t)).cloned();
    let (item, is_beta) = match beta {
        Some(b) => (Some(b), true),
        None if !tag.trim().is_empty() => (tagged(tag), false),
        None => match (!auto_tag.is_empty()).then(|| tagged(auto_tag)).flatten() {
            Some(t) => (Some(t), false),
            None => (data.configs.get(&key).cloned(), false),
        },
    };
    drop(data);
    let Some(item) = item else {
        return Ok(not_found());
    };
    let mut headers = Vec::with_capacity(7);
    headers.push(("Config-Type", item.spec.kind.clone()));
    headers.push(("Content-MD5", item.md5.clone()));
    no_cache(&mut headers);
    headers.push((
        "Last-Modified",
        crate::http::imf_fixdate((item.modified_ms / 1000) as i64),
    ));
    if is_beta {
        headers.push(("isBeta", "true".into()));
    }
    Ok(Answer {
        status: 200,
        content_type: params::content_type(&item.spec.kind),
        body: Chunks::one(Bytes::from_owner(Content(item))),
        headers,
    })
}

/// `POST /nacos/v1/cs/configs`: publish (with header `betaIps`, a beta copy; with `tag`, a
/// tag copy). Answers `true` once the change is durable.
pub async fn publish(ctx: &Ctx<'_>, req: &Request<'_>) -> ApiResult<Answer> {
    if ctx.params.get("import") == Some("true") {
        return crate::api::transfer::import(ctx, req).await;
    }
    let data_id = spring_required(ctx, "dataId")?;
    let group = spring_required(ctx, "group")?;
    let content = spring_required(ctx, "content")?;
    // Not normalised on publish (Nacos stores the tenant as sent).
    let tenant = or_empty(ctx, "tenant");
    let cfg = &ctx.shard.shared.config;
    params::check_tenant(tenant)?;
    params::check_key(data_id, group)?;
    params::check_content(content, cfg.config_max_content)?;
    let tag = or_empty(ctx, "tag");
    params::check_tag(tag)?;
    let config_tags = or_empty(ctx, "config_tags");
    let desc = or_empty(ctx, "desc");
    params::check_advance(config_tags, desc)?;
    let kind = params::normalize_type(ctx.params.get("type"));
    let beta_ips = req.header("betaIps").unwrap_or("");
    let variant = if !beta_ips.trim().is_empty() {
        Variant::Beta(beta_ips.to_string())
    } else if !tag.trim().is_empty() {
        Variant::Tag(tag.to_string())
    } else {
        Variant::Normal
    };
    let key = ConfigKey::new(tenant, group, data_id);
    if variant == Variant::Normal {
        let data = ctx.shard.shared.configs.state.read();
        if !data.configs.contains_key(&key)
            && count_in(&data, tenant, cfg.config_max_per_namespace) >= cfg.config_max_per_namespace
        {
            return Err(ApiError {
                status: 429,
                msg: format!(
                    "over tenant quota: namespace {tenant:?} holds {} configs already",
                    cfg.config_max_per_namespace
                ),
                kind: ErrorKind::Plain,
            });
        }
    }
    let op = ConfigOp::Publish {
        key,
        variant,
        spec: ConfigSpec {
            content: content.to_string(),
            kind: kind.to_string(),
            app_name: or_empty(ctx, "appName").to_string(),
            desc: desc.to_string(),
            config_tags: config_tags.to_string(),
            src_ip: client_ip(req, ctx),
            src_user: or_empty(ctx, "src_user").to_string(),
        },
        time_ms: wall_ms(),
        retention: retention(ctx),
    };
    ctx.shard.shared.configs.propose(op).await?;
    Ok(true_answer())
}

fn retention(ctx: &Ctx<'_>) -> Retention {
    let cfg = &ctx.shard.shared.config;
    Retention {
        max_per_config: cfg.config_history_max,
        max_age_ms: cfg.config_history_retention_ms,
    }
}

/// Configs in namespace `tenant`, counting at most `cap + 1` (configs are ordered by tenant
/// first, so this walks only that namespace).
fn count_in(data: &ConfigData, tenant: &str, cap: usize) -> usize {
    let start = ConfigKey::new(tenant, "", "");
    data.configs
        .range(start..)
        .take_while(|(k, _)| k.tenant == tenant)
        .take(cap.saturating_add(1))
        .count()
}

/// `DELETE /nacos/v1/cs/configs` (or its tag copy with `tag`; the beta copy with `beta=true`).
pub async fn delete(ctx: &Ctx<'_>, req: &Request<'_>) -> ApiResult<Answer> {
    let data_id = spring_required(ctx, "dataId")?;
    let group = spring_required(ctx, "group")?;
    let tenant = or_empty(ctx, "tenant");
    let beta = ctx.params.get("beta") == Some("true");
    params::check_key(data_id, group)?;
    let tag = or_empty(ctx, "tag");
    params::check_tag(tag)?;
    let variant = if beta {
        Variant::Beta(String::new())
    } else if !tag.trim().is_empty() {
        Variant::Tag(tag.to_string())
    } else {
        Variant::Normal
    };
    let op = ConfigOp::Delete {
        key: ConfigKey::new(tenant, group, data_id),
        variant,
        src_ip: client_ip(req, ctx),
        time_ms: wall_ms(),
        retention: retention(ctx),
    };
    ctx.shard.shared.configs.propose(op).await?;
    if beta {
        return Ok(json_answer(&serde_json::json!({
            "code": 200, "message": "stop beta ok", "data": true
        })));
    }
    Ok(true_answer())
}

/// `GET ?beta=true`: the beta copy as `RestResult<ConfigInfo4Beta>` (Nacos's message is
/// `stop beta ok` here too).
fn query_beta(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let data_id = spring_required(ctx, "dataId")?;
    let group = spring_required(ctx, "group")?;
    let tenant = or_empty(ctx, "tenant");
    let key = ConfigKey::new(tenant, group, data_id);
    let data = ctx.shard.shared.configs.state.read();
    let found = data.betas.get(&key).map(|(item, ips)| {
        let mut v = config_info(&key, item, true);
        v["betaIps"] = serde_json::Value::String(ips.clone());
        v
    });
    Ok(json_answer(&serde_json::json!({
        "code": 200, "message": "stop beta ok", "data": found
    })))
}

/// Nacos's `ConfigInfo` JSON.
fn config_info(key: &ConfigKey, item: &ConfigItem, content: bool) -> serde_json::Value {
    serde_json::json!({
        "id": item.id,
        "dataId": key.data_id,
        "group": key.group,
        "content": if content { Some(&item.spec.content) } else { None },
        "md5": item.md5,
        "tenant": key.tenant,
        "appName": item.spec.app_name,
        "type": item.spec.kind,
    })
}

/// `*` matches any run of characters; everything else matches itself (Nacos turns `*` into
/// SQL's `%`).
pub(crate) fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(at) => rest = &rest[at + p.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Page parameters: `pageNo` (default 1) and `pageSize` (default 100, at most `max`: 500 for
/// history as Nacos caps it; search is not capped by Nacos, here at 10 000 per page).
fn page(ctx: &Ctx<'_>, max: i64) -> ApiResult<(usize, usize)> {
    let no = ctx.params.int_or("pageNo", 1)?.max(1) as usize;
    let size = ctx.params.int_or("pageSize", 100)?.clamp(1, max) as usize;
    Ok((no, size))
}

fn page_json(total: usize, no: usize, size: usize, items: Vec<serde_json::Value>) -> Answer {
    json_answer(&serde_json::json!({
        "totalCount": total,
        "pageNumber": no,
        "pagesAvailable": total.div_ceil(size),
        "pageItems": items,
    }))
}

/// `GET ?search=accurate|blur`: configs of `tenant` matching `dataId`, `group`, `appName` and
/// `config_tags` (blank: any), paged.
fn search(ctx: &Ctx<'_>, blur: bool) -> ApiResult<Answer> {
    let data_id = or_empty(ctx, "dataId");
    let group = or_empty(ctx, "group");
    let app = or_empty(ctx, "appName");
    let tenant = or_empty(ctx, "tenant");
    let tags: Vec<&str> = or_empty(ctx, "config_tags")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let (no, size) = page(ctx, 10_000)?;
    let matches = |pattern: &str, v: &str| {
        pattern.trim().is_empty() || if blur { glob(pattern, v) } else { pattern == v }
    };
    let data = ctx.shard.shared.configs.state.read();
    let start = ConfigKey::new(tenant, "", "");
    let mut total = 0;
    let mut items = Vec::new();
    for (k, item) in data
        .configs
        .range(start..)
        .take_while(|(k, _)| k.tenant == tenant)
    {
        let hit = matches(data_id, &k.data_id)
            && matches(group, &k.group)
            && (app.trim().is_empty() || item.spec.app_name == app)
            && (tags.is_empty()
                || item
                    .spec
                    .config_tags
                    .split(',')
                    .any(|t| tags.contains(&t.trim())));
        if !hit {
            continue;
        }
        if total >= (no - 1) * size && items.len() < size {
            items.push(config_info(k, item, true));
        }
        total += 1;
    }
    Ok(page_json(total, no, size, items))
}

/// Nacos's `ConfigHistoryInfo` JSON (`id` is the history id).
fn history_info(r: &HistoryRecord, content: bool) -> serde_json::Value {
    serde_json::json!({
        "id": r.nid,
        "lastId": -1,
        "dataId": r.key.data_id,
        "group": r.key.group,
        "tenant": r.key.tenant,
        "appName": r.spec.app_name,
        "md5": if content { Some(&r.md5) } else { None },
        "content": if content { Some(&r.spec.content) } else { None },
        "srcIp": r.src_ip,
        "srcUser": r.spec.src_user,
        "opType": r.op_type,
        "createdTime": java_timestamp(r.time_ms),
        "lastModifiedTime": java_timestamp(r.time_ms),
    })
}

/// A timestamp as Jackson 2.9 writes `java.sql.Timestamp` under Spring Boot:
/// `2020-06-25T08:08:31.000+0000`.
fn java_timestamp(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = crate::clock::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `GET /nacos/v1/cs/history`: `?search=accurate` (paged, newest first) or `?nid=`.
pub fn history(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    if let Some(nid) = ctx.params.get("nid") {
        let nid: u64 = nid
            .trim()
            .parse()
            .map_err(|_| ApiError::bad_request(format!("For input string: \"{nid}\"")))?;
        let data = ctx.shard.shared.configs.state.read();
        return Ok(match data.history_record(nid) {
            Some(r) => json_answer(&history_info(r, true)),
            None => Answer::json_bytes(Bytes::new()),
        });
    }
    let data_id = spring_required(ctx, "dataId")?;
    let group = spring_required(ctx, "group")?;
    let tenant = or_empty(ctx, "tenant");
    let (no, size) = page(ctx, 500)?;
    let key = ConfigKey::new(tenant, group, data_id);
    let data = ctx.shard.shared.configs.state.read();
    let all: Vec<&Arc<HistoryRecord>> = data.history_of(&key).collect();
    let items = all
        .iter()
        .skip((no - 1) * size)
        .take(size)
        .map(|r| history_info(r, false))
        .collect();
    Ok(page_json(all.len(), no, size, items))
}

/// `GET /nacos/v1/cs/history/previous?id=`: the newest history record of config `id`.
pub fn history_previous(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let raw = spring_required(ctx, "id")?;
    let id: u64 = raw
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("For input string: \"{raw}\"")))?;
    let data = ctx.shard.shared.configs.state.read();
    let found = data
        .history
        .values()
        .filter_map(|v| v.iter().rev().find(|r| r.id == id))
        .max_by_key(|r| r.nid);
    Ok(match found {
        Some(r) => json_answer(&history_info(r, true)),
        None => Answer::json_bytes(Bytes::new()),
    })
}

/// Removes a held poll from its shard's registry when the request ends, however it ends.
struct HeldGuard<'a> {
    shard: &'a crate::node::shard::Shard,
    id: u64,
    keys: Option<Vec<String>>,
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        if let Some(keys) = self.keys.take() {
            self.shard.config_polls.borrow_mut().remove(self.id, keys);
            self.shard
                .shared
                .configs
                .held
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// `POST /nacos/v1/cs/configs/listener`: answers the listened configs whose md5 differs at
/// once; else holds the request until one changes (answered with it) or the hold ends (an
/// empty 200).
pub async fn listener(ctx: &Ctx<'_>, req: &Request<'_>) -> ApiResult<Answer> {
    let raw = ctx.params.get("Listening-Configs").unwrap_or("");
    let listened = listen::parse_listening(raw)?;
    let timeout = match req.header("Long-Pulling-Timeout") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("For input string: \"{v}\"")))?,
        ),
    };
    let no_hangup = req
        .header("Long-Pulling-Timeout-No-Hangup")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let ip = client_ip(req, ctx);
    let tag = req.header("Vipserver-Tag").unwrap_or("").to_string();
    let configs = &ctx.shard.shared.configs;
    // Check and hold with no await in between: a change applied after the check is announced
    // to this shard only after the poll is held, so it wakes the poll.
    let changed: Vec<&Listened> = {
        let data = configs.state.read();
        listened
            .iter()
            .filter(|l| {
                let key = ConfigKey::new(&l.tenant, &l.group, &l.data_id);
                data.md5_for(&key, &ip, &tag) != l.md5
            })
            .collect()
    };
    let answered = |body: String| {
        let mut headers = Vec::with_capacity(3);
        no_cache(&mut headers);
        Answer {
            status: 200,
            content_type: TEXT,
            body: Chunks::one(Bytes::from(body)),
            headers,
        }
    };
    if !changed.is_empty() {
        return Ok(answered(listen::changed_body(changed)));
    }
    let Some(timeout) = timeout else {
        // Short polling (no Long-Pulling-Timeout): nothing changed.
        return Ok(answered(String::new()));
    };
    if no_hangup {
        return Ok(Answer::text(""));
    }
    let keys: Vec<String> = listened.iter().map(listened_key).collect();
    let id = ctx
        .shard
        .config_polls
        .borrow_mut()
        .hold(listened, &ip, &tag, keys.clone());
    configs.held.fetch_add(1, Ordering::Relaxed);
    let mut guard = HeldGuard {
        shard: ctx.shard,
        id,
        keys: Some(keys),
    };
    let hold = std::time::Duration::from_millis(listen::hold_ms(timeout));
    let woken = futures_lite::future::or(
        std::future::poll_fn(
            |cx| match ctx.shard.config_polls.borrow_mut().poll(id, cx.waker()) {
                Some(w) => Poll::Ready(Some(w)),
                None => Poll::Pending,
            },
        ),
        async {
            glommio::timer::sleep(hold).await;
            None
        },
    )
    .await;
    let keys = guard.keys.take().unwrap_or_default();
    let listened = ctx
        .shard
        .config_polls
        .borrow_mut()
        .remove(id, keys)
        .unwrap_or_default();
    configs.held.fetch_sub(1, Ordering::Relaxed);
    drop(guard);
    match woken {
        Some(Wake::Changed(idx)) => Ok(answered(listen::changed_body(
            idx.iter().filter_map(|&i| listened.get(i)),
        ))),
        Some(Wake::Released) | None => Ok(Answer::text("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_is_the_epoch() {
        assert_eq!(EPOCH_DATE, crate::http::imf_fixdate(0));
    }

    #[test]
    fn blur_patterns_and_timestamps() {
        assert!(glob("*app*", "my-app.yaml"));
        assert!(glob("app*", "app.yaml"));
        assert!(!glob("app*", "my-app"));
        assert!(glob("*.yaml", "a.yaml"));
        assert!(glob("a", "a") && !glob("a", "ab"));
        assert_eq!(
            java_timestamp(1_593_072_511_042),
            "2020-06-25T08:08:31.042+0000"
        );
    }
}
