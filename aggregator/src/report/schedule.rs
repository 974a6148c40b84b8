//! Scheduled reports (`[[report]]` in aggregator.toml): a kind, daily or weekly at a UTC time,
//! over a range ending then, kept and delivered to receivers of the routing file.
//!
//! A run the aggregator was down for is made at start (its range still ends at the time it
//! was due), so a restart does not lose the week's report; one already kept is not made again.

use std::time::Duration;

use serde::Deserialize;
use telltale_common::config::Invalid;

use super::Kind;

const DAY: i64 = 86_400_000;

/// `[[report]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A name (default: the kind and how often).
    #[serde(default)]
    pub name: Option<String>,
    /// `slo`, `incidents`, `capacity` or `alert-tuning`.
    pub kind: String,
    /// `daily` or `weekly`.
    pub every: String,
    /// UTC time of day, `HH:MM` (default `06:00`).
    #[serde(default)]
    pub at: Option<String>,
    /// Weekly reports: the day (default `monday`).
    #[serde(default)]
    pub weekday: Option<String>,
    /// The range the report covers, ending when it runs (default 1d daily, 7d weekly).
    #[serde(
        default,
        deserialize_with = "telltale_common::config::humantime_duration_opt"
    )]
    pub range: Option<Duration>,
    /// Receivers of the routing file it is delivered to (none: kept only).
    #[serde(default)]
    pub receivers: Vec<String>,
}

/// A validated schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Its name (kept reports carry it).
    pub name: String,
    /// The kind.
    pub kind: Kind,
    /// Period: a day or a week (ms).
    pub period_ms: i64,
    /// Offset within the period from its start (Thursday 1970-01-01 00:00 UTC, shifted to
    /// Monday for weekly ones) (ms).
    pub offset_ms: i64,
    /// The range covered.
    pub range: Duration,
    /// Receivers.
    pub receivers: Vec<String>,
}

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
/// 1970-01-05 was a Monday.
const MONDAY: i64 = 4 * DAY;

impl Schedule {
    /// Validates a spec; errors name the key.
    pub fn from_spec(s: &ScheduleSpec) -> Result<Schedule, Invalid> {
        let kind = Kind::parse(&s.kind).map_err(|e| e.context("kind"))?;
        let at = s.at.as_deref().unwrap_or("06:00");
        let (h, m) = at
            .split_once(':')
            .and_then(|(h, m)| Some((h.parse::<i64>().ok()?, m.parse::<i64>().ok()?)))
            .filter(|(h, m)| (0..24).contains(h) && (0..60).contains(m))
            .ok_or_else(|| Invalid(format!("at: {at:?} is not a UTC time HH:MM")))?;
        let time = (h * 60 + m) * 60_000;
        let (period_ms, offset_ms, range) = match s.every.as_str() {
            "daily" => {
                if s.weekday.is_some() {
                    return Err("weekday: only for weekly reports".into());
                }
                (DAY, time, s.range.unwrap_or(Duration::from_secs(86_400)))
            }
            "weekly" => {
                let wd = s
                    .weekday
                    .as_deref()
                    .unwrap_or("monday")
                    .to_ascii_lowercase();
                let d = WEEKDAYS
                    .iter()
                    .position(|w| *w == wd)
                    .ok_or_else(|| Invalid(format!("weekday: {wd:?} is not a day of the week")))?;
                (
                    7 * DAY,
                    (MONDAY + d as i64 * DAY + time) % (7 * DAY),
                    s.range.unwrap_or(Duration::from_secs(7 * 86_400)),
                )
            }
            other => {
                return Err(format!("every: {other:?}: daily or weekly").into());
            }
        };
        if range < Duration::from_secs(60) || range > Duration::from_secs(400 * 86_400) {
            return Err("range: from 1m to 400d".into());
        }
        Ok(Schedule {
            name: s
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-{}", kind.as_str(), s.every)),
            kind,
            period_ms,
            offset_ms,
            range,
            receivers: s.receivers.clone(),
        })
    }

    /// The last time it was due at or before `t` (ms).
    pub fn last_due(&self, t: i64) -> i64 {
        let k = (t - self.offset_ms).div_euclid(self.period_ms);
        k * self.period_ms + self.offset_ms
    }

    /// The next time it is due after `t` (ms).
    pub fn next_due(&self, t: i64) -> i64 {
        self.last_due(t) + self.period_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(every: &str, at: &str, weekday: Option<&str>) -> ScheduleSpec {
        ScheduleSpec {
            name: None,
            kind: "slo".into(),
            every: every.into(),
            at: Some(at.into()),
            weekday: weekday.map(String::from),
            range: None,
            receivers: vec![],
        }
    }

    #[test]
    fn due_times_are_utc_days_and_weekdays() {
        // 2026-12-04 is a Friday; 12:00 UTC.
        let t = crate::report::parse_rfc3339("2026-12-04T12:00:00Z").expect("time");
        let d = Schedule::from_spec(&spec("daily", "06:30", None)).expect("valid");
        assert_eq!(
            crate::report::rfc3339(d.last_due(t)),
            "2026-12-04T06:30:00Z"
        );
        assert_eq!(
            crate::report::rfc3339(d.next_due(t)),
            "2026-12-05T06:30:00Z"
        );
        assert_eq!(d.range, Duration::from_secs(86_400));
        let w = Schedule::from_spec(&spec("weekly", "06:00", Some("Monday"))).expect("valid");
        assert_eq!(
            crate::report::rfc3339(w.last_due(t)),
            "2026-11-30T06:00:00Z"
        );
        assert_eq!(
            crate::report::rfc3339(w.next_due(t)),
            "2026-12-07T06:00:00Z"
        );
        let s = Schedule::from_spec(&spec("weekly", "23:59", Some("sunday"))).expect("valid");
        assert_eq!(
            crate::report::rfc3339(s.next_due(t)),
            "2026-12-06T23:59:00Z"
        );
        // Exactly at a due time: that is the last one.
        assert_eq!(d.last_due(d.next_due(t)), d.next_due(t));
        for (bad, key) in [
            (spec("hourly", "06:00", None), "every"),
            (spec("daily", "25:00", None), "at"),
            (spec("daily", "06:00", Some("monday")), "weekday"),
            (spec("weekly", "06:00", Some("someday")), "weekday"),
        ] {
            let e = Schedule::from_spec(&bad).expect_err(key).to_string();
            assert!(e.starts_with(key), "{e}");
        }
    }
}
