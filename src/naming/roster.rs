//! The roster: one service's instances, in shared copy-on-write chunks, ordered by a hash of
//! their identity.
//!
//! The owner shard publishes a new `ServiceView` (the read view) after every change, and readers
//! on every shard keep old ones alive while they render. A flat `Vec<Arc<Instance>>` made each
//! publish touch the reference count of every instance of the service — a cache miss per
//! instance, O(n) per write. A roster is a two-level persistent vector instead: cloning it
//! (publishing) is one reference-count increment, and a change copies only the chunk index
//! (≤ n / [`HALF`] entries) and the one chunk it touches (≤ [`MAX`] entries) when a published
//! view still shares them. (When no reader holds the published view, the owner takes the
//! view's handle back first, and the change copies nothing: see `Registry::apply`.)
//!
//! Order: by a 64-bit FNV-1a hash of `(ip, port, cluster)`, then by the identity itself (so
//! collisions are exact and an instance's persistent and ephemeral twins sit side by side).
//! Each entry keeps its hash next to the pointer, and the index keeps each chunk's last hash, so
//! a lookup compares integers in two contiguous arrays and dereferences an instance only on a
//! hash match. (Ordering by the identity's text meant two dependent cache misses per probe; it
//! was the largest registry symbol under the register bench.) The order is stable across
//! processes; like Nacos's own, it is not sorted by address.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::hash::instance_hash;
use crate::naming::instance::{Instance, InstanceKey};

/// Most instances in one chunk; a chunk that would grow past it splits in two halves.
pub const MAX: usize = 32;
/// Half a full chunk. Neighbouring chunks whose sum fits in one are merged on removal once one
/// of them is below a quarter of [`MAX`].
pub const HALF: usize = MAX / 2;

/// An instance with the hash it is ordered by.
#[derive(Clone, Debug)]
struct Entry {
    hash: u64,
    inst: Arc<Instance>,
}

type Chunk = Arc<Vec<Entry>>;

/// A lookup target: a key and its hash.
struct Probe<'a> {
    hash: u64,
    ip: &'a str,
    port: u16,
    cluster: &'a str,
    ephemeral: bool,
}

impl<'a> Probe<'a> {
    fn new(ip: &'a str, port: u16, cluster: &'a str, ephemeral: bool) -> Self {
        Probe {
            hash: instance_hash(ip, port, cluster),
            ip,
            port,
            cluster,
            ephemeral,
        }
    }

    /// Orders a stored entry against this target.
    fn cmp(&self, e: &Entry) -> Ordering {
        e.hash.cmp(&self.hash).then_with(|| {
            let k = &e.inst.key;
            (*k.ip)
                .cmp(self.ip)
                .then(k.port.cmp(&self.port))
                .then((*k.cluster).cmp(self.cluster))
                .then(k.ephemeral.cmp(&self.ephemeral))
        })
    }
}

/// A position in a roster: where an identity is, or would go. Valid until the roster changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    c: usize,
    i: usize,
    found: bool,
    hash: u64,
}

/// Iterator over a roster's instances in roster order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    outer: std::slice::Iter<'a, (u64, Chunk)>,
    inner: std::slice::Iter<'a, Entry>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Arc<Instance>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.inner.next() {
                return Some(&e.inst);
            }
            self.inner = self.outer.next()?.1.iter();
        }
    }
}

/// Room a chunk changed in place grows by when full, in entries: `Vec`'s doubling would leave
/// up to half of every chunk's allocation unused (16 bytes per slot), and chunks are many.
const GROW: usize = 4;

/// The chunk, copied first if a published view shares it, with room for `extra` more
/// instances. A copy gets exactly that room; a chunk changed in place (nobody shares it) grows
/// by at least [`GROW`] entries when full, not by doubling.
fn own(chunk: &mut Chunk, extra: usize) -> &mut Vec<Entry> {
    if Arc::get_mut(chunk).is_none() {
        let mut copy = Vec::with_capacity(chunk.len() + extra);
        copy.extend(chunk.iter().cloned());
        *chunk = Arc::new(copy);
    }
    let v = Arc::get_mut(chunk).expect("chunk just made unique");
    if v.capacity() - v.len() < extra {
        v.reserve_exact(extra.max(GROW));
    }
    v
}

