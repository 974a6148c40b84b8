//! A headless Chromium driven through chromedriver (both from Debian's packages) over the W3C
//! WebDriver protocol: load a page, run a script in it, type into a field, take a screenshot,
//! read the browser's console log.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::peers::free_tcp_port;

/// chromedriver from Debian's chromium-driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser session; the browser quits and chromedriver stops when it is dropped.
pub struct Browser {
    driver: std::process::Child,
    addr: SocketAddr,
    session: String,
}

/// The W3C key code of Enter.
pub const ENTER: &str = "\u{E007}";

impl Browser {
    /// Starts chromedriver and a headless Chromium (a 1280×900 window).
    pub fn start(chromedriver: &Path) -> anyhow::Result<Browser> {
        let port = free_tcp_port();
        // Its output (and the browser's) goes nowhere: an unread pipe would fill and stall it.
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start chromedriver")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let end = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > end {
                bail!("chromedriver did not listen on {addr}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"]},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = b.call("POST", "/session", Some(caps))?;
        b.session = v["sessionId"]
            .as_str()
            .context("no session id")?
            .to_string();
        Ok(b)
    }

    /// One WebDriver call (HTTP/1.1, one connection each); the answer's `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        // Read the head, then exactly Content-Length bytes: chromedriver may keep the
        // connection open after its answer.
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        let (head, body_start) = loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                bail!("{method} {path}: connection closed before an answer");
            }
            raw.extend_from_slice(&buf[..n]);
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break (String::from_utf8_lossy(&raw[..i]).to_string(), i + 4);
            }
        };
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .context("no Content-Length")?;
        while raw.len() < body_start + len {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        let rest = String::from_utf8_lossy(&raw[body_start..]).to_string();
        let v: Value = serde_json::from_str(&rest)
            .with_context(|| format!("{method} {path}: {head}\n{rest}"))?;
        if !head.contains(" 200 ") {
            bail!("{method} {path}: {}", v["value"]);
        }
        Ok(v["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Loads `url`.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        )?;
        Ok(())
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub fn eval(&self, script: &str) -> anyhow::Result<Value> {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Runs `script` until it returns something other than null/false, or fails after
    /// `timeout`.
    pub fn wait_for(&self, script: &str, timeout: Duration) -> anyhow::Result<Value> {
        let end = Instant::now() + timeout;
        loop {
            let v = self.eval(script)?;
            if !v.is_null() && v != Value::Bool(false) {
                return Ok(v);
            }
            if Instant::now() > end {
                bail!("{script:?} stayed {v} for {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clears the element `css` and types `text` into it (`ENTER` presses Enter).
    pub fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let e = self.call(
            "POST",
            &self.session_path("/element"),
            Some(json!({"using": "css selector", "value": css})),
        )?;
        let id = e
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .context("no element id")?
            .to_string();
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/clear")),
            Some(json!({})),
        )?;
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/value")),
            Some(json!({"text": text})),
        )?;
        Ok(())
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let v = self.call("GET", &self.session_path("/screenshot"), None)?;
        let png = base64(v.as_str().context("no screenshot")?)?;
        std::fs::write(path, png)?;
        Ok(())
    }

    /// The browser's console messages since the last call, as (level, text).
    pub fn console(&self) -> anyhow::Result<Vec<(String, String)>> {
        let v = self.call(
            "POST",
            &self.session_path("/se/log"),
            Some(json!({"type": "browser"})),
        )?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or("").to_string(),
                            e["message"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Decodes standard base64.
fn base64(s: &str) -> anyhow::Result<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        let mut k = 0;
        for &c in chunk {
            if c == b'=' {
                break;
            }
            n = (n << 6) | val(c).context("not base64")?;
            k += 1;
        }
        n <<= 6 * (4 - k);
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..k.max(1)]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(super::base64("aGk=").unwrap(), b"hi");
        assert_eq!(super::base64("YWJj").unwrap(), b"abc");
    }
}
