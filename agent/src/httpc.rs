//! A small HTTP/1.1 GET client for scrapes and HTTP checks: one connection per request (the
//! targets are local and scraped every few seconds; a pool would hold sockets open on every
//! exporter), TLS through rustls with the system's roots or a given CA, the body capped, and
//! the server's certificate chain reported so checks can watch its expiry.

use std::sync::Arc;
use std::time::Instant;

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

/// Where a CA bundle usually is: Debian, then RHEL.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// A rustls client configuration trusting `ca_file`, or the system's bundle when `None`.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
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
            .map_err(|e| format!("{}: {e}", f.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", f.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 && ca_file.is_some() {
            return Err(format!("{}: no usable certificate", f.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Checks that `url` is an absolute http(s) URL this client can fetch.
pub fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("invalid URL {url:?}: use http:// or https://")),
    }
    if uri.host().is_none() {
        return Err(format!("invalid URL {url:?}: no host"));
    }
    Ok(uri)
}

fn earliest_not_after(certs: &[CertificateDer<'_>]) -> Option<i64> {
    certs
        .iter()
        .filter_map(|c| x509_parser::parse_x509_certificate(c).ok())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .min()
}

/// GETs `uri`. `tls` is needed for https. The caller bounds the time with a timeout.
pub async fn get(
    uri: &Uri,
    tls: Option<&Arc<rustls::ClientConfig>>,
    headers: &[(&str, &str)],
    max_body: usize,
) -> Result<Response, String> {
    let host = uri.host().ok_or("URL without host")?;
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let mut req = hyper::Request::get(path).header("host", authority);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    if https {
        let cfg = tls.ok_or("https needs a TLS configuration")?;
        let name = ServerName::try_from(bare_host.to_string())
            .map_err(|e| format!("server name {bare_host:?}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
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
) -> Result<Response, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP request: {e}"))?;
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
        let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > max_body {
                conn.abort();
                return Err(format!("body larger than {max_body} bytes"));
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
