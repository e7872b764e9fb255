//! bandit-sink's sequence fence against a real broker (tansu) and Redis: the
//! join's examples carry `source` (decisions partition, seq), and after a
//! joiner crash some come again at later offsets, possibly with another
//! reward. The model must equal the textbook fold (`bandit_tests::reference`)
//! of the stream with every repeated (source partition, seq) left out — the
//! first emission counts — through SIGKILLs of the sink between the first
//! emission and the repeat (once with everything published, so the fences
//! can only come from the model; once mid-stream), and hold each
//! partition's highest seq per source partition as its fences.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bandit_core::event::{FeedbackEvent, Source};
use bandit_tests::fixtures::Rng;
use bandit_tests::kafka::{KafkaBroker, KeyedProducer};
use bandit_tests::server::{wait_until, RedisServer};
use bandit_tests::sink::{assert_model_equals_fold, export_model, feedback_events, wait_for_model_at_end, SinkOptions, SinkProcess};

const DIM: usize = 4;
const PARTITIONS: i32 = 3;
const PRODUCTS: usize = 24;
/// Decisions partitions the examples come from.
const SOURCES: u64 = 3;
const DEADLINE: Duration = Duration::from_secs(60);

/// Product `pK` goes to partition K mod 3, so the test knows where every
/// event lands (the sink only needs one partition per product).
fn partition_of(event: &FeedbackEvent) -> i32 {
    let product: i32 = event.product_id.trim_start_matches('p').parse().unwrap_or_else(|e| panic!("{e}"));
    product % PARTITIONS
}

fn produce(producer: &KeyedProducer, events: &[FeedbackEvent]) {
    for event in events {
        let payload = serde_json::to_vec(event).unwrap_or_else(|e| panic!("{e}"));
        producer.send_to(partition_of(event), &event.product_id, &payload);
    }
    producer.flush();
}

/// The join's output, as this test plays it: four in five events carry a
/// source, whose seq grows per source partition over the whole stream
/// (`seqs`, kept across waves); the rest have none.
fn joined(count: usize, seed: u64, seqs: &mut [u64; SOURCES as usize]) -> Vec<FeedbackEvent> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut events = feedback_events(count, PRODUCTS, DIM, seed);
    for event in &mut events {
        if !rng.next_u64().is_multiple_of(5) {
            let source = rng.next_u64() % SOURCES;
            seqs[source as usize] += 1 + rng.next_u64() % 4;
            event.source = Some(Source { partition: source as i32, seq: seqs[source as usize] });
        }
    }
    events
}

/// A joiner restarted from an old checkpoint emits its last `count` sourced
/// examples again, in order; a replay may join a late reward the first
/// emission missed, so every other one comes with another reward.
fn re_emitted(events: &[FeedbackEvent], count: usize) -> Vec<FeedbackEvent> {
    let sourced: Vec<&FeedbackEvent> = events.iter().filter(|event| event.source.is_some()).collect();
    sourced[sourced.len() - count..]
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let mut again = (*event).clone();
            if i % 2 == 0 {
                again.reward = 1.0 - again.reward + 0.25;
            }
            again
        })
        .collect()
}

/// The stream without repeats: an event whose (source partition, seq) came
/// before is left out. Every repeat lands on its first emission's partition
/// (same product), after it, and seqs only grow per source otherwise, so
/// this is what a per-partition fence keeps, wherever the events land.
fn first_emissions(events: &[FeedbackEvent]) -> Vec<FeedbackEvent> {
    let mut seen = BTreeSet::new();
    events.iter().filter(|event| event.source.is_none_or(|source| seen.insert((source.partition, source.seq)))).cloned().collect()
}

#[test]
fn re_emitted_examples_are_folded_once_across_a_sigkill() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", PARTITIONS as u32);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
    let options = SinkOptions { flush_interval_ms: 100, ..SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM) };
    let mut conn = redis.connect();
    let mut seqs = [0u64; SOURCES as usize];

    // Wave 1, with a short re-emission inside it, all published: the
    // sink is killed once the model is at the end of the topic, so what
    // comes next can only be fenced with the fences it finds in the model.
    let mut all = joined(1200, 21, &mut seqs);
    let again = re_emitted(&all, 40);
    all.extend(again);
    all.extend(joined(600, 22, &mut seqs));
    produce(&producer, &all);
    let mut sink = SinkProcess::start(&options);
    let context = || sink.log();
    let published = first_emissions(&all).len() as i64;
    wait_for_model_at_end(&mut conn, &options.model, &broker.bootstrap(), "feedback", published, DEADLINE * 2, &context);
    sink.kill();

    // Wave 2: the joiner crashed too and emits its last 500 examples again,
    // then goes on; the sink is killed again mid-way.
    let produced = all.len();
    let wave = re_emitted(&all, 500);
    all.extend(wave);
    all.extend(joined(600, 23, &mut seqs));
    produce(&producer, &all[produced..]);
    let mut sink = SinkProcess::start(&options);
    wait_until("the restarted sink to drop some repeats", DEADLINE, || {
        sink.metric("bandit_sink_events_duplicate_total").is_some_and(|v| v >= 50.0)
    });
    sink.kill();

    // Wave 3: once more, 300 examples again, then new ones.
    let produced = all.len();
    let wave = re_emitted(&all, 300);
    let repeats_in_wave_3 = wave.len();
    all.extend(wave);
    all.extend(joined(400, 24, &mut seqs));
    produce(&producer, &all[produced..]);

    let expected = first_emissions(&all);
    assert_eq!(all.len() - expected.len(), 840, "every re-emitted example is a repeat");
    let sink = SinkProcess::start(&options);
    let context = || sink.log();
    wait_for_model_at_end(&mut conn, &options.model, &broker.bootstrap(), "feedback", expected.len() as i64, DEADLINE * 2, &context);
    assert_model_equals_fold(&mut conn, &options.model, &expected, DIM, options.lambda);

    // The fences: per partition, the highest seq of each source partition.
    let mut fences: BTreeMap<(i32, i32), u64> = BTreeMap::new();
    for event in &expected {
        if let Some(source) = event.source {
            let fence = fences.entry((partition_of(event), source.partition)).or_default();
            *fence = (*fence).max(source.seq);
        }
    }
    let want: Vec<(i32, i32, u64)> = fences.into_iter().map(|((partition, source), seq)| (partition, source, seq)).collect();
    assert_eq!(want.len(), (PARTITIONS as u64 * SOURCES) as usize);
    assert_eq!(export_model(&mut conn, &options.model).fences, want);
    // The last sink read every repeat of wave 3 (all after the model's
    // offsets when it started) and dropped each.
    let duplicates = sink.metric("bandit_sink_events_duplicate_total").unwrap_or_default();
    assert!(duplicates >= repeats_in_wave_3 as f64, "{duplicates} duplicates dropped, {repeats_in_wave_3} repeats in wave 3\n{}", sink.log());
}
