//! Instances: identity, settings, and how they render in `instance/list`.
//!
//! An [`Instance`] is immutable once built; a change builds a new one. Host JSON is rendered
//! straight into a service's cached host array (see `view`), not kept per instance: an
//! instance costs its fields, not a second copy of itself as text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{ApiError, ApiResult};
use crate::naming::service::{name_of, Metadata};

/// Smallest accepted weight.
pub const MIN_WEIGHT: f64 = 0.0;
/// Largest accepted weight.
pub const MAX_WEIGHT: f64 = 10000.0;
/// Metadata key overriding the beat interval (ms, digits only).
pub const HEART_BEAT_INTERVAL: &str = "preserved.heart.beat.interval";
/// Metadata key overriding the unhealthy timeout (ms, digits only).
pub const HEART_BEAT_TIMEOUT: &str = "preserved.heart.beat.timeout";
/// Metadata key overriding the removal timeout (ms, digits only).
pub const IP_DELETE_TIMEOUT: &str = "preserved.ip.delete.timeout";
/// Metadata key choosing the instance id generator (`simple` or `snowflake`).
pub const INSTANCE_ID_GENERATOR: &str = "preserved.instance.id.generator";
/// Longest accepted `ip` value (IPv6 text or a host name).
pub const MAX_IP_LEN: usize = 128;

/// Lease timings of one instance, in milliseconds.
///
/// Defaults: 5000 / 15000 / 30000, overridable per instance with `preserved.*` metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How often the client should beat (`clientBeatInterval`).
    pub interval_ms: u64,
    /// No beat for this long → unhealthy.
    pub timeout_ms: u64,
    /// No beat for this long → removed.
    pub delete_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            interval_ms: 5_000,
            timeout_ms: 15_000,
            delete_ms: 30_000,
        }
    }
}

impl Timing {
    /// Applies `preserved.*` overrides (digits only; anything else is ignored, as in Nacos).
    pub fn with_overrides(mut self, metadata: &Metadata) -> Self {
        let get = |k: &str| {
            metadata
                .get(k)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(v) = get(HEART_BEAT_INTERVAL) {
            self.interval_ms = v;
        }
        if let Some(v) = get(HEART_BEAT_TIMEOUT) {
            self.timeout_ms = v;
        }
        if let Some(v) = get(IP_DELETE_TIMEOUT) {
            self.delete_ms = v;
        }
        self
    }
}

/// An instance's ip or host name. Up to [`Host::INLINE`] bytes (every IPv4 address and most
/// IPv6 ones) live inline, longer names in a shared allocation: a registry of 100k instances
/// saves a 32-byte allocation each. Equality, order and hashing are the text's.
#[derive(Clone)]
pub struct Host(HostRepr);

/// The representation behind [`Host`], private so that safe code cannot build an inline value
/// whose bytes are not UTF-8 (or whose `len` exceeds the buffer): only `From<&str>` makes one.
#[derive(Clone)]
enum HostRepr {
    /// `len` bytes of UTF-8 text at the start of `buf`.
    Inline {
        /// Length in bytes, at most [`Host::INLINE`].
        len: u8,
        /// The text, zero-padded.
        buf: [u8; Host::INLINE],
    },
    /// Longer text.
    Shared(Arc<str>),
}

impl Host {
    /// Longest text kept inline (the type stays 24 bytes, like the `Arc<str>` it replaces
    /// plus its allocation's share).
    pub const INLINE: usize = 22;

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            HostRepr::Inline { len, buf } => {
                // SAFETY: an inline value is only built by `From<&str>`, which copies a whole
                // `&str` of `len <= INLINE` bytes into `buf`; the fields are private to this
                // module, so `buf[..len]` is always that valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(&buf[..usize::from(*len)]) }
            }
            HostRepr::Shared(s) => s,
        }
    }
}

impl From<&str> for Host {
    fn from(s: &str) -> Host {
        if s.len() <= Host::INLINE {
            let mut buf = [0u8; Host::INLINE];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            Host(HostRepr::Inline {
                len: s.len() as u8,
                buf,
            })
        } else {
            Host(HostRepr::Shared(Arc::from(s)))
        }
    }
}

