//! The estimators of a candidate policy's expected reward per decision, all
//! streaming: each event adds one vector of terms, and every estimate and
//! its interval is a function of the sums of the terms and of their
//! products, so memory does not grow with the log.
//!
//! Per event i (top-1): logged action aᵢ with logged probability μᵢ,
//! reward rᵢ; the candidate's π(·|xᵢ); the cross-fitted reward model
//! q̂(xᵢ, ·). With wᵢ = π(aᵢ|xᵢ)/μᵢ, q̂πᵢ = Σₐ π(a|xᵢ) q̂(xᵢ, a) and
//! dᵢ = rᵢ − q̂(xᵢ, aᵢ):
//! - IPS = mean(w r); SNIPS = Σ w r / Σ w;
//! - DM = mean(q̂π); DR = mean(q̂π + w d); SNDR = mean(q̂π) + Σ w d / Σ w;
//! - Switch-DR = mean(q̂π + 1[w ≤ τ] w d) (Open Bandit Pipeline's form: the
//!   correction is dropped where the weight is above τ);
//! - Replay = the mean reward of the events where the candidate's own draw
//!   equals the logged action.
//!
//! Intervals (95 %, analytic normal, no bootstrap): estimate ± 1.96·se with
//! se² = Σ ψᵢ² / (n (n − 1)), ψᵢ the estimator's influence term: the
//! centred per-event term for IPS, DM, DR and Switch-DR; the delta method
//! for the ratios, ψ = w (r − SNIPS) / w̄ for SNIPS and
//! ψ = (q̂π − DM) + w (d − Σwd/Σw) / w̄ for SNDR; for Replay the sample
//! variance of the matched rewards over their count. DM's interval is the
//! spread of q̂π only: it ignores the reward model's own error, so it is too
//! narrow whenever the model is biased.
//!
//! Effective sample size: (Σ w)² / Σ w², the number of on-policy events the
//! weighted log is worth; for Replay the number of matches; for DM n.

/// z = [1, q̂π, w, w r, w d, 1[w ≤ τ] w d].
const TERMS: usize = 6;

/// The normal quantile of a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Switch-DR's default threshold on the importance weight.
pub const DEFAULT_TAU: f64 = 10.0;

/// The estimators, in the order they are reported.
pub const NAMES: [&str; 7] = ["Replay", "IPS", "SNIPS", "DM", "DR", "SNDR", "Switch-DR"];

/// One estimate with its 95 % interval and effective sample size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub name: &'static str,
    pub value: f64,
    pub low: f64,
    pub high: f64,
    pub ess: f64,
}

/// The running sums of one candidate.
#[derive(Debug, Clone)]
pub struct Accumulator {
    tau: f64,
    /// Σ zᵢ zᵢᵀ (row 0 is Σ z, as z₀ = 1).
    moments: [[f64; TERMS]; TERMS],
    sum_w_squared: f64,
    replay: Mean,
}

impl Accumulator {
    #[must_use]
    pub fn new(tau: f64) -> Self {
        Self { tau, moments: [[0.0; TERMS]; TERMS], sum_w_squared: 0.0, replay: Mean::default() }
    }

    /// Adds one event: the candidate's π over the actions, the logged action
    /// and its logged probability, the reward, the reward model's q̂ over
    /// the actions, and the action the candidate drew.
    pub fn add(&mut self, pi: &[f64], logged: usize, mu: f64, reward: f64, qhat: &[f64], drawn: usize) {
        let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(0.0);
        let w = at(pi, logged) / mu;
        let q_pi: f64 = pi.iter().zip(qhat).map(|(p, q)| p * q).sum();
        let d = reward - at(qhat, logged);
        let switched = if w <= self.tau { w * d } else { 0.0 };
        let z = [1.0, q_pi, w, w * reward, w * d, switched];
        for (row, &zi) in self.moments.iter_mut().zip(&z) {
            for (cell, &zj) in row.iter_mut().zip(&z) {
                *cell += zi * zj;
            }
        }
        self.sum_w_squared += w * w;
        if drawn == logged {
            self.replay.add(reward);
        }
    }

    /// Events added.
    #[must_use]
    pub fn count(&self) -> f64 {
        self.moments[0][0]
    }

