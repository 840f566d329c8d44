//! Services: their identity, name rules and metadata.
//!
//! A service is keyed by `(namespace, "group@@name")`. Names without `@@` are grouped with the
//! request's `groupName` (default `DEFAULT_GROUP`), as Nacos's `DistroFilter` does.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::error::{ApiError, ApiResult};

/// Default namespace id.
pub const DEFAULT_NAMESPACE: &str = "public";
/// Default group.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// Default cluster.
pub const DEFAULT_CLUSTER: &str = "DEFAULT";
/// Separator between group and name.
pub const GROUP_SEP: &str = "@@";
/// Longest namespace id accepted (Nacos's parameter rule).
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Longest group accepted.
pub const MAX_GROUP_LEN: usize = 128;
/// Longest (bare) service name accepted.
pub const MAX_SERVICE_NAME_LEN: usize = 512;
/// Longest cluster name accepted.
pub const MAX_CLUSTER_NAME_LEN: usize = 64;
/// Metadata keys plus values may not exceed this many bytes (Nacos's parameter rule).
pub const MAX_METADATA_LEN: usize = 1024;

/// String key/value metadata, kept sorted by key so renders and checksums are deterministic.
///
/// A sorted vector rather than a `BTreeMap`: instances carry one each, usually with a handful of
/// keys, and a map's first node alone costs over 500 bytes. Serializes as a JSON object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata(Vec<(String, String)>);

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Metadata(Vec::new())
    }

    /// The pairs, sorted by key.
    pub fn as_slice(&self) -> &[(String, String)] {
        &self.0
    }

    fn find(&self, k: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(key, _)| key.as_str().cmp(k))
    }

    /// The value of `k`.
    pub fn get(&self, k: &str) -> Option<&String> {
        self.find(k).ok().map(|i| &self.0[i].1)
    }

    /// Whether `k` is set.
    pub fn contains_key(&self, k: &str) -> bool {
        self.find(k).is_ok()
    }

    /// Sets `k` to `v`, returning the old value.
    pub fn insert(&mut self, k: String, v: String) -> Option<String> {
        match self.find(&k) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, v)),
            Err(i) => {
                self.0.insert(i, (k, v));
                None
            }
        }
    }

    /// Removes `k`, returning its value.
    pub fn remove(&mut self, k: &str) -> Option<String> {
        self.find(k).ok().map(|i| self.0.remove(i).1)
    }

    /// Pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Drops spare capacity (instances keep theirs for a long time).
    pub fn shrink(mut self) -> Self {
        self.0.shrink_to_fit();
        self
    }
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl std::ops::Index<&str> for Metadata {
    type Output = String;
    fn index(&self, k: &str) -> &String {
        self.get(k).expect("metadata key present")
    }
}

impl serde::Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = BTreeMap::<String, String>::deserialize(d)?;
        Ok(Metadata(m.into_iter().collect()))
    }
}

/// The identity of a service: namespace and grouped name.
///
/// Invariant: `grouped` contains `@@` with a non-empty group before it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Namespace id, e.g. `public`.
    pub namespace: Arc<str>,
    /// `group@@name`.
    pub grouped: Arc<str>,
}

impl Hash for ServiceKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef::new(&self.namespace, &self.grouped).hash(state)
    }
}

/// A borrowed service key, for lookups without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyRef<'a> {
    /// Namespace id.
    pub namespace: &'a str,
    /// `group@@name`.
    pub grouped: &'a str,
}

impl<'a> KeyRef<'a> {
    /// A borrowed key.
    pub fn new(namespace: &'a str, grouped: &'a str) -> Self {
        KeyRef { namespace, grouped }
    }
}

impl hashbrown::Equivalent<ServiceKey> for KeyRef<'_> {
    fn equivalent(&self, key: &ServiceKey) -> bool {
        *self.namespace == *key.namespace && *self.grouped == *key.grouped
    }
}

impl From<&ServiceKey> for ServiceKey {
    fn from(k: &ServiceKey) -> Self {
        k.clone()
    }
}

