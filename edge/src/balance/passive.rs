//! Passive health: servers that keep failing real requests are skipped for a while, like
//! nginx's `max_fails`/`fail_timeout`. It reacts within one request (active checks need
//! an interval) and costs two atomic loads per candidate on the request path.
//!
//! Counters are approximate under races (two threads may both reset a window); that only
//! shifts an ejection by a request, which is fine for this purpose.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

use crate::config::model::Passive;

/// Milliseconds on a process-local monotonic clock (never 0, so 0 can mean "unset").
pub fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

#[derive(Default)]
pub struct PassiveState {
    failures: AtomicU32,
    window_start: AtomicU64,
    down_until: AtomicU64,
}

impl PassiveState {
    pub fn is_ejected(&self, now: u64) -> bool {
        self.down_until.load(Relaxed) > now
    }

    /// Counts a failed attempt; returns true when this failure ejects the server.
    pub fn record_failure(&self, policy: &Passive, now: u64) -> bool {
        let window = u64::try_from(policy.fail_timeout.0.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(self.window_start.load(Relaxed)) >= window {
            self.window_start.store(now, Relaxed);
            self.failures.store(0, Relaxed);
        }
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if failures < policy.max_fails {
            return false;
        }
        self.down_until.store(now.saturating_add(window), Relaxed);
        self.failures.store(0, Relaxed);
        self.window_start.store(now, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Duration;

    #[test]
    fn ejects_after_max_fails_within_the_window_and_recovers() {
        let policy = Passive {
            max_fails: 2,
            fail_timeout: Duration::from_secs(10),
            fail_on_5xx: false,
        };
        let s = PassiveState::default();
        assert!(!s.record_failure(&policy, 1_000));
        assert!(!s.is_ejected(1_001));
        // The window expired: the count starts again.
        assert!(!s.record_failure(&policy, 20_000));
        assert!(s.record_failure(&policy, 20_500));
        assert!(s.is_ejected(25_000));
        assert!(!s.is_ejected(30_501));
    }
}
