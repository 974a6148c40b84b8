use super::*;

const S: i64 = 1000;

fn service(deps: &[&str], hosts: &[&str]) -> ServiceNode {
    ServiceNode {
        depends_on: deps.iter().map(|s| s.to_string()).collect(),
        hosts: hosts.iter().map(|s| s.to_string()).collect(),
        depends_on_hosts: Vec::new(),
        user_facing: false,
    }
}

/// frontend → api → db; cache beside db; each on its own host(s).
fn topo() -> Correlation {
    let mut services = HashMap::new();
    services.insert(
        "frontend".into(),
        service(&["api", "cache"], &["web-1", "web-2", "web-3"]),
    );
    services.insert("api".into(), service(&["db"], &["app-1"]));
    services.insert("db".into(), service(&[], &["db-1"]));
    services.insert("cache".into(), service(&[], &["cache-1"]));
    Correlation {
        services,
        ..Correlation::default()
    }
}

fn alert(pairs: &[(&str, &str)], onset: i64) -> Alert {
    Alert {
        labels: Labels::from_pairs(pairs.iter().copied()),
        annotations: Labels::default(),
        starts_at: onset,
        ends_at: i64::MAX,
        generator_url: String::new(),
    }
}

fn with(mut a: Alert, key: &str, value: &str) -> Alert {
    let mut pairs: Vec<(String, String)> = a
        .annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    pairs.push((key.into(), value.into()));
    a.annotations = Labels::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    a
}

fn root_name(c: &Correlator, id: u64) -> &str {
    c.incidents[&id]
        .root()
        .and_then(|r| r.labels.get("alertname"))
        .unwrap_or("")
}

