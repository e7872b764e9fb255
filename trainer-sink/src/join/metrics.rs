//! The joiner's metrics, in the sink's style: atomics, one writer per
//! metric, rendered as Prometheus text by the sink's [`Exposition`] and
//! served by the sink's endpoint (`crate::http`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::{Exposition, Render};

/// Upper bounds of the join-latency histogram, in seconds: from the
/// shortest reward wait (5 s) to the longest (2 days), with room for lag.
const LATENCY_BUCKETS: [f64; 12] = [1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 21_600.0, 86_400.0, 172_800.0];

#[derive(Debug, Default)]
pub struct JoinMetrics {
    decisions_read: AtomicU64,
    decisions_joined: AtomicU64,
    decisions_rewarded: AtomicU64,
    decisions_invalid: AtomicU64,
    rewards_read: AtomicU64,
    rewards_late: AtomicU64,
    rewards_unknown: AtomicU64,
    rewards_invalid: AtomicU64,
    examples_emitted: AtomicU64,
    dead_lettered: AtomicU64,
    commits: AtomicU64,
    decisions_pending: AtomicU64,
    rewards_held: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
}

fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

fn get(metric: &AtomicU64) -> u64 {
    metric.load(Ordering::Relaxed)
}

impl JoinMetrics {
    pub fn decision_read(&self) {
        add(&self.decisions_read, 1);
    }

    pub fn decision_invalid(&self) {
        add(&self.decisions_invalid, 1);
    }

    pub fn reward_read(&self) {
        add(&self.rewards_read, 1);
    }

    pub fn reward_late(&self) {
        add(&self.rewards_late, 1);
    }

    pub fn reward_unknown(&self) {
        add(&self.rewards_unknown, 1);
    }

    pub fn reward_invalid(&self) {
        add(&self.rewards_invalid, 1);
    }

    pub fn dead_lettered(&self) {
        add(&self.dead_lettered, 1);
    }

    pub fn committed(&self) {
        add(&self.commits, 1);
    }

    /// A closed decision: whether any item got a reward, how many examples it
    /// emitted, and how long after the decision it closed (wall clock).
    pub fn joined(&self, rewarded: bool, examples: usize, latency_ms: i64) {
        add(&self.decisions_joined, 1);
        add(&self.decisions_rewarded, u64::from(rewarded));
        add(&self.examples_emitted, u64::try_from(examples).unwrap_or(u64::MAX));
        let latency_ms = u64::try_from(latency_ms).unwrap_or(0);
        let seconds = latency_ms as f64 / 1000.0;
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                add(bucket, 1);
            }
        }
        add(&self.latency_count, 1);
        add(&self.latency_sum_ms, latency_ms);
    }

    /// Open decisions and held rewards over every partition pair.
    pub fn set_pending(&self, decisions: usize, rewards: usize) {
        self.decisions_pending.store(u64::try_from(decisions).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.rewards_held.store(u64::try_from(rewards).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        let counters = [
            ("bandit_join_decisions_read_total", "Decision records read (replays after a restart included).", &self.decisions_read),
            ("bandit_join_decisions_joined_total", "Decisions closed: their wait is over and their examples emitted.", &self.decisions_joined),
            ("bandit_join_decisions_rewarded_total", "Closed decisions with at least one reward.", &self.decisions_rewarded),
            ("bandit_join_decisions_invalid_total", "Decisions that did not decode or validate (dead-lettered).", &self.decisions_invalid),
            ("bandit_join_rewards_read_total", "Reward records read (replays after a restart included).", &self.rewards_read),
            ("bandit_join_rewards_late_total", "Rewards after their decision's wait: counted and logged, not trained on.", &self.rewards_late),
            ("bandit_join_rewards_unknown_total", "Rewards for no decision, or for an item it did not show (dead-lettered).", &self.rewards_unknown),
            ("bandit_join_rewards_invalid_total", "Rewards that did not decode (dead-lettered).", &self.rewards_invalid),
            ("bandit_join_examples_emitted_total", "Feedback events produced (re-emissions after a restart included; the trainer folds each once).", &self.examples_emitted),
            ("bandit_join_dead_lettered_total", "Records sent to the dead-letter topic.", &self.dead_lettered),
            ("bandit_join_commits_total", "Checkpoints committed after every example before them was acknowledged.", &self.commits),
        ];
        for (name, help, value) in counters {
            out.family(name, "counter", help);
            out.sample(name, "", get(value));
        }
        let gauges = [
            ("bandit_join_decisions_pending", "Decisions waiting for rewards.", &self.decisions_pending),
            ("bandit_join_rewards_held", "Rewards read before their decision.", &self.rewards_held),
        ];
        for (name, help, value) in gauges {
            out.family(name, "gauge", help);
            out.sample(name, "", get(value));
        }
        let name = "bandit_join_rewarded_ratio";
        out.family(name, "gauge", "Share of closed decisions with a reward (rewarded / joined).");
        let joined = get(&self.decisions_joined);
        let ratio = if joined == 0 { 0.0 } else { get(&self.decisions_rewarded) as f64 / joined as f64 };
        out.sample(name, "", ratio);

        let name = "bandit_join_latency_seconds";
        out.family(name, "histogram", "Wall-clock time from a decision's timestamp to its close.");
        let bucket = format!("{name}_bucket");
        for (value, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            out.sample(&bucket, &format!("le=\"{bound}\""), get(value));
        }
        let count = get(&self.latency_count);
        out.sample(&bucket, "le=\"+Inf\"", count);
        out.sample(&format!("{name}_sum"), "", get(&self.latency_sum_ms) as f64 / 1000.0);
        out.sample(&format!("{name}_count"), "", count);
        out.finish()
    }
}

impl Render for JoinMetrics {
    fn render(&self) -> String {
        JoinMetrics::render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_ratio_and_latency() {
        let metrics = JoinMetrics::default();
        metrics.joined(true, 3, 7_000);
        metrics.joined(false, 2, 700_000);
        metrics.reward_late();
        metrics.set_pending(5, 1);
        let text = metrics.render();
        for line in [
            "\nbandit_join_decisions_joined_total 2\n",
            "\nbandit_join_decisions_rewarded_total 1\n",
            "\nbandit_join_examples_emitted_total 5\n",
            "\nbandit_join_rewards_late_total 1\n",
            "\nbandit_join_decisions_pending 5\n",
            "\nbandit_join_rewarded_ratio 0.5\n",
            "\nbandit_join_latency_seconds_bucket{le=\"5\"} 0\n",
            "\nbandit_join_latency_seconds_bucket{le=\"10\"} 1\n",
            "\nbandit_join_latency_seconds_bucket{le=\"1800\"} 2\n",
            "\nbandit_join_latency_seconds_sum 707\n",
            "\nbandit_join_latency_seconds_count 2\n",
        ] {
            assert!(text.contains(line), "{line:?} missing:\n{text}");
        }
    }
}