impl ServiceKey {
    /// An owned key.
    pub fn new(namespace: &str, grouped: &str) -> Self {
        ServiceKey {
            namespace: Arc::from(namespace),
            grouped: Arc::from(grouped),
        }
    }

    /// The borrowed form of this key.
    pub fn as_ref(&self) -> KeyRef<'_> {
        KeyRef::new(&self.namespace, &self.grouped)
    }

    /// The group part of `group@@name`.
    pub fn group(&self) -> &str {
        group_of(&self.grouped)
    }

    /// The name part of `group@@name`.
    pub fn name(&self) -> &str {
        name_of(&self.grouped)
    }
}

/// The group of a grouped name (`DEFAULT_GROUP` if it has none).
pub fn group_of(grouped: &str) -> &str {
    match grouped.find(GROUP_SEP) {
        Some(i) => &grouped[..i],
        None => DEFAULT_GROUP,
    }
}

/// The name of a grouped name, group stripped (`NamingUtils.getServiceName`).
pub fn name_of(grouped: &str) -> &str {
    match grouped.find(GROUP_SEP) {
        Some(i) => &grouped[i + GROUP_SEP.len()..],
        None => grouped,
    }
}

/// `DistroFilter`'s rule: a name without `@@` becomes `<group|DEFAULT_GROUP>@@<name>`.
pub fn grouped_name(service_name: &str, group: Option<&str>) -> String {
    let s = service_name.trim();
    if s.contains(GROUP_SEP) {
        s.to_string()
    } else {
        format!("{}{GROUP_SEP}{s}", group.unwrap_or(DEFAULT_GROUP))
    }
}

/// `NamingUtils.checkServiceNameFormat`: `group@@name` with a non-empty group and name.
pub fn check_service_name_format(grouped: &str) -> ApiResult<()> {
    let mut parts = grouped.split(GROUP_SEP);
    let group = parts.next().unwrap_or("");
    let name = parts.next().unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "Param 'serviceName' is illegal, it should be format as 'groupName@@serviceName'",
        ));
    }
    if group.is_empty() {
        return Err(ApiError::bad_request(
            "Param 'serviceName' is illegal, groupName can't be empty",
        ));
    }
    Ok(())
}

/// The service-name charset rule (`Service.validate`): `[0-9a-zA-Z@.:_-]+`.
pub fn check_service_name_chars(grouped: &str) -> ApiResult<()> {
    let ok = !grouped.is_empty()
        && grouped
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "dom name can only have these characters: 0-9a-zA-Z-._:, current: {grouped}"
        )))
    }
}

/// The cluster-name rule of `PUT /cluster` (`Cluster.validate`): `[0-9a-zA-Z-]+`.
pub fn check_cluster_name(cluster: &str) -> ApiResult<()> {
    let ok = !cluster.is_empty()
        && cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "cluster name can only have these characters: 0-9a-zA-Z-, current: {cluster}"
        )))
    }
}

fn too_long(param: &str, max: usize) -> ApiError {
    ApiError::bad_request(format!(
        "Param '{param}' is illegal, the param length should not exceed {max}."
    ))
}

fn illegal_chars(param: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Param '{param}' is illegal, illegal characters should not appear in the param."
    ))
}

fn is_cjk(c: char) -> bool {
    ('\u{4E00}'..='\u{9FA5}').contains(&c)
}

/// Nacos's parameter rules (`ParamCheckRule`): namespace `^[\w-]+`, at most 64 bytes.
pub fn check_namespace(ns: &str) -> ApiResult<()> {
    if ns.len() > MAX_NAMESPACE_LEN {
        return Err(too_long("namespaceId/tenant", MAX_NAMESPACE_LEN));
    }
    if ns.is_empty()
        || !ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(illegal_chars("namespaceId/tenant"));
    }
    Ok(())
}