/// The hash of a chunk's last entry (what the index keeps).
fn last_hash(c: &[Entry]) -> u64 {
    c.last().map_or(0, |e| e.hash)
}

/// One service's instances.
///
/// Invariants: every chunk is non-empty and holds at most [`MAX`] instances; `(hash, key)`
/// strictly increases across the concatenation of the chunks; the index's number beside each
/// chunk is the hash of its last entry; `len`, `healthy`, `ephemeral` and `ephemeral_sick`
/// count the instances, the healthy ones, the ephemeral ones and the unhealthy ephemeral ones.
/// Clones share everything until one of them is changed.
#[derive(Clone, Debug, Default)]
pub struct Roster {
    chunks: Arc<Vec<(u64, Chunk)>>,
    len: usize,
    healthy: usize,
    ephemeral: usize,
    ephemeral_sick: usize,
}

impl Roster {
    /// An empty roster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no instances.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of healthy instances.
    pub fn healthy(&self) -> usize {
        self.healthy
    }

    /// Number of ephemeral instances, and of those that are unhealthy.
    pub fn ephemeral(&self) -> (usize, usize) {
        (self.ephemeral, self.ephemeral_sick)
    }

    /// Every instance, in roster order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            outer: self.chunks.iter(),
            inner: [].iter(),
        }
    }

    /// The first instance in roster order.
    pub fn first(&self) -> Option<&Arc<Instance>> {
        self.chunks
            .first()
            .and_then(|(_, c)| c.first())
            .map(|e| &e.inst)
    }

    /// (chunk, index in chunk, found) of the position of `p`.
    fn locate(&self, p: &Probe<'_>) -> (usize, usize, bool) {
        // The first chunk whose last entry is not below the target: integer compares on the
        // index, and a full compare only where the last hash equals the target's.
        let c = self
            .chunks
            .partition_point(|(last, ch)| match last.cmp(&p.hash) {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => ch.last().is_some_and(|e| p.cmp(e) == Ordering::Less),
            });
        if c == self.chunks.len() {
            let last = self.chunks.len().saturating_sub(1);
            let at = self.chunks.get(last).map_or(0, |(_, ch)| ch.len());
            return (last, at, false);
        }
        match self.chunks[c].1.binary_search_by(|e| p.cmp(e)) {
            Ok(i) => (c, i, true),
            Err(i) => (c, i, false),
        }
    }

    /// The instance with identity `key`.
    pub fn get(&self, key: &InstanceKey) -> Option<&Arc<Instance>> {
        self.find(&key.ip, key.port, &key.cluster, key.ephemeral)
    }

    /// The instance `(ip, port, cluster)` with the given ephemerality.
    pub fn find(
        &self,
        ip: &str,
        port: u16,
        cluster: &str,
        ephemeral: bool,
    ) -> Option<&Arc<Instance>> {
        match self.locate(&Probe::new(ip, port, cluster, ephemeral)) {
            (c, i, true) => Some(&self.chunks[c].1[i].inst),
            _ => None,
        }
    }

    /// The instance `(ip, port, cluster)`, persistent or ephemeral (persistent first), the way
    /// Nacos finds an instance by its datum key.
    pub fn find_any(&self, ip: &str, port: u16, cluster: &str) -> Option<&Arc<Instance>> {
        let p = Probe::new(ip, port, cluster, false);
        let (c, i, found) = self.locate(&p);
        if found {
            return Some(&self.chunks[c].1[i].inst);
        }
        // The ephemeral twin, if any, sorts right after where the persistent one would be.
        let next = match self.chunks.get(c) {
            Some((_, ch)) if i < ch.len() => &ch[i],
            _ => self.chunks.get(c + 1)?.1.first()?,
        };
        let twin = Probe {
            ephemeral: true,
            ..p
        };
        (twin.cmp(next) == Ordering::Equal).then_some(&next.inst)
    }

    fn count(&mut self, inst: &Instance, sign: isize) {
        self.len = self.len.wrapping_add_signed(sign);
        if inst.healthy {
            self.healthy = self.healthy.wrapping_add_signed(sign);
        }
        if inst.key.ephemeral {
            self.ephemeral = self.ephemeral.wrapping_add_signed(sign);
            if !inst.healthy {
                self.ephemeral_sick = self.ephemeral_sick.wrapping_add_signed(sign);
            }
        }
    }

    /// Where the instance with identity `key` is, or would be inserted: one search serves a
    /// read ([`Roster::at`]) and then a write ([`Roster::insert_at`]).
    pub fn spot(&self, key: &InstanceKey) -> Spot {
        let p = Probe::new(&key.ip, key.port, &key.cluster, key.ephemeral);
        let (c, i, found) = self.locate(&p);
        Spot {
            c,
            i,
            found,
            hash: p.hash,
        }
    }

    /// The instance at `spot`, if one is there. `spot` must come from [`Roster::spot`] on this
    /// roster, unchanged since.
    pub fn at(&self, spot: &Spot) -> Option<&Arc<Instance>> {
        spot.found.then(|| &self.chunks[spot.c].1[spot.i].inst)
    }

    /// Inserts `inst`, replacing and returning the instance with the same key.
    pub fn insert(&mut self, inst: Arc<Instance>) -> Option<Arc<Instance>> {
        let spot = self.spot(&inst.key);
        self.insert_at(spot, inst)
    }

    /// [`Roster::insert`] at a `spot` found for `inst`'s key on this roster, unchanged since
    /// (checked in debug builds).
    pub fn insert_at(&mut self, spot: Spot, inst: Arc<Instance>) -> Option<Arc<Instance>> {
        debug_assert_eq!(spot, self.spot(&inst.key), "stale spot");
        let Spot { c, i, found, hash } = spot;
        self.count(&inst, 1);
        let entry = Entry { hash, inst };
        let chunks = Arc::make_mut(&mut self.chunks);
        if chunks.is_empty() {
            chunks.push((hash, Arc::new(vec![entry])));
            return None;
        }
        let chunk = own(&mut chunks[c].1, 1 - found as usize);
        if found {
            let old = std::mem::replace(&mut chunk[i], entry);
            self.count(&old.inst, -1);
            return Some(old.inst);
        }
        chunk.insert(i, entry);
        if chunk.len() > MAX {
            // Both halves keep room for GROW more, no more.
            let tail = chunk.split_off(chunk.len() / 2);
            chunk.shrink_to(chunk.len() + GROW);
            chunks[c].0 = last_hash(&chunks[c].1);
            chunks.insert(c + 1, (last_hash(&tail), Arc::new(tail)));
        } else {
            chunks[c].0 = last_hash(chunk);
        }
        None
    }

    /// Removes and returns the instance with identity `key`.
    pub fn remove(&mut self, key: &InstanceKey) -> Option<Arc<Instance>> {
        let p = Probe::new(&key.ip, key.port, &key.cluster, key.ephemeral);
        let (c, i, found) = self.locate(&p);
        if !found {
            return None;
        }
        let chunks = Arc::make_mut(&mut self.chunks);
        let chunk = own(&mut chunks[c].1, 0);
        let old = chunk.remove(i);
        if chunk.is_empty() {
            chunks.remove(c);
        } else {
            chunks[c].0 = last_hash(&chunks[c].1);
            if chunks[c].1.len() < MAX / 4 {
                // Merge with the smaller neighbour when the two fit in one chunk.
                let pick = [c.checked_sub(1), (c + 1 < chunks.len()).then_some(c + 1)]
                    .into_iter()
                    .flatten()
                    .min_by_key(|&n| chunks[n].1.len());
                if let Some(n) = pick.filter(|&n| chunks[n].1.len() + chunks[c].1.len() <= MAX) {
                    let (lo, hi) = (c.min(n), c.max(n));
                    let (_, upper) = chunks.remove(hi);
                    let merged = own(&mut chunks[lo].1, upper.len());
                    merged.extend(upper.iter().cloned());
                    chunks[lo].0 = last_hash(&chunks[lo].1);
                }
            }
        }
        self.count(&old.inst, -1);
        Some(old.inst)
    }

    /// Chunk sizes, for tests and the invariant check.
    #[cfg(test)]
    fn shape(&self) -> Vec<usize> {
        self.chunks.iter().map(|(_, c)| c.len()).collect()
    }

    /// Whether the index agrees with the chunks and the order is strict (tests).
    #[cfg(test)]
    fn ordered(&self) -> bool {
        let entries: Vec<&Entry> = self.chunks.iter().flat_map(|(_, c)| c.iter()).collect();
        let strict = entries.windows(2).all(|w| {
            let k = &w[1].inst.key;
            Probe::new(&k.ip, k.port, &k.cluster, k.ephemeral).cmp(w[0]) == Ordering::Less
        });
        let index = self.chunks.iter().all(|(h, c)| *h == last_hash(c));
        let hashes = entries
            .iter()
            .all(|e| e.hash == instance_hash(&e.inst.key.ip, e.inst.key.port, &e.inst.key.cluster));
        strict && index && hashes
    }
}

