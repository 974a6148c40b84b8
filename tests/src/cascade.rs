//! Failure cascades for measuring correlation: random topologies from a few archetypes
//! (three tiers over a SAN and DNS, microservices on VMs over hypervisors, databases over
//! NFS), a failure somewhere — a host, a shared infrastructure host, a service, a bad deploy,
//! a retry storm — travelling through what depends on it with random delays, sometimes a
//! second failure elsewhere at the same time, and noise: warnings on nodes the cascades
//! neither reach nor come from (sidecars on the cascade's own hosts included). Alerts are
//! posted to a real aggregator in a random arrival order (onset + `for` + scrape jitter) with
//! the onset their rule would report as `startsAt` (Telltale's rules send `activeAt`: the
//! first evaluation after the condition began, each rule group evaluating every 15, 30 or
//! 60 s at a phase of its own); the incidents it makes are scored against the truth.
//! Symptom alerts have varied names, some unlike the default symptom patterns (`GCPausesLong`,
//! `ContainerOOMKilled`), so runs without `telltale_role` marks show what marks are worth.
//!
//! The world's semantics are the usual ones: a host's failure reaches what runs on it and the
//! hosts and services that need it; a service's failure reaches its callers (all of their
//! instances), not its own other instances; a service in trouble may load its host; a retry
//! storm loads what the faulty service calls. Every scenario's names carry its own prefix, so
//! one aggregator takes them all without their mixing.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::compliance::Rng;

fn pick<T: Clone>(r: &mut Rng, v: &[T]) -> T {
    v[(r.uniform() * v.len() as f64) as usize % v.len()].clone()
}

fn between(r: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + r.uniform() * (hi - lo)
}

fn chance(r: &mut Rng, p: f64) -> bool {
    r.uniform() < p
}

#[derive(Debug, Clone)]
struct Svc {
    name: String,
    deps: Vec<usize>,
    hosts: Vec<usize>,
    needs_hosts: Vec<usize>,
    user_facing: bool,
    /// Sidecars (backup, log shipping): on every host, nothing depends on them.
    sidecar: bool,
}

#[derive(Debug, Clone)]
struct Host {
    name: String,
    aliases: Vec<String>,
    needs: Vec<usize>,
    /// Infrastructure (DNS, SAN, NFS, hypervisor): no service of the scenario runs on it.
    infra: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum N {
    Host(usize),
    Inst(usize, usize),
    Svc(usize),
}

/// One generated alert.
#[derive(Debug, Clone)]
pub struct GenAlert {
    /// Its `alert_id` label.
    pub id: String,
    /// Labels (alertname, host or service labels, severity, cluster, alert_id).
    pub labels: BTreeMap<String, String>,
    /// Annotations (`telltale_role` when marked).
    pub annotations: BTreeMap<String, String>,
    /// Onset, seconds after the scenario's start.
    pub onset: f64,
    /// The onset its rule reports (`activeAt`, posted as `startsAt`): the first evaluation
    /// at or after the onset.
    pub active: f64,
    /// When it arrives (onset + `for` + jitter), seconds.
    pub arrival: f64,
}

/// One scenario: topology, alerts, truth.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Index (names are prefixed `s{index}-`).
    pub index: usize,
    /// The archetype and failures, for reports.
    pub title: String,
    services: Vec<Svc>,
    hosts: Vec<Host>,
    /// Alerts in arrival order.
    pub alerts: Vec<GenAlert>,
    /// Each cascade: root alert id, member ids (root included).
    pub cascades: Vec<(String, Vec<String>)>,
    /// Noise alert ids (each should be alone).
    pub noise: Vec<String>,
}

/// Generation switches.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Mark symptom rules (`telltale_role: symptom`) as the README recommends.
    pub marks: bool,
}

struct Gen<'a> {
    r: &'a mut Rng,
    s: Scenario,
    /// Alerts carry an instance label on service alerts.
    per_instance: bool,
    host_label: &'static str,
    marks: bool,
    used: HashSet<(String, N)>,
    next: usize,
    /// Rule groups by alert name: (evaluation interval, phase), seconds.
    groups: BTreeMap<String, (f64, f64)>,
}

