//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromedriver`),
//! driven over WebDriver ([`herald_testkit::browser`]): log in with the admin key, see the
//! sagas and a saga's timeline, inspect a dead letter, replay it from the page, and find it
//! back on its topic in Kafka. Screenshots go to `$HERALD_UI_SCREENSHOTS` (default: the
//! test's target tmp folder).
//!
//! Without chromium or chromedriver the test says so and passes, except under `CI=true`,
//! where it fails: `scripts/setup test` installs both.

use std::path::PathBuf;
use std::time::Duration;

use herald_testkit::browser::{self, Browser};
use rdkafka::message::Message;
use serde_json::json;

use crate::dashboard::{Stage, ADMIN_KEY};

/// Where a screenshot named `name` goes.
fn screenshot_path(name: &str) -> PathBuf {
    std::env::var_os("HERALD_UI_SCREENSHOTS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR"))).join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium_shows_the_sagas_and_replays_a_dead_letter() {
    let Some(installed) = browser::installed_or_skip("the_dashboard_in_headless_chromium") else { return };
    let stage = Stage::start().await;
    let browser = Browser::start(&installed).await;

    // Not logged in: the login form, and nothing else.
    browser.go(&format!("{}/ui", stage.gateway.url)).await;
    browser.wait_for("the login form", "return !document.querySelector('#login').hidden && document.querySelector('#main').hidden", json!([])).await;
    browser.type_into("#credential", "not-the-key").await;
    browser.click("#login-submit").await;
    browser.wait_for("the refusal", "return document.querySelector('#login-error').textContent.includes('unknown API key')", json!([])).await;
    browser.type_into("#credential", ADMIN_KEY).await;
    browser.click("#login-submit").await;

    // The sagas: the four of the stage, counted per state; the compensated one's timeline.
    browser
        .wait_for("the compensated saga in the list", "return document.querySelector(`#saga-list tr[data-subject='${arguments[0]}']`) !== null", json!([stage.compensated]))
        .await;
    let counts = browser.eval("return [...document.querySelectorAll('#saga-counts button')].map(b => b.dataset.state + ' ' + b.textContent.trim().split(' ').pop())", json!([])).await;
    for expected in ["all 4", "completed 1", "compensated 1", "stuck 1", "running 1", "failed 0"] {
        assert!(counts.as_array().unwrap().iter().any(|c| c == expected), "{expected} in {counts}");
    }
    browser.click(&format!("#saga-list tr[data-subject='{}']", stage.compensated)).await;
    browser.wait_for("the compensated saga's timeline", "return document.querySelectorAll('#timeline li').length === 6", json!([])).await;
    let first = browser.eval("return document.querySelector('#timeline li strong').textContent", json!([])).await;
    assert_eq!(first, "orders.OrderPlaced");
    // The other panels filled in: topics of the prefix, the tracker's groups, the tracker.
    browser.wait_for("topics, groups and services", "return document.querySelectorAll('#topics tbody tr').length > 5 && document.querySelectorAll('#groups tbody tr').length === 3 && document.querySelector(\"#services tr[data-service='saga-tracker'] .s-healthy\") !== null", json!([])).await;
    let shot = screenshot_path("dashboard.png");
    browser.screenshot(&shot).await;
    eprintln!("screenshot {}", shot.display());

    // The dead letters: the topic with its count, the letters, one shown, one replayed.
    let row = format!("#dlq-topics tr[data-dlq='{}']", stage.dlq);
    browser.wait_for("the dead-letter topic with 2 records", &format!("const r = document.querySelector(\"{row}\"); return r !== null && r.children[1].textContent === '2'"), json!([])).await;
    browser.click(&format!("{row} button")).await;
    browser.wait_for("the two dead letters", "return document.querySelectorAll('#dlq-letters tr[data-letter]').length === 2", json!([])).await;
    browser.click("#dlq-letters tr[data-letter='0/0'] button.show").await;
    browser.wait_for("the dead letter's details", "const p = document.querySelector('#letter-json'); return p !== null && p.textContent.includes('\"k-1\"') && p.textContent.includes('test.Thing')", json!([])).await;
    browser.eval("document.querySelector('#dlq').scrollIntoView()", json!([])).await;
    browser.click("#dlq-letters tr[data-letter='0/0'] button.replay").await;
    browser.wait_for("the replay's answer", "return document.querySelector('#replayed') !== null || document.querySelector('#replay-error') !== null", json!([])).await;
    let replayed = browser.eval("const r = document.querySelector('#replayed'); return r ? [r.dataset.topic, r.textContent] : document.querySelector('#replay-error').textContent", json!([])).await;
    assert_eq!(replayed[0], stage.input.as_str(), "{replayed}");
    // The page updates by itself: the replayed record shows on its topic's row, with a rate.
    browser
        .wait_for(
            "the replayed record counted on its topic, with a rate",
            "const r = document.querySelector(`#topics tr[data-topic='${arguments[0]}']`); return r !== null && r.children[2].textContent === '1' && Number(r.children[3].textContent) > 0",
            json!([stage.input]),
        )
        .await;
    let shot = screenshot_path("dashboard-dead-letters.png");
    browser.screenshot(&shot).await;
    eprintln!("screenshot {}", shot.display());

    // The replayed record is on its original topic, as it was.
    let back = herald_testkit::read_all(&stage.kafka, &stage.input, 1, Duration::from_secs(30)).await;
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].key(), back[0].payload()), (Some(&b"k-1"[..]), Some(&b"not avro"[..])));

    browser.stop().await;
    stage.stop().await;
}
