//! Models survive DEBUG RELOAD, an RDB restart and an AOF restart bit for
//! bit, replicate to replicas only on real change, and obey ACLs.

use std::time::Duration;

use bandit_core::codec::encode_binary;
use bandit_tests::fixtures::{context, trained_payload};
use bandit_tests::resp::{Connection, Reply};
use bandit_tests::server::{wait_until, RedisServer, ServerOptions};

/// Everything observable about a model: its exact export and its statistics
/// (memory_bytes aside, which depends on allocation history).
fn observe(conn: &mut Connection, key: &str) -> (Vec<u8>, Vec<(String, Reply)>) {
    let export = conn.call(&["BANDIT.EXPORT", key]).unwrap().bytes();
    let stats = conn.call(&["BANDIT.STATS", key]).unwrap().pairs();
    let stats = stats.into_iter().filter(|(field, _)| field != "memory_bytes").collect();
    (export, stats)
}

fn load(conn: &mut Connection, key: &str, dim: usize, arms: usize, seed: u64, offsets: Vec<(i32, i64)>) -> Reply {
    let mut payload = trained_payload(dim, arms, 10, seed);
    for arm in &mut payload.arms {
        arm.id = format!("{}-{seed}", arm.id);
    }
    payload.offsets = offsets;
    conn.call(&[b"BANDIT.LOAD".as_slice(), key.as_bytes(), &encode_binary(&payload).unwrap()]).unwrap()
}

fn populate(conn: &mut Connection) {
    conn.cmd("BANDIT.CREATE m DIM 6 ALPHA 0.25 LAMBDA 3");
    // Small batches, so each stays under the AOF test's payload limit.
    load(conn, "m", 6, 10, 1, vec![(0, 10), (1, 20)]);
    load(conn, "m", 6, 10, 2, vec![(0, 15)]);
    load(conn, "m", 6, 10, 5, vec![(0, 16)]);
    load(conn, "other", 3, 5, 3, vec![]);
    conn.cmd("BANDIT.CREATE empty DIM 4");
}

#[test]
fn debug_reload_keeps_models_exactly() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    populate(&mut conn);
    let before: Vec<_> = ["m", "other", "empty"].iter().map(|k| observe(&mut conn, k)).collect();
    assert_eq!(conn.cmd("DEBUG RELOAD"), Reply::Status("OK".into()));
    let after: Vec<_> = ["m", "other", "empty"].iter().map(|k| observe(&mut conn, k)).collect();
    assert!(before == after, "DEBUG RELOAD changed a model");
    assert_eq!(conn.cmd("BANDIT.STATS m").field("alpha").number(), 0.25);
}

#[test]
fn rdb_restart_keeps_models_exactly() {
    let mut server = RedisServer::start();
    let mut conn = server.connect();
    populate(&mut conn);
    let before: Vec<_> = ["m", "other", "empty"].iter().map(|k| observe(&mut conn, k)).collect();
    assert_eq!(conn.cmd("SAVE"), Reply::Status("OK".into()));
    server.restart(false);
    let mut conn = server.connect();
    let after: Vec<_> = ["m", "other", "empty"].iter().map(|k| observe(&mut conn, k)).collect();
    assert!(before == after, "RDB restart changed a model");
    let x = context(6, 1);
    let args = |x: &[f64]| {
        let mut args = vec!["BANDIT.RANK".to_string(), "m".into(), "CONTEXT".into()];
        args.extend(x.iter().map(|v| v.to_string()));
        args.extend(["TOP".into(), "3".into()]);
        args
    };
    assert_eq!(conn.call(&args(&x)).unwrap().array().len(), 3);
}