impl Gen<'_> {
    fn host_value(&mut self, h: usize) -> String {
        let host = &self.s.hosts[h];
        let name = match (self.r.uniform() * 4.0) as u32 {
            0 => format!("{}.dc1.example.com", host.name),
            1 if !host.aliases.is_empty() => host.aliases[0].clone(),
            _ => host.name.clone(),
        };
        if self.host_label == "instance" {
            format!("{name}:9100")
        } else {
            name
        }
    }

    /// Adds an alert on `n` unless one of that name is already there.
    fn alert(
        &mut self,
        n: N,
        name: &str,
        onset: f64,
        severity: &str,
        symptom: bool,
    ) -> Option<String> {
        if !self.used.insert((name.to_string(), n)) {
            return None;
        }
        self.next += 1;
        let id = format!("s{}-a{}", self.s.index, self.next);
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), name.to_string());
        labels.insert("alert_id".to_string(), id.clone());
        labels.insert("cluster".to_string(), format!("s{}", self.s.index));
        labels.insert("severity".to_string(), severity.to_string());
        match n {
            N::Host(h) => {
                let v = self.host_value(h);
                labels.insert(self.host_label.to_string(), v);
            }
            N::Inst(s, h) => {
                labels.insert("service".into(), self.s.services[s].name.clone());
                let v = self.host_value(h);
                labels.insert(self.host_label.to_string(), v);
            }
            N::Svc(s) => {
                labels.insert("service".into(), self.s.services[s].name.clone());
            }
        }
        let mut annotations = BTreeMap::new();
        if symptom && self.marks {
            annotations.insert("telltale_role".to_string(), "symptom".to_string());
        }
        // The rule evaluating it runs every 15, 30 or 60 s at a phase of its own: the onset
        // it reports (activeAt) is the first evaluation after the condition began.
        let (every, phase) = match self.groups.get(name) {
            Some(g) => *g,
            None => {
                let every = pick(self.r, &[15.0, 30.0, 60.0]);
                let g = (every, between(self.r, 0.0, every));
                self.groups.insert(name.to_string(), g);
                g
            }
        };
        let active = phase + ((onset - phase) / every).ceil() * every;
        let hold = pick(self.r, &[0.0, 0.0, 30.0, 60.0, 120.0, 300.0]);
        let arrival = active + hold + between(self.r, 0.0, 30.0);
        self.s.alerts.push(GenAlert {
            id: id.clone(),
            labels,
            annotations,
            onset,
            active,
            arrival,
        });
        Some(id)
    }

    /// The nodes a service's failure shows on.
    fn service_nodes(&self, s: usize) -> Vec<N> {
        if self.per_instance {
            self.s.services[s]
                .hosts
                .iter()
                .map(|h| N::Inst(s, *h))
                .collect()
        } else {
            vec![N::Svc(s)]
        }
    }

    fn dependents(&self, s: usize) -> Vec<usize> {
        (0..self.s.services.len())
            .filter(|d| self.s.services[*d].deps.contains(&s))
            .collect()
    }

    /// Everything a failure at `n` can reach (for placing noise and second failures); load
    /// on hosts is left out, a failure does not travel on from there.
    fn reach(&self, n: N) -> BTreeSet<N> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![n];
        while let Some(x) = stack.pop() {
            let mut next = Vec::new();
            match x {
                N::Host(h) => {
                    for (s, svc) in self.s.services.iter().enumerate() {
                        if svc.hosts.contains(&h) {
                            next.push(N::Inst(s, h));
                            next.push(N::Svc(s));
                        }
                        if svc.needs_hosts.contains(&h) {
                            next.push(N::Svc(s));
                            next.extend(svc.hosts.iter().map(|hh| N::Inst(s, *hh)));
                        }
                    }
                    for (k, host) in self.s.hosts.iter().enumerate() {
                        if host.needs.contains(&h) {
                            next.push(N::Host(k));
                        }
                    }
                }
                N::Inst(s, _) => {
                    next.push(N::Svc(s));
                    for d in self.dependents(s) {
                        next.push(N::Svc(d));
                        next.extend(self.s.services[d].hosts.iter().map(|hh| N::Inst(d, *hh)));
                    }
                }
                N::Svc(s) => {
                    next.extend(self.s.services[s].hosts.iter().map(|hh| N::Inst(s, *hh)));
                    for d in self.dependents(s) {
                        next.push(N::Svc(d));
                        next.extend(self.s.services[d].hosts.iter().map(|hh| N::Inst(d, *hh)));
                    }
                }
            }
            for y in next {
                if y != n && seen.insert(y) {
                    stack.push(y);
                }
            }
        }
        seen
    }

    /// A cascade from `root` at `t0`; returns its alert ids (root first) and the nodes hit.
    fn cascade(&mut self, root: N, kind: &str, t0: f64) -> (Vec<String>, BTreeSet<N>) {
        let mut ids = Vec::new();
        let mut hit = BTreeSet::from([root]);
        let sev = if chance(self.r, 0.8) {
            "critical"
        } else {
            "warning"
        };
        let root_name = match (root, kind) {
            (_, "storm") => "HighErrorRate",
            (N::Host(h), _) => match self.s.hosts[h].infra {
                "dns" => "DnsServerDown",
                "san" => "SanDegraded",
                "nfs" => "NfsServerDown",
                "hypervisor" => "HypervisorDown",
                _ => pick(
                    self.r,
                    &["NodeDown", "DiskFull", "HostUnreachable", "MemoryExhausted"],
                ),
            },
            (N::Svc(_), _) => pick(self.r, &["DeployFailing", "HighErrorRate"]),
            (N::Inst(..), _) => pick(
                self.r,
                &["ProcessDown", "HighErrorRate", "ConnectionsExhausted"],
            ),
        };
        let Some(id) = self.alert(root, root_name, t0, sev, false) else {
            return (ids, hit);
        };
        ids.push(id);
        // Breadth-first through what depends on it, each step a random delay later.
        let mut frontier: Vec<(N, f64)> = vec![(root, t0)];
        if kind == "storm" {
            // A retry storm: the faulty service's calls overload what it calls.
            let s = match root {
                N::Inst(s, _) | N::Svc(s) => s,
                N::Host(_) => 0,
            };
            for d in self.s.services[s].deps.clone() {
                for n in self.service_nodes(d) {
                    let t = t0 + between(self.r, 10.0, 90.0);
                    let name = pick(
                        self.r,
                        &[
                            "HighLatency",
                            "SlowResponses",
                            "ConnectionPoolExhausted",
                            "GCPausesLong",
                        ],
                    );
                    if let Some(id) = self.alert(n, name, t, "warning", true) {
                        ids.push(id);
                        hit.insert(n);
                    }
                    let tl = t + between(self.r, 5.0, 60.0);
                    if let N::Inst(_, h) = n
                        && chance(self.r, 0.5)
                        && let Some(id) = self.alert(N::Host(h), "HighLoad", tl, "warning", true)
                    {
                        ids.push(id);
                        hit.insert(N::Host(h));
                    }
                }
            }
        }
        while let Some((n, t)) = frontier.pop() {
            let mut next: Vec<N> = Vec::new();
            match n {
                N::Host(h) => {
                    for (k, host) in self.s.hosts.clone().iter().enumerate() {
                        if host.needs.contains(&h) {
                            let name = match self.s.hosts[h].infra {
                                "dns" => "DnsResolutionFailing",
                                "nfs" => "NfsMountStale",
                                "hypervisor" => "NodeDown",
                                _ => "DependencyDown",
                            };
                            let tt = t + between(self.r, 1.0, 60.0);
                            if let Some(id) = self.alert(N::Host(k), name, tt, "critical", false) {
                                ids.push(id);
                                hit.insert(N::Host(k));
                                frontier.push((N::Host(k), tt));
                            }
                        }
                    }
                    for (s, svc) in self.s.services.clone().iter().enumerate() {
                        if svc.sidecar {
                            continue;
                        }
                        if svc.hosts.contains(&h) {
                            next.push(if self.per_instance {
                                N::Inst(s, h)
                            } else {
                                N::Svc(s)
                            });
                        }
                        if svc.needs_hosts.contains(&h) {
                            next.extend(self.service_nodes(s));
                        }
                    }
                }
                N::Inst(s, _) | N::Svc(s) => {
                    for d in self.dependents(s) {
                        if !self.s.services[d].sidecar {
                            next.extend(self.service_nodes(d));
                        }
                    }
                }
            }
            for m in next {
                if hit.contains(&m) || !chance(self.r, 0.85) {
                    continue;
                }
                let tt = t + between(self.r, 1.0, 90.0);
                let name = pick(self.r, &["UpstreamErrors", "HighErrorRate", "Unavailable"]);
                let sev = pick(self.r, &["critical", "warning"]);
                if let Some(id) = self.alert(m, name, tt, sev, false) {
                    ids.push(id);
                    hit.insert(m);
                    frontier.push((m, tt));
                    // A service in trouble loads its host now and then.
                    let load = pick(
                        self.r,
                        &[
                            "HighLoad",
                            "MemoryPressure",
                            "HostOverloaded",
                            "ContainerOOMKilled",
                            "NodeCPUSaturated",
                        ],
                    );
                    let tl = tt + between(self.r, 10.0, 120.0);
                    if let N::Inst(_, h) = m
                        && chance(self.r, 0.25)
                        && !hit.contains(&N::Host(h))
                        && let Some(id) = self.alert(N::Host(h), load, tl, "warning", true)
                    {
                        ids.push(id);
                        hit.insert(N::Host(h));
                    }
                }
            }
        }
        (ids, hit)
    }

    fn all_nodes(&self) -> Vec<N> {
        let mut v: Vec<N> = (0..self.s.hosts.len()).map(N::Host).collect();
        for (s, svc) in self.s.services.iter().enumerate() {
            v.push(N::Svc(s));
            v.extend(svc.hosts.iter().map(|h| N::Inst(s, *h)));
        }
        v
    }

    /// [`Gen::reach`], for a retry storm also what it overloads and what that reaches.
    fn full_reach(&self, n: N, kind: &str) -> BTreeSet<N> {
        let mut out = self.reach(n);
        if kind == "storm"
            && let N::Inst(s, _) | N::Svc(s) = n
        {
            for d in self.s.services[s].deps.clone() {
                for c in self.service_nodes(d) {
                    out.insert(c);
                    out.extend(self.reach(c));
                }
            }
        }
        out
    }

    /// Whether `a` and `b` are causally apart: a failure at neither reaches the other.
    fn apart(&self, a: N, b: N) -> bool {
        a != b && !self.reach(a).contains(&b) && !self.reach(b).contains(&a)
    }
}

