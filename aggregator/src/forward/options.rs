//! `[[remote_write]]` in `aggregator.toml`: where a queue sends, how it authenticates, what it
//! relabels, and how it batches. Validated at start (a bad key exits with status 2), files
//! (tokens, passwords, TLS material) read then too.
//!
//! ```toml
//! [[remote_write]]
//! name = "vm"                             # default: the URL's host:port; names the queue's
//!                                         # position file and its metrics' `remote` label
//! url = "https://vminsert:8480/insert/0/prometheus/api/v1/write"
//! bearer_token_file = "/etc/telltale/vm.token"   # or bearer_token, or [remote_write.basic_auth]
//! headers = { "X-Scope-OrgID" = "team-a" }
//! timeout = "30s"
//!
//! [remote_write.tls]                      # https only
//! ca_file = "/etc/telltale/vm-ca.crt"      # default: the system's bundle
//! cert_file = "/etc/telltale/client.crt"  # a client certificate (mutual TLS), with key_file
//! key_file = "/etc/telltale/client.key"
//!
//! [[remote_write.write_relabel_configs]]  # Prometheus' relabelling, applied per series
//! source_labels = ["__name__"]
//! regex = "go_.*"
//! action = "drop"
//!
//! [remote_write.queue]
//! shards = 4                              # requests in flight at once
//! max_samples_per_send = 20000
//! batch_send_deadline = "1s"              # a partial batch waits at most this long
//! min_backoff = "30ms"                    # retries of 5xx, 429 and network errors double
//! max_backoff = "5s"                      # from min to max, without end
//! max_wal_bytes = "1GiB"                  # WAL kept only for this queue; beyond it the
//!                                         # oldest segments are dropped and counted
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use telltale_common::config::{ConfigError, byte_size, humantime_duration_opt};
use telltale_common::relabel::{self, Rule, RuleConfig};

/// `[[remote_write]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteSection {
    /// Default: the URL's `host:port`.
    pub name: Option<String>,
    /// The receiver's remote_write endpoint.
    pub url: String,
    /// `Authorization: Bearer` token.
    pub bearer_token: Option<String>,
    /// A file holding the token.
    pub bearer_token_file: Option<PathBuf>,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuthSection>,
    /// Extra headers on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per request (default `30s`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub timeout: Option<Duration>,
    /// TLS for `https` URLs.
    pub tls: Option<TlsSection>,
    /// Relabelling per series before sending.
    #[serde(default)]
    pub write_relabel_configs: Vec<RuleConfig>,
    /// Batching and retries.
    #[serde(default)]
    pub queue: QueueSection,
}

/// `[remote_write.basic_auth]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSection {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Option<String>,
    /// A file holding the password.
    pub password_file: Option<PathBuf>,
}

/// `[remote_write.tls]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM CA certificates the receiver's certificate must chain to (default: the system's
    /// bundle).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain.
    pub cert_file: Option<PathBuf>,
    /// Its PEM private key.
    pub key_file: Option<PathBuf>,
}

/// `[remote_write.queue]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// Requests in flight at once (default 4, 1 to 64).
    pub shards: Option<usize>,
    /// Samples per request (default 20000, 1 to 1 000 000). Larger requests cost every
    /// side less per sample: from 5000 to 20000, VictoriaMetrics' CPU per million samples
    /// fell from 0.91 to 0.60 s and the queue's own by a tenth (`telltale-bench forward
    /// --queue`); the body is still about 0.5 MB before compression.
    pub max_samples_per_send: Option<usize>,
    /// Longest a partial batch waits (default `1s`, as vmagent's flush interval).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub batch_send_deadline: Option<Duration>,
    /// First retry delay (default `30ms`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub min_backoff: Option<Duration>,
    /// Longest retry delay (default `5s`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub max_backoff: Option<Duration>,
    /// WAL bytes kept for this queue beyond what storage keeps anyway (default `1GiB`).
    #[serde(default, deserialize_with = "opt_bytes")]
    pub max_wal_bytes: Option<u64>,
}

/// An optional byte size (`"1GiB"` or a number), for the exporters' sections.
pub(crate) fn opt_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    byte_size(d).map(Some)
}

