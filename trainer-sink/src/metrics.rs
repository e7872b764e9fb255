//! The sink's metrics, kept in atomics and rendered as Prometheus text.
//!
//! The fields are private so that each metric has one writer: one method
//! below, called from one place. Counters are counted where their event
//! happens (the engine for events, flushes and resets, the loop for dead
//! letters); the engine's gauges are a snapshot the loop publishes once per
//! turn ([`Metrics::set_engine`]), so no code path can forget one of them.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bounds of the flush-duration histogram, in seconds.
const FLUSH_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The engine's gauges at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineGauges {
    /// Arms changed since the last flush.
    pub dirty_arms: usize,
    /// Arms held by this instance.
    pub arms_in_memory: usize,
    /// Events folded (or skipped past) and not yet published.
    pub unflushed_events: u64,
    /// Sequence fences (partition, source partition) held.
    pub fences: usize,
}

#[derive(Debug, Default)]
pub struct Metrics {
    events_folded: AtomicU64,
    events_skipped: AtomicU64,
    events_duplicate: AtomicU64,
    events_rejected: AtomicU64,
    events_dead_lettered: AtomicU64,
    flushes_ok: AtomicU64,
    flushes_failed: AtomicU64,
    flushes_stale: AtomicU64,
    partition_resets: AtomicU64,
    waits_short: AtomicU64,
    arms_published: AtomicU64,
    dirty_arms: AtomicU64,
    arms_in_memory: AtomicU64,
    unflushed_events: AtomicU64,
    fences: AtomicU64,
    paused: AtomicU64,
    last_flush_unix_ms: AtomicU64,
    /// Cumulative: a flush counts in every bucket whose bound it is under.
    flush_buckets: [AtomicU64; FLUSH_BUCKETS.len()],
    flush_count: AtomicU64,
    flush_sum_micros: AtomicU64,
    lag: Mutex<BTreeMap<i32, i64>>,
}

fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

fn set(gauge: &AtomicU64, value: u64) {
    gauge.store(value, Ordering::Relaxed);
}

fn get(metric: &AtomicU64) -> u64 {
    metric.load(Ordering::Relaxed)
}

fn saturating(value: impl TryInto<u64>) -> u64 {
    value.try_into().unwrap_or(u64::MAX)
}

impl Metrics {
    pub fn event_folded(&self) {
        add(&self.events_folded, 1);
    }

    pub fn event_skipped(&self) {
        add(&self.events_skipped, 1);
    }

    /// An example the join emitted again, dropped by the sequence fence.
    pub fn event_duplicate(&self) {
        add(&self.events_duplicate, 1);
    }

    pub fn event_rejected(&self) {
        add(&self.events_rejected, 1);
    }

    pub fn event_dead_lettered(&self) {
        add(&self.events_dead_lettered, 1);
    }

    pub fn partition_reset(&self) {
        add(&self.partition_resets, 1);
    }

    /// A LOAD that fewer than min_replicas_ack replicas acknowledged in
    /// time, or whose WAIT failed.
    pub fn wait_short(&self) {
        add(&self.waits_short, 1);
    }

    pub fn flush_failed(&self) {
        add(&self.flushes_failed, 1);
    }

    pub fn flush_stale(&self) {
        add(&self.flushes_stale, 1);
    }

    /// One successful flush: its duration, the arms it wrote, and when.
    pub fn flushed(&self, duration: Duration, arms: usize) {
        let seconds = duration.as_secs_f64();
        for (bucket, bound) in self.flush_buckets.iter().zip(FLUSH_BUCKETS) {
            if seconds <= bound {
                add(bucket, 1);
            }
        }
        add(&self.flush_count, 1);
        add(&self.flush_sum_micros, saturating(duration.as_micros()));
        add(&self.flushes_ok, 1);
        add(&self.arms_published, saturating(arms));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        set(&self.last_flush_unix_ms, saturating(now.as_millis()));
    }

    pub fn set_paused(&self, paused: bool) {
        set(&self.paused, u64::from(paused));
    }

    pub fn set_engine(&self, gauges: EngineGauges) {
        set(&self.dirty_arms, saturating(gauges.dirty_arms));
        set(&self.arms_in_memory, saturating(gauges.arms_in_memory));
        set(&self.unflushed_events, gauges.unflushed_events);
        set(&self.fences, saturating(gauges.fences));
    }

