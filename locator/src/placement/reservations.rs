//! Reservations: sessions this locator placed on an edge that the edge's heartbeats may not
//! show yet.
//!
//! Without them, every placement between two heartbeats would see the same load and a burst
//! would land on one edge. Each placement counts at once as one session (and one connection) on
//! its edge, at full weight for `hold`, then fading linearly to nothing over `fade`. The defaults
//! (both twice the heartbeat interval, so 2 s and 2 s) cover the host connecting, the edge's next
//! heartbeat and the locator's next read of it; by the time a reservation has faded, the
//! heartbeat counts the session instead. The overlap while both count is deliberate: counting a
//! new session twice for a moment spreads a burst a little more, counting it not at all piles
//! the burst up.
//!
//! Placements are grouped in [`SLOT`]-wide time slots per edge, so the cost of reading an edge's
//! reservations is bounded by `(hold + fade) / SLOT` (80 slots at the defaults) whatever the
//! placement rate. Times are `tokio::time::Instant`, so the fade is tested on paused time.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Width of a reservation time slot: fine enough that the fade is smooth at the defaults.
pub const SLOT: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Slot {
    start: Instant,
    count: u32,
}

/// Reservations per edge. Not thread-safe by itself: the placer holds it under a lock while it
/// reads the weights, chooses and reserves, so that those three steps are one.
#[derive(Debug)]
pub struct Reservations {
    hold: Duration,
    fade: Duration,
    by_edge: HashMap<String, VecDeque<Slot>>,
}

impl Reservations {
    pub fn new(hold: Duration, fade: Duration) -> Reservations {
        Reservations { hold, fade, by_edge: HashMap::new() }
    }

    /// The weight of one reservation made `age` ago: 1 during `hold`, then linearly down to 0.
    fn weight_of(&self, age: Duration) -> f64 {
        if age <= self.hold {
            1.0
        } else if age >= self.hold + self.fade || self.fade.is_zero() {
            0.0
        } else {
            1.0 - (age - self.hold).as_secs_f64() / self.fade.as_secs_f64()
        }
    }

    /// Records one placement on `edge` at `now`.
    pub fn add(&mut self, edge: &str, now: Instant) {
        let slots = match self.by_edge.get_mut(edge) {
            Some(s) => s,
            None => self.by_edge.entry(edge.to_owned()).or_default(),
        };
        match slots.back_mut() {
            Some(last) if now.saturating_duration_since(last.start) < SLOT => last.count += 1,
            _ => slots.push_back(Slot { start: now, count: 1 }),
        }
    }

    /// The sessions reserved on `edge` at `now`, as a weighted count. Drops expired slots.
    pub fn weight(&mut self, edge: &str, now: Instant) -> f64 {
        let expiry = self.hold + self.fade;
        let Some(slots) = self.by_edge.get_mut(edge) else { return 0.0 };
        while slots.front().is_some_and(|s| now.saturating_duration_since(s.start) >= expiry) {
            slots.pop_front();
        }
        let slots = &self.by_edge[edge];
        // `+ 0.0`: an empty float sum is -0.0, which JSON shows as `-0.0`.
        slots.iter().map(|s| f64::from(s.count) * self.weight_of(now.saturating_duration_since(s.start))).sum::<f64>()
            + 0.0
    }

    /// Forgets edges that are no longer known.
    pub fn retain_edges(&mut self, known: impl Fn(&str) -> bool) {
        self.by_edge.retain(|id, _| known(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// The documented fade, on paused time: full weight for `hold`, half way through the fade at
    /// half weight, nothing after `hold + fade`.
    #[tokio::test(start_paused = true)]
    async fn reservations_fade_as_documented() {
        let mut r = Reservations::new(Duration::from_secs(2), Duration::from_secs(2));
        let t0 = Instant::now();
        for _ in 0..10 {
            r.add("a", t0);
        }
        r.add("b", t0);
        assert!(close(r.weight("a", Instant::now()), 10.0));
        tokio::time::advance(Duration::from_millis(1_999)).await;
        assert!(close(r.weight("a", Instant::now()), 10.0), "full weight during hold");
        tokio::time::advance(Duration::from_millis(1_001)).await; // 3 s: half way through the fade
        assert!(close(r.weight("a", Instant::now()), 5.0));
        assert!(close(r.weight("b", Instant::now()), 0.5));
        r.add("a", Instant::now());
        assert!(close(r.weight("a", Instant::now()), 6.0), "a new reservation counts fully at once");
        tokio::time::advance(Duration::from_millis(1_000)).await; // 4 s: the first ten are gone
        assert!(close(r.weight("a", Instant::now()), 1.0));
        assert_eq!(r.by_edge["a"].len(), 1, "expired slots are dropped");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(close(r.weight("a", Instant::now()), 0.0));
        assert!(close(r.weight("unknown", Instant::now()), 0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_shares_slots() {
        let mut r = Reservations::new(Duration::from_secs(2), Duration::from_secs(2));
        for _ in 0..10_000 {
            r.add("a", Instant::now());
        }
        tokio::time::advance(SLOT).await;
        r.add("a", Instant::now());
        assert_eq!(r.by_edge["a"].len(), 2, "one slot per SLOT, however many placements");
        assert!(close(r.weight("a", Instant::now()), 10_001.0));
        r.retain_edges(|id| id != "a");
        assert!(r.by_edge.is_empty());
    }
}
