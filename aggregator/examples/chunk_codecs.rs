//! Bytes per sample of the chunk codec (pco, what the engine writes) next to Gorilla
//! (Prometheus' XOR chunks: delta-of-delta timestamps, XOR'd float bits), on node-like series
//! of 2 hours at 10 s (720 samples, one 2-hour block window) with a few ms of scrape jitter;
//! then the two choices behind the codec: grid timestamps against delta coding (25 ms of
//! jitter, missed scrapes), and pco levels on columns with an outlier (a NaN, a reset).
//!
//! `cargo run --release -p telltale-aggregator --example chunk_codecs`

use telltale_aggregator::metrics::tsdb::chunk;

struct Bits {
    out: Vec<u8>,
    used: u8,
}

impl Bits {
    fn put(&mut self, v: u64, n: u8) {
        for i in (0..n).rev() {
            if self.used == 0 {
                self.out.push(0);
            }
            let bit = ((v >> i) & 1) as u8;
            if let Some(last) = self.out.last_mut() {
                *last |= bit << (7 - self.used);
            }
            self.used = (self.used + 1) % 8;
        }
    }
}

/// Gorilla as Prometheus' chunkenc/xor.go writes it (its header and first-sample varints
/// simplified to fixed widths).
fn gorilla(ts: &[i64], vs: &[f64]) -> usize {
    let mut b = Bits {
        out: Vec::new(),
        used: 0,
    };
    b.put(ts[0] as u64, 64);
    b.put(vs[0].to_bits(), 64);
    let (mut prev_t, mut prev_d) = (ts[0], 0i64);
    let (mut prev_v, mut lead, mut trail) = (vs[0].to_bits(), 0xffu32, 0u32);
    for i in 1..ts.len() {
        let d = ts[i] - prev_t;
        let dod = d - prev_d;
        match dod {
            0 => b.put(0, 1),
            -8191..=8192 => {
                b.put(0b10, 2);
                b.put(dod as u64, 14);
            }
            -65535..=65536 => {
                b.put(0b110, 3);
                b.put(dod as u64, 17);
            }
            -524287..=524288 => {
                b.put(0b1110, 4);
                b.put(dod as u64, 20);
            }
            _ => {
                b.put(0b1111, 4);
                b.put(dod as u64, 64);
            }
        }
        prev_t = ts[i];
        prev_d = d;
        let x = vs[i].to_bits() ^ prev_v;
        prev_v = vs[i].to_bits();
        if x == 0 {
            b.put(0, 1);
            continue;
        }
        let (l, t) = (x.leading_zeros().min(31), x.trailing_zeros());
        if lead != 0xff && l >= lead && t >= trail {
            b.put(0b10, 2);
            b.put(x >> trail, (64 - lead - trail) as u8);
        } else {
            lead = l;
            trail = t;
            b.put(0b11, 2);
            b.put(u64::from(l), 5);
            let sig = 64 - l - t;
            b.put(u64::from(sig % 64), 6);
            b.put(x >> t, sig as u8);
        }
    }
    b.out.len()
}

