//! Drain (He et al., "Drain: An Online Log Parsing Approach with Fixed Depth Tree", ICWS
//! 2017), the online log clustering Loki's pattern ingester also uses.
//!
//! A line is split into tokens at whitespace; tokens that are obviously variable — numbers,
//! IP addresses, dates and times, hex ids, UUIDs, numbers with a unit (`250ms`, `3.2KiB`),
//! tokens of more digits than letters (`02/Dec/2026:10:05:00`), and
//! the value of `key=value` when it is one of those — are masked as `<_>` first. Lines are then
//! routed down a tree by their token count and their first token (a token holding a digit
//! takes the `<_>` branch, and so does any token past a node's `MAX_CHILDREN`), and join the
//! most similar template in the leaf — similarity being the share of positions where the
//! template has the same token or `<_>` — when it reaches `SIM_THRESHOLD`; the template's
//! differing positions become `<_>`. Otherwise the line starts a template of its own. When a
//! source holds `max_clusters` templates the least recently used one is evicted.

use std::collections::HashMap;

/// The placeholder of a variable part (Loki's).
pub const WILDCARD: &str = "<_>";
/// Share of equal positions for a line to join a template (Loki uses 0.3, drain3 0.4).
const SIM_THRESHOLD: f64 = 0.4;
/// Levels of the tree below the token count (the first tokens routed on). One, where drain3
/// uses two: a variable second word (`user alice logged in`) would otherwise split one
/// message into a template per value.
const PREFIX_DEPTH: usize = 1;
/// Children a tree node keeps before routing new tokens to `<_>`.
const MAX_CHILDREN: usize = 100;
/// Longest line (tokens) clustered; longer lines get no template.
pub const MAX_TOKENS: usize = 128;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    clusters: Vec<usize>,
}

/// A template and its bookkeeping.
#[derive(Debug, Clone)]
struct Cluster {
    tokens: Vec<String>,
    /// The tree path it lives under (to remove it when evicted).
    path: Vec<String>,
    last_used: u64,
}

/// One Drain instance.
#[derive(Debug)]
pub struct Drain {
    root: HashMap<usize, Node>,
    clusters: Vec<Option<Cluster>>,
    free: Vec<usize>,
    live: usize,
    max_clusters: usize,
    clock: u64,
}

/// What training one line did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trained {
    /// The template's id (stable while it lives).
    pub id: usize,
    /// A template was created for this line.
    pub created: bool,
    /// The template evicted to make room, if any (its id may be reused by `id`).
    pub evicted: Option<usize>,
}

impl Drain {
    /// An empty instance holding at most `max_clusters` templates.
    pub fn new(max_clusters: usize) -> Drain {
        Drain {
            root: HashMap::new(),
            clusters: Vec::new(),
            free: Vec::new(),
            live: 0,
            max_clusters: max_clusters.max(1),
            clock: 0,
        }
    }

    /// Templates held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether it holds no template.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The template of `id` (`<_>` for variable parts, tokens joined by one space).
    pub fn pattern(&self, id: usize) -> Option<String> {
        self.clusters.get(id)?.as_ref().map(|c| c.tokens.join(" "))
    }

