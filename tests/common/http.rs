//! A minimal HTTP/1.1 client for the dashboard and WebDriver tests (loopback only, one request
//! per connection), and `Server`, a `convoy serve` child on an ephemeral port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A response: status, lower-cased headers, body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.0 == name).map(|h| h.1.as_str())
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
    s
}

fn send(s: &mut TcpStream, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (413) before reading all of a large body and close: ignore that.
    let _ = s.write_all(body);
}

fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line '{line}'"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    (status, headers)
}

/// One request; the whole response.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut s = connect(port);
    send(&mut s, method, path, headers, body);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        let mut c = Chunked { r, left: 0, done: false };
        c.read_to_end(&mut body).unwrap();
    } else if let Some(n) = headers.iter().find(|h| h.0 == "content-length").and_then(|h| h.1.parse::<u64>().ok()) {
        // Some servers (chromedriver) keep the connection open despite `Connection: close`.
        let _ = r.take(n).read_to_end(&mut body);
    } else {
        let _ = r.read_to_end(&mut body);
    }
    Response { status, headers, body }
}

pub fn get(port: u16, path: &str) -> Response {
    request(port, "GET", path, &[], b"")
}

pub fn post_json(port: u16, path: &str, body: &str) -> Response {
    request(port, "POST", path, &[("Content-Type", "application/json")], body.as_bytes())
}

/// A chunked body as a reader.
struct Chunked<R: BufRead> {
    r: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.r.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk.
                line.clear();
                self.r.read_line(&mut line)?;
            }
            if line.is_empty() {
                self.done = true;
                return Ok(0);
            }
            self.left = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let len = buf.len().min(self.left);
        let n = self.r.read(&mut buf[..len])?;
        if n == 0 {
            self.done = true;
        }
        self.left -= n;
        Ok(n)
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Follows an SSE feed until the server ends it; returns its events (comments skipped).
pub fn follow_sse(port: u16, path: &str, last_event_id: Option<&str>) -> Vec<Sse> {
    let mut s = connect(port);
    let mut headers = vec![("Accept", "text/event-stream")];
    if let Some(id) = last_event_id {
        headers.push(("Last-Event-ID", id));
    }
    send(&mut s, "GET", path, &headers, b"");
    let mut r = BufReader::new(s);
    let (status, h) = read_head(&mut r);
    assert_eq!(status, 200, "{path}");
    assert!(h.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream")), "{h:?}");
    let chunked = h.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body: Box<dyn Read> = if chunked { Box::new(Chunked { r, left: 0, done: false }) } else { Box::new(r) };
    let mut lines = BufReader::new(body).lines();
    let mut out = Vec::new();
    let mut cur = Sse { event: "message".into(), id: None, data: String::new() };
    while let Some(Ok(line)) = lines.next() {
        if line.is_empty() {
            if !cur.data.is_empty() {
                out.push(cur.clone());
            }
            cur = Sse { event: "message".into(), id: None, data: String::new() };
            continue;
        }
        if let Some(v) = line.strip_prefix("event:") {
            cur.event = v.trim().into();
        } else if let Some(v) = line.strip_prefix("id:") {
            cur.id = Some(v.trim().into());
        } else if let Some(v) = line.strip_prefix("data:") {
            cur.data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    out
}

/// `convoy serve` on an ephemeral port, with `small` (the small MNIST) as its one dataset.
pub struct Server {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Server {
    /// Starts a server over `dir` (runs in `dir/runs`, datasets in `dir/data`).
    pub fn start(dir: &Path, small_mnist: &Path, max_runs: usize) -> Server {
        let data = dir.join("data/small");
        if !data.exists() {
            std::fs::create_dir_all(&data).unwrap();
            for e in std::fs::read_dir(small_mnist).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), data.join(e.file_name())).unwrap();
            }
        }
        let mut child = crate::common::convoy_cmd()
            .args(["serve", "--addr", "127.0.0.1:0", "--max-runs", &max_runs.to_string(), "--runs-dir"])
            .arg(dir.join("runs"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in '{line}'"));
        Server { child, port, dir: dir.to_path_buf() }
    }

    /// Still serving?
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM: the graceful shutdown path.
        unsafe_term(self.child.id());
        let _ = self.child.wait();
    }
}

fn unsafe_term(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

/// Standard base64 (screenshots from WebDriver).
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
