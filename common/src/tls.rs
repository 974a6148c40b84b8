//! Mutual TLS for the agent ↔ aggregator link: a private certificate authority, certificates
//! issued from it, and the rustls configurations quinn uses.
//!
//! The aggregator accepts only client certificates signed by its CA and takes the agent's name
//! from the certificate's common name; the agent verifies the aggregator against the same CA.
//! TLS 1.3 only (QUIC requires it), ALPN [`crate::ALPN`] on both sides, ring as the one crypto
//! provider (two providers compiled in make rustls' default builder panic).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Errors from making, loading and using certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration (for example a key that does not match its certificate).
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    /// The agent name is not usable in a certificate and as a label value.
    #[error(
        "invalid agent name {0:?}: use 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
    )]
    BadName(String),
    /// Refusing to overwrite an existing CA.
    #[error("{0} already exists: refusing to overwrite an existing certificate authority")]
    Exists(PathBuf),
    /// The peer presented no certificate or one without a usable common name.
    #[error("peer certificate: {0}")]
    PeerIdentity(String),
}

/// The crypto provider used everywhere in Telltale.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether `name` is a valid agent name (it becomes the `instance` label and a file name).
pub fn valid_agent_name(name: &str) -> bool {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    !name.is_empty() && name.len() <= 64 && ok_chars && name.as_bytes()[0].is_ascii_alphanumeric()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(contents.as_bytes()).map_err(io_err(path))
}

fn read_file(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(io_err(path))
}

fn validity(params: &mut CertificateParams, years: i32) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

/// The files `certs init` writes into a directory.
pub struct CaFiles;
impl CaFiles {
    /// CA certificate file name.
    pub const CA_CERT: &'static str = "ca.crt";
    /// CA key file name.
    pub const CA_KEY: &'static str = "ca.key";
    /// Server certificate file name.
    pub const SERVER_CERT: &'static str = "server.crt";
    /// Server key file name.
    pub const SERVER_KEY: &'static str = "server.key";
}

/// Creates a CA and a server certificate in `dir`: `ca.crt ca.key server.crt server.key`.
/// The server certificate is valid for `localhost`, `127.0.0.1`, `::1` and every name in `sans`.
/// Refuses to overwrite an existing `ca.key`.
pub fn init_ca(dir: &Path, sans: &[String]) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ca_key_path = dir.join(CaFiles::CA_KEY);
    if ca_key_path.exists() {
        return Err(TlsError::Exists(ca_key_path));
    }
    let ca_key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "Telltale CA");
    p.distinguished_name
        .push(DnType::OrganizationName, "Telltale");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, 10);
    let ca_cert = p.self_signed(&ca_key)?;
    write_file(&ca_key_path, &ca_key.serialize_pem(), 0o600)?;
    write_file(&dir.join(CaFiles::CA_CERT), &ca_cert.pem(), 0o644)?;

    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(sans.iter().cloned());
    let issuer = Issuer::new(p, ca_key);
    let key = KeyPair::generate()?;
    let mut sp = CertificateParams::new(names)?;
    sp.distinguished_name
        .push(DnType::CommonName, "telltale-aggregator");
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut sp, 5);
    let cert = sp.signed_by(&key, &issuer)?;
    write_file(&dir.join(CaFiles::SERVER_KEY), &key.serialize_pem(), 0o600)?;
    write_file(&dir.join(CaFiles::SERVER_CERT), &cert.pem(), 0o644)?;
    Ok(())
}

/// Issues a client certificate for agent `name` from the CA in `dir`, written to
/// `dir/agents/NAME.crt` and `dir/agents/NAME.key`. Returns the two paths.
pub fn issue_agent(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    if !valid_agent_name(name) {
        return Err(TlsError::BadName(name.to_string()));
    }
    let ca_key_path = dir.join(CaFiles::CA_KEY);
    let ca_key = KeyPair::from_pem(&read_file(&ca_key_path)?).map_err(|e| TlsError::Pem {
        path: ca_key_path.clone(),
        what: e.to_string(),
    })?;
    let ca_cert_path = dir.join(CaFiles::CA_CERT);
    let issuer = Issuer::from_ca_cert_pem(&read_file(&ca_cert_path)?, ca_key).map_err(|e| {
        TlsError::Pem {
            path: ca_cert_path.clone(),
            what: e.to_string(),
        }
    })?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut p, 5);
    let cert = p.signed_by(&key, &issuer)?;
    let agents = dir.join("agents");
    fs::create_dir_all(&agents).map_err(io_err(&agents))?;
    let crt = agents.join(format!("{name}.crt"));
    let keyp = agents.join(format!("{name}.key"));
    write_file(&keyp, &key.serialize_pem(), 0o600)?;
    write_file(&crt, &cert.pem(), 0o644)?;
    Ok((crt, keyp))
}

