//! BANDIT.RANK's randomised policies against a real server: the decision
//! reply's shape in RESP2 and RESP3, the same EVENTID on the same model
//! version giving the same reply (on a replica too), the empirical
//! placement frequencies matching WITHPROBS (chi-square, fixed event ids),
//! the probabilities matching formulas computed here from the module's own
//! UCB scores, and an error for every bad argument.

use std::collections::BTreeMap;

use bandit_core::codec::encode_binary;
use bandit_tests::fixtures::{context, trained_payload};
use bandit_tests::resp::{Connection, Reply};
use bandit_tests::server::{wait_until, RedisServer};

const DIM: usize = 4;
const ARMS: usize = 6;
const KEY: &str = "m";

fn server_with_model() -> (RedisServer, Vec<f64>) {
    let server = RedisServer::start();
    let mut conn = server.connect();
    assert_eq!(conn.cmd(&format!("BANDIT.CREATE {KEY} DIM {DIM} ALPHA 0.4 LAMBDA 2")), Reply::Status("OK".into()));
    let payload = encode_binary(&trained_payload(DIM, ARMS, 40, 5)).unwrap();
    assert!(!conn.call(&[b"BANDIT.LOAD".as_slice(), KEY.as_bytes(), &payload]).unwrap().is_error());
    (server, context(DIM, 9))
}

fn rank(conn: &mut Connection, x: &[f64], rest: &[&str]) -> Reply {
    let mut args: Vec<String> = vec!["BANDIT.RANK".into(), KEY.into(), "CONTEXT".into()];
    args.extend(x.iter().map(|v| format!("{v:?}")));
    args.extend(rest.iter().map(|s| s.to_string()));
    conn.call(&args).unwrap()
}

/// (version, [(id, score, probability)]) of a decision reply with WITHSCORES WITHPROBS.
fn decision(reply: &Reply) -> (i64, Vec<(String, f64, f64)>) {
    let fields: BTreeMap<String, Reply> = reply.pairs().into_iter().collect();
    let items = fields["items"].array().iter().map(|item| {
        let item = item.array();
        (item[0].text(), item[1].number(), item[2].number())
    });
    (fields["version"].integer(), items.collect())
}

/// The module's UCB scores of every arm, best first.
fn ucb_scores(conn: &mut Connection, x: &[f64]) -> Vec<(String, f64)> {
    let reply = rank(conn, x, &["WITHSCORES"]);
    reply.array().chunks(2).map(|pair| (pair[0].text(), pair[1].number())).collect()
}

#[test]
fn the_decision_reply_has_the_version_and_the_items_in_both_protocols() {
    let (server, x) = server_with_model();
    let mut conn = server.connect();
    let plain = rank(&mut conn, &x, &["TOP", "3"]);
    // RESP2: flat pairs; the items are [id, score, probability] arrays.
    let reply = rank(&mut conn, &x, &["TOP", "3", "POLICY", "UCB", "EVENTID", "e1", "WITHSCORES", "WITHPROBS"]);
    let Reply::Array(fields) = &reply else { panic!("{reply:?}") };
    assert_eq!((fields[0].text(), fields[1].integer(), fields[2].text()), ("version".into(), 1, "items".into()));
    let (_, items) = decision(&reply);
    let ids: Vec<String> = items.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(ids, plain.array().iter().map(Reply::text).collect::<Vec<_>>(), "UCB's decision is the plain ranking");
    assert!(items.iter().all(|(_, _, p)| *p == 1.0), "UCB places with probability 1");
    // Without WITHSCORES and WITHPROBS an item is just [id].
    let reply = rank(&mut conn, &x, &["TOP", "2", "EVENTID", "e1"]);
    let fields: BTreeMap<String, Reply> = reply.pairs().into_iter().collect();
    assert_eq!(fields["items"].array()[0].array().len(), 1);

    assert!(!conn.cmd("HELLO 3").is_error());
    let reply = rank(&mut conn, &x, &["TOP", "3", "POLICY", "SOFTMAX", "0.5", "EVENTID", "e1", "WITHSCORES", "WITHPROBS"]);
    let Reply::Map(entries) = &reply else { panic!("RESP3 decision is a map: {reply:?}") };
    assert_eq!(entries[0].0.text(), "version");
    let Reply::Array(items) = &entries[1].1 else { panic!() };
    assert!(matches!(items[0].array()[1], Reply::Double(_)) && matches!(items[0].array()[2], Reply::Double(_)));
}

