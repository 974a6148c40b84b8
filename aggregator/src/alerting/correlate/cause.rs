//! Which alert explains which, and the incidents and root causes that follow.
//!
//! Alert *a* explains alert *b* when a failure at *a*'s node reaches *b*'s node and the
//! onsets agree: *a* began no later than *b* (give or take the onset slack) and not more than
//! the window before it. A failure reaches through dependencies (host → what runs on it,
//! needed host → what needs it, service → its callers); it reaches *symptoms* (alerts
//! marked `telltale_role: symptom`, or named like one: load, CPU, latency, queues...) as
//! load: on the hosts of what it reaches (a service in trouble loads its host) and on what
//! those services call and their hosts (callers retrying hammer what they call). An
//! inhibition rule whose source would mute the target also counts.
//!
//! Incidents are then the alerts nothing else explains (the roots, or a set of alerts that
//! explain one another) and everything they explain; an alert two roots explain goes with the
//! root that explains it through dependencies rather than load, then the one that explains
//! more. So two independent failures stay two incidents even while a shared symptom fires,
//! and an alert off every causal path stays alone.

use std::collections::HashMap;

use telltale_common::model::Labels;

use super::IncidentAlert;
use super::topology::{Correlation, Index, Node, Reach};
use crate::alerting::inhibit::inhibits;

/// How an alert was marked by its rule (`telltale_role` annotation or label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Known to be a cause (a disk failing, a process down): preferred as root.
    Cause,
    /// Known to be an effect (latency, load, saturation): never named root while another
    /// alert of its incident can be, and may be explained through load.
    Symptom,
    /// Not marked.
    Unmarked,
}

/// How one alert explains another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Link {
    /// It does not.
    None,
    /// As load travelling against the dependencies.
    Load,
    /// An inhibition rule says so.
    Inhibition,
    /// Through dependencies (or both sit on the same node).
    Dependency,
}

impl Link {
    fn strength(self) -> f64 {
        match self {
            Link::None => 0.0,
            Link::Load => 0.5,
            Link::Inhibition | Link::Dependency => 1.0,
        }
    }
}

/// What an alert's labels and annotations say, computed once per alert and topology.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Where it sits.
    pub node: Node,
    /// Its marking.
    pub role: Role,
    /// `telltale_weight` (default 1): scales how strongly it claims to be the root.
    pub weight: f64,
    /// From the `severity` label: critical/page/error 1.5, warning 1, info 0.5.
    pub severity: f64,
}

fn mark<'a>(a: &'a IncidentAlert, key: &str) -> Option<&'a str> {
    a.annotations.get(key).or_else(|| a.labels.get(key))
}

impl Facts {
    /// Reads them.
    pub fn of(ix: &Index, cfg: &Correlation, a: &IncidentAlert) -> Facts {
        let name = a.labels.get("alertname").unwrap_or("");
        let role = match mark(a, "telltale_role").map(|r| r.trim().to_ascii_lowercase()) {
            Some(r) if r == "cause" => Role::Cause,
            Some(r) if r == "symptom" => Role::Symptom,
            _ if cfg.symptoms.iter().any(|p| p.is_match(name)) => Role::Symptom,
            _ => Role::Unmarked,
        };
        let weight = mark(a, "telltale_weight")
            .and_then(|w| w.trim().parse::<f64>().ok())
            .filter(|w| w.is_finite() && *w > 0.0)
            .unwrap_or(1.0);
        let severity = match a.labels.get("severity").map(|s| s.to_ascii_lowercase()) {
            Some(s) if s == "critical" || s == "page" || s == "error" => 1.5,
            Some(s) if s == "info" || s == "none" => 0.5,
            _ => 1.0,
        };
        Facts {
            node: ix.node_of(&a.labels),
            role,
            weight,
            severity,
        }
    }
}

/// One alert as correlation sees it.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    /// Fingerprint.
    pub fp: u64,
    /// Labels.
    pub labels: &'a Labels,
    /// When its condition began (ms): Telltale's rules send `activeAt` as `startsAt`.
    pub onset: i64,
    /// Where it sits.
    pub node: &'a Node,
    /// Its marking.
    pub role: Role,
    /// Weight × severity × role, its claim to be the root.
    prior: f64,
    /// Layer, for ties.
    pub layer: u32,
}

