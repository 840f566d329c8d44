//! The stable hash that decides which shard (and later, which node) owns a service.
//!
//! It must give the same answer in every process and every version, so it is FNV-1a 64 written
//! out here, never Rust's randomized `DefaultHasher`.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `namespace`, a 0x00 separator, then the grouped service name (`group@@name`).
pub fn stable_hash(namespace: &str, grouped_service: &str) -> u64 {
    let mut h = FNV_OFFSET;
    for b in namespace
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(grouped_service.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The hash of an instance's identity `(ip, port, cluster)`: FNV-1a 64 over the ip, a 0x00
/// separator, the port (big-endian) and the cluster. Rosters are ordered by it, so it must not
/// change between versions either.
pub fn instance_hash(ip: &str, port: u16, cluster: &str) -> u64 {
    let mut h = FNV_OFFSET;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    };
    ip.bytes().for_each(&mut eat);
    eat(0);
    port.to_be_bytes().into_iter().for_each(&mut eat);
    cluster.bytes().for_each(&mut eat);
    h
}

/// The shard that owns a service: `stable_hash(namespace, grouped) % shards`.
///
/// `shards` must be at least 1.
pub fn owner_shard(namespace: &str, grouped_service: &str, shards: usize) -> usize {
    debug_assert!(shards > 0);
    (stable_hash(namespace, grouped_service) % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_versions() {
        // Golden values: changing them reshuffles every deployed cluster.
        assert_eq!(stable_hash("", ""), 0xaf63_bd4c_8601_b7df);
        assert_eq!(
            stable_hash("public", "DEFAULT_GROUP@@orders"),
            stable_hash("public", "DEFAULT_GROUP@@orders")
        );
        assert_ne!(stable_hash("public", "a"), stable_hash("publica", ""));
    }

    #[test]
    fn owner_is_in_range_and_spreads() {
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            let s = owner_shard("public", &format!("DEFAULT_GROUP@@svc-{i}"), 4);
            seen[s] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "uneven spread: {seen:?}");
    }
}
