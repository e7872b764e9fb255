//! The client library and the `bandit` CLI against real servers, and the
//! demo in short form. Expected scores come from `bandit_tests::reference`
//! (a dense textbook LinUCB), not from the core the module scores with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bandit::feedback::FeedbackProducer;
use bandit::models::{CreateOptions, Models, RankOptions, Ranked};
use bandit::ClientError;
use bandit_core::codec::{encode_binary, Format};
use bandit_tests::fixtures::context;
use bandit_tests::kafka::KafkaBroker;
use bandit_tests::process::output_within;
use bandit_tests::reference::{close, fold_events, payload_arms, prior_score, DenseArm};
use bandit_tests::server::{await_ready, built_artifact, free_port, kill_child, wait_until, workspace_root, RedisServer, TempDir};
// ALPHA and LAMBDA are not the defaults (1 and 1), so that a setting dropped
// anywhere on the way shows up as a different score.
use bandit_tests::sink::{feedback_events, model_updates, SinkOptions, SinkProcess, ALPHA, LAMBDA};

/// Scores from the module (f32 rows) against the reference (f64).
const SCORE_TOLERANCE: f64 = 1e-5;

/// The harness's α and λ, the module's default decay.
fn settings() -> CreateOptions {
    CreateOptions { alpha: Some(ALPHA), lambda: Some(LAMBDA), decay: None }
}

fn url(server: &RedisServer) -> String {
    format!("redis://127.0.0.1:{}", server.port)
}

/// Asserts that `ranked` is best first and that every score is the
/// reference's for its id (the prior's for an id the model lacks); together
/// these pin the order up to ties within the tolerance.
fn assert_ranked_as_reference(ranked: &[Ranked], arms: &BTreeMap<String, DenseArm>, x: &[f64], alpha: f64, lambda: f64) {
    assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score), "not best first: {ranked:?}");
    for r in ranked {
        let want = arms.get(&r.id).map_or_else(|| prior_score(x, alpha, lambda), |arm| arm.score(x, alpha));
        assert!(close(r.score, want, SCORE_TOLERANCE), "{}: score {} vs reference {want}", r.id, r.score);
    }
}