/// Instances per chunk when a roster is built in one go: three quarters full, so the first
/// inserts into a fresh roster do not split every chunk they touch.
const FILL: usize = MAX * 3 / 4;

impl FromIterator<Arc<Instance>> for Roster {
    /// A roster of the given instances; a later duplicate key replaces an earlier one. One
    /// sort, O(n log n), instead of a lookup and a chunk insert per instance.
    fn from_iter<I: IntoIterator<Item = Arc<Instance>>>(iter: I) -> Self {
        let mut entries: Vec<Entry> = iter
            .into_iter()
            .map(|inst| Entry {
                hash: instance_hash(&inst.key.ip, inst.key.port, &inst.key.cluster),
                inst,
            })
            .collect();
        fn order(e: &Entry) -> (u64, &str, u16, &str, bool) {
            let k = &e.inst.key;
            (e.hash, &k.ip, k.port, &k.cluster, k.ephemeral)
        }
        // Stable, so among equal keys the later one stays last.
        entries.sort_by(|a, b| a.hash.cmp(&b.hash).then_with(|| order(a).cmp(&order(b))));
        let mut unique: Vec<Entry> = Vec::with_capacity(entries.len());
        for e in entries {
            match unique.last_mut() {
                Some(last) if last.hash == e.hash && order(last) == order(&e) => *last = e,
                _ => unique.push(e),
            }
        }
        let mut r = Roster::new();
        for e in &unique {
            r.count(&e.inst, 1);
        }
        let mut chunks = Vec::with_capacity(unique.len().div_ceil(FILL));
        let mut it = unique.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<Entry> = it.by_ref().take(FILL).collect();
            chunks.push((last_hash(&chunk), Arc::new(chunk)));
        }
        r.chunks = Arc::new(chunks);
        r
    }
}

