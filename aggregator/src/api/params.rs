//! Request parameters as Prometheus reads them (Go's `Request.FormValue`): from a
//! form-encoded body first, then from the URL query; repeated keys (`match[]`) are kept. A
//! pair Go cannot decode — a `%` not followed by two hexadecimal digits, a raw `;` — is left
//! out, as Go leaves it out, so `query=up%zz` is a missing query, not the query `up%zz`.

use telltale_common::config::Invalid;

use super::ApiError;

/// All parameters of a request, in order.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses the (form-encoded) body and the URL query.
    pub fn parse(query: Option<&str>, body: &[u8]) -> Params {
        let mut v: Vec<(String, String)> = Vec::new();
        decode_into(body, &mut v);
        if let Some(q) = query {
            decode_into(q.as_bytes(), &mut v);
        }
        Params(v)
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A required parameter.
    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad_data(format!("invalid parameter \"{key}\": missing")))
    }

    /// A time parameter (RFC 3339 or Unix seconds), or `default` when absent; an error
    /// reads as Prometheus' `parseTimeParam` words it.
    pub fn time_or(&self, key: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => parse_time(v).map_err(|e| {
                ApiError::bad_data(format!(
                    "invalid parameter \"{key}\": Invalid time value for '{key}': {e}"
                ))
            }),
        }
    }

    /// A required time parameter, worded as Prometheus' `query_range` words it (an absent
    /// one is the empty text it cannot parse).
    pub fn time(&self, key: &str) -> Result<i64, ApiError> {
        parse_time(self.get(key).unwrap_or(""))
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{key}\": {e}")))
    }
}

/// Appends the pairs of a form-encoded `src` that decode as Go's `url.ParseQuery` decodes
/// them (`+` is a space), skipping the ones it skips.
fn decode_into(src: &[u8], out: &mut Vec<(String, String)>) {
    for pair in src.split(|&b| b == b'&') {
        if pair.is_empty() || pair.contains(&b';') {
            continue;
        }
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        if let (Some(k), Some(v)) = (unescape(k), unescape(v)) {
            out.push((k, v));
        }
    }
}

/// Percent-decoding with `+` as a space; `None` for a `%` without two hex digits after it.
fn unescape(s: &[u8]) -> Option<String> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hi = hex(*s.get(i + 1)?)?;
                let lo = hex(*s.get(i + 2)?)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// A trailing RFC 3339 numeric offset (`+01:00`, `-05:30`) in milliseconds east of UTC, and
/// the time before it.
fn utc_offset(s: &str) -> Option<(&str, i64)> {
    let b = s.as_bytes();
    let n = b.len();
    if n < 7 || b[n - 3] != b':' || !s.get(..n - 6).is_some_and(|t| t.contains('T')) {
        return None;
    }
    let sign = match b[n - 6] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (h, m) = (digits(n - 5..n - 3)?, digits(n - 2..n)?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    Some((s.get(..n - 6)?, sign * (h * 3_600_000 + m * 60_000)))
}

/// Parses a Prometheus time: Unix seconds with optional fraction, or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, Invalid> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(format!("cannot parse {s:?} to a valid timestamp").into());
        }
        // Clamped, so that differences of two times cannot overflow.
        return Ok(crate::metrics::promql::clamp_time(unix_ms_as_go(f)));
    }
    // RFC 3339 with `Z` or a numeric offset (humantime reads only `Z`).
    let (utc, east) = match utc_offset(s) {
        Some((t, east)) => (format!("{t}Z"), east),
        None => (s.to_string(), 0),
    };
    humantime::parse_rfc3339_weak(&utc)
        .or_else(|_| humantime::parse_rfc3339(&utc))
        .map(|t| {
            let ms = match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_millis() as i128,
                Err(e) => -(e.duration().as_millis() as i128),
            };
            crate::metrics::promql::clamp_time(ms - i128::from(east))
        })
        .map_err(|_| Invalid(format!("cannot parse {s:?} to a valid timestamp")))
}

/// Unix seconds `f` in milliseconds as Prometheus' `parseTime` and `timestamp.FromTime` make
/// them: the fraction rounded to milliseconds apart from the whole seconds, then turned into
/// whole nanoseconds (truncated) and back into milliseconds (floored). So `…725.0005` is
/// `…725000`, not `…725001` (`f * 1000` rounded): the fraction of a double that large is a
/// little under a half.
fn unix_ms_as_go(f: f64) -> i128 {
    if f.abs() >= 1e15 {
        // Past any time a query can mean (and past i128 once in milliseconds for the
        // largest doubles): saturated, then clamped by the caller.
        return (f * 1000.0) as i128;
    }
    let (secs, frac) = (f.trunc(), f - f.trunc());
    let ns = ((frac * 1000.0).round() / 1000.0 * 1e9) as i128;
    // time.Unix normalises the nanoseconds into [0, 1 s).
    let secs = secs as i128 + ns.div_euclid(1_000_000_000);
    secs * 1000 + ns.rem_euclid(1_000_000_000) / 1_000_000
}

