//! Models survive DEBUG RELOAD, an RDB restart and an AOF restart bit for
//! bit — compared as users see them: every arm's score and statistics, not
//! only the exported bytes — replicate to replicas only on real change, and
//! obey ACLs. The trainer's sequence fences go everywhere the offsets go.
//! Damaged or unknown RDB data is refused, never half-loaded.

use std::time::Duration;

use bandit_core::codec::encode_binary;
use std::collections::BTreeMap;

use bandit_tests::fixtures::{context, trained_payload};
use bandit_tests::reference::{close, payload_arms, prior_score};
use bandit_tests::resp::{Connection, Reply};
use bandit_tests::server::{wait_until, RedisServer, ServerOptions};

/// Everything observable about a model: its exact export, its statistics
/// (memory_bytes aside, which depends on allocation history), STATS of
/// every arm, and RANK WITHSCORES of every arm plus one the model lacks
/// (the prior, which depends on ALPHA and LAMBDA) for two contexts.
#[derive(Debug, PartialEq)]
struct Observed {
    export: Vec<u8>,
    stats: Vec<(String, Reply)>,
    arms: Vec<Reply>,
    scores: Vec<Reply>,
}

fn observe(conn: &mut Connection, key: &str) -> Observed {
    let export = conn.call(&["BANDIT.EXPORT", key]).unwrap().bytes();
    let stats = conn.call(&["BANDIT.STATS", key]).unwrap().pairs();
    let stats: Vec<(String, Reply)> = stats.into_iter().filter(|(field, _)| field != "memory_bytes").collect();
    let payload = bandit_core::codec::decode(&export, &bandit_core::Limits::default()).unwrap();
    let ids: Vec<String> = payload.arms.iter().map(|arm| arm.id.clone()).collect();
    let arms = ids.iter().map(|id| conn.call(&["BANDIT.STATS", key, "ARM", id]).unwrap()).collect();
    let scores = (0..2)
        .map(|seed| {
            let mut args: Vec<String> = vec!["BANDIT.RANK".into(), key.into(), "CONTEXT".into()];
            args.extend(context(payload.dim, seed).iter().map(|v| format!("{v:?}")));
            args.extend(["ARMS".into(), (ids.len() + 1).to_string()]);
            args.extend(ids.iter().cloned());
            args.extend(["never-seen".into(), "WITHSCORES".into()]);
            conn.call(&args).unwrap()
        })
        .collect();
    Observed { export, stats, arms, scores }
}

/// Model "m" as `populate` wrote it, scored by the textbook reference (its
/// ALPHA 0.25 and, for an arm it lacks, its LAMBDA 3): a reload must give
/// users these scores, not only the same bytes as before.
fn assert_m_scores_as_the_reference(conn: &mut Connection) {
    let mut arms = BTreeMap::new();
    for seed in [1, 2, 5] {
        arms.extend(payload_arms(&fixture(6, 10, seed)));
    }
    for seed in 0..2 {
        let x = context(6, seed);
        let mut args: Vec<String> = vec!["BANDIT.RANK".into(), "m".into(), "CONTEXT".into()];
        args.extend(x.iter().map(|v| format!("{v:?}")));
        args.extend(["ARMS".into(), (arms.len() + 1).to_string()]);
        args.extend(arms.keys().cloned());
        args.extend(["never-seen".into(), "WITHSCORES".into()]);
        let reply = conn.call(&args).unwrap();
        let scored: Vec<(String, f64)> = reply.array().chunks(2).map(|p| (p[0].text(), p[1].number())).collect();
        assert_eq!(scored.len(), arms.len() + 1);
        for (id, score) in scored {
            let want = arms.get(&id).map_or_else(|| prior_score(&x, 0.25, 3.0), |arm| arm.score(&x, 0.25));
            assert!(close(score, want, 1e-5), "{id}: {score} vs the reference's {want}");
        }
    }
}

