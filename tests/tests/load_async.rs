//! BANDIT.LOAD off the main thread: the offset fence is checked when the
//! payload is applied, not when it arrives, so two LOADs built on the same
//! offsets that race each other (both prepared in the background at the same
//! time) end with exactly one applied and one refused with STALE; and a
//! client's other commands and other clients keep being served meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use bandit_core::codec::{decode, encode_binary};
use bandit_core::Limits;
use bandit_tests::fixtures::trained_payload;
use bandit_tests::server::RedisServer;

/// A payload large enough that its background preparation takes a while
/// (so two of them overlap), built on "nothing yet" for partition 0.
fn racing_payload(seed: u64, next_offset: i64) -> Vec<u8> {
    let mut payload = trained_payload(16, 3000, 4, seed);
    for arm in &mut payload.arms {
        arm.id = format!("{}-{seed}", arm.id);
        arm.updated_ms = None;
    }
    payload.offsets = vec![(0, next_offset)];
    payload.base_offsets = vec![(0, -1)];
    encode_binary(&payload).unwrap()
}

#[test]
fn racing_loads_on_the_same_base_get_exactly_one_stale() {
    let server = RedisServer::start();
    for round in 0..4u64 {
        let key = format!("race{round}");
        let payloads = [racing_payload(2 * round + 1, 10), racing_payload(2 * round + 2, 20)];
        let barrier = Arc::new(Barrier::new(2));
        let replies: Vec<_> = payloads
            .into_iter()
            .map(|bytes| {
                let mut conn = server.connect();
                let (barrier, key) = (barrier.clone(), key.clone());
                thread::spawn(move || {
                    barrier.wait();
                    conn.call(&[b"BANDIT.LOAD".as_slice(), key.as_bytes(), &bytes]).unwrap()
                })
            })
            .collect();
        let replies: Vec<_> = replies.into_iter().map(|handle| handle.join().unwrap()).collect();
        let stale: Vec<_> = replies.iter().filter(|reply| reply.is_error()).collect();
        assert_eq!(stale.len(), 1, "round {round}: {replies:?}");
        assert!(stale[0].text().starts_with("STALE "), "{:?}", stale[0]);
        let applied = replies.iter().find(|reply| !reply.is_error()).unwrap();
        assert_eq!(applied.integer(), 3000);
        // The model holds the winner's arms and offset, and nothing of the loser's.
        let mut conn = server.connect();
        let stats = conn.call(&["BANDIT.STATS", &key]).unwrap();
        assert_eq!(stats.field("arms").integer(), 3000, "{stats:?}");
        let export = conn.call(&["BANDIT.EXPORT", &key]).unwrap();
        let model = decode(&export.bytes(), &Limits::unbounded()).unwrap();
        assert_eq!(model.offsets.len(), 1);
        let (partition, offset) = model.offsets[0];
        assert!(partition == 0 && [10, 20].contains(&offset), "{:?}", model.offsets);
        let winner_seed = if offset == 10 { 2 * round + 1 } else { 2 * round + 2 };
        let ids: Vec<&str> = model.arms.iter().map(|arm| arm.id.as_str()).collect();
        assert!(ids.iter().all(|id| id.ends_with(&format!("-{winner_seed}"))), "arms of both payloads");
    }
}

#[test]
fn other_clients_are_served_while_a_load_is_prepared() {
    let server = RedisServer::start();
    let bytes = racing_payload(7, 5);
    let mut loader = server.connect();
    let mut other = server.connect();
    assert_eq!(other.call(&["SET", "k", "v"]).unwrap().text(), "OK");
    let handle = thread::spawn(move || loader.call(&[b"BANDIT.LOAD".as_slice(), b"m", &bytes]).unwrap());
    // Whatever the timing, the other connection is answered and the LOAD
    // applies whole.
    for _ in 0..50 {
        assert_eq!(other.call(&["GET", "k"]).unwrap().text(), "v");
    }
    assert_eq!(handle.join().unwrap().integer(), 3000);
    assert_eq!(other.call(&["BANDIT.STATS", "m"]).unwrap().field("arms").integer(), 3000);
}

/// The nice value of every thread of process `pid` (field 19 of
/// /proc/pid/task/tid/stat, counted after the parenthesised name).
fn thread_nice_values(pid: i64) -> Vec<i64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .filter_map(|stat| stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok())
        .collect()
}

