//! The TCP connections of a stream listener (syslog over TCP, Fluentd's forward protocol),
//! bounded in number, in idleness and in the memory their unfinished messages hold, so that
//! senders which connect and say nothing, or start messages they never finish, cannot lock
//! out the senders with logs to deliver nor grow the agent.
//!
//! - At most [`MAX_CONNECTIONS`] at once; a new connection at the cap displaces the one idle
//!   the longest (refusing the newcomer instead would let idle connections hold the source
//!   for ever).
//! - A connection that sends nothing for [`IDLE`] is closed. Senders reconnect when they
//!   have something to say: rsyslog checks its connection before each send, Fluentd's and
//!   Fluent Bit's forward outputs reconnect and resend what was not acknowledged.
//! - The bytes of unfinished messages of all a source's connections together stay under
//!   [`BUFFER_BUDGET`]: the connection whose message would pass it is closed (counted as an
//!   error and logged). Nothing acknowledged is lost: syslog has no acknowledgement, and a
//!   forward message is acknowledged only once whole.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::task::{AbortHandle, JoinSet};

/// What every connection task of a log source shares: its configuration, counters, rate
/// gate and batch.
pub type Shared<C> = (
    Arc<C>,
    Arc<super::logfile::LogStats>,
    Arc<std::sync::Mutex<super::logbatch::Gate>>,
    Arc<std::sync::Mutex<super::logbatch::LogBatcher>>,
);

/// Connections one listener serves at once.
pub const MAX_CONNECTIONS: usize = 256;
/// A connection silent this long is closed.
pub const IDLE: Duration = Duration::from_secs(600);
/// Bytes of unfinished messages one source's connections may hold together.
pub const BUFFER_BUDGET: usize = 64 << 20;

/// When a connection last received bytes (ms since its set was made).
#[derive(Clone)]
pub struct Activity {
    last_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }
}

/// A source's live connections.
pub struct Conns {
    set: JoinSet<()>,
    live: Vec<(AbortHandle, Activity)>,
    epoch: Instant,
    held: Arc<AtomicUsize>,
    budget: usize,
}

impl Default for Conns {
    fn default() -> Self {
        Self::with_budget(BUFFER_BUDGET)
    }
}

impl Conns {
    /// A set whose connections share `budget` bytes of unfinished messages.
    pub fn with_budget(budget: usize) -> Self {
        Conns {
            set: JoinSet::new(),
            live: Vec::new(),
            epoch: Instant::now(),
            held: Arc::new(AtomicUsize::new(0)),
            budget,
        }
    }

    /// Starts `task` for a new connection (handing it its [`Activity`] and its share of the
    /// buffer budget); at the cap the connection idle the longest is closed first, and then
    /// this returns true.
    pub fn spawn<F>(&mut self, task: impl FnOnce(Activity, Reservation) -> F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.live.retain(|(h, _)| !h.is_finished());
        let mut evicted = false;
        if self.live.len() >= MAX_CONNECTIONS
            && let Some(i) = (0..self.live.len()).min_by_key(|&i| self.live[i].1.last())
        {
            let (h, _) = self.live.swap_remove(i);
            h.abort();
            evicted = true;
        }
        let activity = Activity {
            last_ms: Arc::new(AtomicU64::new(0)),
            epoch: self.epoch,
        };
        activity.touch();
        let reservation = Reservation {
            held: self.held.clone(),
            budget: self.budget,
            mine: 0,
        };
        let h = self.set.spawn(task(activity.clone(), reservation));
        self.live.push((h, activity));
        evicted
    }

    /// Waits for a connection to end (`None` when there are none).
    pub async fn join_next(&mut self) -> Option<()> {
        self.set.join_next().await.map(|_| ())
    }

