//! CPU time of another process, from `/proc/<pid>/stat`.

/// User + system seconds of process `pid` so far (its threads included); 0 when it cannot
/// be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    // utime and stime are fields 14 and 15, in USER_HZ = 100 ticks per second; fields
    // after the command name (which may hold spaces) start at field 3.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Busy seconds of all CPUs of the machine so far (everything but idle and iowait).
pub fn machine_seconds() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let values: Vec<f64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
            let total: f64 = values.iter().take(8).sum();
            Some((total - values.get(3)? - values.get(4)?) / 100.0)
        })
        .unwrap_or(0.0)
}
