//! Every BANDIT.* command and option against a real redis-server, in RESP2
//! and RESP3, with the exact error replies.

use std::collections::BTreeMap;

use bandit_core::codec::{encode_binary, encode_json};
use bandit_core::Limits;
use bandit_tests::fixtures::{context, trained_payload};
use bandit_tests::reference::{close, payload_arms, prior_score};
use bandit_tests::resp::{Connection, Reply};
use bandit_tests::server::{RedisServer, ServerOptions};

/// Asserts that `got` (id, score) pairs, best first, are the reference's
/// top `got.len()` arms: each score within the f32 ranking tolerance of the
/// textbook score, scores non-increasing, and no arm left out that the
/// reference scores clearly above the last one returned.
fn assert_best_first(got: &[(String, f64)], reference: &BTreeMap<String, f64>, expected_len: usize) {
    const TOLERANCE: f64 = 1e-5;
    assert_eq!(got.len(), expected_len, "number of arms returned");
    for (id, score) in got {
        let want = reference.get(id).unwrap_or_else(|| panic!("{id} is not a candidate"));
        assert!(close(*score, *want, TOLERANCE), "{id}: module {score} vs reference {want}");
    }
    for pair in got.windows(2) {
        assert!(pair[0].1 >= pair[1].1, "not best first: {pair:?}");
    }
    let returned: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    if let Some((_, last)) = got.last() {
        for (id, score) in reference {
            if !returned.contains(&id.as_str()) {
                assert!(*score <= last + TOLERANCE * last.abs().max(1.0), "{id} ({score}) belongs above {last}");
            }
        }
    }
}

fn scored_pairs(reply: &Reply) -> Vec<(String, f64)> {
    reply.array().chunks(2).map(|p| (p[0].text(), p[1].number())).collect()
}

