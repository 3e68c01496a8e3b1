//! Headless Chromium driven over the DevTools protocol, for the tests of the web viewer: open a
//! page, run JavaScript in it, size its window, take screenshots, read its JS heap, and collect
//! what it logs as errors. The protocol is JSON over a WebSocket, spoken with tungstenite (a
//! dependency already); a WebDriver client crate would need an async runtime and chromedriver.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a page gets to reach a state a test waits for.
pub const PAGE_PATIENCE: Duration = Duration::from_secs(30);

/// A headless Chromium with one page open, killed when dropped.
pub struct Browser {
    child: Child,
    socket: tungstenite::WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    /// Errors the page reported: exceptions, `console.error`, failed loads.
    errors: Vec<String>,
    /// URLs the page asked for, HTTP and WebSocket.
    requests: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens `url` in a window of `width`×`height`.
    pub fn open(url: &str, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        // The flags keep a headless Chromium from reaching for the network on its own (this
        // machine has none) and from needing a sandbox when tests run as root.
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-port=0",
                // A name for the test server that is not a "potentially trustworthy" origin
                // (as 127.0.0.1 is): browsers treat a LAN address like this, not like localhost.
                "--host-resolver-rules=MAP ringcast.test 127.0.0.1",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run chromium (scripts/install-deps installs it)");
        let endpoint = devtools_endpoint(&mut child);
        let socket = connect(&endpoint);
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            errors: Vec::new(),
            requests: Vec::new(),
            _profile: profile,
        };
        let target = browser.call_browser("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call_browser(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            browser.call(domain, json!({}));
        }
        browser.resize(width, height, false);
        browser.navigate(url);
        browser
    }

    /// Loads `url` and waits for the load to finish.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for("the page to load", "document.readyState === 'complete'");
    }

    pub fn reload(&mut self) {
        self.call("Page.reload", json!({}));
        // The old document may still say "complete" for a moment; wait until the new one does.
        std::thread::sleep(Duration::from_millis(200));
        self.wait_for(
            "the page to load again",
            "document.readyState === 'complete'",
        );
    }

    /// Accepts any TLS certificate from now on, as a user clicking through the warning would: a
    /// test's server has a self-signed one.
    pub fn ignore_certificate_errors(&mut self) {
        self.call(
            "Security.setIgnoreCertificateErrors",
            json!({ "ignore": true }),
        );
    }

    /// The window as a desktop (`mobile` false) or a phone of `width`×`height` CSS pixels.
    pub fn resize(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": width,
                "height": height,
                "deviceScaleFactor": if mobile { 2 } else { 1 },
                "mobile": mobile,
            }),
        );
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (JavaScript) is true, failing the test with `what` if it is not
    /// within [`PAGE_PATIENCE`].
    pub fn wait_for(&mut self, what: &str, condition: &str) {
        let deadline = Instant::now() + PAGE_PATIENCE;
        loop {
            if self.eval(condition) == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Presses and releases a key (a DOM key name with its Windows key code, as the DevTools
    /// protocol wants both), as a user at the keyboard would, into whatever has the focus.
    pub fn press_key(&mut self, key: &str, key_code: u32) {
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({
                    "type": kind,
                    "key": key,
                    "code": key,
                    "windowsVirtualKeyCode": key_code,
                }),
            );
        }
    }

    /// A PNG of the window, saved at `path`.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("a directory for the screenshot");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Bytes of JS heap in use, after a full garbage collection.
    pub fn heap_used(&mut self) -> u64 {
        self.call("HeapProfiler.collectGarbage", json!({}));
        self.call("Runtime.getHeapUsage", json!({}))["usedSize"]
            .as_f64()
            .expect("heap usage") as u64
    }

    /// How many objects made by `constructor` (a global: `WebSocket`, `HTMLCanvasElement`) the
    /// page still holds, after a full garbage collection.
    pub fn live_objects(&mut self, constructor: &str) -> u64 {
        // The objects found stay referenced by the DevTools session until their group is
        // released: without that, each count would keep alive what the last one found.
        let group = json!("ringcast-count");
        self.call("HeapProfiler.collectGarbage", json!({}));
        let prototype = self.call(
            "Runtime.evaluate",
            json!({ "expression": format!("{constructor}.prototype"), "objectGroup": group }),
        );
        let found = self.call(
            "Runtime.queryObjects",
            json!({ "prototypeObjectId": prototype["result"]["objectId"], "objectGroup": group }),
        );
        let count = self.call(
            "Runtime.callFunctionOn",
            json!({
                "objectId": found["objects"]["objectId"],
                "functionDeclaration": "function () { return this.length; }",
                "returnByValue": true,
            }),
        );
        self.call(
            "Runtime.releaseObjectGroup",
            json!({ "objectGroup": group }),
        );
        count["result"]["value"].as_u64().expect("a count")
    }

    /// URLs the page requested (HTTP and WebSocket) since it was opened.
    pub fn requested_urls(&mut self) -> Vec<String> {
        self.eval("0");
        std::mem::take(&mut self.requests)
    }

    /// What the page reported as errors, emptied by each call.
    pub fn take_errors(&mut self) -> Vec<String> {
        self.eval("0");
        std::mem::take(&mut self.errors)
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(None, method, params)
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .expect("send to Chromium");
        loop {
            let reply: Value = match self.socket.read().expect("read from Chromium") {
                tungstenite::Message::Text(text) => {
                    serde_json::from_str(&text).expect("Chromium speaks JSON")
                }
                _ => continue,
            };
            if reply["id"] == json!(id) {
                if let Some(error) = reply.get("error") {
                    panic!("{method}: {error}");
                }
                return reply["result"].clone();
            }
            self.note_event(&reply);
        }
    }

    fn note_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                self.errors.push(params["exceptionDetails"].to_string())
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                self.errors.push(params["args"].to_string())
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                self.errors.push(params["entry"]["text"].to_string())
            }
            Some("Network.requestWillBeSent") => self
                .requests
                .push(params["request"]["url"].as_str().unwrap_or("").to_owned()),
            Some("Network.webSocketCreated") => self
                .requests
                .push(params["url"].as_str().unwrap_or("").to_owned()),
            _ => {}
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket to the DevTools endpoint `ws://host:port/...`, over a plain TCP stream.
fn connect(endpoint: &str) -> tungstenite::WebSocket<TcpStream> {
    let address = endpoint
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("not a ws:// endpoint: {endpoint}"));
    let stream = TcpStream::connect(address).expect("connect to Chromium");
    stream
        .set_read_timeout(Some(PAGE_PATIENCE))
        .expect("a read timeout");
    let (socket, _) = tungstenite::client(endpoint, stream)
        .unwrap_or_else(|e| panic!("DevTools handshake with {endpoint}: {e}"));
    socket
}

/// The browser's DevTools WebSocket, as Chromium prints it on stderr once it listens.
fn devtools_endpoint(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("ws://") {
                let _ = tx.send(line[at..].trim().to_owned());
            }
        }
    });
    rx.recv_timeout(PAGE_PATIENCE)
        .expect("Chromium never said where its DevTools listen")
}
