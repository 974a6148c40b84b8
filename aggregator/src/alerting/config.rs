//! The routing file (`serve --routes FILE`): an Alertmanager configuration, loaded unchanged,
//! plus Telltale's extensions.
//!
//! Alertmanager's keys: `global` (`resolve_timeout`; the rest is accepted and unused),
//! `route`, `receivers`, `inhibit_rules`, `time_intervals`, `mute_time_intervals`,
//! `templates` (accepted; notifications use the fixed v4 payload). Receivers deliver through
//! `webhook_configs`; Alertmanager's other integrations (email, Slack, PagerDuty...) are
//! accepted with a load warning and do not deliver — forward to an Alertmanager for those;
//! what they would have sent is counted (`RoutingConfig::unsupported`).
//!
//! Extensions (Alertmanager would refuse them; Telltale documents them in
//! `config/routes.yml`): per receiver `alertmanager_configs` (forward to an Alertmanager's v2
//! API), `nats_configs` (publish to a NATS JetStream subject), `log_configs` (a JSON line per
//! notification); top level `escalation_policies` and `correlation`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;
use telltale_common::config::Invalid;

use super::correlate::{Correlation, CorrelationSpec};
use super::escalate::{Policy, Step};
use super::inhibit::InhibitRule;
use super::route::{GroupBy, Route};
use super::timeinterval::{SpecText, TimeInterval};
use crate::alert::matchers;
use crate::labels::Matcher;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    global: Option<GlobalSpec>,
    route: Option<RouteSpec>,
    #[serde(default)]
    receivers: Vec<ReceiverSpec>,
    #[serde(default)]
    inhibit_rules: Vec<InhibitSpec>,
    #[serde(default)]
    time_intervals: Vec<IntervalSpec>,
    #[serde(default)]
    mute_time_intervals: Vec<IntervalSpec>,
    #[serde(default)]
    templates: Vec<String>,
    #[serde(default)]
    escalation_policies: Vec<PolicySpec>,
    #[serde(default)]
    correlation: Option<CorrelationSpec>,
}

