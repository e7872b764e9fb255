//! A real Kafka-protocol broker (tansu) per test: free port, private
//! storage, readiness awaited with a deadline, killed on drop. Plus a keyed
//! JSON producer and a reader for checking topics, both on rdkafka.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::process::output_within;
use crate::server::{await_ready, free_port, kill_child, TempDir};

const READY_DEADLINE: Duration = Duration::from_secs(30);

/// The tansu executable: `$TANSU`, or on PATH, or in ~/.cargo/bin.
pub fn tansu_path() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").map(PathBuf::from).unwrap_or_default();
    let cargo_bin = home.join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        cargo_bin
    } else {
        PathBuf::from("tansu")
    }
}

/// A running tansu broker.
#[derive(Debug)]
pub struct KafkaBroker {
    pub port: u16,
    persistent: bool,
    /// SASL/SCRAM-SHA-512 user and password the broker requires, if any.
    scram: Option<(String, String)>,
    child: Option<Child>,
    dir: TempDir,
}

impl KafkaBroker {
    /// A broker with in-memory storage.
    pub fn start() -> Self {
        Self::launch_new(false)
    }

    /// A broker with SQLite storage, which survives [`KafkaBroker::restart`].
    pub fn start_persistent() -> Self {
        Self::launch_new(true)
    }

    fn launch_new(persistent: bool) -> Self {
        let mut broker = Self { port: 0, persistent, scram: None, child: None, dir: TempDir::new("tansu") };
        let mut last = String::new();
        for _ in 0..5 {
            broker.port = free_port();
            match broker.launch() {
                Ok(()) => return broker,
                Err(e) => last = e,
            }
        }
        panic!("tansu did not start: {last}\n{}", broker.log());
    }

    /// A broker that requires SASL/SCRAM-SHA-512 as `user` (tansu 0.6:
    /// SASL over plaintext; its TLS flags cannot be used), with `topics`
    /// (name, partitions). tansu creates users and topics only for clients
    /// it lets in, so both are made before authentication is switched on.
    pub fn start_with_scram(user: &str, password: &str, topics: &[(&str, u32)]) -> Self {
        let mut broker = Self::start_persistent();
        let url = format!("tcp://127.0.0.1:{}", broker.port);
        let output = output_within(
            Command::new(tansu_path()).args(["user", "create", user, password, "--mechanism", "scram512", "--broker", &url]),
            Duration::from_secs(60),
        );
        assert!(output.status.success(), "tansu user create: {}", String::from_utf8_lossy(&output.stderr));
        for (topic, partitions) in topics {
            broker.create_topic(topic, *partitions);
        }
        broker.scram = Some((user.to_owned(), password.to_owned()));
        broker.restart();
        broker
    }

    /// The librdkafka properties a client needs for this broker (SASL, if it asks for it).
    pub fn client_properties(&self) -> Vec<(String, String)> {
        match &self.scram {
            Some((user, password)) => [
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.username", user.as_str()),
                ("sasl.password", password.as_str()),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec(),
            None => Vec::new(),
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    fn launch(&mut self) -> Result<(), String> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let storage = if self.persistent {
            // Relative to the working directory, which is this broker's own.
            "sqlite://tansu.db".to_owned()
        } else {
            "memory://tansu/".to_owned()
        };
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).map_err(|e| e.to_string())?;
        let child = Command::new(tansu_path())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", &storage])
            .args(self.scram.as_ref().map(|_| "--authentication"))
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run tansu (scripts/test installs it): {e}"))?;
        self.child = Some(child);
        let bootstrap = self.bootstrap();
        let what = format!("tansu on port {}", self.port);
        let properties = self.client_properties();
        await_ready(&mut self.child, &what, READY_DEADLINE, || metadata_ok(&bootstrap, &properties))
    }

    /// Creates a topic (before anyone produces to it).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let output = output_within(
            Command::new(tansu_path())
                .args(["topic", "create", name, "--broker", &format!("tcp://127.0.0.1:{}", self.port)])
                .args(["--partitions", &partitions.to_string()]),
            Duration::from_secs(60),
        );
        assert!(
            output.status.success(),
            "tansu topic create {name} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Stops the broker (SIGKILL) and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.launch().unwrap_or_else(|e| panic!("tansu restart: {e}\n{}", self.log()));
    }

    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the broker answers a metadata request.
fn metadata_ok(bootstrap: &str, properties: &[(String, String)]) -> bool {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("log_level", "0");
    for (key, value) in properties {
        config.set(key, value);
    }
    let Ok(consumer) = config.create::<BaseConsumer>() else {
        return false;
    };
    consumer.fetch_metadata(None, Duration::from_millis(500)).is_ok()
}

/// Produces records keyed by product id, as the client does.
pub struct KeyedProducer {
    producer: BaseProducer,
    topic: String,
}

impl std::fmt::Debug for KeyedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedProducer").field("topic", &self.topic).finish()
    }
}