#[test]
fn the_library_ranks_and_manages_models() {
    let server = RedisServer::start();
    let mut models = Models::connect(&url(&server)).unwrap();
    models.create("m", 6, &settings()).unwrap();
    let payload = bandit::lab::bench::trained_payload_with_lambda(6, 30, 10, 3, LAMBDA).unwrap();
    assert_eq!(models.load("m", &encode_binary(&payload).unwrap()).unwrap(), 30);
    let arms = payload_arms(&payload);

    let x = context(6, 5);
    let candidates: Vec<String> = (0..30).map(|i| format!("p{i}")).chain(["brand-new".to_string()]).collect();
    let options = RankOptions { candidates: Some(&candidates), top_k: Some(31), alpha: None };
    let ranked = models.rank("m", &x, &options).unwrap();
    let mut ids: Vec<String> = ranked.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let mut want_ids = candidates.clone();
    want_ids.sort();
    assert_eq!(ids, want_ids, "every candidate once");
    assert_ranked_as_reference(&ranked, &arms, &x, ALPHA, LAMBDA);
    // The same order as the module's own reply to a text CONTEXT.
    let mut raw = server.connect();
    let mut args = vec!["BANDIT.RANK".to_string(), "m".into(), "CONTEXT".into()];
    args.extend(x.iter().map(|v| format!("{v:?}")));
    args.extend(["ARMS".into(), "31".into()]);
    args.extend(candidates.iter().cloned());
    let raw_ids: Vec<String> = raw.call(&args).unwrap().array().iter().map(|r| r.text()).collect();
    assert_eq!(ranked.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), raw_ids);

    // TOP 3 with α = 0 over every arm: the three best means, best first.
    let top = models.rank("m", &x, &RankOptions { top_k: Some(3), alpha: Some(0.0), ..RankOptions::default() }).unwrap();
    assert_ranked_as_reference(&top, &arms, &x, 0.0, LAMBDA);
    let mut by_mean: Vec<(f64, &String)> = arms.iter().map(|(id, arm)| (arm.score(&x, 0.0), id)).collect();
    by_mean.sort_by(|a, b| b.0.total_cmp(&a.0));
    let third = by_mean.get(2).map(|(s, _)| *s).unwrap();
    let fourth = by_mean.get(3).map(|(s, _)| *s).unwrap();
    assert!(third - fourth > 1e-6, "the fixture has a clear top 3");
    let want_top: Vec<&String> = by_mean.iter().take(3).map(|(_, id)| *id).collect();
    assert_eq!(top.iter().map(|r| &r.id).collect::<Vec<_>>(), want_top);

    let stats = models.stats("m", None).unwrap();
    assert_eq!(stats["arms"], "30");
    assert_eq!(stats["alpha"], "0.3");
    assert_eq!(stats["lambda"], "2.5");
    assert_eq!(models.stats("m", Some("p4")).unwrap()["n"], "10");
    assert_eq!(models.dim("m").unwrap(), Some(6));
    assert_eq!(models.dim("nope").unwrap(), None);
    let json = models.export("m", None, Format::Json).unwrap();
    assert_eq!(json.first(), Some(&b'{'));
    assert_eq!(models.export_payload("m").unwrap().arms.len(), 30);
    models.create("copy", 6, &settings()).unwrap();
    assert_eq!(models.load("copy", &json).unwrap(), 30);

    // Server errors are typed errors, printed once, not panics.
    let missing = models.rank("nope", &x, &RankOptions::default()).unwrap_err();
    assert!(matches!(&missing, ClientError::NoSuchModel { model, .. } if model == "nope"), "{missing:?}");
    assert_eq!(missing.to_string(), format!("no such model 'nope' at {}", url(&server)));
    let wrong_dim = models.rank("m", &[1.0], &RankOptions::default()).unwrap_err();
    assert!(matches!(wrong_dim, ClientError::ContextLength { given: 1, dim: 6 }), "{wrong_dim:?}");
    let exists = models.create("m", 7, &settings()).unwrap_err();
    assert!(matches!(&exists, ClientError::Server { code, .. } if code == "EXISTS"), "{exists:?}");
    assert!(exists.to_string().contains("DIM 6"), "{exists}");
}

/// The `bandit` binary.
fn bandit_bin() -> PathBuf {
    built_artifact("BANDIT_CLI", "bandit", "cargo build --release -p bandit")
}