fn error_text(reply: Reply) -> String {
    match reply {
        Reply::Error(text) => text,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn strings(values: &[f64]) -> Vec<String> {
    values.iter().map(|v| format!("{v:?}")).collect()
}

/// BANDIT.RANK key CONTEXT x… <rest…>
fn rank(conn: &mut Connection, key: &str, x: &[f64], rest: &[&str]) -> Reply {
    let mut args: Vec<String> = vec!["BANDIT.RANK".into(), key.into(), "CONTEXT".into()];
    args.extend(strings(x));
    args.extend(rest.iter().map(|s| s.to_string()));
    conn.call(&args).expect("rank")
}

fn ids(reply: &Reply) -> Vec<String> {
    reply.array().iter().map(Reply::text).collect()
}

#[test]
fn create_is_idempotent_and_checks_its_arguments() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    assert_eq!(conn.cmd("BANDIT.CREATE m DIM 3 ALPHA 0.5 LAMBDA 2"), Reply::Status("OK".into()));
    assert_eq!(conn.cmd("BANDIT.CREATE m DIM 3 ALPHA 0.5 LAMBDA 2"), Reply::Status("OK".into()));
    assert_eq!(conn.cmd("BANDIT.CREATE m LAMBDA 2 DIM 3 ALPHA 0.5"), Reply::Status("OK".into()));
    // Settings left out count at the module's defaults (1 and 1), as for a
    // new model: other settings than the model's are an error, never silent.
    let exists = "EXISTS the model exists with DIM 3 ALPHA 0.5 LAMBDA 2 DECAY 1; this CREATE asks for";
    assert_eq!(error_text(conn.cmd("BANDIT.CREATE m DIM 3")), format!("{exists} DIM 3 ALPHA 1 LAMBDA 1 DECAY 1"));
    assert_eq!(error_text(conn.cmd("BANDIT.CREATE m DIM 3 ALPHA 0.5")), format!("{exists} DIM 3 ALPHA 0.5 LAMBDA 1 DECAY 1"));
    assert_eq!(error_text(conn.cmd("BANDIT.CREATE m DIM 4 ALPHA 0.5 LAMBDA 2")), format!("{exists} DIM 4 ALPHA 0.5 LAMBDA 2 DECAY 1"));
    assert_eq!(error_text(conn.cmd("BANDIT.CREATE m DIM 3 ALPHA 1 LAMBDA 2")), format!("{exists} DIM 3 ALPHA 1 LAMBDA 2 DECAY 1"));
    assert_eq!(error_text(conn.cmd("BANDIT.CREATE m DIM 3 ALPHA 0.5 LAMBDA 2 DECAY 0.99")), format!("{exists} DIM 3 ALPHA 0.5 LAMBDA 2 DECAY 0.99"));
    assert_eq!(conn.cmd("BANDIT.CREATE m DIM 3 ALPHA 0.5 LAMBDA 2 DECAY 1"), Reply::Status("OK".into()));
    assert_eq!(conn.cmd("BANDIT.CREATE f DIM 3 DECAY 0.995"), Reply::Status("OK".into()));
    assert_eq!(conn.cmd("BANDIT.STATS f").field("decay"), Reply::Bulk(b"0.995".to_vec()));
    assert_eq!(conn.cmd("BANDIT.CREATE d DIM 2"), Reply::Status("OK".into()));
    assert_eq!(conn.cmd("BANDIT.CREATE d DIM 2 ALPHA 1 LAMBDA 1"), Reply::Status("OK".into()), "the defaults, stated");
    let stats = conn.cmd("BANDIT.STATS m");
    assert_eq!(stats.field("dim"), Reply::Integer(3));
    assert_eq!(stats.field("alpha").number(), 0.5);
    assert_eq!(stats.field("lambda").number(), 2.0);
    assert_eq!(stats.field("arms"), Reply::Integer(0));

    conn.cmd("SET plain x");
    let cases = [
        ("BANDIT.CREATE plain DIM 3", "WRONGTYPE Operation against a key holding the wrong kind of value"),
        ("BANDIT.CREATE k", "ERR wrong number of arguments for 'bandit.create' command"),
        ("BANDIT.CREATE k ALPHA 1", "ERR syntax error, DIM is required"),
        ("BANDIT.CREATE k ALPHA 1 LAMBDA 1", "ERR syntax error, DIM is required"),
        ("BANDIT.CREATE k DIM 0", "ERR DIM must be at least 1"),
        ("BANDIT.CREATE k DIM 100000", "ERR DIM is 100000, the limit is 256"),
        ("BANDIT.CREATE k DIM x", "ERR value is not an integer or out of range"),
        ("BANDIT.CREATE k DIM 3 ALPHA -1", "ERR ALPHA must be a finite number >= 0"),
        ("BANDIT.CREATE k DIM 3 ALPHA nan", "ERR value is not a finite number"),
        ("BANDIT.CREATE k DIM 3 LAMBDA 0", "ERR LAMBDA must be a finite number > 0"),
        ("BANDIT.CREATE k DIM 3 DECAY 0", "ERR DECAY must be a number in (0, 1]"),
        ("BANDIT.CREATE k DIM 3 DECAY 1.01", "ERR DECAY must be a number in (0, 1]"),
        ("BANDIT.CREATE k DIM 3 BOGUS 1", "ERR syntax error, unexpected 'BOGUS'"),
        ("BANDIT.CREATE k DIM 3 ALPHA", "ERR syntax error, a value is missing after the last option"),
    ];
    for (command, expected) in cases {
        assert_eq!(error_text(conn.cmd(command)), expected, "{command}");
    }
    assert_eq!(conn.cmd("EXISTS k"), Reply::Integer(0));
    assert_eq!(conn.cmd("TYPE m"), Reply::Status("BanditUCB".into()));
}

#[test]
fn load_applies_binary_and_json_atomically_and_fences_stale_offsets() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    let mut payload = trained_payload(4, 3, 20, 1);
    payload.offsets = vec![(0, 100), (1, 50)];
    // A missing key is created with the payload's dim and the defaults.
    let reply = conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&payload).unwrap()]).unwrap();
    assert_eq!(reply, Reply::Integer(3));
    let stats = conn.cmd("BANDIT.STATS m");
    assert_eq!(stats.field("dim"), Reply::Integer(4));
    assert_eq!(stats.field("arms"), Reply::Integer(3));
    assert_eq!(stats.field("updates"), Reply::Integer(60));
    assert_eq!(stats.field("loads"), Reply::Integer(1));
    let offsets = stats.field("offsets").pairs();
    assert_eq!(offsets, vec![("0".into(), Reply::Integer(100)), ("1".into(), Reply::Integer(50))]);

    // The same payload again changes nothing.
    let reply = conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_json(&payload).unwrap()]).unwrap();
    assert_eq!(reply, Reply::Integer(0));
    assert_eq!(conn.cmd("BANDIT.STATS m").field("loads"), Reply::Integer(1));

    // A payload behind on one partition is refused whole.
    let mut stale = trained_payload(4, 5, 3, 2);
    stale.offsets = vec![(0, 120), (1, 49)];
    let error = error_text(conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&stale).unwrap()]).unwrap());
    assert_eq!(error, "STALE partition 1 is at offset 50 in the model, the payload has 49");
    assert_eq!(conn.cmd("BANDIT.STATS m").field("arms"), Reply::Integer(3));
    assert_eq!(conn.cmd("BANDIT.STATS m").field("offsets").field("0"), Reply::Integer(100));

    // Ahead on every partition: accepted, new arms added, offsets moved.
    stale.offsets = vec![(0, 120), (1, 60), (7, 1)];
    let reply = conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&stale).unwrap()]).unwrap();
    assert_eq!(reply, Reply::Integer(5));
    let stats = conn.cmd("BANDIT.STATS m");
    assert_eq!(stats.field("arms"), Reply::Integer(5), "p0..p4 overlap p0..p2");
    assert_eq!(stats.field("offsets").field("7"), Reply::Integer(1));

    // The documented JSON form.
    let json = r#"{"dim": 2, "arms": [{"id": "42", "a_inv": [[0.5, 0.1], [0.1, 0.25]], "b": [1, 2], "n": 10, "reward_sum": 3.0}], "offsets": {"0": 1234}}"#;
    assert_eq!(conn.call(&["BANDIT.LOAD", "j", json]).unwrap(), Reply::Integer(1));
    let arm = conn.cmd("BANDIT.STATS j ARM 42");
    assert_eq!(arm.field("n"), Reply::Integer(10));
    assert_eq!(arm.field("mean_reward").number(), 0.3);
    let theta: Vec<f64> = arm.field("theta").array().iter().map(Reply::number).collect();
    assert_eq!(theta, vec![0.5 + 0.1 * 2.0, 0.1 + 0.25 * 2.0]);
}