/// A validated queue.
#[derive(Debug, Clone)]
pub struct RemoteWriteOptions {
    /// The queue's name.
    pub name: String,
    /// The endpoint.
    pub url: String,
    /// The client (TLS, timeout and headers set).
    pub client: reqwest::Client,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// Relabelling.
    pub relabel: Arc<[Rule]>,
    /// Requests in flight.
    pub shards: usize,
    /// Samples per request.
    pub max_samples_per_send: usize,
    /// Longest a partial batch waits.
    pub batch_send_deadline: Duration,
    /// Retry delays.
    pub min_backoff: Duration,
    /// See `min_backoff`.
    pub max_backoff: Duration,
    /// WAL bytes kept for this queue.
    pub max_wal_bytes: u64,
}

/// `[storage] mode`: what the aggregator does with the samples it acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    /// Store them (WAL, head, blocks), answer queries on them and forward them.
    Store,
    /// Forward them only, like Prometheus' agent mode and vmagent: each is logged to the WAL
    /// (acknowledged once durable, as always) and sent to every `[[remote_write]]` from
    /// there; the WAL is deleted once sent. Nothing is kept to query: the query API answers
    /// with an error naming this setting, and what needs stored samples (rule, detector and
    /// SLO files, reports) is a configuration error — they run where the samples go (vmalert
    /// on VictoriaMetrics, Mimir's ruler, or a storing aggregator). Logs, traces, agents,
    /// `up`, alert routing and remediation work as in `store`.
    Forward,
}

/// The checks of `mode = "forward"`: at least one `[[remote_write]]` (else every sample
/// would be dropped once acknowledged), and none of `needs_samples` — (what, set) pairs of
/// the features that read stored samples.
pub fn check_forward_only(
    file: &Path,
    queues: &[RemoteWriteOptions],
    needs_samples: &[(&str, bool)],
) -> Result<(), ConfigError> {
    if queues.is_empty() {
        return Err(ConfigError::invalid(
            file,
            "storage.mode",
            "\"forward\" needs at least one [[remote_write]]: samples are kept only until sent",
        ));
    }
    if let Some((what, _)) = needs_samples.iter().find(|(_, set)| *set) {
        return Err(ConfigError::invalid(
            file,
            "storage.mode",
            format!(
                "\"forward\" keeps no samples to evaluate {what} on: run them where the \
                 samples are forwarded, or use mode = \"store\""
            ),
        ));
    }
    Ok(())
}

/// Validates every `[[remote_write]]` (names unique).
pub fn validate(
    file: &Path,
    sections: &[RemoteWriteSection],
) -> Result<Vec<RemoteWriteOptions>, ConfigError> {
    let mut out: Vec<RemoteWriteOptions> = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        let key = |k: &str| format!("remote_write[{i}].{k}");
        let o = one(file, s, &key)?;
        if out.iter().any(|p| p.name == o.name) {
            return Err(ConfigError::invalid(
                file,
                &key("name"),
                format!(
                    "{:?} is used by another [[remote_write]]: names must differ (set `name`)",
                    o.name
                ),
            ));
        }
        out.push(o);
    }
    Ok(out)
}

fn one(
    file: &Path,
    s: &RemoteWriteSection,
    key: &dyn Fn(&str) -> String,
) -> Result<RemoteWriteOptions, ConfigError> {
    let bad = |k: &str, m: String| ConfigError::invalid(file, &key(k), m);
    let (url, client, authorization) = http_client(
        &bad,
        &HttpParts {
            url: &s.url,
            bearer_token: &s.bearer_token,
            bearer_token_file: &s.bearer_token_file,
            basic_auth: &s.basic_auth,
            headers: &s.headers,
            timeout: s.timeout,
            tls: s.tls.as_ref(),
        },
    )?;
    let name = match &s.name {
        Some(n) => n.clone(),
        None => match url.port_or_known_default() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        },
    };
    if name.is_empty()
        || name.len() > 100
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
    {
        return Err(bad(
            "name",
            format!("{name:?}: use 1 to 100 letters, digits, `_`, `.`, `:` or `-`"),
        ));
    }
    let relabel: Arc<[Rule]> = relabel::compile(&s.write_relabel_configs)
        .map_err(|e| bad("write_relabel_configs", e.0))?
        .into();
    let q = &s.queue;
    let shards = q.shards.unwrap_or(4);
    if !(1..=64).contains(&shards) {
        return Err(bad("queue.shards", format!("{shards}: use 1 to 64")));
    }
    let max_samples_per_send = q.max_samples_per_send.unwrap_or(20_000);
    if !(1..=1_000_000).contains(&max_samples_per_send) {
        return Err(bad(
            "queue.max_samples_per_send",
            format!("{max_samples_per_send}: use 1 to 1000000"),
        ));
    }
    let min_backoff = q.min_backoff.unwrap_or(Duration::from_millis(30));
    let max_backoff = q.max_backoff.unwrap_or(Duration::from_secs(5));
    if min_backoff.is_zero() || max_backoff < min_backoff {
        return Err(bad(
            "queue.max_backoff",
            "min_backoff must be above 0 and max_backoff at least min_backoff".into(),
        ));
    }
    let batch_send_deadline = q.batch_send_deadline.unwrap_or(Duration::from_secs(1));
    if batch_send_deadline < Duration::from_millis(10) {
        return Err(bad(
            "queue.batch_send_deadline",
            "must be at least 10ms".into(),
        ));
    }
    Ok(RemoteWriteOptions {
        name,
        url: s.url.clone(),
        client,
        authorization,
        relabel,
        shards,
        max_samples_per_send,
        batch_send_deadline,
        min_backoff,
        max_backoff,
        max_wal_bytes: q.max_wal_bytes.unwrap_or(1 << 30),
    })
}

