//! Remediation end to end: a real service on the agent's host is killed, its health check
//! alert fires, the runbook has the agent restart it over its QUIC connection, the alert
//! resolves and the incident is marked remediated. Then what must be refused is refused,
//! audited, and nothing runs.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use telltale_tests::peers::{Service, WebhookSink, free_tcp_port};
use telltale_tests::{
    Aggregator, certs_init, certs_issue, http_get, http_post_auth, query, start_agent_with_config,
    start_aggregator, wait_for,
};

const TOKEN: &str = "s3cret";

fn get_json(agg: &Aggregator, path: &str) -> Value {
    let (st, body) = http_get(agg.http, path).expect("GET");
    assert_eq!(st, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

fn post(agg: &Aggregator, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    http_post_auth(agg.http, path, "application/json", body.as_bytes(), token).expect("POST")
}

fn remediations(agg: &Aggregator, q: &str) -> Vec<Value> {
    get_json(agg, &format!("/api/v1/remediations{q}"))["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait_state(agg: &Aggregator, alertname: &str, state: &str, secs: u64) -> Value {
    wait_for(Duration::from_secs(secs), || {
        remediations(agg, &format!("?alertname={alertname}"))
            .into_iter()
            .find(|r| r["state"] == state)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {alertname} remediation reached {state}: {:?}",
            remediations(agg, "")
        )
    })
}

fn setup(
    dir: &Path,
    port: u16,
    marks: &Path,
) -> anyhow::Result<(Aggregator, telltale_tests::Proc, WebhookSink, Service)> {
    let tls = dir.join("tls");
    certs_init(&tls)?;
    certs_issue(&tls, "host-r")?;
    let (svc, script) = Service::start(dir, port)?;
    let pidfile = svc.pidfile.clone();

    let sink = WebhookSink::start()?;
    let rules = dir.join("rules.yml");
    std::fs::write(
        &rules,
        r#"groups:
  - name: web
    interval: 1s
    rules:
      - alert: WebDown
        expr: probe_success{check="web"} == 0
        labels: {severity: critical, service: web}
      - alert: Bogus
        expr: vector(1)
        labels: {severity: warning}
      - alert: Injected
        expr: vector(1)
        labels: {port: "80; touch /tmp/telltale-pwned", severity: warning}
      - alert: NeedsApproval
        expr: vector(1)
        labels: {severity: warning}
"#,
    )?;
    let routes = dir.join("routes.yml");
    std::fs::write(
        &routes,
        format!(
            "route: {{receiver: log, group_wait: 0s, group_interval: 1s}}\nreceivers:\n  - name: log\n    log_configs: [{{}}]\n  - name: pager\n    webhook_configs: [{{url: '{}'}}]\nescalation_policies:\n  - name: ops\n    matchers: ['severity=~\"critical|warning\"']\n    steps: [{{receiver: pager, delay: 10m}}]\n",
            sink.url("/page")
        ),
    )?;
    let runbooks = dir.join("runbooks.yml");
    std::fs::write(
        &runbooks,
        r#"runbooks:
  - name: restart-web
    matchers: ['alertname="WebDown"']
    action: start-web
    params: {port: '{{ $labels.port }}'}
    verify_window: 30s
  - name: bogus
    matchers: ['alertname="Bogus"']
    action: rm-everything
    target: host-r
  - name: injected
    matchers: ['alertname="Injected"']
    target: host-r
    action: start-web
    params: {port: '{{ $labels.port }}'}
  - name: approved
    matchers: ['alertname="NeedsApproval"']
    action: mark
    target: host-r
    mode: approve
    verify_window: 2s
"#,
    )?;
    let agg = start_aggregator(
        &tls,
        &dir.join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--api-token",
            TOKEN,
            "--rules",
            &rules.display().to_string(),
            "--routes",
            &routes.display().to_string(),
            "--runbooks",
            &runbooks.display().to_string(),
        ],
    )?;
    std::fs::create_dir_all(marks)?;
    let agent_toml = dir.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            r#"[[check]]
name = "web"
type = "http"
url = "http://127.0.0.1:{port}/"
interval = "1s"
labels = {{ port = "{port}" }}

[[action]]
name = "start-web"
argv = ["/usr/bin/python3", "{script}", "{{port}}", "{pidfile}"]
timeout = "10s"
max_runs = 20
[[action.param]]
name = "port"
pattern = "[0-9]{{2,5}}"
max_len = 5

[[action]]
name = "mark"
argv = ["/usr/bin/mktemp", "-p", "{marks}"]
"#,
            script = script.display(),
            pidfile = pidfile.display(),
            marks = marks.display(),
        ),
    )?;
    let agent = start_agent_with_config(
        &tls,
        "host-r",
        agg.quic,
        &dir.join("agent"),
        "1s",
        Some(&agent_toml),
    )?;
    Ok((agg, agent, sink, svc))
}