impl KeyedProducer {
    pub fn new(bootstrap: &str, topic: &str) -> Self {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5")
            // tansu 0.6 returns nothing for a fetch that starts inside a record
            // batch (Apache Kafka returns the batch). The sink resumes from the
            // model's offset, which can be anywhere, so tests write one record
            // per batch.
            .set("batch.num.messages", "1")
            .set("enable.idempotence", "true")
            .create()
            .unwrap_or_else(|e| panic!("producer: {e}"));
        Self { producer, topic: topic.to_owned() }
    }

    pub fn send(&self, key: &str, payload: &[u8]) {
        self.send_record(BaseRecord::<str, [u8]>::to(&self.topic).key(key).payload(payload));
    }

    /// Sends to a chosen partition, whatever the key says (a producer that
    /// does not key by product id, or a test that needs to know where a
    /// record lands).
    pub fn send_to(&self, partition: i32, key: &str, payload: &[u8]) {
        self.send_record(BaseRecord::<str, [u8]>::to(&self.topic).partition(partition).key(key).payload(payload));
    }

    fn send_record(&self, mut record: BaseRecord<'_, str, [u8]>) {
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((_, returned)) => {
                    record = returned;
                    self.producer.poll(Duration::from_millis(50));
                }
            }
        }
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).unwrap_or_else(|e| panic!("flush: {e}"));
    }
}

/// A record read back from a topic, headers included.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

fn plain_consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"))
}

/// (partition, high watermark) of every partition of a topic (0 for an
/// empty one), retried until the broker answers.
pub fn high_watermarks(bootstrap: &str, topic: &str) -> Vec<(i32, i64)> {
    let consumer = plain_consumer(bootstrap);
    let end = Instant::now() + READY_DEADLINE;
    loop {
        let answer = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).ok().and_then(|metadata| {
            let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
            partitions
                .into_iter()
                .map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).ok().map(|(_, high)| (p, high)))
                .collect::<Option<Vec<_>>>()
                .filter(|marks| !marks.is_empty())
        });
        if let Some(marks) = answer {
            return marks;
        }
        assert!(Instant::now() < end, "no watermarks for {topic} from {bootstrap}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads every record of a topic (all partitions from the beginning) until
/// it is drained: every partition's position has reached the high
/// watermark and no record arrived for a quiet second. Fails at the
/// deadline. Reading to the end, not to an expected count, lets the caller
/// see duplicates.
pub fn read_topic(bootstrap: &str, topic: &str, partitions: i32, deadline: Duration) -> Vec<ReadRecord> {
    const QUIET: Duration = Duration::from_secs(1);
    let marks: std::collections::BTreeMap<i32, i64> = high_watermarks(bootstrap, topic).into_iter().collect();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("reader: {e}"));
    let mut tpl = TopicPartitionList::new();
    for partition in 0..partitions {
        let _ = tpl.add_partition_offset(topic, partition, Offset::Beginning);
    }
    consumer.assign(&tpl).unwrap_or_else(|e| panic!("assign: {e}"));
    let mut records: Vec<ReadRecord> = Vec::new();
    let end = Instant::now() + deadline;
    let mut last_record = Instant::now();
    let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
    loop {
        let at_end = (0..partitions).all(|p| next.get(&p).copied().unwrap_or(0) >= marks.get(&p).copied().unwrap_or(0));
        if at_end && last_record.elapsed() >= QUIET {
            return records;
        }
        assert!(Instant::now() < end, "{topic} not drained within {deadline:?}: at {next:?}, end {marks:?}");
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            last_record = Instant::now();
            next.insert(message.partition(), message.offset() + 1);
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            records.push(ReadRecord {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
}
