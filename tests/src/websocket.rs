//! A small WebSocket client (RFC 6455) for the tests: the opening handshake (its accept key
//! checked), text frames from the server (fragmented or not, pings answered), and a close.
//! What Grafana's live mode and `logcli --tail` speak to `/loki/api/v1/tail`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};

/// RFC 6455's example key and the accept value it must produce.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// An open WebSocket.
pub struct WebSocket {
    s: TcpStream,
}

/// What the handshake got.
pub enum Opened {
    /// 101 and a valid accept key.
    Socket(WebSocket),
    /// Any other answer: status and body.
    Refused(u16, String),
}

impl WebSocket {
    /// Opens `path` on `addr`.
    pub fn connect(addr: SocketAddr, path: &str) -> anyhow::Result<Opened> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b)? == 0 {
                bail!("connection closed during the handshake");
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no status")?;
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if status != 101 {
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            s.read_exact(&mut body)?;
            return Ok(Opened::Refused(
                status,
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        if header("sec-websocket-accept").as_deref() != Some(ACCEPT) {
            bail!("bad Sec-WebSocket-Accept in {head}");
        }
        Ok(Opened::Socket(WebSocket { s }))
    }

    /// The next text message; `None` when the server closed.
    pub fn read_text(&mut self, timeout: Duration) -> anyhow::Result<Option<String>> {
        self.s.set_read_timeout(Some(timeout))?;
        let mut msg = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.s.read_exact(&mut h)?;
            let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
            if h[1] & 0x80 != 0 {
                bail!("a server frame must not be masked");
            }
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    self.s.read_exact(&mut l)?;
                    u64::from(u16::from_be_bytes(l))
                }
                127 => {
                    let mut l = [0u8; 8];
                    self.s.read_exact(&mut l)?;
                    u64::from_be_bytes(l)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len)?];
            self.s.read_exact(&mut payload)?;
            match opcode {
                0 | 1 => {
                    msg.extend_from_slice(&payload);
                    if fin {
                        return Ok(Some(String::from_utf8(msg)?));
                    }
                }
                8 => return Ok(None),
                9 => self.frame(0xA, &payload)?,
                _ => {}
            }
        }
    }

    /// Sends a masked frame (clients must mask).
    fn frame(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut f = vec![0x80 | opcode];
        if payload.len() < 126 {
            f.push(0x80 | payload.len() as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&u16::try_from(payload.len())?.to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f)?;
        Ok(())
    }

    /// Says goodbye (status 1000).
    pub fn close(mut self) -> anyhow::Result<()> {
        self.frame(0x8, &1000u16.to_be_bytes())
    }
}
