//! Headless Chromium for the browser tests, driven through chromedriver: Debian's `chromium` and
//! `chromium-driver` (`CHROMIUM` and `CHROMEDRIVER` point elsewhere), never a downloaded browser.
//! Under `CI=true` a missing browser fails the test; elsewhere the test is skipped with a loud
//! line on stderr. Included by path (`#[path = ".../tests/browser_support/mod.rs"]`) from the
//! crates whose tests use a browser.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::Client;

/// The flags the browser runs with, besides a fresh `--user-data-dir`.
const CHROMIUM_FLAGS: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];

/// A browser session; chromedriver, the browser and its profile go when it is dropped.
pub struct Browser {
    pub client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

/// Starts chromedriver and a headless Chromium session, or says why it cannot: `None` (after a
/// SKIPPED line naming `test`) when the binaries are missing outside CI; a panic under
/// `CI=true`. `purpose` completes "headless Chromium and chromedriver are needed ...".
pub async fn open(test: &str, purpose: &str) -> Option<Browser> {
    let browser =
        std::env::var_os("CHROMIUM").map(PathBuf::from).or_else(|| on_path(&["chromium", "chromium-browser"]));
    let chromedriver = std::env::var_os("CHROMEDRIVER").map(PathBuf::from).or_else(|| on_path(&["chromedriver"]));
    let (Some(browser), Some(chromedriver)) = (browser, chromedriver) else {
        let msg = format!(
            "headless Chromium and chromedriver are needed {purpose}: install them with \
             `apt-get install -y chromium chromium-driver` (or point CHROMIUM and CHROMEDRIVER at them)"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("\n*** SKIPPED {test}: {msg} ***\n");
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let (driver, port) = start_driver(&chromedriver);
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    let caps = serde_json::json!({ "goog:chromeOptions": { "binary": browser, "args": args } });
    let serde_json::Value::Object(caps) = caps else { unreachable!("a JSON object literal") };
    let client = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("chromedriver on port {port} did not start {}: {e}", browser.display()));
    Some(Browser { client, _driver: driver, _profile: profile })
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

/// Kills chromedriver (and with it the browser it started) however the test ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver(chromedriver: &Path) -> (Driver, u16) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
    let mut driver = Driver(child);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (driver, port);
        }
        if let Some(status) = driver.0.try_wait().unwrap() {
            panic!("chromedriver exited with {status} before listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
