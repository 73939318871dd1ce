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
