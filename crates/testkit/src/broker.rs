//! A private broker for tests that stop, restart or reconfigure it: `scripts/kafka` on free
//! ports with its own run folder, so doing so disturbs no other test. Stopped and removed on
//! drop; with `HERALD_KEEP_BROKER` set, the broker of a failed test stays up for inspection.

use std::path::PathBuf;
use std::process::Command;

use herald_bus::KafkaConfig;

/// A single-node Apache Kafka broker of this test's own (see the module docs).
///
/// ```no_run
/// # async fn run() {
/// let broker = herald_testkit::PrivateBroker::new("outage");
/// broker.run("start").await;
/// let config = broker.config();
/// broker.run("stop").await; // the clients on `config` now see the broker go away
/// broker.run("start").await;
/// # drop(config); }
/// ```
pub struct PrivateBroker {
    /// The plaintext listener's port.
    pub port: u16,
    /// The KRaft controller's port.
    pub controller_port: u16,
    /// The run folder (data, logs, `server.properties`).
    pub home: PathBuf,
    /// Extra `server.properties` lines (`KAFKA_EXTRA_PROPERTIES`), read at each start.
    pub extra_properties: String,
}

impl PrivateBroker {
    /// A broker on free ports, its run folder named after `name` (not started yet).
    pub fn new(name: &str) -> PrivateBroker {
        let home = std::env::temp_dir().join(crate::unique(name));
        let [port, controller_port] = free_ports();
        PrivateBroker { port, controller_port, home, extra_properties: String::new() }
    }

    /// The project's `scripts/kafka`.
    pub fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(Self::script())
            .args(args)
            .env("KAFKA_EXTRA_PROPERTIES", &self.extra_properties)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("HERALD_KAFKA_HOME", &self.home);
        command
    }

    /// `scripts/kafka ACTION` (`start`, `stop`) for this broker; panics with its output on
    /// failure.
    pub async fn run(&self, action: &str) {
        self.script_run(&[action]).await;
    }

    /// `scripts/kafka ARGS...` for this broker, returning what it printed; panics with its
    /// output on failure.
    pub async fn script_run(&self, args: &[&str]) -> String {
        match self.try_script_run(args).await {
            Ok(stdout) => stdout,
            Err(output) => panic!("scripts/kafka {args:?} failed:\n{output}"),
        }
    }

    /// `scripts/kafka ARGS...` for this broker: what it printed, or on failure (a tool that
    /// refused) everything it printed, for the caller to judge.
    pub async fn try_script_run(&self, args: &[&str]) -> Result<String, String> {
        let mut command = self.command(args);
        let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run scripts/kafka");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// Freezes the broker's process (`SIGSTOP`): its sockets stay open and nothing answers,
    /// as in a long garbage-collection pause or a network that drops every packet, until
    /// [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Resumes a frozen broker (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.home.join("kafka.pid")).expect("the broker's pid file (is it started?)");
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.trim()).status().expect("kill runs");
        assert!(status.success(), "kill -{signal} {} failed", pid.trim());
    }

    /// A configuration for its plaintext listener.
    pub fn config(&self) -> KafkaConfig {
        KafkaConfig::new(format!("127.0.0.1:{}", self.port))
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` different ports nothing listens on now: each is held while the next is taken (two
/// calls to [`free_port`] can return the same port, as CI saw: a broker given one port for
/// its plaintext and its controller listener refused to start).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port")).collect();
    std::array::from_fn(|i| held[i].local_addr().expect("free port").port())
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("HERALD_KEEP_BROKER").is_some() {
            eprintln!("HERALD_KEEP_BROKER: the private broker stays up at {} (home {})", self.config().bootstrap(), self.home.display());
            return;
        }
        // A frozen broker would not stop.
        if let Ok(pid) = std::fs::read_to_string(self.home.join("kafka.pid")) {
            let _ = Command::new("kill").arg("-CONT").arg(pid.trim()).status();
        }
        let _ = self.command(&["stop"]).output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
