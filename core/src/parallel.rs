//! How many threads a large piece of work may use, and running its parts
//! on them. One place decides, so the trainer's flush, the encoder and a
//! model's apply split work the same way.

use std::num::NonZeroUsize;
use std::sync::{Mutex, OnceLock};

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

/// Runs `work` on every part and returns the results in order: the first
/// part on the calling thread (which would otherwise only wait), each other
/// on a scoped thread of its own. A part whose thread cannot be started (the
/// process is at its thread limit) runs on the calling thread instead, so
/// the work never fails, or stops half done, for want of threads. A panic in
/// a part is passed on to the caller once every part has ended.
pub fn run_parts<I: Send, O: Send>(parts: Vec<I>, work: impl Fn(I) -> O + Sync) -> Vec<O> {
    let slots: Vec<Mutex<Option<I>>> = parts.into_iter().map(|part| Mutex::new(Some(part))).collect();
    // Each slot is taken once, by whichever thread runs it.
    let run = |index: usize| -> Option<O> {
        let part = slots.get(index)?.lock().ok()?.take()?;
        Some(work(part))
    };
    let run = &run;
    std::thread::scope(|scope| {
        let spawned: Vec<_> =
            (1..slots.len()).map(|index| std::thread::Builder::new().spawn_scoped(scope, move || run(index)).ok()).collect();
        let mut out = Vec::with_capacity(slots.len());
        out.push(run(0));
        for (offset, handle) in spawned.into_iter().enumerate() {
            out.push(match handle {
                Some(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => run(offset + 1),
            });
        }
        out.into_iter().flatten().collect()
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Every part runs once, results come back in order, and parts may
    /// write through what they borrow.
    #[test]
    fn parts_run_once_each_in_order() {
        let mut values: Vec<u64> = (0..1000).collect();
        let parts: Vec<(usize, &mut [u64])> = values.chunks_mut(300).enumerate().collect();
        let sums = run_parts(parts, |(part, values)| {
            values.iter_mut().for_each(|value| *value *= 2);
            (part, values.iter().sum::<u64>())
        });
        assert_eq!(sums.iter().map(|&(part, _)| part).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(sums.iter().map(|&(_, sum)| sum).sum::<u64>(), 999 * 1000);
        assert!(values.iter().enumerate().all(|(index, &value)| value == 2 * index as u64));
        assert!(run_parts(Vec::<u8>::new(), |_| 1).is_empty());
    }

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
