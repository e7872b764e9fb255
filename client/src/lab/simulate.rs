//! The learning loop of the simulated shop: a visitor arrives, the
//! recommender ranks five products for the visit's context, the visitor
//! reacts per the hidden click model, and the outcome goes back as feedback.
//! Beside the recommender, a uniform-random policy and the oracle that knows
//! the click model are scored on the very same visits, so the CTR curves can
//! be compared window by window.
//!
//! Tastes can drift mid-run ([`SimulationConfig::drift_at`]): from that visit
//! on, the click model is [`Tastes::Drifted`] for every policy (the
//! oracle knows it at once), and [`Report::recovery`] says how many visits
//! the recommender needed to catch up.

use std::fmt::Write as _;

use bandit_core::event::FeedbackEvent;
use bandit_core::policy::{self, Policy};
use bandit_core::ModelSettings;

use crate::error::{ClientError, Result};
use crate::lab::local::LocalModel;
use crate::lab::ope::candidates::{Choice, Decider};
use crate::lab::rng::Rng;
use crate::lab::shop::{Catalogue, Product, Tastes, Visit, DIM};

/// Something that recommends and learns: the live stack, or an in-process model.
pub trait Recommender {
    /// The ids of up to `k` products for this context, best first.
    ///
    /// # Errors
    /// When the recommender cannot answer (server down, …).
    fn recommend(&mut self, context: &[f64], k: usize) -> Result<Vec<String>>;
    /// Reports what happened.
    ///
    /// # Errors
    /// When the feedback cannot be delivered.
    fn feedback(&mut self, event: FeedbackEvent) -> Result<()>;
    /// Reports a reward for a product of the last recommendation, without a
    /// context ([`FeedbackMode::Rewards`]: the learning loop, where a join
    /// pairs it with the logged decision).
    ///
    /// # Errors
    /// When it cannot be delivered; a recommender that learns from feedback
    /// events only refuses.
    fn reward(&mut self, product_id: &str, reward: f64) -> Result<()> {
        let _ = (product_id, reward);
        Err(ClientError::Simulation("this recommender learns from feedback events, not from rewards of logged decisions".into()))
    }
}

/// Which outcomes of a visit become feedback events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackMode {
    /// Every product the visitor read: 0 for each one passed over, 1 for the
    /// click (the cascade model of reading a list top-down). Products below
    /// the click were not read and say nothing.
    Cascade,
    /// The reference design's: 1 for the clicked product, otherwise 0 for the
    /// first product; one event per visit.
    Reference,
    /// Every product shown: 1 for the click, 0 for all others, also those
    /// below the click (what the join emits with `impressions = all` and a
    /// default reward of 0; [`FeedbackMode::Cascade`] is `impressions = cascade`).
    All,
    /// The learning loop: only the click, as a reward of 1 for the product
    /// through [`Recommender::reward`], never a context; the join labels the
    /// rest with the default reward.
    Rewards,
}

/// How to run a simulation.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    pub steps: usize,
    pub seed: u64,
    /// Recommendations per visit.
    pub top_k: usize,
    /// Visits per CTR window.
    pub window: usize,
    pub feedback: FeedbackMode,
    /// The visit (0-based) from which tastes have drifted; None: never.
    pub drift_at: Option<usize>,
}

/// CTR of the three policies over one window of visits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub first_step: usize,
    pub steps: usize,
    pub linucb: f64,
    pub random: f64,
    pub oracle: f64,
}

/// The outcome of a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub steps: usize,
    pub windows: Vec<Window>,
    pub ctr_linucb: f64,
    pub ctr_random: f64,
    pub ctr_oracle: f64,
    /// Copied from the configuration.
    pub drift_at: Option<usize>,
    /// Per visit: whether the recommender's list was clicked.
    pub linucb_hits: Vec<bool>,
    /// Per visit: whether the oracle's list was clicked.
    pub oracle_hits: Vec<bool>,
}

/// Share of the oracle's CTR that counts as recovered after a drift.
pub const RECOVERED_SHARE: f64 = 0.9;

