//! The off-policy evaluation as a Markdown table (ranked by DR) and as JSON.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use super::estimators::Estimate;
use super::{OpeReport, RANKED_BY};

/// Columns of the table, after the candidate; RIPS and PIPS only for
/// slates (on top-1 decisions both are IPS).
const COLUMNS: [&str; 9] = ["DR", "IPS", "SNIPS", "SNDR", "Switch-DR", "DM", "Replay", "RIPS", "PIPS"];

fn cell(e: Option<&Estimate>) -> String {
    match e {
        Some(e) if e.value.is_finite() => {
            let half = (e.high - e.value).abs();
            if half.is_finite() {
                format!("{:.4} ± {:.4}", e.value, half)
            } else {
                format!("{:.4}", e.value)
            }
        }
        _ => "n/a".into(),
    }
}

/// The header lines and the table.
#[must_use]
pub fn table(report: &OpeReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} decisions over {} actions, logged by {}; its own value (mean logged reward): {}",
        report.decisions,
        report.actions.len(),
        report.logging_policy,
        cell(Some(&report.logged))
    );
    if report.top > 1 {
        let _ = writeln!(
            out,
            "slates of up to {}: the top-1 estimators score position 0; RIPS (cascade) and PIPS (position-wise, needs the log's marginals) the whole slate, whose logged value is {}",
            report.top,
            cell(Some(&report.logged_slate))
        );
    }
    let _ = writeln!(
        out,
        "95% intervals: analytic normal (delta method for SNIPS and SNDR); Switch-DR τ = {}; DM: ridge (λ = {}) per action, 2-fold cross-fitted; candidates learn on the log, seed {}; ranked by {RANKED_BY}\n",
        report.config.tau, report.config.ridge_lambda, report.config.seed
    );
    let truth = report.candidates.iter().any(|c| c.truth.is_some());
    let columns = COLUMNS.get(..if report.top > 1 { COLUMNS.len() } else { COLUMNS.len() - 2 }).unwrap_or(&COLUMNS);
    let _ = write!(out, "| # | candidate | {} | replay n | ESS |", columns.join(" | "));
    let slates = report.top > 1;
    out.push_str(match (truth, slates) {
        (true, true) => " true CTR | true slate CTR |\n",
        (true, false) => " true CTR |\n",
        (false, _) => "\n",
    });
    let _ = write!(out, "|---|---|{}---|---|", "---|".repeat(columns.len()));
    out.push_str(match (truth, slates) {
        (true, true) => "---|---|\n",
        (true, false) => "---|\n",
        (false, _) => "\n",
    });
    for (rank, c) in report.candidates.iter().enumerate() {
        let _ = write!(out, "| {} | {} |", rank + 1, c.spec.name);
        for name in columns {
            let _ = write!(out, " {} |", cell(c.get(name)));
        }
        let replay = c.get("Replay").map_or(0.0, |e| e.ess);
        let ess = c.get("IPS").map_or(0.0, |e| e.ess);
        let _ = write!(out, " {replay:.0} | {ess:.1} |");
        match (c.truth, c.truth_slate) {
            (Some(t), Some(slate)) if slates => {
                let _ = writeln!(out, " {t:.4} | {slate:.4} |");
            }
            (Some(t), _) => {
                let _ = writeln!(out, " {t:.4} |");
            }
            _ => out.push('\n'),
        }
    }
    out
}

fn number(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

/// One JSON document: the log, the settings, and per candidate (ranked) every estimate.
#[must_use]
pub fn json(report: &OpeReport) -> String {
    let estimate = |e: &Estimate| json!({"value": number(e.value), "low": number(e.low), "high": number(e.high), "ess": number(e.ess)});
    let candidates: Vec<Value> = report
        .candidates
        .iter()
        .map(|c| {
            let estimates: Map<String, Value> = c.estimates.iter().map(|e| (e.name.to_owned(), estimate(e))).collect();
            json!({
                "name": c.spec.name,
                "policy": c.spec.policy_name(),
                "alpha": c.spec.alpha,
                "estimates": estimates,
                "true_ctr": c.truth.map_or(Value::Null, number),
                "true_slate_ctr": c.truth_slate.map_or(Value::Null, number),
            })
        })
        .collect();
    json!({
        "decisions": report.decisions,
        "actions": report.actions.len(),
        "logging_policy": report.logging_policy,
        "logged_value": estimate(&report.logged),
        "logged_slate_value": estimate(&report.logged_slate),
        "top": report.top,
        "interval": "95% analytic normal (delta method for SNIPS and SNDR)",
        "switch_tau": report.config.tau,
        "ridge_lambda": report.config.ridge_lambda,
        "seed": report.config.seed,
        "ranked_by": RANKED_BY,
        "candidates": candidates,
    })
    .to_string()
}
