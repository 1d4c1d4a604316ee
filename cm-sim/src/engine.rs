//! The discrete-event core: an event heap keyed by `(time, seq)`, per-node drifting clocks and a
//! trace hash. Virtual time jumps from event to event; nothing here reads a real clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use cm_core::Instant;

/// A min-heap of events ordered by `(time, seq)`: ties break by insertion order, so a run
/// depends only on the seed. The heap holds small `(time, seq, slot)` keys (16 bytes: the
/// sequence number and the slot share one word) and the events wait in a slab,
/// so sifting moves keys rather than whole events (frames carry envelopes).
#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<Entry>>,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    seq: u64,
    now: Instant,
}

/// A heap key: `seq_slot` is the sequence number above [`SLOT_BITS`] bits of slab slot.
/// Sequence numbers are unique and increasing, so ordering by `(at, seq_slot)` is ordering
/// by `(at, seq)`; the slot never decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: Instant,
    seq_slot: u64,
}

/// Bits of [`Entry::seq_slot`] that hold the slot: up to 2^24 events queued at once (a run
/// queues hundreds) and 2^40 events pushed in a run.
const SLOT_BITS: u32 = 24;

impl Entry {
    fn new(at: Instant, seq: u64, slot: u32) -> Self {
        assert!(slot < 1 << SLOT_BITS, "fewer than 2^24 queued events");
        assert!(
            seq < 1 << (64 - SLOT_BITS),
            "fewer than 2^40 events in a run"
        );
        Self {
            at,
            seq_slot: seq << SLOT_BITS | u64::from(slot),
        }
    }

    fn slot(self) -> usize {
        (self.seq_slot & ((1 << SLOT_BITS) - 1)) as usize
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
            now: Instant::ZERO,
        }
    }
}

impl<E> EventQueue<E> {
    /// The current virtual time: the time of the last event popped.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Schedules `event` at `at`; an instant in the past is clamped to now (causality).
    pub fn push(&mut self, at: Instant, event: E) {
        let at = at.max(self.now);
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(event);
                slot
            }
            None => {
                let slot = u32::try_from(self.slab.len()).expect("fewer than 2^32 queued events");
                self.slab.push(Some(event));
                slot
            }
        };
        self.heap.push(Reverse(Entry::new(at, self.seq, slot)));
    }

    /// Schedules `event` `after` from now.
    pub fn push_after(&mut self, after: core::time::Duration, event: E) {
        let at = self.now + after;
        self.push(at, event);
    }

    /// Pops the next event at or before `until`, advancing virtual time to it.
    pub fn pop_until(&mut self, until: Instant) -> Option<(Instant, E)> {
        let next = self.heap.peek()?.0.at;
        if next > until {
            return None;
        }
        let Reverse(e) = self.heap.pop()?;
        assert!(e.at >= self.now, "virtual time went backwards");
        self.now = e.at;
        let slot = e.slot();
        let event = self.slab[slot]
            .take()
            .expect("a queued slot holds its event");
        self.free.push(slot as u32);
        Some((e.at, event))
    }

    /// Advances virtual time to `to` with no event (end of a phase).
    pub fn advance_to(&mut self, to: Instant) {
        self.now = self.now.max(to);
    }

    /// Events still queued.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// A node's local monotonic clock: `local = origin + elapsed × (1 + drift)`, |drift| ≤ ρ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeClock {
    /// The local reading at global time zero.
    pub origin: Instant,
    /// Relative rate error (e.g. 0.004 runs 0.4 % fast).
    pub drift: f64,
    /// Wall clock (ms since the epoch) at global time zero, for `WallMillis` inputs.
    pub wall_origin_ms: u64,
}

impl NodeClock {
    /// The local instant at global time `global`.
    pub fn local(&self, global: Instant) -> Instant {
        let scaled = global.as_nanos() as f64 * (1.0 + self.drift);
        // `as u64` truncates toward zero and saturates (negatives and NaN to 0), so it equals
        // `scaled.floor() as u64` for every value, without the libm `floor` call this hot path
        // (every agent and server, after every event) paid for.
        Instant::from_nanos(self.origin.as_nanos() + scaled as u64)
    }