/// Runs the loop; `progress` is called after every step with (step, running CTR).
///
/// # Errors
/// The recommender's errors, or an id it returned that the catalogue lacks.
pub fn run(
    config: &SimulationConfig,
    catalogue: &Catalogue,
    recommender: &mut dyn Recommender,
    mut progress: impl FnMut(usize, f64),
) -> Result<Report> {
    let by_id: std::collections::HashMap<&str, &Product> = catalogue.products.iter().map(|p| (p.id.as_str(), p)).collect();
    // Separate streams, so each policy's luck does not depend on the others.
    let mut visits = Rng::new(config.seed);
    let mut linucb_clicks = Rng::new(config.seed.wrapping_add(1));
    let mut random_picks = Rng::new(config.seed.wrapping_add(2));
    let mut random_clicks = Rng::new(config.seed.wrapping_add(3));
    let mut oracle_clicks = Rng::new(config.seed.wrapping_add(4));
    let window = config.window.max(1);
    let mut windows = Vec::new();
    let mut current = [0usize; 3];
    let mut totals = [0usize; 3];
    let (mut linucb_hits, mut oracle_hits) = (Vec::with_capacity(config.steps), Vec::with_capacity(config.steps));
    for step in 0..config.steps {
        let tastes = if config.drift_at.is_some_and(|at| step >= at) { Tastes::Drifted } else { Tastes::Usual };
        let visit = Visit::random(&mut visits);
        let context = visit.context();

        let ids = recommender.recommend(&context, config.top_k)?;
        let shown: Vec<&Product> = ids
            .iter()
            .map(|id| by_id.get(id.as_str()).copied().ok_or_else(|| ClientError::Simulation(format!("unknown product id {id}"))))
            .collect::<Result<_>>()?;
        let clicked = tastes.react(&mut linucb_clicks, &visit, &shown);
        let rewarded: Vec<(&Product, f64)> = match (config.feedback, clicked) {
            (FeedbackMode::Cascade, Some(position)) => shown
                .iter()
                .take(position + 1)
                .enumerate()
                .map(|(i, p)| (*p, if i == position { 1.0 } else { 0.0 }))
                .collect(),
            (FeedbackMode::Cascade, None) => shown.iter().map(|p| (*p, 0.0)).collect(),
            (FeedbackMode::Reference, Some(position)) => shown.get(position).map(|p| (*p, 1.0)).into_iter().collect(),
            (FeedbackMode::Reference, None) => shown.first().map(|p| (*p, 0.0)).into_iter().collect(),
            (FeedbackMode::All, _) => shown.iter().enumerate().map(|(i, p)| (*p, if clicked == Some(i) { 1.0 } else { 0.0 })).collect(),
            (FeedbackMode::Rewards, _) => {
                if let Some(product) = clicked.and_then(|position| shown.get(position)) {
                    recommender.reward(&product.id, 1.0)?;
                }
                Vec::new()
            }
        };
        for (i, (product, reward)) in rewarded.into_iter().enumerate() {
            recommender.feedback(FeedbackEvent {
                event_id: format!("sim-{}-{step}-{i}", config.seed),
                product_id: product.id.clone(),
                reward,
                context_vector: context.to_vec(),
                timestamp: step as i64,
                ..Default::default()
            })?;
        }

        let random = random_list(&mut random_picks, catalogue, config.top_k);
        let oracle = oracle_list(tastes, &visit, catalogue, config.top_k);
        let outcomes = [
            clicked.is_some(),
            tastes.react(&mut random_clicks, &visit, &random).is_some(),
            tastes.react(&mut oracle_clicks, &visit, &oracle).is_some(),
        ];
        linucb_hits.push(outcomes[0]);
        oracle_hits.push(outcomes[2]);
        for ((hit, window_clicks), total_clicks) in outcomes.iter().zip(&mut current).zip(&mut totals) {
            if *hit {
                *window_clicks += 1;
                *total_clicks += 1;
            }
        }
        let done = step + 1;
        if done % window == 0 || done == config.steps {
            let steps = done - windows.len() * window;
            let rate = |clicks: usize| clicks as f64 / steps.max(1) as f64;
            windows.push(Window {
                first_step: windows.len() * window,
                steps,
                linucb: rate(current[0]),
                random: rate(current[1]),
                oracle: rate(current[2]),
            });
            current = [0; 3];
        }
        progress(done, totals[0] as f64 / done as f64);
    }
    let rate = |clicks: usize| clicks as f64 / config.steps.max(1) as f64;
    Ok(Report {
        steps: config.steps,
        windows,
        ctr_linucb: rate(totals[0]),
        ctr_random: rate(totals[1]),
        ctr_oracle: rate(totals[2]),
        drift_at: config.drift_at,
        linucb_hits,
        oracle_hits,
    })
}

