//! Alertmanager's time intervals (`time_intervals:` / `mute_time_intervals:`): a named list of
//! specs, each of `times`, `weekdays`, `days_of_month`, `months`, `years`; an instant is in
//! the interval when it is in any spec, and in a spec when every field given contains it.
//! Times are in `location` (an IANA name such as `Europe/Berlin`, read from the system's
//! zoneinfo with a bundled database as fallback; default UTC), daylight saving included: a
//! `09:00`–`17:00` spec follows the wall clock there. An unknown name is refused at load.

use serde::Deserialize;
use telltale_common::config::Invalid;

/// A spec as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecText {
    /// `[{start_time: "09:00", end_time: "17:00"}]`
    #[serde(default)]
    pub times: Vec<TimeRangeText>,
    /// `["monday:friday", "sunday"]`
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// `["1:5", "-1"]` (negative counts from the month's end)
    #[serde(default)]
    pub days_of_month: Vec<String>,
    /// `["january:march", "12"]`
    #[serde(default)]
    pub months: Vec<String>,
    /// `["2026:2027"]`
    #[serde(default)]
    pub years: Vec<String>,
    /// Time zone (IANA name; default `UTC`; `Local` is the aggregator's own zone).
    #[serde(default)]
    pub location: Option<String>,
}

/// A time of day range as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeText {
    /// `HH:MM`, inclusive.
    pub start_time: String,
    /// `HH:MM`, exclusive (`24:00` allowed).
    pub end_time: String,
}

/// A validated spec.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// `None`: UTC.
    tz: Option<jiff::tz::TimeZone>,
    times: Vec<(u32, u32)>,
    weekdays: Vec<(u32, u32)>,
    days_of_month: Vec<(i32, i32)>,
    months: Vec<(u32, u32)>,
    years: Vec<(i64, i64)>,
}

/// A named interval: any of its specs.
#[derive(Debug, Clone, Default)]
pub struct TimeInterval {
    /// The specs.
    pub specs: Vec<Spec>,
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn range<T: Copy + PartialOrd + std::fmt::Display>(
    s: &str,
    one: impl Fn(&str) -> Result<T, String>,
) -> Result<(T, T), String> {
    let (a, b) = match s.split_once(':') {
        Some((a, b)) => (one(a.trim())?, one(b.trim())?),
        None => {
            let v = one(s.trim())?;
            (v, v)
        }
    };
    if a > b {
        return Err(format!("range {s:?}: start {a} is after end {b}"));
    }
    Ok((a, b))
}

fn hhmm(s: &str) -> Result<u32, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("invalid time {s:?}: want HH:MM"))?;
    let h: u32 = h.parse().map_err(|_| format!("invalid time {s:?}"))?;
    let m: u32 = m.parse().map_err(|_| format!("invalid time {s:?}"))?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(format!("invalid time {s:?}"));
    }
    Ok(h * 60 + m)
}

impl SpecText {
    /// Validates.
    pub fn validate(&self) -> Result<Spec, Invalid> {
        let mut spec = Spec::default();
        match self.location.as_deref() {
            None => {}
            Some(l) if l.eq_ignore_ascii_case("utc") => {}
            Some("Local") => spec.tz = Some(jiff::tz::TimeZone::system()),
            Some(l) => {
                spec.tz = Some(
                    jiff::tz::TimeZone::get(l)
                        .map_err(|e| format!("location {l:?}: unknown time zone ({e})"))?,
                );
            }
        }
        for t in &self.times {
            let (a, b) = (hhmm(&t.start_time)?, hhmm(&t.end_time)?);
            if a >= b {
                return Err(format!(
                    "start_time {} must be before end_time {}",
                    t.start_time, t.end_time
                )
                .into());
            }
            spec.times.push((a, b));
        }
        for w in &self.weekdays {
            spec.weekdays.push(range(w, |d| {
                WEEKDAYS
                    .iter()
                    .position(|x| x.eq_ignore_ascii_case(d))
                    .map(|p| p as u32)
                    .ok_or_else(|| format!("invalid weekday {d:?}"))
            })?);
        }
        for d in &self.days_of_month {
            let r = range_any_order(d)?;
            spec.days_of_month.push(r);
        }
        for m in &self.months {
            spec.months.push(range(m, |x| {
                if let Ok(n) = x.parse::<u32>() {
                    return if (1..=12).contains(&n) {
                        Ok(n)
                    } else {
                        Err(format!("invalid month {x:?}"))
                    };
                }
                MONTHS
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(x))
                    .map(|p| p as u32 + 1)
                    .ok_or_else(|| format!("invalid month {x:?}"))
            })?);
        }
        for y in &self.years {
            spec.years.push(range(y, |x| {
                x.parse::<i64>().map_err(|_| format!("invalid year {x:?}"))
            })?);
        }
        Ok(spec)
    }
}

/// Days of month may be negative (from the end), so `-3:-1` is valid and order is checked
/// only when both ends have the same sign.
fn range_any_order(s: &str) -> Result<(i32, i32), String> {
    let one = |x: &str| -> Result<i32, String> {
        let v: i32 = x
            .trim()
            .parse()
            .map_err(|_| format!("invalid day of month {x:?}"))?;
        if v == 0 || !(-31..=31).contains(&v) {
            return Err(format!("invalid day of month {x:?}"));
        }
        Ok(v)
    };
    let (a, b) = match s.split_once(':') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let v = one(s)?;
            (v, v)
        }
    };
    if a.signum() == b.signum() && a > b {
        return Err(format!("range {s:?}: start is after end"));
    }
    Ok((a, b))
}

/// Civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01.
pub use telltale_common::model::civil_from_days as civil;

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

impl Spec {
    /// Whether the instant `t_ms` (ms since the epoch) is inside, read on the wall clock of
    /// the spec's location.
    pub fn contains(&self, t_ms: i64) -> bool {
        let offset = match (&self.tz, jiff::Timestamp::from_millisecond(t_ms)) {
            (Some(tz), Ok(ts)) => i64::from(tz.to_offset(ts).seconds()),
            _ => 0,
        };
        let secs = t_ms.div_euclid(1000) + offset;
        let days = secs.div_euclid(86_400);
        let minute = (secs.rem_euclid(86_400) / 60) as u32;
        let weekday = (days + 4).rem_euclid(7) as u32;
        let (y, m, d) = civil(days);
        let dim = days_in_month(y, m) as i32;
        let any =
            |v: &[(u32, u32)], x: u32| v.is_empty() || v.iter().any(|(a, b)| *a <= x && x <= *b);
        let dom_ok = self.days_of_month.is_empty()
            || self.days_of_month.iter().any(|(a, b)| {
                let abs = |v: i32| if v < 0 { dim + 1 + v } else { v.min(dim) };
                let (a, b) = (abs(*a), abs(*b));
                a <= d as i32 && d as i32 <= b
            });
        (self.times.is_empty() || self.times.iter().any(|(a, b)| *a <= minute && minute < *b))
            && any(&self.weekdays, weekday)
            && dom_ok
            && any(&self.months, m)
            && (self.years.is_empty() || self.years.iter().any(|(a, b)| *a <= y && y <= *b))
    }
}

impl TimeInterval {
    /// Whether `t_ms` is in any spec.
    pub fn contains(&self, t_ms: i64) -> bool {
        self.specs.iter().any(|s| s.contains(t_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(y: &str) -> Spec {
        serde_saphyr::from_str::<SpecText>(y)
            .expect("yaml")
            .validate()
            .expect("valid")
    }

    // 2026-11-25 (a Wednesday) 10:30 UTC.
    const WED_1030: i64 = 1_795_602_600_000;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(WED_1030 / 86_400_000), (2026, 11, 25));
        assert_eq!(civil(-1), (1969, 12, 31));
    }

    #[test]
    fn business_hours_weekdays_months_and_last_days() {
        let s =
            spec("times: [{start_time: '09:00', end_time: '17:00'}]\nweekdays: ['monday:friday']");
        assert!(s.contains(WED_1030));
        assert!(!s.contains(WED_1030 + 7 * 3_600_000), "17:30 is outside");
        assert!(
            !s.contains(WED_1030 + 3 * 86_400_000),
            "Saturday is outside"
        );
        assert!(spec("months: ['november']\nyears: ['2026']").contains(WED_1030));
        assert!(!spec("months: ['1:10']").contains(WED_1030));
        assert!(
            spec("days_of_month: ['-6:-1']").contains(WED_1030),
            "25th is in the last 6 of 30"
        );
        assert!(!spec("days_of_month: ['-5:-1']").contains(WED_1030));
        assert!(spec("days_of_month: ['20:25']").contains(WED_1030));
    }

    #[test]
    fn bad_specs_are_refused() {
        for y in [
            "weekdays: ['funday']",
            "times: [{start_time: '10:00', end_time: '09:00'}]",
            "times: [{start_time: '25:00', end_time: '26:00'}]",
            "days_of_month: ['0']",
            "months: ['13']",
            "location: Europe/Atlantis",
        ] {
            let t: SpecText = serde_saphyr::from_str(y).expect("yaml");
            assert!(t.validate().is_err(), "{y}");
        }
    }

    #[test]
    fn times_follow_the_wall_clock_of_the_location_across_daylight_saving() {
        let office = "times: [{start_time: '09:00', end_time: '17:00'}]\nweekdays: ['monday:friday']\nlocation: Europe/Berlin";
        let ms = |s: &str| {
            s.parse::<jiff::Timestamp>()
                .expect("timestamp")
                .as_millisecond()
        };
        // Winter (UTC+1): 08:30 UTC is 09:30 in Berlin; 16:30 UTC is 17:30.
        assert!(spec(office).contains(ms("2026-01-14T08:30:00Z")));
        assert!(!spec(office).contains(ms("2026-01-14T16:30:00Z")));
        // Summer (UTC+2): 07:30 UTC is 09:30; 15:30 UTC is 17:30.
        assert!(spec(office).contains(ms("2026-07-15T07:30:00Z")));
        assert!(!spec(office).contains(ms("2026-07-15T15:30:00Z")));
        // The weekday is Berlin's too: Friday 23:30 UTC is Saturday there.
        let fri = "weekdays: ['friday']\nlocation: Europe/Berlin";
        assert!(!spec(fri).contains(ms("2026-01-16T23:30:00Z")));
        assert!(spec(fri).contains(ms("2026-01-16T22:30:00Z")));
        // UTC, written or not, is unchanged.
        let utc = "times: [{start_time: '09:00', end_time: '17:00'}]\nlocation: UTC";
        assert!(spec(utc).contains(ms("2026-01-14T09:30:00Z")));
        assert!(!spec(utc).contains(ms("2026-01-14T08:30:00Z")));
    }
}
