//! A small HTTP/1.1 GET client for scrapes and HTTP checks: one connection per request (the
//! targets are local and scraped every few seconds; a pool would hold sockets open on every
//! exporter), TLS through rustls with the system's roots or a given CA, the body capped, and
//! the server's certificate chain reported so checks can watch its expiry.

use std::sync::Arc;

use std::time::Instant;
use telltale_common::config::Invalid;

use http_body_util::BodyExt;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// What came back.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header (empty when absent).
    pub content_type: String,
    /// The body, at most the cap.
    pub body: Vec<u8>,
    /// The earliest `notAfter` of the server's certificate chain (Unix seconds), for HTTPS.
    pub cert_not_after: Option<i64>,
    /// Time to the response headers.
    pub elapsed: std::time::Duration,
}

/// Why a request failed; the scrape and check sources report it as the target's error.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TCP connection failed (refused, unreachable).
    #[error("connect {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TLS handshake failed (an untrusted or expired certificate, a wrong name).
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// rustls' error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed (`stage`: handshake, request, reading the body).
    #[error("{stage}: {source}")]
    Http {
        /// Where it failed.
        stage: &'static str,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The body is larger than the limit; the connection was closed.
    #[error("body larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The request cannot be made as given (no host, https without TLS settings).
    #[error("{0}")]
    Request(String),
}

/// Where a CA bundle usually is: Debian, then RHEL.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// A rustls client configuration trusting `ca_file`, or the system's bundle when `None`.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, Invalid> {
    tls_client_config(ca_file, None)
}

/// [`tls_config`] presenting the client certificate `(cert_file, key_file)` when given.
pub fn tls_client_config(
    ca_file: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Arc<rustls::ClientConfig>, Invalid> {
    let mut roots = rustls::RootCertStore::empty();
    let files: Vec<std::path::PathBuf> = match ca_file {
        Some(f) => vec![f.to_path_buf()],
        None => SYSTEM_BUNDLES
            .iter()
            .map(std::path::PathBuf::from)
            .filter(|p| p.exists())
            .take(1)
            .collect(),
    };
    for f in &files {
        let certs = CertificateDer::pem_file_iter(f)
            .map_err(|e| Invalid(format!("{}: {e}", f.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Invalid(format!("{}: {e}", f.display())))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 && ca_file.is_some() {
            return Err(Invalid(format!("{}: no usable certificate", f.display())));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Invalid(e.to_string()))?
        .with_root_certificates(roots);
    let cfg = match client {
        None => cfg.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| Invalid(format!("{}: {e}", cert.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Invalid(format!("{}: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(Invalid(format!("{}: no certificate found", cert.display())));
            }
            let k = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Invalid(format!("{}: no private key found: {e}", key.display())))?;
            cfg.with_client_auth_cert(chain, k).map_err(|e| {
                Invalid(format!(
                    "{}: does not fit {}: {e}",
                    key.display(),
                    cert.display()
                ))
            })?
        }
    };
    Ok(Arc::new(cfg))
}

/// Checks that `url` is an absolute http(s) URL this client can fetch.
pub fn parse_url(url: &str) -> Result<Uri, Invalid> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(Invalid(format!(
                "invalid URL {url:?}: use http:// or https://"
            )));
        }
    }
    if uri.host().is_none() {
        return Err(Invalid(format!("invalid URL {url:?}: no host")));
    }
    Ok(uri)
}

fn earliest_not_after(certs: &[CertificateDer<'_>]) -> Option<i64> {
    certs.iter().filter_map(|c| not_after(c)).min()
}

/// Reads one DER element: `(tag, content, rest)`.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, r) = rest.split_at(n);
        rest = r;
        bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// The `notAfter` of an X.509 certificate (Unix seconds), read straight from the DER:
/// Certificate → tbsCertificate → [version], serial, signature, issuer, validity → notAfter.
/// A few lines instead of a full X.509 parser, which would grow the agent's resident code.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, cert, _) = der(cert)?;
    let (_, tbs, _) = der(cert)?;
    let (tag, _, mut rest) = der(tbs)?;
    if tag != 0xa0 {
        // No explicit version: what was read was the serial number.
        rest = der(tbs)?.2;
    } else {
        rest = der(rest)?.2; // serial
    }
    let rest = der(rest)?.2; // signature algorithm
    let rest = der(rest)?.2; // issuer
    let (_, validity, _) = der(rest)?;
    let after_not_before = der(validity)?.2;
    let (tag, time, _) = der(after_not_before)?;
    let text = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            // UTCTime, YYMMDDHHMMSSZ: 50-99 are 1950-1999.
            let yy: i64 = text.get(0..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(0..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, h, m, s) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// GETs `uri`. `tls` is needed for https. The caller bounds the time with a timeout.
pub async fn get(
    uri: &Uri,
    tls: Option<&Arc<rustls::ClientConfig>>,
    headers: &[(&str, &str)],
    max_body: usize,
) -> Result<Response, HttpError> {
    let host = uri
        .host()
        .ok_or_else(|| HttpError::Request("URL without host".into()))?;
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect((bare_host, port))
        .await
        .map_err(|source| HttpError::Connect {
            addr: format!("{host}:{port}"),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let mut req = hyper::Request::get(path).header("host", authority);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| HttpError::Request(e.to_string()))?;
    if https {
        let cfg =
            tls.ok_or_else(|| HttpError::Request("https needs a TLS configuration".into()))?;
        let name = ServerName::try_from(bare_host.to_string())
            .map_err(|e| HttpError::Request(format!("server name {bare_host:?}: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| HttpError::Tls {
                addr: format!("{host}:{port}"),
                source,
            })?;
        let not_after = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(earliest_not_after);
        let mut r = exchange(TokioIo::new(stream), req, max_body, started).await?;
        r.cert_not_after = not_after;
        Ok(r)
    } else {
        exchange(TokioIo::new(tcp), req, max_body, started).await
    }
}

async fn exchange<T>(
    io: T,
    req: hyper::Request<http_body_util::Empty<hyper::body::Bytes>>,
    max_body: usize,
    started: Instant,
) -> Result<Response, HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|source| HttpError::Http {
            stage: "HTTP handshake",
            source,
        })?;
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|source| HttpError::Http {
            stage: "HTTP request",
            source,
        })?;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| HttpError::Http {
            stage: "reading the body",
            source,
        })?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > max_body {
                conn.abort();
                return Err(HttpError::TooLarge { limit: max_body });
            }
            buf.extend_from_slice(data);
        }
    }
    drop(sender);
    conn.abort();
    Ok(Response {
        status,
        content_type,
        body: buf,
        cert_not_after: None,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_after_matches_the_certificate() {
        for (y, m, d) in [(2049, 12, 31), (2051, 3, 4), (2030, 1, 1), (1999, 6, 15)] {
            let mut p = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            p.not_after = rcgen::date_time_ymd(y, m, d);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            let want = days_from_civil(i64::from(y), i64::from(m), i64::from(d)) * 86_400;
            assert_eq!(not_after(cert.der()), Some(want), "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(not_after(b"\x30\x03\x02\x01"), None);
        assert_eq!(not_after(&[]), None);
    }
}