/// Uniform numbers in [0, 1) from a xorshift generator.
fn uniform(mut x: u64) -> impl FnMut() -> f64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() {
    let mut rnd = uniform(0x2545_f491_4f6c_dd1d);
    let n = 720;
    let ts: Vec<i64> = (0..n)
        .map(|i| 1_764_000_000_000 + i * 10_000 + (rnd() * 4.0) as i64)
        .collect();
    let round = |v: f64, r: f64| (v / r).round() * r;
    let mut shapes: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut walk = |name: &'static str, start: f64, step: &mut dyn FnMut(f64) -> f64| {
        let mut v = start;
        let col = (0..n)
            .map(|_| {
                v = step(v);
                v
            })
            .collect();
        shapes.push((name, col));
    };
    let mut r = || rnd();
    walk("cpu seconds counter (0.01 s)", 12345.67, &mut |v| {
        round(v + 1.0 + 1.5 * r(), 0.01)
    });
    let mut r = || rnd();
    walk("memory gauge (4 KiB pages)", 8e9, &mut |v| {
        round(v + 2e6 * (r() - 0.5), 4096.0)
    });
    let mut r = || rnd();
    walk("load average (0.01)", 1.0, &mut |v| {
        round((v + 0.3 * (r() - 0.5)).max(0.0), 0.01)
    });
    let mut r = || rnd();
    walk("network bytes counter", 1e9, &mut |v| {
        (v + 1e4 + 1e5 * r()).round()
    });
    let mut r = || rnd();
    walk("request counter (small steps)", 1e5, &mut |v| {
        (v + 50.0 + 30.0 * r()).round()
    });
    walk("constant (size, boot time)", 1e11, &mut |v| v);
    println!("{n} samples (2 h at 10 s, timestamps with 0-3 ms jitter), bytes per sample:\n");
    println!("| series | Gorilla (XOR) | pco (Telltale's chunks) |");
    println!("|---|---|---|");
    let (mut g_all, mut p_all) = (0, 0);
    for (name, vs) in &shapes {
        let g = gorilla(&ts, vs);
        let p = chunk::encode(&[&ts], &[vs]).len();
        g_all += g;
        p_all += p;
        println!(
            "| {name} | {:.2} | {:.2} |",
            g as f64 / n as f64,
            p as f64 / n as f64
        );
    }
    let total = (n as usize * shapes.len()) as f64;
    println!(
        "| **all** | **{:.2}** | **{:.2}** |",
        g_all as f64 / total,
        p_all as f64 / total
    );
    choices();
}

fn choices() {
    use pco::ChunkConfig;
    use pco::standalone::simple_compress;
    let mut rnd = uniform(0x9e37_79b9_7f4a_7c15);
    let n = 2160usize;
    println!("\n{n} timestamps (6 h at 10 s), bytes per timestamp:\n");
    println!("| jitter | missed scrapes | delta coding (pco) | Telltale's chunk (grid) |");
    println!("|---|---|---|---|");
    for (jitter, gaps) in [(4.0, 0.0), (25.0, 0.0), (25.0, 0.001), (0.0, 0.001)] {
        let mut ts = Vec::new();
        let mut slot = 1_764_000_003_217i64;
        while ts.len() < n {
            if rnd() >= gaps {
                ts.push(slot + (rnd() * jitter) as i64);
            }
            slot += 10_000;
        }
        let cfg = ChunkConfig::default().with_compression_level(5);
        let delta = simple_compress(&ts, &cfg).unwrap_or_default().len();
        // The chunk holds an empty value column too: a few bytes.
        let grid = chunk::encode(&[&ts], &[&[]]).len();
        println!(
            "| {jitter} ms | {gaps} | {:.3} | {:.3} |",
            delta as f64 / n as f64,
            grid as f64 / n as f64
        );
    }
    println!(
        "\n{n} values, bytes per value by pco level, and Telltale's chunk (level 5, NaNs aside):\n"
    );
    println!("| column | level 2 | level 5 | level 8 | Telltale's chunk |");
    println!("|---|---|---|---|---|");
    let round = |v: f64, r: f64| (v / r).round() * r;
    let mut cols: Vec<(&str, Vec<f64>)> = Vec::new();
    let (mut a, mut b, mut c) = (12345.67, 1e5, 1e5);
    let (mut va, mut vb, mut vc) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        a = round(a + 1.0 + 1.5 * rnd(), 0.01);
        b = (b + 50.0 + 30.0 * rnd()).round();
        c = if rnd() < 1e-3 {
            0.0
        } else {
            (c + 50.0 + 30.0 * rnd()).round()
        };
        va.push(a);
        vb.push(if rnd() < 1e-3 { f64::NAN } else { b });
        vc.push(c);
    }
    cols.push(("cpu seconds counter", va));
    cols.push(("request counter, a NaN in 1,000", vb));
    cols.push(("request counter, a reset in 1,000", vc));
    for (name, col) in &cols {
        let size = |l: usize| {
            let cfg = ChunkConfig::default().with_compression_level(l);
            simple_compress(col, &cfg).unwrap_or_default().len() as f64 / n as f64
        };
        let ours = chunk::encode(&[], &[col]).len() as f64 / n as f64;
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {ours:.3} |",
            size(2),
            size(5),
            size(8)
        );
    }
}
