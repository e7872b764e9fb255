//! A service binary of the workspace (bandit-sink, bandit-join) run as a
//! separate process, so tests can SIGKILL it: started with its metrics
//! endpoint on a free port and the short consumer-group timeouts every test
//! uses, logging into a directory of its own; killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::server::{free_port, TempDir};
use crate::sink::{http_get, HttpResponse};

/// A running service process; SIGKILLed on drop if still running.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Option<Child>,
    pub metrics_port: u16,
    log_path: PathBuf,
    _dir: TempDir,
}

impl ServiceProcess {
    /// Starts `command` (the program with its own flags) with the metrics
    /// endpoint, the tests' group timeouts and then `extra`, logging to
    /// `<name>.log` in a new directory.
    pub fn start(mut command: Command, name: &str, extra: &[String]) -> Self {
        let dir = TempDir::new(name);
        let metrics_port = free_port();
        let log_path = dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{name} log: {e}"));
        let child = command
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            // Short group timeouts so rebalances take seconds, not minutes.
            .args(["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500", "-X", "max.poll.interval.ms=20000"])
            .args(["-X", "fetch.wait.max.ms=50", "-X", "topic.metadata.refresh.interval.ms=1000"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child: Some(child), metrics_port, log_path, _dir: dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no flush, no commit.
    pub fn kill(&mut self) {
        crate::server::kill_child(&mut self.child);
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let pid = self.pid()?;
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        self.wait_exit(deadline)
    }

    /// Waits for the process to end by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// One value from /metrics (the first sample whose name, with labels,
    /// starts with `name`, e.g. `bandit_sink_flushes_total{result="stale"}`),
    /// if reachable (a few tries, so a busy machine's hiccup is not a
    /// missing metric).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = (0..5).find_map(|attempt| {
            if attempt > 0 {
                sleep(Duration::from_millis(100));
            }
            http_get(self.metrics_port, "/metrics").filter(|r| r.status == 200)
        })?;
        text.body
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find(|line| {
                let sample = line.split(' ').next().unwrap_or_default();
                sample == name || (!name.contains('{') && sample.strip_prefix(name).is_some_and(|labels| labels.starts_with('{')))
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    /// GET /health: status and body, None when the endpoint does not answer.
    pub fn health(&self) -> Option<HttpResponse> {
        http_get(self.metrics_port, "/health")
    }

    /// Waits until /health answers `status` with a body containing `part`.
    pub fn wait_for_health(&self, status: u16, part: &str, deadline: Duration) {
        let end = Instant::now() + deadline;
        let mut last = None;
        while Instant::now() < end {
            last = self.health();
            if last.as_ref().is_some_and(|r| r.status == status && r.body.contains(part)) {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        panic!("/health never answered {status} naming {part:?} within {deadline:?}; last {last:?}\n{}", self.log());
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
