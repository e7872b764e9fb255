//! `BANDIT.LOAD key part PART token index count`: a payload sent in parts is
//! applied when its last part arrives, exactly as one LOAD of the whole
//! payload (same model, same fence, same replication), and nothing of it is
//! visible before; parts that do not follow each other are refused with
//! `PARTS` and the flush being received is dropped.
//!
//! The parts here are cut by the test itself (arms split by hand, each part
//! the whole header), independently of the trainer's splitter; the expected
//! model is the one a single LOAD of the same payload gives on another key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::time::Duration;

use bandit_core::codec::encode_binary;
use bandit_core::Payload;
use bandit_tests::fixtures::{context, trained_payload};
use bandit_tests::resp::{Connection, Reply};
use bandit_tests::server::{wait_until, RedisServer, ServerOptions};

/// A flush as the sink writes it: arms without update times, offsets and
/// fences, built on the model's offsets `base` (−1: none).
fn flush(arms: usize, seed: u64, next: i64, base: i64) -> Payload {
    let mut payload = trained_payload(5, arms, 6, seed);
    for arm in &mut payload.arms {
        arm.updated_ms = None;
    }
    payload.offsets = vec![(0, next), (3, next + 7)];
    payload.base_offsets = vec![(0, base), (3, if base < 0 { -1 } else { base + 7 })];
    payload.fences = vec![(0, 1, 40 + seed), (3, 0, 9)];
    payload
}

/// `payload` cut into parts of the given arm counts, each encoded with the
/// whole header.
fn cut(payload: &Payload, sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut rest = payload.arms.as_slice();
    let parts: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&size| {
            let (arms, after) = rest.split_at(size);
            rest = after;
            encode_binary(&Payload { arms: arms.to_vec(), ..payload.clone() }).unwrap()
        })
        .collect();
    assert!(rest.is_empty(), "the sizes cover every arm");
    parts
}

fn part(conn: &mut Connection, key: &str, bytes: &[u8], token: &str, index: usize, count: usize) -> Reply {
    let (index, count) = (index.to_string(), count.to_string());
    conn.call(&[b"BANDIT.LOAD".as_slice(), key.as_bytes(), bytes, b"PART", token.as_bytes(), index.as_bytes(), count.as_bytes()])
        .unwrap()
}

fn load(conn: &mut Connection, key: &str, bytes: &[u8]) -> Reply {
    conn.call(&[b"BANDIT.LOAD".as_slice(), key.as_bytes(), bytes]).unwrap()
}

/// What a client can see of a model: its export without update times (each
/// LOAD stamps its own clock), STATS without the clock and memory, and a
/// ranking.
fn seen(conn: &mut Connection, key: &str) -> (Payload, Vec<(String, Reply)>, Reply) {
    let export = conn.call(&["BANDIT.EXPORT", key]).unwrap();
    assert!(!export.is_error(), "{key}: {export:?}");
    let mut payload = bandit_core::codec::decode(&export.bytes(), &bandit_core::Limits::unbounded()).unwrap();
    for arm in &mut payload.arms {
        arm.updated_ms = None;
    }
    let mut stats = conn.call(&["BANDIT.STATS", key]).unwrap().pairs();
    stats.retain(|(field, _)| !["memory_bytes", "last_load_ms"].contains(&field.as_str()));
    let mut rank: Vec<String> = vec!["BANDIT.RANK".into(), key.into(), "CONTEXT".into()];
    rank.extend(context(5, 3).iter().map(|v| format!("{v:?}")));
    rank.extend(["TOP".into(), "7".into(), "WITHSCORES".into()]);
    let ranking = conn.call(&rank).unwrap();
    (payload, stats, ranking)
}

fn receiving(server: &RedisServer) -> String {
    server.info_field("bandit", "bandit_loads_receiving")
}