/// Paths of the three PEM files one side of the link needs.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// The CA certificate that signs the peer.
    pub ca: PathBuf,
    /// This side's certificate.
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
}

/// The parsed PEM material of a [`TlsPaths`].
pub struct TlsMaterial {
    roots: rustls::RootCertStore,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TlsPaths {
    /// Reads and parses the three files, with an error naming the file at fault.
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        let pem_err = |path: &Path, what: String| TlsError::Pem {
            path: path.to_path_buf(),
            what,
        };
        let ca_bytes = fs::read(&self.ca).map_err(io_err(&self.ca))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca_bytes) {
            let c = c.map_err(|e| pem_err(&self.ca, e.to_string()))?;
            roots.add(c).map_err(|e| pem_err(&self.ca, e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(pem_err(&self.ca, "no CA certificate found".into()));
        }
        let cert_bytes = fs::read(&self.cert).map_err(io_err(&self.cert))?;
        let certs = CertificateDer::pem_slice_iter(&cert_bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(&self.cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(pem_err(&self.cert, "no certificate found".into()));
        }
        let key_bytes = fs::read(&self.key).map_err(io_err(&self.key))?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes)
            .map_err(|e| pem_err(&self.key, format!("no private key found: {e}")))?;
        Ok(TlsMaterial { roots, certs, key })
    }
}

/// Packets a later acknowledged one may overtake before the earlier counts as lost: so many
/// that loss is decided by time alone (`time_threshold`, 9/8 of the RTT).
///
/// QUIC's default of 3 (TCP's fast-retransmit rule) reads reordering as loss. Through a
/// path that reorders — per-packet jitter, as `netem delay 500ms 50ms` makes and the
/// reliability suite's fault proxy does; multipath links — a sender at full speed then saw
/// hundreds of "losses" per round trip and its congestion window stayed at the minimum: an
/// agent reconnected after a 5-minute partition at 500 ± 50 ms did not drain one batch of its
/// backlog in two minutes, and adaptive sampling thinned what it had buffered (`telltale-bench
/// chaos --scale full`). Time-based detection still finds real losses an eighth of a round
/// trip after a later packet is acknowledged.
pub const QUIC_PACKET_THRESHOLD: u32 = 1 << 20;

/// How much longer than the round trip an earlier packet may take, once a later one is
/// acknowledged, before it counts as lost: 3/2 (QUIC's default is 9/8).
///
/// With loss decided by time alone, 9/8 is too tight for per-packet jitter. An earlier packet
/// counts as lost once 9/8 of the larger of the smoothed and the latest round trip has passed
/// since it was sent: about 1125 ms at 500 ± 50 ms each way, where round trips reach 1100 ms
/// before the peer's acknowledgement delay (up to 25 ms) — so packets at the tail of the
/// jitter cross it, and so does any packet whose acknowledgement a busy host delays a little
/// more. Each such "loss" shrinks the congestion window, which at a one-second round trip
/// grows back slowly. Draining a partition's backlog at that latency with three busy loops
/// beside it, the agent counted 11 losses and 11 congestion events at 9/8, and 4 and 2 at 3/2
/// (probably the handshake's first packets, sent into the partition). 3/2 tolerates ±25 % of
/// the round trip (Linux's RACK widens its reordering window likewise, up to a whole round
/// trip); a real loss is found 3/8 of a round trip later than at 9/8, which a stream
/// acknowledged per batch does not notice.
pub const QUIC_TIME_THRESHOLD: f32 = 1.5;

fn quic_transport(idle: std::time::Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.packet_threshold(QUIC_PACKET_THRESHOLD);
    t.time_threshold(QUIC_TIME_THRESHOLD);
    t.keep_alive_interval(Some(idle / 3));
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    Arc::new(t)
}

impl TlsMaterial {
    /// The aggregator's QUIC server configuration: client certificates from the CA required.
    pub fn server_config(self) -> Result<quinn::ServerConfig, TlsError> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs, self.key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        cfg.alpn_protocols = vec![crate::ALPN.to_vec()];
        let q = quinn::crypto::rustls::QuicServerConfig::try_from(cfg)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(q));
        sc.transport_config(quic_transport(std::time::Duration::from_secs(30)));
        Ok(sc)
    }

    /// The agent's QUIC client configuration: the aggregator verified against the CA.
    pub fn client_config(self) -> Result<quinn::ClientConfig, TlsError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots)
            .with_client_auth_cert(self.certs, self.key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        cfg.alpn_protocols = vec![crate::ALPN.to_vec()];
        let q = quinn::crypto::rustls::QuicClientConfig::try_from(cfg)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut cc = quinn::ClientConfig::new(Arc::new(q));
        cc.transport_config(quic_transport(std::time::Duration::from_secs(30)));
        Ok(cc)
    }
}

