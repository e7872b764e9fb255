//! The sink's metrics, kept in atomics and rendered as Prometheus text. Each
//! metric is updated in exactly one place in the code.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the flush-duration histogram, in seconds.
const FLUSH_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
pub struct Metrics {
    pub events_folded: AtomicU64,
    pub events_skipped: AtomicU64,
    pub events_rejected: AtomicU64,
    pub events_dead_lettered: AtomicU64,
    pub flushes_ok: AtomicU64,
    pub flushes_failed: AtomicU64,
    pub flushes_stale: AtomicU64,
    pub partition_resets: AtomicU64,
    pub arms_published: AtomicU64,
    pub dirty_arms: AtomicU64,
    pub arms_in_memory: AtomicU64,
    pub unflushed_events: AtomicU64,
    pub paused: AtomicU64,
    pub last_flush_unix_ms: AtomicU64,
    flush_buckets: [AtomicU64; FLUSH_BUCKETS.len()],
    flush_count: AtomicU64,
    flush_sum_micros: AtomicU64,
    lag: Mutex<BTreeMap<i32, i64>>,
}

fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        add(counter, 1);
    }

    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// Records one successful flush and its duration.
    pub fn observe_flush(&self, duration: Duration, arms: u64) {
        let seconds = duration.as_secs_f64();
        for (bucket, bound) in self.flush_buckets.iter().zip(FLUSH_BUCKETS) {
            if seconds <= bound {
                add(bucket, 1);
            }
        }
        add(&self.flush_count, 1);
        add(&self.flush_sum_micros, u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
        add(&self.flushes_ok, 1);
        add(&self.arms_published, arms);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self::set(&self.last_flush_unix_ms, u64::try_from(now.as_millis()).unwrap_or(u64::MAX));
    }

    /// Replaces the consumer lag per partition (from librdkafka statistics).
    pub fn set_lag(&self, lag: BTreeMap<i32, i64>) {
        if let Ok(mut slot) = self.lag.lock() {
            *slot = lag;
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter("bandit_sink_events_folded_total", "Events folded into arms.", get(&self.events_folded));
        counter("bandit_sink_events_skipped_total", "Redelivered events the model already holds.", get(&self.events_skipped));
        counter("bandit_sink_events_rejected_total", "Invalid events.", get(&self.events_rejected));
        counter("bandit_sink_events_dead_lettered_total", "Invalid events sent to the dead-letter topic.", get(&self.events_dead_lettered));
        counter("bandit_sink_arms_published_total", "Arms written by BANDIT.LOAD.", get(&self.arms_published));
        counter(
            "bandit_sink_partition_resets_total",
            "Partitions reset to the model because another writer moved it (restore check or STALE).",
            get(&self.partition_resets),
        );
        let _ = writeln!(out, "# HELP bandit_sink_flushes_total Flushes by result.\n# TYPE bandit_sink_flushes_total counter");
        for (result, value) in [("ok", &self.flushes_ok), ("error", &self.flushes_failed), ("stale", &self.flushes_stale)] {
            let _ = writeln!(out, "bandit_sink_flushes_total{{result=\"{result}\"}} {}", get(value));
        }
        let _ = writeln!(out, "# HELP bandit_sink_flush_duration_seconds Inversion plus BANDIT.LOAD.\n# TYPE bandit_sink_flush_duration_seconds histogram");
        for (bucket, bound) in self.flush_buckets.iter().zip(FLUSH_BUCKETS) {
            let _ = writeln!(out, "bandit_sink_flush_duration_seconds_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.flush_count);
        let _ = writeln!(out, "bandit_sink_flush_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "bandit_sink_flush_duration_seconds_sum {}", get(&self.flush_sum_micros) as f64 / 1e6);
        let _ = writeln!(out, "bandit_sink_flush_duration_seconds_count {count}");
        let mut gauge = |name: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        gauge("bandit_sink_dirty_arms", "Arms changed since the last flush.", get(&self.dirty_arms) as f64);
        gauge("bandit_sink_arms_in_memory", "Arms held by this instance.", get(&self.arms_in_memory) as f64);
        gauge("bandit_sink_unflushed_events", "Events folded but not yet published.", get(&self.unflushed_events) as f64);
        gauge("bandit_sink_paused", "1 while consumption is paused (Redis unavailable).", get(&self.paused) as f64);
        gauge(
            "bandit_sink_last_flush_timestamp_seconds",
            "Unix time of the last successful flush.",
            get(&self.last_flush_unix_ms) as f64 / 1000.0,
        );
        let _ = writeln!(out, "# HELP bandit_sink_consumer_lag Messages behind the partition end.\n# TYPE bandit_sink_consumer_lag gauge");
        if let Ok(lag) = self.lag.lock() {
            for (partition, value) in lag.iter() {
                let _ = writeln!(out, "bandit_sink_consumer_lag{{partition=\"{partition}\"}} {value}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_lag() {
        let metrics = Metrics::default();
        Metrics::inc(&metrics.events_folded);
        metrics.observe_flush(Duration::from_millis(20), 3);
        metrics.set_lag(BTreeMap::from([(0, 5)]));
        let text = metrics.render();
        assert!(text.contains("bandit_sink_events_folded_total 1\n"));
        assert!(text.contains("bandit_sink_flush_duration_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(text.contains("bandit_sink_flush_duration_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("bandit_sink_flushes_total{result=\"ok\"} 1\n"));
        assert!(text.contains("bandit_sink_arms_published_total 3\n"));
        assert!(text.contains("bandit_sink_consumer_lag{partition=\"0\"} 5\n"));
    }
}
