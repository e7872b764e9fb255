//! The `bandit-join` binary: file, environment and flags into a
//! [`JoinConfig`], then [`bandit_sink::service::main`] (exit codes, logs,
//! signals) around [`bandit_sink::join::run`].

use std::process::ExitCode;

use bandit_sink::join::{JoinCli, JoinConfig};

fn main() -> ExitCode {
    let cli = JoinCli::parse_with_defaults();
    bandit_sink::service::main("bandit-join", JoinConfig::from_cli(&cli), cli.print_config, bandit_sink::join::run)
}
