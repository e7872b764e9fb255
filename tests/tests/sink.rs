//! bandit-sink against a real broker (tansu) and a real redis-server with the
//! module: the model must always equal the textbook fold of every event
//! (`bandit_tests::reference`), exactly once, through crashes, rebalances,
//! restarts, outages, concurrent writers and bad events. Every sink trains
//! with λ = 2.5 and creates models with α = 0.3 (`SinkOptions`' defaults).

use std::time::Duration;

use bandit_core::event::FeedbackEvent;
use bandit_tests::kafka::{read_topic, KafkaBroker, KeyedProducer};
use bandit_tests::resp::Reply;
use bandit_tests::server::{wait_until, RedisServer, ServerOptions};
use bandit_tests::sink::{
    assert_model_equals_fold, feedback_events, model_offsets, model_updates, produce,
    wait_for_model_at_end, SinkOptions, SinkProcess, LAMBDA,
};

const DIM: usize = 4;
const DEADLINE: Duration = Duration::from_secs(60);

fn describe(sinks: &[&SinkProcess]) -> String {
    sinks.iter().map(|s| s.log()).collect::<Vec<_>>().join("\n----\n")
}

/// Waits until the model is at the end of `topic` with exactly `events`
/// folded, and equals their textbook fold.
fn assert_converges(
    conn: &mut bandit_tests::resp::Connection,
    broker: &KafkaBroker,
    options: &SinkOptions,
    events: &[FeedbackEvent],
    sinks: &[&SinkProcess],
) {
    let context = || describe(sinks);
    wait_for_model_at_end(conn, &options.model, &broker.bootstrap(), &options.topic, events.len() as i64, DEADLINE * 2, &context);
    assert_model_equals_fold(conn, &options.model, events, options.dim, options.lambda);
}

/// A Redis with the module, a broker with a `feedback` topic of
/// `partitions` partitions, and a producer keyed by product id.
fn stack(partitions: u32) -> (RedisServer, KafkaBroker, KeyedProducer) {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", partitions);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
    (redis, broker, producer)
}

#[test]
fn events_fold_into_the_model_exactly() {
    let (redis, broker, producer) = stack(3);
    let events = feedback_events(1500, 25, DIM, 1);
    produce(&producer, &events);

    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    let sink = SinkProcess::start(&options);
    let mut conn = redis.connect();
    assert_converges(&mut conn, &broker, &options, &events, &[&sink]);
    // The model was created with the sink's settings.
    let stats = conn.cmd(&format!("BANDIT.STATS {}", options.model));
    assert_eq!((stats.field("lambda").number(), stats.field("alpha").number()), (LAMBDA, options.alpha));

    // The offsets in the model cover every partition's events.
    let offsets = conn.cmd(&format!("BANDIT.STATS {}", options.model)).field("offsets");
    let total: i64 = offsets.pairs().iter().map(|(_, v)| v.integer()).sum();
    assert_eq!(total, 1500);
    wait_until("the metrics to show every event", Duration::from_secs(10), || {
        sink.metric("bandit_sink_events_folded_total") == Some(1500.0)
    });
    assert_eq!(sink.metric("bandit_sink_events_skipped_total"), Some(0.0));
    assert!(sink.metric("bandit_sink_flushes_total").is_some_and(|v| v >= 1.0));
    let health = sink.health().unwrap_or_else(|| panic!("/health does not answer\n{}", sink.log()));
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
}

