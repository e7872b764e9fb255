//! Tests of [`crate::config`]: layering, validation, masking, and the help
//! and README agreeing with the code. The environment is passed in, never
//! set: test threads share the process's.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use super::sources::default_shown;
use super::*;

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("bandit-sink").chain(args.iter().copied())).unwrap()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs.iter().map(|(name, value)| (OsString::from(name), OsString::from(value))).collect()
}

/// Flags and environment of one case.
type Layers<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

fn load(args: &[&str], environment: &[(&str, &str)]) -> Result<Config> {
    Config::load(&cli(args), env(environment))
}

fn error(args: &[&str], environment: &[(&str, &str)]) -> String {
    load(args, environment).unwrap_err().to_string()
}

/// A TOML file in a directory of its own, removed on drop.
struct File {
    dir: PathBuf,
    path: String,
}

impl File {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bandit-sink-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sink.toml");
        std::fs::write(&path, text).unwrap();
        Self { path: path.to_str().unwrap().to_owned(), dir }
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn layers_are_defaults_then_file_then_environment_then_flags() {
    let file = File::new("layers", "topic = \"file\"\ngroup_id = \"file-group\"\ndim = 4\nflush_interval_ms = 111\n[kafka]\n\"session.timeout.ms\" = 6000\n\"client.id\" = \"file\"\n");
    let environment = [("BANDIT_SINK_TOPIC", "env"), ("BANDIT_SINK_DIM", "5"), ("PATH", "/bin"), ("BANDIT_OTHER", "x")];
    let flags = ["--config", &file.path, "--dim", "6", "-X", "client.id=flag", "-X", "fetch.wait.max.ms=10"];

    let config = load(&flags, &environment).unwrap();
    assert_eq!(config.topic, "env", "the environment wins over the file");
    assert_eq!(config.dim, 6, "flags win over the environment");
    assert_eq!(config.group_id, "file-group", "the file wins over the defaults");
    assert_eq!(config.flush_interval_ms, 111);
    assert_eq!(config.lambda, 1.0, "default");
    assert_eq!(config.kafka["session.timeout.ms"], "6000", "a TOML number is passed as its text");
    assert_eq!(config.kafka["client.id"], "flag", "-X wins over [kafka]");
    assert_eq!(config.kafka["fetch.wait.max.ms"], "10", "-X adds to [kafka]");

    // A flag left out overrides nothing.
    assert_eq!(load(&["--config", &file.path], &environment).unwrap().dim, 5);
    assert_eq!(load(&["--config", &file.path], &[]).unwrap().dim, 4);
    assert_eq!(load(&[], &[]).unwrap(), Config::default());
}

#[test]
fn environment_values_are_text_until_a_number_is_wanted() {
    let config = load(&[], &[("BANDIT_SINK_TOPIC", "2024"), ("BANDIT_SINK_LAMBDA", "2.5"), ("BANDIT_SINK_ERRORS_TOLERANCE", "all"), ("BANDIT_SINK_DEAD_LETTER_TOPIC", "true")]).unwrap();
    assert_eq!((config.topic.as_str(), config.lambda), ("2024", 2.5));
    assert_eq!(config.dead_letter_topic.as_deref(), Some("true"));
    let message = error(&[], &[("BANDIT_SINK_DIM", "many")]);
    assert!(message.contains("BANDIT_SINK_DIM in environment") && message.contains("\"many\""), "{message}");
    let message = error(&[], &[("BANDIT_SINK_ERRORS_TOLERANCE", "some")]);
    assert!(message.contains("`some` is not one of none, all"), "{message}");
}

/// "" is "no dead-letter topic" in the file, the environment and a flag
/// alike, and clears a topic a lower layer set.
#[test]
fn an_empty_dead_letter_topic_is_none_in_every_layer() {
    let file = File::new("empty-dlq", "dead_letter_topic = \"\"\n");
    let each_layer: [Layers; 3] = [
        (&["--config", &file.path], &[]),
        (&[], &[("BANDIT_SINK_DEAD_LETTER_TOPIC", "")]),
        (&["--dead-letter-topic", ""], &[]),
    ];
    for (args, environment) in each_layer {
        assert_eq!(load(args, environment).unwrap(), Config::default(), "{args:?} {environment:?}");
    }

    let both = File::new("dlq", "errors_tolerance = \"all\"\ndead_letter_topic = \"dlq\"\n");
    assert_eq!(load(&["--config", &both.path], &[]).unwrap().dead_letter_topic.as_deref(), Some("dlq"));
    let cleared_by_env = load(&["--config", &both.path], &[("BANDIT_SINK_ERRORS_TOLERANCE", "none"), ("BANDIT_SINK_DEAD_LETTER_TOPIC", "")]).unwrap();
    let cleared_by_flags = load(&["--config", &both.path, "--errors-tolerance", "none", "--dead-letter-topic", ""], &[]).unwrap();
    assert_eq!(cleared_by_env, Config::default());
    assert_eq!(cleared_by_flags, Config::default());
    // And "" still leaves `all` without a topic, in any layer.
    for (args, environment) in [(vec!["--config", &both.path, "--dead-letter-topic", ""], vec![]), (vec!["--config", &both.path], vec![("BANDIT_SINK_DEAD_LETTER_TOPIC", "")])] {
        assert!(error(&args, &environment).contains("needs a dead_letter_topic"), "{args:?} {environment:?}");
    }
}

#[test]
fn dim_above_the_modules_max_dim_is_refused_naming_the_limit() {
    assert_eq!(Limits::default().max_dim, 256);
    assert_eq!(load(&["--dim", "256"], &[]).unwrap().dim, 256);
    let file = File::new("dim", "dim = 257\n");
    for (args, environment) in [(vec!["--dim", "257"], vec![]), (vec![], vec![("BANDIT_SINK_DIM", "257")]), (vec!["--config", &file.path], vec![])] {
        let message = error(&args, &environment);
        assert!(message.contains("dim is 257, the limit is 256") && message.contains("default MAX-DIM"), "{message}");
    }
}

#[test]
fn model_settings_follow_cores_rules() {
    let cases: &[(&[&str], &str)] = &[
        (&["--dim", "0"], "DIM must be at least 1"),
        (&["--lambda", "0"], "LAMBDA must be a finite number > 0 (dim = 15, lambda = 0,"),
        (&["--lambda", "inf"], "LAMBDA must be"),
        (&["--alpha=-0.5"], "ALPHA must be a finite number >= 0"),
        (&["--decay", "0"], "DECAY must be a number in (0, 1]"),
        (&["--decay", "1.5"], "DECAY must be"),
    ];
    for (args, expected) in cases {
        let message = error(args, &[]);
        assert!(message.contains(expected), "{args:?}: {message}");
    }
    assert_eq!(load(&["--alpha", "0", "--decay", "0.99"], &[]).unwrap().decay, 0.99);
}

/// Kafka Connect's `[errors] tolerance` / `deadletterqueue_topic` is not a
/// second spelling: it is refused, naming the key to write instead.
#[test]
fn the_connect_spelling_is_refused_naming_the_flat_key() {
    let table = File::new("errors-table", "[errors]\ntolerance = \"all\"\ndeadletterqueue_topic = \"dlq\"\n");
    let message = error(&["--config", &table.path], &[]);
    assert!(message.contains("unknown key `errors`") && message.contains("write errors_tolerance and dead_letter_topic"), "{message}");
    let dotted = File::new("errors-dotted", "errors.tolerance = \"all\"\n");
    assert!(error(&["--config", &dotted.path], &[]).contains("write errors_tolerance"));
    let flat = File::new("dlq-key", "deadletterqueue_topic = \"dlq\"\n");
    let message = error(&["--config", &flat.path], &[]);
    assert!(message.contains("unknown key `deadletterqueue_topic`") && message.contains("write dead_letter_topic"), "{message}");
}

#[test]
fn unknown_keys_and_variables_are_refused_naming_them() {
    let file = File::new("unknown", "topik = \"x\"\n");
    let message = error(&["--config", &file.path], &[]);
    assert!(message.contains("unknown key `topik` in ") && message.contains("sink.toml; the keys are brokers, topic,"), "{message}");
    let message = error(&[], &[("BANDIT_SINK_TOPIK", "x")]);
    assert!(message.contains("unknown environment variable BANDIT_SINK_TOPIK") && message.contains("BANDIT_SINK_TOPIC"), "{message}");
    assert!(error(&["--config", "/nonexistent/sink.toml"], &[]).contains("cannot read /nonexistent/sink.toml"));
    // The file's own variable is clap's, not an unknown one.
    assert!(load(&[], &[("BANDIT_SINK_CONFIG", "ignored: clap reads it")]).is_ok());
}

#[test]
fn rejects_inconsistent_settings() {
    let cases: &[(&[&str], &str)] = &[
        (&["--errors-tolerance", "all"], "needs a dead_letter_topic"),
        (&["--dead-letter-topic", "dlq"], "never uses it"),
        (&["--errors-tolerance", "all", "--dead-letter-topic", "feedback"], "must differ"),
        (&["--flush-interval-ms", "1"], "flush_interval_ms"),
        (&["-X", "group.id=x"], "managed by the sink"),
        (&["--redis", "http://x"], "redis_url: redis URL: unknown scheme \"http\""),
        (&["--redis", "redis://h:6379?timeout=5"], "redis_url: redis URL: unknown parameter \"timeout\""),
        (&["--redis", "redis+sentinel://s1:26379,s2:26379"], "missing master name"),
        (&["--min-replicas-ack", "1", "--wait-timeout-ms", "0"], "wait_timeout_ms must be between 1 and 60000"),
        (&["--min-replicas-ack", "1", "--wait-timeout-ms", "60001"], "wait_timeout_ms must be between 1 and 60000"),
        (&["--topic", " "], "topic must not be empty"),
        (&["--load-part-bytes", "65535"], "load_part_bytes must be at least 65536, got 65535"),
    ];
    for (args, expected) in cases {
        let message = error(args, &[]);
        assert!(message.contains(expected), "{args:?}: {message}");
    }
    let file = File::new("reserved", "[kafka]\n\"enable.auto.commit\" = true\n");
    assert!(error(&["--config", &file.path], &[]).contains("kafka property enable.auto.commit is managed"));
    let bad_pair = Cli::try_parse_from(["bandit-sink", "-X", "novalue"]).unwrap_err().to_string();
    assert!(bad_pair.contains("expected key=value"), "{bad_pair}");
}

#[test]
fn print_config_masks_secrets_and_reads_back() {
    let file = File::new("secrets", "[kafka]\n\"sasl.password\" = \"file-secret\"\n\"ssl.key.password\" = \"key-secret\"\n\"sasl.oauthbearer.client.secret\" = \"token-xyz\"\n\"sasl.username\" = \"app\"\n");
    let config = load(&["--config", &file.path, "--redis", "redis://app:hunter2@db:6379/0"], &[]).unwrap();
    let printed = config.to_string();
    for secret in ["hunter2", "file-secret", "key-secret", "token-xyz"] {
        assert!(!printed.contains(secret), "{secret} in:\n{printed}");
    }
    let lines: Vec<&str> = printed.lines().collect();
    for expected in ["redis_url = \"redis://app:***@db:6379/0\"", "\"sasl.password\" = \"***\"", "\"sasl.oauthbearer.client.secret\" = \"***\"", "\"sasl.username\" = \"app\"", "lambda = 1.0", "dim = 15", "errors_tolerance = \"none\"", "metrics_addr = \"127.0.0.1:9464\""] {
        assert!(lines.contains(&expected), "{expected:?} missing from:\n{printed}");
    }
    assert_eq!(config.redis_url_masked(), "redis://app:***@db:6379/0");
    let sentinel = load(&["--redis", "rediss+sentinel://:hunter2@s1:26379,s2:26380/main?sentinel_password=hunter3&tls_ca=/ca.pem"], &[]).unwrap();
    let printed = sentinel.to_string();
    assert!(!printed.contains("hunter"), "{printed}");
    assert!(
        printed.contains("redis_url = \"rediss+sentinel://:***@s1:26379,s2:26380/main?sentinel_password=***&tls_ca=/ca.pem\""),
        "{printed}"
    );

    // What is printed is a configuration file for the same settings, secrets
    // aside; an unset topic and a disabled endpoint included.
    let mut shown = Config { errors_tolerance: Tolerance::All, dead_letter_topic: Some("dlq".into()), metrics_addr: None, ..config };
    let printed = File::new("printed", &shown.to_string());
    let read_back = load(&["--config", &printed.path], &[]).unwrap();
    shown = shown.masked();
    assert_eq!(read_back, shown);
    let unset = File::new("printed-default", &Config::default().to_string());
    assert_eq!(load(&["--config", &unset.path], &[]).unwrap(), Config::default());
}

/// Every setting has a flag and a variable, every flag's help names its
/// variable and default, and the defaults are only shown.
#[test]
fn help_shows_every_default_and_variable() {
    let help = Cli::command_with_defaults().render_long_help().to_string();
    let defaults = ["127.0.0.1:9092", "feedback", "bandit-sink", "redis://127.0.0.1:6379", "0", "1000", "8388608", "bandit:model", "15", "1.0", "1.0", "1.0", "5000", "10000", "1000000", "none"];
    let unset = ["dead_letter_topic", "schema_registry_url", "schema_registry_basic_auth", "schema_dir"];
    let with_default: Vec<&Setting> = SETTINGS.iter().filter(|s| !unset.contains(&s.key)).collect();
    assert_eq!(with_default.len(), defaults.len() + 3);
    for (setting, default) in with_default.iter().zip(defaults.iter().chain(["127.0.0.1:9464", "json", "30000"].iter())) {
        let line = help.lines().skip_while(|line| !line.contains(&format!("--{} <", setting.flag))).nth(1).unwrap_or_else(|| panic!("--{} missing from:\n{help}", setting.flag));
        assert!(line.contains(&format!("[env: {}] [default: {default}]", setting.env)), "--{}: {line}", setting.flag);
    }
    assert!(help.contains("[env: BANDIT_SINK_DEAD_LETTER_TOPIC]\n"), "{help}");
    // Every field of Config is a setting (kafka is -X), and nothing else is.
    let some = Some("x".to_owned());
    let mut all = Config {
        dead_letter_topic: some.clone(),
        schema_registry_url: some.clone(),
        schema_registry_basic_auth: some.clone(),
        schema_dir: some,
        ..Config::default()
    };
    all.kafka.insert("k".into(), "v".into());
    let fields: Vec<String> = toml::Table::try_from(all).unwrap().keys().filter(|&key| key != "kafka").cloned().collect();
    let mut keys: Vec<String> = SETTINGS.iter().map(|s| s.key.to_owned()).collect();
    keys.sort();
    assert_eq!(fields, keys);
    // Shown, not set.
    assert_eq!(cli(&[]).dim, None);
}

/// The README's configuration table (TOML key, flag, environment,
/// default) must say what the code does, row for row.
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
    for setting in SETTINGS {
        let row = rows.iter().find(|row| row[1] == setting.key).unwrap_or_else(|| panic!("README has no row for {}", setting.key));
        let default = default_shown(setting.key).unwrap_or_else(|| "—".to_owned());
        let flag = format!("--{}", setting.flag);
        assert_eq!((row[2].as_str(), row[3].as_str(), row[4].as_str()), (flag.as_str(), setting.env, default.as_str()), "README row {}", setting.key);
        assert!(help.get_arguments().any(|arg| arg.get_long() == Some(setting.flag) && arg.get_id() == setting.key), "{flag}");
    }
    let documented: Vec<&str> = rows.iter().map(|row| row[1].as_str()).filter(|key| !key.starts_with("[kafka]")).collect();
    assert_eq!(documented, SETTINGS.map(|s| s.key), "the README's rows, in order");
}

/// WAIT's settings, from each layer; off by default.
#[test]
fn wait_settings_come_from_every_layer() {
    let defaults = load(&[], &[]).unwrap();
    assert_eq!((defaults.min_replicas_ack, defaults.wait_timeout_ms), (0, 1000));
    let environment = load(&[], &[("BANDIT_SINK_MIN_REPLICAS_ACK", "2"), ("BANDIT_SINK_WAIT_TIMEOUT_MS", "250")]).unwrap();
    assert_eq!((environment.min_replicas_ack, environment.wait_timeout_ms), (2, 250));
    let file = File::new("wait", "min_replicas_ack = 1\nwait_timeout_ms = 40\n");
    let flags = load(&["--config", &file.path, "--wait-timeout-ms", "75"], &[("BANDIT_SINK_MIN_REPLICAS_ACK", "3")]).unwrap();
    assert_eq!((flags.min_replicas_ack, flags.wait_timeout_ms), (3, 75));
    // Without WAIT its timeout is not used, so it is not checked either.
    assert!(load(&["--wait-timeout-ms", "0"], &[]).is_ok());
}
