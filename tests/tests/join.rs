//! bandit-join against a real broker (tansu): its feedback topic,
//! de-duplicated by (source partition, seq) as the trainer does, must equal
//! an independent computation of decisions × rewards
//! (`bandit_tests::join::reference`) exactly, with a non-default wait,
//! aggregation, default reward and impressions, through SIGKILLs, a
//! rebalance and a broker restart; unknown rewards reach the dead-letter
//! topic with their reason, late ones are counted; and with bandit-sink
//! behind it the model equals the textbook fold of those examples.

use std::collections::BTreeMap;
use std::time::Duration;

use bandit_tests::join::{
    as_feedback, assert_examples_equal, close_with_rewards, create_topics, generate, generate_from, join_command, produce_records,
    produce_streams, read_dead_letters, reference, wait_for_examples, JoinOptions, JoinProcess, Rules,
};
use bandit_tests::kafka::{KafkaBroker, KeyedProducer};
use bandit_tests::process::output_within;
use bandit_tests::server::{wait_until, RedisServer};
use bandit_tests::sink::{assert_model_equals_fold, wait_for_updates, SinkOptions, SinkProcess};

const DIM: usize = 3;
const DEADLINE: Duration = Duration::from_secs(120);

fn describe(joiners: &[&JoinProcess]) -> String {
    joiners.iter().map(|j| j.log()).collect::<Vec<_>>().join("\n----\n")
}

/// [`wait_until`] that shows the joiners' logs when it times out.
fn wait_for(what: &str, joiners: &[&JoinProcess], mut check: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(std::time::Instant::now() < end, "timed out waiting for {what}\n{}", describe(joiners));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_dead_letters(bootstrap: &str, want: &BTreeMap<(String, i32, i64), &'static str>, context: &dyn Fn() -> String) {
    let mut got = read_dead_letters(bootstrap);
    let end = std::time::Instant::now() + DEADLINE;
    while got.len() < want.len() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500));
        got = read_dead_letters(bootstrap);
    }
    let got_keys: Vec<_> = got.keys().collect();
    let want_keys: Vec<_> = want.keys().collect();
    assert_eq!(got_keys, want_keys, "dead-lettered records\n{}", context());
    for (key, word) in want {
        assert!(got[key].contains(word), "{key:?}: reason {:?} should say {word:?}", got[key]);
    }
}

#[test]
fn the_join_equals_the_independent_computation() {
    let broker = KafkaBroker::start();
    create_topics(&broker, 3, 2);
    let rules = Rules { reward_wait_ms: 30_000, aggregation: "sum", default_reward: -0.5, impressions: "all" };
    let streams = generate(600, 3, DIM, rules.reward_wait_ms, 1);
    let want = reference(&streams, rules);
    assert!(want.late > 20 && want.dead_letters.len() > 10, "the data exercises late and unknown rewards: {} {}", want.late, want.dead_letters.len());
    produce_streams(&broker.bootstrap(), &streams);

    let joiner = JoinProcess::start(&JoinOptions::new(&broker.bootstrap(), rules));
    let context = || describe(&[&joiner]);
    let got = wait_for_examples(&broker.bootstrap(), 2, want.examples.len(), DEADLINE, &context);
    assert_examples_equal(&got, &want.examples);
    assert_dead_letters(&broker.bootstrap(), &want.dead_letters, &context);

    // Metrics: every decision joined once, the late rewards counted.
    let valid = streams.decisions.len() as f64;
    wait_until("the metrics to show every decision joined", Duration::from_secs(10), || {
        joiner.metric("bandit_join_decisions_joined_total") == Some(valid)
    });
    assert_eq!(joiner.metric("bandit_join_rewards_late_total"), Some(want.late as f64), "late rewards\n{}", context());
    let unknown = want.dead_letters.values().filter(|reason| **reason != "invalid JSON").count();
    assert_eq!(joiner.metric("bandit_join_rewards_unknown_total"), Some(unknown as f64));
    assert_eq!(joiner.metric("bandit_join_examples_emitted_total"), Some(want.examples.len() as f64));
    assert_eq!(joiner.metric("bandit_join_decisions_pending"), Some(0.0));
    let rewarded = streams
        .decisions
        .iter()
        .filter(|d| {
            let deadline = d.timestamp + rules.reward_wait_ms;
            d.shown.iter().any(|(p, _, _)| {
                let key = |r: &&bandit_tests::join::TestReward| r.event_id == d.event_id && &r.product_id == p && r.timestamp <= deadline;
                streams.rewards.iter().filter(key).any(|r| !want.dead_letters.contains_key(&("rewards".into(), r.partition, r.offset)))
            })
        })
        .count();
    let ratio = joiner.metric("bandit_join_rewarded_ratio").unwrap_or(f64::NAN);
    assert!(rewarded > 0 && ratio > 0.0 && ratio <= rewarded as f64 / valid, "rewarded ratio {ratio}, at most {rewarded}/{valid}");
    assert!(joiner.metric("bandit_join_latency_seconds_count") == Some(valid));
    let health = joiner.health().unwrap_or_else(|| panic!("/health does not answer\n{}", context()));
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
}

