//! A seeded UDP fault proxy for the reliability tests: these machines' kernels have no
//! `netem`, so network faults between an agent and the aggregator are made here, in user
//! space, on loopback. The agent sends its QUIC packets to the proxy; each client address gets
//! its own upstream socket to the aggregator (so the aggregator sees one peer per agent
//! connection, as it would through a NAT), and packets in both directions go through the same
//! fault model:
//!
//! - `loss`: the share of packets dropped;
//! - `duplicate`: the share sent twice (the copy 1 ms later);
//! - `reorder`: the share held back by `delay + reorder_by`, so later packets overtake them;
//! - `delay` ± `jitter`: one-way latency added to every packet;
//! - `partition`: every packet dropped, both ways.
//!
//! Faults can change while traffic flows ([`FaultProxy::set`]). Every random choice comes from
//! one seeded generator, so a failing run's seed (printed by the tests) replays the same
//! decisions for the same packet sequence.

use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The fault model (see the module documentation). `Faults::default()` forwards untouched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Share of packets dropped, 0..=1.
    pub loss: f64,
    /// Share of packets sent twice, 0..=1.
    pub duplicate: f64,
    /// Share of packets held back by `reorder_by` more than the others, 0..=1.
    pub reorder: f64,
    /// How much longer a reordered packet is held.
    pub reorder_by: Duration,
    /// One-way latency added to every packet.
    pub delay: Duration,
    /// Uniform ± variation of `delay`.
    pub jitter: Duration,
    /// Drop everything, both ways.
    pub partition: bool,
}

/// What the proxy did, counted over both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Packets received from either side.
    pub received: u64,
    /// Packets sent on (copies included).
    pub forwarded: u64,
    /// Packets dropped by `loss` or a partition.
    pub dropped: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Packets held back to be overtaken.
    pub reordered: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
}

/// splitmix64: small, seedable, good enough to draw fault decisions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A packet waiting for its time.
struct Pending {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
    via: Arc<UdpSocket>,
    to: Option<SocketAddr>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // BinaryHeap is a max-heap: the earliest time (then the first queued) comes out first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct Shared {
    faults: Mutex<(Faults, Rng)>,
    queue: Mutex<(BinaryHeap<Pending>, u64)>,
    wake: Condvar,
    counters: Counters,
    stop: AtomicBool,
}

impl Shared {
    /// Applies the fault model to one packet and queues what survives.
    fn offer(&self, data: &[u8], via: &Arc<UdpSocket>, to: Option<SocketAddr>) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut sends: Vec<Instant> = Vec::with_capacity(2);
        {
            let mut g = self.faults.lock().unwrap_or_else(|e| e.into_inner());
            let (f, rng) = &mut *g;
            if f.partition || rng.unit() < f.loss {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let mut delay = f.delay;
            if !f.jitter.is_zero() {
                let j = f.jitter.as_secs_f64() * (2.0 * rng.unit() - 1.0);
                delay = Duration::from_secs_f64((delay.as_secs_f64() + j).max(0.0));
            }
            if rng.unit() < f.reorder {
                delay += f.reorder_by;
                self.counters.reordered.fetch_add(1, Ordering::Relaxed);
            }
            sends.push(now + delay);
            if rng.unit() < f.duplicate {
                sends.push(now + delay + Duration::from_millis(1));
                self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for at in sends {
            q.1 += 1;
            let seq = q.1;
            q.0.push(Pending {
                at,
                seq,
                data: data.to_vec(),
                via: via.clone(),
                to,
            });
        }
        self.wake.notify_one();
    }

    /// Sends queued packets when their time comes.
    fn deliver(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = match q.0.peek() {
                Some(p) if p.at <= now => {
                    if let Some(p) = q.0.pop() {
                        drop(q);
                        let sent = match p.to {
                            Some(to) => p.via.send_to(&p.data, to),
                            None => p.via.send(&p.data),
                        };
                        if sent.is_ok() {
                            self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                        }
                        q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                    }
                    continue;
                }
                Some(p) => p.at - now,
                None => Duration::from_millis(50),
            };
            q = self
                .wake
                .wait_timeout(q, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// A running proxy; stops (and joins its threads) when dropped.
pub struct FaultProxy {
    /// Where agents send: the proxy's listening address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    flows: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream` with no faults yet.
    pub fn start(upstream: SocketAddr, seed: u64) -> std::io::Result<FaultProxy> {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        listen.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = listen.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Mutex::new((Faults::default(), Rng(seed))),
            queue: Mutex::new((BinaryHeap::new(), 0)),
            wake: Condvar::new(),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
        });
        let flows: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("faultproxy-deliver".into())
                .spawn(move || s.deliver())?,
        );
        let (s, fl) = (shared.clone(), flows.clone());
        threads.push(
            std::thread::Builder::new()
                .name("faultproxy-listen".into())
                .spawn(move || listen_loop(&s, &listen, upstream, &fl))?,
        );
        Ok(FaultProxy {
            addr,
            shared,
            threads,
            flows,
        })
    }

    /// Replaces the fault model; packets already queued keep their times.
    pub fn set(&self, faults: Faults) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0 = faults;
    }

    /// The counts so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            received: c.received.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            duplicated: c.duplicated.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let flows: Vec<_> = self
            .flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for t in flows {
            let _ = t.join();
        }
    }
}

