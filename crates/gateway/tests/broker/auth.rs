//! 401 without valid credentials (API keys, HS256 and RS256 tokens with exp/nbf/aud/iss),
//! 403 without the route's scope; neither publishes, nor names the credential.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::{self, order, Running};

const ISSUER: &str = "https://id.test";
const AUDIENCE: &str = "herald-gateway";

fn config(topic: &str) -> String {
    format!(
        r#"
[[route]]
name = "place-order"
method = "POST"
path = "/orders"
event = "shop.orders.OrderPlaced"
topic = "{topic}"
key = {{ body = "order_id" }}
scopes = ["orders:write"]
fill = {{ order_id = "uuid7", customer_id = "principal" }}

[[route]]
name = "admin-order"
method = "POST"
path = "/admin/orders"
event = "shop.orders.OrderPlaced"
topic = "{topic}"
key = {{ body = "order_id" }}
scopes = ["orders:write", "orders:admin"]
fill = {{ order_id = "uuid7" }}

[[auth.api_key]]
id = "checkout"
sha256 = "{hash}"
scopes = ["orders:write"]

[auth.jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
hs256_secret_file = "{hs}"
jwks_file = "{jwks}"
leeway_s = 0
"#,
        hash = herald_gateway::auth::hash_key("key-123"),
        hs = support::fixture("hs256-secret.txt"),
        jwks = support::fixture("jwks.json"),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(sub: &str, scope: &str) -> serde_json::Value {
    json!({"sub": sub, "scope": scope, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300, "nbf": now() - 10})
}

fn hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn hs256_good(claims: &serde_json::Value) -> String {
    let secret = std::fs::read_to_string(support::fixture("hs256-secret.txt")).unwrap();
    hs256(claims, secret.trim_end().as_bytes())
}

fn rs256(claims: &serde_json::Value, kid: &str) -> String {
    let pem = std::fs::read(support::fixture("rs256-test-key.pem")).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

#[tokio::test]
async fn credentials_decide_401_403_202_and_only_202s_publish() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.auth", 3).await;
    let gateway = Running::start(&kafka, &config(&topic)).await;
    let body = {
        let mut b = order("spoofed");
        b["customer_id"] = "spoofed".into();
        b.to_string()
    };
    let bearer = |t: &str| format!("Bearer {t}");

    let mut expired = claims("alice", "orders:write");
    expired["exp"] = (now() - 60).into();
    let mut not_yet = claims("alice", "orders:write");
    not_yet["nbf"] = (now() + 600).into();
    let mut other_audience = claims("alice", "orders:write");
    other_audience["aud"] = "someone-else".into();
    let mut other_issuer = claims("alice", "orders:write");
    other_issuer["iss"] = "https://evil.test".into();
    let forged = hs256(&claims("alice", "orders:write"), b"not-the-secret-but-long-enough-to-sign-with");
    let tampered = {
        let good = hs256_good(&claims("alice", "orders:read"));
        let parts: Vec<&str> = good.split('.').collect();
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims("alice", "orders:write orders:admin").to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let alg_none = {
        use base64::Engine as _;
        let enc = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", enc(json!({"alg": "none", "typ": "JWT"})), enc(claims("alice", "orders:write")))
    };
    let unauthenticated: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no credentials", vec![]),
        ("unknown api key", vec![("x-api-key", "key-999".to_owned())]),
        ("expired", vec![("authorization", bearer(&hs256_good(&expired)))]),
        ("not yet valid", vec![("authorization", bearer(&hs256_good(&not_yet)))]),
        ("other audience", vec![("authorization", bearer(&hs256_good(&other_audience)))]),
        ("other issuer", vec![("authorization", bearer(&hs256_good(&other_issuer)))]),
        ("forged signature", vec![("authorization", bearer(&forged))]),
        ("tampered claims", vec![("authorization", bearer(&tampered))]),
        ("alg none", vec![("authorization", bearer(&alg_none))]),
        ("rs256 unknown kid", vec![("authorization", bearer(&rs256(&claims("alice", "orders:write"), "test-2")))]),
        ("not a jwt", vec![("authorization", bearer("abc.def"))]),
        ("basic auth", vec![("authorization", "Basic YWxpY2U6cHc=".to_owned())]),
    ];
    for (case, headers) in &unauthenticated {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, problem, response_headers) = gateway.post_with("/orders", &body, &headers).await;
        assert_eq!(status, 401, "{case}: {problem}");
        assert!(response_headers.get("www-authenticate").is_some(), "{case}: a 401 names the scheme");
        assert_eq!(problem["type"], "urn:herald:gateway:unauthenticated", "{case}");
        let text = problem.to_string();
        for (_, credential) in &headers {
            let secret_part = credential.trim_start_matches("Bearer ");
            assert!(!text.contains(secret_part), "{case}: the problem echoes the credential: {text}");
        }
    }

    let forbidden = [
        ("/orders", vec![("authorization", bearer(&hs256_good(&claims("alice", "orders:read"))))]),
        ("/admin/orders", vec![("x-api-key", "key-123".to_owned())]),
        ("/admin/orders", vec![("authorization", bearer(&hs256_good(&claims("alice", "orders:write"))))]),
    ];
    for (path, headers) in &forbidden {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, problem, _) = gateway.post_with(path, &body, &headers).await;
        assert_eq!(status, 403, "{path}: {problem}");
    }
    assert_eq!(herald_testkit::record_count(&kafka, &topic).await, 0, "no refused request became an event");

    let accepted = [
        ("checkout", "/orders", ("x-api-key", "key-123".to_owned())),
        ("alice", "/orders", ("authorization", bearer(&hs256_good(&claims("alice", "orders:write"))))),
        ("bob", "/orders", ("authorization", bearer(&rs256(&claims("bob", "orders:write"), "test-1")))),
        ("carol", "/admin/orders", ("authorization", bearer(&rs256(&json!({"sub": "carol", "scp": ["orders:write", "orders:admin"], "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300}), "test-1")))),
    ];
    let mut principals = Vec::new();
    for (principal, path, (name, value)) in &accepted {
        let (status, answer, _) = gateway.post_with(path, &body, &[(*name, value.as_str())]).await;
        assert_eq!(status, 202, "{principal}: {answer}");
        principals.push(*principal);
    }
    let events = support::events(&kafka, &topic, accepted.len()).await;
    let mut customers: Vec<String> = events.iter().map(|e| e.body["customer_id"].as_str().unwrap().to_owned()).collect();
    customers.sort();
    // The place-order route fills customer_id with the principal; the admin route keeps the body's.
    assert_eq!(customers, vec!["alice", "bob", "checkout", "spoofed"]);
    assert_eq!(herald_testkit::record_count(&kafka, &topic).await, accepted.len() as i64);
    gateway.stop().await;
}

/// The binary, logging at `RUST_LOG` `level` into `log`, serving `toml`; its URL.
async fn spawn_logging(kafka: &herald_bus::KafkaConfig, toml: &str, level: &str, log: &std::path::Path) -> (tokio::process::Child, String) {
    let dir = log.parent().unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(&config, support::config_text(toml)).unwrap();
    let out = std::fs::File::create(log).unwrap();
    crate::binary::spawn_configured(kafka, &config, |command| {
        command.arg("--no-register").env("RUST_LOG", level).env("NO_COLOR", "1").stdout(out.try_clone().unwrap()).stderr(out);
    })
    .await
}

#[tokio::test]
async fn no_credential_reaches_a_log_line_even_at_trace_level() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.auth-logs", 1).await;
    let dir = std::env::temp_dir().join(herald_testkit::unique("gw-logs"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("gateway.log");
    // Every crate at trace: herald's, and hyper's, axum's, tower's, rdkafka's.
    let (mut child, url) = spawn_logging(&kafka, &config(&topic), "trace", &log).await;

    let mut expired = claims("alice", "orders:write");
    expired["exp"] = (now() - 60).into();
    let forged = hs256(&claims("alice", "orders:write"), b"not-the-secret-but-long-enough-to-sign-with");
    let good_hs = hs256_good(&claims("alice", "orders:write"));
    let good_rs = rs256(&claims("bob", "orders:write"), "test-1");
    let read_only = hs256_good(&claims("carol", "orders:read"));
    let cases: Vec<(&str, String, u16)> = vec![
        ("x-api-key", "key-123".to_owned(), 202),
        ("x-api-key", "key-wrong-7c1e".to_owned(), 401),
        ("authorization", format!("Bearer {good_hs}"), 202),
        ("authorization", format!("Bearer {good_rs}"), 202),
        ("authorization", format!("Bearer {}", hs256_good(&expired)), 401),
        ("authorization", format!("Bearer {forged}"), 401),
        ("authorization", format!("Bearer {read_only}"), 403),
        ("authorization", "Basic YWxpY2U6c2VjcmV0LXB3".to_owned(), 401),
    ];
    let http = reqwest::Client::new();
    for (header, value, expected) in &cases {
        let response = http.post(format!("{url}/orders")).header(*header, value).json(&order("c-log")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), *expected, "{header}: {value}");
    }
    let pid = child.id().unwrap();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let exit = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");

    let text = std::fs::read_to_string(&log).unwrap();
    // The log is not empty by accident: it shows the requests.
    assert!(text.lines().count() > 50 && text.contains("/orders"), "the trace log has the requests: {} lines", text.lines().count());
    let hs_secret = std::fs::read_to_string(support::fixture("hs256-secret.txt")).unwrap();
    let mut secrets: Vec<String> = vec![hs_secret.trim_end().to_owned(), "YWxpY2U6c2VjcmV0LXB3".to_owned()];
    for (_, value, _) in &cases {
        let credential = value.trim_start_matches("Bearer ").to_owned();
        // A token's signature alone is enough to replay it: look for it on its own too.
        if let Some(signature) = credential.rsplit('.').next().filter(|s| s.len() > 16 && credential.contains('.')) {
            secrets.push(signature.to_owned());
        }
        secrets.push(credential);
    }
    for secret in &secrets {
        if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
            panic!("a credential is in the log: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
