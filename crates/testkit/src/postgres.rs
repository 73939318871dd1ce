//! A private PostgreSQL server for tests that kill or restart it: Debian's binaries
//! (`/usr/lib/postgresql/*/bin`) on a free port with a data folder in the temp dir, so doing
//! so disturbs no other test and not the shared server of `scripts/postgres`. As root the
//! server runs as the `postgres` user (PostgreSQL refuses root), as `scripts/postgres` does.
//! Stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A PostgreSQL server of this test's own (see the module docs).
///
/// ```no_run
/// # async fn run() {
/// let pg = herald_testkit::PrivatePostgres::new("outbox");
/// pg.start().await;                 // initdb on first start; superuser herald, trust
/// let url = pg.url();               // postgres://herald@127.0.0.1:PORT/postgres
/// pg.kill().await;                  // kill -9 of the postmaster: a crash
/// pg.start().await;                 // crash recovery, same data
/// # drop(url); }
/// ```
pub struct PrivatePostgres {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The folder: `data/`, `postgres.log`, the socket.
    pub home: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// A server on a free port, its folder named after `name` (not started yet). Panics when
    /// no PostgreSQL server binaries are installed (`scripts/postgres start` installs them).
    pub fn new(name: &str) -> PrivatePostgres {
        let bin = find_bin().expect("no /usr/lib/postgresql/*/bin/postgres: run `bash scripts/postgres start` once to install PostgreSQL");
        let as_postgres = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
        let home = std::env::temp_dir().join(crate::unique(name));
        PrivatePostgres { port: crate::free_port(), home, bin, as_postgres }
    }

    /// Its URL, database `postgres`, user `herald`.
    pub fn url(&self) -> String {
        format!("postgres://herald@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.home.join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.current_dir("/");
        command
    }

    /// Starts the server (with `initdb` the first time) and waits until it accepts
    /// connections; after a crash it retries while the old server's processes let go of
    /// its shared memory. Panics with the log after 60 s.
    pub async fn start(&self) {
        if !self.data().join("PG_VERSION").exists() {
            std::fs::create_dir_all(&self.home).expect("create the server's folder");
            if self.as_postgres {
                run(Command::new("chown").args(["postgres:postgres"]).arg(&self.home)).await;
            }
            run(self.command("initdb").arg("-D").arg(self.data()).args(["-U", "herald", "-A", "trust", "--encoding=UTF8", "--locale=C", "--no-sync"])).await;
        }
        let options = format!("-c listen_addresses=127.0.0.1 -p {} -k '{}' -c max_connections=100 -c fsync=off", self.port, self.home.display());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut start = self.command("pg_ctl");
            start.arg("start").arg("-D").arg(self.data()).arg("-l").arg(self.home.join("postgres.log")).args(["-w", "-t", "20", "-o", &options]);
            let output = output(start).await;
            if output.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start:\n{}\n{}\nlog:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(self.home.join("postgres.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }

    /// `kill -9` of the postmaster (a crash: no shutdown checkpoint, clients cut off), then
    /// waits until it is gone. Its backends notice and exit by themselves.
    pub async fn kill(&self) {
        let Some(pid) = self.pid() else { panic!("PostgreSQL is not running (no postmaster.pid)") };
        run(Command::new("kill").args(["-9", &pid.to_string()])).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "the postmaster {pid} survived kill -9");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A fast, orderly stop.
    pub async fn stop(&self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("stop").arg("-D").arg(self.data()).args(["-m", "fast", "-w"]);
        run(&mut stop).await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.pid().is_some() {
            let _ = self.command("pg_ctl").arg("stop").arg("-D").arg(self.data()).args(["-m", "immediate", "-w"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn find_bin() -> Option<PathBuf> {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").exists())
        .collect();
    // The newest major version (directory names are numbers).
    bins.sort_by_key(|b| b.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0));
    bins.pop()
}

async fn output(command: Command) -> Output {
    let mut command = command;
    tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run a PostgreSQL tool")
}

async fn run(command: &mut Command) {
    let mut owned = Command::new(command.get_program());
    owned.args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        owned.current_dir(dir);
    }
    let shown = format!("{owned:?}");
    let result = output(owned).await;
    assert!(
        result.status.success(),
        "{shown} failed:\n{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}
