//! Starting `flows serve` on a store and talking HTTP to it, for the dashboard's tests.

#![allow(dead_code, reason = "each test crate uses part of it")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `flows serve`, stopped when dropped.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, with no store or token settings inherited from the environment.
pub fn flows() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flows"));
    for var in ["FLOWS_DB", "DATABASE_URL", "FLOWS_TOKEN", "NO_COLOR", "TERM"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Starts `flows --db DB serve --port 0 EXTRA...` and waits for the address it prints.
pub fn serve(db: &Path, extra: &[&str]) -> Server {
    let mut child = flows()
        .arg("--db")
        .arg(db)
        .args(["serve", "--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start flows serve: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|a| a.strip_suffix('/'))
        .map(str::to_string)
        .unwrap_or_else(|| {
            let status = child.try_wait();
            panic!("flows serve did not print its address ({read:?}, {status:?}): `{line}`")
        });
    Server { child, addr }
}

/// An HTTP response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection. `Host` is the server's address unless
/// `headers` give one.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("cannot send to {addr}: {e}"));
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse(&String::from_utf8_lossy(&raw))
}

fn parse(raw: &str) -> Response {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Response { status, headers, body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn get(addr: &str, path: &str) -> Response {
    request(addr, "GET", path, &[], "")
}

/// Posts a form from the dashboard's own page (its Origin).
pub fn post_form(addr: &str, path: &str, fields: &[(&str, &str)]) -> Response {
    let origin = format!("http://{addr}");
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Origin", &origin)],
        &form_body(fields),
    )
}

pub fn form_body(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The CSRF token a page's forms carry.
pub fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).map(|i| i + marker.len()).unwrap_or_else(|| panic!("no CSRF token in {page}"));
    page[start..].split('"').next().unwrap_or_default().to_string()
}
