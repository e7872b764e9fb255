//! Avro feedback (Confluent's wire format, schemas from a Schema Registry)
//! through a real broker (tansu) into a real Redis: the same model as the
//! same events in JSON, schema evolution, every bad record dead-lettered
//! with its class, the registry's outage, and a zstd-compressed producer.
//! The registry is the in-memory one of `bandit_tests::registry`. Records
//! the tests craft themselves are written by a small Avro encoder here,
//! from the specification, sharing no code with the sink.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use bandit::feedback::FeedbackProducer;
use bandit_core::event::FeedbackEvent;
use bandit_formats::registry::RegistryClient;
use bandit_tests::kafka::{read_topic, KafkaBroker, KeyedProducer};
use bandit_tests::registry::{MockRegistry, CALL_TIMEOUT};
use bandit_tests::server::{wait_until, RedisServer};
use bandit_tests::sink::{
    assert_model_equals_fold, export_model, feedback_events, model_updates, produce, wait_for_model_at_end, SinkOptions,
    SinkProcess, LAMBDA,
};

const DIM: usize = 4;
const DEADLINE: Duration = Duration::from_secs(90);
/// The repository's schema, read here from the file (not from the code).
const SCHEMA: &str = include_str!("../../schemas/feedback.avsc");

/// The schema a newer producer writes: one more field, optional, default null.
fn schema_with_session() -> String {
    SCHEMA.replacen(
        r#"{"name": "timestamp""#,
        r#"{"name": "session_id", "type": ["null", "string"], "default": null, "doc": "added later"}, {"name": "timestamp""#,
        1,
    )
}

/// A writer schema that lacks the required context_vector.
const WITHOUT_CONTEXT: &str = r#"{"type": "record", "name": "FeedbackEvent", "namespace": "bandit", "fields": [
    {"name": "event_id", "type": "string"}, {"name": "product_id", "type": "string"}, {"name": "reward", "type": "double"}]}"#;

// --- Avro binary by hand, from the specification -------------------------

