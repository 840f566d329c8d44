//! Who owns a service: the one function every routing decision uses.
//!
//! A service is owned by exactly one shard of exactly one cluster member: the member that is
//! responsible for it (Distro-style; with no peers, always this node) and, on that member, the
//! shard `stable_hash(service) % shards`. Both use [`crate::hash`], which is stable across
//! processes and versions, so every member computes the same owner.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::cluster::Members;
use crate::hash::owner_shard;
use crate::naming::service::ServiceKey;

/// The member a service belongs to, as this member sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// This member (always, standalone).
    This,
    /// Another member, by its HTTP address: writes go there (Distro forwarding).
    Peer(SocketAddr),
}

/// Where a service's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The responsible member.
    pub member: Member,
    /// The shard that owns the service on a member, `0..shards` (every member has the same
    /// shard count's worth of this function: it only depends on the key and the count).
    pub shard: usize,
}

/// The ownership map of this process: the members that share responsibility (none,
/// standalone) and the shard count.
#[derive(Debug, Clone)]
pub struct Ownership {
    members: Option<Arc<Members>>,
    shards: usize,
}

impl Ownership {
    /// A standalone node with `shards` shards (≥ 1): it owns every service.
    pub fn standalone(shards: usize) -> Ownership {
        assert!(shards >= 1, "at least one shard");
        Ownership {
            members: None,
            shards,
        }
    }

    /// A cluster member with `shards` shards (≥ 1): the live member with the highest
    /// rendezvous score is responsible ([`Members::responsible`]).
    pub fn cluster(shards: usize, members: Arc<Members>) -> Ownership {
        assert!(shards >= 1, "at least one shard");
        Ownership {
            members: Some(members),
            shards,
        }
    }

    /// The owner of `key`: the responsible member as this member sees it now, and the shard.
    pub fn owner(&self, key: &ServiceKey) -> Owner {
        let member = match &self.members {
            None => Member::This,
            Some(ms) => match ms.responsible(&key.namespace, &key.grouped) {
                addr if addr == ms.this() => Member::This,
                addr => Member::Peer(addr),
            },
        };
        Owner {
            member,
            shard: self.shard(key),
        }
    }

    /// The shard of this member that holds `key` (whichever member is responsible for it:
    /// replicas live on the same shard).
    pub fn shard(&self, key: &ServiceKey) -> usize {
        owner_shard(&key.namespace, &key.grouped, self.shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_owns_everything_and_shards_by_the_stable_hash() {
        let o = Ownership::standalone(4);
        for name in ["orders", "payments", "db", "x"] {
            let key = ServiceKey::new("public", &format!("DEFAULT_GROUP@@{name}"));
            let owner = o.owner(&key);
            assert_eq!(owner.member, Member::This);
            assert_eq!(
                owner.shard,
                owner_shard(&key.namespace, &key.grouped, 4),
                "the shard is the stable hash's"
            );
        }
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    #[test]
    fn a_cluster_member_owns_only_what_it_is_responsible_for() {
        let ms: Vec<SocketAddr> = (1..=3)
            .map(|i| format!("127.0.0.{i}:8848").parse().unwrap())
            .collect();
        let members = Arc::new(Members::new(ms[0], &ms));
        let o = Ownership::cluster(2, members.clone());
        let key = |i: usize| ServiceKey::new("public", &format!("DEFAULT_GROUP@@s{i}"));
        // No peer contacted yet: this member is responsible for everything.
        assert!((0..50).all(|i| o.owner(&key(i)).member == Member::This));
        for m in members.peers() {
            m.contact_ok(1);
        }
        let peers = (0..300)
            .filter(|&i| matches!(o.owner(&key(i)).member, Member::Peer(_)))
            .count();
        assert!((150..250).contains(&peers), "{peers} of 300 on peers");
        for i in 0..300 {
            assert_eq!(o.owner(&key(i)).shard, o.shard(&key(i)));
        }
    }
}