    /// Replaces the consumer lag per partition (from librdkafka statistics).
    pub fn set_lag(&self, lag: BTreeMap<i32, i64>) {
        *self.lag.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = lag;
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        let counters = [
            ("bandit_sink_events_folded_total", "Events folded into arms.", &self.events_folded),
            ("bandit_sink_events_skipped_total", "Redelivered events the model already holds.", &self.events_skipped),
            (
                "bandit_sink_events_duplicate_total",
                "Examples the join emitted again (source seq at or below the fence), not folded.",
                &self.events_duplicate,
            ),
            ("bandit_sink_events_rejected_total", "Invalid events.", &self.events_rejected),
            ("bandit_sink_events_dead_lettered_total", "Invalid events sent to the dead-letter topic.", &self.events_dead_lettered),
            ("bandit_sink_arms_published_total", "Arms written by BANDIT.LOAD.", &self.arms_published),
            (
                "bandit_sink_partition_resets_total",
                "Partitions reset to the model because another writer moved it (restore check or STALE).",
                &self.partition_resets,
            ),
            (
                "bandit_sink_wait_short_total",
                "LOADs fewer than min_replicas_ack replicas acknowledged within wait_timeout_ms, or whose WAIT failed.",
                &self.waits_short,
            ),
        ];
        for (name, help, value) in counters {
            out.family(name, "counter", help);
            out.sample(name, "", get(value));
        }

        let name = "bandit_sink_flushes_total";
        out.family(name, "counter", "Flushes by result.");
        for (result, value) in [("ok", &self.flushes_ok), ("error", &self.flushes_failed), ("stale", &self.flushes_stale)] {
            out.sample(name, &format!("result=\"{result}\""), get(value));
        }

        let name = "bandit_sink_flush_duration_seconds";
        out.family(name, "histogram", "Inversion plus BANDIT.LOAD.");
        let bucket = format!("{name}_bucket");
        for (value, bound) in self.flush_buckets.iter().zip(FLUSH_BUCKETS) {
            out.sample(&bucket, &format!("le=\"{bound}\""), get(value));
        }
        let count = get(&self.flush_count);
        out.sample(&bucket, "le=\"+Inf\"", count);
        out.sample(&format!("{name}_sum"), "", get(&self.flush_sum_micros) as f64 / 1e6);
        out.sample(&format!("{name}_count"), "", count);

        let gauges = [
            ("bandit_sink_dirty_arms", "Arms changed since the last flush.", &self.dirty_arms),
            ("bandit_sink_arms_in_memory", "Arms held by this instance.", &self.arms_in_memory),
            ("bandit_sink_unflushed_events", "Events folded but not yet published.", &self.unflushed_events),
            ("bandit_sink_fences", "Sequence fences (partition, source partition) held for the partitions assigned.", &self.fences),
            ("bandit_sink_paused", "1 while consumption is paused (Redis unavailable).", &self.paused),
        ];
        for (name, help, value) in gauges {
            out.family(name, "gauge", help);
            out.sample(name, "", get(value));
        }
        let name = "bandit_sink_last_flush_timestamp_seconds";
        out.family(name, "gauge", "Unix time of the last successful flush.");
        out.sample(name, "", get(&self.last_flush_unix_ms) as f64 / 1000.0);

        let name = "bandit_sink_consumer_lag";
        out.family(name, "gauge", "Messages behind the partition end.");
        for (partition, value) in self.lag.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            out.sample(name, &format!("partition=\"{partition}\""), value);
        }
        out.0
    }
}

/// Anything served as Prometheus text on /metrics: the sink's metrics, and
/// the joiner's (`crate::join::metrics`), through the same endpoint.
pub trait Render: std::fmt::Debug + Send + Sync + 'static {
    fn render(&self) -> String;
}

impl Render for Metrics {
    fn render(&self) -> String {
        Metrics::render(self)
    }
}