/// One run of the CLI.
#[derive(Debug)]
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `bandit` with `args`, none of its settings taken from the environment.
fn bandit(args: &[&str]) -> Run {
    let mut command = Command::new(bandit_bin());
    for var in ["BANDIT_REDIS", "BANDIT_BROKERS", "BANDIT_TOPIC", "BANDIT_MODEL", "BANDIT_KAFKA_TIMEOUT", "BANDIT_DECISIONS_TOPIC", "BANDIT_REWARDS_TOPIC"] {
        command.env_remove(var);
    }
    let output = output_within(command.args(args), Duration::from_secs(120));
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `bandit` and asserts that it succeeded.
fn bandit_ok(args: &[&str]) -> String {
    let run = bandit(args);
    assert!(run.success, "bandit {args:?} failed:\n{}{}", run.stdout, run.stderr);
    run.stdout
}

/// `bandit stats` as field → value.
fn cli_stats(url: &str, model: &str) -> BTreeMap<String, String> {
    bandit_ok(&["--redis", url, "--model", model, "stats"])
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A redis-server without the bandit module, stopped on drop.
struct PlainRedis {
    port: u16,
    child: Option<Child>,
    _dir: TempDir,
}

impl PlainRedis {
    fn start() -> Self {
        let dir = TempDir::new("plain-redis");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server");
        let mut server = Self { port, child: Some(child), _dir: dir };
        let ready = || bandit_tests::resp::Connection::connect(port).is_ok_and(|mut c| c.call(&["PING"]).is_ok());
        await_ready(&mut server.child, "plain redis-server", Duration::from_secs(20), ready).unwrap();
        server
    }
}

impl Drop for PlainRedis {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

#[test]
fn cli_errors_are_printed_once_and_in_the_users_terms() {
    let server = RedisServer::start();
    let url = url(&server);
    bandit_ok(&["--redis", &url, "create", "--dim", "15", "--alpha", "0.4"]);

    // A missing model: the reason once, without the redis crate's wrapping.
    let missing = bandit(&["--redis", &url, "--model", "nope", "stats"]);
    assert!(!missing.success);
    assert_eq!(missing.stderr.matches("no such model").count(), 1, "{}", missing.stderr);
    assert!(!missing.stderr.contains("ResponseError") && !missing.stderr.contains("signalled"), "{}", missing.stderr);

    // A short context: named as the option the user typed.
    let short = bandit(&["--redis", &url, "rank", "--context", "1,0.5"]);
    assert!(!short.success);
    assert!(short.stderr.contains("--context has 2 values, model dim is 15"), "{}", short.stderr);
    assert!(!short.stderr.contains("CONTEXTBLOB"), "{}", short.stderr);

    // Numbers at their shortest: 0.4, not 0.40000000000000002; 0, not -0.
    let stats = cli_stats(&url, "bandit:model");
    assert_eq!(stats["alpha"], "0.4");
    assert_eq!(stats["reward_sum"], "0");

    // Redis without the module.
    let plain = PlainRedis::start();
    let plain_url = format!("redis://127.0.0.1:{}", plain.port);
    let no_module = bandit(&["--redis", &plain_url, "stats"]);
    assert!(!no_module.success);
    let want = format!("the bandit module is not loaded in this Redis at {plain_url}");
    assert!(no_module.stderr.contains(&want), "{}", no_module.stderr);

    // An option that the learning loop cannot honour is refused, not ignored.
    let ignored = bandit(&["--redis", &url, "simulate", "--steps", "10", "--feedback", "all"]);
    assert!(!ignored.success);
    assert!(ignored.stderr.contains("--feedback applies with --direct or --local"), "{}", ignored.stderr);
}

#[test]
fn cli_feedback_is_checked_before_it_is_sent() {
    let server = RedisServer::start();
    let url = url(&server);
    bandit_ok(&["--redis", &url, "create", "--dim", "15"]);
    // No broker listens here: a refusal must come before any Kafka work.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let short = bandit(&["--redis", &url, "--brokers", &nowhere, "feedback", "--product", "p1", "--reward", "1", "--context", "1,0.5"]);
    assert!(!short.success, "{short:?}");
    assert!(short.stderr.contains("--context has 2 values, model dim is 15"), "{}", short.stderr);

    // The right length, but no broker: the up-front check names brokers and topic.
    let context15 = vec!["0.5"; 15].join(",");
    let args = ["--redis", &url, "--brokers", &nowhere, "--topic", "clicks", "--kafka-timeout", "2"];
    let no_broker = bandit(&[&args[..], &["feedback", "--product", "p1", "--reward", "1", "--context", context15.as_str()]].concat());
    assert!(!no_broker.success, "{no_broker:?}");
    let want = format!("no answer from the brokers {nowhere} about topic 'clicks'");
    assert!(no_broker.stderr.contains(&want), "{}", no_broker.stderr);

    // A model that does not exist: sent with a warning (here: refused by the broker check).
    let unchecked = bandit(&[&args[..], &["--model", "absent", "feedback", "--product", "p1", "--reward", "1", "--context", "1,0.5"]].concat());
    assert!(unchecked.stderr.contains("warning: --context (2 values) not checked"), "{}", unchecked.stderr);
}

#[test]
fn cli_feedback_to_a_missing_topic_names_it() {
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 1);
    let args = ["--redis", "redis://127.0.0.1:1", "--brokers", &broker.bootstrap(), "--kafka-timeout", "5"];
    let event = ["feedback", "--product", "p1", "--reward", "1", "--context", "0.5,0.5"];
    let missing = bandit(&[&args[..], &["--topic", "no-such-topic"], &event[..]].concat());
    assert!(!missing.success, "{missing:?}");
    let want = format!("topic 'no-such-topic' does not exist on the brokers {}", broker.bootstrap());
    assert!(missing.stderr.contains(&want), "{}", missing.stderr);
    let sent = bandit(&[&args[..], &["--topic", "feedback"], &event[..]].concat());
    assert!(sent.success && sent.stdout.trim() == "sent", "{sent:?}");
}

#[test]
fn feedback_reaches_the_model_through_the_sink() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 2);
    // The sink creates the model with ALPHA and LAMBDA.
    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, 4);
    let sink = SinkProcess::start(&options);
    let properties = BTreeMap::from([("batch.num.messages".to_string(), "1".to_string())]);
    let producer = FeedbackProducer::new(&broker.bootstrap(), "feedback", &properties).unwrap();
    assert_eq!(producer.check_topic(Duration::from_secs(10)).unwrap(), 2);
    let events = feedback_events(300, 6, 4, 21);
    for event in &events {
        producer.send(event).unwrap();
    }
    let report = producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(report.delivered, 300);
    assert_eq!(report.failed, 0);
    let mut conn = redis.connect();
    wait_until(&format!("300 events in the model\n{}", sink.log()), Duration::from_secs(60), || {
        model_updates(&mut conn, &options.model) >= 300
    });
    let url = url(&redis);
    let mut models = Models::connect(&url).unwrap();
    let stats = models.stats(&options.model, None).unwrap();
    assert_eq!(stats["updates"], "300");
    assert_eq!(stats["alpha"], "0.3");
    assert_eq!(stats["lambda"], "2.5");
    // The products rank with what was learned: the reference's fold of the
    // same events, scored with the same α and λ.
    let x = [1.0, 0.5, 0.5, 0.5];
    let learned = models.rank(&options.model, &x, &RankOptions::default()).unwrap();
    let arms = fold_events(&events, 4, LAMBDA);
    assert_eq!(learned.len(), arms.len());
    assert_ranked_as_reference(&learned, &arms, &x, ALPHA, LAMBDA);
}