/// Reads from clients; the first packet of a new client address opens its upstream socket
/// and a thread that carries the replies back.
fn listen_loop(
    s: &Arc<Shared>,
    listen: &Arc<UdpSocket>,
    upstream: SocketAddr,
    flows: &Mutex<Vec<JoinHandle<()>>>,
) {
    let mut ups: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    while !s.stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = listen.recv_from(&mut buf) else {
            continue;
        };
        let up = match ups.get(&from) {
            Some(u) => u.clone(),
            None => {
                let Ok(u) = UdpSocket::bind("127.0.0.1:0").and_then(|u| {
                    u.connect(upstream)?;
                    u.set_read_timeout(Some(Duration::from_millis(100)))?;
                    Ok(Arc::new(u))
                }) else {
                    continue;
                };
                let (s2, u2, l2) = (s.clone(), u.clone(), listen.clone());
                if let Ok(t) = std::thread::Builder::new()
                    .name("faultproxy-flow".into())
                    .spawn(move || {
                        let mut buf = vec![0u8; 65_536];
                        while !s2.stop.load(Ordering::Relaxed) {
                            if let Ok(n) = u2.recv(&mut buf) {
                                s2.offer(&buf[..n], &l2, Some(from));
                            }
                        }
                    })
                {
                    flows.lock().unwrap_or_else(|e| e.into_inner()).push(t);
                }
                ups.insert(from, u.clone());
                u
            }
        };
        s.offer(&buf[..n], &up, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: what the faults say happens to the packets.
    fn echo() -> (SocketAddr, Arc<AtomicBool>) {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        (addr, stop)
    }

    /// Sends `n` numbered packets and returns the numbers echoed back, in arrival order (read
    /// while sending, so the socket's buffer never overflows).
    fn round(proxy: &FaultProxy, n: u32, wait: Duration) -> Vec<u32> {
        let c = UdpSocket::bind("127.0.0.1:0").expect("bind");
        c.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let r = c.try_clone().expect("clone");
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            let mut idle_since = Instant::now();
            while idle_since.elapsed() < wait {
                if let Ok(4) = r.recv(&mut buf) {
                    got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                    idle_since = Instant::now();
                }
            }
            got
        });
        for i in 0..n {
            c.send_to(&i.to_be_bytes(), proxy.addr).expect("send");
            std::thread::sleep(Duration::from_micros(200));
        }
        reader.join().expect("reader")
    }

    #[test]
    fn the_fault_model_does_what_it_says() {
        let (up, stop) = echo();
        let p = FaultProxy::start(up, 7).expect("proxy");
        // Clean: everything back, in order.
        let got = round(&p, 200, Duration::from_millis(400));
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        // 10 % loss each way: about 19 % lost on the round trip.
        p.set(Faults {
            loss: 0.1,
            ..Faults::default()
        });
        let got = round(&p, 2000, Duration::from_millis(800));
        let lost = 2000 - got.len();
        assert!((250..=520).contains(&lost), "lost {lost} of 2000");
        // Duplication: copies arrive.
        p.set(Faults {
            duplicate: 0.5,
            ..Faults::default()
        });
        let got = round(&p, 200, Duration::from_millis(400));
        assert!(got.len() > 300, "{} packets for 200 sent", got.len());
        // Reordering: some arrive after a later one.
        p.set(Faults {
            reorder: 0.2,
            reorder_by: Duration::from_millis(30),
            ..Faults::default()
        });
        let got = round(&p, 200, Duration::from_millis(500));
        assert_eq!(got.len(), 200);
        assert!(got.windows(2).any(|w| w[1] < w[0]), "nothing overtaken");
        // Latency: a round trip takes at least twice the one-way delay.
        p.set(Faults {
            delay: Duration::from_millis(100),
            ..Faults::default()
        });
        let t = Instant::now();
        let c = UdpSocket::bind("127.0.0.1:0").expect("bind");
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        c.send_to(b"ping", p.addr).expect("send");
        let mut buf = [0u8; 8];
        assert_eq!(c.recv(&mut buf).expect("echo"), 4);
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        // Partition: nothing.
        p.set(Faults {
            partition: true,
            ..Faults::default()
        });
        assert!(round(&p, 50, Duration::from_millis(300)).is_empty());
        let st = p.stats();
        assert!(
            st.dropped >= 50 + 250 && st.duplicated > 50 && st.reordered > 10,
            "{st:?}"
        );
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn one_seed_makes_the_same_decisions() {
        let (up, stop) = echo();
        let faults = Faults {
            loss: 0.3,
            ..Faults::default()
        };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let p = FaultProxy::start(up, 42).expect("proxy");
            p.set(faults.clone());
            // One packet at a time, so the order the generator sees is the send order.
            let c = UdpSocket::bind("127.0.0.1:0").expect("bind");
            c.set_read_timeout(Some(Duration::from_millis(60)))
                .expect("timeout");
            let mut got = Vec::new();
            for i in 0u32..100 {
                c.send_to(&i.to_be_bytes(), p.addr).expect("send");
                let mut buf = [0u8; 4];
                got.push(c.recv(&mut buf).is_ok());
            }
            runs.push(got);
        }
        assert_eq!(runs[0], runs[1]);
        stop.store(true, Ordering::Relaxed);
    }
}
