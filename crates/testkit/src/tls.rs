//! A private certificate authority for TLS tests, made with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and a server certificate it signed for `localhost` and `127.0.0.1`, as PEM files
/// in a fresh directory (removed on drop).
#[derive(Debug)]
pub struct TestCa {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The CA certificate: what a client trusts.
    pub ca_cert: PathBuf,
    /// The server certificate (signed by the CA).
    pub server_cert: PathBuf,
    /// The server's private key (PKCS#8), readable by its owner only.
    pub server_key: PathBuf,
}

impl TestCa {
    /// Makes a new CA named `name` and a server certificate for `localhost` and
    /// `127.0.0.1`.
    pub fn new(name: &str) -> TestCa {
        let dir = std::env::temp_dir().join(crate::unique(&format!("herald-tls-{name}")));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let ca = TestCa { ca_cert: dir.join("ca.pem"), server_cert: dir.join("server.pem"), server_key: dir.join("server.key"), dir };
        let ca_key = ca.dir.join("ca.key");
        let csr = ca.dir.join("server.csr");
        let ext = ca.dir.join("server.ext");
        std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").expect("ext file");
        let subject_ca = format!("/CN=herald test CA {name}");
        openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject_ca, "-keyout", s(&ca_key), "-out", s(&ca.ca_cert), "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", s(&ca.server_key), "-out", s(&csr)]);
        openssl(&["x509", "-req", "-in", s(&csr), "-CA", s(&ca.ca_cert), "-CAkey", s(&ca_key), "-CAcreateserial", "-days", "2", "-extfile", s(&ext), "-out", s(&ca.server_cert)]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&ca.server_key, std::fs::Permissions::from_mode(0o600)).expect("key permissions");
        }
        ca
    }

    /// The CA certificate as PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca_cert).expect("CA certificate")
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap_or_else(|e| panic!("cannot run openssl (needed for TLS tests): {e}"));
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}