fn name_host(prefix: &str, base: &str, i: usize) -> String {
    format!("{prefix}{base}-{i}")
}

/// Generates scenario `index` from `seed`.
pub fn scenario(seed: u64, index: usize, opt: Options) -> Scenario {
    let mut r = Rng(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    for _ in 0..8 {
        r.uniform();
    }
    let p = format!("s{index}-");
    let mut hosts: Vec<Host> = Vec::new();
    let mut services: Vec<Svc> = Vec::new();
    let host = |hosts: &mut Vec<Host>, base: &str, i: usize, infra: &'static str| {
        hosts.push(Host {
            name: name_host(&p, base, i),
            aliases: vec![format!(
                "10.{}.{}.{}",
                index / 250,
                index % 250,
                hosts.len() + 1
            )],
            needs: Vec::new(),
            infra,
        });
        hosts.len() - 1
    };
    let archetype = (r.uniform() * 3.0) as u32;
    let title;
    match archetype {
        0 => {
            title = "three tiers over a SAN and DNS";
            let dns = host(&mut hosts, "dns", 1, "dns");
            let san = host(&mut hosts, "san", 1, "san");
            let tier = |hosts: &mut Vec<Host>, base: &str, n: usize| -> Vec<usize> {
                (1..=n).map(|i| host(hosts, base, i, "")).collect()
            };
            let lb = tier(&mut hosts, "lb", 1 + (r.uniform() * 2.0) as usize);
            let web = tier(&mut hosts, "web", 2 + (r.uniform() * 3.0) as usize);
            let app = tier(&mut hosts, "app", 1 + (r.uniform() * 3.0) as usize);
            let db = tier(&mut hosts, "db", 1);
            let cache = tier(&mut hosts, "cache", 1);
            for h in lb.iter().chain(&web).chain(&app) {
                if chance(&mut r, 0.7) {
                    hosts[*h].needs.push(dns);
                }
            }
            let svc = |name: &str, deps: Vec<usize>, hosts: Vec<usize>| Svc {
                name: format!("{p}{name}"),
                deps,
                hosts,
                needs_hosts: Vec::new(),
                user_facing: false,
                sidecar: false,
            };
            services.push(svc("db", vec![], db.clone()));
            services[0].needs_hosts.push(san);
            services.push(svc("cache", vec![], cache.clone()));
            services.push(svc("api", vec![0, 1], app.clone()));
            services.push(svc("web", vec![2], web.clone()));
            services.push(svc("lb", vec![3], lb.clone()));
            services[4].user_facing = true;
        }
        1 => {
            title = "microservices on VMs over hypervisors";
            let nhv = 1 + (r.uniform() * 2.0) as usize;
            let hvs: Vec<usize> = (1..=nhv)
                .map(|i| host(&mut hosts, "hv", i, "hypervisor"))
                .collect();
            let nvm = 3 + (r.uniform() * 4.0) as usize;
            let vms: Vec<usize> = (1..=nvm)
                .map(|i| {
                    let h = host(&mut hosts, "vm", i, "");
                    let hv = hvs[i % hvs.len()];
                    hosts[h].needs.push(hv);
                    h
                })
                .collect();
            let n = 5 + (r.uniform() * 5.0) as usize;
            for i in 0..n {
                // Layered: a service calls one or two of those made before it.
                let mut deps = Vec::new();
                if i > 0 {
                    deps.push((r.uniform() * i as f64) as usize);
                    if i > 2 && chance(&mut r, 0.5) {
                        let d = (r.uniform() * i as f64) as usize;
                        if !deps.contains(&d) {
                            deps.push(d);
                        }
                    }
                }
                let mut on = vec![pick(&mut r, &vms)];
                if chance(&mut r, 0.4) {
                    let h = pick(&mut r, &vms);
                    if !on.contains(&h) {
                        on.push(h);
                    }
                }
                services.push(Svc {
                    name: format!("{p}svc{i}"),
                    deps,
                    hosts: on,
                    needs_hosts: Vec::new(),
                    user_facing: i == n - 1,
                    sidecar: false,
                });
            }
        }
        _ => {
            title = "databases over NFS and a SAN";
            let nfs = host(&mut hosts, "nfs", 1, "nfs");
            let san = host(&mut hosts, "san", 1, "san");
            let dbh: Vec<usize> = (1..=2).map(|i| host(&mut hosts, "db", i, "")).collect();
            hosts[dbh[0]].needs.push(nfs);
            for (i, h) in dbh.iter().enumerate() {
                services.push(Svc {
                    name: format!("{p}db{i}"),
                    deps: vec![],
                    hosts: vec![*h],
                    needs_hosts: if i == 1 { vec![san] } else { vec![] },
                    user_facing: false,
                    sidecar: false,
                });
            }
            let napp = 2 + (r.uniform() * 3.0) as usize;
            for i in 0..napp {
                let h = host(&mut hosts, "app", i + 1, "");
                services.push(Svc {
                    name: format!("{p}app{i}"),
                    deps: vec![i % 2],
                    hosts: vec![h],
                    needs_hosts: Vec::new(),
                    user_facing: i + 1 == napp,
                    sidecar: false,
                });
            }
        }
    }
    // A sidecar on every non-infrastructure host.
    let plain: Vec<usize> = (0..hosts.len())
        .filter(|h| hosts[*h].infra.is_empty())
        .collect();
    services.push(Svc {
        name: format!("{p}backup"),
        deps: vec![],
        hosts: plain.clone(),
        needs_hosts: Vec::new(),
        user_facing: false,
        sidecar: true,
    });
    let per_instance = chance(&mut r, 0.7);
    let host_label = if chance(&mut r, 0.8) {
        "instance"
    } else {
        "host"
    };
    let mut g = Gen {
        r: &mut r,
        s: Scenario {
            index,
            title: String::new(),
            services,
            hosts,
            alerts: Vec::new(),
            cascades: Vec::new(),
            noise: Vec::new(),
        },
        per_instance,
        host_label,
        marks: opt.marks,
        used: HashSet::new(),
        next: 0,
        groups: BTreeMap::new(),
    };
    // Roots: any host, or any non-sidecar service (as a whole or one instance), or a storm
    // from a service that calls something.
    let roots: Vec<(N, &str)> = {
        let mut v: Vec<(N, &str)> = (0..g.s.hosts.len())
            .map(|h| (N::Host(h), "fault"))
            .collect();
        for (s, svc) in g.s.services.iter().enumerate() {
            if svc.sidecar {
                continue;
            }
            for n in g.service_nodes(s) {
                v.push((n, "fault"));
                if !svc.deps.is_empty() {
                    v.push((n, "storm"));
                }
            }
        }
        v
    };
    let (n1, k1) = pick(g.r, &roots);
    let (ids, hit1) = g.cascade(n1, k1, 0.0);
    g.s.cascades.push((ids[0].clone(), ids.clone()));
    let mut kinds = vec![format!("{k1} at {}", describe(&g.s, n1))];
    if chance(g.r, 0.3) {
        // A second, independent failure: reaching nothing the first reaches, and back.
        let reach1: BTreeSet<N> = g
            .full_reach(n1, k1)
            .into_iter()
            .chain(hit1.iter().copied())
            .collect();
        let ok: Vec<(N, &str)> = roots
            .iter()
            .copied()
            .filter(|(n, k)| {
                let rn = g.full_reach(*n, k);
                g.apart(*n, n1) && rn.is_disjoint(&reach1) && !reach1.contains(n)
            })
            .collect();
        if !ok.is_empty() {
            let (n2, k2) = pick(g.r, &ok);
            let t = between(g.r, -60.0, 120.0);
            let (ids2, _) = g.cascade(n2, k2, t);
            if !ids2.is_empty() {
                g.s.cascades.push((ids2[0].clone(), ids2));
                kinds.push(format!("{k2} at {}", describe(&g.s, n2)));
            }
        }
    }
    // Noise: warnings on nodes no cascade reaches or comes from.
    let nodes = g.all_nodes();
    let roots_now: Vec<N> = vec![n1];
    let hit_all: BTreeSet<N> = g.used.iter().map(|(_, n)| *n).collect();
    let off: Vec<N> = nodes
        .into_iter()
        .filter(|n| {
            !hit_all.contains(n)
                && hit_all.iter().all(|h| g.apart(*n, *h))
                && roots_now.iter().all(|r| g.apart(*n, *r))
        })
        .collect();
    let nnoise = (g.r.uniform() * 4.0) as usize;
    let mut placed: Vec<N> = Vec::new();
    for _ in 0..nnoise {
        // Each on a node of its own, apart from the others too.
        let free: Vec<N> = off
            .iter()
            .copied()
            .filter(|n| placed.iter().all(|p| g.apart(*n, *p)))
            .collect();
        if free.is_empty() {
            break;
        }
        let n = pick(g.r, &free);
        placed.push(n);
        let name = pick(
            g.r,
            &[
                "CertificateExpiringSoon",
                "DiskSpaceWarning",
                "ClockSkew",
                "BackupLate",
            ],
        );
        let t = between(g.r, -60.0, 240.0);
        if let Some(id) = g.alert(n, name, t, "warning", false) {
            g.s.noise.push(id);
        }
    }
    g.s.title = format!("{title}: {}", kinds.join(" + "));
    let mut s = g.s;
    s.alerts
        .sort_by(|a, b| a.arrival.total_cmp(&b.arrival).then(a.id.cmp(&b.id)));
    s
}