    /// Σ ψ² for ψ = cᵀz.
    fn spread(&self, c: &[f64; TERMS]) -> f64 {
        let mut total = 0.0;
        for (row, ci) in self.moments.iter().zip(c) {
            for (cell, cj) in row.iter().zip(c) {
                total += ci * cell * cj;
            }
        }
        total.max(0.0)
    }

    fn estimate(&self, name: &'static str, value: f64, c: &[f64; TERMS], ess: f64) -> Estimate {
        let n = self.count();
        let se = if n > 1.0 { (self.spread(c) / (n * (n - 1.0))).sqrt() } else { f64::NAN };
        Estimate { name, value, low: value - Z95 * se, high: value + Z95 * se, ess }
    }

    /// Every estimator, in [`NAMES`] order; NaN where undefined (no event,
    /// no match, Σ w = 0).
    #[must_use]
    pub fn estimates(&self) -> [Estimate; 7] {
        let n = self.count();
        let sums = self.moments[0];
        let mean = |k: usize| sums.get(k).map_or(f64::NAN, |s| s / n);
        let (q, w_bar) = (mean(1), mean(2));
        let ess = if self.sum_w_squared > 0.0 { sums[2] * sums[2] / self.sum_w_squared } else { 0.0 };
        let ips = mean(3);
        let snips = sums[3] / sums[2];
        let dm = q;
        let dr = q + mean(4);
        let correction = sums[4] / sums[2];
        let sndr = q + correction;
        let switch = q + mean(5);
        [
            self.replay.estimate("Replay"),
            self.estimate("IPS", ips, &[-ips, 0.0, 0.0, 1.0, 0.0, 0.0], ess),
            self.estimate("SNIPS", snips, &[0.0, 0.0, -snips / w_bar, 1.0 / w_bar, 0.0, 0.0], ess),
            self.estimate("DM", dm, &[-dm, 1.0, 0.0, 0.0, 0.0, 0.0], n),
            self.estimate("DR", dr, &[-dr, 1.0, 0.0, 0.0, 1.0, 0.0], ess),
            self.estimate("SNDR", sndr, &[-q, 1.0, -correction / w_bar, 0.0, 1.0 / w_bar, 0.0], ess),
            self.estimate("Switch-DR", switch, &[-switch, 1.0, 0.0, 0.0, 0.0, 1.0], ess),
        ]
    }
}

/// The cascade estimator of a slate's reward (RIPS, McInerney et al. 2020):
/// mean over events of Σₖ Wₖ rₖ with Wₖ = Πⱼ≤ₖ π(sⱼ|s<ⱼ)/μ(sⱼ|s<ⱼ), the
/// product of the conditional weights of the logged items down to position
/// k. Unbiased when the reward at position k depends only on the items at
/// or above it, as the shop's cascade clicks do. Interval: normal over the
/// per-event terms; ESS from the weights of the whole slate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cascade {
    terms: Mean,
    sum_w: f64,
    sum_w_squared: f64,
}

impl Cascade {
    /// One logged slate: the candidate's conditional probabilities of the
    /// logged items, their logged probabilities, and their rewards, top first.
    pub fn add(&mut self, pi: &[f64], mu: &[f64], rewards: &[f64]) {
        let mut weight = 1.0;
        let mut term = 0.0;
        for ((p, m), r) in pi.iter().zip(mu).zip(rewards) {
            weight *= p / m;
            term += weight * r;
        }
        self.terms.add(term);
        self.sum_w += weight;
        self.sum_w_squared += weight * weight;
    }

    #[must_use]
    pub fn estimate(&self) -> Estimate {
        let ess = if self.sum_w_squared > 0.0 { self.sum_w * self.sum_w / self.sum_w_squared } else { 0.0 };
        Estimate { ess, ..self.terms.estimate("RIPS") }
    }
}

/// Position-wise IPS of a slate's reward (the independent IPS of Li et al.
/// 2018, Open Bandit Pipeline's `SlateIndependentIPS`): mean over events
/// of Σₖ rₖ πₖ(sₖ)/μₖ(sₖ), with πₖ and μₖ the *marginal* probabilities that
/// the candidate and the logger place the logged item sₖ at position k,
/// whatever is above it. Unbiased when the reward at position k depends
/// only on the item there (a position-based click model), with far smaller
/// weights than RIPS's products; biased under the shop's cascade, where an
/// item's click also depends on the items above it. Interval: normal over
/// the per-event terms; ESS: the smallest over positions of (Σ w)²/Σ w².
#[derive(Debug, Clone, Default)]
pub struct Independent {
    terms: Mean,
    /// Per position: Σ w and Σ w².
    weights: Vec<(f64, f64)>,
}

