//! What correlation knows about the system: hosts (with their aliases and the hosts they
//! need — a hypervisor, an NFS or SAN server, DNS), services (the services and remote hosts
//! they need, the hosts they run on), and the node each alert sits on.
//!
//! Failure travels *down* the dependency direction: from a host to what runs on it, from a
//! needed host to the hosts and services that need it, from a service to the services that
//! call it. Load lands on the hosts of what a failure reaches and on what failing services
//! call (retries). [`Reach`] holds both for one node.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use telltale_common::config::Invalid;
use telltale_common::model::Labels;

use crate::alerting::inhibit::InhibitRule;

/// A service in the topology.
#[derive(Debug, Clone, Default)]
pub struct ServiceNode {
    /// Services it needs.
    pub depends_on: Vec<String>,
    /// Hosts it runs on (compared with the host label, port removed, aliases resolved).
    pub hosts: Vec<String>,
    /// Hosts it needs without running on them (a SAN or NFS server, a database host).
    pub depends_on_hosts: Vec<String>,
    /// Whether users see it directly (top layer; only used for the `layer` shown).
    pub user_facing: bool,
}

/// A host in the topology.
#[derive(Debug, Clone, Default)]
pub struct HostNode {
    /// Other names alerts may carry for it (FQDNs, addresses).
    pub aliases: Vec<String>,
    /// Hosts it needs (its hypervisor, storage, DNS server).
    pub depends_on: Vec<String>,
}

/// Correlation settings.
#[derive(Debug, Clone)]
pub struct Correlation {
    /// How long after its last activity an incident still takes alerts; also the longest a
    /// failure is taken to need to travel from a cause to an effect.
    pub window: Duration,
    /// How much later than its effect a cause's onset may be and still explain it: rules are
    /// evaluated every interval, so onsets are only known to that precision. The default,
    /// 60 s, is the default evaluation interval (Telltale's and Prometheus'); set it to the
    /// longest rule group interval.
    pub onset_slack: Duration,
    /// Labels whose shared values relate alerts that name neither a host nor a service.
    pub labels: Vec<String>,
    /// Label naming an alert's service.
    pub service_label: String,
    /// Labels naming an alert's host, the first present wins (`instance`'s `:port` ignored).
    pub host_labels: Vec<String>,
    /// Services.
    pub services: HashMap<String, ServiceNode>,
    /// Hosts (only those with aliases or dependencies need declaring).
    pub hosts: HashMap<String, HostNode>,
    /// The routing file's inhibition rules: a source that would mute the target explains it.
    pub inhibit: Vec<InhibitRule>,
    /// Alert names taken as symptoms when a rule does not say (`telltale_role` wins).
    pub symptoms: Vec<regex::Regex>,
}

/// The names of saturation and latency alerts — what load and retries produce, never a cause
/// by themselves: `HighLoad`, `CPUThrottling`, `MemoryPressure`, `HighLatency`,
/// `SlowQueries`, `QueueBacklog`, `RequestTimeouts`... (case-insensitive, anywhere in the
/// alert name).
pub const DEFAULT_SYMPTOMS: &[&str] = &[
    "(?i)load",
    "(?i)cpu",
    "(?i)memory.?pressure",
    "(?i)swap",
    "(?i)latency",
    "(?i)slow",
    "(?i)saturat",
    "(?i)queue|backlog",
    "(?i)throttl",
    "(?i)timeout",
    "(?i)retr(y|ies)",
];

/// Compiles symptom patterns (a match anywhere in the alert name counts).
pub fn symptom_patterns(p: &[impl AsRef<str>]) -> Result<Vec<regex::Regex>, Invalid> {
    p.iter()
        .map(|x| {
            regex::Regex::new(x.as_ref())
                .map_err(|e| Invalid::from(format!("correlation.symptoms: {:?}: {e}", x.as_ref())))
        })
        .collect()
}

impl Default for Correlation {
    fn default() -> Self {
        Correlation {
            window: Duration::from_secs(300),
            onset_slack: Duration::from_secs(60),
            // Not `job`: every agent series carries job="telltale-agent", so sharing it says
            // nothing and would fold unrelated hosts' alerts into one incident.
            labels: Vec::new(),
            service_label: "service".into(),
            host_labels: vec!["instance".into(), "host".into(), "hostname".into()],
            services: HashMap::new(),
            hosts: HashMap::new(),
            inhibit: Vec::new(),
            symptoms: symptom_patterns(DEFAULT_SYMPTOMS).unwrap_or_default(),
        }
    }
}

