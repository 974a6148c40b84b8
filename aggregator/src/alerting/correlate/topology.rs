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
    fn service(&self) -> Option<&str> {
        match self {
            Node::Service(s) | Node::Instance(s, _) => Some(s),
            _ => None,
        }
    }
}

/// The topology prepared for lookups (built per observation; topologies are small).
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
    /// Service → hosts it runs on (canonical).
    runs_on: HashMap<&'a str, Vec<String>>,
    /// Service → hosts it needs without running there (canonical).
    needs_hosts: HashMap<&'a str, Vec<String>>,
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

    /// Prepares lookups.
    pub fn index(&self) -> Index<'_> {
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
            runs_on: HashMap::new(),
            needs_hosts: HashMap::new(),
        };
        for (s, n) in &self.services {
            for d in &n.depends_on {
                ix.dependents.entry(d.as_str()).or_default().push(s);
            }
            for h in &n.hosts {
                let h = ix.canonical(h);
                ix.host_services.entry(h.clone()).or_default().push(s);
                ix.runs_on.entry(s.as_str()).or_default().push(h);
            }
            for h in &n.depends_on_hosts {
                let h = ix.canonical(h);
                ix.host_services.entry(h.clone()).or_default().push(s);
                ix.needs_hosts.entry(s.as_str()).or_default().push(h);
            }
        }
        for (h, n) in &self.hosts {
            for d in &n.depends_on {
                let (d, h) = (ix.canonical(d), ix.canonical(h));
                ix.host_dependents.entry(d).or_default().push(h);
            }
        }
        ix
    }

    /// The node an alert sits on (aliases resolved with [`Index::canonical`]).
    pub fn node_of(&self, labels: &Labels) -> Node {
        self.index().node_of(labels)
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

    fn hosts_of(&self, s: &str) -> &[String] {
        self.runs_on.get(s).map_or(&[], Vec::as_slice)
    }

    /// What a failure or load at `from` can reach. It does not depend on which alerts exist,
    /// so it is computed once per node and topology.
    pub fn reach(&self, from: &Node) -> Reach {
        let mut r = Reach::default();
        // Failure, breadth first over hosts, whole services and services reached only in
        // their totals through one part (an instance, a host it runs on): its callers see
        // that part's trouble, its other instances do not.
        #[derive(Clone, PartialEq, Eq, Hash)]
        enum St {
            Host(String),
            Whole(String),
            Part(String),
        }
        let mut q: VecDeque<St> = VecDeque::new();
        match from {
            Node::Host(h) => q.push_back(St::Host(h.clone())),
            Node::Service(s) => q.push_back(St::Whole(s.clone())),
            Node::Instance(s, _) => q.push_back(St::Part(s.clone())),
            Node::Label(..) | Node::Nowhere => return r,
        }
        let mut seen: HashSet<St> = q.iter().cloned().collect();
        let mut push = |q: &mut VecDeque<St>, st: St| {
            if seen.insert(st.clone()) {
                q.push_back(st);
            }
        };
        while let Some(st) = q.pop_front() {
            match &st {
                St::Host(h) => {
                    r.hosts.insert(h.clone());
                    for s in self.host_services.get(h).into_iter().flatten() {
                        let runs_here = self.hosts_of(s).contains(h);
                        push(
                            &mut q,
                            if runs_here {
                                St::Part(s.to_string())
                            } else {
                                St::Whole(s.to_string())
                            },
                        );
                    }
                    for d in self.host_dependents.get(h).into_iter().flatten() {
                        push(&mut q, St::Host(d.clone()));
                    }
                }
                St::Whole(s) | St::Part(s) => {
                    if matches!(st, St::Whole(_)) {
                        r.whole.insert(s.clone());
                    } else {
                        r.part.insert(s.clone());
                    }
                    for d in self.dependents.get(s.as_str()).into_iter().flatten() {
                        push(&mut q, St::Whole(d.to_string()));
                    }
                }
            }
        }
        // Load on hosts: where what it reaches runs (for a service reached through one part
        // only, where that part is: its own host, or the failing host itself).
        let mut load_hosts: HashSet<String> = HashSet::new();
        for s in &r.whole {
            load_hosts.extend(self.hosts_of(s).iter().cloned());
        }
        for s in &r.part {
            if let [h] = self.hosts_of(s) {
                load_hosts.insert(h.clone());
            }
        }
        match from {
            Node::Instance(_, h) => {
                load_hosts.insert(h.clone());
                r.near_hosts.insert(h.clone());
            }
            Node::Service(s) => {
                if let [h] = self.hosts_of(s) {
                    load_hosts.insert(h.clone());
                    r.near_hosts.insert(h.clone());
                }
            }
            _ => {}
        }
        // Retries: what a failing service and the services it reaches call is hammered by
        // them, and so are the hosts that runs on. (Not from a host's failure: what runs
        // there stops calling anything.)
        if let Some(own) = from.service() {
            let reached: Vec<&String> = r.whole.iter().chain(&r.part).collect();
            for s in reached.into_iter().chain(std::iter::once(&own.to_string())) {
                let Some(n) = self.cfg.services.get(s.as_str()) else {
                    continue;
                };
                for c in &n.depends_on {
                    r.callees.insert(c.clone());
                    load_hosts.extend(self.hosts_of(c).iter().cloned());
                    if s == own {
                        r.near_callees.insert(c.clone());
                        r.near_hosts.extend(self.hosts_of(c).iter().cloned());
                    }
                }
            }
        }
        r.load_hosts = load_hosts;
        r
    }
}

/// What one node can affect.
#[derive(Debug, Default)]
pub struct Reach {
    /// Hosts a failure reaches (with every instance on them).
    pub hosts: HashSet<String>,
    /// Services it reaches whole (every instance).
    pub whole: HashSet<String>,
    /// Services it reaches in their totals only.
    pub part: HashSet<String>,
    /// Hosts loaded: where what it reaches runs, and what it and they call runs.
    pub load_hosts: HashSet<String>,
    /// Services hammered by retries: what it and what it reaches call.
    pub callees: HashSet<String>,
    /// Hosts it loads directly: its own, those of what it calls.
    pub near_hosts: HashSet<String>,
    /// What it calls itself.
    pub near_callees: HashSet<String>,
}

impl Reach {
    /// Whether a failure reaches `n` through dependencies.
    pub fn fails(&self, n: &Node) -> bool {
        match n {
            Node::Host(h) => self.hosts.contains(h),
            Node::Service(s) => self.whole.contains(s) || self.part.contains(s),
            Node::Instance(s, h) => self.whole.contains(s) || self.hosts.contains(h),
            _ => false,
        }
    }

    /// Whether it loads `n` (a host, or a service it or what it reaches calls).
    pub fn loads(&self, n: &Node) -> bool {
        match n {
            Node::Host(h) => self.load_hosts.contains(h),
            Node::Service(s) | Node::Instance(s, _) => self.callees.contains(s),
            _ => false,
        }
    }

    /// Whether it loads `n` itself, not through what it reaches.
    pub fn loads_directly(&self, n: &Node) -> bool {
        match n {
            Node::Host(h) => self.near_hosts.contains(h),
            Node::Service(s) | Node::Instance(s, _) => self.near_callees.contains(s),
            _ => false,
        }
    }
}