impl std::ops::Deref for Host {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Host {
    fn eq(&self, other: &Host) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Host {}

impl PartialOrd for Host {
    fn partial_cmp(&self, other: &Host) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Host {
    fn cmp(&self, other: &Host) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for Host {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instance's identity inside a service: `(ip, port, cluster)` (Nacos's datumKey), plus
/// whether it is ephemeral, since the same ip:port may be both.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    /// IP address or host name, as registered.
    pub ip: Host,
    /// Port.
    pub port: u16,
    /// Cluster name.
    pub cluster: Arc<str>,
    /// Ephemeral (AP) or persistent (CP).
    pub ephemeral: bool,
}

/// What a client asked for when registering or updating an instance.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstanceSpec {
    /// IP address or host name.
    pub ip: String,
    /// Port, 0–65535.
    pub port: u16,
    /// Cluster name (validated).
    pub cluster: String,
    /// Weight, 0–10000.
    pub weight: f64,
    /// Requested health; an existing instance keeps its own (Nacos's `updateIps`).
    pub healthy: bool,
    /// Whether it is served in lists.
    pub enabled: bool,
    /// Ephemeral (AP) or persistent (CP).
    pub ephemeral: bool,
    /// Metadata.
    pub metadata: Metadata,
    /// `app` (default `DEFAULT`).
    pub app: String,
}

impl InstanceSpec {
    /// `Instance.validate`: weight range; plus the ip rule (non-empty, bounded, no spaces).
    pub fn validate(&self) -> ApiResult<()> {
        if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&self.weight) {
            return Err(ApiError::bad_request(format!(
                "instance format invalid: The weights range from {MIN_WEIGHT:?} to {MAX_WEIGHT:?}"
            )));
        }
        check_ip(&self.ip)
    }
}

/// Nacos's `Instance.toString`: `ip:port:unknown:cluster_weight_healthy_marked_cluster`, the
/// sort key and the text of "instance not exist" errors.
pub fn nacos_to_string(
    ip: &str,
    port: u16,
    cluster: &str,
    weight: f64,
    healthy: bool,
    marked: bool,
) -> String {
    format!(
        "{ip}:{port}:unknown:{cluster}_{}_{healthy}_{marked}_{cluster}",
        java_double(weight)
    )
}

impl InstanceSpec {
    /// An ephemeral instance in the `DEFAULT` cluster with Nacos's defaults: weight 1, healthy,
    /// enabled, no metadata, app `DEFAULT`.
    pub fn new(ip: &str, port: u16) -> InstanceSpec {
        InstanceSpec {
            ip: ip.to_string(),
            port,
            cluster: crate::naming::service::DEFAULT_CLUSTER.to_string(),
            weight: 1.0,
            healthy: true,
            enabled: true,
            ephemeral: true,
            metadata: Metadata::new(),
            app: "DEFAULT".to_string(),
        }
    }

    /// The 400-class error a strict update gives for a missing instance (Nacos message).
    pub fn not_exist(&self) -> ApiError {
        ApiError::server(format!(
            "instance not exist: {}",
            nacos_to_string(
                &self.ip,
                self.port,
                &self.cluster,
                self.weight,
                self.healthy,
                false
            )
        ))
    }
}

/// Rejects an `ip` that is empty, overlong, has whitespace or control characters, or is
/// misspelled (`instance format invalid: Your IP address is spelled incorrectly`, 400):
///
/// - Only digits and dots: must be four groups of 1–3 digits, Nacos 1.4.0's `IP_PATTERN`
///   (`1.2.3.4.5` is refused). Nacos 1.4.1–1.4.6 meant to keep this check, but their
///   `IPUtil.containsPort` rewrite made it always pass.
/// - A `:`: must be an IPv6 address (brackets and a `%zone` allowed), so `1.2.3.4:80` is
///   refused; the datumKey `ip:port:…` would otherwise be ambiguous. Nacos 1.4.6 accepts it.
/// - A `#`: refused; the instance id `ip#port#cluster#service` would be ambiguous. Nacos 1.4.6
///   accepts it.
///
/// Host names are otherwise accepted, as Nacos does.
pub fn check_ip(ip: &str) -> ApiResult<()> {
    if ip.is_empty()
        || ip.len() > MAX_IP_LEN
        || ip.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::bad_request(format!(
            "Param 'ip' is illegal: '{ip}' is not an IP address or host name"
        )));
    }
    let misspelled = if ip.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let groups: Vec<&str> = ip.split('.').collect();
        groups.len() != 4 || groups.iter().any(|g| g.is_empty() || g.len() > 3)
    } else if ip.contains(':') {
        let bare = ip
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(ip);
        let addr = bare.split_once('%').map_or(bare, |(a, _zone)| a);
        addr.parse::<std::net::Ipv6Addr>().is_err()
    } else {
        ip.contains('#')
    };
    if misspelled {
        return Err(ApiError::bad_request(
            "instance format invalid: Your IP address is spelled incorrectly",
        ));
    }
    Ok(())
}

