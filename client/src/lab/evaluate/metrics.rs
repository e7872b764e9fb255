//! Offline ranking metrics at k, with the definitions Mab2Rec uses through
//! Jurity, for logs where each test row is one user (a context) with one
//! logged product and its response:
//! - CTR@k: among rows whose logged product is in the top-k, the mean response.
//! - AUC@k: ROC AUC of the policy's score against the response, over those
//!   same matched rows (ties count one half).
//! - Precision@k: over rows with a positive response, hits / k.
//! - Recall@k: over rows with a positive response, hits / relevant items (1).

/// One test row as seen by the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// The logged response.
    pub response: f64,
    /// The policy's score for the logged product, when it made the top-k.
    pub matched_score: Option<f64>,
}

/// The four metrics; NaN where undefined (no matched or no positive rows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub auc: f64,
    pub ctr: f64,
    pub precision: f64,
    pub recall: f64,
}

/// Computes the metrics for top-`k` lists.
#[must_use]
pub fn compute(rows: &[Judged], k: usize) -> Metrics {
    let matched: Vec<(f64, bool)> =
        rows.iter().filter_map(|row| row.matched_score.map(|score| (score, row.response > 0.0))).collect();
    let ctr = if matched.is_empty() {
        f64::NAN
    } else {
        rows.iter().filter(|r| r.matched_score.is_some()).map(|r| r.response).sum::<f64>() / matched.len() as f64
    };
    let relevant: Vec<&Judged> = rows.iter().filter(|row| row.response > 0.0).collect();
    let hits = relevant.iter().filter(|row| row.matched_score.is_some()).count() as f64;
    let (precision, recall) = if relevant.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        let users = relevant.len() as f64;
        (hits / k.max(1) as f64 / users, hits / users)
    };
    Metrics { auc: auc(&matched), ctr, precision, recall }
}

/// ROC AUC by the Mann–Whitney statistic with average ranks for ties.
#[must_use]
pub fn auc(scored: &[(f64, bool)]) -> f64 {
    let positives = scored.iter().filter(|(_, label)| *label).count();
    let negatives = scored.len() - positives;
    if positives == 0 || negatives == 0 {
        return f64::NAN;
    }
    let mut sorted: Vec<(f64, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < sorted.len() {
        let value = sorted.get(start).map_or(0.0, |s| s.0);
        let end = sorted.iter().skip(start).position(|s| s.0 != value).map_or(sorted.len(), |offset| start + offset);
        // Ranks start + 1 ..= end share their average.
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let tied_positives = sorted.get(start..end).map_or(0, |group| group.iter().filter(|s| s.1).count());
        rank_sum += average_rank * tied_positives as f64;
        start = end;
    }
    let p = positives as f64;
    (rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(response: f64, matched_score: Option<f64>) -> Judged {
        Judged { response, matched_score }
    }

    #[test]
    fn metrics_by_hand() {
        // Six users, top-2 lists. Matched: u1 (0.9, clicked), u2 (0.8, not),
        // u3 (0.3, clicked), u4 (0.1, not). Unmatched: u5 (clicked), u6 (not).
        let rows = [
            row(1.0, Some(0.9)),
            row(0.0, Some(0.8)),
            row(1.0, Some(0.3)),
            row(0.0, Some(0.1)),
            row(1.0, None),
            row(0.0, None),
        ];
        let m = compute(&rows, 2);
        // CTR: 2 clicks among 4 matched.
        assert_eq!(m.ctr, 0.5);
        // AUC over matched: positives {0.9, 0.3}, negatives {0.8, 0.1}:
        // pairs won: (0.9>0.8) (0.9>0.1) (0.3>0.1) = 3 of 4.
        assert_eq!(m.auc, 0.75);
        // Relevant users u1, u3, u5; hits u1, u3: recall 2/3, precision 2/(2·3).
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-15);
        assert!((m.precision - 1.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn auc_handles_ties_and_degenerate_cases() {
        assert_eq!(auc(&[(0.5, true), (0.5, false)]), 0.5);
        assert_eq!(auc(&[(1.0, true), (0.0, false), (0.0, false)]), 1.0);
        assert_eq!(auc(&[(0.0, true), (1.0, false)]), 0.0);
        assert!(auc(&[(1.0, true)]).is_nan());
        assert!(compute(&[row(0.0, None)], 5).ctr.is_nan());
    }
}