#[test]
fn parts_apply_as_one_load_when_the_last_arrives() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    let first = flush(60, 1, 100, -1);
    // The next flush changes 30 of those arms and adds 20.
    let mut second = flush(50, 2, 180, 100);
    for (index, arm) in second.arms.iter_mut().enumerate() {
        arm.id = if index < 30 { format!("item-{}", index * 2) } else { format!("new-{index}") };
    }
    for payload in [&first, &second] {
        assert!(!load(&mut conn, "whole", &encode_binary(payload).unwrap()).is_error());
    }
    let parts = cut(&first, &[25, 1, 34]);
    assert_eq!(part(&mut conn, "m", &parts[0], "t1", 0, 3), Reply::Integer(0));
    assert_eq!(part(&mut conn, "m", &parts[1], "t1", 1, 3), Reply::Integer(0));
    // Nothing is applied before the last part: the key does not exist yet.
    assert_eq!(conn.call(&["EXISTS", "m"]).unwrap(), Reply::Integer(0));
    assert_eq!(receiving(&server), "1");
    assert_eq!(part(&mut conn, "m", &parts[2], "t1", 2, 3), Reply::Integer(60));
    assert_eq!(receiving(&server), "0");

    let parts = cut(&second, &[10, 20, 20]);
    let before = seen(&mut conn, "m");
    assert_eq!(part(&mut conn, "m", &parts[0], "t2", 0, 3), Reply::Integer(0));
    assert_eq!(part(&mut conn, "m", &parts[1], "t2", 1, 3), Reply::Integer(0));
    assert!(seen(&mut conn, "m") == before, "a flush in parts showed before its last part");
    assert_eq!(part(&mut conn, "m", &parts[2], "t2", 2, 3), Reply::Integer(50));
    assert!(seen(&mut conn, "m") == seen(&mut conn, "whole"), "parts gave another model than one LOAD");
    // The fence holds for the whole: the same flush again is STALE at its
    // last part (the model moved past its base), and changes nothing.
    let after = seen(&mut conn, "m");
    assert_eq!(part(&mut conn, "m", &parts[0], "t3", 0, 3), Reply::Integer(0));
    assert_eq!(part(&mut conn, "m", &parts[1], "t3", 1, 3), Reply::Integer(0));
    let stale = part(&mut conn, "m", &parts[2], "t3", 2, 3);
    assert!(stale.text().starts_with("STALE "), "{stale:?}");
    assert!(seen(&mut conn, "m") == after);
    // One part of one: a plain LOAD.
    let alone = flush(3, 4, 200, 180);
    assert_eq!(part(&mut conn, "m", &encode_binary(&alone).unwrap(), "t4", 0, 1), Reply::Integer(3));
}

#[test]
fn parts_out_of_order_are_refused_and_the_flush_dropped() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    let payload = flush(30, 5, 10, -1);
    let parts = cut(&payload, &[10, 10, 10]);
    let is_parts = |reply: &Reply| reply.is_error() && reply.text().starts_with("PARTS ");

    // A part with no part 0 before it.
    let orphan = part(&mut conn, "m", &parts[1], "a", 1, 3);
    assert!(is_parts(&orphan) && orphan.text().contains("no flush is being received"), "{orphan:?}");
    // A skipped part drops the flush: its next part is refused too.
    assert_eq!(part(&mut conn, "m", &parts[0], "a", 0, 3), Reply::Integer(0));
    let skipped = part(&mut conn, "m", &parts[2], "a", 2, 3);
    assert!(is_parts(&skipped) && skipped.text().contains("where part 1 of 3"), "{skipped:?}");
    assert!(is_parts(&part(&mut conn, "m", &parts[1], "a", 1, 3)));
    // Another count drops the flush; another token (another writer's part,
    // a late retry) is refused and leaves it alone.
    assert_eq!(part(&mut conn, "m", &parts[0], "a", 0, 3), Reply::Integer(0));
    assert!(is_parts(&part(&mut conn, "m", &parts[1], "a", 1, 4)));
    assert!(is_parts(&part(&mut conn, "m", &parts[1], "a", 1, 3)));
    // A part 0 starts over: the earlier flush is forgotten.
    assert_eq!(part(&mut conn, "m", &parts[0], "a", 0, 3), Reply::Integer(0));
    assert_eq!(part(&mut conn, "m", &parts[0], "c", 0, 3), Reply::Integer(0));
    let stranger = part(&mut conn, "m", &parts[1], "b", 1, 3);
    assert!(is_parts(&stranger) && stranger.text().contains("another flush"), "{stranger:?}");
    assert_eq!(part(&mut conn, "m", &parts[1], "c", 1, 3), Reply::Integer(0));
    assert_eq!(part(&mut conn, "m", &parts[2], "c", 2, 3), Reply::Integer(30));
    let applied = conn.call(&["BANDIT.EXPORT", "m"]).unwrap().bytes();

    // A part that does not decode is refused at once, and its flush with it
    // at the last part, with the same code (ERR: sending it again cannot
    // help, unlike PARTS).
    let next = flush(30, 6, 20, 10);
    let good = cut(&next, &[10, 10, 10]);
    assert_eq!(part(&mut conn, "m", &good[0], "d", 0, 3), Reply::Integer(0));
    let garbage = part(&mut conn, "m", b"BNDT garbage", "d", 1, 3);
    assert!(garbage.is_error() && !is_parts(&garbage), "{garbage:?}");
    let last = part(&mut conn, "m", &good[2], "d", 2, 3);
    assert!(last.text().starts_with("ERR part 1 was refused: invalid payload"), "{last:?}");
    // Parts of different payloads (other offsets) or with an arm twice.
    let mut moved = next.clone();
    moved.offsets = vec![(0, 21), (3, 27)];
    let other = cut(&moved, &[10, 10, 10]);
    assert_eq!(part(&mut conn, "m", &good[0], "e", 0, 2), Reply::Integer(0));
    let mixed = part(&mut conn, "m", &other[1], "e", 1, 2);
    assert!(mixed.text().starts_with("ERR ") && mixed.text().contains("another header"), "{mixed:?}");
    assert_eq!(part(&mut conn, "m", &good[0], "f", 0, 2), Reply::Integer(0));
    let twice = part(&mut conn, "m", &good[0], "f", 1, 2);
    assert!(twice.text().starts_with("ERR ") && twice.text().contains("appears twice"), "{twice:?}");
    // Nothing of those flushes was applied.
    assert_eq!(conn.call(&["BANDIT.EXPORT", "m"]).unwrap().bytes(), applied);
    let export = bandit_core::codec::decode(&applied, &bandit_core::Limits::unbounded()).unwrap();
    assert_eq!((export.arms.len(), export.offsets), (30, vec![(0, 10), (3, 17)]));

    // Syntax.
    for args in [
        vec!["PART", "t", "3", "3"],
        vec!["PART", "t", "0", "0"],
        vec!["PART", "t", "-1", "3"],
        vec!["PART", "", "0", "2"],
        vec!["PART", "t", "0"],
        vec!["PARTS", "t", "0", "2"],
    ] {
        let mut call: Vec<&[u8]> = vec![b"BANDIT.LOAD", b"m", &good[0]];
        call.extend(args.iter().map(|arg| arg.as_bytes()));
        let reply = conn.call(&call).unwrap();
        assert!(reply.is_error() && reply.text().starts_with("ERR "), "{args:?}: {reply:?}");
    }
}

