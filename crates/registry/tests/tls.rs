//! The registry client over https (rustls): it trusts a private CA it is given, and
//! refuses a registry whose certificate it cannot verify.

mod support;

use herald_registry::{Registry, RegistryConfig};
use herald_testkit::tls::TestCa;
use support::fake::FakeRegistry;
use support::quick_backoff;

const SCHEMA: &str = r#"{"type":"record","name":"Ping","namespace":"herald.test","fields":[{"name":"id","type":"string"}]}"#;

#[tokio::test]
async fn an_https_registry_signed_by_a_trusted_ca_is_used() {
    let ca = TestCa::new("registry");
    let fake = FakeRegistry::start_tls(&ca).await;
    assert!(fake.url.starts_with("https://"));
    let client = Registry::new(RegistryConfig::new(&fake.url).backoff(quick_backoff()).ca_file(&ca.ca_cert).expect("CA file")).expect("client");
    let id = client.register("pings-value", SCHEMA).await.expect("registered over https");
    assert_eq!(client.lookup("pings-value", SCHEMA).await.expect("looked up"), id);
    assert!(fake.requests() >= 2);
}

#[tokio::test]
async fn an_https_registry_with_an_untrusted_certificate_is_refused() {
    let ca = TestCa::new("registry-untrusted");
    let other = TestCa::new("registry-other");
    let fake = FakeRegistry::start_tls(&ca).await;
    // Trusting another CA (and the system's roots) is not trusting this one.
    let client = Registry::new(RegistryConfig::new(&fake.url).backoff(quick_backoff()).ca_pem(other.ca_pem())).expect("client");
    let err = client.register("pings-value", SCHEMA).await.expect_err("an unverifiable certificate");
    assert_eq!(fake.requests(), 0, "no request reached the registry");
    let text = format!("{err} {err:?}");
    assert!(text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"), "{text}");
}

#[test]
fn a_ca_that_is_not_pem_is_refused() {
    let err = Registry::new(RegistryConfig::new("https://localhost:1").ca_pem(b"not a certificate".to_vec())).expect_err("not PEM");
    assert!(err.to_string().contains("CA certificate"), "{err}");
}
