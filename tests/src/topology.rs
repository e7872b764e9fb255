//! Server topologies beyond one node, on local ports: a Redis Cluster built
//! with `redis-cli --cluster create`, a primary with replicas watched by
//! Sentinels, and a TLS server whose certificates the test generates with
//! `openssl`. Every process is a [`RedisServer`] or a [`Sentinel`], so all of
//! them stop on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::resp::{Connection, Reply};
use crate::server::{await_ready, free_port, kill_child, server_program, wait_until, RedisServer, ServerOptions, TempDir};

/// How long a cluster node may be unreachable before its replica takes over.
/// Short, so failover tests take seconds.
pub const NODE_TIMEOUT_MS: u64 = 2000;
const CONVERGE: Duration = Duration::from_secs(60);

/// `host:port` list of `ports`, as the topology URLs take it.
fn host_list(ports: impl IntoIterator<Item = u16>) -> String {
    ports.into_iter().map(|port| format!("127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
}

/// A Redis Cluster of `primaries` primaries with `replicas` replicas each,
/// every node with the bandit module.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    pub fn start(primaries: usize, replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| {
                RedisServer::with_options(ServerOptions {
                    module_args: Vec::new(),
                    server_args: [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        &NODE_TIMEOUT_MS.to_string(),
                        // An explicit bus port: port + 10000 may be taken or above 65535.
                        "--cluster-port",
                        &free_port().to_string(),
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                })
            })
            .collect();
        let output = crate::process::output_within(
            Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)))
                .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]),
            Duration::from_secs(120),
        );
        assert!(output.status.success(), "redis-cli --cluster create failed:\n{}", String::from_utf8_lossy(&output.stdout));
        let cluster = Self { nodes };
        cluster.wait_until_healthy();
        cluster
    }

    /// Waits until every live node says the cluster is ok, agrees on the
    /// primaries, and every replica has finished its first sync.
    pub fn wait_until_healthy(&self) {
        wait_until("the cluster to be ok on every node", CONVERGE, || {
            self.live_nodes().all(|node| {
                let Ok(mut conn) = Connection::connect(node.port) else { return false };
                let info = conn.call(&["CLUSTER", "INFO"]).map(|r| r.text()).unwrap_or_default();
                let replication = conn.call(&["INFO", "replication"]).map(|r| r.text()).unwrap_or_default();
                info.contains("cluster_state:ok")
                    && (replication.contains("role:master") || replication.contains("master_link_status:up"))
            })
        });
    }

    /// Waits until every live primary lists `replicas` replicas for each of
    /// its slot ranges in CLUSTER SLOTS. A node leaves out a replica whose
    /// replication offset it has not yet heard of by gossip, and a client
    /// that reads from replicas learns them from CLUSTER SLOTS when it
    /// connects.
    pub fn wait_until_replicas_advertised(&self, replicas: usize) {
        wait_until("every primary to advertise its replicas in CLUSTER SLOTS", CONVERGE, || {
            self.primary_ports().into_iter().all(|port| match connect(port).call(&["CLUSTER", "SLOTS"]) {
                Ok(Reply::Array(ranges)) => ranges.iter().all(|range| range.array().len() >= 3 + replicas),
                _ => false,
            })
        });
    }

    fn live_nodes(&self) -> impl Iterator<Item = &RedisServer> {
        // A killed node's port refuses connections; `is_running` needs &mut.
        self.nodes.iter().filter(|node| Connection::connect(node.port).is_ok())
    }

    /// `redis+cluster://` URL with every primary's address as a seed.
    pub fn url(&self) -> String {
        format!("redis+cluster://{}", host_list(self.primary_ports()))
    }

    /// The nodes that are primaries now, by port.
    pub fn primary_ports(&self) -> Vec<u16> {
        self.live_nodes().filter(|node| node.info_field("replication", "role") == "master").map(|node| node.port).collect()
    }

    /// The ports of the replicas of the primary on `primary_port`.
    pub fn replica_ports(&self, primary_port: u16) -> Vec<u16> {
        let primary = primary_port.to_string();
        self.live_nodes()
            .filter(|node| {
                node.info_field("replication", "role") == "slave" && node.info_field("replication", "master_port") == primary
            })
            .map(|node| node.port)
            .collect()
    }

    /// The hash slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.primary_ports().first().copied().unwrap_or_else(|| panic!("no live primary"));
        let reply = connect(port).call(&["CLUSTER", "KEYSLOT", key]).unwrap_or_else(|e| panic!("CLUSTER KEYSLOT: {e}"));
        u16::try_from(reply.integer()).unwrap_or_else(|e| panic!("slot: {e}"))
    }

    /// The port of the primary that serves `slot`, as the live primaries see it.
    pub fn owner_of_slot(&self, slot: u16) -> u16 {
        self.primary_ports().into_iter().find(|&port| serves(port, slot)).unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// The primary that serves `key`.
    pub fn owner_of(&self, key: &str) -> u16 {
        self.owner_of_slot(self.slot_of(key))
    }

    /// A connection to the primary that serves `key`.
    pub fn connect_for(&self, key: &str) -> Connection {
        connect(self.owner_of(key))
    }

    /// One key name per primary, `{prefix}:<n>`, so that models live on
    /// different primaries.
    pub fn keys_on_every_primary(&self, prefix: &str) -> Vec<String> {
        let mut found: Vec<(u16, String)> = Vec::new();
        let primaries = self.primary_ports();
        for n in 0..10_000 {
            let key = format!("{prefix}:{n}");
            let owner = self.owner_of(&key);
            if !found.iter().any(|(port, _)| *port == owner) {
                found.push((owner, key));
            }
            if found.len() == primaries.len() {
                break;
            }
        }
        found.into_iter().map(|(_, key)| key).collect()
    }

    /// Moves `slot` from its owner to the primary on `to`, the way
    /// `redis-cli --cluster reshard` does: mark it importing and migrating,
    /// MIGRATE its keys, then hold the slot half-moved for `ask_window`
    /// (every command for its keys gets ASK from the old owner) before
    /// giving it to `to` on every node (MOVED from then on).
    pub fn migrate_slot(&self, slot: u16, to: u16, ask_window: Duration) {
        let from = self.owner_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let (from_id, to_id) = (node_id(from), node_id(to));
        let slot_text = slot.to_string();
        expect_ok(connect(to).call(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id]), "SETSLOT IMPORTING");
        expect_ok(connect(from).call(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id]), "SETSLOT MIGRATING");
        let mut source = connect(from);
        loop {
            let keys = source.call(&["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"]).unwrap_or_else(|e| panic!("GETKEYSINSLOT: {e}"));
            let keys: Vec<String> = keys.array().iter().map(Reply::text).collect();
            if keys.is_empty() {
                break;
            }
            let mut migrate = vec!["MIGRATE".to_owned(), "127.0.0.1".into(), to.to_string(), String::new(), "0".into(), "10000".into(), "KEYS".into()];
            migrate.extend(keys);
            expect_ok(source.call(&migrate), "MIGRATE");
        }
        std::thread::sleep(ask_window);
        // The new owner first, then the old, then everyone else, as redis-cli does.
        for port in [to, from].into_iter().chain(self.primary_ports().into_iter().filter(|p| *p != to && *p != from)) {
            expect_ok(connect(port).call(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]), "SETSLOT NODE");
        }
        wait_until("every primary to see the slot's new owner", CONVERGE, || self.owner_of_slot(slot) == to);
    }

    /// SIGKILLs the node on `port` and waits until one of its replicas is a
    /// primary and the cluster is ok again.
    pub fn kill_and_wait_for_failover(&mut self, port: u16) -> u16 {
        let replicas = self.replica_ports(port);
        assert!(!replicas.is_empty(), "the node on {port} has no replica to promote");
        self.nodes.iter_mut().filter(|node| node.port == port).for_each(RedisServer::kill);
        let mut promoted = 0;
        wait_until("a replica to be promoted", CONVERGE, || {
            promoted = replicas
                .iter()
                .copied()
                .find(|&replica| {
                    Connection::connect(replica)
                        .and_then(|mut conn| conn.call(&["ROLE"]))
                        .is_ok_and(|role| role.array().first().is_some_and(|r| r.text() == "master"))
                })
                .unwrap_or(0);
            promoted != 0
        });
        wait_until("the cluster to be ok after the failover", CONVERGE, || {
            self.live_nodes().all(|node| {
                connect(node.port).call(&["CLUSTER", "INFO"]).map(|r| r.text()).unwrap_or_default().contains("cluster_state:ok")
            })
        });
        promoted
    }

    /// How many times `command` (lower case, e.g. `bandit.rank`) ran on the
    /// node on `port`.
    pub fn calls(&self, port: u16, command: &str) -> u64 {
        command_calls(port, command)
    }
}

