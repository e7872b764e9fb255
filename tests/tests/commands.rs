//! Every BANDIT.* command and option against a real redis-server, in RESP2
//! and RESP3, with the exact error replies.

use bandit_core::codec::{encode_binary, encode_json};
use bandit_core::{Limits, Model, ModelSettings, RankRequest, RankScratch};
use bandit_tests::fixtures::{context, trained_payload};
use bandit_tests::resp::{Connection, Reply};
use bandit_tests::server::RedisServer;

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
    assert_eq!(conn.cmd("BANDIT.CREATE m DIM 3"), Reply::Status("OK".into()));
    assert_eq!(conn.cmd("BANDIT.CREATE m DIM 3 ALPHA 0.5"), Reply::Status("OK".into()));
    assert_eq!(error_text(conn.cmd("BANDIT.CREATE m DIM 4")), "ERR model exists with dim 3");
    assert_eq!(error_text(conn.cmd("BANDIT.CREATE m DIM 3 ALPHA 1")), "ERR model exists with ALPHA 0.5 LAMBDA 2");
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
        ("BANDIT.CREATE k DIM 3 BOGUS 1", "ERR syntax error"),
        ("BANDIT.CREATE k DIM 3 ALPHA", "ERR syntax error"),
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
        ("m", r#"{"dim": 3, "arms": []}"#.into(), "ERR payload has 3 values, model dim is 2"),
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
    assert_eq!(error_text(conn.call(&["BANDIT.LOAD", "m", good, "extra"]).unwrap()), "ERR wrong number of arguments for 'bandit.load' command");
    assert_eq!(conn.cmd("BANDIT.STATS m").field("arms"), Reply::Integer(0));
}

#[test]
fn rank_scores_match_the_core_and_options_work() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    let dim = 15;
    let payload = trained_payload(dim, 200, 30, 7);
    conn.call(&[b"BANDIT.CREATE".as_slice(), b"m", b"DIM", b"15", b"ALPHA", b"0.8", b"LAMBDA", b"1"]).unwrap();
    conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&payload).unwrap()]).unwrap();
    // The same model in-process, for the reference order and scores.
    let mut local = Model::new(ModelSettings { dim, alpha: 0.8, lambda: 1.0 });
    local.apply(&payload, 0, &Limits::default()).unwrap();
    let mut scratch = RankScratch::default();
    let x = context(dim, 99);

    let expected = local.rank_all(&RankRequest { context: &x, alpha: 0.8, top: Some(5) }, &mut scratch).unwrap().to_vec();
    let reply = rank(&mut conn, "m", &x, &["TOP", "5", "WITHSCORES"]);
    let items = reply.array();
    assert_eq!(items.len(), 10, "RESP2 WITHSCORES is a flat id/score array");
    for (pair, want) in items.chunks(2).zip(&expected) {
        assert_eq!(pair[0].text(), local.id_at(want.index as usize));
        assert_eq!(pair[1].number(), want.score, "scores are the core's, to the bit");
    }

    // Without TOP every arm comes back, best first.
    assert_eq!(rank(&mut conn, "m", &x, &[]).array().len(), 200);

    // ALPHA overrides the model default.
    let expected = local.rank_all(&RankRequest { context: &x, alpha: 0.0, top: Some(3) }, &mut scratch).unwrap().to_vec();
    let got = ids(&rank(&mut conn, "m", &x, &["ALPHA", "0", "TOP", "3"]));
    let want: Vec<String> = expected.iter().map(|r| local.id_at(r.index as usize).to_owned()).collect();
    assert_eq!(got, want);

    // ARMS: candidates only, unknown ones with the prior, duplicates once.
    let reply = rank(&mut conn, "m", &x, &["ARMS", "4", "p3", "new-product", "p3", "p150", "WITHSCORES"]);
    let pairs: Vec<(String, f64)> = reply.array().chunks(2).map(|p| (p[0].text(), p[1].number())).collect();
    assert_eq!(pairs.len(), 3);
    let prior = 0.8 * x.iter().map(|v| v * v).sum::<f64>().sqrt();
    let new_score = pairs.iter().find(|(id, _)| id == "new-product").unwrap().1;
    assert!((new_score - prior).abs() < 1e-12, "{new_score} vs {prior}");
    assert!(pairs.windows(2).all(|w| w[0].1 >= w[1].1));

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
    assert_eq!(reply.array().len(), zrange.array().len());
    assert_eq!(reply.array()[1], zrange.array()[1], "RESP2 scores are bulk strings, as ZRANGE's");

    assert_eq!(conn.cmd("HELLO 3").field("proto"), Reply::Integer(3));
    let reply = rank(&mut conn, "m", &[1.0, 0.0], &["ARMS", "3", "c", "a", "b", "WITHSCORES"]);
    let zrange = conn.cmd("ZRANGE z 0 -1 REV WITHSCORES");
    let shape = |r: &Reply| r.array().iter().map(|p| (p.array().len(), matches!(p.array()[1], Reply::Double(_)))).collect::<Vec<_>>();
    assert_eq!(shape(&reply), shape(&zrange), "RESP3: [id, double] pairs like ZRANGE");
    assert_eq!(reply.array()[0].array()[0].text(), "a");
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
        ("BANDIT.RANK m CONTEXT 1 2 3 BOGUS", "ERR syntax error"),
        ("BANDIT.RANK m CONTEXT 1 2 TOPP 3", "ERR value is not a valid float"),
        ("BANDIT.RANK m TOP 3 WITHSCORES", "ERR syntax error, CONTEXT or CONTEXTBLOB is required"),
        ("BANDIT.RANK m CONTEXT 1 2 3 CONTEXT 1 2 3", "ERR syntax error, CONTEXT or CONTEXTBLOB given twice"),
        ("BANDIT.RANK m CONTEXTBLOB abc", "ERR CONTEXTBLOB has 3 bytes, expected 12 (float32) or 24 (float64) for dim 3"),
        ("BANDIT.RANK nope CONTEXT 1 2 3", "ERR no such model"),
        ("BANDIT.RANK plain CONTEXT 1 2 3", "WRONGTYPE Operation against a key holding the wrong kind of value"),
        ("BANDIT.RANK m CONTEXT", "ERR wrong number of arguments for 'bandit.rank' command"),
        ("BANDIT.RANK", "ERR wrong number of arguments for 'bandit.rank' command"),
    ];
    for (command, expected) in cases {
        assert_eq!(error_text(conn.cmd(command)), expected, "{command}");
    }
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
        ["dim", "alpha", "lambda", "arms", "updates", "reward_sum", "loads", "last_load_ms", "memory_bytes", "offsets"]
    );
    let reward_sum: f64 = payload.arms.iter().map(|a| a.reward_sum).sum();
    assert_eq!(resp2.field("reward_sum").number(), reward_sum);
    assert!(resp2.field("memory_bytes").integer() > 2 * (3 + 6 + 3 + 6) * 8);

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
    assert_eq!(error_text(conn.cmd("BANDIT.STATS nope")), "ERR no such model");
    assert_eq!(error_text(conn.cmd("BANDIT.STATS m ARM")), "ERR syntax error");
    assert_eq!(error_text(conn.cmd("BANDIT.STATS m FOO")), "ERR syntax error");
    assert_eq!(error_text(conn.cmd("BANDIT.STATS")), "ERR wrong number of arguments for 'bandit.stats' command");
}

