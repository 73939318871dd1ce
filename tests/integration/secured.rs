//! A secured cluster: TLS with SASL/SCRAM-SHA-512, the way production brokers (MSK,
//! Confluent, self-run) are usually reached.
//!
//! The test runs its own broker with a `SASL_SSL` listener beside the plaintext one (a
//! self-signed certificate made with the JDK's `keytool`, a SCRAM user added with
//! `kafka-configs`), then publishes and consumes through it with Herald's ordinary
//! configuration: librdkafka property names, nothing Herald-specific.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use herald_bus::{KafkaConfig, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{unique, wait_until};

use crate::support::{consumer, publisher, Broker, Running, Seen};

const PASSWORD: &str = "s3cret-for-tests";

/// Makes a PKCS12 keystore with a self-signed certificate for 127.0.0.1 and exports the
/// certificate (PEM) for clients to trust. Returns (keystore, certificate).
fn self_signed(dir: &Path) -> (String, String) {
    let keystore = dir.join("broker.p12");
    let cert = dir.join("ca.pem");
    let keytool = |args: &[&str]| {
        let out = Command::new("keytool").args(args).output().expect("keytool (from the JDK) runs");
        assert!(out.status.success(), "keytool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (ks, pem) = (keystore.to_string_lossy().into_owned(), cert.to_string_lossy().into_owned());
    keytool(&[
        "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "2", "-dname", "CN=127.0.0.1",
        "-ext", "SAN=IP:127.0.0.1,DNS:localhost", "-ext", "BC=ca:true", "-keystore", &ks, "-storetype", "PKCS12", "-storepass", PASSWORD,
        "-keypass", PASSWORD,
    ]);
    keytool(&["-exportcert", "-alias", "broker", "-keystore", &ks, "-storetype", "PKCS12", "-storepass", PASSWORD, "-rfc", "-file", &pem]);
    (ks, pem)
}

/// A client configuration for the secured listener.
fn secured(port: u16, ca: &str, password: &str) -> KafkaConfig {
    KafkaConfig::new(format!("127.0.0.1:{port}"))
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", "herald")
        .set("sasl.password", password)
        .set("ssl.ca.location", ca)
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_and_consuming_work_over_tls_with_scram() {
    let mut broker = Broker::new("herald-secured");
    std::fs::create_dir_all(&broker.home).expect("run folder");
    let (keystore, ca) = self_signed(&broker.home);
    let secure_port = herald_testkit::free_port();
    let (port, controller) = (broker.port, broker.controller_port);
    // Later lines win in server.properties: these replace the script's listener settings.
    broker.extra_properties = format!(
        "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{secure_port}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secure_port}\n\
         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL\n\
         sasl.enabled.mechanisms=SCRAM-SHA-512\n\
         listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
         ssl.keystore.type=PKCS12\n\
         ssl.keystore.location={keystore}\n\
         ssl.keystore.password={PASSWORD}\n\
         ssl.key.password={PASSWORD}\n"
    );
    broker.run("start").await;
    let plaintext = format!("127.0.0.1:{port}");
    broker
        .script_run(&[
            "tool", "kafka-configs", "--bootstrap-server", &plaintext, "--alter", "--entity-type", "users", "--entity-name", "herald", "--add-config",
            &format!("SCRAM-SHA-512=[iterations=4096,password={PASSWORD}]"),
        ])
        .await;

    let config = secured(secure_port, &ca, PASSWORD);
    let name = unique("secured");
    // The SCRAM credential reaches the listener shortly after it was added.
    wait_until(Duration::from_secs(60), "the SCRAM user can create topics over SASL_SSL", || async {
        herald_bus::admin::create_topics(&config, &[herald_bus::admin::TopicSpec::new(&name).partitions(2)]).await.is_ok()
    })
    .await;
    let orders: Topic<OrderEvent> = Topic::named(name.clone());
    let events: Vec<OrderPlaced> = (0..50).map(|i| OrderPlaced::example(&format!("o-{i}"), "c-secured", i)).collect();
    for result in publisher(&config).publish_all(&orders, &events).await {
        result.expect("published over SASL_SSL");
    }
    let seen = Seen::default();
    let running = Running::start(consumer(&config, &unique("g.secured")).subscribe(&orders, seen.handler())).await;
    wait_until(Duration::from_secs(60), "every event consumed over SASL_SSL", || async { seen.len() >= 50 }).await;
    running.shutdown().await;
    let mut totals: Vec<i64> = seen.all().iter().filter_map(|e| match &e.event { OrderEvent::Placed(p) => Some(p.total_cents), _ => None }).collect();
    totals.sort_unstable();
    totals.dedup();
    assert_eq!(totals, (0..50).collect::<Vec<_>>());

    // A wrong password is refused, and the error says why (librdkafka itself reports only
    // a timeout for the record).
    let wrong = secured(secure_port, &ca, "not-the-password").set("message.timeout.ms", "5000");
    let refused = publisher(&wrong).publish(&orders, &events[0]).await.expect_err("a wrong password is refused");
    assert!(refused.to_string().to_lowercase().contains("auth"), "{refused}");
    // A consumer with a wrong password ends with an error instead of logging forever.
    let builder = consumer(&wrong, &unique("g.refused")).subscribe(&orders, Seen::default().handler()).create_dead_letter_topics(false);
    let refused = builder.build().await.expect("builds (the broker is asked only when it runs)");
    let ended = tokio::time::timeout(Duration::from_secs(60), refused.run(std::future::pending())).await.expect("run returns on an authentication failure");
    match ended {
        Err(e @ herald_bus::ConsumerError::Authentication(_)) => assert!(e.is_fatal() && e.to_string().to_lowercase().contains("auth"), "{e}"),
        other => panic!("expected an authentication error, got {other:?}"),
    }
    // A client that trusts another certificate, not the broker's, does not connect.
    let other = broker.home.join("other");
    std::fs::create_dir_all(&other).expect("folder");
    let (_, other_ca) = self_signed(&other);
    let untrusted = secured(secure_port, &other_ca, PASSWORD).set("message.timeout.ms", "5000");
    let refused = publisher(&untrusted).publish(&orders, &events[0]).await.expect_err("an untrusted certificate is refused");
    assert!(refused.to_string().to_lowercase().contains("ssl"), "{refused}");
}
