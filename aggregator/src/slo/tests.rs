use std::path::Path;

use super::*;

const SLOTH: &str = r#"
version: "prometheus/v1"
service: "myservice"
labels:
  owner: "myteam"
slos:
  - name: "requests-availability"
    objective: 99.9
    description: "Common SLO based on availability for HTTP request responses."
    sli:
      events:
        error_query: sum(rate(http_requests_total{job="myservice",code=~"(5..|429)"}[{{.window}}]))
        total_query: sum(rate(http_requests_total{job="myservice"}[{{.window}}]))
    alerting:
      name: MyServiceHighErrorRate
      labels:
        category: "availability"
      annotations:
        summary: "High error rate on 'myservice' requests responses"
      page_alert:
        labels:
          severity: pageteam
      ticket_alert:
        labels:
          severity: "slack"
"#;

#[test]
fn a_sloth_file_generates_sloths_rules() {
    let slos = spec::parse(Path::new("s.yml"), SLOTH).expect("parses");
    assert_eq!(slos.len(), 1);
    let s = &slos[0];
    assert_eq!(s.id, "myservice-requests-availability");
    assert_eq!(s.period_window(), "30d");
    let text = generate::rule_file(&slos);
    let groups = groups(&slos, Duration::from_secs(60)).expect("generated rules load");
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "sloth-slo-sli-recordings-myservice-requests-availability",
            "sloth-slo-meta-recordings-myservice-requests-availability",
            "sloth-slo-alerts-myservice-requests-availability"
        ]
    );
    let records: Vec<&str> = groups[0].rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        records,
        [
            "slo:sli_error:ratio_rate5m",
            "slo:sli_error:ratio_rate30m",
            "slo:sli_error:ratio_rate1h",
            "slo:sli_error:ratio_rate2h",
            "slo:sli_error:ratio_rate6h",
            "slo:sli_error:ratio_rate1d",
            "slo:sli_error:ratio_rate3d",
            "slo:sli_error:ratio_rate30d"
        ]
    );
    // The burn-rate table of the SRE workbook for 30 days, over Sloth's error budget.
    for (f, a, b) in [
        ("14.4", "5m", "1h"),
        ("6", "30m", "6h"),
        ("3", "2h", "1d"),
        ("1", "6h", "3d"),
    ] {
        for w in [a, b] {
            let needle = format!(
                "max(slo:sli_error:ratio_rate{w}{{{}}} > ({f} * 0.0009999999999999432)) without (sloth_window)",
                s.selector()
            );
            assert!(text.contains(&needle), "missing {needle}\n{text}");
        }
    }
    assert!(text.contains("rate(http_requests_total{job=\"myservice\"}[3d])"));
    let alerts = &groups[2].rules;
    assert_eq!(alerts.len(), 2);
    let label = |i: usize, k: &str| {
        alerts[i]
            .labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| format!("{v:?}"))
            .unwrap_or_default()
    };
    assert!(label(0, "sloth_severity").contains("page"));
    assert!(label(0, "severity").contains("pageteam"));
    assert!(label(1, "sloth_severity").contains("ticket"));
    assert!(label(1, "category").contains("availability"));
}

#[test]
fn burn_factors_follow_the_period() {
    let f: Vec<f64> = generate::PAGE
        .iter()
        .chain(generate::TICKET.iter())
        .map(|w| w.factor(30 * 86_400))
        .collect();
    assert_eq!(f, [14.4, 6.0, 3.0, 1.0]);
    // 28 days: Sloth's google-28d windows.
    let f: Vec<f64> = generate::PAGE
        .iter()
        .chain(generate::TICKET.iter())
        .map(|w| w.factor(28 * 86_400))
        .collect();
    assert!(
        (f[0] - 13.44).abs() < 1e-9 && (f[1] - 5.6).abs() < 1e-9,
        "{f:?}"
    );
}

#[test]
fn openslo_v1_with_good_counters_and_an_indicator_ref() {
    let text = r#"
apiVersion: openslo/v1
kind: SLI
metadata:
  name: good-requests
spec:
  ratioMetric:
    counter: true
    good:
      metricSource:
        type: Prometheus
        spec:
          query: sum(http_requests_total{code!~"5.."})
    total:
      metricSource:
        type: Prometheus
        spec:
          query: sum(http_requests_total)
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: web-availability
  labels:
    team: [web, sre]
spec:
  service: web
  indicatorRef: good-requests
  timeWindow:
    - duration: 28d
      isRolling: true
  budgetingMethod: Occurrences
  objectives:
    - displayName: good
      target: 0.995
"#;
    let slos = spec::parse(Path::new("o.yml"), text).expect("parses");
    assert_eq!(slos.len(), 1);
    let s = &slos[0];
    assert_eq!(s.id, "web-web-availability");
    assert!((s.objective - 99.5).abs() < 1e-9);
    assert_eq!(s.period_window(), "28d");
    assert_eq!(s.labels.get("team").map(String::as_str), Some("web,sre"));
    let q = s.error_ratio("1h").expect("windowed");
    assert!(
        q.contains("increase(http_requests_total{code!~\"5..\"}[1h])"),
        "{q}"
    );
    assert!(q.starts_with("1 - "), "{q}");
    groups(&slos, Duration::from_secs(60)).expect("generated rules load");
    let text = generate::rule_file(&slos);
    assert!(text.contains("alert: SLOErrorBudgetBurn"));
    assert!(
        text.contains("(13.44 * "),
        "28 days: 2 % in an hour is 13.44x\n{text}"
    );
}

