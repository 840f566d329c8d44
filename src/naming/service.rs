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

    /// Metadata from pairs in any order; of a repeated key the last pair wins. O(n log n).
    pub fn from_pairs(mut pairs: Vec<(String, String)>) -> Self {
        // A stable sort keeps repeats in input order, so the last of each run is the winner.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        Metadata(out)
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

/// Longest raw `metadata` parameter accepted, in bytes (32 KiB).
///
/// Checked before any parsing, so an oversized parameter costs one length comparison. No
/// metadata that passes [`MAX_METADATA_LEN`] needs more: each of its 1024 bytes takes at most 6
/// in JSON (`\u00XX`), and each of its at most 1025 distinct keys adds at most 10 bytes of
/// quotes, colon, comma and `null`, about 16.4 KiB in all. Only insignificant whitespace or
/// repeated keys could make a valid value longer; those are refused (a deliberate deviation
/// from Nacos, which parses whatever arrives).
pub const MAX_METADATA_RAW_LEN: usize = 32 << 10;

/// Most key/value pairs read from one `metadata` parameter (repeats included): the most
/// distinct keys that fit in [`MAX_METADATA_LEN`] (1024 one-byte keys plus the empty key).
pub const MAX_METADATA_PAIRS: usize = MAX_METADATA_LEN + 1;

fn metadata_too_long() -> ApiError {
    ApiError::bad_request(format!(
        "Param 'Metadata' is illegal, the param length should not exceed {MAX_METADATA_LEN}."
    ))
}

/// `UtilsAndCommons.parseMetadata`: a JSON object (scalar values become strings), else
/// `k=v,k=v`. Rejects a bad pair, and a result over [`MAX_METADATA_LEN`] bytes.
///
/// Cost is bounded before and during parsing, so a hostile value is refused cheaply: a raw
/// value over [`MAX_METADATA_RAW_LEN`] is refused unread; the JSON reader stops at the first
/// pair that takes the total over [`MAX_METADATA_LEN`] or the count over
/// [`MAX_METADATA_PAIRS`], and at the first nested object or array (nesting depth is 1, so
/// deep nesting can never recurse). Pairs are sorted once at the end, not inserted one by one.
pub fn parse_metadata(raw: &str) -> ApiResult<Metadata> {
    if raw.len() > MAX_METADATA_RAW_LEN {
        return Err(metadata_too_long());
    }
    if raw.trim().is_empty() {
        return Ok(Metadata::new());
    }
    let incorrect = || ApiError::bad_request(format!("metadata format incorrect:{raw}"));
    let mut de = serde_json::Deserializer::from_str(raw);
    let json = serde::Deserializer::deserialize_map(&mut de, FlatObject)
        .and_then(|pairs| de.end().map(|()| pairs));
    let pairs = match json {
        Ok(pairs) => pairs,
        Err(e) if e.to_string().starts_with(TOO_LONG) => return Err(metadata_too_long()),
        Err(e) if e.to_string().starts_with(NESTED) => return Err(incorrect()),
        Err(_) => {
            let mut pairs = Vec::new();
            let mut len = 0usize;
            for pair in raw.split(',') {
                let mut kv = pair.split('=');
                let (Some(k), Some(v), None) = (kv.next(), kv.next(), kv.next()) else {
                    return Err(incorrect());
                };
                len += k.len() + v.len();
                if len > MAX_METADATA_LEN || pairs.len() >= MAX_METADATA_PAIRS {
                    return Err(metadata_too_long());
                }
                pairs.push((k.to_string(), v.to_string()));
            }
            pairs
        }
    };
    let out = Metadata::from_pairs(pairs);
    check_metadata(&out)?;
    Ok(out)
}

/// Error-message prefixes the [`FlatObject`] visitor uses to say why it stopped.
const TOO_LONG: &str = "muster: metadata too long";
const NESTED: &str = "muster: metadata value nested";

/// A serde visitor for a flat JSON object of scalars, bounded as [`parse_metadata`] says.
/// Yields the pairs in input order (a repeated key appears twice; the last one wins).
struct FlatObject;

/// One metadata value: a string, or a scalar rendered as Jackson would coerce it.
struct Scalar(String);

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, number, boolean or null")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(
                    serde_json::Number::from_f64(v).map_or_else(String::new, |n| n.to_string()),
                ))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Scalar, A::Error> {
                Err(serde::de::Error::custom(NESTED))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Scalar, A::Error> {
                Err(serde::de::Error::custom(NESTED))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::de::Visitor<'de> for FlatObject {
    type Value = Vec<(String, String)>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of scalars")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::new();
        let mut len = 0usize;
        while let Some(k) = map.next_key::<String>()? {
            let Scalar(v) = map.next_value()?;
            len += k.len() + v.len();
            if len > MAX_METADATA_LEN || pairs.len() >= MAX_METADATA_PAIRS {
                return Err(serde::de::Error::custom(TOO_LONG));
            }
            pairs.push((k, v));
        }
        Ok(pairs)
    }
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
    fn metadata_values_coerce_like_jackson_and_repeats_keep_the_last() {
        let m = parse_metadata(r#"{"z":null,"f":1.5,"n":-3,"a":"x","a":"y"}"#).unwrap();
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "f", "n", "z"]);
        assert_eq!(m["a"], "y");
        assert_eq!(m["f"], "1.5");
        assert_eq!(m["n"], "-3");
        assert_eq!(m["z"], "");
        let m = parse_metadata("b=1,a=2,b=3").unwrap();
        assert_eq!((m["a"].as_str(), m["b"].as_str()), ("2", "3"));
    }

    #[test]
    fn hostile_metadata_is_refused_by_its_bounds() {
        let too_long = "Param 'Metadata' is illegal, the param length should not exceed 1024.";
        // Over the raw cap: refused unread.
        let many: String = (0..80_000).map(|i| format!("\"k{i}\":\"v\",")).collect();
        let raw = format!("{{{}\"end\":\"\"}}", many);
        assert_eq!(parse_metadata(&raw).unwrap_err().msg, too_long);
        // Under the raw cap but over 1024 bytes of content: stops at the first pair over.
        let some: String = (0..1000).map(|i| format!("\"k{i}\":\"v\",")).collect();
        let raw = format!("{{{}\"end\":\"\"}}", some);
        assert!(raw.len() < MAX_METADATA_RAW_LEN);
        assert_eq!(parse_metadata(&raw).unwrap_err().msg, too_long);
        // Repeats of one empty pair: content 0 bytes, but more pairs than any valid value has.
        let raw = format!("{{{}\"\":\"\"}}", "\"\":\"\",".repeat(MAX_METADATA_PAIRS));
        assert_eq!(parse_metadata(&raw).unwrap_err().msg, too_long);
        let pairs = format!("{}=", "=,".repeat(MAX_METADATA_PAIRS));
        assert_eq!(parse_metadata(&pairs).unwrap_err().msg, too_long);
        // Deep nesting is refused at depth 2, whatever the depth.
        for depth in [2, 100, 5000] {
            let raw = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            let e = parse_metadata(&raw).unwrap_err();
            assert_eq!(e.status, 400, "depth {depth}");
            let raw = format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(parse_metadata(&raw).unwrap_err().status, 400);
        }
        // Escapes count as what they decode to: 1024 escaped bytes is still valid.
        let raw = format!("{{\"k\":\"{}\"}}", "\\u0041".repeat(1023));
        assert_eq!(parse_metadata(&raw).unwrap()["k"].len(), 1023);
    }

    #[test]
    fn key_lookup_by_ref_matches_owned_hash() {
        let mut m: hashbrown::HashMap<ServiceKey, u32> = hashbrown::HashMap::new();
        m.insert(ServiceKey::new("public", "g@@s"), 7);
        assert_eq!(m.get(&KeyRef::new("public", "g@@s")), Some(&7));
        assert_eq!(m.get(&KeyRef::new("public", "g@@t")), None);
    }
}
