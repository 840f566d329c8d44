//! The Distro ledger of a service (cluster mode only): the version at which each ephemeral
//! instance was last registered (its stamp), and tombstones of the instances deregistered
//! from it. Two copies of a service that diverged, because both sides of a partition took
//! writes for it, merge by them (`Registry::merge_replica`):
//!
//! - an instance only one copy holds is kept, unless the other holds a tombstone at least as
//!   new as its stamp;
//! - an instance both hold keeps the copy with the higher stamp (the merger's on a tie);
//! - an expiry leaves no tombstone: it is a member's local judgement that it heard no beats,
//!   and the other side may have heard them. An instance that is really gone expires again
//!   one lease after the merge.
//!
//! Versions are Distro versions (a Lamport clock per service: a merge moves past both
//! copies), never wall-clock time. Standalone registries keep no ledger.

use hashbrown::HashMap;

use crate::naming::instance::InstanceKey;

/// How long a tombstone is kept (monotonic ms): 10 minutes. A partition that lasts longer
/// can bring a deregistered instance back at the merge; it then expires one lease later.
pub const TOMBSTONE_MS: u64 = 600_000;
/// Most tombstones kept per service; the oldest go first.
pub const MAX_TOMBSTONES: usize = 4096;

/// A deregistration as it travels in a replica.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tombstone {
    /// IP address or host name.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// Cluster name.
    pub cluster: String,
    /// The Distro version of the deregistration.
    pub version: u64,
}

#[derive(Debug, Clone, Copy)]
struct Tomb {
    version: u64,
    /// Monotonic ms when this member recorded it (retention only; never compared across
    /// members).
    at_ms: u64,
}

/// Stamps and tombstones of one service's ephemeral instances.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    stamps: HashMap<InstanceKey, u64>,
    tombs: HashMap<InstanceKey, Tomb>,
}

impl Ledger {
    /// The stamp of a live instance (0: unknown, older than anything stamped).
    pub fn stamp(&self, key: &InstanceKey) -> u64 {
        self.stamps.get(key).copied().unwrap_or(0)
    }

    /// The version of `key`'s tombstone, if it has one.
    pub fn tomb(&self, key: &InstanceKey) -> Option<u64> {
        self.tombs.get(key).map(|t| t.version)
    }

    /// `key` was (re-)registered at `version`: its stamp, and no tombstone.
    pub fn registered(&mut self, key: &InstanceKey, version: u64) {
        self.tombs.remove(key);
        match self.stamps.get_mut(key) {
            Some(s) => *s = version,
            None => {
                self.stamps.insert(key.clone(), version);
            }
        }
    }

    /// `key` expired or left with its copy: no stamp, no tombstone.
    pub fn forget(&mut self, key: &InstanceKey) {
        self.stamps.remove(key);
    }

    /// `key` was deregistered at `version` (at `now`, monotonic ms): a tombstone (the newer
    /// one if it had one), within the retention bounds.
    pub fn bury(&mut self, key: InstanceKey, version: u64, now: u64) {
        self.stamps.remove(&key);
        let tomb = self.tombs.entry(key).or_insert(Tomb {
            version,
            at_ms: now,
        });
        if version >= tomb.version {
            *tomb = Tomb {
                version,
                at_ms: now,
            };
        }
        self.prune(now);
    }

    /// Drops tombstones older than [`TOMBSTONE_MS`], then the oldest beyond
    /// [`MAX_TOMBSTONES`].
    fn prune(&mut self, now: u64) {
        self.tombs
            .retain(|_, t| now.saturating_sub(t.at_ms) <= TOMBSTONE_MS);
        if self.tombs.len() > MAX_TOMBSTONES {
            let mut ages: Vec<u64> = self.tombs.values().map(|t| t.at_ms).collect();
            ages.sort_unstable();
            let cut = ages[self.tombs.len() - MAX_TOMBSTONES];
            self.tombs.retain(|_, t| t.at_ms >= cut);
        }
    }

    /// The tombstones as they travel, kept within retention at `now`.
    pub fn tombstones(&self, now: u64) -> Vec<Tombstone> {
        self.tombs
            .iter()
            .filter(|(_, t)| now.saturating_sub(t.at_ms) <= TOMBSTONE_MS)
            .map(|(k, t)| Tombstone {
                ip: k.ip.to_string(),
                port: k.port,
                cluster: k.cluster.to_string(),
                version: t.version,
            })
            .collect()
    }

    /// Replaces everything with a replica's stamps and tombstones (recorded at `now`).
    pub fn replace(
        &mut self,
        stamps: impl IntoIterator<Item = (InstanceKey, u64)>,
        tombs: impl IntoIterator<Item = (InstanceKey, u64)>,
        now: u64,
    ) {
        self.stamps = stamps.into_iter().collect();
        self.tombs = tombs
            .into_iter()
            .map(|(k, version)| {
                (
                    k,
                    Tomb {
                        version,
                        at_ms: now,
                    },
                )
            })
            .collect();
        self.prune(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::instance::Host;

    fn key(port: u16) -> InstanceKey {
        InstanceKey {
            ip: Host::from("10.0.0.1"),
            port,
            cluster: "DEFAULT".into(),
            ephemeral: true,
        }
    }

    #[test]
    fn registering_clears_a_tombstone_and_burying_clears_a_stamp() {
        let mut l = Ledger::default();
        l.registered(&key(1), 3);
        assert_eq!(l.stamp(&key(1)), 3);
        l.bury(key(1), 4, 0);
        assert_eq!((l.stamp(&key(1)), l.tomb(&key(1))), (0, Some(4)));
        l.bury(key(1), 2, 0);
        assert_eq!(
            l.tomb(&key(1)),
            Some(4),
            "an older tombstone never replaces a newer one"
        );
        l.registered(&key(1), 5);
        assert_eq!((l.stamp(&key(1)), l.tomb(&key(1))), (5, None));
    }

    #[test]
    fn tombstones_are_bounded_by_age_and_count() {
        let mut l = Ledger::default();
        l.bury(key(1), 1, 0);
        l.bury(key(2), 1, TOMBSTONE_MS + 1);
        assert_eq!(l.tomb(&key(1)), None, "past retention");
        assert_eq!(l.tomb(&key(2)), Some(1));
        for p in 0..(MAX_TOMBSTONES as u16 + 10) {
            l.bury(key(100 + p), 1, TOMBSTONE_MS + 2 + u64::from(p));
        }
        assert_eq!(l.tombs.len(), MAX_TOMBSTONES);
        assert_eq!(l.tomb(&key(100)), None, "the oldest went first");
        assert_eq!(l.tombstones(TOMBSTONE_MS + 20).len(), MAX_TOMBSTONES);
    }
}