#[test]
fn load_rejects_bad_payloads_with_clear_errors() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    conn.cmd("BANDIT.CREATE m DIM 2");
    conn.cmd("SET plain x");
    let good = r#"{"dim": 2, "arms": [{"id": "a", "a_inv": [[1, 0], [0, 1]], "b": [0, 0]}]}"#;
    let cases: Vec<(&str, String, &str)> = vec![
        ("plain", good.into(), "WRONGTYPE"),
        ("m", r#"{"dim": 3, "arms": []}"#.into(), "ERR payload is for dim 3, the model has dim 2"),
        ("m", r#"{"dim": 2, "alpha": 0.5, "lambda": 1, "arms": []}"#.into(), "SETTINGS payload has ALPHA 0.5 LAMBDA 1 DECAY 1, the model has ALPHA 1 LAMBDA 1 DECAY 1"),
        ("m", r#"{"dim": 2, "alpha": 1, "lambda": 1, "decay": 0.5, "arms": []}"#.into(), "SETTINGS payload has ALPHA 1 LAMBDA 1 DECAY 0.5, the model has ALPHA 1 LAMBDA 1 DECAY 1"),
        ("m", r#"{"dim": 2, "alpha": 0.5, "arms": []}"#.into(), "ERR invalid payload: alpha and lambda go together"),
        ("m", "garbage".into(), "ERR invalid payload: expected JSON"),
        ("m", "{not json".into(), "ERR invalid payload: JSON:"),
        ("m", r#"{"dim": 2, "arms": [{"id": "a", "a_inv": [[1, 3], [0, 1]], "b": [0, 0]}]}"#.into(), "ERR invalid payload: a_inv of arm 'a' is not symmetric at (0,1)"),
        ("m", r#"{"dim": 2, "arms": [{"id": "a", "a_inv": [[0, 0], [0, 1]], "b": [0, 0]}]}"#.into(), "ERR invalid payload: a_inv of arm 'a' has a non-positive diagonal at 0"),
        ("m", r#"{"dim": 2, "arms": [{"id": "a", "a_inv": [[1, 0], [0, 1]], "b": [0]}]}"#.into(), "ERR invalid payload: b of arm 'a' has 1 values, expected 2"),
        ("m", format!(r#"{{"dim": 2, "arms": [{{"id": "{}", "a_inv": [[1, 0], [0, 1]], "b": [0, 0]}}]}}"#, "x".repeat(2000)), "ERR arm id length is 2000, the limit is 1024"),
        ("m", r#"{"dim": 2, "arms": [{"id": "a", "a_inv": [[1, 0], [0, 1]], "b": [0, 0], "extra": 1}]}"#.into(), "unknown field `extra`"),
    ];
    for (key, payload, expected) in &cases {
        let error = error_text(conn.call(&["BANDIT.LOAD", key, payload]).unwrap());
        assert!(error.starts_with(expected) || error.contains(expected), "{payload}: {error}");
    }
    // Binary with NaN: encoded directly, since JSON cannot carry NaN.
    let mut payload = trained_payload(2, 1, 3, 5);
    payload.arms[0].b[1] = f64::NAN;
    let error = error_text(conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&payload).unwrap()]).unwrap());
    assert_eq!(error, "ERR value is not a finite number (b of arm 'p0')");
    assert_eq!(error_text(conn.cmd("BANDIT.LOAD m")), "ERR wrong number of arguments for 'bandit.load' command");
    assert_eq!(error_text(conn.call(&["BANDIT.LOAD", "m", good, "extra"]).unwrap()), "ERR syntax error, unexpected 'extra'");
    assert_eq!(error_text(conn.call(&["BANDIT.LOAD", "m", good, "PART", "t", "0", "2", "extra"]).unwrap()), "ERR wrong number of arguments for 'bandit.load' command");
    assert_eq!(conn.cmd("BANDIT.STATS m").field("arms"), Reply::Integer(0));
}

#[test]
fn rank_scores_match_a_textbook_linucb_and_options_work() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    let dim = 15;
    let (alpha, lambda) = (0.8, 2.5);
    let payload = trained_payload(dim, 200, 30, 7);
    conn.call(&["BANDIT.CREATE", "m", "DIM", "15", "ALPHA", "0.8", "LAMBDA", "2.5"]).unwrap();
    conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&payload).unwrap()]).unwrap();
    // The expected scores: a dense solve over each arm's A and b.
    let arms = payload_arms(&payload);
    let x = context(dim, 99);
    let scores = |alpha: f64| -> BTreeMap<String, f64> { arms.iter().map(|(id, arm)| (id.clone(), arm.score(&x, alpha))).collect() };

    let reply = rank(&mut conn, "m", &x, &["TOP", "5", "WITHSCORES"]);
    assert_eq!(reply.array().len(), 10, "RESP2 WITHSCORES is a flat id/score array");
    assert_best_first(&scored_pairs(&reply), &scores(alpha), 5);

    // Without TOP every arm comes back, best first.
    assert_best_first(&scored_pairs(&rank(&mut conn, "m", &x, &["WITHSCORES"])), &scores(alpha), 200);
    let all = ids(&rank(&mut conn, "m", &x, &[]));
    assert_eq!(all, scored_pairs(&rank(&mut conn, "m", &x, &["WITHSCORES"])).into_iter().map(|(id, _)| id).collect::<Vec<_>>());

    // ALPHA overrides the model default.
    assert_best_first(&scored_pairs(&rank(&mut conn, "m", &x, &["ALPHA", "0", "TOP", "3", "WITHSCORES"])), &scores(0.0), 3);
    assert_best_first(&scored_pairs(&rank(&mut conn, "m", &x, &["ALPHA", "3", "TOP", "7", "WITHSCORES"])), &scores(3.0), 7);

    // ARMS: candidates only, unknown ones with the model's prior (θ = 0,
    // A = λI), duplicates once.
    let reply = rank(&mut conn, "m", &x, &["ARMS", "4", "p3", "new-product", "p3", "p150", "WITHSCORES"]);
    let mut candidates: BTreeMap<String, f64> =
        ["p3", "p150"].iter().map(|id| (id.to_string(), scores(alpha)[*id])).collect();
    candidates.insert("new-product".into(), prior_score(&x, alpha, lambda));
    assert_best_first(&scored_pairs(&reply), &candidates, 3);

    // CONTEXTBLOB as float64 and float32.
    let blob64: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let reply = conn.call(&[b"BANDIT.RANK".as_slice(), b"m", b"CONTEXTBLOB", &blob64, b"TOP", b"5"]).unwrap();
    assert_eq!(ids(&reply), ids(&rank(&mut conn, "m", &x, &["TOP", "5"])));
    let x32: Vec<f64> = x.iter().map(|&v| f64::from(v as f32)).collect();
    let blob32: Vec<u8> = x.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
    let reply = conn.call(&[b"BANDIT.RANK".as_slice(), b"m", b"CONTEXTBLOB", &blob32, b"TOP", b"5"]).unwrap();
    assert_eq!(ids(&reply), ids(&rank(&mut conn, "m", &x32, &["TOP", "5"])));

    // TOP 0 and an empty candidate list give empty replies.
    assert!(rank(&mut conn, "m", &x, &["TOP", "0"]).array().is_empty());
    assert!(rank(&mut conn, "m", &x, &["ARMS", "0"]).array().is_empty());
}

#[test]
fn rank_breaks_ties_by_id_and_replies_like_zrange_in_resp3() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    conn.cmd("BANDIT.CREATE m DIM 2");
    // Unknown arms all score the prior: order is by id.
    let reply = rank(&mut conn, "m", &[1.0, 0.0], &["ARMS", "3", "c", "a", "b", "WITHSCORES"]);
    conn.cmd("ZADD z 1 c 1 a 1 b");
    let zrange = conn.cmd("ZRANGE z 0 -1 REV WITHSCORES");
    assert_eq!(reply.array().iter().step_by(2).map(Reply::text).collect::<Vec<_>>(), ["a", "b", "c"]);
    // (ZRANGE REV orders equal scores by id descending; RANK by id ascending.)
    assert!(matches!(reply.array()[1], Reply::Bulk(_)), "RESP2 scores are bulk strings, as ZRANGE's");
    assert_eq!(reply.array()[1], zrange.array()[1], "the prior √(1/1) = 1 reads as ZRANGE's 1");

    assert_eq!(conn.cmd("HELLO 3").field("proto"), Reply::Integer(3));
    let reply = rank(&mut conn, "m", &[1.0, 0.0], &["ARMS", "3", "c", "a", "b", "WITHSCORES"]);
    let zrange = conn.cmd("ZRANGE z 0 -1 REV WITHSCORES");
    let shape = |r: &Reply| r.array().iter().map(|p| (p.array().len(), matches!(p.array()[1], Reply::Double(_)))).collect::<Vec<_>>();
    assert_eq!(shape(&reply), shape(&zrange), "RESP3: [id, double] pairs like ZRANGE");
    let order = |r: &Reply| r.array().iter().map(|p| p.array()[0].text()).collect::<Vec<_>>();
    assert_eq!(order(&reply), ["a", "b", "c"]);
    assert_eq!(reply.array()[0].array()[1], Reply::Double(1.0));
    // Without WITHSCORES: a plain array of ids in both protocols.
    assert_eq!(ids(&rank(&mut conn, "m", &[1.0, 0.0], &["ARMS", "2", "b", "a"])), ["a", "b"]);
}

#[test]
fn rank_errors_say_what_is_wrong() {
    let server = RedisServer::with_options(bandit_tests::server::ServerOptions {
        module_args: vec!["MAX-TOP".into(), "10".into(), "MAX-ARMS".into(), "100".into()],
        ..Default::default()
    });
    let mut conn = server.connect();
    conn.cmd("BANDIT.CREATE m DIM 3");
    conn.cmd("SET plain x");
    let cases = [
        ("BANDIT.RANK m CONTEXT 1 2", "ERR CONTEXT has 2 values, model dim is 3"),
        ("BANDIT.RANK m CONTEXT 1 2 3 4", "ERR CONTEXT has 4 values, model dim is 3"),
        ("BANDIT.RANK m CONTEXT 1 2 inf", "ERR value is not a finite number"),
        ("BANDIT.RANK m CONTEXT 1 2 x", "ERR value is not a valid float"),
        ("BANDIT.RANK m CONTEXT 1 2 3 TOP -1", "ERR value is not an integer or out of range"),
        ("BANDIT.RANK m CONTEXT 1 2 3 TOP 11", "ERR TOP is 11, the limit is 10"),
        ("BANDIT.RANK m CONTEXT 1 2 3 ARMS 101", "ERR ARMS count is 101, the limit is 100"),
        ("BANDIT.RANK m CONTEXT 1 2 3 ARMS 3 a b", "ERR syntax error, ARMS 3 is followed by 2 arguments"),
        ("BANDIT.RANK m CONTEXT 1 2 3 ALPHA -0.5", "ERR ALPHA must be a finite number >= 0"),
        ("BANDIT.RANK m CONTEXT 1 2 3 BOGUS", "ERR syntax error, unexpected 'BOGUS'"),
        ("BANDIT.RANK m CONTEXT 1 2 3 TOP", "ERR syntax error, a value is missing after the last option"),
        ("BANDIT.RANK m CONTEXT 1 2 TOPP 3", "ERR value is not a valid float"),
        ("BANDIT.RANK m TOP 3 WITHSCORES", "ERR syntax error, CONTEXT or CONTEXTBLOB is required"),
        ("BANDIT.RANK m CONTEXT 1 2 3 CONTEXT 1 2 3", "ERR syntax error, CONTEXT or CONTEXTBLOB given twice"),
        ("BANDIT.RANK m CONTEXTBLOB abc", "ERR CONTEXTBLOB has 3 bytes, expected 12 (float32) or 24 (float64) for dim 3"),
        ("BANDIT.RANK nope CONTEXT 1 2 3", "NOMODEL no such model"),
        ("BANDIT.RANK plain CONTEXT 1 2 3", "WRONGTYPE Operation against a key holding the wrong kind of value"),
        ("BANDIT.RANK m CONTEXT", "ERR wrong number of arguments for 'bandit.rank' command"),
        ("BANDIT.RANK", "ERR wrong number of arguments for 'bandit.rank' command"),
    ];
    for (command, expected) in cases {
        assert_eq!(error_text(conn.cmd(command)), expected, "{command}");
    }
    // Ids follow LOAD's rules: at most MAX-ID-BYTES (1024 by default).
    let long = "x".repeat(1025);
    let reply = conn.call(&["BANDIT.RANK", "m", "CONTEXT", "1", "2", "3", "ARMS", "1", &long]).unwrap();
    assert_eq!(error_text(reply), "ERR arm id length is 1025, the limit is 1024");
    let reply = conn.call(&["BANDIT.EXPORT", "m", "ARMS", "1", &long]).unwrap();
    assert_eq!(error_text(reply), "ERR arm id length is 1025, the limit is 1024");
    let reply = conn.call(&["BANDIT.RANK", "m", "CONTEXT", "1", "2", "3", "ARMS", "2", "a", ""]).unwrap();
    assert_eq!(error_text(reply), "ERR arm id is empty");
    let ok = "y".repeat(1024);
    assert!(conn.call(&["BANDIT.RANK", "m", "CONTEXT", "1", "2", "3", "ARMS", "1", &ok]).unwrap().array().len() == 1);
    let nan_blob: Vec<u8> = [1.0f32, f32::NAN, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let reply = conn.call(&[b"BANDIT.RANK".as_slice(), b"m", b"CONTEXTBLOB", &nan_blob]).unwrap();
    assert_eq!(error_text(reply), "ERR value is not a finite number");
}

#[test]
fn stats_in_resp2_and_resp3() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    let mut payload = trained_payload(3, 2, 10, 3);
    payload.offsets = vec![(2, 20)];
    conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&payload).unwrap()]).unwrap();
    let resp2 = conn.cmd("BANDIT.STATS m");
    assert!(matches!(resp2, Reply::Array(_)));
    let fields: Vec<String> = resp2.pairs().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        fields,
        ["dim", "alpha", "lambda", "decay", "arms", "updates", "reward_sum", "loads", "last_load_ms", "memory_bytes", "offsets"]
    );
    let reward_sum: f64 = payload.arms.iter().map(|a| a.reward_sum).sum();
    assert_eq!(resp2.field("reward_sum").number(), reward_sum);
    // memory_bytes counts the arm table: 100 more arms of dim 3 hold at least
    // θ (3), A⁻¹ (6), b (3) and A (6) in f64 each.
    let before = resp2.field("memory_bytes").integer();
    let mut more = trained_payload(3, 102, 2, 4);
    more.arms.drain(..2);
    conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&more).unwrap()]).unwrap();
    let after = conn.cmd("BANDIT.STATS m").field("memory_bytes").integer();
    assert!(after - before >= 100 * (3 + 6 + 3 + 6) * 8, "memory_bytes {before} → {after}");

    // Numbers read as users wrote them (shortest round trip), in RESP2 too.
    conn.cmd("BANDIT.CREATE fresh DIM 2 ALPHA 0.3 LAMBDA 0.1");
    let fresh = conn.cmd("BANDIT.STATS fresh");
    assert_eq!(fresh.field("alpha"), Reply::Bulk(b"0.3".to_vec()));
    assert_eq!(fresh.field("lambda"), Reply::Bulk(b"0.1".to_vec()));
    assert_eq!(fresh.field("reward_sum"), Reply::Bulk(b"0".to_vec()), "an empty model's sum is 0, not -0");

    conn.cmd("HELLO 3");
    let resp3 = conn.cmd("BANDIT.STATS m");
    assert!(matches!(resp3, Reply::Map(_)));
    assert!(matches!(resp3.field("offsets"), Reply::Map(_)));
    assert_eq!(resp3.field("offsets").field("2"), Reply::Integer(20));
    assert!(matches!(resp3.field("alpha"), Reply::Double(_)));
    let arm = conn.cmd("BANDIT.STATS m ARM p1");
    assert!(matches!(arm, Reply::Map(_)));
    assert_eq!(arm.field("n"), Reply::Integer(10));
    assert_eq!(arm.field("theta").array().len(), 3);
    assert_eq!(arm.field("updated_ms"), Reply::Integer(1_767_225_600_000));

    assert_eq!(error_text(conn.cmd("BANDIT.STATS m ARM nope")), "ERR no such arm");
    assert_eq!(error_text(conn.cmd("BANDIT.STATS nope")), "NOMODEL no such model");
    assert_eq!(error_text(conn.cmd("BANDIT.STATS m ARM")), "ERR syntax error, a value is missing after the last option");
    assert_eq!(error_text(conn.cmd("BANDIT.STATS m FOO")), "ERR syntax error, unexpected 'FOO'");
    assert_eq!(error_text(conn.cmd("BANDIT.STATS m ARM p1 extra")), "ERR syntax error, unexpected 'extra'");
    assert_eq!(error_text(conn.cmd("BANDIT.STATS")), "ERR wrong number of arguments for 'bandit.stats' command");
}