#[test]
fn sigkill_at_several_points_counts_every_event_once() {
    let (redis, broker, producer) = stack(2);
    let options = SinkOptions { flush_interval_ms: 100, ..SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM) };
    let mut conn = redis.connect();
    let mut all = Vec::new();

    // 1. Mid-stream: killed while folding, between flushes.
    let wave = feedback_events(3000, 30, DIM, 2);
    produce(&producer, &wave);
    all.extend(wave);
    let mut sink = SinkProcess::start(&options);
    wait_until("the sink to fold some events", DEADLINE, || {
        sink.metric("bandit_sink_events_folded_total").is_some_and(|v| v >= 200.0)
    });
    sink.kill();

    // 2. Just after a LOAD: killed as soon as the model's load count moves.
    let wave = feedback_events(2000, 30, DIM, 3);
    produce(&producer, &wave);
    all.extend(wave);
    let loads = |conn: &mut bandit_tests::resp::Connection| match conn.call(&["BANDIT.STATS", &options.model]) {
        Ok(reply) if !reply.is_error() => reply.field("loads").integer(),
        _ => 0,
    };
    let before = loads(&mut conn);
    let mut sink = SinkProcess::start(&options);
    wait_until("a LOAD by the restarted sink", DEADLINE, || loads(&mut conn) > before);
    sink.kill();

    // 3. During a rebalance: a second instance joins, the first dies at once.
    let wave = feedback_events(2000, 30, DIM, 4);
    produce(&producer, &wave);
    all.extend(wave);
    let mut first = SinkProcess::start(&options);
    wait_until("the first instance to fold", DEADLINE, || {
        first.metric("bandit_sink_events_folded_total").is_some_and(|v| v > 0.0)
    });
    let second = SinkProcess::start(&options);
    wait_until("the rebalance to start (the first instance gives its partitions up)", DEADLINE, || {
        first.log().contains("partitions revoked")
    });
    first.kill();

    assert_converges(&mut conn, &broker, &options, &all, &[&second]);
}

/// Flushes larger than `load_part_bytes` go as `BANDIT.LOAD … PART`
/// commands, applied together: the model is still the exact fold, through a
/// SIGKILL of the sink while it sends them.
#[test]
fn flushes_in_parts_fold_exactly_through_a_sigkill() {
    const WIDE: usize = 16;
    let (redis, broker, producer) = stack(2);
    let options = SinkOptions {
        flush_interval_ms: 150,
        dim: WIDE,
        // An arm is about 2.3 KB at d = 16: 400 products make flushes of
        // about a megabyte, 15 or more parts of 64 KiB.
        extra: vec!["--load-part-bytes".into(), "65536".into()],
        ..SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, WIDE)
    };
    let mut all = feedback_events(4000, 400, WIDE, 11);
    produce(&producer, &all);
    let mut conn = redis.connect();
    let mut sink = SinkProcess::start(&options);
    let loads = |conn: &mut bandit_tests::resp::Connection| match conn.call(&["BANDIT.STATS", &options.model]) {
        Ok(reply) if !reply.is_error() => reply.field("loads").integer(),
        _ => 0,
    };
    wait_until("a LOAD by the sink", DEADLINE, || loads(&mut conn) > 0);
    sink.kill();
    let wave = feedback_events(3000, 400, WIDE, 12);
    produce(&producer, &wave);
    all.extend(wave);
    let sink = SinkProcess::start(&options);
    assert_converges(&mut conn, &broker, &options, &all, &[&sink]);
    // Each applied flush took several commands.
    let commands: i64 = redis
        .info_field("commandstats", "cmdstat_bandit.load")
        .split(',')
        .find_map(|field| field.strip_prefix("calls="))
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0);
    let applied = loads(&mut conn);
    assert!(commands >= 5 * applied, "{commands} LOAD commands for {applied} applied flushes: not sent in parts");
}

#[test]
fn instances_in_one_group_share_the_work_and_survive_one_stopping() {
    let (redis, broker, producer) = stack(4);
    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    let mut sinks: Vec<SinkProcess> = (0..3).map(|_| SinkProcess::start(&options)).collect();
    let mut all = feedback_events(2000, 40, DIM, 5);
    produce(&producer, &all);
    let mut conn = redis.connect();
    wait_until("some progress", DEADLINE, || model_updates(&mut conn, &options.model) > 0);

    // One instance leaves mid-stream (gracefully); the others take over.
    let status = sinks[1].terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "SIGTERM should exit 0:\n{}", sinks[1].log());
    let wave = feedback_events(2000, 40, DIM, 6);
    produce(&producer, &wave);
    all.extend(wave);

    assert_converges(&mut conn, &broker, &options, &all, &[&sinks[0], &sinks[2]]);
}

