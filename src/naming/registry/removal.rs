//! Removing services, and giving memory back after many removals.

use super::*;

impl Registry {
    /// Removes a service with all its bookkeeping: its id, pending publication, its instances'
    /// share of the health counters, and its census entry. Returns whether it existed.
    pub(super) fn drop_service(&mut self, key: &ServiceKey) -> bool {
        let Some(svc) = self.services.remove(key) else {
            return false;
        };
        self.ids.keys.remove(&svc.id);
        self.dirty.remove(key);
        self.deleted.push(key.clone());
        self.stats.count(svc.counted, [0; 4]);
        self.stats.services = self.services.len() as u64;
        self.view.census.remove(&key.namespace);
        self.removed_since_compact += 1;
        true
    }

    /// After many removals (at least [`COMPACT_AFTER_REMOVALS`] services since the last time
    /// it did work), gives back the spare capacity of maps that are at most a quarter full and
    /// returns true, so the caller can also hand freed heap pages back to the OS. Otherwise
    /// returns false at the cost of a comparison or two (it is called every tick).
    ///
    /// The work waits one beat timeout (plus a second) after the threshold is reached: a
    /// removed instance's lease holds it until its deadline, so freeing earlier would find
    /// much of the memory still in use.
    pub fn compact(&mut self, now: u64) -> bool {
        if self.removed_since_compact < COMPACT_AFTER_REMOVALS {
            return false;
        }
        let at = *self
            .compact_at
            .get_or_insert(now + self.life.timing.timeout_ms + 1000);
        if now < at {
            return false;
        }
        self.compact_at = None;
        self.removed_since_compact = 0;
        if self.services.len() * 4 <= self.services.capacity() {
            self.services.shrink_to_fit();
        }
        if self.ids.keys.len() * 4 <= self.ids.keys.capacity() {
            self.ids.keys.shrink_to_fit();
        }
        self.dirty.shrink_to_fit();
        self.deleted.shrink_to_fit();
        true
    }
}
