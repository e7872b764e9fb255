//! The learning loop of the simulated shop: a visitor arrives, the
//! recommender ranks five products for the visit's context, the visitor
//! reacts per the hidden click model, and the outcome goes back as feedback.
//! Beside the recommender, a uniform-random policy and the oracle that knows
//! the click model are scored on the very same visits, so the CTR curves can
//! be compared window by window.

use std::fmt::Write as _;

use bandit_core::cholesky::Workspace;
use bandit_core::event::FeedbackEvent;
use bandit_core::fold::ArmAccumulator;
use bandit_core::{Limits, Model, ModelSettings, Payload, RankRequest, RankScratch};

use crate::error::{ClientError, Result};
use crate::rng::Rng;
use crate::shop::{click_probability, react, Catalogue, Product, Visit, DIM};

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
}

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
    for step in 0..config.steps {
        let visit = Visit::random(&mut visits);
        let context = visit.context();

        let ids = recommender.recommend(&context, config.top_k)?;
        let shown: Vec<&Product> = ids
            .iter()
            .map(|id| by_id.get(id.as_str()).copied().ok_or_else(|| ClientError::Simulation(format!("unknown product id {id}"))))
            .collect::<Result<_>>()?;
        let clicked = react(&mut linucb_clicks, &visit, &shown);
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
        };
        for (i, (product, reward)) in rewarded.into_iter().enumerate() {
            recommender.feedback(FeedbackEvent {
                event_id: format!("sim-{}-{step}-{i}", config.seed),
                product_id: product.id.clone(),
                reward,
                context_vector: context.to_vec(),
                timestamp: step as i64,
            })?;
        }

        let random = random_list(&mut random_picks, catalogue, config.top_k);
        let oracle = oracle_list(&visit, catalogue, config.top_k);
        let outcomes = [
            clicked.is_some(),
            react(&mut random_clicks, &visit, &random).is_some(),
            react(&mut oracle_clicks, &visit, &oracle).is_some(),
        ];
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
    Ok(Report { steps: config.steps, windows, ctr_linucb: rate(totals[0]), ctr_random: rate(totals[1]), ctr_oracle: rate(totals[2]) })
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

/// The `k` products most likely to be clicked, by the hidden model.
fn oracle_list<'c>(visit: &Visit, catalogue: &'c Catalogue, k: usize) -> Vec<&'c Product> {
    let mut scored: Vec<(f64, &Product)> = catalogue.products.iter().map(|p| (click_probability(visit, p), p)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    scored.into_iter().take(k).map(|(_, p)| p).collect()
}

impl Report {
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

/// LinUCB in process, publishing its accumulated arms every `publish_every`
/// feedbacks, as the sink does on its flush interval. For tests and
/// offline what-ifs; the live stack does the same through Redis and Kafka.
#[derive(Debug)]
pub struct LocalLinUcb {
    model: Model,
    ids: Vec<String>,
    arms: std::collections::BTreeMap<String, ArmAccumulator>,
    dirty: std::collections::BTreeSet<String>,
    publish_every: usize,
    pending: usize,
    scratch: RankScratch,
    work: Workspace,
}

impl LocalLinUcb {
    #[must_use]
    pub fn new(catalogue: &Catalogue, alpha: f64, lambda: f64, publish_every: usize) -> Self {
        Self {
            model: Model::new(ModelSettings { dim: DIM, alpha, lambda, decay: 1.0 }),
            ids: catalogue.ids(),
            arms: std::collections::BTreeMap::new(),
            dirty: std::collections::BTreeSet::new(),
            publish_every: publish_every.max(1),
            pending: 0,
            scratch: RankScratch::default(),
            work: Workspace::default(),
        }
    }

    fn publish(&mut self) -> Result<()> {
        let lambda = self.model.settings().lambda;
        let mut arms = Vec::new();
        for id in std::mem::take(&mut self.dirty) {
            let arm = self.arms.entry(id.clone()).or_insert_with(|| ArmAccumulator::new(DIM, lambda));
            arms.push(arm.to_payload(&id, &mut self.work, None)?);
        }
        self.model.apply(&Payload { dim: DIM, arms, offsets: vec![], settings: None }, 0, &Limits::default())?;
        self.pending = 0;
        Ok(())
    }
}

impl Recommender for LocalLinUcb {
    fn recommend(&mut self, context: &[f64], k: usize) -> Result<Vec<String>> {
        let alpha = self.model.settings().alpha;
        let request = RankRequest { context, alpha, top: Some(k) };
        let ranked = self.model.rank_candidates(&request, &self.ids, &mut self.scratch)?;
        Ok(ranked.iter().filter_map(|r| self.ids.get(r.index as usize).cloned()).collect())
    }

    fn feedback(&mut self, event: FeedbackEvent) -> Result<()> {
        let lambda = self.model.settings().lambda;
        self.arms
            .entry(event.product_id.clone())
            .or_insert_with(|| ArmAccumulator::new(DIM, lambda))
            .update(&event.context_vector, event.reward);
        self.dirty.insert(event.product_id);
        self.pending += 1;
        if self.pending >= self.publish_every {
            self.publish()?;
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
        let config = SimulationConfig { steps: 4000, seed: 42, top_k: 5, window: 500, feedback: FeedbackMode::Cascade };
        let mut local = LocalLinUcb::new(&catalogue, 0.3, 1.0, 50);
        let report = run(&config, &catalogue, &mut local, |_, _| {}).unwrap();
        println!("{}", report.table());
        let tail = &report.windows[report.windows.len() - 3..];
        let mean = |pick: fn(&Window) -> f64| tail.iter().map(pick).sum::<f64>() / 3.0;
        assert!(mean(|w| w.linucb) > mean(|w| w.random) + 0.07, "LinUCB should beat random clearly by the end:\n{}", report.table());
        assert!(report.ctr_oracle > report.ctr_random);
        assert!(report.summary().starts_with("summary: steps=4000 ctr_linucb="));
        assert!(report.svg().contains("<polyline"));
        // Deterministic for a seed.
        let mut again = LocalLinUcb::new(&catalogue, 0.3, 1.0, 50);
        assert_eq!(run(&config, &catalogue, &mut again, |_, _| {}).unwrap(), report);
    }
}
