//! A hashed timing wheel for lease deadlines.
//!
//! Each entry is visited when its slot comes due, not on every tick, so a tick costs
//! O(entries due + slots passed), never O(all instances). Deadlines past the wheel's horizon
//! are parked in the farthest slot and re-parked when visited (lazy re-check). Callers are
//! expected to re-check the real state of what an entry points at, so stale entries are cheap.

/// A timing wheel of `T` entries keyed by millisecond deadlines.
///
/// Invariant: every stored entry sits in the slot of `min(deadline, horizon)` relative to
/// `cursor`, and `cursor` is slot-aligned and only moves forward.
#[derive(Debug)]
pub struct Wheel<T> {
    slot_ms: u64,
    slots: Vec<Vec<(u64, T)>>,
    /// Start time (ms) of the next slot to process.
    cursor: u64,
    len: usize,
}

impl<T> Wheel<T> {
    /// A wheel of `slots` slots of `slot_ms` each (horizon = `slot_ms * slots`), starting at `now`.
    ///
    /// `slot_ms` and `slots` must be at least 1.
    pub fn new(slot_ms: u64, slots: usize, now: u64) -> Self {
        let slot_ms = slot_ms.max(1);
        Wheel {
            slot_ms,
            slots: (0..slots.max(2)).map(|_| Vec::new()).collect(),
            cursor: now - now % slot_ms,
            len: 0,
        }
    }

    /// Number of stored entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Stores `item` to come due at `deadline` (ms). A past deadline comes due at the next tick.
    pub fn schedule(&mut self, deadline: u64, item: T) {
        let horizon = self.cursor + self.slot_ms * (self.slots.len() as u64 - 1);
        let at = deadline.clamp(self.cursor, horizon);
        let idx = ((at / self.slot_ms) % self.slots.len() as u64) as usize;
        self.slots[idx].push((deadline, item));
        self.len += 1;
    }

    /// Like [`Wheel::advance`], but hands out at most `limit` entries; the rest stay where they
    /// are and come out on later calls. Costs O(entries handed out + slots passed) when whole
    /// slots are due, so a large backlog is drained `limit` at a time without being rescanned.
    pub fn advance_limited(&mut self, now: u64, due: &mut Vec<T>, limit: usize) {
        let n = self.slots.len() as u64;
        let mut steps = 0;
        while self.cursor <= now && steps < n && due.len() < limit {
            let idx = ((self.cursor / self.slot_ms) % n) as usize;
            let slot_end = self.cursor + self.slot_ms;
            if slot_end <= now + 1 {
                // The whole slot's time has passed: entries not due yet were parked here from
                // beyond the horizon; take from the end until the limit.
                let mut parked = Vec::new();
                while due.len() < limit {
                    let Some((deadline, item)) = self.slots[idx].pop() else {
                        break;
                    };
                    self.len -= 1;
                    if deadline <= now {
                        due.push(item);
                    } else {
                        parked.push((deadline, item));
                    }
                }
                // Parked entries are due after this slot ends, so they land in later slots.
                for (deadline, item) in parked {
                    self.schedule(deadline, item);
                }
                if !self.slots[idx].is_empty() {
                    return;
                }
                // A drained slot gives its buffer back: each slot fills once per turn, and
                // keeping every slot's largest-ever capacity made memory creep for a whole turn.
                self.slots[idx] = Vec::new();
                self.cursor = slot_end;
                steps += 1;
            } else {
                // Partly due: the exact scan of this one slot.
                self.advance_slot(now, due);
                return;
            }
        }
    }

    /// Hands out the due entries of the cursor's slot, keeping the rest in place.
    fn advance_slot(&mut self, now: u64, due: &mut Vec<T>) {
        let n = self.slots.len() as u64;
        let idx = ((self.cursor / self.slot_ms) % n) as usize;
        let entries = std::mem::take(&mut self.slots[idx]);
        self.len -= entries.len();
        let mut keep = Vec::new();
        for (deadline, item) in entries {
            if deadline <= now {
                due.push(item);
            } else {
                keep.push((deadline, item));
            }
        }
        self.len += keep.len();
        self.slots[idx] = keep;
    }

    /// Moves the wheel to `now` and appends every entry whose deadline is `<= now` to `due`.
    ///
    /// Walks at most one full turn of slots per call; after a longer gap everything left is
    /// re-bucketed from `now`.
    pub fn advance(&mut self, now: u64, due: &mut Vec<T>) {
        self.advance_limited(now, due, usize::MAX);
        if self.cursor + self.slot_ms <= now + 1 {
            let rest: Vec<(u64, T)> = self.slots.iter_mut().flat_map(std::mem::take).collect();
            self.len = 0;
            self.cursor = now - now % self.slot_ms;
            for (deadline, item) in rest {
                if deadline <= now {
                    due.push(item);
                } else {
                    self.schedule(deadline, item);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = Wheel::new(100, 16, 0);
        w.schedule(1_000, "a");
        w.schedule(250, "b");
        let mut due = Vec::new();
        w.advance(200, &mut due);
        assert!(due.is_empty());
        w.advance(299, &mut due);
        assert_eq!(due, vec!["b"]);
        due.clear();
        w.advance(999, &mut due);
        assert!(due.is_empty());
        w.advance(1_100, &mut due);
        assert_eq!(due, vec!["a"]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn deadlines_past_the_horizon_are_reparked() {
        let mut w = Wheel::new(10, 8, 0); // horizon 80 ms
        w.schedule(1_000, 1u32);
        let mut due = Vec::new();
        for t in (0..1_000).step_by(10) {
            w.advance(t, &mut due);
            assert!(due.is_empty(), "fired early at {t}");
        }
        w.advance(1_010, &mut due);
        assert_eq!(due, vec![1]);
    }

    #[test]
    fn a_long_gap_still_fires_everything_due() {
        let mut w = Wheel::new(10, 8, 0);
        for i in 0..100u64 {
            w.schedule(i * 7, i);
        }
        w.schedule(100_000, 999);
        let mut due = Vec::new();
        w.advance(50_000, &mut due);
        assert_eq!(due.len(), 100);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn a_limited_advance_drains_a_backlog_in_steps() {
        let mut w = Wheel::new(100, 16, 0);
        for i in 0..1000u32 {
            w.schedule(50 + u64::from(i % 7), i);
        }
        w.schedule(5_000, 9999);
        let mut due = Vec::new();
        let mut rounds = 0;
        while due.len() < 1000 && rounds < 100 {
            let before = due.len();
            w.advance_limited(1_000, &mut due, before + 64);
            assert!(due.len() - before <= 64);
            rounds += 1;
        }
        assert_eq!(due.len(), 1000);
        assert_eq!(w.len(), 1, "the far entry stays");
        w.advance_limited(5_100, &mut due, usize::MAX);
        assert_eq!(due.len(), 1001);
    }

    #[test]
    fn past_deadlines_fire_on_next_advance() {
        let mut w = Wheel::new(100, 16, 1_000);
        w.schedule(5, 'x');
        let mut due = Vec::new();
        w.advance(1_100, &mut due);
        assert_eq!(due, vec!['x']);
    }
}
