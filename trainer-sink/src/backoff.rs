//! Capped exponential back-off for waiting on Redis.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Backoff {
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { current: FIRST }
    }
}

impl Backoff {
    /// The next delay: 100 ms, doubling up to 5 s.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.current = FIRST;
    }
}