#[test]
fn an_abandoned_flush_is_freed_by_the_clock_even_when_memory_is_full() {
    // A writer that went away after part 0 of a large flush, on a server
    // at its maxmemory that refuses every LOAD (noeviction): no part can
    // arrive to drop the flush, so only the module's timer frees it.
    let server = RedisServer::with_options(ServerOptions {
        module_args: vec!["PARTS-IDLE-SECONDS".into(), "4".into()],
        server_args: vec!["--maxmemory-policy".into(), "noeviction".into()],
    });
    let mut conn = server.connect();
    let payload = flush(4000, 6, 10, -1);
    let parts = cut(&payload, &[3000, 1000]);
    assert_eq!(part(&mut conn, "m", &parts[0], "gone", 0, 2), Reply::Integer(0));
    assert_eq!(receiving(&server), "1");
    let used: u64 = server.info_field("memory", "used_memory").parse().unwrap();
    let maxmemory = (used - 512 * 1024).to_string();
    assert_eq!(conn.call(&["CONFIG", "SET", "maxmemory", &maxmemory]).unwrap(), Reply::Status("OK".into()));
    let refused = load(&mut conn, "other", &encode_binary(&flush(2, 7, 10, -1)).unwrap());
    assert!(refused.text().starts_with("OOM "), "{refused:?}");
    // Still held (the limit is 4 s): the clock, not the first look after
    // it, drops it.
    assert_eq!(receiving(&server), "1");
    wait_until("the idle flush dropped", Duration::from_secs(20), || receiving(&server) == "0");
    wait_until("its memory freed", Duration::from_secs(20), || !load(&mut conn, "other", &encode_binary(&flush(2, 7, 10, -1)).unwrap()).is_error());
    let late = part(&mut conn, "m", &parts[1], "gone", 1, 2);
    assert!(late.text().starts_with("PARTS "), "{late:?}");
    assert_eq!(conn.call(&["CONFIG", "GET", "bandit.parts-idle-seconds"]).unwrap().pairs()[0].1.text(), "4");
}

