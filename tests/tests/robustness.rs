//! The module never takes the server down: bad module arguments refuse the
//! load with a reason, and a storm of malformed commands gets error replies.

use bandit_core::codec::encode_binary;
use bandit_tests::fixtures::{trained_payload, Rng};
use bandit_tests::resp::Reply;
use bandit_tests::server::{RedisServer, ServerOptions};

#[test]
fn module_arguments_are_applied_and_shown_in_info() {
    let server = RedisServer::with_options(ServerOptions {
        module_args: ["ALPHA", "0.3", "LAMBDA", "2", "MAX-DIM", "8", "MAX-TOP", "7"].map(String::from).to_vec(),
        ..Default::default()
    });
    assert_eq!(server.info_field("bandit", "bandit_alpha"), "0.3");
    assert_eq!(server.info_field("bandit", "bandit_max_dim"), "8");
    assert_eq!(server.info_field("bandit", "bandit_max_top"), "7");
    let mut conn = server.connect();
    conn.cmd("BANDIT.CREATE m DIM 8");
    let stats = conn.cmd("BANDIT.STATS m");
    assert_eq!(stats.field("alpha").number(), 0.3);
    assert_eq!(stats.field("lambda").number(), 2.0);
    assert_eq!(conn.cmd("BANDIT.CREATE big DIM 9").text(), "ERR DIM is 9, the limit is 8");
}

#[test]
fn bad_module_arguments_refuse_the_load_with_a_reason() {
    for (args, reason) in [
        (vec!["BOGUS", "1"], "unknown module argument 'BOGUS'"),
        (vec!["ALPHA"], "module argument 'ALPHA' has no value"),
        (vec!["LAMBDA", "-1"], "LAMBDA must be a finite number > 0"),
        (vec!["MAX-DIM", "zero"], "MAX-DIM must be a positive integer"),
    ] {
        let options = ServerOptions { module_args: args.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        match RedisServer::try_with_options(options) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(log) => assert!(log.contains(reason), "{args:?}: {log}"),
        }
    }
}

#[test]
fn malformed_commands_never_crash_the_server() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &encode_binary(&trained_payload(3, 20, 5, 1)).unwrap()]).unwrap();
    conn.cmd("SET plain x");
    let before = conn.cmd("BANDIT.EXPORT m").bytes();
    let commands = ["BANDIT.RANK", "BANDIT.LOAD", "BANDIT.CREATE", "BANDIT.STATS", "BANDIT.EXPORT"];
    let tokens: [&[u8]; 28] = [
        b"m", b"plain", b"missing", b"CONTEXT", b"CONTEXTBLOB", b"ARMS", b"TOP", b"ALPHA", b"WITHSCORES",
        b"FORMAT", b"JSON", b"BINARY", b"DIM", b"LAMBDA", b"ARM", b"0", b"1", b"-1", b"3", b"1e308",
        b"99999999999999999999", b"nan", b"-inf", b"", b"\x00\xff\xfe", b"{", b"BNDT\x01\x00\xff", b"p1",
    ];
    let mut rng = Rng::new(42);
    let mut errors = 0;
    for _ in 0..5000 {
        let mut args: Vec<Vec<u8>> = vec![commands[(rng.next_u64() % 5) as usize].as_bytes().to_vec()];
        for _ in 0..(rng.next_u64() % 12) {
            let token = tokens[(rng.next_u64() % tokens.len() as u64) as usize];
            // Sometimes random bytes instead of a token.
            if rng.unit() < 0.1 {
                args.push((0..(rng.next_u64() % 40)).map(|_| rng.next_u64() as u8).collect());
            } else {
                args.push(token.to_vec());
            }
        }
        // Keep the model itself out of reach of accidental valid writes.
        if args.len() > 1 && args[1] == b"m" && (args[0] == b"BANDIT.LOAD" || args[0] == b"BANDIT.CREATE") {
            args[1] = b"scratch".to_vec();
        }
        let reply = conn.call(&args).unwrap_or_else(|e| panic!("server died on {args:?}: {e}\n{}", server.log()));
        if reply.is_error() {
            errors += 1;
        }
    }
    assert!(errors > 1000, "the storm should mostly hit error paths, got {errors} errors");
    assert_eq!(conn.cmd("PING"), Reply::Status("PONG".into()));
    assert!(conn.cmd("BANDIT.EXPORT m").bytes() == before, "reads changed the model");
    assert!(!server.log().contains("internal error"), "a handler panicked:\n{}", server.log());
}

#[test]
fn rank_threads_split_large_scans_with_identical_results() {
    use bandit_core::{Limits, Model, ModelSettings, RankRequest, RankScratch};
    let server = RedisServer::with_options(ServerOptions {
        module_args: vec!["RANK-THREADS".into(), "2".into()],
        ..Default::default()
    });
    assert_eq!(server.info_field("bandit", "bandit_rank_threads"), "2");
    // 2000 arms × 560 values: above the size where a scan is split.
    let payload = trained_payload(32, 2000, 3, 4);
    let mut conn = server.connect();
    conn.call(&[b"BANDIT.LOAD".as_slice(), b"big", &encode_binary(&payload).unwrap()]).unwrap();
    let x = bandit_tests::fixtures::context(32, 8);
    let mut args = vec!["BANDIT.RANK".to_string(), "big".into(), "CONTEXT".into()];
    args.extend(x.iter().map(|v| format!("{v:?}")));
    args.extend(["TOP", "20", "WITHSCORES"].map(String::from));
    let reply = conn.call(&args).unwrap();
    let mut local = Model::new(ModelSettings { dim: 32, alpha: 1.0, lambda: 1.0, decay: 1.0 });
    local.apply(&payload, 0, &Limits::default()).unwrap();
    let mut scratch = RankScratch::default();
    let expected = local.rank_all(&RankRequest { context: &x, alpha: 1.0, top: Some(20) }, &mut scratch).unwrap();
    let got: Vec<(String, f64)> = reply.array().chunks(2).map(|p| (p[0].text(), p[1].number())).collect();
    let want: Vec<(String, f64)> = expected.iter().map(|r| (local.id_at(r.index as usize).to_owned(), r.score)).collect();
    assert_eq!(got, want);
    let refused = RedisServer::try_with_options(ServerOptions {
        module_args: vec!["RANK-THREADS".into(), "64".into()],
        ..Default::default()
    });
    assert!(refused.unwrap_err().contains("RANK-THREADS must be at most 16"));
}
