//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromedriver`),
//! driven over WebDriver: log in with the admin key, see the sagas and a saga's timeline,
//! inspect a dead letter, replay it from the page, and find it back on its topic in Kafka.
//! Screenshots go to `$HERALD_UI_SCREENSHOTS` (default: the test's target tmp folder).
//!
//! Without chromium or chromedriver the test says so and passes, except under `CI=true`,
//! where it fails: `scripts/setup test` installs both.
//!
//! The WebDriver client is the few W3C endpoints the test needs over reqwest (already a
//! dependency), rather than a WebDriver crate: a session, navigation, elements, clicks,
//! typing, a script to read the page's state, screenshots.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::message::Message;
use serde_json::{json, Value};

use crate::dashboard::{Stage, ADMIN_KEY};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const WAIT: Duration = Duration::from_secs(60);

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file()))
}

/// A chromedriver process and one browser session in it.
struct Browser {
    driver: tokio::process::Child,
    http: reqwest::Client,
    session: String,
    _profile: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    async fn start(chromium: &std::path::Path, chromedriver: &std::path::Path) -> Browser {
        let port = herald_testkit::free_port();
        let driver = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{base}/status")).send().await.ok();
            let ready = match ready {
                Some(r) => r.json::<Value>().await.ok().is_some_and(|v| v["value"]["ready"] == true),
                None => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver was not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = TempDir(std::env::temp_dir().join(herald_testkit::unique("herald-ui-chromium")));
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,1300",
                         format!("--user-data-dir={}", profile.0.display())]
            }
        }}});
        let created: Value = http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let session = created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {created}")).to_owned();
        Browser { driver, http, session: format!("{base}/session/{session}"), _profile: profile }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(answer["value"]["error"].is_null(), "WebDriver {path}: {answer}");
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self.call(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css }))).await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    /// Clicks the element `css` finds; found again when the page re-rendered it between
    /// the finding and the click (it re-renders its tables every refresh).
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let element = self.find(css).await;
            let answer: Value = self
                .http
                .post(format!("{}/element/{element}/click", self.session))
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match answer["value"]["error"].as_str() {
                None => return,
                Some("stale element reference") if Instant::now() < deadline => continue,
                Some(_) => panic!("WebDriver click on {css}: {answer}"),
            }
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({ "text": text }))).await;
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    async fn eval(&self, script: &str, args: Value) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Waits until `script` returns true in the page.
    async fn wait_for(&self, what: &str, script: &str, args: Value) {
        let deadline = Instant::now() + WAIT;
        while self.eval(script, args.clone()).await != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting in the page for: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = std::env::var_os("HERALD_UI_SCREENSHOTS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    async fn stop(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium_shows_the_sagas_and_replays_a_dead_letter() {
    let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "CI=true but chromium or chromedriver is not installed (scripts/setup test installs them)");
        eprintln!("SKIPPED the_dashboard_in_headless_chromium: chromium and chromedriver are not both on PATH (apt-get install chromium chromium-driver, or bash scripts/setup test)");
        return;
    };
    let stage = Stage::start().await;
    let browser = Browser::start(&chromium, &chromedriver).await;

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
    let shot = browser.screenshot("dashboard.png").await;
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
    let shot = browser.screenshot("dashboard-dead-letters.png").await;
    eprintln!("screenshot {}", shot.display());

    // The replayed record is on its original topic, as it was.
    let back = herald_testkit::read_all(&stage.kafka, &stage.input, 1, Duration::from_secs(30)).await;
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].key(), back[0].payload()), (Some(&b"k-1"[..]), Some(&b"not avro"[..])));

    browser.stop().await;
    stage.stop().await;
}