fn long(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn string(out: &mut Vec<u8>, text: &str) {
    long(out, text.len() as i64);
    out.extend_from_slice(text.as_bytes());
}

/// Magic byte 0, the id big-endian, then the event's fields in schema
/// order; `session` is written (as union branch 0 = null or 1 = string)
/// only for [`schema_with_session`].
fn framed(id: u32, event: &FeedbackEvent, session: Option<Option<&str>>) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    string(&mut out, &event.event_id);
    string(&mut out, &event.product_id);
    out.extend_from_slice(&event.reward.to_le_bytes());
    if !event.context_vector.is_empty() {
        long(&mut out, event.context_vector.len() as i64);
        for x in &event.context_vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    long(&mut out, 0);
    match session {
        None => {}
        Some(None) => long(&mut out, 0),
        Some(Some(text)) => {
            long(&mut out, 1);
            string(&mut out, text);
        }
    }
    long(&mut out, event.timestamp);
    // position, probability, source: the null branch of each union.
    out.extend_from_slice(&[0, 0, 0]);
    out
}

#[test]
fn the_hand_encoder_follows_the_specification() {
    // Zig-zag varints from the specification's table: 0→00, -1→01, 1→02, -2→03, 64→80 01.
    for (value, bytes) in [(0, vec![0u8]), (-1, vec![1]), (1, vec![2]), (-2, vec![3]), (64, vec![0x80, 1])] {
        let mut out = Vec::new();
        long(&mut out, value);
        assert_eq!(out, bytes, "{value}");
    }
}

// --- the stack --------------------------------------------------------------

fn avro_options(broker: &KafkaBroker, topic: &str, redis_port: u16, registry: &MockRegistry) -> SinkOptions {
    let mut options = SinkOptions::new(&broker.bootstrap(), topic, redis_port, DIM);
    options.model = format!("model:{topic}");
    options.extra = ["--format", "avro", "--schema-registry-url", &registry.url()].map(String::from).to_vec();
    options
}

fn producer_properties(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    // One record per batch: tansu 0.6 cannot fetch from inside a batch (see KeyedProducer).
    let mut properties = BTreeMap::from([("batch.num.messages".to_owned(), "1".to_owned())]);
    properties.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    properties
}

fn send_all(producer: &FeedbackProducer, events: &[FeedbackEvent]) {
    for event in events {
        producer.send(event).unwrap();
    }
    let report = producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!((report.delivered, report.failed), (events.len() as u64, 0));
}

fn converge(conn: &mut bandit_tests::resp::Connection, broker: &KafkaBroker, options: &SinkOptions, events: &[FeedbackEvent], sink: &SinkProcess) {
    let context = || sink.log();
    wait_for_model_at_end(conn, &options.model, &broker.bootstrap(), &options.topic, events.len() as i64, DEADLINE, &context);
    assert_model_equals_fold(conn, &options.model, events, DIM, LAMBDA);
}

#[test]
fn avro_through_the_registry_trains_the_same_model_as_json() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback-json", 2);
    broker.create_topic("feedback-avro", 2);
    let registry = MockRegistry::with_basic_auth("bandit:s3cret-registry");
    let events = feedback_events(400, 9, DIM, 31);

    produce(&KeyedProducer::new(&broker.bootstrap(), "feedback-json"), &events);
    let client = RegistryClient::new(&registry.url(), Some("bandit:s3cret-registry"), CALL_TIMEOUT).unwrap();
    let avro = FeedbackProducer::new(&broker.bootstrap(), "feedback-avro", &producer_properties(&[])).unwrap().with_avro(&client).unwrap();
    send_all(&avro, &events);
    // TopicNameStrategy: the value schema of topic T is subject T-value.
    let ids = registry.versions("feedback-avro-value");
    assert_eq!(ids.len(), 1, "registered once under feedback-avro-value");

    let mut json_options = SinkOptions::new(&broker.bootstrap(), "feedback-json", redis.port, DIM);
    json_options.model = "model:json".into();
    let mut avro_options = avro_options(&broker, "feedback-avro", redis.port, &registry);
    avro_options.extra.extend(["--schema-registry-basic-auth", "bandit:s3cret-registry"].map(String::from));
    let json_sink = SinkProcess::start(&json_options);
    let avro_sink = SinkProcess::start(&avro_options);
    let mut conn = redis.connect();
    converge(&mut conn, &broker, &json_options, &events, &json_sink);
    converge(&mut conn, &broker, &avro_options, &events, &avro_sink);

    // The two models are the same to the bit: arms, statistics and offsets.
    let (json_model, avro_model) = (export_model(&mut conn, "model:json"), export_model(&mut conn, "model:feedback-avro"));
    // (Only the flush's wall-clock time may differ.)
    // Arms are exported in the order they were first loaded, which follows how
    // each sink's partitions interleaved: compare them by id.
    let arms = |model: bandit_core::Payload| {
        let mut arms = model.arms.into_iter().map(|arm| bandit_core::ArmPayload { updated_ms: None, ..arm }).collect::<Vec<_>>();
        arms.sort_by(|a, b| a.id.cmp(&b.id));
        arms
    };
    let (json_offsets, avro_offsets) = (json_model.offsets.clone(), avro_model.offsets.clone());
    assert_eq!(arms(avro_model), arms(json_model));
    assert_eq!(avro_offsets, json_offsets);
    // The sink asked the registry for the schema once (cached), and never
    // showed the registry's password.
    assert_eq!(registry.fetches(ids[0]), 1);
    let log = avro_sink.log();
    assert!(!log.contains("s3cret"), "{log}");
    assert!(log.contains("bandit:***"), "the printed configuration shows the user, masked:\n{log}");
    assert!(log.contains("builtin_features") && log.contains("zstd") && log.contains("sasl_scram") && log.contains("ssl"), "{log}");
}

#[test]
fn a_producer_with_a_newer_schema_is_read_by_the_sink_with_the_older_one() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 1);
    let registry = MockRegistry::start();
    let old_id = registry.register("feedback-value", SCHEMA);
    let new_id = registry.register("feedback-value", &schema_with_session());
    assert_ne!(old_id, new_id);
    let events = feedback_events(120, 5, DIM, 32);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
    // Old and new producers interleaved; the new one with and without a session.
    for (i, event) in events.iter().enumerate() {
        let bytes = match i % 3 {
            0 => framed(old_id, event, None),
            1 => framed(new_id, event, Some(Some("session-7"))),
            _ => framed(new_id, event, Some(None)),
        };
        producer.send(&event.product_id, &bytes);
    }
    producer.flush();
    let options = avro_options(&broker, "feedback", redis.port, &registry);
    let sink = SinkProcess::start(&options);
    let mut conn = redis.connect();
    converge(&mut conn, &broker, &options, &events, &sink);
    assert_eq!((registry.fetches(old_id), registry.fetches(new_id)), (1, 1));
}

/// A bad record: its bytes, the class and the stage the dead letter must
/// carry, and a piece of its message.
struct Bad {
    bytes: Vec<u8>,
    class: &'static str,
    stage: &'static str,
    says: &'static str,
}

