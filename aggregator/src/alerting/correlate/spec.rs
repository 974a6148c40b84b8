//! The routing file's `correlation:` section (documented in `config/routes.yml`).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use telltale_common::config::Invalid;

use super::topology::{Correlation, HostNode, ServiceNode, symptom_patterns};
use crate::alerting::inhibit::InhibitRule;

/// `correlation:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationSpec {
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    onset_slack: Option<String>,
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    service_label: Option<String>,
    /// One host label (older files); `host_labels` names several.
    #[serde(default)]
    host_label: Option<String>,
    #[serde(default)]
    host_labels: Option<Vec<String>>,
    #[serde(default)]
    services: Vec<ServiceSpec>,
    #[serde(default)]
    hosts: Vec<HostSpec>,
    /// Alert-name patterns taken as symptoms (replaces the default list).
    #[serde(default)]
    symptoms: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    name: String,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    depends_on_hosts: Vec<String>,
    #[serde(default)]
    user_facing: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSpec {
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
}

impl CorrelationSpec {
    /// Checks and builds the settings; `dur` parses durations as the rest of the file does.
    pub fn build(
        self,
        inhibit: &[InhibitRule],
        dur: impl Fn(&str, &str) -> Result<Duration, String>,
    ) -> Result<Correlation, Invalid> {
        let mut services = HashMap::new();
        for s in self.services {
            let node = ServiceNode {
                depends_on: s.depends_on,
                hosts: s.hosts,
                depends_on_hosts: s.depends_on_hosts,
                user_facing: s.user_facing,
            };
            if services.insert(s.name.clone(), node).is_some() {
                return Err(format!("correlation: service {:?} declared twice", s.name).into());
            }
        }
        for (n, s) in &services {
            for d in &s.depends_on {
                if !services.contains_key(d) {
                    return Err(format!(
                        "correlation: service {n:?} depends on undefined service {d:?}"
                    )
                    .into());
                }
            }
        }
        let mut hosts = HashMap::new();
        for h in self.hosts {
            let node = HostNode {
                aliases: h.aliases,
                depends_on: h.depends_on,
            };
            if hosts.insert(h.name.clone(), node).is_some() {
                return Err(format!("correlation: host {:?} declared twice", h.name).into());
            }
        }
        let def = Correlation::default();
        let host_labels = match (self.host_label, self.host_labels) {
            (Some(_), Some(_)) => {
                return Err(
                    "correlation: host_label and host_labels are exclusive (use host_labels)"
                        .into(),
                );
            }
            (Some(l), None) => vec![l],
            (None, Some(v)) if v.is_empty() => {
                return Err("correlation: host_labels is empty".into());
            }
            (None, Some(v)) => v,
            (None, None) => def.host_labels,
        };
        let corr = Correlation {
            window: match self.window {
                Some(w) => dur(&w, "correlation.window")?,
                None => def.window,
            },
            onset_slack: match self.onset_slack {
                Some(w) => dur(&w, "correlation.onset_slack")?,
                None => def.onset_slack,
            },
            labels: self.labels.unwrap_or(def.labels),
            service_label: self.service_label.unwrap_or(def.service_label),
            host_labels,
            services,
            hosts,
            inhibit: inhibit.to_vec(),
            symptoms: match self.symptoms {
                Some(p) => symptom_patterns(&p)?,
                None => def.symptoms,
            },
        };
        corr.check()?;
        Ok(corr)
    }
}
