//! A small W3C WebDriver client of our own, just what the browser test needs:
//! it starts Debian's chromedriver on a free port, opens one headless
//! Chromium session with a fresh profile, and speaks the protocol's JSON over
//! `reqwest`. Every WebDriver error panics with the driver's own error body,
//! which names what went wrong (no such element, a stale one, a bad script).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use system_tests::wait_for;

/// How long one WebDriver command may take (a navigation waits for the page).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const MISSING: &str =
    "the browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver";

/// The key under which W3C WebDriver hands out element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A reference to an element of the current page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(String);

/// One headless Chromium, driven through its own chromedriver. Dropping it
/// ends the session (closing the browser) and then the driver.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:{port}/session/{id}`: every command's prefix.
    session: String,
    driver: Child,
    /// The browser's profile: fresh, so no state leaks between runs; removed on drop.
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
            "{MISSING}"
        );
        let port = local_infra::free_port().expect("a free port for chromedriver");
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chromedriver.log");
        let driver = local_infra::spawn::spawn(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("starting chromedriver");
        let profile = tempfile::TempDir::new().expect("a browser profile directory");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .expect("an HTTP client");
        // Until the session exists, dropping `browser` only stops the driver.
        let mut browser = Browser {
            http,
            session: String::new(),
            driver,
            profile,
        };
        let status_url = format!("{base}/status");
        let (http, status_url) = (&browser.http, &status_url);
        wait_for("chromedriver to be ready", || async move {
            let status = http.get(status_url).send().await.ok()?;
            let body: Value = status.json().await.ok()?;
            (body["value"]["ready"] == true).then_some(())
        })
        .await;
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", browser.profile.path().display()),
                ],
            },
        } } });
        let created = browser
            .request(Method::POST, format!("{base}/session"), Some(capabilities))
            .await;
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver gave no session id: {created}"));
        browser.session = format!("{base}/session/{id}");
        browser
    }

    /// Sends one command and returns its `value`; panics with the driver's
    /// error body if it refuses.
    async fn request(&self, method: Method, url: String, body: Option<Value>) -> Value {
        let what = format!("{method} {url}");
        let request = self.http.request(method, &url);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|err| panic!("WebDriver {what}: {err}"));
        let status = response.status();
        let text = response
            .text()
            .await
            .unwrap_or_else(|err| panic!("WebDriver {what}: reading the answer: {err}"));
        assert!(status.is_success(), "WebDriver {what}: {status} {text}");
        let mut answer: Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("WebDriver {what}: not JSON ({err}): {text}"));
        answer["value"].take()
    }

    /// A command on this session: `path` is appended to `/session/{id}`.
    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.request(method, format!("{}{path}", self.session), body)
            .await
    }

    /// Opens `url` and returns once the page has loaded.
    pub async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn current_url(&self) -> String {
        let url = self.command(Method::GET, "/url", None).await;
        url.as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching `css`; panics if there is none.
    pub async fn find(&self, css: &str) -> Element {
        let found = self
            .command(
                Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        element(&found)
    }

    /// Every element matching `css`, in document order (possibly none).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .command(
                Method::POST,
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found
            .as_array()
            .map(|all| all.iter().map(element).collect())
            .unwrap_or_default()
    }

    pub async fn click(&self, element: &Element) {
        self.command(
            Method::POST,
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await;
    }

    /// Empties an input, as a user selecting its text and deleting it would.
    pub async fn clear(&self, element: &Element) {
        self.command(
            Method::POST,
            &format!("/element/{}/clear", element.0),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into an input.
    pub async fn send_keys(&self, element: &Element, text: &str) {
        self.command(
            Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The element's rendered text.
    pub async fn text(&self, element: &Element) -> String {
        let text = self
            .command(Method::GET, &format!("/element/{}/text", element.0), None)
            .await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page
    /// and returns what it returns. Reading the page in one script cannot
    /// meet an element that a live update has just replaced.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The visible part of the page as PNG bytes.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command(Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 screenshot")
    }

    /// Resizes the browser window (CSS pixels).
    pub async fn set_window_rect(&self, width: u32, height: u32) {
        self.command(
            Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }
}

fn element(found: &Value) -> Element {
    let id = found[ELEMENT_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("not an element reference: {found}"));
    Element(id.to_owned())
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Drop cannot await, and may run inside the test's runtime: end the
            // session from a thread with a runtime of its own.
            let session = std::mem::take(&mut self.session);
            let ended = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                runtime.block_on(async {
                    reqwest::Client::new()
                        .delete(&session)
                        .timeout(COMMAND_TIMEOUT)
                        .send()
                        .await
                        .ok()
                })
            });
            let _ = ended.join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
