//! Per-address request limits for the public API: a token bucket per client address, refilled
//! at `rate` per second up to twice that (bursts), kept in a map whose size is bounded.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use dashmap::DashMap;

/// Addresses remembered at most; when full, buckets idle long enough to be full again are
/// dropped first (they carry no state worth keeping), and if none are, the new address is
/// refused rather than letting the map grow without bound.
pub const MAX_TRACKED: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimit {
    /// Requests per second per address; 0 turns the limit off.
    rate: f64,
    buckets: DashMap<IpAddr, Bucket>,
    /// One sweep at a time.
    sweeping: Mutex<()>,
}

impl RateLimit {
    pub fn new(per_second: u32) -> RateLimit {
        RateLimit { rate: f64::from(per_second), buckets: DashMap::new(), sweeping: Mutex::new(()) }
    }

    fn burst(&self) -> f64 {
        self.rate * 2.0
    }

    /// Takes one request's token for `ip` at `now`; `Err(seconds)` to wait when there is none.
    /// IPv6 clients are counted per /64: one host usually holds a whole /64.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
            },
            v4 => v4,
        };
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_TRACKED {
            self.sweep(now);
            if self.buckets.len() >= MAX_TRACKED {
                return Err(1);
            }
        }
        let mut bucket = self.buckets.entry(ip).or_insert(Bucket { tokens: self.burst(), at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst());
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }

    /// Drops buckets that have refilled completely: forgetting them changes nothing.
    fn sweep(&self, now: Instant) {
        let Ok(_guard) = self.sweeping.try_lock() else { return };
        let full_after = self.burst() / self.rate;
        self.buckets.retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() < full_after);
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_the_rate() {
        let limit = RateLimit::new(10);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(limit.check(ip, t0).is_ok());
        }
        assert_eq!(limit.check(ip, t0), Err(1));
        assert!(limit.check("192.0.2.2".parse().unwrap(), t0).is_ok(), "other addresses are not affected");
        let v6 = RateLimit::new(1);
        assert!(v6.check("2001:db8::1".parse().unwrap(), t0).is_ok());
        assert!(v6.check("2001:db8::2".parse().unwrap(), t0).is_ok());
        assert!(v6.check("2001:db8::ffff:3".parse().unwrap(), t0).is_err(), "one /64 is one client");
        assert!(v6.check("2001:db8:0:1::1".parse().unwrap(), t0).is_ok());
        let later = t0 + Duration::from_millis(100);
        assert!(limit.check(ip, later).is_ok(), "one more after a tenth of a second");
        assert!(limit.check(ip, later).is_err());
    }

    #[test]
    fn zero_is_off_and_idle_buckets_are_forgotten() {
        let off = RateLimit::new(0);
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 0..1000 {
            assert!(off.check(ip, Instant::now()).is_ok());
        }
        assert_eq!(off.tracked(), 0);
        let limit = RateLimit::new(1);
        let t0 = Instant::now();
        limit.check(ip, t0).unwrap();
        limit.sweep(t0 + Duration::from_secs(3));
        assert_eq!(limit.tracked(), 0);
    }
}