/// How many times `command` (lower case, e.g. `bandit.rank`, `asking`) ran on
/// the server on `port`, from INFO commandstats.
pub fn command_calls(port: u16, command: &str) -> u64 {
    let stats = connect(port).call(&["INFO", "commandstats"]).map(|r| r.text()).unwrap_or_default();
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// Whether the node on `port` says that it serves `slot` itself.
fn serves(port: u16, slot: u16) -> bool {
    let Ok(Reply::Array(ranges)) = connect(port).call(&["CLUSTER", "SLOTS"]) else { return false };
    let my_id = node_id(port);
    ranges.iter().any(|range| match range.array() {
        [start, end, primary, ..] => {
            let owner = primary.array().get(2).map(Reply::text).unwrap_or_default();
            (start.integer()..=end.integer()).contains(&i64::from(slot)) && owner == my_id
        }
        _ => false,
    })
}

fn connect(port: u16) -> Connection {
    Connection::connect(port).unwrap_or_else(|e| panic!("connect to {port}: {e}"))
}

fn node_id(port: u16) -> String {
    connect(port).call(&["CLUSTER", "MYID"]).map(|r| r.text()).unwrap_or_else(|e| panic!("CLUSTER MYID: {e}"))
}

fn expect_ok(reply: std::io::Result<Reply>, what: &str) {
    match reply {
        Ok(Reply::Status(status)) if status == "OK" || status == "NOKEY" => {}
        other => panic!("{what}: {other:?}"),
    }
}

/// The name the Sentinels monitor the primary under.
pub const MASTER_NAME: &str = "bandit-primary";

/// A Sentinel process; SIGKILLed on drop.
#[derive(Debug)]
pub struct Sentinel {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl Sentinel {
    /// A Sentinel watching the primary on `primary_port` with `quorum`.
    pub fn start(primary_port: u16, quorum: usize) -> Self {
        let dir = TempDir::new("sentinel");
        let port = free_port();
        // Sentinel rewrites its file, so it must be its own and writable.
        let config = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile sentinel.log\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {quorum}\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 10000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.path().display()
        );
        let config_path = dir.path().join("sentinel.conf");
        std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("sentinel.conf: {e}"));
        let child = Command::new(server_program())
            .arg(&config_path)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} --sentinel: {e}", server_program()));
        let mut sentinel = Self { port, child: Some(child), dir };
        let ready = || Connection::connect(port).is_ok_and(|mut conn| conn.call(&["PING"]).is_ok_and(|r| r.text() == "PONG"));
        await_ready(&mut sentinel.child, &format!("sentinel on port {port}"), Duration::from_secs(20), ready)
            .unwrap_or_else(|e| panic!("{e}\n{}", sentinel.log()));
        sentinel
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }

    /// The primary's port as this Sentinel reports it.
    pub fn primary_port(&self) -> Option<u16> {
        let reply = Connection::connect(self.port).ok()?.call(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]).ok()?;
        reply.array().get(1)?.text().parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// A primary with the module, its replicas, and Sentinels watching it.