impl<'a> Item<'a> {
    /// An alert with its facts.
    pub fn new(fp: u64, a: &'a IncidentAlert, f: &'a Facts) -> Item<'a> {
        let role = match f.role {
            Role::Cause => 2.0,
            Role::Symptom => 0.25,
            Role::Unmarked => 1.0,
        };
        Item {
            fp,
            labels: &a.labels,
            onset: a.starts_at,
            node: &f.node,
            role: f.role,
            prior: role * f.weight * f.severity,
            layer: a.layer,
        }
    }

    fn name(&self) -> &str {
        self.labels.get("alertname").unwrap_or("")
    }

    fn prior(&self) -> f64 {
        self.prior
    }
}

/// What the topology says about a set of alerts.
pub struct Evidence<'a> {
    cfg: &'a Correlation,
    reach: &'a HashMap<Node, Reach>,
}

impl<'a> Evidence<'a> {
    /// Evidence from reaches computed by [`fill`].
    pub fn new(cfg: &'a Correlation, reach: &'a HashMap<Node, Reach>) -> Evidence<'a> {
        Evidence { cfg, reach }
    }

    /// How `a` explains `b`.
    pub fn link(&self, a: &Item, b: &Item) -> Link {
        let slack = self.cfg.onset_slack.as_millis() as i64;
        let window = self.cfg.window.as_millis() as i64;
        // A symptom is an effect itself: it explains only other symptoms (load making things
        // slow elsewhere), never what may be a failure of its own — that stays a root, so an
        // independent failure on a loaded host is not folded into the load's incident — and
        // gets no slack to explain what began before it.
        if a.role == Role::Symptom && b.role != Role::Symptom {
            return Link::None;
        }
        let slack = if a.role == Role::Symptom { 0 } else { slack };
        if a.fp == b.fp || a.onset > b.onset + slack || b.onset - a.onset > window {
            return Link::None;
        }
        if a.node == b.node && !matches!(a.node, Node::Nowhere) {
            return Link::Dependency;
        }
        let Some(r) = self.reach.get(a.node) else {
            return Link::None;
        };
        if r.fails(b.node) {
            return Link::Dependency;
        }
        if !self.cfg.inhibit.is_empty() && inhibits(&self.cfg.inhibit, a.labels, b.labels) {
            return Link::Inhibition;
        }
        if b.role == Role::Symptom && r.loads(b.node) {
            Link::Load
        } else {
            Link::None
        }
    }

    /// Whether `a` loads `b` directly (its own host, what it calls).
    pub fn near(&self, a: &Item, b: &Item) -> bool {
        self.reach
            .get(a.node)
            .is_some_and(|r| r.loads_directly(b.node))
    }

    /// Whether `a` and `b` explain each other either way.
    pub fn related(&self, a: &Item, b: &Item) -> bool {
        self.link(a, b) != Link::None || self.link(b, a) != Link::None
    }
}

/// One incident's worth of alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The probable root cause.
    pub root: u64,
    /// Every member (root included).
    pub members: Vec<u64>,
    /// Why that root: the evidence and the runner-up.
    pub why: String,
}

