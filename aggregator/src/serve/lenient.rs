//! Request targets as Prometheus (Go's net/http) takes them: a client that writes a query
//! into the URL without percent-encoding it — `curl -g '…/api/v1/query?query=up{job="api"}'`,
//! a Go program that formats the URL by hand — gets its answer from Prometheus, but hyper
//! refuses `"`, `<`, `>` and `` ` `` in a request target with a bare 400 and no body (the
//! `http` crate's URI grammar), and drops everything from a `#` on. The connection's bytes
//! pass through [`Lenient`], which percent-encodes those five bytes inside the request line's
//! target and nowhere else, so the handlers see what Prometheus' would.
//!
//! Where a request line is, is followed through HTTP/1 framing: the request line, the header
//! lines, then exactly `Content-Length` body bytes. Anything this does not follow — a
//! `Transfer-Encoding`, an upgrade (the web UI's WebSocket), an unclear `Content-Length`, a
//! protocol other than HTTP/1.x (the HTTP/2 preface), an overlong header line — turns the
//! rewriting off for the rest of the connection, which is then exactly what hyper would have
//! read: the rewriting can only ever touch a request line, never a body.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest header line followed; a longer one turns the rewriting off.
const MAX_HEADER_LINE: usize = 64 * 1024;

/// A byte of a request target that hyper refuses or cuts at, and Go's server keeps.
fn escaped(b: u8) -> bool {
    matches!(b, b'"' | b'<' | b'>' | b'`' | b'#')
}

#[derive(Debug)]
enum State {
    /// In a request line: `part` 0 is the method, 1 the target, 2 the version; `started`
    /// once a byte other than CR/LF came (blank lines before a request are skipped).
    Line {
        part: u8,
        started: bool,
        version: Vec<u8>,
    },
    /// In the header lines: the current line, the body length so far, and whether anything
    /// was seen that is not followed.
    Head {
        line: Vec<u8>,
        length: Option<u64>,
        unfollowed: bool,
    },
    /// This many body bytes to pass.
    Body(u64),
    /// Everything passes as it is, to the end of the connection.
    Through,
}

impl State {
    fn line() -> State {
        State::Line {
            part: 0,
            started: false,
            version: Vec::new(),
        }
    }
}

/// The rewriting of one connection's incoming bytes.
#[derive(Debug)]
pub struct Rewriter {
    state: State,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            state: State::line(),
        }
    }
}

impl Rewriter {
    /// Whether every byte from here on passes as it is.
    pub fn through(&self) -> bool {
        matches!(self.state, State::Through)
    }

    /// Appends `data`, rewritten, to `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            match &mut self.state {
                State::Through => {
                    out.extend_from_slice(data);
                    return;
                }
                State::Body(n) => {
                    let k = usize::try_from(*n).unwrap_or(usize::MAX).min(data.len());
                    out.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    *n -= k as u64;
                    if *n == 0 {
                        self.state = State::line();
                    }
                }
                State::Line {
                    part,
                    started,
                    version,
                } => {
                    let b = data[0];
                    data = &data[1..];
                    if !*started && (b == b'\r' || b == b'\n') {
                        out.push(b);
                        continue;
                    }
                    *started = true;
                    match b {
                        b'\n' => {
                            out.push(b);
                            let v = version.strip_suffix(b"\r").unwrap_or(version);
                            self.state = if *part == 2 && v.starts_with(b"HTTP/1.") {
                                State::Head {
                                    line: Vec::new(),
                                    length: None,
                                    unfollowed: false,
                                }
                            } else {
                                State::Through
                            };
                        }
                        b' ' => {
                            out.push(b);
                            *part += 1;
                            if *part > 2 {
                                self.state = State::Through;
                            }
                        }
                        _ if *part == 1 && escaped(b) => {
                            out.extend_from_slice(format!("%{b:02X}").as_bytes());
                        }
                        _ => {
                            out.push(b);
                            if *part == 2 {
                                version.push(b);
                                if version.len() > 16 {
                                    self.state = State::Through;
                                }
                            }
                        }
                    }
                }
                State::Head {
                    line,
                    length,
                    unfollowed,
                } => {
                    let b = data[0];
                    data = &data[1..];
                    out.push(b);
                    if b != b'\n' {
                        line.push(b);
                        if line.len() > MAX_HEADER_LINE {
                            self.state = State::Through;
                        }
                        continue;
                    }
                    let l = line.strip_suffix(b"\r").unwrap_or(line);
                    if l.is_empty() {
                        self.state = match (*unfollowed, *length) {
                            (true, _) => State::Through,
                            (false, Some(n)) if n > 0 => State::Body(n),
                            (false, _) => State::line(),
                        };
                        continue;
                    }
                    header(l, length, unfollowed);
                    line.clear();
                }
            }
        }
    }
}