impl Independent {
    /// One logged slate: the candidate's marginal probabilities of the
    /// logged items at their positions, the logger's, and the rewards, top first.
    pub fn add(&mut self, pi: &[f64], mu: &[f64], rewards: &[f64]) {
        let mut term = 0.0;
        for (k, ((p, m), r)) in pi.iter().zip(mu).zip(rewards).enumerate() {
            let w = p / m;
            term += w * r;
            if self.weights.len() <= k {
                self.weights.resize(k + 1, (0.0, 0.0));
            }
            if let Some((sum, squares)) = self.weights.get_mut(k) {
                *sum += w;
                *squares += w * w;
            }
        }
        self.terms.add(term);
    }

    #[must_use]
    pub fn estimate(&self) -> Estimate {
        let ess = self
            .weights
            .iter()
            .map(|(sum, squares)| if *squares > 0.0 { sum * sum / squares } else { 0.0 })
            .fold(f64::INFINITY, f64::min);
        Estimate { ess: if ess.is_finite() { ess } else { 0.0 }, ..self.terms.estimate("PIPS") }
    }
}

/// A streaming mean with its normal interval: the logging policy's own
/// value (the mean logged reward) and Replay.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mean {
    count: f64,
    sum: f64,
    sum_squares: f64,
}

impl Mean {
    pub fn add(&mut self, value: f64) {
        self.count += 1.0;
        self.sum += value;
        self.sum_squares += value * value;
    }

    /// The mean ± 1.96 · sample sd / √count; ESS is the count.
    #[must_use]
    pub fn estimate(&self, name: &'static str) -> Estimate {
        let n = self.count;
        let value = self.sum / n;
        let variance = if n > 1.0 { ((self.sum_squares - n * value * value) / (n - 1.0)).max(0.0) } else { f64::NAN };
        let half = Z95 * (variance / n).sqrt();
        Estimate { name, value, low: value - half, high: value + half, ess: n }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
    }

    /// Four events over two actions; the candidate plays π = (0.8, 0.2)
    /// everywhere, the reward model says q̂ = (0.5, 0.25), τ = 3.
    ///
    /// | i | a | μ   | r | w = π(a)/μ | w r | d = r − q̂(a) | w d   |
    /// | 1 | 0 | 0.5 | 1 | 1.6        | 1.6 | 0.5          | 0.8   |
    /// | 2 | 1 | 0.5 | 0 | 0.4        | 0   | −0.25        | −0.1  |
    /// | 3 | 0 | 0.2 | 0 | 4          | 0   | −0.5         | −2    |
    /// | 4 | 1 | 0.8 | 1 | 0.25       | 0.25| 0.75         | 0.1875|
    ///
    /// Σw = 6.25, Σw² = 2.56 + 0.16 + 16 + 0.0625 = 18.7825,
    /// ESS = 39.0625 / 18.7825 = 2.07973...
    /// IPS = 1.85 / 4 = 0.4625; SNIPS = 1.85 / 6.25 = 0.296.
    /// q̂π = 0.8·0.5 + 0.2·0.25 = 0.45 every event, so DM = 0.45.
    /// Σ w d = −1.1125: DR = 0.45 − 0.278125 = 0.171875;
    /// SNDR = 0.45 − 1.1125/6.25 = 0.272; Switch-DR drops event 3 (w = 4 > 3):
    /// Σ = 0.8875, 0.45 + 0.221875 = 0.671875.
    /// IPS's interval: terms (1.6, 0, 0, 0.25) around 0.4625 have squared
    /// deviations 1.29390625 + 0.21390625·2 + 0.04515625 = 1.76687500;
    /// se = √(1.766875 / 12) = 0.383721..., half-width 1.96 · se.
    /// Replay: the candidate drew (0, 0, 1, 1): events 1 and 4 match, with
    /// rewards 1 and 1: 1 ± 0.
    #[test]
    fn estimates_equal_a_hand_computation() {
        let mut acc = Accumulator::new(3.0);
        let pi = [0.8, 0.2];
        let qhat = [0.5, 0.25];
        for (a, mu, r, drawn) in [(0, 0.5, 1.0, 0), (1, 0.5, 0.0, 0), (0, 0.2, 0.0, 1), (1, 0.8, 1.0, 1)] {
            acc.add(&pi, a, mu, r, &qhat, drawn);
        }
        let e = acc.estimates();
        let names: Vec<&str> = e.iter().map(|e| e.name).collect();
        assert_eq!(names, NAMES);
        close(e[1].value, 0.4625);
        close(e[1].ess, 39.0625 / 18.7825);
        close(e[1].high - e[1].value, Z95 * (1.766_875_f64 / 12.0).sqrt());
        close(e[2].value, 0.296);
        close(e[3].value, 0.45);
        close(e[3].high, 0.45);
        close(e[4].value, 0.171_875);
        close(e[5].value, 0.272);
        close(e[6].value, 0.671_875);
        close(e[0].value, 1.0);
        close(e[0].ess, 2.0);
        close(e[0].high, 1.0);
        // SNIPS by the delta method: ψ = w (r − 0.296) / w̄ with w̄ = 1.5625:
        // (1.6·0.704, −0.4·0.296, −4·0.296, 0.25·0.704) / 1.5625
        let psi: [f64; 4] = [1.1264 / 1.5625, -0.1184 / 1.5625, -1.184 / 1.5625, 0.176 / 1.5625];
        let spread: f64 = psi.iter().map(|p| p * p).sum();
        close(e[2].high - e[2].value, Z95 * (spread / 12.0).sqrt());
    }