/// Nacos's parameter rules for a register/update: group `^[a-zA-Z0-9-_:.]*$` (≤ 128), bare
/// service name without a leading `@`, `@@`, whitespace or CJK (≤ 512), cluster
/// `^[0-9a-zA-Z-_]+$` (≤ 64).
pub fn check_instance_params(grouped: &str, cluster: &str) -> ApiResult<()> {
    let group = group_of(grouped);
    let name = name_of(grouped);
    if group.len() > MAX_GROUP_LEN {
        return Err(too_long("group", MAX_GROUP_LEN));
    }
    if !group
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'))
    {
        return Err(illegal_chars("group"));
    }
    if name.len() > MAX_SERVICE_NAME_LEN {
        return Err(too_long("serviceName", MAX_SERVICE_NAME_LEN));
    }
    if name.starts_with('@')
        || name.contains(GROUP_SEP)
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_cjk(c))
    {
        return Err(illegal_chars("serviceName"));
    }
    if cluster.len() > MAX_CLUSTER_NAME_LEN {
        return Err(too_long("cluster", MAX_CLUSTER_NAME_LEN));
    }
    if cluster.is_empty()
        || !cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(illegal_chars("cluster"));
    }
    Ok(())
}

/// `UtilsAndCommons.parseMetadata`: a JSON object (scalar values become strings), else
/// `k=v,k=v`. Rejects a bad pair, and a result over [`MAX_METADATA_LEN`] bytes of JSON.
pub fn parse_metadata(raw: &str) -> ApiResult<Metadata> {
    let mut out = Metadata::new();
    if raw.trim().is_empty() {
        return Ok(out);
    }
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw) {
        Ok(obj) => {
            for (k, v) in obj {
                let s = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::Bool(_) | serde_json::Value::Number(_) => v.to_string(),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "metadata format incorrect:{raw}"
                        )))
                    }
                };
                out.insert(k, s);
            }
        }
        Err(_) => {
            for pair in raw.split(',') {
                let kv: Vec<&str> = pair.split('=').collect();
                if kv.len() != 2 {
                    return Err(ApiError::bad_request(format!(
                        "metadata format incorrect:{raw}"
                    )));
                }
                out.insert(kv[0].to_string(), kv[1].to_string());
            }
        }
    }
    check_metadata(&out)?;
    Ok(out)
}

/// Rejects metadata whose keys and values add up to more than [`MAX_METADATA_LEN`] bytes.
pub fn check_metadata(m: &Metadata) -> ApiResult<()> {
    let len: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if len > MAX_METADATA_LEN {
        return Err(ApiError::bad_request(format!(
            "Param 'Metadata' is illegal, the param length should not exceed {MAX_METADATA_LEN}."
        )));
    }
    Ok(())
}

/// A cluster's settings (`Cluster.java`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterMeta {
    /// The health checker as JSON: `{"type":"TCP"}` by default.
    pub health_checker: serde_json::Value,
    /// `defCkport`: the port probed when `use_instance_port` is false. Default 80.
    pub check_port: i64,
    /// `useIPPort4Check`. Default true.
    pub use_instance_port: bool,
    /// Cluster metadata.
    pub metadata: Metadata,
}

impl Default for ClusterMeta {
    fn default() -> Self {
        ClusterMeta {
            health_checker: serde_json::json!({"type": "TCP"}),
            check_port: 80,
            use_instance_port: true,
            metadata: Metadata::new(),
        }
    }
}

impl ClusterMeta {
    /// The checker type (`TCP`, `HTTP`, `MYSQL`, `NONE`).
    pub fn checker_type(&self) -> &str {
        self.health_checker
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("TCP")
    }
}

/// Service-level settings (`Service.java`), immutable once published.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceMeta {
    /// Share of healthy instances at or below which all are returned as healthy. Default 0.0.
    pub protect_threshold: f32,
    /// Service metadata.
    pub metadata: Metadata,
    /// The selector as JSON: `{"type":"none"}` by default.
    pub selector: serde_json::Value,
    /// Clusters by name, created on first use.
    pub clusters: BTreeMap<Arc<str>, ClusterMeta>,
    /// Whether the service answers `instance/list` (a disabled one answers 500).
    pub enabled: bool,
}

impl Default for ServiceMeta {
    fn default() -> Self {
        ServiceMeta {
            protect_threshold: 0.0,
            metadata: Metadata::new(),
            selector: serde_json::json!({"type": "none"}),
            clusters: BTreeMap::new(),
            enabled: true,
        }
    }
}