    /// The earliest global time at which the local clock reads at least `local`.
    pub fn global_at(&self, local: Instant) -> Instant {
        if local <= self.origin {
            return Instant::ZERO;
        }
        let elapsed = (local.as_nanos() - self.origin.as_nanos()) as f64 / (1.0 + self.drift);
        let mut g = Instant::from_nanos(elapsed.ceil().min(u64::MAX as f64 / 2.0) as u64);
        // Float rounding may leave the local reading one nanosecond short; step until it is not.
        while self.local(g) < local {
            g = Instant::from_nanos(g.as_nanos() + 1);
        }
        g
    }

    /// The node's wall clock (ms since the epoch) at global time `global`, drifting with it.
    pub fn wall_ms(&self, global: Instant) -> u64 {
        let local_ms = global.as_nanos() as f64 * (1.0 + self.drift) / 1e6;
        self.wall_origin_ms + local_ms as u64 // = `floor() as u64`, see `local`
    }
}

/// FNV-1a over the event trace: two runs are identical iff their hashes match (in practice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceHash(pub u64);

impl Default for TraceHash {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl TraceHash {
    /// Mixes bytes into the hash.
    pub fn mix(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Mixes a u64.
    pub fn mix_u64(&mut self, v: u64) {
        self.mix(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn events_pop_in_time_then_insertion_order() {
        let mut q = EventQueue::default();
        q.push(Instant::from_millis(5), "b");
        q.push(Instant::from_millis(1), "a");
        q.push(Instant::from_millis(5), "c");
        let order: Vec<_> = std::iter::from_fn(|| q.pop_until(Instant::MAX))
            .map(|(_, e)| e)
            .collect();
        assert_eq!(order, vec!["a", "b", "c"]);
        assert_eq!(q.now(), Instant::from_millis(5));
    }

    #[test]
    fn many_events_at_one_instant_pop_in_insertion_order_through_reused_slots() {
        // Slots are reused in LIFO order, so later events sit in lower slots: the order must
        // come from the sequence number, never from the slot sharing its word.
        let mut q = EventQueue::default();
        let t = Instant::from_millis(1);
        for i in 0..100u32 {
            q.push(t, i);
        }
        let first: Vec<u32> = (0..50)
            .filter_map(|_| q.pop_until(Instant::MAX))
            .map(|(_, e)| e)
            .collect();
        assert_eq!(first, (0..50).collect::<Vec<_>>());
        for i in 100..150u32 {
            q.push(t, i);
        }
        let rest: Vec<u32> = std::iter::from_fn(|| q.pop_until(Instant::MAX))
            .map(|(_, e)| e)
            .collect();
        assert_eq!(rest, (50..150).collect::<Vec<_>>());
    }

    #[test]
    fn past_events_are_clamped_to_now() {
        let mut q = EventQueue::default();
        q.push(Instant::from_secs(2), 1);
        q.pop_until(Instant::MAX);
        q.push(Instant::from_secs(1), 2);
        assert_eq!(q.pop_until(Instant::MAX), Some((Instant::from_secs(2), 2)));
    }

    #[test]
    fn pop_until_stops_at_the_horizon() {
        let mut q = EventQueue::default();
        q.push_after(Duration::from_secs(3), ());
        assert_eq!(q.pop_until(Instant::from_secs(2)), None);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn clock_drift_scales_elapsed_time_and_inverts() {
        let c = NodeClock {
            origin: Instant::from_secs(100),
            drift: 0.01,
            wall_origin_ms: 0,
        };
        assert_eq!(
            c.local(Instant::from_secs(10)),
            Instant::from_millis(110_100)
        );
        for local_ms in [100_000u64, 100_001, 110_100, 123_457] {
            let local = Instant::from_millis(local_ms);
            let g = c.global_at(local);
            assert!(c.local(g) >= local);
            assert!(g == Instant::ZERO || c.local(g - Duration::from_nanos(1)) < local);
        }
        let slow = NodeClock { drift: -0.01, ..c };
        assert_eq!(
            slow.local(Instant::from_secs(10)),
            Instant::from_millis(109_900)
        );
    }
}