#[test]
fn export_then_load_restores_exactly() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    let mut payload = trained_payload(5, 20, 15, 11);
    payload.offsets = vec![(0, 7), (3, 9)];
    conn.call(&[b"BANDIT.CREATE".as_slice(), b"m", b"DIM", b"5", b"ALPHA", b"0.3"]).unwrap();
    conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&payload).unwrap()]).unwrap();

    let binary = conn.cmd("BANDIT.EXPORT m").bytes();
    assert_eq!(&binary[..4], b"BNDT");
    let decoded = bandit_core::codec::decode(&binary, &Limits::default()).unwrap();
    assert_eq!(decoded, payload, "export carries every field, A and offsets included");

    for format in ["BINARY", "JSON"] {
        let exported = conn.cmd(&format!("BANDIT.EXPORT m FORMAT {format}")).bytes();
        let copy = format!("copy-{format}");
        conn.call(&[b"BANDIT.CREATE".as_slice(), copy.as_bytes(), b"DIM", b"5", b"ALPHA", b"0.3"]).unwrap();
        assert_eq!(conn.call(&[b"BANDIT.LOAD".as_slice(), copy.as_bytes(), &exported]).unwrap(), Reply::Integer(20));
        assert!(conn.cmd(&format!("BANDIT.EXPORT {copy}")).bytes() == binary, "{format} round trip is exact");
        let x = context(5, 4);
        assert_eq!(rank(&mut conn, &copy, &x, &["WITHSCORES"]), rank(&mut conn, "m", &x, &["WITHSCORES"]));
    }

    let subset = conn.cmd("BANDIT.EXPORT m ARMS 4 p2 p2 nope p7 FORMAT JSON").bytes();
    let subset = bandit_core::codec::decode(&subset, &Limits::default()).unwrap();
    let ids: Vec<&str> = subset.arms.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["p2", "p7"]);
    assert_eq!(subset.offsets, payload.offsets);

    assert_eq!(error_text(conn.cmd("BANDIT.EXPORT m FORMAT XML")), "ERR syntax error, FORMAT is BINARY or JSON");
    assert_eq!(error_text(conn.cmd("BANDIT.EXPORT m ARMS 2 a")), "ERR syntax error, ARMS 2 is followed by 1 arguments");
    assert_eq!(error_text(conn.cmd("BANDIT.EXPORT nope")), "ERR no such model");
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
