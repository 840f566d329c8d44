//! The stable hash that decides which shard (and later, which node) owns a service.
//!
//! It must give the same answer in every process and every version, so it is FNV-1a 64 written
//! out here, never Rust's randomized `DefaultHasher`.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `parts`, with a 0x00 byte between consecutive parts.
fn fnv_joined(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for (i, part) in parts.iter().enumerate() {
        let sep: &[u8] = if i == 0 { &[] } else { &[0] };
        for b in sep.iter().chain(part.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// FNV-1a 64 over `namespace`, a 0x00 separator, then the grouped service name (`group@@name`).
pub fn stable_hash(namespace: &str, grouped_service: &str) -> u64 {
    fnv_joined(&[namespace.as_bytes(), grouped_service.as_bytes()])
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

/// A streaming FNV-1a 64 digest of byte strings, each followed by a 0x00 separator, with the
/// splitmix64 finaliser. For comparing copies of data between members of the same version
/// (Distro verify); not a stable on-disk format.
#[derive(Debug, Clone, Copy)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(FNV_OFFSET)
    }
}

impl Digest {
    /// Adds `bytes` and a separator.
    pub fn part(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain(std::iter::once(&0)) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// The digest of everything added.
    pub fn finish(&self) -> u64 {
        splitmix(self.0)
    }
}

/// splitmix64's finaliser: every output bit depends on every input bit.
fn splitmix(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A cluster member's raft node id, derived from its member address (`ip:port`), so every
/// member computes every other's without asking and list order never matters: FNV-1a 64 of
/// the address with the splitmix64 finaliser, the top bit cleared, and never 0 (raft's "none")
/// or 1 (the standalone node's id). Golden values are pinned: changing them orphans every
/// cluster's log.
pub fn raft_id(member: &str) -> u64 {
    let mut d = Digest::default();
    d.part(member.as_bytes());
    (d.finish() >> 1).max(2)
}

/// Version of [`member_score`], the function that decides which member is responsible for a
/// service. Peers exchange it when they connect and refuse a peer with another one: two
/// members that disagree on responsibility would both (or neither) own a service.
pub const OWNERSHIP_VERSION: u32 = 1;

/// Rendezvous (highest random weight) score of `member` (its `ip:port` member address) for a
/// service: FNV-1a 64 over the member, 0x00, the namespace, 0x00, the grouped name, then the
/// splitmix64 finaliser so every bit depends on every input byte. The live member with the
/// highest score is responsible. When a member leaves, only its own services move (to each
/// service's second-highest member), unlike `hash % members`, which moves almost all of them.
pub fn member_score(member: &str, namespace: &str, grouped_service: &str) -> u64 {
    let h = fnv_joined(&[
        member.as_bytes(),
        namespace.as_bytes(),
        grouped_service.as_bytes(),
    ]);
    splitmix(h)
}

#[cfg(test)]
mod raft_id_tests {
    use super::*;

    /// Pinned: a member's id is part of its log (votes, membership).
    #[test]
    fn raft_ids_are_stable_and_never_0_or_1() {
        let ids: Vec<u64> = ["127.0.0.1:8848", "127.0.0.2:8848", "10.0.0.7:8848"]
            .iter()
            .map(|m| raft_id(m))
            .collect();
        assert_eq!(ids, GOLDEN);
        assert!(ids.iter().all(|&i| i > 1 && i < 1 << 63));
    }
    const GOLDEN: [u64; 3] = [6827235551156811847, 661303901168997864, 4582493766288321817];
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

    #[test]
    fn member_scores_are_stable_across_versions() {
        // Golden values of OWNERSHIP_VERSION 1: changing any of them changes which member is
        // responsible for services in every deployed cluster. Bump OWNERSHIP_VERSION instead.
        let cases = [
            ("127.0.0.1:8848", "public", "DEFAULT_GROUP@@orders"),
            ("127.0.0.2:8848", "public", "DEFAULT_GROUP@@orders"),
            ("127.0.0.3:8848", "public", "DEFAULT_GROUP@@orders"),
            ("10.0.0.7:8848", "dev", "shop@@payments"),
            ("", "", ""),
        ];
        let got: Vec<u64> = cases
            .iter()
            .map(|(m, ns, g)| member_score(m, ns, g))
            .collect();
        assert_eq!(got, GOLDEN_MEMBER_SCORES, "{got:#x?}");
        assert_eq!(OWNERSHIP_VERSION, 1);
    }

    /// Computed once from the definition and checked against an independent implementation
    /// (a 10-line Python one).
    const GOLDEN_MEMBER_SCORES: [u64; 5] = [
        0x8772_25b7_4552_bc00,
        0x45a8_8e7e_1010_784e,
        0x1d45_9c11_9937_3fc7,
        0x24dc_0455_5385_6f1b,
        0x7bc2_1004_6bd6_16cc,
    ];

    #[test]
    fn a_leaving_member_moves_only_its_own_services() {
        let members = ["127.0.0.1:8848", "127.0.0.2:8848", "127.0.0.3:8848"];
        fn best(ms: &[&'static str], svc: &str) -> &'static str {
            ms.iter()
                .copied()
                .max_by_key(|m| member_score(m, "public", svc))
                .unwrap()
        }
        let mut per = [0usize; 3];
        for i in 0..3000 {
            let svc = format!("DEFAULT_GROUP@@svc-{i}");
            let before = best(&members, &svc);
            per[members.iter().position(|m| *m == before).unwrap()] += 1;
            let after = best(&members[..2], &svc);
            if before != members[2] {
                assert_eq!(before, after, "{svc} moved though its owner stayed");
            }
        }
        assert!(per.iter().all(|&n| n > 800), "uneven spread: {per:?}");
    }
}
