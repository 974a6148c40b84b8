//! Logging set-up shared by both binaries, to stderr.
//!
//! - **Levels**: `TELLTALE_LOG` (else `RUST_LOG`) in the EnvFilter directive syntax without
//!   regexes: a default level and per-module ones, `info,telltale_aggregator::ingest=debug`.
//!   The regex-free subset (`tracing_subscriber::filter::Targets`) keeps a regex engine out of
//!   the agent, which would cost resident memory on every host; span-field filters are not
//!   supported. A directive that does not parse is reported once and `info` is used.
//! - **Format**: `text` (default: human-readable), `logfmt` or `json` (`--log-format`, or
//!   `TELLTALE_LOG_FORMAT`), one event per line.
//! - **Journald**: when stderr is the journal (systemd sets `JOURNAL_STREAM` to its device and
//!   inode), lines carry no timestamp — journald stamps them — and no colours.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Human-readable.
    #[default]
    Text,
    /// `key=value` pairs.
    Logfmt,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "logfmt" => Ok(Format::Logfmt),
            "json" => Ok(Format::Json),
            o => Err(format!("{o:?}: text, logfmt or json")),
        }
    }
}

/// The filter from a directive string: `Ok` with the parsed targets, `Err` naming the problem.
pub fn parse_filter(s: &str) -> Result<Targets, crate::config::Invalid> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Targets::new().with_default(LevelFilter::INFO));
    }
    // A bare level is the default level (Targets reads it so too).
    s.parse::<Targets>()
        .map_err(|e| crate::config::Invalid(format!("{s:?}: {e}")))
}

/// The filter `TELLTALE_LOG` (else `RUST_LOG`) asks for, and a warning when it does not parse.
pub fn filter_from_env() -> (Targets, Option<String>) {
    let v = std::env::var("TELLTALE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_default();
    match parse_filter(&v) {
        Ok(t) => (t, None),
        Err(e) => (
            Targets::new().with_default(LevelFilter::INFO),
            Some(format!("TELLTALE_LOG {}; logging at info", e.0)),
        ),
    }
}

/// Whether stderr is the systemd journal (`JOURNAL_STREAM` names stderr's device and inode).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(m) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(m.dev()) && ino.parse::<u64>().ok() == Some(m.ino())
}

/// The fields of an event as `(name, value, is a number or boolean)`.
#[derive(Default)]
struct Fields(Vec<(&'static str, String, bool)>);

impl Visit for Fields {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.push((f.name(), v.to_string(), false));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.0.push((f.name(), format!("{v:?}"), false));
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.push((f.name(), v.to_string(), true));
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.push((f.name(), v.to_string(), true));
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.push((f.name(), v.to_string(), true));
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        // JSON has no NaN or infinities: those stay strings.
        self.0.push((f.name(), v.to_string(), v.is_finite()));
    }
}

fn logfmt_value(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c == ' ' || c == '"' || c == '=' || c.is_control()) {
        return v.to_string();
    }
    format!("{v:?}")
}

/// Appends `v` as a JSON string (quoted, escaped as RFC 8259 requires).
pub fn push_json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    push_json_str(&mut out, v);
    out
}

/// Writes events as logfmt or JSON lines.
struct Structured {
    json: bool,
    time: bool,
}

impl<S, N> FormatEvent<S, N> for Structured
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut pairs: Vec<(&str, String, bool)> = Vec::new();
        if self.time {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            pairs.push(("ts", rfc3339_micros(now), false));
        }
        pairs.push(("level", meta.level().as_str().to_ascii_lowercase(), false));
        pairs.push(("target", meta.target().to_string(), false));
        if let Some(i) = fields.0.iter().position(|(k, _, _)| *k == "message") {
            let (_, m, _) = fields.0.remove(i);
            pairs.push(("msg", m, false));
        }
        pairs.extend(fields.0);
        if self.json {
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v, raw)| {
                    let v = if *raw { v.clone() } else { json_string(v) };
                    format!("{}:{v}", json_string(k))
                })
                .collect();
            writeln!(w, "{{{}}}", body.join(","))
        } else {
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v, _)| format!("{k}={}", logfmt_value(v)))
                .collect();
            writeln!(w, "{}", body.join(" "))
        }
    }
}

/// `2026-12-04T08:05:32.123456Z` from a time since the epoch.
fn rfc3339_micros(d: std::time::Duration) -> String {
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::model::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Installs the global subscriber: levels from the environment, `format` lines, timestamps
/// unless journald adds them.
pub fn init_with(format: Format) {
    let (filter, warning) = filter_from_env();
    let journal = stderr_is_journal();
    let ansi = !journal && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let done = match format {
        Format::Text => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi);
            if journal {
                registry.with(layer.without_time()).try_init()
            } else {
                registry.with(layer).try_init()
            }
        }
        Format::Logfmt | Format::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .event_format(Structured {
                        json: format == Format::Json,
                        time: !journal,
                    }),
            )
            .try_init(),
    };
    if done.is_ok()
        && let Some(w) = warning
    {
        tracing::warn!("{w}");
    }
}

/// [`init_with`] in the format `TELLTALE_LOG_FORMAT` names (text when unset or unknown).
pub fn init() {
    let format = std::env::var("TELLTALE_LOG_FORMAT")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or_default();
    init_with(format);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn directives_set_a_default_and_per_module_levels() {
        let t = parse_filter("warn,telltale_aggregator::ingest=debug").unwrap();
        assert!(t.would_enable("telltale_aggregator::ingest", &Level::DEBUG));
        assert!(t.would_enable("telltale_aggregator::ingest::session", &Level::DEBUG));
        assert!(!t.would_enable("telltale_aggregator::rules", &Level::INFO));
        assert!(t.would_enable("telltale_aggregator::rules", &Level::WARN));
        let bare = parse_filter("debug").unwrap();
        assert!(bare.would_enable("anything", &Level::DEBUG));
        let empty = parse_filter("").unwrap();
        assert!(empty.would_enable("x", &Level::INFO) && !empty.would_enable("x", &Level::DEBUG));
        assert!(parse_filter("telltale=loud").is_err());
    }

    #[test]
    fn structured_values_are_quoted_only_when_needed() {
        assert_eq!(logfmt_value("ok"), "ok");
        assert_eq!(logfmt_value("two words"), "\"two words\"");
        assert_eq!(logfmt_value("a=b"), "\"a=b\"");
        assert_eq!(logfmt_value(""), "\"\"");
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(
            rfc3339_micros(std::time::Duration::from_micros(1_796_372_532_123_456)),
            "2026-12-04T08:22:12.123456Z"
        );
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        assert!("yaml".parse::<Format>().is_err());
    }
}