/// An alert's host: the label's value without a `:port`.
pub fn host_of(v: &str) -> &str {
    match v.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            h.trim_start_matches('[').trim_end_matches(']')
        }
        _ => v,
    }
}

/// Where an alert sits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// A host, by canonical name.
    Host(String),
    /// A service as a whole (the alert names no host).
    Service(String),
    /// A service on one host.
    Instance(String, String),
    /// Neither: a shared value of a configured label.
    Label(String, String),
    /// Nothing to relate it by.
    Nowhere,
}

impl Node {
    fn host(&self) -> Option<&str> {
        match self {
            Node::Host(h) | Node::Instance(_, h) => Some(h),
            _ => None,
        }
    }

    fn service(&self) -> Option<&str> {
        match self {
            Node::Service(s) | Node::Instance(s, _) => Some(s),
            _ => None,
        }
    }
}

/// The topology prepared for lookups (built per regrouping; topologies are small).
pub struct Index<'a> {
    cfg: &'a Correlation,
    /// Any name or alias (lower case) → canonical host name.
    alias: HashMap<String, String>,
    /// Service → the services that need it.
    dependents: HashMap<&'a str, Vec<&'a str>>,
    /// Host → the hosts that need it.
    host_dependents: HashMap<String, Vec<String>>,
    /// Host → services that run on it or need it.
    host_services: HashMap<String, Vec<&'a str>>,
    /// Service → hosts it runs on or needs (canonical).
    service_hosts: HashMap<&'a str, Vec<String>>,
    /// The alert nodes of this regrouping that are instances, by service.
    instances: HashMap<String, Vec<Node>>,
}

