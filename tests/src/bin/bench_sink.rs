//! `cargo run --release -p bandit-tests --bin bench_sink -- [--events N]
//! [--dim D] [--flush-interval-ms MS] [--samples S]`
//!
//! Starts redis-server (with the module) and tansu on free ports, then
//! measures:
//! - end-to-end events/s from the broker into the model through bandit-sink,
//!   beside a bare rdkafka consumer reading the same topic in the same run;
//! - freshness: time from producing an event to BANDIT.STATS showing it,
//!   p50/p99 over a number of samples, against flush interval + 250 ms.

use std::time::{Duration, Instant};

use bandit_tests::fixtures::Rng;
use bandit_tests::kafka::KafkaBroker;
use bandit_tests::server::RedisServer;
use bandit_tests::sink::{feedback_events, model_updates, SinkOptions, SinkProcess};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn main() {
    let mut events = 400_000usize;
    let mut dim = 15usize;
    let mut flush_interval_ms = 1000u64;
    let mut samples = 20usize;
    bandit_tests::bench_args::numeric_flags(|flag, value| {
        match flag {
            "--events" => events = value as usize,
            "--dim" => dim = value as usize,
            "--flush-interval-ms" => flush_interval_ms = value,
            "--samples" => samples = value as usize,
            _ => return false,
        }
        true
    });
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("bench", 4);

    // Produce with normal batching: both consumers read from the beginning.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    let payloads: Vec<(String, Vec<u8>)> = feedback_events(events, 200, dim, 1)
        .into_iter()
        .map(|e| (e.product_id.clone(), serde_json::to_vec(&e).expect("json")))
        .collect();
    let started = Instant::now();
    for (key, payload) in &payloads {
        let mut record = BaseRecord::to("bench").key(key.as_str()).payload(payload.as_slice());
        while let Err((_, returned)) = producer.send(record) {
            record = returned;
            producer.poll(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    println!("produced {events} events (d = {dim}) in {:.1} s", started.elapsed().as_secs_f64());

    // Bare consumer: read everything, nothing else.
    let bare: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "bare")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    bare.subscribe(&["bench"]).expect("subscribe");
    let started = Instant::now();
    let mut read = 0;
    let mut bytes = 0usize;
    while read < events && started.elapsed() < Duration::from_secs(300) {
        if let Some(Ok(message)) = bare.poll(Duration::from_millis(100)) {
            bytes += message.payload_len();
            read += 1;
        }
    }
    let bare_rate = read as f64 / started.elapsed().as_secs_f64();
    drop(bare);
    println!("bare rdkafka consumer: {bare_rate:.0} events/s ({read} events, {:.1} MB)", bytes as f64 / 1e6);

    let options = SinkOptions { flush_interval_ms, model: "bench:model".into(), group: "bench-sink".into(), ..SinkOptions::new(&broker.bootstrap(), "bench", redis.port, dim) };
    let started = Instant::now();
    let mut sink = SinkProcess::start(&options);
    let mut conn = redis.connect();
    while model_updates(&mut conn, &options.model) < events as i64 && started.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let sink_rate = events as f64 / started.elapsed().as_secs_f64();
    println!(
        "bandit-sink into the model: {sink_rate:.0} events/s (start-up and last flush included) = {:.0}% of the bare consumer",
        100.0 * sink_rate / bare_rate
    );

    // Freshness: one new product at a time, at a random point of the flush cycle.
    let mut rng = Rng::new(3);
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        std::thread::sleep(Duration::from_millis((rng.unit() * flush_interval_ms as f64) as u64));
        let event = bandit_core::event::FeedbackEvent {
            event_id: format!("fresh-{i}"),
            product_id: format!("fresh-{i}"),
            reward: 1.0,
            context_vector: vec![0.5; dim],
            timestamp: 0,
            ..Default::default()
        };
        let payload = serde_json::to_vec(&event).expect("json");
        let sent = Instant::now();
        producer.send(BaseRecord::to("bench").key(&event.product_id).payload(&payload)).map_err(|(e, _)| e).expect("send");
        producer.flush(Duration::from_secs(10)).expect("flush");
        loop {
            let reply = conn.call(&["BANDIT.STATS", "bench:model", "ARM", &event.product_id]).expect("stats");
            if !reply.is_error() {
                break;
            }
            if sent.elapsed() > Duration::from_secs(60) {
                panic!("event {i} never showed up:\n{}", sink.log());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        latencies.push(sent.elapsed());
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    println!(
        "freshness (produce -> RANK sees it), flush interval {flush_interval_ms} ms: p50 {:.0} ms, p99 {:.0} ms (goal: p99 <= {} ms)",
        at(0.5),
        at(0.99),
        flush_interval_ms + 250
    );
    let _ = sink.terminate(Duration::from_secs(30));
}