/// `k` distinct products drawn uniformly.
fn random_list<'c>(rng: &mut Rng, catalogue: &'c Catalogue, k: usize) -> Vec<&'c Product> {
    let mut picked: Vec<&Product> = Vec::with_capacity(k);
    while picked.len() < k.min(catalogue.products.len()) {
        if let Some(product) = catalogue.products.get(rng.below(catalogue.products.len())) {
            if !picked.iter().any(|p| p.id == product.id) {
                picked.push(product);
            }
        }
    }
    picked
}

/// The `k` products most likely to be clicked, by the hidden model in force.
fn oracle_list<'c>(tastes: Tastes, visit: &Visit, catalogue: &'c Catalogue, k: usize) -> Vec<&'c Product> {
    let mut scored: Vec<(f64, &Product)> = catalogue.products.iter().map(|p| (tastes.click_probability(visit, p), p)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    scored.into_iter().take(k).map(|(_, p)| p).collect()
}

impl Report {
    /// Visits after the drift until the recommender has recovered: the
    /// smallest t ≥ `window` such that, over the `window` visits that end
    /// with the t-th visit after the drift (all of them after it), the
    /// recommender's clicks reach [`RECOVERED_SHARE`] (90%) of the oracle's
    /// on the same visits. None without a drift, or when that never happens
    /// before the run ends.
    #[must_use]
    pub fn recovery(&self, window: usize) -> Option<usize> {
        let window = window.max(1);
        let after = |hits: &[bool]| -> Vec<usize> {
            let tail = self.drift_at.and_then(|at| hits.get(at..)).unwrap_or_default();
            // Prefix sums: clicks[i] = clicks among the first i visits after the drift.
            std::iter::once(0).chain(tail.iter().scan(0, |sum, &hit| {
                *sum += usize::from(hit);
                Some(*sum)
            })).collect()
        };
        let (linucb, oracle) = (after(&self.linucb_hits), after(&self.oracle_hits));
        (window..linucb.len()).find(|&t| {
            let clicks = |sums: &[usize]| sums.get(t).zip(sums.get(t - window)).map_or(0, |(end, start)| end - start);
            clicks(&linucb) as f64 >= RECOVERED_SHARE * clicks(&oracle) as f64
        })
    }

    /// The CTR table, one row per window.
    #[must_use]
    pub fn table(&self) -> String {
        let mut out = String::from("  visits        LinUCB   random   oracle\n");
        for w in &self.windows {
            let _ = writeln!(out, "  {:>5}-{:<6} {:>7.3}  {:>7.3}  {:>7.3}", w.first_step + 1, w.first_step + w.steps, w.linucb, w.random, w.oracle);
        }
        let _ = writeln!(out, "  {:<12} {:>7.3}  {:>7.3}  {:>7.3}", "all", self.ctr_linucb, self.ctr_random, self.ctr_oracle);
        out
    }

    /// The machine-readable last line.
    #[must_use]
    pub fn summary(&self) -> String {
        format!(
            "summary: steps={} ctr_linucb={:.4} ctr_random={:.4} ctr_oracle={:.4}",
            self.steps, self.ctr_linucb, self.ctr_random, self.ctr_oracle
        )
    }