#[derive(Debug)]
pub struct SentinelSet {
    pub servers: Vec<RedisServer>,
    pub sentinels: Vec<Sentinel>,
}

impl SentinelSet {
    pub fn start(replicas: usize, sentinels: usize) -> Self {
        let primary = RedisServer::start();
        let mut servers: Vec<RedisServer> = (0..replicas).map(|_| RedisServer::with_options(primary.replica_options())).collect();
        servers.insert(0, primary);
        let quorum = sentinels / 2 + 1;
        let primary_port = servers.first().map(|s| s.port).unwrap_or_default();
        let sentinels: Vec<Sentinel> = (0..sentinels).map(|_| Sentinel::start(primary_port, quorum)).collect();
        let set = Self { servers, sentinels };
        wait_until("the replicas to sync and the Sentinels to see them and each other", CONVERGE, || {
            set.servers.iter().skip(1).all(|s| s.info_field("replication", "master_link_status") == "up")
                && set.sentinels.iter().all(|sentinel| {
                    let Ok(mut conn) = Connection::connect(sentinel.port) else { return false };
                    let primary = conn.call(&["SENTINEL", "master", MASTER_NAME]).map(|r| r.pairs()).unwrap_or_default();
                    let field = |name: &str| primary.iter().find(|(k, _)| k == name).map(|(_, v)| v.text()).unwrap_or_default();
                    field("num-slaves") == replicas.to_string() && field("num-other-sentinels") == (set.sentinels.len() - 1).to_string()
                })
        });
        set
    }

