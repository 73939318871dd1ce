//! The PostgreSQL store over TLS (rustls), against a private PostgreSQL cluster started
//! with `ssl = on` and a certificate made for this test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use herald_projector::store;
use herald_testkit::tls::TestCa;

/// A PostgreSQL cluster of its own (through `scripts/postgres` on a free port and in a
/// fresh folder) serving TLS with `ca`'s server certificate; removed on drop.
struct TlsPostgres {
    home: PathBuf,
    port: u16,
}

impl TlsPostgres {
    fn start(ca: &TestCa) -> TlsPostgres {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let pg = TlsPostgres { home: std::env::temp_dir().join(herald_testkit::unique("herald-pg-tls")), port };
        pg.script(&["start"]);
        let data = pg.home.join("data");
        std::fs::copy(&ca.server_cert, data.join("server.crt")).expect("copy certificate");
        std::fs::copy(&ca.server_key, data.join("server.key")).expect("copy key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).expect("key mode");
            // As root, scripts/postgres runs the server as `postgres`: it must own the key.
            if std::env::var("USER").as_deref() == Ok("root") || Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n")) {
                for file in ["server.crt", "server.key"] {
                    run(Command::new("chown").arg("postgres:postgres").arg(data.join(file)));
                }
            }
        }
        pg.script(&["psql", "-c", "ALTER SYSTEM SET ssl = on"]);
        pg.script(&["psql", "-c", "SELECT pg_reload_conf()"]);
        pg
    }

    fn script(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres");
        run(Command::new("bash").arg(script).args(args).env("HERALD_PG_HOME", &self.home).env("PGPORT", self.port.to_string()))
    }

    fn url(&self, params: &str) -> String {
        format!("postgres://herald@127.0.0.1:{}/herald?connect_timeout=10&{params}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.script(&["clean"]));
    }
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(out.status.success(), "{command:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the store's connection is encrypted, as the server sees it.
fn encrypted(url: &str) -> Result<bool, String> {
    let store = store::open(url).map_err(|e| e.to_string())?;
    let mut conn = store.connect().map_err(|e| e.to_string())?;
    let mut tx = conn.read().map_err(|e| e.to_string())?;
    let rows = tx.query("SELECT (CASE WHEN ssl THEN 1 ELSE 0 END)::bigint FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).map_err(|e| e.to_string())?;
    Ok(rows[0].int(0).map_err(|e| e.to_string())? == 1)
}

#[test]
fn the_postgres_store_speaks_tls_with_verify_full_and_refuses_an_untrusted_server() {
    let ca = TestCa::new("postgres");
    let pg = TlsPostgres::start(&ca);
    let root = ca.ca_cert.to_str().expect("UTF-8 path");
    let verify_full = pg.url(&format!("sslmode=verify-full&sslrootcert={root}"));
    // The reload that turns TLS on is asynchronous: wait for it, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        match encrypted(&verify_full) {
            Err(e) if Instant::now() < deadline && e.contains("TLS") => std::thread::sleep(Duration::from_millis(100)),
            other => break other,
        }
    };
    assert_eq!(first, Ok(true), "verify-full against the test CA");
    assert_eq!(encrypted(&pg.url(&format!("sslmode=verify-ca&sslrootcert={root}"))), Ok(true), "verify-ca");
    assert_eq!(encrypted(&pg.url("sslmode=require")), Ok(true), "require: encrypted, not verified");
    assert_eq!(encrypted(&pg.url("sslmode=disable")), Ok(false), "disable: plain");

    // A server whose certificate another CA signed is refused, and says why.
    let other = TestCa::new("postgres-other");
    let untrusted = pg.url(&format!("sslmode=verify-full&sslrootcert={}", other.ca_cert.to_str().expect("UTF-8 path")));
    let refused = encrypted(&untrusted).expect_err("an untrusted certificate");
    assert!(refused.contains("certificate") || refused.contains("UnknownIssuer"), "{refused}");
    // verify-full checks the name too (the certificate is for localhost and 127.0.0.1);
    // verify-ca does not. `hostaddr` connects to the cluster under another name.
    let other_name = |mode: &str| format!("postgres://herald@db.invalid:{}/herald?hostaddr=127.0.0.1&connect_timeout=5&sslmode={mode}&sslrootcert={root}", pg.port);
    let refused = encrypted(&other_name("verify-full")).expect_err("a certificate for another name");
    assert!(refused.contains("certificate"), "{refused}");
    assert_eq!(encrypted(&other_name("verify-ca")), Ok(true), "verify-ca does not check the name");
}