#[test]
fn each_bad_avro_record_is_dead_lettered_with_its_class_and_an_outage_waits_then_dead_letters() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 1);
    broker.create_topic("feedback-dlq", 1);
    let registry = MockRegistry::start();
    let id = registry.register("feedback-value", SCHEMA);
    let without_context = registry.register("other-value", WITHOUT_CONTEXT);
    let later = registry.register("feedback-value", &schema_with_session());
    let valid = feedback_events(30, 4, DIM, 33);
    let sample = &valid[0];
    let good = framed(id, sample, None);
    let mut with_trailing = good.clone();
    with_trailing.push(7);
    let short = FeedbackEvent { context_vector: vec![1.0, 2.0, 3.0], ..sample.clone() };
    let mut incompatible = vec![0];
    incompatible.extend_from_slice(&without_context.to_be_bytes());
    incompatible.extend_from_slice(&good[5..good.len() - 3 - 2 - 4 * 8 - 2]); // event_id, product_id, reward
    let bad = [
        Bad { bytes: framed(999, sample, None), class: "bandit.UnknownSchema", stage: "VALUE_CONVERTER", says: "unknown schema id 999" },
        Bad { bytes: good[..good.len() - 3].to_vec(), class: "bandit.UndecodableAvro", stage: "VALUE_CONVERTER", says: "does not decode" },
        Bad { bytes: with_trailing, class: "bandit.UndecodableAvro", stage: "VALUE_CONVERTER", says: "1 bytes after the event" },
        Bad { bytes: incompatible, class: "bandit.IncompatibleSchema", stage: "VALUE_CONVERTER", says: "context_vector" },
        Bad { bytes: serde_json::to_vec(sample).unwrap(), class: "bandit.UndecodableAvro", stage: "VALUE_CONVERTER", says: "magic byte is 0x7b" },
        Bad { bytes: framed(id, &short, None), class: "bandit.InvalidEvent", stage: "TASK_PUT", says: "context_vector has 3 values, model dim is 4" },
    ];
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
    // Bad records at positions 3, 7, 11, …, all under one key, one partition.
    let mut expected_offsets = Vec::new();
    let mut offset = 0;
    for (i, event) in valid[..25].iter().enumerate() {
        if i % 4 == 3 {
            if let Some(record) = bad.get(i / 4) {
                producer.send("k", &record.bytes);
                expected_offsets.push(offset);
                offset += 1;
            }
        }
        producer.send("k", &framed(id, event, None));
        offset += 1;
    }
    producer.flush();

    let mut options = avro_options(&broker, "feedback", redis.port, &registry);
    options.extra.extend(["--errors-tolerance", "all", "--dead-letter-topic", "feedback-dlq", "--schema-registry-retry-ms", "1500"].map(String::from));
    let sink = SinkProcess::start(&options);
    let mut conn = redis.connect();
    converge(&mut conn, &broker, &options, &valid[..25], &sink);

    // The registry goes down: a record with a schema the sink has not seen
    // waits (retries) and is then dead-lettered; records with the cached
    // schema go on.
    registry.set_available(false);
    producer.send("k", &framed(later, &valid[25], Some(Some("s"))));
    producer.send("k", &framed(id, &valid[26], None));
    producer.flush();
    let mut folded: Vec<FeedbackEvent> = valid[..25].to_vec();
    folded.push(valid[26].clone());
    converge(&mut conn, &broker, &options, &folded, &sink);
    assert!(registry.fetches(later) == 0, "a registry answering 503 is not counted as serving the id");
    assert!(sink.log().matches("schema registry unreachable; retrying").count() >= 2, "{}", sink.log());
    // Back up: the same schema id is fetched and its records folded.
    registry.set_available(true);
    producer.send("k", &framed(later, &valid[27], Some(None)));
    producer.flush();
    folded.push(valid[27].clone());
    converge(&mut conn, &broker, &options, &folded, &sink);
    assert_eq!(registry.fetches(later), 1);

    let dead = read_topic(&broker.bootstrap(), "feedback-dlq", 1, DEADLINE);
    assert_eq!(dead.len(), bad.len() + 1, "every bad record dead-lettered, once");
    let header = |record: &bandit_tests::kafka::ReadRecord, name: &str| {
        record.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    for ((record, expected), offset) in dead.iter().zip(&bad).zip(&expected_offsets) {
        assert_eq!(record.payload.as_deref(), Some(expected.bytes.as_slice()), "the original bytes");
        assert_eq!(header(record, "__connect.errors.exception.class.name"), expected.class, "{:?}", record.headers);
        assert_eq!(header(record, "__connect.errors.stage"), expected.stage);
        assert_eq!(header(record, "__connect.errors.offset"), offset.to_string());
        assert_eq!(header(record, "__connect.errors.topic"), "feedback");
        assert!(header(record, "__connect.errors.exception.message").contains(expected.says), "{:?}", record.headers);
    }
    let outage = &dead[bad.len()];
    assert_eq!(header(outage, "__connect.errors.exception.class.name"), "bandit.RegistryUnavailable");
    assert_eq!(header(outage, "__connect.errors.offset"), offset.to_string());
    assert!(header(outage, "__connect.errors.exception.message").contains("503"), "{:?}", outage.headers);
    wait_until("metrics", Duration::from_secs(10), || sink.metric("bandit_sink_events_dead_lettered_total") == Some(7.0));
}