    /// `redis+sentinel://` URL naming every Sentinel and the primary's name.
    pub fn url(&self) -> String {
        format!("redis+sentinel://{}/{MASTER_NAME}", host_list(self.sentinels.iter().map(|s| s.port)))
    }

    /// The primary's port, as the first Sentinel that answers reports it.
    pub fn primary_port(&self) -> u16 {
        self.sentinels.iter().find_map(Sentinel::primary_port).unwrap_or_else(|| panic!("no Sentinel names a primary"))
    }

    /// SIGKILLs the primary and waits until the Sentinels have promoted a
    /// replica and it accepts writes. Returns the new primary's port.
    pub fn kill_primary_and_wait_for_failover(&mut self) -> u16 {
        let old = self.primary_port();
        self.servers.iter_mut().filter(|s| s.port == old).for_each(RedisServer::kill);
        let mut new = 0;
        wait_until("the Sentinels to promote a replica", CONVERGE, || {
            new = self.primary_port();
            new != old && self.servers.iter().any(|s| s.port == new && s.info_field("replication", "role") == "master")
        });
        new
    }

    pub fn logs(&self) -> String {
        self.sentinels.iter().map(Sentinel::log).collect::<Vec<_>>().join("\n----\n")
    }
}

/// A CA, and a server and a client certificate it signed, in a private
/// directory; made with the `openssl` command.
#[derive(Debug)]
pub struct Certificates {
    dir: TempDir,
}

impl Certificates {
    pub fn generate() -> Self {
        let certs = Self { dir: TempDir::new("tls") };
        certs.openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bandit test CA", "-keyout", "ca.key", "-out", "ca.crt"]);
        for (name, subject) in [("server", "/CN=localhost"), ("client", "/CN=bandit test client")] {
            certs.openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr")]);
            let extensions = certs.dir.path().join(format!("{name}.ext"));
            let usage = if name == "server" {
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
            } else {
                "extendedKeyUsage=clientAuth\n"
            };
            std::fs::write(&extensions, usage).unwrap_or_else(|e| panic!("{e}"));
            certs.openssl(&[
                "x509", "-req", "-in", &format!("{name}.csr"), "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", &format!("{name}.ext"), "-out", &format!("{name}.crt"),
            ]);
        }
        // A second CA that signed nothing here: a client trusting only it must refuse the server.
        certs.openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other CA", "-keyout", "other-ca.key", "-out", "other-ca.crt"]);
        certs
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
        assert!(output.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A server with the module that speaks TLS on `tls_port` (and plain TCP on
/// its usual port, for the harness's own checks). With `require_client_cert`
/// it refuses clients without a certificate signed by the CA.
#[derive(Debug)]
pub struct TlsServer {
    pub server: RedisServer,
    pub tls_port: u16,
}

impl TlsServer {
    pub fn start(certs: &Certificates, require_client_cert: bool) -> Self {
        let tls_port = free_port();
        let path = |file: &str| certs.path(file).display().to_string();
        let server = RedisServer::with_options(ServerOptions {
            module_args: Vec::new(),
            server_args: vec![
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                path("server.crt"),
                "--tls-key-file".into(),
                path("server.key"),
                "--tls-ca-cert-file".into(),
                path("ca.crt"),
                "--tls-auth-clients".into(),
                if require_client_cert { "yes" } else { "no" }.into(),
            ],
        });
        Self { server, tls_port }
    }

    /// `rediss://` URL for this server with `params` (e.g. `tls_ca=…`).
    pub fn url(&self, params: &str) -> String {
        let query = if params.is_empty() { String::new() } else { format!("?{params}") };
        format!("rediss://127.0.0.1:{}{query}", self.tls_port)
    }
}