/// The text format's two kinds of line.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    /// The text written so far.
    pub fn finish(self) -> String {
        self.0
    }

    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// `labels`: `key="value"` pairs, comma-separated, or empty.
    pub fn sample(&mut self, name: &str, labels: &str, value: impl Display) {
        let _ = if labels.is_empty() {
            writeln!(self.0, "{name} {value}")
        } else {
            writeln!(self.0, "{name}{{{labels}}} {value}")
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of one metric family, HELP and TYPE included.
    fn family(text: &str, name: &str) -> Vec<String> {
        let names = [name.to_owned(), format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count")];
        text.lines()
            .filter(|line| {
                let rest = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")).unwrap_or(line);
                rest.split([' ', '{']).next().is_some_and(|n| names.iter().any(|m| m == n))
            })
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn renders_a_counter() {
        let metrics = Metrics::default();
        metrics.event_folded();
        metrics.event_folded();
        assert_eq!(
            family(&metrics.render(), "bandit_sink_events_folded_total"),
            [
                "# HELP bandit_sink_events_folded_total Events folded into arms.",
                "# TYPE bandit_sink_events_folded_total counter",
                "bandit_sink_events_folded_total 2",
            ]
        );
    }

    #[test]
    fn renders_duplicates() {
        let metrics = Metrics::default();
        metrics.event_duplicate();
        metrics.event_skipped();
        metrics.event_duplicate();
        let text = metrics.render();
        assert_eq!(
            family(&text, "bandit_sink_events_duplicate_total"),
            [
                "# HELP bandit_sink_events_duplicate_total Examples the join emitted again (source seq at or below the fence), not folded.",
                "# TYPE bandit_sink_events_duplicate_total counter",
                "bandit_sink_events_duplicate_total 2",
            ]
        );
        assert!(text.contains("\nbandit_sink_events_skipped_total 1\n"), "{text}");
    }

    #[test]
    fn renders_short_waits() {
        let metrics = Metrics::default();
        assert!(metrics.render().contains("\nbandit_sink_wait_short_total 0\n"));
        metrics.wait_short();
        assert_eq!(
            family(&metrics.render(), "bandit_sink_wait_short_total"),
            [
                "# HELP bandit_sink_wait_short_total LOADs fewer than min_replicas_ack replicas acknowledged within wait_timeout_ms, or whose WAIT failed.",
                "# TYPE bandit_sink_wait_short_total counter",
                "bandit_sink_wait_short_total 1",
            ]
        );
    }

    #[test]
    fn renders_the_engine_gauges_and_paused() {
        let metrics = Metrics::default();
        metrics.set_engine(EngineGauges { dirty_arms: 3, arms_in_memory: 7, unflushed_events: 11, fences: 5 });
        metrics.set_paused(true);
        let text = metrics.render();
        assert_eq!(
            family(&text, "bandit_sink_dirty_arms"),
            ["# HELP bandit_sink_dirty_arms Arms changed since the last flush.", "# TYPE bandit_sink_dirty_arms gauge", "bandit_sink_dirty_arms 3"]
        );
        assert!(text.contains("\nbandit_sink_arms_in_memory 7\n"), "{text}");
        assert!(text.contains("\nbandit_sink_unflushed_events 11\n"), "{text}");
        assert!(text.contains("\nbandit_sink_fences 5\n"), "{text}");
        assert!(text.contains("\nbandit_sink_paused 1\n"), "{text}");
        metrics.set_paused(false);
        assert!(metrics.render().contains("\nbandit_sink_paused 0\n"));
    }

    #[test]
    fn renders_flushes_by_result() {
        let metrics = Metrics::default();
        metrics.flushed(Duration::from_millis(1), 2);
        metrics.flush_stale();
        metrics.flush_stale();
        metrics.flush_failed();
        let text = metrics.render();
        assert_eq!(
            family(&text, "bandit_sink_flushes_total"),
            [
                "# HELP bandit_sink_flushes_total Flushes by result.",
                "# TYPE bandit_sink_flushes_total counter",
                "bandit_sink_flushes_total{result=\"ok\"} 1",
                "bandit_sink_flushes_total{result=\"error\"} 1",
                "bandit_sink_flushes_total{result=\"stale\"} 2",
            ]
        );
        assert!(text.contains("\nbandit_sink_arms_published_total 2\n"), "{text}");
    }

    #[test]
    fn renders_the_flush_histogram() {
        let metrics = Metrics::default();
        metrics.flushed(Duration::from_millis(20), 3);
        metrics.flushed(Duration::from_millis(300), 1);
        metrics.flushed(Duration::from_secs(60), 1);
        let lines = family(&metrics.render(), "bandit_sink_flush_duration_seconds");
        let bucket = |le: &str, n: u64| format!("bandit_sink_flush_duration_seconds_bucket{{le=\"{le}\"}} {n}");
        let mut expected = vec![
            "# HELP bandit_sink_flush_duration_seconds Inversion plus BANDIT.LOAD.".to_owned(),
            "# TYPE bandit_sink_flush_duration_seconds histogram".to_owned(),
        ];
        for (le, n) in [("0.001", 0), ("0.005", 0), ("0.01", 0), ("0.025", 1), ("0.05", 1), ("0.1", 1), ("0.25", 1)] {
            expected.push(bucket(le, n));
        }
        for (le, n) in [("0.5", 2), ("1", 2), ("2.5", 2), ("5", 2), ("10", 2), ("+Inf", 3)] {
            expected.push(bucket(le, n));
        }
        expected.push("bandit_sink_flush_duration_seconds_sum 60.32".to_owned());
        expected.push("bandit_sink_flush_duration_seconds_count 3".to_owned());
        assert_eq!(lines, expected);
    }

    #[test]
    fn renders_lag_per_partition() {
        let metrics = Metrics::default();
        assert!(metrics.render().ends_with("# TYPE bandit_sink_consumer_lag gauge\n"), "no partition, no sample");
        metrics.set_lag(BTreeMap::from([(0, 5), (3, 0)]));
        assert!(metrics
            .render()
            .ends_with("# TYPE bandit_sink_consumer_lag gauge\nbandit_sink_consumer_lag{partition=\"0\"} 5\nbandit_sink_consumer_lag{partition=\"3\"} 0\n"));
    }
}
