//! CPU affinity for a load phase: a daemon on one core of its own, the
//! bench's clients on the others, so that a figure "per core" is what the
//! daemon does on exactly one core and the clients' own work is not
//! counted against it. Every thread of a process is pinned (and new
//! threads inherit it); dropping the [`Pinned`] gives each thread back the
//! CPUs it had.

use anyhow::Context;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// Threads moved by [`pin`], and the CPUs each had before.
pub struct Pinned(Vec<(Pid, CpuSet)>);

impl Drop for Pinned {
    fn drop(&mut self) {
        for (tid, before) in &self.0 {
            // A thread that ended meanwhile has nothing to restore.
            let _ = sched_setaffinity(*tid, before);
        }
    }
}

/// The CPUs this process may run on, in order.
pub fn own_cpus() -> anyhow::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Pins every thread of process `pid` to `cpus`.
pub fn pin(pid: u32, cpus: &[usize]) -> anyhow::Result<Pinned> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).with_context(|| format!("CPU {c}"))?;
    }
    let dir = format!("/proc/{pid}/task");
    let mut pinned = Pinned(Vec::new());
    for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Some(tid) = task?.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let tid = Pid::from_raw(tid);
        let Ok(before) = sched_getaffinity(tid) else {
            continue; // ended since the listing
        };
        sched_setaffinity(tid, &set)
            .with_context(|| format!("pinning thread {tid} of pid {pid} to CPUs {cpus:?}"))?;
        pinned.0.push((tid, before));
    }
    anyhow::ensure!(!pinned.0.is_empty(), "pid {pid} has no threads to pin");
    Ok(pinned)
}