#[test]
fn the_same_event_on_the_same_model_gets_the_same_reply_and_a_load_changes_the_version() {
    let (server, x) = server_with_model();
    let replica = RedisServer::with_options(server.replica_options());
    let mut conn = server.connect();
    let ask = |conn: &mut Connection, event: &str| rank(conn, &x, &["TOP", "4", "POLICY", "TS", "EVENTID", event, "WITHSCORES", "WITHPROBS"]);
    let first = ask(&mut conn, "event-7");
    assert_eq!(ask(&mut conn, "event-7"), first);
    let others: Vec<Reply> = (0..20).map(|i| ask(&mut conn, &format!("event-{}", 100 + i))).collect();
    assert!(others.iter().any(|r| decision(r).1.iter().map(|i| &i.0).ne(decision(&first).1.iter().map(|i| &i.0))), "other events draw differently");
    // The replica has the same model and version, so it replies the same.
    let mut on_replica = replica.connect();
    wait_until("the replica to have the model", std::time::Duration::from_secs(20), || {
        on_replica.call(&["BANDIT.STATS", KEY]).is_ok_and(|r| !r.is_error())
    });
    assert_eq!(ask(&mut on_replica, "event-7"), first);

    // A LOAD that changes the model moves the version; one that changes nothing does not.
    let (version, _) = decision(&first);
    let payload = encode_binary(&trained_payload(DIM, 2, 10, 77)).unwrap();
    conn.call(&[b"BANDIT.LOAD".as_slice(), KEY.as_bytes(), &payload]).unwrap();
    assert_eq!(decision(&ask(&mut conn, "event-7")).0, version + 1);
    conn.call(&[b"BANDIT.LOAD".as_slice(), KEY.as_bytes(), &payload]).unwrap();
    assert_eq!(decision(&ask(&mut conn, "event-7")).0, version + 1, "an identical LOAD changes nothing");
}

/// Pearson's χ² of counts against probabilities (categories with p = 0 must be empty).
fn chi_square(counts: &BTreeMap<String, u64>, expected: &BTreeMap<String, f64>, total: u64) -> f64 {
    for id in counts.keys() {
        assert!(expected.contains_key(id), "{id} placed but not expected");
    }
    expected.iter().map(|(id, p)| {
        let want = p * total as f64;
        let got = *counts.get(id).unwrap_or(&0) as f64;
        (got - want).powi(2) / want
    }).sum()
}

/// The 99.9th percentile of χ² with 5 degrees of freedom (six arms).
const CHI2_5DF_999: f64 = 20.515;

#[test]
fn egreedy_and_softmax_place_as_their_probabilities_say() {
    let (server, x) = server_with_model();
    let mut conn = server.connect();
    let scores = ucb_scores(&mut conn, &x);
    assert_eq!(scores.len(), ARMS);
    let (epsilon, temperature) = (0.25, 0.05);
    let best = scores[0].0.clone();
    let egreedy: BTreeMap<String, f64> = scores
        .iter()
        .map(|(id, _)| (id.clone(), if *id == best { 1.0 - epsilon + epsilon / ARMS as f64 } else { epsilon / ARMS as f64 }))
        .collect();
    let total: f64 = scores.iter().map(|(_, s)| (s / temperature).exp()).sum();
    let softmax: BTreeMap<String, f64> = scores.iter().map(|(id, s)| (id.clone(), (s / temperature).exp() / total)).collect();

    let draws = 3000;
    for (policy, expected) in [(vec!["EGREEDY", "0.25"], egreedy), (vec!["SOFTMAX", "0.05"], softmax)] {
        let mut counts = BTreeMap::new();
        for draw in 0..draws {
            let event = format!("chi-{draw}");
            let mut rest = vec!["TOP", "2", "POLICY"];
            rest.extend(&policy);
            rest.extend(["EVENTID", &event, "WITHSCORES", "WITHPROBS"]);
            let (_, items) = decision(&rank(&mut conn, &x, &rest));
            let (id, _, probability) = &items[0];
            assert!((probability - expected[id]).abs() < 1e-6, "{policy:?}: {id} reported {probability}, expected {}", expected[id]);
            *counts.entry(id.clone()).or_insert(0u64) += 1;
        }
        let statistic = chi_square(&counts, &expected, draws);
        assert!(statistic < CHI2_5DF_999, "{policy:?}: χ² {statistic}, counts {counts:?}, expected {expected:?}");
    }
}

