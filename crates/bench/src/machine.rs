//! What the numbers were measured on.

use std::fmt;

/// The machine and client versions of a benchmark run.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model, from `/proc/cpuinfo`.
    pub cpu: String,
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// Total memory in GiB, from `/proc/meminfo`.
    pub memory_gib: f64,
    /// Kernel release, from `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// librdkafka's version string.
    pub librdkafka: String,
}

impl Machine {
    /// Reads the current machine (fields that cannot be read say `unknown`).
    pub fn current() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map(usize::from).unwrap_or(0),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "unknown".into()),
            librdkafka: rdkafka::util::get_rdkafka_version().1,
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} CPUs ({}), {:.1} GiB memory, Linux {}, librdkafka {}",
            self.cpus, self.cpu, self.memory_gib, self.kernel, self.librdkafka
        )
    }
}

/// CPU time spent so far by this process and by the whole machine (every process,
/// the broker included), read from `/proc`. The difference of two readings over a run,
/// divided by its events, shows what each event cost in CPU, which on a shared machine
/// says more than the rate alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// User + system time of this process, in seconds.
    pub process: f64,
    /// Busy time of all CPUs (everything but idle and iowait), in seconds.
    pub machine: f64,
    /// Context switches of this process's live threads (voluntary and not): many more
    /// per event means threads keep waking each other.
    pub switches: f64,
}

impl CpuTime {
    /// Reads the current totals (zero where `/proc` cannot be read).
    pub fn now() -> CpuTime {
        // Both files count in clock ticks; Linux reports them as USER_HZ = 100 per second.
        const TICK: f64 = 0.01;
        let process = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| {
                // Fields after the command name (which may hold spaces) start at `state`;
                // utime and stime are fields 14 and 15 of the whole line.
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
                Some((ticks(11)? + ticks(12)?) * TICK)
            })
            .unwrap_or(0.0);
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
                let ticks: Vec<f64> = cpu.split_whitespace().filter_map(|f| f.parse().ok()).collect();
                let idle = ticks.get(3)? + ticks.get(4)?;
                // guest time is already counted in user time.
                let busy: f64 = ticks.iter().take(8).sum::<f64>() - idle;
                Some(busy * TICK)
            })
            .unwrap_or(0.0);
        let switches = std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
                    .flat_map(|status| {
                        status
                            .lines()
                            .filter(|l| l.contains("ctxt_switches:"))
                            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                            .collect::<Vec<_>>()
                    })
                    .sum()
            })
            .unwrap_or(0.0);
        CpuTime { process, machine, switches }
    }

    /// CPU time this process's live threads have spent so far, in seconds, to the
    /// nanosecond (the sum of `/proc/self/task/*/schedstat`; threads that already exited
    /// are not counted, so take both readings of a window while its threads run). The
    /// benchmark reads it at the first and the last event of a run: CPU per event in the
    /// steady state, without client start, group join and shutdown.
    pub fn steady() -> f64 {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                    .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                    .sum::<f64>()
                    / 1e9
            })
            .unwrap_or(f64::NAN)
    }

    /// CPU time between `earlier` and this reading.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime { process: self.process - earlier.process, machine: self.machine - earlier.machine, switches: self.switches - earlier.switches }
    }
}
