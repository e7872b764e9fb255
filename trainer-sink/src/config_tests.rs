//! Tests of [`crate::config`]: layering, validation, masking, and the help
//! and README agreeing with the code.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use super::*;

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("bandit-sink").chain(args.iter().copied())).unwrap()
}

#[test]
fn file_then_flags_with_precedence() {
    let dir = std::env::temp_dir().join(format!("bandit-sink-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sink.toml");
    std::fs::write(
        &path,
        "topic = \"events\"\ndim = 4\n[errors]\ntolerance = \"all\"\ndeadletterqueue_topic = \"dlq\"\n[kafka]\n\"session.timeout.ms\" = 6000\n",
    )
    .unwrap();
    let config = Config::from_cli(&cli(&["--config", path.to_str().unwrap(), "--dim", "6", "-X", "fetch.wait.max.ms=10"])).unwrap();
    assert_eq!(config.topic, "events");
    assert_eq!(config.dim, 6, "flags win over the file");
    assert_eq!(config.errors_tolerance, Tolerance::All);
    assert_eq!(config.dead_letter_topic.as_deref(), Some("dlq"));
    assert_eq!(config.kafka["session.timeout.ms"], "6000");
    assert_eq!(config.kafka["fetch.wait.max.ms"], "10");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rejects_unknown_and_inconsistent_settings() {
    let dir = std::env::temp_dir().join(format!("bandit-sink-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "topik = \"x\"\n").unwrap();
    let error = Config::from_cli(&cli(&["--config", path.to_str().unwrap()])).unwrap_err().to_string();
    assert!(error.contains("unknown field `topik`"), "{error}");
    let _ = std::fs::remove_dir_all(dir);

    let cases: &[(&[&str], &str)] = &[
        (&["--errors-tolerance", "all"], "needs a dead_letter_topic"),
        (&["--dead-letter-topic", "dlq"], "never uses it"),
        (&["--errors-tolerance", "all", "--dead-letter-topic", "feedback"], "must differ"),
        (&["--dim", "0"], "dim must be between"),
        (&["--lambda", "0"], "lambda must be"),
        (&["--flush-interval-ms", "1"], "flush_interval_ms"),
        (&["-X", "group.id=x"], "managed by the sink"),
        (&["-X", "novalue"], "expected key=value"),
        (&["--redis", "http://x"], "redis_url must start"),
    ];
    for (args, expected) in cases {
        let error = Config::from_cli(&cli(args)).unwrap_err().to_string();
        assert!(error.contains(expected), "{args:?}: {error}");
    }
}

#[test]
fn help_shows_every_default() {
    let help = Cli::command_with_defaults().render_help().to_string();
    for shown in ["[default: 127.0.0.1:9092]", "[default: feedback]", "[default: bandit-sink]", "[default: redis://127.0.0.1:6379]", "[default: bandit:model]", "[default: 15]", "[default: 1.0]", "[default: 5000]", "[default: 10000]", "[default: 1000000]", "[default: none]", "[default: 127.0.0.1:9464]"] {
        assert!(help.contains(shown), "{shown} missing from:\n{help}");
    }
    // Shown, not set: a flag left out leaves the value to the file.
    assert_eq!(cli(&[]).brokers, None);
}

/// The README's configuration table (TOML key, flag, environment,
/// default) must say what the code does.
#[test]
fn readme_table_matches_the_code() {
    let readme = include_str!("../../README.md");
    let section = readme.split("### Configuration").nth(1).unwrap().split("### Metrics").next().unwrap();
    let rows: Vec<Vec<String>> = section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| line.split('|').map(|cell| cell.trim().trim_matches('`').to_owned()).collect())
        .collect();
    let help = Cli::command_with_defaults();
    let d = Config::default();
    let expected: [(&str, &str, &str, String); 14] = [
        ("errors_tolerance", "--errors-tolerance", "BANDIT_SINK_ERRORS_TOLERANCE", format!("{:?}", d.errors_tolerance).to_lowercase()),
        ("brokers", "--brokers", "BANDIT_SINK_BROKERS", d.brokers.clone()),
        ("topic", "--topic", "BANDIT_SINK_TOPIC", d.topic.clone()),
        ("group_id", "--group", "BANDIT_SINK_GROUP", d.group_id.clone()),
        ("redis_url", "--redis", "BANDIT_SINK_REDIS", d.redis_url.clone()),
        ("model_key", "--model", "BANDIT_SINK_MODEL", d.model_key.clone()),
        ("dim", "--dim", "BANDIT_SINK_DIM", d.dim.to_string()),
        ("lambda", "--lambda", "BANDIT_SINK_LAMBDA", format!("{:?}", d.lambda)),
        ("alpha", "--alpha", "BANDIT_SINK_ALPHA", format!("{:?}", d.alpha)),
        ("flush_interval_ms", "--flush-interval-ms", "BANDIT_SINK_FLUSH_INTERVAL_MS", d.flush_interval_ms.to_string()),
        ("max_dirty_arms", "--max-dirty-arms", "BANDIT_SINK_MAX_DIRTY_ARMS", d.max_dirty_arms.to_string()),
        ("max_unflushed_events", "--max-unflushed-events", "BANDIT_SINK_MAX_UNFLUSHED_EVENTS", d.max_unflushed_events.to_string()),
        ("metrics_addr", "--metrics-addr", "BANDIT_SINK_METRICS_ADDR", d.metrics_addr.clone().unwrap_or_default()),
        ("dead_letter_topic", "--dead-letter-topic", "BANDIT_SINK_DEAD_LETTER_TOPIC", "—".to_owned()),
    ];
    for (key, flag, env, default) in expected {
        let row = rows.iter().find(|row| row[1] == key || row[1].starts_with(&format!("{key}` or"))).unwrap_or_else(|| panic!("README has no row for {key}"));
        assert_eq!((row[2].as_str(), row[3].as_str(), row[4].as_str()), (flag, env, default.as_str()), "README row {key}");
        let arg = help.get_arguments().find(|arg| arg.get_long() == flag.strip_prefix("--")).unwrap();
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env), "{flag}");
    }
}

#[test]
fn masks_passwords() {
    let config = Config { redis_url: "redis://app:hunter2@db:6379/0".into(), ..Config::default() };
    assert_eq!(config.redis_url_masked(), "redis://app:***@db:6379/0");
    assert!(!config.to_string().contains("hunter2"));
}