#[test]
fn broker_restart_and_redis_outage_lose_nothing() {
    let mut redis = RedisServer::with_options(ServerOptions {
        server_args: vec!["--appendonly".into(), "yes".into()],
        ..ServerOptions::default()
    });
    let mut broker = KafkaBroker::start_persistent();
    broker.create_topic("feedback", 2);
    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    let sink = SinkProcess::start(&options);
    // A fresh producer per wave, so none outlives the broker restart.
    let bootstrap = broker.bootstrap();
    let produce_wave = |events: &[bandit_core::event::FeedbackEvent]| produce(&KeyedProducer::new(&bootstrap, "feedback"), events);
    let mut all = feedback_events(1000, 20, DIM, 7);
    produce_wave(&all);
    let mut conn = redis.connect();
    let context = || describe(&[&sink]);
    wait_for_model_at_end(&mut conn, &options.model, &bootstrap, "feedback", all.len() as i64, DEADLINE, &context);
    sink.wait_for_health(200, "ok", DEADLINE);

    // The broker goes away: /health names Kafka until it is back with its data.
    broker.kill();
    sink.wait_for_health(503, "kafka: ", DEADLINE);
    broker.restart();
    sink.wait_for_health(200, "ok", DEADLINE);
    let wave = feedback_events(1000, 20, DIM, 8);
    produce_wave(&wave);
    all.extend(wave);
    let mut conn = redis.connect();
    wait_for_model_at_end(&mut conn, &options.model, &bootstrap, "feedback", all.len() as i64, DEADLINE, &context);

    // Redis goes away while events keep coming; the sink holds them, says
    // so on /health, and retries.
    redis.shutdown();
    let wave = feedback_events(1000, 20, DIM, 9);
    produce_wave(&wave);
    all.extend(wave);
    sink.wait_for_health(503, "redis: ", DEADLINE);
    redis.relaunch();
    let mut conn = redis.connect();
    wait_for_model_at_end(&mut conn, &options.model, &bootstrap, "feedback", all.len() as i64, DEADLINE, &context);
    assert_model_equals_fold(&mut conn, &options.model, &all, DIM, LAMBDA);
    sink.wait_for_health(200, "ok", DEADLINE);
}