#[test]
fn aof_restart_keeps_models_exactly_even_in_chunks() {
    // A small payload limit forces the AOF rewrite to split models over
    // several BANDIT.LOADs, each of which must still be accepted on replay.
    let options = ServerOptions {
        module_args: vec!["MAX-PAYLOAD-BYTES".into(), "8000".into()],
        // Without the RDB preamble the rewrite emits commands, through the
        // module's own AOF callback.
        server_args: vec!["--appendonly".into(), "yes".into(), "--aof-use-rdb-preamble".into(), "no".into()],
    };
    let mut server = RedisServer::with_options(options);
    let mut conn = server.connect();
    populate(&mut conn);
    assert!(conn.cmd("BGREWRITEAOF").text().contains("rewriting"));
    wait_until("the AOF rewrite", Duration::from_secs(20), || {
        server.info_field("persistence", "aof_rewrite_in_progress") == "0"
            && server.info_field("persistence", "aof_rewrite_scheduled") == "0"
            && server.info_field("persistence", "aof_last_bgrewrite_status") == "ok"
    });
    let base = std::fs::read_dir(server.dir().join("appendonlydir"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|entry| entry.file_name().to_string_lossy().contains(".base.aof"))
        .map(|entry| std::fs::read(entry.path()).unwrap())
        .expect("a base AOF file");
    let loads = base.windows(11).filter(|w| w.eq_ignore_ascii_case(b"BANDIT.LOAD")).count();
    assert!(loads >= 3, "expected the 30-arm model split over several LOADs, found {loads} LOADs");
    // Written after the rewrite: replayed from the incremental AOF.
    load(&mut conn, "m", 6, 3, 4, vec![(2, 5)]);
    let keys = ["m", "other", "empty"];
    let before: Vec<_> = keys.iter().map(|k| observe(&mut conn, k)).collect();
    server.restart(false);
    let mut conn = server.connect();
    let after: Vec<_> = keys.iter().map(|k| observe(&mut conn, k)).collect();
    for ((key, b), a) in keys.iter().zip(&before).zip(&after) {
        assert!(b.0 == a.0, "{key}: the export differs after the AOF restart");
        // Settings and content survive; the load counters count the replayed LOADs.
        for field in ["dim", "alpha", "lambda", "arms", "updates", "reward_sum", "offsets"] {
            let find = |stats: &Vec<(String, Reply)>| stats.iter().find(|(f, _)| f == field).cloned();
            assert_eq!(find(&b.1), find(&a.1), "{key}.{field}");
        }
    }
    assert!(!server.log().contains("Bad file format"), "AOF replay error:\n{}", server.log());
}

#[test]
fn replicas_receive_real_changes_only_and_rank_read_only() {
    let master = RedisServer::start();
    let replica = RedisServer::with_options(master.replica_options());
    wait_until("the replica link", Duration::from_secs(20), || {
        replica.info_field("replication", "master_link_status") == "up"
    });
    let mut conn = master.connect();
    let mut replica_conn = replica.connect();
    conn.cmd("BANDIT.CREATE m DIM 4");
    load(&mut conn, "m", 4, 12, 9, vec![(0, 3)]);
    let expected = conn.cmd("BANDIT.EXPORT m").bytes();
    wait_until("the model on the replica", Duration::from_secs(10), || {
        replica_conn.cmd("BANDIT.EXPORT m").bytes() == expected
    });
    let rank = "BANDIT.RANK m CONTEXT 0.1 0.2 0.3 0.4 TOP 5 WITHSCORES";
    assert_eq!(replica_conn.cmd(rank), conn.cmd(rank));
    assert_eq!(replica_conn.cmd("BANDIT.STATS m").field("arms"), Reply::Integer(12));
    let refused = replica_conn.cmd("BANDIT.CREATE x DIM 2");
    assert!(refused.text().starts_with("READONLY"), "{refused:?}");

    // No-op writes are not propagated: the replication offset stays put.
    let offset = || master.info_field("replication", "master_repl_offset");
    let settled = offset();
    conn.cmd("BANDIT.CREATE m DIM 4");
    assert_eq!(load(&mut conn, "m", 4, 12, 9, vec![(0, 3)]), Reply::Integer(0));
    assert!(conn.cmd("BANDIT.RANK m CONTEXT 1 1 1 1").array().len() == 12);
    assert_eq!(offset(), settled, "a write that changed nothing was replicated");
    assert_eq!(load(&mut conn, "m", 4, 2, 10, vec![(0, 4)]), Reply::Integer(2));
    assert_ne!(offset(), settled);
    let expected = conn.cmd("BANDIT.EXPORT m").bytes();
    wait_until("the second load on the replica", Duration::from_secs(10), || {
        replica_conn.cmd("BANDIT.EXPORT m").bytes() == expected
    });
}

#[test]
fn acl_user_can_rank_but_not_load() {
    let server = RedisServer::start();
    let mut admin = server.connect();
    admin.cmd("BANDIT.CREATE model:shop DIM 2");
    admin.cmd("BANDIT.CREATE other:shop DIM 2");
    let setuser = admin.cmd("ACL SETUSER ranker on >secret resetkeys ~model:* -@all +bandit.rank");
    assert_eq!(setuser, Reply::Status("OK".into()), "{setuser:?}");

    let mut ranker = server.connect();
    assert_eq!(ranker.cmd("AUTH ranker secret"), Reply::Status("OK".into()));
    assert_eq!(ranker.cmd("BANDIT.RANK model:shop CONTEXT 1 0 ARMS 2 a b"), Reply::Array(vec![Reply::Bulk(b"a".to_vec()), Reply::Bulk(b"b".to_vec())]));
    let load = ranker.call(&["BANDIT.LOAD", "model:shop", r#"{"dim": 2, "arms": []}"#]).unwrap();
    assert!(load.text().starts_with("NOPERM"), "{load:?}");
    let other = ranker.cmd("BANDIT.RANK other:shop CONTEXT 1 0");
    assert!(other.text().starts_with("NOPERM"), "{other:?}");

    // Command metadata as registered: flags and key positions.
    let info = admin.cmd("COMMAND INFO bandit.rank bandit.load");
    let rank = &info.array()[0];
    let flags: Vec<String> = rank.array()[2].array().iter().map(Reply::text).collect();
    assert!(flags.contains(&"readonly".to_string()), "{flags:?}");
    assert_eq!(rank.array()[3..6], [Reply::Integer(1), Reply::Integer(1), Reply::Integer(1)]);
    let load = &info.array()[1];
    let flags: Vec<String> = load.array()[2].array().iter().map(Reply::text).collect();
    assert!(flags.contains(&"write".to_string()) && flags.contains(&"denyoom".to_string()), "{flags:?}");
}