fn names(c: &Correlator, id: u64) -> Vec<&str> {
    let mut v: Vec<&str> = c.incidents[&id]
        .alerts
        .values()
        .filter_map(|a| a.labels.get("alertname"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_cascade_is_one_incident_rooted_where_it_began_in_any_arrival_order() {
    let alerts = [
        alert(&[("alertname", "DiskFull"), ("instance", "db-1:9100")], 0),
        alert(
            &[
                ("alertname", "DbErrors"),
                ("service", "db"),
                ("instance", "db-1:5432"),
            ],
            10 * S,
        ),
        alert(
            &[
                ("alertname", "ApiErrors"),
                ("service", "api"),
                ("instance", "app-1:80"),
            ],
            20 * S,
        ),
        // Retries load the api's host: a host alert, but a symptom of the database.
        alert(
            &[("alertname", "HighLoad"), ("instance", "app-1:9100")],
            25 * S,
        ),
        alert(
            &[("alertname", "FrontendErrors"), ("service", "frontend")],
            30 * S,
        ),
    ];
    // Every arrival order of the five.
    let mut orders = vec![vec![0usize, 1, 2, 3, 4]];
    for seed in 1..40u64 {
        let mut o: Vec<usize> = (0..5).collect();
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for i in (1..5).rev() {
            x ^= x >> 13;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            o.swap(i, (x % (i as u64 + 1)) as usize);
        }
        orders.push(o);
    }
    for o in orders {
        let mut c = Correlator::new(topo(), vec![]);
        for (k, i) in o.iter().enumerate() {
            c.observe(&alerts[*i], 40 * S + k as i64 * S);
        }
        let open: Vec<u64> = c
            .incidents
            .values()
            .filter(|i| i.open())
            .map(|i| i.id)
            .collect();
        assert_eq!(open.len(), 1, "order {o:?}: {:?}", c.incidents);
        assert_eq!(root_name(&c, open[0]), "DiskFull", "order {o:?}");
        assert_eq!(c.incidents[&open[0]].alerts.len(), 5);
        let why = &c.incidents[&open[0]].why;
        assert!(why.contains("explains 4 of the 4"), "{why}");
        assert!(why.contains("runner-up DbErrors"), "{why}");
    }
}

#[test]
fn onsets_decide_between_a_service_and_what_it_calls() {
    // A retry storm: the frontend's bug (first) overloads the api it calls. The api's latency
    // is marked a symptom, so load travelling up explains it; the api sits lower, but began
    // later, so it cannot be the cause.
    let mut c = Correlator::new(topo(), vec![]);
    let storm = alert(
        &[("alertname", "FrontendErrors"), ("service", "frontend")],
        0,
    );
    let latency = with(
        alert(&[("alertname", "ApiLatency"), ("service", "api")], 60 * S),
        "telltale_role",
        "symptom",
    );
    c.observe(&latency, 70 * S);
    c.observe(&storm, 71 * S);
    assert_eq!(c.incidents.values().filter(|i| i.open()).count(), 1);
    let id = c.incidents.keys().next().copied().expect("incident");
    assert_eq!(root_name(&c, id), "FrontendErrors");
    // The same two with the api's trouble first: the api explains the frontend's errors.
    let mut c = Correlator::new(topo(), vec![]);
    c.observe(
        &alert(
            &[("alertname", "FrontendErrors"), ("service", "frontend")],
            60 * S,
        ),
        70 * S,
    );
    c.observe(
        &alert(&[("alertname", "ApiErrors"), ("service", "api")], 0),
        71 * S,
    );
    assert_eq!(root_name(&c, 1), "ApiErrors");
}

#[test]
fn independent_failures_stay_apart_while_a_shared_symptom_fires() {
    let mut c = Correlator::new(topo(), vec![]);
    let db = alert(
        &[
            ("alertname", "DbDown"),
            ("service", "db"),
            ("instance", "db-1"),
        ],
        0,
    );
    let api = alert(&[("alertname", "ApiErrors"), ("service", "api")], 10 * S);
    let cache = alert(
        &[("alertname", "CacheDiskFull"), ("instance", "cache-1")],
        5 * S,
    );
    let fe = alert(
        &[("alertname", "FrontendErrors"), ("service", "frontend")],
        20 * S,
    );
    for (k, a) in [&fe, &cache, &api, &db].iter().enumerate() {
        c.observe(a, 30 * S + k as i64 * S);
    }
    let open: Vec<u64> = c
        .incidents
        .values()
        .filter(|i| i.open())
        .map(|i| i.id)
        .collect();
    assert_eq!(open.len(), 2, "{:?}", c.incidents);
    let mut roots: Vec<&str> = open.iter().map(|id| root_name(&c, *id)).collect();
    roots.sort();
    assert_eq!(roots, ["CacheDiskFull", "DbDown"]);
    // The shared symptom went with the root explaining more.
    let db_inc = open
        .iter()
        .find(|id| root_name(&c, **id) == "DbDown")
        .expect("db");
    assert_eq!(
        names(&c, *db_inc),
        ["ApiErrors", "DbDown", "FrontendErrors"]
    );
}

#[test]
fn noise_off_the_causal_path_stays_alone() {
    let mut c = Correlator::new(topo(), vec![]);
    // A web host the cascade never touched, a certificate warning that began long before,
    // and an alert with nothing to relate it by.
    let disk = alert(
        &[("alertname", "DiskWarning"), ("instance", "web-3:9100")],
        15 * S,
    );
    let cert = alert(
        &[
            ("alertname", "CertExpiring"),
            ("service", "frontend"),
            ("instance", "web-2:443"),
        ],
        -3600 * S,
    );
    let lonely = alert(&[("alertname", "Watchdog")], 0);
    let cascade = [
        alert(
            &[
                ("alertname", "DbDown"),
                ("service", "db"),
                ("instance", "db-1"),
            ],
            0,
        ),
        alert(
            &[
                ("alertname", "ApiErrors"),
                ("service", "api"),
                ("instance", "app-1"),
            ],
            10 * S,
        ),
        alert(
            &[
                ("alertname", "FrontendErrors"),
                ("service", "frontend"),
                ("instance", "web-1"),
            ],
            20 * S,
        ),
        alert(
            &[("alertname", "HighLoad"), ("instance", "web-1:9100")],
            25 * S,
        ),
    ];
    c.observe(&cert, 0);
    c.observe(&disk, 25 * S);
    c.observe(&lonely, 26 * S);
    for (k, a) in cascade.iter().rev().enumerate() {
        c.observe(a, 30 * S + k as i64 * S);
    }
    let open: Vec<u64> = c
        .incidents
        .values()
        .filter(|i| i.open())
        .map(|i| i.id)
        .collect();
    assert_eq!(open.len(), 4, "{:#?}", c.incidents);
    let main = open
        .iter()
        .find(|id| root_name(&c, **id) == "DbDown")
        .expect("db incident");
    assert_eq!(
        names(&c, *main),
        ["ApiErrors", "DbDown", "FrontendErrors", "HighLoad"]
    );
}

#[test]
fn a_new_root_merges_what_it_explains_and_splits_what_it_does_not() {
    let mut c = Correlator::new(topo(), vec![]);
    // A disk warning on the api's host, then api errors: they look related (same host).
    let disk = alert(
        &[("alertname", "DiskWarning"), ("instance", "app-1:9100")],
        -60 * S,
    );
    let api = alert(
        &[
            ("alertname", "ApiErrors"),
            ("service", "api"),
            ("instance", "app-1"),
        ],
        5 * S,
    );
    c.observe(&disk, 10 * S);
    c.observe(&api, 11 * S);
    assert_eq!(c.incidents.len(), 1);
    // The frontend's errors: explained by the api, same incident.
    let fe = alert(
        &[("alertname", "FrontendErrors"), ("service", "frontend")],
        8 * S,
    );
    c.observe(&fe, 12 * S);
    assert_eq!(c.incidents.len(), 1);
    // A cache failure elsewhere: its own incident.
    let cache_users = alert(
        &[("alertname", "CacheMisses"), ("service", "cache")],
        -40 * S,
    );
    assert_eq!(c.observe(&cache_users, 13 * S), [Change::Opened(2)]);
    // The database went down just before the api's errors: it explains them and the
    // frontend's more closely in time than the disk warning a minute earlier, and explains
    // neither the disk warning (older than the slack) nor the cache.
    let db = alert(
        &[
            ("alertname", "DbDown"),
            ("service", "db"),
            ("instance", "db-1"),
        ],
        S,
    );
    let changes = c.observe(&db, 14 * S);
    assert!(
        changes.contains(&Change::Split { from: 1, into: 3 }),
        "{changes:?}"
    );
    assert_eq!(root_name(&c, 1), "DbDown");
    assert_eq!(names(&c, 1), ["ApiErrors", "DbDown", "FrontendErrors"]);
    assert_eq!(names(&c, 3), ["DiskWarning"]);
    assert_eq!(names(&c, 2), ["CacheMisses"]);
    let kinds: Vec<&str> = c.incidents[&1]
        .timeline
        .iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert!(kinds.contains(&"split"), "{kinds:?}");
    // A merge: two incidents, then a root explaining both.
    let mut c = Correlator::new(topo(), vec![]);
    c.observe(
        &alert(&[("alertname", "ApiErrors"), ("service", "api")], 10 * S),
        20 * S,
    );
    c.observe(
        &alert(
            &[("alertname", "CacheErrors"), ("service", "cache")],
            10 * S,
        ),
        21 * S,
    );
    assert_eq!(c.incidents.len(), 2);
    let mut t = topo();
    t.hosts.insert(
        "rack-switch".into(),
        HostNode {
            aliases: vec!["sw-1.example.net".into()],
            depends_on: vec![],
        },
    );
    for h in ["app-1", "cache-1"] {
        t.hosts.insert(
            h.into(),
            HostNode {
                aliases: vec![],
                depends_on: vec!["rack-switch".into()],
            },
        );
    }
    c.configure(t);
    let changes = c.observe(
        &alert(
            &[
                ("alertname", "SwitchDown"),
                ("instance", "SW-1.example.net:161"),
            ],
            0,
        ),
        22 * S,
    );
    assert_eq!(
        changes,
        [Change::Merged { into: 1, from: 2 }, Change::Updated(1)]
    );
    assert_eq!(root_name(&c, 1), "SwitchDown");
    assert_eq!(names(&c, 1), ["ApiErrors", "CacheErrors", "SwitchDown"]);
}

#[test]
fn marks_severity_and_inhibition_weigh_in() {
    // Two alerts on one node within the onset slack explain each other: the marked cause,
    // then the critical, wins; an equal pair goes to the earlier.
    let pair = |a: Alert, b: Alert| {
        let mut c = Correlator::new(topo(), vec![]);
        c.observe(&a, 50 * S);
        c.observe(&b, 51 * S);
        assert_eq!(c.incidents.len(), 1);
        root_name(&c, 1).to_string()
    };
    let lat = || alert(&[("alertname", "DbReadErrors"), ("service", "db")], 10 * S);
    let conn = || alert(&[("alertname", "DbConnRefused"), ("service", "db")], 12 * S);
    assert_eq!(pair(lat(), conn()), "DbReadErrors");
    assert_eq!(
        pair(lat(), with(conn(), "telltale_role", "cause")),
        "DbConnRefused"
    );
    assert_eq!(
        pair(with(lat(), "telltale_role", "symptom"), conn()),
        "DbConnRefused"
    );
    let crit = |a: Alert| {
        let mut l: Vec<(String, String)> = a
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.push(("severity".into(), "critical".into()));
        Alert {
            labels: Labels::from_pairs(l.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            ..a
        }
    };
    assert_eq!(pair(lat(), crit(conn())), "DbConnRefused");
    assert_eq!(
        pair(lat(), with(conn(), "telltale_weight", "3")),
        "DbConnRefused"
    );
    // An inhibition rule relates alerts the topology knows nothing about.
    let mut cfg = Correlation::default();
    cfg.inhibit.push(crate::alerting::inhibit::InhibitRule {
        source: vec![crate::alert::matchers::parse_one("alertname=ClusterDown").expect("m")],
        target: vec![crate::alert::matchers::parse_one("alertname=JobFailing").expect("m")],
        equal: vec!["cluster".into()],
    });
    let mut c = Correlator::new(cfg, vec![]);
    c.observe(
        &alert(
            &[
                ("alertname", "JobFailing"),
                ("cluster", "eu"),
                ("service", "batch"),
            ],
            5 * S,
        ),
        10 * S,
    );
    c.observe(
        &alert(
            &[
                ("alertname", "ClusterDown"),
                ("cluster", "eu"),
                ("instance", "k8s-api"),
            ],
            0,
        ),
        11 * S,
    );
    assert_eq!(c.incidents.len(), 1, "{:?}", c.incidents);
    assert_eq!(root_name(&c, 1), "ClusterDown");
    assert!(
        c.incidents[&1].why.contains("1 by inhibition"),
        "{}",
        c.incidents[&1].why
    );
}

#[test]
fn hosts_depend_on_hosts_and_services_on_remote_hosts_by_any_of_their_names() {
    let mut t = topo();
    t.services.get_mut("db").expect("db").depends_on_hosts = vec!["san-1".into()];
    t.hosts.insert(
        "hv-1".into(),
        HostNode {
            aliases: vec!["10.0.0.9".into(), "hv-1.dc.example.com".into()],
            depends_on: vec![],
        },
    );
    t.hosts.insert(
        "web-1".into(),
        HostNode {
            aliases: vec![],
            depends_on: vec!["hv-1".into()],
        },
    );
    t.check().expect("valid");
    let ix = t.index();
    assert_eq!(ix.canonical("10.0.0.9"), "hv-1");
    assert_eq!(ix.canonical("HV-1.DC.example.com"), "hv-1");
    assert_eq!(
        ix.canonical("web-1.dc.example.com"),
        "web-1",
        "short name of a known host"
    );
    assert_eq!(ix.canonical("unknown.example.com"), "unknown.example.com");
    let mut c = Correlator::new(t.clone(), vec![]);
    c.observe(
        &alert(&[("alertname", "DbIoErrors"), ("service", "db")], 10 * S),
        20 * S,
    );
    c.observe(
        &alert(&[("alertname", "SanDegraded"), ("host", "san-1")], 0),
        21 * S,
    );
    assert_eq!(c.incidents.len(), 1);
    assert_eq!(root_name(&c, 1), "SanDegraded");
    let mut c = Correlator::new(t.clone(), vec![]);
    c.observe(
        &alert(
            &[
                ("alertname", "NodeDown"),
                ("instance", "web-1.dc.example.com:9100"),
            ],
            10 * S,
        ),
        20 * S,
    );
    c.observe(
        &alert(
            &[
                ("alertname", "HypervisorDown"),
                ("instance", "10.0.0.9:9100"),
            ],
            0,
        ),
        21 * S,
    );
    assert_eq!(c.incidents.len(), 1);
    assert_eq!(root_name(&c, 1), "HypervisorDown");
    // Cycles and doubly claimed names are configuration errors.
    let mut bad = t.clone();
    bad.hosts
        .get_mut("hv-1")
        .expect("hv")
        .depends_on
        .push("web-1".into());
    assert!(bad.check().is_err());
    let mut bad = t;
    bad.hosts
        .get_mut("web-1")
        .expect("web")
        .aliases
        .push("10.0.0.9".into());
    assert!(bad.check().unwrap_err().to_string().contains("10.0.0.9"));
}

#[test]
fn a_topology_learnt_from_traces_relates_alerts() {
    let mut c = Correlator::new(Correlation::default(), vec![]);
    let checkout = alert(&[("alertname", "Slow"), ("service", "checkout")], 5 * S);
    let payments = alert(&[("alertname", "Errors"), ("service", "payments")], 0);
    let calls = vec![
        ("checkout".to_string(), "payments".to_string()),
        // A call back would close a cycle: refused, the first one stays.
        ("payments".to_string(), "checkout".to_string()),
    ];
    let hosts = vec![("payments".to_string(), "pay-1".to_string())];
    c.learn(&calls, &hosts);
    assert!(c.cfg.check().is_ok());
    assert!(c.cfg.layer(&payments.labels) < c.cfg.layer(&checkout.labels));
    c.observe(&checkout, 10 * S);
    c.observe(&payments, 11 * S);
    // payments runs on one host only: its trouble explains that host's load (which began
    // later than the onset slack, so the host cannot be the cause).
    c.observe(
        &alert(&[("alertname", "Load"), ("instance", "pay-1:9100")], 40 * S),
        12 * S,
    );
    assert_eq!(c.incidents.len(), 1, "{:?}", c.incidents);
    assert_eq!(root_name(&c, 1), "Errors");
    // Learning again replaces what was learnt; the configured topology stays.
    let mut c = Correlator::new(topo(), vec![]);
    c.learn(&[("db".to_string(), "frontend".to_string())], &[]);
    assert!(
        c.cfg.check().is_ok(),
        "a learnt cycle through configured edges is refused"
    );
    assert_eq!(c.cfg.services["api"].depends_on, vec!["db".to_string()]);
    c.learn(&[], &[]);
    assert_eq!(c.cfg.services.len(), 4);
}

#[test]
fn late_alerts_open_new_incidents_and_everything_resolves() {
    let mut c = Correlator::new(topo(), vec![]);
    let a = alert(&[("alertname", "A"), ("instance", "h1")], 0);
    c.observe(&a, 0);
    assert_eq!(
        c.observe(&alert(&[("alertname", "B"), ("instance", "h2")], 0), S),
        [Change::Opened(2)]
    );
    // Same host as incident 1 but after the window: a new incident.
    let late = c.observe(
        &alert(&[("alertname", "C"), ("instance", "h1:9100")], 400 * S),
        400 * S,
    );
    assert_eq!(late, [Change::Opened(3)]);
    let mut r = a.clone();
    r.ends_at = 500 * S;
    assert_eq!(
        c.observe(&r, 500 * S),
        [Change::Updated(1), Change::Resolved(1)]
    );
    assert_eq!(c.incidents[&1].resolved_at, 500 * S);
    // Expiring the resolved incident drops what the caches held for its alert only.
    assert_eq!(c.cached(), (3, 2));
    assert_eq!(c.expire(600 * S, Duration::from_secs(60)), [1]);
    assert_eq!(
        c.cached(),
        (2, 2),
        "h1's node stays: incident 3 sits on it too"
    );
    assert_eq!(host_of("[::1]:9100"), "::1");
    assert_eq!(host_of("db-1"), "db-1");
}

#[test]
fn the_shipped_routing_file_loads_and_bad_topologies_are_refused_by_name() {
    use crate::alerting::config::RoutingConfig;
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/routes.yml");
    let cfg = RoutingConfig::load(&p).expect("config/routes.yml loads");
    let c = &cfg.correlation;
    assert_eq!(c.onset_slack, Duration::from_secs(60));
    assert_eq!(c.services["db"].depends_on_hosts, ["san-1"]);
    assert_eq!(c.index().canonical("10.0.0.11"), "db-1");
    let head = "route: {receiver: a}\nreceivers: [{name: a}]\n";
    for (body, want) in [
        (
            "correlation: {services: [{name: x, depends_on: [y]}]}",
            "undefined service \"y\"",
        ),
        (
            "correlation: {hosts: [{name: a, depends_on: [b]}, {name: b, depends_on: [a]}]}",
            "cycle through host",
        ),
        (
            "correlation: {hosts: [{name: a}, {name: a}]}",
            "declared twice",
        ),
        (
            "correlation: {host_label: x, host_labels: [y]}",
            "exclusive",
        ),
        ("correlation: {symptoms: ['(']}", "correlation.symptoms"),
        (
            "correlation: {onset_slack: soon}",
            "correlation.onset_slack",
        ),
        (
            "correlation: {hosts: [{name: a, alias: [b]}]}",
            "unknown field `alias`",
        ),
    ] {
        let err = RoutingConfig::parse(&format!("{head}{body}"))
            .err()
            .unwrap_or_else(|| panic!("{body} accepted"))
            .to_string();
        assert!(err.contains(want), "{body}: {err}");
    }
    // Custom symptom names replace the default list.
    let cfg = RoutingConfig::parse(&format!("{head}correlation: {{symptoms: ['^Brownout']}}"))
        .expect("parses");
    assert_eq!(cfg.correlation.symptoms.len(), 1);
}

#[test]
fn an_anomaly_on_a_dependency_joins_the_incident_as_its_root_candidate() {
    // The shipped anomaly alert (config/rules/anomaly.yml) on the database host, a little
    // before the api's errors: one incident, rooted at the anomaly, whichever comes first.
    let anomaly = alert(
        &[
            ("alertname", "MetricAnomalous"),
            ("detector", "host_cpu"),
            ("instance", "db-1:9100"),
        ],
        0,
    );
    let errors = alert(
        &[
            ("alertname", "ApiErrors"),
            ("service", "api"),
            ("instance", "app-1:80"),
        ],
        20 * S,
    );
    for order in [[&anomaly, &errors], [&errors, &anomaly]] {
        let mut c = Correlator::new(topo(), vec![]);
        for (k, a) in order.iter().enumerate() {
            c.observe(a, 30 * S + k as i64 * S);
        }
        let open: Vec<u64> = c
            .incidents
            .values()
            .filter(|i| i.open())
            .map(|i| i.id)
            .collect();
        assert_eq!(open.len(), 1, "{:?}", c.incidents);
        assert_eq!(root_name(&c, open[0]), "MetricAnomalous");
        assert_eq!(names(&c, open[0]), ["ApiErrors", "MetricAnomalous"]);
    }
    // An anomaly on a host nothing firing depends on stays an incident of its own.
    let mut c = Correlator::new(topo(), vec![]);
    c.observe(&errors, 30 * S);
    let elsewhere = alert(
        &[
            ("alertname", "MetricAnomalous"),
            ("detector", "host_cpu"),
            ("instance", "web-9:9100"),
        ],
        25 * S,
    );
    c.observe(&elsewhere, 31 * S);
    assert_eq!(c.incidents.values().filter(|i| i.open()).count(), 2);
}
