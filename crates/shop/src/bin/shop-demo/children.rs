//! The pipeline's processes: spawned with their output in a log file, each in its own
//! process group (a ctrl-c in the terminal reaches the driver only, which stops them in
//! order), waited for until healthy, frozen and resumed, stopped with SIGTERM.
//! A child still running when its [`Child`] drops (the driver failed) is resumed and
//! killed, so the driver leaves nothing behind unless asked to (`--keep-running`).

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustix::process::{kill_process, Pid, Signal};

/// What makes a child ready, besides `GET /health` answering 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// `/health` answers 200.
    Healthy,
    /// And every engine of a `shop` role holds partitions and restores none: orders
    /// placed from now on are reacted to at once.
    EnginesAssigned,
}

/// One process of the pipeline.
pub struct Child {
    /// Its name in the output (`orders`, `tracker`, ...).
    pub name: &'static str,
    /// Its HTTP address (`/health`, `/metrics`, its own routes).
    pub http: String,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    ready: Ready,
    process: Option<std::process::Child>,
}

/// `n` different free ports on 127.0.0.1, for children to listen on. The OS picks each;
/// each is held while the next is taken (a port just let go can be picked again, and two
/// children given one port would leave one of them unable to start), and all are free
/// again when this returns.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let held = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    Ok(held.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

impl Child {
    /// Starts `program` with `args` as `name`, its output in `logs/<name>.log`; `http` is
    /// the address it serves (already in `args`).
    pub fn spawn(name: &'static str, program: &Path, args: &[String], http: String, ready: Ready, logs: &Path) -> anyhow::Result<Child> {
        let log = logs.join(format!("{name}.log"));
        let out = OpenOptions::new().create(true).append(true).open(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let process = Command::new(program)
            .args(args)
            .env("RUST_LOG", std::env::var("HERALD_DEMO_LOG").unwrap_or_else(|_| "info,rdkafka=warn".into()))
            // Plain text in the log files (tracing-subscriber colours otherwise).
            .env("NO_COLOR", "1")
            .env_remove("SHOP_TOPIC_PREFIX")
            .env_remove("HERALD_STORE_URL")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a ctrl-c reaches the driver, which stops the children
            // in order, instead of every child at once.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Child { name, http, log, ready, process: Some(process) })
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(std::process::Child::id)
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Whether it exited (with its status).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.as_mut().and_then(|p| p.try_wait().ok().flatten())
    }

    /// Waits until it is ready (see [`Ready`]), or fails when it exits or `within` passes.
    pub async fn wait_ready(&mut self, client: &reqwest::Client, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut last;
        loop {
            if let Some(status) = self.exited() {
                anyhow::bail!("{} exited with {status} before it was ready; the end of its log ({}):\n{}", self.name, self.log.display(), self.log_tail(20));
            }
            match self.health(client).await {
                Ok((true, details)) if self.ready == Ready::Healthy || engines_assigned(&details) => return Ok(started.elapsed()),
                Ok((true, _)) => last = "healthy, engines not holding partitions yet".into(),
                Ok((false, details)) => last = format!("unhealthy: {details}"),
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() > within {
                anyhow::bail!("{} not ready within {within:?} ({last}); the end of its log ({}):\n{}", self.name, self.log.display(), self.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /health`: whether it answered 200, and its report.
    pub async fn health(&self, client: &reqwest::Client) -> anyhow::Result<(bool, serde_json::Value)> {
        let response = client.get(format!("{}/health", self.url())).timeout(Duration::from_secs(2)).send().await?;
        let ok = response.status().is_success();
        Ok((ok, response.json().await.unwrap_or(serde_json::Value::Null)))
    }

    /// `SIGSTOP`: the process stops where it is (no orderly anything).
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal(Signal::STOP)
    }

    /// `SIGCONT`.
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal(Signal::CONT)
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.pid().and_then(|p| i32::try_from(p).ok()).and_then(Pid::from_raw).with_context(|| format!("{} is not running", self.name))?;
        kill_process(pid, signal).with_context(|| format!("signalling {}", self.name))
    }

    /// `SIGTERM` (after a `SIGCONT`, in case it is frozen), then waits up to `within`; kills
    /// it after that. Returns how it ended and how long it took.
    pub async fn stop(&mut self, within: Duration) -> Stopped {
        let started = Instant::now();
        if let Some(status) = self.exited() {
            self.process = None;
            return Stopped { status: Some(status), killed: false, took: started.elapsed() };
        }
        let _ = self.thaw();
        let _ = self.signal(Signal::TERM);
        loop {
            if let Some(status) = self.exited() {
                self.process = None;
                return Stopped { status: Some(status), killed: false, took: started.elapsed() };
            }
            if started.elapsed() > within {
                self.kill();
                return Stopped { status: None, killed: true, took: started.elapsed() };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = self.thaw_pid(process.id());
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    fn thaw_pid(&self, pid: u32) -> Option<()> {
        kill_process(Pid::from_raw(i32::try_from(pid).ok()?)?, Signal::CONT).ok()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a child ended.
#[derive(Debug)]
pub struct Stopped {
    /// Its exit status (`None` when it had to be killed).
    pub status: Option<ExitStatus>,
    /// It did not stop within the time given and was killed.
    pub killed: bool,
    /// How long the stop took.
    pub took: Duration,
}

/// Whether every engine in a `shop` role's health report holds partitions and restores
/// none.
fn engines_assigned(details: &serde_json::Value) -> bool {
    let Some(engines) = details["details"].as_array() else { return false };
    !engines.is_empty()
        && engines.iter().all(|e| e["consumer"]["assigned_partitions"].as_u64().is_some_and(|n| n > 0) && e["partitions_restoring"].as_u64().is_none_or(|n| n == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_are_assigned_when_each_holds_partitions_and_restores_none() {
        let report = |a: u64, r: u64| serde_json::json!({"details": [{"consumer": {"assigned_partitions": 6}, "partitions_restoring": 0}, {"consumer": {"assigned_partitions": a}, "partitions_restoring": r}]});
        assert!(engines_assigned(&report(6, 0)));
        assert!(!engines_assigned(&report(0, 0)));
        assert!(!engines_assigned(&report(6, 2)));
        assert!(!engines_assigned(&serde_json::json!({"details": []})));
        assert!(!engines_assigned(&serde_json::json!({"healthy": true})));
    }

    #[test]
    fn the_ports_handed_out_differ_and_are_free() {
        let ports = free_ports(64).expect("ports");
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for port in ports {
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("port {port} free again: {e}"));
        }
    }
}