/// Parses a Prometheus duration parameter: seconds with optional fraction, or `5m`, `1h30m`.
pub fn parse_step(s: &str) -> Result<i64, Invalid> {
    if let Ok(f) = s.parse::<f64>() {
        // Go's `time.Duration` holds nanoseconds in an int64.
        if f.is_nan() || (f * 1e9).abs() > 9.223_372_036_854_776e18 {
            return Err(
                format!("cannot parse {s:?} to a valid duration. It overflows int64").into(),
            );
        }
        // Whole nanoseconds (Go's `time.Duration`), then whole milliseconds, both truncated.
        return Ok(((f * 1e9) as i64) / 1_000_000);
    }
    promql_parser::util::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| Invalid(format!("cannot parse {s:?} to a valid duration")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_steps_parse_like_prometheus() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        // Numeric offsets, as Go's RFC 3339 reads them (checked against Prometheus 2.42).
        assert_eq!(
            parse_time("2026-12-06T15:00:00.123+01:00"),
            Ok(1_796_565_600_123)
        );
        assert_eq!(
            parse_time("2026-12-06T15:00:00-05:30"),
            Ok(1_796_589_000_000)
        );
        assert!(parse_time("2026-12-06T15:00:00+25:00").is_err());
        for odd in [
            "2026-12-06T15:00:0é+1:00",
            "éé+01:00",
            "T€€€:00",
            "2026-12-06T15:00:00+0€:0",
            "2026-12-06T15:00:00++1:00",
            "2026-12-06T15:00:00+01:+5",
        ] {
            assert!(parse_time(odd).is_err(), "{odd}");
        }
        assert!(parse_time("yesterday").is_err());
        // Half milliseconds as Prometheus 2.42 reads them (measured: `time()` at these times).
        assert_eq!(parse_time("1796632725.0005"), Ok(1_796_632_725_000));
        assert_eq!(parse_time("1796632725.0015"), Ok(1_796_632_725_001));
        assert_eq!(parse_time("1796632725.023"), Ok(1_796_632_725_023));
        assert_eq!(parse_time("-1.5"), Ok(-1_500));
        assert_eq!(parse_step("0.0015"), Ok(1));
        for huge in ["1e300", "-1.7976931348623157e308", "1e15", "-9.3e18"] {
            assert!(parse_time(huge).is_ok(), "{huge}");
        }
        // Prometheus' words for a step past a Go duration (checked against 2.42).
        assert_eq!(
            parse_step("1e10").map_err(|e| e.to_string()),
            Err("cannot parse \"1e10\" to a valid duration. It overflows int64".into())
        );
        assert_eq!(parse_step("9e9"), Ok(9_000_000_000_000));
        assert!(parse_time("NaN").is_err());
        assert_eq!(parse_step("15"), Ok(15_000));
        assert_eq!(parse_step("1m30s"), Ok(90_000));
        assert!(parse_step("soon").is_err());
    }

    #[test]
    fn repeated_keys_are_kept() {
        let p = Params::parse(Some("match[]=a&match[]=b"), b"start=1");
        assert_eq!(p.all("match[]"), vec!["a", "b"]);
        assert_eq!(p.get("start"), Some("1"));
    }

    /// As Go's `FormValue`: the body's value before the URL's, `+` a space, and a pair with a
    /// bad escape or a raw `;` left out (Prometheus 2.42 then answers "no expression found").
    #[test]
    fn parameters_decode_as_go_decodes_them() {
        let p = Params::parse(Some("query=vector(1)&time=5"), b"query=vector(2)");
        assert_eq!(p.get("query"), Some("vector(2)"));
        assert_eq!(p.get("time"), Some("5"));
        let p = Params::parse(
            Some("query=up%zz&a=1+%2B+1&b=%41%e2%82%ac&c=x;y&d=%4&&e"),
            b"",
        );
        assert_eq!(p.get("query"), None);
        assert_eq!(p.get("a"), Some("1 + 1"));
        assert_eq!(p.get("b"), Some("A€"));
        assert_eq!(p.get("c"), None);
        assert_eq!(p.get("d"), None);
        assert_eq!(p.get("e"), Some(""));
    }
}
