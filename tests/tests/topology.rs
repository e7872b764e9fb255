//! The sink and the client against topologies beyond one Redis: a Redis
//! Cluster (models on several primaries, a slot resharded while the sink
//! runs, a primary killed and its replica promoted, RANK from replicas), a
//! TLS server with certificates made here, and a Sentinel failover. After
//! every disturbance the model must equal the textbook fold of every event
//! (`bandit_tests::reference`), exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use bandit::models::{Models, RankOptions};
use bandit_core::event::FeedbackEvent;
use bandit_tests::fixtures::context;
use bandit_tests::kafka::{KafkaBroker, KeyedProducer};
use bandit_tests::resp::Connection;
use bandit_tests::server::wait_until;
use bandit_tests::sink::{
    assert_model_equals_fold, feedback_events, model_updates, produce, wait_for_model_at_end, SinkOptions, SinkProcess,
};
use bandit_tests::topology::{command_calls, Certificates, Cluster, SentinelSet, TlsServer};

const DIM: usize = 4;
const DEADLINE: Duration = Duration::from_secs(90);

fn broker_with_topic(partitions: u32) -> (KafkaBroker, KeyedProducer) {
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", partitions);
    let producer = KeyedProducer::new(&broker.bootstrap(), "feedback");
    (broker, producer)
}

/// A sink for `model` reading `feedback` through `redis_url`, in its own group.
fn start_sink(broker: &KafkaBroker, model: &str, redis_url: &str) -> (SinkOptions, SinkProcess) {
    let mut options = SinkOptions::new(&broker.bootstrap(), "feedback", 0, DIM);
    options.model = model.to_owned();
    options.group = format!("sink-{model}");
    let sink = SinkProcess::start_with_redis_url(&options, redis_url);
    (options, sink)
}

/// Waits until `model`, read from the primary `connect` returns, is at the
/// end of the topic with every event, and equals their fold.
fn assert_exact(mut connect: impl FnMut() -> Connection, broker: &KafkaBroker, model: &str, events: &[FeedbackEvent], sink: &SinkProcess) {
    let mut conn = connect();
    wait_for_model_at_end(&mut conn, model, &broker.bootstrap(), "feedback", events.len() as i64, DEADLINE, &|| sink.log());
    assert_model_equals_fold(&mut conn, model, events, DIM, bandit_tests::sink::LAMBDA);
}

/// Three sinks publish three models whose keys live on the three primaries;
/// each equals the fold. Then the client reads the models from replicas
/// (READONLY), which answer the same as their primaries.
#[test]
fn cluster_models_on_every_primary_are_exact_and_replicas_serve_rank() {
    let cluster = Cluster::start(3, 1);
    let (broker, producer) = broker_with_topic(2);
    let models = cluster.keys_on_every_primary("model");
    assert_eq!(models.len(), 3, "one model per primary");
    let events = feedback_events(900, 12, DIM, 71);
    produce(&producer, &events);
    let sinks: Vec<(SinkOptions, SinkProcess)> = models.iter().map(|model| start_sink(&broker, model, &cluster.url())).collect();
    for (model, (_, sink)) in models.iter().zip(&sinks) {
        assert_exact(|| cluster.connect_for(model), &broker, model, &events, sink);
    }

    // Every replica has the model its primary has.
    for model in &models {
        let primary = cluster.owner_of(model);
        for replica in cluster.replica_ports(primary) {
            wait_until("the replica to have every event", DEADLINE, || {
                // READONLY: a cluster replica redirects reads to the primary without it.
                Connection::connect(replica).is_ok_and(|mut conn| {
                    conn.call(&["READONLY"]).is_ok() && model_updates(&mut conn, model) == events.len() as i64
                })
            });
        }
    }
    let ranks_on = |ports: &[u16]| ports.iter().map(|&port| command_calls(port, "bandit.rank")).sum::<u64>();
    let primaries = cluster.primary_ports();
    let replicas: Vec<u16> = primaries.iter().flat_map(|&p| cluster.replica_ports(p)).collect();
    let (primary_ranks, replica_ranks) = (ranks_on(&primaries), ranks_on(&replicas));

    cluster.wait_until_replicas_advertised(1);
    let mut from_primaries = Models::connect(&cluster.url()).unwrap();
    let mut from_replicas = Models::connect(&format!("{}?read_from=replica", cluster.url())).unwrap();
    let options = RankOptions { candidates: None, top_k: Some(12), alpha: None };
    for (i, model) in models.iter().enumerate() {
        let x = context(DIM, 100 + i as u64);
        let want = from_primaries.rank(model, &x, &options).unwrap();
        let got = from_replicas.rank(model, &x, &options).unwrap();
        assert_eq!(got, want, "{model}: a replica ranks as its primary");
        assert_eq!(want.len(), 12);
    }
    assert_eq!(ranks_on(&replicas) - replica_ranks, 3, "each replica-read RANK ran on a replica");
    assert_eq!(ranks_on(&primaries) - primary_ranks, 3, "and only the primary-read ones on primaries");
}

