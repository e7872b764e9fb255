//! `cargo run --release -p bandit-tests --bin bench_module -- [--arms N]
//! [--dim D] [--top K] [--requests N] [--connections C] [--seconds S]
//! [--port P]`: BANDIT.RANK versus GET on one redis-server (started here
//! with the module unless --port names a running one).

use bandit_tests::bench::{report, run, BenchConfig};
use bandit_tests::server::RedisServer;

fn main() {
    let mut config = BenchConfig { arms: 200, dim: 15, top: 5, requests: 20_000, connections: 16, seconds: 5.0 };
    let mut port = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let value = iter.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || value.parse::<f64>().unwrap_or_else(|_| usage(&format!("{flag}: not a number: {value}")));
        match flag.as_str() {
            "--arms" => config.arms = number() as usize,
            "--dim" => config.dim = number() as usize,
            "--top" => config.top = number() as usize,
            "--requests" => config.requests = number() as usize,
            "--connections" => config.connections = number() as usize,
            "--seconds" => config.seconds = number(),
            "--port" => port = Some(number() as u16),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    let server = match port {
        Some(_) => None,
        None => Some(RedisServer::start()),
    };
    let port = port.or(server.as_ref().map(|s| s.port)).unwrap_or(6379);
    match run(port, &config) {
        Ok(result) => print!("{}", report(&config, &result)),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}

fn usage(message: &str) -> ! {
    eprintln!("{message}\nusage: bench_module [--arms N] [--dim D] [--top K] [--requests N] [--connections C] [--seconds S] [--port P]");
    std::process::exit(2);
}
