//! What `/proc` says about a proxy: its process tree (NGINX's and HAProxy's workers are child
//! processes, the sidecar's are threads), the tree's resident memory and its CPU time.

use std::collections::HashSet;

/// `pid` and all its descendants, at any depth.
fn family(pid: u32) -> anyhow::Result<HashSet<u32>> {
    let mut family: HashSet<u32> = HashSet::from([pid]);
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(child) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if let Some(ppid) = stat_field(&stat, 1) {
            parents.push((child, ppid as u32));
        }
    }
    loop {
        let before = family.len();
        for &(child, ppid) in &parents {
            if family.contains(&ppid) {
                family.insert(child);
            }
        }
        if family.len() == before {
            return Ok(family);
        }
    }
}

/// Field `n` (0 = state) after the `(comm)` of a `/proc/PID/stat` line.
fn stat_field(stat: &str, n: usize) -> Option<u64> {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(n))
        .and_then(|v| v.parse().ok())
}

/// Resident memory of `pid` and all its descendants, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for p in family(pid)? {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
        {
            total += kib;
        }
    }
    Ok(total)
}

/// CPU time used so far by a process tree, two ways.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// Nanoseconds on a CPU (user + system), summed over every live thread of the tree
    /// (`/proc/PID/task/TID/schedstat`, first field: the scheduler's exact runtime).
    pub ns: u64,
    /// utime + stime clock ticks of each process (`/proc/PID/stat` fields 14 and 15: whole
    /// thread groups, dead threads included, but sampled at the tick).
    pub ticks: u64,
}

impl CpuTime {
    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            ns: self.ns.saturating_sub(earlier.ns),
            ticks: self.ticks.saturating_sub(earlier.ticks),
        }
    }
}

/// The CPU time of `pid` and all its descendants, threads included.
pub fn cpu_time(pid: u32) -> anyhow::Result<CpuTime> {
    let mut cpu = CpuTime::default();
    for p in family(pid)? {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // Fields 14 and 15 of the line are 12 and 13 after the comm (0 = state).
            cpu.ticks += stat_field(&stat, 11).unwrap_or(0) + stat_field(&stat, 12).unwrap_or(0);
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            cpu.ns += schedstat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_burns_what_it_burns() {
        let pid = std::process::id();
        let before = cpu_time(pid).unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let used = cpu_time(pid).unwrap().since(before);
        // 200 ms of wall clock spinning on one thread: a good part of it on a CPU even on a
        // busy host, and not more than the whole process could have used.
        assert!(used.ns >= 20_000_000 && used.ns < 2_000_000_000, "{used:?}");
        assert!(used.ticks >= 1, "{used:?}");
    }
}
