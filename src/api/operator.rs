//! Server status endpoints: operator metrics, servers, switches, naming health, readiness.

use serde_json::json;

use super::{Answer, Ctx};
use crate::error::{ApiError, ApiResult};

/// The Nacos version Muster answers as.
pub const NACOS_VERSION: &str = "1.4.6";

fn totals(ctx: &Ctx<'_>) -> (u64, u64) {
    let mut services = 0;
    let mut instances = 0;
    for m in &ctx.shard.shared.metrics.shards {
        let s = m.registry();
        services += s.services;
        instances += s.healthy + s.unhealthy;
    }
    (services, instances)
}

/// 1-minute load average from `/proc/loadavg`.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Share of memory in use, from `/proc/meminfo` (`1 - MemAvailable / MemTotal`).
fn memory_usage() -> f64 {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        return 0.0;
    };
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (field("MemTotal:"), field("MemAvailable:")) {
        (Some(t), Some(a)) if t > 0.0 => 1.0 - a / t,
        _ => 0.0,
    }
}

/// Process CPU time over wall time since start, divided by the cores in use (0.0–1.0).
fn cpu_usage(shards: usize) -> f64 {
    // SAFETY: getrusage fills a local struct.
    let used = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return 0.0;
        }
        ru.ru_utime.tv_sec as f64
            + ru.ru_utime.tv_usec as f64 / 1e6
            + ru.ru_stime.tv_sec as f64
            + ru.ru_stime.tv_usec as f64 / 1e6
    };
    let up = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            let start_ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
            let uptime: f64 = std::fs::read_to_string("/proc/uptime")
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            Some(uptime - start_ticks / hz)
        })
        .unwrap_or(0.0);
    if up <= 0.0 {
        return 0.0;
    }
    (used / up / shards.max(1) as f64).min(1.0)
}

/// `GET /nacos/v1/ns/operator/metrics`: `status` is `UP` when ready (clients check it).
pub fn metrics(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let (services, instances) = totals(ctx);
    let ready = ctx.shard.shared.is_ready();
    Ok(Answer::json(&json!({
        "status": if ready { "UP" } else { "STARTING" },
        "serviceCount": services,
        "instanceCount": instances,
        "raftNotifyTaskCount": 0,
        "responsibleServiceCount": services,
        "responsibleInstanceCount": instances,
        "cpu": cpu_usage(ctx.shard.shared.config.shards),
        "load": load_average(),
        "mem": memory_usage(),
    })))
}

/// `GET /nacos/v1/ns/operator/servers[?healthy=true]`: the members as Nacos `Member`s (this
/// node alone when standalone); `healthy=true` keeps the UP ones.
pub fn servers(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let healthy = ctx.params.strict_bool("healthy", false);
    let servers: Vec<_> = super::core::members(ctx)
        .into_iter()
        .filter(|m| !healthy || m["state"] == "UP")
        .collect();
    Ok(Answer::json(&json!({ "servers": servers })))
}

/// `GET /nacos/v1/ns/operator/switches`: the switches Muster actually honours.
pub fn switches(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let life = ctx.shard.shared.config.lifecycle;
    Ok(Answer::json(&json!({
        "name": "00-00---000-NACOS_SWITCH_DOMAIN-000---00-00",
        "defaultPushCacheMillis": 10000,
        "clientBeatInterval": life.timing.interval_ms,
        "defaultCacheMillis": super::instance::CACHE_MILLIS,
        "healthCheckEnabled": true,
        "distroEnabled": true,
        "enableStandalone": true,
        "pushEnabled": ctx.shard.shared.config.push.enabled,
        "checkTimes": 3,
        "lightBeatEnabled": true,
        "defaultInstanceEphemeral": true,
        "expireInstance": life.expire,
    })))
}

/// `GET /nacos/v1/ns/health/server`.
pub fn health_server(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    let (services, _) = totals(ctx);
    Ok(Answer::json(&json!({
        "msg": format!(
            "Hello! I am Nacos-Naming and healthy! total services: raft {services}, local port:{}",
            ctx.shard.shared.listen.port()
        )
    })))
}

/// `GET /nacos/v1/console/health/readiness`: `OK`, or 500 while not ready.
pub fn readiness(ctx: &Ctx<'_>) -> ApiResult<Answer> {
    if ctx.shard.shared.is_ready() {
        Ok(Answer::text("OK"))
    } else {
        Err(ApiError {
            status: 500,
            msg: "Naming is not in readiness".into(),
            kind: crate::error::ErrorKind::Plain,
        })
    }
}
