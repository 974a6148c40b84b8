//! The template functions that format numbers and text: `title` and Prometheus' humanize
//! family (Go's `%.4g` included).

use super::gofmt::{GoArg, sprintf};

pub(super) fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

/// Go's `%.4g`, as Prometheus' humanize functions format.
pub(super) fn go_g4(v: f64) -> String {
    sprintf("%.4g", &[GoArg::Float(v)])
}

/// Prometheus' `humanize` (`base` 1000: k M G … and m u n … y below 1) and `humanize1024`
/// (ki Mi Gi …; below 1 as it is).
pub(super) fn humanize(v: f64, base: f64) -> String {
    if v == 0.0 || !v.is_finite() || (base == 1024.0 && v.abs() <= 1.0) {
        return go_g4(v);
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        let big: &[&str] = if base == 1024.0 {
            &["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"]
        } else {
            &["k", "M", "G", "T", "P", "E", "Z", "Y"]
        };
        for p in big {
            if v.abs() < base {
                break;
            }
            prefix = p;
            v /= base;
        }
    } else {
        for p in SMALL {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_g4(v))
}

const SMALL: [&str; 8] = ["m", "u", "n", "p", "f", "a", "z", "y"];

/// Go's `int64(v)` on amd64: truncation, and the minimum for what does not fit.
fn go_int64(v: f64) -> i64 {
    if v.is_finite() && v > -9.223_372_036_854_776e18 && v < 9.223_372_036_854_776e18 {
        v as i64
    } else {
        i64::MIN
    }
}

/// Prometheus' `humanizeDuration`: days to minutes with whole seconds, seconds with four
/// significant digits, below a second m u n … y seconds.
pub(super) fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_g4(v);
    }
    if v == 0.0 {
        return format!("{}s", go_g4(v));
    }
    if v.abs() >= 1.0 {
        let (sign, v) = if v < 0.0 { ("-", -v) } else { ("", v) };
        let d = go_int64(v);
        let (seconds, minutes, hours, days) =
            (d % 60, (d / 60) % 60, (d / 60 / 60) % 24, d / 60 / 60 / 24);
        return if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", go_g4(v))
        };
    }
    let mut v = v;
    let mut prefix = "";
    for p in SMALL {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_g4(v))
}

/// Prometheus' `humanizeTimestamp`: Go's `time.Time` text of the UTC time (milliseconds,
/// as `model.Time` keeps), `2006-01-02 15:04:05.999999999 +0000 UTC`; an error past what
/// int64 nanoseconds hold.
pub(super) fn humanize_timestamp(v: f64) -> Result<String, Overflow> {
    if !v.is_finite() {
        return Ok(go_g4(v));
    }
    let ns = v * 1e9;
    if !(-9.223_372_036_854_776e18..=9.223_372_036_854_776e18).contains(&ns) {
        return Err(Overflow(v));
    }
    let ms = go_int64(ns) / 1_000_000;
    let secs = ms.div_euclid(1000);
    let frac_ms = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if frac_ms != 0 {
        let f = format!("{:09}", frac_ms * 1_000_000);
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    Ok(out)
}

/// A time too far from 1970 for int64 nanoseconds (Prometheus' text).
#[derive(Debug)]
pub(super) struct Overflow(f64);

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            super::go_float(self.0)
        )
    }
}

/// The proleptic Gregorian date of a day count from 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