#[test]
fn openslo_v1alpha_as_sloth_reads_it() {
    let text = r#"
apiVersion: openslo/v1alpha
kind: SLO
metadata:
  name: sloth-slo-my-service
spec:
  service: my-service
  budgetingMethod: Occurrences
  objectives:
    - ratioMetrics:
        good:
          source: prometheus
          queryType: promql
          query: sum(rate(http_request_duration_seconds_count{job="myservice",code!~"(5..|429)"}[{{.window}}]))
        total:
          source: prometheus
          queryType: promql
          query: sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))
      target: 0.999
  timeWindows:
    - count: 30
      unit: Day
"#;
    let slos = spec::parse(Path::new("a.yml"), text).expect("parses");
    assert_eq!(slos[0].id, "my-service-sloth-slo-my-service-0");
    assert_eq!(slos[0].period_window(), "30d");
    groups(&slos, Duration::from_secs(60)).expect("generated rules load");
}

#[test]
fn bad_slo_files_are_refused_naming_the_problem() {
    let bad = |text: &str| {
        spec::parse(Path::new("b.yml"), text)
            .and_then(|s| groups(&s, Duration::from_secs(60)).map(|_| s))
            .expect_err(text)
            .to_string()
    };
    let sloth = |slo: &str| format!("version: prometheus/v1\nservice: svc\nslos:\n{slo}");
    let events = "    sli: {events: {error_query: 'sum(rate(e[{{.window}}]))', total_query: 'sum(rate(t[{{.window}}]))'}}\n";
    for (text, want) in [
        ("version: prometheus/v2\nservice: a\n".to_string(), "prometheus/v1"),
        ("kind: Deployment\n".to_string(), "neither a Sloth file"),
        (sloth(&format!("  - name: a\n    objective: 100\n{events}    alerting: {{name: A}}\n")), "objective 100"),
        (sloth(&format!("  - name: a\n    objective: 0\n{events}")), "objective 0"),
        (sloth(&format!("  - name: 'a b'\n    objective: 99\n{events}")), "name \"a b\""),
        (sloth(&format!("  - name: a\n    objective: 99\n{events}")), "alerting.name is required"),
        (sloth("  - name: a\n    objective: 99\n    sli: {events: {error_query: 'sum(rate(e[5m]))', total_query: 'sum(rate(t[{{.window}}]))'}}\n    alerting: {name: A}\n"), "has no {{.window}}"),
        (sloth("  - name: a\n    objective: 99\n    sli: {events: {error_query: 'sum(rate(e[{{.window}}])', total_query: 'sum(rate(t[{{.window}}]))'}}\n    alerting: {name: A}\n"), "does not parse"),
        (sloth("  - name: a\n    objective: 99\n    sli: {plugin: {id: x}}\n    alerting: {name: A}\n"), "plugins"),
        (sloth(&format!("  - name: a\n    objective: 99\n{events}    alerting: {{name: A}}\n    labels: {{sloth_id: x}}\n")), "generated"),
        (sloth(&format!("  - name: a\n    objective: 99\n{events}    alerting: {{name: A}}\n  - name: a\n    objective: 99\n{events}    alerting: {{name: A}}\n")), "defined twice"),
        (sloth(&format!("  - name: a\n    objective: 99\n{events}    alerting: {{name: A}}\n    colour: red\n")), "colour"),
        ("apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: x}\nspec: {service: s, budgetingMethod: Timeslices, objectives: [{target: 0.9}]}\n".to_string(), "Timeslices"),
        ("apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: x}\nspec: {service: s, indicatorRef: nope, objectives: [{target: 0.9}]}\n".to_string(), "indicatorRef \"nope\""),
        ("apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: x}\nspec: {service: s, timeWindow: [{duration: 1h, isRolling: true}], indicatorRef: nope, objectives: [{target: 0.9}]}\n".to_string(), "from 3 days"),
    ] {
        let e = bad(&text);
        assert!(e.contains(want), "{text}\n→ {e}\n(wanted {want:?})");
        assert!(e.starts_with("b.yml"), "{e}");
    }
    // Both alerts disabled: no name needed, no alert group.
    let ok = sloth(&format!(
        "  - name: a\n    objective: 99\n{events}    alerting: {{page_alert: {{disable: true}}, ticket_alert: {{disable: true}}}}\n"
    ));
    let slos = spec::parse(Path::new("b.yml"), &ok).expect("parses");
    assert_eq!(
        groups(&slos, Duration::from_secs(60)).expect("loads").len(),
        2
    );
}

#[test]
fn the_shipped_slo_file_loads_and_generates_rules() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/slos.yml");
    let slos = load(&path).expect("config/slos.yml loads");
    let ids: Vec<&str> = slos.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "myservice-requests-availability",
            "checkout-checkout-availability"
        ]
    );
    let g = groups(&slos, Duration::from_secs(60)).expect("generated rules load");
    assert_eq!(g.len(), 6);
}