/// An invalid record: its position among the valid ones, its bytes, and the
/// reason the sink must give.
type BadRecord = (usize, Vec<u8>, &'static str);

/// Valid events with invalid ones of every kind mixed in, all in partition 0.
fn mixed_events() -> (Vec<bandit_core::event::FeedbackEvent>, Vec<BadRecord>) {
    let valid = feedback_events(40, 5, DIM, 10);
    let invalid: Vec<BadRecord> = vec![
        (5, b"{not json".to_vec(), "invalid JSON event"),
        (12, br#"{"event_id": "x", "reward": 1, "context_vector": [1, 2, 3, 4]}"#.to_vec(), "missing field `product_id`"),
        (20, br#"{"event_id": "x", "product_id": "p1", "reward": 1, "context_vector": [1, 2, 3]}"#.to_vec(), "context_vector has 3 values, model dim is 4"),
        (28, br#"{"event_id": "x", "product_id": "p1", "reward": 1e999, "context_vector": [1, 2, 3, 4]}"#.to_vec(), "number out of range"),
        (33, br#"{"event_id": "x", "product_id": "p1", "reward": "yes", "context_vector": [1, 2, 3, 4]}"#.to_vec(), "invalid type"),
    ];
    (valid, invalid)
}

/// Produces the mix into one partition (one key), bad records at their positions.
fn produce_mixed(producer: &KeyedProducer, valid: &[bandit_core::event::FeedbackEvent], invalid: &[(usize, Vec<u8>, &str)]) {
    let mut bad = invalid.iter().peekable();
    for (i, event) in valid.iter().enumerate() {
        while let Some((at, bytes, _)) = bad.peek() {
            if *at != i {
                break;
            }
            producer.send("one-key", bytes);
            bad.next();
        }
        producer.send("one-key", &serde_json::to_vec(event).unwrap());
    }
    producer.flush();
}

#[test]
fn invalid_events_go_to_the_dead_letter_topic_with_their_origin() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 1);
    broker.create_topic("feedback-dlq", 1);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
    let (valid, invalid) = mixed_events();
    produce_mixed(&producer, &valid, &invalid);
    let mut options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    options.extra = ["--errors-tolerance", "all", "--dead-letter-topic", "feedback-dlq"].map(String::from).to_vec();
    let sink = SinkProcess::start(&options);
    let mut conn = redis.connect();
    // At the topic's end: every record, good or bad, is behind the model's offset.
    assert_converges(&mut conn, &broker, &options, &valid, &[&sink]);

    let dead = read_topic(&broker.bootstrap(), "feedback-dlq", 1, DEADLINE);
    assert_eq!(dead.len(), invalid.len(), "every invalid event is dead-lettered, once");
    for (record, (at, bytes, reason)) in dead.iter().zip(&invalid) {
        let header = |name: &str| record.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        assert_eq!(record.payload.as_deref(), Some(bytes.as_slice()), "the original bytes");
        assert_eq!(record.key.as_deref(), Some(b"one-key".as_slice()));
        assert_eq!(header("__connect.errors.topic"), "feedback");
        assert_eq!(header("__connect.errors.partition"), "0");
        // The bad record at position `at` sits after `at` valid ones and the bad ones before it.
        let before = invalid.iter().filter(|(other, _, _)| other < at).count();
        assert_eq!(header("__connect.errors.offset"), (at + before).to_string());
        assert!(header("__connect.errors.exception.message").contains(reason), "{:?}", record.headers);
    }
    wait_until("metrics", Duration::from_secs(10), || {
        sink.metric("bandit_sink_events_dead_lettered_total") == Some(invalid.len() as f64)
    });
}

#[test]
fn tolerance_none_stops_in_front_of_the_first_invalid_event() {
    let (redis, broker, producer) = stack(1);
    let (valid, invalid) = mixed_events();
    produce_mixed(&producer, &valid, &invalid);
    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    let mut conn = redis.connect();
    for attempt in 0..2 {
        let mut sink = SinkProcess::start(&options);
        let status = sink.wait_exit(DEADLINE).unwrap_or_else(|| panic!("the sink should stop:\n{}", sink.log()));
        assert!(!status.success(), "attempt {attempt}: a stop on a bad event is a failure exit");
        let log = sink.log();
        assert!(log.contains("invalid event at feedback/0@5: invalid JSON event"), "attempt {attempt}:\n{log}");
        assert!(log.contains("errors.tolerance=none"), "{log}");
        // The five events before it are in the model, and nothing after it.
        assert_eq!(model_updates(&mut conn, &options.model), 5);
        let offset = conn.cmd(&format!("BANDIT.STATS {}", options.model)).field("offsets").field("0");
        assert_eq!(offset, Reply::Integer(5), "the model's offset stops in front of the bad event");
    }
    assert_model_equals_fold(&mut conn, &options.model, &valid[..5], DIM, LAMBDA);
}

#[test]
fn sigterm_flushes_before_exit() {
    let (redis, broker, producer) = stack(2);
    let events = feedback_events(800, 10, DIM, 11);
    produce(&producer, &events);
    // A flush interval far beyond the test: only the shutdown flush can publish.
    let options = SinkOptions { flush_interval_ms: 600_000, ..SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM) };
    let mut sink = SinkProcess::start(&options);
    wait_until("every event folded", DEADLINE, || sink.metric("bandit_sink_events_folded_total") == Some(800.0));
    let mut conn = redis.connect();
    assert_eq!(model_updates(&mut conn, &options.model), 0, "nothing published before the interval");
    let status = sink.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{}", sink.log());
    assert_eq!(model_updates(&mut conn, &options.model), 800);
    assert_model_equals_fold(&mut conn, &options.model, &events, DIM, LAMBDA);
}

#[test]
fn a_second_sigterm_stops_at_once_while_the_final_flush_waits_for_redis() {
    let (mut redis, broker, producer) = stack(2);
    produce(&producer, &feedback_events(200, 10, DIM, 14));
    let options = SinkOptions { flush_interval_ms: 600_000, ..SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM) };
    let mut sink = SinkProcess::start(&options);
    wait_until("every event folded", DEADLINE, || sink.metric("bandit_sink_events_folded_total") == Some(200.0));
    redis.shutdown();
    // The final flush retries for its deadline (10 s) while Redis is down...
    assert_eq!(sink.terminate(Duration::from_secs(2)), None, "exited before its final flush gave up:\n{}", sink.log());
    // ...unless told again: then it exits at once, with an error and no commit.
    let status = sink.terminate(Duration::from_secs(3));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{}", sink.log());
    assert!(sink.log().contains("second shutdown signal"), "{}", sink.log());
}

#[test]
fn redis_down_pauses_consumption_at_the_bound_and_resumes() {
    let mut redis = RedisServer::with_options(ServerOptions {
        server_args: vec!["--appendonly".into(), "yes".into()],
        ..ServerOptions::default()
    });
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 2);
    let mut options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    options.extra = vec!["--max-unflushed-events".into(), "100".into()];
    let sink = SinkProcess::start(&options);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
    let mut all = feedback_events(50, 10, DIM, 12);
    produce(&producer, &all);
    let mut conn = redis.connect();
    let context = || describe(&[&sink]);
    wait_for_model_at_end(&mut conn, &options.model, &broker.bootstrap(), "feedback", 50, DEADLINE, &context);

    redis.shutdown();
    let wave = feedback_events(500, 10, DIM, 13);
    produce(&producer, &wave);
    all.extend(wave);
    wait_until("the sink to pause", DEADLINE, || sink.metric("bandit_sink_paused") == Some(1.0));
    // Paused at the bound: it stopped folding well short of the 500 waiting events.
    let folded = sink.metric("bandit_sink_events_folded_total");
    assert!(folded.is_some_and(|n| (150.0..450.0).contains(&n)), "folded {folded:?} events while Redis was down\n{}", sink.log());

    redis.relaunch();
    let mut conn = redis.connect();
    assert_converges(&mut conn, &broker, &options, &all, &[&sink]);
    assert_eq!(sink.metric("bandit_sink_paused"), Some(0.0));
}