    /// Two slates of two items. π (conditional) / μ (logged):
    /// slate 1: 0.5/0.25 = 2, then 0.6/0.3 = 2: W = (2, 4); rewards (0, 1):
    /// term 0·2 + 1·4 = 4.
    /// slate 2: 0.2/0.4 = 0.5, then 1/0.5 = 2: W = (0.5, 1); rewards (1, 0):
    /// term 0.5.
    /// RIPS = 4.5 / 2 = 2.25; the slate weights are 4 and 1: ESS 25/17;
    /// the terms' sample variance is 2 · 1.75² = 6.125, se = √(6.125/2).
    #[test]
    fn the_cascade_estimator_by_hand() {
        let mut cascade = Cascade::default();
        cascade.add(&[0.5, 0.6], &[0.25, 0.3], &[0.0, 1.0]);
        cascade.add(&[0.2, 1.0], &[0.4, 0.5], &[1.0, 0.0]);
        let e = cascade.estimate();
        assert_eq!(e.name, "RIPS");
        close(e.value, 2.25);
        close(e.ess, 25.0 / 17.0);
        close(e.high - e.value, Z95 * (6.125_f64 / 2.0).sqrt());
    }

    /// Two slates of two items, marginal π / μ per position:
    /// slate 1: 0.5/0.25 = 2 at the top, 0.3/0.6 = 0.5 below; rewards (0, 1):
    /// term 0·2 + 1·0.5 = 0.5.
    /// slate 2: 0.2/0.4 = 0.5, then 0.9/0.3 = 3; rewards (1, 1): term 3.5.
    /// PIPS = 4 / 2 = 2; the terms' sample variance is 2 · 1.5² = 4.5,
    /// se = √(4.5/2) = 1.5. ESS per position: top (2.5)²/4.25 = 1.4706,
    /// second (3.5)²/9.25 = 1.3243: the smaller, 49/37.
    #[test]
    fn position_wise_ips_by_hand() {
        let mut independent = Independent::default();
        independent.add(&[0.5, 0.3], &[0.25, 0.6], &[0.0, 1.0]);
        independent.add(&[0.2, 0.9], &[0.4, 0.3], &[1.0, 1.0]);
        let e = independent.estimate();
        assert_eq!(e.name, "PIPS");
        close(e.value, 2.0);
        close(e.high - e.value, Z95 * 1.5);
        close(e.ess, 12.25 / 9.25);
    }

    #[test]
    fn the_logging_value_is_a_plain_mean() {
        let mut mean = Mean::default();
        for r in [1.0, 0.0, 0.0, 1.0] {
            mean.add(r);
        }
        // mean 0.5, sample variance (4 · 0.25) / 3 = 1/3, se = √(1/12)
        let e = mean.estimate("logged");
        close(e.value, 0.5);
        close(e.high, 0.5 + Z95 * (1.0_f64 / 12.0).sqrt());
    }
}
