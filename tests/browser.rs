//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver, the
//! W3C protocol spoken as plain JSON over HTTP) loads the page, fills in and submits the launch
//! form, waits until the run page's loss chart has points and the run has finished, and saves a
//! screenshot to target/dashboard.png for a person to look at.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (scripts/test.sh installs them);
//! without them the test says so and passes.

mod common;
#[path = "common/http.rs"]
mod http;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n))).find(|p| p.is_file())
}

struct Driver {
    child: Child,
    port: u16,
    session: String,
}

impl Driver {
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("/session/{}{path}", self.session);
        let body = if method == "GET" { Vec::new() } else { body.to_string().into_bytes() };
        let r = http::request(self.port, method, &url, &[("Content-Type", "application/json")], &body);
        let v = r.json();
        assert_eq!(r.status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn find(&self, css: &str) -> String {
        let v = self.call("POST", "/element", json!({"using": "css selector", "value": css}));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.call("POST", &format!("/element/{el}/clear"), json!({}));
        self.call("POST", &format!("/element/{el}/value"), json!({"text": text}));
    }

    fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": js, "args": []}))
    }

    /// Polls `js` (an expression) until it is true, at most `secs` seconds.
    fn wait_for(&self, js: &str, secs: u64) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if self.script(&format!("return !!({js});")) == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let page = self.script("return document.body.innerText;");
        panic!("timed out waiting for `{js}`; page: {page}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http::request(self.port, "DELETE", &format!("/session/{}", self.session), &[], b"");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver(chromedriver: &Path, chromium: &Path, profile: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": chromium.display().to_string(),
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 format!("--user-data-dir={}", profile.display()), "--window-size=1280,1400"]
    }}}});
    let r =
        http::request(port, "POST", "/session", &[("Content-Type", "application/json")], caps.to_string().as_bytes());
    let v = r.json();
    assert_eq!(r.status, 200, "new session: {v}");
    let session = v["value"]["sessionId"].as_str().unwrap().to_string();
    Driver { child, port, session }
}

#[test]
fn launch_a_run_from_the_page_and_watch_its_loss_chart() {
    let (Some(chromedriver), Some(chromium)) =
        (find_binary(&["chromedriver"]), find_binary(&["chromium", "chromium-browser"]))
    else {
        eprintln!("SKIPPED: chromium and chromedriver not found; hint: apt-get install chromium chromium-driver (scripts/test.sh does)");
        return;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = http::Server::start(&dir, common::small_mnist(), 1);
    let d = start_driver(&chromedriver, &chromium, &dir.join("profile"));
    d.call("POST", "/url", json!({"url": format!("http://127.0.0.1:{}/", server.port)}));
    d.wait_for("document.querySelector('#f-dataset option')", 30);
    // Fill in the form as a person would, then launch.
    d.type_into("input[name=name]", "browser test");
    d.type_into("input[name=workers]", "2");
    d.type_into("input[name=threads]", "1");
    d.type_into("input[name=steps]", "40");
    d.type_into("input[name=batch_size]", "32");
    d.type_into("input[name=lr]", "0.05");
    let launch = d.find("#launch-btn");
    d.call("POST", &format!("/element/{launch}/click"), json!({}));
    d.wait_for("location.hash.startsWith('#run/')", 30);
    d.wait_for("Number(document.querySelector('#chart-loss').dataset.points) > 0", 120);
    d.wait_for("document.querySelector('#run-status').textContent === 'finished'", 120);
    // The timeline is drawn from the trace once the run has ended.
    d.wait_for("document.querySelectorAll('#timeline rect').length > 0", 30);
    let points: u64 =
        d.script("return Number(document.querySelector('#chart-loss').dataset.points);").as_u64().unwrap();
    assert_eq!(points, 40, "every step is on the chart");
    // Per-worker images/s (one line per worker) and their compute/communication shares.
    d.wait_for("document.querySelectorAll('#chart-wips polyline, #chart-wips circle').length >= 2", 30);
    assert_eq!(d.script("return document.querySelectorAll('#worker-share .wshare').length;"), json!(2));
    assert_eq!(d.script("return document.querySelectorAll('#chart-loss polyline').length;"), json!(1));
    let shot = d.call("GET", "/screenshot", Value::Null);
    let png = http::base64_decode(shot.as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    std::fs::write(&out, png).unwrap();
    eprintln!("screenshot: {}", out.display());
    // The run the form launched is the one on disk, with the form's settings.
    let runs = http::get(server.port, "/api/runs").json();
    let run = &runs["runs"][0];
    assert_eq!(run["name"], "browser test");
    assert_eq!(run["config"]["workers"], 2);
    assert_eq!(run["config"]["steps"], 40);
    // A pipeline from the form: its own parameters show, the workers field hides.
    d.call("POST", "/url", json!({"url": format!("http://127.0.0.1:{}/", server.port)}));
    d.wait_for("document.querySelector('#f-dataset option')", 30);
    let option = d.find("#f-strategy option[value=pipeline]");
    d.call("POST", &format!("/element/{option}/click"), json!({}));
    d.wait_for("!document.querySelector('#pipeline-opts').hidden && document.querySelector('#f-workers').hidden", 10);
    d.type_into("#pipeline-opts input[name=stages]", "2");
    d.type_into("#pipeline-opts input[name=micro_batches]", "4");
    d.type_into("input[name=steps]", "10");
    d.type_into("input[name=batch_size]", "32");
    let launch = d.find("#launch-btn");
    d.call("POST", &format!("/element/{launch}/click"), json!({}));
    d.wait_for(
        "document.querySelector('#run-status') && document.querySelector('#run-status').textContent === 'finished'",
        120,
    );
    let runs = http::get(server.port, "/api/runs").json();
    let run = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["config"]["strategy"] == "pipeline")
        .expect("the pipeline run")
        .clone();
    assert_eq!(
        (run["config"]["workers"].clone(), run["config"]["stages"].clone(), run["config"]["micro_batches"].clone()),
        (json!(2), json!(2), json!(4)),
        "{run}"
    );
    // The plan page draws `convoy plan`'s plot and its table.
    d.call("POST", "/url", json!({"url": format!("http://127.0.0.1:{}/#plan", server.port)}));
    d.wait_for("document.querySelector('#plan-svg').naturalWidth > 0 && document.querySelectorAll('#plan-table tr').length === 8", 60);
    let shot = d.call("GET", "/screenshot", Value::Null);
    std::fs::write(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-plan.png"),
        http::base64_decode(shot.as_str().unwrap()),
    )
    .unwrap();
}