    /// The learning curve as a self-contained SVG.
    #[must_use]
    pub fn svg(&self) -> String {
        let (width, height, left, right, margin) = (760.0, 400.0, 50.0, 110.0, 50.0);
        let n = self.windows.len().max(2) as f64 - 1.0;
        let x = |i: usize| left + (width - left - right) * i as f64 / n;
        let y = |ctr: f64| height - margin - (height - 2.0 * margin) * ctr.clamp(0.0, 1.0);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{left}\" y=\"24\" font-size=\"15\">Click-through rate per window of visits ({} visits)</text>\n",
            self.steps
        );
        for tick in 0..=5 {
            let value = f64::from(tick) / 5.0;
            let (x_end, y0, label_y) = (width - right, y(value), y(value) + 4.0);
            let _ = writeln!(
                svg,
                "<line x1=\"{left}\" x2=\"{x_end}\" y1=\"{y0}\" y2=\"{y0}\" stroke=\"#ddd\"/><text x=\"12\" y=\"{label_y}\">{value:.1}</text>"
            );
        }
        // Window ends along the x axis, at most about ten labels.
        let every = self.windows.len().div_ceil(10).max(1);
        for (i, w) in self.windows.iter().enumerate().filter(|(i, _)| i % every == 0 || *i + 1 == self.windows.len()) {
            let _ = writeln!(svg, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>", x(i), height - margin + 16.0, w.first_step + w.steps);
        }
        let series: [Series; 3] =
            [("LinUCB", "#1f77b4", |w| w.linucb), ("random", "#999999", |w| w.random), ("oracle", "#2ca02c", |w| w.oracle)];
        // End labels, pushed apart so they never overlap.
        let mut labels: Vec<(f64, &str, &str)> =
            series.iter().map(|(label, color, pick)| (y(self.windows.last().map_or(0.0, pick)) + 4.0, *label, *color)).collect();
        labels.sort_by(|a, b| a.0.total_cmp(&b.0));
        for i in 1..labels.len() {
            let previous = labels.get(i - 1).map_or(0.0, |l| l.0);
            if let Some(label) = labels.get_mut(i) {
                label.0 = label.0.max(previous + 14.0);
            }
        }
        for (label, color, pick) in series {
            let points: Vec<String> = self.windows.iter().enumerate().map(|(i, w)| format!("{:.1},{:.1}", x(i), y(pick(w)))).collect();
            let _ = writeln!(svg, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>", points.join(" "));
            let label_y = labels.iter().find(|l| l.1 == label).map_or(0.0, |l| l.0);
            let _ = writeln!(svg, "<text x=\"{}\" y=\"{label_y:.1}\" fill=\"{color}\">{label}</text>", width - right + 8.0);
        }
        let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">visits</text>", (left + width - right) / 2.0, height - 12.0);
        svg.push_str("</svg>\n");
        svg
    }
}

/// One curve of the plot: label, colour, and the value it takes from a window.
type Series = (&'static str, &'static str, fn(&Window) -> f64);

/// LinUCB in process ([`LocalModel`]), publishing its changed arms every
/// `publish_every` feedback events, as the sink does on its flush interval.
/// For tests and offline what-ifs; the live stack does the same through
/// Redis and Kafka.
#[derive(Debug)]
pub struct LocalLinUcb {
    local: LocalModel,
    ids: Vec<String>,
    publish_every: usize,
    pending: usize,
    alpha: f64,
    policy: Policy,
    /// Recommendations made: the event id that seeds a randomised policy.
    decisions: u64,
    decider: Decider,
}

impl LocalLinUcb {
    /// # Errors
    /// [`ClientError::Core`] for settings the module would refuse.
    pub fn new(catalogue: &Catalogue, settings: LocalSettings) -> Result<Self> {
        let LocalSettings { alpha, lambda, decay, publish_every, policy } = settings;
        policy.validate()?;
        Ok(Self {
            local: LocalModel::new(ModelSettings { dim: DIM, alpha, lambda, decay })?,
            ids: catalogue.ids(),
            publish_every: publish_every.max(1),
            pending: 0,
            alpha,
            policy,
            decisions: 0,
            decider: Decider::default(),
        })
    }
}

/// How the in-process learner learns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalSettings {
    pub alpha: f64,
    pub lambda: f64,
    /// Forgetting γ in (0, 1]; 1: none.
    pub decay: f64,
    /// Feedback events between publishes.
    pub publish_every: usize,
    /// How the ranking explores (UCB: the plain ranking), each decision
    /// seeded as RANK … EVENTID seeds it, from its number and the model's version.
    pub policy: Policy,
}

impl LocalSettings {
    /// The module's defaults (α = 1, λ = 1), no forgetting, and a publish
    /// every 50 events (a sink flushing about 8 times a second at the
    /// simulator's default 400 visits/s with cascade feedback).
    pub const DEFAULT: Self = Self { alpha: 1.0, lambda: 1.0, decay: 1.0, publish_every: 50, policy: Policy::Ucb };
}

