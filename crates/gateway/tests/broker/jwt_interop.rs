//! Tokens made by another implementation: PyJWT (pinned in the interop venv,
//! `scripts/python-env`, `HERALD_PYTHON`) signs HS256 with the secret file and RS256 with
//! the private key of the JWKS's `test-1`; the gateway accepts them, and refuses with 401
//! PyJWT's expired, wrong-audience, forged (signed with another key) and `alg: none`
//! tokens. Nothing refused is published.

use std::path::PathBuf;

use crate::support::{self, order, Running};

const ISSUER: &str = "https://id.test";
const AUDIENCE: &str = "herald-gateway";

/// The interop venv's python, or `None` (skipped) outside CI without `HERALD_PYTHON`.
fn python() -> Option<PathBuf> {
    match std::env::var_os("HERALD_PYTHON").filter(|p| !p.is_empty()) {
        Some(python) => Some(PathBuf::from(python)),
        None => {
            assert!(std::env::var_os("CI").is_none(), "HERALD_PYTHON is not set (scripts/test sets it from scripts/python-env)");
            eprintln!("skipping: HERALD_PYTHON is not set (run `scripts/python-env`, then HERALD_PYTHON=$(scripts/python-env python))");
            None
        }
    }
}

/// PyJWT makes one token per line, in this order.
const SCRIPT: &str = r#"
import sys, time, jwt
from cryptography.hazmat.primitives.asymmetric import rsa
secret = open(sys.argv[1], "rb").read().rstrip(b"\r\n")  # as the gateway reads it
key = open(sys.argv[2], "rb").read()
issuer, audience = sys.argv[3], sys.argv[4]
now = int(time.time())
def claims(**over):
    c = {"sub": "py-client", "scope": "orders:write", "iss": issuer, "aud": audience, "exp": now + 300, "nbf": now - 10, "iat": now}
    c.update(over)
    return c
other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
tokens = [
    jwt.encode(claims(), secret, algorithm="HS256"),
    jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "test-1"}),
    jwt.encode(claims(exp=now - 120), secret, algorithm="HS256"),
    jwt.encode(claims(aud="someone-else"), key, algorithm="RS256", headers={"kid": "test-1"}),
    jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "test-1"}),
    jwt.encode(claims(), b"not-the-secret-not-the-secret-not-the-secret", algorithm="HS256"),
    jwt.encode(claims(), None, algorithm="none"),
]
print("\n".join(tokens))
"#;

#[tokio::test]
async fn pyjwt_tokens_are_accepted_when_valid_and_refused_with_401_otherwise() {
    let Some(python) = python() else { return };
    let output = tokio::process::Command::new(&python)
        .args(["-c", SCRIPT, &support::fixture("hs256-secret.txt"), &support::fixture("rs256-test-key.pem"), ISSUER, AUDIENCE])
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} runs: {e}", python.display()));
    assert!(output.status.success(), "PyJWT: {}", String::from_utf8_lossy(&output.stderr));
    let tokens: Vec<String> = String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(tokens.len(), 7);
    // PyJWT's own `alg: none` token: header {"alg":"none"} and an empty signature.
    assert!(tokens[6].ends_with('.'), "{}", tokens[6]);

    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::unique("gw.jwt.py");
    herald_bus::admin::create_topics(&kafka, &[herald_bus::admin::TopicSpec::new(&topic)]).await.unwrap();
    let toml = format!(
        "{}\n[auth.jwt]\nissuer = {ISSUER:?}\naudience = {AUDIENCE:?}\nhs256_secret_file = {:?}\njwks_file = {:?}\nleeway_s = 0\n",
        support::orders_route(&topic),
        support::fixture("hs256-secret.txt"),
        support::fixture("jwks.json")
    );
    let gateway = Running::start(&kafka, &toml).await;
    let body = order("ignored").to_string();
    let cases = ["HS256", "RS256 with the JWKS key", "expired", "wrong audience", "forged RS256", "forged HS256", "alg none"];
    for (token, case) in tokens.iter().zip(cases) {
        let (status, problem, headers) = gateway.post_with("/orders", &body, &[("authorization", &format!("Bearer {token}"))]).await;
        let expected = if case.starts_with("HS256") || case.starts_with("RS256") { 202 } else { 401 };
        assert_eq!(status, expected, "{case}: {problem}");
        if expected == 401 {
            assert!(headers.get("www-authenticate").is_some(), "{case}");
            assert!(!problem.to_string().contains(token.as_str()), "{case}: the token is not echoed");
        }
    }
    // Only the two valid tokens published.
    let events = herald_testkit::read_all(&kafka, &topic, usize::MAX, std::time::Duration::from_secs(5)).await;
    assert_eq!(events.len(), 2);
    gateway.stop().await;
}