    /// Whether no connection is live.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Bytes the connections hold now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// One connection's share of the budget; given back when it ends (or is aborted).
pub struct Reservation {
    held: Arc<AtomicUsize>,
    budget: usize,
    mine: usize,
}

impl Reservation {
    /// Records that the connection now holds `n` bytes; false (and nothing recorded) when
    /// that would take the source past its budget.
    pub fn hold(&mut self, n: usize) -> bool {
        if n <= self.mine {
            self.held.fetch_sub(self.mine - n, Ordering::Relaxed);
            self.mine = n;
            return true;
        }
        let more = n - self.mine;
        let ok = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                (h + more <= self.budget).then_some(h + more)
            })
            .is_ok();
        if ok {
            self.mine = n;
        }
        ok
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.held.fetch_sub(self.mine, Ordering::Relaxed);
    }
}

/// Reads into `chunk`: the bytes read, or 0 at the end of the stream, on an error, or after
/// [`IDLE`] without a byte.
pub async fn read(s: &mut tokio::net::TcpStream, chunk: &mut [u8], activity: &Activity) -> usize {
    read_within(s, chunk, activity, IDLE).await
}

async fn read_within(
    s: &mut tokio::net::TcpStream,
    chunk: &mut [u8],
    activity: &Activity,
    idle: Duration,
) -> usize {
    match tokio::time::timeout(idle, s.read(chunk)).await {
        Ok(Ok(n)) => {
            activity.touch();
            n
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn at_the_cap_the_connection_idle_longest_gives_way() {
        let mut conns = Conns::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let mut acts = Vec::new();
        for i in 0..MAX_CONNECTIONS {
            let tx = tx.clone();
            let evicted = conns.spawn(|a, _r| {
                acts.push(a);
                async move {
                    // Reports its end when aborted (the sender is dropped with the task).
                    let _guard = Guard(tx, i);
                    std::future::pending::<()>().await;
                }
            });
            assert!(!evicted);
        }
        // Every connection but number 7 has just been active.
        tokio::time::sleep(Duration::from_millis(5)).await;
        for (i, a) in acts.iter().enumerate() {
            if i != 7 {
                a.touch();
            }
        }
        let evicted = conns.spawn(|_, _| async {});
        assert!(evicted, "the 257th connection displaces one");
        let gone = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(gone.ok().flatten(), Some(7), "the idle one went");
    }

    struct Guard(tokio::sync::mpsc::UnboundedSender<usize>, usize);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.send(self.1);
        }
    }

    #[tokio::test]
    async fn the_budget_is_shared_and_given_back() {
        let mut conns = Conns::with_budget(1000);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, bool, bool)>();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let t1 = tx.clone();
        conns.spawn(move |_, mut r| async move {
            let a = r.hold(600);
            let _ = t1.send((a, true, true));
            let _ = wait.await;
            // Drops its reservation here.
        });
        let first = rx.recv().await.expect("first");
        assert!(first.0);
        assert_eq!(conns.held(), 600);
        let (go2, wait2) = tokio::sync::oneshot::channel::<()>();
        conns.spawn(move |_, mut r| async move {
            let over = r.hold(500);
            let fits = r.hold(400);
            let _ = wait2.await;
            let after = r.hold(900);
            let _ = tx.send((over, fits, after));
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(conns.held(), 1000);
        let _ = go.send(());
        conns.join_next().await;
        assert_eq!(conns.held(), 400, "the first connection's bytes came back");
        let _ = go2.send(());
        let (over, fits, after) = rx.recv().await.expect("second");
        assert!(!over, "600 + 500 passes 1000");
        assert!(fits, "600 + 400 does not");
        assert!(after, "900 fits once the first connection ended");
        conns.join_next().await;
        assert_eq!(conns.held(), 0);
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_idle_time() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut s, _) = l.accept().await.expect("accept");
        let conns = Conns::default();
        let act = Activity {
            last_ms: Arc::new(AtomicU64::new(0)),
            epoch: conns.epoch,
        };
        let mut chunk = [0u8; 16];
        c.write_all(b"hi").await.expect("write");
        let n = read_within(&mut s, &mut chunk, &act, Duration::from_millis(300)).await;
        assert_eq!(n, 2);
        let t = Instant::now();
        let n = read_within(&mut s, &mut chunk, &act, Duration::from_millis(300)).await;
        assert_eq!(n, 0, "nothing more came: the read gives up");
        assert!(t.elapsed() >= Duration::from_millis(250));
    }
}