fn describe(s: &Scenario, n: N) -> String {
    match n {
        N::Host(h) => format!("host {}", s.hosts[h].name),
        N::Inst(v, h) => format!("{} on {}", s.services[v].name, s.hosts[h].name),
        N::Svc(v) => format!("service {}", s.services[v].name),
    }
}

/// The `correlation:` topology of the scenarios, as YAML lines under `services:`/`hosts:`.
pub fn routes_yaml(scenarios: &[Scenario]) -> String {
    let mut out = String::from(
        "route: {receiver: none}\nreceivers: [{name: none}]\ncorrelation:\n  window: 10m\n  services:\n",
    );
    for s in scenarios {
        for v in &s.services {
            let names = |ix: &[usize], hs: bool| -> String {
                ix.iter()
                    .map(|i| {
                        if hs {
                            s.hosts[*i].name.clone()
                        } else {
                            s.services[*i].name.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "    - {{name: {}, depends_on: [{}], hosts: [{}], depends_on_hosts: [{}], user_facing: {}}}",
                v.name,
                names(&v.deps, false),
                names(&v.hosts, true),
                names(&v.needs_hosts, true),
                v.user_facing
            );
        }
    }
    out.push_str("  hosts:\n");
    for s in scenarios {
        for h in &s.hosts {
            let needs: Vec<&str> = h.needs.iter().map(|n| s.hosts[*n].name.as_str()).collect();
            let _ = writeln!(
                out,
                "    - {{name: {}, aliases: [{}], depends_on: [{}]}}",
                h.name,
                h.aliases.join(", "),
                needs.join(", ")
            );
        }
    }
    out
}

/// The alerts of a scenario as `POST /api/v2/alerts` bodies, in arrival order; `t0` is the
/// scenario's start (ms).
pub fn bodies(s: &Scenario, t0: i64) -> Vec<String> {
    let rfc = |ms: i64| {
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
        )
        .to_string()
    };
    s.alerts
        .iter()
        .map(|a| {
            let onset = t0 + (a.active * 1000.0) as i64;
            json!([{
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc(onset),
                "endsAt": rfc(t0 + 3 * 3_600_000),
            }])
            .to_string()
        })
        .collect()
}

/// Correlation quality over scenarios.
#[derive(Debug, Default, Clone)]
pub struct Score {
    /// Cascades whose incident names their root.
    pub roots_right: usize,
    /// Cascades.
    pub cascades: usize,
    /// Scenarios whose every incident is exactly one cascade or one noise alert.
    pub grouping_right: usize,
    /// Scenarios.
    pub runs: usize,
    /// Noise alerts alone in their incident.
    pub noise_apart: usize,
    /// Noise alerts.
    pub noise: usize,
    /// Scenarios with two failures whose roots are in different incidents.
    pub independent_apart: usize,
    /// Scenarios with two failures.
    pub independent: usize,
    /// What went wrong, one line per miss.
    pub misses: Vec<String>,
}

impl Score {
    /// The four figures as table cells: `a/b = **p %**` each, separated by ` | `.
    pub fn cells(&self) -> String {
        let (root, grouping, noise, independent) = self.pct();
        format!(
            "{}/{} = **{root:.1} %** | {}/{} = **{grouping:.1} %** | {}/{} = **{noise:.1} %** | {}/{} = **{independent:.1} %**",
            self.roots_right,
            self.cascades,
            self.grouping_right,
            self.runs,
            self.noise_apart,
            self.noise,
            self.independent_apart,
            self.independent,
        )
    }

    /// Percentages: (root, grouping, noise, independent).
    pub fn pct(&self) -> (f64, f64, f64, f64) {
        let p = |a: usize, b: usize| {
            if b == 0 {
                100.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        (
            p(self.roots_right, self.cascades),
            p(self.grouping_right, self.runs),
            p(self.noise_apart, self.noise),
            p(self.independent_apart, self.independent),
        )
    }
}

/// Scores the aggregator's `/api/v1/incidents` answer (`data`) against the scenarios.
pub fn score(scenarios: &[Scenario], incidents: &Value) -> Score {
    // alert id → (incident id, is root)
    let mut where_: BTreeMap<String, String> = BTreeMap::new();
    let mut root_of: BTreeMap<String, String> = BTreeMap::new();
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for inc in incidents.as_array().into_iter().flatten() {
        let id = inc["id"].as_str().unwrap_or("").to_string();
        for a in inc["alerts"].as_array().into_iter().flatten() {
            if let Some(aid) = a["labels"]["alert_id"].as_str() {
                where_.insert(aid.to_string(), id.clone());
                members
                    .entry(id.clone())
                    .or_default()
                    .insert(aid.to_string());
            }
        }
        if let Some(r) = inc["rootCause"]["labels"]["alert_id"].as_str() {
            root_of.insert(id.clone(), r.to_string());
        }
    }
    let mut sc = Score::default();
    for s in scenarios {
        sc.runs += 1;
        let mut grouping = true;
        for (root, ids) in &s.cascades {
            sc.cascades += 1;
            let inc = where_.get(root).cloned().unwrap_or_default();
            let named = root_of.get(&inc).cloned().unwrap_or_default();
            if named == *root {
                sc.roots_right += 1;
            } else {
                sc.misses.push(format!(
                    "s{} ({}): root {} named {}",
                    s.index,
                    s.title,
                    label(s, root),
                    label(s, &named)
                ));
            }
            let want: BTreeSet<String> = ids.iter().cloned().collect();
            let got = members.get(&inc).cloned().unwrap_or_default();
            if want != got {
                grouping = false;
                let extra: Vec<String> = got.difference(&want).map(|a| label(s, a)).collect();
                let missing: Vec<String> = want.difference(&got).map(|a| label(s, a)).collect();
                sc.misses.push(format!(
                    "s{} ({}): cascade of {} grouped with [{}], missing [{}]",
                    s.index,
                    s.title,
                    label(s, root),
                    extra.join(", "),
                    missing.join(", ")
                ));
            }
        }
        for n in &s.noise {
            sc.noise += 1;
            let inc = where_.get(n).cloned().unwrap_or_default();
            if members.get(&inc).is_some_and(|m| m.len() == 1) {
                sc.noise_apart += 1;
            } else {
                grouping = false;
                sc.misses
                    .push(format!("s{}: noise {} not alone", s.index, label(s, n)));
            }
        }
        if s.cascades.len() == 2 {
            sc.independent += 1;
            let a = where_.get(&s.cascades[0].0);
            let b = where_.get(&s.cascades[1].0);
            if a.is_some() && a != b {
                sc.independent_apart += 1;
            } else {
                sc.misses.push(format!(
                    "s{} ({}): independent failures merged",
                    s.index, s.title
                ));
            }
        }
        if grouping {
            sc.grouping_right += 1;
        }
    }
    sc
}

fn label(s: &Scenario, id: &str) -> String {
    s.alerts
        .iter()
        .find(|a| a.id == id)
        .map(|a| {
            let on = a
                .labels
                .get("service")
                .or_else(|| a.labels.get("instance"))
                .or_else(|| a.labels.get("host"))
                .cloned()
                .unwrap_or_default();
            format!("{}@{} (+{:.0}s)", a.labels["alertname"], on, a.onset)
        })
        .unwrap_or_else(|| format!("{id:?}"))
}

/// Starts an aggregator with the scenarios' topology, posts every scenario's alerts one
/// request each in arrival order, waits for the incidents to settle and scores them.
pub fn run(scenarios: &[Scenario]) -> anyhow::Result<Score> {
    use anyhow::Context;
    let dir = tempfile::Builder::new()
        .prefix("telltale-cascades")
        .tempdir_in(std::env::temp_dir())?;
    let tls = dir.path().join("tls");
    crate::certs_init(&tls)?;
    let routes = dir.path().join("routes.yml");
    std::fs::write(&routes, routes_yaml(scenarios))?;
    let token = "cascade-token";
    let routes_arg = routes.display().to_string();
    let agg = crate::start_aggregator(
        &tls,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--api-token", token, "--routes", &routes_arg],
    )?;
    // Scenarios start ten minutes ago, a few seconds apart (each has its own names).
    let t0 = telltale_common::model::now_ms() - 600_000;
    for s in scenarios {
        for b in bodies(s, t0 + s.index as i64 * 1000) {
            let (st, body) = crate::http_post_auth(
                agg.http,
                "/api/v2/alerts",
                "application/json",
                b.as_bytes(),
                Some(token),
            )?;
            anyhow::ensure!(st == 200, "POST /api/v2/alerts: {st} {body}");
        }
    }
    let fetch = || -> anyhow::Result<Value> {
        let (st, body) = crate::http_get(agg.http, "/api/v1/incidents")?;
        anyhow::ensure!(st == 200, "GET /api/v1/incidents: {st} {body}");
        let v: Value = serde_json::from_str(&body).context("incidents JSON")?;
        Ok(v["data"].clone())
    };
    let posted: usize = scenarios.iter().map(|s| s.alerts.len()).sum();
    let mut last = fetch()?;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = fetch()?;
        let placed: usize = now
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["alerts"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        let settled = placed == posted && now == last;
        last = now;
        if settled {
            break;
        }
    }
    Ok(score(scenarios, &last))
}