/// Parses a port like `Integer.parseInt` and bounds it to 0–65535.
pub fn parse_port(raw: &str) -> ApiResult<u16> {
    let p = crate::naming::params::parse_int(raw)?;
    u16::try_from(p).map_err(|_| {
        ApiError::bad_request(format!("Param 'port' is illegal: {p} is not in 0-65535"))
    })
}

/// A registered instance. Immutable: every change builds a new one.
#[derive(Debug)]
pub struct Instance {
    /// Identity within the service.
    pub key: InstanceKey,
    /// Weight, 0–10000.
    pub weight: f64,
    /// Health as last decided by beats or probes.
    pub healthy: bool,
    /// Whether lists serve it.
    pub enabled: bool,
    /// Health was set by hand and is not changed by beats.
    pub marked: bool,
    /// Metadata, shared between copies of the instance (and, when empty, by all of them).
    pub metadata: Arc<Metadata>,
    /// The generated id (snowflake generator: the smallest unused integer), or [`NO_ID`] for
    /// the simple id `ip#port#cluster#group@@name`, derived when rendered rather than stored.
    snowflake: u32,
    /// `app`; the common values ("DEFAULT", "") share one allocation.
    pub app: Arc<str>,
    /// Lease timings in ms, packed as u32 (values above ~49.7 days are clamped).
    timing: [u32; 3],
    /// Generation of the lease that is current for this instance: set by the owner when it
    /// (re-)registers the instance, carried over by copies that change other fields, so a lease
    /// entry naming an older generation is stale. 0 for instances built outside a registry.
    pub gen: u32,
    /// Monotonic ms of the last beat or registration. The one mutable field: the owner shard
    /// stores it on every beat (no copy, no new revision); readers never look at it.
    pub last_beat: AtomicU64,
}

/// `snowflake` value of an instance with the simple id.
const NO_ID: u32 = u32::MAX;

/// `app` as stored: the values nearly every instance has are one shared allocation.
/// An instance's metadata, shared: every instance without any shares one empty value, and a
/// copy of an instance (a health flip) shares its original's.
fn shared_metadata(m: &Metadata) -> Arc<Metadata> {
    static EMPTY: std::sync::OnceLock<Arc<Metadata>> = std::sync::OnceLock::new();
    if m.is_empty() {
        EMPTY.get_or_init(|| Arc::new(Metadata::new())).clone()
    } else {
        Arc::new(m.clone())
    }
}

fn shared_app(app: &str) -> Arc<str> {
    static DEFAULT: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    match app {
        "DEFAULT" => DEFAULT.get_or_init(|| Arc::from("DEFAULT")).clone(),
        "" => EMPTY.get_or_init(|| Arc::from("")).clone(),
        other => Arc::from(other),
    }
}

impl Instance {
    /// Builds an instance. `custom_id` is `None` for the simple id.
    pub fn build(
        spec: &InstanceSpec,
        cluster: Arc<str>,
        ip: Host,
        custom_id: Option<u32>,
        healthy: bool,
        base: Timing,
    ) -> Instance {
        let t = base.with_overrides(&spec.metadata);
        let ms = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Instance {
            key: InstanceKey {
                ip,
                port: spec.port,
                cluster,
                ephemeral: spec.ephemeral,
            },
            weight: spec.weight,
            healthy,
            enabled: spec.enabled,
            marked: false,
            metadata: shared_metadata(&spec.metadata),
            snowflake: custom_id.map_or(NO_ID, |id| id.min(NO_ID - 1)),
            app: shared_app(&spec.app),
            timing: [ms(t.interval_ms), ms(t.timeout_ms), ms(t.delete_ms)],
            gen: 0,
            last_beat: AtomicU64::new(0),
        }
    }

