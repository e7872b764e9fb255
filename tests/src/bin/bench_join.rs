//! `cargo run --release -p bandit-tests --bin bench_join -- [--decisions N]
//! [--partitions P] [--dim D]`
//!
//! Starts tansu on a free port, produces N decisions (1–4 items shown) and
//! their rewards (`bandit_tests::join::generate`, reward wait 30 s, events
//! in the past so the last ones close by the clock) with normal batching,
//! then measures, in the same run:
//! - a bare rdkafka consumer reading both topics: the broker's ceiling;
//! - bandit-join from its first record read to every decision joined (its
//!   examples handed to the producer): records (decisions + rewards) per
//!   second, and examples per second. Its producer batches normally here.
//!
//! Compare with `bench_sink` (the trainer's events/s into the model).

use std::time::{Duration, Instant};

use bandit_tests::join::{create_topics, generate, JoinOptions, JoinProcess, Rules};
use bandit_tests::kafka::KafkaBroker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn main() {
    let mut decisions = 100_000usize;
    let mut partitions = 4i32;
    let mut dim = 15usize;
    bandit_tests::bench_args::numeric_flags(|flag, value| {
        match flag {
            "--decisions" => decisions = value as usize,
            "--partitions" => partitions = value as i32,
            "--dim" => dim = value as usize,
            _ => return false,
        }
        true
    });
    let broker = KafkaBroker::start();
    create_topics(&broker, partitions as u32, 4);
    let rules = Rules { reward_wait_ms: 30_000, aggregation: "earliest", default_reward: 0.0, impressions: "cascade" };
    let streams = generate(decisions, partitions, dim, rules.reward_wait_ms, 1);
    let records = streams.records.len();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "20")
        // Batches well under a fetch's 1 MB per partition: tansu 0.6 returns
        // nothing for a fetch that starts inside a batch, which is where a
        // consumer resumes after a truncated one.
        .set("batch.num.messages", "500")
        .create()
        .expect("producer");
    let started = Instant::now();
    for (topic, partition, key, payload) in &streams.records {
        let mut record = BaseRecord::to(topic).partition(*partition).key(key.as_str()).payload(payload.as_slice());
        while let Err((_, returned)) = producer.send(record) {
            record = returned;
            producer.poll(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    println!(
        "produced {} decisions and {} rewards ({records} records, d = {dim}, {partitions} partition pairs) in {:.1} s",
        streams.decisions.len(),
        streams.rewards.len(),
        started.elapsed().as_secs_f64()
    );

    let bare: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "bare")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    bare.subscribe(&["decisions", "rewards"]).expect("subscribe");
    let mut read = 0;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while read < records && Instant::now() < deadline {
        if let Some(Ok(_)) = bare.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            read += 1;
        }
    }
    let bare_rate = read as f64 / first.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
    drop(bare);
    println!("bare rdkafka consumer (both topics): {bare_rate:.0} records/s");

    let options = JoinOptions { group: "bench-join".into(), commit_interval_ms: 1000, extra: vec![], ..JoinOptions::new(&broker.bootstrap(), rules) };
    let joiner = JoinProcess::start(&options);
    let metric = |name: &str| joiner.metric(name).unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(600);
    while metric("bandit_join_decisions_read_total") == 0.0 {
        assert!(Instant::now() < deadline, "the joiner never read:\n{}", joiner.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let valid = streams.decisions.len() as f64;
    while metric("bandit_join_decisions_joined_total") < valid || metric("bandit_join_commits_total") == 0.0 {
        assert!(Instant::now() < deadline, "the joiner did not finish:\n{}", joiner.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let examples = metric("bandit_join_examples_emitted_total");
    println!(
        "bandit-join: {:.0} records/s ({:.0}% of the bare consumer), {:.0} examples/s ({examples} examples) in {elapsed:.1} s",
        records as f64 / elapsed,
        100.0 * records as f64 / elapsed / bare_rate,
        examples / elapsed
    );
}
