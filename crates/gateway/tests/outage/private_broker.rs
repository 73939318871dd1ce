//! A private broker (through `scripts/kafka` on free ports, its own run folder) that the
//! test may stop and start; stopped and removed on drop. The same arrangement as the shop's
//! process tests (crates/shop/tests/processes/broker.rs).

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
            .env("HERALD_KAFKA_HOME", &self.home);
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
        let _ = self.command("stop").output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
