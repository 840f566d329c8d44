//! The roster: one service's instances, sorted by identity, in shared copy-on-write chunks.
//!
//! The owner shard publishes a new [`crate::view::ServiceView`] after every change, and readers
//! on every shard keep old ones alive while they render. A flat `Vec<Arc<Instance>>` made each
//! publish touch the reference count of every instance of the service — a cache miss per
//! instance, O(n) per write. A roster is a two-level persistent vector instead: cloning it
//! (publishing) is one reference-count increment, and a change copies only the chunk index
//! (≤ n / [`HALF`] pointers) and the one chunk it touches (≤ [`MAX`] pointers) when a published
//! view still shares them.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::instance::{Instance, InstanceKey};

/// Most instances in one chunk; a chunk that would grow past it splits in two halves.
pub const MAX: usize = 32;
/// Half a full chunk. Neighbouring chunks whose sum fits in one are merged on removal once one
/// of them is below a quarter of [`MAX`].
pub const HALF: usize = MAX / 2;

type Chunk = Arc<Vec<Arc<Instance>>>;

/// Iterator over a roster's instances in key order.
pub type Iter<'a> = std::iter::FlatMap<
    std::slice::Iter<'a, Chunk>,
    std::slice::Iter<'a, Arc<Instance>>,
    fn(&'a Chunk) -> std::slice::Iter<'a, Arc<Instance>>,
>;

/// The chunk, copied first if a published view shares it. A copy gets room for `extra` more
/// instances and no more: chunks are copied on nearly every change, and `Vec`'s doubling would
/// leave most of every chunk's allocation unused.
fn own(chunk: &mut Chunk, extra: usize) -> &mut Vec<Arc<Instance>> {
    if Arc::get_mut(chunk).is_none() {
        let mut copy = Vec::with_capacity(chunk.len() + extra);
        copy.extend(chunk.iter().cloned());
        *chunk = Arc::new(copy);
    }
    Arc::get_mut(chunk).expect("chunk just made unique")
}

fn chunk_iter(c: &Chunk) -> std::slice::Iter<'_, Arc<Instance>> {
    c.iter()
}

/// One service's instances, ordered by [`InstanceKey`].
///
/// Invariants: every chunk is non-empty and holds at most [`MAX`] instances; keys strictly
/// increase across the concatenation of the chunks; `len` and `healthy` count the instances
/// and the healthy ones. Clones share everything until one of them is changed.
#[derive(Clone, Debug, Default)]
pub struct Roster {
    chunks: Arc<Vec<Chunk>>,
    len: usize,
    healthy: usize,
}