/// Starts a sink expected to refuse to run, and returns its log once it
/// exited with a failure status.
fn refused_start(options: &SinkOptions, redis_url: Option<&str>) -> String {
    let mut sink = match redis_url {
        Some(url) => SinkProcess::start_with_redis_url(options, url),
        None => SinkProcess::start(options),
    };
    let status = sink.wait_exit(DEADLINE).unwrap_or_else(|| panic!("the sink kept running (retrying?):\n{}", sink.log()));
    let log = sink.log();
    assert!(!status.success(), "a refusal is a failure exit:\n{log}");
    assert!(!log.contains("retrying"), "a permanent error is not retried:\n{log}");
    log
}

#[test]
fn permanent_redis_errors_stop_the_sink_at_once() {
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 1);
    // A module limit the sink's own configuration cannot know: MAX-DIM 8.
    let redis = RedisServer::with_options(ServerOptions { module_args: vec!["MAX-DIM".into(), "8".into()], ..ServerOptions::default() });
    let mut conn = redis.connect();
    let base = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);

    // A module limit: DIM above the server's MAX-DIM.
    let log = refused_start(&SinkOptions { dim: 16, model: "big".into(), ..base.clone() }, None);
    assert!(log.contains("redis refused") && log.contains("DIM is 16, the limit is 8"), "{log}");

    // A model created with another λ than the sink trains with.
    conn.cmd("BANDIT.CREATE other-lambda DIM 4 LAMBDA 1");
    let log = refused_start(&SinkOptions { model: "other-lambda".into(), ..base.clone() }, None);
    assert!(log.contains("other-lambda was created with LAMBDA 1, the sink is configured with lambda 2.5"), "{log}");

    // The key holds a string.
    conn.cmd("SET a-string hello");
    let log = refused_start(&SinkOptions { model: "a-string".into(), ..base.clone() }, None);
    assert!(log.contains("a-string holds another type of value") && log.contains("WRONGTYPE"), "{log}");

    // Authentication: none given, and a wrong password.
    conn.cmd("CONFIG SET requirepass right-password");
    let log = refused_start(&base, None);
    assert!(log.contains("redis refused") && log.contains("NOAUTH"), "{log}");
    let log = refused_start(&base, Some(&format!("redis://:wrong-password@127.0.0.1:{}", redis.port)));
    assert!(log.contains("redis refused"), "{log}");
    assert!(!log.contains("wrong-password"), "the password stays out of the log:\n{log}");

    // A plain Redis without the module.
    let plain = RedisServer::without_module();
    let log = refused_start(&SinkOptions { redis_port: plain.port, ..base.clone() }, None);
    assert!(log.contains("the bandit module is not loaded in this Redis"), "{log}");
}

