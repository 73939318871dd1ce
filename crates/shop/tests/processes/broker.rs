//! A private broker (through `scripts/kafka` on free ports, its own run folder), for the
//! test that restarts it. Stopped and removed on drop.
//!
//! It runs with `controlled.shutdown.enable=false`. A controlled shutdown of a broker that
//! holds the only replica of a partition leaves the partition without a leader for a
//! moment, and a transaction whose markers the coordinator sends in that moment hangs for
//! good: the coordinator takes a leaderless partition for a deleted one and skips its
//! marker ("Couldn't find leader endpoint for partitions ... likely deleted already and
//! hence can be skipped" in the broker log), then records the transaction as complete, so
//! neither `transaction.timeout.ms` nor any client ever ends it (`kafka-transactions.sh
//! describe-producers` shows it open, `describe` shows it complete; only
//! `kafka-transactions.sh abort` does). Seen in about half of this test's runs on this
//! single-node broker: changelog, output and `__consumer_offsets` partitions held by a
//! transaction forever. In a cluster where partitions have other replicas, leadership
//! moves to one of them instead; a single node shut down without the controlled step
//! keeps its leaders to the end, and its coordinator completes an unfinished transaction's
//! markers after the restart, as after a crash. What this test is about is the clients
//! living through a broker outage; the engine reports a hanging transaction it runs into
//! (see herald-choreography's `engine::restore`).

use std::path::PathBuf;
use std::process::Command;

use herald_bus::KafkaConfig;

pub struct Broker {
    port: u16,
    controller_port: u16,
    home: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

impl Broker {
    pub fn new(name: &str) -> Broker {
        Broker { port: free_port(), controller_port: free_port(), home: std::env::temp_dir().join(herald_testkit::unique(name)) }
    }

    fn command(&self, action: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka"))
            .arg(action)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("HERALD_KAFKA_HOME", &self.home)
            .env("KAFKA_EXTRA_PROPERTIES", "controlled.shutdown.enable=false");
        command
    }

    /// `scripts/kafka ACTION` (start, stop); panics with its output on failure.
    pub async fn run(&self, action: &str) {
        let mut command = self.command(action);
        let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("scripts/kafka runs");
        assert!(output.status.success(), "scripts/kafka {action} failed:\n{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }

    pub fn config(&self) -> KafkaConfig {
        KafkaConfig::new(format!("127.0.0.1:{}", self.port))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("HERALD_KEEP_BROKER").is_some() {
            eprintln!("HERALD_KEEP_BROKER: the private broker stays up at {} (home {})", self.config().bootstrap(), self.home.display());
            return;
        }
        let _ = self.command("stop").output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