#[test]
fn a_killed_service_is_restarted_by_its_runbook_and_the_incident_is_remediated() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let marks = dir.path().join("marks");
    let (agg, agent, sink, svc) = setup(dir.path(), port, &marks).unwrap();
    wait_for(Duration::from_secs(30), || {
        let r = query(agg.http, "probe_success{check=\"web\"}").ok()?;
        (r.first()?["value"][1] == "1").then_some(())
    })
    .expect("the service is probed healthy");

    // Crash the service.
    svc.kill();
    let killed = Instant::now();
    wait_for(Duration::from_secs(10), || (!svc.alive()).then_some(())).expect("down");
    wait_for(Duration::from_secs(30), || svc.alive().then_some(())).unwrap_or_else(|| {
        panic!(
            "not restarted: {:?}\n{}",
            remediations(&agg, ""),
            agent.log()
        )
    });
    eprintln!("kill → service answering again: {:?}", killed.elapsed());
    let r = wait_state(&agg, "WebDown", "remediated", 30);
    assert_eq!(r["action"], "start-web");
    assert_eq!(r["params"]["port"], port.to_string());
    assert_eq!(r["instance"], "host-r");
    assert_eq!(r["result"]["status"], "succeeded");
    assert_eq!(r["result"]["exit_code"], 0);
    let incidents = get_json(&agg, "/api/v1/incidents")["data"]
        .as_array()
        .cloned()
        .unwrap();
    let inc = incidents
        .iter()
        .find(|i| i["rootCause"]["alertname"] == "WebDown")
        .expect("incident of WebDown");
    assert_eq!(inc["remediated"]["remediation"], r["id"]);
    assert_eq!(inc["status"], "resolved");
    // Outcomes are series.
    let runs = wait_for(Duration::from_secs(10), || {
        let v = query(
            agg.http,
            "telltale_remediation_runs_total{action=\"start-web\",result=\"remediated\"}",
        )
        .ok()?;
        (!v.is_empty()).then_some(v)
    })
    .expect("outcome series");
    assert_eq!(runs[0]["value"][1], "1");
    // The agent's audit trail arrived as events.
    let ev = wait_for(Duration::from_secs(15), || {
        let v = get_json(&agg, "/api/v1/events?match=%7Bkind%3D%22remediation%22%7D");
        let list = v["data"].as_array()?.clone();
        list.iter()
            .any(|e| e["labels"]["status"] == "succeeded" && e["labels"]["action"] == "start-web")
            .then_some(list)
    })
    .expect("agent audit events");
    assert!(ev.iter().any(|e| e["labels"]["status"] == "requested"));

    // Refused, nothing run: an action the agent does not have (its hello listed its actions,
    // so the aggregator refuses it without sending, and counts it)...
    let bogus = wait_state(&agg, "Bogus", "failed", 30);
    assert!(
        bogus["result"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not offer action \"rm-everything\""),
        "{bogus}"
    );
    assert!(
        telltale_tests::metric(
            agg.http,
            "telltale_aggregator_remediation_unknown_action_total"
        )
        .unwrap()
            >= 1.0
    );
    // ...and a parameter carrying shell syntax.
    let inj = wait_state(&agg, "Injected", "failed", 30);
    assert_eq!(inj["result"]["status"], "refused");
    assert!(
        inj["result"]["reason"]
            .as_str()
            .unwrap()
            .contains("parameter \"port\" refused"),
        "{inj}"
    );
    assert!(!Path::new("/tmp/telltale-pwned").exists());
    // Failures escalate with the result attached.
    let pages = sink.wait("/page", 2, Duration::from_secs(20)).unwrap();
    assert!(
        pages
            .iter()
            .any(|p| p.body["remediation"]["state"] == "failed"),
        "{pages:?}"
    );

    // Approval mode: waits; approving needs the token; then it runs, but the alert keeps
    // firing past the verify window: it fails and escalates.
    let waiting = wait_state(&agg, "NeedsApproval", "awaiting_approval", 30);
    let id = waiting["id"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_dir(&marks).unwrap().count(),
        0,
        "nothing ran before approval"
    );
    let path = format!("/api/v1/remediations/{id}/approve");
    assert_eq!(post(&agg, &path, "{\"by\":\"alice\"}", None).0, 401);
    assert_eq!(
        post(&agg, &path, "{\"by\":\"alice\"}", Some("wrong")).0,
        401
    );
    let (st, body) = post(&agg, &path, "{\"by\":\"alice\"}", Some(TOKEN));
    assert_eq!(st, 200, "{body}");
    let done = wait_state(&agg, "NeedsApproval", "failed", 30);
    assert_eq!(done["decidedBy"], "alice");
    assert_eq!(done["result"]["status"], "succeeded");
    assert_eq!(
        std::fs::read_dir(&marks).unwrap().count(),
        1,
        "ran exactly once"
    );
    assert!(
        done["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["text"].as_str().unwrap_or("").contains("still firing"))
    );

    // The global switch: off (token required), and a new crash is not remediated.
    assert_eq!(
        post(
            &agg,
            "/api/v1/remediation/status",
            "{\"enabled\":false}",
            None
        )
        .0,
        401
    );
    let (st, body) = post(
        &agg,
        "/api/v1/remediation/status",
        "{\"enabled\":false}",
        Some(TOKEN),
    );
    assert_eq!(st, 200, "{body}");
    svc.kill();
    let refused = wait_state(&agg, "WebDown", "refused", 30);
    assert!(refused["history"].to_string().contains("switched off"));
    assert!(!svc.alive(), "not restarted while switched off");
    drop(agent);
}

#[test]
fn an_agent_does_not_talk_to_a_server_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours");
    let theirs = dir.path().join("theirs");
    certs_init(&ours).unwrap();
    certs_issue(&ours, "host-x").unwrap();
    certs_init(&theirs).unwrap();
    // An impostor aggregator with its own CA; the agent trusts only `ours`.
    let impostor = start_aggregator(
        &theirs,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[],
    )
    .unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let toml = dir.path().join("agent.toml");
    std::fs::write(
        &toml,
        format!(
            "[[action]]\nname = \"mark\"\nargv = [\"/usr/bin/mktemp\", \"-p\", \"{}\"]\n",
            marks.display()
        ),
    )
    .unwrap();
    let agent = start_agent_with_config(
        &ours,
        "host-x",
        impostor.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&toml),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let agents = get_json(&impostor, "/api/v1/agents");
    assert_eq!(
        agents["data"].as_array().map(|a| a.len()),
        Some(0),
        "{agents}"
    );
    let log = agent.log();
    assert!(
        log.to_lowercase().contains("certificate") || log.contains("UnknownIssuer"),
        "{log}"
    );
    assert_eq!(std::fs::read_dir(&marks).unwrap().count(), 0);
}
