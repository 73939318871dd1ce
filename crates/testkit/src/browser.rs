//! A real headless Chromium (Debian's `chromium` and `chromedriver`) driven over
//! WebDriver, for tests of web pages: a session, navigation, elements, clicks, typing, a
//! script to read the page's state, screenshots.
//!
//! The client is the few W3C endpoints tests need, over reqwest, rather than a WebDriver
//! crate. Without chromium or chromedriver a test skips (says so and passes), except under
//! `CI=true`, where it fails: `scripts/setup test` installs both.
//!
//! ```no_run
//! # async fn demo() {
//! use herald_testkit::browser::{self, Browser};
//! let Some(installed) = browser::installed_or_skip("my_page_test") else { return };
//! let page = Browser::start(&installed).await;
//! page.go("http://127.0.0.1:8080/ui").await;
//! page.wait_for("the page's main panel", "return document.querySelector('#main') !== null", serde_json::json!([])).await;
//! page.stop().await;
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long [`Browser::wait_for`] and [`Browser::click`] wait.
pub const WAIT: Duration = Duration::from_secs(60);

/// Where chromium and chromedriver are.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The browser.
    pub chromium: PathBuf,
    /// Its WebDriver server.
    pub chromedriver: PathBuf,
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file()))
}

/// Chromium and chromedriver when both are on `PATH`. Otherwise `None` after saying that
/// `test` is skipped, or a panic under `CI=true` (where they must be installed).
pub fn installed_or_skip(test: &str) -> Option<Installed> {
    if let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) {
        return Some(Installed { chromium, chromedriver });
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!ci, "CI=true but chromium or chromedriver is not installed (scripts/setup test installs them)");
    eprintln!("SKIPPED {test}: chromium and chromedriver are not both on PATH (apt-get install chromium chromium-driver, or bash scripts/setup test)");
    None
}

/// A chromedriver process and one headless browser session in it.
#[derive(Debug)]
pub struct Browser {
    driver: tokio::process::Child,
    http: reqwest::Client,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless session (1440×1300) with a
    /// profile folder of its own.
    pub async fn start(installed: &Installed) -> Browser {
        let port = crate::free_port();
        // In a process group of its own, with the browser it starts: a test that panics
        // (no `stop`) kills the whole group on drop, not chromedriver alone, which left
        // its chromium running.
        let driver = tokio::process::Command::new(&installed.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await.ok() {
                Some(r) => r.json::<Value>().await.ok().is_some_and(|v| v["value"]["ready"] == true),
                None => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver was not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(crate::unique("herald-ui-chromium"));
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": installed.chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,1300",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let created: Value = http.post(format!("{base}/session")).json(&capabilities).send().await.expect("WebDriver answers").json().await.expect("WebDriver JSON");
        let session = created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {created}")).to_owned();
        Browser { driver, http, session: format!("{base}/session/{session}"), profile }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.expect("WebDriver answers").json().await.expect("WebDriver JSON");
        assert!(answer["value"]["error"].is_null(), "WebDriver {path}: {answer}");
        answer["value"].clone()
    }

    /// Navigates to `url`.
    pub async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self.call(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css }))).await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element for {css}: {found}")).to_owned()
    }

    /// Clicks the element `css` finds; found again when the page re-rendered it between
    /// the finding and the click (pages that re-render their tables on a timer do).
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let element = self.find(css).await;
            let answer: Value = self
                .http
                .post(format!("{}/element/{element}/click", self.session))
                .json(&json!({}))
                .send()
                .await
                .expect("WebDriver answers")
                .json()
                .await
                .expect("WebDriver JSON");
            match answer["value"]["error"].as_str() {
                None => return,
                Some("stale element reference") if Instant::now() < deadline => continue,
                Some(_) => panic!("WebDriver click on {css}: {answer}"),
            }
        }
    }

    /// Types `text` into the element `css` finds.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({ "text": text }))).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns
    /// what it returns.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Waits (at most [`WAIT`]) until `script` returns true in the page; `what` names it
    /// in the failure.
    pub async fn wait_for(&self, what: &str, script: &str, args: Value) {
        let deadline = Instant::now() + WAIT;
        while self.eval(script, args.clone()).await != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting in the page for: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot of the page as PNG at `path` (its folder created).
    pub async fn screenshot(&self, path: &Path) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot's folder");
        }
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default()).expect("base64 PNG");
        assert_eq!(bytes.get(1..4), Some(&b"PNG"[..]), "a PNG");
        std::fs::write(path, bytes).expect("the screenshot written");
    }

    /// Ends the session and chromedriver.
    pub async fn stop(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