fn observe_all(conn: &mut Connection) -> Vec<Observed> {
    KEYS.iter().map(|key| observe(conn, key)).collect()
}

const KEYS: [&str; 4] = ["m", "other", "empty", "fresh"];

/// The arms `load` writes for a seed.
fn fixture(dim: usize, arms: usize, seed: u64) -> bandit_core::Payload {
    let mut payload = trained_payload(dim, arms, 10, seed);
    for arm in &mut payload.arms {
        arm.id = format!("{}-{seed}", arm.id);
    }
    payload
}

fn load(conn: &mut Connection, key: &str, dim: usize, arms: usize, seed: u64, offsets: Vec<(i32, i64)>) -> Reply {
    load_fenced(conn, key, dim, arms, seed, offsets, vec![])
}

/// As the sink writes the fences of the partitions a flush moves.
fn load_fenced(conn: &mut Connection, key: &str, dim: usize, arms: usize, seed: u64, offsets: Vec<(i32, i64)>, fences: Vec<(i32, i32, u64)>) -> Reply {
    let mut payload = fixture(dim, arms, seed);
    payload.offsets = offsets;
    payload.fences = fences;
    conn.call(&[b"BANDIT.LOAD".as_slice(), key.as_bytes(), &encode_binary(&payload).unwrap()]).unwrap()
}

/// The fences `populate` writes, by key.
fn populated_fences(key: &str) -> Vec<(i32, i32, u64)> {
    match key {
        "m" => vec![(0, 0, 196_608), (0, 3, 7), (1, 2, u64::MAX)],
        "fresh" => vec![(3, 1, 5)],
        _ => vec![],
    }
}

/// Every model holds exactly the fences `populate` wrote (the export
/// comparisons would not notice fences lost on both sides).
fn assert_populated_fences(conn: &mut Connection) {
    for key in KEYS {
        let export = conn.call(&["BANDIT.EXPORT", key]).unwrap().bytes();
        let payload = bandit_core::codec::decode(&export, &bandit_core::Limits::default()).unwrap();
        assert_eq!(payload.fences, populated_fences(key), "{key}: fences");
    }
}

/// As the sink writes: no update times, so the module stamps them.
fn load_unstamped(conn: &mut Connection, key: &str, dim: usize, arms: usize, seed: u64, offsets: Vec<(i32, i64)>) -> Reply {
    let mut payload = fixture(dim, arms, seed);
    for arm in &mut payload.arms {
        arm.updated_ms = None;
    }
    payload.offsets = offsets;
    conn.call(&[b"BANDIT.LOAD".as_slice(), key.as_bytes(), &encode_binary(&payload).unwrap()]).unwrap()
}

fn populate(conn: &mut Connection) {
    conn.cmd("BANDIT.CREATE m DIM 6 ALPHA 0.25 LAMBDA 3 DECAY 0.999");
    // Small batches, so each stays under the AOF test's payload limit.
    load(conn, "m", 6, 10, 1, vec![(0, 10), (1, 20)]);
    load_unstamped(conn, "m", 6, 10, 2, vec![(0, 15)]);
    load_fenced(conn, "m", 6, 10, 5, vec![(0, 16), (1, 20)], vec![(0, 0, 196_607), (0, 3, 7), (1, 2, u64::MAX)]);
    // A later flush of partition 0 raises one of its fences.
    load_fenced(conn, "m", 6, 0, 5, vec![(0, 17)], vec![(0, 0, 196_608)]);
    load(conn, "other", 3, 5, 3, vec![]);
    conn.cmd("BANDIT.CREATE empty DIM 4 ALPHA 0.7 LAMBDA 0.5");
    // Created by a LOAD, with the module's defaults.
    let mut created = fixture(2, 4, 6);
    for arm in &mut created.arms {
        arm.updated_ms = None;
    }
    created.offsets = vec![(3, 1)];
    created.fences = populated_fences("fresh");
    conn.call(&[b"BANDIT.LOAD".as_slice(), b"fresh", &encode_binary(&created).unwrap()]).unwrap();
}