    /// A copy with a different health flag.
    pub fn with_health(&self, healthy: bool) -> Instance {
        Instance {
            key: self.key.clone(),
            weight: self.weight,
            healthy,
            enabled: self.enabled,
            marked: self.marked,
            metadata: self.metadata.clone(),
            snowflake: self.snowflake,
            app: self.app.clone(),
            timing: self.timing,
            gen: self.gen,
            last_beat: AtomicU64::new(self.last_beat()),
        }
    }

    /// The generated (snowflake) id, if it has one.
    pub fn custom_id(&self) -> Option<u32> {
        (self.snowflake != NO_ID).then_some(self.snowflake)
    }

    /// Lease timings (ms).
    pub fn timing(&self) -> Timing {
        Timing {
            interval_ms: u64::from(self.timing[0]),
            timeout_ms: u64::from(self.timing[1]),
            delete_ms: u64::from(self.timing[2]),
        }
    }

    /// Whether `other` says exactly what this instance says (everything but lease state), so
    /// replacing one with the other would change nothing a client can see.
    pub fn same_as(&self, other: &Instance) -> bool {
        self.key == other.key
            && self.weight.to_bits() == other.weight.to_bits()
            && self.healthy == other.healthy
            && self.enabled == other.enabled
            && self.marked == other.marked
            && self.snowflake == other.snowflake
            && self.timing == other.timing
            && self.app == other.app
            && self.metadata == other.metadata
    }

    /// Monotonic ms of the last beat or registration.
    pub fn last_beat(&self) -> u64 {
        self.last_beat.load(Ordering::Relaxed)
    }

    /// The settings this instance was built from (health as it is now).
    pub fn to_spec(&self) -> InstanceSpec {
        InstanceSpec {
            ip: self.key.ip.to_string(),
            port: self.key.port,
            cluster: self.key.cluster.to_string(),
            weight: self.weight,
            healthy: self.healthy,
            enabled: self.enabled,
            ephemeral: self.key.ephemeral,
            metadata: (*self.metadata).clone(),
            app: self.app.to_string(),
        }
    }

