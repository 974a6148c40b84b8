//! SLOs as code: Sloth (`prometheus/v1`) and OpenSLO files, each SLO turned into the rules
//! Sloth generates — with Sloth's rule names and labels, so dashboards and alerts built for
//! Sloth work unchanged:
//!
//! - `slo:sli_error:ratio_rate{5m,30m,1h,2h,6h,1d,3d}` and over the SLO period (`30d`): the
//!   error ratio over each window (`sloth_window` label), the period's as the mean of the 5m
//!   ratio, as Sloth does;
//! - `slo:objective:ratio`, `slo:error_budget:ratio`, `slo:time_period:days`,
//!   `slo:current_burn_rate:ratio`, `slo:period_burn_rate:ratio`,
//!   `slo:period_error_budget_remaining:ratio`, `sloth_slo_info`;
//! - multi-window, multi-burn-rate alerts (the SRE workbook's table): *page* when 2 % of the
//!   period's budget burns within 1 hour (checked over 1h and 5m) or 5 % within 6 hours (6h
//!   and 30m); *ticket* when 10 % burns within a day (1d and 2h) or within 3 days (3d and
//!   6h). For a 30-day period these are burn rates 14.4, 6, 3 and 1.
//!
//! The generated rules are ordinary rule groups: the rule manager evaluates them like any
//! rule file, `telltale-aggregator slos generate FILE` prints them as a Prometheus rule file,
//! and `/api/v1/slos` reads the recorded series back.

pub mod generate;
mod openslo;
pub mod spec;
pub mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use telltale_common::config::Invalid;

use telltale_common::model::valid_label_name;

use crate::rules::file::{Group, Lang};

/// A problem in an SLO file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SloError {
    /// The file.
    pub file: String,
    /// What is wrong, naming the SLO and key.
    pub message: String,
}

/// One SLO.
#[derive(Debug, Clone)]
pub struct Slo {
    /// `sloth_id`: service and name.
    pub id: String,
    /// `sloth_service`.
    pub service: String,
    /// `sloth_slo`.
    pub name: String,
    /// What it promises, in words.
    pub description: String,
    /// The objective, a percentage (99.9).
    pub objective: f64,
    /// The SLO period (the budget's window).
    pub period: Duration,
    /// Labels of every generated series (the file's, then the SLO's).
    pub labels: BTreeMap<String, String>,
    /// How the error ratio is measured.
    pub sli: Sli,
    /// The alerts (`None`: both disabled).
    pub alerting: Option<Alerting>,
    /// The format it was written in (`prometheus/v1`, `openslo/v1`, `openslo/v1alpha`).
    pub spec: &'static str,
    /// The file it came from.
    pub file: PathBuf,
}

/// A query of an SLI, at any window.
#[derive(Debug, Clone)]
pub struct Query {
    /// As written; `{{.window}}` stands for the window.
    pub text: String,
    /// The query's selectors are counters (OpenSLO `counter: true`): without `{{.window}}`,
    /// each is read as its increase over the window.
    pub counter: bool,
}

static WINDOW: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"\{\{\s*\.window\s*\}\}").expect("valid regex"));

impl Query {
    fn windowed(text: String) -> Query {
        Query {
            text,
            counter: false,
        }
    }

    /// The query over `window` (a PromQL duration).
    pub fn at(&self, window: &str) -> Result<String, Invalid> {
        if WINDOW.is_match(&self.text) {
            return Ok(WINDOW.replace_all(&self.text, window).trim().to_string());
        }
        if !self.counter {
            return Err(format!(
                "{:?} has no {{{{.window}}}}: each window of the SLI is the query with \
                 {{{{.window}}}} replaced (e.g. rate(x[{{{{.window}}}}]))",
                self.text
            )
            .into());
        }
        let range = crate::alert::prom_duration(window)?;
        let mut e =
            crate::metrics::promql::limits::parse_guarded(&self.text).map_err(|e| e.to_string())?;
        increases(&mut e, range)?;
        Ok(e.to_string())
    }
}

