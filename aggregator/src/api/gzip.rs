//! gzip for clients that ask for it (`Accept-Encoding: gzip`), as Prometheus answers Grafana:
//! a range query over many series is text that compresses ten to one. Bodies under 1 KiB,
//! already encoded ones, streams (WebSocket upgrades) and binary types (remote_write's snappy,
//! images) go out as they are.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::io::Write;

/// Smaller bodies gain nothing worth the CPU.
const MIN_BYTES: usize = 1024;
/// Bodies above this are sent as they are (buffering it to compress would double the memory).
const MAX_BYTES: usize = 256 << 20;

fn accepts_gzip(req: &Request) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.trim().split(';');
            let name = parts.next().unwrap_or("").trim();
            // `gzip;q=0` refuses it.
            let q0 = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q0
        })
}

fn compressible(r: &Response) -> bool {
    if r.headers().contains_key(header::CONTENT_ENCODING) || r.status().as_u16() == 101 {
        return false;
    }
    let ct = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ct.starts_with("text/")
        || ct.starts_with("application/json")
        || ct.contains("javascript")
        || ct.starts_with("image/svg")
}

/// The middleware.
pub async fn gzip(req: Request, next: Next) -> Response {
    let wants = accepts_gzip(&req);
    let resp = next.run(req).await;
    // A body of unknown or too large a size streams out as it is (buffering it to compress
    // could fail half-way, and the client asked for gzip, not required it).
    let size = axum::body::HttpBody::size_hint(resp.body()).upper();
    if !wants || !compressible(&resp) || size.is_none_or(|n| n > MAX_BYTES as u64) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match to_bytes(body, MAX_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the response body: {e}"),
            )
                .into_response();
        }
    };
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if bytes.len() < MIN_BYTES {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    let zipped = enc.write_all(&bytes).and_then(|()| enc.finish());
    match zipped {
        Ok(z) => {
            parts
                .headers
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(z))
        }
        Err(_) => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use std::io::Read;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route("/big", get(|| async { "x".repeat(10_000) }))
            .route("/small", get(|| async { "tiny" }))
            .route(
                "/bin",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/x-protobuf")],
                        vec![0u8; 10_000],
                    )
                }),
            )
            .layer(axum::middleware::from_fn(gzip))
    }

    async fn get_with(path: &str, enc: Option<&str>) -> Response {
        let mut b = Request::builder().uri(path);
        if let Some(e) = enc {
            b = b.header(header::ACCEPT_ENCODING, e);
        }
        app().oneshot(b.body(Body::empty()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn text_is_gzipped_only_for_clients_that_ask() {
        let r = get_with("/big", Some("deflate, gzip;q=0.8")).await;
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        let z = to_bytes(r.into_body(), usize::MAX).await.unwrap();
        assert!(z.len() < 200, "{}", z.len());
        let mut out = String::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "x".repeat(10_000));
        for (path, enc) in [
            ("/big", None),
            ("/big", Some("gzip;q=0")),
            ("/big", Some("br")),
            ("/small", Some("gzip")),
            ("/bin", Some("gzip")),
        ] {
            let r = get_with(path, enc).await;
            assert!(
                !r.headers().contains_key(header::CONTENT_ENCODING),
                "{path} {enc:?}"
            );
        }
    }
}