#[test]
fn bad_policy_arguments_get_errors() {
    let (server, x) = server_with_model();
    let mut conn = server.connect();
    for (rest, expected) in [
        (vec!["POLICY"], "ERR syntax error, POLICY needs"),
        (vec!["POLICY", "GREEDY"], "ERR syntax error, unknown POLICY 'GREEDY'"),
        (vec!["POLICY", "EGREEDY"], "ERR syntax error"),
        (vec!["POLICY", "EGREEDY", "1.5"], "ERR epsilon must be in [0, 1]"),
        (vec!["POLICY", "EGREEDY", "-0.1"], "ERR epsilon must be in [0, 1]"),
        (vec!["POLICY", "EGREEDY", "x"], "ERR value is not a valid float"),
        (vec!["POLICY", "SOFTMAX", "0"], "ERR temperature must be a positive number"),
        (vec!["POLICY", "SOFTMAX", "-1"], "ERR temperature must be a positive number"),
        (vec!["EVENTID"], "ERR syntax error, EVENTID needs a value"),
        (vec!["EVENTID", ""], "ERR syntax error, EVENTID must not be empty"),
    ] {
        let reply = rank(&mut conn, &x, &rest);
        let Reply::Error(text) = &reply else { panic!("{rest:?}: expected an error, got {reply:?}") };
        assert!(text.starts_with(expected), "{rest:?}: {text}");
    }
    // TS's probabilities cost a quadrature per candidate and place: bounded.
    let reply = rank(&mut conn, &x, &["POLICY", "TS", "WITHPROBS"]);
    assert!(!reply.is_error(), "6 candidates x TOP 6 is within the budget: {reply:?}");
    let many: Vec<String> = (0..5000).map(|i| format!("new-{i}")).collect();
    let mut args: Vec<&str> = vec!["ARMS", "5000"];
    args.extend(many.iter().map(String::as_str));
    args.extend(["TOP", "5", "POLICY", "TS", "WITHPROBS"]);
    let Reply::Error(text) = rank(&mut conn, &x, &args) else { panic!("TS WITHPROBS over 5000 x 5 must be refused") };
    assert!(text.starts_with("ERR TS WITHPROBS integrates over every candidate"), "{text}");
    args.pop();
    assert!(!rank(&mut conn, &x, &args).is_error(), "TS without WITHPROBS has no such bound");
    // Lower-case keywords work as Redis' own do.
    assert!(!rank(&mut conn, &x, &["policy", "egreedy", "0.1", "eventid", "e", "withprobs"]).is_error());
}

/// TS's first-position probability is P(the item's posterior draw is the
/// highest): checked against a Monte Carlo over the module's own means
/// (ALPHA 0 scores) and widths, with the test's own normal sampler.
#[test]
fn thompson_sampling_reports_the_chance_of_drawing_highest() {
    let (server, x) = server_with_model();
    let mut conn = server.connect();
    let alpha = 0.4;
    let means: BTreeMap<String, f64> = ucb_scores_with(&mut conn, &x, 0.0).into_iter().collect();
    let widths: BTreeMap<String, f64> =
        ucb_scores_with(&mut conn, &x, alpha).into_iter().map(|(id, ucb)| (id.clone(), (ucb - means[&id]) / alpha)).collect();
    let mut state: u64 = 12345;
    let mut normal = || {
        let mut unit = || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (u, v) = (unit(), unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    let trials = 200_000;
    let mut wins: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..trials {
        let best = means.iter().map(|(id, m)| (m + alpha * widths[id] * normal(), id)).max_by(|a, b| a.0.total_cmp(&b.0)).unwrap().1;
        *wins.entry(best.clone()).or_default() += 1;
    }
    for draw in 0..200 {
        let event = format!("ts-{draw}");
        let (_, items) = decision(&rank(&mut conn, &x, &["TOP", "1", "ALPHA", "0.4", "POLICY", "TS", "EVENTID", &event, "WITHSCORES", "WITHPROBS"]));
        let (id, _, probability) = &items[0];
        let monte_carlo = *wins.get(id).unwrap_or(&0) as f64 / trials as f64;
        let standard_error = (monte_carlo * (1.0 - monte_carlo) / trials as f64).sqrt();
        assert!((probability - monte_carlo).abs() < 5.0 * standard_error + 1e-4, "{id}: reported {probability}, Monte Carlo {monte_carlo}");
    }
}

fn ucb_scores_with(conn: &mut Connection, x: &[f64], alpha: f64) -> Vec<(String, f64)> {
    let alpha = alpha.to_string();
    let reply = rank(conn, x, &["ALPHA", &alpha, "WITHSCORES"]);
    reply.array().chunks(2).map(|pair| (pair[0].text(), pair[1].number())).collect()
}