#[test]
fn a_decision_too_large_to_produce_is_dead_lettered_and_the_join_goes_on() {
    // A producer limit far below the broker's: a decision the broker took
    // whose examples this join could not send (before, the gapless
    // producer stopped the join at it, on every start).
    let broker = KafkaBroker::start();
    create_topics(&broker, 1, 1);
    let rules = Rules { reward_wait_ms: 5000, aggregation: "sum", default_reward: 0.0, impressions: "all" };
    let mut options = JoinOptions::new(&broker.bootstrap(), rules);
    options.extra.extend(["-X".to_owned(), "message.max.bytes=20000".to_owned()]);
    let joiner = JoinProcess::start(&options);
    let context = || describe(&[&joiner]);
    let past = bandit_tests::join::EPOCH_MS;
    let decision = |event_id: &str, dim: usize, products: &[&str]| {
        let shown: Vec<_> = products
            .iter()
            .enumerate()
            .map(|(position, product)| serde_json::json!({"product_id": product, "position": position, "probability": 1.0}))
            .collect();
        let context: Vec<f64> = (0..dim).map(|i| 0.123_456_789_012_345_67 * (i + 1) as f64).collect();
        let record = serde_json::json!({"event_id": event_id, "model": "m", "model_version": 1, "policy": "ucb",
            "context": context, "shown": shown, "timestamp": past});
        serde_json::to_vec(&record).unwrap()
    };
    let producer = KeyedProducer::new(&broker.bootstrap(), "decisions");
    let huge = decision("huge", 3000, &["a"]);
    assert!(huge.len() > 40_000, "{} bytes", huge.len());
    producer.send_to(0, "huge", &huge);
    producer.send_to(0, "small", &decision("small", DIM, &["a", "b"]));
    producer.flush();

    let examples = wait_for_examples(&broker.bootstrap(), 1, 2, DEADLINE, &context);
    assert!(examples.values().all(|example| example.event_id == "small"), "{examples:?}");
    let letters = bandit_tests::kafka::read_topic(&broker.bootstrap(), "join-dlq", 1, Duration::from_secs(60));
    assert_eq!(letters.len(), 1, "{letters:?}");
    let header = |name: &str| letters[0].headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    assert_eq!(header("__connect.errors.exception.class.name").as_deref(), Some("bandit.DecisionTooLarge"));
    assert!(header("__connect.errors.exception.message").is_some_and(|m| m.contains("message.max.bytes (20000)")), "{letters:?}");
    // Too large for this producer too: sent without its value, which the
    // origin headers locate.
    assert_eq!(header("__connect.errors.offset").as_deref(), Some("0"));
    assert_eq!(header("bandit.value.omitted.bytes"), Some(huge.len().to_string()));
    assert!(letters[0].payload.is_none(), "{letters:?}");
    assert!(joiner.health().is_some_and(|health| health.status == 200), "{}", context());
}

