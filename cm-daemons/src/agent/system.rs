//! A simple system sampler for the agent's `SampleSystem`: CPU from two reads of /proc/stat,
//! memory from /proc/meminfo.

use std::time::Duration;

/// CPU busy time and total time, in clock ticks, from the first line of /proc/stat.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait are not busy.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Memory in use, percent: (MemTotal − MemAvailable) / MemTotal.
pub(super) fn mem_pct(meminfo: &str) -> Option<u8> {
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let total = field("MemTotal:")?;
    let avail = field("MemAvailable:")?;
    if total == 0 {
        return None;
    }
    Some(pct(total.saturating_sub(avail), total))
}

fn pct(part: u64, whole: u64) -> u8 {
    if whole == 0 {
        return 0;
    }
    u8::try_from((part.min(whole) * 100) / whole).unwrap_or(100)
}

/// CPU usage over a short window (blocking: sleeps `window`), percent.
pub(super) fn cpu_pct(window: Duration) -> Option<u8> {
    let a = cpu_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
    std::thread::sleep(window);
    let b = cpu_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(pct(b.0.saturating_sub(a.0), b.1.saturating_sub(a.1)))
}

/// `(cpu, mem, io)` percent. Blocking. Disk I/O utilisation is reported as 0: measuring it
/// needs the device of every data directory and /proc/diskstats deltas, which this simple
/// sampler does not do (the io alarm therefore never fires).
pub(super) fn sample() -> (u8, u8, u8) {
    let cpu = cpu_pct(Duration::from_millis(200)).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_pct(&m))
        .unwrap_or(0);
    (cpu, mem, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_in_use_is_total_minus_available() {
        let m = "MemTotal:       1000 kB\nMemFree: 100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(mem_pct(m), Some(75));
        assert_eq!(mem_pct("MemTotal: 0 kB\nMemAvailable: 0 kB\n"), None);
    }

    #[test]
    fn cpu_busy_excludes_idle_and_iowait() {
        let (busy, total) = cpu_ticks("cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!((busy, total), (20, 100));
    }
}