#[test]
fn bootstrap_publishes_a_generated_history_that_the_sink_learns() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 2);
    let (log_csv, _) = bandit::lab::generate::generate_log(400, 5);
    let history = bandit::history::parse_log(&log_csv, "history.csv").unwrap();
    let properties = BTreeMap::from([("batch.num.messages".to_string(), "1".to_string())]);
    let producer = FeedbackProducer::new(&broker.bootstrap(), "feedback", &properties).unwrap();
    assert_eq!(producer.publish_log(&history, Duration::from_secs(60)).unwrap().delivered, 400);
    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, 15);
    let sink = SinkProcess::start(&options);
    let mut conn = redis.connect();
    wait_until(&format!("400 events in the model\n{}", sink.log()), Duration::from_secs(60), || {
        model_updates(&mut conn, &options.model) >= 400
    });
    let clicks: f64 = history.rows.iter().map(|r| r.response).sum();
    let stats = conn.cmd(&format!("BANDIT.STATS {}", options.model));
    assert_eq!(stats.field("updates").integer(), 400);
    assert_eq!(stats.field("reward_sum").number(), clicks);
}

#[test]
fn bench_rank_leaves_no_keys_behind() {
    let server = RedisServer::start();
    let config = bandit::lab::bench::BenchConfig { arms: 20, dim: 4, top: 3, requests: 600, connections: 1, seconds: 0.2 };
    let mut conn = server.connect();
    conn.cmd("SET unrelated kept");
    bandit::lab::bench::run(&url(&server), &config).unwrap();
    assert!(conn.cmd("KEYS bench:*").array().is_empty(), "bench:* keys left behind");
    assert_eq!(conn.cmd("GET unrelated").text(), "kept");

    // bench flush also puts the server's latency-monitor threshold back.
    conn.cmd("CONFIG SET latency-monitor-threshold 7");
    let flush = bandit::lab::bench::flush_with_load(&url(&server), 4, 50).unwrap();
    assert!(flush.bytes > 0 && flush.in_parts.gets > 0, "{flush:?}");
    assert!(conn.cmd("KEYS bench:*").array().is_empty(), "bench:* keys left behind by bench flush");
    assert_eq!(conn.cmd("CONFIG GET latency-monitor-threshold").array()[1].text(), "7");

    // A run that fails half-way (the model is over the server's MAX-DIM)
    // cleans up too.
    let small = RedisServer::with_options(bandit_tests::server::ServerOptions {
        module_args: vec!["MAX-DIM".into(), "3".into()],
        ..Default::default()
    });
    let failed = bandit::lab::bench::run(&url(&small), &config);
    assert!(failed.is_err(), "{failed:?}");
    assert!(small.connect().cmd("KEYS bench:*").array().is_empty(), "bench:* keys left behind after a failure");
}