/// Notes one header line: its `Content-Length` (two that differ, or one that is not all
/// digits, is not followed), or a header that changes the framing.
fn header(l: &[u8], length: &mut Option<u64>, unfollowed: &mut bool) {
    let Some(colon) = l.iter().position(|&c| c == b':') else {
        return;
    };
    let name = &l[..colon];
    let value = l[colon + 1..].trim_ascii();
    if name.eq_ignore_ascii_case(b"content-length") {
        let n = (!value.is_empty() && value.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(value).ok()?.parse::<u64>().ok())
            .flatten();
        match (n, *length) {
            (Some(n), None) => *length = Some(n),
            (Some(n), Some(m)) if n == m => {}
            _ => *unfollowed = true,
        }
    } else if name.eq_ignore_ascii_case(b"transfer-encoding")
        || name.eq_ignore_ascii_case(b"upgrade")
    {
        *unfollowed = true;
    }
}

/// A connection whose incoming request targets are rewritten (see the module).
pub struct Lenient<S> {
    inner: S,
    rewriter: Rewriter,
    pending: Vec<u8>,
    at: usize,
}

impl<S> Lenient<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Lenient {
            inner,
            rewriter: Rewriter::default(),
            pending: Vec::new(),
            at: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lenient<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if me.at < me.pending.len() {
                let k = buf.remaining().min(me.pending.len() - me.at);
                buf.put_slice(&me.pending[me.at..me.at + k]);
                me.at += k;
                if me.at == me.pending.len() {
                    me.pending.clear();
                    me.at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if me.rewriter.through() {
                return Pin::new(&mut me.inner).poll_read(cx, buf);
            }
            if let State::Body(n) = &mut me.rewriter.state {
                // A body is read straight into the caller's buffer (as large as hyper makes
                // it); bytes past its end go back through the rewriting.
                let before = buf.filled().len();
                ready!(Pin::new(&mut me.inner).poll_read(cx, buf))?;
                let got = buf.filled().len() - before;
                if (got as u64) <= *n {
                    *n -= got as u64;
                    if *n == 0 {
                        me.rewriter.state = State::line();
                    }
                    return Poll::Ready(Ok(()));
                }
                let end = before + usize::try_from(*n).unwrap_or(usize::MAX);
                let rest = buf.filled()[end..].to_vec();
                buf.set_filled(end);
                me.rewriter.state = State::line();
                me.rewriter.feed(&rest, &mut me.pending);
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut me.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            me.rewriter.feed(rb.filled(), &mut me.pending);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Lenient<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], splits: &[usize]) -> Vec<u8> {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        let mut at = 0;
        for &s in splits.iter().chain(std::iter::once(&input.len())) {
            let s = s.clamp(at, input.len());
            r.feed(&input[at..s], &mut out);
            at = s;
        }
        out
    }

    /// Every way of cutting the stream into reads gives the same rewriting.
    fn check(input: &[u8], want: &[u8]) {
        assert_eq!(run(input, &[]), want, "{}", String::from_utf8_lossy(input));
        for i in 0..=input.len() {
            assert_eq!(run(input, &[i]), want, "cut at {i}");
        }
        for step in [1, 2, 3, 7] {
            let cuts: Vec<usize> = (0..input.len()).step_by(step).collect();
            assert_eq!(run(input, &cuts), want, "reads of {step}");
        }
    }

    #[test]
    fn only_request_targets_are_rewritten() {
        // Targets; the version and headers are left alone.
        check(
            b"GET /api/v1/query?query=up{job=\"a\"}>0#c HTTP/1.1\r\nX-Q: \"<>\"\r\n\r\n",
            b"GET /api/v1/query?query=up{job=%22a%22}%3E0%23c HTTP/1.1\r\nX-Q: \"<>\"\r\n\r\n",
        );
        // A body of exactly Content-Length bytes is not, and the next request line is.
        check(
            b"POST /w?a=\"1\" HTTP/1.1\r\ncontent-length: 11\r\n\r\nGET /\"x\" H1\nGET /q?<\" HTTP/1.1\r\n\r\n",
            b"POST /w?a=%221%22 HTTP/1.1\r\ncontent-length: 11\r\n\r\nGET /\"x\" H1\nGET /q?%3C%22 HTTP/1.1\r\n\r\n",
        );
        // Blank lines before a request, bare LF line ends, HTTP/1.0.
        check(
            b"\r\n\r\nGET /a?`x` HTTP/1.0\nHost: h\n\nGET /b?\" HTTP/1.1\n\n",
            b"\r\n\r\nGET /a?%60x%60 HTTP/1.0\nHost: h\n\nGET /b?%22 HTTP/1.1\n\n",
        );
    }

    /// Gives at most `m` bytes a read.
    struct Trickle<'a> {
        data: &'a [u8],
        m: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let k = self.m.min(self.data.len()).min(buf.remaining());
            buf.put_slice(&self.data[..k]);
            self.data = &self.data[k..];
            Poll::Ready(Ok(()))
        }
    }

    /// Through the connection wrapper — bodies read straight into the caller's buffer, and
    /// what comes after them in the same read rewritten — the bytes are the rewriter's, for
    /// any sizes of the inner reads and of the caller's buffer.
    #[tokio::test]
    async fn the_connection_reads_what_the_rewriter_writes() {
        use tokio::io::AsyncReadExt;
        let input = b"POST /w?\"a\" HTTP/1.1\r\nContent-Length: 21\r\n\r\n\"body\" <with> `#`!!!!GET /q?\"b\"#c HTTP/1.1\r\n\r\nPOST /w HTTP/1.1\r\nContent-Length: 3\r\n\r\n\"\"\"GET /?< HTTP/1.1\r\n\r\n";
        let want = run(input, &[]);
        let has = |w: &[u8]| want.windows(w.len()).any(|x| x == w);
        assert!(
            has(b"!GET /q?%22b%22%23c "),
            "{}",
            String::from_utf8_lossy(&want)
        );
        assert!(has(b"\"body\" <with> `#`!!!!GET"));
        assert!(has(b"\"\"\"GET /?%3C "));
        for m in [1, 3, 16, 50, 4096] {
            for cap in [1, 7, 64, 100_000] {
                let mut conn = Lenient::new(Trickle { data: input, m });
                let mut got = Vec::new();
                let mut chunk = vec![0u8; cap];
                loop {
                    let n = conn.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&chunk[..n]);
                }
                assert_eq!(got, want, "reads of {m}, buffer of {cap}");
            }
        }
    }

    #[test]
    fn what_is_not_followed_passes_as_it_is() {
        for input in [
            // Chunked bodies, upgrades (WebSocket), unclear lengths: nothing after the headers.
            &b"POST /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\"\r\n0\r\n\r\nGET /?\" HTTP/1.1\r\n\r\n"[..],
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /?\" HTTP/1.1\r\n\r\n",
            b"POST /w HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcGET /?\" HTTP/1.1\r\n\r\n",
            b"POST /w HTTP/1.1\r\nContent-Length: +3\r\n\r\nabcGET /?\" HTTP/1.1\r\n\r\n",
            // The HTTP/2 preface, HTTP/0.9, a line with extra spaces.
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\"\"<>",
            b"GET /\"x\"\r\nGET /?\" HTTP/1.1\r\n\r\n",
        ] {
            let out = run(input, &[]);
            let after = |b: &[u8]| {
                let n = b.windows(4).position(|w| w == b"\r\n\r\n").map_or(b.len(), |p| p + 4);
                b[n..].to_vec()
            };
            assert_eq!(after(&out), after(input), "{}", String::from_utf8_lossy(input));
        }
        // The first request's own target is still rewritten when its line was followed.
        let out = run(
            b"GET /?\" HTTP/1.1\r\nUpgrade: x\r\n\r\nGET /?\" HTTP/1.1\r\n\r\n",
            &[],
        );
        assert_eq!(
            out,
            b"GET /?%22 HTTP/1.1\r\nUpgrade: x\r\n\r\nGET /?\" HTTP/1.1\r\n\r\n"
        );
        // An overlong header line stops the rewriting.
        let mut input = b"GET / HTTP/1.1\r\nX: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_HEADER_LINE + 10));
        input.extend_from_slice(b"\r\n\r\nGET /?\" HTTP/1.1\r\n\r\n");
        assert_eq!(run(&input, &[]), input);
    }
}