#[test]
fn pipelined_parts_and_parts_in_multi_apply_in_command_order() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    let payload = flush(90, 7, 10, -1);
    assert!(!load(&mut conn, "whole", &encode_binary(&payload).unwrap()).is_error());
    // Sent without waiting: the preparations run at once, the order is the
    // commands'.
    let parts = cut(&payload, &[40, 5, 30, 15]);
    for (index, bytes) in parts.iter().enumerate() {
        let (index, count) = (index.to_string(), parts.len().to_string());
        conn.send(&[b"BANDIT.LOAD".as_slice(), b"piped", bytes, b"PART", b"p", index.as_bytes(), count.as_bytes()]).unwrap();
    }
    let replies: Vec<Reply> = (0..parts.len()).map(|_| conn.read().unwrap()).collect();
    assert_eq!(replies, vec![Reply::Integer(0), Reply::Integer(0), Reply::Integer(0), Reply::Integer(90)]);
    assert!(seen(&mut conn, "piped") == seen(&mut conn, "whole"));
    // Inside MULTI every part runs on the main thread.
    assert_eq!(conn.cmd("MULTI").text(), "OK");
    for (index, bytes) in parts.iter().enumerate() {
        assert_eq!(part(&mut conn, "multi", bytes, "m", index, parts.len()).text(), "QUEUED");
    }
    let exec = conn.cmd("EXEC");
    assert_eq!(exec.array(), &[Reply::Integer(0), Reply::Integer(0), Reply::Integer(0), Reply::Integer(90)]);
    assert!(seen(&mut conn, "multi") == seen(&mut conn, "whole"));
}

#[test]
fn replicas_and_the_aof_receive_the_whole_payload_once() {
    let options = ServerOptions {
        server_args: vec!["--appendonly".into(), "yes".into(), "--aof-use-rdb-preamble".into(), "no".into()],
        ..ServerOptions::default()
    };
    let mut master = RedisServer::with_options(options);
    let replica = RedisServer::with_options(master.replica_options());
    wait_until("the replica link", Duration::from_secs(20), || replica.info_field("replication", "master_link_status") == "up");
    let mut conn = master.connect();
    // As the sink writes (the module stamps the update times), then as a
    // restore writes (times stated: nothing is filled in).
    let payload = flush(40, 8, 10, -1);
    let mut stated = flush(30, 18, 15, 10);
    for (index, arm) in stated.arms.iter_mut().enumerate() {
        arm.updated_ms = Some(1_700_000_000_000 + index as i64);
    }
    for (flush, sizes) in [(&payload, [15, 15, 10]), (&stated, [10, 10, 10])] {
        let parts = cut(flush, &sizes);
        for (index, bytes) in parts.iter().enumerate() {
            assert!(!part(&mut conn, "m", bytes, "r", index, parts.len()).is_error());
        }
    }
    let expected = conn.call(&["BANDIT.EXPORT", "m"]).unwrap().bytes();
    let mut replica_conn = replica.connect();
    wait_until("the model on the replica", Duration::from_secs(10), || {
        replica_conn.call(&["BANDIT.EXPORT", "m"]).unwrap().bytes() == expected
    });
    // The AOF holds one LOAD per flush (the whole payload, update times
    // stated) and no part.
    let aof: Vec<u8> = std::fs::read_dir(master.dir().join("appendonlydir"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().contains(".incr.aof"))
        .flat_map(|entry| std::fs::read(entry.path()).unwrap())
        .collect();
    let count = |needle: &[u8]| aof.windows(needle.len()).filter(|w| w.eq_ignore_ascii_case(needle)).count();
    assert_eq!((count(b"BANDIT.LOAD"), count(b"\r\nPART\r\n")), (2, 0), "the AOF should hold the two flushes whole");
    master.restart(false);
    let mut conn = master.connect();
    assert_eq!(conn.call(&["BANDIT.EXPORT", "m"]).unwrap().bytes(), expected, "the AOF replay differs");

    // A restart between parts loses the flush being received: the last part
    // is refused, and the writer sends the flush again.
    let next = flush(40, 9, 20, 15);
    let parts = cut(&next, &[20, 20]);
    assert_eq!(part(&mut conn, "m", &parts[0], "s", 0, 2), Reply::Integer(0));
    master.restart(false);
    let mut conn = master.connect();
    let lost = part(&mut conn, "m", &parts[1], "s", 1, 2);
    assert!(lost.text().starts_with("PARTS "), "{lost:?}");
    assert_eq!(conn.call(&["BANDIT.EXPORT", "m"]).unwrap().bytes(), expected);
    assert_eq!(part(&mut conn, "m", &parts[0], "s2", 0, 2), Reply::Integer(0));
    assert_eq!(part(&mut conn, "m", &parts[1], "s2", 1, 2), Reply::Integer(40));
}
