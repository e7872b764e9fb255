//! The module conventions Redis users rely on: `COMMAND DOCS` and
//! `COMMAND INFO` describe every BANDIT command (summary, since, complexity,
//! arguments, key specs), and `COMMAND GETKEYS` finds the model key.

use bandit_tests::resp::Reply;
use bandit_tests::server::RedisServer;

const COMMANDS: [&str; 5] = ["bandit.create", "bandit.load", "bandit.rank", "bandit.stats", "bandit.export"];

/// The names of the arguments of a COMMAND DOCS argument list, nested
/// arguments as "parent.child".
fn argument_names(arguments: &Reply, prefix: &str, out: &mut Vec<String>) {
    for argument in arguments.array() {
        let name = format!("{prefix}{}", argument.field("name").text());
        out.push(name.clone());
        if let Some((_, nested)) = argument.pairs().into_iter().find(|(field, _)| field == "arguments") {
            argument_names(&nested, &format!("{name}."), out);
        }
    }
}

#[test]
fn command_docs_describe_every_command() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    let docs = conn.call(&["COMMAND", "DOCS"].iter().copied().chain(COMMANDS).collect::<Vec<_>>()).unwrap();
    let docs = docs.pairs();
    assert_eq!(docs.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), COMMANDS);
    for (name, doc) in &docs {
        assert!(doc.field("summary").text().len() > 20, "{name}: {doc:?}");
        assert_eq!(doc.field("since").text(), "0.1.0", "{name}");
        assert!(doc.field("complexity").text().starts_with("O("), "{name}");
        assert_eq!(doc.field("module").text(), "bandit", "{name}");
        let mut names = Vec::new();
        argument_names(&doc.field("arguments"), "", &mut names);
        assert_eq!(names.first().map(String::as_str), Some("key"), "{name}: the key comes first");
    }
    let arguments = |command: &str| {
        let (_, doc) = docs.iter().find(|(name, _)| name == command).unwrap();
        let mut names = Vec::new();
        argument_names(&doc.field("arguments"), "", &mut names);
        names
    };
    assert_eq!(
        arguments("bandit.rank"),
        [
            "key", "context", "context.x", "context.blob", "arms", "arms.numarms", "arms.id", "top", "alpha", "policy", "policy.ucb",
            "policy.epsilon", "policy.temperature", "policy.ts", "eventid", "withscores", "withprobs"
        ]
    );
    assert_eq!(arguments("bandit.create"), ["key", "dim", "alpha", "lambda", "decay"]);
    assert_eq!(arguments("bandit.export"), ["key", "arms", "arms.numarms", "arms.id", "format", "format.binary", "format.json"]);
    // The CONTEXT values repeat after their token; ALPHA is optional.
    let (_, rank) = docs.iter().find(|(name, _)| name == "bandit.rank").unwrap();
    let choices = rank.field("arguments").array()[1].field("arguments");
    let context = &choices.array()[0];
    assert_eq!(context.field("token").text(), "CONTEXT");
    assert!(context.field("flags").array().contains(&Reply::Status("multiple".into())), "{context:?}");
}

#[test]
fn key_specs_find_the_model_key() {
    let server = RedisServer::start();
    let mut conn = server.connect();
    for command in COMMANDS {
        let info = conn.call(&["COMMAND", "INFO", command]).unwrap();
        let info = &info.array()[0];
        // [name, arity, flags, first key, last key, step, ACL categories, tips, key specs, subcommands]
        let specs = info.array()[8].array();
        assert_eq!(specs.len(), 1, "{command}: one key spec");
        let spec = &specs[0];
        assert_eq!(spec.field("begin_search").field("spec").field("index"), Reply::Integer(1), "{command}");
        assert_eq!(spec.field("find_keys").field("type").text(), "range", "{command}");
        let flags: Vec<String> = spec.field("flags").array().iter().map(Reply::text).collect();
        let read_only = ["bandit.rank", "bandit.stats", "bandit.export"].contains(&command);
        assert_eq!(flags.contains(&"RO".to_string()), read_only, "{command}: {flags:?}");
        assert_eq!(flags.contains(&"RW".to_string()), !read_only, "{command}: {flags:?}");
    }
    let keys = conn.call(&["COMMAND", "GETKEYS", "BANDIT.RANK", "model:shop", "CONTEXT", "1", "2"]).unwrap();
    assert_eq!(keys, Reply::Array(vec![Reply::Bulk(b"model:shop".to_vec())]));
}