/// The model's slot moves to another primary while the sink publishes: it
/// is held half-moved for a while (ASK from the old owner), then handed
/// over (MOVED). The model stays exact, and the sink did follow an ASK.
#[test]
fn resharding_the_model_slot_while_the_sink_runs_keeps_it_exact() {
    let cluster = Cluster::start(3, 0);
    let (broker, producer) = broker_with_topic(2);
    let model = "model:reshard";
    let (_, sink) = start_sink(&broker, model, &cluster.url());
    let events = feedback_events(2400, 16, DIM, 72);
    let (first, rest) = events.split_at(600);
    produce(&producer, first);
    assert_exact(|| cluster.connect_for(model), &broker, model, first, &sink);

    let slot = cluster.slot_of(model);
    let from = cluster.owner_of(model);
    let to = cluster.primary_ports().into_iter().find(|&port| port != from).unwrap();
    let asking_before = command_calls(to, "asking");
    // Events keep coming while the slot moves.
    let producing = std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            for chunk in rest.chunks(200) {
                produce(&producer, chunk);
                std::thread::sleep(Duration::from_millis(150));
            }
        });
        cluster.migrate_slot(slot, to, Duration::from_secs(3));
        handle.join()
    });
    assert!(producing.is_ok());
    assert_eq!(cluster.owner_of(model), to);
    assert_exact(|| cluster.connect_for(model), &broker, model, &events, &sink);
    assert!(command_calls(to, "asking") > asking_before, "the sink followed an ASK redirect\n{}", sink.log());
}

/// The primary that holds the model is SIGKILLed while the sink publishes;
/// the cluster promotes its replica, which may lack the last LOADs. The sink
/// notices, replays from the model's offsets, and the model is exact.
#[test]
fn a_killed_primary_is_replaced_by_its_replica_and_the_model_stays_exact() {
    let mut cluster = Cluster::start(3, 1);
    let (broker, producer) = broker_with_topic(2);
    let model = "model:failover";
    let (_, sink) = start_sink(&broker, model, &cluster.url());
    let events = feedback_events(2000, 16, DIM, 73);
    let (first, rest) = events.split_at(800);
    produce(&producer, first);
    assert_exact(|| cluster.connect_for(model), &broker, model, first, &sink);

    let (second, third) = rest.split_at(600);
    produce(&producer, second);
    let old = cluster.owner_of(model);
    let promoted = cluster.kill_and_wait_for_failover(old);
    produce(&producer, third);
    assert_eq!(cluster.owner_of(model), promoted);
    assert_exact(|| cluster.connect_for(model), &broker, model, &events, &sink);
}

/// TLS with a CA the test made: the server's certificate is verified, and
/// the client certificate the server requires is sent. The sink folds
/// exactly through `rediss://`.
#[test]
fn tls_verifies_the_server_and_sends_the_client_certificate() {
    let certs = Certificates::generate();
    let tls = TlsServer::start(&certs, true);
    let path = |file: &str| certs.path(file).display().to_string();
    let full = format!("tls_ca={}&tls_cert={}&tls_key={}", path("ca.crt"), path("client.crt"), path("client.key"));

    let mut models = Models::connect(&tls.url(&full)).unwrap();
    models.create("tls:model", DIM, &bandit::models::CreateOptions::default()).unwrap();
    let ranked = models.rank("tls:model", &context(DIM, 1), &RankOptions { candidates: Some(&["a".into(), "b".into()]), top_k: None, alpha: None });
    assert_eq!(ranked.unwrap().len(), 2);

    // Each of these must be refused: no trust in the server's CA; trust in
    // another CA only; no client certificate where one is required; plain
    // TCP to the TLS port.
    let refused = [
        tls.url(&format!("tls_cert={}&tls_key={}", path("client.crt"), path("client.key"))),
        tls.url(&format!("tls_ca={}&tls_cert={}&tls_key={}", path("other-ca.crt"), path("client.crt"), path("client.key"))),
        tls.url(&format!("tls_ca={}", path("ca.crt"))),
        format!("redis://127.0.0.1:{}", tls.tls_port),
    ];
    for url in &refused {
        let outcome = Models::connect(url).and_then(|mut m| m.stats("tls:model", None).map(|_| ()));
        assert!(outcome.is_err(), "{url} must be refused");
    }

    let (broker, producer) = broker_with_topic(1);
    let events = feedback_events(400, 8, DIM, 74);
    produce(&producer, &events);
    let (_, sink) = start_sink(&broker, "model:tls", &tls.url(&full));
    assert_exact(|| tls.server.connect(), &broker, "model:tls", &events, &sink);
}

/// Sentinels watch a primary and a replica. The sink finds the primary by
/// name; the primary is SIGKILLed; the Sentinels promote the replica, the
/// sink follows it, and the model there is exact.
#[test]
fn a_sentinel_failover_keeps_the_model_exact() {
    let mut set = SentinelSet::start(1, 3);
    let (broker, producer) = broker_with_topic(2);
    let model = "model:sentinel";
    let (_, sink) = start_sink(&broker, model, &set.url());
    let events = feedback_events(1600, 12, DIM, 75);
    let (first, rest) = events.split_at(700);
    produce(&producer, first);
    let primary = set.primary_port();
    assert_exact(|| Connection::connect(primary).unwrap(), &broker, model, first, &sink);

    let (second, third) = rest.split_at(400);
    produce(&producer, second);
    let promoted = set.kill_primary_and_wait_for_failover();
    produce(&producer, third);
    assert_exact(|| Connection::connect(promoted).unwrap(), &broker, model, &events, &sink);
    // The client finds the new primary by name too.
    let mut models = Models::connect(&set.url()).unwrap();
    let stats: BTreeMap<String, String> = models.stats(model, None).unwrap();
    assert_eq!(stats.get("updates").map(String::as_str), Some(events.len().to_string().as_str()), "{}", set.logs());
}