impl<'a> IntoIterator for &'a Roster {
    type Item = &'a Arc<Instance>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::instance::{InstanceSpec, Timing};

    fn inst(n: u32, eph: bool, healthy: bool) -> Arc<Instance> {
        let ip = format!("10.0.{}.{}", n / 256, n % 256);
        let mut spec = InstanceSpec::new(&ip, 8080);
        spec.ephemeral = eph;
        Arc::new(Instance::build(
            &spec,
            Arc::from("DEFAULT"),
            crate::naming::instance::Host::from(ip.as_str()),
            None,
            healthy,
            Timing::default(),
        ))
    }

    fn check(r: &Roster, model: &std::collections::BTreeMap<InstanceKey, bool>) {
        let mut keys: Vec<_> = r.iter().map(|i| i.key.clone()).collect();
        keys.sort();
        let want: Vec<_> = model.keys().cloned().collect();
        assert_eq!(keys, want);
        assert!(r.ordered());
        for (k, _) in model.iter().take(50) {
            assert_eq!(r.get(k).map(|i| &i.key), Some(k));
        }
        assert_eq!(r.len(), model.len());
        assert_eq!(r.healthy(), model.values().filter(|h| **h).count());
        let eph = model.iter().filter(|(k, _)| k.ephemeral);
        let sick = eph.clone().filter(|(_, h)| !**h).count();
        assert_eq!(r.ephemeral(), (eph.count(), sick));
        let shape = r.shape();
        assert!(shape.iter().all(|&n| (1..=MAX).contains(&n)), "{shape:?}");
    }

