//! The HTTP(S) server: one accept loop for plain HTTP and HTTPS, with the limits a server
//! facing the network needs.
//!
//! - **Header timeout** (`http_header_timeout`, 2 minutes): a client has that long to send a
//!   request's head, and an idle kept-alive connection is closed after as long without a new
//!   request. It bounds the head only, so a large upload or a long query is not cut. Without
//!   it (as `axum::serve` runs hyper, with no timer) a connection that never finishes its
//!   head — slowloris — holds a descriptor forever, and a few thousand of them leave none for
//!   the storage engine's files.
//! - **A cap on connections** ([`max_connections`]): past it, new connections wait in the
//!   kernel's listen queue until one closes, so descriptors stay for storage whatever clients
//!   do. Prometheus does the same (`--web.max-connections`, 512 by default).
//! - Targets written without percent-encoding are taken as Prometheus takes them
//!   ([`super::lenient`]); each request knows its peer's address (`ConnectInfo`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};

/// The most HTTP connections served at once: `configured` (default 4096), and never more
/// than a quarter of the process' descriptor limit `nofile`, so that storage keeps the rest
/// (at least 64).
pub fn max_connections(configured: Option<usize>, nofile: u64) -> usize {
    let quarter = usize::try_from(nofile / 4).unwrap_or(usize::MAX).max(64);
    configured.unwrap_or(4096).min(quarter)
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` resolves, at most
/// `max_conns` connections at once, each allowed `header_timeout` for a request's head;
/// connections in flight then get a few seconds to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<rustls::ServerConfig>,
    (max_conns, header_timeout): (usize, Duration),
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(Arc::new(t)));
    let permits = Arc::new(Semaphore::new(max_conns.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        // A slot first: at the cap, connections wait in the listen queue.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // As Go's server does: small answers go out at once.
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, stop) = (acceptor.clone(), router.clone(), stop_rx.clone());
        conns.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => connection(tcp, router, peer, header_timeout, stop).await,
                Some(a) => {
                    match tokio::time::timeout(super::https::HANDSHAKE_TIMEOUT, a.accept(tcp)).await
                    {
                        Ok(Ok(s)) => connection(s, router, peer, header_timeout, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake refused"),
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                }
            }
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

/// Serves one connection with `router` until it ends, or gracefully once `stop` changes.
async fn connection<S>(
    io: S,
    router: Router,
    peer: SocketAddr,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Each request learns its peer here (what `ConnectInfo` extracts): cheaper than layering
    // the router anew for every connection.
    let inner = hyper_util::service::TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        hyper::service::Service::call(&inner, req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(super::lenient::Lenient::new(io)), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Raises the soft limit on open descriptors to the hard one (as Go's runtime does for
/// Prometheus) and returns the limit in force. systemd starts services with a soft limit of
/// 1024, which a store of many blocks, the WAL, sled and a few thousand clients outgrow; the
/// hard limit (524288 under systemd) is what the administrator allows.
pub fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    let before = l.current;
    if l.current < l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            return before.unwrap_or(u64::MAX);
        }
    }
    l.current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_connection_cap_leaves_descriptors_to_storage() {
        use super::max_connections;
        assert_eq!(max_connections(None, 1024), 256);
        assert_eq!(max_connections(None, 100), 64);
        assert_eq!(max_connections(None, 1 << 20), 4096);
        assert_eq!(max_connections(None, u64::MAX), 4096);
        assert_eq!(max_connections(Some(100_000), 1 << 20), 100_000);
        assert_eq!(max_connections(Some(100_000), 1 << 16), 1 << 14);
        assert_eq!(max_connections(Some(10), 1 << 20), 10);
    }
}