#[test]
fn another_alpha_in_the_model_is_logged_with_both_values() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 1);
    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    redis.connect().cmd(&format!("BANDIT.CREATE {} DIM 4 ALPHA 0.7 LAMBDA {LAMBDA}", options.model));
    let sink = SinkProcess::start(&options);
    wait_until("the sink to warn about ALPHA", DEADLINE, || {
        let log = sink.log();
        log.contains("WARN") && log.contains("model_alpha=0.7") && log.contains("sink_alpha=0.3")
    });
    // A warning, not a refusal: the model keeps its ALPHA and the sink runs.
    sink.wait_for_health(200, "ok", DEADLINE);
    assert_eq!(redis.connect().cmd(&format!("BANDIT.STATS {}", options.model)).field("alpha").number(), 0.7);
}

/// Events for products the sink has never seen arrive while Redis is down:
/// their partition waits (the record is held), the other partition keeps
/// folding, /health says Redis, and when Redis is back every event is in the
/// model exactly once.
#[test]
fn new_products_while_redis_is_down_are_held_then_folded_exactly_once() {
    let mut redis = RedisServer::with_options(ServerOptions {
        server_args: vec!["--appendonly".into(), "yes".into()],
        ..ServerOptions::default()
    });
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 2);
    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    let sink = SinkProcess::start(&options);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
    let send = |partition: i32, events: &[FeedbackEvent]| {
        for event in events {
            producer.send_to(partition, &event.product_id, &serde_json::to_vec(event).unwrap());
        }
        producer.flush();
    };
    let rename = |events: Vec<FeedbackEvent>, prefix: &str| -> Vec<FeedbackEvent> {
        events.into_iter().map(|e| FeedbackEvent { product_id: format!("{prefix}{}", e.product_id), ..e }).collect()
    };
    // Products a* live in partition 0, b* in partition 1.
    let known_a = rename(feedback_events(100, 5, DIM, 30), "a");
    let known_b = rename(feedback_events(100, 5, DIM, 31), "b");
    send(0, &known_a);
    send(1, &known_b);
    let mut conn = redis.connect();
    let context = || describe(&[&sink]);
    wait_for_model_at_end(&mut conn, &options.model, &broker.bootstrap(), "feedback", 200, DEADLINE, &context);

    redis.shutdown();
    // Partition 0 gets products never seen (their arms need a restore from
    // Redis); partition 1 more events of arms already in memory.
    let new_a = rename(feedback_events(200, 8, DIM, 32), "new-a");
    let more_b = rename(feedback_events(200, 5, DIM, 33), "b");
    send(0, &new_a);
    send(1, &more_b);
    sink.wait_for_health(503, "redis: ", DEADLINE);
    // The consumer still polls: partition 1's events are folded meanwhile.
    wait_until("partition 1 to be folded while Redis is down", DEADLINE, || {
        sink.metric("bandit_sink_events_folded_total") == Some(400.0)
    });
    assert_eq!(sink.metric("bandit_sink_paused"), Some(1.0), "partition 0 waits for Redis");

    redis.relaunch();
    let mut conn = redis.connect();
    let all: Vec<FeedbackEvent> = [known_a, known_b, new_a, more_b].concat();
    assert_converges(&mut conn, &broker, &options, &all, &[&sink]);
    sink.wait_for_health(200, "ok", DEADLINE);
    assert_eq!(sink.metric("bandit_sink_paused"), Some(0.0));
}

