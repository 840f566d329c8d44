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
        // Golden values, computed once from the FNV-1a 64 definition (and checked against an
        // independent implementation): changing any of them reshuffles which shard owns every
        // service of every deployed cluster, and the order of every roster.
        let services = [
            ("", "", 0xaf63_bd4c_8601_b7df),
            ("public", "DEFAULT_GROUP@@orders", 0x22d5_7216_2419_2720),
            ("public", "DEFAULT_GROUP@@mysql", 0x73bf_de60_9229_8bc1),
            ("dev", "shop@@payments", 0xb8fa_3742_1e1d_5cbf),
            (
                "default",
                "DEFAULT_GROUP@@nacos.test.1",
                0x26a3_bc05_0512_f4bc,
            ),
            ("public", "a", 0x0746_0fa2_bd3b_fa73),
            ("publica", "", 0x0603_14a2_bc29_7629),
        ];
        for (ns, grouped, want) in services {
            assert_eq!(
                stable_hash(ns, grouped),
                want,
                "stable_hash({ns:?}, {grouped:?})"
            );
        }
        // The separator keeps namespace and name apart.
        assert_ne!(stable_hash("public", "a"), stable_hash("publica", ""));
        let instances = [
            ("10.0.0.1", 8080, "DEFAULT", 0xbe25_b75e_3dc3_79f5),
            ("127.0.0.1", 3306, "DEFAULT", 0xa4d3_eda2_d0c4_5035),
            ("192.168.1.20", 80, "east", 0x3cc3_0dd1_54b8_3a84),
            ("::1", 65535, "c1", 0xd4fc_7ef2_5f59_229e),
            ("", 0, "", 0xd94d_1218_6c0f_2fb7),
        ];
        for (ip, port, cluster, want) in instances {
            assert_eq!(
                instance_hash(ip, port, cluster),
                want,
                "instance_hash({ip:?}, {port}, {cluster:?})"
            );
        }
        // Owners follow from the golden hashes.
        assert_eq!(owner_shard("public", "DEFAULT_GROUP@@orders", 2), 0);
        assert_eq!(owner_shard("public", "DEFAULT_GROUP@@mysql", 2), 1);
        assert_eq!(owner_shard("public", "DEFAULT_GROUP@@mysql", 4), 1);
        assert_eq!(owner_shard("dev", "shop@@payments", 4), 3);
        assert_eq!(owner_shard("dev", "shop@@payments", 1), 0);
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
