//! How many threads a large piece of work may use. One place decides, so
//! the trainer's inversions and a model's apply split work the same way.

use std::num::NonZeroUsize;
use std::sync::OnceLock;

/// The most threads any one piece of work uses: past this, memory bandwidth,
/// not cores, is what a flush or an apply waits on.
const MAX_THREADS: usize = 8;

/// The cores this process may run on (asked once: the answer comes from a
/// cgroup read, a system call too costly to repeat per flush).
#[must_use]
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get).min(MAX_THREADS))
}

/// Threads for `items` items when a thread should get at least `per_thread`
/// of them (below that, starting it costs more than it saves); 1 means "do
/// it here".
#[must_use]
pub fn threads_for(items: usize, per_thread: usize) -> usize {
    if items < 2 * per_thread.max(1) {
        return 1;
    }
    cores().min(items / per_thread.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_work_stays_on_one_thread() {
        assert_eq!(threads_for(0, 256), 1);
        assert_eq!(threads_for(511, 256), 1);
        assert!(threads_for(512, 256) <= 2);
        assert!(threads_for(1_000_000, 256) <= MAX_THREADS);
        assert!(threads_for(1_000_000, 256) >= 1);
        assert_eq!(threads_for(10, 0), threads_for(10, 1));
    }
}