/// Orders a stored key against `(ip, port, cluster, ephemeral)` like `InstanceKey`'s `Ord`.
fn cmp_key(k: &InstanceKey, ip: &str, port: u16, cluster: &str, ephemeral: bool) -> Ordering {
    (*k.ip)
        .cmp(ip)
        .then(k.port.cmp(&port))
        .then((*k.cluster).cmp(cluster))
        .then(k.ephemeral.cmp(&ephemeral))
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

    /// Every instance, in key order.
    pub fn iter(&self) -> Iter<'_> {
        self.chunks
            .iter()
            .flat_map(chunk_iter as fn(&Chunk) -> std::slice::Iter<'_, Arc<Instance>>)
    }

    /// The instance with the smallest key.
    pub fn first(&self) -> Option<&Arc<Instance>> {
        self.chunks.first().and_then(|c| c.first())
    }

    /// (chunk, index in chunk, found) of the position of `(ip, port, cluster, ephemeral)`.
    fn locate(&self, ip: &str, port: u16, cluster: &str, ephemeral: bool) -> (usize, usize, bool) {
        let cmp = |i: &Arc<Instance>| cmp_key(&i.key, ip, port, cluster, ephemeral);
        // The first chunk whose last key is not below the target.
        let c = self
            .chunks
            .partition_point(|ch| ch.last().is_some_and(|i| cmp(i) == Ordering::Less));
        if c == self.chunks.len() {
            let last = self.chunks.len().saturating_sub(1);
            let at = self.chunks.get(last).map_or(0, |ch| ch.len());
            return (last, at, false);
        }
        match self.chunks[c].binary_search_by(cmp) {
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
        match self.locate(ip, port, cluster, ephemeral) {
            (c, i, true) => Some(&self.chunks[c][i]),
            _ => None,
        }
    }

    /// The instance `(ip, port, cluster)`, persistent or ephemeral (persistent first, as in key
    /// order), the way Nacos finds an instance by its datum key.
    pub fn find_any(&self, ip: &str, port: u16, cluster: &str) -> Option<&Arc<Instance>> {
        let (c, i, found) = self.locate(ip, port, cluster, false);
        if found {
            return Some(&self.chunks[c][i]);
        }
        // The ephemeral twin, if any, sorts right after where the persistent one would be.
        let next = match self.chunks.get(c) {
            Some(ch) if i < ch.len() => &ch[i],
            _ => self.chunks.get(c + 1)?.first()?,
        };
        (cmp_key(&next.key, ip, port, cluster, true) == Ordering::Equal).then_some(next)
    }

    fn count(&mut self, inst: &Instance, sign: isize) {
        self.len = self.len.wrapping_add_signed(sign);
        if inst.healthy {
            self.healthy = self.healthy.wrapping_add_signed(sign);
        }
    }

    /// Inserts `inst`, replacing and returning the instance with the same key.
    pub fn insert(&mut self, inst: Arc<Instance>) -> Option<Arc<Instance>> {
        let k = &inst.key;
        let (c, i, found) = self.locate(&k.ip, k.port, &k.cluster, k.ephemeral);
        self.count(&inst, 1);
        let chunks = Arc::make_mut(&mut self.chunks);
        if chunks.is_empty() {
            chunks.push(Arc::new(vec![inst]));
            return None;
        }
        let chunk = own(&mut chunks[c], 1 - found as usize);
        if found {
            let old = std::mem::replace(&mut chunk[i], inst);
            self.count(&old, -1);
            return Some(old);
        }
        chunk.insert(i, inst);
        if chunk.len() > MAX {
            let tail = chunk.split_off(chunk.len() / 2);
            chunks.insert(c + 1, Arc::new(tail));
        }
        None
    }

    /// Removes and returns the instance with identity `key`.
    pub fn remove(&mut self, key: &InstanceKey) -> Option<Arc<Instance>> {
        let (c, i, found) = self.locate(&key.ip, key.port, &key.cluster, key.ephemeral);
        if !found {
            return None;
        }
        let chunks = Arc::make_mut(&mut self.chunks);
        let chunk = own(&mut chunks[c], 0);
        let old = chunk.remove(i);
        if chunk.is_empty() {
            chunks.remove(c);
        } else if chunk.len() < MAX / 4 {
            // Merge with the smaller neighbour when the two fit in one chunk.
            let pick = [c.checked_sub(1), (c + 1 < chunks.len()).then_some(c + 1)]
                .into_iter()
                .flatten()
                .min_by_key(|&n| chunks[n].len());
            if let Some(n) = pick.filter(|&n| chunks[n].len() + chunks[c].len() <= MAX) {
                let (lo, hi) = (c.min(n), c.max(n));
                let upper = chunks.remove(hi);
                Arc::make_mut(&mut chunks[lo]).extend(upper.iter().cloned());
            }
        }
        self.count(&old, -1);
        Some(old)
    }

    /// Chunk sizes, for tests and the invariant check.
    #[cfg(test)]
    fn shape(&self) -> Vec<usize> {
        self.chunks.iter().map(|c| c.len()).collect()
    }
}

impl FromIterator<Arc<Instance>> for Roster {
    /// A roster of the given instances; a later duplicate key replaces an earlier one.
    fn from_iter<I: IntoIterator<Item = Arc<Instance>>>(iter: I) -> Self {
        let mut r = Roster::new();
        for inst in iter {
            r.insert(inst);
        }
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
    use crate::instance::{InstanceSpec, Timing};

    fn inst(n: u32, eph: bool, healthy: bool) -> Arc<Instance> {
        let ip = format!("10.0.{}.{}", n / 256, n % 256);
        let mut spec = InstanceSpec::new(&ip, 8080);
        spec.ephemeral = eph;
        Arc::new(Instance::build(
            &spec,
            Arc::from("DEFAULT"),
            Arc::from(ip.as_str()),
            None,
            healthy,
            Timing::default(),
        ))
    }

    fn check(r: &Roster, model: &std::collections::BTreeMap<InstanceKey, bool>) {
        let keys: Vec<_> = r.iter().map(|i| i.key.clone()).collect();
        let want: Vec<_> = model.keys().cloned().collect();
        assert_eq!(keys, want);
        assert_eq!(r.len(), model.len());
        assert_eq!(r.healthy(), model.values().filter(|h| **h).count());
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
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert!(shared >= published.chunks.len() - 2, "{shared}");
        assert_eq!(published.len(), 1000);
        assert_eq!(r.len(), 1001);
        assert_eq!(r.healthy(), 1000);
    }
}
