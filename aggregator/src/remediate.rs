//! Remediation: runbooks bind alerts to an action of the affected agent's allowlist, the
//! command travels on the agent's own QUIC connection, and the alert is watched afterwards to
//! tell whether the fix worked.
//!
//! - [`hub`]: the connections that take commands (registered by ingest);
//! - [`engine`]: the runbook logic without I/O — matching, guardrails, approvals, deadlines,
//!   the verify window — returning effects;
//! - [`driver`]: carries the effects out (commands, records, outcome series) and tells the
//!   alerting side what happened, over channels wired in `serve.rs`;
//! - this module: the runbook file.
//!
//! The aggregator can only name an action and pass parameters; what an action does, and which
//! values its parameters may take, is decided by each agent's own configuration.

pub mod driver;
pub mod engine;
pub mod hub;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use telltale_common::config::Invalid;

use crate::alert::matchers;
use crate::alert::prom_duration;
use crate::alert::template::Template;
use crate::labels::Matcher;

/// How a runbook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// At once.
    Auto,
    /// After an approval through the API.
    Approve,
    /// The agent validates the command and runs nothing.
    DryRun,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    runbooks: Vec<RunbookSpec>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunbookSpec {
    name: String,
    matchers: Vec<String>,
    action: String,
    #[serde(default)]
    params: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default = "auto")]
    mode: Mode,
    #[serde(default)]
    deadline: Option<String>,
    #[serde(default)]
    verify_window: Option<String>,
    #[serde(default)]
    max_runs_per_alert: Option<usize>,
    #[serde(default)]
    max_runs_per_host: Option<usize>,
    #[serde(default)]
    window: Option<String>,
}

fn auto() -> Mode {
    Mode::Auto
}

/// A runbook.
#[derive(Debug, Clone)]
pub struct Runbook {
    /// Name.
    pub name: String,
    /// Alerts it applies to (all must match).
    pub matchers: Vec<Matcher>,
    /// The agent's action.
    pub action: String,
    /// Parameters, templated from the alert's labels (`{{ $labels.x }}`).
    pub params: Vec<(String, Template)>,
    /// Agent to run on; none: the alert's `instance`.
    pub target: Option<String>,
    /// Mode.
    pub mode: Mode,
    /// How long a command may wait for its agent (and an approval) before it expires.
    pub deadline: Duration,
    /// How long after a successful run the alert may take to resolve.
    pub verify_window: Duration,
    /// Runs per alert per window.
    pub max_runs_per_alert: usize,
    /// Runs per host per window.
    pub max_runs_per_host: usize,
    /// The guardrail window.
    pub window: Duration,
}

/// A runbook file that does not load.
#[derive(Debug, thiserror::Error)]
pub enum RunbookError {
    /// It cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// It does not validate.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: Invalid,
    },
}

/// The runbook file, validated.
#[derive(Debug, Clone, Default)]
pub struct Runbooks {
    /// The global switch's starting position.
    pub enabled: bool,
    /// Runbooks, each considered for every firing alert.
    pub runbooks: Vec<Runbook>,
}

impl Runbooks {
    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Runbooks, Invalid> {
        let spec: FileSpec = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for r in spec.runbooks {
            let at = |m: String| format!("runbook {:?}: {m}", r.name);
            if out.iter().any(|x: &Runbook| x.name == r.name) {
                return Err(at("defined twice".into()).into());
            }
            if r.matchers.is_empty() {
                return Err(at("needs at least one matcher".into()).into());
            }
            let mut ms = Vec::new();
            for m in &r.matchers {
                ms.extend(matchers::parse_list(m).map_err(|e| at(e.0))?);
            }
            if r.action.is_empty() {
                return Err(at("action is empty".into()).into());
            }
            let params = r
                .params
                .iter()
                .map(|(k, v)| {
                    Template::parse(v)
                        .map(|t| (k.clone(), t))
                        .map_err(|e| at(format!("param {k:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let d = |v: &Option<String>, def: u64, what: &str| match v {
                Some(s) => prom_duration(s).map_err(|e| at(format!("{what}: {e}"))),
                None => Ok(Duration::from_secs(def)),
            };
            out.push(Runbook {
                matchers: ms,
                action: r.action.clone(),
                params,
                target: r.target.clone().filter(|t| !t.is_empty()),
                mode: r.mode,
                deadline: d(&r.deadline, 300, "deadline")?,
                verify_window: d(&r.verify_window, 120, "verify_window")?,
                max_runs_per_alert: r.max_runs_per_alert.unwrap_or(3),
                max_runs_per_host: r.max_runs_per_host.unwrap_or(10),
                window: d(&r.window, 3600, "window")?,
                name: r.name,
            });
        }
        Ok(Runbooks {
            enabled: spec.enabled,
            runbooks: out,
        })
    }

    /// Reads and validates a runbook file.
    pub fn load(path: &Path) -> Result<Runbooks, RunbookError> {
        let text = std::fs::read_to_string(path).map_err(|source| RunbookError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| RunbookError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_files_validate() {
        let r = Runbooks::parse(
            "runbooks:\n  - name: restart\n    matchers: ['alertname=\"Down\"']\n    action: restart-web\n    params: {port: '{{ $labels.port }}'}\n    mode: approve\n    verify_window: 30s\n",
        )
        .unwrap();
        assert!(r.enabled);
        assert_eq!(r.runbooks[0].mode, Mode::Approve);
        assert_eq!(r.runbooks[0].verify_window, Duration::from_secs(30));
        for (t, want) in [
            (
                "runbooks: [{name: a, matchers: [], action: x}]",
                "at least one matcher",
            ),
            (
                "runbooks: [{name: a, matchers: ['x=~\"(\"'], action: x}]",
                "invalid regex",
            ),
            (
                "runbooks: [{name: a, matchers: [x=y], action: x, mode: yolo}]",
                "yolo",
            ),
            (
                "runbooks: [{name: a, matchers: [x=y], action: x, params: {p: '{{ nope }}'}}]",
                "param",
            ),
            (
                "runbooks: [{name: a, matchers: [x=y], action: x}, {name: a, matchers: [x=y], action: x}]",
                "twice",
            ),
            (
                "runbooks: [{name: a, matchers: [x=y], action: x, window: 3q}]",
                "window",
            ),
        ] {
            let e = Runbooks::parse(t).unwrap_err();
            assert!(e.0.contains(want), "{t}: {e}");
        }
    }
}