    /// Clusters `line`; `None` for a line without tokens or with more than [`MAX_TOKENS`].
    pub fn train(&mut self, line: &str) -> Option<Trained> {
        let tokens = tokenize(line)?;
        self.clock += 1;
        let path = route(&tokens);
        let node = self.leaf(tokens.len(), &path);
        let best = node
            .clusters
            .iter()
            .filter_map(|&id| {
                let c = self.clusters.get(id)?.as_ref()?;
                Some((id, similarity(&c.tokens, &tokens)))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        if let Some((id, sim)) = best
            && sim >= SIM_THRESHOLD
            && let Some(Some(c)) = self.clusters.get_mut(id)
        {
            for (t, s) in c.tokens.iter_mut().zip(&tokens) {
                if t != s && t != WILDCARD {
                    *t = WILDCARD.to_string();
                }
            }
            c.last_used = self.clock;
            return Some(Trained {
                id,
                created: false,
                evicted: None,
            });
        }
        let evicted = if self.live >= self.max_clusters {
            self.evict_oldest()
        } else {
            None
        };
        let cluster = Cluster {
            tokens,
            path: path.clone(),
            last_used: self.clock,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.clusters[id] = Some(cluster);
                id
            }
            None => {
                self.clusters.push(Some(cluster));
                self.clusters.len() - 1
            }
        };
        self.live += 1;
        let len = self.clusters[id].as_ref().map_or(0, |c| c.tokens.len());
        self.insert_leaf(len, &path, id);
        Some(Trained {
            id,
            created: true,
            evicted,
        })
    }

    /// The leaf for a line of `len` tokens routed on `path` (an empty one when none exists).
    fn leaf(&self, len: usize, path: &[String]) -> &Node {
        static EMPTY: std::sync::OnceLock<Node> = std::sync::OnceLock::new();
        let empty = EMPTY.get_or_init(Node::default);
        let Some(mut node) = self.root.get(&len) else {
            return empty;
        };
        for key in path {
            node = match node
                .children
                .get(key)
                .or_else(|| node.children.get(WILDCARD))
            {
                Some(n) => n,
                None => return empty,
            };
        }
        node
    }

    fn insert_leaf(&mut self, len: usize, path: &[String], id: usize) {
        let mut node = self.root.entry(len).or_default();
        let mut stored = Vec::with_capacity(path.len());
        for key in path {
            let key = if node.children.contains_key(key) || node.children.len() < MAX_CHILDREN {
                key.clone()
            } else {
                WILDCARD.to_string()
            };
            stored.push(key.clone());
            node = node.children.entry(key).or_default();
        }
        node.clusters.push(id);
        if let Some(Some(c)) = self.clusters.get_mut(id) {
            c.path = stored;
        }
    }

    fn evict_oldest(&mut self) -> Option<usize> {
        let id = self
            .clusters
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c.last_used)))
            .min_by_key(|x| x.1)?
            .0;
        let c = self.clusters[id].take()?;
        self.live -= 1;
        self.free.push(id);
        if let Some(mut node) = self.root.get_mut(&c.tokens.len()) {
            for key in &c.path {
                match node.children.get_mut(key) {
                    Some(n) => node = n,
                    None => return Some(id),
                }
            }
            node.clusters.retain(|&x| x != id);
        }
        Some(id)
    }
}

/// The line's tokens with the obviously variable ones masked; `None` when it has none or too
/// many.
pub fn tokenize(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for t in line.split_whitespace() {
        if out.len() == MAX_TOKENS {
            return None;
        }
        out.push(mask(t));
    }
    (!out.is_empty()).then_some(out)
}

/// The tree path of a token list: its first tokens, `<_>` for those holding a digit.
fn route(tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .take(PREFIX_DEPTH)
        .map(|t| {
            if t.bytes().any(|b| b.is_ascii_digit()) {
                WILDCARD.to_string()
            } else {
                t.clone()
            }
        })
        .collect()
}

fn similarity(template: &[String], tokens: &[String]) -> f64 {
    if template.len() != tokens.len() || tokens.is_empty() {
        return 0.0;
    }
    let same = template
        .iter()
        .zip(tokens)
        .filter(|(t, s)| t == s || *t == WILDCARD)
        .count();
    same as f64 / tokens.len() as f64
}

/// `t` with its variable core masked: punctuation around it and a `key=` before it kept.
fn mask(t: &str) -> String {
    const WRAP: &[char] = &['[', ']', '(', ')', '{', '}', '"', '\'', ',', ';', '<', '>'];
    let core = t.trim_matches(WRAP);
    if core.is_empty() {
        return t.to_string();
    }
    let start = t.len() - t.trim_start_matches(WRAP).len();
    let (pre, post) = (&t[..start], &t[start + core.len()..]);
    let masked = if let Some((k, v)) = core.split_once('=').filter(|(k, _)| !k.is_empty()) {
        let v_core = v.trim_matches(WRAP);
        if variable(v_core) {
            let vs = v.len() - v.trim_start_matches(WRAP).len();
            format!("{k}={}{WILDCARD}{}", &v[..vs], &v[vs + v_core.len()..])
        } else {
            return t.to_string();
        }
    } else if variable(core) {
        WILDCARD.to_string()
    } else {
        return t.to_string();
    };
    format!("{pre}{masked}{post}")
}

