//! A command run to completion within a deadline, like `Command::output`,
//! but never waiting for ever: a test that starts a script or a client that
//! hangs fails with what it printed so far instead of stalling the suite.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::server::TempDir;

/// Runs `command` in a process group of its own, its output going to files
/// (so that a grandchild that keeps them open cannot hold the caller), and
/// returns its output once it exits. At `deadline` it panics with that
/// output and what was still running. Either way, whatever the command
/// left running in its group is killed: a script's background servers
/// never outlive the test. The command is sent SIGTERM if the test's thread
/// dies first (the group no longer gets the terminal's Ctrl-C).
///
/// # Panics
/// When the command cannot start or outlives `deadline`.
pub fn output_within(command: &mut Command, deadline: Duration) -> Output {
    let dir = TempDir::new("output");
    let paths = ["out", "err"].map(|name| dir.path().join(name));
    let file = |path: &std::path::Path| File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let what = format!("{command:?}");
    command.stdin(Stdio::null()).stdout(file(&paths[0])).stderr(file(&paths[1])).process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the child's own
    // attributes; nothing else runs between fork and exec here.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let end = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < end => sleep(Duration::from_millis(50)),
            Ok(None) => break None,
            Err(e) => panic!("{what}: {e}"),
        }
    };
    let timed_out = status.is_none();
    // Where it hung: what was still running in its group, and in what state.
    let running = if timed_out { processes_in_group(child.id()) } else { String::new() };
    kill_group(child.id());
    let status = status.unwrap_or_else(|| child.wait().unwrap_or_else(|e| panic!("{what}: {e}")));
    let [stdout, stderr] = paths.map(|path| std::fs::read(path).unwrap_or_default());
    assert!(
        !timed_out,
        "{what} did not finish within {} s; still running then:\n{running}\nit printed:\n{}\n{}",
        deadline.as_secs(),
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    Output { status, stdout, stderr }
}

/// SIGKILLs every process still in the group `leader` started (its id is
/// the leader's pid); none left is no error.
fn kill_group(leader: u32) {
    let Ok(group) = libc::pid_t::try_from(leader) else { return };
    // SAFETY: a plain system call on a process group this test created.
    unsafe {
        libc::killpg(group, libc::SIGKILL);
    }
}

/// `ps` of the group `leader` started: pid, state, elapsed time, wait
/// channel and command line of each process still in it.
fn processes_in_group(leader: u32) -> String {
    let listing = match Command::new("ps").args(["-eo", "pgid,pid,stat,etime,wchan:24,args", "--forest"]).output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout).into_owned(),
        Err(e) => return format!("(ps: {e})"),
    };
    let leader = leader.to_string();
    listing
        .lines()
        .enumerate()
        .filter(|(index, line)| *index == 0 || line.split_whitespace().next() == Some(leader.as_str()))
        .map(|(_, line)| format!("{line}\n"))
        .collect()
}