/// `field` of an INFO reply, as an integer (0 when absent).
fn info_integer(info: &str, field: &str) -> i64 {
    info.lines()
        .find_map(|line| line.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// The preparation really runs off the main thread: while a large LOAD is
/// prepared, another connection's INFO is answered and reports the LOAD's
/// client blocked and its preparation in progress (`bandit_loads_preparing`,
/// raised and lowered by the worker around the preparation, without the
/// lock), before the LOAD replies. Checked by order, not time: were the
/// preparation on the main thread, or under the lock, no command could run
/// while it did, and every INFO would see nothing in preparation (before the
/// LOAD, its key absent; after it, present).
#[test]
fn a_load_is_prepared_while_the_main_thread_serves_others() {
    let server = RedisServer::start();
    // About 35 MB: its decoding and derivation take far longer than an INFO.
    let mut payload = trained_payload(32, 4000, 2, 11);
    payload.offsets = vec![(0, 7)];
    let bytes = encode_binary(&payload).unwrap();
    let mut loader = server.connect();
    let mut other = server.connect();
    let handle = thread::spawn(move || loader.call(&[b"BANDIT.LOAD".as_slice(), b"big", &bytes]).unwrap());
    // A deadline only against a hang (an error reply ends the loop at once).
    let deadline = Instant::now() + Duration::from_secs(300);
    let seen_preparing = loop {
        let info = other.call(&["INFO", "everything"]).unwrap().text();
        if info_integer(&info, "bandit_loads_preparing") == 1 {
            assert_eq!(info_integer(&info, "blocked_clients"), 1, "the LOAD's client waits, blocked");
            break true;
        }
        if other.call(&["EXISTS", "big"]).unwrap().integer() == 1 || handle.is_finished() {
            break false;
        }
        assert!(Instant::now() < deadline, "the LOAD neither prepared nor applied within 300 s");
    };
    // The preparation runs at the lowest priority (nice 19), on a thread of
    // its own, while the server's other threads keep theirs.
    let pid = info_integer(&other.call(&["INFO", "server"]).unwrap().text(), "process_id");
    let mut lowered = false;
    while !lowered && !handle.is_finished() {
        lowered = thread_nice_values(pid).contains(&19);
    }
    let reply = handle.join().unwrap();
    assert!(seen_preparing, "the LOAD ({reply:?}) was over before any other command saw it in preparation: prepared on the main thread");
    assert!(lowered, "no thread of the server ran at nice 19 while the LOAD was prepared");
    assert!(thread_nice_values(pid).iter().all(|&nice| nice == 0), "{:?}", thread_nice_values(pid));
    assert_eq!(reply.integer(), 4000);
    let info = other.call(&["INFO", "everything"]).unwrap().text();
    assert_eq!(info_integer(&info, "bandit_loads_preparing"), 0, "{info}");
    assert_eq!(info_integer(&info, "blocked_clients"), 0, "the client is unblocked after its reply");
}

/// How long a LOAD held the main thread is reported: INFO
/// `bandit_loads_apply_last_usec` (the apply under the lock for a background
/// LOAD, the whole command inside MULTI) within the time the client waited
/// for the reply, the longest in `bandit_loads_apply_max_usec`, and each
/// hold of a millisecond or more in Redis' latency monitor as `bandit-load`
/// (the same measurement, in whole milliseconds).
#[test]
fn a_loads_hold_on_the_main_thread_is_reported() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    assert_eq!(conn.call(&["CONFIG", "SET", "latency-monitor-threshold", "1"]).unwrap().text(), "OK");
    let info = conn.call(&["INFO", "bandit"]).unwrap().text();
    assert_eq!(info_integer(&info, "bandit_loads_apply_last_usec"), 0, "{info}");
    let mut payload = trained_payload(32, 4000, 2, 12);
    payload.offsets = vec![(0, 7)];
    let bytes = encode_binary(&payload).unwrap();

    let started = Instant::now();
    assert_eq!(conn.call(&[b"BANDIT.LOAD".as_slice(), b"held", &bytes]).unwrap().integer(), 4000);
    let waited_us = i64::try_from(started.elapsed().as_micros()).unwrap();
    let info = conn.call(&["INFO", "bandit"]).unwrap().text();
    let background = info_integer(&info, "bandit_loads_apply_last_usec");
    assert!(background > 0 && background <= waited_us, "held {background} µs of the {waited_us} µs the client waited");
    assert!(info_integer(&info, "bandit_loads_apply_max_usec") >= background, "{info}");

    // Inside MULTI the module may not block: the whole LOAD holds the main
    // thread (another offset, so that it changes the model).
    payload.offsets = vec![(0, 8)];
    for arm in &mut payload.arms {
        arm.n += 1;
    }
    let bytes = encode_binary(&payload).unwrap();
    // Only the MULTI's hold in the monitor from here.
    assert!(conn.call(&["LATENCY", "RESET"]).unwrap().integer() >= 0);
    assert_eq!(conn.call(&["MULTI"]).unwrap().text(), "OK");
    assert_eq!(conn.call(&[b"BANDIT.LOAD".as_slice(), b"held", &bytes]).unwrap().text(), "QUEUED");
    let started = Instant::now();
    let exec = conn.call(&["EXEC"]).unwrap();
    let waited_us = i64::try_from(started.elapsed().as_micros()).unwrap();
    assert_eq!(exec.array()[0].integer(), 4000);
    let info = conn.call(&["INFO", "bandit"]).unwrap().text();
    let in_multi = info_integer(&info, "bandit_loads_apply_last_usec");
    assert!(in_multi > 0 && in_multi <= waited_us, "held {in_multi} µs of the {waited_us} µs the client waited");
    let max = info_integer(&info, "bandit_loads_apply_max_usec");
    assert_eq!(max, background.max(in_multi), "{info}");

    let latest = conn.call(&["LATENCY", "LATEST"]).unwrap();
    let event = latest.array().iter().find(|event| event.array()[0].text() == "bandit-load");
    // Decoding and deriving 4,000 arms at d = 32 on the main thread takes
    // well over a millisecond on any machine.
    assert!(in_multi >= 1000, "{in_multi} µs");
    {
        let event = event.unwrap_or_else(|| panic!("no bandit-load event in {latest:?}"));
        assert_eq!(event.array()[2].integer(), in_multi / 1000, "the latest sample is the MULTI's hold: {event:?}");
        // Reset before the MULTI: its hold is the only sample since.
        assert_eq!(event.array()[3].integer(), in_multi / 1000, "{event:?}");
    }
}