/// Two live writers on the same partitions and model: instances in two
/// consumer groups, and an old owner that publishes after the model moved.
/// The restore check and the STALE fence must keep the model exact.
#[test]
fn concurrent_writers_are_fenced_by_the_model_offsets() {
    let (redis, broker, producer) = stack(2);
    let mut conn = redis.connect();
    let base = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    // A: publishes only on a revoke or shutdown, and stops consuming at 100
    // unpublished events, so it falls behind on purpose.
    let old = SinkOptions {
        group: "group-a".into(),
        flush_interval_ms: 600_000,
        extra: vec!["--max-unflushed-events".into(), "100".into()],
        ..base.clone()
    };
    let a = SinkProcess::start(&old);
    let mut all = feedback_events(60, 6, DIM, 40);
    produce(&producer, &all);
    wait_until("A to fold the first wave", DEADLINE, || a.metric("bandit_sink_events_folded_total") == Some(60.0));

    // B, another group, publishes the first wave itself.
    let b = SinkProcess::start(&SinkOptions { group: "group-b".into(), ..base.clone() });
    wait_for_model_at_end(&mut conn, &base.model, &broker.bootstrap(), "feedback", 60, DEADLINE, &|| describe(&[&a, &b]));

    // Restore check: A meets products it has not seen; the model's offsets
    // are no longer those A started from, so A resets to the model.
    let wave = feedback_events(60, 6, DIM, 41).into_iter().map(|e| FeedbackEvent { product_id: format!("n{}", e.product_id), ..e });
    let wave: Vec<FeedbackEvent> = wave.collect();
    produce(&producer, &wave);
    all.extend(wave);
    wait_until("A to reset a partition to the model", DEADLINE, || {
        a.metric("bandit_sink_partition_resets_total").is_some_and(|n| n >= 1.0)
    });
    wait_for_model_at_end(&mut conn, &base.model, &broker.bootstrap(), "feedback", all.len() as i64, DEADLINE, &|| describe(&[&a, &b]));

    // STALE: A stops at 100 unpublished events while B publishes all.
    let wave = feedback_events(400, 6, DIM, 42);
    produce(&producer, &wave);
    all.extend(wave);
    wait_until("A to pause at its bound", DEADLINE, || a.metric("bandit_sink_paused") == Some(1.0));
    wait_for_model_at_end(&mut conn, &base.model, &broker.bootstrap(), "feedback", all.len() as i64, DEADLINE, &|| describe(&[&a, &b]));
    // A second member of A's group makes A give its partitions up, which
    // publishes A's state: offsets behind the model's, refused as STALE.
    let a2 = SinkProcess::start(&old);
    wait_until("A's publish to be refused as STALE", DEADLINE, || {
        a.metric("bandit_sink_flushes_total{result=\"stale\"}").is_some_and(|n| n >= 1.0)
    });

    // Every writer goes on; the model stays the exact fold.
    let wave = feedback_events(100, 9, DIM, 43);
    produce(&producer, &wave);
    all.extend(wave);
    assert_converges(&mut conn, &broker, &base, &all, &[&a, &a2, &b]);
}

/// A product whose events reach two partitions (a producer that did not key
/// by product id): the partition that did not restore the arm first has its
/// event rejected, to the dead-letter topic.
#[test]
fn a_product_on_two_partitions_is_dead_lettered_on_the_second() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 2);
    broker.create_topic("feedback-dlq", 1);
    let mut options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    options.extra = ["--errors-tolerance", "all", "--dead-letter-topic", "feedback-dlq"].map(String::from).to_vec();
    let sink = SinkProcess::start(&options);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
    let events = feedback_events(2, 1, DIM, 50);
    let bytes = |e: &FeedbackEvent| serde_json::to_vec(e).unwrap();
    producer.send_to(0, "key-0", &bytes(&events[0]));
    producer.flush();
    let mut conn = redis.connect();
    wait_for_model_at_end(&mut conn, &options.model, &broker.bootstrap(), "feedback", 1, DEADLINE, &|| sink.log());
    producer.send_to(1, "key-1", &bytes(&events[1]));
    producer.flush();
    assert_converges(&mut conn, &broker, &options, &events[..1], &[&sink]);
    let dead = read_topic(&broker.bootstrap(), "feedback-dlq", 1, DEADLINE);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let header = |name: &str| dead[0].headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(header("__connect.errors.partition"), "1");
    let reason = header("__connect.errors.exception.message");
    assert!(reason.contains("arrived on partition 1, but partition 0 owns its arm"), "{reason}");
}

