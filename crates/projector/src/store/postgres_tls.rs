//! TLS for the PostgreSQL store: libpq's `sslmode` and `sslrootcert` URL parameters over
//! rustls (ring), so no second OpenSSL is linked beside rdkafka's.
//!
//! | `sslmode`     | what happens                                                        |
//! |---------------|---------------------------------------------------------------------|
//! | `disable`     | plain TCP                                                           |
//! | `prefer`      | plain TCP (the default; as before TLS support)                      |
//! | `require`     | TLS; the certificate is checked against `sslrootcert` if given (as libpq does), else not |
//! | `verify-ca`   | TLS; the certificate chains to a trusted CA                         |
//! | `verify-full` | TLS; it chains to a trusted CA and names the host of the URL        |
//!
//! Trusted CAs: the PEM file `sslrootcert=PATH`, else the system's roots.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS parameters of a store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of `url` (tokio-postgres knows neither
/// `verify-ca`/`verify-full` nor `sslrootcert`) and gives the URL tokio-postgres should
/// parse: `sslmode=require` for every mode that uses TLS.
pub(crate) fn split(url: &str) -> Result<(String, TlsSettings), String> {
    let mut settings = TlsSettings { mode: SslMode::Prefer, root_cert: None };
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), settings)) };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", mode)) => {
                settings.mode = match mode {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(format!("unknown sslmode {other:?} (expected disable, prefer, require, verify-ca or verify-full)")),
                }
            }
            Some(("sslrootcert", path)) => settings.root_cert = Some(PathBuf::from(path.replace("%2F", "/").replace("%2f", "/"))),
            _ => kept.push(pair),
        }
    }
    kept.push(match settings.mode {
        SslMode::Disable => "sslmode=disable",
        SslMode::Prefer => "sslmode=prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "sslmode=require",
    });
    Ok((format!("{base}?{}", kept.join("&")), settings))
}

/// The rustls connector for `settings`, or `None` for plain TCP.
pub(crate) fn connector(settings: &TlsSettings) -> Result<Option<MakeRustlsConnect>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(|e| e.to_string())?;
    let verify_name = match (settings.mode, &settings.root_cert) {
        (SslMode::Disable | SslMode::Prefer, _) => return Ok(None),
        (SslMode::Require, None) => {
            let config = builder.dangerous().with_custom_certificate_verifier(Arc::new(EncryptOnly(provider))).with_no_client_auth();
            return Ok(Some(MakeRustlsConnect::new(config)));
        }
        (SslMode::Require | SslMode::VerifyCa, _) => false,
        (SslMode::VerifyFull, _) => true,
    };
    let roots = Arc::new(roots(settings.root_cert.as_deref())?);
    let config = if verify_name {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider).build().map_err(|e| e.to_string())?;
        builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(inner))).with_no_client_auth()
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// The CAs in `path`, or the system's.
fn roots(path: Option<&std::path::Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match path {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("invalid certificate in sslrootcert {}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("unusable CA in sslrootcert {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("no certificate in sslrootcert {}", path.display()));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    Ok(roots)
}

/// `verify-ca`: the chain must lead to a trusted CA; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], server_name: &ServerName<'_>, ocsp: &[u8], now: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without `sslrootcert` (libpq's meaning): encrypted, the certificate not
/// checked. The handshake signatures still are.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_parameters_are_taken_out_of_the_url() {
        let (url, tls) = split("postgres://u@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=5").expect("valid");
        assert_eq!(url, "postgres://u@h/db?connect_timeout=5&sslmode=require");
        assert_eq!(tls, TlsSettings { mode: SslMode::VerifyFull, root_cert: Some("/etc/ca.pem".into()) });
        let (url, tls) = split("postgres://u@h/db").expect("valid");
        assert_eq!((url.as_str(), tls.mode), ("postgres://u@h/db", SslMode::Prefer));
        assert!(split("postgres://u@h/db?sslmode=sometimes").is_err());
        assert!(connector(&TlsSettings { mode: SslMode::VerifyFull, root_cert: Some("/nonexistent/ca.pem".into()) }).is_err());
    }
}