    #[test]
    fn matches_an_ordered_map_under_random_changes() {
        let mut r = Roster::new();
        let mut model = std::collections::BTreeMap::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut published = Vec::new();
        for step in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 700) as u32;
            let eph = seed & (1 << 20) != 0;
            let healthy = seed & (1 << 21) != 0;
            let i = inst(n, eph, healthy);
            if seed & (3 << 30) == 0 {
                let removed = r.remove(&i.key).map(|o| o.key.clone());
                assert_eq!(removed.is_some(), model.remove(&i.key).is_some());
            } else {
                let key = i.key.clone();
                let old = r.insert(i).map(|o| o.key.clone());
                assert_eq!(old.is_some(), model.insert(key, healthy).is_some());
            }
            if step % 997 == 0 {
                check(&r, &model);
                // A published clone is unaffected by later changes.
                published.push((r.clone(), model.clone()));
            }
        }
        check(&r, &model);
        for (snap, m) in &published {
            check(snap, m);
        }
    }

    #[test]
    fn built_in_one_go_equals_inserted_one_by_one() {
        for n in [0u32, 1, 23, 24, 25, 700] {
            // Duplicates (every third key again, with the other health) replace earlier ones.
            let items: Vec<_> = (0..n)
                .map(|k| inst(k, k % 2 == 0, true))
                .chain((0..n).step_by(3).map(|k| inst(k, k % 2 == 0, false)))
                .collect();
            let built: Roster = items.iter().cloned().collect();
            let mut inserted = Roster::new();
            let mut model = std::collections::BTreeMap::new();
            for i in items {
                model.insert(i.key.clone(), i.healthy);
                inserted.insert(i);
            }
            check(&built, &model);
            let a: Vec<_> = built.iter().map(|i| (i.key.clone(), i.healthy)).collect();
            let b: Vec<_> = inserted
                .iter()
                .map(|i| (i.key.clone(), i.healthy))
                .collect();
            assert_eq!(a, b, "n = {n}");
            assert!(built.shape().iter().all(|&c| c <= FILL), "n = {n}");
        }
    }

    #[test]
    fn finds_by_datum_key_persistent_first() {
        let mut r = Roster::new();
        r.insert(inst(1, true, true));
        assert!(
            r.find_any("10.0.0.1", 8080, "DEFAULT")
                .unwrap()
                .key
                .ephemeral
        );
        r.insert(inst(1, false, true));
        assert!(
            !r.find_any("10.0.0.1", 8080, "DEFAULT")
                .unwrap()
                .key
                .ephemeral
        );
        assert!(r.find_any("10.0.0.1", 8081, "DEFAULT").is_none());
        assert!(r.find("10.0.0.1", 8080, "OTHER", true).is_none());
    }

    #[test]
    fn chunks_changed_in_place_keep_little_spare_room() {
        let mut r = Roster::new();
        for n in 0..5000 {
            r.insert(inst(n, true, true));
        }
        let (len, cap) = r
            .chunks
            .iter()
            .fold((0, 0), |(l, c), (_, ch)| (l + ch.len(), c + ch.capacity()));
        assert_eq!(len, 5000);
        assert!(
            r.chunks
                .iter()
                .all(|(_, ch)| ch.capacity() <= ch.len() + GROW),
            "a chunk grew by doubling"
        );
        assert!(cap - len <= r.chunks.len() * GROW, "{cap} slots for {len}");
    }

    #[test]
    fn a_change_copies_one_chunk_and_the_index() {
        let mut r = Roster::new();
        for n in 0..1000 {
            r.insert(inst(n, true, true));
        }
        let published = r.clone();
        r.insert(inst(5000, true, false));
        let shared = r
            .chunks
            .iter()
            .zip(published.chunks.iter())
            .filter(|(a, b)| Arc::ptr_eq(&a.1, &b.1))
            .count();
        assert!(shared >= published.chunks.len() - 2, "{shared}");
        assert_eq!(published.len(), 1000);
        assert_eq!(r.len(), 1001);
        assert_eq!(r.healthy(), 1000);
    }
}