/// RANK WITHSCORES of every arm and of an arm the model lacks (its prior),
/// for a few contexts: what users of a restored model see.
fn every_score(conn: &mut Connection, key: &str, ids: &[String], dim: usize) -> Vec<Reply> {
    (0..3)
        .map(|seed| {
            let mut args: Vec<String> = vec!["BANDIT.RANK".into(), key.into(), "CONTEXT".into()];
            args.extend(strings(&context(dim, seed)));
            args.extend(["ARMS".into(), (ids.len() + 1).to_string()]);
            args.extend(ids.iter().cloned());
            args.extend(["never-seen".into(), "WITHSCORES".into()]);
            conn.call(&args).unwrap()
        })
        .collect()
}

#[test]
fn export_then_load_restores_exactly() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    let mut payload = trained_payload(5, 20, 15, 11);
    payload.offsets = vec![(0, 7), (3, 9)];
    conn.cmd("BANDIT.CREATE m DIM 5 ALPHA 0.3 LAMBDA 2 DECAY 0.998");
    conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&payload).unwrap()]).unwrap();
    let arm_ids: Vec<String> = payload.arms.iter().map(|a| a.id.clone()).collect();
    let scores = every_score(&mut conn, "m", &arm_ids, 5);
    // The prior of an unknown arm depends on ALPHA and LAMBDA: 0.3·√(xᵀx/2).
    let prior = scored_pairs(&scores[0]).into_iter().find(|(id, _)| id == "never-seen").unwrap().1;
    assert!(close(prior, prior_score(&context(5, 0), 0.3, 2.0), 1e-6), "{prior}");

    let binary = conn.cmd("BANDIT.EXPORT m").bytes();
    assert_eq!(&binary[..4], b"BNDT");
    let decoded = bandit_core::codec::decode(&binary, &Limits::default()).unwrap();
    assert_eq!(decoded.arms, payload.arms, "export carries every field of every arm, A included");
    assert_eq!(decoded.offsets, payload.offsets);
    assert_eq!(decoded.settings, Some(bandit_core::PayloadSettings { alpha: 0.3, lambda: 2.0, decay: 0.998 }));

    for format in ["BINARY", "JSON"] {
        let exported = conn.cmd(&format!("BANDIT.EXPORT m FORMAT {format}")).bytes();
        // Into a missing key: the model comes back with its settings.
        let copy = format!("copy-{format}");
        assert_eq!(conn.call(&[b"BANDIT.LOAD".as_slice(), copy.as_bytes(), &exported]).unwrap(), Reply::Integer(20));
        assert!(conn.cmd(&format!("BANDIT.EXPORT {copy}")).bytes() == binary, "{format} round trip is exact");
        assert_eq!(every_score(&mut conn, &copy, &arm_ids, 5), scores, "{format}: every score, prior included");
        for field in ["dim", "alpha", "lambda", "decay", "arms", "updates", "reward_sum", "offsets"] {
            assert_eq!(conn.cmd(&format!("BANDIT.STATS {copy}")).field(field), conn.cmd("BANDIT.STATS m").field(field), "{field}");
        }
        for id in &arm_ids {
            assert_eq!(conn.call(&["BANDIT.STATS", &copy, "ARM", id]).unwrap(), conn.call(&["BANDIT.STATS", "m", "ARM", id]).unwrap());
        }
        // Into a model with other settings: refused, never silently mixed.
        let other = format!("other-{format}");
        conn.cmd(&format!("BANDIT.CREATE {other} DIM 5"));
        let error = error_text(conn.call(&[b"BANDIT.LOAD".as_slice(), other.as_bytes(), &exported]).unwrap());
        assert_eq!(error, "SETTINGS payload has ALPHA 0.3 LAMBDA 2 DECAY 0.998, the model has ALPHA 1 LAMBDA 1 DECAY 1");
        assert_eq!(conn.cmd(&format!("BANDIT.STATS {other}")).field("arms"), Reply::Integer(0));
    }

    let subset = conn.cmd("BANDIT.EXPORT m ARMS 4 p2 p2 nope p7 FORMAT JSON").bytes();
    let subset = bandit_core::codec::decode(&subset, &Limits::default()).unwrap();
    let ids: Vec<&str> = subset.arms.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["p2", "p7"]);
    assert_eq!(subset.offsets, payload.offsets);

    assert_eq!(error_text(conn.cmd("BANDIT.EXPORT m FORMAT XML")), "ERR syntax error, FORMAT is BINARY or JSON");
    assert_eq!(error_text(conn.cmd("BANDIT.EXPORT m ARMS 2 a")), "ERR syntax error, ARMS 2 is followed by 1 arguments");
    assert_eq!(error_text(conn.cmd("BANDIT.EXPORT m BOGUS")), "ERR syntax error, unexpected 'BOGUS'");
    assert_eq!(error_text(conn.cmd("BANDIT.EXPORT nope")), "NOMODEL no such model");
}

