//! What the machine (or the container's cgroup) gives this process: memory and CPUs. The
//! one place that probes the host, so the defaults that depend on it are found in one file.

/// The memory this process may use: the cgroup limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`) when one is set, else the machine's physical memory.
pub fn memory_limit() -> Option<u64> {
    // cgroup v1 reports "no limit" as a huge page-rounded number.
    const UNLIMITED: u64 = 1 << 60;
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&b| b < UNLIMITED);
    cgroup.or_else(physical_memory)
}

fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPUs this process may use: honours cgroup CPU quotas (a pod's CPU limit), unlike the
/// host's core count.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limit_is_found() {
        // Every Linux machine has either a cgroup limit or /proc/meminfo.
        assert!(memory_limit().is_some_and(|b| b > 1 << 20));
    }
}