/// What a backup must preserve, as the CLI shows it: the settings, and every
/// arm's (and an unknown product's) score.
fn observed(url: &str, model: &str, x: &str, arms: &str) -> (String, String, String) {
    let stats = cli_stats(url, model);
    let ranked = bandit_ok(&["--redis", url, "--model", model, "rank", "--context", x, "--arms", arms]);
    (stats["alpha"].clone(), stats["lambda"].clone(), ranked)
}

#[test]
fn export_then_import_restores_the_model_with_its_settings() {
    let source = RedisServer::start();
    let source_url = url(&source);
    let dir = TempDir::new("backup");
    bandit_ok(&["--redis", &source_url, "--model", "shop", "create", "--dim", "5", "--alpha", "0.5", "--lambda", "2"]);
    let payload = bandit::lab::bench::trained_payload_with_lambda(5, 8, 12, 4, 2.0).unwrap();
    let arms_file = dir.path().join("arms.bin");
    std::fs::write(&arms_file, encode_binary(&payload).unwrap()).unwrap();
    bandit_ok(&["--redis", &source_url, "--model", "shop", "import", path_text(&arms_file)]);

    let x = context(5, 9);
    let x_text: Vec<String> = x.iter().map(|v| format!("{v:?}")).collect();
    let x_text = x_text.join(",");
    let ids: Vec<String> = payload.arms.iter().map(|a| a.id.clone()).chain(["never-seen".to_string()]).collect();
    let ids = ids.join(",");
    let before = observed(&source_url, "shop", &x_text, &ids);
    assert_eq!((before.0.as_str(), before.1.as_str()), ("0.5", "2"));
    // The unknown product scores the prior of this model's α and λ.
    let prior: f64 = before.2.lines().find_map(|l| l.strip_prefix("never-seen\t")).unwrap().parse().unwrap();
    assert!(close(prior, prior_score(&x, 0.5, 2.0), SCORE_TOLERANCE), "{prior}");

    for format in ["json", "binary"] {
        let backup = dir.path().join(format!("backup.{format}"));
        bandit_ok(&["--redis", &source_url, "--model", "shop", "export", "--format", format, "--out", path_text(&backup)]);
        let fresh = RedisServer::start();
        let fresh_url = url(&fresh);
        let imported = bandit_ok(&["--redis", &fresh_url, "--model", "shop", "import", path_text(&backup)]);
        assert_eq!(imported.trim(), "8 arms written");
        assert_eq!(observed(&fresh_url, "shop", &x_text, &ids), before, "{format} backup restored another model");
    }
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// `bandit rank --log` and `bandit reward` write the README's contract:
/// the decision as RANK placed it (the lines the command printed), keyed by
/// the event id, and the reward on the same partition number; bad uses are
/// refused in the options' own terms.
#[test]
fn the_cli_logs_decisions_and_rewards_by_the_contract() {
    use bandit_core::join::{Decision, Reward};
    let server = RedisServer::start();
    let redis = url(&server);
    let broker = KafkaBroker::start();
    for (topic, partitions) in [("decisions", 3), ("rewards", 3), ("clicks", 2)] {
        broker.create_topic(topic, partitions);
    }
    let brokers = broker.bootstrap();
    let common = ["--redis", redis.as_str(), "--brokers", brokers.as_str(), "--model", "shop"];
    let run = |args: &[&str]| bandit(&[&common[..], args].concat());
    assert!(run(&["create", "--dim", "3", "--alpha", "0.5"]).success);

    let refused = run(&["rank", "--context", "1,0.5,0", "--arms", "a,b,c", "--log"]);
    assert!(!refused.success && refused.stderr.contains("--event-id"), "{}", refused.stderr);
    let refused = run(&["--rewards-topic", "clicks", "rank", "--context", "1,0.5,0", "--arms", "a,b,c", "--event-id", "e0", "--log"]);
    assert!(!refused.success && refused.stderr.contains("need the same number"), "{}", refused.stderr);
    assert!(refused.stdout.is_empty(), "no decision is made when it cannot be logged: {}", refused.stdout);
    let refused = run(&["reward", "--event-id", "e1", "--product", "b", "--value", "inf"]);
    assert!(!refused.success && refused.stderr.contains("--value is not a finite number"), "{}", refused.stderr);

    let ranked = run(&["rank", "--context", "1,0.5,-0.25", "--arms", "a,b,c", "--top", "2", "--policy", "egreedy:0.2", "--event-id", "e-1001", "--log"]);
    assert!(ranked.success, "{}", ranked.stderr);
    let mut lines = ranked.stdout.lines();
    let version: u64 = lines.next().and_then(|l| l.strip_prefix("version\t")).unwrap().parse().unwrap();
    let printed: Vec<(String, f64)> = lines
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            (fields[0].to_owned(), fields[2].parse().unwrap())
        })
        .collect();
    assert_eq!(printed.len(), 2);
    assert!(run(&["reward", "--event-id", "e-1001", "--product", &printed[0].0, "--value", "-0.5"]).success);

    let decisions = bandit_tests::kafka::read_topic(&brokers, "decisions", 3, Duration::from_secs(30));
    let rewards = bandit_tests::kafka::read_topic(&brokers, "rewards", 3, Duration::from_secs(30));
    assert_eq!((decisions.len(), rewards.len()), (1, 1));
    let decision: Decision = serde_json::from_slice(decisions[0].payload.as_deref().unwrap()).unwrap();
    assert_eq!(decisions[0].key.as_deref(), Some(&b"e-1001"[..]));
    assert_eq!((decision.event_id.as_str(), decision.model.as_str(), decision.model_version), ("e-1001", "shop", version));
    assert_eq!((decision.policy.as_str(), decision.context.clone()), ("egreedy:0.2", vec![1.0, 0.5, -0.25]));
    let shown: Vec<(String, u32, f64)> = decision.shown.iter().map(|s| (s.product_id.clone(), s.position, s.probability)).collect();
    let want: Vec<(String, u32, f64)> = printed.iter().zip(0..).map(|((id, p), position)| (id.clone(), position, *p)).collect();
    assert_eq!(shown, want);
    // ε-greedy over 3 then 2 candidates: each slot's probability is 1 − ε + ε/n or ε/n.
    for (s, n) in decision.shown.iter().zip([3.0, 2.0]) {
        assert!([0.8 + 0.2 / n, 0.2 / n].iter().any(|p| close(s.probability, *p, 1e-12)), "{s:?}");
    }
    let reward: Reward = serde_json::from_slice(rewards[0].payload.as_deref().unwrap()).unwrap();
    assert_eq!((reward.event_id.as_str(), reward.product_id.as_str(), reward.reward), ("e-1001", printed[0].0.as_str(), -0.5));
    assert_eq!(rewards[0].key.as_deref(), Some(&b"e-1001"[..]));
    assert_eq!(rewards[0].partition, decisions[0].partition, "co-partitioned by event id");
    assert!(reward.timestamp >= decision.timestamp);
}