/// Splits `items` into incidents, each with its root cause.
pub fn partition(ev: &Evidence, items: &[Item]) -> Vec<Group> {
    let n = items.len();
    let link: Vec<Vec<Link>> = items
        .iter()
        .map(|a| items.iter().map(|b| ev.link(a, b)).collect())
        .collect();
    let comp = components(&link);
    let ncomp = comp.iter().copied().max().map_or(0, |m| m + 1);
    // A component is a source when no alert outside it explains one of its alerts.
    let mut source = vec![true; ncomp];
    for (i, row) in link.iter().enumerate() {
        for (j, l) in row.iter().enumerate() {
            if *l != Link::None && comp[i] != comp[j] {
                source[comp[j]] = false;
            }
        }
    }
    // What each source reaches, through dependencies only and through anything.
    let seeds: Vec<usize> = (0..ncomp).filter(|c| source[*c]).collect();
    let spread = |c: usize, strong: bool| -> Vec<bool> {
        let mut seen: Vec<bool> = comp.iter().map(|x| *x == c).collect();
        let mut stack: Vec<usize> = (0..n).filter(|i| seen[*i]).collect();
        while let Some(i) = stack.pop() {
            for j in 0..n {
                let l = link[i][j];
                if !seen[j] && l != Link::None && (!strong || l != Link::Load) {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        seen
    };
    let reach: Vec<(Vec<bool>, Vec<bool>)> = seeds
        .iter()
        .map(|c| (spread(*c, true), spread(*c, false)))
        .collect();
    let first_onset = |c: usize| {
        (0..n)
            .filter(|i| comp[*i] == c)
            .map(|i| items[i].onset)
            .min()
            .unwrap_or(i64::MAX)
    };
    let size: Vec<usize> = reach
        .iter()
        .map(|(_, any)| any.iter().filter(|x| **x).count())
        .collect();
    // Owners, in onset order so that an alert's explainers are placed before it: the seed
    // reaching it through dependencies, then the one holding its best explainer (see
    // below; a cause shows its effects soon), then the one reaching more.
    let mut owner = vec![usize::MAX; n];
    for (s, &c) in seeds.iter().enumerate() {
        for i in 0..n {
            if comp[i] == c {
                owner[i] = s;
            }
        }
    }
    let mut order: Vec<usize> = (0..n).filter(|i| owner[*i] == usize::MAX).collect();
    order.sort_by_key(|i| (items[*i].onset, *i));
    for i in order {
        // The best direct explainer a seed's incident holds: a cause through dependencies,
        // then a cause loading it directly (its host, what it calls), then through what it
        // reaches, then a symptom (an effect explaining further is weaker
        // evidence); among equals the closest in time (one that began after the alert, within
        // the slack, counts its distance twice).
        let best = |s: usize| {
            (0..n)
                .filter(|j| owner[*j] == s && link[*j][i] != Link::None)
                .map(|j| {
                    let class = match (items[j].role == Role::Symptom, link[j][i]) {
                        (false, Link::Dependency | Link::Inhibition) => 3,
                        (false, _) if ev.near(&items[j], &items[i]) => 2,
                        (false, _) => 1,
                        (true, _) => 0,
                    };
                    let d = items[i].onset - items[j].onset;
                    (class, std::cmp::Reverse(if d >= 0 { d } else { -2 * d }))
                })
                .max()
                .unwrap_or((0, std::cmp::Reverse(i64::MAX)))
        };
        owner[i] = (0..seeds.len())
            .filter(|s| reach[*s].1[i])
            .max_by_key(|s| {
                (
                    reach[*s].0[i],
                    best(*s),
                    size[*s],
                    std::cmp::Reverse(first_onset(seeds[*s])),
                    std::cmp::Reverse(*s),
                )
            })
            .unwrap_or(0);
    }
    let mut out = Vec::new();
    for (s, &c) in seeds.iter().enumerate() {
        let members: Vec<usize> = (0..n).filter(|i| owner[*i] == s).collect();
        if members.is_empty() {
            continue;
        }
        let score = |i: usize| -> f64 {
            let explained: f64 = members.iter().map(|j| link[i][*j].strength()).sum();
            (1.0 + explained) * items[i].prior()
        };
        // Candidates: the source component's alerts; a symptom only when nothing else can be.
        let in_comp: Vec<usize> = members.iter().copied().filter(|i| comp[*i] == c).collect();
        let pool: Vec<usize> = [
            in_comp
                .iter()
                .copied()
                .filter(|i| items[*i].role != Role::Symptom)
                .collect(),
            members
                .iter()
                .copied()
                .filter(|i| items[*i].role != Role::Symptom)
                .collect(),
            in_comp.clone(),
        ]
        .into_iter()
        .find(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_default();
        let rank = |i: &usize| {
            (
                ordered(score(*i)),
                std::cmp::Reverse(items[*i].onset),
                std::cmp::Reverse(items[*i].layer),
                std::cmp::Reverse(items[*i].fp),
            )
        };
        let Some(root) = pool.iter().copied().max_by_key(rank) else {
            continue;
        };
        let runner = members
            .iter()
            .copied()
            .filter(|i| *i != root)
            .max_by_key(|i| (items[*i].role != Role::Symptom, rank(i)));
        let why = explain(items, &link, &members, root, runner, in_comp.len());
        out.push(Group {
            root: items[root].fp,
            members: members.iter().map(|i| items[*i].fp).collect(),
            why,
        });
    }
    out
}

/// A float's total order as an integer (scores are finite and ≥ 0).
fn ordered(x: f64) -> i64 {
    (x * 1000.0).round() as i64
}

fn explain(
    items: &[Item],
    link: &[Vec<Link>],
    members: &[usize],
    root: usize,
    runner: Option<usize>,
    cycle: usize,
) -> String {
    let r = &items[root];
    let count = |k: Link| members.iter().filter(|j| link[root][**j] == k).count();
    let (dep, load, inh) = (
        count(Link::Dependency),
        count(Link::Load),
        count(Link::Inhibition),
    );
    let mut text = format!(
        "{} ({}): explains {} of the {} other alerts ({dep} through dependencies, {load} as load, {inh} by inhibition rules)",
        r.name(),
        describe(r.node),
        dep + load + inh,
        members.len() - 1,
    );
    if cycle > 1 {
        text.push_str(&format!(
            "; it and {} alerts that began within the onset slack explain one another",
            cycle - 1
        ));
    } else if members.iter().any(|j| link[*j][root] != Link::None) {
        text.push_str("; chosen over a symptom that could also explain it");
    } else {
        text.push_str("; no other alert explains it");
    }
    if let Some(next) = members
        .iter()
        .filter(|j| **j != root)
        .map(|j| items[*j].onset)
        .min()
        .filter(|t| *t > r.onset)
    {
        text.push_str(&format!(
            ", began {} s before the next",
            (next - r.onset) / 1000
        ));
    }
    match r.role {
        Role::Cause => text.push_str(", marked as a cause"),
        Role::Symptom => text.push_str(", marked as a symptom but nothing else could be root"),
        Role::Unmarked => {}
    }
    if let Some(u) = runner {
        let u_explains = members
            .iter()
            .filter(|j| link[u][**j] != Link::None)
            .count();
        text.push_str(&format!(
            "; runner-up {} ({}) explains {u_explains}",
            items[u].name(),
            describe(items[u].node)
        ));
    }
    text
}

fn describe(n: &Node) -> String {
    match n {
        Node::Host(h) => format!("host {h}"),
        Node::Service(s) => format!("service {s}"),
        Node::Instance(s, h) => format!("service {s} on {h}"),
        Node::Label(l, v) => format!("{l}={v}"),
        Node::Nowhere => "no host or service".into(),
    }
}

/// Strongly connected components of the "explains" graph (Kosaraju, iterative), numbered.
fn components(link: &[Vec<Link>]) -> Vec<usize> {
    let n = link.len();
    let mut order = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    for s in 0..n {
        if seen[s] {
            continue;
        }
        seen[s] = true;
        let mut stack = vec![(s, 0usize)];
        while let Some((v, next)) = stack.pop() {
            match (next..n).find(|j| !seen[*j] && link[v][*j] != Link::None) {
                Some(j) => {
                    stack.push((v, j + 1));
                    seen[j] = true;
                    stack.push((j, 0));
                }
                None => order.push(v),
            }
        }
    }
    let mut comp = vec![usize::MAX; n];
    let mut c = 0;
    for &s in order.iter().rev() {
        if comp[s] != usize::MAX {
            continue;
        }
        comp[s] = c;
        let mut stack = vec![s];
        while let Some(v) = stack.pop() {
            for u in 0..n {
                if comp[u] == usize::MAX && link[u][v] != Link::None {
                    comp[u] = c;
                    stack.push(u);
                }
            }
        }
        c += 1;
    }
    comp
}