impl Correlation {
    /// Fails on a dependency cycle between services or hosts (causes would be undefined)
    /// and on a name declared as an alias of two hosts.
    pub fn check(&self) -> Result<(), Invalid> {
        for s in self.services.keys() {
            if self.height_guarded(s, &mut Vec::new()).is_none() {
                return Err(format!("correlation: dependency cycle through service {s:?}").into());
            }
        }
        for h in self.hosts.keys() {
            if !self.hosts_acyclic(h, &mut Vec::new()) {
                return Err(format!("correlation: dependency cycle through host {h:?}").into());
            }
        }
        let mut seen: HashMap<String, &str> = HashMap::new();
        for (h, n) in &self.hosts {
            for a in n.aliases.iter().chain(std::iter::once(h)) {
                if let Some(other) = seen.insert(a.to_ascii_lowercase(), h)
                    && other != h
                {
                    return Err(format!(
                        "correlation: {a:?} names both host {other:?} and host {h:?}"
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    fn hosts_acyclic(&self, h: &str, stack: &mut Vec<String>) -> bool {
        if stack.iter().any(|x| x == h) {
            return false;
        }
        stack.push(h.to_string());
        let ok = self
            .hosts
            .get(h)
            .is_none_or(|n| n.depends_on.iter().all(|d| self.hosts_acyclic(d, stack)));
        stack.pop();
        ok
    }

    fn height_guarded(&self, s: &str, stack: &mut Vec<String>) -> Option<u32> {
        if stack.iter().any(|x| x == s) {
            return None;
        }
        stack.push(s.to_string());
        let mut h = 0;
        if let Some(n) = self.services.get(s) {
            for d in &n.depends_on {
                h = h.max(1 + self.height_guarded(d, stack)?);
            }
        }
        stack.pop();
        Some(h)
    }

    /// An alert's layer, shown with it: 0 = host, 1.. = services by height in the
    /// dependency graph, user-facing services on top; alerts that name neither come last.
    /// (Only informative: root causes are chosen by what explains what.)
    pub fn layer(&self, labels: &Labels) -> u32 {
        match labels.get(&self.service_label) {
            Some(s) => {
                let h = self.height_guarded(s, &mut Vec::new()).unwrap_or(0);
                let uf = self.services.get(s).is_some_and(|n| n.user_facing);
                1 + h + if uf { 100 } else { 0 }
            }
            None if self.host_labels.iter().any(|l| labels.get(l).is_some()) => 0,
            None => 1000,
        }
    }

    /// Prepares lookups; `nodes` are the alert nodes that will be asked about.
    pub fn index<'a>(&'a self, nodes: impl IntoIterator<Item = &'a Node>) -> Index<'a> {
        let mut alias = HashMap::new();
        for (h, n) in &self.hosts {
            alias.insert(h.to_ascii_lowercase(), h.to_ascii_lowercase());
            for a in &n.aliases {
                alias.insert(a.to_ascii_lowercase(), h.to_ascii_lowercase());
            }
        }
        let mut ix = Index {
            cfg: self,
            alias,
            dependents: HashMap::new(),
            host_dependents: HashMap::new(),
            host_services: HashMap::new(),
            service_hosts: HashMap::new(),
            instances: HashMap::new(),
        };
        for (s, n) in &self.services {
            for d in &n.depends_on {
                ix.dependents.entry(d.as_str()).or_default().push(s);
            }
            for h in n.hosts.iter().chain(&n.depends_on_hosts) {
                let h = ix.canonical(h);
                ix.host_services.entry(h.clone()).or_default().push(s);
                ix.service_hosts.entry(s.as_str()).or_default().push(h);
            }
        }
        for (h, n) in &self.hosts {
            for d in &n.depends_on {
                let (d, h) = (ix.canonical(d), ix.canonical(h));
                ix.host_dependents.entry(d).or_default().push(h);
            }
        }
        for n in nodes {
            if let Node::Instance(s, _) = n {
                let v = ix.instances.entry(s.clone()).or_default();
                if !v.contains(n) {
                    v.push(n.clone());
                }
            }
        }
        ix
    }

    /// The node an alert sits on (aliases resolved with [`Index::canonical`]).
    pub fn node_of(&self, labels: &Labels) -> Node {
        let ix = self.index([]);
        ix.node_of(labels)
    }
}

impl Index<'_> {
    /// A host name as the topology knows it: the declared name for any of its aliases, the
    /// short name of a fully qualified one when that is declared; lower case.
    pub fn canonical(&self, h: &str) -> String {
        let h = h.to_ascii_lowercase();
        if let Some(c) = self.alias.get(&h) {
            return c.clone();
        }
        if let Some((short, _)) = h.split_once('.')
            && h.parse::<std::net::IpAddr>().is_err()
            && let Some(c) = self.alias.get(short)
        {
            return c.clone();
        }
        h
    }

    /// The node an alert sits on.
    pub fn node_of(&self, labels: &Labels) -> Node {
        let cfg = self.cfg;
        let host = cfg
            .host_labels
            .iter()
            .find_map(|l| labels.get(l))
            .map(|v| self.canonical(host_of(v)));
        match (labels.get(&cfg.service_label), host) {
            (Some(s), Some(h)) => Node::Instance(s.to_string(), h),
            (Some(s), None) => Node::Service(s.to_string()),
            (None, Some(h)) => Node::Host(h),
            (None, None) => cfg
                .labels
                .iter()
                .find_map(|l| labels.get(l).map(|v| Node::Label(l.clone(), v.to_string())))
                .unwrap_or(Node::Nowhere),
        }
    }

    fn service_nodes(&self, s: &str, out: &mut Vec<Node>) {
        out.push(Node::Service(s.to_string()));
        if let Some(v) = self.instances.get(s) {
            out.extend(v.iter().cloned());
        }
    }

    /// Where a failure of `n` travels in one step. `part` says `n` is a service reached from
    /// one of its parts (an instance, a host it runs on): its totals show that part's
    /// trouble and its callers see it, but its other instances do not.
    fn down(&self, n: &Node, part: bool) -> Vec<(Node, bool)> {
        let mut out = Vec::new();
        let whole = |v: Vec<Node>| v.into_iter().map(|x| (x, false));
        if let Node::Host(h) = n {
            for v in self.instances.values().flatten() {
                if v.host() == Some(h.as_str()) {
                    out.push((v.clone(), false));
                }
            }
            for s in self.host_services.get(h).into_iter().flatten() {
                let runs_here = self
                    .cfg
                    .services
                    .get(*s)
                    .is_some_and(|c| c.hosts.iter().any(|x| self.canonical(x) == *h));
                out.push((Node::Service(s.to_string()), runs_here));
                if !runs_here {
                    // A host the service needs (its SAN): every instance suffers.
                    let mut v = Vec::new();
                    self.service_nodes(s, &mut v);
                    out.extend(whole(v));
                }
            }
            for d in self.host_dependents.get(h).into_iter().flatten() {
                out.push((Node::Host(d.clone()), false));
            }
        }
        if let Some(s) = n.service() {
            match n {
                // One instance's trouble shows in the service's totals, and the reverse.
                Node::Instance(..) => out.push((Node::Service(s.to_string()), true)),
                _ if part => {}
                _ => out.extend(whole(
                    self.instances
                        .get(s)
                        .into_iter()
                        .flatten()
                        .cloned()
                        .collect(),
                )),
            }
            for d in self.dependents.get(s).into_iter().flatten() {
                let mut v = Vec::new();
                self.service_nodes(d, &mut v);
                out.extend(whole(v));
            }
        }
        out
    }

    fn needs(&self, s: &str, out: &mut Vec<Node>) {
        if let Some(n) = self.cfg.services.get(s) {
            for d in &n.depends_on {
                self.service_nodes(d, out);
            }
            for h in &n.depends_on_hosts {
                out.push(Node::Host(self.canonical(h)));
            }
        }
    }

    /// What a failure or load at `from` can reach.
    pub fn reach(&self, from: &Node) -> Reach {
        let mut r = Reach::default();
        if matches!(from, Node::Nowhere | Node::Label(..)) {
            return r;
        }
        let mut seen: HashSet<(Node, bool)> = HashSet::new();
        let mut q = VecDeque::from([(from.clone(), false)]);
        while let Some((n, part)) = q.pop_front() {
            for m in self.down(&n, part) {
                if m.0 != *from && seen.insert(m.clone()) {
                    r.down.insert(m.0.clone());
                    q.push_back(m);
                }
            }
        }
        // Down then one step up to a host: the load a service in trouble puts on the host
        // it runs on. Only from an instance (a service as a whole would name every host it
        // runs on, and a disk warning on a host the failure never touched would join), or
        // from a service that runs on one host only.
        for n in r.down.iter().chain(std::iter::once(from)) {
            match n {
                Node::Instance(_, h) => {
                    r.host_load.insert(Node::Host(h.clone()));
                }
                Node::Service(s) => {
                    if let Some([h]) = self.cfg.services.get(s).map(|n| n.hosts.as_slice()) {
                        r.host_load.insert(Node::Host(self.canonical(h)));
                    }
                }
                _ => {}
            }
        }
        // Retries: what a failing service and the services it reaches call is hammered by
        // them, and so are the hosts that runs on. (Not from a host's failure: what runs
        // there stops calling anything.)
        let from_service = from.service().is_some();
        for n in r
            .down
            .iter()
            .chain(std::iter::once(from))
            .filter(|_| from_service)
        {
            if let Some(s) = n.service() {
                let mut callee = Vec::new();
                self.needs(s, &mut callee);
                for c in callee {
                    if let Node::Instance(_, h) = &c {
                        r.load.insert(Node::Host(h.clone()));
                    }
                    r.load.insert(c);
                }
            }
        }
        r.load.extend(r.host_load.iter().cloned());
        // What it loads directly: its own host, what it calls and their hosts.
        match from {
            Node::Instance(_, h) => {
                r.near.insert(Node::Host(h.clone()));
            }
            Node::Service(s) => {
                if let Some([h]) = self.cfg.services.get(s).map(|n| n.hosts.as_slice()) {
                    r.near.insert(Node::Host(self.canonical(h)));
                }
            }
            _ => {}
        }
        if let Some(s) = from.service() {
            let mut callee = Vec::new();
            self.needs(s, &mut callee);
            for c in callee {
                if let Node::Instance(_, h) = &c {
                    r.near.insert(Node::Host(h.clone()));
                }
                r.near.insert(c);
            }
        }
        r
    }
}

/// What one node can affect.
#[derive(Debug, Default)]
pub struct Reach {
    /// Through dependencies only (failure travelling the way things depend).
    pub down: HashSet<Node>,
    /// Hosts loaded by what the failure reaches (its own host, the hosts of services it
    /// reaches).
    pub host_load: HashSet<Node>,
    /// Loaded by it: [`Reach::host_load`], plus what it and what it reaches call (retries)
    /// and the hosts those run on.
    pub load: HashSet<Node>,
    /// The part of [`Reach::load`] it causes itself, not through what it reaches.
    pub near: HashSet<Node>,
}