/// `global:` — only `resolve_timeout` matters here; other keys (SMTP, Slack URLs...) are
/// accepted and unused.
#[derive(Debug, Deserialize)]
struct GlobalSpec {
    #[serde(default)]
    resolve_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    #[serde(default)]
    receiver: Option<String>,
    #[serde(default)]
    group_by: Option<Vec<String>>,
    #[serde(default, rename = "continue")]
    cont: bool,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default, rename = "match")]
    match_eq: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    #[serde(default)]
    group_wait: Option<String>,
    #[serde(default)]
    group_interval: Option<String>,
    #[serde(default)]
    repeat_interval: Option<String>,
    #[serde(default)]
    mute_time_intervals: Vec<String>,
    #[serde(default)]
    active_time_intervals: Vec<String>,
    #[serde(default)]
    routes: Vec<RouteSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverSpec {
    name: String,
    #[serde(default)]
    webhook_configs: Vec<WebhookSpec>,
    #[serde(default)]
    alertmanager_configs: Vec<AlertmanagerSpec>,
    #[serde(default)]
    nats_configs: Vec<NatsSpec>,
    #[serde(default)]
    log_configs: Vec<LogSpec>,
    #[serde(default)]
    clickhouse_configs: Vec<ClickHouseSpec>,
    #[serde(default)]
    email_configs: Option<IgnoredAny>,
    #[serde(default)]
    pagerduty_configs: Option<IgnoredAny>,
    #[serde(default)]
    slack_configs: Option<IgnoredAny>,
    #[serde(default)]
    opsgenie_configs: Option<IgnoredAny>,
    #[serde(default)]
    victorops_configs: Option<IgnoredAny>,
    #[serde(default)]
    pushover_configs: Option<IgnoredAny>,
    #[serde(default)]
    wechat_configs: Option<IgnoredAny>,
    #[serde(default)]
    sns_configs: Option<IgnoredAny>,
    #[serde(default)]
    telegram_configs: Option<IgnoredAny>,
    #[serde(default)]
    webex_configs: Option<IgnoredAny>,
    #[serde(default)]
    discord_configs: Option<IgnoredAny>,
    #[serde(default)]
    msteams_configs: Option<IgnoredAny>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSpec {
    url: String,
    #[serde(default = "yes")]
    send_resolved: bool,
    #[serde(default)]
    max_alerts: usize,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    http_config: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertmanagerSpec {
    url: String,
    #[serde(default = "yes")]
    send_resolved: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NatsSpec {
    url: String,
    subject: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default = "yes")]
    send_resolved: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSpec {
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default = "yes")]
    send_resolved: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClickHouseSpec {
    url: String,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default = "yes")]
    send_resolved: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InhibitSpec {
    #[serde(default)]
    source_matchers: Vec<String>,
    #[serde(default)]
    target_matchers: Vec<String>,
    #[serde(default)]
    source_match: BTreeMap<String, String>,
    #[serde(default)]
    source_match_re: BTreeMap<String, String>,
    #[serde(default)]
    target_match: BTreeMap<String, String>,
    #[serde(default)]
    target_match_re: BTreeMap<String, String>,
    #[serde(default)]
    equal: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntervalSpec {
    name: String,
    #[serde(default)]
    time_intervals: Vec<SpecText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    name: String,
    #[serde(default)]
    matchers: Vec<String>,
    steps: Vec<StepSpec>,
    #[serde(default)]
    repeat: u32,
    #[serde(default)]
    repeat_delay: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    receiver: String,
    #[serde(default)]
    delay: Option<String>,
}

/// One way a receiver delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Integration {
    /// POST of Alertmanager's webhook v4 JSON.
    Webhook {
        /// Target.
        url: String,
        /// Also notify about resolved alerts.
        send_resolved: bool,
        /// Most alerts per message (0: all); the rest are counted in `truncatedAlerts`.
        max_alerts: usize,
        /// Request timeout.
        timeout: Duration,
    },
    /// POST of the alerts to an Alertmanager's `/api/v2/alerts`.
    Alertmanager {
        /// Base URL (`http://host:9093`).
        url: String,
        /// Also forward resolved alerts.
        send_resolved: bool,
    },
    /// Publish of the v4 JSON to a NATS JetStream subject (acknowledged by the stream).
    Nats {
        /// Server URL (`nats://host:4222`).
        url: String,
        /// Subject.
        subject: String,
        /// Stream to create for the subject if it does not exist.
        stream: Option<String>,
        /// Also publish resolved notifications.
        send_resolved: bool,
    },
    /// A row per alert of each notification in ClickHouse's `<database>.events` (created
    /// if missing; schema in [`crate::clickhouse`]).
    ClickHouse {
        /// ClickHouse's HTTP interface (`http://host:8123`).
        url: String,
        /// The database (default `telltale`).
        database: String,
        /// `Authorization: Basic …` from `username` and `password_file`.
        authorization: Option<String>,
        /// Also store resolved notifications.
        send_resolved: bool,
    },
    /// A JSON line per notification, to a file or (no path) the aggregator's log.
    Log {
        /// File to append to.
        path: Option<PathBuf>,
        /// Also log resolved notifications.
        send_resolved: bool,
    },
}

impl Integration {
    /// Name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Integration::Webhook { .. } => "webhook",
            Integration::Alertmanager { .. } => "alertmanager",
            Integration::Nats { .. } => "nats",
            Integration::ClickHouse { .. } => "clickhouse",
            Integration::Log { .. } => "log",
        }
    }

    /// Whether resolved notifications are sent.
    pub fn send_resolved(&self) -> bool {
        match self {
            Integration::Webhook { send_resolved, .. }
            | Integration::Alertmanager { send_resolved, .. }
            | Integration::Nats { send_resolved, .. }
            | Integration::ClickHouse { send_resolved, .. }
            | Integration::Log { send_resolved, .. } => *send_resolved,
        }
    }
}