#[test]
fn load_is_bounded_by_max_payload_bytes() {
    let server = RedisServer::with_options(ServerOptions {
        module_args: vec!["MAX-PAYLOAD-BYTES".into(), "2000".into()],
        ..Default::default()
    });
    let mut conn = server.connect();
    let small = encode_binary(&trained_payload(3, 2, 5, 1)).unwrap();
    let large = encode_binary(&trained_payload(3, 40, 5, 1)).unwrap();
    assert!(small.len() <= 2000 && large.len() > 2000, "{} {}", small.len(), large.len());
    assert_eq!(conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &small]).unwrap(), Reply::Integer(2));
    let error = error_text(conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &large]).unwrap());
    assert_eq!(error, format!("ERR payload size is {}, the limit is 2000", large.len()));
    assert_eq!(conn.cmd("BANDIT.STATS m").field("arms"), Reply::Integer(2));
}

#[test]
fn generic_key_commands_work_on_models() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&trained_payload(8, 50, 5, 1)).unwrap()]).unwrap();
    let usage = conn.cmd("MEMORY USAGE m").integer();
    assert!(usage > 50 * (8 + 36 + 8 + 36) * 8, "MEMORY USAGE counts the arm table: {usage}");
    assert_eq!(conn.cmd("COPY m m2"), Reply::Integer(1));
    assert_eq!(conn.cmd("BANDIT.EXPORT m2").bytes(), conn.cmd("BANDIT.EXPORT m").bytes());
    assert_eq!(conn.cmd("RENAME m m3"), Reply::Status("OK".into()));
    assert_eq!(conn.cmd("DEL m2 m3"), Reply::Integer(2));
    assert_eq!(conn.cmd("DBSIZE"), Reply::Integer(0));
}
