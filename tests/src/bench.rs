//! The module benchmark: BANDIT.RANK beside a plain GET of a small string on
//! the same server in the same run, so the ratio says what ranking costs
//! over Redis' own floor. Latency on one connection, throughput over many,
//! and the server's own time per call from INFO commandstats.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bandit_core::codec::encode_binary;

use crate::fixtures::{context, trained_payload};
use crate::resp::{Connection, Reply};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub arms: usize,
    pub dim: usize,
    pub top: usize,
    /// Requests per command on the single connection.
    pub requests: usize,
    /// Client connections for the throughput phase.
    pub connections: usize,
    /// Seconds per command in the throughput phase.
    pub seconds: f64,
}

/// Latency percentiles in microseconds and throughput in requests/s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    pub p50_us: f64,
    pub p99_us: f64,
    pub ops_per_s: f64,
    /// Server-side microseconds per call (INFO commandstats).
    pub server_us_per_call: f64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct BenchResult {
    pub get: Measured,
    pub rank: Measured,
}

fn rank_args(dim: usize, top: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut args: Vec<Vec<u8>> = vec![b"BANDIT.RANK".to_vec(), b"bench:model".to_vec(), b"CONTEXT".to_vec()];
    args.extend(context(dim, seed).iter().map(|v| format!("{v:.6}").into_bytes()));
    args.extend([b"TOP".to_vec(), top.to_string().into_bytes()]);
    args
}

fn get_args() -> Vec<Vec<u8>> {
    vec![b"GET".to_vec(), b"bench:string".to_vec()]
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Loads the benchmark model (in chunks that fit the default payload limit)
/// and the GET key.
pub fn prepare(port: u16, config: &BenchConfig) -> std::io::Result<()> {
    let mut conn = Connection::connect(port)?;
    conn.call(&["DEL", "bench:model"])?;
    conn.call(&["SET", "bench:string", "hello"])?;
    let payload = trained_payload(config.dim, config.arms, 20, 7);
    for chunk in payload.arms.chunks(2000) {
        let mut part = payload.clone();
        part.arms = chunk.to_vec();
        let bytes = encode_binary(&part).map_err(std::io::Error::other)?;
        let reply = conn.call(&[b"BANDIT.LOAD".as_slice(), b"bench:model", &bytes])?;
        if reply.is_error() {
            return Err(std::io::Error::other(format!("LOAD failed: {}", reply.text())));
        }
    }
    Ok(())
}

fn latency(conn: &mut Connection, commands: &[Vec<Vec<u8>>], requests: usize) -> std::io::Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(requests);
    for i in 0..requests {
        let args = &commands[i % commands.len()];
        let start = Instant::now();
        let reply = conn.call(args)?;
        samples.push(start.elapsed());
        if let Reply::Error(e) = reply {
            return Err(std::io::Error::other(e));
        }
    }
    samples.sort_unstable();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

fn throughput(port: u16, commands: &[Vec<Vec<u8>>], connections: usize, seconds: f64) -> std::io::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..connections {
        let mut conn = Connection::connect(port)?;
        let commands = commands.to_vec();
        let (done, stop) = (done.clone(), stop.clone());
        workers.push(thread::spawn(move || {
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                if conn.call(&commands[i % commands.len()]).is_err() {
                    break;
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let start = Instant::now();
    thread::sleep(Duration::from_secs_f64(seconds));
    let count = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    Ok(count as f64 / elapsed)
}

fn server_us_per_call(conn: &mut Connection, command: &str) -> std::io::Result<f64> {
    let info = conn.call(&["INFO", "commandstats"])?.text();
    Ok(info
        .lines()
        .find(|line| line.starts_with(&format!("cmdstat_{command}:")))
        .and_then(|line| line.split(',').find_map(|part| part.strip_prefix("usec_per_call=")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0))
}

/// Runs the benchmark against a server that has the module loaded.
pub fn run(port: u16, config: &BenchConfig) -> std::io::Result<BenchResult> {
    prepare(port, config)?;
    let rank: Vec<Vec<Vec<u8>>> = (0..64).map(|seed| rank_args(config.dim, config.top, seed)).collect();
    let get = vec![get_args()];
    let mut conn = Connection::connect(port)?;
    // Warm both paths (scratch buffers, caches) before measuring.
    latency(&mut conn, &rank, 500)?;
    latency(&mut conn, &get, 500)?;
    conn.call(&["CONFIG", "RESETSTAT"])?;

    let mut result = BenchResult::default();
    (result.get.p50_us, result.get.p99_us) = latency(&mut conn, &get, config.requests)?;
    (result.rank.p50_us, result.rank.p99_us) = latency(&mut conn, &rank, config.requests)?;
    result.get.ops_per_s = throughput(port, &get, config.connections, config.seconds)?;
    result.rank.ops_per_s = throughput(port, &rank, config.connections, config.seconds)?;
    result.get.server_us_per_call = server_us_per_call(&mut conn, "get")?;
    result.rank.server_us_per_call = server_us_per_call(&mut conn, "bandit.rank")?;
    Ok(result)
}

/// The report, as printed by the benchmark binaries.
pub fn report(config: &BenchConfig, result: &BenchResult) -> String {
    let BenchResult { get, rank } = result;
    let mut out = String::new();
    out.push_str(&format!(
        "BANDIT.RANK over {} arms, d = {}, TOP {} versus GET; {} requests on 1 connection, {} connections for {:.0} s\n",
        config.arms, config.dim, config.top, config.requests, config.connections, config.seconds
    ));
    out.push_str(&format!("{:<12} {:>10} {:>10} {:>14} {:>16}\n", "command", "p50 µs", "p99 µs", "requests/s", "server µs/call"));
    for (name, m) in [("GET", get), ("BANDIT.RANK", rank)] {
        out.push_str(&format!(
            "{:<12} {:>10.1} {:>10.1} {:>14.0} {:>16.2}\n",
            name, m.p50_us, m.p99_us, m.ops_per_s, m.server_us_per_call
        ));
    }
    out.push_str(&format!(
        "ratio RANK/GET: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x\n",
        rank.p50_us / get.p50_us.max(f64::MIN_POSITIVE),
        rank.p99_us / get.p99_us.max(f64::MIN_POSITIVE),
        rank.ops_per_s / get.ops_per_s.max(f64::MIN_POSITIVE)
    ));
    out
}
