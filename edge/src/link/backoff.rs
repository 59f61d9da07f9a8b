//! Reconnect delays for the link: exponential from 100 ms, doubling to a 2 s cap, each delay
//! drawn uniformly from its upper half so that edges restarted together do not reconnect in step.
//! The cap is what an edge adds to a locator's return in the worst case (outbox entries are
//! delivered within 5 s of it); a thousand edges at the cap make about 700 attempts a second.

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_millis(100);
pub const MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: INITIAL }
    }
}

impl Backoff {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(MAX);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Back to the shortest delay after a link that worked.
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= INITIAL / 2 && first <= INITIAL);
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
            assert!(last <= MAX);
        }
        assert!(last >= MAX / 2);
        b.reset();
        assert!(b.next_delay() <= INITIAL);
    }
}