#[test]
fn sigkill_rebalance_and_broker_restart_repeat_and_lose_nothing() {
    let mut broker = KafkaBroker::start_persistent();
    create_topics(&broker, 3, 2);
    let bootstrap = broker.bootstrap();
    let rules = Rules { reward_wait_ms: 20_000, aggregation: "max", default_reward: 0.25, impressions: "cascade" };
    // In the future: only the streams close decisions, whatever the timing.
    let epoch = bandit_tests::join::EPOCH_MS + 3_650 * 86_400_000;
    let mut streams = generate_from(epoch, 3000, 3, DIM, rules.reward_wait_ms, 2);
    close_with_rewards(&mut streams, rules.reward_wait_ms);
    let want = reference(&streams, rules);
    let waves: Vec<_> = streams.records.chunks(streams.records.len() / 6 + 1).collect();
    let options = JoinOptions { commit_interval_ms: 100, ..JoinOptions::new(&bootstrap, rules) };
    let emitted = |joiner: &JoinProcess| joiner.metric("bandit_join_examples_emitted_total").unwrap_or(0.0);

    // 1. SIGKILL mid-stream, between commits.
    produce_records(&bootstrap, waves[0]);
    let mut first = JoinProcess::start(&JoinOptions { commit_interval_ms: 600_000, ..options.clone() });
    wait_until("the first joiner to emit", DEADLINE, || emitted(&first) > 0.0);
    produce_records(&bootstrap, waves[1]);
    first.kill();

    // 2. A rebalance: a third joiner joins (the second commits and gives
    //    partitions up), then the second leaves (SIGTERM: a final commit,
    //    then the third takes every pair over). tansu never expires a
    //    member killed while joining, nor, we found, one killed right after
    //    a rebalance: the SIGKILLs are of a sole member.
    let mut second = JoinProcess::start(&options);
    wait_for("the second joiner to emit", &[&second], || emitted(&second) > 0.0);
    produce_records(&bootstrap, waves[2]);
    let mut third = JoinProcess::start(&options);
    wait_for("the third joiner to hold partitions", &[&second, &third], || third.log().contains("partition pair assigned"));
    produce_records(&bootstrap, waves[3]);
    wait_for("the third joiner to emit", &[&second, &third], || emitted(&third) > 0.0);
    let status = second.terminate(DEADLINE);
    assert!(status.is_some_and(|s| s.success()), "SIGTERM should exit 0:\n{}", second.log());
    wait_for("the third joiner to take every pair over", &[&third], || {
        let log = third.log();
        (0..3).all(|p| log.contains(&format!("partition pair assigned; resuming from its checkpoint partition={p} ")))
    });

    // 3. The broker restarts (SQLite storage: its data survives) while
    //    waves come in; then the joiner is SIGKILLed and restarted once more.
    broker.restart();
    produce_records(&bootstrap, waves[4]);
    wait_for("the third joiner to emit after the restart", &[&third], || emitted(&third) > 0.0);
    third.kill();
    for wave in &waves[5..] {
        produce_records(&bootstrap, wave);
    }
    let third = JoinProcess::start(&options);

    let context = || describe(&[&third]);
    let got = wait_for_examples(&bootstrap, 2, want.examples.len(), DEADLINE * 2, &context);
    assert_examples_equal(&got, &want.examples);
    // Reporting is at most once across crashes (core::join's documented
    // price): a reward that was held when the joiner died is not reported
    // (core marks it as read before), and a late reward for a decision closed before the
    // last checkpoint is reported as for no decision. Every other dead
    // letter is there, with its reason.
    let got = bandit_tests::join::read_dead_letters(&bootstrap);
    for (key, reason) in &got {
        match want.dead_letters.get(key) {
            Some(word) => assert!(reason.contains(word), "{key:?}: {reason:?} should say {word:?}"),
            None => assert!(want.late_rewards.contains(key) && reason.contains("no decision"), "{key:?} dead-lettered ({reason}) but neither unknown nor late"),
        }
    }
    for (key, word) in &want.dead_letters {
        assert!(got.contains_key(key) || key.0 == "rewards", "{key:?} ({word}) was not dead-lettered\n{}", context());
    }
    let reported = want.dead_letters.keys().filter(|key| got.contains_key(*key)).count();
    assert!(reported * 2 > want.dead_letters.len(), "{reported} of {} dead letters", want.dead_letters.len());
}