#[test]
fn a_registry_refusing_the_credentials_stops_the_sink() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 1);
    let registry = MockRegistry::with_basic_auth("bandit:right");
    let event = &feedback_events(1, 1, DIM, 34)[0];
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
    producer.send("k", &framed(1, event, None));
    producer.flush();
    let mut options = avro_options(&broker, "feedback", redis.port, &registry);
    options.extra.extend(["--schema-registry-basic-auth", "bandit:wrong"].map(String::from));
    let mut sink = SinkProcess::start(&options);
    let status = sink.wait_exit(DEADLINE).unwrap_or_else(|| panic!("the sink should stop:\n{}", sink.log()));
    assert!(!status.success());
    let log = sink.log();
    assert!(log.contains("schema registry refused") && log.contains("401"), "{log}");
    assert!(!log.contains("wrong"), "{log}");
}

#[test]
fn a_zstd_compressed_producer_is_consumed() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 2);
    let events = feedback_events(300, 7, DIM, 35);
    // Batches of many records, each batch compressed with zstd.
    let properties = BTreeMap::from([
        ("compression.type".to_owned(), "zstd".to_owned()),
        ("linger.ms".to_owned(), "50".to_owned()),
    ]);
    let producer = FeedbackProducer::new(&broker.bootstrap(), "feedback", &properties).unwrap();
    send_all(&producer, &events);
    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    let sink = SinkProcess::start(&options);
    let mut conn = redis.connect();
    // tansu 0.6 reports a high watermark of 1 for a partition written in
    // batches of many records, so the end is the count, not the offsets.
    wait_until(&format!("300 events in the model\n{}", sink.log()), DEADLINE, || model_updates(&mut conn, &options.model) == 300);
    assert_model_equals_fold(&mut conn, &options.model, &events, DIM, LAMBDA);
    let offsets: i64 = bandit_tests::sink::model_offsets(&mut conn, &options.model).values().sum();
    assert_eq!(offsets, 300, "every record once");
}

#[test]
fn the_sink_authenticates_with_sasl_scram_and_never_shows_the_password() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start_with_scram("bandit", "s3cret-sasl", &[("feedback", 2)]);
    let sasl = broker.client_properties();
    let mut properties = producer_properties(&[]);
    properties.extend(sasl.iter().cloned());
    let events = feedback_events(200, 6, DIM, 36);
    send_all(&FeedbackProducer::new(&broker.bootstrap(), "feedback", &properties).unwrap(), &events);

    let mut options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    options.extra = sasl.iter().flat_map(|(k, v)| ["-X".to_owned(), format!("{k}={v}")]).collect();
    let sink = SinkProcess::start(&options);
    let mut conn = redis.connect();
    // (The harness's watermark reader has no credentials: the end is the count.)
    wait_until(&format!("200 events in the model\n{}", sink.log()), DEADLINE, || model_updates(&mut conn, &options.model) == 200);
    assert_model_equals_fold(&mut conn, &options.model, &events, DIM, LAMBDA);
    let log = sink.log();
    assert!(!log.contains("s3cret"), "{log}");
    assert!(log.contains(r#""sasl.password" = "***""#) && log.contains(r#""sasl.username" = "bandit""#), "{log}");

    // The wrong password: nothing is consumed and /health says why.
    let mut wrong = options.clone();
    wrong.model = "model:wrong".into();
    wrong.group = "wrong".into();
    wrong.extra = sasl
        .iter()
        .map(|(k, v)| (k.clone(), if k == "sasl.password" { "not-it".to_owned() } else { v.clone() }))
        .flat_map(|(k, v)| ["-X".to_owned(), format!("{k}={v}")])
        .collect();
    let refused = SinkProcess::start(&wrong);
    refused.wait_for_health(503, "kafka", DEADLINE);
    assert_eq!(model_updates(&mut conn, "model:wrong"), 0);
    assert!(!refused.log().contains("not-it"), "{}", refused.log());
}