/// errors.tolerance=all with a dead-letter topic that cannot take records:
/// the sink stops with an error and the model does not move past the event.
#[test]
fn an_undeliverable_dead_letter_stops_the_sink_before_the_event() {
    let (redis, broker, producer) = stack(1);
    let (valid, invalid) = mixed_events();
    produce_mixed(&producer, &valid, &invalid);
    let mut options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    // A topic name Kafka forbids: the broker refuses every record for it.
    options.extra = ["--errors-tolerance", "all", "--dead-letter-topic", "no such topic!", "-X", "message.timeout.ms=5000"]
        .map(String::from)
        .to_vec();
    let mut sink = SinkProcess::start(&options);
    let status = sink.wait_exit(DEADLINE).unwrap_or_else(|| panic!("the sink should stop:\n{}", sink.log()));
    let log = sink.log();
    assert!(!status.success(), "{log}");
    assert!(log.contains("dead-letter topic"), "{log}");
    let mut conn = redis.connect();
    // The first bad record is at offset 5: the model may hold what came
    // before it, never anything from it on.
    let offset = model_offsets(&mut conn, &options.model).get(&0).copied().unwrap_or(0);
    assert!(offset <= 5, "the model moved past the undelivered dead letter to {offset}\n{log}");
    assert_model_equals_fold(&mut conn, &options.model, &valid[..offset as usize], DIM, LAMBDA);
}

#[test]
fn environment_overrides_the_file_and_flags_override_the_environment() {
    let dir = bandit_tests::server::TempDir::new("sink-config");
    let file = dir.path().join("sink.toml");
    std::fs::write(&file, "topic = \"from-file\"\ngroup_id = \"file-group\"\ndim = 7\nflush_interval_ms = 111\n[kafka]\n\"sasl.password\" = \"file-secret\"\n").unwrap();
    let output = bandit_tests::sink::sink_command()
        .args(["--config", file.to_str().unwrap(), "--print-config", "--dim", "9"])
        .env("BANDIT_SINK_TOPIC", "from-env")
        .env("BANDIT_SINK_DIM", "8")
        .env("BANDIT_SINK_REDIS", "redis://app:env-secret@10.0.0.1:6380/2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "topic = \"from-env\"",                       // environment over file
        "group_id = \"file-group\"",                  // file over default
        "dim = 9",                                    // flag over environment and file
        "flush_interval_ms = 111",                    // file
        "redis_url = \"redis://app:***@10.0.0.1:6380/2\"", // masked
        "\"sasl.password\" = \"***\"",               // masked
        "lambda = 1.0",                               // default
    ] {
        assert!(lines.contains(&expected), "{expected:?} missing from:\n{text}");
    }
    assert!(!text.contains("secret"), "{text}");
}

#[test]
fn help_names_every_default() {
    let output = bandit_tests::sink::sink_command().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for default in ["[default: 127.0.0.1:9092]", "[default: redis://127.0.0.1:6379]", "[default: 5000]", "[default: none]"] {
        assert!(help.contains(default), "{default} missing:\n{help}");
    }
}

/// A failover that loses the last LOADs (asynchronous replication: the
/// promoted replica never got them) leaves the model behind what the sink
/// published. Here Redis restarts from an older snapshot, which is the same
/// to the sink. The sink notices at its next flush — even with nothing new to
/// publish — resets to the model's offsets, replays what the model lost, and
/// the model is the exact fold again.
#[test]
fn a_model_that_went_back_is_replayed() {
    let (mut redis, broker, producer) = stack(2);
    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    let sink = SinkProcess::start(&options);
    let context = || describe(&[&sink]);
    let events = feedback_events(1200, 16, DIM, 31);
    let (first, second) = events.split_at(500);
    produce(&producer, first);
    let mut conn = redis.connect();
    wait_for_model_at_end(&mut conn, &options.model, &broker.bootstrap(), "feedback", first.len() as i64, DEADLINE, &context);
    assert_eq!(conn.cmd("SAVE"), Reply::Status("OK".into()));
    produce(&producer, second);
    wait_for_model_at_end(&mut conn, &options.model, &broker.bootstrap(), "feedback", events.len() as i64, DEADLINE, &context);

    // Back to the snapshot: the model has only the first 500 events.
    redis.restart(false);
    let mut conn = redis.connect();
    assert_eq!(model_updates(&mut conn, &options.model), first.len() as i64, "the model went back");
    wait_for_model_at_end(&mut conn, &options.model, &broker.bootstrap(), "feedback", events.len() as i64, DEADLINE, &context);
    assert_model_equals_fold(&mut conn, &options.model, &events, DIM, LAMBDA);
    assert!(sink.metric("bandit_sink_partition_resets_total").is_some_and(|resets| resets >= 1.0), "{}", context());
}