impl Recommender for LocalLinUcb {
    fn recommend(&mut self, context: &[f64], k: usize) -> Result<Vec<String>> {
        if self.policy == Policy::Ucb {
            let ranked = self.local.rank(context, &self.ids, k)?;
            return Ok(ranked.iter().filter_map(|r| self.ids.get(r.index as usize).cloned()).collect());
        }
        self.decisions += 1;
        let event_id = format!("local-{}", self.decisions);
        let mut rng = Rng::new(policy::seed(event_id.as_bytes(), self.local.model().version()));
        let choice = Choice { policy: self.policy, alpha: self.alpha, top: k, probabilities: false };
        self.decider.decide(self.local.model(), choice, context, &self.ids, &mut rng)?;
        Ok(self.decider.placed().iter().filter_map(|p| self.ids.get(p.index as usize).cloned()).collect())
    }

    fn feedback(&mut self, event: FeedbackEvent) -> Result<()> {
        self.local.fold(&event)?;
        self.pending += 1;
        if self.pending >= self.publish_every {
            self.local.publish()?;
            self.pending = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn linucb_learns_the_shop_in_process() {
        let catalogue = Catalogue::generate(42);
        let config = SimulationConfig { steps: 4000, seed: 42, top_k: 5, window: 500, feedback: FeedbackMode::Cascade, drift_at: None };
        let settings = LocalSettings { alpha: 0.3, ..LocalSettings::DEFAULT };
        let mut local = LocalLinUcb::new(&catalogue, settings).unwrap();
        let report = run(&config, &catalogue, &mut local, |_, _| {}).unwrap();
        println!("{}", report.table());
        let tail = &report.windows[report.windows.len() - 3..];
        let mean = |pick: fn(&Window) -> f64| tail.iter().map(pick).sum::<f64>() / 3.0;
        assert!(mean(|w| w.linucb) > mean(|w| w.random) + 0.07, "LinUCB should beat random clearly by the end:\n{}", report.table());
        assert!(report.ctr_oracle > report.ctr_random);
        assert!(report.summary().starts_with("summary: steps=4000 ctr_linucb="));
        assert!(report.svg().contains("<polyline"));
        // Deterministic for a seed.
        let mut again = LocalLinUcb::new(&catalogue, settings).unwrap();
        assert_eq!(run(&config, &catalogue, &mut again, |_, _| {}).unwrap(), report);
    }

    /// The recovery by hand: drift after visit 2, window 2. After the drift
    /// the oracle clicks every visit, LinUCB on visits 1, 3, 4, 5 after it:
    /// windows ending at t = 2 (1 of 2), t = 3 (1 of 2), t = 4 (2 of 2).
    #[test]
    fn recovery_by_hand() {
        let report = Report {
            steps: 7,
            windows: vec![],
            ctr_linucb: 0.0,
            ctr_random: 0.0,
            ctr_oracle: 0.0,
            drift_at: Some(2),
            linucb_hits: vec![true, true, true, false, true, true, true],
            oracle_hits: vec![true; 7],
        };
        assert_eq!(report.recovery(2), Some(4));
        assert_eq!(report.recovery(1), Some(1));
        assert_eq!(report.recovery(6), None, "a window longer than what follows the drift");
        assert_eq!(Report { drift_at: None, ..report }.recovery(2), None);
    }

    /// Forgetting recovers from a drift in fewer visits than no forgetting,
    /// on the same visits (seed 4: 531 against 1232 visits with a window of 500).
    #[test]
    fn forgetting_recovers_from_a_drift_faster() {
        let catalogue = Catalogue::generate(4);
        let config =
            SimulationConfig { steps: 8000, seed: 4, top_k: 5, window: 800, feedback: FeedbackMode::Cascade, drift_at: Some(3000) };
        let recovery = |decay: f64| {
            let mut learner = LocalLinUcb::new(&catalogue, LocalSettings { decay, ..LocalSettings::DEFAULT }).unwrap();
            run(&config, &catalogue, &mut learner, |_, _| {}).unwrap().recovery(500)
        };
        let (plain, forgetting) = (recovery(1.0), recovery(0.99));
        println!("recovery after the drift: γ = 1: {plain:?}, γ = 0.99: {forgetting:?}");
        let (plain, forgetting) = (plain.unwrap_or(usize::MAX), forgetting.unwrap());
        assert!(forgetting + 300 < plain, "γ = 0.99 took {forgetting} visits, γ = 1 {plain}");
    }
}