    /// The instance id in service `grouped`: the generated one, else the simple id.
    pub fn instance_id(&self, grouped: &str) -> std::borrow::Cow<'_, str> {
        match self.custom_id() {
            Some(id) => std::borrow::Cow::Owned(id.to_string()),
            None => std::borrow::Cow::Owned(Instance::simple_id(
                &self.key.ip,
                self.key.port,
                &self.key.cluster,
                grouped,
            )),
        }
    }

    /// The default id: `ip#port#cluster#group@@name`.
    pub fn simple_id(ip: &str, port: u16, cluster: &str, grouped: &str) -> String {
        format!("{ip}#{port}#{cluster}#{grouped}")
    }

    /// Whether the snowflake id generator is requested by metadata.
    pub fn wants_snowflake_id(metadata: &Metadata) -> bool {
        metadata.get(INSTANCE_ID_GENERATOR).map(String::as_str) == Some("snowflake")
    }

    /// Nacos's `toString`: `ip:port:unknown:cluster_weight_healthy_marked_cluster`.
    pub fn describe(&self) -> String {
        nacos_to_string(
            &self.key.ip,
            self.key.port,
            &self.key.cluster,
            self.weight,
            self.healthy,
            self.marked,
        )
    }

    /// Appends this instance's host object to `out`.
    ///
    /// `healthy` is the group the instance is served in (protect threshold may force it true);
    /// `service_json` is the already-escaped serviceName value.
    pub fn write_host(&self, out: &mut Vec<u8>, healthy: bool, service_json: &[u8], grouped: &str) {
        out.extend_from_slice(if healthy {
            b"{\"valid\":true,\"healthy\":true,"
        } else {
            b"{\"valid\":false,\"healthy\":false,"
        });
        out.extend_from_slice(b"\"ip\":");
        push_json(out, &*self.key.ip);
        out.extend_from_slice(b",\"port\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.key.port).as_bytes());
        out.extend_from_slice(if self.marked {
            b",\"marked\":true,\"instanceId\":"
        } else {
            b",\"marked\":false,\"instanceId\":"
        });
        push_json(out, &*self.instance_id(grouped));
        out.extend_from_slice(b",\"metadata\":");
        push_json(out, &*self.metadata);
        out.extend_from_slice(if self.enabled {
            b",\"enabled\":true,\"weight\":"
        } else {
            b",\"enabled\":false,\"weight\":"
        });
        out.extend_from_slice(ryu::Buffer::new().format(self.weight).as_bytes());
        out.extend_from_slice(b",\"clusterName\":");
        push_json(out, &*self.key.cluster);
        out.extend_from_slice(if self.key.ephemeral {
            b",\"ephemeral\":true,\"serviceName\":\""
        } else {
            b",\"ephemeral\":false,\"serviceName\":\""
        });
        out.extend_from_slice(service_json);
        out.extend_from_slice(b"\"}");
    }

    /// The JSON body of `GET /nacos/v1/ns/instance`.
    pub fn detail_json(&self, grouped: &str) -> serde_json::Value {
        serde_json::json!({
            "service": grouped,
            "ip": &*self.key.ip,
            "port": self.key.port,
            "clusterName": &*self.key.cluster,
            "weight": self.weight,
            "healthy": self.healthy,
            "instanceId": self.instance_id(grouped),
            "metadata": &*self.metadata,
        })
    }

    /// The full Nacos instance JSON (used by catalog views). `lastBeat` is omitted: leases are
    /// kept on the monotonic clock, which has no wall-clock meaning.
    pub fn full_json(&self, grouped: &str) -> serde_json::Value {
        serde_json::json!({
            "instanceId": self.instance_id(grouped),
            "ip": &*self.key.ip,
            "port": self.key.port,
            "weight": self.weight,
            "healthy": self.healthy,
            "enabled": self.enabled,
            "ephemeral": self.key.ephemeral,
            "clusterName": &*self.key.cluster,
            "serviceName": grouped,
            "metadata": &*self.metadata,
            "marked": self.marked,
            "app": &*self.app,
            "instanceHeartBeatInterval": self.timing().interval_ms,
            "instanceHeartBeatTimeOut": self.timing().timeout_ms,
            "ipDeleteTimeout": self.timing().delete_ms,
            "instanceIdGenerator": if Instance::wants_snowflake_id(&self.metadata) { "snowflake" } else { "simple" },
        })
    }

    /// The service-name value to render for a client: grouped for Java ≥ 1.0.0, else stripped.
    pub fn service_name_for(grouped: &str, grouped_ok: bool) -> &str {
        if grouped_ok {
            grouped
        } else {
            name_of(grouped)
        }
    }
}

/// Appends `v` as JSON (strings escaped as JSON requires).
fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Appends `v` as a JSON string literal.
pub fn push_json_str(s: &mut String, v: &str) {
    // serde_json escapes exactly as JSON requires; strings here are short.
    s.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into()));
}