/// The validated routing configuration.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// After how long without an update an alert with no end counts as resolved.
    pub resolve_timeout: Duration,
    /// The routing tree.
    pub route: Route,
    /// Receivers by name.
    pub receivers: HashMap<String, Vec<Integration>>,
    /// Receivers' names in the file's order (`GET /api/v2/receivers`).
    pub receiver_names: Vec<String>,
    /// Per receiver, the Alertmanager integrations it names that Telltale does not deliver
    /// (`slack_configs`…): what would have gone to them is counted as undeliverable.
    pub unsupported: HashMap<String, Vec<&'static str>>,
    /// Inhibition rules.
    pub inhibit_rules: Vec<InhibitRule>,
    /// Time intervals by name.
    pub time_intervals: HashMap<String, TimeInterval>,
    /// Escalation policies, first match wins.
    pub escalation_policies: Vec<Policy>,
    /// Correlation settings.
    pub correlation: Correlation,
    /// Things accepted but not acted on (unsupported integrations, templates).
    pub warnings: Vec<String>,
}

/// A routing file that does not load.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct RoutingError {
    /// The file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

fn dur(s: &str, what: &str) -> Result<Duration, String> {
    crate::alert::prom_duration(s).map_err(|e| format!("{what}: {e}"))
}

fn http_url(receiver: &str, kind: &str, url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "receiver {receiver:?}: {kind} url {url:?} is not http(s)"
        ))
    }
}

fn legacy(
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
    list: &[String],
) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    for k in eq.keys().chain(re.keys()) {
        if !legacy_label_name(k) {
            return Err(format!("invalid label name {k:?}"));
        }
    }
    for (k, v) in eq {
        out.push(matchers::build(k, "=", v)?);
    }
    for (k, v) in re {
        out.push(matchers::build(k, "=~", v)?);
    }
    for m in list {
        out.extend(matchers::parse_list(m)?);
    }
    Ok(out)
}