/// The agent name of an authenticated QUIC connection: the common name of its client
/// certificate (already verified against the CA by rustls during the handshake).
pub fn peer_agent_name(conn: &quinn::Connection) -> Result<String, TlsError> {
    let identity = conn
        .peer_identity()
        .ok_or_else(|| TlsError::PeerIdentity("no client certificate".into()))?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::PeerIdentity("unexpected identity type".into()))?;
    let first = certs
        .first()
        .ok_or_else(|| TlsError::PeerIdentity("empty certificate chain".into()))?;
    agent_name_of(first.as_ref())
}

/// The agent name in a client certificate (DER), which must carry the clientAuth extended
/// key usage: rustls accepts a certificate without any EKU for client authentication, and a
/// certificate made for something else must not pass for an agent's.
pub fn agent_name_of(der: &[u8]) -> Result<String, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::PeerIdentity(format!("cannot parse: {e}")))?;
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => {}
        Ok(_) => {
            return Err(TlsError::PeerIdentity(
                "the client certificate lacks the clientAuth extended key usage".into(),
            ));
        }
        Err(e) => return Err(TlsError::PeerIdentity(format!("cannot parse: {e}"))),
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| TlsError::PeerIdentity("no common name".into()))?;
    if !valid_agent_name(cn) {
        return Err(TlsError::BadName(cn.to_string()));
    }
    Ok(cn.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_are_validated() {
        assert!(valid_agent_name("web-01.example_a"));
        assert!(!valid_agent_name(""));
        assert!(!valid_agent_name("-x"));
        assert!(!valid_agent_name("a/b"));
        assert!(!valid_agent_name("a b"));
        assert!(!valid_agent_name(&"a".repeat(65)));
    }

    #[test]
    fn init_and_issue_make_loadable_configs() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), &["agg.example".into()]).unwrap();
        assert!(matches!(init_ca(dir.path(), &[]), Err(TlsError::Exists(_))));
        let (crt, key) = issue_agent(dir.path(), "web-1").unwrap();
        let server = TlsPaths {
            ca: dir.path().join("ca.crt"),
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
        };
        server.load().unwrap().server_config().unwrap();
        let client = TlsPaths {
            ca: dir.path().join("ca.crt"),
            cert: crt,
            key: key.clone(),
        };
        client.load().unwrap().client_config().unwrap();
        let mode = fs::metadata(&key).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        assert!(matches!(
            issue_agent(dir.path(), "../evil"),
            Err(TlsError::BadName(_))
        ));
    }

    #[test]
    fn an_agent_certificate_needs_the_client_auth_usage() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), &[]).unwrap();
        let (crt, _) = issue_agent(dir.path(), "web-1").unwrap();
        let der = |pem: &str| {
            rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
                .next()
                .unwrap()
                .unwrap()
        };
        assert_eq!(
            agent_name_of(&der(&fs::read_to_string(crt).unwrap())).unwrap(),
            "web-1"
        );
        // Signed by the same CA, without an EKU, and with serverAuth only: refused.
        let ca_key =
            KeyPair::from_pem(&fs::read_to_string(dir.path().join("ca.key")).unwrap()).unwrap();
        let issuer = Issuer::from_ca_cert_pem(
            &fs::read_to_string(dir.path().join("ca.crt")).unwrap(),
            ca_key,
        )
        .unwrap();
        for ekus in [vec![], vec![ExtendedKeyUsagePurpose::ServerAuth]] {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, "web-2");
            p.extended_key_usages = ekus;
            let cert = p.signed_by(&key, &issuer).unwrap();
            let e = agent_name_of(cert.der()).unwrap_err().to_string();
            assert!(e.contains("clientAuth"), "{e}");
        }
    }

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let p = TlsPaths {
            ca: "/nonexistent/ca.crt".into(),
            cert: "/nonexistent/a.crt".into(),
            key: "/nonexistent/a.key".into(),
        };
        let e = p.load().err().unwrap().to_string();
        assert!(e.contains("/nonexistent/ca.crt"), "{e}");
    }
}