/// Formats a double like Java's `Double.toString` for the range weights use (`1.0`, `0.5`).
pub fn java_double(v: f64) -> String {
    let mut b = ryu::Buffer::new();
    b.format(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_rules_follow_nacos_and_keep_ids_unambiguous() {
        for ok in [
            "10.0.0.5",
            "999.1.1.1",
            "host-a.example",
            "::1",
            "[fe80::1]",
            "fe80::1%eth0",
            "::ffff:1.2.3.4",
        ] {
            assert_eq!(check_ip(ok), Ok(()), "{ok}");
        }
        for bad in [
            "1.2.3.4.5",
            "1.2.3",
            "1..2.3",
            "1234.1.1.1",
            "1.2.3.4:80",
            "a#b",
            "a:b",
            "",
        ] {
            assert_eq!(check_ip(bad).unwrap_err().status, 400, "{bad}");
        }
        assert_eq!(
            check_ip("1.2.3.4:80").unwrap_err().msg,
            "instance format invalid: Your IP address is spelled incorrectly"
        );
    }

    #[test]
    fn hosts_inline_short_text_and_compare_as_text() {
        assert_eq!(std::mem::size_of::<Host>(), 24);
        // An instance stays within a 128-byte allocation with its reference counts.
        assert!(
            std::mem::size_of::<Instance>() <= 112,
            "{}",
            std::mem::size_of::<Instance>()
        );
        let texts = [
            "",
            "10.0.0.1",
            "255.255.255.255",
            "fe80::1ff:fe23:4567:890", // 23 bytes: shared
            "abcdefghijklmnopqrstuv",  // 22 bytes: inline
            "a-rather-long-host-name.internal.example",
        ];
        for t in texts {
            let h = Host::from(t);
            assert_eq!(&*h, t);
            assert_eq!(h.to_string(), t);
            assert_eq!(format!("{h:?}"), format!("{t:?}"));
            assert_eq!(
                matches!(h.0, HostRepr::Inline { .. }),
                t.len() <= Host::INLINE,
                "{t}"
            );
        }
        let mut sorted: Vec<Host> = texts.iter().map(|t| Host::from(*t)).collect();
        sorted.sort();
        let mut want = texts.to_vec();
        want.sort();
        assert_eq!(sorted.iter().map(|h| h.as_str()).collect::<Vec<_>>(), want);
        use std::hash::BuildHasher;
        let b = std::collections::hash_map::RandomState::new();
        assert_eq!(b.hash_one(Host::from("10.0.0.1")), b.hash_one("10.0.0.1"));
    }

    fn spec() -> InstanceSpec {
        InstanceSpec::new("10.0.0.5", 8080)
    }

    fn build(s: &InstanceSpec) -> Instance {
        Instance::build(
            s,
            Arc::from(s.cluster.as_str()),
            crate::naming::instance::Host::from(s.ip.as_str()),
            None,
            true,
            Timing::default(),
        )
    }

    #[test]
    fn host_json_is_valid_and_complete() {
        let i = build(&spec());
        let mut out = Vec::new();
        i.write_host(
            &mut out,
            true,
            b"DEFAULT_GROUP@@orders",
            "DEFAULT_GROUP@@orders",
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ip"], "10.0.0.5");
        assert_eq!(v["port"], 8080);
        assert_eq!(v["valid"], true);
        assert_eq!(v["healthy"], true);
        assert_eq!(v["marked"], false);
        assert_eq!(
            v["instanceId"],
            "10.0.0.5#8080#DEFAULT#DEFAULT_GROUP@@orders"
        );
        assert_eq!(v["weight"], 1.0);
        assert_eq!(v["clusterName"], "DEFAULT");
        assert_eq!(v["serviceName"], "DEFAULT_GROUP@@orders");
        assert_eq!(v["ephemeral"], true);
        assert!(String::from_utf8(out).unwrap().contains("\"weight\":1.0"));
    }

    #[test]
    fn metadata_with_quotes_is_escaped() {
        let mut s = spec();
        s.metadata.insert("k\"".into(), "v\\\n".into());
        let mut out = Vec::new();
        build(&s).write_host(&mut out, false, b"x", "DEFAULT_GROUP@@orders");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["metadata"]["k\""], "v\\\n");
        assert_eq!(v["healthy"], false);
    }

    #[test]
    fn timing_overrides_need_digits() {
        let mut m = Metadata::new();
        m.insert(HEART_BEAT_TIMEOUT.into(), "1000".into());
        m.insert(IP_DELETE_TIMEOUT.into(), "2s".into());
        let t = Timing::default().with_overrides(&m);
        assert_eq!(t.timeout_ms, 1000);
        assert_eq!(t.delete_ms, 30_000);
    }

    #[test]
    fn weight_range_and_ports() {
        let mut s = spec();
        s.weight = 10000.5;
        assert_eq!(
            s.validate().unwrap_err().msg,
            "instance format invalid: The weights range from 0.0 to 10000.0"
        );
        assert_eq!(parse_port("8080"), Ok(8080));
        assert!(parse_port("65536").is_err());
        assert!(parse_port("-1").is_err());
        assert!(parse_port("x").is_err());
    }

    #[test]
    fn describe_matches_nacos_to_string() {
        assert_eq!(
            build(&spec()).describe(),
            "10.0.0.5:8080:unknown:DEFAULT_1.0_true_false_DEFAULT"
        );
    }
}