/// Alertmanager 0.25's label names in `match`, `match_re` and `group_by`
/// (`[a-zA-Z_][a-zA-Z0-9_]*`; `matchers` also take colons).
fn legacy_label_name(n: &str) -> bool {
    n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Inherit {
    receiver: String,
    group_by: GroupBy,
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
}

fn build_route(spec: RouteSpec, id: String, parent: &Inherit) -> Result<Route, String> {
    let at = |m: String| format!("route {id}: {m}");
    if let Some(bad) = spec
        .group_by
        .iter()
        .flatten()
        .find(|x| *x != "..." && !legacy_label_name(x))
    {
        return Err(at(format!("invalid label name {bad:?} in group_by list")));
    }
    let group_by = match &spec.group_by {
        // An empty list inherits, as in Alertmanager (it sets nothing).
        None => parent.group_by.clone(),
        Some(v) if v.is_empty() => parent.group_by.clone(),
        Some(v) if v.iter().any(|x| x == "...") => {
            if v.len() > 1 {
                return Err(at(
                    "group_by '...' cannot be combined with other labels".into()
                ));
            }
            GroupBy::All
        }
        Some(v) => {
            let mut seen = HashSet::new();
            for x in v {
                if !seen.insert(x) {
                    return Err(at(format!("duplicated label {x:?} in group_by")));
                }
            }
            GroupBy::Labels(v.clone())
        }
    };
    let d = |o: &Option<String>, def: Duration, what: &str| match o {
        Some(s) => dur(s, what).map_err(&at),
        None => Ok(def),
    };
    let me = Inherit {
        // An empty receiver inherits, as in Alertmanager.
        receiver: spec
            .receiver
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or(parent.receiver.clone()),
        group_by,
        group_wait: d(&spec.group_wait, parent.group_wait, "group_wait")?,
        group_interval: d(
            &spec.group_interval,
            parent.group_interval,
            "group_interval",
        )?,
        repeat_interval: d(
            &spec.repeat_interval,
            parent.repeat_interval,
            "repeat_interval",
        )?,
    };
    if me.group_interval.is_zero() || me.repeat_interval.is_zero() {
        return Err(at(
            "group_interval and repeat_interval must be greater than zero".into(),
        ));
    }
    let matchers = legacy(&spec.match_eq, &spec.match_re, &spec.matchers).map_err(&at)?;
    let mut routes = Vec::new();
    for (i, c) in spec.routes.into_iter().enumerate() {
        routes.push(build_route(c, format!("{id}.{i}"), &me)?);
    }
    Ok(Route {
        id,
        receiver: me.receiver,
        group_by: me.group_by,
        matchers,
        cont: spec.cont,
        group_wait: me.group_wait,
        group_interval: me.group_interval,
        repeat_interval: me.repeat_interval,
        mute_time_intervals: spec.mute_time_intervals,
        active_time_intervals: spec.active_time_intervals,
        routes,
    })
}

impl RoutingConfig {
    /// Reads and validates a routing file.
    pub fn load(path: &Path) -> Result<RoutingConfig, RoutingError> {
        let text = std::fs::read_to_string(path).map_err(|e| RoutingError {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text).map_err(|e| RoutingError {
            file: path.display().to_string(),
            message: e.0,
        })
    }

    /// A configuration with one route to the aggregator's log: what runs without `--routes`.
    pub fn log_only() -> RoutingConfig {
        let text = "route: {receiver: log, group_wait: 0s, group_interval: 1m}\nreceivers: [{name: log, log_configs: [{}]}]";
        Self::parse(text).unwrap_or_else(|e| unreachable!("built-in routing config: {e}"))
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<RoutingConfig, Invalid> {
        let spec: FileSpec = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut warnings = Vec::new();
        let resolve_timeout = match spec
            .global
            .as_ref()
            .and_then(|g| g.resolve_timeout.as_ref())
        {
            Some(s) => dur(s, "global.resolve_timeout")?,
            None => Duration::from_secs(300),
        };
        if !spec.templates.is_empty() {
            warnings.push(
                "templates are not used: notifications carry Alertmanager's fixed v4 payload"
                    .to_string(),
            );
        }
        let mut receivers = HashMap::new();
        let mut unsupported_by: HashMap<String, Vec<&'static str>> = HashMap::new();
        let receiver_names: Vec<String> = spec.receivers.iter().map(|r| r.name.clone()).collect();
        for r in spec.receivers {
            let mut ints = Vec::new();
            for w in r.webhook_configs {
                if w.http_config.is_some() {
                    warnings.push(format!(
                        "receiver {:?}: webhook http_config is ignored",
                        r.name
                    ));
                }
                http_url(&r.name, "webhook", &w.url)?;
                ints.push(Integration::Webhook {
                    url: w.url,
                    send_resolved: w.send_resolved,
                    max_alerts: w.max_alerts,
                    timeout: match w.timeout {
                        Some(t) => dur(&t, "webhook timeout")?,
                        None => Duration::from_secs(10),
                    },
                });
            }
            for a in r.alertmanager_configs {
                http_url(&r.name, "alertmanager", &a.url)?;
                ints.push(Integration::Alertmanager {
                    url: a.url,
                    send_resolved: a.send_resolved,
                });
            }
            for n in r.nats_configs {
                if n.subject.is_empty() || n.subject.contains([' ', '*', '>']) {
                    return Err(format!(
                        "receiver {:?}: invalid NATS subject {:?}",
                        r.name, n.subject
                    )
                    .into());
                }
                ints.push(Integration::Nats {
                    url: n.url,
                    subject: n.subject,
                    stream: n.stream,
                    send_resolved: n.send_resolved,
                });
            }
            for c in r.clickhouse_configs {
                http_url(&r.name, "clickhouse", &c.url)?;
                let database = c.database.unwrap_or_else(|| "telltale".into());
                if !crate::clickhouse::valid_database(&database) {
                    return Err(format!(
                        "receiver {:?}: invalid ClickHouse database {database:?}",
                        r.name
                    )
                    .into());
                }
                let password = match &c.password_file {
                    Some(p) => std::fs::read_to_string(p)
                        .map_err(|e| format!("receiver {:?}: {}: {e}", r.name, p.display()))?
                        .trim()
                        .to_string(),
                    None => String::new(),
                };
                ints.push(Integration::ClickHouse {
                    url: c.url,
                    database,
                    authorization: c.username.map(|u| {
                        format!(
                            "Basic {}",
                            telltale_common::otlp::base64_encode(
                                format!("{u}:{password}").as_bytes()
                            )
                        )
                    }),
                    send_resolved: c.send_resolved,
                });
            }
            for l in r.log_configs {
                ints.push(Integration::Log {
                    path: l.path,
                    send_resolved: l.send_resolved,
                });
            }
            let unsupported = [
                ("email_configs", r.email_configs.is_some()),
                ("pagerduty_configs", r.pagerduty_configs.is_some()),
                ("slack_configs", r.slack_configs.is_some()),
                ("opsgenie_configs", r.opsgenie_configs.is_some()),
                ("victorops_configs", r.victorops_configs.is_some()),
                ("pushover_configs", r.pushover_configs.is_some()),
                ("wechat_configs", r.wechat_configs.is_some()),
                ("sns_configs", r.sns_configs.is_some()),
                ("telegram_configs", r.telegram_configs.is_some()),
                ("webex_configs", r.webex_configs.is_some()),
                ("discord_configs", r.discord_configs.is_some()),
                ("msteams_configs", r.msteams_configs.is_some()),
            ];
            let kinds: Vec<&'static str> = unsupported
                .iter()
                .filter(|(_, p)| *p)
                .map(|(k, _)| k.trim_end_matches("_configs"))
                .collect();
            if !kinds.is_empty() {
                unsupported_by.insert(r.name.clone(), kinds);
            }
            for (k, present) in unsupported {
                if present {
                    warnings.push(format!(
                        "receiver {:?}: {k} are not delivered by Telltale (forward to an Alertmanager with alertmanager_configs)",
                        r.name
                    ));
                }
            }
            if receivers.insert(r.name.clone(), ints).is_some() {
                return Err(format!("receiver {:?} is defined twice", r.name).into());
            }
        }
        let mut time_intervals = HashMap::new();
        for ti in spec
            .time_intervals
            .into_iter()
            .chain(spec.mute_time_intervals)
        {
            let specs = ti
                .time_intervals
                .iter()
                .map(|s| s.validate())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("time interval {:?}: {e}", ti.name))?;
            if time_intervals
                .insert(ti.name.clone(), TimeInterval { specs })
                .is_some()
            {
                return Err(format!("time interval {:?} is defined twice", ti.name).into());
            }
        }
        let root = spec.route.ok_or("no route provided in config")?;
        if !root.matchers.is_empty() || !root.match_eq.is_empty() || !root.match_re.is_empty() {
            return Err("root route must not have any matchers".into());
        }
        if root.receiver.as_deref().is_none_or(str::is_empty) {
            return Err("root route must specify a default receiver".into());
        }
        if !root.mute_time_intervals.is_empty() || !root.active_time_intervals.is_empty() {
            return Err("root route must not have any mute or active time intervals".into());
        }
        let route = build_route(
            root,
            "0".into(),
            &Inherit {
                receiver: String::new(),
                group_by: GroupBy::Labels(Vec::new()),
                group_wait: Duration::from_secs(30),
                group_interval: Duration::from_secs(300),
                repeat_interval: Duration::from_secs(4 * 3600),
            },
        )?;
        for r in route.walk() {
            if !receivers.contains_key(&r.receiver) {
                return Err(format!(
                    "route {}: undefined receiver {:?} used in route",
                    r.id, r.receiver
                )
                .into());
            }
            for t in r.mute_time_intervals.iter().chain(&r.active_time_intervals) {
                if !time_intervals.contains_key(t) {
                    return Err(format!(
                        "route {}: undefined time interval {t:?} used in route",
                        r.id
                    )
                    .into());
                }
            }
        }
        let mut inhibit_rules = Vec::new();
        for (i, ir) in spec.inhibit_rules.into_iter().enumerate() {
            let at = |m: String| format!("inhibit rule {}: {m}", i + 1);
            inhibit_rules.push(InhibitRule {
                source: legacy(&ir.source_match, &ir.source_match_re, &ir.source_matchers)
                    .map_err(at)?,
                target: legacy(&ir.target_match, &ir.target_match_re, &ir.target_matchers)
                    .map_err(at)?,
                equal: ir.equal,
            });
        }
        let mut escalation_policies = Vec::new();
        for p in spec.escalation_policies {
            let at = |m: String| format!("escalation policy {:?}: {m}", p.name);
            if p.steps.is_empty() {
                return Err(at("needs at least one step".into()).into());
            }
            let mut steps = Vec::new();
            for s in &p.steps {
                if !receivers.contains_key(&s.receiver) {
                    return Err(at(format!("undefined receiver {:?}", s.receiver)).into());
                }
                steps.push(Step {
                    receiver: s.receiver.clone(),
                    delay: match &s.delay {
                        Some(d) => dur(d, "step delay").map_err(at)?,
                        None => Duration::ZERO,
                    },
                });
            }
            escalation_policies.push(Policy {
                matchers: p
                    .matchers
                    .iter()
                    .map(|m| matchers::parse_list(m))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| at(e.0))?
                    .into_iter()
                    .flatten()
                    .collect(),
                steps,
                repeat: p.repeat,
                repeat_delay: match &p.repeat_delay {
                    Some(d) => dur(d, "repeat_delay").map_err(at)?,
                    None => Duration::from_secs(1800),
                },
                name: p.name,
            });
        }
        let correlation = match spec.correlation {
            None => Correlation {
                inhibit: inhibit_rules.clone(),
                ..Correlation::default()
            },
            Some(c) => c.build(&inhibit_rules, dur)?,
        };
        Ok(RoutingConfig {
            resolve_timeout,
            route,
            receivers,
            receiver_names,
            unsupported: unsupported_by,
            inhibit_rules,
            time_intervals,
            escalation_policies,
            correlation,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_routing_files_are_named_precisely() {
        let base = "receivers: [{name: a}]\n";
        for (text, want) in [
            ("receivers: [{name: a}]", "no route"),
            (
                "route: {receiver: b}\nreceivers: [{name: a}]",
                "undefined receiver \"b\"",
            ),
            (
                "route: {receiver: a, matchers: [x=y]}\nreceivers: [{name: a}]",
                "root route must not have any matchers",
            ),
            (
                "route: {receiver: a, routes: [{matchers: ['x=~(']}]}\nreceivers: [{name: a}]",
                "invalid regex",
            ),
            (
                "route: {receiver: a, group_wait: 5q}\nreceivers: [{name: a}]",
                "group_wait",
            ),
            (
                "route: {receiver: a, routes: [{mute_time_intervals: [nope]}]}\nreceivers: [{name: a}]",
                "undefined time interval",
            ),
            (
                "route: {receiver: a, group_by: ['...', x]}\nreceivers: [{name: a}]",
                "'...'",
            ),
            (
                "route: {receiver: a}\nreceivers: [{name: a}, {name: a}]",
                "defined twice",
            ),
            (
                "route: {receiver: a}\nreceivers: [{name: a, clickhouse_configs: [{url: 'http://x:8123', database: 'a-b'}]}]",
                "invalid ClickHouse database",
            ),
            (
                "route: {receiver: a}\nreceivers: [{name: a, clickhouse_configs: [{url: 'x:8123'}]}]",
                "clickhouse",
            ),
            (
                "route: {receiver: a}\nreceivers: [{name: a, clickhouse_configs: [{url: 'http://x:8123', password_file: /nonexistent}]}]",
                "/nonexistent",
            ),
            (
                "route: {receiver: a}\nreceivers: [{name: a, webhook_configs: [{url: 'ftp://x'}]}]",
                "not http",
            ),
            (
                "route: {receiver: a}\nbogus: 1\nreceivers: [{name: a}]",
                "bogus",
            ),
            (
                "route: {receiver: a}\nreceivers: [{name: a}]\nescalation_policies: [{name: p, steps: [{receiver: z}]}]",
                "undefined receiver \"z\"",
            ),
            (
                "route: {receiver: a}\nreceivers: [{name: a}]\ncorrelation: {services: [{name: x, depends_on: [y]}]}",
                "undefined service",
            ),
            (
                "route: {receiver: a}\nreceivers: [{name: a}]\ncorrelation: {services: [{name: x, depends_on: [y]}, {name: y, depends_on: [x]}]}",
                "cycle",
            ),
        ] {
            let e = RoutingConfig::parse(text).expect_err(text);
            assert!(e.0.contains(want), "{text}: {e}");
        }
        let ok = RoutingConfig::parse(&format!(
            "global: {{resolve_timeout: 1m, smtp_smarthost: 'x:25'}}\nroute: {{receiver: a}}\n{base}"
        ))
        .expect("global extras accepted");
        assert_eq!(ok.resolve_timeout, Duration::from_secs(60));
        let warn = RoutingConfig::parse(
            "route: {receiver: a}\nreceivers: [{name: a, slack_configs: [{channel: x}]}]",
        )
        .expect("slack accepted");
        assert!(
            warn.warnings[0].contains("slack_configs"),
            "{:?}",
            warn.warnings
        );
    }
}
