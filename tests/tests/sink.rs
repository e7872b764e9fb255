//! bandit-sink against a real broker (tansu) and a real redis-server with the
//! module: the model must always equal an independent fold of every event,
//! exactly once, through crashes, rebalances, restarts and bad events.

use std::time::Duration;

use bandit_tests::kafka::{read_topic, KafkaBroker, KeyedProducer};
use bandit_tests::resp::Reply;
use bandit_tests::server::{wait_until, RedisServer, ServerOptions};
use bandit_tests::sink::{
    assert_model_equals_fold, feedback_events, model_updates, produce, reference_fold, wait_for_updates, SinkOptions,
    SinkProcess,
};

const DIM: usize = 4;
const DEADLINE: Duration = Duration::from_secs(60);

fn describe(sinks: &[&SinkProcess]) -> String {
    sinks.iter().map(|s| s.log()).collect::<Vec<_>>().join("\n----\n")
}

#[test]
fn events_fold_into_the_model_exactly() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 3);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
    let events = feedback_events(1500, 25, DIM, 1);
    produce(&producer, &events);

    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    let sink = SinkProcess::start(&options);
    let mut conn = redis.connect();
    wait_for_updates(&mut conn, &options.model, 1500, DEADLINE, &|| describe(&[&sink]));
    assert_model_equals_fold(&mut conn, &options.model, &reference_fold(&events, DIM, 1.0));

    // The offsets in the model cover every partition's events.
    let offsets = conn.cmd(&format!("BANDIT.STATS {}", options.model)).field("offsets");
    let total: i64 = offsets.pairs().iter().map(|(_, v)| v.integer()).sum();
    assert_eq!(total, 1500);
    wait_until("the metrics to show every event", Duration::from_secs(10), || {
        sink.metric("bandit_sink_events_folded_total") == Some(1500.0)
    });
    assert_eq!(sink.metric("bandit_sink_events_skipped_total"), Some(0.0));
    assert!(sink.metric("bandit_sink_flushes_total").is_some_and(|v| v >= 1.0));
    assert_eq!(bandit_tests::sink::http_get(sink.metrics_port, "/health").as_deref(), Some("ok\n"));
}

#[test]
fn sigkill_at_several_points_counts_every_event_once() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 2);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
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
    std::thread::sleep(Duration::from_millis(300));
    first.kill();

    let expected = all.len() as i64;
    wait_for_updates(&mut conn, &options.model, expected, DEADLINE * 2, &|| describe(&[&second]));
    assert_model_equals_fold(&mut conn, &options.model, &reference_fold(&all, DIM, 1.0));
}

#[test]
fn instances_in_one_group_share_the_work_and_survive_one_stopping() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 4);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
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

    wait_for_updates(&mut conn, &options.model, all.len() as i64, DEADLINE * 2, &|| describe(&[&sinks[0], &sinks[2]]));
    assert_model_equals_fold(&mut conn, &options.model, &reference_fold(&all, DIM, 1.0));
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
    wait_for_updates(&mut conn, &options.model, all.len() as i64, DEADLINE, &|| describe(&[&sink]));

    // The broker goes away and comes back with its data.
    broker.restart();
    let wave = feedback_events(1000, 20, DIM, 8);
    produce_wave(&wave);
    all.extend(wave);
    let mut conn = redis.connect();
    wait_for_updates(&mut conn, &options.model, all.len() as i64, DEADLINE, &|| describe(&[&sink]));

    // Redis goes away while events keep coming; the sink holds them and retries.
    redis.shutdown();
    let wave = feedback_events(1000, 20, DIM, 9);
    produce_wave(&wave);
    all.extend(wave);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(bandit_tests::sink::http_get(sink.metrics_port, "/health"), None, "unhealthy while Redis is down");
    redis.relaunch();
    let mut conn = redis.connect();
    wait_for_updates(&mut conn, &options.model, all.len() as i64, DEADLINE, &|| describe(&[&sink]));
    assert_model_equals_fold(&mut conn, &options.model, &reference_fold(&all, DIM, 1.0));
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
    wait_for_updates(&mut conn, &options.model, valid.len() as i64, DEADLINE, &|| describe(&[&sink]));
    assert_model_equals_fold(&mut conn, &options.model, &reference_fold(&valid, DIM, 1.0));
    // Every record, good or bad, is behind the model's offset.
    let offset = conn.cmd(&format!("BANDIT.STATS {}", options.model)).field("offsets").field("0");
    assert_eq!(offset, Reply::Integer((valid.len() + invalid.len()) as i64));

    let dead = read_topic(&broker.bootstrap(), "feedback-dlq", 1, invalid.len(), DEADLINE);
    assert_eq!(dead.len(), invalid.len(), "every invalid event is dead-lettered");
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
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 1);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
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
    assert_model_equals_fold(&mut conn, &options.model, &reference_fold(&valid[..5], DIM, 1.0));
}

#[test]
fn sigterm_flushes_before_exit() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 2);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
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
    assert_model_equals_fold(&mut conn, &options.model, &reference_fold(&events, DIM, 1.0));
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
    wait_for_updates(&mut conn, &options.model, 50, DEADLINE, &|| describe(&[&sink]));

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
    wait_for_updates(&mut conn, &options.model, all.len() as i64, DEADLINE, &|| describe(&[&sink]));
    assert_eq!(sink.metric("bandit_sink_paused"), Some(0.0));
    assert_model_equals_fold(&mut conn, &options.model, &reference_fold(&all, DIM, 1.0));
}