/// `+@bandit` grants every BANDIT command, and the commands sit in `read` or
/// `write` like the server's own, where the server lets modules add ACL
/// categories (Valkey 8, Redis 7.4+). Redis 7.0 has no such API: there the
/// category is unknown and users name the commands (the README says so).
#[test]
fn acl_categories_where_the_server_has_them() {
    let server = RedisServer::start();
    let mut admin = server.connect();
    admin.cmd("BANDIT.CREATE model:a DIM 2");
    let setuser = admin.cmd("ACL SETUSER reader on >pw ~model:* -@all +@bandit -@write");
    if !bandit_tests::server::is_valkey() {
        assert!(setuser.text().contains("Unknown command or category"), "{setuser:?}");
        return;
    }
    assert_eq!(setuser, Reply::Status("OK".into()));
    let mut reader = server.connect();
    assert_eq!(reader.cmd("AUTH reader pw"), Reply::Status("OK".into()));
    assert_eq!(reader.cmd("BANDIT.RANK model:a CONTEXT 1 0 ARMS 1 x").array().len(), 1);
    assert_eq!(reader.cmd("BANDIT.STATS model:a").field("dim"), Reply::Integer(2));
    let refused = reader.cmd("BANDIT.CREATE model:b DIM 2");
    assert!(refused.text().starts_with("NOPERM"), "{refused:?}");
    let refused = reader.cmd("GET model:a");
    assert!(refused.text().starts_with("NOPERM"), "only the bandit category was granted: {refused:?}");
    for (command, category) in [("bandit.rank", "@read"), ("bandit.load", "@write")] {
        let info = admin.call(&["COMMAND", "INFO", command]).unwrap();
        let categories: Vec<String> = info.array()[0].array()[6].array().iter().map(Reply::text).collect();
        assert!(categories.contains(&"@bandit".to_string()) && categories.contains(&category.to_string()), "{command}: {categories:?}");
    }
}

/// The module's settings are server configs: `CONFIG GET bandit.*` shows
/// them (load-time arguments give the defaults), `CONFIG SET` changes them at
/// once for the next command, bad values are refused with the reason and
/// change nothing, `rank-threads` is fixed at load, and `--bandit.<name>`
/// on the command line works as a module argument does.
#[test]
fn settings_are_configs_at_run_time() {
    let server = RedisServer::with_options(bandit_tests::server::ServerOptions {
        module_args: vec!["ALPHA".into(), "0.7".into(), "MAX-TOP".into(), "9".into()],
        server_args: vec!["--bandit.lambda".into(), "2.5".into()],
    });
    let mut conn = server.connect();
    let get = |conn: &mut bandit_tests::resp::Connection, name: &str| conn.call(&["CONFIG", "GET", name]).unwrap().pairs();
    let all = get(&mut conn, "bandit.*");
    let names: std::collections::BTreeSet<String> = all.iter().map(|(name, _)| name.clone()).collect();
    let expected = ["alpha", "lambda", "max-dim", "max-arms", "max-payload-bytes", "max-id-bytes", "max-top", "rank-threads", "parts-idle-seconds"];
    assert_eq!(names, expected.iter().map(|n| format!("bandit.{n}")).collect());
    let value = |pairs: &[(String, Reply)], name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.text());
    assert_eq!(value(&all, "bandit.alpha").as_deref(), Some("0.7"));
    assert_eq!(value(&all, "bandit.lambda").as_deref(), Some("2.5"));
    assert_eq!(value(&all, "bandit.max-top").as_deref(), Some("9"));

    // A model created without settings takes the configs in force.
    conn.cmd("BANDIT.CREATE a DIM 2");
    assert_eq!(conn.cmd("BANDIT.STATS a").field("lambda"), Reply::Bulk(b"2.5".to_vec()));
    assert_eq!(conn.cmd("CONFIG SET bandit.alpha 0.25"), Reply::Status("OK".into()));
    conn.cmd("BANDIT.CREATE b DIM 2");
    assert_eq!(conn.cmd("BANDIT.STATS b").field("alpha"), Reply::Bulk(b"0.25".to_vec()));
    assert_eq!(server.info_field("bandit", "bandit_alpha"), "0.25");

    // Limits apply from the next command on.
    let top = |conn: &mut bandit_tests::resp::Connection, k: &str| conn.call(&["BANDIT.RANK", "a", "CONTEXT", "1", "0", "TOP", k]).unwrap();
    assert!(top(&mut conn, "9").array().is_empty());
    assert_eq!(conn.cmd("CONFIG SET bandit.max-top 3"), Reply::Status("OK".into()));
    assert_eq!(top(&mut conn, "9").text(), "ERR TOP is 9, the limit is 3");

    for (name, bad, reason) in [("bandit.lambda", "0", "LAMBDA must be a finite number > 0"), ("bandit.max-dim", "-1", "MAX-DIM must be a positive integer")] {
        let refused = conn.call(&["CONFIG", "SET", name, bad]).unwrap();
        assert!(refused.is_error() && refused.text().contains(reason), "{name} {bad}: {refused:?}");
    }
    assert_eq!(value(&get(&mut conn, "bandit.lambda"), "bandit.lambda").as_deref(), Some("2.5"), "a refused value changes nothing");
    let immutable = conn.call(&["CONFIG", "SET", "bandit.rank-threads", "2"]).unwrap();
    assert!(immutable.is_error() && immutable.text().contains("immutable"), "{immutable:?}");
}