/// How an exporter reaches its receiver, as written: shared by `[[remote_write]]` and
/// `[clickhouse]`.
pub(super) struct HttpParts<'a> {
    pub url: &'a str,
    pub bearer_token: &'a Option<String>,
    pub bearer_token_file: &'a Option<PathBuf>,
    pub basic_auth: &'a Option<BasicAuthSection>,
    pub headers: &'a BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub tls: Option<&'a TlsSection>,
}

/// Checks the URL, reads the credentials and builds the client (TLS, timeout, headers);
/// returns the URL, the client and the `Authorization` header. `bad` names the key at fault.
pub(super) fn http_client(
    bad: &dyn Fn(&str, String) -> ConfigError,
    s: &HttpParts<'_>,
) -> Result<(reqwest::Url, reqwest::Client, Option<String>), ConfigError> {
    let url = reqwest::Url::parse(s.url).map_err(|e| bad("url", format!("{:?}: {e}", s.url)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad(
            "url",
            format!("{:?}: use an http:// or https:// URL", s.url),
        ));
    }
    let read = |k: &str, p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.trim().to_string())
            .map_err(|e| bad(k, format!("{}: {e}", p.display())))
    };
    let bearer = match (&s.bearer_token, &s.bearer_token_file) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "bearer_token_file",
                "set bearer_token or bearer_token_file, not both".into(),
            ));
        }
        (Some(t), None) => Some(t.clone()),
        (None, Some(p)) => Some(read("bearer_token_file", p)?),
        (None, None) => None,
    };
    let basic = match &s.basic_auth {
        None => None,
        Some(b) => {
            let pw = match (&b.password, &b.password_file) {
                (Some(_), Some(_)) => {
                    return Err(bad(
                        "basic_auth.password_file",
                        "set password or password_file, not both".into(),
                    ));
                }
                (Some(p), None) => p.clone(),
                (None, Some(p)) => read("basic_auth.password_file", p)?,
                (None, None) => String::new(),
            };
            Some(format!(
                "Basic {}",
                telltale_common::otlp::base64_encode(format!("{}:{pw}", b.username).as_bytes())
            ))
        }
    };
    let authorization = match (bearer, basic) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "basic_auth",
                "set a bearer token or basic_auth, not both".into(),
            ));
        }
        (Some(t), None) => Some(format!("Bearer {t}")),
        (None, b) => b,
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in s.headers {
        let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
            reqwest::header::HeaderValue::from_str(v),
        ) else {
            return Err(bad("headers", format!("{k:?}: not a valid header")));
        };
        if n == reqwest::header::AUTHORIZATION || n == reqwest::header::CONTENT_ENCODING {
            return Err(bad(
                "headers",
                format!("{k:?} is set by the queue (use bearer_token or basic_auth)"),
            ));
        }
        headers.insert(n, v);
    }
    // reqwest is built without a TLS provider of its own: ring, as everywhere here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(s.timeout.unwrap_or(Duration::from_secs(30)))
        .user_agent(concat!("telltale-aggregator/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers);
    if url.scheme() == "https" {
        let tls = tls_config(s.tls.unwrap_or(&TlsSection::default())).map_err(|m| bad("tls", m))?;
        b = b.tls_backend_preconfigured(tls);
    } else if s.tls.is_some() {
        return Err(bad("tls", "TLS settings need an https:// URL".to_string()));
    }
    let client = b
        .build()
        .map_err(|e| bad("url", format!("cannot build the HTTP client: {e}")))?;
    Ok((url, client, authorization))
}

/// System CA bundles, Debian's then Red Hat's.
const SYSTEM_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

fn tls_config(t: &TlsSection) -> Result<rustls::ClientConfig, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let ca = match &t.ca_file {
        Some(p) => p.clone(),
        None => SYSTEM_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or("no ca_file and no system CA bundle found")?,
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read(&ca)?) {
        let c = c.map_err(|e| format!("{}: not a PEM certificate: {e}", ca.display()))?;
        // A system bundle may hold a certificate rustls cannot use; one's own CA may not.
        if roots.add(c).is_err() && t.ca_file.is_some() {
            return Err(format!("{}: unusable CA certificate", ca.display()));
        }
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate found", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_root_certificates(roots);
    match (&t.cert_file, &t.key_file) {
        (None, None) => Ok(b.with_no_client_auth()),
        (Some(c), Some(k)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(c)?)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: not a PEM certificate chain: {e}", c.display()))?;
            if chain.is_empty() {
                return Err(format!("{}: no certificate found", c.display()));
            }
            let key = PrivateKeyDer::from_pem_slice(&read(k)?)
                .map_err(|e| format!("{}: no private key found: {e}", k.display()))?;
            b.with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}: {e}", k.display()))
        }
        _ => Err("cert_file and key_file go together".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(telltale_common::otlp::base64_encode(i.as_bytes()), o);
        }
    }

    fn parse(toml: &str) -> Result<Vec<RemoteWriteOptions>, String> {
        #[derive(Deserialize)]
        struct F {
            remote_write: Vec<RemoteWriteSection>,
        }
        let f: F = toml::from_str(toml).map_err(|e| e.to_string())?;
        validate(Path::new("t.toml"), &f.remote_write).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let o = parse("[[remote_write]]\nurl = \"http://127.0.0.1:8428/api/v1/write\"\n").unwrap();
        assert_eq!(o[0].name, "127.0.0.1:8428");
        assert_eq!((o[0].shards, o[0].max_samples_per_send), (4, 20_000));
        assert_eq!(o[0].authorization, None);
        let o = parse("[[remote_write]]\nurl = \"http://a/w\"\n[remote_write.basic_auth]\nusername = \"u\"\npassword = \"p\"\n").unwrap();
        assert_eq!(o[0].authorization.as_deref(), Some("Basic dTpw"));
        for (toml, key) in [
            ("url = \"ftp://a/w\"", "remote_write[0].url"),
            ("url = \"nonsense\"", "remote_write[0].url"),
            (
                "url = \"http://a/w\"\nname = \"a b\"",
                "remote_write[0].name",
            ),
            (
                "url = \"http://a/w\"\nbearer_token = \"x\"\nbearer_token_file = \"/x\"",
                "remote_write[0].bearer_token_file",
            ),
            (
                "url = \"http://a/w\"\nbearer_token_file = \"/nonexistent/token\"",
                "remote_write[0].bearer_token_file",
            ),
            (
                "url = \"http://a/w\"\n[remote_write.queue]\nshards = 0",
                "remote_write[0].queue.shards",
            ),
            (
                "url = \"http://a/w\"\n[remote_write.queue]\nmin_backoff = \"2s\"\nmax_backoff = \"1s\"",
                "remote_write[0].queue.max_backoff",
            ),
            (
                "url = \"http://a/w\"\n[remote_write.tls]\nca_file = \"/x\"",
                "remote_write[0].tls",
            ),
            (
                "url = \"https://a/w\"\n[remote_write.tls]\nca_file = \"/nonexistent/ca\"",
                "remote_write[0].tls",
            ),
            (
                "url = \"http://a/w\"\n[[remote_write.write_relabel_configs]]\naction = \"keep\"",
                "remote_write[0].write_relabel_configs",
            ),
            (
                "url = \"http://a/w\"\nheaders = { Authorization = \"x\" }",
                "remote_write[0].headers",
            ),
        ] {
            let e = parse(&format!("[[remote_write]]\n{toml}\n")).unwrap_err();
            assert!(e.contains(key), "{toml}: {e}");
        }
        let e = parse(
            "[[remote_write]]\nurl = \"http://a/w\"\n[[remote_write]]\nurl = \"http://a/x\"\n",
        )
        .unwrap_err();
        assert!(e.contains("remote_write[1].name"), "{e}");
    }
}