/// The ports the demo announced ("… on port N", in bold: the line ends in
/// ANSI codes).
fn announced_ports(stderr: &str) -> Vec<u16> {
    stderr
        .lines()
        .filter_map(|line| {
            let plain = strip_ansi(line);
            let rest = plain.split_once(" on port ")?.1;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// `text` without ANSI escape sequences (ESC [ parameters final-byte).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_demos_ports_are_read_through_its_colours() {
    let stderr = "\u{1b}[1m==> starting redis-server with the bandit module on port 23456\u{1b}[0m\n\
                  \u{1b}[1m==> starting bandit-sink, metrics on port 31000 (docker/sink.toml)\u{1b}[0m\nno port here\n";
    assert_eq!(announced_ports(stderr), vec![23456, 31000]);
}

/// Asserts that nothing accepts connections on any of `ports`.
fn assert_closed(ports: &[u16]) {
    for &port in ports {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still open after the demo");
    }
}

#[test]
fn the_demo_runs_end_to_end_in_short_form() {
    // About 15 s here; a hang fails with what the demo printed.
    let output = output_within(
        Command::new("bash").arg(workspace_root().join("scripts/demo")).args(["--steps", "400", "--rate", "0"]).env("BANDIT_DEMO_NO_BUILD", "1"),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "scripts/demo failed:\n{stdout}\n{stderr}");
    let summary = stdout.lines().rev().find(|l| l.starts_with("summary: ")).unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    let fields: BTreeMap<&str, f64> = summary
        .trim_start_matches("summary: ")
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k, v.parse().unwrap_or(f64::NAN)))
        .collect();
    assert_eq!(fields["steps"], 400.0);
    for key in ["ctr_linucb", "ctr_random", "ctr_oracle"] {
        assert!((0.0..=1.0).contains(&fields[key]), "{summary}");
    }
    assert!(fields["ctr_oracle"] > fields["ctr_random"], "{summary}");
    assert!(stdout.contains("visits        LinUCB   random   oracle"), "{stdout}");
    // The shop ranked on the read replica, not on the primary.
    let served = stderr
        .lines()
        .map(strip_ansi)
        .find_map(|line| line.split_once("RANKs served by the replica: ").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("no RANK count line:\n{stderr}"));
    let (replica, primary) = served.split_once(", by the primary: ").unwrap_or_else(|| panic!("{served}"));
    assert!(replica.trim().parse::<u64>().is_ok_and(|n| n >= 400), "RANKs on the replica: {served}");
    assert_eq!(primary.trim(), "", "no RANK on the primary: {served}");
    // The shop was on the learning loop: every decision was joined, and
    // the model learned from the join's examples.
    let joined = stderr
        .lines()
        .map(strip_ansi)
        .find_map(|line| line.split_once("bandit-join: ").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("no bandit-join line:\n{stderr}"));
    assert!(joined.starts_with("400 decisions joined"), "{joined}");
    let updates = stderr
        .lines()
        .map(strip_ansi)
        .find_map(|line| line.split_once("updates ")?.1.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no model line:\n{stderr}"));
    assert!(updates >= 400, "the model learned from {updates} examples:\n{stderr}");
    // Every process it started is gone: the ports it announced (Redis, its
    // replica, the broker, the sink's and the join's metrics) are closed.
    let ports = announced_ports(&stderr);
    assert_eq!(ports.len(), 5, "announced ports:\n{stderr}");
    assert_closed(&ports);
    let curve = stdout.lines().find_map(|l| l.strip_prefix("learning curve: ")).expect("curve path");
    assert!(std::fs::read_to_string(curve).unwrap().contains("<polyline"));
}