#[test]
fn debug_reload_keeps_models_exactly() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    populate(&mut conn);
    let before = observe_all(&mut conn);
    assert_eq!(conn.cmd("DEBUG RELOAD"), Reply::Status("OK".into()));
    assert!(before == observe_all(&mut conn), "DEBUG RELOAD changed a model");
    assert_m_scores_as_the_reference(&mut conn);
    assert_populated_fences(&mut conn);
    assert_eq!(conn.cmd("BANDIT.STATS m").field("alpha").number(), 0.25);
}

#[test]
fn rdb_restart_keeps_models_exactly() {
    let mut server = RedisServer::start();
    let mut conn = server.connect();
    populate(&mut conn);
    let before = observe_all(&mut conn);
    assert_eq!(conn.cmd("SAVE"), Reply::Status("OK".into()));
    server.restart(false);
    let mut conn = server.connect();
    assert!(before == observe_all(&mut conn), "RDB restart changed a model");
    assert_m_scores_as_the_reference(&mut conn);
    assert_populated_fences(&mut conn);
}

/// The 64-bit id Redis writes before each value of a module type: the nine
/// characters of the type name in a 64-character set, then the encoding
/// version in the low 10 bits (Redis' moduleTypeEncodeId), big-endian after
/// the 0x81 length prefix.
fn module_type_id(name: &str, encver: u64) -> [u8; 9] {
    const CHARSET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = 0u64;
    for c in name.chars() {
        id = (id << 6) | CHARSET.find(c).unwrap() as u64;
    }
    id = (id << 10) | encver;
    let mut out = [0x81; 9];
    out[1..].copy_from_slice(&id.to_be_bytes());
    out
}

