//! Reports: what happened over a range, for people — SLO compliance, incidents, capacity and
//! alert tuning — rendered as Markdown and as self-contained HTML with SVG charts, with the
//! same numbers as JSON for machines (`summary`).
//!
//! A report is computed from what the aggregator keeps: the SLOs' own queries and the stored
//! series through PromQL, the incident and remediation records (as their APIs show them),
//! silences, and `ALERTS` history. The modules here are pure: [`Inputs`] carries the records
//! and a query engine; the HTTP layer and the scheduler ([`schedule`]) gather them, keep the
//! result ([`store`]) and deliver it through the alerting outbox.

mod capacity;
mod incidents;
pub mod render;
pub mod schedule;
mod slo;
pub mod store;
mod tuning;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use telltale_common::config::Invalid;

use crate::metrics::promql::Engine;

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// SLO compliance per service: objective, achieved, budget burned, worst days.
    Slo,
    /// Incidents: count, MTTA, MTTR, root causes, pages, remediations and outcomes.
    Incidents,
    /// Capacity: filesystems and memory, growth and time until full.
    Capacity,
    /// Alert tuning: noisy, flapping, silent, always silenced and never acknowledged alerts.
    AlertTuning,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [
        Kind::Slo,
        Kind::Incidents,
        Kind::Capacity,
        Kind::AlertTuning,
    ];

    /// Its name in URLs and files.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Slo => "slo",
            Kind::Incidents => "incidents",
            Kind::Capacity => "capacity",
            Kind::AlertTuning => "alert-tuning",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Result<Kind, Invalid> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Invalid(format!(
                    "unknown report kind {s:?}: slo, incidents, capacity or alert-tuning"
                ))
            })
    }
}

/// A table: headers and rows of cells.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<String>>,
}

/// A chart: named series of (time ms, value) over the report's range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    /// What it shows.
    pub title: String,
    /// The values' unit (`%`, `bytes`, ...).
    pub unit: String,
    /// The series.
    pub series: Vec<(String, Vec<(i64, f64)>)>,
    /// A horizontal line (an objective, a limit), if any.
    pub line: Option<(String, f64)>,
}

/// A part of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Section {
    /// Its heading.
    pub heading: String,
    /// Paragraphs of text.
    pub text: Vec<String>,
    /// A table, if any.
    pub table: Option<Table>,
    /// A chart, if any.
    pub chart: Option<Chart>,
}

/// A report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Its id once kept (0 before).
    #[serde(default)]
    pub id: u64,
    /// The schedule that made it (empty: on demand).
    #[serde(default)]
    pub schedule: String,
    /// Its kind.
    pub kind: Kind,
    /// Its title.
    pub title: String,
    /// The range: start and end (ms).
    pub start_ms: i64,
    /// End of the range (ms).
    pub end_ms: i64,
    /// When it was made (ms).
    pub generated_ms: i64,
    /// The parts.
    pub sections: Vec<Section>,
    /// The numbers, for machines.
    pub summary: Value,
}

/// What a report is computed from.
pub struct Inputs<'a> {
    /// Queries over the stored series.
    pub engine: &'a Engine,
    /// The SLOs in force.
    pub slos: &'a [crate::slo::Slo],
    /// Incidents as `/api/v1/incidents?state=all` shows them.
    pub incidents: Vec<Value>,
    /// Remediations as `/api/v1/remediations` shows them.
    pub remediations: Vec<Value>,
    /// Silences as `/api/v2/silences` shows them (active and expired).
    pub silences: Vec<Value>,
    /// The names of the alerting rules in force.
    pub alert_rules: Vec<String>,
    /// Why incidents may be missing (the archive could not be read), said in the report.
    pub archive_note: Option<String>,
}

/// Makes a report of `kind` over `[start_ms, end_ms]`.
pub fn make(kind: Kind, inputs: &Inputs, start_ms: i64, end_ms: i64, now_ms: i64) -> Report {
    let started = std::time::Instant::now();
    let (title, mut sections, mut summary) = match kind {
        Kind::Slo => slo::report(inputs, start_ms, end_ms),
        Kind::Incidents => incidents::report(inputs, start_ms, end_ms),
        Kind::Capacity => capacity::report(inputs, start_ms, end_ms),
        Kind::AlertTuning => tuning::report(inputs, start_ms, end_ms),
    };
    // A report that may be missing incidents says so, first.
    if let Some(note) = &inputs.archive_note {
        if let Some(first) = sections.first_mut() {
            first.text.insert(0, note.clone());
        }
        if let Value::Object(m) = &mut summary {
            m.insert("archiveNote".into(), Value::String(note.clone()));
        }
    }
    crate::selfmetrics::LATENCY
        .report
        .observe(started.elapsed());
    Report {
        id: 0,
        schedule: String::new(),
        kind,
        title,
        start_ms,
        end_ms,
        generated_ms: now_ms,
        sections,
        summary,
    }
}

impl Report {
    /// What a receiver gets: the report's identity, its numbers, Markdown and HTML
    /// (documented in the README's Reports section).
    pub fn payload(&self) -> Value {
        serde_json::json!({
            "kind": "report",
            "version": "1",
            "report": self.meta(),
            "summary": self.summary,
            "markdown": render::markdown(self),
            "html": render::html(self),
        })
    }

    /// Its identity: id, kind, title, range, when and by which schedule it was made.
    pub fn meta(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "kind": self.kind.as_str(),
            "title": self.title,
            "start": rfc3339(self.start_ms),
            "end": rfc3339(self.end_ms),
            "generatedAt": rfc3339(self.generated_ms),
            "schedule": self.schedule,
        })
    }
}

/// An RFC 3339 time (UTC, seconds).
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Milliseconds of an RFC 3339 time.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// A duration in words (`1h 5m`), from seconds.
pub fn duration_text(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "n/a".into();
    }
    let d = std::time::Duration::from_secs(secs.round() as u64);
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests;