/// Replaces every instant selector of `e` by its increase over `range`.
fn increases(e: &mut promql_parser::parser::Expr, range: Duration) -> Result<(), String> {
    use promql_parser::parser::{Expr, MatrixSelector};
    match e {
        Expr::VectorSelector(vs) => {
            let Ok(Expr::Call(mut call)) = promql_parser::parser::parse("increase(x[1m])") else {
                return Err("cannot build increase()".into());
            };
            call.args.args = vec![Box::new(Expr::MatrixSelector(MatrixSelector {
                vs: vs.clone(),
                range,
            }))];
            *e = Expr::Call(call);
        }
        Expr::Aggregate(a) => increases(&mut a.expr, range)?,
        Expr::Unary(u) => increases(&mut u.expr, range)?,
        Expr::Binary(b) => {
            increases(&mut b.lhs, range)?;
            increases(&mut b.rhs, range)?;
        }
        Expr::Paren(p) => increases(&mut p.expr, range)?,
        Expr::Call(c) => {
            for a in &mut c.args.args {
                increases(a, range)?;
            }
        }
        Expr::MatrixSelector(_) | Expr::Subquery(_) => {
            return Err("a counter query with a range or subquery needs {{.window}}".into());
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
    Ok(())
}

/// How an SLO's error ratio is measured.
#[derive(Debug, Clone)]
pub enum Sli {
    /// Bad events over all events (Sloth `events`, OpenSLO `bad`).
    Events {
        /// Bad events over the window.
        error: Query,
        /// All events over the window.
        total: Query,
    },
    /// Good events over all events (OpenSLO `good`): the error ratio is 1 − good / total.
    Good {
        /// Good events over the window.
        good: Query,
        /// All events over the window.
        total: Query,
    },
    /// The error ratio itself (Sloth `raw`).
    Raw {
        /// The ratio over the window.
        error_ratio: Query,
    },
}

/// An SLO's alerts: one name, a page and a ticket severity.
#[derive(Debug, Clone)]
pub struct Alerting {
    /// The alert name (both severities share it; `sloth_severity` tells them apart).
    pub name: String,
    /// Labels of both.
    pub labels: BTreeMap<String, String>,
    /// Annotations of both.
    pub annotations: BTreeMap<String, String>,
    /// The page alert (`None`: disabled).
    pub page: Option<AlertSpec>,
    /// The ticket alert (`None`: disabled).
    pub ticket: Option<AlertSpec>,
}

impl Alerting {
    /// OpenSLO files name no alert: `SLOErrorBudgetBurn`, page and ticket.
    fn standard() -> Alerting {
        Alerting {
            name: "SLOErrorBudgetBurn".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            page: Some(AlertSpec::default()),
            ticket: Some(AlertSpec::default()),
        }
    }
}

/// One severity's own labels and annotations.
#[derive(Debug, Clone, Default)]
pub struct AlertSpec {
    /// Labels (over the alerting ones).
    pub labels: BTreeMap<String, String>,
    /// Annotations (over the alerting ones).
    pub annotations: BTreeMap<String, String>,
}

/// The windows of the error-ratio recordings, shortest first (the SLO period comes last).
pub const WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

impl Slo {
    /// The error budget: the share of events allowed to fail (0.001 for 99.9).
    pub fn budget(&self) -> f64 {
        (100.0 - self.objective) / 100.0
    }

    /// The period as a PromQL duration (`30d`).
    pub fn period_window(&self) -> String {
        let s = self.period.as_secs();
        if s.is_multiple_of(86_400) {
            format!("{}d", s / 86_400)
        } else {
            format!("{}h", s / 3600)
        }
    }

    /// The error ratio over `window`.
    pub fn error_ratio(&self, window: &str) -> Result<String, Invalid> {
        Ok(match &self.sli {
            Sli::Events { error, total } => {
                format!("({})\n/\n({})", error.at(window)?, total.at(window)?)
            }
            Sli::Good { good, total } => {
                format!("1 - (({})\n/\n({}))", good.at(window)?, total.at(window)?)
            }
            Sli::Raw { error_ratio } => format!("({})", error_ratio.at(window)?),
        })
    }

    /// Every window's query parses.
    fn check_queries(&self) -> Result<(), String> {
        for w in WINDOWS
            .iter()
            .copied()
            .chain([self.period_window().as_str()])
        {
            let q = self.error_ratio(w).map_err(|e| format!("sli: {e}"))?;
            crate::metrics::promql::limits::parse_guarded(&q)
                .map_err(|e| format!("sli: the error ratio over {w} does not parse: {e}"))?;
        }
        Ok(())
    }

    /// The selector of this SLO's generated series.
    pub fn selector(&self) -> String {
        format!(
            "sloth_id=\"{}\", sloth_service=\"{}\", sloth_slo=\"{}\"",
            self.id, self.service, self.name
        )
    }
}

/// Reads one SLO file.
pub fn load(file: &Path) -> Result<Vec<Slo>, SloError> {
    let text = std::fs::read_to_string(file).map_err(|e| SloError {
        file: file.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    spec::parse(file, &text)
}

/// Reads every SLO file; an SLO id defined in two files is an error.
pub fn load_all(files: &[PathBuf]) -> Result<Vec<Slo>, SloError> {
    let mut out: Vec<Slo> = Vec::new();
    for f in files {
        for s in load(f)? {
            if let Some(o) = out.iter().find(|o| o.id == s.id) {
                return Err(SloError {
                    file: f.display().to_string(),
                    message: format!("SLO {:?} is also defined in {}", s.id, o.file.display()),
                });
            }
            out.push(s);
        }
    }
    Ok(out)
}

/// The rule groups of `slos`, validated as a rule file would be.
pub fn groups(slos: &[Slo], default_interval: Duration) -> Result<Vec<Group>, SloError> {
    let mut out = Vec::new();
    for s in slos {
        let text = generate::rule_file(std::slice::from_ref(s));
        let groups = crate::rules::file::parse(&s.file, &text, default_interval, Lang::PromQL)
            .map_err(|e| SloError {
                file: s.file.display().to_string(),
                message: format!("SLO {:?}: generated rules: {}", s.id, e.message),
            })?;
        out.extend(groups);
    }
    Ok(out)
}

/// Sloth's rule for service and SLO names (they become label values and group names).
fn check_name(key: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} {v:?}: letters, digits, '-', '_' and '.', starting with a letter or digit"
        ))
    }
}

fn check_objective(o: f64) -> Result<(), String> {
    if o.is_finite() && o > 0.0 && o < 100.0 {
        Ok(())
    } else {
        Err(format!(
            "objective {o}: a percentage above 0 and below 100 (100 leaves no error budget)"
        ))
    }
}

fn check_labels(l: &BTreeMap<String, String>) -> Result<(), String> {
    for k in l.keys() {
        if !valid_label_name(k) {
            return Err(format!("invalid label name {k:?}"));
        }
        if k.starts_with("sloth_") {
            return Err(format!("label {k:?}: the sloth_ labels are generated"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