/// The loop's last link: the joiner's examples through bandit-sink into the
/// model, across SIGKILL of both. The model must be the textbook fold of
/// the reference's examples: each folded once although the joiner emitted
/// some twice (the trainer fences (source partition, seq)).
#[test]
fn the_model_is_the_fold_of_the_joined_examples_across_kills() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    create_topics(&broker, 2, 2);
    let bootstrap = broker.bootstrap();
    let rules = Rules { reward_wait_ms: 10_000, aggregation: "earliest", default_reward: 0.0, impressions: "cascade" };
    let epoch = bandit_tests::join::EPOCH_MS + 3_650 * 86_400_000;
    let mut streams = generate_from(epoch, 2000, 2, DIM, rules.reward_wait_ms, 3);
    close_with_rewards(&mut streams, rules.reward_wait_ms);
    let want = reference(&streams, rules);
    let waves: Vec<_> = streams.records.chunks(streams.records.len() / 4 + 1).collect();
    let options = JoinOptions { commit_interval_ms: 100, ..JoinOptions::new(&bootstrap, rules) };
    let sink_options = SinkOptions { flush_interval_ms: 100, ..SinkOptions::new(&bootstrap, "feedback", redis.port, DIM) };
    let mut conn = redis.connect();
    let updates = |conn: &mut bandit_tests::resp::Connection| bandit_tests::sink::model_updates(conn, &sink_options.model);

    // The first joiner never commits before its SIGKILL: the second emits
    // everything it emitted again, and the trainer must fold it once.
    produce_records(&bootstrap, waves[0]);
    let mut joiner = JoinProcess::start(&JoinOptions { commit_interval_ms: 600_000, ..options.clone() });
    let mut sink = SinkProcess::start(&sink_options);
    wait_until("the model to learn", DEADLINE, || updates(&mut conn) > 0);
    joiner.kill();
    produce_records(&bootstrap, waves[1]);
    let joiner = JoinProcess::start(&options);
    wait_until("the restarted joiner to emit", DEADLINE, || joiner.metric("bandit_join_examples_emitted_total").unwrap_or(0.0) > 0.0);
    sink.kill();
    for wave in &waves[2..] {
        produce_records(&bootstrap, wave);
    }
    // The restarted trainer resumes from the model's offsets and fences
    // (the truth), whatever its group; a new group keeps it clear of tansu
    // 0.6 never expiring a member SIGKILLed at an unlucky moment.
    let sink = SinkProcess::start(&SinkOptions { group: "sink-after-kill".into(), ..sink_options.clone() });

    let context = || format!("{}\n----\n{}", joiner.log(), sink.log());
    let got = wait_for_examples(&bootstrap, 2, want.examples.len(), DEADLINE, &context);
    assert_examples_equal(&got, &want.examples);
    wait_for_updates(&mut conn, &sink_options.model, want.examples.len() as i64, DEADLINE, &context);
    // The sink has reached the end of the feedback topic: nothing more comes.
    wait_until("the sink to reach the feedback topic's end", DEADLINE, || {
        let offsets = bandit_tests::sink::model_offsets(&mut conn, &sink_options.model);
        bandit_tests::kafka::high_watermarks(&bootstrap, "feedback").iter().all(|(p, high)| *high == 0 || offsets.get(p) == Some(high))
    });
    assert_model_equals_fold(&mut conn, &sink_options.model, &as_feedback(&want.examples), DIM, sink_options.lambda);
    let (_, records) = bandit_tests::join::read_examples(&bootstrap, 2);
    assert!(records > want.examples.len(), "the restarted joiner emitted again ({records} records for {} examples)", want.examples.len());
}

#[test]
fn refuses_topics_that_are_not_co_partitioned() {
    let broker = KafkaBroker::start();
    broker.create_topic("decisions", 2);
    broker.create_topic("rewards", 3);
    for topic in ["join-state", "feedback", "join-dlq"] {
        broker.create_topic(topic, 2);
    }
    let output = output_within(join_command().args(["--brokers", &broker.bootstrap(), "--metrics-addr", ""]), Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("decisions has 2 partitions and rewards has 3") && stderr.contains("co-partitioned"), "{stderr}");
}

#[test]
fn help_names_every_default_and_bad_settings_exit_2() {
    let output = join_command().arg("--help").output().unwrap_or_else(|e| panic!("{e}"));
    let help = String::from_utf8_lossy(&output.stdout);
    for default in ["[default: 600000]", "[default: cascade]", "[default: earliest]", "[default: join-state]", "[env: BANDIT_JOIN_REWARD_WAIT_MS]"] {
        assert!(help.contains(default), "{default} missing:\n{help}");
    }
    for (args, needle) in [
        (&["--reward-wait-ms", "1000"][..], "reward_wait_ms must be between 5000"),
        (&["--feedback-topic", "decisions"][..], "must be distinct"),
    ] {
        let output = join_command().args(args).output().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(needle), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
}
