//! The client library against real servers, and the demo in short form.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use bandit::feedback::FeedbackProducer;
use bandit::models::{Models, RankOptions};
use bandit::ClientError;
use bandit_core::codec::{encode_binary, Format};
use bandit_tests::fixtures::{context, trained_payload};
use bandit_tests::kafka::KafkaBroker;
use bandit_tests::server::{workspace_root, RedisServer};
use bandit_tests::sink::{feedback_events, wait_for_updates, SinkOptions, SinkProcess};

#[test]
fn the_library_ranks_and_manages_models() {
    let server = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}", server.port);
    let mut models = Models::connect(&url).unwrap();
    models.create("m", 6, Some(0.5), None).unwrap();
    let payload = trained_payload(6, 30, 10, 3);
    assert_eq!(models.load("m", &encode_binary(&payload).unwrap()).unwrap(), 30);

    let x = context(6, 5);
    let candidates: Vec<String> = (0..30).map(|i| format!("p{i}")).chain(["brand-new".to_string()]).collect();
    let options = RankOptions { candidates: Some(&candidates), top_k: Some(31), alpha: None };
    let ranked = models.rank("m", &x, &options).unwrap();
    assert_eq!(ranked.len(), 31);
    assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score), "best first");
    // The same order as the module's own reply to a text CONTEXT.
    let mut raw = server.connect();
    let mut args = vec!["BANDIT.RANK".to_string(), "m".into(), "CONTEXT".into()];
    args.extend(x.iter().map(|v| format!("{v:?}")));
    args.extend(["ARMS".into(), "31".into()]);
    args.extend(candidates.iter().cloned());
    let ids: Vec<String> = raw.call(&args).unwrap().array().iter().map(|r| r.text()).collect();
    assert_eq!(ranked.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ids);

    let top = models.rank("m", &x, &RankOptions { top_k: Some(3), alpha: Some(0.0), ..RankOptions::default() }).unwrap();
    assert_eq!(top.len(), 3);

    let stats = models.stats("m", None).unwrap();
    assert_eq!(stats["arms"], "30");
    assert_eq!(stats["alpha"], "0.5");
    assert_eq!(models.stats("m", Some("p4")).unwrap()["n"], "10");
    let json = models.export("m", None, Format::Json).unwrap();
    assert_eq!(json.first(), Some(&b'{'));
    assert_eq!(models.export_payload("m").unwrap().arms.len(), 30);
    models.create("copy", 6, Some(0.5), None).unwrap();
    assert_eq!(models.load("copy", &json).unwrap(), 30);

    // Server errors are typed errors, not panics.
    let missing = models.rank("nope", &x, &RankOptions::default()).unwrap_err();
    assert!(matches!(missing, ClientError::Redis(_)) && missing.to_string().contains("no such model"), "{missing}");
    let wrong_dim = models.rank("m", &[1.0], &RankOptions::default()).unwrap_err();
    assert!(wrong_dim.to_string().contains("CONTEXTBLOB has 8 bytes"), "{wrong_dim}");
    assert!(models.create("m", 7, None, None).unwrap_err().to_string().contains("model exists with dim 6"));
}

#[test]
fn feedback_reaches_the_model_through_the_sink() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 2);
    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, 4);
    let sink = SinkProcess::start(&options);
    let properties = BTreeMap::from([("batch.num.messages".to_string(), "1".to_string())]);
    let producer = FeedbackProducer::new(&broker.bootstrap(), "feedback", &properties).unwrap();
    let events = feedback_events(300, 6, 4, 21);
    for event in &events {
        producer.send(event).unwrap();
    }
    let report = producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(report.delivered, 300);
    assert_eq!(report.failed, 0);
    let mut conn = redis.connect();
    wait_for_updates(&mut conn, &options.model, 300, Duration::from_secs(60), &|| sink.log());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let stats = Models::connect(&url).unwrap().stats(&options.model, None).unwrap();
    assert_eq!(stats["updates"], "300");
    // The clicked products now rank with what was learned.
    let learned = Models::connect(&url).unwrap().rank(&options.model, &[1.0, 0.5, 0.5, 0.5], &RankOptions::default()).unwrap();
    assert_eq!(learned.len(), 6);
}

#[test]
fn bootstrap_publishes_a_generated_history_that_the_sink_learns() {
    let redis = RedisServer::start();
    let broker = KafkaBroker::start();
    broker.create_topic("feedback", 2);
    let (log_csv, _) = bandit::generate::generate_log(400, 5);
    let history = bandit::history::parse_log(&log_csv, "history.csv").unwrap();
    let properties = BTreeMap::from([("batch.num.messages".to_string(), "1".to_string())]);
    let producer = FeedbackProducer::new(&broker.bootstrap(), "feedback", &properties).unwrap();
    assert_eq!(producer.publish_log(&history, Duration::from_secs(60)).unwrap().delivered, 400);
    let options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, 15);
    let sink = SinkProcess::start(&options);
    let mut conn = redis.connect();
    wait_for_updates(&mut conn, &options.model, 400, Duration::from_secs(60), &|| sink.log());
    let clicks: f64 = history.rows.iter().map(|r| r.response).sum();
    let stats = conn.cmd(&format!("BANDIT.STATS {}", options.model));
    assert_eq!(stats.field("reward_sum").number(), clicks);
}

#[test]
fn the_demo_runs_end_to_end_in_short_form() {
    let output = Command::new("bash")
        .arg(workspace_root().join("scripts/demo"))
        .args(["--steps", "400", "--rate", "0"])
        .env("BANDIT_DEMO_NO_BUILD", "1")
        .output()
        .expect("run scripts/demo");
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
    // Every process it started is gone: the ports it announced are closed.
    for line in stderr.lines().filter(|l| l.contains(" on port ")) {
        let port: u16 = line.rsplit(' ').next().and_then(|p| p.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()).unwrap_or(0);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still open after the demo");
    }
    let curve = stdout.lines().find_map(|l| l.strip_prefix("learning curve: ")).expect("curve path");
    assert!(std::fs::read_to_string(curve).unwrap().contains("<polyline"));
}
