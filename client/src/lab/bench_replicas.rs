//! `bandit bench replicas`: RANK throughput against the primary alone, then
//! with reads on replicas, in one run, so the ratio holds on a noisy
//! machine. `--redis` names the deployment with `read_from=replica` (and,
//! for one server, `replicas=host:port,…`); the first phase reads the same
//! deployment with `read_from=primary`. Each of N client threads has its
//! own [`Models`], as N application processes would. The model
//! ([`MODEL_KEY`]) is loaded on the primary, replicated (WAIT) before
//! anything is measured, and deleted at the end, also after a failure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bandit_connect::{Connection, Connector, NodeRole, ReadFrom, Target, Timeouts, Topology};
use bandit_core::codec::encode_binary;
use bandit_core::Payload;

use crate::error::{ClientError, Result};
use crate::lab::bench::trained_payload;
use crate::lab::rng::Rng;
use crate::models::{Models, RankOptions};

/// The model the benchmark ranks.
pub const MODEL_KEY: &str = "bench:replicas";

/// What to measure.
#[derive(Debug, Clone)]
pub struct ReplicasConfig {
    pub arms: usize,
    pub dim: usize,
    pub top: usize,
    /// Client threads, each with its own connection.
    pub connections: usize,
    /// Seconds per phase.
    pub seconds: f64,
}

/// RANKs per second in each phase, and who served the second phase.
#[derive(Debug, Clone, Default)]
pub struct ReplicasResult {
    pub primary_only: f64,
    pub with_replicas: f64,
    /// For one server and its listed replicas: each node's BANDIT.RANK
    /// calls in the replica phase (INFO commandstats), primary first.
    pub served: Vec<(String, u64)>,
}

fn timeouts() -> Timeouts {
    Timeouts { connect: Duration::from_secs(5), io: Duration::from_secs(30) }
}

/// The deployment read from the primary only.
fn primary_only(target: &Target) -> Target {
    let mut primary = target.clone();
    primary.read_from = ReadFrom::Primary;
    if let Topology::Node { replicas, .. } = &mut primary.topology {
        replicas.clear();
    }
    primary
}

/// One server's own target (for its statistics).
fn single(target: &Target, node: &bandit_connect::Node) -> Target {
    Target { topology: Topology::Node { node: node.clone(), db: None, replicas: vec![] }, read_from: ReadFrom::Primary, ..target.clone() }
}

/// The nodes whose RANK calls can be counted: one server and its listed
/// replicas (a cluster's or sentinel's replicas are not named in the URL).
fn counted_nodes(target: &Target) -> Vec<(String, Target)> {
    match &target.topology {
        Topology::Node { node, replicas, .. } => std::iter::once(node)
            .chain(replicas)
            .map(|n| (n.to_string(), single(target, n)))
            .collect(),
        _ => Vec::new(),
    }
}

/// Runs both phases against `url`, which must read from replicas.
///
/// # Errors
/// A URL without `read_from=replica`, connection or command failures, or
/// a replica without the model after the WAIT.
pub fn run(url: &str, config: &ReplicasConfig) -> Result<ReplicasResult> {
    let target = Target::parse(url)?;
    if target.read_from != ReadFrom::Replica {
        return Err(ClientError::Input(
            "bench replicas compares the primary with its replicas: give --redis with read_from=replica (and replicas=host:port,… for one server)".into(),
        ));
    }
    let primary = primary_only(&target);
    let mut writer = Connector::new(primary.clone(), timeouts())?.primary()?;
    let outcome = measure(&target, &primary, &mut writer, config);
    let deleted: redis::RedisResult<u64> = redis::cmd("DEL").arg(MODEL_KEY).query(&mut writer);
    let result = outcome?;
    deleted?;
    Ok(result)
}

