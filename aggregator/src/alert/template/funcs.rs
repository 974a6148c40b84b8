//! The template functions that format numbers and text: `title` and Prometheus' humanize
//! family (Go's `%.4g` included).

use super::V;
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
        (v, prefix) = small(v);
    }
    format!("{}{prefix}", go_g4(v))
}

/// Prometheus' loop for values below 1: times 1000 per prefix, m to y, until 1 or more.
fn small(mut v: f64) -> (f64, &'static str) {
    let mut prefix = "";
    for p in SMALL {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    (v, prefix)
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
    let (v, prefix) = small(v);
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

/// Prometheus' `stripDomain`: the host's first label, the port kept; IP addresses as they are.
pub(super) fn strip_domain(host_port: &str) -> String {
    let (host, port) = match split_host_port(host_port) {
        Some((h, p)) => (h, Some(p)),
        None => (host_port, None),
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host_port.to_string();
    }
    let host = host.split('.').next().unwrap_or("");
    match port {
        Some(p) if !p.is_empty() => {
            if host.contains(':') {
                format!("[{host}]:{p}")
            } else {
                format!("{host}:{p}")
            }
        }
        _ => host.to_string(),
    }
}

/// Go's `net.SplitHostPort`, for the forms label values hold: `host:port`, `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let p = after.strip_prefix(':')?;
        return (!p.contains(':')).then_some((h, p));
    }
    let (h, p) = s.rsplit_once(':')?;
    (!h.contains(':')).then_some((h, p))
}

/// Go's `template.HTMLEscapeString`.
pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `template.JSEscapeString`.
pub(super) fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if c.is_ascii() || !c.is_control() => out.push(c),
            c => out.push_str(&format!("\\u{:04X}", c as u32)),
        }
    }
    out
}

/// Go's `url.QueryEscape`: spaces as `+`, unreserved bytes kept, the rest `%XX`.
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `slice`: `slice x 1 2` is `x[1:2]` of a string (by bytes) or a query result.
pub(super) fn slice(a: &[V]) -> Result<V, SliceError> {
    slice_of(a).map_err(SliceError)
}

/// Why `slice` failed (Go's text).
#[derive(Debug)]
pub(super) struct SliceError(pub String);

fn slice_of(a: &[V]) -> Result<V, String> {
    let (item, idx) = a.split_first().ok_or("missing argument")?;
    if idx.len() > 3 {
        return Err(format!("too many slice indexes: {}", idx.len()));
    }
    let len = match item {
        V::Str(s) => s.len(),
        V::List(l) => l.len(),
        other => return Err(format!("can't slice item of type {}", other.kind())),
    };
    if idx.len() == 3 && matches!(item, V::Str(_)) {
        return Err("cannot 3-index slice a string".into());
    }
    let mut at = [0usize, len, len];
    for (k, v) in idx.iter().enumerate() {
        let n = match v {
            V::Int(n) => *n,
            other => {
                return Err(format!(
                    "cannot index slice/array with type {}",
                    other.kind()
                ));
            }
        };
        if n < 0 || n as usize > len {
            return Err(format!("index out of range: {n}"));
        }
        at[k] = n as usize;
    }
    if at[0] > at[1] {
        return Err(format!("invalid slice index: {} > {}", at[0], at[1]));
    }
    Ok(match item {
        V::Str(s) => V::Str(
            s.as_bytes()
                .get(at[0]..at[1])
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        ),
        V::List(l) => V::List(l.get(at[0]..at[1]).map(<[V]>::to_vec).unwrap_or_default()),
        _ => V::Nil,
    })
}