/// Parses a `selector` parameter: `{"type":"none"}` or `{"type":"label","expression":..}`.
pub fn parse_selector(raw: Option<&str>) -> ApiResult<serde_json::Value> {
    let Some(raw) = raw else {
        return Ok(serde_json::json!({"type": "none"}));
    };
    let v: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("selector is not valid JSON: {e}")))?;
    match v.get("type").and_then(|t| t.as_str()) {
        Some("none") => Ok(serde_json::json!({"type": "none"})),
        Some("label") => Ok(serde_json::json!({
            "type": "label",
            "expression": v.get("expression").and_then(|e| e.as_str()).unwrap_or(""),
        })),
        _ => Err(ApiError::bad_request(format!(
            "selector type is not supported: {raw}"
        ))),
    }
}

/// Service settings for create and update.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSettings {
    /// Protect threshold, 0.0–1.0.
    pub protect_threshold: f32,
    /// Metadata (replaced whole).
    pub metadata: Metadata,
    /// Selector JSON.
    pub selector: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_follows_distro_filter() {
        assert_eq!(grouped_name("orders", None), "DEFAULT_GROUP@@orders");
        assert_eq!(grouped_name(" orders ", Some("g")), "g@@orders");
        assert_eq!(grouped_name("g2@@orders", Some("g")), "g2@@orders");
        assert_eq!(name_of("g@@orders"), "orders");
        assert_eq!(group_of("g@@orders"), "g");
    }

    #[test]
    fn service_name_format_errors() {
        assert!(check_service_name_format("g@@s").is_ok());
        assert!(check_service_name_format("@@s")
            .unwrap_err()
            .msg
            .contains("groupName can't be empty"));
        assert!(check_service_name_format("g@@").is_err());
        assert_eq!(
            check_service_name_chars("g@@a b").unwrap_err().msg,
            "dom name can only have these characters: 0-9a-zA-Z-._:, current: g@@a b"
        );
    }

    #[test]
    fn cluster_names() {
        assert!(check_cluster_name("DEFAULT").is_ok());
        assert!(check_cluster_name("c-1").is_ok());
        assert!(check_cluster_name("c_1").is_err());
        assert!(check_cluster_name("").is_err());
        assert!(check_instance_params("g@@s", "c_1").is_ok());
        assert!(check_instance_params("g@@s", "c 1").is_err());
        assert!(check_instance_params("g@@s", &"c".repeat(65)).is_err());
    }

    #[test]
    fn param_rules() {
        assert!(check_namespace("public").is_ok());
        assert!(check_namespace("default").is_ok());
        assert!(check_namespace("ns.1").is_err());
        assert!(check_namespace(&"n".repeat(65)).is_err());
        assert!(check_instance_params("g@@a b", "DEFAULT").is_err());
        assert!(check_instance_params("g g@@ab", "DEFAULT").is_err());
        assert!(check_instance_params("g@@订单", "DEFAULT").is_err());
        assert!(check_instance_params(&format!("g@@{}", "s".repeat(513)), "DEFAULT").is_err());
    }

    #[test]
    fn metadata_json_and_pairs() {
        let m = parse_metadata(r#"{"a":"1","b":2,"c":true}"#).unwrap();
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "2");
        assert_eq!(m["c"], "true");
        let m = parse_metadata("a=1,b=2").unwrap();
        assert_eq!(m["b"], "2");
        assert_eq!(
            parse_metadata("a=1,b").unwrap_err().msg,
            "metadata format incorrect:a=1,b"
        );
        let big = format!("k={}", "x".repeat(1100));
        assert_eq!(parse_metadata(&big).unwrap_err().status, 400);
    }

    #[test]
    fn key_lookup_by_ref_matches_owned_hash() {
        let mut m: hashbrown::HashMap<ServiceKey, u32> = hashbrown::HashMap::new();
        m.insert(ServiceKey::new("public", "g@@s"), 7);
        assert_eq!(m.get(&KeyRef::new("public", "g@@s")), Some(&7));
        assert_eq!(m.get(&KeyRef::new("public", "g@@t")), None);
    }
}
