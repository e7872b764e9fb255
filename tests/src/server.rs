//! Real `redis-server` processes with the bandit module loaded, one per test:
//! a free port, a private data directory, readiness awaited with a deadline,
//! and the process always stopped and the directory removed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::resp::{Connection, Reply};

const READY_DEADLINE: Duration = Duration::from_secs(20);

/// A free TCP port on the loopback interface, as the OS hands them out.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A build product: `$env_var` when set, or the newest of target/release and
/// target/debug (or `$CARGO_TARGET_DIR`).
pub fn built_artifact(env_var: &str, file: &str, build_hint: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_var) {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace_root().join("target"));
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join(file))
        .filter_map(|path| Some((path.metadata().ok()?.modified().ok()?, path)))
        .max()
        .map(|(_, path)| path)
        .unwrap_or_else(|| panic!("{file} is not built: run `{build_hint}` (or scripts/test), or set {env_var}"))
}

/// The module library.
pub fn module_path() -> PathBuf {
    built_artifact("BANDIT_MODULE", "libbandit_redis.so", "cargo build --release -p bandit-redis")
}

/// A private directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "bandit-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The server the tests run against: `redis-server` unless
/// `BANDIT_TEST_SERVER` names another (`valkey-server`); `scripts/test` runs
/// the integration suite once with each.
pub fn server_program() -> String {
    std::env::var("BANDIT_TEST_SERVER").ok().filter(|name| !name.is_empty()).unwrap_or_else(|| "redis-server".into())
}

/// Whether the tests run against Valkey (which has APIs Redis 7.0 lacks).
pub fn is_valkey() -> bool {
    server_program().contains("valkey")
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Module arguments, e.g. ["MAX-DIM", "64"].
    pub module_args: Vec<String>,
    /// Extra redis-server arguments, e.g. ["--appendonly", "yes"].
    pub server_args: Vec<String>,
}

/// A running redis-server; stopped (SIGKILL if needed) on drop.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    options: ServerOptions,
    /// False only for [`RedisServer::without_module`].
    load_module: bool,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server with the module and default options.
    pub fn start() -> Self {
        Self::with_options(ServerOptions::default())
    }

    pub fn with_options(options: ServerOptions) -> Self {
        let dir = TempDir::new("redis");
        let mut server = Self { port: 0, options, load_module: true, child: None, dir };
        server.launch_on_free_port();
        server
    }

    /// One attempt to start; on failure, the reason and the server's log
    /// (for tests of refused configurations).
    pub fn try_with_options(options: ServerOptions) -> Result<Self, String> {
        let dir = TempDir::new("redis");
        let mut server = Self { port: 0, options, load_module: true, child: None, dir };
        match server.launch(free_port()) {
            Ok(()) => Ok(server),
            Err(e) => Err(format!("{e}\n{}", server.log())),
        }
    }

    /// A plain redis-server without the bandit module (for clients that must
    /// notice its absence).
    pub fn without_module() -> Self {
        let dir = TempDir::new("redis");
        let mut server = Self { port: 0, options: ServerOptions::default(), load_module: false, child: None, dir };
        server.launch_on_free_port();
        server
    }

    /// Options for a replica of this server.
    pub fn replica_options(&self) -> ServerOptions {
        ServerOptions {
            module_args: self.options.module_args.clone(),
            server_args: vec!["--replicaof".into(), "127.0.0.1".into(), self.port.to_string()],
        }
    }

    /// One field of INFO, as text ("" when absent).
    pub fn info_field(&self, section: &str, field: &str) -> String {
        let info = self.connect().call(&["INFO", section]).map(|r| r.text()).unwrap_or_default();
        info.lines()
            .find_map(|line| line.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// A connection to this server.
    pub fn connect(&self) -> Connection {
        Connection::connect(self.port).unwrap_or_else(|e| panic!("connect to {}: {e}", self.port))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("redis.log")).unwrap_or_default()
    }

    /// Stops the server as SHUTDOWN does (saving per its configuration when
    /// `save` is true) and starts it again on the same port and directory.
    pub fn restart(&mut self, save: bool) {
        let mut conn = self.connect();
        let _ = conn.call(&["SHUTDOWN", if save { "SAVE" } else { "NOSAVE" }]);
        self.wait_exit();
        self.launch(self.port).unwrap_or_else(|e| panic!("restart failed: {e}\n{}", self.log()));
    }

    /// Stops the server (SHUTDOWN, saving per its configuration) and leaves
    /// it down until [`RedisServer::relaunch`].
    pub fn shutdown(&mut self) {
        let mut conn = self.connect();
        let _ = conn.call(&["SHUTDOWN"]);
        self.wait_exit();
    }

    /// Starts a stopped server again on the same port and directory.
    pub fn relaunch(&mut self) {
        self.launch(self.port).unwrap_or_else(|e| panic!("relaunch failed: {e}\n{}", self.log()));
    }

    /// One attempt to start a stopped server again; on failure, the reason
    /// and the server's log (for tests of data the server must refuse).
    pub fn try_relaunch(&mut self) -> Result<(), String> {
        self.launch(self.port).map_err(|e| format!("{e}\n{}", self.log()))
    }

    fn launch_on_free_port(&mut self) {
        let mut last_error = String::new();
        // Another process can take a port between the probe and the bind.
        for _ in 0..5 {
            match self.launch(free_port()) {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}\n{}", self.log());
    }

    fn launch(&mut self, port: u16) -> Result<(), String> {
        self.port = port;
        let mut command = Command::new(server_program());
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log", "--enable-debug-command", "yes", "--daemonize", "no"]);
        if self.load_module {
            command.arg("--loadmodule").arg(module_path()).args(&self.options.module_args);
        }
        command
            .args(&self.options.server_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().map_err(|e| format!("cannot run {} (is it installed?): {e}", server_program()))?;
        self.child = Some(child);
        let ready = || {
            Connection::connect(port).is_ok_and(|mut conn| {
                // LOADING while the dataset is still being read: not yet.
                matches!(conn.call(&["PING"]), Ok(Reply::Status(status)) if status == "PONG")
            })
        };
        await_ready(&mut self.child, &format!("redis-server on port {port}"), READY_DEADLINE, ready)
    }

    /// Waits for the process to end by itself (after SHUTDOWN), killing it at the deadline.
    pub fn wait_exit(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        if let Some(mut child) = self.child.take() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL: no save, no goodbye to replicas or the cluster.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILLs a child process, if any, and reaps it.
pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut process) = child.take() {
        let _ = process.kill();
        let _ = process.wait();
    }
}

/// Waits until `ready` answers true, failing early if the process exits and
/// killing it at the deadline.
pub fn await_ready(child: &mut Option<Child>, what: &str, deadline: Duration, ready: impl Fn() -> bool) -> Result<(), String> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Some(process) = child.as_mut() {
            if let Ok(Some(status)) = process.try_wait() {
                *child = None;
                return Err(format!("{what} exited with {status}"));
            }
        }
        if ready() {
            return Ok(());
        }
        sleep(Duration::from_millis(20));
    }
    kill_child(child);
    Err(format!("{what} not ready after {deadline:?}"))
}

/// Polls `check` until it returns true or the deadline passes.
pub fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if check() {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    panic!("timed out after {deadline:?} waiting for {what}");
}