/// Numbers, IPs, dates, times, hex ids, UUIDs and numbers with a short unit.
fn variable(s: &str) -> bool {
    let b = s.as_bytes();
    if !b.iter().any(u8::is_ascii_digit) {
        return false;
    }
    // Numbers, IPv4, dates, times, timestamps (2024-01-02T03:04:05.123Z), versions.
    let numberish = b.iter().all(|c| {
        c.is_ascii_digit() || matches!(c, b'.' | b'-' | b':' | b'+' | b'/' | b'T' | b'Z' | b'_')
    });
    // Hex ids and UUIDs (and IPv6).
    let hexish = b.len() >= 6
        && b.iter()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, b'-' | b':'));
    // A number with a unit: 250ms, 1.5s, 3KiB, 42%.
    let digits = b
        .iter()
        .take_while(|c| c.is_ascii_digit() || **c == b'.')
        .count();
    let unit = &b[digits..];
    let with_unit =
        digits > 0 && unit.len() <= 3 && unit.iter().all(|c| c.is_ascii_alphabetic() || *c == b'%');
    // Mostly digits: dates with a month's name (02/Dec/2026:10:05:00), versions (v1.2.3).
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    let mostly_digits = b.iter().filter(|c| c.is_ascii_digit()).count() > letters;
    numberish || hexish || with_unit || mostly_digits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_parts_are_masked_and_the_rest_kept() {
        for (t, want) in [
            ("200", "<_>"),
            ("10.0.0.1", "<_>"),
            ("2024-01-02T03:04:05.123Z", "<_>"),
            ("4bf92f3577b34da6", "<_>"),
            ("123e4567-e89b-12d3-a456-426614174000", "<_>"),
            ("250ms", "<_>"),
            ("42%", "<_>"),
            ("status=500", "status=<_>"),
            ("took=\"1.5s\"", "took=\"<_>\""),
            ("[12:00:01]", "[<_>]"),
            ("(pid", "(pid"),
            ("user=alice", "user=alice"),
            ("GET", "GET"),
            ("user42", "user42"),
            ("/api/v1/users", "/api/v1/users"),
            ("deadbeef", "deadbeef"),
            ("[02/Dec/2026:10:05:00", "[<_>"),
            ("HTTP/1.1\"", "HTTP/1.1\""),
            ("=", "="),
        ] {
            assert_eq!(mask(t), want, "{t}");
        }
    }

    #[test]
    fn lines_of_one_shape_share_a_template_and_others_do_not() {
        let mut d = Drain::new(100);
        let a = d
            .train("GET /api/users 200 12ms from 10.0.0.1")
            .expect("tokens");
        assert!(a.created);
        let b = d
            .train("GET /api/users 500 340ms from 10.0.0.2")
            .expect("tokens");
        assert_eq!((b.id, b.created), (a.id, false));
        let c = d
            .train("GET /api/orders 200 8ms from 10.0.0.9")
            .expect("tokens");
        assert_eq!(c.id, a.id, "one differing word joins the template");
        assert_eq!(d.pattern(a.id).as_deref(), Some("GET <_> <_> <_> from <_>"));
        let e = d
            .train("connection reset by peer while reading response header")
            .expect("tokens");
        assert!(e.created && e.id != a.id);
        let f = d.train("user alice logged in").expect("tokens");
        let g = d.train("user bob logged in").expect("tokens");
        assert_eq!(f.id, g.id);
        assert_eq!(d.pattern(f.id).as_deref(), Some("user <_> logged in"));
        // Same length, nothing in common: separate.
        let h = d.train("disk quota exceeded soon").expect("tokens");
        assert_ne!(h.id, f.id);
        assert_eq!(d.len(), 4);
        assert!(d.train("   ").is_none());
        assert!(d.train(&"x ".repeat(MAX_TOKENS + 1)).is_none());
    }

    #[test]
    fn a_full_instance_evicts_the_least_recently_used_template() {
        let mut d = Drain::new(2);
        let a = d.train("alpha one two three").expect("a");
        let b = d.train("bravo four five six").expect("b");
        d.train("alpha one two three").expect("a again");
        let c = d.train("charlie seven eight nine").expect("c");
        assert!(c.created);
        assert_eq!(c.evicted, Some(b.id), "bravo was used least recently");
        assert_eq!(d.len(), 2);
        assert_eq!(d.pattern(a.id).as_deref(), Some("alpha one two three"));
        // The evicted template is gone from the tree: its line starts a new one.
        let b2 = d.train("bravo four five six").expect("b2");
        assert!(b2.created);
        assert_eq!(b2.evicted, Some(a.id));
    }

    #[test]
    fn random_lines_never_break_it_and_the_cap_holds() {
        let mut d = Drain::new(50);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let words = [
            "GET", "POST", "error", "user", "=", "[", "é", "10.0.0.1", "k=v", "0x1f",
        ];
        for _ in 0..20_000 {
            let mut line = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for i in 0..(x % 12) {
                line.push_str(words[((x >> (i * 4)) % words.len() as u64) as usize]);
                line.push(if i % 3 == 0 { ' ' } else { '\t' });
            }
            if let Some(t) = d.train(&line) {
                assert!(d.pattern(t.id).is_some());
            }
            assert!(d.len() <= 50);
        }
    }
}
