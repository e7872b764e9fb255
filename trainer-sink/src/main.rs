//! The `bandit-sink` binary: file, environment and flags into a [`Config`],
//! then [`bandit_sink::service::main`] (exit codes, logs, signals) around
//! [`bandit_sink::run`].

use std::process::ExitCode;

use bandit_sink::{Cli, Config};

fn main() -> ExitCode {
    // Usage errors (an unknown flag, a bad -X pair) exit 2 here, as clap does;
    // a bad setting exits 2 in service::main, naming it.
    let cli = Cli::parse_with_defaults();
    bandit_sink::service::main("bandit-sink", Config::from_cli(&cli), cli.print_config, bandit_sink::run)
}
