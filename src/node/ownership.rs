//! Who owns a service: the one function every routing decision uses.
//!
//! A service is owned by exactly one shard of exactly one cluster member: the member that is
//! responsible for it (Distro-style; with no peers, always this node) and, on that member, the
//! shard `stable_hash(service) % shards`. Both use [`crate::hash`], which is stable across
//! processes and versions, so every member computes the same owner.

use crate::hash::owner_shard;
use crate::naming::service::ServiceKey;

/// A cluster member's identity. Standalone Muster is member 0 of a one-member cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

/// Where a service's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The responsible member.
    pub node: NodeId,
    /// The shard of that member that owns the service, `0..shards`.
    pub shard: usize,
}

/// The ownership map of this process: this member and the shard count. Standalone only for now:
/// the cluster adds the members that share responsibility (Distro), and [`Ownership::owner`]
/// is where their split goes.
#[derive(Debug, Clone)]
pub struct Ownership {
    this: NodeId,
    shards: usize,
}

impl Ownership {
    /// A standalone node with `shards` shards (≥ 1): it owns every service.
    pub fn standalone(shards: usize) -> Ownership {
        assert!(shards >= 1, "at least one shard");
        Ownership {
            this: NodeId(0),
            shards,
        }
    }

    /// This member.
    #[cfg(test)]
    pub fn this(&self) -> NodeId {
        self.this
    }

    /// The owner of `key`. With one member, always this node.
    pub fn owner(&self, key: &ServiceKey) -> Owner {
        Owner {
            node: self.this,
            shard: owner_shard(&key.namespace, &key.grouped, self.shards),
        }
    }

    /// True when `owner` is a shard of this process.
    pub fn is_local(&self, owner: Owner) -> bool {
        owner.node == self.this
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
            assert!(o.is_local(owner));
            assert_eq!(owner.node, o.this());
            assert_eq!(
                owner.shard,
                owner_shard(&key.namespace, &key.grouped, 4),
                "the shard is the stable hash's"
            );
        }
    }
}