fn measure(target: &Target, primary: &Target, writer: &mut Connection, config: &ReplicasConfig) -> Result<ReplicasResult> {
    let _: u64 = redis::cmd("DEL").arg(MODEL_KEY).query(writer)?;
    let payload = trained_payload(config.dim, config.arms, 20, 7)?;
    // Chunks within the module's default payload limit, as `bench rank` loads.
    for chunk in payload.arms.chunks(2000) {
        let part = Payload { dim: payload.dim, arms: chunk.to_vec(), offsets: vec![], settings: None, base_offsets: vec![], version: None, fences: vec![] };
        let _: u64 = redis::cmd("BANDIT.LOAD").arg(MODEL_KEY).arg(encode_binary(&part)?).query(writer)?;
    }
    let replicas = match &target.topology {
        Topology::Node { replicas, .. } => replicas.len().max(1),
        _ => 1,
    };
    let acked: u64 = writer.query_key(MODEL_KEY, NodeRole::Primary, redis::cmd("WAIT").arg(replicas).arg(10_000))?;
    if acked < replicas as u64 {
        return Err(ClientError::Input(format!("only {acked} of {replicas} replicas have the benchmark model after 10 s")));
    }
    let mut rng = Rng::new(99);
    let contexts: Arc<Vec<Vec<f64>>> = Arc::new((0..64).map(|_| (0..config.dim).map(|_| rng.unit()).collect()).collect());
    let primary_only = throughput(primary, &contexts, config)?;
    let nodes = counted_nodes(target);
    for (_, node) in &nodes {
        let () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut Connector::new(node.clone(), timeouts())?.primary()?)?;
    }
    let with_replicas = throughput(target, &contexts, config)?;
    let mut served = Vec::with_capacity(nodes.len());
    for (name, node) in &nodes {
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut Connector::new(node.clone(), timeouts())?.primary()?)?;
        served.push((name.clone(), rank_calls(&info)));
    }
    Ok(ReplicasResult { primary_only, with_replicas, served })
}

/// `calls=` of `cmdstat_bandit.rank` in INFO commandstats; 0 when absent.
fn rank_calls(info: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_bandit.rank:"))
        .and_then(|fields| fields.split(',').find_map(|field| field.strip_prefix("calls=")))
        .and_then(|calls| calls.trim().parse().ok())
        .unwrap_or(0)
}

/// RANKs per second over `config.connections` threads for `config.seconds`;
/// the first error of any thread fails the phase.
fn throughput(target: &Target, contexts: &Arc<Vec<Vec<f64>>>, config: &ReplicasConfig) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failure: Arc<Mutex<Option<ClientError>>> = Arc::new(Mutex::new(None));
    let mut workers = Vec::with_capacity(config.connections);
    for worker in 0..config.connections {
        let mut models = Models::with_connector(Connector::new(target.clone(), timeouts())?)?;
        let (done, stop, failure, contexts) = (done.clone(), stop.clone(), failure.clone(), contexts.clone());
        let top = config.top;
        workers.push(thread::spawn(move || {
            let options = RankOptions { top_k: Some(top), ..RankOptions::default() };
            for context in contexts.iter().cycle().skip(worker) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(error) = models.rank(MODEL_KEY, context, &options) {
                    failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(error);
                    break;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    thread::sleep(Duration::from_secs_f64(config.seconds));
    let count = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    if let Some(error) = failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        return Err(error);
    }
    Ok(count as f64 / elapsed)
}

/// The report, as printed by `bandit bench replicas`.
#[must_use]
pub fn report(config: &ReplicasConfig, target: &str, result: &ReplicasResult) -> String {
    let mut out = format!(
        "BANDIT.RANK over {} arms, d = {}, TOP {}; {} client threads (one connection each), {:.0} s per phase; {target}\n",
        config.arms, config.dim, config.top, config.connections, config.seconds
    );
    out.push_str(&format!("{:<26} {:>12}\n", "reads", "RANK/s"));
    out.push_str(&format!("{:<26} {:>12.0}\n", "primary only", result.primary_only));
    out.push_str(&format!("{:<26} {:>12.0}\n", "read_from=replica", result.with_replicas));
    out.push_str(&format!("ratio replica/primary: {:.2}x\n", result.with_replicas / result.primary_only.max(f64::MIN_POSITIVE)));
    if !result.served.is_empty() {
        let total: u64 = result.served.iter().map(|(_, calls)| calls).sum();
        let shares: Vec<String> = result
            .served
            .iter()
            .map(|(node, calls)| format!("{node} {:.0}%", *calls as f64 * 100.0 / total.max(1) as f64))
            .collect();
        out.push_str(&format!("RANKs served in the replica phase: {} (primary first)\n", shares.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rank_calls_from_commandstats() {
        let info = "# Commandstats\r\ncmdstat_get:calls=5,usec=1\r\ncmdstat_bandit.rank:calls=1234,usec=99,usec_per_call=0.08,rejected_calls=0,failed_calls=0\r\n";
        assert_eq!(rank_calls(info), 1234);
        assert_eq!(rank_calls("# Commandstats\r\n"), 0);
    }
}
