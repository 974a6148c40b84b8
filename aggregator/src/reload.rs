//! Configuration reloads (`SIGHUP`, `POST /-/reload`): the rule, detector, routing and runbook files
//! loaded and validated as one set before anything changes, and the outcome of the last
//! attempt as Prometheus exports it. The HTTP API triggers a reload; the wiring ([`crate::serve`])
//! starts with the same loader.

use std::sync::atomic::{AtomicBool, Ordering};

use telltale_common::config::Invalid;

use crate::alerting::config::{RoutingConfig, RoutingError};
use crate::config::Config;
use crate::remediate::RunbookError;
use crate::rules::file::RuleFileError;
use crate::rules::manager::Settings as RuleSettings;

/// Why the rule, routing or runbook files did not load (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A `rule_files` pattern is malformed or names a missing file.
    #[error(transparent)]
    Pattern(#[from] Invalid),
    /// A rule file does not load.
    #[error(transparent)]
    Rules(#[from] RuleFileError),
    /// The routing file does not load.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// The runbook file does not load.
    #[error(transparent)]
    Runbooks(#[from] RunbookError),
    /// A detector file does not load.
    #[error(transparent)]
    Detectors(#[from] crate::anomaly::live::spec::SpecError),
    /// An SLO file does not load.
    #[error(transparent)]
    Slos(#[from] crate::slo::SloError),
    /// The loading task stopped (it panicked or the runtime is shutting down).
    #[error("the loader stopped: {0}")]
    Stopped(String),
}

/// Rule groups and routing, loaded and validated before anything starts.
pub struct Alerting {
    /// Rule groups from every rule file (PromQL first, then LogQL).
    pub groups: Vec<crate::rules::file::Group>,
    /// Routing (the built-in log-only one without a routes file).
    pub routing: RoutingConfig,
    /// Runbooks (none without a runbook file).
    pub runbooks: crate::remediate::Runbooks,
    /// Anomaly detectors from every detector file.
    pub detectors: Vec<crate::anomaly::live::spec::Detector>,
    /// SLOs from every SLO file (their rules are in `groups`).
    pub slos: Vec<crate::slo::Slo>,
}

impl Alerting {
    /// Loads the rule files and the routing file the configuration names.
    pub fn load(cfg: &Config) -> Result<Alerting, LoadError> {
        use crate::rules::file::Lang;
        let mut groups = Vec::new();
        for (patterns, lang) in [
            (&cfg.rule_files, Lang::PromQL),
            (&cfg.log_rule_files, Lang::LogQL),
        ] {
            for pattern in patterns {
                let files = crate::rules::file::expand_glob(pattern)?;
                if files.is_empty() {
                    tracing::warn!(pattern, "rule pattern matches no file");
                }
                for f in files {
                    groups.extend(crate::rules::file::load(&f, cfg.evaluation_interval, lang)?);
                }
            }
        }
        let detectors =
            crate::anomaly::live::spec::load_all(&expand_all(&cfg.detector_files, "detector")?)?;
        if cfg.golden_signals {
            // A group of the user's with the same name replaces the built-in one (a copy of
            // config/rules/golden.yml loaded as a rule file, edited or not, wins).
            let golden = crate::rules::file::parse(
                std::path::Path::new("(built-in) golden.yml"),
                crate::rules::GOLDEN,
                cfg.evaluation_interval,
                Lang::PromQL,
            )?;
            let mine: std::collections::HashSet<String> =
                groups.iter().map(|g| g.name.clone()).collect();
            groups.extend(golden.into_iter().filter(|g| !mine.contains(&g.name)));
        }
        let slos = crate::slo::load_all(&expand_all(&cfg.slo_files, "SLO")?)?;
        groups.extend(crate::slo::groups(&slos, cfg.evaluation_interval)?);
        let routing = match &cfg.routes {
            Some(p) => RoutingConfig::load(p)?,
            None => RoutingConfig::log_only(),
        };
        let runbooks = match &cfg.runbooks {
            Some(p) => crate::remediate::Runbooks::load(p)?,
            None => crate::remediate::Runbooks::default(),
        };
        Ok(Alerting {
            groups,
            routing,
            runbooks,
            detectors,
            slos,
        })
    }
}

/// Every file the patterns match (a pattern matching none is logged).
fn expand_all(patterns: &[String], what: &str) -> Result<Vec<std::path::PathBuf>, Invalid> {
    let mut out = Vec::new();
    for pattern in patterns {
        let files = crate::rules::file::expand_glob(pattern)?;
        if files.is_empty() {
            tracing::warn!(pattern, "{what} pattern matches no file");
        }
        out.extend(files);
    }
    Ok(out)
}

/// What a reload needs: the configuration naming the files, the rule manager's settings, and
/// the outcome of the last reload (`telltale_aggregator_config_last_reload_successful`).
pub struct Reload {
    /// The configuration (the files' names and globs; its other keys need a restart).
    pub cfg: Config,
    /// Settings for the new rule manager.
    pub settings: RuleSettings,
    /// One reload at a time.
    pub lock: tokio::sync::Mutex<()>,
    /// The last outcome.
    pub status: ReloadStatus,
}

/// The last reload's outcome, as Prometheus exports it.
#[derive(Debug)]
pub struct ReloadStatus {
    ok: AtomicBool,
    at_ms: std::sync::atomic::AtomicI64,
    failures: std::sync::atomic::AtomicU64,
}

impl Default for ReloadStatus {
    fn default() -> Self {
        ReloadStatus {
            ok: AtomicBool::new(true),
            at_ms: std::sync::atomic::AtomicI64::new(telltale_common::model::now_ms()),
            failures: Default::default(),
        }
    }
}

impl ReloadStatus {
    pub(crate) fn succeeded(&self) {
        self.ok.store(true, Ordering::Relaxed);
        self.at_ms
            .store(telltale_common::model::now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.ok.store(false, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the last reload succeeded, and when the configuration was last loaded (ms).
    pub fn last(&self) -> (bool, i64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.at_ms.load(Ordering::Relaxed),
        )
    }

    /// Appends the reload metrics.
    pub fn render(&self, out: &mut String) {
        use telltale_common::names;
        crate::selfmetrics::gauge(
            out,
            names::AGG_RELOAD_SUCCESSFUL,
            "Whether the last configuration reload attempt was successful.",
            u64::from(self.ok.load(Ordering::Relaxed)),
        );
        crate::selfmetrics::gauge(
            out,
            names::AGG_RELOAD_SUCCESS_TIME,
            "Timestamp of the last successful configuration reload.",
            (self.at_ms.load(Ordering::Relaxed) / 1000).max(0) as u64,
        );
        crate::selfmetrics::counter(
            out,
            names::AGG_RELOAD_FAILURES,
            "Configuration reloads that failed (the running configuration was kept).",
            self.failures.load(Ordering::Relaxed),
        );
    }
}