fn replace_all(haystack: &mut [u8], needle: &[u8], with: &[u8]) -> usize {
    assert_eq!(needle.len(), with.len());
    let mut count = 0;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        if &haystack[i..i + needle.len()] == needle {
            haystack[i..i + needle.len()].copy_from_slice(with);
            count += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    count
}

/// Saves the models, changes the RDB file with `damage`, and returns what
/// the server says when it starts on it.
fn restart_on_damaged_rdb(damage: impl Fn(&mut Vec<u8>)) -> String {
    // No checksum, so the module's own checks are what is tested, and no
    // compression, so the snapshot's bytes stand in the file as written.
    let mut server = RedisServer::with_options(ServerOptions {
        server_args: vec!["--rdbchecksum".into(), "no".into(), "--rdbcompression".into(), "no".into()],
        ..Default::default()
    });
    let mut conn = server.connect();
    populate(&mut conn);
    assert_eq!(conn.cmd("SAVE"), Reply::Status("OK".into()));
    server.shutdown();
    let path = server.dir().join("dump.rdb");
    let mut rdb = std::fs::read(&path).unwrap();
    damage(&mut rdb);
    std::fs::write(&path, rdb).unwrap();
    match server.try_relaunch() {
        Ok(()) => panic!("the server loaded a damaged RDB"),
        Err(log) => log,
    }
}

#[test]
fn an_unknown_snapshot_version_is_refused() {
    let log = restart_on_damaged_rdb(|rdb| {
        let written = module_type_id("BanditUCB", bandit_core::snapshot::VERSION as u64);
        assert_eq!(replace_all(rdb, &written, &module_type_id("BanditUCB", 7)), KEYS.len(), "one id per model");
    });
    assert!(log.contains("bandit: cannot load model from RDB: unsupported snapshot encoding version 7"), "{log}");
}

#[test]
fn a_damaged_snapshot_is_refused() {
    // Model "m" is written with ALPHA 0.25 then LAMBDA 3; a negative LAMBDA
    // cannot come from any model, so loading it must fail, not go through.
    let log = restart_on_damaged_rdb(|rdb| {
        let settings: Vec<u8> = [0.25f64, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let damaged: Vec<u8> = [0.25f64, -3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(replace_all(rdb, &settings, &damaged), 1);
    });
    assert!(log.contains("bandit: cannot load model from RDB: LAMBDA must be a finite number > 0"), "{log}");
    let log = restart_on_damaged_rdb(|rdb| {
        // The arm count of "m" (30 ids, a u64 before the first id) made huge.
        let ids: Vec<u8> = [30u64.to_le_bytes().as_slice(), &4u64.to_le_bytes(), b"p0-1"].concat();
        let huge: Vec<u8> = [u64::MAX.to_le_bytes().as_slice(), &4u64.to_le_bytes(), b"p0-1"].concat();
        assert_eq!(replace_all(rdb, &ids, &huge), 1);
    });
    assert!(log.contains("bandit: cannot load model from RDB: invalid payload: model snapshot"), "{log}");
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
    // Written after the rewrite without update times, as the sink writes:
    // the AOF must hold the times the module stamped, not restamp on replay.
    load_unstamped(&mut conn, "m", 6, 3, 4, vec![(2, 5)]);
    load_unstamped(&mut conn, "late", 3, 2, 8, vec![]);
    let keys: Vec<&str> = KEYS.iter().copied().chain(["late"]).collect();
    let before: Vec<_> = keys.iter().map(|k| observe(&mut conn, k)).collect();
    // Replay happens at a later millisecond than the original LOADs.
    std::thread::sleep(Duration::from_millis(5));
    server.restart(false);
    let mut conn = server.connect();
    let after: Vec<_> = keys.iter().map(|k| observe(&mut conn, k)).collect();
    for ((key, b), a) in keys.iter().zip(&before).zip(&after) {
        assert!(b.export == a.export, "{key}: the export differs after the AOF restart");
        assert_eq!(b.arms, a.arms, "{key}: STATS of an arm (updated_ms included) differs");
        assert_eq!(b.scores, a.scores, "{key}: scores differ");
        // Settings, content and the model version (`loads`, which seeds the
        // randomised policies) survive, however many chunks the rewrite took.
        for field in ["dim", "alpha", "lambda", "decay", "arms", "updates", "reward_sum", "offsets", "loads"] {
            let find = |stats: &Vec<(String, Reply)>| stats.iter().find(|(f, _)| f == field).cloned();
            assert_eq!(find(&b.stats), find(&a.stats), "{key}.{field}");
        }
    }
    assert!(!server.log().contains("Bad file format"), "AOF replay error:\n{}", server.log());
    assert_populated_fences(&mut conn);
    // Only the AOF states a version; a client cannot set one.
    let mut stated = fixture(3, 1, 9);
    stated.version = Some(99);
    let reply = conn.call(&[b"BANDIT.LOAD".as_slice(), b"m", &bandit_core::codec::encode_binary(&stated).unwrap()]).unwrap();
    assert_eq!(reply, Reply::Error("ERR a payload states a model version only in an AOF rewrite".into()));
}

#[test]
fn replicas_receive_real_changes_only_and_rank_read_only() {
    let master = RedisServer::start();
    // The replica's module defaults differ: what the primary filled in must
    // reach it stated, not be filled in again from its own settings. Its
    // payload limit is smaller than the LOADs it receives: what the primary
    // accepted must still be applied, never dropped.
    let mut replica_options = master.replica_options();
    replica_options.module_args =
        vec!["ALPHA".into(), "5".into(), "LAMBDA".into(), "7".into(), "MAX-PAYLOAD-BYTES".into(), "600".into()];
    let replica = RedisServer::with_options(replica_options);
    wait_until("the replica link", Duration::from_secs(20), || {
        replica.info_field("replication", "master_link_status") == "up"
    });
    let mut conn = master.connect();
    let mut replica_conn = replica.connect();
    conn.cmd("BANDIT.CREATE m DIM 4");
    load(&mut conn, "m", 4, 12, 9, vec![(0, 3)]);
    load_unstamped(&mut conn, "m", 4, 5, 11, vec![(1, 1)]);
    load_fenced(&mut conn, "m", 4, 0, 11, vec![(1, 2)], vec![(1, 0, 44), (1, 5, 1 << 40)]);
    load_unstamped(&mut conn, "created", 2, 3, 12, vec![]);
    let expected = conn.cmd("BANDIT.EXPORT created").bytes();
    wait_until("the models on the replica", Duration::from_secs(10), || {
        replica_conn.call(&["BANDIT.EXPORT", "created"]).unwrap() == Reply::Bulk(expected.clone())
    });
    for key in ["m", "created"] {
        // last_load_ms is each server's own clock at its apply.
        let without_clock = |mut observed: Observed| {
            observed.stats.retain(|(field, _)| field != "last_load_ms");
            observed
        };
        let (on_replica, on_primary) = (observe(&mut replica_conn, key), observe(&mut conn, key));
        assert!(without_clock(on_replica) == without_clock(on_primary), "{key} differs on the replica");
    }
    let rank = "BANDIT.RANK m CONTEXT 0.1 0.2 0.3 0.4 TOP 5 WITHSCORES";
    assert_eq!(replica_conn.cmd(rank), conn.cmd(rank));
    let replicated = bandit_core::codec::decode(&replica_conn.cmd("BANDIT.EXPORT m").bytes(), &bandit_core::Limits::default()).unwrap();
    assert_eq!(replicated.fences, vec![(1, 0, 44), (1, 5, 1 << 40)]);
    assert_eq!(replica_conn.cmd("BANDIT.STATS m").field("arms"), Reply::Integer(17));
    let refused = replica_conn.cmd("BANDIT.CREATE x DIM 2");
    assert!(refused.text().starts_with("READONLY"), "{refused:?}");

    // No-op writes are not propagated: the replication offset stays put.
    let offset = || master.info_field("replication", "master_repl_offset");
    let settled = offset();
    conn.cmd("BANDIT.CREATE m DIM 4");
    assert_eq!(load(&mut conn, "m", 4, 12, 9, vec![(0, 3)]), Reply::Integer(0));
    assert_eq!(conn.cmd("BANDIT.RANK m CONTEXT 1 1 1 1").array().len(), 17);
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

/// An RDB file written by the module as released before the snapshot was
/// written without bincode (encoding version 1) still loads, every model
/// exactly as it was: the JSON exports beside it were taken from that server.
#[test]
fn rdb_files_of_earlier_builds_still_load() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut server = RedisServer::start();
    server.shutdown();
    std::fs::copy(fixtures.join("models-v1.rdb"), server.dir().join("dump.rdb")).unwrap();
    server.relaunch();
    let mut conn = server.connect();
    for (key, loads) in [("m", 2), ("other", 1), ("empty", 0)] {
        // JSON carries every value exactly; the files predate DECAY, which
        // reads as 1 (no forgetting), as version-1 snapshots load.
        let limits = bandit_core::Limits::default();
        let want = bandit_core::codec::decode(&std::fs::read(fixtures.join(format!("models-v1-{key}.json"))).unwrap(), &limits).unwrap();
        let got = conn.call(&["BANDIT.EXPORT", key, "FORMAT", "JSON"]).unwrap().bytes();
        let got = bandit_core::codec::decode(&got, &limits).unwrap();
        assert_eq!(got, want, "{key}: the model differs from the one saved");
        assert_eq!(got.settings.map(|s| s.decay), Some(1.0));
        assert_eq!(conn.call(&["BANDIT.STATS", key]).unwrap().field("loads"), Reply::Integer(loads), "{key}");
    }
    assert_eq!(conn.call(&["BANDIT.STATS", "other", "ARM", "ünïcode id"]).unwrap().field("n"), Reply::Integer(10));
}
